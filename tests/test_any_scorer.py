"""Ranking evaluation and `recommend` for any scorer: a model that is not a dot product (an MLP
over user and item embeddings, defined here) against a full sort of the scores its `forward`
gives pair by pair; a factorised model on its matmul path and on the forward path alike; and
the parts that need factors (similarity, export, ANN, new users) refusing it by name."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mfzoo.data.batch import Batch
from mfzoo.data.datamodule import InteractionsDataModule
from mfzoo.data.interactions import Interactions
from mfzoo.data.sampling import UniformSampler
from mfzoo.data.splits import UserRandomSplit
from mfzoo.evaluation.ranking import evaluate_ranking
from mfzoo.losses import BPRLoss
from mfzoo.models.contract import ContractError, Factorised, Scorer
from mfzoo.models.mf import MF
from mfzoo.retrieval import (
    export_factors,
    item_index,
    model_scores,
    new_users,
    recommend,
    similar_items,
    topk,
)
from mfzoo.retrieval.similar import similar_users
from mfzoo.training.module import GradientModule
from tests.test_ranking import brute_force, random_split

N_USERS, N_ITEMS = 50, 40  # the id space of `random_split`


class MLPScorer(nn.Module):
    """score(u, i) = w₂ · tanh(W₁ [p_u, q_i] + b₁) + b₂: a scorer that has no user and item
    factors whose dot product gives its scores."""

    def __init__(self, n_users: int, n_items: int, dim: int = 4, hidden: int = 8, seed: int = 0):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        torch.manual_seed(seed)
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.calls: list[tuple[int, int]] = []  # (users, pairs) of every call, for the memory bound

    def forward(self, batch: Batch) -> Tensor:
        self.calls.append((batch.items.shape[0], batch.items.numel()))
        p = self.user_embedding(batch.users)  # [B, D]
        q = self.item_embedding(batch.items)  # [B, M, D]
        x = torch.cat([p.unsqueeze(1).expand(-1, q.shape[1], -1), q], -1)  # [B, M, 2D]
        return self.mlp(x).squeeze(-1)  # [B, M]


class ForwardOnly(nn.Module):
    """Another model's `forward` without its factors: the same scores, no matmul path."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.n_users, self.n_items = model, model.n_users, model.n_items

    def forward(self, batch: Batch) -> Tensor:
        return self.model(batch)


def pairwise_scores(model: nn.Module) -> torch.Tensor:
    """[n_users, n_items]: `forward` called once per (user, item) pair."""
    scores = torch.empty(model.n_users, model.n_items, dtype=torch.float64)
    with torch.no_grad():
        for u in range(model.n_users):
            for i in range(model.n_items):
                scores[u, i] = model(Batch(users=torch.tensor([u]), items=torch.tensor([[i]])))[
                    0, 0
                ]
    return scores


def full_sort(
    scores: torch.Tensor, users: list[int], k: int, blocked: torch.Tensor
) -> list[list[int]]:
    """Every user's items by (score desc, id asc), blocked items dropped, −1 padded to k."""
    lists = []
    for u in users:
        best = sorted(
            (i for i in range(scores.shape[1]) if not blocked[u, i]),
            key=lambda i: (-float(scores[u, i]), i),
        )
        lists.append((best + [-1] * k)[:k])
    return lists


def seen_mask(data: Interactions) -> torch.Tensor:
    mask = torch.zeros(data.n_users, data.n_items, dtype=torch.bool)
    mask[data.users, data.items] = True
    return mask


@pytest.fixture(scope="module")
def mlp() -> MLPScorer:
    return MLPScorer(N_USERS, N_ITEMS).double()


def test_the_mlp_is_a_scorer_without_factors(mlp):
    assert isinstance(mlp, Scorer) and not isinstance(mlp, Factorised)


@pytest.mark.parametrize("chunk_size,forward_pairs", [(7, 100), (50, 10_000), (3, 1)])
def test_topk_of_a_non_factorised_scorer_is_the_full_sort_of_its_pairwise_scores(
    mlp, chunk_size, forward_pairs
):
    train, _ = random_split()
    users = [0, 3, 17, 49, 17, 8]
    mlp.calls.clear()
    scores, items = topk(
        model_scores(mlp, forward_pairs=forward_pairs), torch.tensor(users), 33, train, chunk_size
    )
    dense = pairwise_scores(mlp)
    # 33: longer than some lists
    assert items.tolist() == full_sort(dense, users, 33, seen_mask(train))
    filled = items >= 0
    rows = torch.tensor(users).unsqueeze(1).expand_as(items)  # [n, 33] the user of each slot
    assert torch.allclose(scores[filled], dense[rows[filled], items[filled]], rtol=0, atol=1e-12)
    # memory: forward saw at most max(1, forward_pairs // n_items) users, every item of each
    scored = [c for c in mlp.calls if c[1] > 1]  # not the one-pair calls of `pairwise_scores`
    assert scored and all(pairs == rows * N_ITEMS for rows, pairs in scored)
    assert max(rows for rows, _ in scored) == min(
        max(1, forward_pairs // N_ITEMS), chunk_size, len(users)
    )


def test_ranking_metrics_of_a_non_factorised_scorer_match_brute_force(mlp):
    train, test = random_split(seed=4)
    ks = (1, 5, 10, 33)
    got = evaluate_ranking(model_scores(mlp, forward_pairs=200), train, test, ks=ks, chunk_size=9)
    want = brute_force(pairwise_scores(mlp).tolist(), train, test, ks)
    assert got["n_users_evaluated"] == 40
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_recommend_a_non_factorised_scorer_with_seen_and_candidates(mlp):
    train, _ = random_split(seed=5)
    candidates = torch.tensor([1, 4, 9, 16, 25, 36, 2, 3, 39])
    users = [5, 0, 44]
    _, items = recommend(
        mlp, torch.tensor(users), k=6, seen=train, candidates=candidates, chunk_size=2
    )
    blocked = seen_mask(train)
    outside = torch.ones(N_ITEMS, dtype=torch.bool)
    outside[candidates] = False
    assert items.tolist() == full_sort(pairwise_scores(mlp), users, 6, blocked | outside)
    _, unmasked = recommend(mlp, torch.tensor(users), k=6, exclude_seen=False)
    assert unmasked.tolist() == full_sort(pairwise_scores(mlp), users, 6, torch.zeros_like(blocked))
    with pytest.raises(ValueError, match="user ids"):
        recommend(mlp, torch.tensor([N_USERS]), k=3)


def test_a_factorised_model_gives_the_same_results_on_both_paths():
    torch.manual_seed(2)
    model = MF(N_USERS, N_ITEMS, dim=6, biases=True, init_std=1.0).double()
    with torch.no_grad():
        model.user_bias.weight.normal_()
        model.item_bias.weight.normal_()
        model.global_mean.fill_(3.0)
    forward_only = ForwardOnly(model)
    assert isinstance(model, Factorised) and not isinstance(forward_only, Factorised)
    train, test = random_split(seed=6)
    fast = evaluate_ranking(model_scores(model), train, test, ks=(3, 10), chunk_size=8)
    slow = evaluate_ranking(
        model_scores(forward_only, forward_pairs=120), train, test, ks=(3, 10), chunk_size=8
    )
    for name in fast:
        if name != "seconds":
            assert fast[name] == pytest.approx(slow[name], abs=1e-12), name
    users = torch.arange(N_USERS)
    fast_s, fast_i = recommend(model, users, k=12, seen=train)
    slow_s, slow_i = recommend(forward_only, users, k=12, seen=train)
    assert torch.equal(fast_i, slow_i)
    assert torch.allclose(fast_s, slow_s, rtol=0, atol=1e-10)
    assert fast_i.tolist() == full_sort(
        pairwise_scores(model), list(range(N_USERS)), 12, seen_mask(train)
    )


def test_a_non_factorised_model_trains_and_is_evaluated_by_ranking_through_the_module():
    """The gradient module's validation ranks by the model's forward: the logged metrics are
    those of a full sort of the trained model's pairwise scores."""
    rng = np.random.default_rng(0)
    keys = rng.choice(30 * 25, size=300, replace=False)
    data = Interactions.from_arrays(keys // 25, keys % 25)
    datamodule = InteractionsDataModule(
        data,
        UserRandomSplit(val=0.2, test=0.2, seed=0),
        batch_size=64,
        sampler=partial(UniformSampler, n_negatives=2),
    )
    datamodule.setup()
    model = MLPScorer(datamodule.n_users, datamodule.n_items, seed=3)
    module = GradientModule(
        model,
        BPRLoss(),
        partial(torch.optim.Adam, lr=0.05),
        ranking={"ks": [3, 10], "chunk_size": 4},
    )
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule)
    (logged,) = trainer.validate(module, datamodule, verbose=False)
    model.eval()
    split = datamodule.split
    want = brute_force(pairwise_scores(model).tolist(), split.train, split.val, (3, 10))
    for name in ("ndcg@3", "recall@10", "map@10", "coverage@10", "gini@3"):
        assert logged[f"val/{name}"] == pytest.approx(want[name], abs=1e-6), name
    assert logged["val/ndcg@10"] > 0


def test_what_needs_factors_refuses_a_scorer_without_them(mlp, tmp_path):
    train, _ = random_split()
    for call, needed_by in [
        (lambda: similar_items(mlp, torch.tensor([0]), 3), "item similarity"),
        (lambda: similar_users(mlp, torch.tensor([0]), 3), "user similarity"),
        (
            lambda: export_factors(mlp, tmp_path / "out", np.arange(N_USERS), np.arange(N_ITEMS)),
            "factor export",
        ),
        (lambda: item_index(mlp), "index of items"),
        (lambda: recommend(mlp, new_users(train, [1, 2], encoded=True), k=3), "new users"),
    ]:
        with pytest.raises(ContractError, match=f"MLPScorer is not Factorised.*{needed_by}"):
            call()
    assert not (tmp_path / "out").exists()
