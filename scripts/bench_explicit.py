"""Explicit-feedback benchmark: mfzoo against scikit-surprise on the same folds, in one process.

Protocol: MovieLens-100K, 5-fold random CV (`mfzoo.data.splits.KFold(n_folds=5, seed=0,
val=0.1)`, the folds of `experiment=ml100k_cv`). In each outer fold, 10% of the training folds
is carved out as val; mfzoo trains on the rest (the inner train part) with the config's
callbacks: early stopping and the best val-RMSE checkpoint, chosen on val. Surprise is fitted
on the same inner train rows (it has no use for val). Each model then scores the test fold
once. RMSE/MAE are computed by mfzoo's metrics on predictions clipped to [1, 5] (Surprise
clips too). Fit seconds are wall time of the fit call alone (mfzoo: `Trainer.fit` of the
`experiment=ml100k_cv` config with `model=...`, per-epoch validation and checkpoint writes
included; Surprise: `algo.fit(trainset)`); each fit is repeated `--repeats` times and the
median kept, with models interleaved so machine noise hits all alike. One untimed warm-up fit
of each model comes first (imports, allocator, Lightning's first-call set-up).

A second table repeats every model once on a global temporal cut (`TemporalSplit(test=0.2,
val=0.1)`: the last 20% of ratings by time are test, the 10% before them val), where
time-aware models should gain most.

    python scripts/bench_explicit.py [--repeats 3] [--threads 1] [--models mf,svdpp,...] \
[--out FILE] [overrides...]

Extra arguments are Hydra overrides applied to every mfzoo model (e.g. `trainer.max_epochs=20`).
Needs the `[bench]` extra (scikit-surprise).

This script measures speed and the untuned (default) settings side by side; the comparison with
every model tuned on validation under one budget is `scripts/nested_cv.py` (both libraries) and
`scripts/compare_nested.py` (experiments/nested_cv).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from _bench import emit, quiet
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from mfzoo.cli import CONFIG_DIR
from mfzoo.data.batch import Batch
from mfzoo.data.datamodule import InteractionsDataModule
from mfzoo.data.sources import movielens
from mfzoo.data.splits import KFold, Split, TemporalSplit
from mfzoo.evaluation.metrics import rating_metrics
from mfzoo.training.module import EvaluatedModule
from mfzoo.training.run import build

RATING_RANGE = (1.0, 5.0)
VAL = 0.1  # share of each fold's training part carved out as val (configs/data/split/kfold.yaml)
# name -> (library, model config or Surprise class name); `--models` picks by key
MODELS = {
    "mf": ("mfzoo MF", "mf"),
    "svdpp": ("mfzoo SVD++", "svdpp"),
    "timesvdpp": ("mfzoo timeSVD++", "timesvdpp"),
    "surprise_svd": ("surprise SVD", "SVD"),
    "surprise_svdpp": ("surprise SVDpp", "SVDpp"),
}
# (ours, peer): fit-time and RMSE ratios printed for these pairs
PAIRS = [("mf", "surprise_svd"), ("svdpp", "surprise_svdpp"), ("timesvdpp", "surprise_svdpp")]

# split -> (fit seconds, test predictions [N], epochs up to the best val checkpoint or None)
Fit = Callable[[Split], tuple[float, torch.Tensor, int | None]]


@dataclass
class Fitted:
    """A module trained on a split's train part, at its best val checkpoint."""

    module: EvaluatedModule
    seconds: float  # wall time of Trainer.fit
    best_val: float | None  # the checkpoint callback's monitored value at the best epoch
    best_epochs: int  # epochs trained up to and including the best one
    epochs: int  # epochs trained (early stopping may end before max_epochs)


def fit_on_split(
    cfg: DictConfig,
    split: Split,
    seed: int,
    callbacks: bool = True,
    extra_callbacks: list | None = None,
) -> Fitted:
    """Train `cfg`'s model on `split.train` through mfzoo's `build` and a Lightning Trainer.

    With `callbacks`, the config's callbacks run on `split.val` (early stopping, best
    val checkpoint) and the best checkpoint is loaded before returning; the test part is
    never touched here. Without them the last epoch is kept (`split.val` may be None).
    """
    L.seed_everything(seed, verbose=False)
    datamodule = InteractionsDataModule(
        split.train,
        split=lambda _: split,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        seed=seed,
        group_by_user=cfg.data.get("group_by_user", False),
    )
    datamodule, module = build(cfg, datamodule)
    with tempfile.TemporaryDirectory(prefix="mfzoo-fit-") as workdir:
        found = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()] if callbacks else []
        for callback in found:
            if isinstance(callback, L.pytorch.callbacks.ModelCheckpoint):
                callback.dirpath = workdir
        # a solver epoch is one sweep
        one_sweep = {"limit_train_batches": 1} if cfg.get("solver") else {}
        trainer: L.Trainer = instantiate(
            cfg.trainer,
            logger=False,
            callbacks=found + list(extra_callbacks or []),
            default_root_dir=workdir,
            enable_checkpointing=any(
                isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in found
            ),
            **({} if split.val is not None else {"limit_val_batches": 0}),
            **one_sweep,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        seconds = time.perf_counter() - start
        checkpoint = trainer.checkpoint_callback if found else None
        best_path = getattr(checkpoint, "best_model_path", "") if checkpoint is not None else ""
        best_val, best_epochs = None, trainer.current_epoch
        if best_path:
            state = torch.load(best_path, map_location="cpu", weights_only=True)
            module.load_state_dict(state["state_dict"])
            best_val = float(checkpoint.best_model_score)
            best_epochs = int(state["epoch"]) + 1  # saved at the end of that (0-based) epoch
    return Fitted(module, seconds, best_val, best_epochs, trainer.current_epoch)


@torch.no_grad()
def predict(module: EvaluatedModule, part) -> torch.Tensor:
    """The model's rating predictions for the rows of `part` (unclipped), [N]."""
    # [N, 1]
    scores = module.model.eval()(Batch(part.users, part.items, part.values, times=part.timestamps))
    return scores[:, 0]


def mfzoo_fitter(model: str, overrides: list[str], seed: int) -> Fit:
    """A fit function for one mfzoo model config, through the framework's own trainer: train on
    the split's train part, early stopping and best checkpoint on its val part, predict test."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=ml100k_cv",
                "logger=none",
                f"model={model}",
                f"seed={seed}",
                *overrides,
            ],
        )

    def fit(split: Split) -> tuple[float, torch.Tensor, int | None]:
        fitted = fit_on_split(cfg, split, seed)
        return fitted.seconds, predict(fitted.module, split.test), fitted.best_epochs

    fit.cfg = cfg  # type: ignore[attr-defined]
    return fit


def surprise_fitter(algo_name: str, seed: int) -> Fit:
    """A fit function for a scikit-surprise algorithm (default parameters) on the split's train
    part, the rows mfzoo trains on (the val part is not given to it)."""
    import surprise

    algo_cls = getattr(surprise, algo_name)

    def fit(split: Split) -> tuple[float, torch.Tensor, int | None]:
        train, test = split.train, split.test
        raw = zip(
            train.users.tolist(),
            train.items.tolist(),
            train.values.tolist(),
            [None] * len(train),
            strict=True,
        )
        trainset = surprise.Dataset(surprise.Reader(rating_scale=RATING_RANGE)).construct_trainset(
            list(raw)
        )
        algo = algo_cls(random_state=seed)
        start = time.perf_counter()
        algo.fit(trainset)
        seconds = time.perf_counter() - start
        predictions = [
            algo.predict(u, i, clip=True).est
            for u, i in zip(test.users.tolist(), test.items.tolist(), strict=True)
        ]
        return seconds, torch.tensor(predictions), None

    return fit


def evaluate(
    fits: dict[str, Fit], splits: list[Split], repeats: int
) -> dict[str, list[dict[str, float]]]:
    """Per split and model: RMSE, MAE, median fit seconds over `repeats` interleaved fits."""
    rows: dict[str, list[dict[str, float]]] = {key: [] for key in fits}
    for k, split in enumerate(splits):
        times: dict[str, list[float]] = {key: [] for key in fits}
        predictions: dict[str, torch.Tensor] = {}
        best_epochs: dict[str, int | None] = {}
        for _ in range(repeats):
            for key, fit in fits.items():  # interleaved
                # seeded: every repeat predicts the same
                seconds, predictions[key], best_epochs[key] = fit(split)
                times[key].append(seconds)
        for key in fits:
            metrics = rating_metrics(predictions[key], split.test.values, RATING_RANGE)
            rows[key].append(
                {**metrics, "fit_s": statistics.median(times[key]), "best_epochs": best_epochs[key]}
            )
            print(
                f"split {k} {MODELS[key][0]:16s} rmse {metrics['rmse']:.4f} mae "
                f"{metrics['mae']:.4f} fit {rows[key][-1]['fit_s']:.3f}s best epoch "
                f"{best_epochs[key]}",
                flush=True,
            )
    return rows


def table(rows: dict[str, list[dict[str, float]]], labels: list[str]) -> list[str]:
    keys = list(rows)
    lines = [
        "| split | " + " | ".join(f"{MODELS[k][0]} RMSE / MAE / fit s" for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for j, label in enumerate(labels):
        cells = [
            f"{rows[k][j]['rmse']:.4f} / {rows[k][j]['mae']:.4f} / {rows[k][j]['fit_s']:.3f}"
            for k in keys
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if len(labels) > 1:
        cells = [
            f"**{np.mean([r['rmse'] for r in rows[k]]):.4f}** / "
            f"{np.mean([r['mae'] for r in rows[k]]):.4f} / "
            f"{np.mean([r['fit_s'] for r in rows[k]]):.3f}"
            for k in keys
        ]
        lines.append("| mean | " + " | ".join(cells) + " |")
    return lines


def epochs_line(rows: dict[str, list[dict[str, float]]]) -> list[str]:
    """The epoch of each mfzoo model's best val checkpoint, per split."""
    cells = [
        f"{MODELS[k][0]} " + ", ".join(str(r["best_epochs"]) for r in rows[k])
        for k in rows
        if rows[k] and rows[k][0]["best_epochs"] is not None
    ]
    return (
        [f"Epochs up to the best val-RMSE checkpoint, per split: {'; '.join(cells)}."]
        if cells
        else []
    )


def ratios(rows: dict[str, list[dict[str, float]]]) -> list[str]:
    lines = [
        "| ours vs peer | RMSE ratio | fit-time ratio (ours / peer) | speed-up (peer / ours) |",
        "|---|---|---|---|",
    ]
    for ours, peer in PAIRS:
        if ours in rows and peer in rows:
            mean = {
                k: {m: float(np.mean([r[m] for r in rows[k]])) for m in ("rmse", "fit_s")}
                for k in (ours, peer)
            }
            fit_ratio = mean[ours]["fit_s"] / mean[peer]["fit_s"]
            lines.append(
                f"| {MODELS[ours][0]} vs {MODELS[peer][0]} | "
                f"{mean[ours]['rmse'] / mean[peer]['rmse']:.3f} | {fit_ratio:.3f} | "
                f"{1 / fit_ratio:.1f}x |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="fits per model and fold; the median time is kept"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="training seed (mfzoo, Surprise)")
    parser.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="seed of the fold partition (as data/split/kfold.yaml)",
    )
    parser.add_argument(
        "--val",
        type=float,
        default=VAL,
        help="share of each fold's training part carved out as val",
    )
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated keys of {list(MODELS)}"
    )
    parser.add_argument("--no-temporal", action="store_true", help="skip the temporal-split table")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=(
            "torch threads (default: torch's own); 1 keeps timings stable on a machine shared with "
            "other jobs, where a 2-thread pool on 2 busy cores measured 2-15x slower"
        ),
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the markdown tables here"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every mfzoo model")
    args = parser.parse_args()

    quiet()
    if args.threads:
        torch.set_num_threads(args.threads)

    keys = args.models.split(",")
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    fits = {
        k: (
            mfzoo_fitter(MODELS[k][1], args.overrides, args.seed)
            if MODELS[k][0].startswith("mfzoo")
            else surprise_fitter(MODELS[k][1], args.seed)
        )
        for k in keys
    }

    data = movielens("100k")
    folds = list(KFold(n_folds=args.folds, seed=args.split_seed, val=args.val).folds(data))
    for fit in fits.values():  # warm-up, untimed
        fit(folds[0])
    cv = evaluate(fits, folds, args.repeats)

    configs = [
        f"{MODELS[k][0]}: "
        + ", ".join(f"{n}={v}" for n, v in fits[k].cfg.model.items() if n != "_target_")
        for k in keys
        if hasattr(fits[k], "cfg")
    ]
    any_cfg = next((f.cfg for f in fits.values() if hasattr(f, "cfg")), None)
    lines = [
        f"ML-100K, {args.folds}-fold random CV (KFold seed {args.split_seed}; in each fold "
        f"{args.val:g} of the training part is val, the rest inner train: {len(folds[0].train)} / "
        f"{len(folds[0].val)} / {len(folds[0].test)} train / val / test rows in fold 0), the same "
        "rows for every model; mfzoo: early stopping and best val-RMSE checkpoint on val; "
        "Surprise: fitted on the same inner train rows; test scored once. Training seed "
        f"{args.seed}; fit seconds = median of {args.repeats} interleaved fits per fold; torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}.",
    ]
    if any_cfg is not None:
        lines.append(
            f"mfzoo training: MSE l2={any_cfg.loss.l2} l2_bias={any_cfg.loss.l2_bias}, Adam "
            f"lr={any_cfg.optim.lr} linear decay over {any_cfg.trainer.max_epochs} epochs, batch "
            f"{any_cfg.data.batch_size}; Surprise: defaults."
        )
    lines += [f"- {c}" for c in configs] + [""]
    lines += [
        *table(cv, [f"fold {k}" for k in range(args.folds)]),
        "",
        *epochs_line(cv),
        "",
        *ratios(cv),
    ]
    if not args.no_temporal:
        temporal = TemporalSplit(test=0.2, val=args.val)(data)
        print(
            f"temporal split: train {len(temporal.train)}, val {len(temporal.val)} before the cut, "
            f"test {len(temporal.test)} after"
        )
        rows = evaluate(fits, [temporal], 1)
        lines += [
            "",
            f"Global temporal cut (TemporalSplit(test=0.2, val={args.val:g}): train "
            f"{len(temporal.train)} ratings, then val {len(temporal.val)} (early stopping, best "
            f"checkpoint), then the cut and test {len(temporal.test)}; Surprise fitted on the "
            "train rows; one fit each):",
            "",
        ]
        lines += [*table(rows, ["temporal"]), "", *epochs_line(rows)]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
