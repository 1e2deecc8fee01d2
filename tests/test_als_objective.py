"""`ALSSolver.objective` and `IALSSolver.objective` against a dense, obvious computation over
every (user, item) pair: equal values for explicit ALS and iALS, the exact half-step as its
minimiser over one side, no increase over exact sweeps, and float32 factors that change nothing
but rounding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mfzoo.data.implicit import confidence
from mfzoo.data.interactions import Interactions
from mfzoo.models.mf import MF
from mfzoo.solvers.objective import ials_objective, least_squares_objective
from mfzoo.solvers.solver import ALSBase, ALSSolver, IALSSolver

N_USERS, N_ITEMS, DIM = 14, 10, 4

SOLVERS = {
    "explicit": (ALSSolver, dict(frequency_scaled=True, l2=0.3)),
    "explicit_unscaled": (ALSSolver, dict(frequency_scaled=False, l2=0.3)),
    # α₀ < 1 and ν > 0: λ_u depends on n_u, every c − α₀ > 0
    "ials_linear": (
        IALSSolver,
        dict(l2=0.2, alpha=2.0, kind="linear", unobserved_weight=0.3, l2_exponent=0.7),
    ),
    # α₀ = 5: c − α₀ < 0 on events of strength 1 (c = 1 + 3 log 3 ≈ 4.3), > 0 from strength 2
    # (c = 1 + 3 log 5 ≈ 5.8)
    "ials_log": (
        IALSSolver,
        dict(l2=0.1, alpha=3.0, kind="log", eps=0.5, unobserved_weight=5.0, l2_exponent=0.5),
    ),
}


def solver_for(name: str) -> ALSBase:
    solver_class, settings = SOLVERS[name]
    return solver_class(**settings)


def interactions(seed: int = 0) -> Interactions:
    """About 45% of the pairs of N_USERS × N_ITEMS with strengths 1..5, plus one user (the
    last) without any event and every item seen at least once."""
    rng = np.random.default_rng(seed)
    mask = rng.random((N_USERS - 1, N_ITEMS)) < 0.45
    mask[np.arange(N_ITEMS) % (N_USERS - 1), np.arange(N_ITEMS)] = True  # every item seen
    users, items = np.nonzero(mask)
    values = rng.integers(1, 6, size=len(users)).astype(np.float32)
    return Interactions(
        torch.as_tensor(users, dtype=torch.long),
        torch.as_tensor(items, dtype=torch.long),
        torch.as_tensor(values),
        None,
        np.arange(N_USERS),
        np.arange(N_ITEMS),
        name="toy",
    )


def model_for(seed: int = 1, dtype: torch.dtype = torch.float64) -> MF:
    torch.manual_seed(seed)
    return MF(N_USERS, N_ITEMS, dim=DIM, biases=False, init_std=0.5).to(dtype)


def dense_objective(
    solver: ALSBase, data: Interactions, X: torch.Tensor, Y: torch.Tensor
) -> torch.Tensor:
    """The objective written out over every pair, with the dense ratings R [U, I] and mask M:
    explicit Σ M (R − XYᵀ)² + Σ_u λ_u‖x_u‖² + Σ_i λ_i‖y_i‖²; iALS with the confidence matrix
    C = c(R) on observed and α₀ on unobserved pairs, Σ C (M − XYᵀ)² + the same penalties."""
    R = torch.zeros(N_USERS, N_ITEMS, dtype=torch.float64)
    R[data.users, data.items] = data.values.double()
    M = torch.zeros_like(R)
    M[data.users, data.items] = 1.0
    S = X @ Y.T  # [U, I]
    n_u, n_i = M.sum(1), M.sum(0)  # [U], [I]
    if isinstance(solver, ALSSolver):
        error = (M * (R - S) ** 2).sum()
        lam_u = solver.l2 * n_u if solver.frequency_scaled else torch.full_like(n_u, solver.l2)
        lam_i = solver.l2 * n_i if solver.frequency_scaled else torch.full_like(n_i, solver.l2)
    else:
        a0, nu = solver.unobserved_weight, solver.l2_exponent
        if solver.kind == "linear":
            c = 1.0 + solver.alpha * R
        else:
            c = 1.0 + solver.alpha * torch.log(1.0 + R / solver.eps)
        C = torch.where(M > 0, c, torch.full_like(R, a0))  # [U, I]
        error = (C * (M - S) ** 2).sum()
        lam_u = solver.l2 * (n_u + a0 * N_ITEMS) ** nu
        lam_i = solver.l2 * (n_i + a0 * N_USERS) ** nu
    return error + (lam_u * (X**2).sum(1)).sum() + (lam_i * (Y**2).sum(1)).sum()


def factors(model: MF) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        model.user_embedding.weight.detach().clone(),
        model.item_embedding.weight.detach().clone(),
    )


@pytest.mark.parametrize("name", SOLVERS)
def test_objective_equals_the_dense_computation(name):
    data, model, solver = interactions(), model_for(), solver_for(name)
    X, Y = factors(model)
    expected = float(dense_objective(solver, data, X, Y))
    assert solver.objective(model, data) == pytest.approx(expected, rel=1e-12)
    # the library's dense twin (both sides) agrees as well
    R = data.csr("user").double()
    if isinstance(solver, IALSSolver):
        kw = {k: SOLVERS[name][1][k] for k in ("alpha", "kind", "unobserved_weight", "l2_exponent")}
        twin = ials_objective(R, X, Y, solver.l2, eps=solver.eps, both_sides=True, **kw)
    else:
        twin = least_squares_objective(R, X, Y, solver.l2, solver.frequency_scaled, both_sides=True)
    assert float(twin) == pytest.approx(expected, rel=1e-12)


def test_the_log_confidence_case_has_negative_weights():
    """The "ials_log" case above covers c − α₀ < 0 (and c − α₀ > 0) on observed pairs."""
    data, kw = interactions(), SOLVERS["ials_log"][1]
    c = confidence(data.values.double(), "log", kw["alpha"], kw["eps"])
    assert (c < kw["unobserved_weight"]).any() and (c > kw["unobserved_weight"]).any()


@pytest.mark.parametrize("name", ["explicit", "ials_linear", "ials_log"])
def test_float32_changes_only_rounding(name):
    data = interactions()
    expected = solver_for(name).objective(model_for(), data)
    assert solver_for(name).objective(model_for(dtype=torch.float32), data) == pytest.approx(
        expected, rel=1e-5
    )


@pytest.mark.parametrize("name", SOLVERS)
def test_the_exact_half_steps_minimise_the_objective(name):
    """Right after the user half-step the gradient of the dense objective with respect to the
    user factors is ~0 (while the item factors' is not); right after the item half-step the
    item factors' is ~0. A small move away from the half-step raises the objective."""
    data, model, solver = interactions(), model_for(), solver_for(name)
    X, Y = factors(model)
    R_users, R_items = data.csr("user").double(), data.csr("item").double()
    X = solver.half_step(R_users, Y).requires_grad_()
    Y = Y.requires_grad_()
    grad_X, grad_Y = torch.autograd.grad(dense_objective(solver, data, X, Y), (X, Y))
    assert grad_X.abs().max() < 1e-9
    assert grad_Y.abs().max() > 1e-3  # the items are not optimal yet: the check can fail
    X = X.detach()
    Y = solver.half_step(R_items, X).requires_grad_()
    (grad_Y,) = torch.autograd.grad(dense_objective(solver, data, X, Y), Y)
    assert grad_Y.abs().max() < 1e-9
    at_minimum = float(dense_objective(solver, data, X, Y.detach()))
    nudge = 1e-2 * torch.randn(Y.shape, generator=torch.Generator().manual_seed(5), dtype=Y.dtype)
    assert float(dense_objective(solver, data, X, Y.detach() + nudge)) > at_minimum


@pytest.mark.parametrize("name", SOLVERS)
def test_exact_sweeps_never_increase_the_objective(name):
    """Over 5 exact sweeps from random factors the objective never goes up and goes down in
    total."""
    data, model, solver = interactions(), model_for(), solver_for(name)
    values = [solver.objective(model, data)]
    for _ in range(5):
        solver.sweep(model, data)
        values.append(solver.objective(model, data))
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in itertools.pairwise(values))
    assert values[-1] < 0.9 * values[0]
