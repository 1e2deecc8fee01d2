import math

import pytest
import torch

from mfzoo.data.batch import Batch
from mfzoo.evaluation.metrics import clip, mae, rating_metrics, rmse
from mfzoo.losses import MSELoss


def test_mse_matches_the_formula():
    scores = torch.tensor([[3.0], [4.5], [1.0]])
    batch = Batch(
        users=torch.tensor([0, 1, 2]),
        items=torch.tensor([[0], [1], [2]]),
        targets=torch.tensor([4.0, 4.0, 2.0]),
    )
    penalty = torch.tensor([6.0, 0.5])
    plain = (1.0 + 0.25 + 1.0) / 3
    assert MSELoss()(scores, batch).item() == pytest.approx(plain)
    loss = MSELoss(l2=0.1, l2_bias=0.02)(scores, batch, penalty)
    assert loss.item() == pytest.approx(plain + (0.1 * 6.0 + 0.02 * 0.5) / 3)
    assert MSELoss(l2=0.1)(scores, batch, penalty).item() == pytest.approx(plain + 0.1 * 6.5 / 3)


def test_mse_per_example_weights():
    scores = torch.tensor([[3.0], [5.0]])
    batch = Batch(
        torch.tensor([0, 1]),
        torch.tensor([[0], [1]]),
        targets=torch.tensor([4.0, 4.0]),
        weights=torch.tensor([2.0, 0.5]),
    )
    assert MSELoss()(scores, batch).item() == pytest.approx((2.0 * 1 + 0.5 * 1) / 2)
    assert MSELoss(weighted=False)(scores, batch).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="targets"):
        MSELoss()(scores, Batch(torch.tensor([0, 1]), torch.tensor([[0], [1]])))


def test_rating_metrics_hand_values():
    pred, target = torch.tensor([1.0, 2.0, 6.0]), torch.tensor([2.0, 2.0, 4.0])
    assert rmse(pred, target) == pytest.approx(math.sqrt((1 + 0 + 4) / 3))
    assert mae(pred, target) == pytest.approx(3 / 3)
    clipped = rating_metrics(pred, target, (1.0, 5.0))  # 6 -> 5
    assert clipped == pytest.approx({"rmse": math.sqrt((1 + 0 + 1) / 3), "mae": 2 / 3})
    assert torch.equal(clip(pred, None), pred)
    with pytest.raises(ValueError, match="shape"):
        rmse(pred, target[:2])
