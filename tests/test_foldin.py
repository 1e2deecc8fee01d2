"""Fold-in of new users: the batched ridge kernel against its dense twin, fold-in against its
dense twin, and fold-in against a model trained to convergence on the exact objective."""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pytest
import torch

from mfzoo.data.batch import Batch
from mfzoo.data.interactions import Interactions
from mfzoo.data.sources import synthetic
from mfzoo.losses import MSELoss
from mfzoo.models.mf import MF
from mfzoo.models.svdpp import SVDpp
from mfzoo.solvers import fold_in, fold_in_interactions, grouped_ridge

N_USERS, N_ITEMS, DIM = 150, 80, 8
L2, L2_BIAS = 0.5, 0.25  # strong enough that A and B below are stable (see the held-out test)


# dense twins ------------------------------------------------------------------------------
def dense_ridge(
    X: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, n_groups: int, reg: torch.Tensor
) -> torch.Tensor:
    """θ_g = (X_gᵀ X_g + diag(reg_g))⁻¹ X_gᵀ y_g, one `torch.linalg.solve` per group."""
    out = []
    for g in range(n_groups):
        Xg, yg = X[groups == g], y[groups == g]  # [n_g, k], [n_g]
        out.append(torch.linalg.solve(Xg.T @ Xg + torch.diag(reg[g]), Xg.T @ yg))
    return torch.stack(out)


def dense_fold_in(model: MF, users, items, values, l2, l2_bias, n_users) -> torch.Tensor:
    """θ_u = (X_uᵀ X_u + n_u^α diag(λ, …, λ, λ_b))⁻¹ X_uᵀ (r_u − offset_u), written out per user
    from the model's parameters (not from `fold_in_design`), then augmented like `user_factors`."""
    with torch.no_grad():
        Q = model.item_embedding.weight  # [I, D]
        rows = []
        for u in range(n_users):
            mine = users == u
            q, r = Q[items[mine]], values[mine].to(Q)  # [n_u, D], [n_u]
            n_u = max(int(mine.sum()), 1)
            if model.biases:
                X = torch.cat([q, torch.ones_like(q[:, :1])], 1)  # [n_u, D+1]
                y = r - model.global_mean - model.item_bias.weight[items[mine], 0]  # [n_u]
                diag = torch.tensor([l2] * model.dim + [l2_bias], dtype=Q.dtype)  # [D+1]
            else:
                X, y, diag = q, r, torch.full((model.dim,), l2, dtype=Q.dtype)
            theta = torch.linalg.solve(
                X.T @ X + n_u**model.reg_exponent * torch.diag(diag), X.T @ y
            )
            if model.biases:
                theta = torch.cat(
                    [theta[:-1], model.global_mean + theta[-1:], torch.ones(1, dtype=Q.dtype)]
                )
            rows.append(theta)
        return torch.stack(rows)


# grouped_ridge ----------------------------------------------------------------------------
def _ridge_problem(k: int = 5, n_groups: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # groups 0..2 have one row each (fewer rows than k: the ridge term makes them solvable),
    # group 3 none (its θ must be 0), the rest 2..40 rows
    sizes = torch.tensor([1, 1, 1, 0, *torch.randint(2, 40, (n_groups - 4,), generator=g).tolist()])
    groups = torch.repeat_interleave(torch.arange(n_groups), sizes)
    groups = groups[torch.randperm(len(groups), generator=g)]  # [N] rows of a group scattered
    X = torch.randn(len(groups), k, generator=g, dtype=torch.float64)  # [N, k]
    y = torch.randn(len(groups), generator=g, dtype=torch.float64)  # [N]
    # [G, k] differs per group
    reg = 0.1 + torch.rand(n_groups, k, generator=g, dtype=torch.float64)
    return X, y, groups, n_groups, reg


def test_grouped_ridge_matches_dense_per_group_solve():
    X, y, groups, n_groups, reg = _ridge_problem()
    theta = grouped_ridge(X, y, groups, n_groups, reg)
    assert theta.shape == (n_groups, X.shape[1]) and theta.dtype == torch.float64
    assert torch.allclose(theta, dense_ridge(X, y, groups, n_groups, reg), rtol=0, atol=1e-10)
    assert torch.equal(theta[3], torch.zeros(X.shape[1], dtype=torch.float64))  # no rows: the prior


def test_grouped_ridge_chunked_equals_one_chunk():
    X, y, groups, n_groups, reg = _ridge_problem(seed=1)
    one = grouped_ridge(X, y, groups, n_groups, reg, max_rows_per_chunk=len(X))
    for chunk in (1, 7, 64):
        assert torch.allclose(
            grouped_ridge(X, y, groups, n_groups, reg, max_rows_per_chunk=chunk),
            one,
            rtol=0,
            atol=1e-12,
        )


def test_grouped_ridge_float32_and_broadcast_reg():
    X, y, groups, n_groups, _ = _ridge_problem(seed=2)
    reg = torch.full((n_groups, 1), 0.5, dtype=torch.float64)  # [G, 1] broadcasts over k
    ref = dense_ridge(X, y, groups, n_groups, reg.expand(-1, X.shape[1]))
    theta = grouped_ridge(X.float(), y.float(), groups, n_groups, reg.float())
    assert theta.dtype == torch.float32
    assert torch.allclose(theta.double(), ref, atol=1e-4)


def test_grouped_ridge_singular_group_gets_minimum_norm_solution():
    """k = 4 unknowns, 2 rows, no ridge term: Cholesky fails and the fallback must return the
    minimum-norm least-squares solution X⁺y (which fits both rows exactly)."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(2 + 10, 4, generator=g, dtype=torch.float64)  # group 0: 2 rows, group 1: 10
    y = torch.randn(12, generator=g, dtype=torch.float64)
    groups = torch.tensor([0, 0] + [1] * 10)
    reg = torch.tensor([[0.0] * 4, [0.3] * 4], dtype=torch.float64)
    theta = grouped_ridge(X, y, groups, 2, reg)
    assert torch.allclose(theta[0], torch.linalg.pinv(X[:2]) @ y[:2], atol=1e-9)
    assert torch.allclose(X[:2] @ theta[0], y[:2], atol=1e-9)
    assert torch.allclose(theta[1], dense_ridge(X, y, groups, 2, reg)[1], atol=1e-10)


def test_grouped_ridge_errors():
    X, y, groups, n_groups, reg = _ridge_problem()
    with pytest.raises(ValueError, match=r"no rows and a zero ridge term.*group 3"):
        grouped_ridge(X, y, groups, n_groups, torch.zeros_like(reg))
    with pytest.raises(ValueError, match="group id 12 out of range"):
        grouped_ridge(X, y, torch.where(groups == 0, 12, groups), n_groups, reg)
    with pytest.raises(ValueError, match="reg must be"):
        grouped_ridge(X, y, groups, n_groups, -reg)
    with pytest.raises(ValueError, match="broadcast"):
        grouped_ridge(X, y, groups, n_groups, reg[:, :2])
    with pytest.raises(ValueError, match="y and groups"):
        grouped_ridge(X, y[:-1], groups, n_groups, reg)


# fold_in against its dense twin (no training needed) -------------------------------------
def _random_model(biases: bool, alpha: float) -> MF:
    torch.manual_seed(0)
    model = MF(6, 9, dim=3, biases=biases, init_std=0.5, reg_exponent=alpha).double()
    if biases:
        with torch.no_grad():
            model.item_bias.weight.normal_()
            model.global_mean.fill_(3.2)
    return model


@pytest.mark.parametrize("biases", [True, False])
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_fold_in_solves_each_users_ridge_equation(biases, alpha):
    model = _random_model(biases, alpha)
    users = torch.tensor([0, 0, 0, 0, 1, 3, 3, 3, 3, 3, 3, 0])  # user 2: no ratings
    items = torch.tensor([0, 1, 2, 8, 4, 0, 2, 3, 5, 6, 7, 4])
    values = torch.arange(12.0) % 5 + 1
    folded = fold_in(model, users, items, values, l2=0.3, l2_bias=0.7)
    assert (
        folded.shape == (4, model.user_factors().shape[1]) == (4, model.dim + (2 if biases else 0))
    )
    assert not folded.requires_grad
    expected = dense_fold_in(model, users, items, values, 0.3, 0.7, n_users=4)
    assert torch.allclose(folded, expected, rtol=0, atol=1e-10)
    # the scores are those of the augmented factors; a user without ratings has p = 0, b_u = 0
    scores = folded @ model.item_factors().T  # [4, I]
    no_ratings = (
        model.global_mean + model.item_bias.weight[:, 0]
        if biases
        else torch.zeros(9, dtype=torch.float64)
    )
    assert torch.allclose(scores[2], no_ratings.detach(), atol=1e-12)


def test_funksvd_fold_in_shape_and_float32():
    model = MF(5, 7, dim=4, biases=False)  # float32, no reg_exponent change
    folded = fold_in(
        model,
        torch.tensor([0, 0, 1, 2]),
        torch.tensor([1, 2, 3, 6]),
        torch.tensor([4.0, 2.0, 5.0, 1.0]),
        l2=0.1,
    )
    assert folded.shape == (3, 4) and folded.dtype == torch.float32
    assert torch.isfinite(folded).all()
    folded5 = fold_in(
        model,
        torch.tensor([0, 0, 1, 2]),
        torch.tensor([1, 2, 3, 6]),
        torch.tensor([4.0, 2.0, 5.0, 1.0]),
        l2=0.1,
        n_users=5,
    )
    assert folded5.shape == (5, 4) and torch.equal(folded5[:3], folded) and not folded5[3:].any()


def test_fold_in_interactions_uses_the_new_sets_users():
    model = _random_model(True, 0.5)
    new = Interactions.from_arrays([10, 10, 30, 30, 30, 20], [0, 1, 0, 1, 2, 3], [5, 3, 1, 2, 2, 4])
    # raw items 0..3 encode to 0..3: the model's item space
    new = replace(new, item_ids=np.arange(9))
    folded = fold_in_interactions(model, new, l2=0.3)
    assert folded.shape == (3, model.dim + 2)
    assert torch.allclose(
        folded, fold_in(model, new.users, new.items, new.values, 0.3, 0.3, n_users=3), atol=0
    )
    wrong = replace(new, item_ids=np.arange(4), name="other")
    with pytest.raises(ValueError, match="other: 4 items but the model has 9"):
        fold_in_interactions(model, wrong, l2=0.3)


def test_fold_in_bad_inputs():
    model = _random_model(True, 1.0)
    u, i, v = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4.0, 5.0])
    with pytest.raises(ValueError, match=r"item id 9 out of range 0\.\.8"):
        fold_in(model, u, torch.tensor([2, 9]), v, l2=0.1)
    with pytest.raises(ValueError, match="item id -1 out of range"):
        fold_in(model, u, torch.tensor([-1, 3]), v, l2=0.1)
    with pytest.raises(ValueError, match="no ratings"):
        fold_in(model, u[:0], i[:0], v[:0], l2=0.1)
    with pytest.raises(ValueError, match="one length"):
        fold_in(model, u, i, v[:1], l2=0.1)
    with pytest.raises(ValueError, match="integer ids"):
        fold_in(model, u, i.float(), v, l2=0.1)
    with pytest.raises(ValueError, match="user id -2 is negative"):
        fold_in(model, torch.tensor([0, -2]), i, v, l2=0.1)
    with pytest.raises(ValueError, match=r"user id 1 out of range 0\.\.0"):
        fold_in(model, u, i, v, l2=0.1, n_users=1)
    with pytest.raises(ValueError, match="NaN"):
        fold_in(model, u, i, torch.tensor([4.0, float("nan")]), l2=0.1)
    with pytest.raises(ValueError, match="l2"):
        fold_in(model, u, i, v, l2=-0.1)


# fold_in against trained models --------------------------------------------------------------
@functools.cache
def _data() -> Interactions:
    # every user >= 7 ratings
    return synthetic(n_users=N_USERS, n_items=N_ITEMS, n_interactions=4000, seed=3)


@functools.cache
def _held_out_users() -> torch.Tensor:
    return torch.randperm(N_USERS, generator=torch.Generator().manual_seed(1))[:22]  # [22] ~15%


@functools.cache
def _trained(alpha: float, hold_out: bool, model_cls: type = MF) -> tuple[MF, float]:
    """MF(dim=8) at a stationary point of the exact full-batch objective
        (1/N)[Σ (r − r̂)² + λ Σ_u n_u^α ‖p_u‖² + λ Σ_i n_i^α ‖q_i‖²
              + λ_b Σ_u n_u^α b_u² + λ_b Σ_i n_i^α b_i²]
    (`MSELoss` + `MF.penalty` on one batch of all training rows), by L-BFGS in float64; with
    `hold_out` the held-out users' rows are left out (their parameters stay at init, unused).
    Same seed, so the same init. Returns the model and the final gradient norm."""
    data = _data()
    train = data.subset(~torch.isin(data.users, _held_out_users())) if hold_out else data
    torch.manual_seed(0)
    model = model_cls(N_USERS, N_ITEMS, dim=DIM, reg_exponent=alpha).double()
    model.prepare(train)  # after .double(): the weights n^(α−1) computed in float64
    batch = Batch(train.users, train.items, train.values.double())
    loss_fn = MSELoss(L2, L2_BIAS)
    params = list(model.parameters())
    # tolerance_change=0: run until the line search stalls at float64 resolution (|g| ~ 1e-9)
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=1000,
        tolerance_grad=1e-13,
        tolerance_change=0.0,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(model(batch), batch, model.penalty(batch))
        loss.backward()
        return loss

    opt.step(closure)
    closure()
    grad_norm = float(torch.cat([p.grad.reshape(-1) for p in params]).norm())
    return model, grad_norm


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_fold_in_recovers_trained_users_at_the_optimum(alpha):
    """At a stationary point each user's [p_u, b_u] solves its ridge equation exactly, so folding
    every training user in from its own ratings returns its factors. Error bound: with gradient
    g of the (1/N)-scaled objective, ‖θ_fold − θ‖ ≤ ‖A_u⁻¹‖ N ‖g_u‖ / 2 (A_u ⪰ λ n_u^α I), i.e.
    ~1e-6 for |g| ~ 1e-9; the tolerance is 1e-5."""
    model, grad_norm = _trained(alpha, hold_out=False)
    assert grad_norm < 1e-8  # converged: otherwise the comparison means nothing
    data = _data()
    folded = fold_in(model, data.users, data.items, data.values, L2, L2_BIAS, n_users=N_USERS)
    with torch.no_grad():
        trained = model.user_factors()  # [U, D+2]
    assert (folded - trained).abs().max() < 1e-5
    # a wrong exponent (the regulariser does not match training) does not reproduce them
    model.reg_exponent = 1.5 - alpha
    try:
        wrong = fold_in(model, data.users, data.items, data.values, L2, L2_BIAS, n_users=N_USERS)
    finally:
        model.reg_exponent = alpha
    assert (wrong - trained).abs().max() > 1e-2


def _rmse_and_corr(scores: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """RMSE relative to the std of `reference`, and the Pearson correlation."""
    rel_rmse = float((scores - reference).pow(2).mean().sqrt() / reference.std())
    corr = float(torch.corrcoef(torch.stack([scores.flatten(), reference.flatten()]))[0, 1])
    return rel_rmse, corr


def test_fold_in_held_out_users_matches_training_them():
    """Model A is trained on all users, model B (same init, same objective, α = 1) on all but 22
    (~15%); the 22 are folded into B from their ratings and their scores over all items compared
    with A's. Scores, not factors: factors are identifiable only up to a rotation. The two cannot
    agree exactly: without the 22 users B's items (and μ) move, and in A the items also adapted to
    the 22 users' own ratings. Tolerances, calibrated on data seeds 0..7 (observed RMSE
    0.10-0.13 × std, correlation 0.992-0.995; here 0.110 and 0.994): RMSE < 0.15 × std of A's
    scores and correlation > 0.98. And no worse than B's own trained users differ from A's
    (observed ratio 1.00): ratio < 1.3. A fold-in with λ × 100 must be clearly worse (observed
    0.51-0.68 × std): RMSE > 3 × the right one's."""
    model_a, grad_a = _trained(1.0, hold_out=False)
    model_b, grad_b = _trained(1.0, hold_out=True)
    assert grad_a < 1e-8 and grad_b < 1e-8
    data, held = _data(), _held_out_users()
    new = data.subset(torch.isin(data.users, held))
    new_ids = torch.full((N_USERS,), -1, dtype=torch.long)
    new_ids[held] = torch.arange(len(held))  # held-out users renumbered 0..21
    kept = ~torch.isin(torch.arange(N_USERS), held)
    with torch.no_grad():
        items_a, items_b = model_a.item_factors(), model_b.item_factors()  # [I, D+2]
        reference = model_a.user_factors()[held] @ items_a.T  # [22, I]
        drift = _rmse_and_corr(
            model_b.user_factors()[kept] @ items_b.T, model_a.user_factors()[kept] @ items_a.T
        )[0]

    def folded_scores(l2: float, l2_bias: float) -> torch.Tensor:
        folded = fold_in(
            model_b, new_ids[new.users], new.items, new.values, l2, l2_bias, n_users=len(held)
        )
        return folded @ items_b.T  # [22, I]

    rel_rmse, corr = _rmse_and_corr(folded_scores(L2, L2_BIAS), reference)
    assert rel_rmse < 0.15, rel_rmse
    assert corr > 0.98, corr
    assert rel_rmse < 1.3 * drift, (rel_rmse, drift)
    naive_rmse, naive_corr = _rmse_and_corr(folded_scores(100 * L2, 100 * L2_BIAS), reference)
    assert naive_rmse > 3 * rel_rmse and naive_corr < corr, (naive_rmse, rel_rmse)


def test_svdpp_fold_in_recovers_trained_users_at_the_optimum():
    """SVD++ at a stationary point: with q, b_i and y fixed, each user's [p_u, b_u] solves the
    ridge equation whose offset holds q_i·z_u, z_u = |R(u)|^-½ Σ_{j∈R(u)} y_j with R(u) the
    user's rated items; so folding in every training user gives back p_u + z_u and b_u. L-BFGS
    stalls at |g| ~ 4e-8 here (the y terms couple all users), so by the MF bound the error is
    ~1e-5 (observed 6.5e-6); the tolerance is 5e-5."""
    model, grad_norm = _trained(0.5, hold_out=False, model_cls=SVDpp)
    assert grad_norm < 1e-7
    data = _data()
    folded = fold_in(model, data.users, data.items, data.values, L2, L2_BIAS, n_users=N_USERS)
    with torch.no_grad():
        trained = model.user_factors()  # [U, D+2] with p_u + z_u
        assert model.implicit.all_sums().abs().max() > 1e-2  # the implicit term is really there
    assert (folded - trained).abs().max() < 5e-5
    # the folded vector is p_u + z_u: subtracting the new sets' sums leaves the trained p_u
    z = model.implicit.sums_of_new_sets(data.users, data.items, N_USERS)
    assert (folded[:, :DIM] - z - model.user_embedding.weight).abs().max() < 5e-5
