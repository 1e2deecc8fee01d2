"""Repeated rows: the same (user, item, timestamp) row twice, and the same (user, item) pair twice.

Two policies, applied in that order by `Interactions.from_arrays`:

- `DuplicatePolicy` for rows that repeat (user, item, timestamp): one event recorded twice.
- `PairPolicy` for a (user, item) pair that occurs in several rows (at different times, or
  without timestamps). For explicit ratings this is usually an artefact (a file concatenated
  with itself, re-ratings) and every split would put copies of one rating in train and test,
  so the default there is "error"; for implicit events (clicks, plays) repeats are data and
  the default is "keep".
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from typing import Literal

import numpy as np
import torch

from mfzoo import native
from mfzoo.data.columns import FLOAT32_MAX, plain
from mfzoo.data.errors import DataError

log = logging.getLogger(__name__)

DuplicatePolicy = Literal["keep_last", "keep_first", "error"]
PairPolicy = Literal["error", "mean", "last", "first", "sum", "max", "keep"]
DUPLICATE_POLICIES: tuple[str, ...] = ("keep_last", "keep_first", "error")
PAIR_POLICIES: tuple[str, ...] = ("error", "mean", "last", "first", "sum", "max", "keep")
_SHOWN_ROWS = 5  # rows of a repeated pair named in an error


def check_policies(duplicates: str = "keep_last", pair_duplicates: str = "keep") -> None:
    """`ValueError` naming the choices for an unknown policy."""
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(
            f"duplicates must be one of {', '.join(DUPLICATE_POLICIES)}; got {duplicates!r}"
        )
    if pair_duplicates not in PAIR_POLICIES:
        raise ValueError(
            f"pair_duplicates must be one of {', '.join(PAIR_POLICIES)}; got {pair_duplicates!r}"
        )


def stable_order(*keys: np.ndarray) -> np.ndarray:
    """The row order by the first key, ties by the next ones, then by row (`np.lexsort` with
    the keys reversed): stable sorts from the last key to the first, each one torch's
    multithreaded sort, several times faster than lexsort on millions of rows."""
    order = torch.arange(len(keys[0]))
    for key in reversed(keys):
        k = torch.from_numpy(np.ascontiguousarray(key))[order]
        order = order[torch.sort(k, stable=True).indices]
    return order.numpy()


def repeats_a_pair(u: np.ndarray, i: np.ndarray, n_items: int) -> bool:
    """Whether some (user, item) pair occurs in more than one row (u [N], i [N] codes). The
    pair keys (int32 where user x item fits) are grouped by ranges of users, which share no
    pair (one O(N) pass: a stable sort of 16-bit range numbers is a radix sort), and each
    group is sorted in place on its own thread. Repeated rows repeat a pair, so without one
    neither policy has anything to do."""
    if len(u) < 2:
        return False
    n_users = int(u.max()) + 1
    lib = native.data_library(len(u)) if u.dtype == i.dtype == np.int32 else None
    if lib is not None:  # O(N) in C: the rows counted into user groups, items marked per group
        found = native.pair_repeats(lib, u, i, n_users, n_items)
        if found is not None:
            return found
    small = n_users * n_items < 2**31
    keys = u.astype(np.int32 if small else np.int64)  # [N] a copy, sorted below
    keys *= n_items
    keys += i
    parts = min(os.cpu_count() or 1, 16) if len(u) >= 1 << 20 else 1
    if parts > 1:
        # [N] the user range of each row
        group = (u.astype(np.int64) * parts // n_users).astype(np.int16)
        keys = keys[np.argsort(group, kind="stable")]
        bounds = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=parts))])
        pieces = [keys[bounds[k] : bounds[k + 1]] for k in range(parts)]
        with concurrent.futures.ThreadPoolExecutor(parts) as pool:
            return any(pool.map(_sorted_repeats, pieces))
    return _sorted_repeats(keys)


def _sorted_repeats(keys: np.ndarray) -> bool:
    keys.sort()  # in place (numpy releases the GIL)
    return bool((keys[1:] == keys[:-1]).any())


def drop_repeated_rows(
    u: np.ndarray, i: np.ndarray, t: np.ndarray | None, policy: str, name: str, row_offset: int
) -> np.ndarray | None:
    """Row positions to keep, or None when no row repeats (user, item, timestamp).

    "keep_last" / "keep_first" keep one row of each repeated (user, item, timestamp) and log
    how many were dropped; "error" raises `DataError` naming the first repeated row. Without
    timestamps rows have no identity beyond (user, item): that is `merge_pairs`' business."""
    if t is None:
        return None
    # by (user, item), then time, then row
    order = stable_order(u * np.int64(max(int(i.max()) + 1, 1)) + i, t)
    su, si, st = u[order], i[order], t[order]
    same = (su[1:] == su[:-1]) & (si[1:] == si[:-1]) & (st[1:] == st[:-1])
    if not same.any():
        return None
    n_dup = int(same.sum())
    # order is stable, so within a group the last position is the last row in the file
    first_dup = int(order[1:][same].min())
    if policy == "error":
        raise DataError(
            f"{name}: {n_dup} duplicate (user, item, timestamp) row(s), first at row "
            f"{first_dup + row_offset}"
        )
    drop = order[:-1][same] if policy == "keep_last" else order[1:][same]
    log.warning(
        "%s: dropped %d duplicate (user, item, timestamp) row(s) (policy %s)", name, n_dup, policy
    )
    keep = np.ones(len(u), dtype=bool)
    keep[drop] = False
    return np.flatnonzero(keep)


def merge_pairs(
    u: np.ndarray,
    i: np.ndarray,
    values: np.ndarray,
    t: np.ndarray | None,
    policy: str,
    *,
    name: str,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Apply a `PairPolicy` to the rows (u [N], i [N], values [N] float32, t [N] or None).

    Returns the row positions to keep (increasing) and their values (float32), or None when
    nothing changes (no pair repeats, or "keep"). Each repeated pair becomes one row:

    - "last" / "first": the pair's latest / earliest event, as it is. Events are ordered by
      timestamp when there are timestamps, else by row; equal timestamps by row.
    - "mean" / "sum" / "max": the values of the pair's events aggregated (in float64, then
      stored as float32; a sum beyond float32 raises `DataError`), in the row of the pair's
      latest event, whose timestamp the merged row keeps.
    - "error": `DataError` naming the first repeated pair in row order (raw user and item ids,
      its rows as `rows` numbers them), how many pairs repeat, and the choices.

    The number of merged rows is logged.
    """
    if policy == "keep" or len(u) < 2:
        return None
    keys = u * np.int64(len(item_ids)) + i  # [N]
    n = len(keys)
    # by pair, then by time (if any), then by row: each pair's events in the order of events
    order = stable_order(keys) if t is None else stable_order(keys, t)  # [N]
    sk = keys[order]
    starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])  # [P] first position of each pair
    if len(starts) == n:
        return None
    sizes = np.diff(np.r_[starts, n])  # [P]
    repeated = sizes > 1
    extra = n - len(starts)
    if policy == "error":
        raise _repeated_pair_error(
            order, starts, sizes, u, i, name, user_ids, item_ids, rows, extra
        )
    ends = starts + sizes - 1
    keep = order[starts] if policy == "first" else order[ends]  # [P] the first / latest event
    kept_values = values[keep]  # [P]
    if policy in ("mean", "sum", "max"):
        ordered = values[order].astype(np.float64)  # [N]
        if policy == "max":
            merged = np.maximum.reduceat(ordered, starts)  # [P]
        else:
            merged = np.add.reduceat(ordered, starts)  # [P]
            if policy == "mean":
                merged /= sizes
        with np.errstate(over="ignore"):
            kept_values = merged.astype(np.float32)
        over = ~np.isfinite(kept_values)
        if over.any():
            k = int(np.flatnonzero(over)[0])
            user, item = user_ids[u[keep[k]]], item_ids[i[keep[k]]]
            raise DataError(
                f"{name}: column 'value': the {policy} of pair ({plain(user)!r}, {plain(item)!r}) "
                f"is {float(merged[k]):.4g}, beyond the float32 range it is stored in (|x| <= "
                f"{FLOAT32_MAX:.4g})"
            )
    elif policy not in ("first", "last"):
        raise ValueError(
            f"pair_duplicates must be one of {', '.join(PAIR_POLICIES)}; got {policy!r}"
        )
    log.info(
        "%s: merged %d row(s) of %d repeated (user, item) pair(s) into one row each "
        "(pair_duplicates=%s); %d row(s) fewer",
        name,
        int(sizes[repeated].sum()),
        int(repeated.sum()),
        policy,
        extra,
    )
    value_at = np.zeros(n, dtype=np.float32)
    value_at[keep] = kept_values
    kept = np.zeros(n, dtype=bool)
    kept[keep] = True
    rows_kept = np.flatnonzero(kept)  # O(N), where sorting `keep` was a sort
    return rows_kept, np.ascontiguousarray(value_at[rows_kept])  # kept rows in their input order


def _repeated_pair_error(
    order: np.ndarray,
    starts: np.ndarray,
    sizes: np.ndarray,
    u: np.ndarray,
    i: np.ndarray,
    name: str,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    rows: np.ndarray,
    extra: int,
) -> DataError:
    """The error for policy "error": the repeated pair whose first row comes first."""
    repeated = np.flatnonzero(sizes > 1)  # [R] pairs
    first_rows = np.minimum.reduceat(order, starts)[repeated]  # [R] each repeated pair's first row
    g = repeated[np.argmin(first_rows)]
    where = np.sort(order[starts[g] : starts[g] + sizes[g]])  # its rows
    shown = ", ".join(str(int(rows[r])) for r in where[:_SHOWN_ROWS])
    more = f" and {len(where) - _SHOWN_ROWS} more" if len(where) > _SHOWN_ROWS else ""
    user, item = user_ids[u[where[0]]], item_ids[i[where[0]]]
    return DataError(
        f"{name}: (user, item) pair ({plain(user)!r}, {plain(item)!r}) occurs {len(where)} times, "
        f"at rows {shown}{more}; {len(repeated)} pair(s) repeat ({extra} extra row(s)). Copies of "
        "one rating would land in several split parts. Choose pair_duplicates "
        "(data.pair_duplicates in a config): mean, last, first, sum or max merge each pair into "
        "one row; keep keeps every row as a separate event (splits keep a pair's rows in one part)"
    )
