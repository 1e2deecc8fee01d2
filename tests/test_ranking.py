"""Ranking evaluation: hand-computed toy values (of the whole and of its per-user part), a
brute-force twin on random data, baselines, guards, chunking, and the distinct-pair CSR rows
behind the exclusions."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions
from mfzoo.data.keys import csr_rows, pair_keys
from mfzoo.evaluation.beyond import (
    gini,
    head_items,
    item_popularity,
    popularity_scores,
    random_scores,
)
from mfzoo.evaluation.ranking import ACCURACY, Relevance, evaluate_ranking, user_metrics
from mfzoo.retrieval.topk import ExclusionRows, factor_scores, topk

L3 = math.log2(3)


def split(
    train_pairs: list[tuple[int, int]], test_pairs: list[tuple[int, int]]
) -> tuple[Interactions, Interactions]:
    """Train and test in one id space: encode all events together, then take the two parts."""
    pairs = np.array(train_pairs + test_pairs)
    data = Interactions.from_arrays(pairs[:, 0], pairs[:, 1])
    is_train = np.arange(len(pairs)) < len(train_pairs)
    return data.subset(is_train, "train"), data.subset(~is_train, "test")


def table_scores(scores: torch.Tensor):
    return lambda users: scores[users]  # advanced indexing: a fresh tensor


# ---------------------------------------------------------------------------------------
# the toy case: 4 users x 6 items, K in {1, 3}; users 0..2 have test items, user 3 only trains
TOY_TRAIN = [(0, 0), (0, 0), (1, 3), (1, 4), (2, 2), (2, 0), (3, 1), (3, 3)]  # (0, 0) twice
TOY_TEST = [(0, 1), (0, 3), (0, 4), (0, 5), (1, 1), (1, 1), (2, 3)]  # (1, 1) twice: counts once
TOY_SCORES = torch.tensor(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # u0, train {0}:    ranking 1 2 3 4 5   -> top3 [1, 2, 3]
        [0.1, 0.6, 0.5, 0.9, 0.8, 0.7],  # u1, train {3, 4}: ranking 5 1 2 0     -> top3 [5, 1, 2]
        [0.1, 0.3, 0.9, 0.2, 0.8, 0.7],  # u2, train {0, 2}: ranking 4 5 1 3     -> top3 [4, 5, 1]
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # u3, no test: not evaluated
    ]
)


def test_topk_toy_lists_exclude_training_items_and_break_ties_by_id():
    train, _ = split(TOY_TRAIN, TOY_TEST)
    scores, items = topk(table_scores(TOY_SCORES), torch.arange(4), 3, train)
    assert items.tolist() == [
        [1, 2, 3],
        [5, 1, 2],
        [4, 5, 1],
        [0, 2, 4],
    ]  # u3: all tied, lowest ids
    assert scores[0].tolist() == pytest.approx([0.8, 0.7, 0.6])


def test_every_metric_on_the_toy_case_by_hand():
    train, test = split(TOY_TRAIN, TOY_TEST)
    m = evaluate_ranking(table_scores(TOY_SCORES), train, test, ks=(1, 3), head_fraction=0.2)
    assert m["n_users_evaluated"] == 3
    # K = 3.  u0: Rel {1,3,4,5} (4 > K), list [1,2,3]: hits at ranks 1 and 3.
    #           recall 2/4, precision 2/3, DCG 1 + 1/log2(4) = 1.5,
    #           IDCG over min(3,4) = 1 + 1/log2 3 + 1/2,
    #           AP = (1/3)(P@1 + P@3) = (1/3)(1 + 2/3) = 5/9, RR 1, hit 1.
    #         u1: Rel {1}, list [5,1,2]: hit at rank 2.
    #           recall 1, precision 1/3, nDCG (1/log2 3)/1, AP = P@2/1 = 1/2, RR 1/2, hit 1.
    #         u2: Rel {3}, list [4,5,1]: no hit (item 3 ranks 4th) -> all 0.
    ndcg_u0 = 1.5 / (1 + 1 / L3 + 0.5)
    assert m["recall@3"] == pytest.approx((2 / 4 + 1 + 0) / 3, abs=1e-12)
    assert m["precision@3"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3, abs=1e-12)
    assert m["ndcg@3"] == pytest.approx((ndcg_u0 + 1 / L3 + 0) / 3, abs=1e-12)
    assert m["map@3"] == pytest.approx((5 / 9 + 1 / 2 + 0) / 3, abs=1e-12)
    assert m["mrr@3"] == pytest.approx((1 + 1 / 2 + 0) / 3, abs=1e-12)
    assert m["hitrate@3"] == pytest.approx(2 / 3, abs=1e-12)
    # K = 1: lists [1], [5], [4]; only u0 hits (rank 1, IDCG over min(1, 4) = 1 item).
    assert m["recall@1"] == pytest.approx((1 / 4) / 3, abs=1e-12)
    for name in ("precision", "ndcg", "map", "mrr", "hitrate"):
        assert m[f"{name}@1"] == pytest.approx(1 / 3, abs=1e-12)
    # Beyond, K = 3. pop (distinct training users) = [2, 1, 1, 2, 1, 0]
    # (u0's (0,0) twice counts once), n_users = 4.
    # Exposures c over the lists [1,2,3] [5,1,2] [4,5,1] = [0, 3, 2, 1, 1, 2], S = 9.
    #   coverage = 5/6 (item 0 never shown)
    #   ARP = mean(u0: (1+1+2)/4/3 = 1/3, u1: (0+1+1)/4/3 = 1/6, u2: (1+0+1)/4/3 = 1/6) = 2/9
    #   Gini: c sorted [0,1,1,2,2,3], weights 2j-7 = [-5,-3,-1,1,3,5] -> 0-3-1+2+6+15 = 19,
    #     / (6·9) = 19/54
    #   head = ceil(0.2·6) = 2 most popular = items 0 and 3 (pop 2); item 3 fills 1 slot
    #     -> long tail 8/9
    #   self-information -log2(max(pop,1)/4): pop 2 -> 1, pop 1 or 0 -> 2;
    #     slots: u0 2+2+1, u1 2+2+2, u2 2+2+2 = 17 -> novelty 17/9
    assert m["coverage@3"] == pytest.approx(5 / 6, abs=1e-12)
    assert m["arp@3"] == pytest.approx(2 / 9, abs=1e-12)
    assert m["gini@3"] == pytest.approx(19 / 54, abs=1e-12)
    assert m["long_tail@3"] == pytest.approx(8 / 9, abs=1e-12)
    assert m["novelty@3"] == pytest.approx(17 / 9, abs=1e-12)
    # K = 1: lists [1] [5] [4]: c = [0,1,0,0,1,1]; coverage 3/6; ARP mean(1/4, 0, 1/4) = 1/6;
    # Gini sorted [0,0,0,1,1,1]: (1+3+5)/(6·3) = 1/2; no head item shown; novelty 2.
    assert m["coverage@1"] == pytest.approx(0.5)
    assert m["arp@1"] == pytest.approx(1 / 6, abs=1e-12)
    assert m["gini@1"] == pytest.approx(0.5, abs=1e-12)
    assert m["long_tail@1"] == 1.0 and m["novelty@1"] == pytest.approx(2.0)
    assert m["seconds"] >= 0


def test_per_user_metrics_on_the_toy_case_by_hand():
    """`user_metrics`, the per-user part of `evaluate_ranking`, on the toy lists (K = 3): the
    values of the comment above, one row per user, in the order of `ACCURACY`."""
    train, test = split(TOY_TRAIN, TOY_TEST)
    relevance = Relevance.of(ExclusionRows(train), train, test, allow_overlap=False)
    assert relevance.users.tolist() == [0, 1, 2] and relevance.counts.tolist() == [4, 1, 1, 0]
    lists = torch.tensor([[1, 2, 3], [5, 1, 2], [4, 5, 1]])
    got = user_metrics(relevance.users, lists, relevance, ks=(1, 3))  # [3 users, 2 Ks, 6]
    assert got.shape == (3, 2, len(ACCURACY))
    want_k3 = [
        [2 / 4, 2 / 3, 1.5 / (1 + 1 / L3 + 0.5), 5 / 9, 1.0, 1.0],
        [1.0, 1 / 3, 1 / L3, 1 / 2, 1 / 2, 1.0],
        [0.0] * 6,
    ]
    assert got[:, 1].tolist() == [pytest.approx(row, abs=1e-12) for row in want_k3]
    assert got[:, 0].tolist() == [
        pytest.approx([1 / 4, 1, 1, 1, 1, 1], abs=1e-12),
        [0.0] * 6,
        [0.0] * 6,
    ]


def test_csr_rows_of_distinct_pairs_match_a_dense_accumulation():
    """The one helper behind the exclusions, `Interactions.csr` and the pair keys: distinct
    pairs in CSR rows (ascending columns), values of repeated pairs summed."""
    rng = np.random.default_rng(7)
    rows, cols = rng.integers(0, 6, 40), rng.integers(0, 9, 40)  # many repeats
    values = torch.from_numpy(rng.random(40))
    dense = torch.zeros(7, 9, dtype=torch.float64)  # row 6: no pairs
    dense.index_put_((torch.from_numpy(rows), torch.from_numpy(cols)), values, accumulate=True)
    present = torch.zeros(7, 9, dtype=torch.bool)
    present[rows, cols] = True
    indptr, indices, summed = csr_rows(torch.from_numpy(rows), torch.from_numpy(cols), 7, 9, values)
    assert indptr.tolist() == [0, *present.sum(1).cumsum(0).tolist()]
    for r in range(7):
        assert (
            indices[indptr[r] : indptr[r + 1]].tolist() == present[r].nonzero().squeeze(1).tolist()
        )
    # row-major order of the pairs
    assert torch.allclose(summed, dense[present], rtol=0, atol=1e-12)
    keys = pair_keys(torch.from_numpy(rows), torch.from_numpy(cols), 9)
    assert keys.tolist() == sorted({int(r) * 9 + int(c) for r, c in zip(rows, cols, strict=True)})
    assert csr_rows(torch.from_numpy(rows), torch.from_numpy(cols), 7, 9).values is None
    train, _ = random_split()
    assert torch.equal(ExclusionRows(train).keys(), train.pair_keys())


def test_without_excluding_training_items():
    train, test = split(TOY_TRAIN, TOY_TEST)
    m = evaluate_ranking(table_scores(TOY_SCORES), train, test, ks=(3,), exclude_train=False)
    # lists [0,1,2] [3,4,5] [2,4,5]: only u0 hits (item 1, rank 2 of Rel {1,3,4,5})
    assert m["recall@3"] == pytest.approx((1 / 4) / 3) and m["mrr@3"] == pytest.approx((1 / 2) / 3)
    assert m["coverage@3"] == 1.0


def test_head_items_ties_by_lower_id():
    head = head_items(torch.tensor([2, 1, 1, 2, 1, 0]), 0.5)  # 3 items: 0 and 3 (pop 2), then 1
    assert head.nonzero().squeeze(1).tolist() == [0, 1, 3]
    assert head_items(torch.arange(30), 0.1).sum() == 3  # 0.1·30 is 3.0000000000000004 in floats


def test_gini_extremes():
    assert gini(torch.full((7,), 5)) == pytest.approx(0.0, abs=1e-12)
    single = torch.zeros(7, dtype=torch.int64)
    single[4] = 12
    assert gini(single) == pytest.approx(6 / 7)  # (n-1)/n
    assert gini(torch.zeros(7)) == 0.0


# ---------------------------------------------------------------------------------------
# brute force: the obvious twin, plain Python over users with full sorts


def brute_force(
    scores: np.ndarray, train: Interactions, test: Interactions, ks, head_fraction=0.2
) -> dict:
    n_users, n_items = train.n_users, train.n_items
    seen = {u: set() for u in range(n_users)}
    for u, i in zip(train.users.tolist(), train.items.tolist(), strict=True):
        seen[u].add(i)
    relevant: dict[int, set] = {}
    for u, i in zip(test.users.tolist(), test.items.tolist(), strict=True):
        relevant.setdefault(u, set()).add(i)
    pop = [sum(i in seen[u] for u in range(n_users)) for i in range(n_items)]
    head = set(
        sorted(range(n_items), key=lambda i: -pop[i])[: math.ceil(head_fraction * n_items - 1e-9)]
    )
    out = {}
    for k in ks:
        sums = dict.fromkeys(["recall", "precision", "ndcg", "map", "mrr", "hitrate"], 0.0)
        exposure = [0] * n_items
        arp = []
        for u in sorted(relevant):
            rel = relevant[u]
            # stable: ties by lower id
            ranking = sorted(range(n_items), key=lambda i: -scores[u][i])
            top = [i for i in ranking if i not in seen[u]][:k]
            hits = [1.0 if i in rel else 0.0 for i in top]
            sums["recall"] += sum(hits) / len(rel)
            sums["precision"] += sum(hits) / k
            idcg = sum(1 / math.log2(r + 1) for r in range(1, min(k, len(rel)) + 1))
            sums["ndcg"] += sum(h / math.log2(r + 1) for r, h in enumerate(hits, 1)) / idcg
            sums["map"] += sum(sum(hits[:r]) / r * h for r, h in enumerate(hits, 1)) / min(
                k, len(rel)
            )
            sums["mrr"] += next((1 / r for r, h in enumerate(hits, 1) if h), 0.0)
            sums["hitrate"] += float(any(hits))
            for i in top:
                exposure[i] += 1
            if top:
                arp.append(sum(pop[i] / n_users for i in top) / len(top))
        out.update({f"{name}@{k}": total / len(relevant) for name, total in sums.items()})
        slots = sum(exposure)
        c = sorted(exposure)
        out[f"coverage@{k}"] = sum(e > 0 for e in exposure) / n_items
        out[f"arp@{k}"] = sum(arp) / len(arp)
        out[f"gini@{k}"] = sum((2 * j - n_items - 1) * c[j - 1] for j in range(1, n_items + 1)) / (
            n_items * slots
        )
        out[f"long_tail@{k}"] = sum(exposure[i] for i in range(n_items) if i not in head) / slots
        out[f"novelty@{k}"] = (
            sum(exposure[i] * -math.log2(max(pop[i], 1) / n_users) for i in range(n_items)) / slots
        )
    return out


def random_split(n_users=50, n_items=40, seed=0) -> tuple[Interactions, Interactions]:
    rng = np.random.default_rng(seed)
    keys = rng.permutation(n_users * n_items)[: n_users * n_items // 2]
    pairs = [(int(k) // n_items, int(k) % n_items) for k in keys]
    n_train = int(len(pairs) * 0.8)  # users end up with 10..30 training items of 40
    test = [p for p in pairs[n_train:] if p[0] % 5 != 0]  # every 5th user has no test item
    test += [test[0], test[1]]  # repeated test events
    return split(pairs[:n_train], test)


@pytest.mark.parametrize("chunk_size", [1, 7, 50, 64])
def test_evaluate_ranking_matches_brute_force(chunk_size):
    train, test = random_split()
    gen = torch.Generator().manual_seed(chunk_size)
    user_factors, item_factors = (
        torch.randn(50, 8, generator=gen),
        torch.randn(40, 8, generator=gen),
    )
    ks = (1, 5, 10, 33, 45)  # 33, 45: longer than some or all users' candidate lists
    got = evaluate_ranking(
        factor_scores(user_factors, item_factors), train, test, ks=ks, chunk_size=chunk_size
    )
    want = brute_force((user_factors @ item_factors.T).tolist(), train, test, ks)
    assert got["n_users_evaluated"] == 40
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_most_popular_baseline_matches_brute_force_with_ties():
    train, test = random_split(seed=1)
    pop = item_popularity(train)
    assert len(set(pop.tolist())) < 40  # there are ties, resolved by the lower id
    got = evaluate_ranking(popularity_scores(train), train, test, ks=(3, 10), chunk_size=9)
    want = brute_force([pop.tolist()] * 50, train, test, (3, 10))
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_most_popular_recommends_by_popularity_minus_seen():
    train, _ = random_split(seed=2)
    pop = item_popularity(train).tolist()
    _, items = topk(popularity_scores(train), torch.arange(50), 5, train, chunk_size=16)
    order = sorted(range(40), key=lambda i: -pop[i])  # popularity descending, ties by id
    for u in (0, 17, 49):
        seen = set(train.items[train.users == u].tolist())
        assert items[u].tolist() == [i for i in order if i not in seen][:5]


def test_training_items_never_recommended_and_short_lists_padded():
    train, _ = random_split(seed=3)
    scores, items = topk(
        factor_scores(torch.randn(50, 4), torch.randn(40, 4)), torch.arange(50), 40, train, 11
    )
    for u in range(50):
        seen = set(train.items[train.users == u].tolist())
        row = items[u].tolist()
        n_free = 40 - len(seen)
        assert not seen & set(row)
        assert sorted(row[:n_free]) == sorted(set(range(40)) - seen)  # every candidate, once
        assert row[n_free:] == [-1] * len(seen) and torch.isinf(scores[u, n_free:]).all()


def test_user_with_fewer_candidates_than_k():
    # u0 trained on 2 of 4 items, K = 3: list [3, 1, -1]; Rel {1}: hit at rank 2 of a 2-item list
    train, test = split([(0, 0), (0, 2), (1, 0)], [(0, 1), (1, 3)])
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    _, items = topk(table_scores(scores), torch.arange(2), 3, train)
    assert items.tolist() == [[3, 1, -1], [3, 2, 1]]
    m = evaluate_ranking(table_scores(scores), train, test, ks=(3,))
    # u0: precision 1/3 (denominator K), RR 1/2; u1: Rel {3} hit at rank 1
    assert m["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert m["mrr@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["ndcg@3"] == pytest.approx((1 / L3 + 1) / 2)


def test_k_longer_than_catalogue_without_exclusions():
    scores, items = topk(table_scores(torch.tensor([[0.5, 0.7, 0.1]])), torch.tensor([0]), 5, None)
    assert items.tolist() == [[1, 0, 2, -1, -1]] and torch.isinf(scores[0, 3:]).all()


def test_ties_at_the_cut_take_the_lowest_ids():
    scores = torch.tensor(
        [[1.0, 2.0, 2.0, 2.0, 2.0, 0.0, 2.0], [3.0, 3.0, 1.0, 3.0, 3.0, 3.0, 3.0]]
    )
    _, items = topk(table_scores(scores), torch.arange(2), 3, None)
    assert items.tolist() == [[1, 2, 3], [0, 1, 3]]


def test_leakage_guard_names_the_pair():
    def raw(pairs):
        return [(u + 10, i + 100) for u, i in pairs]  # raw ids differ from contiguous ids

    train, test = split(
        raw([(0, 0), (1, 1), (2, 2), (2, 3)]), raw([(0, 1), (2, 3), (1, 1), (1, 2)])
    )
    score_fn = table_scores(torch.rand(3, 4))
    # overlapping pairs (2, 3) and (1, 1); the first by (user, item) is (1, 1)
    with pytest.raises(
        DataError, match=r"2 test \(user, item\) pair\(s\).*user 1 \(raw 11\), item 1 \(raw 101\)"
    ):
        evaluate_ranking(score_fn, train, test, ks=(2,))
    m = evaluate_ranking(score_fn, train, test, ks=(2,), allow_overlap=True)
    assert m["n_users_evaluated"] == 3


def test_warns_about_test_users_without_training(caplog):
    # users 2, 3 cold
    train, test = split([(0, 0), (0, 1), (1, 2)], [(0, 2), (2, 0), (3, 1), (1, 1)])
    with caplog.at_level(logging.WARNING, logger="mfzoo.evaluation.ranking"):
        evaluate_ranking(table_scores(torch.rand(4, 3)), train, test, ks=(1,))
    assert "2 of 4 test users have no training interactions" in caplog.text


def test_different_id_spaces_refused():
    train, _ = split([(0, 0), (1, 1)], [(1, 2)])
    test = Interactions.from_arrays(np.array([0, 1]), np.array([0, 1]))  # 2 items, not 3
    with pytest.raises(DataError, match="not one id space"):
        evaluate_ranking(table_scores(torch.rand(2, 3)), train, test)


def test_nan_scores_raise():
    scores = torch.tensor([[0.1, 0.2], [float("nan"), 0.3]])
    with pytest.raises(ValueError, match=r"NaN.*user 1"):
        topk(table_scores(scores), torch.arange(2), 1, None)


def test_score_fn_never_sees_more_than_chunk_size_users():
    train, test = random_split()
    calls: list[int] = []
    inner = factor_scores(torch.randn(50, 4), torch.randn(40, 4))

    def score_fn(users):
        calls.append(len(users))
        return inner(users)

    evaluate_ranking(score_fn, train, test, ks=(5,), chunk_size=16)
    assert max(calls) == 16 and sum(calls) == 40  # 40 evaluated users in chunks 16, 16, 8


def test_views_returned_by_score_fn_are_not_overwritten():
    table = torch.rand(50, 40)
    train, _ = random_split()
    before = table.clone()
    topk(
        lambda users: table[int(users[0]) : int(users[-1]) + 1],
        torch.arange(50),
        5,
        train,
        chunk_size=10,
    )
    assert torch.equal(table, before)


def test_random_baseline_reproducible_and_independent_of_chunking():
    users = torch.arange(50)
    _, a = topk(random_scores(40, seed=3), users, 10, None, chunk_size=7)
    _, b = topk(random_scores(40, seed=3), users, 10, None, chunk_size=50)
    _, c = topk(random_scores(40, seed=4), users, 10, None, chunk_size=7)
    _, d = topk(random_scores(40, seed=3), users.flip(0), 10, None, chunk_size=13)
    assert torch.equal(a, b) and torch.equal(a, d.flip(0))
    assert not torch.equal(a, c)
    assert len({tuple(row) for row in a.tolist()}) == 50  # a different ranking per user
    scores = random_scores(40, seed=3)(users)
    assert all(len(set(row)) == 40 for row in scores.tolist())  # no ties within a user
    # roughly uniform: each item's share of top-10 slots over 2000 users is near 10/40
    _, many = topk(random_scores(40, seed=5), torch.arange(2000), 10, None, chunk_size=512)
    share = torch.bincount(many.flatten(), minlength=40).double() / 2000
    assert share.min() > 0.18 and share.max() < 0.32


def test_candidates_test_items_ranks_the_test_items_among_themselves_by_hand():
    """Toy case with candidates="test_items": the test items are {1, 3, 4, 5} (item 2 never in
    test, item 0 too), so items 0 and 2 are never listed.
    u0 (train {0}): 1 3 4 5 -> top3 [1, 3, 4], Rel {1,3,4,5}: 3 hits of 3.
    u1 (train {3, 4}): 5 1 -> [5, 1, -1], Rel {1}: hit at rank 2.
    u2 (train {0, 2}): 4 5 1 3 -> [4, 5, 1], Rel {3}: no hit."""
    train, test = split(TOY_TRAIN, TOY_TEST)
    m = evaluate_ranking(table_scores(TOY_SCORES), train, test, ks=(3,), candidates="test_items")
    idcg_u0 = 1 + 1 / L3 + 0.5
    assert m["recall@3"] == pytest.approx((3 / 4 + 1 + 0) / 3, abs=1e-12)
    assert m["precision@3"] == pytest.approx((1 + 1 / 3 + 0) / 3, abs=1e-12)
    assert m["ndcg@3"] == pytest.approx((idcg_u0 / idcg_u0 + 1 / L3 + 0) / 3, abs=1e-12)
    assert m["hitrate@3"] == pytest.approx(2 / 3, abs=1e-12)
    # against the full-catalogue ranking of the same scores with items 0 and 2 scored -inf
    masked = TOY_SCORES.clone()
    masked[:, [0, 2]] = -math.inf
    full = evaluate_ranking(table_scores(masked), train, test, ks=(3,))
    assert all(m[f"{name}@3"] == full[f"{name}@3"] for name in ACCURACY)


def test_candidates_setting_is_checked():
    train, test = split(TOY_TRAIN, TOY_TEST)
    with pytest.raises(
        ValueError, match="candidates must be one of catalogue, test_items, got 'cold'"
    ):
        evaluate_ranking(table_scores(TOY_SCORES), train, test, candidates="cold")
