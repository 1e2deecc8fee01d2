"""Bayesian MF by Gibbs sampling: each row's conditional draw against a dense computation of its
Gaussian (mean and covariance, exactly), the ridge solution as the posterior mean under a
dominating fixed prior, the Wishart draws' moments, and the sampler through the glue
(reproducible, resumable, averaging its draws)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from mfzoo.data.sources import synthetic
from mfzoo.models.bayesian import BayesianMF
from mfzoo.solvers.als import biased_least_squares_half_step
from mfzoo.solvers.gibbs import GibbsSolver, draw_rows, sample_hyperparameters, wishart
from mfzoo.training.run import train as run_training
from tests.conftest import CONFIG_DIR

D = 4


def problem(seed: int = 0):
    train = synthetic(n_users=30, n_items=20, n_interactions=250, dim=3, seed=seed)
    g = torch.Generator().manual_seed(seed)
    design = torch.randn(train.n_items, D, generator=g, dtype=torch.float64)
    target = train.csr("user").values().double() - 3.0
    B = torch.randn(D, D, generator=g, dtype=torch.float64)
    Lam = B @ B.T + 0.5 * torch.eye(D, dtype=torch.float64)
    m = torch.randn(D, generator=g, dtype=torch.float64)
    return train, design, target, Lam, m


def dense_conditional(train, design, target, Lam, m, alpha, u):
    """A_u and its mean A_u⁻¹ b_u, by a dense sum over the row's entries."""
    R = train.csr("user")
    crow, col = R.crow_indices(), R.col_indices()
    entries = range(int(crow[u]), int(crow[u + 1]))
    A, b = Lam.clone(), Lam @ m
    for e in entries:
        y = design[col[e]]
        A += alpha * torch.outer(y, y)
        b += alpha * target[e] * y
    return A, torch.linalg.solve(A, b)


def test_a_draw_is_the_conditional_mean_plus_its_covariance_factor():
    train, design, target, Lam, m = problem()
    alpha, R = 1.7, train.csr("user")
    n = train.n_users
    mean = draw_rows(R, design, target, Lam, m, alpha, torch.zeros(n, D, dtype=torch.float64), 512)
    # z = e_j for every row: draw − mean is column j of L⁻ᵀ,
    # so Σ_j (draw_j − mean)(…)ᵀ = L⁻ᵀ L⁻¹ = A⁻¹
    columns = torch.stack(
        [
            draw_rows(
                R,
                design,
                target,
                Lam,
                m,
                alpha,
                torch.eye(D, dtype=torch.float64)[j].expand(n, D),
                512,
            )
            - mean
            for j in range(D)
        ],
        dim=2,
    )  # [n, D, D]
    for u in range(n):
        A, dense_mean = dense_conditional(train, design, target, Lam, m, alpha, u)
        torch.testing.assert_close(mean[u], dense_mean, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(
            columns[u] @ columns[u].T, torch.linalg.inv(A), atol=1e-10, rtol=1e-10
        )


def test_rows_without_entries_are_drawn_from_the_prior():
    R = torch.sparse_csr_tensor(
        torch.tensor([0, 0, 1]),
        torch.tensor([0]),
        torch.tensor([2.0]),
        size=(2, 3),
        dtype=torch.float64,
    )  # row 0 is empty
    _, design, _, Lam, m = problem()
    mean = draw_rows(
        R,
        design[:3],
        torch.tensor([2.0], dtype=torch.float64),
        Lam,
        m,
        1.0,
        torch.zeros(2, D, dtype=torch.float64),
        512,
    )
    torch.testing.assert_close(mean[0], m)


def test_the_posterior_mean_under_a_fixed_ridge_prior_is_the_biased_als_solution():
    """m = 0, Λ = λα I: the conditional mean minimises Σ (t − x·ỹ)² + λ ‖x‖², the biased ALS
    half-step with λ on the factors and the bias (no frequency scaling)."""
    train = synthetic(n_users=30, n_items=20, n_interactions=250, dim=3, seed=1)
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(train.n_items, D - 1, generator=g, dtype=torch.float64)
    b_items = 0.2 * torch.randn(train.n_items, generator=g, dtype=torch.float64)
    mu, lam, alpha = 3.5, 0.3, 2.0
    R = train.csr("user")
    target = R.values().double() - mu - b_items[R.col_indices()]
    design = torch.cat([Y, torch.ones(train.n_items, 1, dtype=torch.float64)], dim=1)
    mean = draw_rows(
        R,
        design,
        target,
        lam * alpha * torch.eye(D, dtype=torch.float64),
        torch.zeros(D, dtype=torch.float64),
        alpha,
        torch.zeros(train.n_users, D, dtype=torch.float64),
        512,
    )
    X, b = biased_least_squares_half_step(R, Y, b_items, mu, lam, lam, frequency_scaled=False)
    torch.testing.assert_close(mean[:, :-1], X, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(mean[:, -1], b, atol=1e-10, rtol=1e-10)


def test_wishart_draws_have_its_mean_and_variance():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((3, 3))
    W, nu = A @ A.T / 3 + np.eye(3), 7.0
    draws = np.stack([wishart(W, nu, rng) for _ in range(20000)])
    np.testing.assert_allclose(draws.mean(0), nu * W, rtol=0.03, atol=0.03 * nu)
    variance = nu * (W**2 + np.outer(np.diag(W), np.diag(W)))  # Var(Λ_jl) = ν (W_jl² + W_jj W_ll)
    np.testing.assert_allclose(draws.var(0), variance, rtol=0.08)


def test_hyperparameter_draws_follow_the_rows():
    """With many rows the Gaussian-Wishart posterior concentrates: m near their mean, Λ⁻¹ near
    their covariance."""
    g = torch.Generator().manual_seed(0)
    C = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    X = (
        torch.tensor([0.5, -1.0], dtype=torch.float64)
        + torch.randn(20000, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(C).T
    )
    m, Lam = sample_hyperparameters(X, 2.0, np.random.default_rng(0))
    np.testing.assert_allclose(m, [0.5, -1.0], atol=0.03)
    np.testing.assert_allclose(np.linalg.inv(Lam), C.numpy(), atol=0.05)


def _chain(
    train, sweeps: int, burn_in: int = 5, options: dict | None = None, **kwargs
) -> tuple[BayesianMF, GibbsSolver]:
    """`sweeps` Gibbs sweeps of a dim-3 BayesianMF (with the model `options`) from a seeded
    start."""
    torch.manual_seed(0)
    model = BayesianMF(train.n_users, train.n_items, dim=3, keep=50, **(options or {})).double()
    model.prepare(train)
    solver = GibbsSolver(burn_in=burn_in, seed=3, **kwargs)
    for _ in range(sweeps):
        solver.sweep(model, train)
    return model, solver


def test_the_chain_is_reproducible_and_resumes_where_it_stopped():
    train = synthetic(n_users=80, n_items=50, n_interactions=1500, dim=3, seed=2)
    whole, _ = _chain(train, 12)
    again, _ = _chain(train, 12)
    torch.testing.assert_close(whole.kept_users, again.kept_users, atol=0, rtol=0)
    first, solver = _chain(train, 7)
    state, weights = solver.state_dict(), {k: v.clone() for k, v in first.state_dict().items()}
    resumed = BayesianMF(train.n_users, train.n_items, dim=3, keep=50).double()
    resumed.load_state_dict(weights)
    fresh = GibbsSolver(burn_in=5, seed=3)
    fresh.load_state_dict(state)
    for _ in range(5):
        fresh.sweep(resumed, train)
    assert int(resumed.n_kept) == int(whole.n_kept) == 7
    torch.testing.assert_close(resumed.kept_items, whole.kept_items, atol=1e-12, rtol=0)


def test_averaging_the_draws_predicts_held_out_ratings_better_than_one_draw():
    full = synthetic(n_users=300, n_items=150, n_interactions=9000, dim=3, seed=4)
    held = torch.rand(len(full), generator=torch.Generator().manual_seed(0)) < 0.1
    train, test = full.subset(~held), full.subset(held)
    model, solver = _chain(train, 40)
    assert int(model.n_kept) == 35 and 0.5 < solver.alpha < 20

    def rmse(scores):
        return float((scores[test.users, test.items] - test.values.double()).pow(2).mean().sqrt())

    with torch.no_grad():
        averaged = rmse(model.user_factors() @ model.item_factors().T)
        U, V = model.state()
        single = rmse(U[:, :3] @ V[:, :3].T + model.global_mean + U[:, 3:] + V[:, 3:].T)
    assert averaged < single


@pytest.mark.parametrize(
    ("experiment", "extra", "rank"),
    [("ml100k_bayesian", [], None), ("ml100k_bayesian_rank", ["model.dim=4", "model.rank=3"], 3)],
)
def test_bayesian_mf_trains_checkpoints_and_serves_through_the_glue(
    tmp_path, experiment, extra, rank
):
    """Also at low rank (`model.rank`): the reloaded model serves r + 2 columns and exports an
    MF that scores as it does."""
    from mfzoo.retrieval import recommend
    from mfzoo.training.restore import load_run

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"experiment={experiment}",
                *extra,
                "trainer.max_epochs=8",
                "solver.burn_in=3",
                "model.keep=10",
                "logger=none",
                "progress=false",
                "data/source=synthetic",
                "data.source.n_users=200",
                "data.source.n_items=100",
                "data.source.n_interactions=5000",
            ],
        )
    metrics = run_training(cfg, tmp_path / "run")
    assert metrics["epochs"] == 8 and 0 < metrics["test"]["rmse"] < 1.5
    _, datamodule, model = load_run(tmp_path / "run")
    assert int(model.n_kept) == 5 and model.rank == rank
    _, items = recommend(model, torch.arange(3), 5, seen=datamodule.train)
    assert items.shape == (3, 5)
    if rank is not None:
        assert model.user_factors().shape == (200, rank + 2)
        mf = model.to_mf()
        torch.testing.assert_close(
            mf.user_factors() @ mf.item_factors().T,
            model.user_factors() @ model.item_factors().T,
            atol=1e-5,
            rtol=0,
        )


def test_gibbs_refuses_other_models():
    from mfzoo.models.mf import MF

    with pytest.raises(ValueError, match=r"BayesianMF|bayesian_mf"):
        GibbsSolver.check_model(MF)


@pytest.mark.parametrize(
    "overrides, words",
    [
        (
            ["experiment=ml100k_bayesian", "trainer.max_epochs=3"],
            ["max_epochs=3", "burn_in=5", "no draw"],
        ),
        (["model=bayesian_mf"], ["trained by solver=gibbs"]),
    ],
)
def test_runs_that_would_not_sample_the_posterior_are_refused(tmp_path, overrides, words):
    from mfzoo.training.rundir import RunError

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *overrides,
                "logger=none",
                "progress=false",
                "data/source=synthetic",
                "data.source.n_users=100",
                "data.source.n_items=60",
                "data.source.n_interactions=2000",
            ],
        )
    with pytest.raises(RunError) as refused:
        run_training(cfg, tmp_path / "run")
    for word in words:
        assert word in str(refused.value), str(refused.value)
