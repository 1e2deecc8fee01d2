"""TruncatedSVD against its dense, obvious twin: `torch.linalg.svd` of the densified
(zero-filled or observed-entry-centred) matrix."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mfzoo.data.interactions import Interactions
from mfzoo.solvers.svd import TruncatedSVD

N_USERS, N_ITEMS, K = 60, 40, 5
# a 60 x 40 spectrum is flat beyond the top value; a wide sketch and many power iterations
# make the randomized method converge to float64 round-off
ACCURATE = {"n_oversamples": 20, "n_iter": 20}


def _sparse_data(seed: int = 0, density: float = 0.3) -> Interactions:
    rng = np.random.default_rng(seed)
    keys = rng.choice(N_USERS * N_ITEMS, size=int(density * N_USERS * N_ITEMS), replace=False)
    values = rng.integers(1, 6, size=len(keys)).astype(np.float32)
    return Interactions.from_arrays(keys // N_ITEMS, keys % N_ITEMS, values)


def _dense_reference(
    train: Interactions, center: str | None, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top-k singular values, rank-k reconstruction + offsets, centred dense A), all densely."""
    M = torch.from_numpy(train.to_scipy().toarray()).double()  # [n_users, n_items]
    observed = M != 0  # values are 1..5, so the non-zeros are exactly the observed entries
    offset = torch.zeros(M.shape[0], dtype=torch.float64)
    if center == "global":
        offset[:] = M[observed].mean()
    elif center == "user":
        offset = (M.sum(1) / observed.sum(1)).where(observed.any(1), M[observed].mean())
    A = torch.where(observed, M - offset[:, None], 0.0)
    U, S, Vt = torch.linalg.svd(A, full_matrices=False)
    recon = (U[:, :k] * S[:k]) @ Vt[:k] + offset[:, None]
    return S[:k], recon, A


@pytest.mark.parametrize("center", [None, "global", "user"])
@pytest.mark.parametrize("method", ["randomized", "lanczos"])
def test_matches_dense_svd(center, method) -> None:
    train = _sparse_data()
    model = TruncatedSVD(K, center=center, method=method, **ACCURATE).fit(train)
    S_ref, recon_ref, _ = _dense_reference(train, center, K)
    torch.testing.assert_close(model.S, S_ref, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(model.reconstruction(), recon_ref, rtol=0.0, atol=1e-6)
    # the augmented factors carry the offsets: their product is the reconstruction
    torch.testing.assert_close(
        model.user_factors() @ model.item_factors().T, recon_ref, rtol=0.0, atol=1e-6
    )
    users = torch.tensor([3, 0, 59])
    torch.testing.assert_close(model.scores(users), recon_ref[users], rtol=0.0, atol=1e-6)
    assert model.user_factors().shape == (N_USERS, K + (center is not None))
    assert model.item_factors().shape == (N_ITEMS, K + (center is not None))
    # orthonormal singular vectors
    eye = torch.eye(K, dtype=torch.float64)
    torch.testing.assert_close(model.U.T @ model.U, eye, rtol=0.0, atol=1e-8)
    torch.testing.assert_close(model.V.T @ model.V, eye, rtol=0.0, atol=1e-8)


def test_default_settings_are_close() -> None:
    """The default (4 power iterations) is an approximation; the top value is still tight."""
    train = _sparse_data()
    model = TruncatedSVD(K).fit(train)
    S_ref, _, _ = _dense_reference(train, None, K)
    assert abs(float(model.S[0] / S_ref[0]) - 1) < 1e-6
    assert float((model.S / S_ref - 1).abs().max()) < 0.05


def test_exact_on_rank_k_matrix() -> None:
    rng = np.random.default_rng(1)
    # integer factors: the rank-3 product is exact in the float32 values of `Interactions`
    # [60, 40], rank 3
    dense = rng.integers(-3, 4, (N_USERS, 3)) @ rng.integers(-3, 4, (3, N_ITEMS))
    u, i = np.meshgrid(np.arange(N_USERS), np.arange(N_ITEMS), indexing="ij")
    train = Interactions.from_arrays(u.ravel(), i.ravel(), dense.ravel())
    expected = torch.from_numpy(dense).double()
    assert int(torch.linalg.matrix_rank(expected)) == 3
    for method in ("randomized", "lanczos"):
        # default n_iter: exact rank needs no more
        model = TruncatedSVD(3, method=method).fit(train)
        torch.testing.assert_close(model.reconstruction(), expected, rtol=0.0, atol=1e-9)


@pytest.mark.parametrize("center", [None, "global", "user"])
def test_fold_in_reproduces_training_rows(center) -> None:
    """For a training row a of A (the centred original matrix, not its rank-k reconstruction),
    a V_k = (A V_k)_u = (U Σ Vᵀ V_k)_u = (U_k Σ_k)_u exactly, because V_k's columns are right
    singular vectors (Vᵀ V_k = [I_k; 0]); likewise for a training column c of A,
    c U_k Σ_k⁻¹ = (Aᵀ U_k Σ_k⁻¹)_i = (V_k Σ_k U_kᵀ U_k Σ_k⁻¹)_i = (V_k)_i. So folding in a
    training user / item returns its own factor row (only up to round-off and the accuracy
    of the computed singular vectors)."""
    train = _sparse_data()
    model = TruncatedSVD(K, center=center, **ACCURATE).fit(train)
    M = torch.from_numpy(train.to_scipy().toarray())  # [n_users, n_items] float32, zeros missing
    users = torch.tensor([0, 7, 59])
    torch.testing.assert_close(
        model.fold_in_users(M[users]), model.user_factors()[users], rtol=0.0, atol=1e-6
    )
    items = torch.tensor([0, 13, 39])
    torch.testing.assert_close(
        model.fold_in_items(M.T[items]), model.item_factors()[items], rtol=0.0, atol=1e-6
    )
    # a sparse CSR input gives the same as the dense one
    torch.testing.assert_close(
        model.fold_in_users(M[users].to_sparse_csr()), model.fold_in_users(M[users])
    )


def test_fold_in_new_user_is_projection() -> None:
    """A new row's factor row @ item_factors().T = m_c V_k V_kᵀ + offset (m_c the centred row)."""
    train = _sparse_data()
    model = TruncatedSVD(K, center="global", **ACCURATE).fit(train)
    m = torch.zeros(N_ITEMS, dtype=torch.float64)
    m[[1, 5, 9, 30]] = torch.tensor([5.0, 1.0, 4.0, 2.0], dtype=torch.float64)
    row = model.fold_in_users(m[None])  # [1, K + 1]
    mu = model.global_mean
    m_c = torch.where(m != 0, m - mu, 0.0)
    expected = m_c @ model.V @ model.V.T + mu
    torch.testing.assert_close((row @ model.item_factors().T)[0], expected, rtol=0.0, atol=1e-10)


def test_seeded_determinism() -> None:
    train = _sparse_data()
    a = TruncatedSVD(K, center="user", seed=3).fit(train)
    b = TruncatedSVD(K, center="user", seed=3).fit(train)
    assert torch.equal(a.U, b.U) and torch.equal(a.S, b.S) and torch.equal(a.V, b.V)
    c = TruncatedSVD(K, center="user", seed=4, n_iter=0).fit(train)
    assert not torch.equal(a.S, c.S)  # the sketch depends on the seed


def test_large_sparse_never_densifies(monkeypatch) -> None:
    """50k x 20k with 100k entries: a dense copy would be 8 GB; densifying is forbidden outright."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the data matrix was densified")

    monkeypatch.setattr(torch.Tensor, "to_dense", forbidden)
    for cls in (sp.csr_matrix, sp.coo_matrix, sp.csc_matrix):
        monkeypatch.setattr(cls, "toarray", forbidden)
        monkeypatch.setattr(cls, "todense", forbidden)
    rng = np.random.default_rng(2)
    n_users, n_items, nnz = 50_000, 20_000, 100_000
    users = np.concatenate([np.arange(n_users), rng.integers(0, n_users, nnz - n_users)])
    items = np.concatenate([np.arange(n_items), rng.integers(0, n_items, nnz - n_items)])
    train = Interactions.from_arrays(
        users, items[:nnz], rng.integers(1, 6, nnz).astype(np.float32), pair_duplicates="keep"
    )
    assert (train.n_users, train.n_items) == (n_users, n_items)
    for method in ("randomized", "lanczos"):
        model = TruncatedSVD(8, center="user", method=method).fit(train)
        assert model.U.shape == (n_users, 8) and model.V.shape == (n_items, 8)
        assert bool((model.S[:-1] >= model.S[1:]).all()) and bool(torch.isfinite(model.S).all())
