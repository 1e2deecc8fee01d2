"""Full-catalogue ranking metrics (no sampled metrics) of any score function.

Every user with a test item is ranked against the whole catalogue by the top-K core of
`mfzoo.retrieval.topk` (chunks of users, training items excluded, ties by the lower item id,
−∞ / −1 padding of short lists, `NonFiniteScores` on NaN); a model's score function is
`mfzoo.retrieval.topk.model_scores(model)`, which works for any `Scorer` and takes the matmul
of a `Factorised` one. `evaluate_ranking` is the composition of three parts:

1. ranking: `iter_topk` gives the top-max(K) list of each chunk of users;
2. per-user metrics: `user_metrics` turns a chunk's lists into the accuracy metrics below,
   against the distinct test pairs (`Relevance`);
3. aggregation: `aggregate` averages them over the evaluated users and adds the
   beyond-accuracy metrics accumulated by `mfzoo.evaluation.beyond.ExposureTracker`.

Accuracy metrics, for a user u with relevant set Rel_u (its distinct test items, |Rel_u| ≥ 1),
top-K list L_u and rel_r = 1 if the item at rank r is in Rel_u (0 for an id −1):

    recall@K    = |L_u ∩ Rel_u| / |Rel_u|
    precision@K = |L_u ∩ Rel_u| / K                       (K even when the list is shorter)
    ndcg@K      = DCG / IDCG,  DCG = Σ_{r≤K} rel_r / log2(r+1),  IDCG = Σ_{r≤min(K,|Rel_u|)} 1 /
    log2(r+1) map@K       = AP@K = (1 / min(K, |Rel_u|)) Σ_{r≤K} P@r · rel_r
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor

from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions
from mfzoo.evaluation.beyond import ExposureTracker

# the top-K core lives in retrieval; re-exported here for the callers that import it from evaluation
from mfzoo.retrieval.topk import (
    ExclusionRows,
    NonFiniteScores,
    ScoreFn,
    factor_scores,
    iter_topk,
    model_scores,
    restrict,
    topk,
)

__all__ = [
    "ACCURACY",
    "ExclusionRows",
    "NonFiniteScores",
    "Relevance",
    "ScoreFn",
    "aggregate",
    "check_ranking",
    "evaluate_ranking",
    "factor_scores",
    "iter_topk",
    "model_scores",
    "topk",
    "user_metrics",
]

log = logging.getLogger(__name__)

ACCURACY = ("recall", "precision", "ndcg", "map", "mrr", "hitrate")
CANDIDATES = ("catalogue", "test_items")


def check_ranking(settings: Mapping[str, Any], where: str = "ranking") -> dict[str, Any]:
    """The settings of a run's ranking evaluation (`evaluate_ranking` keyword arguments, the
    `ranking` key of a run config), checked before anything runs: `ks` a non-empty list of
    integers >= 1, `chunk_size` an integer >= 1, `head_fraction` in [0, 1], no unknown keys.
    ValueError naming the setting (as `where.key`) and the value; returns them as a dict."""
    settings = dict(settings)
    known = set(inspect.signature(evaluate_ranking).parameters) - {"score_fn", "train", "test"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    ks = settings.get("ks", (10, 20))
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence) or not ks:
        raise ValueError(
            f"{where}.ks must be a non-empty list of list lengths (e.g. [10, 20]), got {ks!r}"
        )
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise ValueError(
                f"{where}.ks: every list length K must be an integer >= 1, got {k!r} in "
                f"{list(ks)!r}"
            )
    chunk_size = settings.get("chunk_size", 2048)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral) or chunk_size < 1:
        raise ValueError(f"{where}.chunk_size must be an integer >= 1, got {chunk_size!r}")
    head_fraction = settings.get("head_fraction", 0.2)
    if (
        isinstance(head_fraction, bool)
        or not isinstance(head_fraction, Real)
        or not 0.0 <= float(head_fraction) <= 1.0
    ):
        raise ValueError(f"{where}.head_fraction must be a number in [0, 1], got {head_fraction!r}")
    candidates = settings.get("candidates", "catalogue")
    if candidates not in CANDIDATES:
        raise ValueError(
            f"{where}.candidates must be one of {', '.join(CANDIDATES)}, got {candidates!r}"
        )
    return settings


def evaluate_ranking(
    score_fn: ScoreFn,
    train: Interactions,
    test: Interactions,
    ks: Sequence[int] = (10, 20),
    chunk_size: int = 2048,
    exclude_train: bool = True,
    allow_overlap: bool = False,
    head_fraction: float = 0.2,
    candidates: str = "catalogue",
) -> dict[str, float]:
    """Full-catalogue ranking metrics of `score_fn` on `test`, trained on `train`.

    Evaluates the users with at least one test event; relevance is the distinct test pairs.
    For every K in `ks`: `recall@K`, `precision@K`, `ndcg@K`, `map@K`, `mrr@K`, `hitrate@K`
    (module docstring) averaged over those users, and `coverage@K`, `arp@K`, `gini@K`,
    `long_tail@K`, `novelty@K` over their lists (`mfzoo.evaluation.beyond`). Also
    `n_users_evaluated` and `seconds`. Accumulation is in float64 on the device of the scores.

    Args:
        score_fn: `users [c] -> scores [c, n_items]` (see `ScoreFn`); for a model,
            `model_scores(model)`.
        train, test: one id space (same n_users and n_items, e.g. parts of one split).
        ks: list lengths; one top-max(ks) per chunk serves them all.
        chunk_size: users scored at once (memory ~ chunk_size × n_items scores).
        exclude_train: never recommend a user's training items (the usual protocol).
        allow_overlap: accept test pairs that are also training pairs; otherwise they raise
            `DataError` (leakage). With `exclude_train` such a pair can never be hit.
        head_fraction: share of the catalogue that is the popularity head (for `long_tail@K`).
        candidates: "catalogue" (every item competes) or "test_items": only the items with an
            event in `test` are ranked, the others scored −∞ (the cold-start protocol: items
            unseen in training ranked among themselves, `ColdItemSplit`). The popularity
            metrics keep their catalogue-wide definitions.

    Raises:
        DataError: different id spaces, an empty test set, or (unless `allow_overlap`) test
            pairs that are training pairs, naming how many and the first (lowest user, item).
    """
    started = time.perf_counter()
    check_ranking(
        {
            "ks": list(ks),
            "chunk_size": chunk_size,
            "head_fraction": head_fraction,
            "candidates": candidates,
        },
        where="evaluate_ranking",
    )
    ks = sorted({int(k) for k in ks})
    n_candidates = train.n_items
    if candidates == "test_items":
        allowed = torch.unique(test.items.cpu())
        score_fn, n_candidates = restrict(score_fn, allowed, train.n_items), len(allowed)
    seen = ExclusionRows(train)
    relevance = Relevance.of(seen, train, test, allow_overlap)
    # [n_items] `item_popularity(train)`
    popularity = torch.bincount(seen.indices.cpu(), minlength=train.n_items)
    exposure = ExposureTracker(popularity, train.n_users, ks, head_fraction)
    # [len(ks), 6] sums over users
    totals = torch.zeros(len(ks), len(ACCURACY), dtype=torch.float64)
    for chunk, _, items in iter_topk(
        score_fn,
        relevance.users.to(test.device),
        ks[-1],
        seen if exclude_train else None,
        chunk_size,
    ):
        totals = totals.to(items.device) + user_metrics(chunk, items, relevance, ks).sum(0)
        exposure.update(items)
    result = aggregate(totals, len(relevance.users), ks, exposure)
    result["seconds"] = time.perf_counter() - started
    log.info(
        "ranking on %d users (%d of %d items) in %.2f s: %s",
        len(relevance.users),
        n_candidates,
        train.n_items,
        result["seconds"],
        ", ".join(f"{name} {value:.4f}" for name, value in result.items() if "@" in name),
    )
    return result


@dataclass
class Relevance:
    """What a ranking is scored against: the distinct test pairs as sorted keys
    user · n_items + item (`keys` [P]), the users with at least one (`users` [n], ascending) and
    |Rel_u| of every user (`counts` [n_users] float64, 0 for users without test pairs)."""

    keys: Tensor
    users: Tensor
    counts: Tensor
    n_items: int

    @classmethod
    def of(
        cls, seen: ExclusionRows, train: Interactions, test: Interactions, allow_overlap: bool
    ) -> Relevance:
        """The relevance of `test`, checked against the training pairs `seen` (the CSR rows of
        `train`): one id space, a non-empty test set, no leakage unless `allow_overlap`
        (`DataError` otherwise); logs how many test users have no training pairs."""
        if (train.n_users, train.n_items) != (test.n_users, test.n_items):
            raise DataError(
                f"train '{train.name}' ({train.n_users} users x {train.n_items} items) and test "
                f"'{test.name}' ({test.n_users} x {test.n_items}) are not one id space; split one "
                "Interactions into both"
            )
        if len(test) == 0:
            raise DataError(f"test '{test.name}' has no interactions")
        keys = test.pair_keys()  # [P_test]
        _check_leakage(keys, seen.keys().to(keys.device), test, allow_overlap)
        users, n_relevant = torch.unique(keys // test.n_items, return_counts=True)  # [n], [n]
        # [n_users] |Rel_u|
        counts = torch.zeros(test.n_users, dtype=torch.float64, device=keys.device)
        counts[users] = n_relevant.double()
        n_cold = int((seen.indptr.diff().to(users.device)[users] == 0).sum())
        if n_cold:
            log.warning(
                "%d of %d test users have no training interactions; they are evaluated all the "
                "same",
                n_cold,
                len(users),
            )
        return cls(keys, users, counts, test.n_items)

    def to(self, device: torch.device) -> Relevance:
        """These relevance tables on `device` (moved in place once)."""
        if self.keys.device != device:
            self.keys, self.counts = self.keys.to(device), self.counts.to(device)
        return self


def user_metrics(users: Tensor, items: Tensor, relevance: Relevance, ks: Sequence[int]) -> Tensor:
    """The accuracy metrics of each user's list (module docstring): [c, len(ks), 6] float64, the
    last axis in the order of `ACCURACY`, for the lists `items` [c, ≥ max(ks)] (item ids, −1 for
    an empty slot) of `users` [c] (each with at least one relevant item), on their device."""
    relevance = relevance.to(items.device)
    k_max = max(ks)
    ranks = torch.arange(1, k_max + 1, dtype=torch.float64, device=items.device)  # [k_max]
    discount = 1.0 / torch.log2(ranks + 1)  # [k_max] 1/log2(r+1)
    ideal = torch.cumsum(discount, 0)  # [k_max] IDCG for 1..k_max relevant items
    items = items[:, :k_max]
    keys = users.unsqueeze(1) * relevance.n_items + items  # [c, k_max]
    pos = torch.searchsorted(relevance.keys, keys).clamp_(max=len(relevance.keys) - 1)  # [c, k_max]
    hit = (relevance.keys[pos] == keys) & (items >= 0)  # [c, k_max] rel_r
    rel = hit.double()  # [c, k_max]
    n_hits = rel.cumsum(1)  # [c, k_max] hits within the first r
    dcg = (rel * discount).cumsum(1)  # [c, k_max]
    ap_sum = (rel * n_hits / ranks).cumsum(1)  # [c, k_max] Σ P@r·rel_r
    first = torch.where(hit, ranks, math.inf).cummin(1).values  # [c, k_max] first hit rank so far
    n_rel = relevance.counts[users]  # [c] |Rel_u|
    per_k = []
    for k in ks:
        m = n_rel.clamp(max=k)  # [c] min(K, |Rel_u|)
        h = n_hits[:, k - 1]  # [c]
        per_k.append(
            torch.stack(
                [
                    h / n_rel,
                    h / k,
                    dcg[:, k - 1] / ideal[m.long() - 1],
                    ap_sum[:, k - 1] / m,
                    1.0 / first[:, k - 1],
                    (h > 0).double(),
                ],
                1,
            )
        )  # [c, 6]
    return torch.stack(per_k, 1)  # [c, len(ks), 6]


def aggregate(
    totals: Tensor, n_users: int, ks: Sequence[int], exposure: ExposureTracker
) -> dict[str, float]:
    """The metrics of a ranking: `totals` [len(ks), 6] (the sums of `user_metrics` over the
    `n_users` evaluated users) as means named `name@K`, the beyond-accuracy metrics of
    `exposure`, and `n_users_evaluated`."""
    means = (totals / n_users).cpu().tolist()
    result: dict[str, float] = {}
    for j, k in enumerate(ks):
        result.update(
            {f"{name}@{k}": value for name, value in zip(ACCURACY, means[j], strict=True)}
        )
    result.update(exposure.result())
    result["n_users_evaluated"] = float(n_users)
    return result


def _check_leakage(
    test_keys: Tensor, train_keys: Tensor, test: Interactions, allow_overlap: bool
) -> None:
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
        f"{n_overlap} test (user, item) pair(s) are also training pairs (leakage), first: user "
        f"{user} (raw {test.user_ids[user].tolist()!r}), item {item} (raw "
        f"{test.item_ids[item].tolist()!r}); pass allow_overlap=True if this is intended"
    )
