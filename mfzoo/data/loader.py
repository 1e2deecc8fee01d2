"""`BatchLoader`: batches made by slicing tensors with an index tensor.

No Dataset, no per-interaction `__getitem__`, no collate: one `index_select` per field per
batch, so the data path costs a small fraction of a training step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from mfzoo.data.batch import Batch
from mfzoo.data.interactions import Interactions
from mfzoo.data.sampling import Sampler


def shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """The rows [start, end) of `rank` when n rows are split into `world` contiguous parts whose
    sizes differ by at most one (the first n mod world parts one longer)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must lie in 0..{world - 1}, got {rank}")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _rows(index: slice | Tensor) -> Callable[[Tensor], Tensor]:
    """Take the rows `index` (a slice: a view; a tensor of row numbers: a gather) of a tensor."""
    if isinstance(index, slice):
        return lambda t: t[index]
    return lambda t: t.index_select(0, index)


class BatchLoader:
    """Iterates over `interactions` in batches of `batch_size` rows.

    With `shuffle`, each pass draws a new permutation from a generator seeded with
    `seed + epoch`, so a run is reproducible and every epoch differs. `epoch` counts the
    passes from 0; `set_epoch(e)` sets it (the trainer does at the start of every epoch, so a
    run resumed from a checkpoint draws what the uninterrupted run drew). With
    `group_by_user`, the rows of each user are consecutive (users in a random order, rows
    in a random order within a user): a batch then holds about `batch_size` rows of few
    users, and a per-user term is computed for those users only. Batches still have exactly
    `batch_size` rows, so a user's rows may straddle two batches.
    Batches: users [B], items [B, 1+K], targets [B] (the values), times [B] when present,
    weights [B] when `weights` [N] is given; with a `sampler`, K negatives per row are drawn
    (from the same seeded generator) and `log_q` [B, 1+K] is set. With `features` (and feature
    tables on `interactions`), `user_features` and `item_features` hold the rows of the batch's
    users and items (see `Batch`); without it nothing is gathered.

    Under data parallelism (`rank`, `world_size`, or `distributed=True` and an initialised
    torch.distributed group),
    every rank draws the same epoch order and takes a disjoint slice of it: batch b of the W
    ranks together is the single-process batch b of `batch_size · W` rows, each rank holding
    `batch_size` of them (the last one split as evenly as possible; dropped when it has fewer
    rows than ranks, so that every rank takes as many steps). Negatives come from a generator
    seeded per rank (`seed + epoch + 1000003·(rank + 1)`); with one process they come from the
    permutation's generator, as they always have. For data on a GPU the permutation is drawn
    on the CPU and moved once per epoch, and the negatives come from a generator on the GPU
    (seeded as under data parallelism), so that no batch copies from the host.
    """

    def __init__(
        self,
        interactions: Interactions,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        group_by_user: bool = False,
        sampler: Sampler | None = None,
        weights: torch.Tensor | None = None,
        features: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        distributed: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.batch_size, self.shuffle, self.seed, self.drop_last = (
            interactions,
            batch_size,
            shuffle,
            seed,
            drop_last,
        )
        # not `.sampler`: Lightning reads that name as a torch DataLoader sampler
        self.group_by_user, self.negative_sampler, self.weights = group_by_user, sampler, weights
        self.features = features
        self.epoch = 0
        self._rank, self._world, self.distributed = rank, world_size, distributed
        if (rank is None) != (world_size is None) or (
            rank is not None and world_size is not None and not 0 <= rank < world_size
        ):
            raise ValueError(
                f"rank and world_size go together, with 0 <= rank < world_size; got {rank}, "
                f"{world_size}"
            )

    def ranks(self) -> tuple[int, int]:
        """(this process's rank, the number of ranks): as given, else with `distributed`
        torch.distributed's when a process group is initialised, else (0, 1). Only a training
        loader should shard: evaluation loaders keep every row (their metrics are not gathered)."""
        if self._world is not None:
            assert self._rank is not None  # given together with world_size (`__init__`)
            return self._rank, self._world
        import torch.distributed as dist

        if self.distributed and dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose permutation and negatives the next pass draws."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, (_, world) = len(self.data), self.ranks()
        size = self.batch_size * world  # one global batch: a slice of batch_size rows per rank
        if self.drop_last:
            return n // size
        full, last = divmod(n, size)
        return full + (
            1 if last >= world else 0
        )  # a last global batch too short to give every rank a row is dropped

    def _slice(self, b: int) -> tuple[int, int]:
        """Rows [start, end) of the epoch's order that batch b of this rank holds: batch b of all
        ranks together is rows [b·B·W, (b+1)·B·W), the single-process batch of size B·W; rank r
        takes the r-th of W contiguous parts (equal, or within one row for the last batch)."""
        rank, world = self.ranks()
        size = self.batch_size * world
        start = b * size
        first, last = shard(min(size, len(self.data) - start), rank, world)
        return start + first, start + last

    def __iter__(self) -> Iterator[Batch]:
        data, n = self.data, len(self.data)
        order = None
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.shuffle:
            order = torch.randperm(n, generator=generator)  # [N]
            if self.group_by_user:
                user_rank = torch.randperm(data.n_users, generator=generator)  # [U]
                users = data.users.cpu()[order]  # [N]
                order = order[
                    torch.sort(user_rank[users], stable=True).indices
                ]  # users together, rows shuffled within
            order = order.to(data.device)
        elif self.group_by_user:
            order = torch.sort(data.users, stable=True).indices
        rank, world = self.ranks()
        # data on a GPU: negatives drawn there (no copy, no host sync per batch)
        if data.device.type != "cpu":
            negatives_generator = torch.Generator(device=data.device)
            negatives_generator.manual_seed(self.seed + self.epoch + 1_000_003 * (rank + 1))
        elif world > 1:  # the same order on every rank; negatives of its own per rank
            negatives_generator = torch.Generator().manual_seed(
                self.seed + self.epoch + 1_000_003 * (rank + 1)
            )
        else:
            negatives_generator = generator  # one process: the permutation's generator, as always
        self.epoch += 1
        user_table = data.user_features if self.features else None
        item_table = data.item_features if self.features else None
        for b in range(len(self)):
            start, end = self._slice(b)
            pick = _rows(slice(start, end) if order is None else order[start:end])  # [B] rows
            users, items, log_q = (
                pick(data.users),
                pick(data.items).unsqueeze(1),
                None,
            )  # [B], [B, 1]
            if self.negative_sampler is not None:
                # [B, K], [B, K]
                negatives, log_q_neg = self.negative_sampler(users, negatives_generator)
                # [B, 1+K]
                log_q = torch.cat([self.negative_sampler.log_prob(items), log_q_neg], dim=1)
                items = torch.cat([items, negatives], dim=1)  # [B, 1+K]
            yield Batch(
                users=users,
                items=items,
                targets=pick(data.values),
                weights=None if self.weights is None else pick(self.weights),
                times=None if data.timestamps is None else pick(data.timestamps),
                log_q=log_q,
                user_features=None if user_table is None else user_table.take(users),
                item_features=None if item_table is None else item_table.take(items),
            )
