"""ALS and iALS over `torch.distributed`: users and items sharded by rows across the ranks of a
process group (gloo on CPU, NCCL on GPU), as Spark's ALS spreads the independent per-row
solves over machines.

Rank r of W holds a contiguous range of users [u_r, u_{r+1}) and of items [i_r, i_{r+1})
(`shard`), the rows of R for its users and the rows of Rᵀ for its items, and the factors of
those rows. One sweep is the single-process sweep, row for row:

    G = all-reduce(Y_rᵀ Y_r)                 [k, k] YᵀY (iALS only), summed over the ranks
    Y = the item factors the rank needs      all of them, or only its users' items
    X_r = half_step(R_r, Y, X0 = X_r, G)     own users
    (the same for the items, against the user factors)

Every row's solve depends only on its own entries, the other side's factors and their Gram
matrix, so the factors equal the single-process ones to the rounding of YᵀY (summed over the
ranks in another order: 1e-12 apart in float64, see tests/test_distributed.py).

Two ways to get the other side's factors (`exchange`):
- "gather": `all_gather` of every rank's rows, so every rank holds all [n, k] of them during
  a half-step (10M users at k = 64 in float32: 2.4 GiB per rank);
- "blockwise": each rank's rows are broadcast in turn, one shard at a time, and every rank
  keeps only the rows that its own rows' entries touch (Spark's in-blocks: its R's columns
  are renumbered to those rows once, at set-up). A rank then holds one shard plus the rows it
  needs, which for W ranks over data with a long tail is a fraction of the other side. The
  traffic is the same as "gather"'s; what it saves is memory.

Launch: `mfzoo-train solver=ials solver.distributed=true trainer=ddp` (Lightning starts the
processes, or joins those of `torchrun --nproc-per-node N $(which mfzoo-train) ...`, or of a
multi-node `torchrun`); from code, `ShardedALS.of(...)` on every rank of an initialised group
(`scripts/bench_scale.py` is an example). Shards of unequal size are padded to the largest for
the collectives (gloo needs equal sizes) and trimmed after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from mfzoo.data.interactions import Interactions
from mfzoo.data.loader import shard
from mfzoo.solvers.solver import ALSBase

__all__ = ["ShardedALS", "all_gather_rows", "broadcast_needed_rows", "shard"]


def all_gather_rows(local: Tensor, n: int, group: dist.ProcessGroup | None = None) -> Tensor:
    """The [n, k] concatenation over the ranks of their `local` [n_r, k] rows (rank order;
    each rank's rows as `shard(n, rank, world)` gives them)."""
    world = dist.get_world_size(group)
    sizes = [end - start for start, end in (shard(n, r, world) for r in range(world))]
    longest = max(sizes)
    padded = local.new_zeros(longest, local.shape[1])
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def broadcast_needed_rows(
    local: Tensor, n: int, needed: Tensor, group: dist.ProcessGroup | None = None
) -> Tensor:
    """The rows `needed` [m] (sorted global row ids of the n rows sharded over the ranks) as
    [m, k]: every rank's `local` rows are broadcast in turn (one shard in memory at a time) and
    each rank keeps the ones it needs."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    bounds = [shard(n, r, world) for r in range(world)]
    longest = max(end - start for start, end in bounds)
    out = local.new_empty(len(needed), local.shape[1])
    buffer = local.new_empty(longest, local.shape[1])
    cuts = torch.searchsorted(
        needed, torch.tensor([start for start, _ in bounds] + [n], device=needed.device)
    ).tolist()
    for source, (start, end) in enumerate(bounds):
        if source == rank:
            buffer[: end - start] = local
        dist.broadcast(
            buffer,
            src=dist.get_global_rank(group, source) if group is not None else source,
            group=group,
        )
        lo, hi = cuts[source], cuts[source + 1]  # the needed rows in this shard
        out[lo:hi] = buffer.index_select(0, needed[lo:hi] - start)
    return out


def _rows(
    train: Interactions,
    by: Literal["user", "item"],
    start: int,
    end: int,
    device: torch.device,
    compact: bool,
) -> tuple[Tensor, Tensor | None]:
    """Rows [start, end) of `train`'s CSR matrix by `by`, as a CSR tensor with end − start rows,
    and with `compact` its columns renumbered to the sorted ids of the columns it uses (returned
    second; None without `compact`: all the columns)."""
    rows = train.to_scipy(by)[start:end]
    indices, used = rows.indices.astype(np.int64), None
    width = rows.shape[1]
    if compact:
        used_np = np.unique(indices)
        indices = np.searchsorted(used_np, indices)
        used, width = torch.from_numpy(used_np).to(device), len(used_np)
    R = torch.sparse_csr_tensor(
        torch.from_numpy(rows.indptr.astype(np.int64)),
        torch.from_numpy(indices),
        torch.from_numpy(rows.data.astype(np.float32)),
        size=(rows.shape[0], width),
    ).to(device)
    return R, used


@dataclass
class ShardedALS:
    """One rank's part of a sharded ALS / iALS (see the module docstring).

    Attributes:
        solver: an `ALSSolver` or `IALSSolver` (its `half_step` does the solves).
        R_users: CSR [n_local_users, n_items] (or, blockwise, [n_local_users, |needed_items|]),
            the rows of R of this rank's users.
        R_items: CSR [n_local_items, n_users] (or [n_local_items, |needed_users|]), the rows of
            Rᵀ of this rank's items.
        users, items: this rank's factors [n_local_users, k], [n_local_items, k].
        n_users, n_items: the global sizes.
        needed_items, needed_users: blockwise only, the sorted global ids of the other side's
            rows that this rank's rows touch (R_users' and R_items' columns in that order).
    """

    solver: ALSBase
    R_users: Tensor
    R_items: Tensor
    users: Tensor
    items: Tensor
    n_users: int
    n_items: int
    group: dist.ProcessGroup | None = None
    needed_items: Tensor | None = None
    needed_users: Tensor | None = None
    _caches: dict = field(default_factory=lambda: {"user": {}, "item": {}}, init=False, repr=False)

    @classmethod
    def of(
        cls,
        solver: ALSBase,
        train: Interactions,
        users: Tensor,
        items: Tensor,
        group: dist.ProcessGroup | None = None,
        exchange: str | None = None,
    ) -> ShardedALS:
        """This rank's shard of `train` and of the starting factors `users` [n_users, k],
        `items` [n_items, k] (every rank passes the same ones, e.g. drawn from one seed); only
        the shard is kept. `exchange`: "gather" or "blockwise" (default: the solver's)."""
        exchange = exchange or getattr(solver, "exchange", "gather")
        if exchange not in ("gather", "blockwise"):
            raise ValueError(f"exchange must be 'gather' or 'blockwise', got {exchange!r}")
        if users.shape[0] != train.n_users or items.shape[0] != train.n_items:
            raise ValueError(
                f"factors for {users.shape[0]} users and {items.shape[0]} items, but the training "
                f"set has {train.n_users} and {train.n_items}"
            )
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        (u0, u1), (i0, i1) = shard(train.n_users, rank, world), shard(train.n_items, rank, world)
        device, blockwise = users.device, exchange == "blockwise"
        R_users, needed_items = _rows(train, "user", u0, u1, device, blockwise)
        R_items, needed_users = _rows(train, "item", i0, i1, device, blockwise)
        return cls(
            solver,
            R_users,
            R_items,
            users[u0:u1].clone(),
            items[i0:i1].clone(),
            train.n_users,
            train.n_items,
            group,
            needed_items,
            needed_users,
        )

    def _half(
        self, R: Tensor, X0: Tensor, other: Tensor, n_other: int, needed: Tensor | None, cache: dict
    ) -> Tensor:
        """Own rows of R solved against the other side, whose rows `other` this rank holds."""
        gram = None
        if self.solver.uses_gram:  # YᵀY = Σ_r Y_rᵀ Y_r
            gram = other.T @ other  # [k, k]
            dist.all_reduce(gram, group=self.group)
        if needed is None:
            Y = all_gather_rows(other, n_other, self.group)  # [n_other, k]
        else:
            Y = broadcast_needed_rows(other, n_other, needed, self.group)  # [|needed|, k]
        return self.solver.half_step(R, Y, X0, cache, gram=gram, n_cols=n_other)

    @torch.no_grad()
    def sweep(self) -> None:
        """One sweep: own users against the item factors, then own items against the user
        factors (see the module docstring)."""
        self.users.copy_(
            self._half(
                self.R_users,
                self.users,
                self.items,
                self.n_items,
                self.needed_items,
                self._caches["user"],
            )
        )
        self.items.copy_(
            self._half(
                self.R_items,
                self.items,
                self.users,
                self.n_users,
                self.needed_users,
                self._caches["item"],
            )
        )

    def factors(self) -> tuple[Tensor, Tensor]:
        """(user factors [n_users, k], item factors [n_items, k]), gathered on every rank."""
        return (
            all_gather_rows(self.users, self.n_users, self.group),
            all_gather_rows(self.items, self.n_items, self.group),
        )
