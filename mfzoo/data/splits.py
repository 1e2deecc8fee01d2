"""Train / validation / test splits of an `Interactions` log.

Every splitter is a small frozen dataclass (so Hydra can build it from YAML with
`_target_: mfzoo.data.splits.RandomSplit`) and is called as `split = splitter(inter)`.
All of them work on row positions: each input row lands in exactly one part, the parts
keep the row order and the id space of the input (`Interactions.subset`), and are named
`"<name>/train"`, `"<name>/val"`, `"<name>/test"`. `Split.val` is None when no validation
part was asked for. A part that was asked for but would be empty raises `DataError`;
bad parameters raise `ValueError` when the splitter is built.

The work is vectorised numpy on CPU copies of the columns (per-user ranks via a stable
sort by (user, time)), so tens of millions of rows split in seconds.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Iterator, Protocol

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


# per-user leave-last-out ----------------------------------------------------------------
def _order_by_user_time(u: np.ndarray, t: np.ndarray, n_users: int) -> np.ndarray:
    """Row order sorted by (user, time, row): a stable sort by (user, time)."""
    if len(t) == 0:
        return np.zeros(0, dtype=np.int64)
    t_min, t_span = int(t.min()), int(t.max()) - int(t.min()) + 1
    if n_users * t_span >= 2**62:  # the combined key would overflow: slower 2-key sort
        return np.lexsort((t, u))
    key = u * np.int64(t_span) + (t - t_min)
    order = np.argsort(key)  # fast but unstable: put rows with equal keys back in row order
    ks = key[order]
    same = ks[1:] == ks[:-1]
    pos = np.flatnonzero(np.r_[same, False] | np.r_[False, same])  # all tie runs, each contiguous
    if len(pos):
        rows = order[pos]
        order[pos] = rows[np.lexsort((rows, ks[pos]))]
    return order


@dataclass(frozen=True)
class LeaveLastOut:
    """Per user, the latest `n` events go to test and the `val_n` events before them to val.

    Each user's events are ordered by timestamp, ties by row order (a later row counts as a
    later event), so every test event of a user is at or after (>=) each of that user's
    train and val events. Users with fewer than `min_train + n + val_n` events keep all
    their events in train (their number is logged), so every evaluated user has at least
    `min_train` train events. With `min_train=0` users with exactly `n + val_n` events are
    evaluated with no train events (cold start). Requires timestamps.
    """

    n: int = 1
    val_n: int = 0
    min_train: int = 1

    def __post_init__(self) -> None:
        for name, value, low in (("n", self.n, 1), ("val_n", self.val_n, 0), ("min_train", self.min_train, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    def __call__(self, interactions: Interactions) -> Split:
        t = _timestamps(interactions, "LeaveLastOut")
        u = interactions.users.cpu().numpy()
        order = _order_by_user_time(u, t, interactions.n_users)
        counts = np.bincount(u, minlength=interactions.n_users)
        starts = np.cumsum(counts) - counts
        su = u[order]
        from_end = counts[su] - 1 - (np.arange(len(u)) - starts[su])  # 0 = the user's last event
        need = self.min_train + self.n + self.val_n
        eligible = counts[su] >= need
        part = np.full(len(u), TRAIN, dtype=np.int8)
        part[eligible & (from_end < self.n + self.val_n)] = VAL
        part[eligible & (from_end < self.n)] = TEST
        assign = np.empty_like(part)
        assign[order] = part
        n_small = int(((counts > 0) & (counts < need)).sum())
        if n_small:
            log.info(
                "%s: LeaveLastOut keeps %d of %d users entirely in train (fewer than %d events)",
                interactions.name, n_small, int((counts > 0).sum()), need,
            )
        if n_small == int((counts > 0).sum()):
            raise DataError(
                f"{interactions.name}: no user has the {need} events LeaveLastOut(n={self.n}, val_n={self.val_n}, "
                f"min_train={self.min_train}) needs, so the test part would be empty"
            )
        return _build(interactions, assign, self.val_n > 0, f"LeaveLastOut(n={self.n}, val_n={self.val_n})")


# global temporal cut ---------------------------------------------------------------------
def parse_time(cut: int | float | str | date) -> int:
    """Epoch seconds from an int, an int-like string, an ISO 8601 string, a date or datetime.
    Dates and datetimes without a time zone are taken as UTC."""
    if isinstance(cut, (bool, np.bool_)):
        raise ValueError(f"cut must be epoch seconds or an ISO date, got {cut!r}")
    if isinstance(cut, (int, np.integer)):
        return int(cut)
    if isinstance(cut, (float, np.floating)):
        if not np.isfinite(cut):
            raise ValueError(f"cut must be finite, got {cut!r}")
        return int(np.ceil(cut))  # timestamps are whole seconds: t >= cut <=> t >= ceil(cut)
    if isinstance(cut, str):
        text = cut.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            cut = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"cut {text!r} is neither epoch seconds nor an ISO 8601 date/time") from None
    if isinstance(cut, datetime):
        return int(np.floor((cut if cut.tzinfo else cut.replace(tzinfo=timezone.utc)).timestamp()))
    if isinstance(cut, date):
        return int(datetime(cut.year, cut.month, cut.day, tzinfo=timezone.utc).timestamp())
    raise ValueError(f"cut must be epoch seconds or an ISO date, got {cut!r}")


def _tail_cut(ts: np.ndarray, k: int, what: str, name: str) -> int:
    """A timestamp c of the sorted `ts` such that the number of events with t >= c is as close
    to k as possible while leaving at least one event on either side (ties: the larger tail)."""
    first = np.r_[True, ts[1:] != ts[:-1]]
    distinct = ts[first]
    if len(distinct) < 2:
        raise DataError(
            f"{name}: all {len(ts)} events before the {what} cut share timestamp {int(ts[0])}; "
            f"a temporal {what} part cannot be cut so that it strictly follows the earlier part"
        )
    tail = len(ts) - np.flatnonzero(first)[1:]  # tail size for each candidate distinct[1:]
    return int(distinct[1:][np.argmin(np.abs(tail - k))])


@dataclass(frozen=True)
class TemporalSplit:
    """One global cut in time: test = events at or after the test cut, val = events in
    [val cut, test cut), train = events before the val cut (or the test cut without val).

    The test cut is `cut` if given (epoch seconds, or an ISO 8601 string such as
    "2021-03-01" or "2021-03-01T12:00:00+02:00"; no time zone means UTC), and `test` is then
    ignored; otherwise it is the timestamp that puts as close to `round(test * N)` events as
    possible at or after it. Events exactly at a cut all go to the later part, so
    max(train t) < min(val t) and max(val or train t) < min(test t) strictly; because of such
    ties a part can be larger or smaller than its fraction by the events sharing the cut
    time. The val cut is chosen the same way among the events before the test cut, aiming
    at `round(val * N)` events (a fraction of all events). Raises `DataError` when a part
    would be empty, e.g. `cut` after the last event or all timestamps equal. Requires
    timestamps.
    """

    test: float | None = 0.2
    val: float = 0.0
    cut: int | str | None = None

    def __post_init__(self) -> None:
        if self.cut is None:
            if self.test is None:
                raise ValueError("TemporalSplit needs a test fraction or an explicit cut")
            _check_fraction("test", self.test, allow_zero=False)
            if self.test + self.val >= 1.0:
                raise ValueError(f"test + val must be < 1, got {self.test} + {self.val}")
        else:
            parse_time(self.cut)  # fail early on a malformed cut
        _check_fraction("val", self.val, allow_zero=True)

    def __call__(self, interactions: Interactions) -> Split:
        name = interactions.name
        t = _timestamps(interactions, "TemporalSplit")
        ts = np.sort(t)
        n = len(ts)
        if self.cut is not None:
            test_cut = parse_time(self.cut)
            if test_cut > ts[-1]:
                raise DataError(
                    f"{name}: cut {self.cut!r} ({test_cut}) is after the last event ({int(ts[-1])}); "
                    "the test part would be empty"
                )
            if test_cut <= ts[0]:
                raise DataError(
                    f"{name}: cut {self.cut!r} ({test_cut}) is at or before the first event ({int(ts[0])}); "
                    "nothing would be left for train"
                )
        else:
            k = _round_count(self.test, n)
            if k == 0:
                raise DataError(
                    f"{name}: test fraction {self.test} of {n} interactions rounds to an empty test part"
                )
            test_cut = _tail_cut(ts, k, "test", name)
        assign = np.where(t >= test_cut, TEST, TRAIN).astype(np.int8)
        if self.val > 0:
            k = _round_count(self.val, n)
            if k == 0:
                raise DataError(
                    f"{name}: val fraction {self.val} of {n} interactions rounds to an empty val part"
                )
            before = ts[: np.searchsorted(ts, test_cut, side="left")]
            val_cut = _tail_cut(before, k, "val", name)
            assign[(t >= val_cut) & (t < test_cut)] = VAL
            log.info("%s: TemporalSplit val cut %d, test cut %d", name, val_cut, test_cut)
        else:
            log.info("%s: TemporalSplit test cut %d", name, test_cut)
        who = f"TemporalSplit(test={self.test}, val={self.val}, cut={self.cut!r})"
        return _build(interactions, assign, self.val > 0, who)


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
