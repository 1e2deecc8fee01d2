"""Low-rank serving of Bayesian MF: `low_rank` against a dense truncated SVD, the model's rank-r
scores against the truncated SVD of its averaged draws, the exported `MF` scoring as the model
(the option through the glue: `tests/test_gibbs.py`)."""

from __future__ import annotations

import pytest
import torch

from mfzoo.data.batch import Batch
from mfzoo.data.sources import synthetic
from mfzoo.models.bayesian import BayesianMF, low_rank
from mfzoo.models.mf import MF
from mfzoo.solvers.gibbs import GibbsSolver


def truncated(M: torch.Tensor, r: int) -> torch.Tensor:
    """The oracle: M's best rank-r approximation from a full dense SVD."""
    U, s, Vh = torch.linalg.svd(M, full_matrices=False)
    return (U[:, :r] * s[:r]) @ Vh[:r]


def spectrum_problem(n: int, m: int, k: int, decay: float, seed: int = 0):
    """P [n, k], Q [m, k] whose product has singular values decay^j (j = 0..k-1)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64)).Q
    B = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64)).Q
    sigma = decay ** torch.arange(k, dtype=torch.float64)
    return A * sigma, B


def test_low_rank_is_the_exact_truncated_svd_when_the_basis_spans_the_range():
    g = torch.Generator().manual_seed(1)
    # k = 10 columns: r + 10 oversampled columns cover the whole range for every r
    P = torch.randn(40, 10, generator=g, dtype=torch.float64)
    Q = torch.randn(30, 10, generator=g, dtype=torch.float64)
    for r in (1, 3, 5, 10, 50):
        U, V = low_rank(P, Q, r)
        assert U.shape == (40, min(r, 10)) and V.shape == (30, min(r, 10))
        torch.testing.assert_close(U @ V.T, truncated(P @ Q.T, r), atol=1e-10, rtol=0)


def test_low_rank_reaches_the_optimal_error_on_a_decaying_spectrum():
    P, Q = spectrum_problem(n=120, m=100, k=90, decay=0.8)
    M = P @ Q.T
    for r in (2, 8, 20):
        U, V = low_rank(P, Q, r)
        best = torch.linalg.norm(M - truncated(M, r))
        assert float(torch.linalg.norm(M - U @ V.T)) <= float(best) * (1 + 1e-9)
        torch.testing.assert_close(U @ V.T, truncated(M, r), atol=1e-9, rtol=0)
        # each side carries √σ: UᵀU = VᵀV = diag(σ_1..σ_r)
        sigma = 0.8 ** torch.arange(r, dtype=torch.float64)
        torch.testing.assert_close(U.T @ U, torch.diag(sigma), atol=1e-9, rtol=0)
        torch.testing.assert_close(V.T @ V, torch.diag(sigma), atol=1e-9, rtol=0)


def test_low_rank_does_not_depend_on_the_global_seed_and_checks_its_input():
    P, Q = spectrum_problem(n=60, m=50, k=40, decay=0.9)
    torch.manual_seed(0)
    first = low_rank(P, Q, 4)
    torch.manual_seed(123)
    second = low_rank(P, Q, 4)
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    with pytest.raises(ValueError, match="same number of columns"):
        low_rank(P, Q[:, :5], 4)
    with pytest.raises(ValueError, match="same number of columns"):
        low_rank(P[:, 0], Q, 4)
    with pytest.raises(ValueError, match="floating point"):
        low_rank(P.long(), Q, 4)
    with pytest.raises(ValueError, match="NaN or inf"):
        low_rank(torch.full_like(P, float("nan")), Q, 4)
    with pytest.raises(ValueError, match="rank"):
        low_rank(P, Q, 0)
    # half precision and mixed dtypes: computed in float32 at least, returned in P's dtype
    U, V = low_rank(P.half(), Q.float(), 4)
    assert U.dtype == V.dtype == torch.float16
    torch.testing.assert_close(
        (U.float() @ V.float().T).double(), truncated(P @ Q.T, 4), atol=2e-2, rtol=0
    )


def _chain(train, sweeps: int = 12, **options) -> BayesianMF:
    torch.manual_seed(0)
    model = BayesianMF(train.n_users, train.n_items, dim=3, keep=50, **options).double()
    model.prepare(train)
    solver = GibbsSolver(burn_in=4, seed=3)
    for _ in range(sweeps):
        solver.sweep(model, train)
    return model


def all_scores(model) -> torch.Tensor:
    """[n_users, n_items] by `forward` (every user against every item)."""
    items = torch.arange(model.n_items).expand(model.n_users, -1)
    with torch.no_grad():
        return model(Batch(users=torch.arange(model.n_users), items=items))


def averaged_oracle(model: BayesianMF, r: int | None) -> torch.Tensor:
    """μ + mean b_u + mean b_i + the (rank-r truncated) mean of the held draws' P_s Q_sᵀ."""
    S, d = model.held(), model.dim
    M = sum(model.kept_users[s, :, :d] @ model.kept_items[s, :, :d].T for s in range(S)) / S
    if r is not None:
        M = truncated(M, r)
    b_u = model.kept_users[:S, :, d].mean(0)
    b_i = model.kept_items[:S, :, d].mean(0)
    return M + model.global_mean + b_u[:, None] + b_i[None, :]


@pytest.fixture(scope="module")
def train():
    return synthetic(n_users=60, n_items=40, n_interactions=900, dim=3, seed=5)


def test_rank_r_scores_are_the_truncated_svd_of_the_averaged_draws(train):
    model = _chain(train, rank=4)
    assert model.held() == 8  # 8 draws of 3 factors: the average has rank up to 24
    scores = all_scores(model)
    # rank 4 + 10 oversampled columns < 24: the randomized basis, near the optimum on this
    # flat spectrum (the exact cases are the tests of `low_rank` above)
    torch.testing.assert_close(scores, averaged_oracle(model, 4), atol=1e-5, rtol=0)
    # retrieval's factors give the same scores, with 4 + 2 columns
    assert model.user_factors().shape == (train.n_users, 6)
    torch.testing.assert_close(model.user_factors() @ model.item_factors().T, scores)
    # a rank of S·dim or more is the full average
    full = _chain(train)
    torch.testing.assert_close(all_scores(full), averaged_oracle(full, None), atol=1e-9, rtol=0)
    full.rank = 24
    torch.testing.assert_close(all_scores(full), averaged_oracle(full, None), atol=1e-9, rtol=0)


def test_the_projection_follows_new_draws_and_checkpoints(train):
    model = _chain(train, rank=2)
    before = all_scores(model)
    GibbsSolver(burn_in=0, seed=9).sweep(model, train)  # one more draw kept
    after = all_scores(model)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, averaged_oracle(model, 2), atol=1e-5, rtol=0)
    # a fresh model loading the checkpoint scores the same (its projection is computed anew)
    other = _chain(train, sweeps=6, rank=2)
    all_scores(other)  # caches other's own projection, which the load must drop
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(all_scores(other), after, atol=1e-12, rtol=0)


@pytest.mark.parametrize("options", [{}, {"implicit": True}, {"biases": False}])
@pytest.mark.parametrize("rank", [None, 3])
def test_to_mf_exports_an_mf_that_scores_as_the_model(train, options, rank):
    model = _chain(train, **options)
    mf = model.to_mf(rank)
    assert isinstance(mf, MF) and mf.dim == (24 if rank is None else rank)
    assert mf.biases == options.get("biases", True)
    assert mf.user_embedding.weight.dtype == torch.float64
    model.rank = rank
    torch.testing.assert_close(all_scores(mf), all_scores(model), atol=1e-9, rtol=0)
    torch.testing.assert_close(mf.user_factors() @ mf.item_factors().T, all_scores(model))


def test_to_mf_refuses_a_chain_without_kept_draws(train):
    model = BayesianMF(train.n_users, train.n_items, dim=3, rank=2)
    model.prepare(train)
    with pytest.raises(ValueError, match="no draw has been kept"):
        model.to_mf()


def test_to_mf_refuses_time_terms():
    timed = synthetic(n_users=30, n_items=20, n_interactions=300, dim=3, seed=1)
    model = _chain(timed, sweeps=6, n_bins=2)
    with pytest.raises(ValueError, match=r"time terms.*MF has not"):
        model.to_mf()


def test_rank_is_checked():
    with pytest.raises(ValueError, match="rank"):
        BayesianMF(10, 10, rank=0)
