"""Learning-rate schedules that need the run's total number of optimizer steps.

Each is `f(optimizer, total_steps) -> LRScheduler`, stepped once per optimizer step; a config
gives it as a `_partial_` and the training module supplies `total_steps`.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def linear_decay(
    optimizer: torch.optim.Optimizer, total_steps: int, final: float = 0.0
) -> LambdaLR:
    """lr_k = lr · (1 − (1 − final) · k / total_steps): from lr down to `final · lr`."""
    total = max(int(total_steps), 1)
    return LambdaLR(optimizer, lambda k: 1.0 - (1.0 - final) * min(k, total) / total)


def cosine_decay(
    optimizer: torch.optim.Optimizer, total_steps: int, final: float = 0.0
) -> LambdaLR:
    """lr_k = lr · (final + (1 − final) · ½ (1 + cos(π k / total_steps)))."""
    total = max(int(total_steps), 1)
    return LambdaLR(
        optimizer,
        lambda k: final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * min(k, total) / total)),
    )
