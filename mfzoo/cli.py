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


def _load(run_dir: str):
    from mfzoo.training.restore import RunError, load_run

    try:
        return load_run(run_dir)
    except (RunError, FileNotFoundError) as err:
        raise SystemExit(f"mfzoo: {err}") from None


def _encode(encode, raw: str, what: str):
    from mfzoo.data.errors import DataError

    for candidate in (raw, int(raw) if raw.lstrip("-").isdigit() else None):
        if candidate is None:
            continue
        try:
            return int(encode([candidate])[0])
        except (DataError, ValueError, TypeError):
            continue
    raise SystemExit(f"mfzoo: unknown {what} id {raw!r} (not in this run's data)")


def _print_items(items, scores, labels) -> None:
    for rank, (i, s) in enumerate(zip(items.tolist(), scores.tolist()), 1):
        if i < 0:
            break
        print(f"{rank:3d}. score {s:7.4f}  item {labels[i]}")


def recommend() -> None:
    """`mfzoo-recommend RUN_DIR --user ID [-k 10]`: a trained run's top-K for a user, seen
    items excluded, with raw ids (and titles for MovieLens)."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(prog="mfzoo-recommend", description=recommend.__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--user", required=True, help="raw user id")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()
    quiet_lightning()
    cfg, datamodule, model = _load(args.run_dir)
    from mfzoo.retrieval import recommend as top_k
    from mfzoo.training.run import item_labels

    data = datamodule.data
    user = _encode(data.encode_users, args.user, "user")
    with torch.no_grad():
        scores, items = top_k(model, torch.tensor([user]), args.k, seen=datamodule.seen)
    print(f"top {args.k} for user {args.user} ({int((datamodule.seen.users == user).sum())} seen items excluded):")
    _print_items(items[0], scores[0], item_labels(cfg, datamodule))


def similar() -> None:
    """`mfzoo-similar RUN_DIR --item ID [-k 10] [--metric cosine|dot]`: the items nearest to
    one item in a trained run's item factors (the item itself excluded)."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(prog="mfzoo-similar", description=similar.__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--item", required=True, help="raw item id")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--metric", choices=["cosine", "dot"], default="cosine")
    args = parser.parse_args()
    quiet_lightning()
    cfg, datamodule, model = _load(args.run_dir)
    from mfzoo.retrieval import similar_items
    from mfzoo.training.run import item_labels

    data = datamodule.data
    item = _encode(data.encode_items, args.item, "item")
    labels = item_labels(cfg, datamodule)
    with torch.no_grad():
        scores, items = similar_items(model, torch.tensor([item]), args.k, metric=args.metric)
    print(f"{args.k} items most similar to item {labels[item]} by {args.metric}:")
    _print_items(items[0], scores[0], labels)


if __name__ == "__main__":
    train()
