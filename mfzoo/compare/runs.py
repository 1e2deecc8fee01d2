"""Finding and reading run directories for `mfzoo-compare`.

A run directory (written by `mfzoo-train`) holds `config.yaml`, `metrics.json` and
`history.csv`; a multirun holds run directories as numbered, possibly nested, subdirectories.
`collect(paths)` finds every run under the given paths; `read_run` reads one into a `Run`
(overrides, flat metrics, resolved config), whose `Run.value(key)` is what the table groups by.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

MISSING = "—"  # the value of a key that a run neither overrides nor has in its config


class CompareError(Exception):
    """A problem with the command's input (no such directory, no run, unknown metric)."""


def _canonical(value: object) -> str:
    """A value as one string, the same for an override (`optim.lr=1e-3`) and the resolved
    config (`0.001`), so the two compare equal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    text = str(value).strip().strip("'\"")
    if text.lower() in ("true", "false", "null"):
        return text.lower()
    for number in (int, float):
        try:
            return str(number(text))
        except ValueError:
            pass
    return text


def parse_override(text: str) -> tuple[str, str]:
    """`model.dim=64` -> ("model.dim", "64"); `+key=v` and `++key=v` name `key`."""
    key, _, value = text.partition("=")
    return key.strip().lstrip("+"), _canonical(value)


@dataclass
class Run:
    """One run directory: its overrides, flat metrics and resolved config."""

    path: Path
    overrides: list[str]  # as given to mfzoo-train, e.g. ["model.dim=64", "seed=1"]
    metrics: dict[str, float]  # "val/rmse", "test/ndcg@10", "fit_seconds", "epochs", ...
    config: dict = field(default_factory=dict, repr=False)  # config.yaml ({} when absent)
    # config-group choices (.hydra/hydra.yaml)
    choices: dict = field(default_factory=dict, repr=False)
    problem: str | None = None  # why the run is incomplete; None when it is complete
    selected_on: str | None = None  # the validation metric that chose the checkpoint, when known

    @property
    def complete(self) -> bool:
        """Whether the run finished with its metrics (no `problem`)."""
        return self.problem is None

    def value(self, key: str) -> str:
        """The run's value of an override key: its own override (the last one wins), else
        the config-group choice, else the resolved config at that dotted path, else MISSING."""
        assigned = dict(parse_override(o) for o in self.overrides)
        if key in assigned:
            return assigned[key]
        if key in self.choices:
            return _canonical(self.choices[key])
        node: object = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return MISSING
            node = node[part]
        return MISSING if isinstance(node, dict) else _canonical(node)


def _load_yaml(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        log.warning("%s: unreadable (%s)", path, " ".join(str(err).split()))
        return default
    return loaded if isinstance(loaded, type(default)) else default


def flatten_metrics(raw: dict) -> dict[str, float]:
    """metrics.json as flat numbers: {"val": {"rmse": x}} -> {"val/rmse": x}; top-level
    numbers (fit_seconds, epochs, ...) keep their names. Strings, booleans and `seed` are not
    metrics."""

    def number(x: object) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    out: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out.update({f"{key}/{name}": float(x) for name, x in value.items() if number(x)})
        elif number(value) and key != "seed":
            out[key] = float(value)
    return out


def _checkpoint_monitor(config: dict) -> str | None:
    for callback in (config.get("callbacks") or {}).values():
        if isinstance(callback, dict) and "ModelCheckpoint" in str(callback.get("_target_", "")):
            return callback.get("monitor")
    return None


def read_run(path: Path) -> Run:
    """The run in directory `path`; incomplete (with `problem` set) when its metrics.json is
    missing or unreadable. Overrides come from metrics.json, else overrides.yaml, else
    .hydra/overrides.yaml."""
    config = _load_yaml(path / "config.yaml", {}) or _load_yaml(path / ".hydra" / "config.yaml", {})
    hydra = _load_yaml(path / ".hydra" / "hydra.yaml", {}).get("hydra") or {}
    raw: dict = {}
    problem = None
    try:
        raw = json.loads((path / "metrics.json").read_text())
        if not isinstance(raw, dict):
            problem, raw = "metrics.json is not a JSON object", {}
    except FileNotFoundError:
        failed = path / "failed.txt"
        if failed.is_file():
            why = (
                failed.read_text(errors="replace").strip().splitlines() or ["(no reason recorded)"]
            )[0]
            problem = f"failed: {why}"
        else:
            problem = "no metrics.json (killed, crashed or still running)"
    except (OSError, ValueError) as err:
        problem = f"metrics.json unreadable ({err})"
    overrides = raw.get("overrides")
    if not isinstance(overrides, list):
        overrides = _load_yaml(path / "overrides.yaml", []) or _load_yaml(
            path / ".hydra" / "overrides.yaml", []
        )
    overrides = [str(o) for o in overrides if not str(o).lstrip("+").startswith("hydra.")]
    selected = _checkpoint_monitor(config) or raw.get("optimized_metric")
    return Run(
        path,
        overrides,
        flatten_metrics(raw),
        config,
        (hydra.get("runtime") or {}).get("choices") or {},
        problem,
        selected,
    )


def _natural(text: str) -> list:
    """Sort key: "fold=10" after "fold=2"."""
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)
    ]


def _is_run(path: Path) -> bool:
    return any(
        (path / name).is_file() for name in ("config.yaml", "metrics.json", ".hydra/config.yaml")
    )


def _run_dirs(path: Path, visited: set[Path]) -> list[Path]:
    if path.resolve() in visited:
        return []
    visited.add(path.resolve())
    if _is_run(path):
        return [path]
    children = [c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")]
    children.sort(key=lambda c: _natural(c.name))
    return [run for child in children for run in _run_dirs(child, visited)]


def collect(paths: Iterable[str | Path]) -> list[Run]:
    """Every run directory under `paths` (searched recursively; a path may itself be a run),
    complete or not, in natural order, each directory once.

    Raises CompareError when a path does not exist or holds no run.
    """
    runs: list[Run] = []
    visited: set[Path] = set()
    for path in map(Path, paths):
        if not path.is_dir():
            raise CompareError(
                f"{path}: {'not a directory' if path.exists() else 'no such directory'}"
            )
        found = _run_dirs(path, visited)
        inside = [
            run
            for run in runs
            if path.resolve() in (run.path.resolve(), *run.path.resolve().parents)
        ]
        if not found and not inside:  # (runs found already, through another path, do count)
            raise CompareError(
                f"{path}: no run directory in it (none has config.yaml or metrics.json)"
            )
        runs.extend(read_run(d) for d in found)
    return runs
