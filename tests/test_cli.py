"""mfzoo-recommend / mfzoo-similar on a finished run, and the run's TensorBoard projector."""

from __future__ import annotations

import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from mfzoo import cli
from mfzoo.training.restore import load_run
from mfzoo.training.run import train
from tests.conftest import CONFIG_DIR

SMALL = ["data/source=synthetic", "data.source.n_users=120", "data.source.n_items=80", "data.source.n_interactions=3000",
         "data.batch_size=512", "trainer.max_epochs=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        train(compose("train", overrides=SMALL), path)
    return path


def _call(main, argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", argv)
    main()
    return capsys.readouterr().out


def test_recommend_prints_k_unseen_items_by_score(run_dir, monkeypatch, capsys):
    out = _call(cli.recommend, ["mfzoo-recommend", str(run_dir), "--user", "7", "-k", "5"], monkeypatch, capsys)
    lines = [line for line in out.splitlines() if line.strip()[:2].rstrip(".").isdigit()]
    assert len(lines) == 5
    _, datamodule, model = load_run(run_dir)
    seen = set(datamodule.seen.items[datamodule.seen.users == 7].tolist())
    shown = [int(line.split("item ")[1].split()[0]) for line in lines]
    assert not seen & set(shown)
    with torch.no_grad():
        scores = model.user_factors()[7] @ model.item_factors().T
    scores[list(seen)] = -float("inf")
    assert shown == scores.topk(5).indices.tolist()  # raw ids are 0..n-1 in synthetic data


def test_similar_and_unknown_ids(run_dir, monkeypatch, capsys):
    out = _call(cli.similar, ["mfzoo-similar", str(run_dir), "--item", "3", "-k", "4", "--metric", "dot"], monkeypatch, capsys)
    shown = [int(line.split("item ")[1].split()[0]) for line in out.splitlines() if "score" in line]
    assert len(shown) == 4 and 3 not in shown
    with pytest.raises(SystemExit, match="unknown user id '99999'"):
        _call(cli.recommend, ["mfzoo-recommend", str(run_dir), "--user", "99999"], monkeypatch, capsys)
    with pytest.raises(SystemExit, match="not a run directory"):
        _call(cli.similar, ["mfzoo-similar", str(run_dir / "nope"), "--item", "1"], monkeypatch, capsys)


def test_run_writes_item_embeddings_for_the_projector(run_dir):
    projector = list((run_dir / "tb").rglob("projector_config.pbtxt"))
    assert projector, "no TensorBoard projector config in the run"
    assert list((run_dir / "tb").rglob("metadata.tsv"))
