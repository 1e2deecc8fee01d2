"""Nearest items (or users) in factor space.

Which vectors: the model's `item_factors()` / `user_factors()` — the same augmented rows whose
dot product is the score — so any model exposing the two takes part. For a biased `MF` these
are [q_i, 1, b_i], so the dot similarity is q_i·q_j + 1 + b_i b_j; call `similar_rows` on
`model.item_embedding.weight` for the raw embeddings instead.

Metrics, for query row x_q and candidate x_j:

    dot:     s(q, j) = x_q · x_j
    cosine:  s(q, j) = x_q · x_j / (‖x_q‖ ‖x_j‖)        (a zero row has similarity 0)

Dot favours long vectors: in most factor models the norm grows with popularity (or confidence),
so dot neighbours drift to the popular head. Cosine compares direction only, so a short,
well-aligned (niche) vector beats a long one pointing slightly away. The query row itself is
never returned; ties go to the lower id (ranking rule of `mfzoo.retrieval.topk`). Both need a
`Factorised` model: one without factors raises `ContractError` naming what is missing.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from mfzoo.models.contract import Factorised, missing
from mfzoo.retrieval.topk import topk

Metric = Literal["cosine", "dot"]


@torch.no_grad()
def similar_rows(
    vectors: Tensor,
    queries: Tensor,
    k: int,
    metric: Metric = "cosine",
    chunk_size: int = 2048,
) -> tuple[Tensor, Tensor]:
    """The k rows of `vectors` [n, D] most similar to rows `queries` [m] (themselves excluded).

    Returns:
        scores [m, k], ids [m, k] (int64), best first; −∞ / −1 pad when n − 1 < k.
    """
    if metric not in ("cosine", "dot"):
        raise ValueError(f"metric must be 'cosine' or 'dot', got {metric!r}")
    vectors = vectors.detach()
    if metric == "cosine":
        # [n, D] unit rows (zero rows stay 0)
        vectors = torch.nn.functional.normalize(vectors, dim=1)
    queries = torch.as_tensor(queries, dtype=torch.int64)
    if len(queries) and (int(queries.min()) < 0 or int(queries.max()) >= vectors.shape[0]):
        raise ValueError(
            f"query ids must lie in 0..{vectors.shape[0] - 1}, "
            f"got {int(queries.min())}..{int(queries.max())}"
        )

    def score_fn(rows: Tensor) -> Tensor:
        rows = rows.to(vectors.device)
        scores = vectors[rows] @ vectors.T  # [c, n]
        scores[torch.arange(len(rows), device=rows.device), rows] = -math.inf  # not itself
        return scores

    return topk(score_fn, queries, k, None, chunk_size)


def similar_items(
    model: nn.Module,
    items: Tensor,
    k: int,
    metric: Metric = "cosine",
    chunk_size: int = 2048,
) -> tuple[Tensor, Tensor]:
    """The k items nearest to each of `items` [m] over `model.item_factors()` (module docstring).
    Returns scores [m, k], item ids [m, k]."""
    if not isinstance(model, Factorised):
        raise missing(model, Factorised, "item similarity")
    return similar_rows(model.item_factors(), items, k, metric, chunk_size)


def similar_users(
    model: nn.Module,
    users: Tensor,
    k: int,
    metric: Metric = "cosine",
    chunk_size: int = 2048,
) -> tuple[Tensor, Tensor]:
    """The k users nearest to each of `users` [m] over `model.user_factors()` (module docstring).
    Returns scores [m, k], user ids [m, k]."""
    if not isinstance(model, Factorised):
        raise missing(model, Factorised, "user similarity")
    return similar_rows(model.user_factors(), users, k, metric, chunk_size)
