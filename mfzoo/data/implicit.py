"""From interactions to implicit-feedback positives and their confidence weights."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from mfzoo.data.interactions import Interactions

log = logging.getLogger(__name__)


def positives(data: Interactions, threshold: float | None = None) -> Interactions:
    """The events that count as positive feedback: all of them (`threshold` None), or those
    with value >= `threshold` (e.g. ratings of 4 and 5). The id space is kept."""
    if threshold is None:
        return data
    keep = data.values >= threshold
    log.info(
        "%s: %d of %d events have value >= %g and are positives",
        data.name,
        int(keep.sum()),
        len(data),
        threshold,
    )
    return data.subset(keep, name=f"{data.name}[>={threshold:g}]")


def confidence(
    values: Tensor, kind: str = "linear", alpha: float = 1.0, eps: float = 1.0
) -> Tensor:
    """Hu, Koren & Volinsky (2008) confidence of an observed event with strength r:
    "linear": c = 1 + α r;  "log": c = 1 + α log(1 + r / ε);  "none": c = 1."""
    if kind == "linear":
        return 1.0 + alpha * values
    if kind == "log":
        return 1.0 + alpha * torch.log1p(values / eps)
    if kind == "none":
        return torch.ones_like(values)
    raise ValueError(f"confidence kind must be 'linear', 'log' or 'none', got {kind!r}")
