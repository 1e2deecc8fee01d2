"""Sharded ALS / iALS over torch.distributed: 2 local processes (gloo) give the factors of the
single-process sweeps, and every rank keeps only its rows."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mfzoo.data.sources import synthetic
from mfzoo.models.mf import MF
from mfzoo.solvers.distributed import ShardedALS, shard
from mfzoo.solvers.solver import ALSSolver, IALSSolver

pytestmark = pytest.mark.distributed

SWEEPS, K = 3, 6
SOLVERS = {
    "ials-exact": lambda: IALSSolver(l2=0.1, alpha=2.0),
    "ials-cg": lambda: IALSSolver(l2=0.1, alpha=2.0, method="cg", cg_steps=3),
    "als": lambda: ALSSolver(l2=0.1),
}


def data():
    # sizes that do not split evenly; sparse enough that no rank's rows touch all of the other side
    return synthetic(n_users=157, n_items=301, n_interactions=1500, seed=3)


def start(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    train = data()
    g = torch.Generator().manual_seed(seed)
    return (
        0.1 * torch.randn(train.n_users, K, generator=g, dtype=torch.float64),
        0.1 * torch.randn(train.n_items, K, generator=g, dtype=torch.float64),
    )


def _worker(
    rank: int, world: int, init: str, name: str, out: str, exchange: str = "gather"
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        train = data()
        users, items = start()
        part = ShardedALS.of(SOLVERS[name](), train, users, items, exchange=exchange)
        (u0, u1), (i0, i1) = shard(train.n_users, rank, world), shard(train.n_items, rank, world)
        assert part.users.shape == (u1 - u0, K) and part.items.shape == (i1 - i0, K)
        own = train.subset((train.users >= u0) & (train.users < u1))
        own_items = train.subset((train.items >= i0) & (train.items < i1))
        if exchange == "gather":
            assert part.R_users.shape == (u1 - u0, train.n_items) and part.R_items.shape == (
                i1 - i0,
                train.n_users,
            )
        else:
            # only the other side's rows that its own rows touch, and R's columns renumbered to them
            assert torch.equal(part.needed_items, own.items.unique()) and torch.equal(
                part.needed_users, own_items.users.unique()
            )
            assert part.R_users.shape == (u1 - u0, len(part.needed_items))
            assert part.R_items.shape == (i1 - i0, len(part.needed_users))
            assert len(part.needed_items) < train.n_items and len(part.needed_users) < train.n_users
        # the rank's matrix holds exactly its users' entries (global item ids recovered)
        cols = (
            part.R_users.col_indices()
            if exchange == "gather"
            else part.needed_items[part.R_users.col_indices()]
        )
        assert part.R_users.values().numel() == len(own)
        assert sorted(
            zip(
                part.R_users.to_sparse_coo().indices()[0].add(u0).tolist(),
                cols.tolist(),
                strict=True,
            )
        ) == sorted(zip(own.users.tolist(), own.items.tolist(), strict=True))
        for _ in range(SWEEPS):
            part.sweep()
        X, Y = part.factors()
        if rank == 0:
            torch.save({"users": X, "items": Y}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("exchange", ["gather", "blockwise"])
@pytest.mark.parametrize("name", list(SOLVERS))
def test_two_ranks_give_the_single_process_factors(tmp_path, name, exchange):
    out = tmp_path / "factors.pt"
    mp.spawn(
        _worker,
        args=(2, f"file://{tmp_path / 'rendezvous'}", name, str(out), exchange),
        nprocs=2,
        join=True,
    )
    sharded = torch.load(out, weights_only=True)

    train = data()
    users, items = start()
    model = MF(train.n_users, train.n_items, dim=K, biases=False).double()
    with torch.no_grad():
        model.user_embedding.weight.copy_(users)
        model.item_embedding.weight.copy_(items)
    solver = SOLVERS[name]()
    for _ in range(SWEEPS):
        solver.sweep(model, train)
    single_users, single_items = (
        model.user_embedding.weight.detach(),
        model.item_embedding.weight.detach(),
    )
    assert single_users.abs().max() > 0.05  # the sweeps moved the factors
    torch.testing.assert_close(sharded["users"], single_users, atol=1e-5, rtol=0)
    torch.testing.assert_close(sharded["items"], single_items, atol=1e-5, rtol=0)


def test_shards_cover_every_row_once():
    for n, world in ((10, 3), (2, 4), (157, 2), (0, 2)):
        parts = [shard(n, r, world) for r in range(world)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
        assert max(e - s for s, e in parts) - min(e - s for s, e in parts) <= 1
    with pytest.raises(ValueError, match="rank"):
        shard(5, 2, 2)
