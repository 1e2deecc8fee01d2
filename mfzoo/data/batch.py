"""`Batch`: the one structure models and losses see."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class Batch:
    """A batch of (user, items) rows.

    `items[b, 0]` is the observed item of row b; further columns (if any) are sampled
    negatives. `targets[b]` is the observed value of column 0 (a rating, a count); `weights[b]`
    an optional per-example weight (e.g. a confidence); `log_q[b, m]` the log-probability of
    `items[b, m]` under the negative sampler's proposal (for a logQ-corrected softmax).

    Shapes: users [B], items [B, 1+K], targets [B], weights [B], times [B], log_q [B, 1+K];
    all but users and items may be None.
    """

    users: Tensor
    items: Tensor
    targets: Tensor | None = None
    weights: Tensor | None = None
    times: Tensor | None = None
    log_q: Tensor | None = None

    def __post_init__(self) -> None:
        if self.items.dim() == 1:
            self.items = self.items.unsqueeze(1)

    def __len__(self) -> int:
        return self.users.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        moved = {
            f.name: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return replace(self, **moved)
