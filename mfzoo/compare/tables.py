"""Grouping runs into a table for `mfzoo-compare`, and the table as Markdown and CSV.

Runs are grouped by their overrides: the keys named by `over` (default `seed`,
`data.split.fold`) are repetitions, and the runs that agree on every other key form one row,
reported for each metric x_1..x_n as

    mean = (1/n) Σ_i x_i,    sd = sqrt( Σ_i (x_i - mean)² / (n - 1) )    (sample sd, n >= 2)
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mfzoo.compare.runs import MISSING, CompareError, Run, _canonical, _natural, parse_override

DEFAULT_OVER = ("seed", "data.split.fold")
COUNTERS = ("step", "epoch")  # logged beside val/test metrics by Lightning, not metrics
# metric names whose smaller values are better: sorted ascending unless told otherwise
LOWER_IS_BETTER = re.compile(r"rmse|mae|mse|loss|err|nll|seconds|time", re.IGNORECASE)


def _order(value: str) -> tuple:
    """Sort key of a key's value: numbers by value (0.01 before 0.1), then the rest naturally."""
    try:
        return (0, float(value), [])
    except ValueError:
        return (1, 0.0, _natural(value))


@dataclass
class Stat:
    """mean and sample sd (ddof=1; nan when n < 2) of the n runs that have the metric."""

    mean: float
    sd: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """Mean, sample sd (n − 1; NaN for one value) and count of `values`."""
        x = np.asarray(values, dtype=float)
        if not len(x):
            return cls(math.nan, math.nan, 0)
        # shifted: equal values give their value exactly
        mean = float(x[0] + math.fsum(x - x[0]) / len(x))
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
        """How many runs the row holds."""
        return len(self.runs)

    @property
    def label(self) -> str:
        """The row's key as `name=value, ...` ("all runs" without one)."""
        return ", ".join(f"{k}={v}" for k, v in self.key.items()) or "all runs"

    def stat(self, metric: str) -> Stat:
        """The metric over the row's runs that report it."""
        if metric not in self.stats:
            self.stats[metric] = Stat.of(
                [r.metrics[metric] for r in self.runs if metric in r.metrics]
            )
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
    # columns that differ in config.yaml, not in overrides
    from_config: list[str] = field(default_factory=list)

    @property
    def runs(self) -> list[Run]:
        """Every run of every row, row by row."""
        return [run for row in self.rows for run in row.runs]


def default_metrics(runs: Sequence[Run]) -> list[str]:
    """Every `val/<m>` then every `test/<m>` found (in first-seen order; not the counters `step`,
    `epoch`), fit_seconds, epochs."""
    found = [
        m
        for m in dict.fromkeys(m for run in runs for m in run.metrics)
        if m.rsplit("/", 1)[-1] not in COUNTERS
    ]
    named = [m for m in found if m.startswith("val/")] + [m for m in found if m.startswith("test/")]
    return named + [m for m in ("fit_seconds", "epochs") if m in found]


def _check_metric(runs: Sequence[Run], metric: str) -> None:
    if not any(metric in run.metrics for run in runs):
        known = sorted({m for run in runs for m in run.metrics})
        raise CompareError(f"no run has metric {metric!r} (known: {', '.join(known)})")


def _leaves(node: object, prefix: str = "") -> dict[str, str]:
    """A nested config as {dotted key: canonical value}."""
    if isinstance(node, dict):
        return {
            k: v
            for key, child in node.items()
            for k, v in _leaves(child, f"{prefix}{key}.").items()
        }
    return {prefix[:-1]: _canonical(node)}


def _config_differences(
    runs: Sequence[Run], columns: Sequence[str], over: Sequence[str]
) -> list[str]:
    """The config.yaml keys on which runs that agree on `columns` still differ (a default
    changed between two multiruns, say). A key that is, or in every run of the group equals, a
    repetition key (`data.split.seed: ${seed}`) is no difference."""
    groups: dict[tuple, list[tuple[Run, dict[str, str]]]] = {}
    for run in runs:
        if run.config:  # a run without config.yaml cannot show a difference
            groups.setdefault(tuple(run.value(k) for k in columns), []).append(
                (run, _leaves(run.config))
            )
    found: list[str] = []
    for group in groups.values():
        for key in dict.fromkeys(k for _, leaves in group for k in leaves):
            values = [leaves.get(key, MISSING) for _, leaves in group]
            derived = any(
                all(v == run.value(o) for v, (run, _) in zip(values, group, strict=True))
                for o in over
            )
            if key not in found and key not in over and len(set(values)) > 1 and not derived:
                found.append(key)
    return found


def table(
    runs: Sequence[Run], metrics: Sequence[str] | None = None, over: Sequence[str] = DEFAULT_OVER
) -> Table:
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
    keys = list(
        dict.fromkeys(
            [parse_override(o)[0] for run in complete for o in run.overrides] + list(over)
        )
    )
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
    rows = [Row(dict(zip(columns, key, strict=True)), group, {}) for key, group in groups.items()]
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


def _formatter(values: Iterable[float]) -> Callable[[float], str]:
    finite = [x for x in values if math.isfinite(x)]
    if all(x == int(x) for x in finite):
        return lambda x: str(int(x)) if math.isfinite(x) else str(x)
    largest = max((abs(x) for x in finite), default=0.0)
    digits = 4 if largest < 10 else 2 if largest < 1000 else 0
    return lambda x: f"{x:.{digits}f}"


def _cell(stat: Stat, n: int, fmt: Callable[[float], str]) -> str:
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
        lines.append(
            f"- averaged over: {', '.join(result.over)} ({found}); each cell is mean ± sample sd "
            "(ddof = 1) over the row's n runs, the value alone when n = 1"
        )
    else:
        lines.append(
            "- averaged over: nothing (no repetition key varies); "
            "a row of n > 1 holds repeated runs, mean ± sample sd"
        )
    if result.from_config:
        lines.append(
            "- differ in config.yaml though no override sets them (rows kept apart): "
            + ", ".join(result.from_config)
        )
    selected = sorted({run.selected_on for run in result.runs if run.selected_on})
    on = f" (by {', '.join(selected)})" if selected else ""
    lines.append(
        "- numbers: each run's metrics.json; val/<m> = the metric on the validation part at the "
        f"checkpoint chosen on validation{on}, test/<m> = that same checkpoint on the test part; "
        "fit_seconds = wall-clock seconds of fitting, epochs = epochs trained; "
        '"(k of n)": only k runs report the metric'
    )
    lines.append("")
    formats = {
        m: _formatter([v for row in rows for v in (row.stat(m).mean, row.stat(m).sd)])
        for m in result.metrics
    }
    header = (result.columns or ["runs"]) + ["n", *result.metrics]
    lines.append("| " + " | ".join(header) + " |")
    lines.append(
        "|"
        + "|".join(["---"] * len(result.columns or [0]) + ["---:"] * (1 + len(result.metrics)))
        + "|"
    )
    for row in rows:
        cells = [*row.key.values()] or ["all"]
        cells += [str(row.n)] + [_cell(row.stat(m), row.n, formats[m]) for m in result.metrics]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    for group in result.repeats:
        same = ", ".join(group[0].overrides) or "no overrides"
        lines += [
            "",
            f"**warning**: {len(group)} runs with identical overrides ({same}), a repeated run; "
            f"all {len(group)} are counted: {_paths(group)}",
        ]
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
        writer.writerow(
            [
                *result.columns,
                "n",
                *(f"{m}_{s}" for m in result.metrics for s in ("mean", "sd", "n")),
            ]
        )
        for row in result.rows:
            cells: list[object] = [*row.key.values(), row.n]
            for m in result.metrics:
                stat = row.stat(m)
                cells += [*("" if math.isnan(x) else repr(x) for x in (stat.mean, stat.sd)), stat.n]
            writer.writerow(cells)
