"""Retrieval benchmark: exact top-K throughput, and an HNSW index's recall against exact.

Part 1: exact top-10 for every one of 200k users over 50k items (64-dim factors, seeded,
norms spread like trained factors), through `mfzoo.retrieval.recommend` in chunks of users:
users per second and the process's peak memory (bounded by the chunk, not by users x items).

Part 2: an HNSW index (`FaissIndex(kind="hnsw")`, faiss inner-product metric) over 50k item
vectors against `ExactIndex`: recall@10 over 2,000 query users, and queries per second for
both, each query answered on its own (one query per call, the serving case) and in one batch,
for several efSearch values. Two sets of vectors: the random ones of part 1 (intrinsic
dimension 64: the hard case for graph search), and factors trained by iALS (CG, 64 factors,
`--train-iterations` sweeps) on the seeded synthetic 200k users x 50k items x 10M
interactions, the vectors an index serves in practice (their users are the queries).

    python scripts/bench_retrieval.py [--users 200000] [--items 50000] [--out FILE]

Needs the `[ann]` extra (faiss-cpu).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from _bench import emit, quiet
from torch import nn

from mfzoo.data.sources import synthetic
from mfzoo.models.mf import MF
from mfzoo.retrieval import ExactIndex, FaissIndex, ann_recall, recommend
from mfzoo.solvers.solver import IALSSolver


class Factors(nn.Module):
    """Fixed factor tables with the model interface `recommend` uses."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor):
        super().__init__()
        self.users, self.items = users, items
        self.n_users, self.n_items = len(users), len(items)

    def user_factors(self) -> torch.Tensor:
        return self.users

    def item_factors(self) -> torch.Tensor:
        return self.items


def factors(n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian directions with log-normal norms (trained factors' norms vary with popularity)."""
    x = torch.randn(n, dim, generator=generator)
    return x / x.norm(dim=1, keepdim=True) * torch.exp(0.5 * torch.randn(n, 1, generator=generator))


def per_query(index, queries: torch.Tensor, k: int) -> float:
    start = time.perf_counter()
    for q in queries:
        index.search(q.unsqueeze(0), k)
    return len(queries) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 24, 32, 64])
    parser.add_argument("--m", type=int, nargs="+", default=[16, 32], help="HNSW links per node")
    parser.add_argument("--train-iterations", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    quiet()
    g = torch.Generator().manual_seed(0)
    model = Factors(factors(args.users, args.dim, g), factors(args.items, args.dim, g))

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    recommend(model, torch.arange(args.users), 10, chunk_size=args.chunk_size)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines = [
        (
            f"**Exact top-10** for all {args.users} users x {args.items} items, {args.dim} dims, "
            f"chunks of {args.chunk_size} users, {torch.get_num_threads()} threads: {seconds:.1f} "
            f"s, **{args.users / seconds:,.0f} users/s**; peak RSS {peak:.2f} GiB (factors loaded: "
            f"{before:.2f} GiB)."
        ),
        "",
    ]
    print(lines[0], flush=True)

    lines += ann_table("random factors (part 1)", model.users[: args.queries], model.items, args)
    data = synthetic(
        n_users=args.users, n_items=args.items, n_interactions=10_000_000, implicit=True, seed=0
    )
    torch.manual_seed(0)
    trained = MF(data.n_users, data.n_items, dim=args.dim, biases=False, init_std=0.01)
    solver = IALSSolver(l2=0.1, alpha=9.0, method="cg")
    start = time.perf_counter()
    for _ in range(args.train_iterations):
        solver.sweep(trained, data)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        users, items = trained.user_factors(), trained.item_factors()
    active = torch.randperm(data.n_users, generator=g)[: args.queries]  # random users as queries
    lines += ann_table(
        f"iALS factors ({len(data)} synthetic interactions, {args.train_iterations} CG sweeps "
        f"in {seconds:.0f} s)",
        users[active],
        items,
        args,
    )
    emit(lines, args.out)


def ann_table(title: str, queries: torch.Tensor, items: torch.Tensor, args) -> list[str]:
    """Recall@10 and queries/s of HNSW at each efSearch against exact search over `items`."""
    exact = ExactIndex()
    exact.add(items)
    _, exact_ids = exact.search(queries, 10)
    exact_one = per_query(exact, queries[:500], 10)
    start = time.perf_counter()
    exact.search(queries, 10)
    exact_batch = len(queries) / (time.perf_counter() - start)
    start = time.perf_counter()
    for q in queries[:500]:  # the leanest exact search: no index object, no exact tie order
        torch.topk(q.unsqueeze(0) @ items.T, 10)
    bare_one = 500 / (time.perf_counter() - start)
    lines = [
        (
            f"**ANN over {len(items)} items: {title}** ({len(queries)} query users; exact "
            f"(`ExactIndex`): {exact_one:,.0f} queries/s one per call, {exact_batch:,.0f} in one "
            f"batch; a bare `torch.topk(q @ items.T)`: {bare_one:,.0f} queries/s one per call)"
        ),
        "",
        (
            "| HNSW M | efSearch | recall@10 | queries/s, one per call | vs exact | vs bare torch "
            "| queries/s, one batch | vs exact |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in args.m:
        hnsw = FaissIndex(kind="hnsw", M=m)
        hnsw.add(items)
        start = time.perf_counter()
        hnsw.search(queries[:1], 10)  # the first search builds the graph
        build = time.perf_counter() - start
        for ef in args.ef_search:
            hnsw._index.hnsw.efSearch = ef
            _, ids = hnsw.search(queries, 10)
            one = per_query(hnsw, queries[:500], 10)
            start = time.perf_counter()
            hnsw.search(queries, 10)
            batch = len(queries) / (time.perf_counter() - start)
            lines.append(
                f"| {m} (built in {build:.1f} s) | {ef} | {ann_recall(ids, exact_ids):.4f} | "
                f"{one:,.0f} | {one / exact_one:.1f}x | {one / bare_one:.1f}x | {batch:,.0f} | "
                f"{batch / exact_batch:.1f}x |"
            )
    print("\n".join(lines), flush=True)
    return [*lines, ""]


if __name__ == "__main__":
    main()
