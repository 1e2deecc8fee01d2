"""What loading a run may instantiate: the `_target_` allow-list.

A run directory can come from anywhere (a colleague's archive, a download). Loading it
(`load_run`, `mfzoo-recommend`, `mfzoo-similar`, `mfzoo-train resume=...`) reads tensors with
`torch.load(weights_only=True)` and instantiates the `_target_`s of its `config.yaml`; a
crafted config could name any callable (`os.system`, `torch.load` with `weights_only: false`).
So every `_target_` in a loaded config is checked, as a string, before anything is imported:

- mfzoo's own data sources, splits, samplers, models, losses, solvers and schedules;
- classes (not functions) of `torch.optim`, `lightning.pytorch.callbacks`,
  `lightning.pytorch.loggers`, and Lightning's `Trainer`;
- classes of the packages named in the config's `trusted_packages` (the glue records there
  the package of every other `_target_` a run was trained with: a user's own model package)
  or passed by the caller (`load_run(..., trust=["mypkg"])`). The standard library and the
  packages mfzoo builds on cannot be trusted this way: their classes include ones that run
  code or load pickles.

Anything else is refused with `RunError` naming the target and its place in the config.
Naming a package as trusted imports it when the run is loaded: name only packages you would
import yourself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mfzoo.training.rundir import RunError

# mfzoo's own targets (functions too: data sources are functions)
MFZOO = (
    "mfzoo.data.",
    "mfzoo.models.",
    "mfzoo.losses.",
    "mfzoo.solvers.",
    "mfzoo.training.schedules.",
    "mfzoo.training.averaging.",
    "mfzoo.evaluation.",
)
# classes only
CLASSES = (
    "torch.optim.",
    "lightning.pytorch.callbacks.",
    "lightning.pytorch.loggers.",
    "lightning.Trainer",
    "lightning.pytorch.Trainer",
    "lightning.pytorch.trainer.trainer.Trainer",
)
# never trusted through a config: their classes include ones that execute or unpickle
UNTRUSTABLE = frozenset(sys.stdlib_module_names) | {
    "torch",
    "lightning",
    "pytorch_lightning",
    "lightning_fabric",
    "hydra",
    "omegaconf",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "dill",
    "cloudpickle",
    "joblib",
    "pip",
    "setuptools",
    "pkg_resources",
    "_pytest",
    "pytest",
    "IPython",
    "yaml",
    "mfzoo",
}


def targets(cfg: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(config key, `_target_`) for every `_target_` in `cfg`, at any depth."""
    if isinstance(cfg, (DictConfig, dict)):
        items = cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig) else cfg.items()
        for key, value in items:
            place = f"{where}.{key!s}" if where else str(key)
            if key == "_target_":
                yield where or "(top)", str(value)
            else:
                yield from targets(value, place)
    elif isinstance(cfg, (ListConfig, list, tuple)):
        for n, value in enumerate(cfg):
            yield from targets(value, f"{where}[{n}]")


def _interpolations(cfg: Any, where: str = "") -> list[str]:
    """The keys of `cfg` whose values are interpolations (`${...}`), at any depth."""
    found = []
    if isinstance(cfg, DictConfig):
        for key in cfg:
            place = f"{where}.{key!s}" if where else str(key)
            if OmegaConf.is_interpolation(cfg, str(key)):
                found.append(place)
            else:
                found += _interpolations(cfg._get_node(key), place)
    elif isinstance(cfg, ListConfig):
        for n in range(len(cfg)):
            if OmegaConf.is_interpolation(cfg, n):
                found.append(f"{where}[{n}]")
            else:
                found += _interpolations(cfg._get_node(n), f"{where}[{n}]")
    return found


def _package(target: str) -> str:
    return target.split(".", 1)[0]


def foreign_packages(cfg: DictConfig) -> list[str]:
    """Top-level packages of the `_target_`s of `cfg` outside the built-in allow-list (what a
    run records in `trusted_packages` so that it can be loaded again)."""
    found = {_package(t) for _, t in targets(cfg) if not t.startswith(MFZOO + CLASSES)}
    return sorted(found)


def check(cfg: DictConfig, trust: Iterable[str] = (), source: str = "config.yaml") -> None:
    """`RunError` unless every `_target_` of `cfg` is allowed (see the module docstring)."""
    declared = cfg.get("trusted_packages") if isinstance(cfg, DictConfig) else None
    declared = [] if declared is None else declared
    if not isinstance(declared, (ListConfig, list)) or not all(
        isinstance(p, str) for p in declared
    ):
        raise RunError(
            f"{source}: trusted_packages must be a list of package names, got {declared!r}"
        )
    trusted = {str(p) for p in declared} | set(trust)
    refused = sorted(p for p in trusted if _package(p) in UNTRUSTABLE)
    if refused:
        raise RunError(
            f"{source}: trusted_packages names {', '.join(refused)}, which cannot be trusted to "
            "provide run classes (standard library or a package mfzoo builds on)"
        )
    interpolated = _interpolations(cfg)
    if interpolated:
        raise RunError(
            f"{source}: {interpolated[0]} holds an interpolation (${{...}}); a run's config is "
            "written resolved, so this one was edited: resolvers could read the environment or "
            "files"
        )
    for where, target in targets(cfg):
        if target.startswith(MFZOO):
            continue
        if not (target.startswith(CLASSES) or _package(target) in trusted):
            package = _package(target)
            hint = (
                ""
                if package in UNTRUSTABLE
                else f"; if {package} is your own package, trust it: --trust {package} on the "
                f"command line, load_run(..., trust_packages=['{package}']) in Python"
            )
            raise RunError(
                f"{source}: {where}._target_ is {target!r}, which loading a run does not "
                "instantiate (allowed: mfzoo's own, torch.optim, Lightning callbacks and loggers, "
                f"and classes of packages in trusted_packages){hint}"
            )
        _require_class(target, where, source)


def _require_class(target: str, where: str, source: str) -> None:
    import importlib.util

    from hydra._internal.utils import _locate

    try:
        obj = _locate(target)
    except Exception as err:  # ImportError, AttributeError, or whatever the import raised
        cause: BaseException = err
        # Hydra wraps the real reason
        while cause.__cause__ is not None and str(cause.__cause__) != "":
            cause = cause.__cause__
        reason = " ".join(str(cause).split()) or type(cause).__name__
        package = target.split(".")[0]
        hint = (
            f"; run from the folder that holds {package}/, or pip install it"
            if importlib.util.find_spec(package) is None
            else ""
        )
        raise RunError(
            f"{source}: {where}._target_ {target!r} cannot be imported ({type(cause).__name__}: "
            f"{reason}){hint}"
        ) from None
    if not isinstance(obj, type):
        raise RunError(
            f"{source}: {where}._target_ {target!r} is not a class; outside mfzoo, loading a run "
            "instantiates classes only"
        )


def with_trusted(cfg: DictConfig) -> DictConfig:
    """`cfg` with the packages of its foreign `_target_`s added to `trusted_packages` (what a
    run records when it is trained: the user ran that code, so its own run may load it)."""
    foreign = foreign_packages(cfg)
    declared = list(cfg.get("trusted_packages") or [])
    missing = [p for p in foreign if p not in declared]
    if not missing:
        return cfg
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    assert isinstance(out, DictConfig)  # made from a mapping
    out.trusted_packages = declared + missing
    return out
