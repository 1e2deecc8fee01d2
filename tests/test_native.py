"""The C kernels of `mfzoo.native` against the torch paths they stand in for: the iALS CG
half-step (same iterations, any thread count), LearnBPR's per-sample update (one sample against
`bpr_step` on a batch of one, rejection of seen negatives, the bit filter changing nothing,
seeded repeats), the solvers' defaults and switches, and the build: disabled by the
environment, a compiler that fails, processes compiling into one cache at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mfzoo import native
from mfzoo.data.interactions import Interactions
from mfzoo.data.sampling import PopularitySampler, UniformSampler
from mfzoo.data.sources import synthetic
from mfzoo.models.mf import MF
from mfzoo.solvers.als import ials_half_step, ials_half_step_cg
from mfzoo.solvers.bpr import BPRSolver, bpr_epoch, bpr_step, native_supported

pytestmark = pytest.mark.skipif(
    not native.available(), reason="mfzoo.native is unavailable here (no C compiler)"
)


def csr(n_rows: int, n_cols: int, nnz: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows, cols = (
        torch.randint(n_rows - 2, (nnz,), generator=g),
        torch.randint(n_cols, (nnz,), generator=g),
    )
    values = torch.rand(nnz, generator=g, dtype=torch.float64) * 3
    # the last two rows stay empty
    return (
        torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n_rows, n_cols))
        .coalesce()
        .to_sparse_csr()
        .to(dtype)
    )


# -- iALS CG -------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 7, 32, 70])
@pytest.mark.parametrize("steps", [0, 1, 3])
def test_ials_cg_kernel_matches_the_torch_blocks(k, steps):
    """Same iterations as the batched torch path to float64 rounding, empty rows included
    (x_u = 0 once a step runs), for factor counts around the kernel's 32 partial sums."""
    R = csr(60, 45, 700)
    g = torch.Generator().manual_seed(1)
    Y = torch.randn(45, k, generator=g, dtype=torch.float64) * 0.3
    X0 = torch.randn(60, k, generator=g, dtype=torch.float64) * 0.1
    kw = dict(alpha=2.0, unobserved_weight=0.4, l2_exponent=0.5, cg_steps=steps)
    reference = ials_half_step_cg(R, Y, X0, 0.3, native=False, **kw)
    X = ials_half_step_cg(R, Y, X0, 0.3, native=True, **kw)
    assert torch.allclose(X, reference, rtol=1e-10, atol=1e-12)
    if steps:
        assert bool((X[-2:] == 0).all())
    else:
        assert torch.equal(X, X0)


def test_ials_cg_kernel_reaches_the_exact_solve_and_ignores_the_thread_count():
    """k steps solve a k-dimensional SPD system (CG's termination), as the dense Cholesky path
    does; the result is the same bit for bit on 1 and 3 threads, float32 included."""
    R = csr(50, 40, 500)
    g = torch.Generator().manual_seed(2)
    Y, X0 = (
        torch.randn(40, 5, generator=g, dtype=torch.float64),
        torch.zeros(50, 5, dtype=torch.float64),
    )
    exact = ials_half_step(R, Y, 0.2, alpha=1.5)
    X = ials_half_step_cg(R, Y, X0, 0.2, alpha=1.5, cg_steps=5, native=True)
    assert torch.allclose(X, exact, atol=1e-9)
    R32, Y32, X32 = R.to(torch.float32), Y.float(), torch.randn(50, 5, generator=g)
    one = ials_half_step_cg(R32, Y32, X32, 0.2, cg_steps=3, native=True, threads=1)
    three = ials_half_step_cg(R32, Y32, X32, 0.2, cg_steps=3, native=True, threads=3)
    assert torch.equal(one, three)


def test_ials_cg_kernel_takes_zero_factors_and_refuses_columns_outside_y():
    """k = 0 gives an empty result (no division by the row's zero cache lines), and a pattern
    whose column indices point past Y's rows is refused before the kernel reads them."""
    R = csr(6, 5, 12)
    X = ials_half_step_cg(
        R,
        torch.zeros(5, 0, dtype=torch.float64),
        torch.zeros(6, 0, dtype=torch.float64),
        0.1,
        native=True,
    )
    assert X.shape == (6, 0)
    bad = torch.sparse_csr_tensor(
        torch.tensor([0, 1, 1]),
        torch.tensor([9]),
        torch.ones(1, dtype=torch.float64),
        size=(2, 5),
        check_invariants=False,
    )  # column 9 of 5
    with pytest.raises(ValueError, match=r"column indices must lie in 0\.\.4"):
        ials_half_step_cg(
            bad,
            torch.ones(5, 2, dtype=torch.float64),
            torch.zeros(2, 2, dtype=torch.float64),
            0.1,
            native=True,
        )


def test_ials_solver_switches_are_checked():
    from mfzoo.solvers.solver import IALSSolver

    with pytest.raises(ValueError, match="native=true applies to method='cg'"):
        IALSSolver(method="exact", native=True)
    with pytest.raises(ValueError, match="native must be"):
        IALSSolver(method="cg", native="yes")


def test_ials_native_true_refuses_what_the_kernel_cannot_run():
    R = csr(10, 8, 30).to(torch.float16)
    Y = torch.randn(8, 3, dtype=torch.float16)
    assert not native.supports(Y)
    with pytest.raises(RuntimeError, match="float16"):
        ials_half_step_cg(R, Y, torch.zeros(10, 3, dtype=torch.float16), 0.1, native=True)
    with pytest.raises(ValueError, match="float16"):
        native.ials_cg(
            R.crow_indices(),
            R.col_indices(),
            R.values(),
            R.values(),
            Y,
            torch.eye(3, dtype=torch.float16),
            torch.ones(10, dtype=torch.float16),
            torch.zeros(10, 3, dtype=torch.float16),
            1,
        )


# -- LearnBPR -------------------------------------------------------------------------------
def one_pair(n_items: int = 2) -> Interactions:
    """One user with one training item (item 0) in a catalogue of `n_items`."""
    return Interactions(
        torch.tensor([0]), torch.tensor([0]), torch.ones(1), None, np.arange(1), np.arange(n_items)
    )


def model_for(data: Interactions, biases: bool, seed: int = 0, dim: int = 6) -> MF:
    torch.manual_seed(seed)
    model = MF(data.n_users, data.n_items, dim=dim, biases=biases, init_std=0.3)
    if biases:
        with torch.no_grad():
            model.item_bias.weight.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("biases", [False, True])
def test_one_native_sample_is_bpr_step_on_a_batch_of_one(biases):
    """With one training pair (u 0, i 0) and two items, rejection leaves j = 1 for every seed,
    and the kernel's update of that sample is `bpr_step`'s on the batch (0, 0, 1); without
    rejection j is 0 or 1 by the seed, and each outcome is `bpr_step`'s for that j."""
    data = one_pair()
    lr, l2, l2_bias = 0.3, 0.05, 0.02

    def after(fn, j=None):
        model = model_for(data, biases)
        fn(model) if j is None else bpr_step(
            model, torch.tensor([0]), torch.tensor([0]), torch.tensor([j]), lr, l2, l2_bias
        )
        return torch.cat(
            [
                model.user_embedding.weight.flatten(),
                model.item_embedding.weight.flatten(),
                *([model.item_bias.weight.flatten()] if biases else []),
            ]
        ).detach()

    expected = {j: after(None, j) for j in (0, 1)}
    outcomes = set()
    for seed in range(12):
        for reject in (True, False):
            sampler = UniformSampler(data, n_negatives=1, reject_seen=reject)
            g = torch.Generator().manual_seed(seed)
            got = after(
                lambda m, sampler=sampler, g=g: bpr_epoch(
                    m, data, sampler, lr, l2, l2_bias, generator=g, threads=1, native=True
                )
            )
            matches = [j for j, value in expected.items() if torch.allclose(got, value, atol=1e-6)]
            assert matches == [1] if reject else len(matches) == 1
            outcomes.update((reject, j) for j in matches)
    assert outcomes == {(True, 1), (False, 0), (False, 1)}  # without rejection both negatives occur


def test_native_epoch_rejects_seen_items_on_a_crowded_catalogue():
    """Users who have seen every item but the last: with rejection every negative is the last
    item. With a small lr (first order), a positive moves by +z p_u (towards the users) and a
    negative by −z p_u, so items 0..n−2 move towards the users and the last one away."""
    n_users, n_items = 6, 9
    users = torch.arange(n_users).repeat_interleave(n_items - 1)
    items = torch.arange(n_items - 1).repeat(n_users)
    data = Interactions(
        users, items, torch.ones(len(users)), None, np.arange(n_users), np.arange(n_items)
    )
    model = model_for(data, False, dim=4)
    before = model.item_embedding.weight.detach().clone()
    users_before = model.user_embedding.weight.detach().clone()
    sampler = UniformSampler(data, n_negatives=1, reject_seen=True)
    bpr_epoch(
        model,
        data,
        sampler,
        lr=1e-4,
        l2=0.0,
        generator=torch.Generator().manual_seed(0),
        threads=1,
        native=True,
    )
    moved = model.item_embedding.weight.detach() - before  # [I, k]
    # to first order in lr: a positive moves by +z p_u (towards the users), the negative by −z p_u
    towards = (moved @ users_before.T).sum(1)  # [I]
    assert bool((towards[:-1] > 0).all()) and float(towards[-1]) < 0


def test_the_bit_filter_changes_no_draw_and_seeded_epochs_repeat():
    """The sampler's PairSet filter only answers membership queries early: with it and without
    it (a plain binary search) one-worker epochs give the same factors bit for bit; the same
    seed repeats, another seed differs."""
    data = synthetic(n_users=300, n_items=120, n_interactions=6000, implicit=True, seed=3)
    sampler = UniformSampler(data, n_negatives=1, reject_seen=True)
    R = data.csr("user")

    def run(seed: int, use_filter: bool) -> torch.Tensor:
        model = model_for(data, True, dim=8)
        native.bpr_epoch(
            data.users,
            data.items,
            R.crow_indices(),
            R.col_indices(),
            model.user_embedding.weight.detach(),
            model.item_embedding.weight.detach(),
            model.item_bias.weight.detach()[:, 0],
            0.05,
            0.01,
            0.01,
            seed,
            threads=1,
            seen_filter=sampler.seen.filter if use_filter else None,
            filter_bits=sampler.seen.bits if use_filter else 0,
        )
        return model.item_embedding.weight.detach().clone()

    assert torch.equal(run(7, True), run(7, False))
    assert torch.equal(run(7, True), run(7, True))
    assert not torch.equal(run(7, True), run(8, True))


def test_hogwild_workers_learn_the_ranking():
    """Several lock-free workers still learn: the BPR loss falls from ln 2 and the model ranks
    training items above random ones, as the reproducible single worker does."""
    data = synthetic(n_users=400, n_items=200, n_interactions=12000, implicit=True, seed=4)
    for threads in (1, 3):
        torch.manual_seed(0)
        model = MF(data.n_users, data.n_items, dim=16, biases=False, init_std=0.01)
        solver = BPRSolver(lr=0.05, l2=0.001, threads=threads)
        # 20 sweeps: at 15 the loss sat at the bound (0.52 against 0.75 ln 2 = 0.52), where the
        # workers' scheduling decided; at 20 it is near 0.41 with 1 and with 3 workers
        losses = [solver.sweep(model, data) for _ in range(20)]
        assert losses[0] > 0.6 and losses[-1] < 0.75 * losses[0], (threads, losses)


def test_bpr_solver_defaults_and_switches():
    """Defaults: the kernel on a CPU with the uniform sampler, one worker per torch thread;
    deterministic=True repeats bit for bit; another sampler (popularity) and native=False run
    the batched torch path; native=True with a sampler the kernel lacks is an error."""
    data = synthetic(n_users=200, n_items=100, n_interactions=4000, implicit=True, seed=5)
    solver = BPRSolver()
    assert solver.threads is None and solver.native is None and not solver.deterministic
    model = model_for(data, False)
    assert native_supported(model, UniformSampler(data, 1, reject_seen=True))
    assert not native_supported(model, PopularitySampler(data, 1))
    assert not native_supported(model, UniformSampler(data, 1, train_items_only=True))

    def fit(**kw) -> torch.Tensor:
        torch.manual_seed(11)
        model = model_for(data, True, seed=11)
        solver = BPRSolver(lr=0.05, l2=0.001, **kw)
        for _ in range(3):
            solver.sweep(model, data)
        return model.item_embedding.weight.detach().clone()

    assert torch.equal(fit(deterministic=True), fit(deterministic=True))
    assert torch.equal(fit(deterministic=True), fit(threads=1))
    # per-sample vs batched
    assert not torch.equal(fit(deterministic=True), fit(native=False, threads=1))
    assert torch.equal(fit(native=False, threads=1), fit(native=False, threads=1))
    popularity = lambda d: PopularitySampler(d, 1)  # noqa: E731
    assert torch.equal(
        fit(sampler=popularity, threads=1), fit(sampler=popularity, threads=1, native=False)
    )
    with pytest.raises(RuntimeError, match=r"uniformly .* the sampler is PopularitySampler"):
        fit(sampler=popularity, native=True)
    for bad in ({"native": "maybe"}, {"deterministic": 2}, {"threads": 1000}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            BPRSolver(**bad)


def test_trainer_deterministic_sets_the_solvers_switch():
    """`trainer.deterministic=true` turns on `solver.deterministic` of a solver that has one."""
    from hydra import compose, initialize_config_dir

    from mfzoo.cli import CONFIG_DIR
    from mfzoo.training.run import build

    for extra, expected in (([], False), (["trainer.deterministic=true"], True)):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[
                    "experiment=ml100k_implicit_learnbpr",
                    "data/source=synthetic",
                    "solver.deterministic=false",
                    *extra,
                ],
            )
        _, module = build(cfg)
        assert module.solver.deterministic is expected


# -- the build ------------------------------------------------------------------------------
def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


PROBE = """
import logging, torch
logging.basicConfig(level=logging.WARNING)
from mfzoo import native
from mfzoo.solvers.als import ials_half_step_cg
R = torch.eye(4).to_sparse_csr(); Y = torch.randn(4, 3); X0 = torch.zeros(4, 3)
X = ials_half_step_cg(R, Y, X0, 0.1)
print(
    "available", native.available(), "finite", bool(torch.isfinite(X).all()),
    "compile", native.compile_seconds,
)
"""


def test_disabled_or_failing_builds_fall_back_to_torch(tmp_path):
    """MFZOO_NATIVE=0, a compiler that fails (CC=false), one that writes nothing (CC=true) and
    a CC naming no program all leave the solvers on their torch paths, the last three with a
    warning that says what went wrong."""
    off = run_python(PROBE, {"MFZOO_NATIVE": "0", "MFZOO_CACHE_DIR": str(tmp_path / "off")})
    assert "available False finite True" in off.stdout, off.stderr
    for cc, words in (
        ("false", "exit status 1"),
        ("true", "wrote no library"),
        ("no-such-cc -O2", "names no program"),
    ):
        failing = run_python(PROBE, {"CC": cc, "MFZOO_CACHE_DIR": str(tmp_path / cc.split()[0])})
        assert "available False finite True" in failing.stdout, failing.stderr
        assert words in failing.stderr and "torch paths" in failing.stderr, (cc, failing.stderr)


def test_a_damaged_cached_library_is_rebuilt(tmp_path):
    """A cached library file that cannot be loaded (truncated, say) is built again, with a
    warning, and the kernels are available."""
    env = {"MFZOO_CACHE_DIR": str(tmp_path)}
    assert "available True" in run_python(PROBE, env).stdout
    (library,) = (Path(tmp_path) / "native").glob("*.so")
    library.write_bytes(b"not a shared library")
    again = run_python(PROBE, env)
    assert "available True finite True" in again.stdout, again.stderr
    assert "unusable" in again.stderr and "building it again" in again.stderr
    assert library.stat().st_size > 1000


def test_processes_building_into_one_cache_at_once_all_load(tmp_path):
    """Three processes started together on an empty cache directory: each loads a complete
    library (the build is renamed into place), one library file is left, and a later process
    loads it without compiling."""
    env = {"MFZOO_CACHE_DIR": str(tmp_path)}
    import os

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROBE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all("available True finite True" in out for out, _ in outs), outs
    libraries = list((Path(tmp_path) / "native").glob("*.so"))
    assert len(libraries) == 1 and not [
        p for p in (Path(tmp_path) / "native").iterdir() if p.is_dir()
    ]
    later = run_python(PROBE, env)
    assert "available True finite True compile 0.0" in later.stdout, later.stderr
