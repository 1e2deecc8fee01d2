"""Exact top-K recommendation from any factor model.

A model takes part by exposing `user_factors() -> U [n_users, D']` and `item_factors() ->
V [n_items, D']` whose product is its exact score (biases folded into extra columns, see
`mfzoo.models.mf.MF.user_factors`):

    score(u, i) = U_u · V_i,        top-K(u) = argmax-K_{i ∈ C \\ S_u} score(u, i)

with S_u the items user u has seen (never recommended) and C the allowed candidates (all items
by default). Ranking, ties (lower item id first), chunking and the −∞ / −1 padding of short
lists are those of `mfzoo.evaluation.ranking.topk`, which does the work here.

Users who arrived after training are given by their events instead of ids (an `Interactions`
from `mfzoo.retrieval.cold.new_users`): their rows U_u come from the model's fold-in, and S_u
is then the items they gave.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mfzoo.data.interactions import Interactions
from mfzoo.evaluation.ranking import ExclusionRows, ScoreFn, factor_scores, topk
from mfzoo.retrieval.cold import FoldIn, fold_in_users


@torch.no_grad()
def recommend(
    model: nn.Module, users: Tensor | Interactions, k: int, seen: Interactions | ExclusionRows | None = None,
    candidates: Tensor | None = None, chunk_size: int = 2048, *, exclude_seen: bool = True,
    fold_in: FoldIn | None = None,
) -> tuple[Tensor, Tensor]:
    """The K best items of each of `users` by the model's own score `user_factors() @ item_factors()ᵀ`.

    Args:
        model: any module with `user_factors()` [n_users, D'] and `item_factors()` [n_items, D'].
        users: [n] int64 user ids in the model's id space, or the events of n new users (an
            `Interactions` in the model's item space, users 0..n−1: `new_users(train, items,
            values)`), folded in by `fold_in`.
        k: list length.
        seen: interactions in the model's id space (usually the training set); each user's
            items in it are never recommended. Pass an `ExclusionRows` to reuse it across calls.
            Not used for new users, whose seen items are their given events.
        candidates: [C] int64 item ids allowed (e.g. in stock); every other item is masked.
        chunk_size: users scored at once (memory ~ chunk_size × n_items).
        exclude_seen: False ranks seen items too (`seen`, or a new user's events, ignored).
        fold_in: new users only: `(model, new) -> [n, D']` factors, matching how the model was
            trained (see `mfzoo.retrieval.cold`; e.g. `ridge_fold_in(l2, l2_bias)` for an
            MSE-trained MF, `ALSSolver(...).fold_in` for ALS / iALS). Default: the model's own
            parameter-free fold-in where it has one (truncated SVD), else a ValueError naming
            the model.

    Returns:
        scores [n, k], items [n, k] (int64), best first; a user with fewer than k allowed
        items gets score −∞ and item −1 in the tail. Row j of a new-user query is user j
        (`users.user_ids[j]`).
    """
    if isinstance(users, Interactions):
        vectors = fold_in_users(model, users, fold_in)  # [n, D']
        return recommend_factors(vectors, model, k, users if exclude_seen else None, candidates, chunk_size)
    if fold_in is not None:
        raise ValueError("fold_in is for new users given as Interactions, not for user ids")
    return recommend_factors(model.user_factors().detach(), model, k, seen if exclude_seen else None,
                             candidates, chunk_size, users=users)


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
