"""Exact full-catalogue top-K: the core that ranking evaluation and `recommend` share.

Every user is scored against every item, chunk by chunk: a `score_fn(users [c]) -> [c, n_items]`
gives the scores of a chunk of users, the items the user was trained on (or has seen) are set to
−∞, and `torch.topk` picks the K best. Memory is bounded by one chunk of scores (`chunk_size ×
n_items`).

    top-K(u) = argmax-K_{i ∈ C \\ S_u} score(u, i)

with S_u the items user u has seen (never recommended) and C the allowed candidates (all items
by default). Ranking rule, used everywhere: items by score descending, ties by the lower item id
(the order `sorted(range(n_items), key=lambda i: -score[i])` gives). Items scored −∞ (excluded,
or scored −∞ by the model) are never recommended: if a user has fewer than K other items, the
tail of its list holds score −∞ and item id −1. NaN scores raise `NonFiniteScores`.

Any model takes part (`model_scores`): one that is `Factorised` (`user_factors() -> U [n_users,
D']`, `item_factors() -> V [n_items, D']`, biases folded into extra columns, see
`mfzoo.models.mf.MF.user_factors`) is scored by the matmul score(u, i) = U_u · V_i; any other
`Scorer` by its own `forward` on every (user, item) pair of the chunk.

Users who arrived after training are given by their events instead of ids (an `Interactions`
from `mfzoo.retrieval.cold.new_users`): their rows U_u come from the model's fold-in, and S_u
is then the items they gave.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from mfzoo.data.batch import Batch
from mfzoo.data.interactions import Interactions
from mfzoo.data.keys import csr_rows
from mfzoo.models.contract import Factorised, Scorer, missing
from mfzoo.retrieval.cold import FoldIn, fold_in_users

ScoreFn = Callable[[Tensor], Tensor]
"""`score_fn(users [c] int64) -> scores [c, n_items]`. The result may be overwritten in place
(the excluded items are set to −∞), so return a fresh tensor, as a matmul does; a view
(`tensor._base is not None`) is copied first."""

# (user, item) pairs per `forward` call of a model without factors: its activations are a few
# floats per pair per layer (an MLP of width 64: 64), so 2^18 pairs keep one layer at 64 MiB of
# float32 whatever the catalogue size, while a call still covers ~26 users of a 10k catalogue
FORWARD_PAIRS = 1 << 18


class NonFiniteScores(ValueError):
    """A score function returned NaN: the model's scores are not numbers (a diverged model)."""


def factor_scores(user_factors: Tensor, item_factors: Tensor) -> ScoreFn:
    """Score function of a factor model: scores = U[users] @ Vᵀ, with U [n_users, D] and
    V [n_items, D], computed on the factors' device."""
    if (
        user_factors.ndim != 2
        or item_factors.ndim != 2
        or user_factors.shape[1] != item_factors.shape[1]
    ):
        raise ValueError(
            f"factors must be [n_users, D] and [n_items, D], got {tuple(user_factors.shape)} "
            f"and {tuple(item_factors.shape)}"
        )

    def score_fn(users: Tensor) -> Tensor:
        return user_factors[users.to(user_factors.device)] @ item_factors.T  # [c, n_items]

    return score_fn


@torch.no_grad()
def model_scores(model: nn.Module, forward_pairs: int = FORWARD_PAIRS) -> ScoreFn:
    """Score function of any `Scorer`: users [c] -> their scores of the whole catalogue [c,
    n_items].

    A `Factorised` model takes the fast path, `factor_scores(user_factors(), item_factors())`
    (factors computed once, here). Any other model is called as it is trained,
    `model(Batch(users=[b], items=[b, n_items]))` with row j of `items` = 0..n_items−1, on
    slices of b = max(1, forward_pairs // n_items) users of each chunk, so that one call sees
    about `forward_pairs` pairs whatever the chunk size. Scores are the model's in the mode it is
    in (Lightning evaluates in eval mode; call `model.eval()` for dropout-free scores yourself).
    """
    if not isinstance(model, Scorer):
        raise missing(model, Scorer, "ranking evaluation and top-K recommendation")
    if isinstance(model, Factorised):
        return factor_scores(model.user_factors().detach(), model.item_factors().detach())
    if forward_pairs < 1:
        raise ValueError(f"forward_pairs must be >= 1, got {forward_pairs}")
    n_items = int(model.n_items)
    per_call = max(1, forward_pairs // max(n_items, 1))
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    # [per_call, n_items] item ids per row
    catalogue = torch.arange(n_items, device=device).repeat(per_call, 1)

    @torch.no_grad()
    def score_fn(users: Tensor) -> Tensor:
        users = users.to(device)
        if len(users) == 0:
            return torch.empty(0, n_items, device=device)
        parts = []
        for start in range(0, len(users), per_call):
            rows = users[start : start + per_call]  # [b]
            scores = model(Batch(users=rows, items=catalogue[: len(rows)]))  # [b, n_items]
            if scores.shape != (len(rows), n_items):
                raise ValueError(
                    f"{type(model).__name__}.forward returned shape {tuple(scores.shape)} for "
                    f"{len(rows)} users x {n_items} items; expected [users, items]"
                )
            parts.append(scores)
        return parts[0] if len(parts) == 1 else torch.cat(parts)  # [c, n_items]

    return score_fn


class ExclusionRows:
    """The distinct items of each user of `data`, as CSR rows built once: `indptr` [n_users + 1],
    `indices` [P] (item ids, ascending within a row), on the device of `data`."""

    def __init__(self, data: Interactions) -> None:
        rows = csr_rows(data.users, data.items, data.n_users, data.n_items)
        self.indptr, self.indices = rows.indptr, rows.indices  # [n_users + 1], [P]
        self.n_users, self.n_items = data.n_users, data.n_items

    def to(self, device: torch.device) -> ExclusionRows:
        """These exclusion rows on `device` (moved in place once)."""
        if self.indptr.device != device:
            self.indptr, self.indices = self.indptr.to(device), self.indices.to(device)
        return self

    def keys(self) -> Tensor:
        """The sorted distinct keys user · n_items + item of the rows' pairs [P] (what
        `Interactions.pair_keys` gives, without sorting again)."""
        users = torch.repeat_interleave(
            torch.arange(self.n_users, device=self.indptr.device),
            self.indptr.diff(),
            output_size=len(self.indices),
        )  # [P]
        return users * self.n_items + self.indices

    def mask_(self, scores: Tensor, users: Tensor) -> Tensor:
        """Set scores[j, i] = −∞ for every item i of user users[j], in place (flat CSR gather,
        no loop over users). Returns the row lengths [c]."""
        starts = self.indptr[users]  # [c]
        lengths = self.indptr[users + 1] - starts  # [c]
        total = int(lengths.sum())
        rows = torch.repeat_interleave(
            torch.arange(len(users), device=users.device), lengths, output_size=total
        )  # [T] row of each excluded pair
        # position in `indices`: start of its row + its offset in the row
        shift = torch.repeat_interleave(
            starts - (torch.cumsum(lengths, 0) - lengths), lengths, output_size=total
        )  # [T]
        cols = self.indices[torch.arange(total, device=users.device) + shift]  # [T]
        scores.index_put_(
            (rows, cols), torch.tensor(-math.inf, dtype=scores.dtype, device=scores.device)
        )
        return lengths


def iter_topk(
    score_fn: ScoreFn,
    users: Tensor,
    k: int,
    exclude: Interactions | ExclusionRows | None = None,
    chunk_size: int = 2048,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """`topk` one chunk at a time: yields (users [c], scores [c, k], items [c, k]) on the
    device of the scores, chunks of at most `chunk_size` users in the order of `users`."""
    if k < 1:
        raise ValueError(f"k (the list length) must be >= 1, got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    users = torch.as_tensor(users, dtype=torch.int64)
    rows = ExclusionRows(exclude) if isinstance(exclude, Interactions) else exclude
    if (
        rows is not None
        and len(users)
        and (int(users.min()) < 0 or int(users.max()) >= rows.n_users)
    ):
        raise ValueError(
            f"user ids must lie in 0..{rows.n_users - 1}, got "
            f"{int(users.min())}..{int(users.max())}"
        )
    for start in range(0, len(users), chunk_size):
        chunk = users[start : start + chunk_size]  # [c]
        with torch.no_grad():
            scores = score_fn(chunk)  # [c, n_items]
        if scores.ndim != 2 or scores.shape[0] != len(chunk):
            raise ValueError(
                f"score_fn returned shape {tuple(scores.shape)} for {len(chunk)} users"
            )
        if rows is not None and scores.shape[1] != rows.n_items:
            raise ValueError(
                f"score_fn returned {scores.shape[1]} items, the exclusions have {rows.n_items}"
            )
        if rows is not None and (scores._base is not None or not scores.is_contiguous()):
            # never write into the caller's tensor
            scores = scores.clone(memory_format=torch.contiguous_format)
        chunk = chunk.to(scores.device)
        if rows is not None:
            rows.to(scores.device).mask_(scores, chunk)
        top_scores, top_items = _topk_lowest_id(scores, k)  # [c, k], [c, k]
        if torch.isnan(top_scores).any():  # topk ranks NaN above everything, so one shows here
            bad = int(chunk[torch.isnan(top_scores).any(1)][0])
            raise NonFiniteScores(f"score_fn returned NaN scores (first for user {bad})")
        yield chunk, top_scores, top_items


def topk(
    score_fn: ScoreFn,
    users: Tensor,
    k: int,
    exclude: Interactions | ExclusionRows | None = None,
    chunk_size: int = 2048,
) -> tuple[Tensor, Tensor]:
    """The K best items of each user over the whole catalogue.

    Args:
        score_fn: `users [c] -> scores [c, n_items]` (see `ScoreFn`; `model_scores(model)` for
            a model); never called with more than `chunk_size` users, so memory stays at one
            [chunk_size, n_items] block.
        users: [n] int64 user ids.
        k: list length (may exceed n_items; the tail is then padded).
        exclude: pairs never to recommend (usually the training set): their scores are set
            to −∞ before `torch.topk`.
        chunk_size: users scored at once.

    Returns:
        scores [n, k] and items [n, k] (int64), best first, ties by the lower item id. Where a
        user has fewer than k items that are not excluded (or not scored −∞), the tail holds
        score −∞ and item −1.
    """
    parts = list(iter_topk(score_fn, users, k, exclude, chunk_size))
    if not parts:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.int64)
    return torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])


def _topk_lowest_id(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """`torch.topk` made exact under ties: order by (score desc, item id asc); items scored −∞
    become id −1. One k+1 selection; the rows whose k-th and (k+1)-th scores tie (rare for
    continuous scores, common for a popularity ranking) are resolved against their full row."""
    c, n = scores.shape
    kk = min(k + 1, n)
    vals, idx = torch.topk(scores, kk, dim=1)  # [c, kk], sorted descending
    idx, order = idx.sort(dim=1)  # ids ascending ...
    vals = vals.gather(1, order)
    vals, order = vals.sort(dim=1, descending=True, stable=True)  # ... then scores descending
    idx = idx.gather(1, order)  # [c, kk] ties within the selection by lower id
    if kk > k:
        tied = (vals[:, k - 1] == vals[:, k]) & (vals[:, k - 1] > -math.inf)  # [c]
        if tied.any():
            rows = tied.nonzero().squeeze(1)  # [t]
            threshold = vals[rows, k - 1]  # [t]
            n_above = (vals[rows, :k] > threshold.unsqueeze(1)).sum(1)  # [t] all in the selection
            equal = scores[rows] == threshold.unsqueeze(1)  # [t, n]
            rank = equal.cumsum(1)  # [t, n] 1-based rank among the tied, by id
            take = equal & (rank <= (k - n_above).unsqueeze(1))  # [t, n]
            r, col = take.nonzero(as_tuple=True)  # [m], [m]
            sub = idx[rows]  # [t, kk]
            sub[r, n_above[r] + rank[r, col] - 1] = col
            idx[rows] = sub
    vals, idx = vals[:, :k], idx[:, :k]
    if k > n:  # pad a list longer than the catalogue
        vals = torch.cat([vals, vals.new_full((c, k - n), -math.inf)], 1)
        idx = torch.cat([idx, idx.new_full((c, k - n), -1)], 1)
    return vals, idx.masked_fill(vals == -math.inf, -1)  # [c, k], [c, k]


# recommendation -------------------------------------------------------------------------------
@torch.no_grad()
def recommend(
    model: nn.Module,
    users: Tensor | Interactions,
    k: int,
    seen: Interactions | ExclusionRows | None = None,
    candidates: Tensor | None = None,
    chunk_size: int = 2048,
    *,
    exclude_seen: bool = True,
    fold_in: FoldIn | None = None,
) -> tuple[Tensor, Tensor]:
    """The K best items of each of `users` by the model's own score (`model_scores`: the
    matmul `user_factors() @ item_factors()ᵀ` of a `Factorised` model, else its `forward`).

    Args:
        model: any `Scorer` (`mfzoo.models.contract`); new users need a `Factorised` one.
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
            MSE-trained MF, `ALSSolver(...).fold_in` / `IALSSolver(...).fold_in` for ALS /
            iALS). Default: the model's own parameter-free fold-in where it has one (truncated
            SVD), else a ValueError naming the model.

    Returns:
        scores [n, k], items [n, k] (int64), best first; a user with fewer than k allowed
        items gets score −∞ and item −1 in the tail. Row j of a new-user query is user j
        (`users.user_ids[j]`).
    """
    if isinstance(users, Interactions):
        if not isinstance(model, Factorised):
            raise missing(
                model, Factorised, "recommending for new users (a fold-in gives user factors)"
            )
        vectors = fold_in_users(model, users, fold_in)  # [n, D']
        return recommend_factors(
            vectors, model, k, users if exclude_seen else None, candidates, chunk_size
        )
    if fold_in is not None:
        raise ValueError("fold_in is for new users given as Interactions, not for user ids")
    if isinstance(model, Factorised):
        return recommend_factors(
            model.user_factors().detach(),
            model,
            k,
            seen if exclude_seen else None,
            candidates,
            chunk_size,
            users=users,
        )
    users = torch.as_tensor(users, dtype=torch.int64)
    if not isinstance(model, Scorer):
        raise missing(model, Scorer, "recommend")
    if len(users) and (int(users.min()) < 0 or int(users.max()) >= model.n_users):
        raise ValueError(
            f"user ids must lie in 0..{model.n_users - 1}, got "
            f"{int(users.min())}..{int(users.max())}"
        )
    score_fn = model_scores(model)
    if candidates is not None:
        score_fn = restrict(score_fn, candidates, model.n_items)
    return topk(score_fn, users, k, seen if exclude_seen else None, chunk_size)


@torch.no_grad()
def recommend_factors(
    user_vectors: Tensor,
    model: nn.Module | Tensor,
    k: int,
    seen_items: Interactions | ExclusionRows | None = None,
    candidates: Tensor | None = None,
    chunk_size: int = 2048,
    users: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-K for users given as factor rows, e.g. cold users from `mfzoo.solvers.fold_in`.

    Args:
        user_vectors: [n, D'] user factors, row j scored as `user_vectors[j] @ V.T`.
        model: a `Factorised` model (`item_factors()` [n_items, D']), or V itself as a tensor.
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
    if not isinstance(model, (Tensor, Factorised)):
        raise missing(model, Factorised, "recommend_factors")
    # [n_items, D']
    item_vectors = (model if isinstance(model, Tensor) else model.item_factors()).detach()
    if users is None:
        users = torch.arange(user_vectors.shape[0])  # [n]
    users = torch.as_tensor(users, dtype=torch.int64)
    if len(users) and (int(users.min()) < 0 or int(users.max()) >= user_vectors.shape[0]):
        raise ValueError(
            f"user ids must lie in 0..{user_vectors.shape[0] - 1}, "
            f"got {int(users.min())}..{int(users.max())}"
        )
    score_fn = factor_scores(user_vectors.detach(), item_vectors)
    if candidates is not None:
        score_fn = restrict(score_fn, candidates, item_vectors.shape[0])
    return topk(score_fn, users, k, seen_items, chunk_size)


def candidate_mask(candidates: Tensor, n_items: int) -> Tensor:
    """[n_items] bool, True for the item ids in `candidates` [C]; raises on ids out of range."""
    candidates = torch.as_tensor(candidates).reshape(-1)
    if candidates.is_floating_point() or candidates.dtype == torch.bool:
        raise ValueError(f"candidates must be integer item ids, got {candidates.dtype}")
    candidates = candidates.long()
    if len(candidates) and (int(candidates.min()) < 0 or int(candidates.max()) >= n_items):
        raise ValueError(
            f"candidate ids must lie in 0..{n_items - 1}, "
            f"got {int(candidates.min())}..{int(candidates.max())}"
        )
    allowed = torch.zeros(n_items, dtype=torch.bool)  # [n_items]
    allowed[candidates] = True
    return allowed


def restrict(score_fn: ScoreFn, candidates: Tensor, n_items: int) -> ScoreFn:
    """`score_fn` with the items outside `candidates` scored −∞."""
    blocked = ~candidate_mask(candidates, n_items)  # [n_items]

    def restricted(users: Tensor) -> Tensor:
        scores = score_fn(users)  # [c, n_items]
        # never write into the caller's tensor
        if scores._base is not None or not scores.is_contiguous():
            scores = scores.clone(memory_format=torch.contiguous_format)
        return scores.masked_fill_(blocked.to(scores.device), -math.inf)

    return restricted
