"""`Interactions`: a validated log of (user, item, value, timestamp) events.

Users and items are contiguous ids `0..n_users-1`, `0..n_items-1`; `user_ids[u]` and
`item_ids[i]` give the raw ids back. Subsets made by splits share the id space of the
set they came from, so a model sized from the full set serves every part.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from mfzoo.data.errors import DataError

log = logging.getLogger(__name__)

DuplicatePolicy = Literal["keep_last", "keep_first", "error"]


@dataclass(frozen=True)
class Interactions:
    """Events as aligned tensors: users [N] int64, items [N] int64, values [N] float32,
    timestamps [N] int64 (seconds) or None. `user_ids` / `item_ids` map back to raw ids.

    A set is not modified after construction (methods return new sets), so derived matrices
    (`csr`) are built once and kept."""

    users: Tensor
    items: Tensor
    values: Tensor
    timestamps: Tensor | None
    user_ids: np.ndarray
    item_ids: np.ndarray
    name: str = "interactions"
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # construction ------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        values: np.ndarray | None = None,
        timestamps: np.ndarray | None = None,
        *,
        name: str = "interactions",
        duplicates: DuplicatePolicy = "keep_last",
        row_offset: int = 0,
    ) -> Interactions:
        """Encode raw ids to contiguous ids and validate.

        `values` default to 1 (implicit events). Non-finite or non-numeric values raise
        `DataError` naming `name` and the first bad row (`row_offset` is added to the index,
        so a file reader can report file lines). Rows that repeat the same (user, item,
        timestamp) follow `duplicates`: "keep_last" / "keep_first" drop the others and log
        how many, "error" raises. The same (user, item) at different times is kept: repeated
        events are data.
        """
        users, items = np.asarray(users), np.asarray(items)
        n = len(users)
        if len(items) != n:
            raise DataError(f"{name}: {n} users but {len(items)} items")
        if n == 0:
            raise DataError(f"{name}: no interactions")
        vals = np.ones(n, dtype=np.float32) if values is None else _numeric(values, name, "value", row_offset)
        if len(vals) != n:
            raise DataError(f"{name}: {n} users but {len(vals)} values")
        ts = None if timestamps is None else _numeric(timestamps, name, "timestamp", row_offset, dtype=np.float64)
        for label, arr in (("user", users), ("item", items)):
            missing = _missing(arr)
            if missing.any():
                row = int(np.flatnonzero(missing)[0])
                raise DataError(f"{name}: column '{label}' is missing at row {row + row_offset}")
        user_ids, u = np.unique(users, return_inverse=True)
        item_ids, i = np.unique(items, return_inverse=True)
        u, i = u.astype(np.int64), i.astype(np.int64)
        t = None if ts is None else ts.astype(np.int64)
        keep = _deduplicate(u, i, t, duplicates, name, row_offset)
        if keep is not None:
            u, i, vals = u[keep], i[keep], vals[keep]
            t = None if t is None else t[keep]
        return cls(
            users=torch.from_numpy(u),
            items=torch.from_numpy(i),
            values=torch.from_numpy(np.ascontiguousarray(vals, dtype=np.float32)),
            timestamps=None if t is None else torch.from_numpy(t),
            user_ids=user_ids,
            item_ids=item_ids,
            name=name,
        )

    # sizes -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.users.shape[0]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def device(self) -> torch.device:
        return self.users.device

    def __repr__(self) -> str:
        return (
            f"Interactions({self.name!r}, n={len(self)}, n_users={self.n_users}, "
            f"n_items={self.n_items}, timestamps={self.timestamps is not None})"
        )

    # views -------------------------------------------------------------------------
    def subset(self, index: Tensor | np.ndarray, name: str | None = None) -> Interactions:
        """Rows `index` (a boolean mask or integer positions), same id space."""
        index = torch.as_tensor(index, device=self.device)
        return replace(
            self,
            users=self.users[index],
            items=self.items[index],
            values=self.values[index],
            timestamps=None if self.timestamps is None else self.timestamps[index],
            name=name or self.name,
        )

    @staticmethod
    def concat(parts: list[Interactions], name: str | None = None) -> Interactions:
        """Rows of `parts` (which share one id space) one after the other."""
        first = parts[0]
        if any(p.n_users != first.n_users or p.n_items != first.n_items for p in parts):
            raise ValueError("concat needs parts of one id space (made by subset/split of one set)")
        times = None if any(p.timestamps is None for p in parts) else torch.cat([p.timestamps for p in parts])
        return replace(
            first,
            users=torch.cat([p.users for p in parts]),
            items=torch.cat([p.items for p in parts]),
            values=torch.cat([p.values for p in parts]),
            timestamps=times,
            name=name or first.name,
        )

    def to(self, device: torch.device | str) -> Interactions:
        """This set on `device`: itself (with its derived matrices) if it is there already."""
        if all(t.device == torch.device(device) for t in (self.users, self.items, self.values)):
            return self
        return replace(
            self,
            users=self.users.to(device),
            items=self.items.to(device),
            values=self.values.to(device),
            timestamps=None if self.timestamps is None else self.timestamps.to(device),
        )

    def to_scipy(self, by: Literal["user", "item"] = "user") -> sp.csr_matrix:
        """CSR matrix, users x items (`by="user"`) or items x users (`by="item"`).
        Repeated (user, item) events are summed."""
        u, i = self.users.cpu().numpy(), self.items.cpu().numpy()
        v = self.values.cpu().numpy()
        if by == "user":
            m = sp.csr_matrix((v, (u, i)), shape=(self.n_users, self.n_items))
        elif by == "item":
            m = sp.csr_matrix((v, (i, u)), shape=(self.n_items, self.n_users))
        else:
            raise ValueError(f"by must be 'user' or 'item', got {by!r}")
        m.sum_duplicates()
        return m

    def csr(self, by: Literal["user", "item"] = "user") -> Tensor:
        """The same matrix as `to_scipy(by)`, as a torch sparse CSR tensor on `self.device`;
        built on the first call and kept (closed-form solvers ask for it every sweep); do not
        modify it in place."""
        if ("csr", by) not in self._derived:
            m = self.to_scipy(by)
            self._derived["csr", by] = torch.sparse_csr_tensor(
                torch.from_numpy(m.indptr.astype(np.int64)),
                torch.from_numpy(m.indices.astype(np.int64)),
                torch.from_numpy(m.data.astype(np.float32)),
                size=m.shape,
                check_invariants=False,
            ).to(self.device)
        return self._derived["csr", by]

    def pair_keys(self) -> Tensor:
        """Sorted distinct keys user · n_items + item of the (user, item) pairs, on this set's
        device (repeated events count once): membership of any pairs is one `searchsorted`."""
        return torch.unique(self.users * self.n_items + self.items, sorted=True)  # [P]

    # id maps -----------------------------------------------------------------------
    def encode_users(self, raw: np.ndarray) -> np.ndarray:
        """Contiguous ids for raw user ids; raises `DataError` naming unknown ids."""
        return _encode(self.user_ids, raw, "user")

    def encode_items(self, raw: np.ndarray) -> np.ndarray:
        """Contiguous ids for raw item ids; raises `DataError` naming unknown ids."""
        return _encode(self.item_ids, raw, "item")

    def rating_range(self) -> tuple[float, float]:
        return float(self.values.min()), float(self.values.max())


def _encode(table: np.ndarray, raw: np.ndarray, what: str) -> np.ndarray:
    raw = np.atleast_1d(np.asarray(raw, dtype=table.dtype))
    pos = np.searchsorted(table, raw).clip(max=len(table) - 1)
    bad = table[pos] != raw
    if bad.any():
        raise DataError(f"unknown {what} id(s): {raw[bad][:10].tolist()}")
    return pos.astype(np.int64)


def _missing(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "f":
        return ~np.isfinite(arr)
    if arr.dtype.kind == "O":
        return np.array([x is None or (isinstance(x, float) and not np.isfinite(x)) or x == "" for x in arr])
    return np.zeros(len(arr), dtype=bool)


def _numeric(arr: np.ndarray, name: str, column: str, row_offset: int, dtype=np.float32) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        converted = np.empty(len(arr), dtype=np.float64)
        for row, x in enumerate(arr):
            try:
                converted[row] = float(x)
            except (TypeError, ValueError):
                raise DataError(f"{name}: column '{column}' row {row + row_offset} is not a number: {x!r}") from None
        arr = converted
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name}: column '{column}' has {int(bad.sum())} non-finite value(s) (NaN/inf), "
            f"first at row {row + row_offset}: {arr[row]}"
        )
    return arr.astype(dtype, copy=False)


def _deduplicate(
    u: np.ndarray, i: np.ndarray, t: np.ndarray | None, policy: str, name: str, row_offset: int
) -> np.ndarray | None:
    """Row positions to keep, or None when there is no duplicate (user, item, timestamp)."""
    if t is None:
        return None  # without times, repeated (user, item) rows are distinct events
    order = np.lexsort((t, i, u))
    su, si, st = u[order], i[order], t[order]
    same = (su[1:] == su[:-1]) & (si[1:] == si[:-1]) & (st[1:] == st[:-1])
    if not same.any():
        return None
    n_dup = int(same.sum())
    # order is stable, so within a group the last position is the last row in the file
    first_dup = int(order[1:][same].min())
    if policy == "error":
        raise DataError(
            f"{name}: {n_dup} duplicate (user, item, timestamp) row(s), first at row {first_dup + row_offset}"
        )
    if policy == "keep_last":
        drop = order[:-1][same]
    elif policy == "keep_first":
        drop = order[1:][same]
    else:
        raise ValueError(f"duplicates must be keep_last, keep_first or error, got {policy!r}")
    log.warning("%s: dropped %d duplicate (user, item, timestamp) row(s) (policy %s)", name, n_dup, policy)
    keep = np.ones(len(u), dtype=bool)
    keep[drop] = False
    return np.flatnonzero(keep)
