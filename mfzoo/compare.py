"""`mfzoo-compare DIR...`: the runs of one or more multiruns (CV folds, seeds, grids) in one
table and plots.

A run directory (written by `mfzoo-train`) holds `config.yaml`, `metrics.json` and
`history.csv`; a multirun holds run directories as numbered, possibly nested, subdirectories.
Runs are grouped by their overrides: the keys named by `over` (default `seed`,
`data.split.fold`) are repetitions, and the runs that agree on every other key form one row,
reported for each metric x_1..x_n as

    mean = (1/n) Σ_i x_i,    sd = sqrt( Σ_i (x_i - mean)² / (n - 1) )    (sample sd, n >= 2)

The numbers are those of each run's metrics.json: `val/<m>` on the validation part at the
checkpoint chosen on validation, `test/<m>` that same checkpoint on the test part.

API: `collect(paths)` -> runs, `table(runs, metrics, over)` -> `Table` of `Row`s,
`sort_rows`, `to_markdown`, `to_csv`, `epoch_curve`, `plot_runs`, `plot_epochs`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import yaml

log = logging.getLogger(__name__)

DEFAULT_OVER = ("seed", "data.split.fold")
MISSING = "—"  # the value of a key that a run neither overrides nor has in its config
COUNTERS = ("step", "epoch")  # logged beside val/test metrics by Lightning, not metrics
# metric names whose smaller values are better: sorted ascending unless told otherwise
LOWER_IS_BETTER = re.compile(r"rmse|mae|mse|loss|err|nll|seconds|time", re.IGNORECASE)


class CompareError(Exception):
    """A problem with the command's input (no such directory, no run, unknown metric)."""


# ---------------------------------------------------------------- runs


def _canonical(value: object) -> str:
    """A value as one string, the same for an override (`optim.lr=1e-3`) and the resolved
    config (`0.001`), so the two compare equal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    text = str(value).strip().strip("'\"")
    if text.lower() in ("true", "false", "null"):
        return text.lower()
    for number in (int, float):
        try:
            return str(number(text))
        except ValueError:
            pass
    return text


def parse_override(text: str) -> tuple[str, str]:
    """`model.dim=64` -> ("model.dim", "64"); `+key=v` and `++key=v` name `key`."""
    key, _, value = text.partition("=")
    return key.strip().lstrip("+"), _canonical(value)


@dataclass
class Run:
    """One run directory: its overrides, flat metrics and resolved config."""

    path: Path
    overrides: list[str]  # as given to mfzoo-train, e.g. ["model.dim=64", "seed=1"]
    metrics: dict[str, float]  # "val/rmse", "test/ndcg@10", "fit_seconds", "epochs", ...
    config: dict = field(default_factory=dict, repr=False)  # config.yaml ({} when absent)
    choices: dict = field(default_factory=dict, repr=False)  # config-group choices (.hydra/hydra.yaml)
    problem: str | None = None  # why the run is incomplete; None when it is complete
    selected_on: str | None = None  # the validation metric that chose the checkpoint, when known

    @property
    def complete(self) -> bool:
        return self.problem is None

    def value(self, key: str) -> str:
        """The run's value of an override key: its own override (the last one wins), else
        the config-group choice, else the resolved config at that dotted path, else MISSING."""
        assigned = dict(parse_override(o) for o in self.overrides)
        if key in assigned:
            return assigned[key]
        if key in self.choices:
            return _canonical(self.choices[key])
        node: object = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return MISSING
            node = node[part]
        return MISSING if isinstance(node, dict) else _canonical(node)


def _load_yaml(path: Path, default):
    if not path.is_file():
        return default
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        log.warning("%s: unreadable (%s)", path, err)
        return default
    return loaded if isinstance(loaded, type(default)) else default


def flatten_metrics(raw: dict) -> dict[str, float]:
    """metrics.json as flat numbers: {"val": {"rmse": x}} -> {"val/rmse": x}; top-level
    numbers (fit_seconds, epochs, ...) keep their names. Strings, booleans and `seed` are not
    metrics."""
    def number(x: object) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    out: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out.update({f"{key}/{name}": float(x) for name, x in value.items() if number(x)})
        elif number(value) and key != "seed":
            out[key] = float(value)
    return out


def _checkpoint_monitor(config: dict) -> str | None:
    for callback in (config.get("callbacks") or {}).values():
        if isinstance(callback, dict) and "ModelCheckpoint" in str(callback.get("_target_", "")):
            return callback.get("monitor")
    return None


def read_run(path: Path) -> Run:
    """The run in directory `path`; incomplete (with `problem` set) when its metrics.json is
    missing or unreadable. Overrides come from metrics.json, else overrides.yaml, else
    .hydra/overrides.yaml."""
    config = _load_yaml(path / "config.yaml", {}) or _load_yaml(path / ".hydra" / "config.yaml", {})
    hydra = _load_yaml(path / ".hydra" / "hydra.yaml", {}).get("hydra") or {}
    raw: dict = {}
    problem = None
    try:
        raw = json.loads((path / "metrics.json").read_text())
        if not isinstance(raw, dict):
            problem, raw = "metrics.json is not a JSON object", {}
    except FileNotFoundError:
        problem = "no metrics.json (crashed or still running)"
    except (OSError, ValueError) as err:
        problem = f"metrics.json unreadable ({err})"
    overrides = raw.get("overrides")
    if not isinstance(overrides, list):
        overrides = _load_yaml(path / "overrides.yaml", []) or _load_yaml(path / ".hydra" / "overrides.yaml", [])
    overrides = [str(o) for o in overrides if not str(o).lstrip("+").startswith("hydra.")]
    selected = _checkpoint_monitor(config) or raw.get("optimized_metric")
    return Run(path, overrides, flatten_metrics(raw), config, (hydra.get("runtime") or {}).get("choices") or {},
               problem, selected)


def _natural(text: str) -> list:
    """Sort key: "fold=10" after "fold=2"."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def _order(value: str) -> tuple:
    """Sort key of a key's value: numbers by value (0.01 before 0.1), then the rest naturally."""
    try:
        return (0, float(value), [])
    except ValueError:
        return (1, 0.0, _natural(value))


def _is_run(path: Path) -> bool:
    return any((path / name).is_file() for name in ("config.yaml", "metrics.json", ".hydra/config.yaml"))


def _run_dirs(path: Path, visited: set[Path]) -> list[Path]:
    if path.resolve() in visited:
        return []
    visited.add(path.resolve())
    if _is_run(path):
        return [path]
    children = [c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")]
    children.sort(key=lambda c: _natural(c.name))
    return [run for child in children for run in _run_dirs(child, visited)]


def collect(paths: Iterable[str | Path]) -> list[Run]:
    """Every run directory under `paths` (searched recursively; a path may itself be a run),
    complete or not, in natural order, each directory once.

    Raises CompareError when a path does not exist or holds no run.
    """
    runs: list[Run] = []
    visited: set[Path] = set()
    for path in map(Path, paths):
        if not path.is_dir():
            raise CompareError(f"{path}: {'not a directory' if path.exists() else 'no such directory'}")
        found = _run_dirs(path, visited)
        inside = [run for run in runs if path.resolve() in (run.path.resolve(), *run.path.resolve().parents)]
        if not found and not inside:  # (runs found already, through another path, do count)
            raise CompareError(f"{path}: no run directory in it (none has config.yaml or metrics.json)")
        runs.extend(read_run(d) for d in found)
    return runs


# ---------------------------------------------------------------- table


@dataclass
class Stat:
    """mean and sample sd (ddof=1; nan when n < 2) of the n runs that have the metric."""

    mean: float
    sd: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        x = np.asarray(values, dtype=float)
        if not len(x):
            return cls(math.nan, math.nan, 0)
        mean = float(x[0] + math.fsum(x - x[0]) / len(x))  # shifted: equal values give their value exactly
        sd = math.sqrt(math.fsum((x - mean) ** 2) / (len(x) - 1)) if len(x) > 1 else math.nan
        return cls(mean, sd, len(x))


@dataclass
class Row:
    """The runs that agree on every varying key but the repetitions."""

    key: dict[str, str]  # the varying keys (not repetitions) and this row's values
    runs: list[Run]
    stats: dict[str, Stat]

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.key.items()) or "all runs"

    def stat(self, metric: str) -> Stat:
        """The metric over the row's runs that report it."""
        if metric not in self.stats:
            self.stats[metric] = Stat.of([r.metrics[metric] for r in self.runs if metric in r.metrics])
        return self.stats[metric]


@dataclass
class Table:
    """Rows of grouped runs, with what the grouping found."""

    rows: list[Row]
    columns: list[str]  # the keys that vary between rows
    metrics: list[str]
    over: dict[str, list[str]]  # the repetition keys that vary, with the values found
    common: dict[str, str]  # the keys with one value across all complete runs
    incomplete: list[Run]
    repeats: list[list[Run]]  # runs of one row with identical overrides (all counted)
    from_config: list[str] = field(default_factory=list)  # columns that differ in config.yaml, not in overrides

    @property
    def runs(self) -> list[Run]:
        return [run for row in self.rows for run in row.runs]


def default_metrics(runs: Sequence[Run]) -> list[str]:
    """Every val/<m> then every test/<m> found (in first-seen order; not the counters `step`,
    `epoch`), fit_seconds, epochs."""
    found = [m for m in dict.fromkeys(m for run in runs for m in run.metrics) if m.rsplit("/", 1)[-1] not in COUNTERS]
    named = [m for m in found if m.startswith("val/")] + [m for m in found if m.startswith("test/")]
    return named + [m for m in ("fit_seconds", "epochs") if m in found]


def _check_metric(runs: Sequence[Run], metric: str) -> None:
    if not any(metric in run.metrics for run in runs):
        known = sorted({m for run in runs for m in run.metrics})
        raise CompareError(f"no run has metric {metric!r} (known: {', '.join(known)})")


def _leaves(node: object, prefix: str = "") -> dict[str, str]:
    """A nested config as {dotted key: canonical value}."""
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in _leaves(child, f"{prefix}{key}.").items()}
    return {prefix[:-1]: _canonical(node)}


def _config_differences(runs: Sequence[Run], columns: Sequence[str], over: Sequence[str]) -> list[str]:
    """The config.yaml keys on which runs that agree on `columns` still differ (a default
    changed between two multiruns, say). A key that is, or in every run of the group equals, a
    repetition key (`data.split.seed: ${seed}`) is no difference."""
    groups: dict[tuple, list[tuple[Run, dict[str, str]]]] = {}
    for run in runs:
        if run.config:  # a run without config.yaml cannot show a difference
            groups.setdefault(tuple(run.value(k) for k in columns), []).append((run, _leaves(run.config)))
    found: list[str] = []
    for group in groups.values():
        for key in dict.fromkeys(k for _, leaves in group for k in leaves):
            values = [leaves.get(key, MISSING) for _, leaves in group]
            derived = any(all(v == run.value(o) for v, (run, _) in zip(values, group)) for o in over)
            if key not in found and key not in over and len(set(values)) > 1 and not derived:
                found.append(key)
    return found


def table(runs: Sequence[Run], metrics: Sequence[str] | None = None, over: Sequence[str] = DEFAULT_OVER) -> Table:
    """Group the complete runs: one row per combination of the varying keys not in `over`,
    with `Stat` (mean, sample sd, n) of each metric; `metrics` default `default_metrics`.

    A key is any override key of any run, plus the `over` keys; a run's value of it comes from
    `Run.value`. Runs that agree on these but differ in their config.yaml elsewhere are kept
    apart too, by the config keys that differ (`Table.from_config`). Incomplete runs go to
    `Table.incomplete`. Raises CompareError when no run is complete or a metric is in no run.
    """
    complete = [run for run in runs if run.complete]
    incomplete = [run for run in runs if not run.complete]
    if not complete:
        example = f", e.g. {runs[0].path}" if runs else ""
        raise CompareError(f"none of the {len(runs)} runs is complete (no metrics.json){example}")
    keys = list(dict.fromkeys([parse_override(o)[0] for run in complete for o in run.overrides] + list(over)))
    values = {k: [run.value(k) for run in complete] for k in keys}
    keys = [k for k in keys if any(v != MISSING for v in values[k])]
    varying = [k for k in keys if len(set(values[k])) > 1]
    columns = [k for k in varying if k not in over]
    from_config = _config_differences(complete, columns, over)
    columns += from_config
    metrics = list(metrics) if metrics else default_metrics(complete)
    for metric in metrics:
        _check_metric(complete, metric)

    groups: dict[tuple, list[Run]] = {}
    for run in complete:
        groups.setdefault(tuple(run.value(k) for k in columns), []).append(run)
    rows = [Row(dict(zip(columns, key)), group, {}) for key, group in groups.items()]
    rows.sort(key=lambda row: [_order(v) for v in row.key.values()])
    for row in rows:
        for metric in metrics:
            row.stat(metric)
    repeats = []
    for row in rows:
        same: dict[tuple, list[Run]] = {}
        for run in row.runs:
            same.setdefault(tuple(run.value(k) for k in keys + from_config), []).append(run)
        repeats += [group for group in same.values() if len(group) > 1]
    over_found = {k: sorted(set(values[k]), key=_order) for k in varying if k in over}
    common = {k: values[k][0] for k in keys if k not in varying}
    return Table(rows, columns, metrics, over_found, common, incomplete, repeats, from_config)


def lower_is_better(metric: str) -> bool:
    """rmse, mae, loss, error, seconds, ...: smaller is better."""
    return bool(LOWER_IS_BETTER.search(metric.rsplit("/", 1)[-1]))


def sort_rows(result: Table, metric: str, descending: bool | None = None) -> Table:
    """The table with rows ordered by the row mean of `metric` (rows without it last):
    ascending for rmse/mae/loss-like names, descending otherwise, unless `descending` says."""
    _check_metric(result.runs, metric)
    if descending is None:
        descending = not lower_is_better(metric)
    sign = -1.0 if descending else 1.0
    def key(row: Row) -> tuple:
        mean = row.stat(metric).mean
        return (math.isnan(mean), sign * mean if not math.isnan(mean) else 0.0)
    return replace(result, rows=sorted(result.rows, key=key))


# ---------------------------------------------------------------- output


def _formatter(values: Iterable[float]):
    finite = [x for x in values if math.isfinite(x)]
    if all(x == int(x) for x in finite):
        return lambda x: str(int(x)) if math.isfinite(x) else str(x)
    largest = max((abs(x) for x in finite), default=0.0)
    digits = 4 if largest < 10 else 2 if largest < 1000 else 0
    return lambda x: f"{x:.{digits}f}"


def _cell(stat: Stat, n: int, fmt) -> str:
    if stat.n == 0:
        return MISSING
    text = fmt(stat.mean) if stat.n == 1 else f"{fmt(stat.mean)} ± {fmt(stat.sd)}"
    return text if stat.n == n else f"{text} ({stat.n} of {n})"


def _paths(runs: Iterable[Run]) -> str:
    return ", ".join(str(run.path) for run in runs)


def to_markdown(result: Table, sources: Sequence[str] = ()) -> str:
    """The table as Markdown, headed by how its numbers were obtained, followed by warnings
    about repeated runs and the list of incomplete runs."""
    rows, n_runs = result.rows, len(result.runs)
    pending = f" ({len(result.incomplete)} incomplete, listed below)" if result.incomplete else ""
    lines = [f"## mfzoo-compare: {n_runs} runs in {len(rows)} rows{pending}", ""]
    if sources:
        lines.append(f"- sources: {', '.join(sources)}")
    if result.common:
        lines.append("- common: " + ", ".join(f"{k}={v}" for k, v in result.common.items()))
    if result.over:
        found = "; ".join(f"{k} ∈ {{{', '.join(v)}}}" for k, v in result.over.items())
        lines.append(f"- averaged over: {', '.join(result.over)} ({found}); each cell is mean ± sample sd "
                     "(ddof = 1) over the row's n runs, the value alone when n = 1")
    else:
        lines.append("- averaged over: nothing (no repetition key varies); "
                     "a row of n > 1 holds repeated runs, mean ± sample sd")
    if result.from_config:
        lines.append("- differ in config.yaml though no override sets them (rows kept apart): "
                     + ", ".join(result.from_config))
    selected = sorted({run.selected_on for run in result.runs if run.selected_on})
    on = f" (by {', '.join(selected)})" if selected else ""
    lines.append(f"- numbers: each run's metrics.json; val/<m> = the metric on the validation part at the checkpoint "
                 f"chosen on validation{on}, test/<m> = that same checkpoint on the test part; "
                 "fit_seconds = wall-clock seconds of fitting, epochs = epochs trained; "
                 "\"(k of n)\": only k runs report the metric")
    lines.append("")
    formats = {m: _formatter([v for row in rows for v in (row.stat(m).mean, row.stat(m).sd)]) for m in result.metrics}
    header = (result.columns or ["runs"]) + ["n", *result.metrics]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(result.columns or [0]) + ["---:"] * (1 + len(result.metrics))) + "|")
    for row in rows:
        cells = [*row.key.values()] or ["all"]
        cells += [str(row.n)] + [_cell(row.stat(m), row.n, formats[m]) for m in result.metrics]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    for group in result.repeats:
        same = ", ".join(group[0].overrides) or "no overrides"
        lines += ["", f"**warning**: {len(group)} runs with identical overrides ({same}), a repeated run; "
                      f"all {len(group)} are counted: {_paths(group)}"]
    if result.incomplete:
        count = len(result.incomplete)
        lines += ["", f"**incomplete**: {count} run{'s' * (count > 1)} not in the table:"]
        lines += [f"- {run.path}: {run.problem}" for run in result.incomplete]
    return "\n".join(lines) + "\n"


def to_csv(result: Table, path: str | Path) -> None:
    """One line per row: the varying keys, n, then `<metric>_mean`, `<metric>_sd` (empty when
    fewer than 2 runs) and `<metric>_n` for each metric, at full precision."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*result.columns, "n", *(f"{m}_{s}" for m in result.metrics for s in ("mean", "sd", "n"))])
        for row in result.rows:
            cells: list[object] = [*row.key.values(), row.n]
            for m in result.metrics:
                stat = row.stat(m)
                cells += [*("" if math.isnan(x) else repr(x) for x in (stat.mean, stat.sd)), stat.n]
            writer.writerow(cells)


# ---------------------------------------------------------------- plots


def read_history(run_dir: str | Path) -> dict[str, dict[int, float]]:
    """history.csv as {column: {epoch: value}}, empty cells left out (a later row of the same
    epoch wins); {} when the run has none."""
    path = Path(run_dir) / "history.csv"
    out: dict[str, dict[int, float]] = {}
    if not path.is_file():
        return out
    with open(path, newline="") as f:
        for record in csv.DictReader(f):
            try:
                epoch = int(float(record.get("epoch") or "nan"))
            except ValueError:
                continue
            for column, cell in record.items():
                if column in (None, "epoch") or cell in (None, ""):
                    continue
                try:
                    out.setdefault(column, {})[epoch] = float(cell)
                except ValueError:
                    continue
    return out


@dataclass
class EpochCurve:
    """A row's per-epoch mean and sample sd of one history column, over the n runs (of the
    row) that logged it at that epoch: n falls where runs stopped early."""

    epochs: np.ndarray  # [E]
    mean: np.ndarray  # [E]
    sd: np.ndarray  # [E], nan where n < 2
    n: np.ndarray  # [E]


def epoch_curve(row: Row, metric: str) -> EpochCurve:
    """The per-epoch `metric` of the row's runs (from history.csv), averaged over runs."""
    histories = [read_history(run.path).get(metric, {}) for run in row.runs]
    epochs = sorted(set().union(*histories))
    stats = [Stat.of([h[e] for h in histories if e in h]) for e in epochs]
    return EpochCurve(np.array(epochs, dtype=int), np.array([s.mean for s in stats]),
                      np.array([s.sd for s in stats]), np.array([s.n for s in stats], dtype=int))


def _figure(width: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, 4.2))
    FigureCanvasAgg(figure)  # draw with Agg: no display, no pyplot state
    return figure


def plot_runs(result: Table, metric: str, path: str | Path) -> None:
    """A PNG of `metric` per row: one grey point per run, the row mean ± sample sd beside."""
    _check_metric(result.runs, metric)
    figure = _figure(max(5.0, 1.1 * len(result.rows) + 2.5))
    ax = figure.subplots()
    for i, row in enumerate(result.rows):
        values = [run.metrics[metric] for run in row.runs if metric in run.metrics]
        spread = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(len(values))
        ax.scatter(i - 0.1 + spread, values, s=16, color="0.55", zorder=2, label=None if i else "one run")
        stat = row.stat(metric)
        ax.errorbar(i + 0.18, stat.mean, yerr=None if stat.n < 2 else stat.sd, fmt="o", color="C0", capsize=4,
                    zorder=3, label=None if i else "row mean ± sd")
    slanted = len(result.rows) > 3
    ax.set_xticks(range(len(result.rows)), [row.label for row in result.rows],
                  rotation=25 if slanted else 0, ha="right" if slanted else "center", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: {len(result.runs)} runs", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_epochs(result: Table, metric: str, path: str | Path) -> None:
    """A PNG of the per-epoch `metric` (history.csv): one line per row, the mean over its runs
    with a ± sd band; solid where all the row's runs contribute, dotted where some stopped."""
    from matplotlib.ticker import MaxNLocator

    curves = [(row, epoch_curve(row, metric)) for row in result.rows]
    if not any(len(curve.epochs) for _, curve in curves):
        columns = sorted({c for run in result.runs for c in read_history(run.path)})
        raise CompareError(f"no history.csv has a column {metric!r} (columns: {', '.join(columns) or 'none'})")
    figure = _figure(7.0)
    ax = figure.subplots()
    for i, (row, curve) in enumerate(curves):
        if not len(curve.epochs):
            log.warning("%s: no run logged %s", row.label, metric)
            continue
        color = f"C{i % 10}"
        ax.plot(curve.epochs, curve.mean, ":", color=color)
        all_runs = np.where(curve.n == row.n, curve.mean, np.nan)  # [E], nan breaks the solid line
        ax.plot(curve.epochs, all_runs, "-", color=color, label=f"{row.label} (n={row.n})")
        ax.fill_between(curve.epochs, curve.mean - curve.sd, curve.mean + curve.sd, where=curve.n > 1,
                        color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    over = ", ".join(result.over) or "repeated runs"
    partial = any((curve.n < row.n).any() for row, curve in curves)
    ax.set_title(f"{metric} per epoch: mean ± sample sd over {over}" + (" (dotted: not all runs)" if partial else ""),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


# ---------------------------------------------------------------- command


def _names(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    """`mfzoo-compare DIR... [--metrics M,M] [--over K,K] [--sort M [--asc|--desc]] [--out PREFIX]
    [--plot M] [--epochs M]`: the Markdown table on stdout."""
    parser = argparse.ArgumentParser(
        prog="mfzoo-compare", description="The runs under one or more (multi)run directories in one table and plots: "
        "runs that differ only in the repetition keys (--over) form one row of mean ± sample sd.")
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="a run or multirun directory, searched recursively")
    parser.add_argument("--metrics", help="comma-separated, e.g. test/rmse,val/rmse (default: every val/ and test/ "
                        "metric, fit_seconds, epochs)")
    parser.add_argument("--over", default=",".join(DEFAULT_OVER), help="comma-separated override keys that are "
                        "repetitions, averaged over (default: %(default)s); '' for none")
    parser.add_argument("--sort", metavar="METRIC", help="order rows by this metric's mean")
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument("--desc", dest="descending", action="store_const", const=True, help="largest first")
    direction.add_argument("--asc", dest="descending", action="store_const", const=False, help="smallest first")
    parser.add_argument("--out", metavar="PREFIX", help="also write PREFIX.csv and PREFIX.md (and the plots' PREFIX)")
    parser.add_argument("--plot", metavar="METRIC",
                        help="PREFIX.png (compare.png without --out): each run, and each row's mean ± sd")
    parser.add_argument("--epochs", metavar="METRIC", help="PREFIX_epochs.png: the per-epoch curve from history.csv")
    args = parser.parse_args(argv)
    if args.descending is not None and not args.sort:
        parser.error("--asc/--desc go with --sort")
    logging.basicConfig(level=logging.WARNING, format="mfzoo-compare: %(message)s")
    prefix = Path(args.out) if args.out else Path("compare")
    written: list[Path] = []
    try:
        result = table(collect(args.dirs), _names(args.metrics), _names(args.over))
        if args.sort:
            result = sort_rows(result, args.sort, args.descending)
        text = to_markdown(result, args.dirs)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        if args.epochs:
            plot_epochs(result, args.epochs, prefix.with_name(prefix.name + "_epochs.png"))
            written.append(prefix.with_name(prefix.name + "_epochs.png"))
        if args.plot:
            plot_runs(result, args.plot, prefix.with_name(prefix.name + ".png"))
            written.append(prefix.with_name(prefix.name + ".png"))
        if args.out:
            to_csv(result, prefix.with_name(prefix.name + ".csv"))
            prefix.with_name(prefix.name + ".md").write_text(text)
            written += [prefix.with_name(prefix.name + ext) for ext in (".csv", ".md")]
    except (CompareError, OSError) as err:
        parser.exit(2, f"mfzoo-compare: {err}\n")
    sys.stdout.write(text)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
