import logging

import numpy as np
import pytest
import torch

from mfzoo.data.batch import Batch
from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions
from mfzoo.data.loader import BatchLoader


def test_ids_are_contiguous_and_map_back(ratings):
    assert ratings.n_users <= 30 and ratings.n_items <= 40
    assert int(ratings.users.max()) == ratings.n_users - 1
    raw_u = ratings.user_ids[ratings.users.numpy()]
    assert raw_u.min() >= 100
    np.testing.assert_array_equal(ratings.encode_users(raw_u), ratings.users.numpy())
    with pytest.raises(DataError, match="unknown item"):
        ratings.encode_items(np.array([1]))


def test_csr_views_both_ways_match_dense(ratings):
    dense = torch.zeros(ratings.n_users, ratings.n_items)
    dense[ratings.users, ratings.items] = ratings.values
    by_user = ratings.csr("user").to_dense()
    by_item = ratings.csr("item").to_dense()
    assert torch.equal(by_user, dense)
    assert torch.equal(by_item, dense.T)
    assert np.array_equal(ratings.to_scipy("item").toarray(), dense.T.numpy())


def test_subset_keeps_id_space(ratings):
    part = ratings.subset(torch.arange(10))
    assert len(part) == 10 and part.n_users == ratings.n_users and part.n_items == ratings.n_items
    assert torch.equal(part.values, ratings.values[:10])
    assert part.to("cpu").users.device.type == "cpu"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0, float("nan"), 3.0], "non-finite.*row 1"),
        ([1.0, 2.0, float("inf")], "non-finite.*row 2"),
        (np.array(["1", "x", "3"], dtype=object), "row 1 is not a number: 'x'"),
    ],
)
def test_bad_values_name_the_row(values, message):
    with pytest.raises(DataError, match=message):
        Interactions.from_arrays([1, 2, 3], [1, 2, 3], values, name="f.csv")


def test_empty_and_misaligned_input():
    with pytest.raises(DataError, match="no interactions"):
        Interactions.from_arrays([], [])
    with pytest.raises(DataError, match="3 users but 2 items"):
        Interactions.from_arrays([1, 2, 3], [1, 2])


def test_duplicate_events_policy(caplog):
    users, items, values, times = [1, 1, 2], [5, 5, 5], [1.0, 4.0, 3.0], [10, 10, 10]
    kept = Interactions.from_arrays(users, items, values, times)
    assert len(kept) == 2 and sorted(kept.values.tolist()) == [3.0, 4.0]  # keep_last kept 4.0
    assert "dropped 1 duplicate" in caplog.text
    first = Interactions.from_arrays(users, items, values, times, duplicates="keep_first")
    assert sorted(first.values.tolist()) == [1.0, 3.0]
    with pytest.raises(DataError, match=r"duplicate.*row 1"):
        Interactions.from_arrays(users, items, values, times, duplicates="error")
    # the same pair at another time is another event: a repeated rating unless told otherwise
    with pytest.raises(DataError, match=r"pair \(1, 5\) occurs 2 times, at rows 0, 1"):
        Interactions.from_arrays(users, items, values, [10, 11, 10])
    assert (
        len(Interactions.from_arrays(users, items, values, [10, 11, 10], pair_duplicates="keep"))
        == 3
    )
    # implicit events: kept
    assert len(Interactions.from_arrays(users, items, None, [10, 11, 10])) == 3


def test_loader_covers_every_row_once_per_epoch(ratings):
    loader = BatchLoader(ratings, batch_size=64, shuffle=True, seed=3)
    assert len(loader) == 5
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert all(isinstance(b, Batch) and b.items.shape == (len(b), 1) for b in batches)
        users = torch.cat([b.users for b in batches])
        items = torch.cat([b.items[:, 0] for b in batches])
        keys = users * ratings.n_items + items
        assert torch.equal(
            keys.sort().values, (ratings.users * ratings.n_items + ratings.items).sort().values
        )
        epochs.append(keys)
    assert not torch.equal(epochs[0], epochs[1])  # a new permutation each epoch
    again = torch.cat([b.users for b in BatchLoader(ratings, 64, shuffle=True, seed=3)])
    assert torch.equal(
        again, torch.cat([b.users for b in BatchLoader(ratings, 64, shuffle=True, seed=3)])
    )


def test_loader_without_shuffle_keeps_order_and_targets(ratings):
    batches = list(BatchLoader(ratings, batch_size=128))
    assert torch.equal(torch.cat([b.targets for b in batches]), ratings.values)
    assert torch.equal(torch.cat([b.times for b in batches]), ratings.timestamps)
    moved = batches[0].to("cpu")
    assert moved.items.shape == batches[0].items.shape


# repeated (user, item) pairs ------------------------------------------------------------------
# user "u" rates item 1 three times (rows 0, 2, 4, at t = 30, 10, 20), item 2 once
PAIRS = dict(
    users=["u", "v", "u", "u", "u"], items=[1, 1, 1, 2, 1], values=[1.0, 5.0, 2.0, 4.0, 6.0]
)
TIMES = [30, 5, 10, 7, 20]


@pytest.mark.parametrize(
    ("policy", "times", "kept_rows", "value", "time"),
    [
        ("last", TIMES, [0, 1, 3], 1.0, 30),  # latest event: row 0 (t=30)
        ("first", TIMES, [1, 2, 3], 2.0, 10),  # earliest event: row 2 (t=10)
        ("mean", TIMES, [0, 1, 3], 3.0, 30),  # (1 + 2 + 6) / 3, at the latest event
        ("sum", TIMES, [0, 1, 3], 9.0, 30),
        ("max", TIMES, [0, 1, 3], 6.0, 30),
        ("last", None, [1, 3, 4], 6.0, None),  # without timestamps: row order
        ("first", None, [0, 1, 3], 1.0, None),
        ("mean", None, [1, 3, 4], 3.0, None),
    ],
)
def test_pair_policies(policy, times, kept_rows, value, time, caplog):
    with caplog.at_level(logging.INFO, logger="mfzoo.data.duplicates"):
        data = Interactions.from_arrays(**PAIRS, timestamps=times, pair_duplicates=policy)
    assert len(data) == 3 and (data.n_users, data.n_items) == (2, 2)
    raw = list(
        zip(data.user_ids[data.users.numpy()], data.item_ids[data.items.numpy()], strict=True)
    )
    assert raw == [
        (PAIRS["users"][r], PAIRS["items"][r]) for r in kept_rows
    ]  # input row order kept
    merged = raw.index(("u", 1))
    assert float(data.values[merged]) == value
    assert (data.timestamps is None and time is None) or int(data.timestamps[merged]) == time
    assert "merged 3 row(s) of 1 repeated (user, item) pair(s)" in caplog.text


def test_pair_policy_defaults_error_for_ratings_keep_for_events():
    with pytest.raises(DataError) as err:
        Interactions.from_arrays(**PAIRS, name="r.csv")
    message = str(err.value)
    assert "r.csv: (user, item) pair ('u', 1) occurs 3 times, at rows 0, 2, 4" in message
    assert all(choice in message for choice in ("mean", "last", "first", "sum", "max", "keep"))
    events = Interactions.from_arrays(PAIRS["users"], PAIRS["items"])  # no values: implicit events
    assert len(events) == 5
    assert len(Interactions.from_arrays(**PAIRS, pair_duplicates="keep")) == 5
    with pytest.raises(ValueError, match="pair_duplicates must be one of error, mean"):
        Interactions.from_arrays(**PAIRS, pair_duplicates="average")


def test_pair_sum_beyond_float32_is_refused():
    with pytest.raises(
        DataError, match=r"the sum of pair \(1, 1\) is 6.*e\+38, beyond the float32 range"
    ):
        Interactions.from_arrays([1, 1], [1, 1], [3e38, 3e38], pair_duplicates="sum")
    assert float(
        Interactions.from_arrays([1, 1], [1, 1], [3e38, 3e38], pair_duplicates="mean").values[0]
    ) == pytest.approx(3e38)


def test_with_pair_policy_keeps_the_id_space():
    events = Interactions.from_arrays(
        PAIRS["users"], PAIRS["items"], PAIRS["values"], TIMES, pair_duplicates="keep"
    )
    merged = events.with_pair_policy("max")
    assert (
        len(merged) == 3 and merged.n_users == events.n_users and merged.n_items == events.n_items
    )
    assert merged.values.tolist() == [6.0, 5.0, 4.0] and merged.timestamps.tolist() == [30, 5, 7]
    assert events.with_pair_policy("keep") is events
    with pytest.raises(DataError, match="occurs 3 times, at rows 0, 2, 4"):
        events.with_pair_policy("error")


def test_datamodule_applies_the_pair_policy():
    from mfzoo.data.datamodule import InteractionsDataModule
    from mfzoo.data.splits import RandomSplit

    events = Interactions.from_arrays(
        PAIRS["users"], PAIRS["items"], PAIRS["values"], TIMES, pair_duplicates="keep"
    )
    dm = InteractionsDataModule(events, RandomSplit(test=0.4), pair_duplicates="mean")
    dm.setup()
    assert len(dm.data) == 3 and sorted(dm.data.values.tolist()) == [3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="pair_duplicates"):
        InteractionsDataModule(events, RandomSplit(), pair_duplicates="median")


# values and timestamps checked as stored --------------------------------------------------------
@pytest.mark.parametrize(
    ("column", "cells", "message"),
    [
        ("values", [1.0, 1e39], r"column 'value' .* beyond the float32 range .* row 1: 1e\+39"),
        ("values", [1.0, 0.0, 1e-50], r"column 'value' .* too small for the float32 .* row 2"),
        ("values", [-3.5e38, 1.0], r"column 'value' .* float32 .* row 0"),
        ("values", [1.0, 10**400], r"column 'value' row 1 is too large"),
        (
            "timestamps",
            [1, 1e30],
            r"column 'timestamp' .* outside the int64 range .* row 1: 1e\+30",
        ),
        ("timestamps", [2**63, 1], r"column 'timestamp' .* int64 .* row 0: 9223372036854775808"),
        (
            "timestamps",
            np.array([1, 2**63], dtype=np.uint64),
            r"column 'timestamp' .* int64 .* row 1",
        ),
        ("timestamps", [float("nan"), 1], r"column 'timestamp' .* non-finite .* row 0"),
        ("timestamps", ["1", "soon"], r"column 'timestamp' row 1 is not a number: 'soon'"),
    ],
)
def test_columns_are_checked_after_the_cast(column, cells, message):
    with pytest.raises(DataError, match=message):
        Interactions.from_arrays([1, 2], [1, 2], **{column: cells}, name="f")


def test_timestamps_exact_floored_and_converted(caplog):
    big = [2**62 + 1, -(2**63), 2**63 - 1]  # exact: a float64 would round them
    assert Interactions.from_arrays([1, 2, 3], [1, 2, 3], timestamps=big).timestamps.tolist() == big
    mixed = [2**60 + 1, 0.5, 7]  # ints beside floats stay exact
    assert Interactions.from_arrays([1, 2, 3], [1, 2, 3], timestamps=mixed).timestamps.tolist() == [
        2**60 + 1,
        0,
        7,
    ]
    with caplog.at_level(logging.WARNING):
        floored = Interactions.from_arrays([1, 2], [1, 2], timestamps=[1.5, -0.5], name="f")
    assert floored.timestamps.tolist() == [1, -1]
    assert "f: column 'timestamp' has 2 fractional value(s), first at row 0" in caplog.text
    days = np.array(["2021-01-01", "2021-01-02"], dtype="datetime64[D]")
    assert Interactions.from_arrays([1, 2], [1, 2], timestamps=days).timestamps.tolist() == [
        1609459200,
        1609545600,
    ]


def test_ids_mixed_missing_and_kept_as_given():
    with pytest.raises(
        DataError, match=r"column 'user' mixes id types \(int at row 0, str at row 1: 'a'\)"
    ):
        Interactions.from_arrays([1, "a"], [1, 2])
    with pytest.raises(DataError, match="column 'item' is missing at row 1"):
        Interactions.from_arrays(np.array(["a", "b"]), np.array(["x", ""]))
    data = Interactions.from_arrays(["a\0", "a"], [1, 2])  # numpy would drop the trailing NUL
    assert sorted(data.user_ids.tolist()) == ["a", "a\0"]


@pytest.mark.parametrize(
    ("n", "batch_size", "world"), [(1000, 64, 2), (1000, 64, 3), (130, 64, 2), (129, 64, 2)]
)
def test_ranks_take_disjoint_slices_that_make_up_the_single_process_batches(n, batch_size, world):
    """Batch b of W ranks together is batch b of one process with a batch W times larger, in
    the same order; every rank takes as many batches; the negatives differ by rank."""
    from mfzoo.data.sampling import UniformSampler

    rng = np.random.default_rng(0)
    data = Interactions.from_arrays(
        rng.integers(0, 50, n),
        rng.integers(0, 40, n),
        rng.random(n).astype(np.float32),
        pair_duplicates="keep",
    )

    def rows(batch):  # a row's identity: (user, item, value)
        return list(
            zip(
                batch.users.tolist(),
                batch.items[:, 0].tolist(),
                batch.targets.tolist(),
                strict=True,
            )
        )

    single = [rows(b) for b in BatchLoader(data, batch_size * world, shuffle=True, seed=3)]
    per_rank = [
        [
            b
            for b in BatchLoader(
                data,
                batch_size,
                shuffle=True,
                seed=3,
                rank=r,
                world_size=world,
                sampler=UniformSampler(data, 2),
            )
        ]
        for r in range(world)
    ]
    # the same number of steps on every rank
    assert len({len(batches) for batches in per_rank}) == 1
    for b, together in enumerate(zip(*per_rank, strict=True)):
        assert [row for batch in together for row in rows(batch)] == single[b]
        assert all(len(batch) >= 1 for batch in together)
    covered = sum(len(batch) for batches in per_rank for batch in batches)
    assert covered == (
        n
        if (n % (batch_size * world)) >= world or n % (batch_size * world) == 0
        else n - n % (batch_size * world)
    )
    negatives = [batches[0].items[:, 1:] for batches in per_rank]
    assert not torch.equal(negatives[0][: len(negatives[1])], negatives[1][: len(negatives[0])])


def test_one_rank_of_one_draws_what_a_plain_loader_draws(ratings):
    from mfzoo.data.sampling import UniformSampler

    plain = list(BatchLoader(ratings, 7, shuffle=True, seed=1, sampler=UniformSampler(ratings, 2)))
    ranked = list(
        BatchLoader(
            ratings,
            7,
            shuffle=True,
            seed=1,
            rank=0,
            world_size=1,
            sampler=UniformSampler(ratings, 2),
        )
    )
    assert all(
        torch.equal(a.items, b.items) and torch.equal(a.users, b.users)
        for a, b in zip(plain, ranked, strict=True)
    )
    with pytest.raises(ValueError, match="rank and world_size go together"):
        BatchLoader(ratings, 7, rank=2, world_size=2)
