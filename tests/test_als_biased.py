"""Explicit ALS with biases (r̂ = μ + b_u + b_i + p_u·q_i): the half-step against a dense
per-row solve, the sweep's objective against a dense sum, fold-in and updates of changed users
against the half-step, and the solver through the training glue."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from mfzoo.data.interactions import Interactions
from mfzoo.data.sources import synthetic
from mfzoo.models.mf import MF
from mfzoo.solvers.als import biased_least_squares_half_step
from mfzoo.solvers.solver import ALSSolver
from mfzoo.training.run import train as run_training
from tests.conftest import CONFIG_DIR

K = 4


def data(seed: int = 0) -> Interactions:
    return synthetic(n_users=40, n_items=25, n_interactions=400, dim=3, seed=seed)


def dense_half_step(
    R: np.ndarray,
    mask: np.ndarray,
    Y: np.ndarray,
    other_bias: np.ndarray,
    mean: float,
    l2: float,
    l2_bias: float,
    frequency_scaled: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """One np.linalg.solve per row of the ridge problem of [x_u, b_u] on [y_i, 1] (the oracle)."""
    n_rows, k = R.shape[0], Y.shape[1]
    X, b = np.zeros((n_rows, k)), np.zeros(n_rows)
    for u in range(n_rows):
        items = np.flatnonzero(mask[u])
        if len(items) == 0:
            continue
        design = np.hstack([Y[items], np.ones((len(items), 1))])  # [n_u, k + 1]
        target = R[u, items] - mean - other_bias[items]
        scale = len(items) if frequency_scaled else 1.0
        penalty = np.diag([l2 * scale] * k + [l2_bias * scale])
        theta = np.linalg.solve(design.T @ design + penalty, design.T @ target)
        X[u], b[u] = theta[:k], theta[k]
    return X, b


def dense(train: Interactions) -> tuple[np.ndarray, np.ndarray]:
    R = np.zeros((train.n_users, train.n_items))
    mask = np.zeros_like(R, dtype=bool)
    R[train.users.numpy(), train.items.numpy()] = train.values.double().numpy()
    mask[train.users.numpy(), train.items.numpy()] = True
    return R, mask


@pytest.mark.parametrize("frequency_scaled", [True, False])
@pytest.mark.parametrize("l2, l2_bias", [(0.1, 0.1), (0.05, 2.0), (0.3, 0.0)])
def test_biased_half_step_matches_a_dense_solve_per_row(frequency_scaled, l2, l2_bias):
    train = data()
    g = torch.Generator().manual_seed(1)
    Y = torch.randn(train.n_items, K, generator=g, dtype=torch.float64)
    other_bias = 0.3 * torch.randn(train.n_items, generator=g, dtype=torch.float64)
    mean = float(train.values.double().mean())
    X, b = biased_least_squares_half_step(
        train.csr("user"), Y, other_bias, mean, l2, l2_bias, frequency_scaled
    )
    R, mask = dense(train)
    X_ref, b_ref = dense_half_step(
        R, mask, Y.numpy(), other_bias.numpy(), mean, l2, l2_bias, frequency_scaled
    )
    assert np.abs(b_ref).max() > 0.05  # the biases are not trivially 0
    np.testing.assert_allclose(X.numpy(), X_ref, atol=1e-9)
    np.testing.assert_allclose(b.numpy(), b_ref, atol=1e-9)


def test_a_row_without_ratings_gets_zero_factors_and_bias():
    R = torch.sparse_csr_tensor(
        torch.tensor([0, 2, 2, 3]),
        torch.tensor([0, 1, 1]),
        torch.tensor([4.0, 2.0, 5.0]),
        size=(3, 2),
        dtype=torch.float64,
    )  # row 1 holds no rating
    Y = torch.randn(2, K, dtype=torch.float64)
    X, b = biased_least_squares_half_step(R, Y, torch.zeros(2, dtype=torch.float64), 3.0, 0.1, 0.1)
    assert float(b[1]) == 0.0 and float(X[1].abs().sum()) == 0.0
    assert float(b[0]) != 0.0


def _biased_model(train: Interactions) -> MF:
    torch.manual_seed(0)
    model = MF(train.n_users, train.n_items, dim=K, biases=True).double()
    model.prepare(train)
    return model


def dense_objective(model: MF, train: Interactions, l2: float, l2_bias: float) -> float:
    R, mask = dense(train)
    P, Q = (
        model.user_embedding.weight.detach().numpy(),
        model.item_embedding.weight.detach().numpy(),
    )
    bu, bi = (
        model.user_bias.weight.detach().numpy()[:, 0],
        model.item_bias.weight.detach().numpy()[:, 0],
    )
    mu = float(model.global_mean)
    residual = (R - mu - bu[:, None] - bi[None, :] - P @ Q.T) * mask
    nu, ni = mask.sum(1), mask.sum(0)
    return float(
        (residual**2).sum()
        + l2 * (nu * (P**2).sum(1)).sum()
        + l2 * (ni * (Q**2).sum(1)).sum()
        + l2_bias * (nu * bu**2).sum()
        + l2_bias * (ni * bi**2).sum()
    )


def test_biased_sweeps_lower_the_objective_which_matches_a_dense_sum():
    train = data()
    model, solver = _biased_model(train), ALSSolver(l2=0.05, l2_bias=0.5)
    values = [solver.objective(model, train)]
    assert values[0] == pytest.approx(dense_objective(model, train, 0.05, 0.5), rel=1e-10)
    for _ in range(4):
        solver.sweep(model, train)
        values.append(solver.objective(model, train))
        assert values[-1] == pytest.approx(dense_objective(model, train, 0.05, 0.5), rel=1e-10)
    # exact half-steps never raise it
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(values))
    assert values[-1] < 0.5 * values[0]
    assert (
        float(model.user_bias.weight.detach().abs().max()) > 0.05
        and float(model.item_bias.weight.detach().abs().max()) > 0.05
    )


def test_biased_als_beats_unbiased_als_on_held_out_ratings():
    """Biases carry what a user or an item adds to every rating: on data with a global offset
    and per-item effects, the biased model predicts held-out ratings better."""
    full = synthetic(n_users=300, n_items=150, n_interactions=9000, dim=3, seed=4)
    g = torch.Generator().manual_seed(0)
    test = torch.rand(len(full), generator=g) < 0.1
    train, held = full.subset(~test), full.subset(test)
    errors = {}
    for biases in (False, True):
        torch.manual_seed(0)
        model = MF(full.n_users, full.n_items, dim=K, biases=biases).double()
        model.prepare(train)
        solver = ALSSolver(l2=0.1, l2_bias=0.1)
        for _ in range(8):
            solver.sweep(model, train)
        with torch.no_grad():
            scores = (model.user_factors() @ model.item_factors().T)[held.users, held.items]
        errors[biases] = float((scores - held.values.double()).pow(2).mean().sqrt())
    assert errors[True] < errors[False]


def test_fold_in_and_update_users_solve_the_user_half_step():
    train = data()
    model, solver = _biased_model(train), ALSSolver(l2=0.05, l2_bias=0.2)
    for _ in range(3):
        solver.sweep(model, train)
    items, b_i = model.item_embedding.weight.detach(), model.item_bias.weight.detach()[:, 0]
    X, b = biased_least_squares_half_step(
        train.csr("user"), items, b_i, model.global_mean, 0.05, 0.2
    )
    folded = solver.fold_in(model, train)  # every training user as a new one: [p_u, μ + b_u, 1]
    torch.testing.assert_close(folded[:, :K], X)
    torch.testing.assert_close(folded[:, K], model.global_mean + b)
    torch.testing.assert_close(folded[:, K + 1], torch.ones_like(b))
    # scores of the folded users = the model's, once its users are the solved ones
    with torch.no_grad():
        model.user_embedding.weight.copy_(X)
        model.user_bias.weight.copy_(b.unsqueeze(1))
    torch.testing.assert_close(
        folded @ model.item_factors().T, model.user_factors() @ model.item_factors().T
    )

    changed = torch.tensor([3, 7, 11])
    before = model.user_bias.weight.detach().clone()
    with torch.no_grad():
        model.user_bias.weight[changed] = 9.0  # stale values the update must replace
    solver.update_users(model, train, changed)
    torch.testing.assert_close(model.user_bias.weight.detach(), before)


def test_experiment_ml100k_als_trains_the_biased_model(tmp_path):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=ml100k_als",
                "trainer.max_epochs=3",
                "logger=none",
                "data/source=synthetic",
                "data.source.n_users=200",
                "data.source.n_items=100",
                "data.source.n_interactions=5000",
            ],
        )
    assert cfg.model.biases is True and cfg.solver._target_.endswith("ALSSolver")
    metrics = run_training(cfg, tmp_path)
    assert metrics["global_steps"] == 3 and 0 < metrics["test"]["rmse"] < 1.5
