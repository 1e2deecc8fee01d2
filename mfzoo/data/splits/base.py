"""The `Split` type and the helpers every splitter shares."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions

log = logging.getLogger(__name__)

TRAIN, VAL, TEST = 0, 1, 2
_PART_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """The parts of a split; `val` is None when no validation part was asked for."""

    train: Interactions
    val: Interactions | None
    test: Interactions

    def parts(self) -> dict[str, Interactions]:
        """The present parts by name, in the order train, val, test."""
        out = {"train": self.train, "val": self.val, "test": self.test}
        return {k: v for k, v in out.items() if v is not None}


class Splitter(Protocol):
    """A split strategy: a callable from the whole interaction set to its `Split`."""

    def __call__(self, interactions: Interactions) -> Split:
        """The parts of `interactions`."""
        ...


# helpers ------------------------------------------------------------------------------
def _check_fraction(name: str, value: float, *, allow_zero: bool) -> None:
    ok = (0.0 <= value < 1.0) if allow_zero else (0.0 < value < 1.0)
    if not ok:
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be a fraction in {interval}, got {value!r}")


def _timestamps(inter: Interactions, who: str) -> np.ndarray:
    if inter.timestamps is None:
        raise DataError(
            f"{inter.name}: {who} orders events by time, but these interactions have no "
            "timestamps; load them with a timestamp column, or use RandomSplit / KFold"
        )
    return inter.timestamps.cpu().numpy()


def _build(inter: Interactions, assign: np.ndarray, with_val: bool, who: str) -> Split:
    """Split `inter` by the per-row part labels `assign` (TRAIN / VAL / TEST)."""
    idx = {part: np.flatnonzero(assign == part) for part in (TRAIN, VAL, TEST)}
    wanted = (TRAIN, VAL, TEST) if with_val else (TRAIN, TEST)
    for part in wanted:
        if len(idx[part]) == 0:
            raise DataError(
                f"{inter.name}: {who} gives an empty {_PART_NAMES[part]} part "
                f"({len(inter)} interactions); adjust the split parameters or use more data"
            )
    parts = {
        part: inter.subset(idx[part], name=f"{inter.name}/{_PART_NAMES[part]}") for part in wanted
    }
    log.info(
        "%s: %s -> %s",
        inter.name,
        who,
        ", ".join(f"{_PART_NAMES[p]} {len(idx[p])}" for p in wanted),
    )
    return Split(train=parts[TRAIN], val=parts.get(VAL), test=parts[TEST])


@dataclass(frozen=True)
class _Pairs:
    """The distinct (user, item) pairs of a set, numbered in the row order of one
    representative row each (so that with unique pairs, pair k is row k)."""

    of_row: np.ndarray  # [N] the pair of every row
    rows: np.ndarray  # [P] the representative row of every pair, increasing

    def __len__(self) -> int:
        return len(self.rows)


def _pairs(inter: Interactions, times: np.ndarray | None = None) -> _Pairs:
    """The pairs of `inter`, each represented by its first row, or, given the rows' `times`,
    by the row of its latest event (largest time, then last row), whose time is then the
    pair's time. Splitters assign pairs and give every row its pair's part, so that all
    events of one (user, item) pair land in one part."""
    keys = _pair_keys(inter)  # [N]
    n = len(keys)
    if times is not None:
        order = np.lexsort((np.arange(n), times, keys))  # [N] by pair, time, row
    else:
        order = np.argsort(keys, kind="stable")  # [N] by pair, row
    sk = keys[order]
    first = np.r_[True, sk[1:] != sk[:-1]]  # [N] first position of each pair
    if first.all():  # unique pairs: every row is its own pair
        return _Pairs(of_row=np.arange(n), rows=np.arange(n))
    last = np.r_[first[1:], True]
    rep = order[last] if times is not None else order[first]  # [P] in key order
    number = np.empty(len(rep), dtype=np.int64)
    number[np.argsort(rep)] = np.arange(len(rep))  # [P] pairs renumbered in row order
    of_row = np.empty(n, dtype=np.int64)
    of_row[order] = number[np.cumsum(first) - 1]
    return _Pairs(of_row=of_row, rows=np.sort(rep))


def _check_test_val(test: float, val: float) -> None:
    _check_fraction("test", test, allow_zero=False)
    _check_fraction("val", val, allow_zero=True)
    if test + val >= 1.0:
        raise ValueError(f"test + val must be < 1, got {test} + {val}")


def _round_count(fraction: float, n: int) -> int:
    return int(np.floor(fraction * n + 0.5))


# overlap checks ----------------------------------------------------------------------------
def _pair_keys(inter: Interactions) -> np.ndarray:
    return inter.users.cpu().numpy() * np.int64(inter.n_items) + inter.items.cpu().numpy()


def _same_space(a: Interactions, b: Interactions) -> None:
    if a.n_users != b.n_users or a.n_items != b.n_items:
        raise DataError(
            f"{a.name} ({a.n_users} users x {a.n_items} items) and {b.name} ({b.n_users} x "
            f"{b.n_items}) do not share an id space"
        )


def _unique_sorted(x: np.ndarray) -> np.ndarray:
    x = np.sort(x)
    return x[np.r_[True, x[1:] != x[:-1]]] if len(x) else x


def _shared_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted distinct values present in both `a` and `b` (like np.intersect1d, faster)."""
    both = np.sort(np.concatenate([_unique_sorted(a), _unique_sorted(b)]))
    return both[1:][both[1:] == both[:-1]]


def pair_overlap(a: Interactions, b: Interactions) -> int:
    """Number of distinct (user, item) pairs that occur in both `a` and `b` (same id space)."""
    _same_space(a, b)
    return len(_shared_keys(_pair_keys(a), _pair_keys(b)))


def check_disjoint(split: Split) -> None:
    """Raise `DataError` if any (user, item) pair has rows in two parts of `split` (every
    splitter keeps all events of a pair in one part, repeated events included), or the parts
    do not share an id space."""
    for (na, a), (nb, b) in itertools.combinations(split.parts().items(), 2):
        shared = pair_overlap(a, b)
        if shared:
            raise DataError(f"split parts {na} and {nb} share {shared} (user, item) pair(s)")
