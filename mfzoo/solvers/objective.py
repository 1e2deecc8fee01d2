"""The objectives of explicit ALS and iALS: what `ALSSolver.objective` / `IALSSolver.objective`
report after each sweep, and what every half-step of `mfzoo.solvers.als` lowers.

Notation as in `mfzoo.solvers.als`, with R [n_users, n_items] the sparse observations (n_u the
entries of row u, n_i those of column i), X [n_users, k] the user factors x_u, Y [n_items, k]
the item factors y_i, s_ui = x_u·y_i and α₀ the weight of the unobserved pairs:

    explicit ALS:  Σ_{(u,i)∈R} (r_ui − s_ui)² + Σ_u λ_u ‖x_u‖² + Σ_i λ_i ‖y_i‖²,
                   λ_u = λ n_u and λ_i = λ n_i (frequency-scaled, ALS-WR) or a plain λ;
    iALS:          Σ_{(u,i)∈R} c_ui (1 − s_ui)² + α₀ Σ_{(u,i)∉R} s_ui²
                   + Σ_u λ_u ‖x_u‖² + Σ_i λ_i ‖y_i‖²,
                   λ_u = λ (n_u + α₀ n_items)^ν,   λ_i = λ (n_i + α₀ n_users)^ν.

`least_squares_sweep_objective` and `ials_sweep_objective` (what the solvers report) sum over
the stored entries only, the unobserved pairs of iALS by the YᵀY trick: O(nnz k + (n_users +
n_items) k²). `least_squares_objective` and `ials_objective` are their dense twins, over every
pair and differentiable, for tests on small data (both_sides=False: the terms of one half-step).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mfzoo.data.implicit import confidence
from mfzoo.solvers.als import _confidences, _csr_parts
from mfzoo.solvers.blocks import memo


def least_squares_objective(
    R: Tensor,
    X: Tensor,
    Y: Tensor,
    l2: float,
    frequency_scaled: bool = True,
    both_sides: bool = False,
) -> Tensor:
    """Explicit ALS objective, evaluated densely (for tests on small data):

        Σ_{u,i∈I_u} (r_ui − x_u·y_i)² + Σ_u λ_u ‖x_u‖²   [+ Σ_i λ_i ‖y_i‖² if `both_sides`]

    with λ_u = λ n_u (λ n_i for columns) or a plain λ. Differentiable in X and Y."""
    R_dense, observed = _dense(R, X)  # [n_rows, n_cols] x2
    residual = observed * (R_dense - X @ Y.T)  # [n_rows, n_cols]
    value = residual.pow(2).sum()
    # [n_rows]
    row_reg = l2 * observed.sum(1) if frequency_scaled else torch.full_like(X[:, 0], float(l2))
    value = value + (row_reg * X.pow(2).sum(1)).sum()
    if both_sides:
        # [n_cols]
        col_reg = l2 * observed.sum(0) if frequency_scaled else torch.full_like(Y[:, 0], float(l2))
        value = value + (col_reg * Y.pow(2).sum(1)).sum()
    return value


def ials_objective(
    R: Tensor,
    X: Tensor,
    Y: Tensor,
    l2: float,
    alpha: float = 1.0,
    kind: str = "linear",
    eps: float = 1.0,
    unobserved_weight: float = 1.0,
    l2_exponent: float = 0.0,
    both_sides: bool = False,
) -> Tensor:
    """iALS objective, evaluated densely (for tests on small data):

        Σ_{u,i∈I_u} c_ui (1 − x_u·y_i)² + α₀ Σ_{u,i∉I_u} (x_u·y_i)² + Σ_u λ_u ‖x_u‖²
                                                      [+ Σ_i λ_i ‖y_i‖² if `both_sides`]

    with λ_u = λ (n_u + α₀ n_cols)^ν and λ_i = λ (n_i + α₀ n_rows)^ν; `ials_half_step` minimises
    it over X (both_sides=False: the terms that depend on X). Differentiable in X and Y."""
    R_dense, observed = _dense(R, X)  # [n_rows, n_cols] x2
    C = torch.where(
        observed.bool(),
        confidence(R_dense, kind, alpha, eps),
        torch.full_like(R_dense, unobserved_weight),
    )
    scores = X @ Y.T  # [n_rows, n_cols]
    value = (C * (observed - scores).pow(2)).sum()  # p_ui = observed
    n_rows, n_cols = observed.shape
    row_reg = l2 * (observed.sum(1) + unobserved_weight * n_cols).pow(l2_exponent)  # [n_rows]
    value = value + (row_reg * X.pow(2).sum(1)).sum()
    if both_sides:
        col_reg = l2 * (observed.sum(0) + unobserved_weight * n_rows).pow(l2_exponent)  # [n_cols]
        value = value + (col_reg * Y.pow(2).sum(1)).sum()
    return value


@torch.no_grad()
def least_squares_sweep_objective(
    R: Tensor,
    X: Tensor,
    Y: Tensor,
    l2: float,
    frequency_scaled: bool = True,
    cache: dict | None = None,
) -> float:
    """Explicit ALS objective of both sides, the quantity every half-step of a sweep lowers
    (R: users × items, X the user factors, Y the item factors):

        Σ_{(u,i)∈R} (r_ui − x_u·y_i)² + Σ_u λ_u ‖x_u‖² + Σ_i λ_i ‖y_i‖²,
        λ_u = λ n_u and λ_i = λ n_i if `frequency_scaled` (n_i the entries of column i), else λ,

    the λ_u and λ_i of `least_squares_half_step` on R and on Rᵀ. Equals the dense
    `least_squares_objective(R, X, Y, l2, frequency_scaled, both_sides=True)`, evaluated on the
    stored entries only (`_entry_scores`): O(nnz k) time, O(nnz) memory, in the factors' dtype.

    Args:
        R: sparse CSR [n_users, n_items], values = ratings.
        X: [n_users, k] user factors; Y: [n_items, k] item factors.
        l2: λ >= 0.
        frequency_scaled: λ n_u (ALS-WR) rather than a plain λ.
        cache: the dict the solver keeps with R (the column counts are computed once).

    Returns:
        The objective, a sum over R (not a mean).
    """
    crow, col, values = _csr_parts(R, Y, 1)
    scores = _entry_scores(crow, col, X, Y)  # [nnz] x_u·y_i
    value = float((values - scores).pow(2).sum())
    # [n_users], [n_items] n_u, n_i
    row_counts, col_counts = _counts(crow, col, R.shape[1], Y.dtype, cache)
    # [n_users] λ_u
    row_reg = l2 * row_counts if frequency_scaled else torch.full_like(row_counts, float(l2))
    # [n_items] λ_i
    col_reg = l2 * col_counts if frequency_scaled else torch.full_like(col_counts, float(l2))
    return value + _penalty(X, row_reg) + _penalty(Y, col_reg)


@torch.no_grad()
def biased_least_squares_sweep_objective(
    R: Tensor,
    X: Tensor,
    Y: Tensor,
    user_bias: Tensor,
    item_bias: Tensor,
    mean: float | Tensor,
    l2: float,
    l2_bias: float,
    frequency_scaled: bool = True,
    cache: dict | None = None,
) -> float:
    """Explicit ALS objective with biases, what every half-step of
    `als.biased_least_squares_half_step` lowers (R: users × items, X, Y the factors, b_u, b_i
    the biases, μ the global mean):

        Σ_{(u,i)∈R} (r_ui − μ − b_u − b_i − x_u·y_i)² + Σ_u (λ_u ‖x_u‖² + λ^b_u b_u²)
        + Σ_i (λ_i ‖y_i‖² + λ^b_i b_i²),

    λ_u = λ n_u, λ^b_u = λ_b n_u (and the same per item) if `frequency_scaled`, else λ and λ_b.
    A sum over R, O(nnz k)."""
    crow, col, values = _csr_parts(R, Y, 1)
    user_bias, item_bias = user_bias.to(Y).reshape(-1), item_bias.to(Y).reshape(-1)
    scores = _entry_scores(crow, col, X, Y)  # [nnz] x_u·y_i
    # [nnz] u of each entry
    rows = torch.repeat_interleave(torch.arange(X.shape[0], device=Y.device), crow.diff())
    residual = (
        values
        - scores
        - user_bias.index_select(0, rows)
        - item_bias.index_select(0, col)
        - float(mean)
    )
    row_counts, col_counts = _counts(crow, col, R.shape[1], Y.dtype, cache)  # [n_users], [n_items]
    row_scale = row_counts if frequency_scaled else torch.ones_like(row_counts)
    col_scale = col_counts if frequency_scaled else torch.ones_like(col_counts)
    return (
        float(residual.pow(2).sum())
        + _penalty(X, l2 * row_scale)
        + _penalty(Y, l2 * col_scale)
        + _penalty(user_bias.unsqueeze(1), l2_bias * row_scale)
        + _penalty(item_bias.unsqueeze(1), l2_bias * col_scale)
    )


@torch.no_grad()
def ials_sweep_objective(
    R: Tensor,
    X: Tensor,
    Y: Tensor,
    l2: float,
    alpha: float = 1.0,
    kind: str = "linear",
    eps: float = 1.0,
    unobserved_weight: float = 1.0,
    l2_exponent: float = 0.0,
    cache: dict | None = None,
) -> float:
    """iALS objective of both sides, the quantity every half-step of a sweep lowers (R: users ×
    items, X the user factors, Y the item factors, s_ui = x_u·y_i, α₀ = `unobserved_weight`):

        Σ_{(u,i)∈R} c_ui (1 − s_ui)² + α₀ Σ_{(u,i)∉R} s_ui² + Σ_u λ_u ‖x_u‖² + Σ_i λ_i ‖y_i‖²,
        λ_u = λ (n_u + α₀ n_items)^ν,   λ_i = λ (n_i + α₀ n_users)^ν,

    with c_ui = `confidence(r_ui, kind, alpha, eps)` (1 + α r or 1 + α log(1 + r/ε)): the
    c_ui, α₀ and λ of `ials_half_step` on R and on Rᵀ. With the YᵀY trick the sum over all
    pairs is never formed: α₀ Σ_{all u,i} s_ui² = α₀ ⟨XᵀX, YᵀY⟩ (Frobenius), and on an observed
    pair c (1 − s)² − α₀ s² = c − 2 c s + (c − α₀) s², so

        objective = α₀ ⟨XᵀX, YᵀY⟩ + Σ_{(u,i)∈R} [c_ui − 2 c_ui s_ui + (c_ui − α₀) s_ui²]
                    + penalties,

    O(nnz k + (n_users + n_items) k²) time, O(nnz) memory, in the factors' dtype. Equals the
    dense `ials_objective(R, X, Y, ..., both_sides=True)`.

    Args:
        R: sparse CSR [n_users, n_items], values = raw event strengths r_ui.
        X: [n_users, k] user factors; Y: [n_items, k] item factors.
        l2, alpha, kind, eps, unobserved_weight, l2_exponent: as `ials_half_step`.
        cache: the dict `IALSSolver` keeps with R (the confidences, shared with the half-steps
            on R, and the column counts are computed once).

    Returns:
        The objective, a sum over all pairs (not a mean).
    """
    crow, col, values = _csr_parts(R, Y, 1)
    # [nnz] c − α₀, c
    gram_w, c, _ = _confidences(values, kind, alpha, eps, unobserved_weight, cache)
    scores = _entry_scores(crow, col, X, Y)  # [nnz] s_ui
    observed = float((c * (1.0 - 2.0 * scores) + gram_w * scores.pow(2)).sum())
    # α₀ Σ_{all u,i} s_ui², [k, k] Grams
    unobserved = unobserved_weight * float(((X.T @ X) * (Y.T @ Y)).sum())
    # [n_users], [n_items] n_u, n_i
    row_counts, col_counts = _counts(crow, col, R.shape[1], Y.dtype, cache)
    n_users, n_items = R.shape
    row_reg = l2 * (row_counts + unobserved_weight * n_items).pow(l2_exponent)  # [n_users] λ_u
    col_reg = l2 * (col_counts + unobserved_weight * n_users).pow(l2_exponent)  # [n_items] λ_i
    return observed + unobserved + _penalty(X, row_reg) + _penalty(Y, col_reg)


def _entry_scores(crow: Tensor, col: Tensor, X: Tensor, Y: Tensor) -> Tensor:
    """x_u·y_i [nnz] of every stored entry (u, i) of a CSR pattern (crow, col), in the order of
    `col`, by one sampled product (`torch.sparse.sampled_addmm`: X Yᵀ at the pattern's entries
    only, no [nnz, k] gather)."""
    if X.shape != (crow.numel() - 1, Y.shape[1]):
        raise ValueError(
            f"X must be [n_rows, k] = {(crow.numel() - 1, Y.shape[1])}, got {tuple(X.shape)}"
        )
    X = X.to(device=Y.device, dtype=Y.dtype)
    pattern = torch.sparse_csr_tensor(
        crow, col, X.new_zeros(col.numel()), size=(X.shape[0], Y.shape[0]), check_invariants=False
    )  # [n_rows, n_cols]
    return torch.sparse.sampled_addmm(pattern, X, Y.T, beta=0.0).values()  # [nnz]


def _counts(
    crow: Tensor, col: Tensor, n_cols: int, dtype: torch.dtype, cache: dict | None
) -> tuple[Tensor, Tensor]:
    """Entries per row [n_rows] and per column [n_cols] of a CSR pattern, in `dtype`."""
    return crow.diff().to(dtype), memo(
        cache,
        ("col_counts", dtype, col.device),
        lambda: torch.bincount(col, minlength=n_cols).to(dtype),
    )


def _penalty(factors: Tensor, reg: Tensor) -> float:
    """Σ_u reg_u ‖factors_u‖²."""
    return float((reg * factors.pow(2).sum(1)).sum())


def _dense(R: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """Dense values and 0/1 observed mask [n_rows, n_cols] of a CSR R, in `like`'s dtype/device."""
    if R.layout != torch.sparse_csr:
        raise ValueError(f"R must be a torch sparse CSR tensor, got layout {R.layout}")
    crow, col, values = R.crow_indices(), R.col_indices(), R.values()
    R_dense = R.to_dense()  # [n_rows, n_cols]
    observed = torch.sparse_csr_tensor(
        crow, col, torch.ones_like(values), size=R.shape, check_invariants=False
    ).to_dense()  # [n_rows, n_cols]
    return R_dense.to(device=like.device, dtype=like.dtype), observed.to(
        device=like.device, dtype=like.dtype
    )
