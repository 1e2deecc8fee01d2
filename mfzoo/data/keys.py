"""Distinct (row, col) pairs as sorted keys and as CSR rows: the one place where events become a
sparse pattern (exclusions of a ranking, the training matrices of the solvers, membership sets).

A pair (r, c) of an [n_rows, n_cols] id space has the key r · n_cols + c; sorting the keys sorts
the pairs by row, then by column, so the distinct sorted keys are the entries of a CSR matrix
in order:

    indptr[r] = #{keys < r · n_cols},   indices = keys mod n_cols.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class CSRRows(NamedTuple):
    """The distinct pairs as CSR rows: row r holds `indices[indptr[r]:indptr[r + 1]]`
    (ascending), with `values` the sum of each pair's values (None when none were given)."""

    indptr: Tensor  # [n_rows + 1] int64
    indices: Tensor  # [P] int64
    values: Tensor | None  # [P]


def pair_keys(rows: Tensor, cols: Tensor, n_cols: int) -> Tensor:
    """Sorted distinct keys row · n_cols + col of the pairs (rows[n], cols[n]) [N], on their
    device: repeated pairs count once, and membership of any pairs is one `searchsorted`."""
    return torch.unique(rows.long() * n_cols + cols.long(), sorted=True)  # [P]


def csr_rows(
    rows: Tensor, cols: Tensor, n_rows: int, n_cols: int, values: Tensor | None = None
) -> CSRRows:
    """The distinct pairs (rows[n], cols[n]) [N] as CSR rows of an [n_rows, n_cols] matrix, on
    the pairs' device; with `values` [N], each distinct pair's value is the sum of its events'
    (accumulated in the values' dtype)."""
    if values is None:
        keys = pair_keys(rows, cols, n_cols)  # [P]
        summed = None
    else:
        keys, inverse = torch.unique(
            rows.long() * n_cols + cols.long(), sorted=True, return_inverse=True
        )  # [P], [N]
        summed = values.new_zeros(len(keys)).index_add_(0, inverse, values)  # [P]
    counts = torch.bincount(keys // n_cols, minlength=n_rows)  # [n_rows]
    indptr = torch.zeros(n_rows + 1, dtype=torch.int64, device=keys.device)  # [n_rows + 1]
    torch.cumsum(counts, 0, out=indptr[1:])
    return CSRRows(indptr, keys % n_cols, summed)
