"""ALS and iALS over `torch.distributed`: users and items sharded by rows across the ranks of a
process group (gloo on CPU, NCCL on GPU), as Spark's ALS spreads the independent per-row
solves over machines.

Rank r of W holds a contiguous range of users [u_r, u_{r+1}) and of items [i_r, i_{r+1})
(`shard`), the rows of R for its users and the rows of Rᵀ for its items, and the factors of
those rows. One sweep is the single-process sweep, row for row:

    Y = all-gather(item factors)            [n_items, k]
    X_r = half_step(R_r, Y, X0 = X_r)       own users; YᵀY from the gathered Y
    X = all-gather(user factors)            [n_users, k]
    Y_r = half_step(Rᵀ_r, X, X0 = Y_r)      own items

Every row's solve depends only on its own entries, the other side's factors and their Gram
matrix, so the factors equal the single-process ones (to the rounding of YᵀY, summed in
another order on no rank: each rank computes it from the same gathered Y). What a rank holds
after `ShardedALS.of` is its shard of R and Rᵀ and of the factors; the other side's factors
are gathered whole for each half-step (a [n, k] tensor per rank: 10M users at k = 64 in float32
is 2.4 GiB; beyond that Spark exchanges them blockwise, which this module does not do).

Launch with `torchrun --nproc-per-node N script.py` (one machine) or a multi-node `torchrun`;
`scripts/bench_scale.py` is an example. Shards of unequal size are padded to the largest for
the all-gather (gloo needs equal sizes) and trimmed after.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from mfzoo.data.interactions import Interactions
from mfzoo.data.loader import shard
from mfzoo.solvers.solver import ALSBase

__all__ = ["ShardedALS", "all_gather_rows", "shard"]


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
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def _rows(train: Interactions, by: str, start: int, end: int, device: torch.device) -> Tensor:
    """Rows [start, end) of `train`'s CSR matrix by `by`, as a CSR tensor with end − start rows
    and all the columns."""
    full = train.to_scipy(by)[start:end]
    return torch.sparse_csr_tensor(
        torch.from_numpy(full.indptr.astype(np.int64)), torch.from_numpy(full.indices.astype(np.int64)),
        torch.from_numpy(full.data.astype(np.float32)), size=full.shape,
    ).to(device)


@dataclass
class ShardedALS:
    """One rank's part of a sharded ALS / iALS (see the module docstring).

    Attributes:
        solver: an `ALSSolver` or `IALSSolver` (its `half_step` does the solves).
        R_users: CSR [n_local_users, n_items], the rows of R of this rank's users.
        R_items: CSR [n_local_items, n_users], the rows of Rᵀ of this rank's items.
        users, items: this rank's factors [n_local_users, k], [n_local_items, k].
        n_users, n_items: the global sizes.
    """

    solver: ALSBase
    R_users: Tensor
    R_items: Tensor
    users: Tensor
    items: Tensor
    n_users: int
    n_items: int
    group: dist.ProcessGroup | None = None
    _caches: dict = field(default_factory=lambda: {"user": {}, "item": {}}, init=False, repr=False)

    @classmethod
    def of(cls, solver: ALSBase, train: Interactions, users: Tensor, items: Tensor,
           group: dist.ProcessGroup | None = None) -> ShardedALS:
        """This rank's shard of `train` and of the starting factors `users` [n_users, k],
        `items` [n_items, k] (every rank passes the same ones, e.g. drawn from one seed); only
        the shard is kept."""
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        (u0, u1), (i0, i1) = shard(train.n_users, rank, world), shard(train.n_items, rank, world)
        device = users.device
        return cls(solver, _rows(train, "user", u0, u1, device), _rows(train, "item", i0, i1, device),
                   users[u0:u1].clone(), items[i0:i1].clone(), train.n_users, train.n_items, group)

    @torch.no_grad()
    def sweep(self) -> None:
        """One sweep: own users against the gathered item factors, then own items against the
        gathered user factors."""
        Y = all_gather_rows(self.items, self.n_items, self.group)  # [n_items, k]
        self.users.copy_(self.solver.half_step(self.R_users, Y, self.users, self._caches["user"]))
        X = all_gather_rows(self.users, self.n_users, self.group)  # [n_users, k]
        self.items.copy_(self.solver.half_step(self.R_items, X, self.items, self._caches["item"]))

    def factors(self) -> tuple[Tensor, Tensor]:
        """(user factors [n_users, k], item factors [n_items, k]), gathered on every rank."""
        return (all_gather_rows(self.users, self.n_users, self.group),
                all_gather_rows(self.items, self.n_items, self.group))
