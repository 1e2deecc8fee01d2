import math

import numpy as np
import pytest
import torch

from mfzoo.data.batch import Batch
from mfzoo.data.implicit import confidence, positives
from mfzoo.data.interactions import Interactions
from mfzoo.data.loader import BatchLoader
from mfzoo.data.sampling import PairSet, PopularitySampler, UniformSampler
from mfzoo.losses import BCELoss, BPRLoss, SampledSoftmaxLoss


def _skewed():
    """20 users x 10 items; item i has 2*i+1 events spread over users (popularity rises with i)."""
    users, items = [], []
    for i in range(10):
        for k in range(2 * i + 1):
            users.append((k * 7 + i) % 20)
            items.append(i)
    return Interactions.from_arrays(
        np.array(users), np.array(items), np.ones(len(users)), np.arange(len(users))
    )


def test_uniform_sampler_distribution_and_log_prob():
    train = _skewed()
    sampler = UniformSampler(train, n_negatives=50)
    g = torch.Generator().manual_seed(0)
    items, log_q = sampler(torch.zeros(2000, dtype=torch.long), g)
    assert items.shape == (2000, 50) and torch.allclose(
        log_q, torch.full_like(log_q, -math.log(10))
    )
    freq = torch.bincount(items.flatten(), minlength=10).double() / items.numel()
    assert (freq - 0.1).abs().max() < 0.005  # 100k draws: sd of each frequency ~0.001


def test_popularity_sampler_follows_pop_to_the_beta():
    train = _skewed()
    sampler = PopularitySampler(train, n_negatives=100, beta=0.75, smoothing=1.0)
    counts = torch.arange(10, dtype=torch.float64) * 2 + 1 + 1.0  # events + smoothing
    expected = counts.pow(0.75) / counts.pow(0.75).sum()
    items, log_q = sampler(torch.zeros(2000, dtype=torch.long), torch.Generator().manual_seed(1))
    freq = torch.bincount(items.flatten(), minlength=10).double() / items.numel()
    assert (freq - expected).abs().max() < 0.004  # 200k draws
    assert torch.allclose(log_q.double(), expected.log()[items], atol=1e-6)
    assert torch.allclose(
        sampler.log_prob(torch.tensor([[3]])).double(), expected[3].log().view(1, 1), atol=1e-6
    )


def test_rejection_never_returns_a_seen_item_and_is_seeded():
    train = _skewed()
    sampler = PopularitySampler(train, n_negatives=8, beta=1.0, reject_seen=True, max_rounds=100)
    users = torch.arange(20).repeat(50)
    items, _ = sampler(users, torch.Generator().manual_seed(2))
    seen = {(int(u), int(i)) for u, i in zip(train.users, train.items, strict=True)}
    assert sampler.collisions == 0
    assert not any(
        (int(u), int(i)) in seen for u, row in zip(users, items, strict=True) for i in row
    )
    again, _ = sampler(users, torch.Generator().manual_seed(2))
    assert torch.equal(items, again)
    # too few rounds for users who have seen most popular items: what is left is counted
    short = PopularitySampler(train, n_negatives=8, beta=1.0, reject_seen=True, max_rounds=1)
    left, _ = short(users, torch.Generator().manual_seed(2))
    assert (
        short.collisions
        == sum((int(u), int(i)) in seen for u, row in zip(users, left, strict=True) for i in row)
        > 0
    )
    plain = PopularitySampler(train, n_negatives=8, beta=1.0)(
        users, torch.Generator().manual_seed(2)
    )[0]
    # without rejection: collisions
    assert any((int(u), int(i)) in seen for u, row in zip(users, plain, strict=True) for i in row)


@pytest.mark.parametrize("n_pairs", [0, 1, 300, 20000])
def test_pair_set_answers_exactly_like_a_python_set(n_pairs):
    """Every query of all 300 x 200 pairs, against a set. With 1 or 300 pairs the filter (2^10,
    2^13 bits for 60000 possible keys) has false positives the exact search must clear; at 20000
    pairs it has 2^19 bits, and Fibonacci hashing spreads the 60000 keys without a collision."""
    rng = np.random.default_rng(n_pairs)
    users, items = rng.integers(0, 300, n_pairs), rng.integers(0, 200, n_pairs)
    pairs = PairSet(torch.unique(torch.from_numpy(users * 200 + items)), n_items=200)
    truth = {(int(u), int(i)) for u, i in zip(users, items, strict=True)}
    assert len(pairs) == len(truth)
    qu, qi = torch.meshgrid(torch.arange(300), torch.arange(200), indexing="ij")
    found = pairs.contains(qu.flatten(), qi.flatten())
    expected = torch.tensor(
        [(int(u), int(i)) in truth for u, i in zip(qu.flatten(), qi.flatten(), strict=True)]
    )
    assert torch.equal(found, expected)
    if n_pairs:
        h = pairs._hash(qu.flatten() * 200 + qi.flatten())
        hits = ((pairs.filter[h >> 3] >> (h & 7).to(torch.uint8)) & 1).bool()
        assert hits[expected].all()  # no false negatives from the filter
        # false positives (the search is exercised) exactly when the filter is smaller than
        # the key range
        assert bool((hits & ~expected).any()) == (2**pairs.bits < 300 * 200)


def test_loader_with_sampler_builds_positive_plus_negatives(ratings):
    sampler = UniformSampler(ratings, n_negatives=3)
    batch = next(
        iter(BatchLoader(ratings, 16, shuffle=True, sampler=sampler, weights=ratings.values * 2))
    )
    assert batch.items.shape == (16, 4) and batch.log_q.shape == (16, 4)
    assert torch.equal(batch.weights, batch.targets * 2)


def test_positives_threshold_and_confidence():
    data = Interactions.from_arrays([0, 0, 1, 1], [0, 1, 0, 1], [1, 4, 5, 3])
    kept = positives(data, 4)
    assert kept.values.tolist() == [4.0, 5.0] and kept.n_items == 2
    assert positives(data, None) is data
    r = torch.tensor([0.0, 1.0, 3.0])
    assert confidence(r, "linear", alpha=2.0).tolist() == [1.0, 3.0, 7.0]
    assert torch.allclose(confidence(r, "log", alpha=2.0, eps=0.5), 1 + 2 * torch.log(1 + r / 0.5))
    with pytest.raises(ValueError, match="kind"):
        confidence(r, "cubic")


def _batch(**kw):
    return Batch(users=torch.tensor([0, 1]), items=torch.tensor([[0, 1, 2], [1, 2, 0]]), **kw)


def test_bce_bpr_softmax_match_their_formulas():
    s = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    sig = torch.sigmoid
    # BCE: -log σ(s0) - c Σ log σ(-sk), mean over rows
    bce = [
        -math.log(sig(torch.tensor(r[0])).item())
        - 0.5 * sum(math.log(sig(torch.tensor(-x)).item()) for x in r[1:])
        for r in s.tolist()
    ]
    assert BCELoss(negative_weight=0.5)(s, _batch()).item() == pytest.approx(sum(bce) / 2, rel=1e-6)
    # BPR: mean_k -log σ(s0 - sk)
    bpr = [
        sum(-math.log(sig(torch.tensor(r[0] - x)).item()) for x in r[1:]) / 2 for r in s.tolist()
    ]
    assert BPRLoss()(s, _batch()).item() == pytest.approx(sum(bpr) / 2, rel=1e-6)
    # softmax with logQ: -log( e^{s0 - lq0} / Σ e^{sm - lqm} )
    log_q = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]))
    ref = []
    for r, q in zip(s.tolist(), log_q.tolist(), strict=True):
        z = [a / 2.0 - b for a, b in zip(r, q, strict=True)]
        ref.append(-(z[0] - math.log(sum(math.exp(v) for v in z))))
    loss = SampledSoftmaxLoss(temperature=2.0)(s, _batch(log_q=log_q))
    assert loss.item() == pytest.approx(sum(ref) / 2, rel=1e-6)
    plain = SampledSoftmaxLoss(logq_correction=False)(s, _batch())
    assert plain.item() == pytest.approx(
        torch.nn.functional.cross_entropy(s, torch.zeros(2, dtype=torch.long)).item(), rel=1e-6
    )


def test_implicit_losses_add_the_penalty_and_weights_and_need_negatives():
    s = torch.tensor([[1.0, 0.0], [0.5, 0.2]])
    penalty = torch.tensor([4.0, 2.0])
    base = BPRLoss()(s, Batch(torch.tensor([0, 1]), torch.tensor([[0, 1], [1, 0]])))
    reg = BPRLoss(l2=0.1, l2_bias=0.5)(
        s, Batch(torch.tensor([0, 1]), torch.tensor([[0, 1], [1, 0]])), penalty
    )
    assert reg.item() == pytest.approx(base.item() + (0.1 * 4 + 0.5 * 2) / 2, rel=1e-6)
    w = Batch(
        torch.tensor([0, 1]), torch.tensor([[0, 1], [1, 0]]), weights=torch.tensor([2.0, 0.0])
    )
    row0 = -torch.nn.functional.logsigmoid(torch.tensor(1.0)).item()
    assert BPRLoss()(s, w).item() == pytest.approx(2 * row0 / 2, rel=1e-6)
    with pytest.raises(ValueError, match="negatives"):
        BCELoss()(s[:, :1], w)
    with pytest.raises(ValueError, match="log_q"):
        SampledSoftmaxLoss()(s, w)
