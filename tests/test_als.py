"""ALS half-steps against their plain per-row references (`mfzoo.solvers.als_reference`: one
dense `torch.linalg.solve` per row of the written formula, themselves checked by hand), the
stationarity of the iALS objective, exact low-rank reconstruction, block-size invariance and
the monotone decrease of `als_sweep`."""

from __future__ import annotations

import itertools
from functools import partial

import numpy as np
import pytest
import torch

from mfzoo.data.interactions import Interactions
from mfzoo.models.mf import MF
from mfzoo.solvers import blocks
from mfzoo.solvers.als import als_sweep, ials_half_step, least_squares_half_step
from mfzoo.solvers.als_reference import ials_cg_reference, ials_reference, least_squares_reference
from mfzoo.solvers.objective import ials_objective, least_squares_objective

N_ROWS, N_COLS, K = 11, 9, 4


def ratings(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ratings in 1..5 and their 0/1 mask [N_ROWS, N_COLS], float64: rows of degree
    0 (row 3), 1 (row 0), N_COLS (row 5) and random degrees in between elsewhere."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(N_ROWS, 1, generator=g) * 0.8 + 0.1  # [N_ROWS, 1] per-row density
    mask = (torch.rand(N_ROWS, N_COLS, generator=g) < p).double()  # [N_ROWS, N_COLS]
    mask[0] = 0
    mask[0, 2] = 1
    mask[3] = 0
    mask[5] = 1
    values = torch.randint(1, 6, (N_ROWS, N_COLS), generator=g).double()
    return values * mask, mask


def factors(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, K, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# the plain per-row references are the oracle below; first they are checked by hand ----------
def test_least_squares_reference_by_hand():
    """k = 1: x_u = Σ_i y_i r_ui / (Σ_i y_i² + λ_u), written out for two rows and an empty one."""
    R = torch.tensor([[2.0, 0.0, 4.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0]], dtype=torch.float64)
    Y = torch.tensor([[1.0], [2.0], [0.5]], dtype=torch.float64)
    # λ_u = 0.5 n_u
    X = least_squares_reference(R.to_sparse_csr(), Y, l2=0.5, frequency_scaled=True)
    assert X.dtype == torch.float64
    assert X[0, 0].item() == pytest.approx((1 * 2 + 0.5 * 4) / (1 + 0.25 + 0.5 * 2), abs=1e-14)
    assert X[1, 0].item() == 0.0
    assert X[2, 0].item() == pytest.approx(2 * 3 / (4 + 0.5), abs=1e-14)
    assert least_squares_reference(R.to_sparse_csr(), Y, 0.5, frequency_scaled=False)[
        0, 0
    ].item() == pytest.approx(4 / 1.75, abs=1e-14)


def test_ials_reference_by_hand():
    """k = 1, c = 1 + α r, α₀ on the other columns:
    x_u = Σ_i c_ui p_ui y_i / (Σ_i c_ui y_i² + λ_u)."""
    R = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    Y = torch.tensor([[1.0], [2.0], [-1.0]], dtype=torch.float64)
    X = ials_reference(
        R.to_sparse_csr(), Y, l2=0.3, alpha=2.0, unobserved_weight=0.5, l2_exponent=1.0
    )
    lam = 0.3 * (1 + 0.5 * 3)  # λ (n_u + α₀ n_cols)^ν, ν = 1
    # c = 1 + 2·2
    assert X[0, 0].item() == pytest.approx(5 * 1 / (5 * 1 + 0.5 * 4 + 0.5 * 1 + lam), abs=1e-14)
    assert X[1, 0].item() == 0.0  # no entries: b_u = 0


def test_ials_cg_reference_by_hand():
    """One CG step from x⁰ on a 1 x 1 system is the exact solution; zero steps keep x⁰."""
    R = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64).to_sparse_csr()
    Y = torch.tensor([[1.0], [2.0], [-1.0]], dtype=torch.float64)
    x0 = torch.tensor([[7.0]], dtype=torch.float64)
    kw = {"l2": 0.3, "alpha": 2.0, "unobserved_weight": 0.5, "l2_exponent": 1.0}
    assert ials_cg_reference(R, Y, x0, cg_steps=1, **kw)[0, 0].item() == pytest.approx(
        ials_reference(R, Y, **kw)[0, 0].item(), abs=1e-14
    )
    assert ials_cg_reference(R, Y, x0, cg_steps=0, **kw)[0, 0].item() == 7.0


@pytest.mark.parametrize("frequency_scaled", [True, False])
def test_least_squares_half_step_matches_dense_reference(frequency_scaled):
    R, _ = ratings()
    Y = factors(N_COLS)
    X = least_squares_half_step(R.to_sparse_csr(), Y, l2=0.3, frequency_scaled=frequency_scaled)
    expected = least_squares_reference(R.to_sparse_csr(), Y, 0.3, frequency_scaled)
    assert X.shape == (N_ROWS, K) and X.dtype == torch.float64
    assert torch.allclose(X, expected, rtol=0, atol=1e-10)
    assert torch.all(X[3] == 0)  # the empty row


@pytest.mark.parametrize("kind,alpha,eps", [("linear", 2.0, 1.0), ("log", 3.0, 0.5)])
@pytest.mark.parametrize("unobserved_weight,l2_exponent", [(1.0, 0.0), (0.3, 0.7)])
def test_ials_half_step_matches_dense_reference(kind, alpha, eps, unobserved_weight, l2_exponent):
    R, _ = ratings()
    Y = factors(N_COLS)
    kw = {
        "alpha": alpha,
        "kind": kind,
        "eps": eps,
        "unobserved_weight": unobserved_weight,
        "l2_exponent": l2_exponent,
    }
    X = ials_half_step(R.to_sparse_csr(), Y, l2=0.2, **kw)
    expected = ials_reference(R.to_sparse_csr(), Y, 0.2, **kw)
    assert torch.allclose(X, expected, rtol=0, atol=1e-10)


def test_ials_half_step_is_a_stationary_point_of_the_objective():
    R, _ = ratings()
    Y = factors(N_COLS)
    kw = {"alpha": 2.0, "kind": "log", "eps": 0.5, "unobserved_weight": 0.4, "l2_exponent": 0.5}
    R_csr = R.to_sparse_csr()
    X = ials_half_step(R_csr, Y, l2=0.1, **kw).requires_grad_()
    (grad,) = torch.autograd.grad(ials_objective(R_csr, X, Y, l2=0.1, **kw), X)
    assert grad.abs().max() < 1e-8
    # and it is not stationary for a perturbed X (the check can fail)
    X_off = (X.detach() + 1e-3).requires_grad_()
    (grad_off,) = torch.autograd.grad(ials_objective(R_csr, X_off, Y, l2=0.1, **kw), X_off)
    assert grad_off.abs().max() > 1e-5


def test_least_squares_half_step_is_a_stationary_point_of_the_objective():
    R, _ = ratings()
    Y = factors(N_COLS)
    R_csr = R.to_sparse_csr()
    X = least_squares_half_step(R_csr, Y, l2=0.1).requires_grad_()
    (grad,) = torch.autograd.grad(least_squares_objective(R_csr, X, Y, l2=0.1), X)
    assert grad.abs().max() < 1e-8


def test_explicit_als_reconstructs_a_rank_k_matrix():
    g = torch.Generator().manual_seed(3)
    M = torch.randn(15, K, generator=g, dtype=torch.float64) @ torch.randn(
        K, 10, generator=g, dtype=torch.float64
    )
    R, Rt = M.to_sparse_csr(), M.T.contiguous().to_sparse_csr()
    Y = factors(10)
    for _ in range(3):
        X = least_squares_half_step(R, Y, l2=0.0, frequency_scaled=False)
        Y = least_squares_half_step(Rt, X, l2=0.0, frequency_scaled=False)
    assert (X @ Y.T - M).abs().max() < 1e-6


@pytest.mark.parametrize("implicit", [False, True])
def test_als_sweep_lowers_the_objective_every_sweep(implicit):
    rng = np.random.default_rng(0)
    pairs = rng.choice(20 * 15, size=120, replace=False)
    train = Interactions.from_arrays(
        pairs // 15, pairs % 15, rng.integers(1, 6, size=120).astype(np.float32)
    )
    model = MF(train.n_users, train.n_items, dim=K, biases=False, init_std=0.5).double()
    kw = (
        {"alpha": 2.0, "kind": "linear", "unobserved_weight": 0.5, "l2_exponent": 0.5}
        if implicit
        else {"frequency_scaled": True}
    )
    objective = ials_objective if implicit else least_squares_objective
    R = train.csr("user")

    @torch.no_grad()
    def value() -> float:
        X, Y = model.user_embedding.weight, model.item_embedding.weight
        return float(objective(R, X, Y, 0.1, both_sides=True, **kw))

    values = [value()]
    for _ in range(5):
        half_step = ials_half_step if implicit else least_squares_half_step
        als_sweep(model, train, partial(half_step, l2=0.1, block_size=7, **kw))
        values.append(value())
    assert all(b < a for a, b in itertools.pairwise(values)), values
    assert values[-1] < 0.9 * values[0]


def test_als_sweep_rejects_biased_models():
    train = Interactions.from_arrays(np.array([0, 1]), np.array([0, 1]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="biases"):
        als_sweep(MF(2, 2, dim=2, biases=True), train, partial(ials_half_step, l2=0.1))


@pytest.mark.parametrize("implicit", [False, True])
def test_block_size_does_not_change_the_result(implicit, monkeypatch):
    # also split each block's outer products
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 2 * K * K)
    R, _ = ratings()
    Y = factors(N_COLS)
    R_csr = R.to_sparse_csr()

    def solve(block_size: int) -> torch.Tensor:
        if implicit:
            return ials_half_step(
                R_csr, Y, 0.2, alpha=2.0, unobserved_weight=0.3, block_size=block_size
            )
        return least_squares_half_step(R_csr, Y, 0.2, block_size=block_size)

    reference = solve(N_ROWS + 5)
    for block_size in (1, 3):  # the padded length, hence the path of a row (see below), changes
        assert torch.allclose(solve(block_size), reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dim", [2, 12])  # 12 > N_COLS: every row by the low-rank (Woodbury) path
@pytest.mark.parametrize(
    "implicit,unobserved_weight", [(False, 0.0), (True, 1.0), (True, 0.3), (True, 8.0)]
)
def test_low_rank_and_direct_paths_match_the_dense_reference(dim, implicit, unobserved_weight):
    """Rows shorter than k are solved through the Woodbury identity, longer rows directly;
    α₀ = 8 > c_ui makes some weights c_ui − α₀ negative, where only the direct path is valid."""
    R, _ = ratings()
    Y = torch.randn(N_COLS, dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    if implicit:
        kw = {
            "alpha": 2.0,
            "kind": "linear",
            "eps": 1.0,
            "unobserved_weight": unobserved_weight,
            "l2_exponent": 0.5,
        }
        X = ials_half_step(R.to_sparse_csr(), Y, l2=0.2, **kw)
        expected = ials_reference(R.to_sparse_csr(), Y, 0.2, **kw)
    else:
        X = least_squares_half_step(R.to_sparse_csr(), Y, l2=0.2)
        expected = least_squares_reference(R.to_sparse_csr(), Y, 0.2, True)
    assert torch.allclose(X, expected, rtol=0, atol=1e-10)


def test_zero_l2_gives_the_minimum_norm_solution_for_short_rows():
    """λ = 0, explicit: a row with n_u < k has a singular A_u (no Woodbury, B_u = 0) and gets the
    minimum-norm least-squares solution, which fits its ratings exactly."""
    R, mask = ratings()
    Y = torch.randn(N_COLS, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    X = least_squares_half_step(R.to_sparse_csr(), Y, l2=0.0)
    assert torch.allclose(X, least_squares_reference(R.to_sparse_csr(), Y, 0.0), rtol=0, atol=1e-8)
    for u in (0, 1, 2):
        items = mask[u].nonzero().squeeze(1)
        expected = torch.linalg.pinv(Y[items]) @ R[u, items]
        assert torch.allclose(X[u], expected, atol=1e-8)
        assert torch.allclose(Y[items] @ X[u], R[u, items], atol=1e-8)


def test_float32_follows_the_input_dtype():
    R, _ = ratings()
    Y = factors(N_COLS)
    X64 = ials_half_step(R.to_sparse_csr(), Y, 0.2, alpha=2.0)
    X32 = ials_half_step(R.float().to_sparse_csr(), Y.float(), 0.2, alpha=2.0)
    assert X32.dtype == torch.float32
    assert torch.allclose(X32.double(), X64, atol=1e-4)
