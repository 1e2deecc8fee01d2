"""docs/extending.md, run as a new user would: its package written to a folder outside the
repository, its contract-suite test file run with pytest, its commands run as they are (on
small synthetic data instead of MovieLens)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "extending.md"
SMALL = [
    "data/source=synthetic",
    "data.source.n_users=150",
    "data.source.n_items=80",
    "data.source.n_interactions=4000",
    "trainer.max_epochs=2",
    "logger=none",
]


def _blocks(lang: str) -> list[str]:
    return [
        body
        for kind, body in re.findall(r"```(\w+)\n(.*?)```", GUIDE.read_text(), re.S)
        if kind == lang
    ]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("outside")
    for body in _blocks("python") + _blocks("yaml"):
        first, _, rest = body.partition("\n")
        name = first.removeprefix("# file:").strip()
        assert first.startswith("# file:") and name, f"a code block without '# file:': {first!r}"
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(rest)
    return work


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_the_package_is_short(project):
    package = [p for p in project.rglob("*") if p.is_file() and p.name != "test_gmf.py"]
    lines = sum(1 for p in package for line in p.read_text().splitlines() if line.strip())
    assert 0 < lines < 60


def test_the_contract_suite_passes_for_the_guide_model_and_loss(project):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_gmf.py"],
        cwd=project,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r"\b(\d+) passed", done.stdout) and " failed" not in done.stdout


def test_the_commands_train_sweep_compare_and_serve(project):
    (commands,) = [b for b in _blocks("bash") if "mfzoo-train" in b]
    bindir = Path(sys.executable).parent
    for line in commands.strip().splitlines():
        argv = shlex.split(line)
        tool = bindir / argv[0]
        argv = [str(tool) if tool.exists() else argv[0], *argv[1:]]
        if argv[0].endswith("mfzoo-train"):
            argv += SMALL
        done = subprocess.run(
            argv, cwd=project, env=_env(), capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
        if "mfzoo-compare" in line:
            assert "hinge" in done.stdout and "bpr" in done.stdout, done.stdout
        if "mfzoo-recommend" in line:
            assert len([x for x in done.stdout.splitlines() if "score" in x]) == 5, done.stdout
    metrics = json.loads((project / "runs" / "gmf" / "metrics.json").read_text())
    assert metrics["optimized_metric"] == "val/ndcg@10" and metrics["objective"] is not None
    config = (project / "runs" / "gmf" / "config.yaml").read_text()
    assert "mfzoo_gmf.GMF" in config and "mfzoo_gmf.HingeLoss" in config and "- mfzoo_gmf" in config
    assert len(list((project / "multirun" / "gmf").glob("*/metrics.json"))) == 4
