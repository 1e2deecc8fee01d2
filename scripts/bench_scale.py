"""Scaling of iALS over processes: sharded iALS-CG (`mfzoo.solvers.distributed.ShardedALS`) with
1 rank x 1 thread, 2 ranks x 1 thread each (gloo, one machine), and 1 rank x 2 threads (the
single-process default on a 2-core machine).

Data: `synthetic(n_users, n_items, n_interactions, implicit=True, seed=0)` (default 200k users x
50k items x 10M interactions, power-law users and items). Model: k = 64 factors, IALSSolver(l2
0.1, alpha 9, CG 3 steps). Every configuration starts from the same factors and runs
`--sweeps` sweeps; each sweep is timed on rank 0 between two barriers (the ranks wait for each
other in the all-gathers anyway), and the median over sweeps is reported with the throughput
relative to 1 rank x 1 thread. Peak resident memory is per process (ru_maxrss of the rank,
data generation included). The factors of the 2-rank run are compared with the 1-rank run's
(max abs difference relative to the largest entry; float32, where YᵀY and the CG steps round
differently per rank count; tests/test_distributed.py checks equality to 1e-5 in float64).

    python scripts/bench_scale.py [--interactions 10000000] [--sweeps 3] \\
        [--out experiments/scale/README.md]
    python scripts/bench_scale.py --memory 10000000 100000000   # peak memory per path and size
    python scripts/bench_scale.py --grid --out experiments/scale/grid.md   # shapes x factor counts
    python scripts/bench_scale.py --step-time 100000000   # gradient steps: dense Adam vs SparseAdam

About 3 minutes on 2 cores at 10M interactions. `--grid` runs every configuration (1 x 1,
2 x 1 with the all-gather exchange, 2 x 1 blockwise, 1 x 2) on two shapes of 10M interactions,
A: 200k users x 50k items (user exponent 1.2, item 1.0) and B: 150k users x 75k items (user
exponent 0.8, item 1.3: flatter users, a heavier item head), with k = 32, 64 and 128; each
shape is generated once and read by every rank; every configuration runs twice, interleaved,
one untimed sweep and then the timed ones each time (about 25 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mfzoo.data.interactions import Interactions
from mfzoo.data.sources import synthetic
from mfzoo.solvers.distributed import ShardedALS
from mfzoo.solvers.solver import IALSSolver

K = 64
SHAPES = {  # name: (users, items, user exponent, item exponent)
    "A": (200_000, 50_000, 1.2, 1.0),
    "B": (150_000, 75_000, 0.8, 1.3),
}


def _data(args: dict) -> Interactions:
    """The benchmark's synthetic set: read from `args["data"]` when the grid saved it, else
    generated."""
    if args.get("data"):
        saved = torch.load(args["data"], weights_only=True)
        return Interactions(
            saved["users"],
            saved["items"],
            saved["values"],
            None,
            saved["user_ids"].numpy(),
            saved["item_ids"].numpy(),
            name="synthetic",
        )
    return synthetic(
        n_users=args["users"],
        n_items=args["items"],
        n_interactions=args["interactions"],
        user_alpha=args.get("user_alpha", 1.2),
        item_alpha=args.get("item_alpha", 1.0),
        implicit=True,
        seed=0,
    )


def _rank(rank: int, world: int, threads: int, init: str, args: dict, out: str) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        train = _data(args)
        k = args.get("k", K)
        g = torch.Generator().manual_seed(0)
        users = 0.01 * torch.randn(train.n_users, k, generator=g)
        items = 0.01 * torch.randn(train.n_items, k, generator=g)
        part = ShardedALS.of(
            IALSSolver(l2=0.1, alpha=9.0, method="cg", cg_steps=3),
            train,
            users,
            items,
            exchange=args.get("exchange", "gather"),
        )
        nnz = part.R_users._nnz()
        del train, users, items
        seconds = []
        for _ in range(args.get("warmup", 0)):  # untimed: first-sweep costs (caches, block plans)
            part.sweep()
        for _ in range(args["sweeps"]):
            dist.barrier()
            start = time.perf_counter()
            part.sweep()
            dist.barrier()
            seconds.append(time.perf_counter() - start)
        X, Y = part.factors()
        # GiB (ru_maxrss in KiB)
        peak = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20])
        peaks = [torch.zeros(1) for _ in range(world)]
        dist.all_gather(peaks, peak)
        if rank == 0:
            torch.save(
                {
                    "seconds": seconds,
                    "peak_gib": [float(p) for p in peaks],
                    "users": X,
                    "items": Y,
                    "local_nnz": nnz,
                },
                out,
            )
    finally:
        dist.destroy_process_group()


def run(world: int, threads: int, args: dict, tmp: Path) -> dict:
    tag = (
        f"w{world}t{threads}{args.get('exchange', '')}{args.get('k', '')}"
        f"{Path(args.get('data') or '').stem}"
        f"r{args.get('repeat', 0)}"
    )
    out = tmp / f"{tag}.pt"
    mp.spawn(
        _rank,
        args=(world, threads, f"file://{tmp / f'rdv-{tag}'}", args, str(out)),
        nprocs=world,
        join=True,
    )
    return torch.load(out, weights_only=True)


def grid(sweeps: int, ks: list[int], repeats: int = 2) -> str:
    """The `--grid` table: every configuration on shapes A and B and factor counts `ks`, each
    run `repeats` times interleaved (one untimed sweep, then `sweeps` timed ones per run), the
    median over all timed sweeps of a configuration."""
    head = (
        "| shape | k | 1 x 1 s/sweep | 2 x 1 (gather) | 2 x 1 (blockwise) | 1 x 2 | 2 x 1 speed-up "
        "(gather / blockwise) | 1 x 2 speed-up | peak RSS per rank, 1 x 1 / 2 x 1 gather / "
        "blockwise (GiB) | max rel. factor diff, 2 x 1 |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    configs = (
        ("1x1", 1, 1, "gather"),
        ("2x1g", 2, 1, "gather"),
        ("2x1b", 2, 1, "blockwise"),
        ("1x2", 1, 2, "gather"),
    )
    with tempfile.TemporaryDirectory() as tmp:
        for shape, (n_users, n_items, user_alpha, item_alpha) in SHAPES.items():
            train = synthetic(
                n_users=n_users,
                n_items=n_items,
                n_interactions=10_000_000,
                user_alpha=user_alpha,
                item_alpha=item_alpha,
                implicit=True,
                seed=0,
            )
            data = Path(tmp) / f"shape{shape}.pt"
            torch.save(
                {
                    "users": train.users,
                    "items": train.items,
                    "values": train.values,
                    "user_ids": torch.from_numpy(train.user_ids),
                    "item_ids": torch.from_numpy(train.item_ids),
                },
                data,
            )
            del train
            for k in ks:
                r = {}
                # interleaved: a slow spell of the machine hits every configuration
                for repeat in range(repeats):
                    for name, world, threads, exchange in configs:
                        got = run(
                            world,
                            threads,
                            {
                                "data": str(data),
                                "sweeps": sweeps,
                                "k": k,
                                "exchange": exchange,
                                "warmup": 1,
                                "repeat": repeat,
                            },
                            Path(tmp),
                        )
                        if name in r:
                            got["seconds"] = r[name]["seconds"] + got["seconds"]
                            got["peak_gib"] = [
                                max(a, b)
                                for a, b in zip(r[name]["peak_gib"], got["peak_gib"], strict=True)
                            ]
                        r[name] = got
                med = {name: statistics.median(x["seconds"]) for name, x in r.items()}
                diff = max(
                    float((r[c][s] - r["1x1"][s]).abs().max() / r["1x1"][s].abs().max())
                    for c in ("2x1g", "2x1b")
                    for s in ("users", "items")
                )
                peaks = " / ".join(f"{max(r[c]['peak_gib']):.2f}" for c in ("1x1", "2x1g", "2x1b"))
                rows.append(
                    f"| {shape} | {k} | {med['1x1']:.2f} | {med['2x1g']:.2f} | {med['2x1b']:.2f} | "
                    f"{med['1x2']:.2f} | {med['1x1'] / med['2x1g']:.2f}x / "
                    f"{med['1x1'] / med['2x1b']:.2f}x | {med['1x1'] / med['1x2']:.2f}x | {peaks} | "
                    f"{diff:.1e} |"
                )
                print(rows[-1], flush=True)
    return head + "\n".join(rows) + "\n"


def _memory_job(_: int, n: int, path: str, out: str) -> None:
    """One fresh process: `path` ("ials": one iALS-CG sweep, k = 64; "gradient": one epoch of
    MF + BPR, Adam, batch 65536, one uniform negative; "gradient_sparse": the same with sparse
    tables and SparseAdam, each step touching only the batch's rows) on n synthetic interactions
    (users n/50, items n/200); saves the seconds and the process's peak RSS."""
    from mfzoo.data.loader import BatchLoader
    from mfzoo.data.sampling import UniformSampler
    from mfzoo.losses import BPRLoss
    from mfzoo.models.mf import MF

    torch.set_num_threads(2)
    train = synthetic(n_users=n // 50, n_items=n // 200, n_interactions=n, implicit=True, seed=0)
    torch.manual_seed(0)
    model = MF(
        train.n_users,
        train.n_items,
        dim=K,
        biases=False,
        init_std=0.01,
        sparse=path == "gradient_sparse",
    )
    start = time.perf_counter()
    if path == "ials":
        IALSSolver(l2=0.1, alpha=9.0, method="cg", cg_steps=3).sweep(model, train)
    else:
        optimizer_class = torch.optim.SparseAdam if path == "gradient_sparse" else torch.optim.Adam
        loss, optimizer = BPRLoss(l2=0.0), optimizer_class(list(model.parameters()), lr=0.01)
        for batch in BatchLoader(train, 65536, shuffle=True, sampler=UniformSampler(train, 1)):
            optimizer.zero_grad(set_to_none=True)
            loss(model(batch), batch).backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    torch.save({"seconds": seconds, "peak_gib": peak, "n": len(train)}, out)


def step_times(n: int, steps: int = 8) -> str:
    """The `--step-time` table: seconds per MF + BPR step (batch 65536, one negative, k = 64) with
    the tables of n interactions (users n/50, items n/200), dense Adam against sparse tables and
    SparseAdam; random batches (no data set is built), median over the steps after 2 warm-up
    ones, and the epoch it implies (n / 65536 steps)."""
    from mfzoo.data.batch import Batch
    from mfzoo.losses import BPRLoss
    from mfzoo.models.mf import MF

    torch.set_num_threads(2)
    n_users, n_items, size = n // 50, n // 200, 65536
    lines = ["| optimizer | s / step (median) | implied epoch (min) |", "|---|---|---|"]
    for sparse in (False, True):
        torch.manual_seed(0)
        model = MF(n_users, n_items, dim=K, biases=False, init_std=0.01, sparse=sparse)
        optimizer = (torch.optim.SparseAdam if sparse else torch.optim.Adam)(
            list(model.parameters()), lr=0.01
        )
        loss, seconds = BPRLoss(l2=0.0), []
        for _ in range(steps + 2):
            batch = Batch(
                torch.randint(n_users, (size,)), torch.randint(n_items, (size, 2)), torch.ones(size)
            )
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss(model(batch), batch).backward()
            optimizer.step()
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds[2:])
        lines.append(
            f"| {'SparseAdam, sparse tables' if sparse else 'Adam, dense tables'} | {median:.3f} | "
            f"{median * (n // size) / 60:.1f} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def memory(sizes: list[int], paths: list[str] = ("ials", "gradient", "gradient_sparse")) -> str:
    """The `--memory` table: peak RSS per path and size, each in a fresh process."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            for n in sizes:
                out = str(Path(tmp) / f"{path}{n}.pt")
                mp.spawn(_memory_job, args=(n, path, out), nprocs=1, join=True)
                r = torch.load(out, weights_only=True)
                rows.append(
                    f"| {path} | {r['n']:,} | {r['seconds']:.1f} | {r['peak_gib']:.2f} | "
                    f"{r['peak_gib'] * 2**30 / r['n']:.0f} |"
                )
                print(rows[-1], flush=True)
    return (
        "| path | interactions | seconds (one sweep / epoch) | peak RSS (GiB) | bytes per "
        "interaction |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the table (markdown) here")
    parser.add_argument(
        "--memory",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="instead: peak memory of one iALS sweep and one gradient epoch at these sizes",
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        default=["ials", "gradient", "gradient_sparse"],
        choices=["ials", "gradient", "gradient_sparse"],
        help="--memory: which paths",
    )
    parser.add_argument(
        "--step-time",
        type=int,
        default=None,
        metavar="N",
        help=(
            "instead: seconds per MF + BPR step, dense Adam vs SparseAdam, at the table sizes of N"
        ),
    )
    parser.add_argument(
        "--grid", action="store_true", help="instead: shapes A and B x factor counts --ks"
    )
    parser.add_argument("--ks", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument(
        "--repeats", type=int, default=2, help="--grid: interleaved runs of each configuration"
    )
    a = parser.parse_args()
    if a.grid:
        table = grid(a.sweeps, a.ks, a.repeats)
        facts = (
            "10,000,000 interactions per shape (A: 200k x 50k, exponents 1.2 / 1.0; B: 150k x 75k, "
            f"0.8 / 1.3), iALS-CG 3 steps; each configuration run {a.repeats} times, interleaved "
            f"with the others, each run one untimed sweep and {a.sweeps} timed ones, the median "
            f"over the {a.repeats * a.sweeps} timed sweeps; {os.cpu_count()} CPUs, torch "
            f"{torch.__version__}, Python {platform.python_version()}"
        )
        print(table + facts)
        if a.out is not None:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(f"Command: `{' '.join(['python', *sys.argv])}`\n\n{table}\n{facts}.\n")
        return
    if a.memory:
        print(memory(a.memory, a.paths))
        return
    if a.step_time:
        print(step_times(a.step_time))
        return
    args = {"users": a.users, "items": a.items, "interactions": a.interactions, "sweeps": a.sweeps}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for world, threads in ((1, 1), (2, 1), (1, 2)):
            results[world, threads] = r = run(world, threads, args, Path(tmp))
            print(
                f"{world} rank(s) x {threads} thread(s): sweeps "
                f"{[round(s, 2) for s in r['seconds']]} s, "
                f"peak {max(r['peak_gib']):.2f} GiB per rank",
                flush=True,
            )
    base = statistics.median(results[1, 1]["seconds"])
    diff = max(
        float((results[2, 1][s] - results[1, 1][s]).abs().max() / results[1, 1][s].abs().max())
        for s in ("users", "items")
    )
    head = (
        "| ranks x threads | s / sweep (median) | throughput vs 1 x 1 | peak RSS per rank (GiB) |\n"
        "|---|---|---|---|\n"
    )
    for (world, threads), r in results.items():
        median = statistics.median(r["seconds"])
        rows.append(
            f"| {world} x {threads} | {median:.2f} | {base / median:.2f}x | "
            f"{' / '.join(f'{p:.2f}' for p in r['peak_gib'])} |"
        )
    text = head + "\n".join(rows) + "\n"
    facts = (
        f"{a.users} users x {a.items} items x {a.interactions} interactions, k = {K}, iALS-CG 3 "
        f"steps, {a.sweeps} sweeps each; 2-rank factors vs 1-rank: max abs difference {diff:.1e} "
        f"of the largest factor entry (float32); {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )
    print(text + facts)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(
            README.format(table=text, facts=facts, command=" ".join(["python", *sys.argv]))
        )
    print(
        json.dumps({f"{w}x{t}": statistics.median(r["seconds"]) for (w, t), r in results.items()})
    )


README = """# Scaling iALS over processes

**Question.** The per-row solves of ALS are independent, so sharding users and items over
processes should scale. On a 2-core machine, how does sharded iALS-CG with 2 ranks of one
thread compare with one rank of one thread, and with the single-process default of one rank
using both cores? Are the factors the same?

**Protocol.** `scripts/bench_scale.py` (see its docstring): `mfzoo.solvers.distributed.ShardedALS`
over gloo on one machine, every configuration from the same start, each sweep timed on rank 0
between barriers, median over the sweeps.

**Command.** `{command}`

**Results.**

{table}
{facts}.
"""


if __name__ == "__main__":
    main()
