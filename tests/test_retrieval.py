"""Retrieval: every fast path against a dense, obvious twin."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mfzoo.data.interactions import Interactions
from mfzoo.models.mf import MF
from mfzoo.retrieval import (
    ExactIndex,
    FaissIndex,
    ann_recall,
    export_factors,
    load_factors,
    recommend,
    recommend_factors,
    similar_items,
    similar_users,
)
from mfzoo.solvers import fold_in_interactions


def biased_mf(n_users: int = 30, n_items: int = 50, dim: int = 6, seed: int = 0) -> MF:
    torch.manual_seed(seed)
    model = MF(n_users, n_items, dim, biases=True, init_std=1.0)
    with torch.no_grad():
        model.user_bias.weight.normal_()
        model.item_bias.weight.normal_(std=2.0)
        model.global_mean.fill_(3.5)
    return model


def dense_scores(model: MF) -> torch.Tensor:
    """r̂_ui = μ + b_u + b_i + p_u · q_i, written out."""
    p, q = model.user_embedding.weight.detach(), model.item_embedding.weight.detach()
    return (
        model.global_mean
        + model.user_bias.weight.detach()
        + model.item_bias.weight.detach().T
        + p @ q.T
    )  # [n_users, n_items]


def brute_topk(
    scores: torch.Tensor, k: int, blocked: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Full sort of every row by (score desc, id asc), blocked items dropped, −∞/−1 padded."""
    out_s, out_i = np.full((len(scores), k), -np.inf), np.full((len(scores), k), -1)
    for r, row in enumerate(scores.double().numpy()):
        allowed = [i for i in range(len(row)) if blocked is None or not blocked[r, i]]
        best = sorted(allowed, key=lambda i: (-row[i], i))[:k]
        out_i[r, : len(best)], out_s[r, : len(best)] = best, row[best]
    return out_s, out_i


def random_seen(n_users: int, n_items: int, n: int, seed: int = 1) -> Interactions:
    rng = np.random.default_rng(seed)
    users = np.concatenate([np.arange(n_users), rng.integers(0, n_users, n)])
    items = np.concatenate([np.arange(n_items) % n_items, rng.integers(0, n_items, n)])[
        : len(users)
    ]
    return Interactions.from_arrays(users, items)


def seen_mask(seen: Interactions) -> torch.Tensor:
    mask = torch.zeros(seen.n_users, seen.n_items, dtype=torch.bool)
    mask[seen.users, seen.items] = True
    return mask


# recommend --------------------------------------------------------------------------------
@pytest.mark.parametrize("biases", [True, False])
def test_recommend_matches_dense_sort_with_seen_masked(biases: bool) -> None:
    model = biased_mf() if biases else MF(30, 50, 6, biases=False, init_std=1.0)
    seen = random_seen(30, 50, 400)
    scores = (
        dense_scores(model)
        if biases
        else model.user_embedding.weight.detach() @ model.item_embedding.weight.detach().T
    )
    users = torch.tensor([3, 0, 29, 7, 7, 15])
    got_s, got_i = recommend(model, users, k=8, seen=seen, chunk_size=4)
    want_s, want_i = brute_topk(scores[users], 8, seen_mask(seen)[users])
    assert np.array_equal(got_i.numpy(), want_i)
    np.testing.assert_allclose(got_s.numpy(), want_s, rtol=1e-5, atol=1e-5)
    # the masked items really were the best otherwise, for some user
    unmasked = recommend(model, users, k=8)[1]
    assert not torch.equal(unmasked, got_i)


def test_recommend_pads_when_too_few_items_left() -> None:
    model = biased_mf(n_users=2, n_items=5)
    seen = Interactions(
        torch.tensor([0, 0, 0, 1]),
        torch.tensor([0, 1, 2, 4]),
        torch.ones(4),
        None,
        np.arange(2),
        np.arange(5),
        "seen",
    )
    scores, items = recommend(model, torch.tensor([0]), k=4, seen=seen)
    assert (items[0, 2:] == -1).all() and torch.isinf(scores[0, 2:]).all()
    assert set(items[0, :2].tolist()) == {3, 4}


def test_recommend_candidates_restrict_items() -> None:
    model = biased_mf()
    seen = random_seen(30, 50, 300)
    candidates = torch.tensor([1, 4, 9, 16, 25, 36, 49, 2, 3])
    users = torch.arange(30)
    got_s, got_i = recommend(model, users, k=5, seen=seen, candidates=candidates)
    blocked = seen_mask(seen).clone()
    outside = torch.ones(50, dtype=torch.bool)
    outside[candidates] = False
    blocked |= outside
    want_s, want_i = brute_topk(dense_scores(model), 5, blocked)
    assert np.array_equal(got_i.numpy(), want_i)
    np.testing.assert_allclose(got_s.numpy(), want_s, rtol=1e-5, atol=1e-5)
    valid = got_i[got_i >= 0]
    assert torch.isin(valid, candidates).all()
    with pytest.raises(ValueError, match="candidate ids"):
        recommend(model, users, k=5, candidates=torch.tensor([50]))


def test_recommend_factors_for_cold_users_via_fold_in() -> None:
    model = biased_mf()
    item_ids = np.arange(50)
    rng = np.random.default_rng(3)
    users, items = np.repeat(np.arange(4), 6), rng.integers(0, 50, 24)
    new = Interactions.from_arrays(users, items, rng.normal(3, 1, 24), pair_duplicates="keep")
    new = Interactions(
        new.users, torch.as_tensor(items), new.values, None, new.user_ids, item_ids, "cold"
    )
    vectors = fold_in_interactions(model, new, l2=0.1)  # [4, D']
    got_s, got_i = recommend_factors(vectors, model, k=7, seen_items=new)
    scores = vectors @ model.item_factors().detach().T  # [4, n_items]
    want_s, want_i = brute_topk(scores, 7, seen_mask(new))
    assert np.array_equal(got_i.numpy(), want_i)
    np.testing.assert_allclose(got_s.numpy(), want_s, rtol=1e-5, atol=1e-5)
    # the same rows given as a tensor of item factors, and a subset of rows
    _, again = recommend_factors(
        vectors, model.item_factors(), k=7, seen_items=new, users=torch.tensor([2])
    )
    assert torch.equal(again[0], got_i[2])
    # training users as factor rows give what `recommend` gives
    assert torch.equal(
        recommend_factors(model.user_factors(), model, 5)[1],
        recommend(model, torch.arange(30), 5)[1],
    )


# similarity -------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_similar_items_and_users_match_brute_force(metric: str) -> None:
    model = biased_mf()
    for factors, fn, ids in (
        (model.item_factors(), similar_items, torch.tensor([0, 17, 49])),
        (model.user_factors(), similar_users, torch.tensor([5, 29])),
    ):
        x = factors.detach()
        if metric == "cosine":
            x = x / x.norm(dim=1, keepdim=True)
        scores = x[ids] @ x.T
        blocked = torch.zeros_like(scores, dtype=torch.bool)
        blocked[torch.arange(len(ids)), ids] = True
        want_s, want_i = brute_topk(scores, 6, blocked)
        got_s, got_i = fn(model, ids, 6, metric=metric)
        assert np.array_equal(got_i.numpy(), want_i)
        np.testing.assert_allclose(got_s.numpy(), want_s, rtol=1e-5, atol=1e-6)
        assert not (got_i == ids.unsqueeze(1)).any()


def test_dot_prefers_long_vector_cosine_prefers_aligned_one() -> None:
    model = MF(1, 3, 2, biases=False)
    with torch.no_grad():
        model.item_embedding.weight.copy_(
            torch.tensor(
                [
                    [1.0, 0.0],  # query
                    [0.1, 0.0],  # short, perfectly aligned
                    [3.0, 3.0],  # long, 45° away
                ]
            )
        )
    q = torch.tensor([0])
    assert similar_items(model, q, 1, metric="dot")[1].item() == 2
    assert similar_items(model, q, 1, metric="cosine")[1].item() == 1
    np.testing.assert_allclose(
        similar_items(model, q, 2, metric="cosine")[0][0].numpy(), [1.0, math.sqrt(0.5)], rtol=1e-6
    )


# indexes ------------------------------------------------------------------------------------
def varying_norm_vectors(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x * torch.empty(n, 1).uniform_(0.2, 3.0, generator=g)  # norms spread over 15x


def test_exact_index_matches_brute_force() -> None:
    x, q = varying_norm_vectors(300, 8, 0), varying_norm_vectors(20, 8, 1)
    index = ExactIndex(chunk_size=7)
    index.add(x[:100])
    index.add(x[100:])
    assert len(index) == 300
    got_s, got_i = index.search(q, 10)
    want_s, want_i = brute_topk(q @ x.T, 10)
    assert np.array_equal(got_i.numpy(), want_i)
    np.testing.assert_allclose(got_s.numpy(), want_s, rtol=1e-5, atol=1e-5)
    assert ann_recall(got_i, torch.as_tensor(want_i)) == 1.0
    padded = ExactIndex()
    padded.add(x[:3])
    assert padded.search(q[:1], 5)[1][0].tolist()[3:] == [-1, -1]


def test_ann_recall_by_hand() -> None:
    exact = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    ann = torch.tensor([[4, 9, 1, 0], [8, 7, 6, 5]])
    assert ann_recall(ann, exact) == pytest.approx((2 / 4 + 4 / 4) / 2)


@pytest.mark.parametrize(
    ("kind", "mips", "params", "floor"),
    [
        ("hnsw", None, {}, 0.9),  # default: inner-product graph
        ("hnsw", "transform", {"ef_search": 2000}, 0.9),  # Bachrach transform, L2 graph
        (
            "ivf",
            "transform",
            {"nlist": 50, "nprobe": 50},
            1.0,
        ),  # every cell probed: the transform is exact
    ],
)
def test_faiss_mips_recall_against_exact(
    kind: str, mips: str | None, params: dict, floor: float
) -> None:
    pytest.importorskip("faiss")
    x, q = varying_norm_vectors(5000, 32, 2), varying_norm_vectors(200, 32, 3)
    exact = ExactIndex()
    exact.add(x)
    _, exact_i = exact.search(q, 10)
    index = FaissIndex(kind, mips, **params)
    index.add(x[:2500])
    index.add(x[2500:])  # a later add must rebuild with the new max norm
    ann_s, ann_i = index.search(q, 10)
    recall = ann_recall(ann_i, exact_i)
    assert recall >= floor, recall
    # the returned scores are the true inner products, best first
    np.testing.assert_allclose(
        ann_s.numpy(), (q.unsqueeze(1) * x[ann_i]).sum(-1).numpy(), rtol=1e-4, atol=1e-4
    )
    assert (ann_s[:, :-1] >= ann_s[:, 1:]).all()
    # without the transform, plain L2 search over the same vectors misses far more: MIPS ≠ NN
    l2_ids = torch.cdist(q, x).topk(10, largest=False).indices
    assert ann_recall(l2_ids, exact_i) < 0.5


def test_faiss_index_rejects_unknown_params() -> None:
    pytest.importorskip("faiss")
    with pytest.raises(ValueError, match="unknown hnsw"):
        FaissIndex("hnsw", nprobe=3)


# export -------------------------------------------------------------------------------------
def test_export_round_trip(tmp_path) -> None:
    model = biased_mf(n_users=4, n_items=5)
    user_ids, item_ids = np.array(["ann", "bob", "cy", "dee"]), np.array([10, 20, 30, 40, 50])
    export_factors(model, tmp_path / "out", user_ids, item_ids)
    loaded = load_factors(tmp_path / "out")
    assert loaded.user_ids == ["ann", "bob", "cy", "dee"] and loaded.item_ids == [
        10,
        20,
        30,
        40,
        50,
    ]
    assert loaded.meta["dim"] == 8 and "score" in loaded.meta
    serving = loaded.user_factors @ loaded.item_factors.T  # numpy alone
    np.testing.assert_allclose(serving, dense_scores(model).numpy(), rtol=1e-5, atol=1e-5)
    row_u, row_i = loaded.user_row()["cy"], loaded.item_row()[40]
    assert serving[row_u, row_i] == pytest.approx(float(dense_scores(model)[2, 3]), rel=1e-5)
    assert json.loads((tmp_path / "out" / "ids.json").read_text())["n_items"] == 5
    with pytest.raises(ValueError, match="3 user ids"):
        export_factors(model, tmp_path / "bad", user_ids[:3], item_ids)
