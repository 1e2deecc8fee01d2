"""iALS benchmark: mfzoo's closed-form solver against implicit's ALS, in one process.

Part 1, quality: MovieLens-100K with every rating a positive (binary), per-user random 80/20
(`UserRandomSplit(test=0.2)`, the split of `bench_implicit.py`); mfzoo iALS (exact and CG)
and implicit's `AlternatingLeastSquares` (Cholesky and CG) with matching hyperparameters (64
factors, the same λ, 15 iterations, and the same confidence on binary data: implicit >= 0.6
multiplies the data by its `alpha`, c = α, which is mfzoo's c = 1 + (α − 1)·r at r = 1), both
scored by mfzoo's evaluator from their factors: NDCG@10, Recall@10.

Part 2, speed (`--synthetic`): 200k users x 50k items x 10M interactions, 64 factors, seconds
per iteration (one full sweep) of mfzoo iALS exact and CG (3 steps) and implicit's Cholesky
and CG solvers, median of `--repeats` interleaved one-iteration fits, with ratios.

    python scripts/bench_als.py [--synthetic] [--repeats 3] [--out FILE]

Needs the `[bench]` extra (implicit).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _bench import emit, quiet

from mfzoo.data.interactions import Interactions
from mfzoo.data.sources import movielens, synthetic
from mfzoo.data.splits import UserRandomSplit
from mfzoo.evaluation.ranking import evaluate_ranking, factor_scores
from mfzoo.models.mf import MF
from mfzoo.solvers.solver import ALSSolver

FACTORS, L2, ALPHA = 64, 0.1, 10.0


def ones(data: Interactions) -> Interactions:
    """The same pairs with value 1: binary implicit feedback."""
    return Interactions(data.users, data.items, torch.ones_like(data.values), data.timestamps, data.user_ids,
                        data.item_ids, data.name)


def mfzoo_ials(train: Interactions, method: str, iterations: int, seed: int) -> tuple[float, tuple]:
    torch.manual_seed(seed)
    model = MF(train.n_users, train.n_items, dim=FACTORS, biases=False, init_std=0.01)
    solver = ALSSolver(l2=L2, implicit=True, alpha=ALPHA - 1.0, method=method, cg_steps=3)
    start = time.perf_counter()
    for _ in range(iterations):
        solver.sweep(model, train)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        return seconds / iterations, (model.user_factors(), model.item_factors())


def implicit_als(train: Interactions, use_cg: bool, iterations: int, seed: int) -> tuple[float, tuple]:
    from implicit.cpu.als import AlternatingLeastSquares

    user_items = train.to_scipy("user").astype(np.float32)
    model = AlternatingLeastSquares(factors=FACTORS, regularization=L2, alpha=ALPHA, iterations=iterations,
                                    use_cg=use_cg, random_state=seed)
    start = time.perf_counter()
    model.fit(user_items, show_progress=False)
    seconds = time.perf_counter() - start
    return seconds / iterations, (torch.from_numpy(np.asarray(model.user_factors)), torch.from_numpy(np.asarray(model.item_factors)))


def quality(args) -> list[str]:
    data = ones(movielens("100k"))
    split = UserRandomSplit(test=0.2, seed=args.seed)(data)
    runs = {
        "mfzoo iALS, exact": lambda: mfzoo_ials(split.train, "exact", 15, args.seed),
        "mfzoo iALS, CG (3 steps)": lambda: mfzoo_ials(split.train, "cg", 15, args.seed),
        "implicit ALS, Cholesky": lambda: implicit_als(split.train, False, 15, args.seed),
        "implicit ALS, CG": lambda: implicit_als(split.train, True, 15, args.seed),
    }
    lines = [f"**ML-100K, binary, per-user random 80/20** ({FACTORS} factors, λ={L2}, confidence {ALPHA:g} on "
             "observed pairs, 15 iterations; ranked by mfzoo's evaluator over all items)", "",
             "| model | NDCG@10 | Recall@10 | coverage@10 | seconds / iteration |", "|---|---|---|---|---|"]
    for name, run in runs.items():
        seconds, (U, V) = run()
        r = evaluate_ranking(factor_scores(U, V), split.train, split.test, ks=(10,))
        lines.append(f"| {name} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | {r['coverage@10']:.4f} | {seconds:.3f} |")
    print("\n".join(lines), flush=True)
    return lines + [""]


def speed(args) -> list[str]:
    data = synthetic(n_users=200_000, n_items=50_000, n_interactions=10_000_000, implicit=True, seed=args.seed)
    data = ones(data)
    runs = {
        "mfzoo iALS, exact": lambda: mfzoo_ials(data, "exact", 1, args.seed)[0],
        "implicit ALS, Cholesky": lambda: implicit_als(data, False, 1, args.seed)[0],
        "mfzoo iALS, CG (3 steps)": lambda: mfzoo_ials(data, "cg", 1, args.seed)[0],
        "implicit ALS, CG": lambda: implicit_als(data, True, 1, args.seed)[0],
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(run())
    med = {k: statistics.median(v) for k, v in times.items()}
    names = list(runs)
    lines = [f"**Synthetic** ({data.n_users} users x {data.n_items} items x {len(data)} interactions, "
             f"{FACTORS} factors; median of {args.repeats} one-iteration fits, interleaved; "
             f"{torch.get_num_threads()} threads)", "", "| | seconds per iteration | all runs |", "|---|---|---|"]
    lines += [f"| {k} | {med[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |" for k, v in times.items()]
    lines += [f"| ratio mfzoo / implicit, exact vs Cholesky | {med[names[0]] / med[names[1]]:.2f} | |",
              f"| ratio mfzoo / implicit, CG vs CG | {med[names[2]] / med[names[3]]:.2f} | |", ""]
    print("\n".join(lines), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", action="store_true", help="also run the 10M-interaction speed part")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    quiet()
    lines = quality(args)
    if args.synthetic:
        lines += speed(args)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
