"""`Interactions`: a validated log of (user, item, value, timestamp) events.

Users and items are contiguous ids `0..n_users-1`, `0..n_items-1`; `user_ids[u]` and
`item_ids[i]` give the raw ids back. Subsets made by splits share the id space of the
set they came from, so a model sized from the full set serves every part.

Optional side information: `user_features` / `item_features` (`mfzoo.data.features.Features`),
tables with one row per model id (row u describes `user_ids[u]`). Every part of a split
shares the tables of the set it came from (`subset`, `concat`, `to` keep them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from mfzoo.data.columns import encode_ids, ids_array, timestamps_column, values_column
from mfzoo.data.duplicates import (
    DuplicatePolicy,
    PairPolicy,
    check_policies,
    drop_repeated_rows,
    merge_pairs,
    repeats_a_pair,
)
from mfzoo.data.errors import DataError
from mfzoo.data.features import Features
from mfzoo.data.keys import csr_rows, pair_keys

__all__ = ["DuplicatePolicy", "Interactions", "PairPolicy", "id_dtype"]


def id_dtype(n_users: int, n_items: int) -> torch.dtype:
    """The dtype of stored ids: int32 when both tables have fewer than 2^31 ids, else int64."""
    return torch.int32 if max(n_users, n_items) < 2**31 else torch.int64


@dataclass(frozen=True)
class Interactions:
    """Events as aligned tensors: users [N], items [N] (int32, or int64 when an id table has
    2^31 ids or more: `id_dtype`), values [N] float32, timestamps [N] int64 (seconds) or None.
    Batches (`mfzoo.data.batch.Batch`) carry int64 ids; code that does arithmetic on these
    columns widens them first (`.long()`), as `mfzoo.data.keys` does. `user_ids` / `item_ids` map
    back to raw ids. `user_features` [n_users rows] / `item_features` [n_items rows]: optional
    feature tables indexed by model id (set them with `with_features`).

    A set is not modified after construction (methods return new sets), so derived matrices
    (`csr`) are built once and kept."""

    users: Tensor
    items: Tensor
    values: Tensor
    timestamps: Tensor | None
    user_ids: np.ndarray
    item_ids: np.ndarray
    name: str = "interactions"
    user_features: Features | None = field(default=None, repr=False, compare=False)
    item_features: Features | None = field(default=None, repr=False, compare=False)
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # ids are stored compact (4 bytes per row and side) when both id tables fit int32
        wanted = id_dtype(len(self.user_ids), len(self.item_ids))
        for side in ("users", "items"):
            ids = getattr(self, side)
            if ids.dtype != wanted and not ids.is_floating_point():
                object.__setattr__(self, side, ids.to(wanted))

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
        pair_duplicates: PairPolicy | None = None,
        row_offset: int = 0,
        copy: bool = True,
    ) -> Interactions:
        """Encode raw ids to contiguous ids and validate.

        `values` default to 1 (implicit events). Columns are checked after the cast to their
        storage dtype (`mfzoo.data.columns`): non-numbers, NaN, inf, values beyond float32,
        timestamps outside int64 and missing or mixed-type ids raise `DataError` naming `name`,
        the column and the first bad row (`row_offset` is added to the index, so a file reader
        can report file lines); fractional timestamps are floored to whole seconds.

        Rows that repeat the same (user, item, timestamp) follow `duplicates`: "keep_last" /
        "keep_first" drop the others and log how many, "error" raises. Then a (user, item)
        pair in several rows follows `pair_duplicates` (see `mfzoo.data.duplicates.merge_pairs`):
        "error" raises naming the first repeated pair and its rows; "mean", "sum", "max" merge
        each pair's values into one row holding the pair's latest timestamp; "last" / "first"
        keep the latest / earliest event (by timestamp, else by row); "keep" keeps every row.
        The default (None) is "keep" without `values` (implicit events: repeats are data) and
        "error" with values (ratings: a repeated pair is a defect until said otherwise).

        `copy=False` lets the set keep an int64 `timestamps` array as it is (a reader that made
        the array and gives it up saves a copy); by default every stored array is new.
        """
        if pair_duplicates is None:
            pair_duplicates = "keep" if values is None else "error"
        check_policies(duplicates, pair_duplicates)
        users, items = ids_array(users), ids_array(items)
        n = len(users)
        if len(items) != n:
            raise DataError(f"{name}: {n} users but {len(items)} items")
        if n == 0:
            raise DataError(f"{name}: no interactions")
        # values and timestamps are checked before the ids (their errors come first); their
        # lengths, by `from_codes`
        vals = None if values is None else values_column(values, name, row_offset, copy=copy)
        t = (
            None
            if timestamps is None
            else timestamps_column(timestamps, name, row_offset, copy=copy)
        )
        user_ids, u = encode_ids(users, "user", name, row_offset)
        item_ids, i = encode_ids(items, "item", name, row_offset)
        return cls.from_codes(
            u,
            i,
            user_ids,
            item_ids,
            vals,
            t,
            name=name,
            duplicates=duplicates,
            pair_duplicates=pair_duplicates,
            row_offset=row_offset,
            _checked=True,
        )

    @classmethod
    def from_codes(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        values: np.ndarray | None = None,
        timestamps: np.ndarray | None = None,
        *,
        name: str = "interactions",
        duplicates: DuplicatePolicy = "keep_last",
        pair_duplicates: PairPolicy | None = None,
        row_offset: int = 0,
        _checked: bool = False,
    ) -> Interactions:
        """A set from ids already encoded: `users[n]` indexes `user_ids` (sorted, distinct raw
        ids), `items[n]` indexes `item_ids`; what `from_arrays` does after its encoding (and
        what readers that encode ids themselves, as `read_table` does with Arrow's dictionary
        encoding, call). Values and timestamps are checked as in `from_arrays`; codes outside
        the id tables raise `DataError`. Repeated rows and pairs follow the same policies; a
        set without a repeated (user, item) pair skips them after one sort of the pair keys."""
        if pair_duplicates is None:
            pair_duplicates = "keep" if values is None else "error"
        check_policies(duplicates, pair_duplicates)
        u, i = (
            np.ascontiguousarray(
                c if np.asarray(c).dtype in (np.int32, np.int64) else np.asarray(c, np.int64)
            )
            for c in (users, items)
        )  # int32 codes stay int32: stored as they are
        n = len(u)
        if len(i) != n:
            raise DataError(f"{name}: {n} users but {len(i)} items")
        if n == 0:
            raise DataError(f"{name}: no interactions")
        for what, codes, table in (("user", u, user_ids), ("item", i, item_ids)):
            low, high = int(codes.min()), int(codes.max())
            if low < 0 or high >= len(table):
                raise DataError(
                    f"{name}: {what} codes span [{low}, {high}], outside the {len(table)} {what} "
                    "ids"
                )
        # `_checked`: `from_arrays` has converted and checked them already (not twice)
        vals = (
            np.ones(n, dtype=np.float32)
            if values is None
            else values
            if _checked
            else values_column(values, name, row_offset)
        )
        if len(vals) != n:
            raise DataError(f"{name}: {n} users but {len(vals)} values")
        t = (
            None
            if timestamps is None
            else timestamps
            if _checked
            else timestamps_column(timestamps, name, row_offset)
        )
        if t is not None and len(t) != n:
            raise DataError(f"{name}: {n} users but {len(t)} timestamps")
        if repeats_a_pair(u, i, len(item_ids)):
            rows = np.arange(row_offset, row_offset + n)  # [N] row numbers for messages
            keep = drop_repeated_rows(u, i, t, duplicates, name, row_offset)
            if keep is not None:
                u, i, vals, rows = u[keep], i[keep], vals[keep], rows[keep]
                t = None if t is None else t[keep]
            merged = merge_pairs(
                u,
                i,
                vals,
                t,
                pair_duplicates,
                name=name,
                user_ids=user_ids,
                item_ids=item_ids,
                rows=rows,
            )
            if merged is not None:
                keep, vals = merged
                u, i = u[keep], i[keep]
                t = None if t is None else t[keep]
        return cls(
            users=torch.from_numpy(np.ascontiguousarray(u)),
            items=torch.from_numpy(np.ascontiguousarray(i)),
            values=torch.from_numpy(np.ascontiguousarray(vals, dtype=np.float32)),
            timestamps=None if t is None else torch.from_numpy(np.ascontiguousarray(t)),
            user_ids=user_ids,
            item_ids=item_ids,
            name=name,
        )

    def with_pair_policy(self, policy: PairPolicy) -> Interactions:
        """This set with `policy` applied to its repeated (user, item) pairs (as in
        `from_arrays`, rows numbered from 0), in the same id space; itself when nothing changes."""
        check_policies(pair_duplicates=policy)
        u, i = self.users.cpu().numpy(), self.items.cpu().numpy()
        t = None if self.timestamps is None else self.timestamps.cpu().numpy()
        merged = merge_pairs(
            u,
            i,
            self.values.cpu().numpy(),
            t,
            policy,
            name=self.name,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            rows=np.arange(len(u)),
        )
        if merged is None:
            return self
        keep, values = merged
        return replace(
            self.subset(torch.from_numpy(keep)), values=torch.from_numpy(values).to(self.device)
        )

    def with_features(
        self, user_features: Features | None = None, item_features: Features | None = None
    ) -> Interactions:
        """This set with feature tables attached (None leaves a side's table as it is). A
        table must have one row per model id (`n_users` / `n_items` rows, in model-id order:
        see `Features.align`); otherwise `DataError` naming the side and both sizes."""
        for side, table, n in (
            ("user", user_features, self.n_users),
            ("item", item_features, self.n_items),
        ):
            if table is not None and len(table) != n:
                raise DataError(
                    f"{self.name}: the {side} feature table has {len(table)} rows, but there are "
                    f"{n} {side}s (one row per model id, in id order: use Features.align)"
                )
        return replace(
            self,
            user_features=self.user_features
            if user_features is None
            else user_features.to(self.device),
            item_features=self.item_features
            if item_features is None
            else item_features.to(self.device),
        )

    # sizes -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.users.shape[0]

    @property
    def n_users(self) -> int:
        """The number of user ids (the rows of the user table), seen or not."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """The number of item ids (the rows of the item table), seen or not."""
        return len(self.item_ids)

    @property
    def device(self) -> torch.device:
        """The device the interaction tensors are on."""
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
        """Rows of `parts` (which share one id space and feature tables) one after the other."""
        first = parts[0]
        if any(p.n_users != first.n_users or p.n_items != first.n_items for p in parts):
            raise ValueError("concat needs parts of one id space (made by subset/split of one set)")
        for side in ("user_features", "item_features"):
            table = getattr(first, side)
            if any(
                not (
                    getattr(p, side) is table
                    or (table is not None and table.equals(getattr(p, side)))
                )
                for p in parts[1:]
            ):
                raise ValueError(
                    f"concat needs parts with the same {side} (made by subset/split of one set)"
                )
        stamps = [p.timestamps for p in parts if p.timestamps is not None]
        # a part without timestamps leaves the joined set without them
        times = torch.cat(stamps) if len(stamps) == len(parts) else None
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
        tables = [t.offsets for t in (self.user_features, self.item_features) if t is not None]
        if all(
            t.device == torch.device(device) for t in (self.users, self.items, self.values, *tables)
        ):
            return self
        return replace(
            self,
            users=self.users.to(device),
            items=self.items.to(device),
            values=self.values.to(device),
            timestamps=None if self.timestamps is None else self.timestamps.to(device),
            user_features=None if self.user_features is None else self.user_features.to(device),
            item_features=None if self.item_features is None else self.item_features.to(device),
        )

    def to_scipy(self, by: Literal["user", "item"] = "user") -> sp.csr_matrix:
        """CSR matrix, users x items (`by="user"`) or items x users (`by="item"`), on the CPU.
        Repeated (user, item) events are summed."""
        indptr, indices, values = self._rows(by)
        shape = (self.n_users, self.n_items) if by == "user" else (self.n_items, self.n_users)
        return sp.csr_matrix(
            (values.cpu().numpy(), indices.cpu().numpy(), indptr.cpu().numpy()), shape=shape
        )

    def csr(self, by: Literal["user", "item"] = "user") -> Tensor:
        """The same matrix as `to_scipy(by)`, as a torch sparse CSR tensor on `self.device`;
        built on the first call and kept (closed-form solvers ask for it every sweep); do not
        modify it in place. Its indices are int32 (8 bytes per entry with the float32 value)
        unless it has 2^31 entries or more; widen them (`.long()`) before arithmetic."""
        if ("csr", by) not in self._derived:
            indptr, indices, values = self._rows(by)
            shape = (self.n_users, self.n_items) if by == "user" else (self.n_items, self.n_users)
            # compact: 4 bytes per index, as the ids
            if len(indices) < 2**31 and max(shape) < 2**31:
                indptr, indices = indptr.to(torch.int32), indices.to(torch.int32)
            self._derived["csr", by] = torch.sparse_csr_tensor(
                indptr, indices, values, size=shape, check_invariants=False
            )
        return self._derived["csr", by]

    def _rows(self, by: str) -> tuple[Tensor, Tensor, Tensor]:
        """The distinct pairs as CSR rows by user or by item, values summed (`keys.csr_rows`):
        (indptr, indices, values)."""
        values = self.values.float()
        if by == "user":
            rows = csr_rows(self.users, self.items, self.n_users, self.n_items, values)
        elif by == "item":
            rows = csr_rows(self.items, self.users, self.n_items, self.n_users, values)
        else:
            raise ValueError(f"by must be 'user' or 'item', got {by!r}")
        assert rows.values is not None  # summed from the values given
        return rows.indptr, rows.indices, rows.values

    def pair_keys(self) -> Tensor:
        """Sorted distinct keys user · n_items + item of the (user, item) pairs, on this set's
        device (repeated events count once): membership of any pairs is one `searchsorted`."""
        return pair_keys(self.users, self.items, self.n_items)  # [P]

    # id maps -----------------------------------------------------------------------
    def encode_users(self, raw: np.ndarray) -> np.ndarray:
        """Contiguous ids for raw user ids; raises `DataError` naming unknown ids."""
        return _encode(self.user_ids, raw, "user")

    def encode_items(self, raw: np.ndarray) -> np.ndarray:
        """Contiguous ids for raw item ids; raises `DataError` naming unknown ids."""
        return _encode(self.item_ids, raw, "item")

    def rating_range(self) -> tuple[float, float]:
        """(min, max) of the values."""
        return float(self.values.min()), float(self.values.max())


def _encode(table: np.ndarray, raw: np.ndarray, what: str) -> np.ndarray:
    raw = np.atleast_1d(np.asarray(raw, dtype=table.dtype))
    pos = np.searchsorted(table, raw).clip(max=len(table) - 1)
    bad = table[pos] != raw
    if bad.any():
        raise DataError(f"unknown {what} id(s): {raw[bad][:10].tolist()}")
    return pos.astype(np.int64)
