"""Random splits: a global hold-out, a per-user hold-out, k-fold cross-validation, all over
(user, item) pairs, so that the repeated events of a pair stay in one part."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions
from mfzoo.data.splits.base import (
    TEST,
    TRAIN,
    VAL,
    Split,
    _build,
    _check_fraction,
    _check_test_val,
    _Pairs,
    _pairs,
    _round_count,
)

log = logging.getLogger(__name__)


# random hold-out --------------------------------------------------------------------------
@dataclass(frozen=True)
class RandomSplit:
    """Uniform random hold-out of (user, item) pairs.

    Exactly `round(test * P)` of the P distinct pairs go to test and `round(val * P)` to val
    (half rounded up), drawn without replacement from one permutation of the pairs by
    `numpy.random.default_rng(seed)`; the rest is train. Every row goes where its pair goes,
    so repeated events of a pair never straddle parts; with unique pairs (P = N rows) pair k
    is row k and this is a hold-out of rows. Users or items may end up only in val/test
    (cold start): filter afterwards if a model cannot serve them.
    """

    test: float = 0.2
    val: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_test_val(self.test, self.val)

    def __call__(self, interactions: Interactions) -> Split:
        """The split of `interactions`: random (user, item) pairs to test and val."""
        pairs = _pairs(interactions)
        n = len(pairs)
        n_test, n_val = _round_count(self.test, n), _round_count(self.val, n)
        if n_test == 0:
            raise DataError(
                f"{interactions.name}: test fraction {self.test} of {n} (user, item) pairs "
                "rounds to an empty test part"
            )
        perm = np.random.default_rng(self.seed).permutation(n)
        assign = np.zeros(n, dtype=np.int8)  # [P]
        assign[perm[:n_test]] = TEST
        assign[perm[n_test : n_test + n_val]] = VAL
        who = f"RandomSplit(test={self.test}, val={self.val})"
        return _build(interactions, assign[pairs.of_row], self.val > 0, who)


@dataclass(frozen=True)
class UserRandomSplit:
    """Per-user random hold-out of items: of the p_u distinct items of a user, `round(test * p_u)`
    go to test and `round(val * p_u)` to val, drawn uniformly at random (seeded); the rest is
    train. Every row goes where its (user, item) pair goes, so repeated events of a pair never
    straddle parts (with unique pairs, items and rows are the same thing). Users with fewer than
    `min_rows` distinct items stay entirely in train. Every evaluated user therefore has
    training history, and the test part has the users' own item mix (the usual protocol for
    implicit-feedback ranking).
    """

    test: float = 0.2
    val: float = 0.0
    seed: int = 0
    min_rows: int = 2

    def __post_init__(self) -> None:
        _check_test_val(self.test, self.val)

    def __call__(self, interactions: Interactions) -> Split:
        """The split of `interactions`: each user's pairs shared among the parts at random."""
        pairs = _pairs(interactions)
        users = interactions.users.cpu().numpy()[pairs.rows]  # [P] the user of each pair
        n = len(users)
        # by user, random within
        order = np.lexsort((np.random.default_rng(self.seed).random(n), users))
        sorted_users = users[order]
        counts = np.bincount(users, minlength=interactions.n_users)  # [U] pairs per user
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # [U]
        rank = np.arange(n) - starts[sorted_users]  # [P] position within the user's shuffled pairs
        n_u = counts[sorted_users]
        n_test = np.floor(self.test * n_u + 0.5).astype(np.int64)
        n_val = np.floor(self.val * n_u + 0.5).astype(np.int64)
        eligible = n_u >= self.min_rows
        assign = np.full(n, TRAIN, dtype=np.int8)  # [P]
        part = np.where(rank < n_test, TEST, np.where(rank < n_test + n_val, VAL, TRAIN)).astype(
            np.int8
        )
        assign[order] = np.where(eligible, part, TRAIN)
        who = f"UserRandomSplit(test={self.test}, val={self.val})"
        return _build(interactions, assign[pairs.of_row], self.val > 0, who)


# k-fold -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class KFold:
    """Random k-fold cross-validation over (user, item) pairs.

    `fold_ids` assigns pair `perm[j]` to fold `j % n_folds`, with `perm` a permutation of
    the P distinct pairs (numbered in the order of their first rows) by
    `numpy.random.default_rng(seed)`, and every row to the fold of its pair: repeated events
    of a pair never straddle folds. With unique pairs (P = N rows) pair k is row k, so the
    folds partition the rows exactly, their sizes differ by at most one, and they depend only
    on (seed, number of rows): two tools given the same data and seed are evaluated on
    identical folds. Calling the splitter returns fold `fold` as test and the other folds as
    train; with `val > 0`, `round(val * pairs of that train part)` of its pairs, drawn with
    `default_rng([seed, fold])`, become val. `folds(inter)` yields the splits for every fold.
    """

    n_folds: int = 5
    fold: int = 0
    val: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.n_folds) != self.n_folds or self.n_folds < 2:
            raise ValueError(f"n_folds must be an integer >= 2, got {self.n_folds!r}")
        if int(self.fold) != self.fold or not 0 <= self.fold < self.n_folds:
            raise ValueError(f"fold must be an integer in [0, {self.n_folds}), got {self.fold!r}")
        _check_fraction("val", self.val, allow_zero=True)

    def fold_ids(self, interactions: Interactions) -> np.ndarray:
        """Fold of every row, int64 in [0, n_folds) (the rows of one pair share a fold)."""
        pairs = _pairs(interactions)
        return self._pair_folds(interactions, pairs)[pairs.of_row]

    def _pair_folds(self, interactions: Interactions, pairs: _Pairs) -> np.ndarray:
        """Fold of every pair. [P]"""
        n = len(pairs)
        if n < self.n_folds:
            raise DataError(
                f"{interactions.name}: {n} (user, item) pairs cannot fill {self.n_folds} folds "
                "(some test folds would be empty)"
            )
        perm = np.random.default_rng(self.seed).permutation(n)
        ids = np.empty(n, dtype=np.int64)
        ids[perm] = np.arange(n, dtype=np.int64) % self.n_folds
        return ids

    def _split(
        self, interactions: Interactions, pairs: _Pairs, ids: np.ndarray, fold: int
    ) -> Split:
        assign = np.where(ids == fold, TEST, TRAIN).astype(np.int8)  # [P]
        if self.val > 0:
            train_pairs = np.flatnonzero(assign == TRAIN)
            n_val = _round_count(self.val, len(train_pairs))
            rng = np.random.default_rng([self.seed, fold])
            assign[rng.permutation(train_pairs)[:n_val]] = VAL
        who = f"KFold(fold {fold} of {self.n_folds}, val={self.val})"
        return _build(interactions, assign[pairs.of_row], self.val > 0, who)

    def __call__(self, interactions: Interactions) -> Split:
        """The split of fold `self.fold`: its pairs are the test part, val drawn from the rest."""
        pairs = _pairs(interactions)
        return self._split(interactions, pairs, self._pair_folds(interactions, pairs), self.fold)

    def folds(self, interactions: Interactions) -> Iterator[Split]:
        """The split for each fold 0..n_folds-1 (the `fold` field is not used)."""
        pairs = _pairs(interactions)
        ids = self._pair_folds(interactions, pairs)
        for k in range(self.n_folds):
            yield self._split(interactions, pairs, ids, k)
