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

Modules: `runs` (finding and reading run directories), `tables` (grouping into rows, mean and
sample sd, Markdown and CSV), `plots` (per-run and per-epoch PNGs), `command` (`main`, the
command line).
"""

from mfzoo.compare.command import main
from mfzoo.compare.plots import EpochCurve, epoch_curve, plot_epochs, plot_runs, read_history
from mfzoo.compare.runs import (
    MISSING,
    CompareError,
    Run,
    collect,
    flatten_metrics,
    parse_override,
    read_run,
)
from mfzoo.compare.tables import (
    COUNTERS,
    DEFAULT_OVER,
    LOWER_IS_BETTER,
    Row,
    Stat,
    Table,
    default_metrics,
    lower_is_better,
    sort_rows,
    table,
    to_csv,
    to_markdown,
)

__all__ = [
    "COUNTERS",
    "DEFAULT_OVER",
    "LOWER_IS_BETTER",
    "MISSING",
    "CompareError",
    "EpochCurve",
    "Row",
    "Run",
    "Stat",
    "Table",
    "collect",
    "default_metrics",
    "epoch_curve",
    "flatten_metrics",
    "lower_is_better",
    "main",
    "parse_override",
    "plot_epochs",
    "plot_runs",
    "read_history",
    "read_run",
    "sort_rows",
    "table",
    "to_csv",
    "to_markdown",
]
