import math

import pytest
import torch

from mfzoo.data.batch import Batch
from mfzoo.data.interactions import Interactions
from mfzoo.data.loader import BatchLoader
from mfzoo.models.svdpp import SVDpp


def _toy():
    """4 users, 5 items; user 3 has no training items (R(u) empty)."""
    train = Interactions.from_arrays(
        [0, 0, 0, 1, 1, 2, 2, 2, 2, 3],
        [0, 2, 4, 1, 2, 0, 1, 3, 4, 4],
        [5, 3, 4, 2, 1, 4, 4, 5, 3, 2],
        name="toy",
    )
    train = train.subset(torch.arange(9))  # drop user 3's only row, keep the id space
    model = SVDpp(train.n_users, train.n_items, dim=3, init_std=0.3, implicit_init_std=0.3)
    model.prepare(train)
    with torch.no_grad():
        for p in (model.user_bias.weight, model.item_bias.weight):
            p.normal_(std=0.2)
    return train, model


def test_forward_matches_a_hand_loop_over_R_u():
    train, model = _toy()
    users = torch.tensor([0, 1, 2, 3, 0])
    items = torch.tensor([[1, 3], [0, 4], [2, 2], [0, 1], [4, 0]])
    scores = model(Batch(users, items))
    R = {u: [int(i) for i in train.items[train.users == u]] for u in range(4)}
    Y, P, Q = (
        model.implicit.embedding.weight,
        model.user_embedding.weight,
        model.item_embedding.weight,
    )
    for b in range(len(users)):
        u = int(users[b])
        implicit = (
            sum((Y[j] for j in R[u]), torch.zeros(3)) / math.sqrt(len(R[u]))
            if R[u]
            else torch.zeros(3)
        )
        for m in range(2):
            i = int(items[b, m])
            expected = (
                model.global_mean
                + model.user_bias.weight[u, 0]
                + model.item_bias.weight[i, 0]
                + Q[i] @ (P[u] + implicit)
            )
            assert scores[b, m].item() == pytest.approx(expected.item(), abs=1e-5)


def test_gradients_reach_the_implicit_factors_of_R_u_only():
    _train, model = _toy()
    model(Batch(torch.tensor([1]), torch.tensor([[3]]))).sum().backward()
    grad = model.implicit.embedding.weight.grad
    touched = (grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert touched == [1, 2]  # R(1) = {1, 2}
    # d score / d y_j = q_i / sqrt(|R(u)|)
    assert torch.allclose(grad[1], model.item_embedding.weight[3].detach() / math.sqrt(2))


def test_evaluation_items_join_R_u_only_when_asked():
    train, model = _toy()
    # user 3 has item 4 in the test part
    evaluation = Interactions(
        torch.tensor([3]),
        torch.tensor([4]),
        torch.tensor([2.0]),
        None,
        train.user_ids,
        train.item_ids,
    )
    model.prepare(train, evaluation)
    assert model.implicit.indptr[4] - model.implicit.indptr[3] == 0
    netflix = SVDpp(train.n_users, train.n_items, dim=3, include_evaluation_items=True)
    netflix.prepare(train, evaluation)
    assert netflix.implicit.items[netflix.implicit.indptr[3] :].tolist() == [4]


def test_checkpoint_round_trip_restores_R_u():
    train, model = _toy()
    fresh = SVDpp(train.n_users, train.n_items, dim=3)
    fresh.load_state_dict(model.state_dict())
    batch = Batch(torch.tensor([0, 2]), torch.tensor([[1], [3]]))
    assert torch.equal(fresh(batch), model(batch))


def test_grouped_batches_hold_whole_users(ratings):
    loader = BatchLoader(ratings, batch_size=32, shuffle=True, group_by_user=True, seed=1)
    users = torch.cat([b.users for b in loader])
    assert len(users) == len(ratings)
    changes = int((users[1:] != users[:-1]).sum())
    assert changes == ratings.users.unique().numel() - 1  # each user's rows are consecutive


def test_distinct_user_path_equals_all_user_path():
    _train, model = _toy()
    items = torch.tensor([[0, 1, 2, 3, 4]])
    big = model(Batch(torch.tensor([0, 1, 2, 3]), items.expand(4, 5)))  # all-users product
    for u in range(4):  # one row: the distinct-users slice (2 * 1 < n_users)
        assert torch.allclose(model(Batch(torch.tensor([u]), items)), big[u : u + 1], atol=1e-6)
    # and the gradients agree
    model.zero_grad()
    big.sum().backward()
    grad_all = model.implicit.embedding.weight.grad.clone()
    model.zero_grad()
    sum(model(Batch(torch.tensor([u]), items)).sum() for u in range(4)).backward()
    assert torch.allclose(model.implicit.embedding.weight.grad, grad_all, atol=1e-6)
