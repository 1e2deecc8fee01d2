"""The wheel carries the configs: a non-editable install runs `mfzoo-train` from any directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(
    ".git",
    "runs",
    "multirun",
    "outputs",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    "experiments",
    "tests",
    "docs",
)

# run the installed wheel only: the checkout's editable finder is taken off the import path
RUN_WHEEL = """
import sys
sys.meta_path = [
    f for f in sys.meta_path
    if "editable" not in (getattr(f, "__module__", None) or type(f).__module__).lower()
    and "editable" not in type(f).__name__.lower()
]
sys.path.insert(0, sys.argv.pop(1))
import mfzoo, mfzoo.cli
assert mfzoo.__file__.startswith(sys.path[0]), mfzoo.__file__
print("configs:", mfzoo.cli.CONFIG_DIR)
mfzoo.cli.train()
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    work = tmp_path_factory.mktemp("wheel")
    source = Path(shutil.copytree(ROOT, work / "src", ignore=SKIP))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(work / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"building the wheel failed: {done.stderr[-2000:]}")
    (found,) = (work / "dist").glob("mfzoo-*.whl")
    return found


def test_the_wheel_holds_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {
        p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")
    }
    assert configs and {f"mfzoo/configs/{c}" for c in configs} <= names


def test_an_installed_wheel_trains_from_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    overrides = [
        "data/source=synthetic",
        "data.source.n_users=100",
        "data.source.n_items=60",
        "data.source.n_interactions=2000",
        "trainer.max_epochs=1",
        "logger=none",
        "hydra.run.dir=run",
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", RUN_WHEEL, str(site), *overrides],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"configs: {site / 'mfzoo' / 'configs'}" in done.stdout
    metrics = json.loads((elsewhere / "run" / "metrics.json").read_text())
    assert metrics["test"]["rmse"] > 0
