"""mfzoo-recommend (training and new users) / mfzoo-similar on a finished run, and the run's
TensorBoard projector."""

from __future__ import annotations

import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mfzoo import cli
from mfzoo.retrieval import new_users
from mfzoo.solvers import fold_in_interactions
from mfzoo.training.restore import load_run
from mfzoo.training.run import train
from tests.conftest import CONFIG_DIR

SMALL = [
    "data/source=synthetic",
    "data.source.n_users=120",
    "data.source.n_items=80",
    "data.source.n_interactions=3000",
    "data.batch_size=512",
    "trainer.max_epochs=2",
]


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
    out = _call(
        cli.recommend,
        ["mfzoo-recommend", str(run_dir), "--user", "7", "-k", "5"],
        monkeypatch,
        capsys,
    )
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


def test_a_float64_run_reloads_in_float64(tmp_path, monkeypatch, capsys):
    """trainer.precision=64: the served model holds the checkpoint's float64 weights as they
    are, not rounded to float32, and serves: top-K, a new user folded in, neighbours."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        metrics = train(
            compose("train", overrides=[*SMALL, "+trainer.precision=64", "logger=none"]), tmp_path
        )
    _, _, model = load_run(tmp_path)
    from mfzoo.training.restore import checkpoint_of

    saved = torch.load(checkpoint_of(tmp_path), weights_only=True)["state_dict"]
    assert saved["model.user_embedding.weight"].dtype == torch.float64
    assert model.user_embedding.weight.dtype == torch.float64
    assert torch.equal(model.user_embedding.weight, saved["model.user_embedding.weight"])
    assert 0 < metrics["test"]["rmse"] < 5
    for main, argv in (
        (cli.recommend, ["mfzoo-recommend", str(tmp_path), "--user", "7", "-k", "3"]),
        (cli.recommend, ["mfzoo-recommend", str(tmp_path), "--items", "3,5", "--ratings", "5,1"]),
        (cli.similar, ["mfzoo-similar", str(tmp_path), "--item", "3", "-k", "2"]),
    ):
        assert "item " in _call(main, argv, monkeypatch, capsys)


def test_similar_and_unknown_ids(run_dir, monkeypatch, capsys):
    out = _call(
        cli.similar,
        ["mfzoo-similar", str(run_dir), "--item", "3", "-k", "4", "--metric", "dot"],
        monkeypatch,
        capsys,
    )
    shown = [int(line.split("item ")[1].split()[0]) for line in out.splitlines() if "score" in line]
    assert len(shown) == 4 and 3 not in shown
    with pytest.raises(SystemExit, match="unknown user id '99999'"):
        _call(
            cli.recommend, ["mfzoo-recommend", str(run_dir), "--user", "99999"], monkeypatch, capsys
        )
    with pytest.raises(SystemExit, match="no such run directory"):
        _call(
            cli.similar,
            ["mfzoo-similar", str(run_dir / "nope"), "--item", "1"],
            monkeypatch,
            capsys,
        )


def _ranked(out: str) -> list[int]:
    """Item ids of the ranked lines ("  1. score ...  item ID ...") of the CLI's output."""
    lines = [line for line in out.splitlines() if line.strip()[:2].rstrip(".").isdigit()]
    return [int(line.split("item ")[1].split()[0]) for line in lines]


def test_recommend_for_a_new_user_is_the_runs_ridge_fold_in(run_dir, monkeypatch, capsys):
    argv = ["mfzoo-recommend", str(run_dir), "--items", "3,5,8", "--ratings", "5,1,4", "-k", "6"]
    shown = _ranked(_call(cli.recommend, argv, monkeypatch, capsys))
    assert len(shown) == 6 and not {3, 5, 8} & set(shown)
    cfg, datamodule, model = load_run(run_dir)
    # the run trained MF with MSELoss: the ridge fold-in with its λ, λ_b
    loss = instantiate(cfg.loss)
    new = new_users(datamodule.train, [3, 5, 8], [5, 1, 4])
    with torch.no_grad():
        # [n_items]
        scores = fold_in_interactions(model, new, loss.l2, loss.l2_bias)[0] @ model.item_factors().T
    scores[[3, 5, 8]] = -float("inf")
    assert shown == scores.topk(6).indices.tolist()  # raw ids are 0..n-1 in synthetic data
    # without --ratings every item counts as liked: the run's highest training value
    out = _call(
        cli.recommend, ["mfzoo-recommend", str(run_dir), "--items", "3,5,8"], monkeypatch, capsys
    )
    top = float(datamodule.train.values.max())
    assert out.count(f"rated {top:g}  item") == 3 and len(_ranked(out)) == 10


def test_recommend_new_user_bad_input(run_dir, monkeypatch, capsys):
    with pytest.raises(
        SystemExit, match=r"^mfzoo: unknown item id '99999' \(not in this run's data\)$"
    ):
        _call(
            cli.recommend,
            ["mfzoo-recommend", str(run_dir), "--items", "3,99999"],
            monkeypatch,
            capsys,
        )
    with pytest.raises(SystemExit, match="item id '3' given more than once"):
        _call(
            cli.recommend,
            ["mfzoo-recommend", str(run_dir), "--items", "3,4,3"],
            monkeypatch,
            capsys,
        )
    for argv, message in (
        (["--user", "7", "--items", "3"], "not allowed with"),
        (["--items", "3,4", "--ratings", "5"], "1 values for 2 items"),
        (["--user", "7", "--ratings", "5"], "--ratings goes with --items"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            _call(cli.recommend, ["mfzoo-recommend", str(run_dir), *argv], monkeypatch, capsys)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_run_writes_item_embeddings_for_the_projector(run_dir):
    projector = list((run_dir / "tb").rglob("projector_config.pbtxt"))
    assert projector, "no TensorBoard projector config in the run"
    assert list((run_dir / "tb").rglob("metadata.tsv"))
