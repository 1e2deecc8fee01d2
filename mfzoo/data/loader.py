"""`BatchLoader`: batches made by slicing tensors with an index tensor.

No Dataset, no per-interaction `__getitem__`, no collate: one `index_select` per field per
batch, so the data path costs a small fraction of a training step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mfzoo.data.batch import Batch
from mfzoo.data.interactions import Interactions
from mfzoo.data.sampling import Sampler


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
    """

    def __init__(
        self, interactions: Interactions, batch_size: int, shuffle: bool = False, seed: int = 0,
        drop_last: bool = False, group_by_user: bool = False, sampler: Sampler | None = None,
        weights: torch.Tensor | None = None, features: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.batch_size, self.shuffle, self.seed, self.drop_last = interactions, batch_size, shuffle, seed, drop_last
        # not `.sampler`: Lightning reads that name as a torch DataLoader sampler
        self.group_by_user, self.negative_sampler, self.weights = group_by_user, sampler, weights
        self.features = features
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose permutation and negatives the next pass draws."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        data, n = self.data, len(self.data)
        order = None
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.shuffle:
            order = torch.randperm(n, generator=generator)  # [N]
            if self.group_by_user:
                user_rank = torch.randperm(data.n_users, generator=generator)  # [U]
                users = data.users.cpu()[order]  # [N]
                order = order[torch.sort(user_rank[users], stable=True).indices]  # users together, rows shuffled within
            order = order.to(data.device)
        elif self.group_by_user:
            order = torch.sort(data.users, stable=True).indices
        self.epoch += 1
        user_table = data.user_features if self.features else None
        item_table = data.item_features if self.features else None
        for b in range(len(self)):
            start = b * self.batch_size
            if order is None:
                idx = slice(start, start + self.batch_size)
                pick = lambda t: t[idx]  # noqa: E731
            else:
                idx = order[start : start + self.batch_size]  # [B]
                pick = lambda t: t.index_select(0, idx)  # noqa: E731
            users, items, log_q = pick(data.users), pick(data.items).unsqueeze(1), None  # [B], [B, 1]
            if self.negative_sampler is not None:
                negatives, log_q_neg = self.negative_sampler(users, generator)  # [B, K], [B, K]
                log_q = torch.cat([self.negative_sampler.log_prob(items), log_q_neg], dim=1)  # [B, 1+K]
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
