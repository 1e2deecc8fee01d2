"""Exact top-K recommendation from any factor model.

A model takes part by exposing `user_factors() -> U [n_users, D']` and `item_factors() ->
V [n_items, D']` whose product is its exact score (biases folded into extra columns, see
`mfzoo.models.mf.MF.user_factors`):

    score(u, i) = U_u · V_i,        top-K(u) = argmax-K_{i ∈ C \\ S_u} score(u, i)

with S_u the items user u has seen (never recommended) and C the allowed candidates (all items
by default). Ranking, ties (lower item id first), chunking and the −∞ / −1 padding of short
lists are those of `mfzoo.evaluation.ranking.topk`, which does the work here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mfzoo.data.interactions import Interactions
from mfzoo.evaluation.ranking import ExclusionRows, ScoreFn, factor_scores, topk


@torch.no_grad()
def recommend(
    model: nn.Module, users: Tensor, k: int, seen: Interactions | ExclusionRows | None = None,
    candidates: Tensor | None = None, chunk_size: int = 2048,
) -> tuple[Tensor, Tensor]:
    """The K best items of each of `users` by the model's own score `user_factors() @ item_factors()ᵀ`.

    Args:
        model: any module with `user_factors()` [n_users, D'] and `item_factors()` [n_items, D'].
        users: [n] int64 user ids in the model's id space.
        k: list length.
        seen: interactions in the model's id space (usually the training set); each user's
            items in it are never recommended. Pass an `ExclusionRows` to reuse it across calls.
        candidates: [C] int64 item ids allowed (e.g. in stock); every other item is masked.
        chunk_size: users scored at once (memory ~ chunk_size × n_items).

    Returns:
        scores [n, k], items [n, k] (int64), best first; a user with fewer than k allowed
        items gets score −∞ and item −1 in the tail.
    """
    return recommend_factors(model.user_factors().detach(), model, k, seen, candidates, chunk_size,
                             users=users)


@torch.no_grad()
def recommend_factors(
    user_vectors: Tensor, model: nn.Module | Tensor, k: int,
    seen_items: Interactions | ExclusionRows | None = None, candidates: Tensor | None = None,
    chunk_size: int = 2048, users: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-K for users given as factor rows, e.g. cold users from `mfzoo.solvers.fold_in`.

    Args:
        user_vectors: [n, D'] user factors, row j scored as `user_vectors[j] @ V.T`.
        model: a model with `item_factors()` [n_items, D'], or V itself as a tensor.
        k: list length.
        seen_items: interactions whose user ids are rows of `user_vectors` (e.g. the
            `Interactions` the users were folded in from) and item ids the model's; never
            recommended.
        candidates: [C] int64 allowed item ids (others masked).
        chunk_size: rows scored at once.
        users: [m] rows of `user_vectors` to rank (default: all n, in order).

    Returns:
        scores [m, k], items [m, k] as `recommend`.
    """
    item_vectors = (model if isinstance(model, Tensor) else model.item_factors()).detach()  # [n_items, D']
    if users is None:
        users = torch.arange(user_vectors.shape[0])  # [n]
    users = torch.as_tensor(users, dtype=torch.int64)
    if len(users) and (int(users.min()) < 0 or int(users.max()) >= user_vectors.shape[0]):
        raise ValueError(f"user ids must lie in 0..{user_vectors.shape[0] - 1}, "
                         f"got {int(users.min())}..{int(users.max())}")
    score_fn = factor_scores(user_vectors.detach(), item_vectors)
    if candidates is not None:
        score_fn = _restrict(score_fn, candidates, item_vectors.shape[0])
    return topk(score_fn, users, k, seen_items, chunk_size)


def candidate_mask(candidates: Tensor, n_items: int) -> Tensor:
    """[n_items] bool, True for the item ids in `candidates` [C]; raises on ids out of range."""
    candidates = torch.as_tensor(candidates).reshape(-1)
    if candidates.is_floating_point() or candidates.dtype == torch.bool:
        raise ValueError(f"candidates must be integer item ids, got {candidates.dtype}")
    candidates = candidates.long()
    if len(candidates) and (int(candidates.min()) < 0 or int(candidates.max()) >= n_items):
        raise ValueError(f"candidate ids must lie in 0..{n_items - 1}, "
                         f"got {int(candidates.min())}..{int(candidates.max())}")
    allowed = torch.zeros(n_items, dtype=torch.bool)  # [n_items]
    allowed[candidates] = True
    return allowed


def _restrict(score_fn: ScoreFn, candidates: Tensor, n_items: int) -> ScoreFn:
    """`score_fn` with the items outside `candidates` scored −∞."""
    blocked = ~candidate_mask(candidates, n_items)  # [n_items]

    def restricted(users: Tensor) -> Tensor:
        scores = score_fn(users)  # [c, n_items], a fresh matmul result
        return scores.masked_fill_(blocked.to(scores.device), -math.inf)

    return restricted
