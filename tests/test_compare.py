"""mfzoo-compare on hand-written run directories: exact group means and sample sds, grouping
that never merges differing keys, incomplete and repeated runs, CSV, plots, the console script."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mfzoo import compare
from mfzoo.compare import (
    CompareError,
    collect,
    epoch_curve,
    plot_epochs,
    plot_runs,
    sort_rows,
    table,
    to_csv,
    to_markdown,
)

BASE_CONFIG = {
    "seed": 0,
    "model": {"_target_": "mfzoo.models.MF", "dim": 32, "reg": 0.01},
    "optim": {"lr": 0.01},
    "trainer": {"max_epochs": 12},
    "callbacks": {
        "model_checkpoint": {
            "_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
            "monitor": "val/rmse",
        },
    },
}
PNG = b"\x89PNG\r\n\x1a\n"


def resolved_config(overrides: list[str]) -> dict:
    """BASE_CONFIG with the overrides applied, as Hydra would resolve it."""
    config = json.loads(json.dumps(BASE_CONFIG))
    for override in overrides:
        key, value = override.lstrip("+").split("=", 1)
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return config


def write_run(
    path: Path,
    overrides: list[str],
    val: dict,
    test: dict,
    *,
    epochs: int = 12,
    fit_seconds: float = 1.0,
    history: list[dict] | None = None,
) -> Path:
    """A run directory in mfzoo-train's format."""
    path.mkdir(parents=True)
    config = resolved_config(overrides)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {
        "optimized_metric": "val/rmse",
        "objective": next(iter(val.values())),
        "val": val,
        "test": test,
        "best_epoch": epochs - 3,
        "epochs": epochs,
        "global_steps": 5 * epochs,
        "fit_seconds": fit_seconds,
        "n_train": 80000,
        "best_checkpoint": "checkpoints/epoch009.ckpt",
        "overrides": overrides,
        "seed": config["seed"],
    }
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if history is not None:
        columns = ["epoch", *dict.fromkeys(k for record in history for k in record if k != "epoch")]
        with open(path / "history.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, columns, restval="")
            writer.writeheader()
            writer.writerows(history)
    return path


def write_crashed(path: Path, overrides: list[str]) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(resolved_config(overrides)))
    return path


# test rmse, val rmse, fit seconds, epochs per seed 0, 1, 2
GRID = {
    32: ([0.90, 0.92, 0.97], [0.91, 0.93, 0.95], [1.0, 2.0, 4.5], [10, 12, 12]),
    64: ([0.88, 0.89, 0.93], [0.90, 0.90, 0.90], [3.0, 3.0, 3.0], [12, 12, 12]),
}


@pytest.fixture
def grid(tmp_path) -> Path:
    """A 2-model x 3-seed multirun (jobs 0..5, val/rmse histories) and a crashed job 6."""
    root = tmp_path / "multirun" / "2026-12-02" / "10-11-12-123456_x"
    job = 0
    for dim, (test, val, seconds, epochs) in GRID.items():
        for seed in range(3):
            history = [
                {
                    "epoch": e,
                    "train/loss": 2.0 - 0.1 * e,
                    "val/rmse": val[seed] + 0.1 * (epochs[seed] - 1 - e),
                }
                for e in range(epochs[seed])
            ]
            write_run(
                root / str(job),
                [f"model.dim={dim}", f"seed={seed}", "trainer.max_epochs=12"],
                {"rmse": val[seed], "mae": 0.7},
                {"rmse": test[seed], "mae": 0.7},
                epochs=epochs[seed],
                fit_seconds=seconds[seed],
                history=history,
            )
            job += 1
    write_crashed(root / "6", ["model.dim=128", "seed=0", "trainer.max_epochs=12"])
    return root


def test_grid_gives_one_row_per_model_with_hand_computed_mean_and_sample_sd(grid):
    runs = collect([grid])
    result = table(runs)
    assert [row.key for row in result.rows] == [{"model.dim": "32"}, {"model.dim": "64"}]
    assert result.columns == ["model.dim"] and result.over == {"seed": ["0", "1", "2"]}
    assert result.common == {"trainer.max_epochs": "12"}
    assert result.metrics == [
        "val/rmse",
        "val/mae",
        "test/rmse",
        "test/mae",
        "fit_seconds",
        "epochs",
    ]
    small, large = result.rows
    assert small.n == large.n == 3
    # model.dim=32: test 0.90, 0.92, 0.97 -> mean 0.93, deviations -.03, -.01, .04
    # -> sd² = .0026 / 2
    assert small.stats["test/rmse"].mean == pytest.approx(0.93, rel=1e-12)
    assert small.stats["test/rmse"].sd == pytest.approx(math.sqrt(0.0013), rel=1e-12)
    assert small.stats["val/rmse"].mean == pytest.approx(0.93) and small.stats[
        "val/rmse"
    ].sd == pytest.approx(0.02)
    # fit seconds 1, 2, 4.5: mean 2.5, deviations -1.5, -.5, 2 -> sd² = 6.5 / 2; epochs 10, 12, 12
    assert (small.stats["fit_seconds"].mean, small.stats["fit_seconds"].sd) == pytest.approx(
        (2.5, math.sqrt(3.25))
    )
    assert (small.stats["epochs"].mean, small.stats["epochs"].sd) == pytest.approx(
        (34 / 3, math.sqrt(4 / 3))
    )
    # model.dim=64: test 0.88, 0.89, 0.93 -> mean 0.9, deviations -.02, -.01, .03 -> sd² = .0014 / 2
    assert large.stats["test/rmse"].mean == pytest.approx(0.9, rel=1e-12)
    assert large.stats["test/rmse"].sd == pytest.approx(math.sqrt(0.0007), rel=1e-12)
    assert large.stats["val/rmse"].sd == pytest.approx(0.0, abs=1e-15)
    assert [run.path.name for run in result.incomplete] == ["6"]


def test_markdown_says_how_the_numbers_were_obtained(grid):
    text = to_markdown(table(collect([grid])), [str(grid)])
    assert "6 runs in 2 rows (1 incomplete, listed below)" in text
    assert "common: trainer.max_epochs=12" in text
    assert "averaged over: seed (seed ∈ {0, 1, 2})" in text and "sample sd (ddof = 1)" in text
    assert (
        "metrics.json" in text
        and "chosen on validation (by val/rmse)" in text
        and "test part" in text
    )
    assert (
        "| model.dim | n | val/rmse | val/mae | test/rmse | test/mae | fit_seconds | epochs |"
        in text
    )
    assert "| 32 | 3 | 0.9300 ± 0.0200 | 0.7000 ± 0.0000 | 0.9300 ± 0.0361 |" in text
    assert (
        "**incomplete**: 1 run not in the table" in text
        and f"- {grid / '6'}: no metrics.json" in text
    )


def test_a_single_run_is_its_value_without_sd(tmp_path):
    write_run(tmp_path / "run", ["model.dim=8"], {"rmse": 1.25}, {"rmse": 1.5})
    result = table(collect([tmp_path / "run"]))  # the directory is itself a run
    (row,) = result.rows
    assert (
        row.n == 1 and row.stats["test/rmse"].mean == 1.5 and math.isnan(row.stats["test/rmse"].sd)
    )
    assert "| all | 1 | 1.2500 | 1.5000 | 1 | 12 |" in to_markdown(result)


def test_runs_differing_in_a_non_repetition_key_are_not_merged(tmp_path):
    root = tmp_path / "multirun"
    write_run(
        root / "0",
        ["model.dim=32", "model.reg=0.1", "seed=0", "optim.lr=1e-2"],
        {"rmse": 1.0},
        {"rmse": 1.0},
    )
    edit_config(root / "0", "optim.lr", 0.01)  # resolved: the number
    write_run(root / "1", ["model.dim=32", "model.reg=0.1", "seed=1"], {"rmse": 1.2}, {"rmse": 1.2})
    write_run(
        root / "2", ["model.dim=32", "model.reg=0.01", "seed=2"], {"rmse": 5.0}, {"rmse": 5.0}
    )
    # no optim.lr override, but the config's lr is 0.01: the same as the override 1e-2 of job 0 ...
    write_run(root / "3", ["model.dim=32", "model.reg=0.1", "seed=3"], {"rmse": 1.4}, {"rmse": 1.4})
    # ... while job 4's 0.1 differs from everyone's 0.01
    write_run(
        root / "4",
        ["model.dim=32", "model.reg=0.1", "seed=4", "optim.lr=0.1"],
        {"rmse": 9.0},
        {"rmse": 9.0},
    )
    result = table(collect([root]))
    assert result.columns == ["model.reg", "optim.lr"]
    assert [tuple(row.key.values()) for row in result.rows] == [
        ("0.01", "0.01"),
        ("0.1", "0.01"),
        ("0.1", "0.1"),
    ]
    by_key = {tuple(row.key.values()): row for row in result.rows}
    assert set(by_key) == {("0.1", "0.01"), ("0.01", "0.01"), ("0.1", "0.1")}
    merged = by_key[("0.1", "0.01")]
    assert [run.path.name for run in merged.runs] == ["0", "1", "3"]
    assert merged.stats["test/rmse"].mean == pytest.approx(1.2) and merged.stats[
        "test/rmse"
    ].sd == pytest.approx(0.2)
    assert by_key[("0.01", "0.01")].n == 1 and by_key[("0.1", "0.1")].n == 1
    assert result.common == {"model.dim": "32"}


def edit_config(run: Path, key: str, value) -> None:
    config = yaml.safe_load((run / "config.yaml").read_text())
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    (run / "config.yaml").write_text(yaml.safe_dump(config))


def test_runs_whose_configs_differ_outside_the_overrides_are_not_merged(tmp_path):
    root = tmp_path / "m"
    for seed, rmse in enumerate([1.0, 1.2, 2.0, 2.4]):
        run = write_run(root / str(seed), [f"seed={seed}"], {"rmse": rmse}, {"rmse": rmse})
        # `${seed}` resolved: follows the repetition key, no difference
        edit_config(run, "data.split.seed", seed)
    edit_config(root / "2", "model.reg", 0.05)  # the default changed between launches
    edit_config(root / "3", "model.reg", 0.05)
    result = table(collect([root]))
    assert result.from_config == ["model.reg"] and result.columns == ["model.reg"]
    assert [(row.key["model.reg"], row.n, row.stats["test/rmse"].mean) for row in result.rows] == [
        ("0.01", 2, pytest.approx(1.1)),
        ("0.05", 2, pytest.approx(2.2)),
    ]
    assert (
        "differ in config.yaml though no override sets them (rows kept apart): model.reg"
        in to_markdown(result)
    )


def test_overrides_and_group_choices_from_the_hydra_directory(tmp_path):
    """A metrics.json without "overrides" (an older writer): .hydra/overrides.yaml has them, and
    .hydra/hydra.yaml the config-group choice of a run that did not override the group."""
    root = tmp_path / "m"
    for job, (group, rmse) in enumerate([("svd", 1.0), ("svd", 1.2), (None, 3.0)]):
        overrides = [f"seed={job}"] + ([f"model={group}"] if group else [])
        run = write_run(root / str(job), overrides, {"rmse": rmse}, {"rmse": rmse})
        metrics = json.loads((run / "metrics.json").read_text())
        del metrics["overrides"]
        (run / "metrics.json").write_text(json.dumps(metrics))
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (run / ".hydra" / "hydra.yaml").write_text(
            yaml.safe_dump(
                {"hydra": {"runtime": {"choices": {"model": group or "mf", "data": "ml100k"}}}}
            )
        )
    result = table(collect([root]))
    assert [(row.key, row.n) for row in result.rows] == [
        ({"model": "mf"}, 1),
        ({"model": "svd"}, 2),
    ]
    assert result.over == {"seed": ["0", "1", "2"]}


def test_over_nothing_keeps_seeds_apart(grid):
    result = table(collect([grid]), over=[])
    assert len(result.rows) == 6 and all(row.n == 1 for row in result.rows)
    assert result.columns == ["model.dim", "seed"]


def test_repeated_runs_are_counted_and_warned(grid, tmp_path):
    again = tmp_path / "multirun" / "2026-12-03" / "09-00-00" / "nested"
    write_run(
        again / "0",
        ["model.dim=32", "seed=0", "trainer.max_epochs=12"],
        {"rmse": 0.99, "mae": 0.7},
        {"rmse": 0.99, "mae": 0.7},
    )
    result = table(collect([tmp_path / "multirun", grid]))  # grid twice: its runs count once
    small = result.rows[0]
    assert small.n == 4 and small.stats["test/rmse"].mean == pytest.approx(
        (0.90 + 0.92 + 0.97 + 0.99) / 4
    )
    (pair,) = result.repeats
    assert sorted(run.path for run in pair) == sorted([grid / "0", again / "0"])
    text = to_markdown(result)
    assert (
        "**warning**: 2 runs with identical overrides (model.dim=32, seed=0, trainer.max_epochs=12)"
        in text
    )
    assert "all 2 are counted" in text


def test_runs_are_found_in_natural_order(tmp_path):
    for job in (10, 2, 1):
        write_run(tmp_path / "m" / str(job), [f"seed={job}"], {"rmse": 1.0}, {"rmse": 1.0})
    assert [run.path.name for run in collect([tmp_path / "m"])] == ["1", "2", "10"]


def test_metrics_option_and_sort_direction(grid, capsys):
    compare.main([str(grid), "--metrics", "test/rmse,val/rmse", "--sort", "test/rmse"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert lines[0] == "| model.dim | n | test/rmse | val/rmse |"
    assert [line.split(" | ")[0] for line in lines[1:]] == ["| 64", "| 32"]  # rmse: smallest first
    result = table(collect([grid]))
    assert [
        row.key["model.dim"] for row in sort_rows(result, "test/rmse", descending=True).rows
    ] == ["32", "64"]
    assert compare.lower_is_better("val/mae") and compare.lower_is_better("train/loss")
    assert not compare.lower_is_better("test/ndcg@10") and not compare.lower_is_better(
        "val/recall@20"
    )


def test_ranking_metrics_sort_descending(tmp_path):
    for job, (dim, ndcg) in enumerate([(8, 0.10), (16, 0.30), (32, 0.20)]):
        write_run(
            tmp_path / "m" / str(job),
            [f"model.dim={dim}"],
            {"ndcg@10": ndcg},
            {"ndcg@10": ndcg, "recall@20": 0.5, "step": 2.0},
        )  # a counter, not a default metric
    result = sort_rows(table(collect([tmp_path / "m"])), "test/ndcg@10")
    assert [row.key["model.dim"] for row in result.rows] == ["16", "32", "8"]
    assert result.metrics == [
        "val/ndcg@10",
        "test/ndcg@10",
        "test/recall@20",
        "fit_seconds",
        "epochs",
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{tmp}/nope"], "nope: no such directory"),
        (["{tmp}/empty"], "empty: no run directory in it"),
        (["{tmp}/crashed"], "none of the 1 runs is complete"),
        (["{tmp}/ok", "--metrics", "test/auc"], "no run has metric 'test/auc'"),
        (["{tmp}/ok", "--epochs", "val/auc"], "no history.csv has a column 'val/auc'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    write_crashed(tmp_path / "crashed" / "0", ["seed=0"])
    write_run(
        tmp_path / "ok",
        ["seed=0"],
        {"rmse": 1.0},
        {"rmse": 1.0},
        history=[{"epoch": 0, "val/rmse": 1.0}],
    )
    with pytest.raises(SystemExit) as exit_:
        compare.main([a.format(tmp=tmp_path) for a in argv])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert (
        out == "" and err.startswith("mfzoo-compare: ") and message in err and err.count("\n") == 1
    )
    assert "Traceback" not in err


def test_csv_round_trips_the_numbers(grid, tmp_path):
    result = table(collect([grid]))
    to_csv(result, tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="") as f:
        records = list(csv.DictReader(f))
    assert list(records[0])[:5] == ["model.dim", "n", "val/rmse_mean", "val/rmse_sd", "val/rmse_n"]
    for row, record in zip(result.rows, records, strict=True):
        assert record["model.dim"] == row.key["model.dim"] and int(record["n"]) == row.n
        for metric in result.metrics:
            # exact: written at full precision
            assert float(record[f"{metric}_mean"]) == row.stats[metric].mean
            assert float(record[f"{metric}_sd"]) == row.stats[metric].sd
            assert int(record[f"{metric}_n"]) == row.stats[metric].n


def test_csv_leaves_sd_empty_for_one_run(tmp_path):
    write_run(tmp_path / "run", [], {"rmse": 1.0}, {"rmse": 1.0})
    to_csv(table(collect([tmp_path / "run"])), tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="") as f:
        (record,) = csv.DictReader(f)
    assert record["test/rmse_mean"] == "1.0" and record["test/rmse_sd"] == "" and record["n"] == "1"


def test_epoch_curve_averages_the_histories_by_hand(tmp_path):
    root = tmp_path / "m"
    write_run(
        root / "0",
        ["seed=0"],
        {"rmse": 0.8},
        {"rmse": 0.8},
        history=[
            {"epoch": 0, "val/rmse": 1.0},
            {"epoch": 1, "val/rmse": 0.9},
            {"epoch": 2, "val/rmse": 0.8},
        ],
    )
    write_run(
        root / "1",
        ["seed=1"],
        {"rmse": 1.1},
        {"rmse": 1.1},  # stopped after epoch 1
        history=[{"epoch": 0, "val/rmse": 1.2}, {"epoch": 1, "val/rmse": 1.1}],
    )
    # job 2: train and val of an epoch in two rows, val not logged at epoch 1
    write_run(
        root / "2",
        ["seed=2"],
        {"rmse": 0.9},
        {"rmse": 0.9},
        history=[
            {"epoch": 0, "train/loss": 3.0},
            {"epoch": 0, "val/rmse": 1.1},
            {"epoch": 1, "train/loss": 2.0},
            {"epoch": 2, "train/loss": 1.0, "val/rmse": 0.9},
        ],
    )
    (row,) = table(collect([root])).rows
    curve = epoch_curve(row, "val/rmse")
    assert curve.epochs.tolist() == [0, 1, 2] and curve.n.tolist() == [3, 2, 2]
    # epoch 0: 1.0, 1.2, 1.1; epoch 1: 0.9, 1.1; epoch 2: 0.8, 0.9
    assert curve.mean == pytest.approx([1.1, 1.0, 0.85])
    assert curve.sd == pytest.approx([0.1, math.sqrt(0.02), math.sqrt(0.005)])
    loss = epoch_curve(row, "train/loss")
    assert loss.epochs.tolist() == [0, 1, 2] and loss.n.tolist() == [1, 1, 1]
    assert loss.mean == pytest.approx([3.0, 2.0, 1.0])
    assert math.isnan(loss.sd[0])


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 10_000  # a drawn figure, not an empty canvas
    width, height = (
        int.from_bytes(data[16:20], "big"),
        int.from_bytes(data[20:24], "big"),
    )  # the IHDR chunk
    assert width >= 500 and height >= 400


def test_plots_are_png_files(grid, tmp_path):
    result = table(collect([grid]))
    plot_runs(result, "test/rmse", tmp_path / "runs.png")
    plot_epochs(result, "val/rmse", tmp_path / "epochs.png")
    assert_png(tmp_path / "runs.png")
    assert_png(tmp_path / "epochs.png")
    with pytest.raises(CompareError, match="columns: train/loss, val/rmse"):
        plot_epochs(result, "val/mae", tmp_path / "nothing.png")


def test_main_writes_csv_md_and_plots(grid, tmp_path, capsys):
    prefix = tmp_path / "results" / "cmp"
    compare.main([str(grid), "--out", str(prefix), "--plot", "test/rmse", "--epochs", "val/rmse"])
    out = capsys.readouterr().out
    assert (tmp_path / "results" / "cmp.md").read_text() == out
    with open(tmp_path / "results" / "cmp.csv", newline="") as f:
        assert [r["model.dim"] for r in csv.DictReader(f)] == ["32", "64"]
    assert_png(tmp_path / "results" / "cmp.png")
    assert_png(tmp_path / "results" / "cmp_epochs.png")


def test_console_script_runs_on_a_multirun(grid, tmp_path):
    bin_dirs = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    script = shutil.which("mfzoo-compare", path=bin_dirs)
    assert script, "the mfzoo-compare console script is not installed (pip install -e .)"
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [script, str(grid.parent.parent.parent), "--sort", "test/rmse", "--plot", "test/rmse"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "| 64 | 3 | 0.9000 ± 0.0000 | 0.7000 ± 0.0000 | 0.9000 ± 0.0265 |" in done.stdout
    assert_png(work / "compare.png")  # no --out: compare.png in the working directory
    missing = subprocess.run(
        [script, str(tmp_path / "nope")], cwd=work, capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 2 and missing.stderr.startswith("mfzoo-compare: ")
    assert "Traceback" not in missing.stderr
