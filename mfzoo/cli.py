"""Console entry points."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mfzoo.training.rundir import RunError

if TYPE_CHECKING:  # the commands import torch and the data layer when they run
    import argparse

    import numpy as np
    from torch import Tensor, nn

    from mfzoo.data.datamodule import InteractionsDataModule


def _config_dir() -> str:
    """The configs: `configs/` at the top of the source tree, which the build ships inside the
    package as `mfzoo.configs` (a wheel holds them; an editable install maps them to the source
    tree); a checkout used without installing reads the source tree directly."""
    from importlib.util import find_spec

    try:
        spec = find_spec("mfzoo.configs")
    except ImportError:
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / "train.yaml").is_file():
            return str(Path(location).resolve())
    return str(Path(__file__).resolve().parents[1] / "configs")


CONFIG_DIR = _config_dir()


def quiet_lightning() -> None:
    """Route Lightning's messages through the run's logging (console + run log) once, and
    drop warnings that do not apply to in-memory batch loaders."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # under data parallelism rank 0 evaluates and hands every rank the same metrics: nothing to sync
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _train(cfg: DictConfig) -> float | None:
    from mfzoo.training.run import train as run_training

    quiet_lightning()
    # a DictConfig at run time (typed as its schema, which has no .get)
    hydra_cfg = cast(DictConfig, HydraConfig.get())
    run_dir = hydra_cfg.runtime.output_dir
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("resume=")]
    if cfg.get("resume"):
        if overrides:
            raise SystemExit(
                f"mfzoo: resume={cfg.resume} continues that run with its own config; "
                f"drop the other overrides ({' '.join(overrides)})"
            )
        if str(hydra_cfg.mode) == "RunMode.MULTIRUN":
            raise SystemExit(
                "mfzoo: resume continues one run; it cannot be part of a multirun (-m)"
            )
    if str(hydra_cfg.mode) == "RunMode.MULTIRUN" and _parallel(cfg):
        raise SystemExit(
            "mfzoo: a multirun (-m) runs its jobs one process each; a data-parallel trainer "
            "(trainer=ddp, several devices, or a torchrun launch) trains one run per command: "
            "launch each setting as its own run (or sweep with one process per job)"
        )
    launched = _launched_mismatch(cfg)
    if launched:
        raise SystemExit(_once(f"mfzoo: {launched}"))
    # a sweeper other than Hydra's basic one (Optuna, Nevergrad, ...) optimises what the run returns
    sweeper = str((hydra_cfg.get("sweeper") or {}).get("_target_", ""))
    optimising = str(hydra_cfg.mode) == "RunMode.MULTIRUN" and not sweeper.endswith("BasicSweeper")
    from hydra.errors import InstantiationException

    from mfzoo.data.errors import DataError
    from mfzoo.training.module import TrainingDiverged

    try:
        metrics = run_training(
            cfg, run_dir, overrides=overrides, resume=bool(cfg.get("resume")), objective=optimising
        )
    except TrainingDiverged as err:
        if str(hydra_cfg.mode) != "RunMode.MULTIRUN":
            raise SystemExit(_once(f"mfzoo: {err}")) from None
        # one diverged job of a sweep (a learning rate too high, say) is a failed trial, not the
        # end of the sweep: its run directory says why (failed.txt); an optimising sweeper gets NaN
        logging.getLogger("mfzoo").error("%s", err)
        return float("nan")
    except (RunError, DataError) as err:
        raise SystemExit(_once(f"mfzoo: {err}")) from None
    except InstantiationException as err:  # a config value its class refuses: one line, naming both
        raise SystemExit(_once(f"mfzoo: {instantiation_error(err)}")) from None
    from mfzoo.training.rundir import rank

    if rank() == 0:  # one report per run, not one per process
        print(json.dumps({"run_dir": _shown(run_dir), **metrics}, indent=2))
    return metrics["objective"]


def _once(message: str) -> str | int:
    """What a process exits with: the message on rank 0, a bare failure code on the others (the
    processes of one run fail alike; the user reads the reason once)."""
    from mfzoo.training.rundir import rank

    return message if rank() == 0 else 1


def _trainer_processes(cfg: DictConfig) -> tuple[object, object, bool]:
    """(trainer.devices, trainer.num_nodes, whether the strategy is DDP) of a run config."""
    trainer = cfg.get("trainer") or {}
    return (
        trainer.get("devices", 1),
        trainer.get("num_nodes", 1) or 1,
        "ddp" in str(trainer.get("strategy") or ""),
    )


def _launched_mismatch(cfg: DictConfig) -> str | None:
    """Why a launcher's processes (torchrun, srun) and the trainer disagree, if they do: each
    process would otherwise train the whole run on its own, into the same directory."""
    from mfzoo.training.rundir import world_size

    world = world_size()
    if world == 1:
        return None
    devices, nodes, ddp = _trainer_processes(cfg)
    if (
        ddp
        and isinstance(devices, int)
        and devices > 0
        and isinstance(nodes, int)
        and devices * nodes == world
    ):
        return None
    return (
        f"the launcher started {world} processes, but the trainer trains on {devices} device(s) x "
        f"{nodes} node(s){'' if ddp else ' without DDP'}: give trainer=ddp trainer.devices={world} "
        "(with several machines, trainer.devices = processes per machine and trainer.num_nodes = "
        "machines), or start one process"
    )


def _parallel(cfg: DictConfig) -> bool:
    """Whether the run trains on several processes (a launcher's, or the trainer's own)."""
    from mfzoo.training.rundir import world_size

    devices, _, ddp = _trainer_processes(cfg)
    return world_size() > 1 or ddp or (isinstance(devices, int) and devices > 1) or devices == -1


def instantiation_error(err: Exception) -> str:
    """Hydra's instantiation error in one line: the config key, the class, the reason."""
    import re

    text = str(err)
    target = re.search(r"target '([^']+)'", text)
    key = re.search(r"full_key: (\S+)", text)
    cause = err.__cause__
    reason = f"{cause}" if cause is not None else (text.splitlines()[1:2] or [text])[0]
    where = f"{key.group(1) if key else 'config'}" + (f" ({target.group(1)})" if target else "")
    return f"{where}: {reason}".replace("\n", " ")


def _shown(path: str) -> str:
    """`path` relative to the working directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _quoted_resume(argv: list[str]) -> list[str]:
    """`resume=DIR` with DIR quoted for Hydra's override parser: run directory names hold `=`
    and `,` (they are named after their overrides), which the parser would read as syntax."""
    out = []
    for arg in argv:
        if arg.startswith("resume=") and arg[len("resume=") :][:1] not in ("'", '"', ""):
            value = arg[len("resume=") :].replace("\\", "\\\\").replace("'", "\\'")
            arg = f"resume='{value}'"
        out.append(arg)
    return out


def train() -> float | None:
    """`mfzoo-train [overrides]`: train, test, write the run directory, print its metrics;
    `mfzoo-train resume=RUN_DIR` continues a killed run from its last checkpoint.

    Returns the run's `objective` to a sweeper: the validation metric `optimized_metric` at
    the checkpoint chosen on validation, never a test metric.
    """
    import sys

    from mfzoo.training.rundir import register_resolvers

    register_resolvers()
    _importable_here()
    sys.argv = _quoted_resume(sys.argv)
    return _train()


def _importable_here() -> None:
    """Put the working directory on the import path, as `python -m` does, so that a config's
    `_target_` may name a module of the project the command runs in (your own model)."""
    import os
    import sys

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def _load(
    run_dir: str, trust: list[str] | None = None
) -> tuple[DictConfig, InteractionsDataModule, nn.Module, list[str]]:
    from mfzoo.data.errors import DataError
    from mfzoo.training.restore import labels_of, load_run

    if not Path(run_dir).is_dir():
        raise SystemExit(f"mfzoo: {run_dir}: no such run directory")
    from hydra.errors import InstantiationException

    try:
        cfg, datamodule, model = load_run(run_dir, trust or ())
        labels = labels_of(run_dir, datamodule)
    except (RunError, FileNotFoundError) as err:
        raise SystemExit(f"mfzoo: {err}") from None
    except InstantiationException as err:  # a config.yaml edited since the run
        raise SystemExit(f"mfzoo: {run_dir}/config.yaml: {instantiation_error(err)}") from None
    except DataError as err:  # a run that kept only a digest re-reads its source
        raise SystemExit(
            f"mfzoo: {err} (this run keeps only a digest of its data and reads the source "
            "as its config.yaml names it, relative to the working directory)"
        ) from None
    return cfg, datamodule, model, labels


def _encode(encode: Callable[[np.ndarray], np.ndarray], raw: str, what: str) -> int:
    import numpy as np

    from mfzoo.data.errors import DataError

    for candidate in (raw, int(raw) if raw.lstrip("-").isdigit() else None):
        if candidate is None:
            continue
        try:
            return int(encode(np.asarray([candidate]))[0])
        except (DataError, ValueError, TypeError):
            continue
    raise SystemExit(f"mfzoo: unknown {what} id {raw!r} (not in this run's data)")


def _print_items(items: Tensor, scores: Tensor, labels: list[str]) -> None:
    shown = 0
    for rank, (i, s) in enumerate(zip(items.tolist(), scores.tolist(), strict=True), 1):
        if i < 0:
            break
        print(f"{rank:3d}. score {s:7.4f}  item {labels[i]}")
        shown += 1
    if shown == 0:
        print("  (no item left to recommend)")
    elif shown < len(items):
        print(f"  ({shown} items: no more left to recommend)")


def recommend() -> None:
    """`mfzoo-recommend RUN_DIR (--user ID | --items ID,ID,... [--ratings R,R,...]) [-k 10]`: a
    trained run's top-K for a training user, or for a new user given by the items it rated
    (folded in with the run's own fold-in), seen items excluded, with raw ids (and titles for
    MovieLens)."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(prog="mfzoo-recommend", description=recommend.__doc__)
    parser.add_argument("run_dir")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="raw id of a user in the run's data")
    who.add_argument(
        "--items", help="comma-separated raw item ids of a new user (not in the run's data)"
    )
    parser.add_argument(
        "--ratings",
        help="comma-separated values for --items, one per item "
        "(default: the run's highest training value, i.e. liked)",
    )
    _add_k(parser)
    _add_trust(parser)
    args = parser.parse_args()
    if args.ratings is not None and args.items is None:
        parser.error("--ratings goes with --items")
    raw_items = (
        None if args.items is None else [x.strip() for x in args.items.split(",") if x.strip()]
    )
    if raw_items is not None and not raw_items:
        parser.error(f"--items needs at least one item id, got {args.items!r}")
    ratings = (
        None
        if args.ratings is None or raw_items is None
        else _parse_ratings(parser, args.ratings, len(raw_items))
    )
    quiet_lightning()
    _importable_here()
    cfg, datamodule, model, labels = _load(args.run_dir, args.trust)
    from mfzoo.retrieval import new_users
    from mfzoo.retrieval import recommend as top_k
    from mfzoo.training.restore import fold_in_of

    # every part shares the id tables of the whole data set
    data = train = datamodule.train
    if raw_items is None:
        user = _encode(data.encode_users, args.user, "user")
        with torch.no_grad():
            scores, items = top_k(model, torch.tensor([user]), args.k, seen=datamodule.seen)
        print(
            f"top {args.k} for user {args.user} ({int((datamodule.seen.users == user).sum())} seen "
            "items excluded):"
        )
        _print_items(items[0], scores[0], labels)
        return

    codes = [_encode(data.encode_items, raw, "item") for raw in raw_items]
    repeated = sorted({raw for raw, c in zip(raw_items, codes, strict=True) if codes.count(c) > 1})
    if repeated:
        raise SystemExit(f"mfzoo: item id {repeated[0]!r} given more than once")
    if ratings is None:
        ratings = [float(train.values.max())] * len(codes)
    low, high = float(train.values.min()), float(train.values.max())
    outside = [r for r in ratings if not low <= r <= high]
    if outside:
        raise SystemExit(
            f"mfzoo: --ratings {outside[0]:g} is outside the run's rating range [{low:g}, {high:g}]"
        )
    try:
        fold_in = fold_in_of(cfg, model)
        new = new_users(train, codes, ratings, encoded=True)
        with torch.no_grad():
            scores, items = top_k(model, new, args.k, fold_in=fold_in)
    except (RunError, ValueError) as err:
        raise SystemExit(f"mfzoo: {err}") from None
    print(f"new user from {len(codes)} items (folded in, these items excluded):")
    for code, value in zip(codes, ratings, strict=True):
        print(f"     rated {value:g}  item {labels[code]}")
    print(f"top {args.k}:")
    _print_items(items[0], scores[0], labels)


def _positive(text: str) -> int:
    """argparse type of -k: an integer >= 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_k(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", type=_positive, default=10, help="how many items (>= 1; default 10)")


def _add_trust(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="PKG",
        help=(
            "a package whose model classes the run may instantiate (your own model package); "
            "repeat it for several"
        ),
    )


def _parse_ratings(parser: argparse.ArgumentParser, text: str, n_items: int) -> list[float]:
    try:
        ratings = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--ratings must be numbers, got {text!r}")
    if len(ratings) != n_items:
        parser.error(f"--ratings has {len(ratings)} values for {n_items} items")
    return ratings


def similar() -> None:
    """`mfzoo-similar RUN_DIR --item ID [-k 10] [--metric cosine|dot]`: the items nearest to
    one item in a trained run's item factors (the item itself excluded)."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(prog="mfzoo-similar", description=similar.__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--item", required=True, help="raw item id")
    _add_k(parser)
    parser.add_argument(
        "--metric",
        choices=["cosine", "dot"],
        default="cosine",
        help="cosine of the item factors (default), or their dot product",
    )
    _add_trust(parser)
    args = parser.parse_args()
    quiet_lightning()
    _importable_here()
    _cfg, datamodule, model, labels = _load(args.run_dir, args.trust)
    from mfzoo.retrieval import similar_items

    data = datamodule.train  # its id tables are those of the whole data set
    item = _encode(data.encode_items, args.item, "item")
    from mfzoo.models.contract import ContractError

    try:
        with torch.no_grad():
            scores, items = similar_items(model, torch.tensor([item]), args.k, metric=args.metric)
    except ContractError as err:  # a model without factors: the message names what is missing
        raise SystemExit(f"mfzoo: {err}") from None
    print(f"{args.k} items most similar to item {labels[item]} by {args.metric}:")
    _print_items(items[0], scores[0], labels)


def compare() -> None:
    """`mfzoo-compare DIR... [options]`: the runs under one or more (multi)run directories in
    one table and a plot (see `mfzoo.compare`)."""
    from mfzoo.compare import main

    main()


if __name__ == "__main__":
    train()
