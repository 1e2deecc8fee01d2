"""Cold users through `recommend`: new users given by their events, folded in with the model's
own fold-in, against a dense ridge solve and against the same users ranked by id."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions
from mfzoo.models.mf import MF
from mfzoo.models.timesvd import TimeSVD
from mfzoo.retrieval import new_users, recommend, ridge_fold_in
from mfzoo.solvers import ALSSolver, IALSSolver, TruncatedSVD, fold_in_interactions
from mfzoo.training.restore import RunError, fold_in_of
from tests.conftest import CONFIG_DIR
from tests.test_foldin import L2, L2_BIAS, N_USERS, _data, _trained, dense_fold_in
from tests.test_retrieval import biased_mf, brute_topk


def _train(n_users: int = 30, n_items: int = 50, seed: int = 2) -> Interactions:
    """Training events whose raw item ids are 100, 102, ..., so raw and model ids differ."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, size=600, replace=False)
    return Interactions.from_arrays(
        keys // n_items, 100 + 2 * (keys % n_items), rng.integers(1, 6, 600)
    )


def test_new_users_encode_raw_ids_and_number_users() -> None:
    train = _train()
    new = new_users(train, [104, 100, 198, 104], [5, 3, 4, 1], users=["b", "a", "a", "b"])
    assert new.items.tolist() == [2, 0, 49, 2]
    assert new.users.tolist() == [1, 0, 0, 1] and new.user_ids.tolist() == ["a", "b"]
    assert new.values.tolist() == [5, 3, 4, 1] and new.n_items == train.n_items
    one = new_users(train, [3, 7], encoded=True)  # model ids, one user, implicit values
    assert (
        one.items.tolist() == [3, 7]
        and one.users.tolist() == [0, 0]
        and one.values.tolist() == [1, 1]
    )
    with pytest.raises(DataError, match=r"unknown item id\(s\): \[101\]"):
        new_users(train, [100, 101])
    with pytest.raises(ValueError, match=r"out of range 0\.\.49"):
        new_users(train, [50], encoded=True)
    with pytest.raises(ValueError, match="2 items but 1 values"):
        new_users(train, [100, 102], [4])


@pytest.mark.parametrize("biases", [True, False])
def test_cold_user_top_k_is_the_dense_ridge_solution_with_given_items_excluded(
    biases: bool,
) -> None:
    if biases:
        model = biased_mf(n_users=30, n_items=50)
    else:
        torch.manual_seed(0)
        model = MF(30, 50, 6, biases=False, init_std=1.0)
    model.reg_exponent = 0.5
    train = _train()
    # each user likes items that then score high for it (model ids 27, 28, 49 / 16, 28)
    raw = [154, 156, 198, 112, 132, 156, 102, 120]
    new = new_users(train, raw, [5, 5, 5, 1, 5, 5, 4, 2], users=[0, 0, 0, 0, 1, 1, 1, 1])
    got_s, got_i = recommend(model, new, k=10, fold_in=ridge_fold_in(0.3, 0.1))
    vectors = dense_fold_in(model, new.users, new.items, new.values, 0.3, 0.1, n_users=2)  # [2, D']
    scores = vectors @ model.item_factors().detach().T  # [2, n_items]
    blocked = torch.zeros(2, 50, dtype=torch.bool)
    blocked[new.users, new.items] = True
    want_s, want_i = brute_topk(scores, 10, blocked)
    assert np.array_equal(got_i.numpy(), want_i)
    np.testing.assert_allclose(got_s.numpy(), want_s, rtol=1e-5, atol=1e-5)
    # exclude_seen=False: the given items compete like any other, and some make the top 10
    _, all_i = recommend(model, new, k=10, fold_in=ridge_fold_in(0.3, 0.1), exclude_seen=False)
    assert np.array_equal(all_i.numpy(), brute_topk(scores, 10)[1])
    for user in (0, 1):
        given = new.items[new.users == user]
        assert torch.isin(given, all_i[user]).any() and not torch.isin(given, got_i[user]).any()


def test_folding_in_training_users_reproduces_their_top_k() -> None:
    """At a stationary point of the MSE objective (L-BFGS in float64, |g| ~ 1e-9) a training
    user's fold-in from its own ratings is its trained factor row (to ~1e-6, see
    tests/test_foldin.py), so the cold-user path gives the same top-10 as asking by id with
    the training set as `seen`."""
    model, grad_norm = _trained(0.5, hold_out=False)
    assert grad_norm < 1e-8
    data = _data()
    new = new_users(data, data.items, data.values, users=data.users, encoded=True)
    assert new.user_ids.tolist() == list(range(N_USERS))  # row j of the result is user j
    cold_s, cold_i = recommend(model, new, k=10, fold_in=ridge_fold_in(L2, L2_BIAS))
    warm_s, warm_i = recommend(model, torch.arange(N_USERS), k=10, seen=data)
    assert torch.equal(cold_i, warm_i)
    assert (cold_s - warm_s).abs().max() < 1e-5
    # a fold-in with the wrong λ is not the model's own: its lists differ
    _, wrong_i = recommend(model, new, k=10, fold_in=ridge_fold_in(100 * L2, 100 * L2_BIAS))
    assert (wrong_i != warm_i).any(1).float().mean() > 0.5


@pytest.mark.parametrize(
    "solver",
    [ALSSolver(l2=0.1, frequency_scaled=True), IALSSolver(l2=0.1, alpha=2.0)],
    ids=["als", "ials"],
)
def test_als_cold_users_are_the_solver_user_half_step(solver) -> None:
    """After an ALS / iALS sweep and one more user half-step, every user's factors solve its
    equation for the current items, so folding in the training users with `solver.fold_in`
    gives their lists by id."""
    train = _train()
    model = MF(train.n_users, train.n_items, 6, biases=False, init_std=0.1)
    for _ in range(3):
        solver.sweep(model, train)
    with torch.no_grad():
        model.user_embedding.weight.copy_(
            solver.half_step(train.csr("user"), model.item_embedding.weight)
        )
    new = new_users(train, train.items, train.values, users=train.users, encoded=True)
    cold_s, cold_i = recommend(model, new, k=8, fold_in=solver.fold_in)
    warm_s, warm_i = recommend(model, torch.arange(train.n_users), k=8, seen=train)
    assert torch.equal(cold_i, warm_i)
    assert (cold_s - warm_s).abs().max() < 1e-4


def test_truncated_svd_folds_in_without_being_told_how() -> None:
    train = _train()
    svd = TruncatedSVD(k=4, center="user").fit(train)
    new = new_users(train, [100, 130, 160], [5, 1, 4])
    got_s, got_i = recommend(svd, new, k=6)
    scores = svd.fold_in_users(new.csr("user")) @ svd.item_factors().T  # [1, n_items]
    blocked = torch.zeros(1, train.n_items, dtype=torch.bool)
    blocked[0, new.items] = True
    want_s, want_i = brute_topk(scores, 6, blocked)
    assert np.array_equal(got_i.numpy(), want_i)
    np.testing.assert_allclose(got_s.numpy(), want_s, rtol=1e-6, atol=1e-6)


def test_cold_user_errors_name_the_model() -> None:
    train = _train()
    new = new_users(train, [100, 102])
    with pytest.raises(ValueError, match="MF: new users need a fold-in"):
        recommend(biased_mf(), new, k=5)
    timesvd = TimeSVD(30, 50, dim=4)
    with pytest.raises(ValueError, match="TimeSVD cannot fold in new users"):
        recommend(timesvd, new, k=5, fold_in=ridge_fold_in(0.1))
    with pytest.raises(
        ValueError, match=r"TruncatedSVD is not RidgeFoldIn .* the ridge fold-in of new users needs"
    ):
        ridge_fold_in(0.1)(TruncatedSVD(k=4).fit(train), new)
    with pytest.raises(ValueError, match="50 items but MF has 40"):
        recommend(MF(30, 40, 4), new, k=5, fold_in=ridge_fold_in(0.1))
    with pytest.raises(ValueError, match="fold_in is for new users"):
        recommend(biased_mf(), torch.tensor([0]), k=5, fold_in=ridge_fold_in(0.1))


def _config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_fold_in_of_a_run_matches_its_training() -> None:
    train = _train()
    new = new_users(train, [100, 104, 140], [4, 5, 2])
    model = biased_mf(n_users=30, n_items=50)
    cfg = _config("experiment=ml100k_mf")
    vectors = fold_in_of(cfg, model)(model, new)
    loss = instantiate(cfg.loss)
    assert torch.allclose(vectors, fold_in_interactions(model, new, loss.l2, loss.l2_bias))
    funk = MF(30, 50, 4, biases=False)
    cfg = _config("experiment=ml100k_ials")
    solver = instantiate(cfg.solver)
    assert torch.allclose(fold_in_of(cfg, funk)(funk, new), solver.fold_in(funk, new))
    with pytest.raises(RunError, match="MF trained with BPRLoss has no fold-in"):
        fold_in_of(_config("experiment=ml100k_implicit_bpr"), funk)
