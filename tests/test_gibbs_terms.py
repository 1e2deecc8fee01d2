"""Bayesian MF's optional terms (SVD++'s implicit factors, time-binned item biases, day biases):
each conditional draw against a dense computation, the sampler's running sums against a
recomputation from scratch, and the whole chain (reproducible, resumable, through the glue)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from mfzoo.data.batch import Batch
from mfzoo.data.sources import synthetic
from mfzoo.models.bayesian import BayesianMF
from mfzoo.solvers.gibbs import GibbsSolver, draw_group_biases, draw_implicit
from mfzoo.training.run import train as run_training
from tests.conftest import CONFIG_DIR
from tests.test_gibbs import _chain

F64 = torch.float64


def implicit_problem(seed: int = 0, d: int = 3):
    train = synthetic(n_users=12, n_items=9, n_interactions=60, dim=2, seed=seed)
    g = torch.Generator().manual_seed(seed)
    Q = torch.randn(train.n_items, d, generator=g, dtype=F64)
    Y = 0.3 * torch.randn(train.n_items, d, generator=g, dtype=F64)
    offset = torch.randn(len(train), generator=g, dtype=F64)  # μ + biases + p_u·q_i of each rating
    B = torch.randn(d, d, generator=g, dtype=F64)
    Lam, m = B @ B.T + torch.eye(d, dtype=F64), torch.randn(d, generator=g, dtype=F64)
    u = train.users
    n_u = torch.bincount(u, minlength=train.n_users).double()
    c = torch.where(n_u > 0, n_u.clamp(min=1).rsqrt(), torch.zeros_like(n_u))
    return train, Q, Y, offset, Lam, m, c


def sums_of(train, Y, c):
    """c_u Σ_{j∈N(u)} y_j [U, d] from scratch."""
    return c.unsqueeze(1) * torch.zeros(train.n_users, Y.shape[1], dtype=F64).index_add_(
        0, train.users, Y[train.items]
    )


def residual(train, Q, Y, offset, c):
    u, i = train.users, train.items
    return train.values.double() - offset - (sums_of(train, Y, c)[u] * Q[i]).sum(1)


def statistics(train, Q, e):
    u, i = train.users, train.items
    h = torch.zeros(train.n_users, Q.shape[1], dtype=F64).index_add_(0, u, e.unsqueeze(1) * Q[i])
    G = torch.zeros(train.n_users, Q.shape[1], Q.shape[1], dtype=F64).index_add_(
        0, u, Q[i].unsqueeze(2) * Q[i].unsqueeze(1)
    )
    return h, G


def dense_implicit(train, Q, Y, offset, Lam, m, c, alpha):
    """Every y_j in item order, each the mean of its Gaussian conditional (Z = 0), by a dense least
    squares over the ratings of the users whose sums hold it; also (A_j) per item."""
    Y = Y.clone()
    u, i = train.users, train.items
    A_all = []
    for j in range(train.n_items):
        holders = torch.unique(u[i == j])
        rows = torch.isin(u, holders)  # every rating of those users
        X = c[u[rows]].unsqueeze(1) * Q[i[rows]]  # ∂ r̂ / ∂ y_j
        t = residual(train, Q, Y, offset, c)[rows] + X @ Y[j]  # the residual without y_j
        A = Lam + alpha * X.T @ X
        Y[j] = torch.linalg.solve(A, Lam @ m + alpha * X.T @ t)
        A_all.append(A)
    return Y, A_all


def test_implicit_draws_are_their_sequential_conditionals():
    train, Q, Y0, offset, Lam, m, c = implicit_problem()
    alpha = 1.3
    expected, A_all = dense_implicit(train, Q, Y0, offset, Lam, m, c, alpha)
    Y, sums = Y0.clone(), sums_of(train, Y0, c)
    h, G = statistics(train, Q, residual(train, Q, Y0, offset, c))
    draw_implicit(train.csr("item"), c, G, h, Y, sums, Lam, m, alpha, torch.zeros_like(Y))
    torch.testing.assert_close(Y, expected, atol=1e-10, rtol=1e-10)
    # the running sums and h are those of the new Y, computed from scratch
    torch.testing.assert_close(sums, sums_of(train, Y, c), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(
        h, statistics(train, Q, residual(train, Q, Y, offset, c))[0], atol=1e-10, rtol=1e-10
    )
    # the noise of item 0's draw: z = e_k gives column k of L⁻ᵀ,
    # so the columns' outer product is A_0⁻¹
    d = Y.shape[1]
    columns = []
    for k in range(d):
        Yk, sk = Y0.clone(), sums_of(train, Y0, c)
        hk, Gk = statistics(train, Q, residual(train, Q, Y0, offset, c))
        Z = torch.zeros_like(Y0)
        Z[0, k] = 1.0
        draw_implicit(train.csr("item"), c, Gk, hk, Yk, sk, Lam, m, alpha, Z)
        columns.append(Yk[0] - expected[0])
    C = torch.stack(columns, 1)
    torch.testing.assert_close(C @ C.T, torch.linalg.inv(A_all[0]), atol=1e-10, rtol=1e-10)


def test_group_bias_draws_are_their_conditionals():
    g = torch.Generator().manual_seed(0)
    residual_ = torch.randn(40, generator=g, dtype=F64)
    groups = torch.randint(0, 6, (40,), generator=g)
    groups[groups == 5] = 4  # group 5 has no events: drawn from the prior N(0, τ⁻¹)
    tau, alpha = 3.0, 2.0
    Z = torch.randn(6, generator=g, dtype=F64)
    drawn = draw_group_biases(residual_, groups, 6, tau, alpha, Z)
    for k in range(6):
        n, s = int((groups == k).sum()), float(residual_[groups == k].sum())
        precision = tau + alpha * n
        assert float(drawn[k]) == pytest.approx(
            alpha * s / precision + float(Z[k]) / precision**0.5, abs=1e-12
        )
    assert float(drawn[5]) == pytest.approx(float(Z[5]) / tau**0.5)


TERMS = {"implicit": True, "n_bins": 4, "day_bias": True}


def _timed_chain(train, sweeps: int):
    return _chain(train, sweeps, burn_in=3, options=TERMS)


def test_the_full_chain_is_reproducible_resumable_and_its_sse_is_the_models():
    train = synthetic(n_users=60, n_items=40, n_interactions=1200, dim=3, seed=5)
    whole, solver = _timed_chain(train, 8)
    again, _ = _timed_chain(train, 8)
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(value, again.state_dict()[name], atol=0, rtol=0)
    assert (
        int(whole.n_kept) == 5
        and float(whole.bin_bias.abs().sum()) > 0
        and float(whole.day_bias[:-1].abs().sum()) > 0
    )
    assert float(whole.day_bias[-1]) == 0.0  # the unseen-day row
    # the objective is the squared error of the model's own scores at the current draw
    with torch.no_grad():
        whole_current = BayesianMF(
            train.n_users, train.n_items, dim=3, keep=1, implicit=True, n_bins=4, day_bias=True
        ).double()
        whole_current.prepare(train)
        state = {
            k: v
            for k, v in whole.state_dict().items()
            if not k.startswith("kept") and k != "n_kept"
        }
        whole_current.load_state_dict(state, strict=False)
        scores = whole_current(
            Batch(train.users, train.items.unsqueeze(1), times=train.timestamps)
        )[:, 0]
    sse = float((train.values.double() - scores).pow(2).sum())
    assert solver.objective(whole, train) == pytest.approx(sse, rel=1e-10)
    # resumed from the checkpoint (the day tables take its size) it draws what the whole chain drew
    first, first_solver = _timed_chain(train, 5)
    resumed = BayesianMF(
        train.n_users, train.n_items, dim=3, keep=50, implicit=True, n_bins=4, day_bias=True
    ).double()
    resumed.load_state_dict({k: v.clone() for k, v in first.state_dict().items()})
    fresh = GibbsSolver(burn_in=3, seed=3)
    fresh.load_state_dict(first_solver.state_dict())
    for _ in range(3):
        fresh.sweep(resumed, train)
    torch.testing.assert_close(resumed.kept_users, whole.kept_users, atol=1e-12, rtol=0)
    torch.testing.assert_close(resumed.kept_days, whole.kept_days, atol=1e-12, rtol=0)


def test_predictions_average_every_term_over_the_kept_draws():
    train = synthetic(n_users=50, n_items=30, n_interactions=900, dim=3, seed=6)
    model, _ = _timed_chain(train, 7)
    S, d = model.held(), model.dim
    batch = Batch(train.users[:20], train.items[:20].unsqueeze(1), times=train.timestamps[:20])
    bins, days = model.time_rows(batch.users, batch.items, batch.times)
    expected = torch.zeros(20, dtype=F64)
    for s in range(S):  # one prediction per kept draw, then their mean
        U, V = model.kept_users[s], model.kept_items[s]
        one = (
            (U[batch.users, :d] * V[batch.items[:, 0], :d]).sum(1)
            + U[batch.users, d]
            + V[batch.items[:, 0], d]
        )
        expected += one + model.kept_bins[s][bins[:, 0]] + model.kept_days[s][days[:, 0]]
    expected = expected / S + model.global_mean
    with torch.no_grad():
        torch.testing.assert_close(model(batch)[:, 0], expected, atol=1e-10, rtol=1e-10)
        # the static factors: the last bin, no day bias
        last_bin = torch.full_like(batch.users, len(model.bin_edges))
        static = (model.user_factors()[batch.users] * model.item_factors()[batch.items[:, 0]]).sum(
            1
        )
        no_day = (
            expected
            - model.kept_days[:S].mean(0)[days[:, 0]]
            - model.kept_bins[:S].mean(0)[bins[:, 0]]
            + model.kept_bins[:S].mean(0)[batch.items[:, 0] * model.n_bins + last_bin]
        )
        torch.testing.assert_close(static, no_day, atol=1e-10, rtol=1e-10)


def test_time_terms_need_biases_and_timestamps():
    with pytest.raises(ValueError, match="biases=true"):
        BayesianMF(10, 10, biases=False, n_bins=3)
    untimed = synthetic(n_users=20, n_items=10, n_interactions=100, seed=0)
    untimed = type(untimed)(
        untimed.users,
        untimed.items,
        untimed.values,
        None,
        untimed.user_ids,
        untimed.item_ids,
        "ratings.csv",
    )
    with pytest.raises(ValueError, match=r"needs timestamps; ratings\.csv has none"):
        BayesianMF(20, 10, day_bias=True).prepare(untimed)


def test_bayesian_timesvdpp_trains_checkpoints_and_serves_through_the_glue(tmp_path):
    from mfzoo.retrieval import recommend
    from mfzoo.training.restore import load_run

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=ml100k_bayesian_timesvdpp",
                "trainer.max_epochs=6",
                "solver.burn_in=3",
                "model.keep=10",
                "model.dim=4",
                "logger=none",
                "progress=false",
                "data/source=synthetic",
                "data.source.n_users=150",
                "data.source.n_items=80",
                "data.source.n_interactions=4000",
            ],
        )
    metrics = run_training(cfg, tmp_path / "run")
    assert metrics["epochs"] == 6 and 0 < metrics["test"]["rmse"] < 1.5
    _, datamodule, model = load_run(tmp_path / "run")
    assert int(model.n_kept) == 3 and model.implicit and model.n_bins and model.has_day_bias
    assert len(model.day_keys) > 0 and model.kept_days.shape[1] == len(model.day_keys) + 1
    _, items = recommend(model, torch.arange(3), 5, seen=datamodule.train)
    assert items.shape == (3, 5)


@pytest.mark.parametrize("by", ["user", "item"])
def test_each_training_row_maps_to_its_own_entry_even_on_a_square_matrix(by):
    """The time and implicit offsets reach each side's target through `_entries`: on a square
    matrix (as many users as items) the by-item map must still be the by-item one."""
    train = synthetic(n_users=40, n_items=40, n_interactions=600, seed=7)
    R = train.csr(by)
    entries = GibbsSolver._entries(train, by, R, {})
    crow, col = R.crow_indices(), R.col_indices()
    row_of_entry = torch.repeat_interleave(torch.arange(R.shape[0]), crow.diff())
    rows, cols = (train.users, train.items) if by == "user" else (train.items, train.users)
    assert torch.equal(row_of_entry[entries], rows) and torch.equal(col[entries], cols)
    torch.testing.assert_close(R.values()[entries], train.values.float())
