"""Row gathers and row penalties for embedding tables, fast on CPU and GPU (the checks of the
sizes and scales a model is built with are `mfzoo.checks`).

`nn.Embedding`'s own backward on CPU is several times slower than `index_select`'s
(a sort-based dense scatter), so the models keep `nn.Embedding` as the parameter
container and gather through these helpers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def rows(table: nn.Embedding, index: Tensor) -> Tensor:
    """`table.weight[index]`: shape `[*index.shape, dim]`. A table built with `sparse=True`
    gets a sparse gradient (only the gathered rows), for an optimizer of sparse gradients
    (`optim=sparse_adam`): a step then costs O(batch · dim), not O(table)."""
    if table.sparse:
        flat = F.embedding(index.reshape(-1), table.weight, sparse=True)  # [N, D]
    else:
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
    # a sparse table: never touch all its rows
    if table.sparse or index.numel() * 4 < weight.shape[0]:
        norms = rows(table, index).pow(2).sum(1)  # [N]
        return (norms if row_weights is None else norms * row_weights.index_select(0, index)).sum()
    counts = torch.bincount(index, minlength=weight.shape[0]).to(weight.dtype)  # [n_rows]
    if row_weights is not None:
        counts = counts * row_weights
    return (counts * weight.pow(2).sum(1)).sum()


def add_id_tables(
    model: nn.Module,
    n_users: int,
    n_items: int,
    dim: int,
    init_std: float,
    biases: bool,
    sparse: bool = False,
) -> None:
    """The id tables of a factor model, as attributes of `model`: `user_embedding` [U, dim] and
    `item_embedding` [I, dim] drawn from N(0, init_std²), and with `biases` `user_bias` [U, 1],
    `item_bias` [I, 1] at zero and a `global_mean` buffer (0 until the model's `prepare`);
    `sparse`: tables whose gradients are sparse (see `rows`)."""
    model.user_embedding = nn.Embedding(n_users, dim, sparse=sparse)
    model.item_embedding = nn.Embedding(n_items, dim, sparse=sparse)
    nn.init.normal_(model.user_embedding.weight, std=init_std)
    nn.init.normal_(model.item_embedding.weight, std=init_std)
    if biases:
        model.user_bias = nn.Embedding(n_users, 1, sparse=sparse)
        model.item_bias = nn.Embedding(n_items, 1, sparse=sparse)
        nn.init.zeros_(model.user_bias.weight)
        nn.init.zeros_(model.item_bias.weight)
    model.register_buffer("global_mean", torch.zeros(()))
