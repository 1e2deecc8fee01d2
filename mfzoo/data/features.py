"""`Features`: a side-information table (user or item attributes) with one row per model id.

A row holds a multi-hot categorical part over a named vocabulary ("genre=Drama",
"occupation=writer", "age=25-34") stored CSR-like, and an optional dense numeric part:

    offsets [n + 1] int64    row r's entries are positions offsets[r] .. offsets[r+1]-1
    indices [nnz]   int64    vocabulary entry of each position
    weights [nnz]   float32  its weight (1 for a plain multi-hot)
    dense   [n, d]  float32  numeric columns (or None), named by `dense_names`

Rows are aligned with the model ids of the `Interactions` they belong to (row u describes
`user_ids[u]`), so a model gathers a row by id and a batch gathers rows with one
`take(ids)`. The encoding is the one of `torch.nn.functional.embedding_bag`
(`input=indices, offsets=offsets[:-1], per_sample_weights=weights`), so pooling feature
embeddings is one call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from mfzoo.data.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["Features"]


@dataclass(frozen=True, eq=False)
class Features:
    """A feature table: `len(features)` rows, a categorical part (`offsets`, `indices`,
    `weights` over `vocabulary`) and an optional numeric part (`dense` [n, d], columns
    `dense_names`). Frozen: methods return new tables. See the module docstring."""

    offsets: Tensor
    indices: Tensor
    weights: Tensor
    vocabulary: tuple[str, ...]
    dense: Tensor | None = None
    dense_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "vocabulary", tuple(self.vocabulary))
        object.__setattr__(self, "dense_names", tuple(self.dense_names))
        if self.offsets.ndim != 1 or len(self.offsets) < 1:
            raise ValueError(f"offsets must be 1-D [n + 1], got shape {tuple(self.offsets.shape)}")
        if self.indices.shape != self.weights.shape or self.indices.ndim != 1:
            raise ValueError(
                f"indices and weights must be 1-D of one length, got {tuple(self.indices.shape)} "
                f"and {tuple(self.weights.shape)}"
            )
        if self.dense is not None and (
            self.dense.ndim != 2
            or self.dense.shape[0] != len(self)
            or self.dense.shape[1] != len(self.dense_names)
        ):
            raise ValueError(
                f"dense must be [{len(self)}, {len(self.dense_names)}] (rows x dense_names), "
                f"got {tuple(self.dense.shape)}"
            )

    # construction ----------------------------------------------------------------------
    @classmethod
    def from_columns(
        cls,
        n_rows: int,
        categorical: Mapping[str, Sequence[Sequence[str]]] | None = None,
        numeric: Mapping[str, np.ndarray] | None = None,
    ) -> Features:
        """A table of `n_rows` rows from named columns.

        `categorical[column][r]`: the values of row r in that column (a list: several for a
        multi-valued cell, none for an empty one); each distinct value becomes the vocabulary
        entry "column=value", weight 1 (the columns in the given order, values sorted within
        a column, so equal inputs give equal tables). `numeric[column]`: [n_rows] numbers,
        kept as they are in `dense` (a model standardises them if it wants)."""
        categorical, numeric = dict(categorical or {}), dict(numeric or {})
        vocabulary: list[str] = []
        code: dict[str, int] = {}
        per_row: list[list[int]] = [[] for _ in range(n_rows)]
        for column, cells in categorical.items():
            if len(cells) != n_rows:
                raise ValueError(
                    f"categorical column {column!r} has {len(cells)} rows, expected {n_rows}"
                )
            for value in sorted({str(v) for cell in cells for v in cell}):
                code[f"{column}={value}"] = len(vocabulary)
                vocabulary.append(f"{column}={value}")
            for r, cell in enumerate(cells):
                per_row[r].extend(sorted({code[f"{column}={v}"] for v in cell}))
        lengths = torch.tensor([len(r) for r in per_row], dtype=torch.int64)  # [n]
        offsets = torch.zeros(n_rows + 1, dtype=torch.int64)  # [n + 1]
        torch.cumsum(lengths, 0, out=offsets[1:])
        indices = torch.tensor([k for r in per_row for k in r], dtype=torch.int64)  # [nnz]
        dense = None
        if numeric:
            columns = []
            for column, values in numeric.items():
                values = np.asarray(values, dtype=np.float64)
                if values.shape != (n_rows,):
                    raise ValueError(
                        f"numeric column {column!r} has shape {values.shape}, expected ({n_rows},)"
                    )
                columns.append(values)
            dense = torch.from_numpy(np.stack(columns, axis=1).astype(np.float32))  # [n, d]
        return cls(
            offsets, indices, torch.ones(len(indices)), tuple(vocabulary), dense, tuple(numeric)
        )

    @classmethod
    def from_dense(cls, multi_hot: Tensor, vocabulary: Sequence[str]) -> Features:
        """A categorical table from a [n, V] matrix (non-zero entries kept with their weights)."""
        rows, cols = multi_hot.nonzero(as_tuple=True)  # row-major: sorted by row, then column
        offsets = torch.zeros(multi_hot.shape[0] + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(rows, minlength=multi_hot.shape[0]), 0, out=offsets[1:])
        return cls(offsets, cols, multi_hot[rows, cols].float(), tuple(vocabulary))

    # sizes -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.offsets.shape[0] - 1

    @property
    def n_categories(self) -> int:
        """Size of the categorical vocabulary."""
        return len(self.vocabulary)

    @property
    def n_dense(self) -> int:
        """Number of numeric columns."""
        return len(self.dense_names)

    @property
    def names(self) -> list[str]:
        """Every feature's name: the vocabulary, then the numeric columns."""
        return [*self.vocabulary, *self.dense_names]

    @property
    def device(self) -> torch.device:
        """The device the table's tensors are on."""
        return self.offsets.device

    def __repr__(self) -> str:
        return (
            f"Features(n={len(self)}, categories={self.n_categories}, dense={self.n_dense}, "
            f"nnz={len(self.indices)})"
        )

    # views -----------------------------------------------------------------------------
    def take(self, rows: Tensor) -> Features:
        """The rows `rows` (int64 ids of any shape, flattened row-major), as a new table:
        one gather per field, no loop over rows."""
        rows = rows.reshape(-1).to(self.device)  # [R]
        starts = self.offsets.index_select(0, rows)  # [R]
        lengths = self.offsets.index_select(0, rows + 1) - starts  # [R]
        offsets = torch.zeros(len(rows) + 1, dtype=torch.int64, device=self.device)  # [R + 1]
        torch.cumsum(lengths, 0, out=offsets[1:])
        total = int(offsets[-1])
        # position of entry j of new row r: starts[r] + j = (arange over all entries) + starts[r] -
        # offsets[r]
        shift = torch.repeat_interleave(starts - offsets[:-1], lengths, output_size=total)  # [T]
        positions = torch.arange(total, device=self.device) + shift  # [T]
        return replace(
            self,
            offsets=offsets,
            indices=self.indices.index_select(0, positions),
            weights=self.weights.index_select(0, positions),
            dense=None if self.dense is None else self.dense.index_select(0, rows),
        )

    def to(self, device: torch.device | str) -> Features:
        """This table on `device` (itself when it is there)."""
        if self.offsets.device == torch.device(device):
            return self
        return replace(
            self,
            offsets=self.offsets.to(device, non_blocking=True),
            indices=self.indices.to(device, non_blocking=True),
            weights=self.weights.to(device, non_blocking=True),
            dense=None if self.dense is None else self.dense.to(device, non_blocking=True),
        )

    def to_dense(self) -> Tensor:
        """The categorical part as a [n, V] float32 matrix (weights at the entries)."""
        out = torch.zeros(len(self), self.n_categories, device=self.device)
        rows = torch.repeat_interleave(
            torch.arange(len(self), device=self.device), self.offsets.diff()
        )  # [nnz]
        out.index_put_((rows, self.indices), self.weights.float(), accumulate=True)
        return out

    def row(self, r: int) -> tuple[list[str], list[float]]:
        """Row r as readable lists: its vocabulary entries and its numeric values."""
        a, b = int(self.offsets[r]), int(self.offsets[r + 1])
        names = [self.vocabulary[k] for k in self.indices[a:b].tolist()]
        return names, ([] if self.dense is None else self.dense[r].tolist())

    def equals(self, other: Features | None) -> bool:
        """Same vocabulary, names and contents (the same object trivially)."""
        if other is self:
            return True
        if other is None or (self.vocabulary, self.dense_names) != (
            other.vocabulary,
            other.dense_names,
        ):
            return False

        def same(a: Tensor | None, b: Tensor | None) -> bool:
            if a is None or b is None:
                return a is None and b is None
            return a.shape == b.shape and torch.equal(a.cpu(), b.cpu())

        return all(
            same(getattr(self, f), getattr(other, f))
            for f in ("offsets", "indices", "weights", "dense")
        )

    def align(self, table_ids: np.ndarray, ids: np.ndarray, what: str = "features") -> Features:
        """The rows of this table (row k describes raw id `table_ids[k]`) reordered to `ids`
        (the raw ids of a model's id space, e.g. `Interactions.item_ids`). Ids are matched by
        their text ("17" matches 17). An id without a row gets no categorical entries and the
        column means as numeric values (logged); rows of ids not in `ids` are dropped (logged).
        `DataError` (naming `what`) when no id has a row: the table describes something else."""
        keys = np.array([str(x) for x in table_ids], dtype=object)
        wanted = np.array([str(x) for x in ids], dtype=object)
        position = {k: r for r, k in enumerate(keys)}
        rows = np.array([position.get(k, -1) for k in wanted], dtype=np.int64)  # [n] -1: no row
        missing = int((rows < 0).sum())
        if len(wanted) and missing == len(wanted):
            raise DataError(
                f"{what}: none of the {len(wanted)} ids has a feature row (first id {wanted[0]!r}, "
                f"first row's id {keys[0] if len(keys) else None!r}): is the id column the right "
                "one?"
            )
        unused = len(keys) - len(set(rows[rows >= 0].tolist()))
        if missing:
            log.warning(
                "%s: %d of %d ids have no feature row (no categories, numeric columns at their "
                "mean)",
                what,
                missing,
                len(ids),
            )
        if unused:
            log.info(
                "%s: %d feature rows describe ids outside the interactions and are dropped",
                what,
                unused,
            )
        dense = None
        if self.dense is not None:
            # [n_table + 1, d]
            dense = torch.cat([self.dense, self.dense.double().mean(0, keepdim=True).float()])
        # + an empty row
        padded = replace(self, offsets=torch.cat([self.offsets, self.offsets[-1:]]), dense=dense)
        rows[rows < 0] = len(self)  # the appended empty row
        return padded.take(torch.from_numpy(rows))
