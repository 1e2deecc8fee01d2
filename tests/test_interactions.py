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
    with pytest.raises(DataError, match="duplicate.*row 1"):
        Interactions.from_arrays(users, items, values, times, duplicates="error")
    # the same pair at another time is another event, kept
    assert len(Interactions.from_arrays(users, items, values, [10, 11, 10])) == 3


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
        assert torch.equal(keys.sort().values, (ratings.users * ratings.n_items + ratings.items).sort().values)
        epochs.append(keys)
    assert not torch.equal(epochs[0], epochs[1])  # a new permutation each epoch
    again = torch.cat([b.users for b in BatchLoader(ratings, 64, shuffle=True, seed=3)])
    assert torch.equal(again, torch.cat([b.users for b in BatchLoader(ratings, 64, shuffle=True, seed=3)]))


def test_loader_without_shuffle_keeps_order_and_targets(ratings):
    batches = list(BatchLoader(ratings, batch_size=128))
    assert torch.equal(torch.cat([b.targets for b in batches]), ratings.values)
    assert torch.equal(torch.cat([b.times for b in batches]), ratings.timestamps)
    moved = batches[0].to("cpu")
    assert moved.items.shape == batches[0].items.shape
