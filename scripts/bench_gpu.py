"""GPU benchmark at MovieLens-20M size: synthetic sets of 138k users x 27k items with 10M
interactions (the size of ML-20M's ratings >= 4) and 20M, 128 factors, on one device.

Per set: iALS exact and CG (3 steps) seconds per iteration (`IALSSolver.sweep`, median of
`--sweeps` after one warm-up sweep), LearnBPR seconds per epoch (`BPRSolver.sweep`, batch
65536), MF + BPR on the gradient path seconds per epoch (`BatchLoader` with 1 uniform negative,
batch 65536, Adam), full-catalogue top-10 of every user with its training items excluded
(`iter_topk`, users per second), and the peak device memory of the set
(`torch.cuda.max_memory_allocated`). Every timing is bracketed by `torch.cuda.synchronize`.
implicit's published figure for ML-20M rated >= 4, 128 factors, CG on one A6000 is 0.23 s per
iteration; the CG row of the 10M set is the one to compare with it.

    python scripts/bench_gpu.py [--out experiments/gpu/README.md]
    python scripts/bench_gpu.py --device cpu --scale 0.01      # a smoke test of the code path

Run by `scripts/gpu_check.sh` after the CUDA tests.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from mfzoo.data.loader import BatchLoader
from mfzoo.data.sampling import UniformSampler
from mfzoo.data.sources import synthetic
from mfzoo.losses import BPRLoss
from mfzoo.models.mf import MF
from mfzoo.retrieval.topk import ExclusionRows, factor_scores, iter_topk
from mfzoo.solvers.bpr import BPRSolver
from mfzoo.solvers.solver import IALSSolver

USERS, ITEMS, K, BATCH = 138_000, 27_000, 128, 65_536


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def model(n_users: int, n_items: int, device: torch.device) -> MF:
    torch.manual_seed(0)
    return MF(n_users, n_items, dim=K, biases=False, init_std=0.01).to(device)


def bench(n_interactions: int, scale: float, device: torch.device, sweeps: int) -> dict[str, float]:
    n_users, n_items = max(int(USERS * scale), 100), max(int(ITEMS * scale), 50)
    data = synthetic(
        n_users=n_users,
        n_items=n_items,
        n_interactions=max(int(n_interactions * scale), 1000),
        implicit=True,
        seed=0,
    )
    train = data.to(device)
    train.csr("user"), train.csr("item")  # set-up, once per data set, not timed
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = {"interactions": float(len(train))}
    for method in ("exact", "cg"):
        mf, solver = (
            model(n_users, n_items, device),
            IALSSolver(l2=0.1, alpha=9.0, method=method, cg_steps=3),
        )
        out[f"ials_{method}"] = timed(
            device, lambda solver=solver, mf=mf: solver.sweep(mf, train), sweeps
        )
    mf, bpr = model(n_users, n_items, device), BPRSolver(lr=0.05, batch_size=BATCH)
    out["learnbpr"] = timed(device, lambda: bpr.sweep(mf, train), max(1, sweeps - 1))
    mf = model(n_users, n_items, device)
    loader = BatchLoader(train, BATCH, shuffle=True, sampler=UniformSampler(train, 1))
    loss, optimizer = BPRLoss(l2=0.0), torch.optim.Adam(mf.parameters(), lr=0.01)

    def gradient_epoch() -> None:
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss(mf(batch), batch).backward()
            optimizer.step()

    out["mf_bpr_epoch"] = timed(device, gradient_epoch, max(1, sweeps - 1))
    users = torch.arange(n_users, device=device)
    exclude = ExclusionRows(train)

    def top10() -> None:
        with torch.no_grad():
            score = factor_scores(
                mf.user_embedding.weight.detach(), mf.item_embedding.weight.detach()
            )
            for _ in iter_topk(score, users, 10, exclude, chunk_size=8192):
                pass

    out["topk_users_per_s"] = n_users / timed(device, top10, 1)
    out["peak_gib"] = (
        torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply users, items and interactions"
    )
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "bench_gpu: no CUDA device (use --device cpu --scale 0.01 for a smoke test)"
        )
    started = time.perf_counter()
    rows = []
    for n in (10_000_000, 20_000_000):
        r = bench(n, args.scale, device, args.sweeps)
        rows.append(
            f"| {int(r['interactions']):,} | {r['ials_exact']:.3f} | {r['ials_cg']:.3f} | "
            f"{r['learnbpr']:.3f} | {r['mf_bpr_epoch']:.3f} | {r['topk_users_per_s']:,.0f} | "
            f"{r['peak_gib']:.2f} |"
        )
        print(rows[-1], flush=True)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu"
    )
    table = (
        "| interactions | iALS exact s/iter | iALS CG s/iter | LearnBPR s/epoch | MF+BPR (Adam) "
        "s/epoch | top-10 users/s | peak GiB |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    facts = (
        f"{name}; {int(USERS * args.scale):,} users x {int(ITEMS * args.scale):,} items, k = {K}; "
        f"torch {torch.__version__}; the whole script took {time.perf_counter() - started:.0f} s"
    )
    print(table + facts)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            f"# GPU check\n\nWritten by `scripts/gpu_check.sh` (`scripts/bench_gpu.py`, see its "
            f"docstring for what each column times).\n\n{table}\n{facts}.\n\nimplicit's published "
            "figure: 0.23 s per CG iteration for ML-20M rated >= 4 (10M), 128 factors, one A6000.\n"
        )


if __name__ == "__main__":
    main()
