"""Runs side by side in TensorBoard: a run's name from its Hydra overrides, its hyperparameters
as flat scalars, and the HParams plugin data that lists it in the HParams tab.

What TensorBoard's HParams tab reads (the `hparams` plugin): per run, a *session start info*
(the run's hyperparameters) and a *session end info* (its status), and, as the run's metric
values, the last value of each scalar tag of that run. `log_hparams` writes exactly these.

It writes no *experiment* summary (the list of hyperparameters and metrics of the whole
experiment), which Lightning's `TensorBoardLogger.log_hyperparams(params, metrics)` and
torch's `SummaryWriter.add_hparams` do: TensorBoard takes one run's experiment summary,
arbitrarily, for every run in the log directory, so runs whose hyperparameters differ (a
gradient run's `optim.lr`, a solver run's `solver.l2`) lose columns. Without it TensorBoard
builds the table from the union of all runs' session start infos.

Nor does it log the final metrics under their own tags, which `log_hyperparams(params,
metrics)` does (at step 0 unless told): a `val/rmse` point after the epochs' points adds a
second point at some epoch of the curve (a line drawn back to it) and would be what the
HParams tab shows for `val/rmse`. The final metrics go under `hparams/<name>` instead
(`hparams/val/rmse`, `hparams/test/rmse`), one point each; the curves keep one point per
epoch.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from mfzoo.training.building import plain_dict

log = logging.getLogger(__name__)

Scalar = int | float | str | bool

# a run name longer than this is cut and given a hash (a directory name may have 255 bytes;
# TensorBoard's run list shows about this much)
MAX_NAME_LENGTH = 100
HASH_LENGTH = 10  # hex digits of sha1: 40 bits, no collision in any realistic sweep
# characters kept in a run name: safe in a directory name on Linux, macOS and Windows and in
# a shell word; every other character becomes "_"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+@%-]")

# config subtrees whose scalar leaves are hyperparameters; loss, optim and scheduler only on
# the gradient path, solver only on the closed-form path (the solver replaces the other three)
GRADIENT_SECTIONS = ("model", "loss", "optim", "scheduler")
SOLVER_SECTIONS = ("model", "solver")
DATA_SKIP = ("_target_", "eval_batch_size")  # the data module's class, and a speed knob
SINGLE_KEYS = ("trainer.max_epochs", "seed")
METRIC_PREFIX = "hparams/"


def run_name(overrides: Sequence[str]) -> str:
    """A run's name from its Hydra task overrides: `loss=bpr,model.dim=64` (the overrides in
    their order, joined by commas), `"default"` without overrides.

    Characters outside `A-Z a-z 0-9 . _ = , + @ % -` become `_` (`data/source=ml1m` ->
    `data_source=ml1m`); such a name, and one longer than `MAX_NAME_LENGTH`, ends in `-` and
    the first `HASH_LENGTH` hex digits of the sha1 of the joined overrides, and is cut to
    `MAX_NAME_LENGTH` before them. So two different override lists never get the same name:
    a name without a hash is the joined overrides themselves, and a name with one carries a
    hash of them."""
    joined = ",".join(overrides)
    if not joined:
        return "default"
    name = _UNSAFE.sub("_", joined)
    if name == joined and len(name) <= MAX_NAME_LENGTH and name not in (".", ".."):
        return name
    digest = hashlib.sha1(joined.encode("utf-8")).hexdigest()[:HASH_LENGTH]
    return f"{name[: MAX_NAME_LENGTH - HASH_LENGTH - 1]}-{digest}"


def hparams(cfg: DictConfig, overrides: Sequence[str]) -> dict[str, Scalar]:
    """A run's hyperparameters as flat scalars with dotted keys, for TensorBoard's HParams tab:

    - `overrides`: the Hydra task overrides joined by commas ("" without);
    - every scalar leaf of `model`, and of `loss`, `optim`, `scheduler` (gradient runs) or
      `solver` (closed-form runs, `cfg.solver` set), and of `data` (source, split with its
      fractions, sampler, batch_size, ...; not the data module's class nor eval_batch_size);
    - `trainer.max_epochs` and `seed`.

    A `_target_` value is shortened to its last name and stored under its parent's key
    (`model: MF`, `data.split: RandomSplit`, `solver.sampler: UniformSampler`); other keys
    starting with `_` (`_partial_`) are left out, and so is whatever is not an int, float,
    str or bool (lists, null). Interpolations are resolved."""
    out: dict[str, Scalar] = {"overrides": ",".join(overrides)}
    sections = SOLVER_SECTIONS if cfg.get("solver") else GRADIENT_SECTIONS
    for section in sections:
        node = cfg.get(section)
        if isinstance(node, DictConfig):
            _flatten(plain_dict(node, section), section, out)
    data = cfg.get("data")
    if isinstance(data, DictConfig):
        container = plain_dict(data, "data")
        _flatten({k: v for k, v in container.items() if k not in DATA_SKIP}, "data", out)
    for key in SINGLE_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if _is_scalar(value):
            out[key] = value
    return out


def log_hparams(
    logger: TensorBoardLogger,
    cfg: DictConfig,
    overrides: Sequence[str],
    metrics: Mapping[str, float],
    step: int = 0,
) -> None:
    """Lists the run in TensorBoard's HParams tab with `hparams(cfg, overrides)` and the final
    `metrics` (e.g. {"val/rmse": .., "test/rmse": ..}), with a Lightning `TensorBoardLogger`;
    does nothing for any other logger.

    Writes into the logger's event file the HParams plugin's session start info (the
    hyperparameters) and session end info (status success), and each metric as the scalar
    `hparams/<name>` at `step` (e.g. the last epoch); rewrites the logger's `hparams.yaml` with
    the hyperparameters (Lightning writes it once, empty, when training starts). See the
    module docstring for why no experiment summary and no metric under its own tag."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if not isinstance(logger, TensorBoardLogger):
        return
    params = hparams(cfg, overrides)
    writer = logger.experiment  # a torch SummaryWriter
    file_writer = writer._get_file_writer()  # what Lightning's own log_hyperparams writes through
    file_writer.add_summary(_session_start(params), step)
    for name, value in metrics.items():
        writer.add_scalar(f"{METRIC_PREFIX}{name}", float(value), step)
    file_writer.add_summary(_session_end(), step)
    writer.flush()
    logger.hparams.update(params)
    path = Path(logger.log_dir) / logger.NAME_HPARAMS_FILE
    path.write_text(yaml.safe_dump(dict(params), sort_keys=True))
    log.debug("hparams of %s: %d values, metrics %s", logger.log_dir, len(params), sorted(metrics))


# -- internals ------------------------------------------------------------------------------
def _is_scalar(value: object) -> bool:
    return isinstance(value, (bool, int, float, str))


def _flatten(node: Mapping, prefix: str, out: dict[str, Scalar]) -> None:
    for key, value in node.items():
        key = str(key)
        if key == "_target_":
            out[prefix] = str(value).rsplit(".", 1)[-1]
        elif key.startswith("_"):
            continue
        elif isinstance(value, Mapping):
            _flatten(value, f"{prefix}.{key}", out)
        elif _is_scalar(value):
            out[f"{prefix}.{key}"] = value


def _summary(tag: str, **plugin_data: Any) -> Any:
    """A TensorBoard `Summary` holding the HParams plugin data `plugin_data` under `tag`."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.metadata import PLUGIN_DATA_VERSION, PLUGIN_NAME
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = HParamsPluginData(version=PLUGIN_DATA_VERSION, **plugin_data).SerializeToString()
    metadata = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content)
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])


def _session_start(params: Mapping[str, Scalar]) -> Any:
    """The session start info: each value as a bool, number or string (a bool is not a number
    here, as it would be for torch's `hparams`)."""
    from tensorboard.plugins.hparams.metadata import SESSION_START_INFO_TAG
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionStartInfo

    info = SessionStartInfo()  # no start time: the run started before this is called
    for key, value in params.items():
        if isinstance(value, bool):
            info.hparams[key].bool_value = value
        elif isinstance(value, (int, float)):
            info.hparams[key].number_value = float(value)
        else:
            info.hparams[key].string_value = str(value)
    return _summary(SESSION_START_INFO_TAG, session_start_info=info)


def _session_end():
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.metadata import SESSION_END_INFO_TAG
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionEndInfo

    return _summary(
        SESSION_END_INFO_TAG,
        session_end_info=SessionEndInfo(status=Status.STATUS_SUCCESS, end_time_secs=time.time()),
    )
