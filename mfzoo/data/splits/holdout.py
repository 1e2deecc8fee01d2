"""Random splits: a global hold-out, a per-user hold-out, k-fold cross-validation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

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
    _round_count,
)

log = logging.getLogger(__name__)


# random hold-out --------------------------------------------------------------------------
@dataclass(frozen=True)
class RandomSplit:
    """Uniform random hold-out of rows.

    Exactly `round(test * N)` rows go to test and `round(val * N)` to val (fractions of
    all N rows, half rounded up), drawn without replacement from one permutation of the
    rows by `numpy.random.default_rng(seed)`; the rest is train. Users or items may end up
    only in val/test (cold start): filter afterwards if a model cannot serve them.
    """

    test: float = 0.2
    val: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_test_val(self.test, self.val)

    def __call__(self, interactions: Interactions) -> Split:
        n = len(interactions)
        n_test, n_val = _round_count(self.test, n), _round_count(self.val, n)
        if n_test == 0:
            raise DataError(
                f"{interactions.name}: test fraction {self.test} of {n} interactions "
                "rounds to an empty test part"
            )
        perm = np.random.default_rng(self.seed).permutation(n)
        assign = np.zeros(n, dtype=np.int8)
        assign[perm[:n_test]] = TEST
        assign[perm[n_test : n_test + n_val]] = VAL
        return _build(interactions, assign, self.val > 0, f"RandomSplit(test={self.test}, val={self.val})")


@dataclass(frozen=True)
class UserRandomSplit:
    """Per-user random hold-out: of each user's n_u rows, `round(test * n_u)` go to test and
    `round(val * n_u)` to val, drawn uniformly at random (seeded); the rest is train. Users
    with fewer than `min_rows` rows stay entirely in train. Every evaluated user therefore
    has training history, and the test part has the users' own item mix (the usual
    protocol for implicit-feedback ranking).
    """

    test: float = 0.2
    val: float = 0.0
    seed: int = 0
    min_rows: int = 2

    def __post_init__(self) -> None:
        _check_test_val(self.test, self.val)

    def __call__(self, interactions: Interactions) -> Split:
        users = interactions.users.cpu().numpy()
        n = len(users)
        order = np.lexsort((np.random.default_rng(self.seed).random(n), users))  # by user, random within
        sorted_users = users[order]
        counts = np.bincount(users, minlength=interactions.n_users)  # [U]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # [U]
        rank = np.arange(n) - starts[sorted_users]  # [N] position within the user's shuffled rows
        n_u = counts[sorted_users]
        n_test = np.floor(self.test * n_u + 0.5).astype(np.int64)
        n_val = np.floor(self.val * n_u + 0.5).astype(np.int64)
        eligible = n_u >= self.min_rows
        assign = np.full(n, TRAIN, dtype=np.int8)
        part = np.where(rank < n_test, TEST, np.where(rank < n_test + n_val, VAL, TRAIN)).astype(np.int8)
        assign[order] = np.where(eligible, part, TRAIN)
        return _build(interactions, assign, self.val > 0, f"UserRandomSplit(test={self.test}, val={self.val})")


# k-fold -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class KFold:
    """Random k-fold cross-validation over rows.

    `fold_ids` assigns row `perm[j]` to fold `j % n_folds`, with `perm` a permutation of
    the rows by `numpy.random.default_rng(seed)`: the folds partition the rows exactly, their
    sizes differ by at most one, and they depend only on (seed, number of rows), so two
    tools given the same data and seed are evaluated on identical folds. Calling the splitter
    returns fold `fold` as test and the other folds as train; with `val > 0`,
    `round(val * len(train part))` rows of that train part, drawn with
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
        """Fold of every row, int64 in [0, n_folds)."""
        n = len(interactions)
        if n < self.n_folds:
            raise DataError(
                f"{interactions.name}: {n} interactions cannot fill {self.n_folds} folds "
                "(some test folds would be empty)"
            )
        perm = np.random.default_rng(self.seed).permutation(n)
        ids = np.empty(n, dtype=np.int64)
        ids[perm] = np.arange(n, dtype=np.int64) % self.n_folds
        return ids

    def _split(self, interactions: Interactions, ids: np.ndarray, fold: int) -> Split:
        assign = np.where(ids == fold, TEST, TRAIN).astype(np.int8)
        if self.val > 0:
            train_rows = np.flatnonzero(assign == TRAIN)
            n_val = _round_count(self.val, len(train_rows))
            rng = np.random.default_rng([self.seed, fold])
            assign[rng.permutation(train_rows)[:n_val]] = VAL
        who = f"KFold(fold {fold} of {self.n_folds}, val={self.val})"
        return _build(interactions, assign, self.val > 0, who)

    def __call__(self, interactions: Interactions) -> Split:
        return self._split(interactions, self.fold_ids(interactions), self.fold)

    def folds(self, interactions: Interactions) -> Iterator[Split]:
        """The split for each fold 0..n_folds-1 (the `fold` field is not used)."""
        ids = self.fold_ids(interactions)
        for k in range(self.n_folds):
            yield self._split(interactions, ids, k)
