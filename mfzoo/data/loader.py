"""`BatchLoader`: batches made by slicing tensors with an index tensor.

No Dataset, no per-interaction `__getitem__`, no collate: one `index_select` per field per
batch, so the data path costs a small fraction of a training step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mfzoo.data.batch import Batch
from mfzoo.data.interactions import Interactions


class BatchLoader:
    """Iterates over `interactions` in batches of `batch_size` rows.

    With `shuffle`, each pass draws a new permutation from a generator seeded with
    `seed + pass number`, so a run is reproducible and every epoch differs. With
    `group_by_user`, the rows of each user are consecutive (users in a random order, rows
    in a random order within a user): a batch then holds about `batch_size` rows of few
    users, and a per-user term is computed for those users only. Batches still have exactly
    `batch_size` rows, so a user's rows may straddle two batches.
    Batches: users [B], items [B, 1], targets [B] (the values), times [B] when present.
    """

    def __init__(
        self, interactions: Interactions, batch_size: int, shuffle: bool = False, seed: int = 0,
        drop_last: bool = False, group_by_user: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.batch_size, self.shuffle, self.seed, self.drop_last = interactions, batch_size, shuffle, seed, drop_last
        self.group_by_user = group_by_user
        self.passes = 0

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        data, n = self.data, len(self.data)
        order = None
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.passes)
            order = torch.randperm(n, generator=generator)  # [N]
            if self.group_by_user:
                user_rank = torch.randperm(data.n_users, generator=generator)  # [U]
                users = data.users.cpu()[order]  # [N]
                order = order[torch.sort(user_rank[users], stable=True).indices]  # users together, rows shuffled within
            order = order.to(data.device)
        elif self.group_by_user:
            order = torch.sort(data.users, stable=True).indices
        self.passes += 1
        for b in range(len(self)):
            start = b * self.batch_size
            if order is None:
                idx = slice(start, start + self.batch_size)
                pick = lambda t: t[idx]  # noqa: E731
            else:
                idx = order[start : start + self.batch_size]  # [B]
                pick = lambda t: t.index_select(0, idx)  # noqa: E731
            yield Batch(
                users=pick(data.users),
                items=pick(data.items).unsqueeze(1),
                targets=pick(data.values),
                times=None if data.timestamps is None else pick(data.timestamps),
            )
