"""Callbacks the glue adds to every run: the per-epoch history file and progress lines.

`History` writes `history.csv` in the run directory: one row per epoch, a column `epoch`
(0-based) and one per metric logged at epoch level (train/loss, val/rmse, ...; an empty cell
where a metric was not logged that epoch). Its rows are also kept in the checkpoints, so a
resumed run continues the same file.

`Progress` logs one line per epoch (INFO, on the run's console and log file): the epoch, the
training loss, the monitored validation metric (with its best so far) and a few others, and
the seconds the epoch took (for closed-form solvers also the seconds of the sweep itself).

`MetricCheck` stops a run whose `optimized_metric` is not among its validation metrics at the
first validation.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
from typing_extensions import override

log = logging.getLogger("mfzoo.progress")


def _scalars(trainer: L.Trainer, prefixes: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for name, value in trainer.callback_metrics.items():
        if name.startswith(prefixes):
            out[name] = float(value)
    return out


class History(L.Callback):
    """Epoch-level metrics of a run, written to `path` (CSV) after every epoch."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: dict[int, dict[str, float]] = {}

    def _record(self, trainer: L.Trainer, prefixes: tuple[str, ...]) -> None:
        # fast_dev_run: set by Trainer.__init__, not declared on the class
        if trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            return
        self.rows.setdefault(trainer.current_epoch, {}).update(_scalars(trainer, prefixes))

    # validation metrics are recorded before the epoch's checkpoint is written (Lightning runs
    # checkpoint callbacks last), so a checkpoint holds the history up to its own validation
    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, ("val/",))

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, ("train/", "val/"))
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        """Write every epoch recorded so far to the CSV file (one row per epoch)."""
        names = sorted({name for row in self.rows.values() for name in row})
        with open(self.path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", *names])
            for epoch in sorted(self.rows):
                row = self.rows[epoch]
                writer.writerow([epoch, *(repr(row[n]) if n in row else "" for n in names)])

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"rows": {int(e): dict(r) for e, r in self.rows.items()}}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = {int(e): dict(r) for e, r in state_dict.get("rows", {}).items()}


class MetricCheck(L.Callback):
    """Stops a run at its first validation when `metric` (the run's `optimized_metric`) or a
    metric a callback monitors (`monitored`: early stopping, the best checkpoint) is not among
    the validation metrics, naming those that are, instead of training to the end and returning
    nothing to a sweeper. Put it before the callbacks that monitor."""

    def __init__(self, metric: str | None, monitored: dict[str, str] | None = None):
        self.metric, self.checked = metric, False
        self.monitored = dict(monitored or {})

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.checked or trainer.sanity_checking:
            return
        self.checked = True
        logged = sorted(n for n in trainer.callback_metrics if n.startswith("val/"))
        wanted = ({"optimized_metric": self.metric} if self.metric else {}) | self.monitored
        for what, name in wanted.items():
            if name not in logged:
                from mfzoo.training.rundir import RunError

                raise RunError(
                    f"{what} {name!r} is not a validation metric of this run; it logs "
                    f"{', '.join(logged) or 'none'} (see ranking.ks for the K of @K metrics)"
                )


# the validation metrics a progress line shows first, beside the monitored one
_SHOWN = ("val/rmse", "val/mae", "val/ndcg@10", "val/recall@10")


class Progress(L.Callback):
    """One INFO line per epoch; `monitor` / `mode` name the metric whose best is shown."""

    def __init__(self, monitor: str | None = None, mode: str = "min"):
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self._start = 0.0

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = _scalars(trainer, ("train/", "val/"))
        epoch = trainer.current_epoch  # 0-based, as in history.csv and the checkpoint names
        parts = [
            f"epoch {epoch} ({epoch + 1} of {trainer.max_epochs})"
            if trainer.max_epochs is not None and trainer.max_epochs > 0
            else f"epoch {epoch}"
        ]
        if "train/loss" in metrics:
            parts.append(f"train/loss {metrics['train/loss']:.4f}")
        value = metrics.get(self.monitor) if self.monitor else None
        if value is not None and math.isfinite(value):
            better = self.best is None or (
                value < self.best if self.mode == "min" else value > self.best
            )
            self.best = value if better else self.best
        shown = [n for n in (self.monitor, *_SHOWN) if n in metrics]
        for name in dict.fromkeys(shown[:3]):
            parts.append(f"{name} {metrics[name]:.4f}")
        if self.best is not None:
            parts.append(f"(best {self.monitor} {self.best:.4f})")
        if "train/sweep_seconds" in metrics:
            parts.append(f"sweep {metrics['train/sweep_seconds']:.2f} s")
        parts.append(f"epoch {time.perf_counter() - self._start:.2f} s")
        log.info("  ".join(parts))

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
