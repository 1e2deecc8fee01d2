"""Implicit-feedback benchmark: mfzoo's sampled losses against implicit's BPR, in one process.

Part 1, quality (MovieLens-100K, every rating a positive): the same split for every model,
per-user random 80/20 (`UserRandomSplit(test=0.2)`) and per-user last-5 by time
(`LeaveLastOut(n=5)`). mfzoo MF with BPR, BCE and sampled softmax (the
`experiment=ml100k_implicit_*` configs, no val part, fixed epochs), most-popular and random
baselines, and implicit's `BayesianPersonalizedRanking` (CPU, 64 factors, its default
learning rate and regularisation, 100 iterations). All models' rankings are scored by mfzoo's
evaluator from their factors: NDCG@10, Recall@10, coverage, popularity. Epoch seconds = fit
seconds / epochs (mfzoo: `Trainer.fit`; implicit: `fit`).

Part 2, speed (`--synthetic`): a seeded synthetic set of 200k users x 50k items x 10M
interactions; seconds per BPR epoch (64 factors, one negative per positive) of mfzoo's fused
LearnBPR (`mfzoo.solvers.bpr`: one reproducible stream, and as many Hogwild streams as torch
has threads, as implicit runs; each eager and with `compile=True`, whose first epoch, compiling
included, is reported apart) and implicit's BPR (its fit callback's epoch seconds, set-up
excluded; BLAS at one thread, as implicit advises), without and with rejection of seen
negatives (implicit's `verify_negative_samples`), median over `--repeats` one-epoch fits,
interleaved; one epoch of mfzoo's gradient path (Lightning + Adam, `experiment=bench_bpr`)
for reference; then mfzoo's full-catalogue evaluation of all 200k users at K=10 (seconds,
users per second, peak memory).

    python scripts/bench_implicit.py [--synthetic] [--repeats 3] [--out FILE]

Part 3, the grid (`--grid`, alone): the quality of LearnBPR's paths on ML-100K (the C kernel,
the default, against the batched torch path, 3 seeds), then every cell of the synthetic shapes
A and B (`bench_als.SHAPES`) x factors 32, 64, 128, 256: mfzoo's default `BPRSolver()` against
implicit's BPR, without and with rejection of seen negatives, and `deterministic=True`'s cost.

    python scripts/bench_implicit.py --grid --repeats 2 --iterations 2 \
--out experiments/ml100k_implicit/grid.md

Needs the `[bench]` extra (implicit).

Part 1 compares fixed settings; the comparison with every model tuned on validation under one
budget is `scripts/tune_implicit.py` (experiments/tuned_implicit).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from _bench import emit, interleaved_medians, kernel_note, quiet, sweep_seconds
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mfzoo.cli import CONFIG_DIR
from mfzoo.data.interactions import Interactions
from mfzoo.data.sampling import UniformSampler
from mfzoo.data.sources import movielens, synthetic
from mfzoo.data.splits import LeaveLastOut, Split, UserRandomSplit
from mfzoo.evaluation.beyond import popularity_scores, random_scores
from mfzoo.evaluation.ranking import evaluate_ranking
from mfzoo.models.mf import MF
from mfzoo.retrieval.topk import factor_scores
from mfzoo.solvers.bpr import bpr_epoch
from mfzoo.training.run import build

SHOWN = [
    "ndcg@10",
    "recall@10",
    "precision@10",
    "hitrate@10",
    "coverage@10",
    "arp@10",
    "gini@10",
    "long_tail@10",
]
Factors = tuple[torch.Tensor, torch.Tensor]


def mfzoo_bpr_family(
    experiment: str, overrides: list[str], seed: int
) -> Callable[[Interactions, int | None], tuple[float, int, Factors]]:
    """Fit function for an mfzoo implicit experiment config: (train, epochs) -> (fit s, epochs,
    factors)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"experiment={experiment}",
                "logger=none",
                "callbacks=none",
                "ranking=null",
                "data.split.val=0",
                *overrides,
            ],
        )

    def fit(train: Interactions, epochs: int | None = None) -> tuple[float, int, Factors]:
        L.seed_everything(seed, verbose=False)
        split = Split(train=train, val=None, test=train)  # the test part is never used here
        datamodule = instantiate(cfg.data)  # the configured sampler, batch size, ...
        datamodule.source, datamodule.split_fn = train, (lambda _: split)  # ... on these rows
        datamodule, module = build(cfg, datamodule)
        trainer = instantiate(
            cfg.trainer,
            logger=False,
            callbacks=[],
            enable_checkpointing=False,
            limit_val_batches=0,
            **({"max_epochs": epochs} if epochs else {}),
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            return (
                seconds,
                trainer.current_epoch,
                (module.model.user_factors().detach(), module.model.item_factors().detach()),
            )

    fit.cfg = cfg  # type: ignore[attr-defined]
    return fit


def implicit_bpr(
    train: Interactions, iterations: int, seed: int, factors: int = 64
) -> tuple[float, int, Factors]:
    """implicit's CPU BPR on the same pairs: (fit s, iterations, factors with its item bias)."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    user_items = train.to_scipy("user").astype(np.float32)
    user_items.data[:] = 1.0
    model = BayesianPersonalizedRanking(factors=factors, iterations=iterations, random_state=seed)
    start = time.perf_counter()
    model.fit(user_items, show_progress=False)
    seconds = time.perf_counter() - start
    return (
        seconds,
        iterations,
        (
            torch.from_numpy(np.asarray(model.user_factors)),
            torch.from_numpy(np.asarray(model.item_factors)),
        ),
    )


def quality(args) -> list[str]:
    data = movielens("100k")
    splits = {
        "per-user random 80/20": UserRandomSplit(test=0.2, seed=args.seed)(data),
        "per-user last 5 by time": LeaveLastOut(n=5)(data),
    }
    fits = {
        f"mfzoo MF + {loss}": mfzoo_bpr_family(f"ml100k_implicit_{loss}", [], args.seed)
        for loss in ("bpr", "bce", "softmax")
    }
    lines = []
    for split_name, split in splits.items():
        rows: dict[str, dict[str, float]] = {}
        for name, fit in fits.items():
            seconds, epochs, (U, V) = fit(split.train)
            rows[name] = {
                **evaluate_ranking(factor_scores(U, V), split.train, split.test, ks=(10,)),
                "epoch_s": seconds / epochs,
            }
        seconds, (U, V) = learn_bpr(
            split.train, True, args.seed, epochs=100, lr=0.02, l2=0.01, batch_size=256
        )
        rows["mfzoo LearnBPR"] = {
            **evaluate_ranking(factor_scores(U, V), split.train, split.test, ks=(10,)),
            "epoch_s": seconds / 100,
        }
        seconds, epochs, (U, V) = implicit_bpr(split.train, args.implicit_iterations, args.seed)
        rows["implicit BPR"] = {
            **evaluate_ranking(factor_scores(U, V), split.train, split.test, ks=(10,)),
            "epoch_s": seconds / epochs,
        }
        rows["most popular"] = evaluate_ranking(
            popularity_scores(split.train), split.train, split.test, ks=(10,)
        )
        rows["random"] = evaluate_ranking(
            random_scores(data.n_items, args.seed), split.train, split.test, ks=(10,)
        )
        lines += [
            (
                f"**{split_name}** (train {len(split.train)}, test {len(split.test)} pairs, "
                f"{int(rows['random']['n_users_evaluated'])} users evaluated)"
            ),
            "",
            "| model | " + " | ".join(SHOWN) + " | epoch s |",
            "|---|" + "---|" * (len(SHOWN) + 1),
        ]
        for name, r in rows.items():
            epoch = f"{r['epoch_s']:.3f}" if "epoch_s" in r else "-"
            lines.append(
                f"| {name} | " + " | ".join(f"{r[m]:.4f}" for m in SHOWN) + f" | {epoch} |"
            )
        lines.append("")
        print("\n".join(lines[-len(rows) - 4 :]), flush=True)
    cfgs = [
        f"- {name}: "
        + f"dim={f.cfg.model.dim}, loss={dict(f.cfg.loss)}, sampler={dict(f.cfg.data.sampler)}, "
        f"lr={f.cfg.optim.lr}, epochs={f.cfg.trainer.max_epochs}, batch={f.cfg.data.batch_size}"
        for name, f in fits.items()
    ]
    return (
        lines
        + cfgs
        + [
            (
                "- mfzoo LearnBPR (`mfzoo.solvers.bpr`): dim=64, no biases, lr=0.02, l2=0.01, "
                "batch 256, 100 epochs, uniform negatives rejecting seen items"
            ),
            (
                "- implicit BPR: factors=64, its defaults otherwise (lr 0.01, regularization "
                f"0.01), iterations={args.implicit_iterations}"
            ),
            "",
        ]
    )


def learn_bpr(
    data: Interactions,
    reject_seen: bool,
    seed: int,
    epochs: int = 1,
    lr: float = 0.05,
    l2: float = 0.0025,
    batch_size: int = 16384,
    threads: int | None = 1,
    compile: bool = False,
) -> tuple[float, Factors]:
    """Epochs of mfzoo's fused LearnBPR (`mfzoo.solvers.bpr`), 64 factors: (seconds, factors)."""
    torch.manual_seed(seed)
    model = MF(data.n_users, data.n_items, dim=64, biases=False, init_std=0.01)
    sampler = UniformSampler(data, n_negatives=1, reject_seen=reject_seen)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        bpr_epoch(
            model,
            data,
            sampler,
            lr=lr,
            l2=l2,
            batch_size=batch_size,
            generator=generator,
            threads=threads,
            compile=compile,
        )
    seconds = time.perf_counter() - start
    with torch.no_grad():
        return seconds, (model.user_factors(), model.item_factors())


def implicit_epoch(user_items, verify: bool, seed: int) -> float:
    """Seconds of one implicit BPR epoch, from its fit callback (set-up excluded)."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits  # [bench] extra

    model = BayesianPersonalizedRanking(
        factors=64, iterations=1, random_state=seed, verify_negative_samples=verify
    )
    seconds: list[float] = []
    with threadpool_limits(1, "blas"):  # implicit's own advice for its CPU models
        model.fit(
            user_items,
            show_progress=False,
            callback=lambda iteration, elapsed, *_: seconds.append(elapsed),
        )
    return seconds[0]


def speed(args) -> list[str]:
    start = time.perf_counter()
    data = synthetic(
        n_users=200_000, n_items=50_000, n_interactions=10_000_000, implicit=True, seed=args.seed
    )
    made = time.perf_counter() - start
    user_items = data.to_scipy("user").astype(np.float32)
    streams = torch.get_num_threads()
    compile_s = {}  # first epoch, compiling included: once per process, table shape and batch size
    for threads, name in ((1, "one stream"), (None, f"{streams} Hogwild streams")):
        compile_s[name] = learn_bpr(data, False, args.seed, threads=threads, compile=True)[0]
    hog = f"{streams} Hogwild streams"
    runs = {
        "mfzoo LearnBPR, one stream (reproducible), no rejection": lambda: learn_bpr(
            data, False, args.seed
        )[0],
        "mfzoo LearnBPR, one stream (reproducible), compiled, no rejection": lambda: learn_bpr(
            data, False, args.seed, compile=True
        )[0],
        f"mfzoo LearnBPR, {hog}, no rejection": lambda: learn_bpr(
            data, False, args.seed, threads=None
        )[0],
        f"mfzoo LearnBPR, {hog}, compiled, no rejection": lambda: learn_bpr(
            data, False, args.seed, threads=None, compile=True
        )[0],
        "implicit BPR, verify_negative_samples=False": lambda: implicit_epoch(
            user_items, False, args.seed
        ),
        f"mfzoo LearnBPR, {hog}, rejecting seen negatives": lambda: learn_bpr(
            data, True, args.seed, threads=None
        )[0],
        f"mfzoo LearnBPR, {hog}, compiled, rejecting seen negatives": lambda: learn_bpr(
            data, True, args.seed, threads=None, compile=True
        )[0],
        "implicit BPR, verify_negative_samples=True": lambda: implicit_epoch(
            user_items, True, args.seed
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved one-epoch fits
        for name, run in runs.items():
            times[name].append(run())
    med = {k: statistics.median(v) for k, v in times.items()}
    gradient_s, _, _ = mfzoo_bpr_family("bench_bpr", [], args.seed)(data, 1)
    lines = [
        (
            f"**Synthetic BPR epoch** ({data.n_users} users x {data.n_items} items x {len(data)} "
            f"interactions, generated in {made:.1f} s; 64 factors, one negative per positive; "
            f"median of {args.repeats} one-epoch fits, interleaved; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads)"
        ),
        "",
        "| | seconds per epoch | all runs |",
        "|---|---|---|",
    ]
    for k, v in times.items():
        lines.append(f"| {k} | {med[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |")
    names = list(runs)
    plain, verified = med[names[4]], med[names[7]]
    lines += [
        f"| ratio mfzoo (one stream) / implicit, no rejection | {med[names[0]] / plain:.2f} | |",
        "| ratio mfzoo (one stream, compiled) / implicit, no rejection | "
        f"{med[names[1]] / plain:.2f} | |",
        f"| ratio mfzoo (Hogwild) / implicit, no rejection | {med[names[2]] / plain:.2f} | |",
        "| **ratio mfzoo (Hogwild, compiled) / implicit, no rejection** | "
        f"**{med[names[3]] / plain:.2f}** | |",
        f"| ratio mfzoo (Hogwild) / implicit, rejection | {med[names[5]] / verified:.2f} | |",
        "| **ratio mfzoo (Hogwild, compiled) / implicit, rejection** | "
        f"**{med[names[6]] / verified:.2f}** | |",
        "| mfzoo gradient path (Lightning, Adam, `experiment=bench_bpr`, one run) | "
        f"{gradient_s:.2f} | |",
        "",
        "First compiled epoch of the process, compiling included (not in the medians): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items())
        + ".",
        "",
    ]
    # full-catalogue evaluation of every user at K=10: each user's last event held out
    split = LeaveLastOut(n=1)(data)
    _, (U, V) = learn_bpr(split.train, False, args.seed)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result = evaluate_ranking(
        factor_scores(U, V), split.train, split.test, ks=(10,), chunk_size=args.chunk_size
    )
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines += [
        (
            f"**Full-catalogue evaluation**: {int(result['n_users_evaluated'])} users x "
            f"{data.n_items} items, K=10, chunks of {args.chunk_size} users: "
            f"{result['seconds']:.1f} s ({result['n_users_evaluated'] / result['seconds']:.0f} "
            f"users/s); peak RSS of the whole process {rss_after:.2f} GiB (before the evaluation "
            f"{rss_before:.2f} GiB). NDCG@10 after one epoch: {result['ndcg@10']:.4f}."
        ),
        "",
    ]
    print("\n".join(lines), flush=True)
    return lines


def bpr_epochs(
    data: Interactions, sampler: UniformSampler, seed: int, factors: int, epochs: int, **solver
) -> list[float]:
    """Seconds of each epoch of an mfzoo LearnBPR fit through `BPRSolver` (its defaults unless
    `solver` says otherwise: the C kernel, one Hogwild worker per thread). The sampler (with
    rejection: the set of seen pairs) is built beforehand, as implicit's set-up is left out of
    its epoch times."""
    from mfzoo.solvers.bpr import BPRSolver

    return sweep_seconds(
        BPRSolver(lr=0.05, l2=0.0025, sampler=lambda _: sampler, **solver),
        data,
        factors,
        epochs,
        seed,
    )


def implicit_epochs(user_items, verify: bool, seed: int, factors: int, epochs: int) -> list[float]:
    """Seconds of each epoch of an implicit BPR fit, from its fit callback (set-up excluded)."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits  # [bench] extra

    model = BayesianPersonalizedRanking(
        factors=factors, iterations=epochs, random_state=seed, verify_negative_samples=verify
    )
    seconds: list[float] = []
    with threadpool_limits(1, "blas"):
        model.fit(
            user_items,
            show_progress=False,
            callback=lambda iteration, elapsed, *_: seconds.append(elapsed),
        )
    return seconds


def grid_quality(args) -> list[str]:
    """ML-100K, per-user random 80/20: LearnBPR with the settings the torch path's study chose
    (experiments/tuned_implicit/learnbpr.json: 128 factors, lr 0.0444, l2 0.00228, init 0.01,
    27 epochs), by the C kernel (one worker, and one per thread) and by the batched torch path
    (batches of 256), test NDCG@10 over seeds 0-2: whether the new default learns what the old
    path learned."""
    split = UserRandomSplit(test=0.2, seed=0)(movielens("100k"))
    paths = {
        "C kernel, one worker (deterministic)": dict(native=True, threads=1),
        f"C kernel, {torch.get_num_threads()} Hogwild workers (the default)": dict(
            native=True, threads=None
        ),
        "torch path, batches of 256, one stream": dict(native=False, threads=1),
    }
    lines = [
        "**Quality of the paths** (ML-100K, per-user random 80/20, split seed 0; LearnBPR with the "
        "settings the torch path's study chose (128 factors, lr 0.0444, l2 0.00228), 27 epochs, no "
        "val part; test NDCG@10 over training seeds 0, 1, 2)",
        "",
        "| path | NDCG@10 per seed | mean ± sd | seconds per epoch |",
        "|---|---|---|---|",
    ]
    sampler = UniformSampler(split.train, n_negatives=1, reject_seen=True)
    for name, kw in paths.items():
        scores, seconds = [], []
        for seed in range(3):
            torch.manual_seed(seed)
            model = MF(
                split.train.n_users, split.train.n_items, dim=128, biases=False, init_std=0.01
            )
            generator = torch.Generator().manual_seed(seed)
            start = time.perf_counter()
            for _ in range(27):
                bpr_epoch(
                    model,
                    split.train,
                    sampler,
                    lr=0.0444,
                    l2=0.00228,
                    batch_size=256,
                    generator=generator,
                    **kw,
                )
            seconds.append((time.perf_counter() - start) / 27)
            with torch.no_grad():
                U, V = model.user_factors(), model.item_factors()
            scores.append(
                evaluate_ranking(factor_scores(U, V), split.train, split.test, ks=(10,))["ndcg@10"]
            )
        lines.append(
            f"| {name} | {', '.join(f'{x:.4f}' for x in scores)} | {statistics.mean(scores):.4f} ± "
            f"{statistics.stdev(scores):.4f} | {statistics.median(seconds):.3f} |"
        )
    print("\n".join(lines), flush=True)
    return [*lines, ""]


def grid(args) -> list[str]:
    """Every (shape, factors) cell: mfzoo's default LearnBPR (`BPRSolver()`: the C kernel, one
    Hogwild worker per thread) against implicit's BPR, without and with rejection of seen
    negatives, and the deterministic switch's cost (one worker, rejecting); `--repeats`
    interleaved fits of `--iterations` epochs, every epoch timed, median."""
    from bench_als import shape_data, shape_note

    factors = [int(k) for k in args.factors.split(",")]
    n = args.iterations
    lines = [
        (
            f"**LearnBPR seconds per epoch over the grid** (median of {args.repeats} interleaved "
            f"fits x {n} epochs, every epoch timed; {torch.get_num_threads()} threads; implicit "
            "with BLAS at one thread; one negative per positive; ratio = mfzoo / implicit, lower "
            "is faster)"
        ),
        "",
        "| shape | factors | mfzoo default | implicit | **ratio** | mfzoo default, rejecting | "
        "implicit, verify_negative_samples | **ratio, rejecting** | mfzoo deterministic, rejecting "
        "| ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    worst, notes = {"plain": (0.0, ""), "reject": (0.0, "")}, []
    for shape in args.shapes.split(","):
        start = time.perf_counter()
        data = shape_data(shape, args.seed)
        data.csr("user")
        user_items = data.to_scipy("user").astype(np.float32)
        made = time.perf_counter() - start
        start = time.perf_counter()
        plain_sampler, rejecting = (
            UniformSampler(data, 1),
            UniformSampler(data, 1, reject_seen=True),
        )
        notes.append(
            f"{shape_note(shape, data, made)}; mfzoo's samplers (the set of seen pairs) built once "
            f"in {time.perf_counter() - start:.1f} s, outside the epoch times"
        )
        for k in factors:
            # run within this iteration; the loop variables are bound as defaults all the same
            runs = {
                "plain": lambda data=data, sampler=plain_sampler, k=k: bpr_epochs(
                    data, sampler, args.seed, k, n
                ),
                "implicit": lambda user_items=user_items, k=k: implicit_epochs(
                    user_items, False, args.seed, k, n
                ),
                "reject": lambda data=data, sampler=rejecting, k=k: bpr_epochs(
                    data, sampler, args.seed, k, n
                ),
                "implicit_verify": lambda user_items=user_items, k=k: implicit_epochs(
                    user_items, True, args.seed, k, n
                ),
                "deterministic": lambda data=data, sampler=rejecting, k=k: bpr_epochs(
                    data, sampler, args.seed, k, n, deterministic=True
                ),
            }
            med = interleaved_medians(runs, args.repeats)
            plain, reject = med["plain"] / med["implicit"], med["reject"] / med["implicit_verify"]
            worst["plain"] = max(worst["plain"], (plain, f"{shape}, k={k}"))
            worst["reject"] = max(worst["reject"], (reject, f"{shape}, k={k}"))
            lines.append(
                f"| {shape} | {k} | {med['plain']:.2f} | {med['implicit']:.2f} | **{plain:.2f}** | "
                f"{med['reject']:.2f} | {med['implicit_verify']:.2f} | **{reject:.2f}** | "
                f"{med['deterministic']:.2f} | "
                f"{med['deterministic'] / med['implicit_verify']:.2f} |"
            )
            print(lines[-1], flush=True)
    lines += [
        "",
        f"Worst cell: {worst['plain'][0]:.2f} without rejection ({worst['plain'][1]}), "
        f"{worst['reject'][0]:.2f} with it ({worst['reject'][1]}). {kernel_note()}",
        "",
        *notes,
        "",
    ]
    print("\n".join(lines[-len(notes) - 3 :]), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="also run the 10M-interaction speed part"
    )
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--implicit-iterations", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--grid",
        action="store_true",
        help="only the speed grid (--shapes x --factors) and the paths' quality on ML-100K",
    )
    parser.add_argument(
        "--shapes", default="A,B", help="synthetic shapes of the grid (bench_als.SHAPES)"
    )
    parser.add_argument("--factors", default="32,64,128,256", help="factor counts of the grid")
    parser.add_argument("--iterations", type=int, default=2, help="epochs per timed fit (--grid)")
    args = parser.parse_args()
    quiet()
    if args.grid:
        emit(grid_quality(args) + grid(args), args.out)
        return
    lines = [] if args.skip_quality else quality(args)
    if args.synthetic:
        lines += speed(args)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
