"""Row gathers and row penalties for embedding tables, fast on CPU and GPU, and the checks of
the sizes and scales a model is built with.

`nn.Embedding`'s own backward on CPU is several times slower than `index_select`'s
(a sort-based dense scatter), so the models keep `nn.Embedding` as the parameter
container and gather through these helpers.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor, nn


def rows(table: nn.Embedding, index: Tensor) -> Tensor:
    """`table.weight[index]`: shape `[*index.shape, dim]`."""
    flat = table.weight.index_select(0, index.reshape(-1))  # [N, D]
    return flat.view(*index.shape, table.weight.shape[1])


def row_norm_sum(table: nn.Embedding, index: Tensor, row_weights: Tensor | None = None) -> Tensor:
    """Σ_n c_{index_n} ‖table.weight[index_n]‖² over all entries of `index` (repeats count),
    with c = `row_weights` [n_rows] (1 when None).

    When the batch is large relative to the table, weighting each table row's squared norm
    by its count in the batch is the same sum with far less work than gathering every entry.
    """
    weight = table.weight
    index = index.reshape(-1)
    if index.numel() * 4 < weight.shape[0]:
        norms = weight.index_select(0, index).pow(2).sum(1)  # [N]
        return (norms if row_weights is None else norms * row_weights.index_select(0, index)).sum()
    counts = torch.bincount(index, minlength=weight.shape[0]).to(weight.dtype)  # [n_rows]
    if row_weights is not None:
        counts = counts * row_weights
    return (counts * weight.pow(2).sum(1)).sum()


def check_size(name: str, value: object, minimum: int = 1) -> int:
    """`value` as an int; ValueError naming it unless it is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_finite(name: str, value: object) -> float:
    """`value` as a float; ValueError naming it unless it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_scale(name: str, value: object) -> float:
    """`value` as a float; ValueError naming it unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, Real) or not (math.isfinite(float(value)) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)
