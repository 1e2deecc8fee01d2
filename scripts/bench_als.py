"""iALS benchmark: mfzoo's closed-form solver against implicit's ALS, in one process.

Part 1, quality: MovieLens-100K with every rating a positive (binary), per-user random 80/20
(`UserRandomSplit(test=0.2)`, the split of `bench_implicit.py`); mfzoo iALS (exact and CG)
and implicit's `AlternatingLeastSquares` (Cholesky and CG) with matching hyperparameters (64
factors, the same λ, 15 iterations, and the same confidence on binary data: implicit >= 0.6
multiplies the data by its `alpha`, c = α, which is mfzoo's c = 1 + (α − 1)·r at r = 1), both
scored by mfzoo's evaluator from their factors: NDCG@10, Recall@10.

Part 2, speed (`--synthetic`): 200k users x 50k items x 10M interactions, 64 factors, seconds
per iteration (one full sweep: user and item half-steps) of mfzoo iALS exact and CG (3 steps)
and implicit's Cholesky and CG solvers: `--repeats` interleaved fits of `--iterations`
iterations each, every iteration timed on its own (mfzoo: each `IALSSolver.sweep`; implicit: its
fit callback's per-iteration seconds), median over all of them, with ratios. Set-up is left out
of both (and printed for mfzoo): mfzoo's CSR matrices are built once per data set
(`Interactions.csr`), implicit transposes its input inside `fit` before the first iteration.
Peak resident memory of the whole process is printed at the end.

    python scripts/bench_als.py [--synthetic] [--repeats 2] [--iterations 3] [--out FILE]

Part 3, the grid (`--grid`, alone): every cell of shapes A (200k users x 50k items x 10M) and B
(150k x 75k x 10M, a heavier item head) x factors 32, 64, 128, 256: mfzoo's CG (its C kernel,
the default, and the torch blocks beside it) against implicit's CG, and mfzoo's exact solve
against implicit's Cholesky up to 128 factors; `--repeats 2 --iterations 2` for the published
table (experiments/ials/grid.md), with the worst cell named.

    python scripts/bench_als.py --grid --repeats 2 --iterations 2 --out experiments/ials/grid.md

implicit's fits run with BLAS limited to one thread (`threadpoolctl`), as implicit itself
advises for its CPU solvers. Needs the `[bench]` extra (implicit).

Part 1 compares matching fixed settings; with each library tuned on validation under one budget
see `scripts/tune_implicit.py --model ials|implicit_als` (experiments/tuned_implicit).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _bench import emit, interleaved_medians, kernel_note, quiet, sweep_seconds

from mfzoo.data.interactions import Interactions
from mfzoo.data.sources import movielens, synthetic
from mfzoo.data.splits import UserRandomSplit
from mfzoo.evaluation.ranking import evaluate_ranking
from mfzoo.models.mf import MF
from mfzoo.retrieval.topk import factor_scores
from mfzoo.solvers.solver import IALSSolver

FACTORS, L2, ALPHA = 64, 0.1, 10.0


def ones(data: Interactions) -> Interactions:
    """The same pairs with value 1: binary implicit feedback."""
    return Interactions(
        data.users,
        data.items,
        torch.ones_like(data.values),
        data.timestamps,
        data.user_ids,
        data.item_ids,
        data.name,
    )


def mfzoo_ials(train: Interactions, method: str, iterations: int, seed: int) -> tuple[float, tuple]:
    torch.manual_seed(seed)
    model = MF(train.n_users, train.n_items, dim=FACTORS, biases=False, init_std=0.01)
    solver = IALSSolver(l2=L2, alpha=ALPHA - 1.0, method=method, cg_steps=3)
    start = time.perf_counter()
    for _ in range(iterations):
        solver.sweep(model, train)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        return seconds / iterations, (model.user_factors(), model.item_factors())


def implicit_als(
    train: Interactions, use_cg: bool, iterations: int, seed: int
) -> tuple[float, tuple]:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits  # [bench] extra

    user_items = train.to_scipy("user").astype(np.float32)
    model = AlternatingLeastSquares(
        factors=FACTORS,
        regularization=L2,
        alpha=ALPHA,
        iterations=iterations,
        use_cg=use_cg,
        random_state=seed,
    )
    start = time.perf_counter()
    with threadpool_limits(1, "blas"):
        model.fit(user_items, show_progress=False)
    seconds = time.perf_counter() - start
    return seconds / iterations, (
        torch.from_numpy(np.asarray(model.user_factors)),
        torch.from_numpy(np.asarray(model.item_factors)),
    )


def quality(args) -> list[str]:
    data = ones(movielens("100k"))
    split = UserRandomSplit(test=0.2, seed=args.seed)(data)
    runs = {
        "mfzoo iALS, exact": lambda: mfzoo_ials(split.train, "exact", 15, args.seed),
        "mfzoo iALS, CG (3 steps)": lambda: mfzoo_ials(split.train, "cg", 15, args.seed),
        "implicit ALS, Cholesky": lambda: implicit_als(split.train, False, 15, args.seed),
        "implicit ALS, CG": lambda: implicit_als(split.train, True, 15, args.seed),
    }
    lines = [
        (
            f"**ML-100K, binary, per-user random 80/20** ({FACTORS} factors, λ={L2}, confidence "
            f"{ALPHA:g} on observed pairs, 15 iterations; ranked by mfzoo's evaluator over all "
            "items)"
        ),
        "",
        "| model | NDCG@10 | Recall@10 | coverage@10 | seconds / iteration |",
        "|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        seconds, (U, V) = run()
        r = evaluate_ranking(factor_scores(U, V), split.train, split.test, ks=(10,))
        lines.append(
            f"| {name} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | {r['coverage@10']:.4f} | "
            f"{seconds:.3f} |"
        )
    print("\n".join(lines), flush=True)
    return [*lines, ""]


def mfzoo_iterations(
    data: Interactions,
    method: str,
    iterations: int,
    seed: int,
    factors: int = FACTORS,
    native: bool | None = None,
) -> list[float]:
    """Seconds of each `IALSSolver.sweep` of an mfzoo iALS fit on `data` (native: the CG
    path's C kernel; None: the solver's default, False: the torch blocks)."""
    solver = IALSSolver(l2=L2, alpha=ALPHA - 1.0, method=method, cg_steps=3, native=native)
    return sweep_seconds(solver, data, factors, iterations, seed)


def implicit_iterations(
    user_items, use_cg: bool, iterations: int, seed: int, factors: int = FACTORS
) -> list[float]:
    """Per-iteration seconds of an implicit ALS fit, from its fit callback."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits  # [bench] extra

    model = AlternatingLeastSquares(
        factors=factors,
        regularization=L2,
        alpha=ALPHA,
        iterations=iterations,
        use_cg=use_cg,
        random_state=seed,
    )
    seconds: list[float] = []
    with threadpool_limits(1, "blas"):  # implicit's own advice for its CPU solvers
        model.fit(
            user_items,
            show_progress=False,
            callback=lambda iteration, elapsed, loss: seconds.append(elapsed),
        )
    return seconds


def speed(args) -> list[str]:
    data = ones(
        synthetic(
            n_users=200_000,
            n_items=50_000,
            n_interactions=10_000_000,
            implicit=True,
            seed=args.seed,
        )
    )
    start = time.perf_counter()
    data.csr("user"), data.csr("item")
    setup = time.perf_counter() - start
    user_items = data.to_scipy("user").astype(np.float32)
    n = args.iterations
    runs = {
        "mfzoo iALS, exact": lambda: mfzoo_iterations(data, "exact", n, args.seed),
        "implicit ALS, Cholesky": lambda: implicit_iterations(user_items, False, n, args.seed),
        "mfzoo iALS, CG (3 steps)": lambda: mfzoo_iterations(data, "cg", n, args.seed),
        "implicit ALS, CG": lambda: implicit_iterations(user_items, True, n, args.seed),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name] += run()
    med = {k: statistics.median(v) for k, v in times.items()}
    names = list(runs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines = [
        (
            f"**Synthetic** ({data.n_users} users x {data.n_items} items x {len(data)} "
            f"interactions, {FACTORS} factors; {args.repeats} interleaved fits of {n} iterations "
            "each, every iteration timed, median; set-up excluded (mfzoo's CSR matrices: "
            f"{setup:.1f} s once); {torch.get_num_threads()} threads)"
        ),
        "",
        "| | seconds per iteration | all iterations |",
        "|---|---|---|",
    ]
    lines += [
        f"| {k} | {med[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |" for k, v in times.items()
    ]
    lines += [
        f"| ratio mfzoo / implicit, exact vs Cholesky | {med[names[0]] / med[names[1]]:.2f} | |",
        f"| ratio mfzoo / implicit, CG vs CG | {med[names[2]] / med[names[3]]:.2f} | |",
        "",
        f"Peak resident memory of the process (data, both libraries' fits): {peak:.2f} GiB.",
        "",
    ]
    print("\n".join(lines), flush=True)
    return lines


# the synthetic shapes of the grid: (users, items, interactions, user exponent, item exponent);
# B's heavier item head: its top 1% of items hold 42% of the interactions, A's 30% (at item
# exponent 1.0 B would have A's 30%: the exponent, not the catalogue size, sets the head)
SHAPES = {
    "A": (200_000, 50_000, 10_000_000, 1.2, 1.0),
    "B": (150_000, 75_000, 10_000_000, 1.2, 1.2),
}


def shape_data(name: str, seed: int) -> Interactions:
    users, items, n, user_alpha, item_alpha = SHAPES[name]
    return ones(
        synthetic(
            n_users=users,
            n_items=items,
            n_interactions=n,
            user_alpha=user_alpha,
            item_alpha=item_alpha,
            implicit=True,
            seed=seed,
        )
    )


def skew(data: Interactions) -> str:
    """The share of the interactions held by the top 1% of items and of users."""

    def top(ids: torch.Tensor, n: int) -> float:
        counts = torch.bincount(ids, minlength=n).sort(descending=True).values.double()
        return float(counts[: max(1, n // 100)].sum() / counts.sum())

    return (
        f"top 1% of items {top(data.items, data.n_items):.0%}, of users "
        f"{top(data.users, data.n_users):.0%}"
    )


def shape_note(name: str, data: Interactions, seconds: float) -> str:
    """A grid table's footnote line for one shape: sizes, exponents, head shares, time to make."""
    return (
        f"- shape {name}: {data.n_users} users x {data.n_items} items x {len(data)} interactions "
        f"(user exponent {SHAPES[name][3]}, item exponent {SHAPES[name][4]}; {skew(data)}), made "
        f"in {seconds:.0f} s"
    )


def grid(args) -> list[str]:
    """Every (shape, factors) cell: mfzoo CG (kernel, the default; and the torch blocks) against
    implicit's CG, mfzoo exact against implicit's Cholesky (up to `--exact-max` factors);
    `--repeats` interleaved fits of `--iterations` iterations, each iteration timed, median."""
    factors = [int(k) for k in args.factors.split(",")]
    lines = [
        (
            f"**iALS seconds per iteration over the grid** (median of {args.repeats} interleaved "
            f"fits x {args.iterations} iterations, every iteration timed; "
            f"{torch.get_num_threads()} threads; implicit {implicit_version()} with BLAS at one "
            "thread; ratio = mfzoo / implicit, lower is faster)"
        ),
        "",
        "| shape | factors | mfzoo CG (kernel) | mfzoo CG (torch blocks) | implicit CG | **ratio "
        "CG** | mfzoo exact | implicit Cholesky | **ratio exact** |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    worst = {"cg": (0.0, ""), "exact": (0.0, "")}
    notes = []
    for shape in args.shapes.split(","):
        start = time.perf_counter()
        data = shape_data(shape, args.seed)
        data.csr("user"), data.csr("item")
        user_items = data.to_scipy("user").astype(np.float32)
        notes.append(shape_note(shape, data, time.perf_counter() - start))
        for k in factors:
            n = args.iterations
            # run within this iteration; the loop variables are bound as defaults all the same
            runs = {
                "cg": lambda data=data, n=n, k=k: mfzoo_iterations(data, "cg", n, args.seed, k),
                "cg_torch": lambda data=data, n=n, k=k: mfzoo_iterations(
                    data, "cg", n, args.seed, k, native=False
                ),
                "implicit_cg": lambda user_items=user_items, n=n, k=k: implicit_iterations(
                    user_items, True, n, args.seed, k
                ),
            }
            if k <= args.exact_max:
                runs["exact"] = lambda data=data, n=n, k=k: mfzoo_iterations(
                    data, "exact", n, args.seed, k
                )
                runs["implicit_cholesky"] = lambda user_items=user_items, n=n, k=k: (
                    implicit_iterations(user_items, False, n, args.seed, k)
                )
            med = interleaved_medians(runs, args.repeats)
            ratio_cg = med["cg"] / med["implicit_cg"]
            worst["cg"] = max(worst["cg"], (ratio_cg, f"{shape}, k={k}"))
            cells = [
                f"{med['cg']:.2f}",
                f"{med['cg_torch']:.2f}",
                f"{med['implicit_cg']:.2f}",
                f"**{ratio_cg:.2f}**",
            ]
            if "exact" in med:
                ratio_exact = med["exact"] / med["implicit_cholesky"]
                worst["exact"] = max(worst["exact"], (ratio_exact, f"{shape}, k={k}"))
                cells += [
                    f"{med['exact']:.2f}",
                    f"{med['implicit_cholesky']:.2f}",
                    f"**{ratio_exact:.2f}**",
                ]
            else:
                cells += ["-", "-", "-"]
            lines.append(f"| {shape} | {k} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines += [
        "",
        f"Worst cell: CG {worst['cg'][0]:.2f} ({worst['cg'][1]}), exact {worst['exact'][0]:.2f} "
        f"({worst['exact'][1]}). {kernel_note()} Peak resident memory {peak:.2f} GiB.",
        "",
        *notes,
        "",
    ]
    print("\n".join(lines[-len(notes) - 3 :]), flush=True)
    return lines


def implicit_version() -> str:
    import implicit

    return implicit.__version__


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="also run the 10M-interaction speed part"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--iterations", type=int, default=3, help="iterations per timed fit (--synthetic)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--grid",
        action="store_true",
        help="only the speed grid: --shapes x --factors (about half an hour on 2 cores)",
    )
    parser.add_argument("--shapes", default="A,B", help="synthetic shapes of the grid (SHAPES)")
    parser.add_argument("--factors", default="32,64,128,256", help="factor counts of the grid")
    parser.add_argument(
        "--exact-max",
        type=int,
        default=128,
        help="largest factor count of the exact/Cholesky column",
    )
    args = parser.parse_args()
    quiet()
    if args.grid:
        emit(grid(args), args.out)
        return
    lines = quality(args)
    if args.synthetic:
        lines += speed(args)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
