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
    def __call__(self, interactions: Interactions) -> Split: ...


# helpers ------------------------------------------------------------------------------
def _check_fraction(name: str, value: float, *, allow_zero: bool) -> None:
    ok = (0.0 <= value < 1.0) if allow_zero else (0.0 < value < 1.0)
    if not ok:
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be a fraction in {interval}, got {value!r}")


def _timestamps(inter: Interactions, who: str) -> np.ndarray:
    if inter.timestamps is None:
        raise DataError(
            f"{inter.name}: {who} orders events by time, but these interactions have no timestamps; "
            "load them with a timestamp column, or use RandomSplit / KFold"
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
    parts = {part: inter.subset(idx[part], name=f"{inter.name}/{_PART_NAMES[part]}") for part in wanted}
    log.info("%s: %s -> %s", inter.name, who, ", ".join(f"{_PART_NAMES[p]} {len(idx[p])}" for p in wanted))
    return Split(train=parts[TRAIN], val=parts.get(VAL), test=parts[TEST])


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
            f"{a.name} ({a.n_users} users x {a.n_items} items) and {b.name} ({b.n_users} x {b.n_items}) "
            "do not share an id space"
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
    return int(len(_shared_keys(_pair_keys(a), _pair_keys(b))))


def _event_overlap(a: Interactions, b: Interactions) -> int:
    """Distinct events in both: (user, item, timestamp) when both have times, else (user, item)."""
    if a.timestamps is None or b.timestamps is None:
        return pair_overlap(a, b)
    _same_space(a, b)
    pa, pb = _pair_keys(a), _pair_keys(b)
    shared = _shared_keys(pa, pb)
    if len(shared) == 0:
        return 0

    def candidates(p: np.ndarray, x: Interactions) -> tuple[np.ndarray, np.ndarray]:
        hit = shared[np.searchsorted(shared, p).clip(max=len(shared) - 1)] == p
        return p[hit], x.timestamps.cpu().numpy()[hit]

    (p1, t1), (p2, t2) = candidates(pa, a), candidates(pb, b)
    pair, time = np.concatenate([p1, p2]), np.concatenate([t1, t2])
    side = np.r_[np.zeros(len(p1), dtype=np.int8), np.ones(len(p2), dtype=np.int8)]
    order = np.lexsort((side, time, pair))
    p, t, s = pair[order], time[order], side[order]
    same = (p[1:] == p[:-1]) & (t[1:] == t[:-1])
    # a shared event shows as an a-row directly followed by a b-row with the same key
    return int((same & (s[:-1] == 0) & (s[1:] == 1)).sum())


def check_disjoint(split: Split) -> None:
    """Raise `DataError` if any event occurs in two parts of `split`, or the parts do not
    share an id space. An event is (user, item, timestamp); without timestamps events have
    no identity beyond (user, item), so there any (user, item) pair in two parts counts,
    which is right for data with unique pairs but too strict for repeated events."""
    for (na, a), (nb, b) in itertools.combinations(split.parts().items(), 2):
        shared = _event_overlap(a, b)
        if shared:
            timed = a.timestamps is not None and b.timestamps is not None
            key = "(user, item, timestamp)" if timed else "(user, item)"
            raise DataError(f"split parts {na} and {nb} share {shared} {key} event(s)")
