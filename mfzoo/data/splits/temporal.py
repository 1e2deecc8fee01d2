"""Splits by time: per-user leave-last-N-out and a global temporal cut."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timezone

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
    _pairs,
    _round_count,
    _timestamps,
)

log = logging.getLogger(__name__)


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
    """Per user, the latest `n` items go to test and the `val_n` items before them to val.

    A user's items are the distinct (user, item) pairs, each placed in time at its latest
    event (largest timestamp, then last row) and carrying all its events into the part it is
    assigned to, so repeated events of a pair never straddle parts (with unique pairs, items
    and events are the same thing). Each user's items are ordered by that time, ties by row
    order (a later row counts as later), so the latest event of every test item of a user is
    at or after (>=) every train and val event of that user: no train event comes after the
    user's held-out ones. Users with fewer than `min_train + n + val_n` items keep all their
    events in train (their number is logged), so every evaluated user has at least
    `min_train` train items. With `min_train=0` users with exactly `n + val_n` items are
    evaluated with no train events (cold start). Requires timestamps.
    """

    n: int = 1
    val_n: int = 0
    min_train: int = 1

    def __post_init__(self) -> None:
        for name, value, low in (
            ("n", self.n, 1),
            ("val_n", self.val_n, 0),
            ("min_train", self.min_train, 0),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    def __call__(self, interactions: Interactions) -> Split:
        """The split of `interactions`: each user's latest pairs to test (and val)."""
        times = _timestamps(interactions, "LeaveLastOut")
        pairs = _pairs(interactions, times)
        u = interactions.users.cpu().numpy()[pairs.rows]  # [P] user of each pair
        t = times[pairs.rows]  # [P] latest event of each pair
        order = _order_by_user_time(u, t, interactions.n_users)
        counts = np.bincount(u, minlength=interactions.n_users)  # [U] pairs per user
        starts = np.cumsum(counts) - counts
        su = u[order]
        from_end = counts[su] - 1 - (np.arange(len(u)) - starts[su])  # 0 = the user's last pair
        need = self.min_train + self.n + self.val_n
        eligible = counts[su] >= need
        part = np.full(len(u), TRAIN, dtype=np.int8)
        part[eligible & (from_end < self.n + self.val_n)] = VAL
        part[eligible & (from_end < self.n)] = TEST
        assign = np.empty_like(part)  # [P]
        assign[order] = part
        n_small = int(((counts > 0) & (counts < need)).sum())
        if n_small:
            log.info(
                "%s: LeaveLastOut keeps %d of %d users entirely in train (fewer than %d items)",
                interactions.name,
                n_small,
                int((counts > 0).sum()),
                need,
            )
        if n_small == int((counts > 0).sum()):
            raise DataError(
                f"{interactions.name}: no user has the {need} items LeaveLastOut(n={self.n}, "
                f"val_n={self.val_n}, min_train={self.min_train}) needs, so the test part would be "
                "empty"
            )
        who = f"LeaveLastOut(n={self.n}, val_n={self.val_n})"
        return _build(interactions, assign[pairs.of_row], self.val_n > 0, who)


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
            raise ValueError(
                f"cut {text!r} is neither epoch seconds nor an ISO 8601 date/time"
            ) from None
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
    """One global cut in time: test = pairs whose latest event is at or after the test cut,
    val = pairs whose latest event is in [val cut, test cut), train = the other pairs.

    Events are assigned as whole (user, item) pairs, each placed in time at its latest event
    and carrying all its events into its part, so repeated events of a pair never straddle
    parts, and no train event is at or after the val cut (test cut without val): a pair with
    an event after the cut is held out whole, its earlier events with it. With unique pairs
    (one event each) this is a cut of events: max(train t) < min(val t) and
    max(val or train t) < min(test t) strictly.

    The test cut is `cut` if given (epoch seconds, or an ISO 8601 string such as
    "2021-03-01" or "2021-03-01T12:00:00+02:00"; no time zone means UTC), and `test` is then
    ignored; otherwise it is the timestamp that puts as close to `round(test * P)` of the P
    pairs as possible at or after it. Pairs exactly at a cut all go to the later part; because
    of such ties a part can be larger or smaller than its fraction by the pairs sharing the
    cut time. The val cut is chosen the same way among the pairs before the test cut, aiming
    at `round(val * P)` pairs (a fraction of all pairs). Raises `DataError` when a part
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
        """The split of `interactions` at one global time cut (val just before it)."""
        name = interactions.name
        times = _timestamps(interactions, "TemporalSplit")
        pairs = _pairs(interactions, times)
        t = times[pairs.rows]  # [P] latest event of each pair
        ts = np.sort(t)
        n = len(ts)
        if self.cut is not None:
            test_cut = parse_time(self.cut)
            if test_cut > ts[-1]:
                raise DataError(
                    f"{name}: cut {self.cut!r} ({test_cut}) is after the last event "
                    f"({int(ts[-1])}); the test part would be empty"
                )
            if test_cut <= ts[0]:
                raise DataError(
                    f"{name}: cut {self.cut!r} ({test_cut}) is at or before the first event "
                    f"({int(ts[0])}; a repeated (user, item) pair counts at its latest event); "
                    "nothing would be left for train"
                )
        else:
            assert self.test is not None  # without a cut `__post_init__` requires a test fraction
            k = _round_count(self.test, n)
            if k == 0:
                raise DataError(
                    f"{name}: test fraction {self.test} of {n} (user, item) pairs rounds to an "
                    "empty test part"
                )
            test_cut = _tail_cut(ts, k, "test", name)
        assign = np.where(t >= test_cut, TEST, TRAIN).astype(np.int8)  # [P]
        if self.val > 0:
            k = _round_count(self.val, n)
            if k == 0:
                raise DataError(
                    f"{name}: val fraction {self.val} of {n} (user, item) pairs rounds to an empty "
                    "val part"
                )
            before = ts[: np.searchsorted(ts, test_cut, side="left")]
            val_cut = _tail_cut(before, k, "val", name)
            assign[(t >= val_cut) & (t < test_cut)] = VAL
            log.info("%s: TemporalSplit val cut %d, test cut %d", name, val_cut, test_cut)
        else:
            log.info("%s: TemporalSplit test cut %d", name, test_cut)
        who = f"TemporalSplit(test={self.test}, val={self.val}, cut={self.cut!r})"
        return _build(interactions, assign[pairs.of_row], self.val > 0, who)
