import math

import pytest
import torch

from mfzoo.data.batch import Batch
from mfzoo.data.interactions import Interactions
from mfzoo.models.timesvd import SECONDS_PER_DAY, TimeSVD

DAY = SECONDS_PER_DAY
T0 = 1_000 * DAY  # day 1000


def _train():
    """3 users, 4 items; user 0 rates on days 1000, 1000, 1010; user 1 on 1005, 1020; user 2 on
    1040."""
    users = [0, 0, 0, 1, 1, 2]
    items = [0, 1, 2, 1, 3, 0]
    days = [0, 0, 10, 5, 20, 40]
    times = [T0 + d * DAY + 3600 for d in days]  # an hour into each day
    return Interactions.from_arrays(users, items, [4, 3, 5, 2, 4, 3], times, name="toy")


def _model(**kwargs):
    train = _train()
    model = TimeSVD(train.n_users, train.n_items, dim=2, n_bins=4, beta=0.4, **kwargs)
    model.prepare(train)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.3)
    return train, model


def test_bins_and_deviation_match_hand_values():
    _train, model = _model()
    # span: day 1000 + 1/24 .. 1040 + 1/24, 4 equal bins of 10 days
    start = 1000 + 1 / 24
    assert model.bin_edges.tolist() == pytest.approx([start + 10, start + 20, start + 30])
    days = torch.tensor(
        [999.0, start + 5, start + 15, start + 29.9, start + 35, 1100.0], dtype=torch.float64
    )
    assert model.time_bin(days).tolist() == [0, 0, 1, 2, 3, 3]
    # user 0's mean day: (0 + 0 + 10) / 3 days after start
    t_u = start + 10 / 3
    assert model.user_mean_day[0].item() == pytest.approx(t_u)
    for day in (t_u + 7.0, t_u - 2.5, t_u):
        delta = day - t_u
        expected = math.copysign(abs(delta) ** 0.4, delta) if delta else 0.0
        got = model.deviation(torch.tensor([0]), torch.tensor([day], dtype=torch.float64)).item()
        assert got == pytest.approx(expected, abs=1e-6)


def test_forward_matches_the_formula_by_hand():
    _train, model = _model(factor_drift=True, implicit=True)
    t = T0 + 10 * DAY + 7200  # user 0 rated on this day in training (a seen day)
    batch = Batch(torch.tensor([0]), torch.tensor([[3, 1]]), times=torch.tensor([t]))
    scores = model(batch)
    day = t / DAY
    dev = model.deviation(torch.tensor([0]), torch.tensor([day], dtype=torch.float64)).item()
    bin_ = int(model.time_bin(torch.tensor([day], dtype=torch.float64)))
    R0 = [0, 1, 2]
    implicit = model.implicit.embedding.weight[R0].sum(0) / math.sqrt(3)
    p = model.user_embedding.weight[0] + model.factor_drift.weight[0] * dev + implicit
    key_row = int(model.day_index(torch.tensor([0]), torch.tensor([t])))
    assert key_row < len(model.day_keys)  # a seen (user, day)
    b_u = (
        model.user_bias.weight[0, 0]
        + model.user_drift.weight[0, 0] * dev
        + model.day_bias.weight[key_row, 0]
    )
    for m, i in enumerate([3, 1]):
        b_i = model.item_bias.weight[i, 0] + model.item_bin_bias.weight[i * 4 + bin_, 0]
        expected = model.global_mean + b_u + b_i + model.item_embedding.weight[i] @ p
        assert scores[0, m].item() == pytest.approx(expected.item(), abs=1e-5)


def test_unseen_day_has_no_day_bias_and_seen_days_are_distinct_rows():
    train, model = _model()
    seen = model.day_index(train.users, train.timestamps)
    assert sorted(set(seen.tolist())) == list(range(5))  # 5 distinct (user, day) pairs
    unseen = model.day_index(torch.tensor([1]), torch.tensor([T0 + 3 * DAY]))
    assert int(unseen) == len(model.day_keys)
    assert model.day_bias.weight.shape == (6, 1)


def test_timesvd_without_the_implicit_term_and_time_required():
    _train, model = _model(implicit=False)
    assert model.implicit is None
    with pytest.raises(ValueError, match="times"):
        model(Batch(torch.tensor([0]), torch.tensor([[1]])))
    no_time = Interactions.from_arrays([0, 1], [0, 1], [3, 4])
    with pytest.raises(ValueError, match="timestamps"):
        TimeSVD(2, 2, dim=2).prepare(no_time)


def test_gradients_reach_time_terms_and_checkpoint_round_trip():
    train, model = _model(factor_drift=True)
    batch = Batch(train.users, train.items, train.values, times=train.timestamps)
    model(batch).sum().backward()
    for p in (
        model.user_drift.weight,
        model.item_bin_bias.weight,
        model.day_bias.weight,
        model.factor_drift.weight,
        model.implicit.embedding.weight,
    ):
        assert p.grad is not None and p.grad.abs().sum() > 0
    fresh = TimeSVD(train.n_users, train.n_items, dim=2, n_bins=4, factor_drift=True)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(batch), model(batch))
    assert model.penalty(batch).shape == (2,)


def test_fold_in_is_refused():
    _train, model = _model()
    with pytest.raises(NotImplementedError):
        model.fold_in_design(torch.tensor([0]), torch.tensor([1]), 1)
