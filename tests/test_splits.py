"""Tests for mfzoo.data.splits: partition, sizes, determinism, temporal order, errors."""

from __future__ import annotations

import itertools
import logging
from datetime import datetime, timezone

import numpy as np
import pytest
import torch

from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions
from mfzoo.data.splits import (
    KFold,
    LeaveLastOut,
    RandomSplit,
    Split,
    TemporalSplit,
    UserRandomSplit,
    check_disjoint,
    pair_overlap,
    parse_time,
)

N_USERS, N_ITEMS, N = 120, 90, 3000
T0 = 1_600_000_000


def make_data(
    n: int = N, seed: int = 0, timestamps: bool = True, name: str = "toy"
) -> Interactions:
    """Unique (user, item) pairs; values = row number, so every row can be traced through a
    split."""
    rng = np.random.default_rng(seed)
    # skewed activity: some users have 1-3 events
    user_weight = 1.0 / np.arange(1, N_USERS + 1) ** 2
    p = np.repeat(user_weight, N_ITEMS)
    pairs = rng.choice(N_USERS * N_ITEMS, size=n, replace=False, p=p / p.sum())
    users, items = pairs // N_ITEMS, pairs % N_ITEMS
    ts = T0 + rng.integers(0, 10_000_000, size=n) if timestamps else None
    return Interactions.from_arrays(
        users * 7 + 3, items + 1000, values=np.arange(n, dtype=np.float32), timestamps=ts, name=name
    )


@pytest.fixture(scope="module")
def data() -> Interactions:
    return make_data()


def rows(part: Interactions | None) -> np.ndarray:
    return np.zeros(0, dtype=np.int64) if part is None else part.values.numpy().astype(np.int64)


def triples(*parts: Interactions) -> np.ndarray:
    """Sorted (user, item, timestamp) rows of the parts together (timestamp 0 when absent)."""
    cols = [np.concatenate([getattr(p, c).numpy() for p in parts]) for c in ("users", "items")]
    n = len(cols[0])
    t = (
        np.concatenate([p.timestamps.numpy() for p in parts])
        if parts[0].timestamps is not None
        else np.zeros(n)
    )
    arr = np.stack([*cols, t.astype(np.int64)], axis=1)
    return arr[np.lexsort(arr.T[::-1])]


def assert_valid_partition(split: Split, inter: Interactions, with_val: bool) -> None:
    parts = split.parts()
    assert (split.val is not None) == with_val
    assert list(parts) == (["train", "val", "test"] if with_val else ["train", "test"])
    for name, part in parts.items():
        assert len(part) > 0
        assert part.name == f"{inter.name}/{name}"
        assert part.n_users == inter.n_users and part.n_items == inter.n_items
        np.testing.assert_array_equal(part.user_ids, inter.user_ids)
        np.testing.assert_array_equal(part.item_ids, inter.item_ids)
        assert np.all(np.diff(rows(part)) > 0), "parts keep the input row order"
    # every input row in exactly one part
    all_rows = np.concatenate([rows(p) for p in parts.values()])
    np.testing.assert_array_equal(np.sort(all_rows), np.arange(len(inter)))
    # the union of the parts is the input, as (user, item, timestamp) events
    np.testing.assert_array_equal(triples(*parts.values()), triples(inter))
    for a, b in itertools.combinations(parts.values(), 2):
        assert pair_overlap(a, b) == 0
    check_disjoint(split)


SPLITTERS = [
    (RandomSplit(), False),
    (RandomSplit(test=0.1, val=0.15, seed=3), True),
    (KFold(n_folds=5, fold=2), False),
    (KFold(n_folds=4, fold=0, val=0.1, seed=1), True),
    (LeaveLastOut(), False),
    (LeaveLastOut(n=2, val_n=1, min_train=3), True),
    (TemporalSplit(), False),
    (TemporalSplit(test=0.25, val=0.1), True),
    (TemporalSplit(test=None, cut=T0 + 8_000_000), False),
    (TemporalSplit(cut="2020-11-01", val=0.2), True),
]


@pytest.mark.parametrize(("splitter", "with_val"), SPLITTERS, ids=repr)
def test_parts_partition_the_input(splitter, with_val: bool, data: Interactions) -> None:
    split = splitter(data)
    assert_valid_partition(split, data, with_val)
    again = splitter(data)  # deterministic
    for name, part in split.parts().items():
        np.testing.assert_array_equal(rows(part), rows(again.parts()[name]))


def test_random_split_sizes_and_seeds(data: Interactions) -> None:
    split = RandomSplit(test=0.2, val=0.1, seed=0)(data)
    assert (len(split.train), len(split.val), len(split.test)) == (2100, 300, 600)
    odd = make_data(n=1001)
    s = RandomSplit(test=0.15)(odd)
    assert len(s.test) == round(0.15 * 1001) and len(s.train) == 1001 - len(s.test)
    other = RandomSplit(test=0.2, val=0.1, seed=1)(data)
    assert not np.array_equal(rows(split.test), rows(other.test))


def test_kfold_partitions_rows(data: Interactions) -> None:
    kf = KFold(n_folds=5, seed=7)
    ids = kf.fold_ids(data)
    assert ids.shape == (len(data),) and ids.min() == 0 and ids.max() == 4
    assert set(np.bincount(ids)) <= {len(data) // 5, len(data) // 5 + 1}
    splits = list(kf.folds(data))
    assert len(splits) == 5
    test_rows = np.concatenate([rows(s.test) for s in splits])
    # each row in exactly one fold
    np.testing.assert_array_equal(np.sort(test_rows), np.arange(len(data)))
    for k, s in enumerate(splits):
        np.testing.assert_array_equal(rows(s.test), np.flatnonzero(ids == k))
        np.testing.assert_array_equal(
            rows(KFold(n_folds=5, fold=k, seed=7)(data).test), rows(s.test)
        )
        assert len(s.train) + len(s.test) == len(data)
    np.testing.assert_array_equal(KFold(n_folds=5, seed=7).fold_ids(data), ids)
    assert not np.array_equal(KFold(n_folds=5, seed=8).fold_ids(data), ids)


def test_kfold_val_carved_from_train(data: Interactions) -> None:
    split = KFold(n_folds=5, fold=1, val=0.25, seed=2)(data)
    assert len(split.test) == 600 and len(split.val) == 600 and len(split.train) == 1800
    other = KFold(n_folds=5, fold=1, val=0.25, seed=2)(data)
    np.testing.assert_array_equal(rows(split.val), rows(other.val))
    vals = [rows(s.val) for s in KFold(n_folds=5, val=0.25, seed=2).folds(data)]
    assert not np.array_equal(vals[0], vals[1])


def per_user(part: Interactions | None, n_users: int) -> list[np.ndarray]:
    if part is None:
        return [np.zeros(0, dtype=np.int64)] * n_users
    u, t = part.users.numpy(), part.timestamps.numpy()
    return [t[u == k] for k in range(n_users)]


@pytest.mark.parametrize(("n", "val_n", "min_train"), [(1, 0, 1), (2, 1, 3), (3, 2, 0)])
def test_leave_last_out_per_user(
    n: int, val_n: int, min_train: int, data: Interactions, caplog
) -> None:
    with caplog.at_level(logging.INFO, logger="mfzoo.data.splits"):
        split = LeaveLastOut(n=n, val_n=val_n, min_train=min_train)(data)
    counts = np.bincount(data.users.numpy(), minlength=data.n_users)
    train, val, test = (per_user(p, data.n_users) for p in (split.train, split.val, split.test))
    need = min_train + n + val_n
    assert (counts < need).any() and (counts >= need).any()  # the data covers both cases
    for k in range(data.n_users):
        if counts[k] >= need:
            assert (
                len(test[k]) == n
                and len(val[k]) == val_n
                and len(train[k]) == counts[k] - n - val_n
            )
            assert test[k].min() >= np.concatenate([train[k], val[k], [-1]]).max()
            if val_n and len(train[k]):
                assert val[k].min() >= train[k].max()
        else:  # small users keep everything in train
            assert len(train[k]) == counts[k] and len(test[k]) == 0 and len(val[k]) == 0
    n_small = int(((counts > 0) & (counts < need)).sum())
    assert f"keeps {n_small} of {data.n_users} users entirely in train" in caplog.text


def test_leave_last_out_ties_by_row_order() -> None:
    # user a: 4 events, the last two at the same time; user b: 1 event (too few, stays in train)
    inter = Interactions.from_arrays(
        ["a", "a", "a", "a", "b"], [1, 2, 3, 4, 1], values=np.arange(5), timestamps=[5, 9, 9, 1, 3]
    )
    split = LeaveLastOut(n=1, val_n=1)(inter)
    assert rows(split.test).tolist() == [2] and rows(split.val).tolist() == [1]
    assert rows(split.train).tolist() == [0, 3, 4]


@pytest.mark.parametrize(
    "t_range", [(0, 4), (-(4 * 10**18), 4 * 10**18)], ids=["many_ties", "huge_range"]
)
def test_leave_last_out_matches_reference(t_range: tuple[int, int]) -> None:
    rng = np.random.default_rng(5)
    n = 4000
    t = (
        rng.integers(*t_range, size=n)
        if t_range[1] < 100
        else rng.choice(np.array(t_range), size=n)
    )
    inter = Interactions.from_arrays(
        rng.integers(0, 50, n), np.arange(n), values=np.arange(n), timestamps=t
    )
    split = LeaveLastOut(n=2, val_n=1, min_train=1)(inter)
    u, ts = inter.users.numpy(), inter.timestamps.numpy()
    order = np.lexsort((np.arange(n), ts, u))  # reference: sort by (user, time, row)
    expected = {"test": [], "val": []}
    for k in range(inter.n_users):
        user_rows = order[u[order] == k]
        if len(user_rows) >= 4:
            expected["test"] += user_rows[-2:].tolist()
            expected["val"] += user_rows[-3:-2].tolist()
    assert rows(split.test).tolist() == sorted(expected["test"])
    assert rows(split.val).tolist() == sorted(expected["val"])


def test_leave_last_out_all_users_too_small() -> None:
    inter = Interactions.from_arrays([1, 1, 2], [1, 2, 1], timestamps=[1, 2, 3])
    with pytest.raises(DataError, match="test part would be empty"):
        LeaveLastOut(n=2, min_train=1)(inter)


def test_temporal_order(data: Interactions) -> None:
    split = TemporalSplit(test=0.2, val=0.1)(data)
    t_train, t_val, t_test = (p.timestamps.numpy() for p in (split.train, split.val, split.test))
    assert t_train.max() < t_val.min() and t_val.max() < t_test.min()
    assert abs(len(t_test) - 600) <= 2 and abs(len(t_val) - 300) <= 2


def test_temporal_ties_go_to_the_later_part() -> None:
    t = np.array([1, 2, 3, 3, 3, 3, 4, 5])
    inter = Interactions.from_arrays(np.arange(8), np.arange(8), values=np.arange(8), timestamps=t)
    # 4 wanted; cuts give 6 (t >= 3) or 2 (t >= 4): nearest tie -> 6
    split = TemporalSplit(test=0.5)(inter)
    assert rows(split.test).tolist() == [2, 3, 4, 5, 6, 7]
    split = TemporalSplit(test=0.25, val=0.25)(inter)
    assert rows(split.test).tolist() == [6, 7] and rows(split.val).tolist() == [2, 3, 4, 5]
    assert TemporalSplit(cut=3)(inter).train.timestamps.tolist() == [1, 2]


def test_temporal_explicit_cut(data: Interactions) -> None:
    cut = T0 + 7_000_000
    split = TemporalSplit(cut=cut)(data)
    t = data.timestamps.numpy()
    assert len(split.test) == int((t >= cut).sum())
    assert split.train.timestamps.max() < cut <= split.test.timestamps.min()
    iso = datetime.fromtimestamp(cut, tz=timezone.utc).isoformat()
    np.testing.assert_array_equal(rows(TemporalSplit(cut=iso)(data).test), rows(split.test))
    np.testing.assert_array_equal(rows(TemporalSplit(cut=str(cut))(data).test), rows(split.test))
    assert parse_time("2021-01-01") == 1609459200
    assert parse_time("2021-01-01T02:00:00+02:00") == 1609459200
    assert parse_time("2021-01-01T00:00:00Z") == 1609459200


def test_temporal_bad_cuts(data: Interactions) -> None:
    with pytest.raises(DataError, match="after the last event"):
        TemporalSplit(cut="2100-01-01")(data)
    with pytest.raises(DataError, match="before the first event"):
        TemporalSplit(cut=0)(data)
    with pytest.raises(ValueError, match="ISO"):
        TemporalSplit(cut="next tuesday")
    same = Interactions.from_arrays([1, 2, 3], [1, 2, 3], timestamps=[7, 7, 7])
    with pytest.raises(DataError, match="share timestamp 7"):
        TemporalSplit(test=0.3)(same)


@pytest.mark.parametrize(
    "splitter", [LeaveLastOut(), TemporalSplit(), TemporalSplit(cut=5)], ids=repr
)
def test_needs_timestamps(splitter) -> None:
    with pytest.raises(DataError, match="no timestamps"):
        splitter(make_data(timestamps=False))


def test_random_splits_work_without_timestamps() -> None:
    inter = make_data(timestamps=False)
    assert_valid_partition(RandomSplit(val=0.1)(inter), inter, with_val=True)
    assert_valid_partition(KFold(fold=4)(inter), inter, with_val=False)


def test_empty_test_raises() -> None:
    small = make_data(n=20)
    with pytest.raises(DataError, match="empty test"):
        RandomSplit(test=0.01)(small)
    with pytest.raises(DataError, match="empty test"):
        TemporalSplit(test=0.01)(small)
    with pytest.raises(DataError, match="folds"):
        KFold(n_folds=30)(small)
    with pytest.raises(DataError, match="empty val"):
        RandomSplit(test=0.5, val=0.01)(small)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomSplit(test=0.0),
        lambda: RandomSplit(test=1.2),
        lambda: RandomSplit(test=0.6, val=0.4),
        lambda: KFold(n_folds=1),
        lambda: KFold(n_folds=5, fold=5),
        lambda: KFold(val=1.0),
        lambda: LeaveLastOut(n=0),
        lambda: LeaveLastOut(val_n=-1),
        lambda: TemporalSplit(test=None),
        lambda: TemporalSplit(test=0.5, val=0.5),
    ],
)
def test_bad_parameters(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_overlap_helpers() -> None:
    inter = Interactions.from_arrays([1, 1, 2, 2, 3], [1, 2, 1, 1, 3], timestamps=[1, 2, 3, 4, 5])
    a, b = inter.subset(np.array([0, 1, 2])), inter.subset(np.array([2, 3, 4]))
    assert pair_overlap(a, b) == 1
    assert pair_overlap(a, inter.subset(np.array([3, 4]))) == 1  # same pair, another event
    with pytest.raises(DataError, match="share 1"):
        check_disjoint(Split(train=a, val=None, test=b))
    # distinct events of one pair
    with pytest.raises(DataError, match=r"share 1 \(user, item\) pair"):
        check_disjoint(Split(train=a, val=None, test=inter.subset(np.array([3, 4]))))
    check_disjoint(
        Split(
            train=inter.subset(np.array([0, 1, 2, 3])), val=None, test=inter.subset(np.array([4]))
        )
    )
    with pytest.raises(DataError, match="id space"):
        pair_overlap(a, make_data(n=10))


def test_hydra_instantiate() -> None:
    hydra_utils = pytest.importorskip("hydra.utils")
    cfg = {"_target_": "mfzoo.data.splits.TemporalSplit", "test": 0.1, "val": 0.05}
    assert hydra_utils.instantiate(cfg) == TemporalSplit(test=0.1, val=0.05)


def test_user_random_split_holds_out_a_share_of_every_user():
    rng = np.random.default_rng(5)
    keys = rng.choice(60 * 80, size=1500, replace=False)
    data = Interactions.from_arrays(
        keys // 80, keys % 80, np.arange(1500, dtype=np.float32), np.arange(1500)
    )
    split = UserRandomSplit(test=0.2, val=0.1, seed=3)(data)
    counts = np.bincount(data.users.numpy(), minlength=data.n_users)
    test_counts = np.bincount(split.test.users.numpy(), minlength=data.n_users)
    val_counts = np.bincount(split.val.users.numpy(), minlength=data.n_users)
    np.testing.assert_array_equal(test_counts, np.floor(0.2 * counts + 0.5))
    np.testing.assert_array_equal(val_counts, np.floor(0.1 * counts + 0.5))
    rows = np.concatenate([p.values.numpy() for p in (split.train, split.val, split.test)])
    assert sorted(rows.tolist()) == list(range(1500))  # a partition of the rows
    again = UserRandomSplit(test=0.2, val=0.1, seed=3)(data)
    other = UserRandomSplit(test=0.2, val=0.1, seed=4)(data)
    assert torch.equal(again.test.values, split.test.values) and not torch.equal(
        other.test.values, split.test.values
    )


# repeated (user, item) pairs ---------------------------------------------------------------
def make_repeated(n_pairs: int = 900, seed: int = 0) -> Interactions:
    """Every pair 1-4 times, at random times, rows shuffled; values = row number."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(N_USERS * N_ITEMS, size=n_pairs, replace=False)
    keys = np.repeat(keys, rng.integers(1, 5, size=n_pairs))  # [N]
    keys = keys[rng.permutation(len(keys))]
    n = len(keys)
    ts = T0 + rng.integers(0, 10_000_000, size=n)
    return Interactions.from_arrays(
        keys // N_ITEMS,
        keys % N_ITEMS,
        values=np.arange(n, dtype=np.float32),
        timestamps=ts,
        name="repeated",
        pair_duplicates="keep",
    )


REPEATED_SPLITTERS = [
    *SPLITTERS,
    (UserRandomSplit(test=0.2, val=0.1, seed=1), True),
    (UserRandomSplit(test=0.3), False),
]


@pytest.mark.parametrize(("splitter", "with_val"), REPEATED_SPLITTERS, ids=repr)
def test_repeated_pairs_never_straddle_parts(splitter, with_val: bool) -> None:
    data = make_repeated()
    keys = (data.users * data.n_items + data.items).numpy()
    assert len(np.unique(keys)) < len(data) / 2  # many pairs repeat
    split = splitter(data)
    assert_valid_partition(split, data, with_val)  # every row once, no pair key in two parts
    assert sum(len(p) for p in split.parts().values()) == len(data)
    for part in split.parts().values():  # each pair whole: as many rows as in the input
        part_keys = (part.users * part.n_items + part.items).numpy()
        np.testing.assert_array_equal(
            np.bincount(part_keys, minlength=keys.max() + 1)[np.unique(part_keys)],
            np.bincount(keys)[np.unique(part_keys)],
        )


def latest_by_pair(part: Interactions) -> np.ndarray:
    keys, t = (part.users * part.n_items + part.items).numpy(), part.timestamps.numpy()
    order = np.lexsort((t, keys))
    last = np.r_[keys[order][1:] != keys[order][:-1], True]
    return t[order][last]  # [P] the latest event of each pair


def test_temporal_split_places_a_pair_at_its_latest_event() -> None:
    data = make_repeated()
    split = TemporalSplit(test=0.2, val=0.1)(data)
    # no train event at or after the val cut, no val event at or after the test cut
    assert split.train.timestamps.max() < latest_by_pair(split.val).min()
    assert latest_by_pair(split.val).max() < latest_by_pair(split.test).min()
    n_pairs = len(np.unique((data.users * data.n_items + data.items).numpy()))
    assert abs(len(latest_by_pair(split.test)) - 0.2 * n_pairs) <= 3  # the fraction counts pairs
    cut = T0 + 8_000_000
    split = TemporalSplit(test=None, cut=cut)(data)
    assert split.train.timestamps.max() < cut <= latest_by_pair(split.test).min()
    # earlier events of held-out pairs go with them
    assert (split.test.timestamps.numpy() < cut).any()


def test_leave_last_out_places_a_pair_at_its_latest_event() -> None:
    inter = Interactions.from_arrays(
        ["a"] * 6 + ["b"],
        [1, 2, 1, 3, 2, 4, 1],
        values=np.arange(7),
        timestamps=[1, 2, 9, 4, 5, 6, 3],
        pair_duplicates="keep",
    )
    # user a, pairs by latest event: item 2 at t=5, item 4 at t=6, item 1 at t=9 (rows 0, 2)
    split = LeaveLastOut(n=1, val_n=1)(inter)
    assert rows(split.test).tolist() == [0, 2] and rows(split.val).tolist() == [5]
    assert rows(split.train).tolist() == [1, 3, 4, 6]


def test_unique_pairs_split_as_rows_as_before(data: Interactions) -> None:
    """With unique pairs pair k is row k: a split of pairs is the split of rows it always was."""
    perm = np.random.default_rng(3).permutation(len(data))
    n_test, n_val = round(0.1 * len(data)), round(0.15 * len(data))
    split = RandomSplit(test=0.1, val=0.15, seed=3)(data)
    assert rows(split.test).tolist() == sorted(perm[:n_test].tolist())
    assert rows(split.val).tolist() == sorted(perm[n_test : n_test + n_val].tolist())
