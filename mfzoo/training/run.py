"""The glue: compose data, model, loss and optimizer from a config, train, test, record.

Every run writes into its own run directory (unique, locked while the run lives: see
`mfzoo.training.rundir`):

    config.yaml      the fully resolved config
    overrides.yaml   the command-line overrides that made it
    data/            the split and id maps it trained on (see `mfzoo.training.artifacts`)
    checkpoints/     last.ckpt (every epoch) and, with a monitored metric, the best epoch
    history.csv      epoch-level metrics, one row per epoch
    tb/<run name>/   TensorBoard logs with the run's hparams (with logger=tensorboard)
    metrics.json     what the run reports (strict JSON, paths relative to the run directory)

Selection happens on validation only: the checkpoint whose monitored validation metric is
best is chosen during training; `objective` (what a sweeper receives) is the value of
`optimized_metric`, a `val/...` metric, at that checkpoint; the test part is scored once,
from that checkpoint, and only reported.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from mfzoo.data.datamodule import InteractionsDataModule
from mfzoo.data.interactions import Interactions
from mfzoo.models.contract import Factorised, Prepared
from mfzoo.training import artifacts, trust
from mfzoo.training.building import make_loss, make_model, plain_dict
from mfzoo.training.callbacks import History, MetricCheck, Progress
from mfzoo.training.module import EvaluatedModule, GradientModule, SolverModule, check_config
from mfzoo.training.rundir import (
    RunError,
    claim,
    rank,
    read_checkpoint,
    relative,
    relocate,
    resume_command,
    sha256,
)

log = logging.getLogger(__name__)

LAST = "last.ckpt"
FAILED = "failed.txt"  # why a run stopped without a result (removed when it is resumed to its end)


def build(
    cfg: DictConfig, datamodule: InteractionsDataModule | None = None
) -> tuple[InteractionsDataModule, EvaluatedModule]:
    """Instantiate the data module (loaded and split; `cfg.data` unless one is given) and
    the training module.

    Sizes known only after loading go in at instantiation (`n_users`, `n_items`); the model
    then takes training statistics through its optional `prepare(train, evaluation)` hook
    (`evaluation`: the val and test pairs, for models that may use which pairs are asked).
    """
    if datamodule is None:
        datamodule = instantiate(cfg.data)
    datamodule.setup()
    model = make_model(cfg.model, datamodule.n_users, datamodule.n_items)
    if isinstance(model, Prepared):
        model.prepare(datamodule.train, evaluation=datamodule.evaluation)
    rating_range = cfg.get("rating_range") or datamodule.train.rating_range()
    ranking = cfg.get("ranking")
    ranking = None if ranking is None else plain_dict(ranking, "ranking")
    if cfg.get("solver"):  # closed form: the solver replaces loss and optimizer
        solver = instantiate(cfg.solver)
        if (cfg.get("trainer") or {}).get("deterministic") and hasattr(solver, "deterministic"):
            # trainer.deterministic=true asks every part for bitwise repeats
            solver.deterministic = True
        return datamodule, SolverModule(model, solver, tuple(rating_range), ranking)
    module = GradientModule(
        model=model,
        loss=make_loss(cfg.loss, datamodule.n_users, datamodule.n_items),
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        rating_range=tuple(rating_range),
        ranking=ranking,
        averaging=instantiate(cfg.averaging) if cfg.get("averaging") else None,
    )
    return datamodule, module


def data_module(cfg: DictConfig, run_dir: str | Path | None = None) -> InteractionsDataModule:
    """The run's data module, set up. With `run_dir` (a finished or resumed run): the split the
    run recorded, read from its own files, or, when it kept only a digest, re-read from the
    source and checked against that digest (`RunError` if the data changed)."""
    if run_dir is None:
        datamodule = instantiate(cfg.data)
    else:
        split = artifacts.load(run_dir)
        if split is None:  # keep_data=digest: the source, checked
            datamodule = instantiate(cfg.data)
            datamodule.setup()
            artifacts.check(run_dir, datamodule.split)
            return datamodule
        parts = [p for p in (split.train, split.val, split.test) if p is not None]
        everything = Interactions.concat(parts, name=split.train.name.removesuffix("/train"))
        data_cfg = plain_dict(cfg.data, "data")
        rest = OmegaConf.create({k: v for k, v in data_cfg.items() if k not in ("source", "split")})
        # callables, not the objects: instantiate would merge a dataclass into the config
        datamodule = instantiate(rest, source=lambda: everything, split=lambda _: split)
    datamodule.setup()
    return datamodule


def source_titles(cfg: DictConfig, datamodule: InteractionsDataModule) -> dict:
    """Titles by raw item id for the run's items, where the source has them (MovieLens)."""
    source = cfg.data.get("source") or {}
    if not str(source.get("_target_", "")).endswith("movielens"):
        return {}
    from mfzoo.data.sources import movielens_titles

    titles = movielens_titles(source.get("name", "100k"))
    raw_ids = datamodule.train.item_ids.tolist()
    return {raw: titles[raw] for raw in raw_ids if raw in titles}


def item_labels(datamodule: InteractionsDataModule, titles: dict) -> list[str]:
    """A label per item row: the raw id, with the title where known (`titles` keyed by raw id
    or by its string)."""
    labels = []
    for raw in datamodule.train.item_ids.tolist():
        title = titles.get(raw, titles.get(str(raw)))
        labels.append(f"{raw} {title}" if title else str(raw))
    return labels


@torch.no_grad()
def log_item_embeddings(
    logger: L.pytorch.loggers.TensorBoardLogger, model: Factorised, labels: list[str]
) -> None:
    """The item factors, labelled with ids (and titles), into TensorBoard's projector."""
    logger.experiment.add_embedding(
        model.item_factors().detach().float().cpu(), metadata=labels, tag="item_factors"
    )
    logger.experiment.flush()


def _checkpoints(cfg: DictConfig, run_dir: Path) -> tuple[list[L.Callback], ModelCheckpoint | None]:
    """The configured callbacks (checkpoints into run_dir/checkpoints), plus the glue's own:
    last.ckpt every epoch (what resume continues from). Returns them and the checkpoint
    callback that selects on a monitored validation metric, if any."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    best = None
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint):
            if callback.dirpath is None:
                callback.dirpath = str(run_dir / "checkpoints")
            if callback.monitor is not None and best is None:
                best = callback
    last = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename=LAST.removesuffix(".ckpt"),
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )
    return [*callbacks, last], best


def _finite(value: Any) -> Any:
    """metrics.json is strict JSON: a non-finite number becomes null (and is reported)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        log.warning("a non-finite metric (%s) is recorded as null", value)
        return None
    return value


def check_optimized_metric(cfg: DictConfig) -> str | None:
    """`optimized_metric` must name a validation metric: what a sweeper optimises must never
    come from the part that reports the result."""
    metric = cfg.get("optimized_metric")
    if metric and not str(metric).startswith("val/"):
        raise RunError(
            f"optimized_metric must be a validation metric (val/...), got {metric!r}: "
            "hyperparameters are chosen on validation, the test part only reports"
        )
    return metric


def _warn_unseen(datamodule: InteractionsDataModule) -> None:
    """Say how many val/test users and items have no training interactions: their rating
    predictions come from untrained factors (the global mean and their initialisation)."""
    train = datamodule.train
    seen_users = torch.zeros(train.n_users, dtype=torch.bool).index_fill_(
        0, train.users.long(), True
    )
    seen_items = torch.zeros(train.n_items, dtype=torch.bool).index_fill_(
        0, train.items.long(), True
    )
    for name, part in (("val", datamodule.parts.val), ("test", datamodule.parts.test)):
        if part is None or len(part) == 0:
            continue
        users, items = part.users.unique(), part.items.unique()
        cold_u, cold_i = int((~seen_users[users]).sum()), int((~seen_items[items]).sum())
        if cold_u or cold_i:
            log.warning(
                "%s: %d of %d users and %d of %d items have no training interactions; their "
                "predictions come from untrained factors",
                name,
                cold_u,
                len(users),
                cold_i,
                len(items),
            )


def check_basics(cfg: DictConfig) -> None:
    """Values every run needs, refused before data is read: no mandatory value left out
    (`???` in a config, e.g. `data.source.path` of `data/source=table`), an integer seed."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not str(k).startswith("hydra"))
    if missing:
        raise RunError(
            f"{', '.join(missing)} must be given (e.g. {missing[0]}=...): the config leaves it open"
        )
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RunError(f"seed must be an integer, got {seed!r}")


def _check_settings(
    cfg: DictConfig,
    datamodule: InteractionsDataModule,
    callbacks: list[L.Callback],
    objective: bool = False,
) -> None:
    """Settings that would train without a result, refused before training starts (`objective`:
    a sweeper waits for the run's validation objective)."""
    if cfg.trainer.get("max_epochs") == 0:
        raise RunError(
            "trainer.max_epochs=0 trains nothing; give at least 1 (or -1: until stopped)"
        )
    if objective and not cfg.get("optimized_metric"):
        raise RunError(
            "the sweeper optimises what a run returns, but optimized_metric is not set "
            "(give a validation metric, e.g. optimized_metric=val/rmse)"
        )
    if objective and datamodule.parts.val is None:
        raise RunError(
            f"the sweeper optimises {cfg.optimized_metric}, but the split has no validation part "
            "to measure it on: give the split a val part (e.g. data.split.val=0.1); "
            "hyperparameters are never chosen on the test part"
        )
    if datamodule.parts.val is None:
        monitored = sorted(
            {
                str(getattr(c, "monitor", None))
                for c in callbacks
                if str(getattr(c, "monitor", None) or "").startswith("val/")
            }
        )
        if monitored:
            raise RunError(
                f"the split has no validation part, but {', '.join(monitored)} is monitored "
                "(early stopping, best checkpoint): give the split a val part (e.g. "
                "data.split.val=0.1), or use callbacks=none (no early stopping, the last "
                "epoch is tested)"
            )


def train(
    cfg: DictConfig,
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    resume: bool = False,
    objective: bool = False,
) -> dict[str, Any]:
    """Train and test the run described by `cfg`, writing its outputs into `run_dir` (which
    must hold no other run); with `resume=True` continue the run in `run_dir` from its last
    checkpoint, with its own config and data (`cfg` and `overrides` are then not used).
    `objective=True` (a sweeper is waiting for the objective): a run that could not measure
    it (no `optimized_metric`, no validation part) is refused before it trains.

    Returns the metrics also written to `run_dir/metrics.json`.
    """
    run_dir = Path(run_dir)
    with claim(run_dir, resume=resume):
        try:
            metrics = _run(cfg, run_dir, list(overrides), resume, objective)
        # the run's own directory says why it has no result (mfzoo-compare shows it)
        except Exception as err:
            if rank() == 0 and not (run_dir / "metrics.json").exists():
                why = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
                (run_dir / FAILED).write_text(" ".join(why.split()) + "\n")
            raise
        (run_dir / FAILED).unlink(missing_ok=True)
        return metrics


def _check_resumable(checkpoint: dict, run_dir: Path) -> None:
    """Before a resumed run trains on: the best checkpoint its last one points to must still be
    there and readable, or the run would train its remaining epochs and fail at the test."""
    for state in checkpoint.get("callbacks", {}).values():
        best = state.get("best_model_path") if isinstance(state, dict) else None
        if best and Path(best).name != LAST:
            if not Path(best).is_file():
                raise RunError(
                    f"{run_dir}: the best checkpoint so far ({relative(best, run_dir)}) is "
                    "missing; the run cannot be continued to the result it would have had: start "
                    "it again"
                )
            read_checkpoint(best)


def _run(
    cfg: DictConfig, run_dir: Path, overrides: list[str], resume: bool, objective: bool = False
) -> dict[str, Any]:
    writer = rank() == 0
    ckpt_path = None
    if resume:
        if (run_dir / "metrics.json").is_file():
            raise RunError(
                f"{run_dir}: the run has finished (metrics.json exists); nothing to resume"
            )
        ckpt_path = run_dir / "checkpoints" / LAST
        if not (run_dir / "config.yaml").is_file() or not ckpt_path.is_file():
            raise RunError(
                f"{run_dir}: nothing to resume from (needs config.yaml and checkpoints/{LAST}; "
                "a run killed before its first epoch ended has none: start it again)"
            )
        checkpoint = read_checkpoint(ckpt_path)
        if relocate(checkpoint, run_dir / "checkpoints"):  # moved or copied since: its paths follow
            ckpt_path = run_dir / "resume.ckpt"
            torch.save(checkpoint, ckpt_path)
        _check_resumable(checkpoint, run_dir)
        loaded = OmegaConf.load(run_dir / "config.yaml")
        if not isinstance(loaded, DictConfig):
            raise RunError(f"{run_dir / 'config.yaml'}: a run config is a mapping, not a list")
        cfg = loaded
        trust.check(cfg, source=str(run_dir / "config.yaml"))  # resuming instantiates what it names
        saved = run_dir / "overrides.yaml"
        overrides = list(yaml.safe_load(saved.read_text()) or []) if saved.is_file() else []
        log.info("resuming %s from its epoch %d", run_dir, checkpoint["epoch"])
    metric = check_optimized_metric(cfg)
    check_basics(cfg)
    check_config(cfg)  # a solver's model, settings out of range: refused before any data is read
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = data_module(cfg, run_dir if resume else None)
    callbacks, best_callback = _checkpoints(cfg, run_dir)
    _check_settings(cfg, datamodule, callbacks, objective)
    if not cfg.get("ranking"):
        _warn_unseen(datamodule)
    titles = artifacts.titles(run_dir) if resume else source_titles(cfg, datamodule)
    if writer and not resume:
        (run_dir / "config.yaml").write_text(
            OmegaConf.to_yaml(trust.with_trusted(cfg), resolve=True)
        )
        (run_dir / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
        source = plain_dict(cfg.data.source, "data.source") if cfg.data.get("source") else None
        artifacts.save(
            run_dir,
            datamodule.parts,
            keep=cfg.get("keep_data", "copy"),
            source=source,
            titles=titles,
        )
    datamodule, module = build(cfg, datamodule)

    logger = False
    if cfg.get("logger"):
        named = {}
        if str(cfg.logger.get("_target_", "")).endswith("TensorBoardLogger"):
            from mfzoo.training.tensorboard import run_name

            named = {"version": run_name(overrides)}
        # a CSV logger would replace the killed run's files: the resumed part gets its own
        elif resume:
            logs = run_dir / str(cfg.logger.get("name") or "")
            named = {
                "version": next(
                    v for v in (f"resumed-{n}" for n in range(1, 10**6)) if not (logs / v).exists()
                )
            }
        logger = instantiate(cfg.logger, save_dir=str(run_dir), **named)
    history = History(run_dir / "history.csv")
    monitored = {
        f"callbacks.{name}.monitor": str(getattr(c, "monitor", None))
        # the configured callbacks come first; the trailing `last` checkpoint has no name
        for name, c in zip((cfg.get("callbacks") or {}).keys(), callbacks, strict=False)
        if str(getattr(c, "monitor", None) or "").startswith("val/")
    }
    callbacks = [
        MetricCheck(metric, monitored),
        *callbacks,
        history,
    ]  # the check first: before early stopping asks
    if cfg.get("progress", True):
        callbacks.append(
            Progress(
                best_callback.monitor if best_callback else metric,
                best_callback.mode if best_callback else "min",
            )
        )
    # a solver epoch is one sweep
    one_sweep = {"limit_train_batches": 1} if cfg.get("solver") else {}
    trainer: L.Trainer = instantiate(
        cfg.trainer, logger=logger, callbacks=callbacks, default_root_dir=str(run_dir), **one_sweep
    )

    start = time.perf_counter()
    try:
        trainer.fit(
            module,
            datamodule=datamodule,
            ckpt_path=ckpt_path,
            weights_only=True if ckpt_path else None,
        )
    except SystemExit:  # Lightning exits on Ctrl-C and on SIGTERM
        if (run_dir / "checkpoints" / LAST).is_file():
            raise RunError(
                f"{run_dir}: training was stopped by a signal before its end; "
                f"continue it with: {resume_command(run_dir)}"
            ) from None
        raise RunError(
            f"{run_dir}: training was stopped by a signal before its first epoch ended (no "
            "checkpoint to continue from): start it again"
        ) from None
    finally:
        if ckpt_path is not None and ckpt_path.name == "resume.ckpt":
            ckpt_path.unlink(missing_ok=True)
    fit_seconds = time.perf_counter() - start
    if trainer.interrupted:
        raise RunError(
            f"{run_dir}: training was interrupted; continue it with: {resume_command(run_dir)}"
        )

    best_path = best_callback.best_model_path if best_callback is not None else ""
    last_epoch = trainer.current_epoch - 1
    best_epoch = last_epoch
    # set by Trainer.__init__, not declared on the class
    if best_path and not getattr(trainer, "fast_dev_run", False):
        checkpoint = read_checkpoint(best_path)
        module.load_state_dict(checkpoint["state_dict"])
        best_epoch = int(checkpoint["epoch"])
    (test,) = trainer.test(module, datamodule=datamodule, verbose=False)

    val = {
        k.removeprefix("val/"): v
        for k, v in history.rows.get(best_epoch, {}).items()
        if k.startswith("val/")
    }
    value = val.get(metric.removeprefix("val/")) if metric else None
    if metric and value is None:
        log.warning(
            "%s was not measured (no validation part?): nothing is returned to a sweeper", metric
        )
    last_path = run_dir / "checkpoints" / LAST
    kept = [p for p in (best_path, last_path if last_path.is_file() else None) if p]
    metrics: dict[str, Any] = {
        "optimized_metric": metric,
        "objective": value,
        "val": val,
        "test": {
            k.removeprefix("test/"): float(v) for k, v in test.items() if k.startswith("test/")
        },
        "best_epoch": best_epoch,
        "epochs": trainer.current_epoch,
        "global_steps": trainer.global_step,
        "fit_seconds": fit_seconds,  # of this process: a resumed run counts its own part
        "n_train": len(datamodule.train),
        "best_checkpoint": relative(best_path, run_dir) if best_path else None,
        "last_checkpoint": relative(last_path, run_dir) if last_path.is_file() else None,
        # a checkpoint changed after the run (a flipped byte, a file from another run) is refused on
        # load
        "checkpoint_sha256": {relative(p, run_dir): sha256(p) for p in kept} if writer else {},
        "overrides": overrides,
        "seed": cfg.seed,
        "data_digest": artifacts.meta(run_dir)["digest"]
        if (run_dir / artifacts.DATA / "meta.json").is_file()
        else None,
        "resumed": resume,
    }
    metrics = _finite(metrics)
    if writer:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
        if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
            from mfzoo.training.tensorboard import log_hparams

            final = {f"val/{k}": v for k, v in val.items()} | {
                f"test/{k}": v for k, v in metrics["test"].items()
            }
            log_hparams(
                logger,
                cfg,
                overrides,
                {k: v for k, v in final.items() if v is not None},
                step=last_epoch,
            )
            if isinstance(module.model, Factorised):
                log_item_embeddings(logger, module.model, item_labels(datamodule, titles))
    if writer:
        log.info("test metrics: %s (fit %.2f s) -> %s", metrics["test"], fit_seconds, run_dir)
    return metrics
