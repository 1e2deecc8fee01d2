"""Retrieval benchmark: exact top-K throughput, and an HNSW index's recall against exact.

Part 1: exact top-10 for every one of 200k users over 50k items (64-dim factors, seeded,
norms spread like trained factors), through `mfzoo.retrieval.recommend` in chunks of users:
users per second and the process's peak memory (bounded by the chunk, not by users x items).

Part 2: an HNSW index (`FaissIndex(kind="hnsw")`, faiss inner-product metric) over the 50k
item vectors against `ExactIndex`: recall@10 over 2,000 query users, and queries per second
for both, each query answered on its own (one query per call, the serving case) and in one
batch.

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

from mfzoo.retrieval import ExactIndex, FaissIndex, ann_recall, recommend


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--ef-search", type=int, default=128)
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
    lines = [f"**Exact top-10** for all {args.users} users x {args.items} items, {args.dim} dims, chunks of "
             f"{args.chunk_size} users, {torch.get_num_threads()} threads: {seconds:.1f} s, "
             f"**{args.users / seconds:,.0f} users/s**; peak RSS {peak:.2f} GiB (factors loaded: {before:.2f} GiB).", ""]
    print(lines[0], flush=True)

    queries = model.users[: args.queries]
    exact, hnsw = ExactIndex(), FaissIndex(kind="hnsw", ef_search=args.ef_search)
    for index in (exact, hnsw):
        index.add(model.items)
    _, exact_ids = exact.search(queries, 10)
    start = time.perf_counter()
    hnsw.search(queries[:1], 10)  # the first search builds the graph
    build = time.perf_counter() - start
    _, hnsw_ids = hnsw.search(queries, 10)
    recall = ann_recall(hnsw_ids, exact_ids)
    rows = []
    for name, index in (("exact (torch)", exact), (f"HNSW (faiss, efSearch {args.ef_search})", hnsw)):
        one = per_query(index, queries[:500], 10)
        start = time.perf_counter()
        index.search(queries, 10)
        batch = len(queries) / (time.perf_counter() - start)
        rows.append((name, one, batch))
    lines += [f"**ANN over {args.items} items** ({args.queries} query users; HNSW built in {build:.1f} s): "
              f"recall@10 of HNSW against exact = **{recall:.4f}**", "",
              "| index | queries/s, one per call | queries/s, one batch |", "|---|---|---|"]
    lines += [f"| {name} | {one:,.0f} | {batch:,.0f} |" for name, one, batch in rows]
    lines += [f"| HNSW / exact | {rows[1][1] / rows[0][1]:.1f}x | {rows[1][2] / rows[0][2]:.1f}x |", ""]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
