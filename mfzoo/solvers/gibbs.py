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
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from mfzoo.data.interactions import Interactions
from mfzoo.solvers.blocks import block_rows, for_blocks, kept_with, matrix_on, row_order
from mfzoo.solvers.checks import NonFiniteError, at_least, check_model_class, positive

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


def sample_hyperparameters(X: Tensor, beta0: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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


def draw_rows(R: Tensor, design: Tensor, target: Tensor, Lam: Tensor, m: Tensor, alpha: float, Z: Tensor,
              block_size: int, cache: dict | None = None) -> Tensor:
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
        noise = torch.linalg.solve_triangular(L.mT, Z_sorted[block].unsqueeze(2), upper=True)  # [b, d, 1] L⁻ᵀ z
        X_sorted[block] = (mean + noise).squeeze(2)

    for_blocks(solve, crow, col, (target.to(design),), design, block_size, order, cache)
    X = torch.empty_like(X_sorted).index_copy_(0, order, X_sorted)
    if not bool(torch.isfinite(X).all()):
        raise NonFiniteError("the Gibbs draw produced NaN or inf (the ratings' scale or the noise precision too large)")
    return X


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
    seed: int = 0
    block_size: int | None = None
    _state: dict = field(default_factory=lambda: {"sweeps": 0, "alpha": 2.0}, init=False, repr=False)
    _caches: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        at_least("burn_in", self.burn_in, 0)
        if self.noise_precision is not None:
            positive("noise_precision", self.noise_precision)
            self._state["alpha"] = float(self.noise_precision)
        positive("noise_shape", self.noise_shape)
        positive("noise_rate", self.noise_rate)
        positive("beta0", self.beta0)
        if self.block_size is not None:
            at_least("block_size", self.block_size, 1)

    @classmethod
    def check_model(cls, model_class: type, biases: bool | None = None) -> None:
        """ValueError unless `model_class` is `mfzoo.models.bayesian.BayesianMF`."""
        check_model_class(f"{cls.__name__} (solver={cls.config})", model_class, (BAYESIAN_PATH,),
                          "r ~ N(μ + b_u + b_i + p_u·q_i, α⁻¹) with Gaussian-Wishart priors",
                          "Use model=bayesian_mf with this solver.")

    def check_epochs(self, epochs: int | None) -> None:
        """ValueError when a run of `epochs` sweeps would keep no draw (the model would predict
        with one draw of the burn-in, not the posterior average)."""
        if epochs is not None and 0 <= epochs <= self.burn_in:
            raise ValueError(f"trainer.max_epochs={epochs} sweeps keep no draw after solver.burn_in={self.burn_in}: "
                             f"give more epochs (the average improves with every kept draw) or a shorter burn-in")

    @property
    def alpha(self) -> float:
        """The current noise precision α."""
        return float(self._state["alpha"])

    @torch.no_grad()
    def sweep(self, model: nn.Module, train: Interactions) -> None:
        """One Gibbs sweep: the users' hyperparameters and rows, the items' hyperparameters and
        rows, α; the draw is written into the model and, after burn-in, kept."""
        self.check_model(type(model))
        sweep = int(self._state["sweeps"])
        rng = np.random.default_rng([self.seed, sweep])
        torch_generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        users, items = model.state()  # [U, d], [I, d] the current draw
        device, dtype = users.device, users.dtype
        R_users, R_items = matrix_on(self._caches, train, "user", device), matrix_on(self._caches, train, "item", device)
        mean = float(model.global_mean) if model.biases else 0.0
        rows = block_rows(self.block_size, device)

        def side(R: Tensor, own: Tensor, other: Tensor, cache: dict) -> Tensor:
            m, Lam = sample_hyperparameters(own, self.beta0, rng)
            values = R.values().to(device=device, dtype=dtype)  # [nnz]
            col = R.col_indices().to(device)
            if model.biases:
                design = torch.cat([other[:, :-1], torch.ones_like(other[:, :1])], dim=1)  # [n_cols, d] [y, 1]
                target = values - mean - other[:, -1].index_select(0, col)  # [nnz] r − μ − b_other
            else:
                design, target = other, values
            Z = torch.randn(R.shape[0], own.shape[1], generator=torch_generator, dtype=torch.float64)
            return draw_rows(R, design, target, torch.from_numpy(Lam), torch.from_numpy(m), self.alpha, Z, rows, cache)

        users = side(R_users, users, items, kept_with(self._caches, R_users))
        items = side(R_items, items, users, kept_with(self._caches, R_items))
        model.set_state(users, items)
        if self.noise_precision is None:
            sse = self.objective(model, train)
            self._state["alpha"] = float(rng.gamma(self.noise_shape + len(train) / 2,
                                                   1.0 / (self.noise_rate + sse / 2)))
        self._state["sweeps"] = sweep + 1
        if sweep + 1 > self.burn_in:
            model.keep_sample()

    @torch.no_grad()
    def objective(self, model: nn.Module, train: Interactions) -> float:
        """Σ_{(u,i)∈R} (r_ui − μ − b_u − b_i − p_u·q_i)² at the current draw (a sum)."""
        users, items = model.state()
        u, i = train.users.to(users.device), train.items.to(users.device)
        d = model.dim
        scores = (users[u, :d] * items[i, :d]).sum(1)
        if model.biases:
            scores = scores + float(model.global_mean) + users[u, d] + items[i, d]
        return float((train.values.to(scores) - scores).double().pow(2).sum())

    # the chain's position goes into the checkpoint (resume draws what the uninterrupted run drew)
    def state_dict(self) -> dict[str, Tensor]:
        return {"sweeps": torch.tensor(int(self._state["sweeps"])), "alpha": torch.tensor(float(self._state["alpha"]),
                                                                                      dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self._state["sweeps"] = int(state["sweeps"])
        self._state["alpha"] = float(state["alpha"])
