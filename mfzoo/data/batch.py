"""`Batch`: the one structure models and losses see."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from mfzoo.data.features import Features


@dataclass
class Batch:
    """A batch of (user, items) rows.

    `items[b, 0]` is the observed item of row b; further columns (if any) are sampled
    negatives. `targets[b]` is the observed value of column 0 (a rating, a count); `weights[b]`
    an optional per-example weight (e.g. a confidence); `log_q[b, m]` the log-probability of
    `items[b, m]` under the negative sampler's proposal (for a logQ-corrected softmax).

    Shapes: users [B], items [B, 1+K], targets [B], weights [B], times [B], log_q [B, 1+K];
    all but users and items may be None.

    Side information (`mfzoo.data.features.Features`, None unless asked for):
    `user_features` has B rows, row b describing `users[b]`; `item_features` has B·(1+K) rows,
    row b·(1+K) + m describing `items[b, m]` (the row-major order of `items.reshape(-1)`).
    Why both routes exist: the feature tables are indexed by model id, so a factor model
    keeps them itself (from `prepare(train)`, as `mfzoo.models.features.FeatureMF` does) and
    gathers the rows of the ids it scores; it has to, since `item_factors()` covers the whole
    catalogue with no batch at hand. The batch fields serve a model that is handed its
    features per row instead (no table of its own, or features gathered elsewhere): the
    loader fills them with one `Features.take` per side and batch, and only when it is built
    with `features=True` on data that has tables, so batches of every other run are as before.
    """

    users: Tensor
    items: Tensor
    targets: Tensor | None = None
    weights: Tensor | None = None
    times: Tensor | None = None
    log_q: Tensor | None = None
    user_features: Features | None = None
    item_features: Features | None = None

    def __post_init__(self) -> None:
        # models index and multiply ids: a batch carries int64, however its source stores them
        if self.users.dtype != torch.int64 and not self.users.is_floating_point():
            self.users = self.users.long()
        if self.items.dtype != torch.int64 and not self.items.is_floating_point():
            self.items = self.items.long()
        if self.items.dim() == 1:
            self.items = self.items.unsqueeze(1)

    def __len__(self) -> int:
        return self.users.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        """The batch with every tensor (features included) moved to `device`."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        def move_table(f: Features | None) -> Features | None:
            return None if f is None else f.to(device)

        return replace(
            self,
            users=self.users.to(device, non_blocking=True),
            items=self.items.to(device, non_blocking=True),
            targets=move(self.targets),
            weights=move(self.weights),
            times=move(self.times),
            log_q=move(self.log_q),
            user_features=move_table(self.user_features),
            item_features=move_table(self.item_features),
        )
