"""Hostile run directories and command lines: loading a run executes nothing from it, changed
files are refused by name, and every CLI failure is one line `mfzoo: ...`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from mfzoo import cli
from mfzoo.data.errors import DataError
from mfzoo.training.restore import load_run
from mfzoo.training.run import train
from mfzoo.training.rundir import RunError
from tests.bad_inputs.conftest import tiny_cfg

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_cfg(), run_dir)
    return run_dir


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A copy of a finished run, to be made hostile."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


class Payload:
    """Unpickling this runs `os.system`: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _forget_digests(run_dir: Path) -> None:
    """Drop the recorded checkpoint digests (a run written by an older version): the file itself
    must then be refused."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("checkpoint_sha256", None)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mfzoo import cli; getattr(cli, sys.argv.pop(1))()",
            *argv,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in last, last


# checkpoints ---------------------------------------------------------------------------------
@pytest.mark.parametrize("digests", ["recorded", "absent"])
def test_a_malicious_checkpoint_runs_nothing(run, tmp_path, digests):
    marker = tmp_path / "marker"
    best = run / json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    torch.save({"state_dict": {}, "payload": Payload(marker)}, best)
    if digests == "absent":
        _forget_digests(run)
    with pytest.raises(
        RunError, match="SHA-256 differs" if digests == "recorded" else "not a readable checkpoint"
    ):
        load_run(run)
    assert not marker.exists()


def test_a_malicious_checkpoint_through_the_cli_and_resume(run, tmp_path):
    marker = tmp_path / "marker"
    best = run / json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    torch.save({"state_dict": {}, "payload": Payload(marker)}, best)
    _forget_digests(run)
    _one_line_error(
        _cli("recommend", str(run), "--user", "3", cwd=tmp_path),
        "mfzoo:",
        str(best),
        "not a readable checkpoint",
    )
    # a killed run whose last checkpoint was replaced: resume refuses it
    (run / "metrics.json").unlink()
    torch.save({"state_dict": {}, "payload": Payload(marker)}, run / "checkpoints" / "last.ckpt")
    with pytest.raises(RunError, match=r"last\.ckpt: not a readable checkpoint"):
        train(None, run, resume=True)
    assert not marker.exists()


def test_a_truncated_checkpoint_is_named(run, tmp_path):
    best = run / json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    best.write_bytes(best.read_bytes()[:100])
    _forget_digests(run)
    _one_line_error(
        _cli("similar", str(run), "--item", "3", cwd=tmp_path),
        "mfzoo:",
        best.name,
        "not a readable checkpoint",
    )


# config targets ------------------------------------------------------------------------------
def _edit_config(run_dir: Path, edit) -> None:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    edit(config)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))


HOSTILE_TARGETS = {
    "os.system": lambda m: {"_target_": "os.system", "_args_": [f"touch {m}"]},
    "builtins.exec": lambda m: {"_target_": "builtins.exec", "_args_": [f"open('{m}', 'w')"]},
    "torch.load": lambda m: {"_target_": "torch.load", "f": str(m), "weights_only": False},
    "subprocess.Popen": lambda m: {"_target_": "subprocess.Popen", "args": ["touch", str(m)]},
}


@pytest.mark.parametrize("target", sorted(HOSTILE_TARGETS))
@pytest.mark.parametrize("place", ["model", "data.source", "loss"])
def test_a_config_naming_foreign_code_is_refused(run, tmp_path, target, place):
    marker = tmp_path / "marker"

    def edit(config):
        section, *rest = place.split(".")
        node = config[section]
        for key in rest:
            node = node[key]
        node.clear()
        node.update(HOSTILE_TARGETS[target](marker))

    _edit_config(run, edit)
    with pytest.raises(RunError, match=f"{place}._target_ is '{target}'"):
        load_run(run)
    assert not marker.exists()


@pytest.mark.parametrize("package", ["os", "subprocess", "builtins", "torch", "pickle"])
def test_a_config_cannot_trust_the_standard_library_or_torch(run, tmp_path, package):
    marker = tmp_path / "marker"
    _edit_config(
        run,
        lambda c: c.update(
            trusted_packages=[package],
            model={"_target_": "subprocess.Popen", "args": ["touch", str(marker)]},
        ),
    )
    with pytest.raises(RunError, match="cannot be trusted"):
        load_run(run)
    assert not marker.exists()


def test_a_function_of_a_trusted_package_is_refused(run, tmp_path, monkeypatch):
    package = tmp_path / "pkg" / "usermodels"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from mfzoo.models.mf import MF\n\n\nclass MyMF(MF):\n    pass\n\n\n"
        "def build(**kwargs):\n    return MyMF(**kwargs)\n"
    )
    monkeypatch.syspath_prepend(str(package.parent))
    _edit_config(
        run,
        lambda c: c.update(
            trusted_packages=["usermodels"], model={**c["model"], "_target_": "usermodels.build"}
        ),
    )
    with pytest.raises(RunError, match=r"'usermodels\.build' is not a class"):
        load_run(run)


def test_a_users_own_model_package_trains_and_loads(tmp_path, monkeypatch):
    package = tmp_path / "pkg" / "usermodels"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from mfzoo.models.mf import MF\n\n\nclass MyMF(MF):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(package.parent))
    run_dir = tmp_path / "run"
    train(tiny_cfg("model._target_=usermodels.MyMF"), run_dir)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["trusted_packages"] == ["usermodels"]  # recorded: the user ran it
    _, _, model = load_run(run_dir)
    assert type(model).__name__ == "MyMF"
    _edit_config(run_dir, lambda c: c.update(trusted_packages=[]))  # without the record: refused,
    # with how to allow it
    with pytest.raises(RunError, match=r"--trust usermodels .*trust_packages=\['usermodels'\]"):
        load_run(run_dir)
    assert type(load_run(run_dir, trust_packages=["usermodels"])[2]).__name__ == "MyMF"


def test_a_config_that_is_not_a_run_config_is_named(run):
    (run / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(RunError, match=r"config\.yaml: not a readable config"):
        load_run(run)
    (run / "config.yaml").write_text("- just\n- a list\n")
    with pytest.raises(RunError, match=r"config\.yaml: not a run's config"):
        load_run(run)


# the run's data files ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["titles.json", "ids.json", "parts.pt"])
def test_a_changed_data_file_is_refused(run, name):
    meta = json.loads((run / "data" / "meta.json").read_text())
    path = run / "data" / name
    if name == "titles.json":
        path.write_text(json.dumps({"1": "a title the run never had"}))
        meta["files"]["titles.json"] = meta["files"].get("titles.json", "0" * 64)
        (run / "data" / "meta.json").write_text(json.dumps(meta))
    elif name == "ids.json":
        ids = json.loads(path.read_text())
        ids["users"]["values"] = ids["users"]["values"][::-1]
        path.write_text(json.dumps(ids))
    else:
        stored = torch.load(path, weights_only=True)
        stored["train"]["values"][0] += 1
        torch.save(stored, path)
    with pytest.raises(RunError, match=f"data/{name} was changed after the run wrote it"):
        from mfzoo.training import artifacts

        artifacts.titles(run) if name == "titles.json" else load_run(run)


def test_a_changed_cached_titles_file_is_refused(tmp_path, monkeypatch):
    from mfzoo.data.sources import grouplens

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t4\n"
    )
    (cache / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\n2\tEdited\t1999\n"
    )
    monkeypatch.setattr(grouplens, "_RECBOLE_INTER_SHA256", None)
    with pytest.raises(DataError, match=r"ml-100k\.item.*sha256"):
        grouplens.movielens_titles("100k", cache_dir=str(cache))


def test_a_recbole_wheel_with_other_titles_is_refused(tmp_path, monkeypatch):
    from mfzoo.data.sources import grouplens

    wheel = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t4\n"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(grouplens._RECBOLE_INTER, inter)
        zf.writestr(grouplens._RECBOLE_ITEM, "item_id:token\tmovie_title:token_seq\n2\tEdited\n")
    (tmp_path / "cache" / "wheels").mkdir(parents=True)
    shutil.copy(wheel, tmp_path / "cache" / "wheels")
    import hashlib

    monkeypatch.setattr(
        grouplens, "_RECBOLE_INTER_SHA256", hashlib.sha256(inter.encode()).hexdigest()
    )
    with pytest.raises(DataError, match=r"ml-100k\.item: sha256"):
        grouplens._recbole_fallback(tmp_path / "cache")
    assert not (tmp_path / "cache" / "ml-100k.item").exists()


# command lines -------------------------------------------------------------------------------
def _argv(monkeypatch, capsys, main, *argv):
    monkeypatch.setattr(sys, "argv", ["mfzoo", *argv])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--user", "3", "-k", "0"], ["-k", "must be >= 1, got 0"]),
        (["--user", "3", "-k", "-5"], ["-k", "must be >= 1, got -5"]),
        (["--user", "3", "-k", "ten"], ["-k", "whole number"]),
        (["--items", ""], ["--items needs at least one item id"]),
        (["--items", " , "], ["--items needs at least one item id"]),
    ],
)
def test_bad_recommend_arguments_are_one_line(finished, monkeypatch, capsys, argv, words):
    code, err = _argv(monkeypatch, capsys, cli.recommend, str(finished), *argv)
    assert code == 2 and all(w in err.strip().splitlines()[-1] for w in words)


def test_bad_similar_arguments_and_missing_run_are_one_line(
    finished, tmp_path, monkeypatch, capsys
):
    code, err = _argv(monkeypatch, capsys, cli.similar, str(finished), "--item", "3", "-k", "0")
    assert code == 2 and "must be >= 1" in err
    monkeypatch.setattr(sys, "argv", ["mfzoo", str(tmp_path / "nowhere"), "--item", "3"])
    with pytest.raises(SystemExit, match="no such run directory"):
        cli.similar()


def test_training_failures_are_one_line(tmp_path):
    _one_line_error(
        _cli(
            "train",
            "data/source=table",
            f"data.source.path={tmp_path / 'missing.csv'}",
            "logger=none",
            cwd=tmp_path,
        ),
        "mfzoo:",
        "missing.csv",
    )
    _one_line_error(
        _cli("train", *[o for o in tiny_cfg_overrides()], "model.dim=abc", cwd=tmp_path),
        "mfzoo:",
        "model (mfzoo.models.mf.MF)",
    )


def tiny_cfg_overrides() -> list[str]:
    from tests.bad_inputs.conftest import TINY

    return [o for o in TINY if o != "logger=csv"] + ["logger=none"]


# found by trying it as a new user ------------------------------------------------------------
def test_an_interpolation_in_a_run_config_is_refused(run, tmp_path):
    _edit_config(run, lambda c: c["model"].update(init_std="${oc.env:HOME}"))
    with pytest.raises(RunError, match=r"model\.init_std holds an interpolation"):
        load_run(run)


def test_an_edited_run_is_one_line_from_the_cli(run, monkeypatch, capsys):
    titles = run / "data" / "titles.json"
    if titles.exists():
        titles.write_text('{"1": "edited"}')
        monkeypatch.setattr(sys, "argv", ["mfzoo", str(run), "--user", "3"])
        with pytest.raises(SystemExit, match=r"titles\.json was changed after the run wrote it"):
            cli.recommend()
        titles.unlink()
    _edit_config(run, lambda c: c["model"].update(dim=0))
    monkeypatch.setattr(sys, "argv", ["mfzoo", str(run), "--user", "3"])
    with pytest.raises(
        SystemExit, match=r"config\.yaml: model .*dim must be an integer >= 1, got 0"
    ):
        cli.recommend()


def test_ratings_outside_the_runs_range_are_refused(finished, monkeypatch):
    for bad in ("100", "1e39", "nan"):
        monkeypatch.setattr(sys, "argv", ["mfzoo", str(finished), "--items", "3", "--ratings", bad])
        with pytest.raises(SystemExit, match=r"--ratings .* is outside the run's rating range"):
            cli.recommend()


@pytest.mark.parametrize("case", ["seed", "path"])
def test_open_or_wrong_basics_are_refused_before_data(tmp_path, case):
    from omegaconf import OmegaConf

    cfg = tiny_cfg("seed=abc") if case == "seed" else tiny_cfg()
    if case == "path":  # data/source=table without data.source.path
        cfg.data.source = OmegaConf.create(
            {"_target_": "mfzoo.data.sources.read_table", "_partial_": True, "path": "???"}
        )
    words = (
        "seed must be an integer, got 'abc'" if case == "seed" else "data.source.path must be given"
    )
    with pytest.raises(RunError, match=words):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert (tmp_path / "run" / "failed.txt").read_text().startswith(words.split(",")[0][:20])


def test_a_data_error_leaves_failed_txt(tmp_path):
    bad = tmp_path / "big.csv"
    bad.write_text("user_id,item_id,rating\n1,2,1e39\n2,3,4\n")
    cfg = tiny_cfg()
    cfg.data.source = {
        "_target_": "mfzoo.data.sources.read_table",
        "_partial_": True,
        "path": str(bad),
        "user_col": "user_id",
        "item_col": "item_id",
        "value_col": "rating",
    }
    with pytest.raises(DataError):
        train(cfg, tmp_path / "run")
    assert "float32" in (tmp_path / "run" / "failed.txt").read_text()
    from mfzoo.compare.runs import read_run

    assert read_run(tmp_path / "run").problem.startswith("failed: ")


def test_the_selection_metric_follows_optimized_metric_and_an_unlogged_one_stops_at_once(tmp_path):
    metrics = train(
        tiny_cfg("experiment=ml100k_implicit_bpr", "ranking.ks=[5]", "optimized_metric=val/ndcg@5"),
        tmp_path / "a",
    )
    assert metrics["objective"] == metrics["val"]["ndcg@5"]
    with pytest.raises(
        RunError, match=r"callbacks\.early_stopping\.monitor 'val/foo' is not a validation metric"
    ):
        train(tiny_cfg("callbacks.early_stopping.monitor=val/foo"), tmp_path / "b")
    assert (
        not (tmp_path / "b" / "metrics.json").exists() and (tmp_path / "b" / "failed.txt").exists()
    )
