"""Runs side by side in TensorBoard: the gradient and the closed-form path log every metric at
step = epoch (TensorBoard and CSV), and `mfzoo.training.tensorboard` names runs and writes the
HParams plugin data."""

from __future__ import annotations

import csv
import itertools
import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata
from tensorboard.plugins.hparams.api_pb2 import Status

from mfzoo.training.run import train
from mfzoo.training.tensorboard import MAX_NAME_LENGTH, hparams, log_hparams, run_name
from tests.conftest import CONFIG_DIR

SMALL = [
    "data/source=synthetic",
    "data.source.n_users=300",
    "data.source.n_items=200",
    "data.source.n_interactions=12000",
]
EPOCHS = 3

# (overrides, the validation metric): the gradient path (MF + MSE), explicit ALS and iALS
PATHS = {
    "gradient": (["data.batch_size=1024"], "val/rmse"),
    "als": (["solver=als", "model=funksvd"], "val/rmse"),
    "ials": (["experiment=ml100k_ials"], "val/ndcg@10"),
}


def cfg_for(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*SMALL, *overrides])


def event_dir(run_dir: Path) -> Path:
    (events,) = {p.parent for p in (run_dir / "tb").rglob("events.out.tfevents.*")}
    return events


def scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(directory))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


# -- one x-axis: the epoch --------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_every_metric_is_logged_at_its_epoch(path, tmp_path):
    overrides, val_metric = PATHS[path]
    metrics = train(
        cfg_for(*overrides, f"trainer.max_epochs={EPOCHS}", "logger=tensorboard"), tmp_path
    )
    assert metrics["epochs"] == EPOCHS
    logged = scalars(event_dir(tmp_path))
    epochs = list(range(EPOCHS))
    assert [step for step, _ in logged["train/loss"]] == epochs
    assert [step for step, _ in logged[val_metric]] == epochs
    for tag, points in logged.items():
        steps = [step for step, _ in points]
        if tag.startswith(("train/", "val/")):
            assert steps == epochs, tag
        elif tag.startswith("test/"):
            assert steps == [EPOCHS - 1], tag  # the test pass sits at the last epoch
    assert "epoch" not in logged  # the step is the epoch: no separate epoch curve
    if path != "gradient":
        assert [step for step, _ in logged["train/sweep_seconds"]] == epochs
        # the solver's objective per interaction: exact sweeps never increase it
        losses = [value for _, value in logged["train/loss"]]
        assert (
            all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(losses))
            and losses[-1] < losses[0]
        )


@pytest.mark.parametrize("path", ["gradient", "als"])
def test_the_csv_logger_has_the_same_steps(path, tmp_path):
    overrides, val_metric = PATHS[path]
    train(
        cfg_for(*overrides, f"trainer.max_epochs={EPOCHS}", "logger=csv", "callbacks=none"),
        tmp_path,
    )
    (metrics_csv,) = tmp_path.rglob("metrics.csv")
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    for name in ("train/loss", val_metric):
        assert [int(row["step"]) for row in rows if row[name]] == list(range(EPOCHS)), name
    assert [int(row["step"]) for row in rows if row["test/rmse"]] == [EPOCHS - 1]


# -- run names --------------------------------------------------------------------------------
def test_run_name_joins_the_overrides():
    assert run_name([]) == "default"
    assert run_name(["loss=bpr", "model.dim=64"]) == "loss=bpr,model.dim=64"
    assert run_name(["+trainer.gradient_clip_val=0.5"]) == "+trainer.gradient_clip_val=0.5"


def test_run_name_replaces_unsafe_characters_and_stays_distinct():
    slashes = run_name(["data/source=ml1m", "data/split=temporal"])
    assert re.fullmatch(r"data_source=ml1m,data_split=temporal-[0-9a-f]{10}", slashes)
    # the overrides that read the same once replaced get different names
    assert (
        run_name(["data_source=ml1m", "data_split=temporal"])
        == "data_source=ml1m,data_split=temporal"
    )
    assert run_name(["data.source=ml1m", "data/split=temporal"]) != slashes
    odd = run_name(['model.name="a b"', "ranking.ks=[10,20]", "~scheduler", "x=a\\b:c*?<>|"])
    assert re.fullmatch(r"[A-Za-z0-9._=,+@%-]+", odd) and Path(odd).name == odd


def test_long_run_names_are_bounded_and_distinct():
    long_a = [f"model.param_{i}={i * 0.001}" for i in range(40)]
    long_b = [*long_a[:-1], "model.param_39=0.04"]  # differs only in the last value
    a, b = run_name(long_a), run_name(long_b)
    assert len(a) == len(b) == MAX_NAME_LENGTH
    assert a != b and a[:-11] == b[:-11]  # the same readable start, different hashes
    assert a.startswith("model.param_0=0.0,model.param_1=0.001,")
    # at the bound: kept
    assert len(run_name(["x=" + "y" * (MAX_NAME_LENGTH - 2)])) == MAX_NAME_LENGTH
    assert run_name(["x=" + "y" * (MAX_NAME_LENGTH - 2)]) == "x=" + "y" * (MAX_NAME_LENGTH - 2)


# -- hparams ----------------------------------------------------------------------------------
def test_hparams_are_flat_scalars_of_the_right_sections():
    gradient = hparams(cfg_for("loss=bpr", "model.dim=16"), ["loss=bpr", "model.dim=16"])
    assert gradient["overrides"] == "loss=bpr,model.dim=16"
    assert (
        gradient["model"] == "MF"
        and gradient["model.dim"] == 16
        and gradient["model.biases"] is True
    )
    assert (
        gradient["loss"] == "BPRLoss"
        and gradient["optim"] == "Adam"
        and gradient["optim.lr"] == 0.1
    )
    assert gradient["scheduler"] == "linear_decay"
    assert gradient["data.split"] == "RandomSplit" and gradient["data.split.val"] == 0.1
    assert gradient["data.split.test"] == 0.1 and gradient["data.batch_size"] == 16384
    assert gradient["data.source"] == "synthetic" and gradient["data.source.n_users"] == 300
    assert gradient["trainer.max_epochs"] == 12 and gradient["seed"] == 0
    assert not any(k.startswith("solver") or "_partial_" in k or "_target_" in k for k in gradient)
    assert all(isinstance(v, (int, float, str, bool)) for v in gradient.values())

    solver = hparams(
        cfg_for("experiment=ml100k_ials", "seed=3"), ["experiment=ml100k_ials", "seed=3"]
    )
    assert (
        solver["solver"] == "IALSSolver"
        and solver["solver.alpha"] == 0.516
        and solver["solver.l2"] == 12.4
    )
    assert (
        solver["data.split"] == "UserRandomSplit"
        and solver["seed"] == 3
        and solver["data.split.seed"] == 3
    )
    # unused with a solver
    assert not any(k.split(".")[0] in ("loss", "optim", "scheduler") for k in solver)

    learnbpr = hparams(cfg_for("experiment=ml100k_implicit_learnbpr"), [])
    assert learnbpr["overrides"] == "" and learnbpr["solver.sampler"] == "UniformSampler"
    assert learnbpr["solver.sampler.n_negatives"] == 1


def test_log_hparams_writes_the_hparams_plugin_data(tmp_path):
    overrides = ["solver=als", "model=funksvd", "model.dim=8"]
    cfg = cfg_for(*overrides)
    logger = TensorBoardLogger(
        save_dir=str(tmp_path), name="tb", version=run_name(overrides), default_hp_metric=False
    )
    logger.log_metrics({"val/rmse": 1.0}, step=0)
    log_hparams(logger, cfg, overrides, {"val/rmse": 0.91, "test/rmse": 0.93}, step=4)
    logger.finalize("success")

    directory = Path(logger.log_dir)
    assert directory == tmp_path / "tb" / "solver=als,model=funksvd,model.dim=8"
    accumulator = EventAccumulator(str(directory))
    accumulator.Reload()
    contents = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)
    assert metadata.EXPERIMENT_TAG not in contents  # TensorBoard builds it from all runs' sessions
    start = metadata.parse_session_start_info_plugin_data(contents[metadata.SESSION_START_INFO_TAG])
    expected = hparams(cfg, overrides)
    assert set(start.hparams) == set(expected)
    assert start.hparams["solver"].string_value == "ALSSolver"
    assert start.hparams["model.dim"].number_value == 8
    assert start.hparams["solver.frequency_scaled"].bool_value is True and start.hparams[
        "solver.frequency_scaled"
    ].HasField("bool_value")
    assert start.hparams["solver.l2"].number_value == pytest.approx(0.05)
    assert start.hparams["overrides"].string_value == "solver=als,model=funksvd,model.dim=8"
    end = metadata.parse_session_end_info_plugin_data(contents[metadata.SESSION_END_INFO_TAG])
    assert end.status == Status.STATUS_SUCCESS
    logged = scalars(directory)
    assert logged["hparams/val/rmse"] == [(4, pytest.approx(0.91))]
    assert logged["hparams/test/rmse"] == [(4, pytest.approx(0.93))]
    assert logged["val/rmse"] == [(0, 1.0)]  # the curve keeps its own points
    assert yaml.safe_load((directory / "hparams.yaml").read_text()) == expected


def test_log_hparams_does_nothing_for_other_loggers(tmp_path):
    logger = CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    log_hparams(logger, cfg_for(), [], {"val/rmse": 0.9})
    logger.finalize("success")
    assert not list(tmp_path.rglob("*.tfevents.*"))
    assert not (tmp_path / "csv" / "metrics.csv").exists()
