"""Building a model from its config, for mfzoo's models and for anyone else's.

`make_model(cfg.model, n_users, n_items)` instantiates the model with the sizes known only
after loading data, and checks the one required part of the contract (`Scorer`, see
`mfzoo.models.contract`).

mfzoo's model configs and experiments share a few hyperparameters (`SHARED_KEYS`: `dim`,
`biases`, `init_std`, `reg_exponent`). A model from another package that is selected with
`model._target_=pkg.Model` on top of the default model config would otherwise be handed keys
it never declared: those shared keys (and only those) are passed only when the model's
constructor takes them, and each one left out is logged. Losses likewise for the keys of
mfzoo's loss configs (`LOSS_SHARED_KEYS`: `l2`, `l2_bias`, `weighted`). Any other key the
constructor does not take is an error, as usual (a typo stays an error).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mfzoo.models.contract import Scorer, require

log = logging.getLogger(__name__)

SHARED_KEYS = ("dim", "biases", "init_std", "reg_exponent")
LOSS_SHARED_KEYS = ("l2", "l2_bias", "weighted")


def plain_dict(node: object, what: str = "config") -> dict[str, Any]:
    """A config mapping as a plain, resolved dict; `TypeError` naming `what` for a list or a
    scalar where a mapping was expected."""
    out = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not isinstance(out, dict):
        raise TypeError(f"{what} must be a mapping, got {type(out).__name__}: {out!r}")
    return {str(k): v for k, v in out.items()}


def _accepted(target: type) -> set[str] | None:
    """The keyword names `target`'s constructor takes; None when it takes **kwargs (a module
    that keeps `nn.Module.__init__`, whose **kwargs refuses any name, takes none)."""
    if (
        isinstance(target, type)
        and issubclass(target, nn.Module)
        and target.__init__ is nn.Module.__init__
    ):
        return set()
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def model_config(model_cfg: DictConfig) -> DictConfig:
    """`model_cfg` without the shared keys its target's constructor does not take."""
    return _without_shared(model_cfg, SHARED_KEYS, "model", "mfzoo's model configs")


def loss_config(loss_cfg: DictConfig) -> DictConfig:
    """`loss_cfg` without the shared loss keys its target's constructor does not take."""
    return _without_shared(loss_cfg, LOSS_SHARED_KEYS, "loss", "mfzoo's loss configs")


_told: set[tuple[str, tuple[str, ...]]] = set()  # each dropped set is logged once per process


def _without_shared(cfg: DictConfig, keys: tuple[str, ...], what: str, whose: str) -> DictConfig:
    target = cfg.get("_target_")
    if target is None:
        return cfg
    try:
        cls = get_class(str(target))
    except Exception:  # not importable or not a class: instantiate says so
        return cfg
    accepted = _accepted(cls)
    if accepted is None:
        return cfg
    dropped = tuple(k for k in keys if k in cfg and k not in accepted)
    if not dropped:
        return cfg
    if (str(target), dropped) not in _told:
        _told.add((str(target), dropped))
        log.info(
            "%s: %s takes no %s; not passed (shared keys of %s)",
            what,
            cls.__name__,
            ", ".join(dropped),
            whose,
        )
    kept = {k: v for k, v in plain_dict(cfg, what).items() if k not in dropped}
    return OmegaConf.create(kept)


def make_loss(loss_cfg: DictConfig, n_users: int, n_items: int) -> nn.Module:
    """The loss of `loss_cfg`; `n_users` and `n_items` are passed when its constructor takes
    them (a loss with per-item state), so such a loss needs no change to the glue."""
    loss_cfg = loss_config(loss_cfg)
    target = loss_cfg.get("_target_")
    try:
        accepted = _accepted(get_class(str(target))) if target is not None else set()
    except Exception:  # not importable or not a class: instantiate says so
        accepted = set()
    sizes = {
        k: v
        for k, v in (("n_users", n_users), ("n_items", n_items))
        if k not in loss_cfg and (accepted is None or k in accepted)
    }
    if accepted is None:  # **kwargs: sizes only when named explicitly
        sizes = {}
    return instantiate(loss_cfg, **sizes)


def make_model(model_cfg: DictConfig, n_users: int, n_items: int) -> nn.Module:
    """The model of `model_cfg` for `n_users` x `n_items`, checked to be a `Scorer`."""
    model = instantiate(model_config(model_cfg), n_users=n_users, n_items=n_items)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model: {model_cfg.get('_target_')} built a {type(model).__name__}, not a torch "
            "nn.Module"
        )
    require(model, Scorer, "training and evaluation")
    return model
