"""Bayesian MF by Gibbs sampling (BPMF: Salakhutdinov & Mnih 2008, "Bayesian probabilistic
matrix factorization using Markov chain Monte Carlo"), on the batched per-row machinery of
ALS: where an ALS half-step solves each row's normal equations, a Gibbs half-step draws each
row from its Gaussian conditional.

Model (`mfzoo.models.bayesian.BayesianMF`), with x_u = [p_u, b_u] and y_i = [q_i, b_i] (the
biases are one more coordinate of the sampled vectors; without biases x_u = p_u):

    r_ui ~ N(μ + b_u + b_i + p_u·q_i, α⁻¹),
    x_u ~ N(m_U, Λ_U⁻¹),   y_i ~ N(m_I, Λ_I⁻¹),
    (m_U, Λ_U), (m_I, Λ_I) ~ Gaussian-Wishart(μ₀ = 0, β₀, W₀ = I, ν₀ = d),
    α ~ Gamma(a₀, b₀)                 (or α fixed: `noise_precision`),

μ the training mean (fixed). One sweep draws, in turn:

1. (m_U, Λ_U) | X: with n rows, x̄ their mean and S = Σ_u (x_u − x̄)(x_u − x̄)ᵀ,
       Λ_U ~ Wishart(W*, ν₀ + n),  W*⁻¹ = W₀⁻¹ + S + β₀ n / (β₀ + n) · x̄ x̄ᵀ,
       m_U ~ N(n x̄ / (β₀ + n), ((β₀ + n) Λ_U)⁻¹);
2. every x_u | Y, m_U, Λ_U, α, independently (the rows of one block at once): with ỹ_i =
   [q_i, 1] and the target t_ui = r_ui − μ − b_i (without biases ỹ_i = q_i, t_ui = r_ui),
       A_u = Λ_U + α Σ_{i∈I_u} ỹ_i ỹ_iᵀ,   x_u ~ N(A_u⁻¹ (Λ_U m_U + α Σ_{i∈I_u} t_ui ỹ_i), A_u⁻¹),
   drawn as A_u⁻¹ b_u + L_u⁻ᵀ z_u with A_u = L_u L_uᵀ (one batched Cholesky per block) and
   z_u ~ N(0, I) drawn for all rows beforehand, in row order (the result does not depend on
   the blocks or threads);
3. the same for the items, against the new user rows;
4. α | everything ~ Gamma(a₀ + N/2, b₀ + SSE/2), SSE the squared error of the N training
   ratings (unless α is fixed).

With the model's options (`BayesianMF(implicit=..., n_bins=..., day_bias=...)`) the sweep
draws, after step 3 (each conditional given everything else; e_ui the residual of the full
prediction):

3a. the implicit factors y_j, one item at a time (y_j's conditional couples it to every other
    y_k of the users who rated j, so the items are not independent): with c_u = |N(u)|^-½,
    G_u = Σ_{i∈I_u} q_i q_iᵀ and h_u = Σ_{i∈I_u} e_ui q_i,
        A_j = Λ_Y + α Σ_{u∋j} c_u² G_u,   b_j = Λ_Y m_Y + α Σ_{u∋j} c_u (h_u + c_u G_u y_j),
        y_j ~ N(A_j⁻¹ b_j, A_j⁻¹),   then h_u −= c_u G_u Δ_j and the users' sums += c_u Δ_j
    (Δ_j the change of y_j), with (m_Y, Λ_Y) from the Gaussian-Wishart posterior as in step 1;
    the user side's target in step 2 subtracts c_u Σ_j y_j·q_i, the item side's design is the
    effective p_u + c_u Σ_j y_j;
3b. each group of scalar time biases g (the item-bin biases, then the day biases): its
    precision τ ~ Gamma(a_b + G/2, b_b + Σ_g b_g²/2) over its G rows, then every row
    independently, b_g ~ N(α Σ_{(u,i)∈g} ẽ_ui / (τ + α n_g), (τ + α n_g)⁻¹), ẽ the residual
    without b_g itself; every other step's target subtracts the time biases.

After `burn_in` sweeps every sweep's draw is kept by the model, whose predictions average
over the kept draws. With fixed hyperparameters a draw with z = 0 is the posterior mean, which
for m = 0, Λ = λα I is the ridge solution of the biased ALS half-step with λ on the factors and
the bias (`tests/test_gibbs.py` checks both, and the moments of the hyperparameter draws).

Randomness: sweep s draws everything from `numpy.random.default_rng([seed, s])` (and a torch
generator seeded from it), so a run is reproducible and a resumed run, which restores the sweep
count and α from the checkpoint, draws what the uninterrupted one drew.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from mfzoo.data.interactions import Interactions
from mfzoo.solvers.blocks import block_rows, for_blocks, kept_with, matrix_on, memo, row_order
from mfzoo.solvers.checks import NonFiniteError, at_least, check_model_class, positive

if TYPE_CHECKING:  # for annotations only: solvers name the models they solve by path (`checks`)
    from mfzoo.models.bayesian import BayesianMF

BAYESIAN_PATH = "mfzoo.models.bayesian.BayesianMF"


def wishart(W: np.ndarray, nu: float, rng: np.random.Generator) -> np.ndarray:
    """A draw of Wishart(W, ν) [d, d] (mean ν W) by the Bartlett decomposition: with W = C Cᵀ
    and A lower triangular, A_jj = sqrt(χ²(ν − j)), A_jl ~ N(0, 1) below the diagonal, C A Aᵀ Cᵀ."""
    d = W.shape[0]
    C = np.linalg.cholesky(W)
    A = np.zeros((d, d))
    A[np.diag_indices(d)] = np.sqrt(rng.chisquare(nu - np.arange(d)))
    A[np.tril_indices(d, -1)] = rng.standard_normal(d * (d - 1) // 2)
    CA = C @ A
    return CA @ CA.T


def sample_hyperparameters(
    X: Tensor, beta0: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(m [d], Λ [d, d]) drawn from the Gaussian-Wishart posterior given the rows X [n, d]
    (μ₀ = 0, W₀ = I, ν₀ = d; step 1 of the module docstring), in float64."""
    x = X.detach().double().cpu().numpy()
    n, d = x.shape
    mean = x.mean(0)  # [d]
    centred = x - mean
    beta = beta0 + n
    W_inv = np.eye(d) + centred.T @ centred + (beta0 * n / beta) * np.outer(mean, mean)
    W = np.linalg.inv(W_inv)
    Lam = wishart((W + W.T) / 2, d + n, rng)
    L = np.linalg.cholesky(beta * Lam)
    m = n * mean / beta + np.linalg.solve(L.T, rng.standard_normal(d))  # N(n x̄ / β, (β Λ)⁻¹)
    return m, Lam


def draw_rows(
    R: Tensor,
    design: Tensor,
    target: Tensor,
    Lam: Tensor,
    m: Tensor,
    alpha: float,
    Z: Tensor,
    block_size: int,
    cache: dict | None = None,
) -> Tensor:
    """Every row u of R drawn from N(A_u⁻¹ b_u, A_u⁻¹) (step 2 of the module docstring):
    A_u = Λ + α Σ_{i∈I_u} ỹ_i ỹ_iᵀ, b_u = Λ m + α Σ_{i∈I_u} t_ui ỹ_i, as A_u⁻¹ b_u + L_u⁻ᵀ z_u.

    Args:
        R: sparse CSR [n_rows, n_cols] (its pattern: which ỹ_i each row sees).
        design: ỹ [n_cols, d], the other side's rows (with a column of ones for the bias).
        target: t [nnz], the target of every stored entry, in R's entry order.
        Lam, m: the prior precision [d, d] and mean [d].
        alpha: the noise precision α > 0.
        Z: [n_rows, d] standard normal draws (zeros: the posterior means).
        block_size, cache: as the ALS half-steps (`blocks.for_blocks`).

    Returns:
        X [n_rows, d] in design's dtype and on its device; rows without entries come from the prior.
    """
    crow = R.crow_indices().to(device=design.device, dtype=torch.long)
    col = R.col_indices().to(device=design.device, dtype=torch.long)
    n_rows, d = crow.numel() - 1, design.shape[1]
    Lam, m = Lam.to(design), m.to(design)
    prior = Lam @ m  # [d] Λ m
    order = row_order(crow, cache)  # [n_rows]
    Z_sorted = Z.to(design).index_select(0, order)  # [n_rows, d]
    X_sorted = design.new_zeros(n_rows, d)

    def solve(block: slice, Yg: Tensor, t: Tensor) -> None:
        A = alpha * torch.bmm(Yg.mT, Yg) + Lam  # [b, d, d]
        b = alpha * torch.bmm(t.unsqueeze(1), Yg).squeeze(1) + prior  # [b, d]
        L = torch.linalg.cholesky(A)  # [b, d, d]; Λ is positive definite, so is A
        mean = torch.cholesky_solve(b.unsqueeze(2), L)  # [b, d, 1]
        # [b, d, 1] L⁻ᵀ z
        noise = torch.linalg.solve_triangular(L.mT, Z_sorted[block].unsqueeze(2), upper=True)
        X_sorted[block] = (mean + noise).squeeze(2)

    for_blocks(solve, crow, col, (target.to(design),), design, block_size, order, cache)
    X = torch.empty_like(X_sorted).index_copy_(0, order, X_sorted)
    if not bool(torch.isfinite(X).all()):
        raise NonFiniteError(
            "the Gibbs draw produced NaN or inf (the ratings' scale or the noise precision too "
            "large)"
        )
    return X


def pattern(R: Tensor, like: Tensor) -> Tensor:
    """R's pattern as a CSR matrix of ones in `like`'s dtype, on its device: R's rows summing
    the rows of a dense [n_cols, k] matrix by one sparse product."""
    crow, col = R.crow_indices().to(like.device), R.col_indices().to(like.device)
    return torch.sparse_csr_tensor(
        crow, col, like.new_ones(len(col)), size=R.shape, check_invariants=False
    )


def draw_implicit(
    R_items: Tensor,
    c: Tensor,
    G: Tensor,
    h: Tensor,
    Y: Tensor,
    sums: Tensor,
    Lam: Tensor,
    m: Tensor,
    alpha: float,
    Z: Tensor,
) -> None:
    """Step 3a of the module docstring, in place: every y_j (row j of Y [I, d]) drawn in item
    order from its conditional, each draw moving the users' h [U, d] and implicit sums [U, d].

    A_j = Λ + α Σ_{u∋j} c_u² G_u does not change during the loop (G and c are fixed), so every
    A_j, its inverse and the noise A_j^-½ z_j (L_j⁻ᵀ z_j, A_j = L_j L_jᵀ) are computed at once,
    batched, on the tensors' device; the sequential part (b_j from the current h, then h and the
    sums moved by the draw) runs as a loop of small float64 NumPy operations on the CPU.

    Args:
        R_items: sparse CSR [n_items, n_users]: row j holds the users with j in N(u).
        c: [U] c_u = |N(u)|^-½ (0 for a user without items).
        G: [U, d, d] Σ_{i∈I_u} q_i q_iᵀ; h: [U, d] Σ_{i∈I_u} e_ui q_i at the current Y.
        Lam, m: the prior precision [d, d] and mean [d] of y; alpha: the noise precision.
        Z: [I, d] standard normal draws (zeros: every y_j its conditional mean, in turn).
    """
    n_items, d = Y.shape
    crow = R_items.crow_indices().to(Y.device)
    col = R_items.col_indices().to(Y.device)
    weighted = (c.square().unsqueeze(1).unsqueeze(2) * G).reshape(len(c), d * d)  # [U, d²] c_u² G_u
    # [I, d, d]
    A = Lam + alpha * torch.sparse.mm(pattern(R_items, Y), weighted).view(n_items, d, d)
    L = torch.linalg.cholesky(A)
    A_inv = torch.cholesky_inverse(L)  # [I, d, d]
    noise = torch.linalg.solve_triangular(L.mT, Z.to(Y).unsqueeze(2), upper=True)[..., 0]  # [I, d]
    K = A - Lam  # [I, d, d] α Σ c_u² G_u
    to = lambda t: t.detach().to("cpu", torch.float64).numpy()  # noqa: E731
    Gn, hn, Yn, sn, cn = to(G), to(h), to(Y), to(sums), to(c)
    A_inv_n, noise_n, K_n = to(A_inv), to(noise), to(K)
    prior = to(Lam @ m)
    starts, cols = crow.tolist(), to(col).astype(np.int64)
    for j in range(n_items):
        users = cols[starts[j] : starts[j + 1]]  # the users whose sums hold y_j
        cu = cn[users]  # [n]
        b = prior + alpha * (cu @ hn[users]) + K_n[j] @ Yn[j]  # [d]
        draw = A_inv_n[j] @ b + noise_n[j]
        delta = draw - Yn[j]
        hn[users] -= cu[:, None] * (Gn[users] @ delta)
        sn[users] += cu[:, None] * delta
        Yn[j] = draw
    for tensor, array in ((h, hn), (Y, Yn), (sums, sn)):
        tensor.copy_(torch.from_numpy(array))


def draw_group_biases(
    residual: Tensor, groups: Tensor, n_groups: int, tau: float, alpha: float, Z: Tensor
) -> Tensor:
    """Step 3b for one group of scalar biases: b_g ~ N(α Σ_{n∈g} residual_n / (τ + α n_g),
    (τ + α n_g)⁻¹) for g in 0..n_groups−1 [n_groups], `residual` [N] the events' residuals without
    the group's own term, `groups` [N] each event's row, Z [n_groups] standard normal draws."""
    counts = torch.bincount(groups, minlength=n_groups).to(residual)
    sums = residual.new_zeros(n_groups).index_add_(0, groups, residual)
    precision = tau + alpha * counts
    return alpha * sums / precision + Z.to(residual) / precision.sqrt()


@dataclass
class GibbsSolver:
    """BPMF by Gibbs sampling as a solver the training glue runs (`solver=gibbs`,
    `configs/solver/gibbs.yaml`): one sweep is one Gibbs sweep (see the module docstring),
    written into a `BayesianMF`, which keeps the draws after `burn_in` and averages its
    predictions over them; one epoch = one sweep, so `trainer.max_epochs` = burn-in + kept draws.

    Args:
        burn_in: sweeps before draws are kept (>= 0).
        noise_precision: α, fixed; None: drawn every sweep from its Gamma posterior.
        noise_shape, noise_rate: a₀, b₀ > 0 of α's Gamma prior.
        beta0: β₀ > 0 of the Gaussian-Wishart hyperprior.
        bias_shape, bias_rate: a_b, b_b > 0 of the Gamma prior of each time-bias group's precision.
        seed: the chain's seed (sweep s draws from `default_rng([seed, s])`).
        block_size: rows drawn together (None: 512 on a CPU, 8192 on an accelerator).
    """

    config: ClassVar[str] = "gibbs"
    explicit: ClassVar[bool] = True  # it fits ratings

    burn_in: int = 5
    noise_precision: float | None = None
    noise_shape: float = 1.0
    noise_rate: float = 1.0
    beta0: float = 2.0
    bias_shape: float = 1.0
    bias_rate: float = 1.0
    seed: int = 0
    block_size: int | None = None
    _state: dict = field(
        default_factory=lambda: {"sweeps": 0, "alpha": 2.0}, init=False, repr=False
    )
    _caches: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        at_least("burn_in", self.burn_in, 0)
        if self.noise_precision is not None:
            positive("noise_precision", self.noise_precision)
            self._state["alpha"] = float(self.noise_precision)
        positive("noise_shape", self.noise_shape)
        positive("noise_rate", self.noise_rate)
        positive("beta0", self.beta0)
        positive("bias_shape", self.bias_shape)
        positive("bias_rate", self.bias_rate)
        if self.block_size is not None:
            at_least("block_size", self.block_size, 1)

    @classmethod
    def check_model(cls, model_class: type, biases: bool | None = None) -> None:
        """ValueError unless `model_class` is `mfzoo.models.bayesian.BayesianMF`."""
        check_model_class(
            f"{cls.__name__} (solver={cls.config})",
            model_class,
            (BAYESIAN_PATH,),
            "r ~ N(μ + b_u + b_i + p_u·q_i, α⁻¹) with Gaussian-Wishart priors",
            "Use model=bayesian_mf with this solver.",
        )

    def check_epochs(self, epochs: int | None) -> None:
        """ValueError when a run of `epochs` sweeps would keep no draw (the model would predict
        with one draw of the burn-in, not the posterior average)."""
        if epochs is not None and 0 <= epochs <= self.burn_in:
            raise ValueError(
                f"trainer.max_epochs={epochs} sweeps keep no draw after "
                f"solver.burn_in={self.burn_in}: give more epochs (the average improves with "
                "every kept draw) or a shorter burn-in"
            )

    @property
    def alpha(self) -> float:
        """The current noise precision α."""
        return float(self._state["alpha"])

    @torch.no_grad()
    def sweep(self, model: nn.Module, train: Interactions) -> None:
        """One Gibbs sweep: the users' hyperparameters and rows, the items' hyperparameters and
        rows, the model's optional implicit factors and time biases, α; the draw is written into
        the model and, after burn-in, kept."""
        self.check_model(type(model))
        model = cast("BayesianMF", model)  # `check_model` matched its class to `BAYESIAN_PATH`
        sweep = int(self._state["sweeps"])
        rng = np.random.default_rng([self.seed, sweep])
        torch_generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        users, items = model.state()  # [U, d], [I, d] the current draw
        device, dtype, d = users.device, users.dtype, model.dim
        R_users, R_items = (
            matrix_on(self._caches, train, "user", device),
            matrix_on(self._caches, train, "item", device),
        )
        mean = float(model.global_mean) if model.biases else 0.0
        rows = block_rows(self.block_size, device)
        events = self._events(model, train, device)  # the training rows' users, items, time rows

        def side(
            R: Tensor, by: str, own: Tensor, other: Tensor, cache: dict, offset: Tensor | None
        ) -> Tensor:
            """Draw one side's rows; `offset` [N] (per training row) is subtracted from the
            target."""
            m, Lam = sample_hyperparameters(own, self.beta0, rng)
            values = R.values().to(device=device, dtype=dtype)  # [nnz]
            col = R.col_indices().to(device)
            if model.biases:
                # [n_cols, d] [y, 1]
                design = torch.cat([other[:, :-1], torch.ones_like(other[:, :1])], dim=1)
                target = values - mean - other[:, -1].index_select(0, col)  # [nnz] r − μ − b_other
            else:
                design, target = other, values
            if offset is not None:  # into R's entry order (pairs are unique: a permutation)
                target = target - offset.new_zeros(len(values)).index_copy_(
                    0, self._entries(train, by, R, cache), offset
                )
            Z = torch.randn(
                R.shape[0], own.shape[1], generator=torch_generator, dtype=torch.float64
            )
            return draw_rows(
                R,
                design,
                target,
                torch.from_numpy(Lam),
                torch.from_numpy(m),
                self.alpha,
                Z,
                rows,
                cache,
            )

        # [N] or None
        time = model.time_bias(events["bins"], events["days"]) if model.timed else None
        assert not isinstance(time, float)  # a timed model has bin or day rows: a tensor
        u, i = events["users"], events["items"]
        offset = time
        if model.implicit:  # the user side's target also loses c_u Σ y_j · q_i
            implicit = (
                model.implicit_sum.index_select(0, u) * items[:, :d].index_select(0, i)
            ).sum(1)
            offset = implicit if time is None else time + implicit
        users = side(R_users, "user", users, items, kept_with(self._caches, R_users), offset)
        effective = (
            users
            if not model.implicit
            else torch.cat([users[:, :d] + model.implicit_sum, users[:, d:]], 1)
        )
        items = side(R_items, "item", items, effective, kept_with(self._caches, R_items), time)
        model.set_state(users, items)
        if model.implicit:
            self._draw_implicit(model, train, events, R_users, R_items, rng, torch_generator)
        if model.timed:
            self._draw_time_biases(model, train, events, rng, torch_generator)
        if self.noise_precision is None:
            sse = self.objective(model, train)
            self._state["alpha"] = float(
                rng.gamma(self.noise_shape + len(train) / 2, 1.0 / (self.noise_rate + sse / 2))
            )
        self._state["sweeps"] = sweep + 1
        if sweep + 1 > self.burn_in:
            model.keep_sample()

    def _events(self, model: BayesianMF, train: Interactions, device: torch.device) -> dict:
        """The training rows' users, items [N] and their time rows (bins, days; None without),
        on the model's device, kept across sweeps with the training matrix."""
        cache = kept_with(self._caches, train.csr("user"))

        def make() -> dict:
            users, items = train.users.to(device), train.items.to(device)
            times = train.timestamps.to(device) if train.timestamps is not None else None
            bins, days = model.time_rows(users, items, times) if model.timed else (None, None)
            return {"users": users, "items": items, "bins": bins, "days": days}

        return memo(cache, ("events", str(device), model.n_bins, model.has_day_bias), make)

    @staticmethod
    def _entries(train: Interactions, by: str, R: Tensor, cache: dict) -> Tensor:
        """The entry of R (`train.csr(by)`) that holds each training row [N]."""

        def make() -> Tensor:
            rows, cols = (train.users, train.items) if by == "user" else (train.items, train.users)
            n_cols = R.shape[1]
            keys = rows.long() * n_cols + cols.long()
            unique = torch.unique(keys)
            if len(unique) != len(keys):
                raise ValueError(
                    f"{train.name}: the Gibbs sampler's implicit and time terms need one rating "
                    "per (user, item) pair; this set repeats pairs (see data.pair_duplicates)"
                )
            return torch.searchsorted(unique, keys).to(R.device)

        return memo(cache, ("entries",), make)

    def residuals(self, model: nn.Module, train: Interactions) -> Tensor:
        """e_ui = r_ui − r̂_ui of every training row at the current draw [N] (float64)."""
        model = cast("BayesianMF", model)  # the BayesianMF that `sweep` checked and draws
        users, items = model.state()
        events = self._events(model, train, users.device)
        u, i, d = events["users"], events["items"], model.dim
        p = users[:, :d].index_select(0, u)
        if model.implicit:
            p = p + model.implicit_sum.index_select(0, u)
        scores = (p * items[:, :d].index_select(0, i)).sum(1).double()
        if model.biases:
            scores = scores + float(model.global_mean) + users[u, d].double() + items[i, d].double()
        if model.timed:
            time = model.time_bias(events["bins"], events["days"])  # [N]
            assert isinstance(time, Tensor)  # a timed model has bin or day rows
            scores = scores + time.double()
        return train.values.to(scores) - scores

    def _draw_implicit(
        self,
        model: BayesianMF,
        train: Interactions,
        events: dict,
        R_users: Tensor,
        R_items: Tensor,
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> None:
        """Step 3a: (m_Y, Λ_Y), then every y_j in turn (`draw_implicit`)."""
        Y = model.implicit_items.double()
        m, Lam = sample_hyperparameters(Y, self.beta0, rng)
        _, items = model.state()
        d, u, i = model.dim, events["users"], events["items"]
        q = items[:, :d].double()
        e = self.residuals(model, train)  # [N]
        n_u = torch.bincount(u, minlength=model.n_users).double()
        c = torch.where(n_u > 0, n_u.clamp(min=1).rsqrt(), torch.zeros_like(n_u))  # [U]
        h = q.new_zeros(model.n_users, d).index_add_(0, u, e.unsqueeze(1) * q.index_select(0, i))
        outer = (q.unsqueeze(2) * q.unsqueeze(1)).reshape(model.n_items, d * d)  # [I, d²] q_i q_iᵀ
        # [U, d, d] Σ_{i∈I_u} q_i q_iᵀ
        G = torch.sparse.mm(pattern(R_users, q), outer).view(model.n_users, d, d)
        sums = model.implicit_sum.double()
        Z = torch.randn(model.n_items, d, generator=generator, dtype=torch.float64).to(Y.device)
        draw_implicit(
            R_items,
            c,
            G,
            h,
            Y,
            sums,
            torch.from_numpy(Lam).to(Y),
            torch.from_numpy(m).to(Y),
            self.alpha,
            Z,
        )
        if not bool(torch.isfinite(Y).all()):
            raise NonFiniteError("the Gibbs draw of the implicit factors produced NaN or inf")
        model.implicit_items.copy_(Y)
        model.implicit_sum.copy_(sums)

    def _draw_time_biases(
        self,
        model: BayesianMF,
        train: Interactions,
        events: dict,
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> None:
        """Step 3b: the item-bin biases, then the day biases (the unseen-day row stays 0)."""
        for table, rows, n in (
            ("bin_bias", events["bins"], model.n_items * model.n_bins),
            ("day_bias", events["days"], len(getattr(model, "day_keys", ()))),
        ):
            if rows is None:
                continue
            current = getattr(model, table)
            tau = float(
                rng.gamma(
                    self.bias_shape + n / 2,
                    1.0 / (self.bias_rate + float(current[:n].double().square().sum()) / 2),
                )
            )
            # without b_g itself
            residual = self.residuals(model, train) + current.index_select(0, rows).double()
            Z = torch.randn(n, generator=generator, dtype=torch.float64)
            current[:n] = draw_group_biases(residual, rows, n, tau, self.alpha, Z).to(current)

    @torch.no_grad()
    def objective(self, model: nn.Module, train: Interactions) -> float:
        """Σ_{(u,i)∈R} (r_ui − r̂_ui)² at the current draw (a sum; r̂ with every term of the
        model)."""
        return float(self.residuals(model, train).pow(2).sum())

    # the chain's position goes into the checkpoint (resume draws what the uninterrupted run drew)
    def state_dict(self) -> dict[str, Tensor]:
        """The chain's position: the sweeps done and the current α, as tensors."""
        return {
            "sweeps": torch.tensor(int(self._state["sweeps"])),
            "alpha": torch.tensor(float(self._state["alpha"]), dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Resume the chain at the position of a `state_dict`."""
        self._state["sweeps"] = int(state["sweeps"])
        self._state["alpha"] = float(state["alpha"])
