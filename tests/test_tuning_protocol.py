"""The equal-budget tuning protocol of the benchmarks: peers (Surprise, implicit) tuned on the val
part only, their search spaces over their own constructor arguments, and the comparison tables
(paired t-tests against a hand computation)."""

from __future__ import annotations

import importlib
import inspect
import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mfzoo.data.interactions import Interactions
from mfzoo.data.sources import synthetic
from mfzoo.data.splits import KFold, Split, UserRandomSplit
from mfzoo.data.splits.base import pair_overlap

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
PEER_SPACES = sorted((SCRIPTS / "search_spaces").glob("*.yaml"))


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return {
        name: importlib.import_module(name)
        for name in ("nested_cv", "compare_nested", "tune_implicit")
    }


def _tiny_fold() -> Split:
    return KFold(n_folds=5, seed=0, val=0.1)(
        synthetic(n_users=300, n_items=200, n_interactions=12000, seed=0)
    )


@pytest.mark.parametrize("path", PEER_SPACES, ids=lambda p: p.stem)
def test_peer_search_spaces_name_the_peers_own_arguments(path, scripts):
    """Every searched key is an argument of the peer's constructor (a misspelt key would be an
    error at the first trial, or worse, swallowed), and the budget equals mfzoo's."""
    space = scripts["nested_cv"].read_search_space(path.stem, path.parent)
    if path.stem.startswith("surprise"):
        surprise = pytest.importorskip("surprise")
        cls = {"surprise_svd": surprise.SVD, "surprise_svdpp": surprise.SVDpp}[path.stem]
        ours = scripts["nested_cv"].space_for(
            {"surprise_svd": "mf", "surprise_svdpp": "svdpp"}[path.stem]
        )
    else:
        pytest.importorskip("implicit.cpu.als")
        import implicit.cpu.als
        import implicit.cpu.bpr

        cls = {
            "implicit_bpr": implicit.cpu.bpr.BayesianPersonalizedRanking,
            "implicit_als": implicit.cpu.als.AlternatingLeastSquares,
        }[path.stem]
        ours = scripts["nested_cv"].read_search_space(
            {"implicit_bpr": "bpr_optuna", "implicit_als": "ials_optuna"}[path.stem]
        )
    arguments = inspect.signature(cls.__init__).parameters
    assert set(space.distributions) <= set(arguments), set(space.distributions) - set(arguments)
    assert (space.n_trials, space.sampler, space.metric, space.direction) == (
        ours.n_trials,
        ours.sampler,
        ours.metric,
        ours.direction,
    )


def test_a_peer_study_chooses_on_val_only(scripts):
    """Surprise's study sees train and val only: garbling every test rating changes its test RMSE
    but not the chosen settings or their val RMSE."""
    pytest.importorskip("surprise")
    nested_cv = scripts["nested_cv"]
    space = nested_cv.SearchSpace(
        *nested_cv.parse_params(
            {
                "n_factors": "choice(2, 4)",
                "n_epochs": "choice(2, 3)",
                "reg_all": "tag(log, interval(0.01, 0.5))",
            }
        ),
        metric="val/rmse",
        direction="minimize",
        n_trials=3,
        sampler={"seed": 0, "n_startup_trials": 2},
    )
    split = _tiny_fold()
    first = nested_cv.nested_fold(
        0, split, "surprise_svd", space, trials=3, seeds=[0, 1], baseline=True
    )
    garbled = replace(split.test, values=6.0 - split.test.values)
    second = nested_cv.nested_fold(
        0, Split(split.train, split.val, garbled), "surprise_svd", space, trials=3, seeds=[0, 1]
    )
    assert second.params == first.params and second.best_epochs == first.params["n_epochs"]
    assert second.best_val == pytest.approx(first.best_val, abs=1e-9)
    assert second.test[0]["rmse"] != pytest.approx(first.test[0]["rmse"], abs=1e-3)
    assert len(first.baseline) == 2 and first.baseline_val is not None
    assert first.test[0]["rmse"] != first.test[1]["rmse"]  # the refit seed is passed on


def _results(
    model: str, rmse: dict[tuple[int, int], float], trials: int = 20, baseline: float = 0.0
) -> dict:
    folds = sorted({f for f, _ in rmse})
    seeds = sorted({s for _, s in rmse})
    return {
        "model": model,
        "trials": trials,
        "seeds": seeds,
        "results": [
            {
                "fold": f,
                "test": [{"rmse": rmse[f, s]} for s in seeds],
                "baseline": [{"rmse": rmse[f, s] + baseline} for s in seeds],
            }
            for f in folds
        ],
    }


def test_compare_pairs_by_fold_and_seed_and_matches_a_hand_t_test(scripts, tmp_path):
    compare = scripts["compare_nested"]
    gen = torch.Generator().manual_seed(0)
    a = {
        (f, s): 0.90 + 0.01 * torch.rand((), generator=gen).item()
        for f in range(5)
        for s in range(3)
    }
    b = {k: v + 0.002 + 0.003 * torch.rand((), generator=gen).item() for k, v in a.items()}
    # model b arrives in two files (folds 0-2, then 3-4), as when a model is run fold by fold
    (tmp_path / "a.json").write_text(json.dumps(_results("mf", a)))
    (tmp_path / "b1.json").write_text(
        json.dumps(_results("surprise_svd", {k: v for k, v in b.items() if k[0] < 3}))
    )
    (tmp_path / "b2.json").write_text(
        json.dumps(
            _results("surprise_svd", {k: v for k, v in b.items() if k[0] >= 3}, baseline=0.01)
        )
    )
    models = compare.load([tmp_path / "a.json", tmp_path / "b1.json", tmp_path / "b2.json"])
    assert len(models["surprise_svd"].tuned) == 15
    diff = [a[k] - b[k] for k in sorted(a)]
    t_hand = statistics.mean(diff) / (statistics.stdev(diff) / math.sqrt(len(diff)))
    mean_cell, t_cell, folds_cell, wins = compare.paired(
        models["mf"].tuned, models["surprise_svd"].tuned
    )
    assert mean_cell.startswith(f"{statistics.mean(diff):+.4f}")
    assert t_cell.startswith(f"t = {t_hand:.2f},") and "(15 pairs)" in t_cell
    fold_diff = [statistics.mean(diff[3 * f : 3 * f + 3]) for f in range(5)]
    t_folds = statistics.mean(fold_diff) / (statistics.stdev(fold_diff) / math.sqrt(5))
    assert folds_cell.startswith(f"t = {t_folds:.2f},") and "(5 folds)" in folds_cell
    assert wins == "15 / 15"  # a is lower in every pair
    lines = compare.summary(models)
    assert any(
        "Surprise SVD" in line and f"{statistics.mean(b.values()):.4f}" in line for line in lines
    )


def test_compare_refuses_a_fold_twice_or_unlike_budgets(scripts, tmp_path):
    compare = scripts["compare_nested"]
    rmse = {(0, 0): 0.9, (0, 1): 0.91}
    (tmp_path / "x.json").write_text(json.dumps(_results("mf", rmse)))
    (tmp_path / "y.json").write_text(json.dumps(_results("mf", rmse)))
    with pytest.raises(ValueError, match="fold 0 of mf is also in"):
        compare.load([tmp_path / "x.json", tmp_path / "y.json"])
    (tmp_path / "z.json").write_text(
        json.dumps(_results("mf", {(1, 0): 0.9, (1, 1): 0.9}, trials=60))
    )
    with pytest.raises(ValueError, match="60 trials"):
        compare.load([tmp_path / "x.json", tmp_path / "z.json"])
    (tmp_path / "w.json").write_text(
        json.dumps({**_results("svdpp", {(1, 0): 0.9, (1, 1): 0.9}), "split_seed": 1})
    )
    with pytest.raises(ValueError, match="only runs on the same folds pair up"):
        compare.load([tmp_path / "x.json", tmp_path / "w.json"])
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(SystemExit, match=r"list\.json: not a --results-out file"):
        compare.load([tmp_path / "list.json"])
    with pytest.raises(SystemExit, match="is not A:B"):
        compare.parse_pairs("mf")


def _tiny_implicit() -> Split:
    data = synthetic(n_users=200, n_items=150, n_interactions=6000, implicit=True, seed=0)
    return UserRandomSplit(test=0.2, val=0.1, seed=0)(data)


def test_implicit_peer_chooses_on_val_and_refits_on_train_val(scripts):
    """implicit's study sees train and val only (moving test pairs elsewhere changes nothing it
    chose), its refit trains on train + val with the searched iterations."""
    pytest.importorskip("implicit")
    tune_implicit, nested_cv = scripts["tune_implicit"], scripts["nested_cv"]
    split = _tiny_implicit()
    learner = tune_implicit.ImplicitRanker("AlternatingLeastSquares", "implicit_als")
    space = nested_cv.SearchSpace(
        *nested_cv.parse_params(
            {
                "factors": "choice(4, 8)",
                "iterations": "choice(2, 3)",
                "regularization": "tag(log, interval(0.01, 10.0))",
            }
        ),
        metric="val/ndcg@10",
        direction="maximize",
        n_trials=3,
        sampler={"seed": 0, "n_startup_trials": 2},
    )
    study = nested_cv.tune(learner, split.train, split.val, space, 3, 0)
    for trial in study.trials:
        assert trial.user_attrs["best_epochs"] == trial.params["iterations"]
        val, _ = learner.validate(trial.params, split.train, split.val, 0)
        assert val == pytest.approx(trial.value, abs=1e-6)  # seeded: the same fit again
    train_val = Interactions.concat([split.train, split.val])
    scores = learner.refit(study.best_trial.params, None, train_val, split.test, 0)
    assert 0.0 <= scores["ndcg@10"] <= 1.0 and scores["n_users_evaluated"] > 0
    assert pair_overlap(train_val, split.test) == 0


def test_mfzoo_ranker_refits_the_epochs_chosen_on_val(scripts):
    tune_implicit = scripts["tune_implicit"]
    split = _tiny_implicit()
    learner = tune_implicit.MfzooRanker(["experiment=ml100k_ials", "model.dim=4"], "ials_optuna")
    val, epochs = learner.validate(
        {"trainer.max_epochs": 4}, split.train, split.val, 0, "val/ndcg@10"
    )
    assert 1 <= epochs <= 4 and 0.0 < val <= 1.0
    train_val = Interactions.concat([split.train, split.val])
    one = learner.refit({"trainer.max_epochs": 4}, 1, train_val, split.test, 0)
    three = learner.refit({"trainer.max_epochs": 4}, 3, train_val, split.test, 0)
    # the epoch count is honoured
    assert one["ndcg@10"] != pytest.approx(three["ndcg@10"], abs=1e-9)


def test_implicit_report_labels_and_pairs(scripts, tmp_path):
    tune_implicit = scripts["tune_implicit"]
    metrics = dict.fromkeys(tune_implicit.SHOWN, 0.1)
    for model, ndcg in (("ials", [0.43, 0.42, 0.44]), ("implicit_als", [0.42, 0.42, 0.42])):
        run = {
            "model": model,
            "label": tune_implicit.MODELS[model][0],
            "trials": 20,
            "params": {"x": 1},
            "epochs": 5,
            "split": "UserRandomSplit(test=0.2, val=0.1, seed=0)",
            "best_val": 0.2,
            "defaults_val": None,
            "study_seconds": 1.0,
            "space": model,
            "test": [{**metrics, "ndcg@10": v} for v in ndcg],
            "defaults": [],
        }
        (tmp_path / f"{model}.json").write_text(json.dumps(run))
    lines = tune_implicit.report([tmp_path / "ials.json", tmp_path / "implicit_als.json"])
    row = next(line for line in lines if line.startswith("| mfzoo iALS vs implicit ALS | tuned"))
    # mean 0.01, sd 0.01, t = 0.01 / (0.01 / √3)
    assert "+0.0100 ± 0.0100" in row and "t = 1.73" in row
    assert any("precision@10 = hits / 10" in line for line in lines)
    typo = tune_implicit.report(
        [tmp_path / "ials.json", tmp_path / "implicit_als.json"], [("ials", "implicit_alss")]
    )
    assert any("not run: implicit_alss" in line for line in typo)
    other = json.loads((tmp_path / "ials.json").read_text())
    (tmp_path / "elsewhere.json").write_text(
        json.dumps({**other, "split": "UserRandomSplit(test=0.2, val=0.1, seed=1)"})
    )
    with pytest.raises(SystemExit, match="only runs on the same split"):
        tune_implicit.report([tmp_path / "implicit_als.json", tmp_path / "elsewhere.json"])
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"broken\.json: not JSON"):
        tune_implicit.report([tmp_path / "broken.json"])


def test_gather_joins_folds_run_apart_and_refuses_overlaps(scripts, tmp_path):
    nested_cv = scripts["nested_cv"]
    meta = {
        "model": "mf",
        "trials": 20,
        "folds": 5,
        "split_seed": 0,
        "val": 0.1,
        "seeds": [0, 1],
        "study_seed": 0,
        "space": "configs/hparams_search/mf_optuna.yaml",
        "sampler": {"seed": 0},
        "torch": "x",
    }

    def fold(k: int) -> dict:
        return {
            "fold": k,
            "params": {"model.dim": 16},
            "best_val": 0.9,
            "best_epochs": 5,
            "test": [{"rmse": 0.9 + k / 100, "mae": 0.7}] * 2,
            "baseline": [],
            "baseline_val": None,
            "study_seconds": 1.0,
        }

    (tmp_path / "late.json").write_text(json.dumps({**meta, "results": [fold(3), fold(4)]}))
    (tmp_path / "early.json").write_text(
        json.dumps({**meta, "results": [fold(0), fold(1), fold(2)]})
    )
    results, args = nested_cv.gather([tmp_path / "late.json", tmp_path / "early.json"])
    assert (
        [r.fold for r in results] == [0, 1, 2, 3, 4]
        and args.model == "mf"
        and args.seeds_list == [0, 1]
    )
    lines = nested_cv.report(results, args, nested_cv.space_for("mf"), "gathered")
    assert any("**0.9200 ± 0.0158**" in line for line in lines)  # mean of 0.90..0.94
    with pytest.raises(ValueError, match="fold 3 is in two"):
        nested_cv.gather([tmp_path / "late.json", tmp_path / "late.json"])
    (tmp_path / "other.json").write_text(json.dumps({**meta, "trials": 60, "results": [fold(0)]}))
    with pytest.raises(ValueError, match="different settings"):
        nested_cv.gather([tmp_path / "late.json", tmp_path / "other.json"])
