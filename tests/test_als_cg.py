"""The conjugate-gradient iALS half-step against its dense twins: one CG step written out with
the explicit A_u, the plain per-row CG of `als_reference` for every step count, the exact
solution after k steps (CG terminates in k steps on a k-dim SPD system), the fixed point at the
exact solution, the monotone decrease of `ials_objective` over steps, block-size invariance, the
zero-division guards and float32. Every test runs on both paths: the C kernel of `mfzoo.native`
(the default on a CPU) and the batched torch blocks."""

from __future__ import annotations

import itertools

import pytest
import torch

from mfzoo import native
from mfzoo.data.implicit import confidence
from mfzoo.solvers.als import ials_half_step, ials_half_step_cg
from mfzoo.solvers.als_reference import ials_cg_reference, ials_reference
from mfzoo.solvers.objective import ials_objective
from tests.test_als import N_COLS, N_ROWS, K, factors, ratings

SETTINGS = [
    {"alpha": 2.0, "kind": "linear", "eps": 1.0, "unobserved_weight": 1.0, "l2_exponent": 0.0},
    {"alpha": 3.0, "kind": "log", "eps": 0.5, "unobserved_weight": 0.3, "l2_exponent": 0.7},
    {
        "alpha": 1.0,
        "kind": "linear",
        "eps": 1.0,
        "unobserved_weight": 2.5,
        "l2_exponent": 0.5,
    },  # c_ui − α₀ < 0 for some
]
L2 = 0.2


@pytest.fixture(autouse=True, params=["native", "torch"])
def path(request, monkeypatch):
    """The half-step's path: the C kernel (skipped where it cannot be built) or the torch blocks."""
    if request.param == "native":
        if not native.available():
            pytest.skip("mfzoo.native is unavailable here (no C compiler)")
    else:
        monkeypatch.setattr(native, "supports", lambda *tensors: False)
    return request.param


def dense_systems(
    R: torch.Tensor, mask: torch.Tensor, Y: torch.Tensor, l2: float, **kw
) -> tuple[torch.Tensor, torch.Tensor]:
    """A [N_ROWS, K, K] and b [N_ROWS, K] written out densely: A_u = Yᵀ C_u Y + λ_u I,
    b_u = Yᵀ C_u p_u."""
    unobserved_weight, l2_exponent = kw["unobserved_weight"], kw["l2_exponent"]
    C = torch.where(
        mask.bool(),
        confidence(R, kw["kind"], kw["alpha"], kw["eps"]),
        torch.full_like(R, unobserved_weight),
    )
    A = torch.stack([Y.T @ (C[u].unsqueeze(1) * Y) for u in range(R.shape[0])])
    lam = l2 * (mask.sum(1) + unobserved_weight * R.shape[1]) ** l2_exponent
    A = A + lam.view(-1, 1, 1) * torch.eye(Y.shape[1], dtype=Y.dtype)
    b = torch.stack([Y.T @ (C[u] * mask[u]) for u in range(R.shape[0])])
    return A, b


def start() -> torch.Tensor:
    return factors(N_ROWS, seed=5)


@pytest.mark.parametrize("kw", SETTINGS)
def test_one_step_matches_the_dense_formula(kw):
    """x¹ = x⁰ + (rᵀr / rᵀA r) r with r = b − A x⁰, per row, with the explicit A_u; a row without
    entries (row 3) gets its exact solution 0, as on the exact path."""
    R, mask = ratings()
    Y, X0 = factors(N_COLS), start()
    A, b = dense_systems(R, mask, Y, L2, **kw)
    r = b - torch.einsum("uij,uj->ui", A, X0)
    Ar = torch.einsum("uij,uj->ui", A, r)
    expected = X0 + ((r * r).sum(1) / (r * Ar).sum(1)).unsqueeze(1) * r
    empty = mask.sum(1) == 0
    assert empty.tolist() == [u == 3 for u in range(N_ROWS)]
    expected[empty] = 0.0
    X = ials_half_step_cg(R.to_sparse_csr(), Y, X0, L2, cg_steps=1, **kw)
    assert torch.allclose(X, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kw", SETTINGS)
@pytest.mark.parametrize("steps", [1, 2, 3, K + 2])
def test_every_step_count_matches_the_per_row_reference(kw, steps):
    """The blocked CG (no A_u formed) and the textbook recurrence on each row's dense A_u."""
    R, _ = ratings()
    Y, X0 = factors(N_COLS), start()
    X = ials_half_step_cg(R.to_sparse_csr(), Y, X0, L2, cg_steps=steps, block_size=4, **kw)
    expected = ials_cg_reference(R.to_sparse_csr(), Y, X0, L2, cg_steps=steps, **kw)
    assert torch.allclose(X, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("kw", SETTINGS)
@pytest.mark.parametrize("from_zero", [False, True])
def test_k_steps_reach_the_exact_solution(kw, from_zero):
    R, _ = ratings()
    Y = factors(N_COLS)
    R_csr = R.to_sparse_csr()
    X0 = torch.zeros(N_ROWS, K, dtype=torch.float64) if from_zero else start()
    exact = ials_reference(R_csr, Y, L2, **kw)
    X = ials_half_step_cg(R_csr, Y, X0, L2, cg_steps=K, **kw)
    assert X.shape == (N_ROWS, K) and X.dtype == torch.float64
    assert (X - exact).norm() / exact.norm() < 1e-8
    # and k − 1 steps are not enough (the check can fail)
    X_short = ials_half_step_cg(R_csr, Y, X0, L2, cg_steps=K - 1, **kw)
    assert (X_short - exact).norm() / exact.norm() > 1e-3


@pytest.mark.parametrize("kw", SETTINGS)
def test_the_exact_solution_is_a_fixed_point(kw):
    R, _ = ratings()
    Y = factors(N_COLS)
    R_csr = R.to_sparse_csr()
    exact = ials_half_step(R_csr, Y, L2, **kw)
    X = ials_half_step_cg(R_csr, Y, exact, L2, cg_steps=3, **kw)
    assert torch.allclose(X, exact, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kw", SETTINGS)
def test_the_objective_decreases_with_every_step(kw):
    """CG lowers ‖x_u − x_u*‖_{A_u} every step, i.e. the iALS objective, down to its minimum."""
    R, _ = ratings()
    Y, X0 = factors(N_COLS), start()
    R_csr = R.to_sparse_csr()
    values = [
        float(
            ials_objective(
                R_csr, ials_half_step_cg(R_csr, Y, X0, L2, cg_steps=s, **kw), Y, L2, **kw
            )
        )
        for s in range(K + 1)
    ]
    assert all(b < a for a, b in itertools.pairwise(values)), values
    minimum = float(ials_objective(R_csr, ials_half_step(R_csr, Y, L2, **kw), Y, L2, **kw))
    assert values[-1] == pytest.approx(minimum, rel=1e-10)
    assert values[0] > 2 * minimum  # the start is far from the minimum, so the decrease is real


def test_block_size_does_not_change_the_result():
    R, _ = ratings()
    Y, X0 = factors(N_COLS), start()
    R_csr = R.to_sparse_csr()
    kw = SETTINGS[1]
    reference = ials_half_step_cg(R_csr, Y, X0, L2, cg_steps=2, block_size=N_ROWS + 5, **kw)
    for block_size in (1, 3):
        X = ials_half_step_cg(R_csr, Y, X0, L2, cg_steps=2, block_size=block_size, **kw)
        assert torch.allclose(X, reference, rtol=0, atol=1e-12)


def test_zero_residual_and_singular_rows_stay_put_without_nan():
    """Row 3 is empty: with α₀ = 0 and λ = 0 its A_u and b_u are 0, so rᵀr = pᵀAp = 0 exactly."""
    R, _ = ratings()
    Y, X0 = factors(N_COLS), start()
    X0[3] = 0
    X = ials_half_step_cg(R.to_sparse_csr(), Y, X0, l2=0.0, unobserved_weight=0.0, cg_steps=K)
    assert torch.isfinite(X).all()
    assert torch.all(X[3] == 0)
    # a nonzero start on the empty row gets 0 too: the minimum-norm solution of A_u x = 0, what
    # the exact path gives it
    X0[3] = 1.0
    X = ials_half_step_cg(R.to_sparse_csr(), Y, X0, l2=0.0, unobserved_weight=0.0, cg_steps=K)
    assert torch.isfinite(X).all() and torch.all(X[3] == 0)
    exact = ials_half_step(R.to_sparse_csr(), Y, l2=0.0, unobserved_weight=0.0)
    assert torch.all(exact[3] == 0)


def test_warm_start_is_not_modified_and_zero_steps_copy_it():
    R, _ = ratings()
    Y, X0 = factors(N_COLS), start()
    before = X0.clone()
    X = ials_half_step_cg(R.to_sparse_csr(), Y, X0, L2, cg_steps=0)
    assert torch.equal(X0, before) and torch.equal(X, before) and X.data_ptr() != X0.data_ptr()
    ials_half_step_cg(R.to_sparse_csr(), Y, X0, L2, cg_steps=3)
    assert torch.equal(X0, before)


def test_bad_arguments_are_rejected():
    R, _ = ratings()
    Y = factors(N_COLS)
    with pytest.raises(ValueError, match="X0"):
        ials_half_step_cg(R.to_sparse_csr(), Y, torch.zeros(N_ROWS, K + 1, dtype=torch.float64), L2)
    with pytest.raises(ValueError, match="cg_steps"):
        ials_half_step_cg(R.to_sparse_csr(), Y, start(), L2, cg_steps=-1)


@pytest.mark.parametrize("kw", SETTINGS[:2])
def test_float32_follows_the_input_dtype(kw):
    R, _ = ratings()
    Y, X0 = factors(N_COLS), start()
    exact = ials_half_step(R.to_sparse_csr(), Y, L2, **kw)
    X32 = ials_half_step_cg(R.float().to_sparse_csr(), Y.float(), X0.float(), L2, cg_steps=K, **kw)
    assert X32.dtype == torch.float32
    assert (X32.double() - exact).norm() / exact.norm() < 1e-4


@pytest.mark.parametrize("method", ["exact", "cg"])
def test_the_result_does_not_depend_on_the_thread_count(method):
    """Blocks are solved by as many streams as torch has threads, each single-threaded: the
    same arithmetic per block, so the same bits for 1 and 2 threads (block_size 2: many blocks)."""
    R, _ = ratings()
    Y = torch.randn(R.shape[1], 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    X0 = torch.randn(R.shape[0], 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def solve():
        if method == "cg":
            return ials_half_step_cg(R.to_sparse_csr(), Y, X0, 0.2, alpha=2.0, block_size=2)
        return ials_half_step(R.to_sparse_csr(), Y, 0.2, alpha=2.0, block_size=2)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = solve()
        torch.set_num_threads(2)
        two = solve()
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_a_stream_error_is_raised_and_torch_threads_restored():
    from mfzoo.solvers.parallel import run_streams

    threads = torch.get_num_threads()

    def work(stream: int) -> int:
        if stream == 1:
            raise RuntimeError("stream 1 failed")
        return torch.get_num_threads()

    with pytest.raises(RuntimeError, match="stream 1 failed"):
        run_streams(work, 2)
    assert torch.get_num_threads() == threads
    assert run_streams(lambda s: torch.get_num_threads(), 2) == [
        1,
        1,
    ]  # torch single-threaded inside


def test_torchscript_and_eager_blocks_agree(monkeypatch):
    """The half-steps run `_cg_block` and `block_layout` as TorchScript where torch has it and
    eagerly otherwise: both give the same layout bit for bit and the same CG result, and the
    half-steps run either way (the eager path is the fallback when TorchScript goes)."""
    from mfzoo.solvers import als, blocks

    torch.manual_seed(0)
    b, L, n = 5, 7, 30
    X, Yg = torch.randn(b, K, dtype=torch.float64), torch.randn(b, L, K, dtype=torch.float64)
    gw, reg = torch.rand(b, L, dtype=torch.float64), torch.rand(b, dtype=torch.float64)
    YtY = (lambda Y: Y.T @ Y)(torch.randn(n, K, dtype=torch.float64))
    scripted = blocks.scripted(als._cg_block)
    assert isinstance(scripted, torch.jit.ScriptFunction)
    for steps in (0, 1, 3):
        assert torch.allclose(
            scripted(X, Yg, gw, gw + 1, YtY, reg, steps),
            als._cg_block(X, Yg, gw, gw + 1, YtY, reg, steps),
            atol=1e-12,
        )
    counts, starts = torch.tensor([0, 2, 4]), torch.tensor([0, 0, 2])
    col, w = torch.tensor([3, 1, 4, 1, 5, 9]), torch.arange(6, dtype=torch.float64)
    Y_pad = torch.cat(
        [torch.randn(10, K, dtype=torch.float64), torch.zeros(1, K, dtype=torch.float64)]
    )
    out_a, out_b = torch.empty(12, K, dtype=torch.float64), torch.empty(12, K, dtype=torch.float64)
    eager = blocks.block_layout(counts, starts, 4, 5, 10, col, [w], Y_pad, out_a)
    traced = blocks.scripted(blocks.block_layout)(counts, starts, 4, 5, 10, col, [w], Y_pad, out_b)
    assert torch.equal(eager[0], traced[0]) and torch.equal(out_a, out_b)
    assert torch.equal(
        eager[0], torch.tensor([[0.0, 0, 0, 0], [0, 1, 0, 0], [2, 3, 4, 5]], dtype=torch.float64)
    )
    assert torch.equal(out_a[:4], Y_pad[[10, 10, 10, 10]]) and torch.equal(
        out_a[8:], Y_pad[[4, 1, 5, 9]]
    )
    R_csr, Y = ratings()[0].to_sparse_csr(), factors(N_COLS)
    expected = ials_half_step_cg(R_csr, Y, start(), L2, cg_steps=4)
    monkeypatch.setattr(als, "scripted", lambda fn: fn)
    monkeypatch.setattr(blocks, "scripted", lambda fn: fn)
    assert torch.allclose(
        ials_half_step_cg(R_csr, Y, start(), L2, cg_steps=4), expected, atol=1e-10
    )
