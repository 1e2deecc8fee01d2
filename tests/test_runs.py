"""Runs a researcher can trust: selection on validation only, unique and locked run
directories, self-contained runs, and resume to the same metrics as the uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from mfzoo import cli
from mfzoo.training import module as training_module
from mfzoo.training.restore import load_run
from mfzoo.training.run import train
from mfzoo.training.rundir import RunError, claim, register_resolvers
from tests.conftest import CONFIG_DIR, SYNTHETIC

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    *SYNTHETIC,
    "trainer.max_epochs=4",
    "logger=csv",
]


def cfg_for(*overrides: str, hydra: bool = False, base: list[str] = SMALL):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*base, *overrides], return_hydra_config=hydra)


def _history(run_dir: Path) -> list[dict[str, str]]:
    lines = (run_dir / "history.csv").read_text().splitlines()
    names = lines[0].split(",")
    return [dict(zip(names, line.split(","), strict=True)) for line in lines[1:]]


# selection on validation ----------------------------------------------------------------------
SENTINEL = 123.0


@pytest.fixture
def poisoned_test(monkeypatch):
    """Test metrics replaced by a sentinel: any value that reaches a sweeper carrying it came
    from the test part."""
    original = training_module.EvaluatedModule._log_metrics

    def log_metrics(self, stage):
        if stage != "test":
            return original(self, stage)
        self._outputs.clear()
        for name in ("rmse", "mae", "ndcg@10"):
            self.log(f"test/{name}", SENTINEL)

    monkeypatch.setattr(training_module.EvaluatedModule, "_log_metrics", log_metrics)


def test_what_reaches_the_sweeper_is_the_validation_metric_of_the_chosen_epoch(
    tmp_path, poisoned_test
):
    register_resolvers()
    with_hydra = cfg_for(hydra=True)
    with open_dict(with_hydra):
        with_hydra.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(with_hydra)
    returned = cli._train(cfg_for())  # what Hydra hands to a sweeper (the config passed through)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["rmse"] == SENTINEL and returned != SENTINEL
    history = _history(tmp_path)
    best = min(range(len(history)), key=lambda e: float(history[e]["val/rmse"]))
    assert metrics["best_epoch"] == best
    assert (
        returned
        == metrics["objective"]
        == metrics["val"]["rmse"]
        == float(history[best]["val/rmse"])
    )
    assert metrics["best_checkpoint"] == f"checkpoints/epoch{best:03d}.ckpt"  # relative to the run


def test_a_ranking_run_returns_its_validation_ndcg(tmp_path, poisoned_test):
    metrics = train(
        cfg_for("experiment=ml100k_implicit_bpr", "trainer.max_epochs=3", *SMALL[:4]), tmp_path
    )
    assert metrics["optimized_metric"] == "val/ndcg@10"
    assert (
        metrics["objective"] == metrics["val"]["ndcg@10"] != SENTINEL
        and 0 < metrics["objective"] < 1
    )


def test_a_test_metric_cannot_be_optimised(tmp_path):
    with pytest.raises(ValueError, match="validation metric"):
        train(cfg_for("optimized_metric=test/rmse"), tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_last_checkpoint_every_epoch_and_one_history_row_per_epoch(tmp_path):
    metrics = train(
        cfg_for("trainer.max_epochs=5", "callbacks.early_stopping.patience=100"), tmp_path
    )
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 4 and metrics["epochs"] == 5
    assert [int(r["epoch"]) for r in _history(tmp_path)] == [0, 1, 2, 3, 4]
    assert metrics["last_checkpoint"] == "checkpoints/last.ckpt"


# unique, locked run directories ---------------------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _mfzoo_train(cwd: Path, *overrides: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-c",
        "from mfzoo.cli import train; train()",
        *SMALL,
        "trainer.max_epochs=2",
        *overrides,
    ]
    return subprocess.Popen(
        command, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_two_runs_started_together_get_two_complete_directories(tmp_path):
    jobs = [_mfzoo_train(tmp_path, "model.dim=8", "logger=tensorboard") for _ in range(2)]
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    runs = sorted(p.parent for p in tmp_path.glob("runs/*/*/metrics.json"))
    assert len(runs) == 2 and runs[0] != runs[1]
    printed = sorted(json.loads(out[out.index("\n{\n") :])["run_dir"] for out in outputs)
    assert [(tmp_path / p).resolve() for p in printed] == [
        r.resolve() for r in runs
    ]  # each job reports its own
    for run in runs:
        # the overrides name the run (shortened, with a hash)
        assert "data_source=synthetic" in run.name
        for name in (
            "config.yaml",
            "overrides.yaml",
            "history.csv",
            "checkpoints/last.ckpt",
            "data/parts.pt",
        ):
            assert (run / name).is_file(), (run, name)
        writers = {p.name.split(".")[-2] for p in run.glob("tb/**/events.out.tfevents.*")}
        assert len(writers) == 1  # every event file of the run comes from one process
        assert not (run / "run.lock").exists()  # released at the end


def test_a_run_directory_in_use_or_used_is_refused(tmp_path):
    with (
        claim(tmp_path / "a"),
        pytest.raises(RunError, match="in use by another run"),
        claim(tmp_path / "a"),
    ):
        pass
    train(cfg_for("trainer.max_epochs=1"), tmp_path / "done")
    with pytest.raises(RunError, match="already holds a run"):
        train(cfg_for("trainer.max_epochs=1"), tmp_path / "done")
    # a lock left by a killed process: refused for a new run, taken over by resume
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "run.lock").write_text(
        json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345})
    )
    with pytest.raises(RunError, match="resume="), claim(stale):
        pass
    with claim(stale, resume=True):
        assert json.loads((stale / "run.lock").read_text())["pid"] == os.getpid()


# self-contained runs --------------------------------------------------------------------------
def test_a_copied_run_serves_from_its_own_files(tmp_path):
    original = tmp_path / "original"
    train(cfg_for(), original)
    _, datamodule, model = load_run(original)
    with torch.no_grad():
        expected = model.user_factors() @ model.item_factors().T
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    for ckpt in (original / "checkpoints").iterdir():  # the original's checkpoints are gone
        ckpt.write_bytes(b"")
    _, copied_data, copied = load_run(copy)
    with torch.no_grad():
        assert torch.equal(copied.user_factors() @ copied.item_factors().T, expected)
    assert torch.equal(copied_data.seen.users, datamodule.seen.users)
    assert np.array_equal(copied_data.data.user_ids, datamodule.data.user_ids)


def _ratings_csv(path: Path, users: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    keys = rng.choice(60 * 50, size=1500, replace=False)
    rows = [f"{users[k // 50]},{k % 50},{rng.integers(1, 6)}" for k in keys]
    path.write_text("user_id,item_id,rating\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize("keep", ["copy", "digest"])
def test_changed_source_data_is_refused_or_not_needed(tmp_path, keep):
    data = tmp_path / "ratings.csv"
    users = np.arange(1000, 1060)
    _ratings_csv(data, users)
    table = [
        "data/source=table",
        f"data.source.path={data}",
        "trainer.max_epochs=2",
        f"keep_data={keep}",
    ]
    run = tmp_path / "run"
    train(cfg_for(*table, base=SMALL[4:]), run)
    _, datamodule, _ = load_run(run)
    _ratings_csv(data, users[::-1].copy())  # the same file with the users relabelled
    if keep == "copy":  # the run does not read the source at all
        _, again, _ = load_run(run)
        assert np.array_equal(again.data.user_ids, datamodule.data.user_ids)
        assert torch.equal(again.train.users, datamodule.train.users)
    else:
        with pytest.raises(RunError, match="differs from what the run was trained on"):
            load_run(run)


# resume ---------------------------------------------------------------------------------------
RESUMABLE = {
    "mf": ["model.dim=16", "trainer.max_epochs=5", "callbacks.early_stopping.patience=100"],
    # killed while the average runs (it starts after epoch 1 of 5): the mean, the iterate and
    # the count come back from last.ckpt
    "mf_averaged": [
        "model.dim=16",
        "trainer.max_epochs=5",
        "callbacks.early_stopping.patience=100",
        "averaging=tail",
        "averaging.start=0.2",
    ],
    "learnbpr": [
        "experiment=ml100k_implicit_learnbpr",
        *SMALL[:5],
        "logger=csv",
        "trainer.max_epochs=5",
        "callbacks.early_stopping.patience=100",
        "model.dim=16",
        "solver.deterministic=true",
    ],  # bitwise repeats
}


def _run(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from mfzoo.cli import train; train()", *overrides]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("kind", "stop"),
    [("mf", "SIGKILL"), ("learnbpr", "SIGINT"), ("mf", "SIGTERM"), ("mf_averaged", "SIGKILL")],
)
def test_a_killed_run_resumes_to_the_uninterrupted_metrics(tmp_path, kind, stop):
    base = [*(SMALL if kind.startswith("mf") else []), *RESUMABLE[kind]]
    whole = _run(tmp_path, *base, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = tmp_path / "killed"
    stopped = _run(
        tmp_path,
        *base,
        f"hydra.run.dir={killed}",
        "+callbacks.stop._target_=tests.interrupt.StopAt",
        "+callbacks.stop.epoch=2",
        f"+callbacks.stop.signal={stop}",
    )
    # SIGTERM too: not a success
    assert stopped.returncode != 0, stopped.stderr[-3000:]
    assert not (killed / "metrics.json").exists()
    if stop != "SIGKILL":
        assert f"continue it with: mfzoo-train resume={killed}" in stopped.stderr
        assert "exit status" not in stopped.stderr
    assert torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] <= 2
    # moved, under a name with the characters of an override list:
    # resume follows, keeps the best so far
    moved = tmp_path / "elsewhere" / "0_model.dim=16,seed=0"
    moved.parent.mkdir()
    killed.rename(moved)
    once = kind == "mf" and stop == "SIGKILL"  # the checks of the command line, once is enough
    if once:
        # no other overrides
        assert _run(tmp_path, f"resume={moved}", "trainer.max_epochs=9").returncode != 0
    resumed = _run(tmp_path, f"resume={moved}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((moved / "metrics.json").read_text())
    assert b["resumed"] and b["epochs"] == a["epochs"] == 5
    # bit for bit
    assert b["test"] == a["test"] and b["val"] == a["val"] and b["best_epoch"] == a["best_epoch"]
    untimed = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert untimed(_history(moved)) == untimed(_history(tmp_path / "whole"))
    assert not (moved / "resume.ckpt").exists()
    if once:
        again = _run(tmp_path, f"resume={moved}")
        assert again.returncode != 0 and "has finished" in again.stderr


def test_settings_that_would_train_without_a_result_are_refused(tmp_path):
    with pytest.raises(RunError, match=r"no validation part.*callbacks=none"):
        train(cfg_for("data.split.val=0"), tmp_path / "a")
    with pytest.raises(RunError, match="max_epochs=0"):
        train(cfg_for("trainer.max_epochs=0"), tmp_path / "b")
    with pytest.raises(RunError, match=r"'val/RMSE' is not a validation metric.*val/mae, val/rmse"):
        train(cfg_for("optimized_metric=val/RMSE", "trainer.max_epochs=3"), tmp_path / "c")
    assert (
        not (tmp_path / "c" / "metrics.json").exists()
        and not (tmp_path / "c" / "history.csv").exists()
    )  # epoch 0
    # says why
    assert "'val/RMSE' is not a validation metric" in (tmp_path / "c" / "failed.txt").read_text()
    from mfzoo.compare.runs import read_run

    assert read_run(tmp_path / "c").problem.startswith("failed: ")
    # before any training
    with pytest.raises(RunError, match=r"sweeper optimises val/rmse.*no validation part"):
        train(cfg_for("data.split.val=0", "callbacks=none"), tmp_path / "e", objective=True)
    assert not (tmp_path / "e" / "config.yaml").exists()
    metrics = train(
        cfg_for("data.split.val=0", "callbacks=none", "trainer.max_epochs=2"), tmp_path / "d"
    )
    assert metrics["objective"] is None and metrics["val"] == {} and metrics["best_epoch"] == 1


def test_a_missing_or_broken_checkpoint_is_named(tmp_path):
    train(cfg_for("trainer.max_epochs=3", "callbacks.early_stopping.patience=100"), tmp_path)
    best = json.loads((tmp_path / "metrics.json").read_text())["best_checkpoint"]
    (tmp_path / best).write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="SHA-256 differs"):
        load_run(tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    del record["checkpoint_sha256"]  # a run without recorded digests: the file itself is checked
    (tmp_path / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(RunError, match="not a readable checkpoint"):
        load_run(tmp_path)
    (tmp_path / best).unlink()  # no silent fall-back to last.ckpt (another epoch)
    with pytest.raises(RunError, match=r"best checkpoint recorded in metrics\.json .* is missing"):
        load_run(tmp_path)


def test_a_changed_checkpoint_is_refused(tmp_path):
    train(cfg_for("trainer.max_epochs=2", "callbacks.early_stopping.patience=100"), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["checkpoint_sha256"]) == {
        metrics["best_checkpoint"],
        "checkpoints/last.ckpt",
    }
    load_run(tmp_path)
    best = tmp_path / metrics["best_checkpoint"]
    data = bytearray(best.read_bytes())
    # one flipped bit: still loads with torch, but it is not what the run wrote
    data[len(data) // 2] ^= 1
    best.write_bytes(bytes(data))
    with pytest.raises(RunError, match="SHA-256 differs"):
        load_run(tmp_path)


def test_a_resume_without_its_best_checkpoint_is_refused_before_training(tmp_path):
    killed = tmp_path / "killed"
    stopped = _run(
        tmp_path,
        *SMALL,
        "callbacks.early_stopping.patience=100",
        "trainer.max_epochs=5",
        f"hydra.run.dir={killed}",
        "+callbacks.stop._target_=tests.interrupt.StopAt",
        "+callbacks.stop.epoch=2",
        "+callbacks.stop.signal=SIGKILL",
    )
    assert stopped.returncode != 0
    for best in (killed / "checkpoints").glob("epoch*.ckpt"):
        best.unlink()
    history = (killed / "history.csv").read_text()
    resumed = _run(tmp_path, f"resume={killed}")
    assert (
        resumed.returncode != 0
        and "best checkpoint so far" in resumed.stderr
        and "is missing" in resumed.stderr
    )
    assert (killed / "history.csv").read_text() == history  # refused before training on
