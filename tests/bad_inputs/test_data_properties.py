"""Properties of the data layer on arbitrary tables: a table either loads to `Interactions` that
give it back (raw ids, values and timestamps as stored, under the chosen pair policy) or raises
`DataError`, never another exception; which of the two is decided by a plain reference below."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mfzoo.data.duplicates import PAIR_POLICIES
from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions
from mfzoo.data.sources import read_table
from mfzoo.data.splits import KFold, LeaveLastOut, RandomSplit, TemporalSplit, UserRandomSplit

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64 = (-(2**63), 2**63)  # [low, high)
EXTREME = [
    0.0,
    -0.0,
    0.5,
    -1.5,
    1e-45,
    1e-50,
    3.4e38,
    -3.4e38,
    3.5e38,
    1e39,
    -1e39,
    1e30,
    -1e30,
    2.0**63,
    -(2.0**63),
    float("nan"),
    float("inf"),
    -float("inf"),
]


# the reference ------------------------------------------------------------------------------------
def expected(
    users: list, items: list, values: list | None, times: list | None, policy: str | None
) -> list | None:
    """The rows (user, item, value, timestamp) `from_arrays` must give, in order; None where
    it must raise `DataError`. Written for clarity, row by row."""
    n = len(users)
    if n == 0:
        return None
    for column in (users, items):
        if any(isinstance(x, str) and x == "" for x in column):
            return None  # a missing id
        if len({isinstance(x, str) for x in column}) > 1:
            return None  # numbers mixed with strings
    stored = [1.0] * n
    if values is not None:
        for k, v in enumerate(values):
            try:
                v = float(v)
            except OverflowError:
                return None
            with np.errstate(over="ignore"):
                stored[k] = float(np.float32(v))
            if not math.isfinite(v) or not math.isfinite(stored[k]):
                return None  # not a number, or inf once stored as float32
            if v != 0 and stored[k] == 0:
                return None  # a nonzero number float32 would store as 0
    seconds = None
    if times is not None:
        seconds = []
        for x in times:
            if isinstance(x, int):
                if not INT64[0] <= x < INT64[1]:
                    return None
                seconds.append(x)
            else:
                if not math.isfinite(x) or not INT64[0] <= x < INT64[1]:
                    return None
                seconds.append(math.floor(x))
    rows = list(range(n))
    if seconds is not None:  # rows repeating (user, item, timestamp): the last is kept
        last = {(users[r], items[r], seconds[r]): r for r in rows}
        rows = sorted(last.values())
    policy = policy or ("keep" if values is None else "error")
    pairs: dict[tuple, list[int]] = {}
    for r in rows:
        pairs.setdefault((users[r], items[r]), []).append(r)
    out = {r: stored[r] for r in rows}  # kept row -> value
    if policy != "keep" and any(len(g) > 1 for g in pairs.values()):
        if policy == "error":
            return None
        out = {}
        for group in pairs.values():
            events = sorted(group, key=lambda r: (seconds[r], r)) if seconds is not None else group
            if policy == "first":
                out[events[0]] = stored[events[0]]
                continue
            total = 0.0
            for r in events:
                total += stored[r]
            merged = {
                "last": stored[events[-1]],
                "sum": total,
                "mean": total / len(events),
                "max": max(stored[r] for r in events),
            }[policy]
            with np.errstate(over="ignore"):
                out[events[-1]] = float(np.float32(merged))
            if not math.isfinite(out[events[-1]]):
                return None
    return [
        (users[r], items[r], out[r], None if seconds is None else seconds[r]) for r in sorted(out)
    ]


def rows_of(data: Interactions) -> list:
    """(raw user, raw item, value, timestamp) of every row."""
    users = data.user_ids[data.users.numpy()].tolist()
    items = data.item_ids[data.items.numpy()].tolist()
    times = [None] * len(data) if data.timestamps is None else data.timestamps.tolist()
    return list(zip(users, items, data.values.tolist(), times, strict=True))


def assert_same_rows(got: list, want: list, policy: str | None) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[0] == w[0], (g, w)  # the raw ids, decoded
        assert g[1] == w[1], (g, w)
        if policy in ("mean", "sum"):  # float64 sums in another order may differ by one float32 ulp
            assert math.isclose(g[2], w[2], rel_tol=1e-6, abs_tol=1e-37), (g, w)
        else:
            assert g[2] == w[2], (g, w)
        assert g[3] == w[3], (g, w)


# strategies ---------------------------------------------------------------------------------------
# Each column is clean, or clean but for one hostile cell (so that a table with a single
# problem is common), or hostile throughout.
INTS = st.integers(-(2**70), 2**70) | st.integers(-3, 3)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=3)
ID_KINDS = [INTS, TEXT, INTS, TEXT, INTS | TEXT]  # ints, strings, mixed
HOSTILE_ID = st.sampled_from(["", "7", 7])
VALUE = st.floats(-1e6, 1e6, width=32) | st.integers(1, 5)
HOSTILE_VALUE = st.sampled_from(EXTREME) | st.floats(width=32) | st.integers(-(10**40), 10**40)
STAMP = st.integers(0, 3) | st.integers(-(2**62), 2**62) | st.floats(-1e12, 1e12)
HOSTILE_STAMP = (
    st.sampled_from(EXTREME)
    | st.sampled_from([2**63 - 1, -(2**63), 2**63, -(2**63) - 1])
    | st.integers(-(2**64), 2**64)
    | st.floats()
)


@st.composite
def column(draw, n: int, clean: st.SearchStrategy, hostile: st.SearchStrategy) -> list:
    cells = draw(st.lists(clean, min_size=n, max_size=n))
    mode = draw(st.sampled_from(["clean", "clean", "clean", "one", "one", "all"]))
    if mode == "one" and n:
        cells[draw(st.integers(0, n - 1))] = draw(hostile)
    elif mode == "all":
        cells = draw(st.lists(hostile, min_size=n, max_size=n))
    return cells


@st.composite
def tables(draw) -> tuple[list, list, list | None, list | None, str | None]:
    n = draw(st.integers(0, 10))
    ids = []
    for _ in range(2):  # users, items: drawn from a small pool, so that pairs repeat
        kind = draw(st.sampled_from(ID_KINDS))
        pool = draw(st.lists(kind, min_size=1, max_size=4, unique=True))
        ids.append(draw(column(n, st.sampled_from(pool), HOSTILE_ID)))
    values = draw(st.none() | column(n, VALUE, HOSTILE_VALUE))
    times = draw(st.none() | column(n, STAMP, HOSTILE_STAMP))
    policy = draw(st.sampled_from([None, *PAIR_POLICIES, "mean", "last", "first"]))
    return ids[0], ids[1], values, times, policy


# properties ---------------------------------------------------------------------------------------
@SETTINGS
@given(tables())
def test_any_table_loads_faithfully_or_raises_data_error(table) -> None:
    users, items, values, times, policy = table
    want = expected(users, items, values, times, policy)
    try:
        data = Interactions.from_arrays(users, items, values, times, pair_duplicates=policy)
    except DataError:
        assert want is None, f"refused a table the reference loads: {want}"
        return
    assert want is not None, "loaded a table the reference refuses"
    assert data.values.dtype.is_floating_point and bool(data.values.isfinite().all())
    # with keep: every row (but repeated (u, i, t) rows)
    assert_same_rows(rows_of(data), want, policy)


WORD = st.text("abcxyz", min_size=1, max_size=3)
CELL_VALUE = st.sampled_from(
    ["4", "3.5", "-2", "1e39", "nan", "inf", "", "x", "1e-3", "3.4e38", "0"]
)
CELL_TIME = st.sampled_from(
    [
        "0",
        "5",
        "-7",
        "1.5",
        "1e30",
        "99999999999999999999",
        "9223372036854775807",
        "",
        "2021-03-04T05:06:07",
        "yesterday",
    ]
)


@SETTINGS
@given(
    st.integers(1, 8).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 3) | st.integers(10**6, 10**6 + 2), min_size=n, max_size=n),
            st.lists(WORD, min_size=n, max_size=n),
            st.lists(CELL_VALUE, min_size=n, max_size=n),
            st.lists(CELL_TIME, min_size=n, max_size=n),
        )
    ),
    st.sampled_from(PAIR_POLICIES),
)
def test_csv_round_trip_or_named_error(columns, policy) -> None:
    users, items, value_cells, time_cells = columns
    text = "user,item,rating,ts\n" + "".join(
        f"{u},{i},{v},{t}\n"
        for u, i, v, t in zip(users, items, value_cells, time_cells, strict=True)
    )
    values = [float(v) if _is_float(v) else v for v in value_cells]
    times = [_seconds(t) for t in time_cells]
    want = None
    if all(isinstance(v, float) for v in values) and all(t is not None for t in times):
        want = expected(users, items, values, times, policy)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.csv"
        path.write_text(text)
        try:
            data = read_table(path, "user", "item", "rating", "ts", pair_duplicates=policy)
        except DataError as err:
            assert want is None, f"refused a table the reference loads: {err}"
            assert "table.csv" in str(err) and "\n" not in str(err)
            return
    assert want is not None, "loaded a table the reference refuses"
    assert_same_rows(rows_of(data), want, policy)


def _is_float(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _seconds(cell: str) -> int | float | None:
    """A timestamp cell as the reader reads it: an int, a float, ISO seconds, or None (not a
    time)."""
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        return float(cell)
    except ValueError:
        pass
    return 1614834367 if cell == "2021-03-04T05:06:07" else None


SPLITTERS = [
    RandomSplit(test=0.3, val=0.2),
    KFold(n_folds=2, fold=1, val=0.3),
    UserRandomSplit(test=0.5),
    LeaveLastOut(n=1, min_train=0),
    TemporalSplit(test=0.3, val=0.2),
]


@SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 6)), min_size=1, max_size=40
    ),
    st.sampled_from(SPLITTERS),
)
def test_splits_keep_every_row_and_pairs_whole(events, splitter) -> None:
    users, items, times = (list(c) for c in zip(*events, strict=True))
    data = Interactions.from_arrays(
        users, items, np.arange(len(users)), times, pair_duplicates="keep"
    )
    try:
        split = splitter(data)
    except DataError:  # a part that would be empty is refused by name
        return
    parts = list(split.parts().values())
    rows = np.sort(np.concatenate([p.values.numpy() for p in parts]))
    np.testing.assert_array_equal(rows, np.sort(data.values.numpy()))  # every row once
    seen: dict[int, int] = {}
    for k, part in enumerate(parts):
        for key in (part.users * part.n_items + part.items).tolist():
            assert seen.setdefault(key, k) == k, "a (user, item) pair in two parts"
