"""Plots for `mfzoo-compare`: each run's metric per row (`plot_runs`) and the per-epoch curves
of history.csv averaged over each row's runs (`epoch_curve`, `plot_epochs`). matplotlib is
imported when a plot is drawn, not with this module."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn
    from matplotlib.figure import Figure

from mfzoo.compare.runs import CompareError
from mfzoo.compare.tables import Row, Stat, Table, _check_metric

log = logging.getLogger(__name__)


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
    return EpochCurve(
        np.array(epochs, dtype=int),
        np.array([s.mean for s in stats]),
        np.array([s.sd for s in stats]),
        np.array([s.n for s in stats], dtype=int),
    )


def _figure(width: float) -> Figure:
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
        ax.scatter(
            i - 0.1 + spread, values, s=16, color="0.55", zorder=2, label=None if i else "one run"
        )
        stat = row.stat(metric)
        ax.errorbar(
            i + 0.18,
            stat.mean,
            yerr=None if stat.n < 2 else stat.sd,
            fmt="o",
            color="C0",
            capsize=4,
            zorder=3,
            label=None if i else "row mean ± sd",
        )
    slanted = len(result.rows) > 3
    ax.set_xticks(
        range(len(result.rows)),
        [row.label for row in result.rows],
        rotation=25 if slanted else 0,
        ha="right" if slanted else "center",
        fontsize=8,
    )
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
        raise CompareError(
            f"no history.csv has a column {metric!r} (columns: {', '.join(columns) or 'none'})"
        )
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
        ax.fill_between(
            curve.epochs,
            curve.mean - curve.sd,
            curve.mean + curve.sd,
            where=curve.n > 1,
            color=color,
            alpha=0.2,
            linewidth=0,
        )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    over = ", ".join(result.over) or "repeated runs"
    partial = any((curve.n < row.n).any() for row, curve in curves)
    ax.set_title(
        f"{metric} per epoch: mean ± sample sd over {over}"
        + (" (dotted: not all runs)" if partial else ""),
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
