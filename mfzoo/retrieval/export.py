"""Export factors for a serving process that has numpy and nothing else.

A directory holds

    user_factors.npy   U [n_users, D'] float32
    item_factors.npy   V [n_items, D'] float32
    ids.json           {"user_ids": [...], "item_ids": [...]  (raw ids, in row order),
                        "n_users", "n_items", "dim", "dtype", "score", "format_version"}

and the score of raw user a for raw item b is U[row(a)] · V[row(b)] — the model's exact score,
biases included, because the rows are the augmented `user_factors()` / `item_factors()`.
`load_factors` uses only numpy and json.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mfzoo.models.contract import Factorised, missing

FORMAT_VERSION = 1
SCORE = "score(user, item) = user_factors[row of user] @ item_factors[row of item]"


@dataclass(frozen=True)
class ExportedFactors:
    """Loaded factors: `user_factors` [n_users, D'], `item_factors` [n_items, D'], raw ids in
    row order, and the rest of ids.json in `meta`."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    user_ids: list[Any]
    item_ids: list[Any]
    meta: dict[str, Any]

    def user_row(self) -> dict[Any, int]:
        """raw user id -> row."""
        return {raw: row for row, raw in enumerate(self.user_ids)}

    def item_row(self) -> dict[Any, int]:
        """raw item id -> row."""
        return {raw: row for row, raw in enumerate(self.item_ids)}


@torch.no_grad()
def export_factors(
    model: nn.Module,
    directory: str | Path,
    user_ids: Sequence[Any] | np.ndarray,
    item_ids: Sequence[Any] | np.ndarray,
) -> Path:
    """Write `model.user_factors()` / `item_factors()` and the raw ids (e.g. `train.user_ids`,
    `train.item_ids`) to `directory` (created if missing). Returns the directory.

    Raises:
        ContractError: a model that is not `Factorised` (its scores are no dot products).
        ValueError: id counts that do not match the factor rows, or repeated ids.
    """
    if not isinstance(model, Factorised):
        raise missing(model, Factorised, "factor export")
    users = model.user_factors().detach().cpu().float().numpy()  # [n_users, D']
    items = model.item_factors().detach().cpu().float().numpy()  # [n_items, D']
    if users.shape[1] != items.shape[1]:
        raise ValueError(f"user and item factors differ in width: {users.shape} vs {items.shape}")
    raw_users, raw_items = _json_ids(user_ids, "user"), _json_ids(item_ids, "item")
    for what, raw, rows in (("user", raw_users, users), ("item", raw_items, items)):
        if len(raw) != len(rows):
            raise ValueError(f"{len(raw)} {what} ids for {len(rows)} {what} factor rows")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "user_factors.npy", np.ascontiguousarray(users))
    np.save(directory / "item_factors.npy", np.ascontiguousarray(items))
    meta = {
        "format_version": FORMAT_VERSION,
        "score": SCORE,
        "dtype": "float32",
        "n_users": len(users),
        "n_items": len(items),
        "dim": int(users.shape[1]),
        "model": type(model).__name__,
        "user_ids": raw_users,
        "item_ids": raw_items,
    }
    (directory / "ids.json").write_text(json.dumps(meta))
    return directory


def load_factors(directory: str | Path, mmap: bool = False) -> ExportedFactors:
    """Read what `export_factors` wrote (numpy and json only; `mmap` maps the arrays
    read-only instead of loading them)."""
    directory = Path(directory)
    meta = json.loads((directory / "ids.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory}: unknown format_version {meta.get('format_version')!r}")
    mode: Literal["r"] | None = "r" if mmap else None
    users = np.load(directory / "user_factors.npy", mmap_mode=mode)
    items = np.load(directory / "item_factors.npy", mmap_mode=mode)
    if users.shape != (meta["n_users"], meta["dim"]) or items.shape != (
        meta["n_items"],
        meta["dim"],
    ):
        raise ValueError(
            f"{directory}: arrays {users.shape}, {items.shape} do not match ids.json "
            f"({meta['n_users']}, {meta['n_items']}, dim {meta['dim']})"
        )
    user_ids, item_ids = meta.pop("user_ids"), meta.pop("item_ids")
    return ExportedFactors(users, items, user_ids, item_ids, meta)


def _json_ids(ids: Sequence[Any] | np.ndarray, what: str) -> list[Any]:
    """Raw ids as JSON values (numpy scalars to Python); repeated ids raise."""
    raw = np.asarray(ids).tolist()
    if not isinstance(raw, list) or any(isinstance(x, (list, dict)) for x in raw):
        raise ValueError(f"{what} ids must be a 1-D sequence of scalars")
    if len(set(raw)) != len(raw):
        raise ValueError(f"{what} ids are not unique")
    return raw
