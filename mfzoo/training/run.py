"""The glue: compose data, model, loss and optimizer from a config, train, test, record.

Every run writes into its run directory:
    config.yaml     the fully resolved config
    tb/             TensorBoard logs (with logger=tensorboard)
    checkpoints/    best and last checkpoints (with callbacks=default)
    metrics.json    test metrics, best validation metric, fit seconds, epochs
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mfzoo.data.datamodule import InteractionsDataModule
from mfzoo.training.module import GradientModule, SolverModule

log = logging.getLogger(__name__)


def build(cfg: DictConfig, datamodule: InteractionsDataModule | None = None) -> tuple[InteractionsDataModule, GradientModule]:
    """Instantiate the data module (loaded and split; `cfg.data` unless one is given) and
    the training module.

    Sizes known only after loading go in at instantiation (`n_users`, `n_items`); the model
    then takes training statistics through its optional `prepare(train, evaluation)` hook
    (`evaluation`: the val and test pairs, for models that may use which pairs are asked).
    """
    if datamodule is None:
        datamodule = instantiate(cfg.data)
    datamodule.setup()
    model = instantiate(cfg.model, n_users=datamodule.n_users, n_items=datamodule.n_items)
    if hasattr(model, "prepare"):
        model.prepare(datamodule.train, evaluation=datamodule.evaluation)
    rating_range = cfg.get("rating_range") or datamodule.train.rating_range()
    ranking = cfg.get("ranking")
    ranking = None if ranking is None else OmegaConf.to_container(ranking, resolve=True)
    if cfg.get("solver"):  # closed form: the solver replaces loss and optimizer
        return datamodule, SolverModule(model, instantiate(cfg.solver), tuple(rating_range), ranking)
    module = GradientModule(
        model=model,
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        rating_range=tuple(rating_range),
        ranking=ranking,
    )
    return datamodule, module


def item_labels(cfg: DictConfig, datamodule: InteractionsDataModule) -> list[str]:
    """A label per item row: the raw id, with the title for MovieLens runs."""
    raw_ids = [x.item() if hasattr(x, "item") else x for x in datamodule.train.item_ids]
    source = cfg.data.get("source") or {}
    titles = {}
    if str(source.get("_target_", "")).endswith("movielens"):
        from mfzoo.data.sources import movielens_titles

        titles = movielens_titles(source.get("name", "100k"))
    return [f"{raw} {titles[raw]}" if raw in titles else str(raw) for raw in raw_ids]


@torch.no_grad()
def log_item_embeddings(logger, model, datamodule: InteractionsDataModule, cfg: DictConfig) -> None:
    """The item factors, labelled with ids (and titles), into TensorBoard's projector."""
    logger.experiment.add_embedding(
        model.item_factors().detach().float().cpu(), metadata=item_labels(cfg, datamodule), tag="item_factors"
    )
    logger.experiment.flush()


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train and test the run described by `cfg`, writing its outputs into `run_dir`.

    Returns the metrics also written to `run_dir/metrics.json`.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule, module = build(cfg)
    logger = instantiate(cfg.logger, save_dir=str(run_dir)) if cfg.get("logger") else False
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    for callback in callbacks:
        if isinstance(callback, L.pytorch.callbacks.ModelCheckpoint) and callback.dirpath is None:
            callback.dirpath = str(run_dir / "checkpoints")
    one_sweep = {"limit_train_batches": 1} if cfg.get("solver") else {}  # a solver epoch is one sweep
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks, default_root_dir=str(run_dir), **one_sweep)

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start

    checkpoint = trainer.checkpoint_callback
    best_path = getattr(checkpoint, "best_model_path", "") if checkpoint is not None else ""
    if best_path and not trainer.fast_dev_run:
        state = torch.load(best_path, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    (test,) = trainer.test(module, datamodule=datamodule, verbose=False)

    metrics: dict[str, Any] = {
        "test": {k.removeprefix("test/"): float(v) for k, v in test.items()},
        "fit_seconds": fit_seconds,
        "epochs": trainer.current_epoch,
        "global_steps": trainer.global_step,
        "n_train": len(datamodule.train),
        "best_checkpoint": best_path or None,
    }
    if checkpoint is not None and getattr(checkpoint, "best_model_score", None) is not None:
        metrics["best_val"] = {checkpoint.monitor: float(checkpoint.best_model_score)}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if isinstance(logger, L.pytorch.loggers.TensorBoardLogger) and hasattr(module.model, "item_factors"):
        log_item_embeddings(logger, module.model, datamodule, cfg)
    log.info("test metrics: %s (fit %.2f s) -> %s", metrics["test"], fit_seconds, run_dir)
    return metrics
