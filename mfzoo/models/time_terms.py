"""Time keys shared by the models with time-dependent biases (timeSVD/timeSVD++, the Bayesian
MF's time terms): equal-width item-bias time bins over the training span, and the (user, day)
pairs that carry a day-specific user bias.

Times are seconds (`Batch.times`, `Interactions.timestamps`); days = seconds / 86400. A time
outside the training span falls in the first or last bin; a (user, day) not seen in training
maps to the extra row `len(keys)`, whose bias is always 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

SECONDS_PER_DAY = 86400
_DAY_KEY = 1 << 32  # (user, day) -> user * 2^32 + day: days since 1970 stay far below 2^32


def bin_edges(days: Tensor, n_bins: int) -> Tensor:
    """The n_bins − 1 inner edges [n_bins − 1] (float64 days) of equal-width bins over
    [min, max] of `days`."""
    first, last = float(days.min()), float(days.max())
    return torch.linspace(first, last, n_bins + 1, dtype=torch.float64)[1:-1]


def time_bins(days: Tensor, edges: Tensor) -> Tensor:
    """Bin(t) in 0..len(edges) of each day [B] (outside the span: the end bins)."""
    return torch.bucketize(days, edges)


def day_keys(users: Tensor, times: Tensor) -> Tensor:
    """The key user · 2^32 + day of each (user, time in seconds) [B]."""
    return users.long() * _DAY_KEY + torch.div(times, SECONDS_PER_DAY, rounding_mode="floor").long()


def day_rows(keys: Tensor, users: Tensor, times: Tensor) -> Tensor:
    """Row of each (user, day) in the sorted training keys `keys` [K]; `K` (the always-zero row)
    when the pair was not seen in training: [B]."""
    wanted = day_keys(users, times)
    unseen = len(keys)
    if unseen == 0:
        return torch.full_like(wanted, 0)
    pos = torch.searchsorted(keys, wanted).clamp(max=unseen - 1)
    return torch.where(keys[pos] == wanted, pos, torch.full_like(pos, unseen))
