"""Explicit-feedback benchmark: mfzoo against scikit-surprise on the same folds, in one process.

Protocol: MovieLens-100K, 5-fold random CV (`mfzoo.data.splits.KFold`, seed 0); every model is
fitted on the same train part and scored on the same test part of each fold. RMSE/MAE are
computed by mfzoo's metrics on predictions clipped to [1, 5] (Surprise clips too). Fit seconds
are wall time of the fit call alone (mfzoo: `Trainer.fit` of the `experiment=ml100k_cv` config;
Surprise: `algo.fit(trainset)`); each fit is repeated `--repeats` times and the median kept,
with models interleaved so machine noise hits both alike. One untimed warm-up fit of each
library comes first (imports, allocator, Lightning's first-call set-up).

    python scripts/bench_explicit.py [--repeats 3] [--out experiments/ml100k_explicit/results.md] [overrides...]

Extra arguments are Hydra overrides for the mfzoo config (e.g. `model.dim=128`).
Needs the `[bench]` extra (scikit-surprise).
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mfzoo.cli import CONFIG_DIR, quiet_lightning
from mfzoo.data.batch import Batch
from mfzoo.data.datamodule import InteractionsDataModule
from mfzoo.data.sources import movielens
from mfzoo.data.splits import KFold, Split
from mfzoo.evaluation.metrics import rating_metrics
from mfzoo.training.run import build

RATING_RANGE = (1.0, 5.0)


def mfzoo_fit(cfg, split: Split, seed: int) -> tuple[float, torch.Tensor]:
    """Fit the configured model on `split.train` with the framework's own trainer; return
    (fit seconds, test predictions)."""
    L.seed_everything(seed, verbose=False)
    datamodule = InteractionsDataModule(split.train, split=lambda _: split, batch_size=cfg.data.batch_size, seed=seed)
    datamodule, module = build(cfg, datamodule)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    test = split.test
    with torch.no_grad():
        predictions = module.model.eval()(Batch(test.users, test.items, test.values))[:, 0]
    return seconds, predictions


def surprise_fit(algo_cls, split: Split, seed: int, **params) -> tuple[float, torch.Tensor]:
    """Fit a scikit-surprise algorithm on the same train part; return (fit seconds, test predictions)."""
    from surprise import Dataset, Reader

    train, test = split.train, split.test
    raw = zip(train.users.tolist(), train.items.tolist(), train.values.tolist(), [None] * len(train))
    trainset = Dataset(Reader(rating_scale=RATING_RANGE)).construct_trainset(list(raw))
    algo = algo_cls(random_state=seed, **params)
    start = time.perf_counter()
    algo.fit(trainset)
    seconds = time.perf_counter() - start
    predictions = [algo.predict(u, i, clip=True).est for u, i in zip(test.users.tolist(), test.items.tolist())]
    return seconds, torch.tensor(predictions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="fits per model and fold; the median time is kept")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the mfzoo config")
    args = parser.parse_args()

    logging.basicConfig(level=logging.WARNING)
    quiet_lightning()
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    from surprise import SVD

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=ml100k_cv", "logger=none", *args.overrides])
    data = movielens("100k")
    folds = list(KFold(n_folds=args.folds, seed=args.seed).folds(data))
    models = {
        "mfzoo MF": lambda s: mfzoo_fit(cfg, s, args.seed),
        "surprise SVD": lambda s: surprise_fit(SVD, s, args.seed),
    }
    for fit in models.values():  # warm-up, untimed
        fit(folds[0])

    rows: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for k, split in enumerate(folds):
        times: dict[str, list[float]] = {name: [] for name in models}
        predictions: dict[str, torch.Tensor] = {}
        for _ in range(args.repeats):
            for name, fit in models.items():  # interleaved
                seconds, predictions[name] = fit(split)  # seeded: every repeat predicts the same
                times[name].append(seconds)
        for name in models:
            metrics = rating_metrics(predictions[name], split.test.values, RATING_RANGE)
            rows[name].append({**metrics, "fit_s": statistics.median(times[name])})
            print(f"fold {k} {name:14s} rmse {metrics['rmse']:.4f} mae {metrics['mae']:.4f} fit {rows[name][-1]['fit_s']:.3f}s", flush=True)

    table = render(rows, cfg, args)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)


def render(rows: dict[str, list[dict[str, float]]], cfg, args) -> str:
    names = list(rows)
    ours, peer = names[0], names[1]
    lines = [
        f"ML-100K, {args.folds}-fold random CV (seed {args.seed}), same folds for every model; "
        f"fit seconds = median of {args.repeats} interleaved fits per fold; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}.",
        f"mfzoo config: model dim={cfg.model.dim} biases={cfg.model.biases}, loss l2={cfg.loss.l2} "
        f"l2_bias={cfg.loss.l2_bias}, Adam lr={cfg.optim.lr} linear decay, {cfg.trainer.max_epochs} epochs, "
        f"batch {cfg.data.batch_size}. Surprise SVD: default parameters.",
        "",
        "| fold | " + " | ".join(f"{n} RMSE | {n} MAE | {n} fit s" for n in names) + " | RMSE ratio | fit ratio |",
        "|---|" + "---|" * (3 * len(names) + 2),
    ]
    for k in range(args.folds):
        cells = [f"{rows[n][k]['rmse']:.4f} | {rows[n][k]['mae']:.4f} | {rows[n][k]['fit_s']:.3f}" for n in names]
        ratio_rmse = rows[ours][k]["rmse"] / rows[peer][k]["rmse"]
        ratio_fit = rows[ours][k]["fit_s"] / rows[peer][k]["fit_s"]
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {ratio_rmse:.3f} | {ratio_fit:.2f} |")
    mean = {n: {m: float(np.mean([r[m] for r in rows[n]])) for m in ("rmse", "mae", "fit_s")} for n in names}
    cells = [f"**{mean[n]['rmse']:.4f}** | {mean[n]['mae']:.4f} | {mean[n]['fit_s']:.3f}" for n in names]
    lines.append(
        "| mean | " + " | ".join(cells)
        + f" | {mean[ours]['rmse'] / mean[peer]['rmse']:.3f} | {mean[ours]['fit_s'] / mean[peer]['fit_s']:.2f} |"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
