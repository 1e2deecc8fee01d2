"""Row gathers and row penalties for embedding tables, fast on CPU and GPU.

`nn.Embedding`'s own backward on CPU is several times slower than `index_select`'s
(a sort-based dense scatter), so the models keep `nn.Embedding` as the parameter
container and gather through these helpers.
"""

from __future__ import annotations

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
