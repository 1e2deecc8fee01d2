"""End-to-end training through the real configs on small synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mfzoo.evaluation.beyond import random_scores
from mfzoo.evaluation.metrics import rmse
from mfzoo.evaluation.ranking import evaluate_ranking
from mfzoo.training.run import train
from tests.conftest import CONFIG_DIR, SYNTHETIC

SMALL = SYNTHETIC


def cfg_for(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*SMALL, *overrides])


def test_fast_dev_run_writes_the_run_directory(tmp_path):
    metrics = train(cfg_for("trainer=debug"), tmp_path)
    assert set(metrics["test"]) == {"rmse", "mae"}
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test"] == pytest.approx(metrics["test"]) and written["fit_seconds"] > 0
    resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert resolved["data"]["split"]["seed"] == 0  # interpolations resolved
    assert resolved["model"]["_target_"] == "mfzoo.models.mf.MF"


@pytest.mark.parametrize("model", ["svdpp", "timesvdpp", "timesvd", "funksvd"])
def test_every_model_trains_through_the_glue(model, tmp_path):
    metrics = train(
        cfg_for(f"model={model}", "trainer.max_epochs=2", "callbacks=none", "logger=none"), tmp_path
    )
    assert 0 < metrics["test"]["rmse"] < 2.0 and metrics["global_steps"] == 2 * 10


@pytest.mark.parametrize("loss", ["bpr", "bce", "softmax"])
def test_implicit_training_logs_ranking_metrics(loss, tmp_path):
    """The implicit experiments run end to end: sampled negatives, a ranking loss, val NDCG@10
    for checkpoints, and test ranking metrics that beat chance on the planted signal."""
    cfg = cfg_for(
        f"experiment=ml100k_implicit_{loss}",
        "trainer.max_epochs=3",
        "data.batch_size=2048",
        "logger=csv",
        *SMALL[:4],
    )
    metrics = train(cfg, tmp_path)
    test = metrics["test"]
    assert {"ndcg@10", "recall@20", "coverage@10", "gini@10", "novelty@20"} <= set(test)
    datamodule = instantiate(cfg.data)  # the same seeded split, scored at random
    datamodule.setup()
    chance = evaluate_ranking(
        random_scores(datamodule.n_items, 0), datamodule.seen, datamodule.split.test, ks=(10,)
    )
    assert test["ndcg@10"] > 1.5 * chance["ndcg@10"]  # observed ~0.11-0.125 against 0.062
    assert "ndcg@10" in metrics["val"] and metrics["objective"] == metrics["val"]["ndcg@10"]
    logged = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/ndcg@10" in logged and "val/recall@10" in logged


def test_training_learns_beyond_the_mean_and_checkpoints(tmp_path):
    cfg = cfg_for("trainer.max_epochs=8", "loss.l2=0.3", "optim.lr=0.03")
    metrics = train(cfg, tmp_path)
    from mfzoo.data.sources import synthetic

    data = synthetic(n_users=300, n_items=200, n_interactions=12000)
    baseline = rmse(torch.full_like(data.values, float(data.values.mean())), data.values)
    assert metrics["test"]["rmse"] < 0.9 * baseline  # the planted signal is learned
    assert metrics["val"]["rmse"] < 0.9 * baseline
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    # named after the overrides
    assert list((tmp_path / "tb" / "default").glob("events.out.tfevents.*"))
    # the best checkpoint holds the model (μ included) and reproduces the val metric
    state = torch.load(
        tmp_path / metrics["best_checkpoint"], map_location="cpu", weights_only=True
    )["state_dict"]
    assert "model.global_mean" in state and "model.user_embedding.weight" in state


def test_same_seed_same_result(tmp_path):
    a = train(cfg_for("trainer.max_epochs=2", "callbacks=none"), tmp_path / "a")
    b = train(cfg_for("trainer.max_epochs=2", "callbacks=none"), tmp_path / "b")
    c = train(cfg_for("trainer.max_epochs=2", "callbacks=none", "seed=1"), tmp_path / "c")
    assert a["test"] == b["test"]
    assert a["test"] != c["test"]


def test_cli_multirun_sweep(tmp_path):
    """`mfzoo-train -m model.dim=4,8` runs two jobs, each with its own run directory."""
    cmd = [
        sys.executable,
        "-m",
        "mfzoo.cli",
        "-m",
        "model.dim=4,8",
        *SMALL,
        "trainer.max_epochs=1",
        "callbacks=none",
        "logger=csv",
        f"hydra.sweep.dir={tmp_path}",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for job, dim in ((0, 4), (1, 8)):
        (run,) = tmp_path.glob(f"{job}_*model.dim={dim}*")  # job number and overrides name the run
        resolved = yaml.safe_load((run / "config.yaml").read_text())
        assert resolved["model"]["dim"] == dim
        assert "rmse" in json.loads((run / "metrics.json").read_text())["test"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_code_runs_on_gpu(tmp_path):
    metrics = train(cfg_for("trainer=gpu", "trainer.max_epochs=2"), tmp_path)
    assert metrics["test"]["rmse"] > 0
