"""The catalogue of hostile inputs (one test per case, listed in the README's "Bad input"
table). Every case also asserts that no file of an earlier run changed: a finished run
directory is made once per session and its files' SHA-256 are compared after each case."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import CONFIG_DIR

TINY = [
    "data/source=synthetic",
    "data.source.n_users=120",
    "data.source.n_items=80",
    "data.source.n_interactions=3000",
    "data.batch_size=512",
    "trainer.max_epochs=2",
    "logger=csv",
    "progress=false",
]


def tiny_cfg(*overrides: str):
    """The config of a seconds-long run on synthetic data, with `overrides` on top."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*TINY, *overrides])


def _fingerprint(run_dir: Path) -> dict[str, str]:
    return {
        p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def earlier_run(tmp_path_factory) -> Path:
    """A finished run that no hostile input may change."""
    from mfzoo.training.run import train

    run_dir = tmp_path_factory.mktemp("earlier") / "run"
    train(tiny_cfg(), run_dir)
    return run_dir


@pytest.fixture(autouse=True)
def _earlier_run_unchanged(earlier_run):
    before = _fingerprint(earlier_run)
    yield
    assert _fingerprint(earlier_run) == before, (
        "a hostile input changed the files of an earlier run"
    )
