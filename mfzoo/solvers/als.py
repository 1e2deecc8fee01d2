"""Alternating least squares: explicit ALS and implicit ALS (iALS) half-steps.

As in benfred/implicit, one solver function serves both half-steps: called on the
users × items matrix with the item factors fixed it returns the user factors, called on the
items × users matrix (the transpose) with the user factors fixed it returns the item factors.

Notation (paper letters, for this module only): R [n_rows, n_cols] the sparse observations of
the side being solved (row u holds r_u, its observed set is I_u, n_u = |I_u|), X [n_rows, k]
the factors being solved for (x_u its rows), Y [n_cols, k] the fixed factors of the other side
(y_i its rows), YtY = YᵀY [k, k], A_u [k, k] and b_u [k] the normal equations of row u,
x_u = A_u⁻¹ b_u.

Explicit ALS (Zhou et al. 2008, "ALS-WR"), for each row u:

    min_{x_u} Σ_{i∈I_u} (r_ui − x_u·y_i)² + λ_u ‖x_u‖²,
    A_u = Y_{I_u}ᵀ Y_{I_u} + λ_u I,   b_u = Y_{I_u}ᵀ r_u,   λ_u = λ n_u (or λ unscaled);

with biases (r̂ = μ + b_u + b_i + x_u·y_i, `biased_least_squares_half_step`) the same solve for
the augmented row [x_u, b_u] against [y_i, 1], target r_ui − μ − b_i, λ_b on the bias.

Implicit ALS (Hu, Koren & Volinsky 2008; with the unobserved weight α₀ and the regularisation
exponent ν of Rendle et al. 2022, "Revisiting the performance of iALS on item recommendation
benchmarks"): with confidence c_ui = `confidence(r_ui)` on observed pairs, preference p_ui = 1
on observed and 0 on unobserved pairs, the half-step minimises over X

    Σ_u Σ_{i∈I_u} c_ui (1 − x_u·y_i)² + α₀ Σ_u Σ_{i∉I_u} (x_u·y_i)² + Σ_u λ_u ‖x_u‖²,
    λ_u = λ (n_u + α₀ n_cols)^ν,

whose solution, with the YᵀY trick (α₀ YtY is shared by all rows, computed once), is

    A_u = α₀ YtY + Σ_{i∈I_u} (c_ui − α₀) y_i y_iᵀ + λ_u I,   b_u = Σ_{i∈I_u} c_ui y_i.

The objectives these half-steps lower, of both sides as `ALSSolver` / `IALSSolver` report them
after each sweep and their dense twins for tests, are in `mfzoo.solvers.objective`; the same
half-steps written as a plain loop over rows (one dense `torch.linalg.solve` each) are in
`mfzoo.solvers.als_reference`.

This module holds the maths of a block of rows; which rows form a block, in how much memory
and on how many threads, is `mfzoo.solvers.blocks` (`for_blocks`: blocks of up to
`block_size` rows of similar degree, the y_i of a block gathered into one padded [b, L, k]
tensor of about `blocks.block_elements` entries). A block of rows longer than k builds its A_u
as one batched product and solves them by one batched Cholesky factorisation (`spd_solve`; a
singular A_u, e.g. λ = 0 and n_u < k, gets the minimum-norm solution and an empty row gets
x_u = 0); a block of shorter rows solves the same systems exactly through the Woodbury
identity, an L x L Cholesky per row (`_solve_rows`). The CG path (`ials_half_step_cg`) never
forms A_u.

Every path gives a row without entries x_u = 0: its b_u is 0, so 0 solves A_u x_u = b_u (the
minimum-norm solution where A_u is singular). No half-step returns NaN or inf: a setting whose
numbers overflow the factors' dtype (a confidence 1 + α r beyond float32, say) raises
`NonFiniteError` naming the parameter to lower.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from mfzoo import native as mfzoo_native
from mfzoo.data.implicit import confidence
from mfzoo.data.interactions import Interactions
from mfzoo.solvers.blocks import for_blocks, memo, row_order, scripted
from mfzoo.solvers.checks import (
    MF_PATH,
    NonFiniteError,
    check_ials_settings,
    check_model_class,
    ials_fix,
    nonnegative,
    solved,
)
from mfzoo.solvers.linalg import spd_solve

if TYPE_CHECKING:  # for annotations only: solvers name the models they solve by path (`checks`)
    from mfzoo.models.mf import MF


def least_squares_half_step(
    R: Tensor,
    Y: Tensor,
    l2: float,
    frequency_scaled: bool = True,
    block_size: int = 512,
    cache: dict | None = None,
) -> Tensor:
    """Explicit ALS half-step: X [n_rows, k] with, for every row u (see the module docstring),

        x_u = (Y_{I_u}ᵀ Y_{I_u} + λ_u I)⁻¹ Y_{I_u}ᵀ r_u,   λ_u = λ n_u if `frequency_scaled` else λ.

    Rows without entries get x_u = 0.

    Args:
        R: sparse CSR [n_rows, n_cols], values = ratings.
        Y: [n_cols, k] factors of the other side (fixed).
        l2: λ >= 0.
        frequency_scaled: λ n_u (ALS-WR) rather than a plain λ.
        block_size: rows whose systems are built and solved together.
        cache: as `ials_half_step`.

    Returns:
        X [n_rows, k] on Y's device, in Y's dtype.
    """
    nonnegative("l2", l2)
    crow, col, values = _csr_parts(R, Y, block_size)
    counts = crow.diff().to(Y.dtype)  # [n_rows] n_u
    reg = l2 * counts if frequency_scaled else torch.full_like(counts, float(l2))  # [n_rows] λ_u
    # [nnz] weight 1
    ones = memo(cache, ("ones", values.dtype, values.device), lambda: torch.ones_like(values))
    return solved(
        lambda: _solve_rows(
            crow, col, ones, values, Y, reg, None, block_size, cache, nonnegative=True
        ),
        "the ALS half-step",
        lambda: (
            f"check the scale of the ratings (largest |r| "
            f"{float(values.abs().max()) if values.numel() else 0.0:g}) and l2 (now {l2:g})"
        ),
    )


def biased_least_squares_half_step(
    R: Tensor,
    Y: Tensor,
    other_bias: Tensor,
    mean: float | Tensor,
    l2: float,
    l2_bias: float,
    frequency_scaled: bool = True,
    block_size: int = 512,
    cache: dict | None = None,
) -> tuple[Tensor, Tensor]:
    """Explicit ALS half-step with biases, r̂_ui = μ + b_u + b_i + x_u·y_i: for every row u, with
    the other side (y_i, b_i) and μ fixed,

        (x_u, b_u) = argmin Σ_{i∈I_u} (r_ui − μ − b_i − b_u − x_u·y_i)² + λ_u ‖x_u‖² + λ^b_u b_u²,

    one ridge solve of the augmented row [x_u, b_u] against [y_i, 1] with the target
    r_ui − μ − b_i: A_u = Ỹ_{I_u}ᵀ Ỹ_{I_u} + diag(λ_u, …, λ_u, λ^b_u), with λ_u = λ n_u and
    λ^b_u = λ_b n_u (`frequency_scaled`: per-rating regularisation, as the gradient path's
    per-use penalty) or λ and λ_b. The bias is solved with the factors, not in a separate
    pass, so each half-step is the exact minimum over its side. Rows without entries get
    x_u = 0, b_u = 0.

    Args:
        R: sparse CSR [n_rows, n_cols], values = ratings.
        Y: [n_cols, k] factors of the other side (fixed); other_bias: [n_cols] its biases.
        mean: μ, the global mean.
        l2, l2_bias: λ >= 0 on the factors, λ_b >= 0 on the biases.
        frequency_scaled, block_size, cache: as `least_squares_half_step`.

    Returns:
        (X [n_rows, k], b [n_rows]) on Y's device, in Y's dtype.
    """
    nonnegative("l2", l2)
    nonnegative("l2_bias", l2_bias)
    crow, col, values = _csr_parts(R, Y, block_size)
    if other_bias.shape != (Y.shape[0],):
        raise ValueError(
            f"other_bias must be [n_cols] = [{Y.shape[0]}], got {tuple(other_bias.shape)}"
        )
    k = Y.shape[1]
    target = (
        values
        - other_bias.to(Y).index_select(0, col)
        - torch.as_tensor(mean, dtype=Y.dtype, device=Y.device)
    )  # [nnz]
    Ya = torch.cat([Y, Y.new_ones(Y.shape[0], 1)], dim=1)  # [n_cols, k + 1] [y_i, 1]
    counts = crow.diff().to(Y.dtype)  # [n_rows] n_u
    scale = counts if frequency_scaled else torch.ones_like(counts)  # [n_rows]
    weights = Y.new_full((k + 1,), float(l2))  # [k + 1] (λ, …, λ, λ_b)
    weights[k] = float(l2_bias)
    # [nnz] weight 1
    ones = memo(cache, ("ones", values.dtype, values.device), lambda: torch.ones_like(values))
    solution = solved(
        lambda: _solve_rows(
            crow,
            col,
            ones,
            target,
            Ya,
            scale,
            None,
            block_size,
            cache,
            nonnegative=True,
            reg_weights=weights,
        ),
        "the biased ALS half-step",
        lambda: (
            f"check the scale of the ratings (largest |r| "
            f"{float(values.abs().max()) if values.numel() else 0.0:g}) and l2 (now {l2:g})"
        ),
    )
    return solution[:, :k], solution[:, k]


def ials_half_step(
    R: Tensor,
    Y: Tensor,
    l2: float,
    alpha: float = 1.0,
    kind: str = "linear",
    eps: float = 1.0,
    unobserved_weight: float = 1.0,
    l2_exponent: float = 0.0,
    block_size: int = 512,
    cache: dict | None = None,
    gram: Tensor | None = None,
    n_cols: int | None = None,
) -> Tensor:
    """Implicit ALS half-step: X [n_rows, k] minimising (see the module docstring)

        Σ_{u,i∈I_u} c_ui (1 − x_u·y_i)² + α₀ Σ_{u,i∉I_u} (x_u·y_i)² + Σ_u λ_u ‖x_u‖²,

    i.e. x_u = (α₀ YtY + Σ_{i∈I_u} (c_ui − α₀) y_i y_iᵀ + λ_u I)⁻¹ Σ_{i∈I_u} c_ui y_i, with
    c_ui = `confidence(r_ui, kind, alpha, eps)` (linear 1 + α r, log 1 + α log(1 + r/ε)) and
    λ_u = λ (n_u + α₀ n_cols)^ν.

    Args:
        R: sparse CSR [n_rows, n_cols], values = raw event strengths r_ui (the stored pattern
            is the observed set; a stored 0 is an observed event with c = 1).
        Y: [n_cols, k] factors of the other side (fixed).
        l2: λ >= 0.
        alpha, kind, eps: the confidence function (`mfzoo.data.implicit.confidence`).
        unobserved_weight: α₀ >= 0, the weight of every unobserved pair.
        l2_exponent: ν; 0 gives a plain λ.
        block_size: rows whose systems are built and solved together.
        cache: a dict kept with this R across calls (the solvers keep one per matrix): what
            depends on R and the hyperparameters alone (confidences, row order, block plan)
            is computed on the first call only.
        gram, n_cols: for a Y that holds only some of the other side's rows (a rank of a
            sharded solve, R's columns renumbered to them): YᵀY [k, k] of the whole other
            side and its number of rows (for λ_u); by default Y's own Gram and R.shape[1].

    Returns:
        X [n_rows, k] on Y's device, in Y's dtype.
    """
    check_ials_settings(l2, alpha, kind, eps, unobserved_weight, l2_exponent)
    crow, col, values = _csr_parts(R, Y, block_size)

    def solve() -> Tensor:
        gram_w, c, all_nonnegative = _confidences(
            values, kind, alpha, eps, unobserved_weight, cache
        )  # [nnz] c − α₀, c
        YtY = unobserved_weight * (
            Y.T @ Y if gram is None else gram.to(Y)
        )  # [k, k] α₀ YtY, once per half-step
        counts = crow.diff().to(Y.dtype)  # [n_rows] n_u
        reg = l2 * (counts + unobserved_weight * (R.shape[1] if n_cols is None else n_cols)).pow(
            l2_exponent
        )  # [n_rows] λ_u
        return _solve_rows(crow, col, gram_w, c, Y, reg, YtY, block_size, cache, all_nonnegative)

    return solved(
        solve,
        "the iALS half-step",
        lambda: ials_fix(values, l2, alpha, kind, eps, unobserved_weight),
    )


def ials_half_step_cg(
    R: Tensor,
    Y: Tensor,
    X0: Tensor,
    l2: float,
    alpha: float = 1.0,
    kind: str = "linear",
    eps: float = 1.0,
    unobserved_weight: float = 1.0,
    l2_exponent: float = 0.0,
    cg_steps: int = 3,
    block_size: int = 512,
    cache: dict | None = None,
    gram: Tensor | None = None,
    n_cols: int | None = None,
    native: bool | None = None,
    threads: int | None = None,
) -> Tensor:
    """Implicit ALS half-step by conjugate gradient (Takács, Pilászy & Tikk 2011, "Applications
    of the conjugate gradient method for implicit feedback collaborative filtering"; the CG
    solver of benfred/implicit): `cg_steps` CG iterations on every row's system A_u x_u = b_u of
    `ials_half_step` (same A_u, b_u, c_ui, λ_u), started from the warm start x_u⁰ = X0[u]:

        r⁰ = b_u − A_u x⁰,  p⁰ = r⁰,  and for s = 0 … cg_steps − 1
        a = r^sᵀ r^s / p^sᵀ A_u p^s,  x^{s+1} = x^s + a p^s,  r^{s+1} = r^s − a A_u p^s,
        β = r^{s+1}ᵀ r^{s+1} / r^sᵀ r^s,  p^{s+1} = r^{s+1} + β p^s,

    with per-row a and β (a row whose residual or p_uᵀA_u p_u is exactly 0, e.g. converged, gets
    a = β = 0 and stays put). A row without entries gets x_u = 0 whatever its start, as on the
    exact path (b_u = 0: 0 is its solution). A_u is never formed: for all rows at once

        A P = α₀ P YtY + Σ_{i∈I_u} (c_ui − α₀)(p_u·y_i) y_i + λ_u P,   b = C Y,

    the sparse part as per-entry dots t_ui = p_u·y_i (gathered along the CSR pattern), scaled by
    c_ui − α₀ and scattered back by one sparse CSR × Y product. Each step lowers the A_u-norm
    error ‖x_u − x_u*‖_{A_u}, hence the iALS objective (`objective.ials_objective`), and for
    SPD A_u CG reaches x_u* = A_u⁻¹ b_u in at most k steps (in exact arithmetic). Cost per step
    O(nnz k + n_rows k²) instead of the O(nnz k² + n_rows k³) of the exact solve.

    Args:
        R: sparse CSR [n_rows, n_cols], values = raw event strengths r_ui.
        Y: [n_cols, k] factors of the other side (fixed).
        X0: [n_rows, k] warm start, e.g. the current factors (not modified).
        l2: λ >= 0.
        alpha, kind, eps: the confidence function (`mfzoo.data.implicit.confidence`).
        unobserved_weight: α₀ >= 0, the weight of every unobserved pair.
        l2_exponent: ν; 0 gives a plain λ.
        cg_steps: CG iterations >= 0 (0 returns a copy of X0, empty rows included); 3 is
            implicit's default.
        block_size: rows iterated together (bounds the [nnz_block, k] gathered y_i).
        cache, gram, n_cols: as `ials_half_step`.
        native: run the C kernel (`mfzoo.native.ials_cg`: one pass over y_i per CG step, rows
            on `threads` workers, no gathered copy) instead of the batched torch blocks. None
            (default): where it can, i.e. on a CPU in float32/float64 with the kernels built;
            False: the torch path; True: the kernel or RuntimeError. The two compute the same
            iterations; results differ by rounding only. Neither depends on the thread count.
        threads: the kernel's workers (None: torch's thread count).

    Returns:
        X [n_rows, k] on Y's device, in Y's dtype.
    """
    check_ials_settings(l2, alpha, kind, eps, unobserved_weight, l2_exponent)
    if cg_steps < 0:
        raise ValueError(f"cg_steps must be >= 0, got {cg_steps}")
    # the kernel reads R's own (int32) indices
    crow, col, values = _csr_parts(R, Y, block_size, index=None)
    if X0.shape != (R.shape[0], Y.shape[1]):
        raise ValueError(
            f"X0 must be [n_rows, k] = {(R.shape[0], Y.shape[1])}, got {tuple(X0.shape)}"
        )
    if not bool(torch.isfinite(X0).all()):
        raise NonFiniteError("ials_half_step_cg: the warm start X0 holds NaN or inf")
    YtY = unobserved_weight * (
        Y.T @ Y if gram is None else gram.to(Y)
    )  # [k, k] α₀ YtY, once per half-step
    counts = crow.diff()  # [n_rows] n_u
    width = R.shape[1] if n_cols is None else n_cols
    reg = l2 * (counts.to(Y.dtype) + unobserved_weight * width).pow(l2_exponent)  # [n_rows] λ_u
    X0 = X0.detach().to(device=Y.device, dtype=Y.dtype)
    if native is None:
        native = mfzoo_native.supports(Y, X0)
    elif native and not mfzoo_native.supports(Y, X0):
        raise RuntimeError(
            f"ials_half_step_cg(native=True): the C kernel cannot run: "
            f"{mfzoo_native.unavailable_reason(Y, X0)}; use native=None or False for the torch path"
        )
    if native:
        # the kernel reads Y[col] unchecked: the pattern's range, once per matrix (kept in the
        # cache)
        low, high = memo(
            cache,
            ("column range", col.device),
            lambda: tuple(map(int, col.aminmax())) if col.numel() else (0, -1),
        )
        if low < 0 or high >= Y.shape[0]:
            raise ValueError(
                f"R's column indices must lie in 0..{Y.shape[0] - 1} (Y's rows), got {low}..{high}"
            )

        def run_native() -> Tensor:
            # [nnz] c_ui − α₀, c_ui
            gram_w, c, _ = _confidences(values, kind, alpha, eps, unobserved_weight, cache)
            # [n_rows, k] the warm start, solved in place
            X = X0.clone(memory_format=torch.contiguous_format)
            mfzoo_native.ials_cg(
                crow,
                col,
                gram_w.contiguous(),
                c.contiguous(),
                Y.contiguous(),
                YtY.contiguous(),
                reg.contiguous(),
                X,
                cg_steps,
                threads,
            )
            return X

        return solved(
            run_native,
            "the iALS conjugate-gradient half-step",
            lambda: ials_fix(values, l2, alpha, kind, eps, unobserved_weight),
        )

    crow, col = crow.long(), col.long()  # the torch blocks index and offset with them
    order = row_order(crow, cache)  # [n_rows] the row order of the blocks
    X_sorted, reg_sorted = (
        X0.index_select(0, order),
        reg.index_select(0, order),
    )  # [n_rows, k], [n_rows]
    if cg_steps > 0:  # rows without entries first in `order`: x_u = 0, their exact solution
        X_sorted[: int((counts == 0).sum())] = 0.0

    cg_block = scripted(_cg_block)

    def solve(block: slice, Yg: Tensor, gram_w: Tensor, rhs_w: Tensor) -> None:
        X_sorted[block] = cg_block(
            X_sorted[block], Yg, gram_w, rhs_w, YtY, reg_sorted[block], cg_steps
        )

    def run() -> Tensor:
        # [nnz] c_ui − α₀, c_ui
        gram_w, c, _ = _confidences(values, kind, alpha, eps, unobserved_weight, cache)
        for_blocks(solve, crow, col, (gram_w, c), Y, block_size, order, cache)
        return torch.empty_like(X_sorted).index_copy_(0, order, X_sorted)

    return solved(
        run,
        "the iALS conjugate-gradient half-step",
        lambda: ials_fix(values, l2, alpha, kind, eps, unobserved_weight),
    )


@torch.no_grad()
def als_sweep(
    model: nn.Module, train: Interactions, half_step: Callable[[Tensor, Tensor], Tensor]
) -> None:
    """One full ALS sweep on a model without biases (e.g. `MF(biases=False)`) with one solver
    function for both sides, `half_step(R, Y) -> X` (e.g. `functools.partial(ials_half_step,
    l2=0.1, alpha=2.0)` or `partial(least_squares_half_step, l2=0.1)`): the user half-step on
    R = `train.csr("user")` (users × items) written into `model.user_embedding.weight`, then
    the item half-step on Rᵀ = `train.csr("item")` with the new user factors, written into
    `model.item_embedding.weight`. Neither half-step increases the corresponding objective
    (`objective.ials_objective` / `objective.least_squares_objective` with both_sides=True)."""
    check_model_class("als_sweep", type(model), (MF_PATH,), "r̂ = p_u·q_i", "Use MF(biases=False).")
    if getattr(model, "biases", False):
        raise ValueError(
            "als_sweep solves r̂ = p_u·q_i only; this model has biases (build it with biases=False)"
        )
    model = cast("MF", model)  # `check_model_class` matched its class to `MF_PATH` exactly
    users, items = (
        model.user_embedding.weight,
        model.item_embedding.weight,
    )  # [n_users, D], [n_items, D]
    R_users = train.csr("user").to(users.device)  # [n_users, n_items]
    R_items = train.csr("item").to(users.device)  # [n_items, n_users]
    users.copy_(half_step(R_users, items))
    items.copy_(half_step(R_items, users))


# -- internals ------------------------------------------------------------------------------
def _csr_parts(
    R: Tensor, Y: Tensor, block_size: int, index: torch.dtype | None = torch.long
) -> tuple[Tensor, Tensor, Tensor]:
    """Validated (crow [n_rows+1], col [nnz], values [nnz]) of R, on Y's device, values in Y's
    dtype, indices in `index` (None: R's own, int32 for `Interactions.csr`)."""
    if R.layout != torch.sparse_csr or R.dim() != 2:
        raise ValueError(
            f"R must be a 2-D torch sparse CSR tensor, got layout {R.layout} and shape "
            f"{tuple(R.shape)}"
        )
    if Y.dim() != 2 or not Y.is_floating_point():
        raise ValueError(
            f"Y must be a floating [n_cols, k] tensor, got shape {tuple(Y.shape)} dtype {Y.dtype}"
        )
    if R.shape[1] != Y.shape[0]:
        raise ValueError(f"R has {R.shape[1]} columns but Y has {Y.shape[0]} rows")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not bool(torch.isfinite(Y).all()):
        raise NonFiniteError(
            "the fixed factors Y hold NaN or inf: the other side's factors were non-finite "
            "before this half-step"
        )
    crow = R.crow_indices().to(device=Y.device, dtype=index or R.crow_indices().dtype)  # [n_rows+1]
    col = R.col_indices().to(device=Y.device, dtype=index or R.col_indices().dtype)  # [nnz]
    values = R.values().to(device=Y.device, dtype=Y.dtype)  # [nnz]
    return crow, col, values


def _confidences(
    values: Tensor,
    kind: str,
    alpha: float,
    eps: float,
    unobserved_weight: float,
    cache: dict | None,
) -> tuple[Tensor, Tensor, bool]:
    """(c_ui − α₀, c_ui) [nnz] of the iALS half-steps and whether every c_ui − α₀ >= 0, from the
    cache when it has them."""

    def make() -> tuple[Tensor, Tensor, bool]:
        c = confidence(values, kind, alpha, eps)
        if not bool(torch.isfinite(c).all()):
            raise NonFiniteError(f"the confidences c overflow {c.dtype}")
        gram_w = c - unobserved_weight
        return gram_w, c, not bool((gram_w < 0).any())

    return memo(
        cache,
        (
            "confidence",
            kind,
            float(alpha),
            float(eps),
            float(unobserved_weight),
            values.dtype,
            values.device,
        ),
        make,
    )


def _solve_rows(
    crow: Tensor,
    col: Tensor,
    gram_weight: Tensor,
    rhs_weight: Tensor,
    Y: Tensor,
    reg: Tensor,
    base: Tensor | None,
    block_size: int,
    cache: dict | None = None,
    nonnegative: bool | None = None,
    reg_weights: Tensor | None = None,
) -> Tensor:
    """x_u = A_u⁻¹ b_u for every row of a CSR pattern (crow, col), block by block
    (`blocks.for_blocks`), with

        A_u = B_u + Y_uᵀ W_u Y_u,   B_u = base + reg_u I,   b_u = Y_uᵀ h_u,

    Y_u [n_u, k] the rows y_i of u's entries, W_u = diag(gram_weight), h_u = rhs_weight.

    Everything is solved in the eigenbasis of `base` (base = V diag(e) Vᵀ, Ỹ = Y V, computed
    once), where every B_u = V diag(e + reg_u) Vᵀ is diagonal; the solution is rotated back at
    the end. Two ways to solve a block of rows, whose longest row has L entries:

    - direct, L >= k: Ã_u = Ỹ_uᵀ W_u Ỹ_u + diag(e + reg_u) as one batched product [b, k, L] @
      [b, L, k], then one batched Cholesky solve of the k × k systems;
    - low rank (Woodbury), L < k, when every w >= 0 and every B_u is positive definite:
      x_u = B_u⁻¹ Y_uᵀ (I + W_u G_u)⁻¹ h_u with G_u = Y_u B_u⁻¹ Y_uᵀ [n_u, n_u], and with
      S = W_u^½, (I + W G)⁻¹ h = h − S (I + S G S)⁻¹ S G h: one batched Cholesky solve of the
      L × L systems I + S G S (eigenvalues >= 1). Cost L²k + L³/3 per row against Lk² + k³/3,
      which on power-law data (most rows short) is most of the half-step.

    A_u that is not positive definite (e.g. λ = 0 and n_u < k) gets the minimum-norm solution
    (`spd_solve`); rows without entries get x_u = 0.

    `reg_weights` [k] (without `base` only): B_u = reg_u diag(reg_weights) instead of reg_u I,
    a penalty per coordinate (the bias of `biased_least_squares_half_step` has its own).
    """
    n_rows, k = crow.numel() - 1, Y.shape[1]
    if reg_weights is not None and base is not None:
        raise ValueError("reg_weights apply without a shared base only")
    w = Y.new_ones(k) if reg_weights is None else reg_weights.to(Y)  # [k] the penalty's shape
    if base is None:
        e, V, Yr = Y.new_zeros(k), None, Y  # [k], -, [n_cols, k]
    else:
        if not bool(torch.isfinite(base).all()):  # eigh would fail on it without saying why
            raise NonFiniteError("α₀ YᵀY overflows (factors or unobserved_weight too large)")
        e, V = torch.linalg.eigh(base)  # [k], [k, k]
        Yr = Y @ V  # [n_cols, k] Ỹ
    # the low-rank path needs every w >= 0 (`nonnegative`, when the caller knows)
    low_rank_ok = not bool((gram_weight < 0).any()) if nonnegative is None else nonnegative
    crow, col = crow.long(), col.long()  # the torch blocks index and offset with them
    order = row_order(crow, cache)  # [n_rows] the row order of the blocks
    reg_sorted = reg.index_select(0, order)  # [n_rows]
    X_sorted = Y.new_zeros(n_rows, k)  # [n_rows, k] x̃ (rotated), rows in `order`
    # every B_u positive definite: one host sync per half-step, not one per block (on a GPU
    # each would stall the queue); blocks are checked one by one only when this fails
    definite = low_rank_ok and n_rows > 0 and bool(e.min() + reg.min() * w.min() > 0)

    def solve(block: slice, Yg: Tensor, gram_w: Tensor, rhs_w: Tensor) -> None:
        L = Yg.shape[1]
        if L == 0:
            return  # rows without entries: b_u = 0, x_u = 0
        diag = e + reg_sorted[block].unsqueeze(1) * w  # [b, k] the diagonal of B_u, rotated
        if k > L and low_rank_ok and (definite or bool((diag > 0).all())):
            Z = Yg / diag.unsqueeze(1)  # [b, L, k] Y_u B_u⁻¹
            G = torch.bmm(Z, Yg.mT)  # [b, L, L] Y_u B_u⁻¹ Y_uᵀ
            s = gram_w.sqrt()  # [b, L] S
            M = G * s.unsqueeze(2) * s.unsqueeze(1)  # [b, L, L] S G S
            M.diagonal(dim1=1, dim2=2).add_(1.0)  # + I
            Gh = torch.bmm(G, rhs_w.unsqueeze(2)).squeeze(2)  # [b, L] G h
            v = rhs_w - s * spd_solve(M, s * Gh)  # [b, L] (I + W G)⁻¹ h
            X_sorted[block] = torch.bmm(v.unsqueeze(1), Z).squeeze(1)  # [b, k] B⁻¹ Y_uᵀ v
        else:
            A = torch.bmm(Yg.mT, Yg * gram_w.unsqueeze(2))  # [b, k, k] Σ w ỹ ỹᵀ
            A.diagonal(dim1=1, dim2=2).add_(diag)  # + diag(e + λ_u)
            # b_u [b, k]
            X_sorted[block] = spd_solve(A, torch.bmm(rhs_w.unsqueeze(1), Yg).squeeze(1))

    for_blocks(solve, crow, col, (gram_weight, rhs_weight), Yr, block_size, order, cache)
    X = torch.empty_like(X_sorted).index_copy_(0, order, X_sorted)  # [n_rows, k]
    return X if V is None else X @ V.T


def _cg_block(
    X: Tensor,
    Yg: Tensor,
    gram_weight: Tensor,
    rhs_weight: Tensor,
    YtY: Tensor,
    reg: Tensor,
    steps: int,
) -> Tensor:
    """`steps` conjugate-gradient iterations on every row's A_u x_u = b_u of a block in the
    padded layout of `blocks.for_blocks` (Yg [b, L, k], gram_weight = c_ui − α₀ and
    rhs_weight = c_ui [b, L], 0 on padding), from X [b, k] (not modified); returns the new
    X [b, k]. No A_u is formed:

        A_u p_u = α₀ YtY p_u + Σ_{i∈I_u} (c_ui − α₀)(p_u·y_i) y_i + λ_u p_u   (YtY scaled by α₀),

    two passes over Yg: t = p_u·y_i, then Σ (c_ui − α₀) t y_i. The initial residual
    r⁰ = b − A x⁰ = Σ (c_ui − (c_ui − α₀) x⁰·y_i) y_i − α₀ YtY x⁰ − λ_u x⁰ takes two passes too,
    and the last step needs only pᵀA p = pᵀ YtY p + Σ (c_ui − α₀) t² + λ_u ‖p‖² (one pass): 7
    passes for 3 steps. A division by an exactly zero rᵀr or pᵀAp (converged or empty rows)
    gives a step of 0 instead of NaN. The [b, 1, k] @ [b, k, L] form of the products is about
    twice as fast on a CPU as [b, L, k] @ [b, k, 1].

    Runs as TorchScript where torch has it (`blocks.scripted`): its interpreter runs the ~40
    operations of a block without taking the GIL for each, so the solver's threads do not queue
    on it (about 15% of a CG sweep on 2 cores)."""
    t = torch.bmm(X.unsqueeze(1), Yg.mT).squeeze(1)  # [b, L] x⁰·y_i
    r = torch.bmm((rhs_weight - gram_weight * t).unsqueeze(1), Yg).squeeze(1)  # [b, k]
    r = r - X @ YtY - reg.unsqueeze(1) * X  # YtY symmetric: X YtY = (YtY X)ᵀ
    p = r  # [b, k] search directions
    rs = (r * r).sum(1)  # [b] r_uᵀ r_u
    for step in range(steps):
        t = torch.bmm(p.unsqueeze(1), Yg.mT).squeeze(1)  # [b, L] p_u·y_i
        pY = p @ YtY  # [b, k]
        if step == steps - 1:  # the last step: pᵀAp from t, no A p
            pAp = (t * t * gram_weight).sum(1) + (p * pY).sum(1) + reg * (p * p).sum(1)  # [b]
            return X + torch.where(pAp > 0, rs / pAp, 0.0).unsqueeze(1) * p
        # [b, k]
        Ap = torch.bmm((t * gram_weight).unsqueeze(1), Yg).squeeze(1) + pY + reg.unsqueeze(1) * p
        pAp = (p * Ap).sum(1)  # [b]
        a = torch.where(pAp > 0, rs / pAp, 0.0).unsqueeze(1)  # [b, 1]
        X = X + a * p
        r = r - a * Ap
        rs_new = (r * r).sum(1)  # [b]
        p = r + torch.where(rs > 0, rs_new / rs, 0.0).unsqueeze(1) * p
        rs = rs_new
    return X
