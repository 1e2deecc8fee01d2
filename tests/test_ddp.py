"""Data-parallel runs end to end (`trainer=ddp`, 2 CPU processes over gloo), against the
single-process run with the same global batch: the gradient path (Lightning's DDP, each rank a
disjoint slice of every epoch), the closed-form path with `solver.distributed=true` (rows
sharded over the ranks, both exchanges), and a torchrun launch sharing one run directory."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.distributed

DATA = [
    "data/source=synthetic",
    "data.source.n_users=300",
    "data.source.n_items=200",
    "data.source.n_interactions=6000",
    "logger=csv",
    "progress=false",
]
IALS = [
    *DATA,
    "model=funksvd",
    "model.dim=8",
    "data/split=user_random",
    "solver=ials",
    "solver.method=cg",
    "callbacks=ranking",
    "+ranking.ks=[10]",
    "optimized_metric=val/ndcg@10",
    "trainer.max_epochs=3",
]

# a model that writes down the training rows each process sees (the run imports it from its
# working directory, as it would a user's own model)
PROBE = """
import os
from mfzoo.models.mf import MF


class ProbeMF(MF):
    def forward(self, batch):
        rank = os.environ.get('LOCAL_RANK', '0')
        if self.training:
            with open(f"rows-{rank}.txt", "a") as f:
                for u, i in zip(batch.users.tolist(), batch.items[:, 0].tolist()):
                    f.write(f"{u} {i}\\n")
        else:  # evaluation
            with open(f"evaluated-{rank}.txt", "a") as f:
                f.write(f"{len(batch.users)}\\n")
        return super().forward(batch)
"""


def mfzoo(cwd: Path, *args: str, torchrun: int = 0) -> dict:
    """Run `python -m mfzoo ARGS` (under torchrun with that many processes) in `cwd`; the
    metrics.json of the one run directory it made."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    launcher = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc-per-node={torchrun}",
            "-m",
            "mfzoo",
        ]
        if torchrun
        else [sys.executable, "-m", "mfzoo"]
    )
    before = set(cwd.glob("runs/*/*"))
    done = subprocess.run(
        [*launcher, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    made = sorted(set(cwd.glob("runs/*/*")) - before)
    assert len(made) == 1, f"one run, one directory; got {made}"  # the ranks share rank 0's
    metrics = json.loads((made[0] / "metrics.json").read_text())
    metrics["dir"] = made[0]
    return metrics


def factors(run: dict) -> dict[str, torch.Tensor]:
    state = torch.load(run["dir"] / run["best_checkpoint"], map_location="cpu", weights_only=True)[
        "state_dict"
    ]
    return {k: v for k, v in state.items() if "embedding" in k}


def test_gradient_ddp_equals_one_process_with_the_global_batch(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    common = [*DATA, "model._target_=probe.ProbeMF", "model.dim=8", "trainer.max_epochs=3"]
    ddp = mfzoo(tmp_path, *common, "trainer=ddp", "data.batch_size=500")
    seen = {r: (tmp_path / f"rows-{r}.txt").read_text().split("\n")[:-1] for r in (0, 1)}
    # rank 0 alone evaluated: every val and test row once per evaluation, rank 1 none
    assert not (tmp_path / "evaluated-1.txt").exists()
    evaluated = sum(int(n) for n in (tmp_path / "evaluated-0.txt").read_text().split())
    n_val = ddp["n_train"] // 8  # the split is 80 / 10 / 10
    assert evaluated == 3 * n_val + n_val  # three validations, one test
    for r in (0, 1):
        (tmp_path / f"rows-{r}.txt").unlink()
    single = mfzoo(tmp_path, *common, "data.batch_size=1000")

    # the same steps, the same numbers (float32 sums in another order: 1e-5)
    assert (
        ddp["global_steps"] == single["global_steps"] and ddp["best_epoch"] == single["best_epoch"]
    )
    for part in ("val", "test"):
        for name, value in single[part].items():
            assert ddp[part][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (part, name)
    for name, value in factors(single).items():
        torch.testing.assert_close(factors(ddp)[name], value, atol=1e-5, rtol=1e-5)
    # train/loss: every epoch's mean over all ranks' rows, as one process's over its batches
    losses = []
    for run in (ddp, single):
        with open(run["dir"] / "history.csv") as f:
            losses.append([float(row["train/loss"]) for row in csv.DictReader(f)])
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    # each epoch's rows split between the ranks: as many each, none twice, all of them once
    epochs, n = 3, single["n_train"]
    assert len(seen[0]) == len(seen[1]) == epochs * n // 2
    rows_of_single = (tmp_path / "rows-0.txt").read_text().split("\n")[:-1]
    assert sorted(seen[0] + seen[1]) == sorted(rows_of_single)
    per_epoch = n // 2
    for e in range(epochs):
        a, b = (
            set(seen[0][e * per_epoch : (e + 1) * per_epoch]),
            set(seen[1][e * per_epoch : (e + 1) * per_epoch]),
        )
        assert not a & b and len(a | b) == n
    assert (ddp["dir"] / "config.yaml").is_file() and ddp["checkpoint_sha256"]


@pytest.mark.parametrize("exchange", ["gather", "blockwise"])
def test_distributed_ials_under_ddp_equals_one_process(tmp_path, exchange):
    ddp = mfzoo(
        tmp_path, *IALS, "trainer=ddp", "solver.distributed=true", f"solver.exchange={exchange}"
    )
    single = mfzoo(tmp_path, *IALS)
    assert ddp["objective"] == pytest.approx(single["objective"], abs=1e-4)
    for name, value in single["test"].items():
        assert ddp["test"][name] == pytest.approx(value, abs=1e-4), name
    for name, value in factors(single).items():
        torch.testing.assert_close(factors(ddp)[name], value, atol=1e-4, rtol=1e-4)


def test_torchrun_launch_shares_one_run_directory(tmp_path):
    run = mfzoo(
        tmp_path,
        *IALS,
        "trainer=ddp",
        "solver.distributed=true",
        "trainer.max_epochs=2",
        torchrun=2,
    )
    assert run["epochs"] == 2 and run["objective"] > 0
    assert (run["dir"] / "checkpoints" / "last.ckpt").is_file() and not (
        run["dir"] / "failed.txt"
    ).exists()


def test_a_multirun_of_ddp_runs_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mfzoo", "-m", *DATA, "trainer=ddp", "seed=1,2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "one run per command" in done.stderr


def test_a_launch_the_trainer_does_not_match_is_refused(tmp_path):
    """torchrun's 2 processes with a one-device trainer would each train the whole run into one
    directory: refused, once, naming the fix."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "-m", "mfzoo", *DATA],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert done.stderr.count("trainer=ddp trainer.devices=2") == 1, done.stderr[-2000:]
    assert not list(tmp_path.glob("runs/*/*/metrics.json")) and not list(
        tmp_path.glob("runs/*/*/checkpoints")
    )
