"""Sweeps: every hparams_search config against the real config tree, the grid and CV sweeps, one
real Optuna multirun, and nested CV's search-space parser and study (val only)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from optuna.distributions import (
    CategoricalDistribution,
    IntUniformDistribution,
    LogUniformDistribution,
    UniformDistribution,
)

from mfzoo.data.sources import synthetic
from mfzoo.data.splits import KFold, Split
from mfzoo.data.splits.base import pair_overlap
from tests.conftest import CONFIG_DIR

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SEARCHES = sorted(p.stem for p in (CONFIG_DIR / "hparams_search").glob("*.yaml"))
DIRECTION = {"val/rmse": "minimize", "val/ndcg@10": "maximize"}


def experiment_of(name: str) -> list[str]:
    """The experiment a search goes with, from its own comment (`mfzoo-train -m experiment=...`)."""
    text = (CONFIG_DIR / "hparams_search" / f"{name}.yaml").read_text()
    runs = [line for line in text.splitlines() if "mfzoo-train -m" in line]
    assert runs, f"{name}.yaml does not say how to run it"
    return [arg for arg in runs[0].split() if arg.startswith("experiment=")]


def compose_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def has_key(cfg, dotted: str) -> bool:
    return OmegaConf.select(cfg, dotted, default="<missing>") != "<missing>"


@pytest.mark.parametrize("name", SEARCHES)
def test_search_config_selects_optuna_on_a_val_metric(name):
    cfg = compose_hydra([*experiment_of(name), f"hparams_search={name}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert (
        sweeper.sampler._target_ == "optuna.samplers.TPESampler"
        and sweeper.sampler.seed is not None
    )
    assert sweeper.n_trials >= 20
    assert cfg.optimized_metric.startswith("val/")
    assert sweeper.direction == DIRECTION[cfg.optimized_metric]
    # the metric the search optimizes is the one the best checkpoint is chosen by; without a
    # best checkpoint (callbacks=none) the run returns it at the last epoch
    if (cfg.get("callbacks") or {}).get("model_checkpoint") is not None:
        assert cfg.callbacks.model_checkpoint.monitor == cfg.optimized_metric
        assert cfg.callbacks.model_checkpoint.mode == sweeper.direction[:3]
    else:
        assert not any("monitor" in c for c in (cfg.get("callbacks") or {}).values())
    assert sweeper.params, "no search space"
    missing = [key for key in sweeper.params if not has_key(cfg, key)]
    assert not missing, f"{name} sweeps keys the composed config lacks: {missing}"


def test_grid_and_cv_experiments_expose_their_sweeps():
    grid = compose_hydra(["experiment=ml100k_mf_grid"])
    assert grid.hydra.sweeper._target_.endswith("BasicSweeper")
    assert {k: str(v) for k, v in grid.hydra.sweeper.params.items()} == {
        "model.dim": "32,64,128",
        "loss.l2": "0.6,1.2,2.4",
    }
    assert all(has_key(grid, key) for key in grid.hydra.sweeper.params)
    cv = compose_hydra(["experiment=ml100k_cv"])
    assert str(cv.hydra.sweeper.params["data.split.fold"]).split(",") == ["0", "1", "2", "3", "4"]
    # a val part inside each training fold, used by the best-checkpoint and early-stopping callbacks
    assert cv.data.split.val == 0.1 and cv.callbacks.model_checkpoint.monitor == "val/rmse"
    assert cv.trainer.get("limit_val_batches") is None
    # the folds do not move with the training seed
    folds = {
        seed: compose_hydra(["experiment=ml100k_cv", f"seed={seed}"]).data.split
        for seed in (0, 1, 2)
    }
    assert len({(s.seed, s.n_folds, s.val) for s in folds.values()}) == 1
    # the training seed still varies
    assert compose_hydra(["experiment=ml100k_cv", "seed=5"]).data.seed == 5


def multirun(tmp_path: Path, *overrides: str) -> Path:
    """`python -m mfzoo.cli -m OVERRIDES` in tmp_path, which must succeed; its sweep directory."""
    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "mfzoo.cli",
        "-m",
        *overrides,
        "trainer.max_epochs=2",
        "logger=none",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep_dir


def test_optuna_multirun_returns_the_best_val_objective(tmp_path):
    sweep_dir = multirun(
        tmp_path,
        "hparams_search=mf_optuna",
        "hydra.sweeper.n_trials=3",
        "data/source=synthetic",
        "data.source.n_users=300",
        "data.source.n_items=200",
        "data.source.n_interactions=12000",
        "data.batch_size=1024",
    )
    metrics = [json.loads(p.read_text()) for p in sorted(sweep_dir.rglob("metrics.json"))]
    assert len(metrics) == 3
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    objectives = [m.get("objective") for m in metrics]
    assert None not in objectives, "metrics.json has no 'objective'"
    assert results["best_value"] == pytest.approx(min(objectives))
    best = metrics[int(np.argmin(objectives))]
    assert best["optimized_metric"] == "val/rmse"
    # the best epoch's val RMSE, not a test value
    assert best["objective"] == pytest.approx(best["val"]["rmse"])
    # fixed on the command line: out of the search
    assert "trainer.max_epochs" not in results["best_params"]


def test_an_optuna_sweep_without_a_val_part_is_refused_at_its_first_trial(tmp_path):
    command = [
        sys.executable,
        "-m",
        "mfzoo.cli",
        "-m",
        "hparams_search=mf_optuna",
        "hydra.sweeper.n_trials=3",
        "data/source=synthetic",
        "data.source.n_users=300",
        "data.source.n_items=200",
        "data.source.n_interactions=12000",
        "trainer.max_epochs=2",
        "logger=none",
        "data.split.val=0",
        "callbacks=none",
        f"hydra.sweep.dir={tmp_path / 's'}",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert (
        done.returncode != 0
        and "no validation part" in done.stderr
        and "Traceback" not in done.stderr
    )
    trained = [
        p
        for p in (tmp_path / "s").rglob("*")
        if p.name in ("config.yaml", "checkpoints") and p.parent.name != ".hydra"
    ]
    assert not trained  # refused before the first trial trained (Hydra's own .hydra/ record aside)


def test_a_diverged_job_fails_alone_and_the_sweep_goes_on(tmp_path):
    command = [
        sys.executable,
        "-m",
        "mfzoo.cli",
        "-m",
        "optim.lr=1e9,0.01",
        "optim=sgd",
        "~scheduler",
        "data/source=synthetic",
        "data.source.n_users=300",
        "data.source.n_items=200",
        "data.source.n_interactions=12000",
        "trainer.max_epochs=2",
        "logger=none",
        f"hydra.sweep.dir={tmp_path / 's'}",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    failed = list((tmp_path / "s").rglob("failed.txt"))
    finished = list((tmp_path / "s").rglob("metrics.json"))
    assert (
        len(failed) == 1
        and "lr=1000000000" in failed[0].parent.name
        and "diverged" in failed[0].read_text()
    )
    assert len(finished) == 1 and "lr=0.01" in finished[0].parent.name


# nested CV -----------------------------------------------------------------------------------
@pytest.fixture
def nested_cv(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return importlib.import_module("nested_cv")


def test_param_parser_reads_the_sweeper_syntax(nested_cv):
    dists, fixed = nested_cv.parse_params(
        {
            "a": "interval(0.1, 1.0)",
            "b": "tag(log, interval(0.001, 1.0))",
            "c": "range(8, 40, 8)",
            "d": "choice(16, 32)",
            "e": "1,2,3",
            "f": "interval(2, 9)",
            "g": "7",
        }
    )
    assert dists["a"] == UniformDistribution(0.1, 1.0)
    assert dists["b"] == LogUniformDistribution(0.001, 1.0)
    assert dists["c"] == IntUniformDistribution(8, 40, step=8)
    assert dists["d"] == CategoricalDistribution([16, 32]) and dists[
        "e"
    ] == CategoricalDistribution([1, 2, 3])
    # Hydra's interval is a float interval, even with int ends
    assert dists["f"] == UniformDistribution(2.0, 9.0)
    assert fixed == {"g": "7"}


def test_nested_cv_reads_the_cli_search_space(nested_cv):
    space = nested_cv.read_search_space("mf_optuna")
    raw = OmegaConf.load(CONFIG_DIR / "hparams_search" / "mf_optuna.yaml")
    assert [*space.distributions, *space.fixed] == list(raw.hydra.sweeper.params)
    assert space.fixed == {
        "data.batch_size": "1024"
    }  # a plain value: set in every trial, not searched
    assert space.metric == "val/rmse" and space.direction == "minimize" and space.n_trials == 20
    assert space.sampler["seed"] == raw.hydra.sweeper.sampler.seed
    assert space.distributions["model.dim"] == CategoricalDistribution([16, 32, 64, 128])
    assert space.distributions["loss.l2"] == LogUniformDistribution(0.3, 4.0)


def _tiny_fold() -> Split:
    data = synthetic(n_users=300, n_items=200, n_interactions=12000, seed=0)
    return KFold(n_folds=5, seed=0, val=0.1)(data)


def test_nested_fold_chooses_on_val_only(nested_cv, monkeypatch):
    """The study never gets a test row, and garbling the test values changes the test RMSE but
    neither the chosen settings nor their val RMSE."""
    space = nested_cv.SearchSpace(
        *nested_cv.parse_params(
            {"loss.l2": "tag(log, interval(0.3, 4.0))", "model.dim": "choice(4, 8)"}
        ),
        metric="val/rmse",
        direction="minimize",
        n_trials=3,
        sampler={"seed": 0, "n_startup_trials": 2},
    )
    monkeypatch.setitem(
        nested_cv.BASE,
        "tiny",
        ["experiment=ml100k_cv", "data.batch_size=1024", "trainer.max_epochs=3"],
    )
    split = _tiny_fold()
    seen_in_study: list[Split] = []
    fit = nested_cv.fit_on_split

    def recording_fit(cfg, part, seed, callbacks=True, extra_callbacks=None):
        if callbacks:  # the study's trials (refits run without callbacks)
            seen_in_study.append(part)
        return fit(cfg, part, seed, callbacks, extra_callbacks)

    monkeypatch.setattr(nested_cv, "fit_on_split", recording_fit)
    first = nested_cv.nested_fold(0, split, "tiny", space, trials=3, seeds=[0])
    assert len(seen_in_study) == 3
    for part in seen_in_study:
        for rows in (part.train, part.val, part.test):
            assert pair_overlap(rows, split.test) == 0

    garbled = replace(split.test, values=6.0 - split.test.values)  # every test rating flipped
    second = nested_cv.nested_fold(
        0, Split(split.train, split.val, garbled), "tiny", space, trials=3, seeds=[0]
    )
    assert second.params == first.params and second.best_epochs == first.best_epochs
    assert second.best_val == pytest.approx(first.best_val, abs=1e-6)
    assert [t["value"] for t in second.trials] == pytest.approx(
        [t["value"] for t in first.trials], abs=1e-6
    )
    assert second.test[0]["rmse"] != pytest.approx(first.test[0]["rmse"], abs=1e-3)


def test_refit_runs_the_epochs_chosen_on_val(nested_cv):
    split = _tiny_fold()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=ml100k_cv",
                "logger=none",
                "data.batch_size=1024",
                "trainer.max_epochs=6",
            ],
        )
    train_val = nested_cv.Interactions.concat([split.train, split.val])
    stopped = nested_cv.fit_on_split(
        cfg,
        Split(train_val, None, split.test),
        0,
        callbacks=False,
        extra_callbacks=[nested_cv.StopAfterEpochs(2)],
    )
    assert stopped.epochs == 2 and stopped.best_val is None
    # the lr schedule keeps the length of trainer.max_epochs: after 2 of 6 epochs, 2/3 of lr is left
    optimizer = stopped.module.trainer.optimizers[0]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr * 4 / 6, rel=1e-6)


def test_a_sweep_runs_as_submitit_jobs(tmp_path):
    """hydra/launcher=submitit_local: each job a separate process started by submitit, as on
    Slurm (submitit_slurm) without the cluster; every job writes its own complete run."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = multirun(
        tmp_path,
        "hydra/launcher=submitit_local",
        "data/source=synthetic",
        "data.source.n_users=120",
        "data.source.n_items=80",
        "data.source.n_interactions=3000",
        "progress=false",
        "model.dim=4,8",
    )
    assert (sweep_dir / ".submitit").is_dir()  # the jobs went through submitit
    runs = sorted(p.parent for p in sweep_dir.glob("*/metrics.json"))
    assert len(runs) == 2
    dims = sorted(yaml.safe_load((run / "config.yaml").read_text())["model"]["dim"] for run in runs)
    assert dims == [4, 8]
    assert all(json.loads((run / "metrics.json").read_text())["objective"] > 0 for run in runs)
