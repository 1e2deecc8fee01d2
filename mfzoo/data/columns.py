"""The columns of an interaction log, converted to their storage dtypes and checked after the cast.

Values are stored as float32, timestamps as int64 seconds, ids as contiguous codes into the
sorted distinct raw ids. A check runs on what is stored, not on what was given: a rating of
1e39 is finite as a float64 but inf as a float32, a timestamp of 1e30 fits a float64 but not
an int64. Every error is a `DataError` naming the data set, the column and the first bad row
(`row_offset` is added to the row index, so a file reader can report file lines).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from typing import cast

import numpy as np

from mfzoo import native
from mfzoo.data.errors import DataError

log = logging.getLogger(__name__)

FLOAT32_MAX = float(np.finfo(np.float32).max)  # about 3.4e38
FLOAT32_TINY = float(np.finfo(np.float32).smallest_subnormal)  # about 1.4e-45
# int64 holds [-2^63, 2^63); both bounds are exact float64 numbers
_INT64_LOW, _INT64_HIGH = -(2.0**63), 2.0**63
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def values_column(values: object, name: str, row_offset: int = 0, copy: bool = True) -> np.ndarray:
    """`values` as float32 [N]; `DataError` for a non-number, NaN, inf, or a number beyond the
    float32 range (|x| > 3.4e38 becomes inf when stored, a nonzero |x| below about 1e-45
    becomes 0). `copy=False`: a float32 array of finite values is returned itself, not a copy."""
    if (
        not copy
        and isinstance(values, np.ndarray)
        and values.dtype == np.float32
        and values.ndim == 1
        and np.isfinite(values).all()
    ):
        return values
    numbers = _float64(values, name, "value", row_offset, finite=False)  # [N]
    with np.errstate(over="ignore", under="ignore"):
        stored = numbers.astype(np.float32)  # [N]
    # NaN or inf as given, or beyond float32: the first such row is named, whichever it is
    over = ~np.isfinite(stored)
    if over.any():
        row = int(np.flatnonzero(over)[0])
        if not np.isfinite(numbers[row]):
            _refuse_non_finite(numbers, name, "value", row_offset)
        over &= np.isfinite(numbers)
        raise DataError(
            f"{name}: column 'value' has {int(over.sum())} value(s) beyond the float32 range they "
            f"are stored in (|x| <= {FLOAT32_MAX:.4g}), first at row {row + row_offset}: "
            f"{float(numbers[row])!r}"
        )
    # a number too close to 0 for float32 would be stored as 0, another value
    lost = (stored == 0) & (numbers != 0)
    if lost.any():
        row = int(np.flatnonzero(lost)[0])
        raise DataError(
            f"{name}: column 'value' has {int(lost.sum())} nonzero value(s) too small for the "
            f"float32 they are stored in (they would become 0; |x| >= {FLOAT32_TINY:.4g}), "
            f"first at row {row + row_offset}: {float(numbers[row])!r}"
        )
    return stored


def timestamps_column(
    timestamps: object, name: str, row_offset: int = 0, copy: bool = True
) -> np.ndarray:
    """`timestamps` as int64 seconds [N] (`copy=False`: an int64 array itself, not a copy).

    Integers are taken exactly (no detour through float64, which would round those above
    2^53); numbers outside the int64 range, NaN, inf and non-numbers raise `DataError`.
    `datetime64` arrays are converted to seconds. Fractional seconds are floored to whole
    seconds (the storage unit) with a logged warning: flooring keeps the order of events
    (t1 < t2 gives floor(t1) <= floor(t2)); events within one second then tie, and ties are
    broken by row order wherever order matters.
    """
    arr = np.asarray(timestamps)
    if not isinstance(timestamps, np.ndarray) and arr.dtype.kind == "f":
        # a sequence numpy read as floats (a list, a tuple, an Arrow array)
        given = cast("Collection[object]", timestamps)
        if any(map(_is_int, given)):
            arr = _object_array(given)  # ints mixed with floats: keep the ints exact
    _one_dimensional(arr, name, "timestamp")
    if arr.dtype.kind == "M":  # datetime64
        nat = np.isnat(arr)
        if nat.any():
            row = int(np.flatnonzero(nat)[0])
            raise DataError(
                f"{name}: column 'timestamp' is missing (NaT) at row {row + row_offset}"
            )
        return arr.astype("datetime64[s]").astype(np.int64)
    if arr.dtype.kind in "bi":
        return arr.astype(np.int64, copy=copy)
    if arr.dtype.kind == "u":
        exact = np.ones(len(arr), dtype=bool)
    elif arr.dtype.kind == "O":
        exact = np.fromiter(map(_is_int, arr), dtype=bool, count=len(arr))
    else:
        exact = np.zeros(len(arr), dtype=bool)
    seconds = np.zeros(len(arr), dtype=np.int64)  # [N]
    if exact.any():  # integers: range-checked and taken as they are
        ints = arr[exact]
        if arr.dtype.kind == "u":
            big = ints > np.uint64(_INT64_MAX)
        else:
            big = np.fromiter(
                (not _INT64_MIN <= int(x) <= _INT64_MAX for x in ints), dtype=bool, count=len(ints)
            )
        if big.any():
            k = int(np.flatnonzero(big)[0])
            raise _out_of_range(
                name, int(big.sum()), int(np.flatnonzero(exact)[k]) + row_offset, int(ints[k])
            )
        seconds[exact] = ints.astype(np.int64) if arr.dtype.kind == "u" else [int(x) for x in ints]
    if exact.all():
        return seconds
    rest = arr
    if exact.any():
        rest = arr.copy()
        rest[exact] = 0  # taken above
    numbers = _float64(rest, name, "timestamp", row_offset)  # [N]
    out = ~((numbers >= _INT64_LOW) & (numbers < _INT64_HIGH))
    if out.any():
        row = int(np.flatnonzero(out)[0])
        raise _out_of_range(name, int(out.sum()), row + row_offset, float(numbers[row]))
    whole = np.floor(numbers)  # [N]
    fractional = whole != numbers
    if fractional.any():
        row = int(np.flatnonzero(fractional)[0])
        log.warning(
            "%s: column 'timestamp' has %d fractional value(s), first at row %d: %r; floored to "
            "whole seconds",
            name,
            int(fractional.sum()),
            row + row_offset,
            float(numbers[row]),
        )
    seconds[~exact] = whole[~exact].astype(np.int64)
    return seconds


def encode_ids(
    raw: object, column: str, name: str, row_offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct raw ids of a column and every row's code into them ([N], int32 or
    int64).

    Missing ids (None, NaN, inf, "") and ids of types that cannot be ordered together
    (numbers mixed with strings) raise `DataError`. A list is taken id by id: numpy would
    turn [3, "a"] into ["3", "a"] and drop a trailing NUL of a string."""
    arr = ids_array(raw)
    _one_dimensional(arr, name, column)
    missing = _missing(arr)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(f"{name}: column '{column}' is missing at row {row + row_offset}")
    if arr.dtype.kind in "iu" and len(arr):
        table = _dense_codes(arr)
        if table is not None:
            return table
    try:
        ids, codes = np.unique(arr, return_inverse=True)
    except TypeError:  # e.g. 3 < "a": ids of several types
        first = type(arr[0])
        row = next(k for k, x in enumerate(arr) if not isinstance(x, first))
        raise DataError(
            f"{name}: column '{column}' mixes id types ({first.__name__} at row {row_offset}, "
            f"{type(arr[row]).__name__} at row {row + row_offset}: {plain(arr[row])!r}); ids must "
            "be all numbers or all strings"
        ) from None
    return ids, codes.reshape(-1).astype(np.int64)


def _dense_codes(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """`np.unique(arr, return_inverse=True)` for integers of a span at most a few times their
    count, without a sort: a presence table over [min, max] and its running count, O(N)
    (MovieLens-25M's 25M user ids: a 163k-entry table). The codes are int32 (the span is
    below 2^31), half the memory of np.unique's. None for a wider span."""
    low, high = arr.min(), arr.max()
    span = int(high) - int(low) + 1
    if span > max(4 * len(arr), 1 << 20) or span >= 2**31:
        return None
    lib = native.data_library(len(arr)) if arr.dtype == np.int64 else None
    if lib is not None:  # the same in C: two passes over the ids, one over the table
        present, codes = native.dense_codes(lib, arr, int(low), span)
        return present.astype(arr.dtype) + low, codes
    offsets = np.empty(len(arr), dtype=np.int32)  # [N] in [0, span)
    # exact: every difference is below the span
    np.subtract(arr, low, out=offsets, casting="unsafe")
    present = np.zeros(span, dtype=bool)
    present[offsets] = True
    rank = np.cumsum(present, dtype=np.int32)  # [span] code + 1 of each present offset
    rank -= 1
    ids = np.flatnonzero(present).astype(arr.dtype) + low  # [U] sorted, in the ids' dtype
    return ids, np.take(rank, offsets, out=offsets, mode="clip")  # in place: offsets are in range


def plain(x: object) -> object:
    """A numpy scalar as the Python value it holds (so that messages read 3, not np.int64(3))."""
    return x.item() if isinstance(x, np.generic) else x


# helpers ------------------------------------------------------------------------------------
def _one_dimensional(arr: np.ndarray, name: str, column: str) -> None:
    if arr.ndim != 1:
        raise DataError(
            f"{name}: column '{column}' must hold one value per row, got an array of shape "
            f"{arr.shape}"
        )


def ids_array(raw: object) -> np.ndarray:
    """`raw` as an array, each id as given: an object array where `np.asarray` would change
    an id."""
    if isinstance(raw, np.ndarray):
        return raw
    arr = np.asarray(raw)
    if arr.dtype.kind == "U":
        given = cast("Collection[object]", raw)  # not an ndarray, read by numpy as strings
        if any(not isinstance(x, str) or x.endswith("\0") for x in given):
            arr = _object_array(given)
    return arr


def _object_array(raw: Collection[object]) -> np.ndarray:
    arr = np.empty(len(raw), dtype=object)
    arr[:] = list(raw)
    return arr


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _out_of_range(name: str, count: int, row: int, value: object) -> DataError:
    return DataError(
        f"{name}: column 'timestamp' has {count} value(s) outside the int64 range of seconds they "
        f"are stored in (about +-9.2e18), first at row {row}: {value!r}"
    )


def _missing(arr: np.ndarray) -> np.ndarray:
    """Rows whose id is missing: None, NaN or inf, or the empty string. [N] bool"""
    if arr.dtype.kind == "f":
        return ~np.isfinite(arr)
    if arr.dtype.kind in "US":
        return arr == arr.dtype.type()
    if arr.dtype.kind == "O":
        return np.array(
            [
                x is None
                or (isinstance(x, (float, np.floating)) and not math.isfinite(x))
                or (isinstance(x, (str, bytes)) and len(x) == 0)
                for x in arr
            ],
            dtype=bool,
        )
    return np.zeros(len(arr), dtype=bool)


def _float64(
    arr: object, name: str, column: str, row_offset: int, finite: bool = True
) -> np.ndarray:
    """Numbers as float64 [N]; `DataError` for a non-number, and with `finite` for NaN or inf
    (first bad row named)."""
    arr = np.asarray(arr)
    _one_dimensional(arr, name, column)
    if arr.dtype.kind in "biuf":
        # read only: values are stored as a new float32 array
        numbers = arr.astype(np.float64, copy=False)
    else:
        numbers = np.empty(len(arr), dtype=np.float64)
        for row, x in enumerate(arr):
            try:
                numbers[row] = float(x)
            except (TypeError, ValueError):
                raise DataError(
                    f"{name}: column '{column}' row {row + row_offset} is not a number: "
                    f"{plain(x)!r}"
                ) from None
            except OverflowError:  # an int beyond float64
                raise DataError(
                    f"{name}: column '{column}' row {row + row_offset} is too large for a number: "
                    f"{plain(x)!r}"
                ) from None
    if finite:
        _refuse_non_finite(numbers, name, column, row_offset)
    return numbers


def _refuse_non_finite(numbers: np.ndarray, name: str, column: str, row_offset: int) -> None:
    """`DataError` naming the count and the first row of NaN or inf in `numbers`, if any."""
    bad = ~np.isfinite(numbers)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name}: column '{column}' has {int(bad.sum())} non-finite value(s) (NaN/inf), "
            f"first at row {row + row_offset}: {numbers[row]}"
        )
