"""Full-catalogue top-K ranking and its accuracy metrics (no sampled metrics).

Every user is scored against every item, chunk by chunk: a `score_fn(users [c]) -> [c, n_items]`
gives the scores of a chunk of users, the items the user was trained on are set to −∞, and
`torch.topk` picks the K best. Memory is bounded by one chunk of scores (`chunk_size × n_items`).

Ranking rule, used everywhere here: items by score descending, ties by the lower item id (the
order `sorted(range(n_items), key=lambda i: -score[i])` gives). Items scored −∞ (excluded, or
scored −∞ by the model) are never recommended: if a user has fewer than K other items, the
tail of its list holds score −∞ and item id −1. NaN scores raise `NonFiniteScores`.

Accuracy metrics, for a user u with relevant set Rel_u (its distinct test items, |Rel_u| ≥ 1),
top-K list L_u and rel_r = 1 if the item at rank r is in Rel_u (0 for an id −1):

    recall@K    = |L_u ∩ Rel_u| / |Rel_u|
    precision@K = |L_u ∩ Rel_u| / K                       (K even when the list is shorter)
    ndcg@K      = DCG / IDCG,  DCG = Σ_{r≤K} rel_r / log2(r+1),  IDCG = Σ_{r≤min(K,|Rel_u|)} 1 / log2(r+1)
    map@K       = AP@K = (1 / min(K, |Rel_u|)) Σ_{r≤K} P@r · rel_r
    mrr@K       = 1 / (rank of the first relevant item in L_u), 0 if none
    hitrate@K   = 1 if |L_u ∩ Rel_u| > 0 else 0

each averaged over the users with at least one test item. The beyond-accuracy metrics
(coverage, ARP, Gini, long tail, novelty) are defined in `mfzoo.evaluation.beyond`, which also
holds the most-popular and random baselines.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor

from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions
from mfzoo.evaluation.beyond import ExposureTracker, item_popularity

log = logging.getLogger(__name__)

ScoreFn = Callable[[Tensor], Tensor]
"""`score_fn(users [c] int64) -> scores [c, n_items]`. The result may be overwritten in place
(the excluded items are set to −∞), so return a fresh tensor, as a matmul does; a view
(`tensor._base is not None`) is copied first."""

ACCURACY = ("recall", "precision", "ndcg", "map", "mrr", "hitrate")


class NonFiniteScores(ValueError):
    """A score function returned NaN: the model's scores are not numbers (a diverged model)."""


def check_ranking(settings: Mapping[str, Any], where: str = "ranking") -> dict[str, Any]:
    """The settings of a run's ranking evaluation (`evaluate_ranking` keyword arguments, the
    `ranking` key of a run config), checked before anything runs: `ks` a non-empty list of
    integers >= 1, `chunk_size` an integer >= 1, `head_fraction` in [0, 1], no unknown keys.
    ValueError naming the setting (as `where.key`) and the value; returns them as a dict."""
    settings = dict(settings)
    known = set(inspect.signature(evaluate_ranking).parameters) - {"score_fn", "train", "test"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    ks = settings.get("ks", (10, 20))
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence) or not ks:
        raise ValueError(f"{where}.ks must be a non-empty list of list lengths (e.g. [10, 20]), got {ks!r}")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise ValueError(f"{where}.ks: every list length K must be an integer >= 1, got {k!r} in {list(ks)!r}")
    chunk_size = settings.get("chunk_size", 2048)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral) or chunk_size < 1:
        raise ValueError(f"{where}.chunk_size must be an integer >= 1, got {chunk_size!r}")
    head_fraction = settings.get("head_fraction", 0.2)
    if isinstance(head_fraction, bool) or not isinstance(head_fraction, Real) or not 0.0 <= head_fraction <= 1.0:
        raise ValueError(f"{where}.head_fraction must be a number in [0, 1], got {head_fraction!r}")
    return settings


def factor_scores(user_factors: Tensor, item_factors: Tensor) -> ScoreFn:
    """Score function of a factor model: scores = U[users] @ Vᵀ, with U [n_users, D] and
    V [n_items, D], computed on the factors' device."""
    if user_factors.ndim != 2 or item_factors.ndim != 2 or user_factors.shape[1] != item_factors.shape[1]:
        raise ValueError(f"factors must be [n_users, D] and [n_items, D], got {tuple(user_factors.shape)} "
                         f"and {tuple(item_factors.shape)}")

    def score_fn(users: Tensor) -> Tensor:
        return user_factors[users.to(user_factors.device)] @ item_factors.T  # [c, n_items]

    return score_fn


def pair_keys(data: Interactions) -> Tensor:
    """Sorted distinct keys user · n_items + item of the (user, item) pairs of `data`, on CPU
    (repeated events count once)."""
    return data.pair_keys().cpu()  # [P]


class ExclusionRows:
    """The distinct items of each user of `data`, as CSR rows built once: `indptr` [n_users + 1],
    `indices` [P] (item ids, ascending within a row)."""

    def __init__(self, data: Interactions) -> None:
        keys = pair_keys(data)  # [P]
        self.indices = keys % data.n_items  # [P]
        counts = torch.bincount(keys // data.n_items, minlength=data.n_users)  # [n_users]
        self.indptr = torch.zeros(data.n_users + 1, dtype=torch.int64)  # [n_users + 1]
        torch.cumsum(counts, 0, out=self.indptr[1:])
        self.n_users, self.n_items = data.n_users, data.n_items

    def to(self, device: torch.device) -> ExclusionRows:
        if self.indptr.device != device:
            self.indptr, self.indices = self.indptr.to(device), self.indices.to(device)
        return self

    def mask_(self, scores: Tensor, users: Tensor) -> Tensor:
        """Set scores[j, i] = −∞ for every item i of user users[j], in place (flat CSR gather,
        no loop over users). Returns the row lengths [c]."""
        starts = self.indptr[users]  # [c]
        lengths = self.indptr[users + 1] - starts  # [c]
        total = int(lengths.sum())
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths,
                                       output_size=total)  # [T] row of each excluded pair
        # position in `indices`: start of its row + its offset in the row
        shift = torch.repeat_interleave(starts - (torch.cumsum(lengths, 0) - lengths), lengths,
                                        output_size=total)  # [T]
        cols = self.indices[torch.arange(total, device=users.device) + shift]  # [T]
        scores.index_put_((rows, cols), torch.tensor(-math.inf, dtype=scores.dtype, device=scores.device))
        return lengths


def iter_topk(
    score_fn: ScoreFn, users: Tensor, k: int, exclude: Interactions | ExclusionRows | None = None,
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
    if rows is not None and len(users) and (int(users.min()) < 0 or int(users.max()) >= rows.n_users):
        raise ValueError(f"user ids must lie in 0..{rows.n_users - 1}, got {int(users.min())}..{int(users.max())}")
    for start in range(0, len(users), chunk_size):
        chunk = users[start:start + chunk_size]  # [c]
        with torch.no_grad():
            scores = score_fn(chunk)  # [c, n_items]
        if scores.ndim != 2 or scores.shape[0] != len(chunk):
            raise ValueError(f"score_fn returned shape {tuple(scores.shape)} for {len(chunk)} users")
        if rows is not None and scores.shape[1] != rows.n_items:
            raise ValueError(f"score_fn returned {scores.shape[1]} items, the exclusions have {rows.n_items}")
        if rows is not None and (scores._base is not None or not scores.is_contiguous()):
            scores = scores.clone(memory_format=torch.contiguous_format)  # never write into the caller's tensor
        chunk = chunk.to(scores.device)
        if rows is not None:
            rows.to(scores.device).mask_(scores, chunk)
        top_scores, top_items = _topk_lowest_id(scores, k)  # [c, k], [c, k]
        if torch.isnan(top_scores).any():  # topk ranks NaN above everything, so one shows here
            bad = int(chunk[torch.isnan(top_scores).any(1)][0])
            raise NonFiniteScores(f"score_fn returned NaN scores (first for user {bad})")
        yield chunk, top_scores, top_items


def topk(
    score_fn: ScoreFn, users: Tensor, k: int, exclude: Interactions | None = None, chunk_size: int = 2048,
) -> tuple[Tensor, Tensor]:
    """The K best items of each user over the whole catalogue.

    Args:
        score_fn: `users [c] -> scores [c, n_items]` (see `ScoreFn`); never called with more
            than `chunk_size` users, so memory stays at one [chunk_size, n_items] block.
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


def evaluate_ranking(
    score_fn: ScoreFn, train: Interactions, test: Interactions, ks: Sequence[int] = (10, 20),
    chunk_size: int = 2048, exclude_train: bool = True, allow_overlap: bool = False,
    head_fraction: float = 0.2,
) -> dict[str, float]:
    """Full-catalogue ranking metrics of `score_fn` on `test`, trained on `train`.

    Evaluates the users with at least one test event; relevance is the distinct test pairs.
    For every K in `ks`: `recall@K`, `precision@K`, `ndcg@K`, `map@K`, `mrr@K`, `hitrate@K`
    (module docstring) averaged over those users, and `coverage@K`, `arp@K`, `gini@K`,
    `long_tail@K`, `novelty@K` over their lists (`mfzoo.evaluation.beyond`). Also
    `n_users_evaluated` and `seconds`. Accumulation is in float64 on the device of the scores.

    Args:
        score_fn: `users [c] -> scores [c, n_items]` (see `ScoreFn`).
        train, test: one id space (same n_users and n_items, e.g. parts of one split).
        ks: list lengths; one top-max(ks) per chunk serves them all.
        chunk_size: users scored at once (memory ~ chunk_size × n_items scores).
        exclude_train: never recommend a user's training items (the usual protocol).
        allow_overlap: accept test pairs that are also training pairs; otherwise they raise
            `DataError` (leakage). With `exclude_train` such a pair can never be hit.
        head_fraction: share of the catalogue that is the popularity head (for `long_tail@K`).

    Raises:
        DataError: different id spaces, an empty test set, or (unless `allow_overlap`) test
            pairs that are training pairs, naming how many and the first (lowest user, item).
    """
    started = time.perf_counter()
    check_ranking({"ks": list(ks), "chunk_size": chunk_size, "head_fraction": head_fraction}, where="evaluate_ranking")
    ks = sorted({int(k) for k in ks})
    if (train.n_users, train.n_items) != (test.n_users, test.n_items):
        raise DataError(
            f"train '{train.name}' ({train.n_users} users x {train.n_items} items) and test '{test.name}' "
            f"({test.n_users} x {test.n_items}) are not one id space; split one Interactions into both"
        )
    if len(test) == 0:
        raise DataError(f"test '{test.name}' has no interactions")
    n_users, n_items = train.n_users, train.n_items
    test_keys, train_keys = pair_keys(test), pair_keys(train)  # [P_test], [P_train]
    _check_leakage(test_keys, train_keys, test, allow_overlap)
    users, n_relevant = torch.unique(test_keys // n_items, return_counts=True)  # [n], [n]
    popularity = item_popularity(train)  # [n_items]
    n_cold = int((torch.bincount(train_keys // n_items, minlength=n_users)[users] == 0).sum())
    if n_cold:
        log.warning("%d of %d test users have no training interactions; they are evaluated all the same",
                    n_cold, len(users))
    relevant_count = torch.zeros(n_users, dtype=torch.float64)  # [n_users] |Rel_u|
    relevant_count[users] = n_relevant.double()
    exposure = ExposureTracker(popularity, n_users, ks, head_fraction)
    k_max = ks[-1]
    discount = 1.0 / torch.log2(torch.arange(2, k_max + 2, dtype=torch.float64))  # [k_max] 1/log2(r+1)
    ideal = torch.cumsum(discount, 0)  # [k_max] IDCG for 1..k_max relevant items
    ranks = torch.arange(1, k_max + 1, dtype=torch.float64)  # [k_max]
    totals = torch.zeros(len(ks), len(ACCURACY), dtype=torch.float64)  # [len(ks), 6] sums over users

    exclude = ExclusionRows(train) if exclude_train else None
    for chunk, _, items in iter_topk(score_fn, users.to(test.device), k_max, exclude, chunk_size):
        device = items.device
        if totals.device != device:
            test_keys, relevant_count, discount, ideal, ranks, totals = (
                t.to(device) for t in (test_keys, relevant_count, discount, ideal, ranks, totals))
        keys = chunk.unsqueeze(1) * n_items + items  # [c, k_max]
        pos = torch.searchsorted(test_keys, keys).clamp_(max=len(test_keys) - 1)  # [c, k_max]
        hit = (test_keys[pos] == keys) & (items >= 0)  # [c, k_max] rel_r
        rel = hit.double()  # [c, k_max]
        n_hits = rel.cumsum(1)  # [c, k_max] hits within the first r
        dcg = (rel * discount).cumsum(1)  # [c, k_max]
        ap_sum = (rel * n_hits / ranks).cumsum(1)  # [c, k_max] Σ P@r·rel_r
        first = torch.where(hit, ranks, math.inf).cummin(1).values  # [c, k_max] first hit rank so far
        n_rel = relevant_count[chunk].unsqueeze(1)  # [c, 1]
        for j, k in enumerate(ks):
            m = n_rel.squeeze(1).clamp(max=k)  # [c] min(K, |Rel_u|)
            h = n_hits[:, k - 1]  # [c]
            per_user = torch.stack([
                h / n_rel.squeeze(1), h / k, dcg[:, k - 1] / ideal[m.long() - 1], ap_sum[:, k - 1] / m,
                1.0 / first[:, k - 1], (h > 0).double(),
            ], 1)  # [c, 6]
            totals[j] += per_user.sum(0)
        exposure.update(items)

    n_eval = len(users)
    means = (totals / n_eval).cpu().tolist()
    result: dict[str, float] = {}
    for j, k in enumerate(ks):
        result.update({f"{name}@{k}": value for name, value in zip(ACCURACY, means[j])})
    result.update(exposure.result())
    result["n_users_evaluated"] = float(n_eval)
    result["seconds"] = time.perf_counter() - started
    log.info("ranking on %d users (%d items) in %.2f s: %s", n_eval, n_items, result["seconds"],
             ", ".join(f"{name} {value:.4f}" for name, value in result.items() if "@" in name))
    return result


def _check_leakage(test_keys: Tensor, train_keys: Tensor, test: Interactions, allow_overlap: bool) -> None:
    """Raise `DataError` when test pairs are also training pairs (unless allowed)."""
    if len(train_keys) == 0:
        return
    pos = torch.searchsorted(train_keys, test_keys).clamp_(max=len(train_keys) - 1)  # [P_test]
    overlap = train_keys[pos] == test_keys  # [P_test]
    n_overlap = int(overlap.sum())
    if n_overlap == 0:
        return
    if allow_overlap:
        log.info("%d test (user, item) pairs are also training pairs (allowed)", n_overlap)
        return
    first = int(test_keys[overlap][0])
    user, item = divmod(first, test.n_items)
    raise DataError(
        f"{n_overlap} test (user, item) pair(s) are also training pairs (leakage), first: user {user} "
        f"(raw {test.user_ids[user].tolist()!r}), item {item} (raw {test.item_ids[item].tolist()!r}); "
        "pass allow_overlap=True if this is intended"
    )
