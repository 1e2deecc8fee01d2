"""Console entry points."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

# The configs live at the top of the source tree (an editable install: `pip install -e .`).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def quiet_lightning() -> None:
    """Route Lightning's messages through the run's logging (console + run log) once, and
    drop warnings that do not apply to in-memory batch loaders."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def train(cfg: DictConfig) -> float | None:
    """`mfzoo-train [overrides]`: train, test, write the run directory, print test metrics.

    Returns the value named by `optimized_metric` (for sweepers), when set.
    """
    from mfzoo.training.run import train as run_training

    quiet_lightning()
    run_dir = HydraConfig.get().runtime.output_dir
    metrics = run_training(cfg, run_dir)
    print(json.dumps({"run_dir": run_dir, **metrics}, indent=2))
    metric = cfg.get("optimized_metric")
    return metrics["test"].get(metric) if metric else None


if __name__ == "__main__":
    train()
