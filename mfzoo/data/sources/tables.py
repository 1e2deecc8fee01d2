"""Interactions from CSV/TSV (plain or compressed) and Parquet files: `read_table` and its
parsers."""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import logging
import os
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import ArrowException
from typing_extensions import override

from mfzoo import native
from mfzoo.data.cache import cached
from mfzoo.data.columns import encode_ids, timestamps_column, values_column
from mfzoo.data.errors import DataError
from mfzoo.data.features import Features
from mfzoo.data.interactions import DuplicatePolicy, Interactions, PairPolicy
from mfzoo.data.sources import delimited
from mfzoo.data.sources.delimited import first_line as _first_line

Column = str | int
# the logger of the columns' checks, whose warnings a read rewrites with file lines (`_Located`)
columns_log = logging.getLogger("mfzoo.data.columns")


def read_table(
    path: str | os.PathLike,
    user_col: Column,
    item_col: Column,
    value_col: Column | None = None,
    time_col: Column | None = None,
    sep: str | None = None,
    header: bool = True,
    duplicates: DuplicatePolicy = "keep_last",
    pair_duplicates: PairPolicy | None = None,
    name: str | None = None,
    user_features: str | os.PathLike | None = None,
    item_features: str | os.PathLike | None = None,
    categorical_features: list[str] | tuple[str, ...] = (),
    feature_sep: str = "|",
    cache: bool | None = None,
) -> Interactions:
    """Read interactions from CSV/TSV (plain or compressed: .gz, .bz2, .zst, .lz4) or Parquet.

    Columns are header names or 0-based positions (names need `header=True`).
    `sep` defaults from the extension: `.tsv`/`.tab` tab, `.csv` comma, else sniffed.
    Ids that are all canonical integers become int64 raw ids, other ids stay strings.
    Timestamps are numbers of seconds or ISO-8601 datetimes ("2021-03-04T05:06:07",
    "2021-03-04", with or without offset; naive ones are UTC), stored as int64 seconds.
    Without `value_col` every value is 1. `duplicates` and `pair_duplicates` are the
    policies for repeated rows and repeated (user, item) pairs of `Interactions.from_arrays`
    (by default a pair rated twice is an error, and repeated events without a value column
    are kept). Bad input raises `DataError` naming the file, the column and the 1-based file
    line (Parquet: 1-based row); so does a file that cannot be read at all (empty, header
    only, not UTF-8 text, not Parquet, truncated).

    `user_features` / `item_features`: optional feature files (CSV/TSV/Parquet, with a header)
    read by `read_features`: the first column is the raw user / item id, every other column a
    feature (`categorical_features` names columns to take as categories even when they hold
    numbers, e.g. a zip code; `feature_sep` splits multi-valued cells). The tables are
    aligned with the model ids (`Interactions.user_features` / `item_features`).

    Reading is Arrow's (multithreaded; see `mfzoo.data.sources.delimited`): columns are typed
    on read and checked as whole arrays. `cache`: keep the parsed set in the data cache
    (`mfzoo.data.cache`) and load it from there while the file is unchanged: None (default)
    for files of at least 16 MiB, True always, False never. Feature files are read each time.
    """
    path = Path(path)
    _check_file(path)
    given = {"user": user_col, "item": item_col, "value": value_col, "timestamp": time_col}
    wanted = {role: col for role, col in given.items() if col is not None}
    options = {
        "columns": wanted,
        "sep": sep,
        "header": header,
        "duplicates": duplicates,
        "pair_duplicates": pair_duplicates,
    }
    data = cached(
        "read_table",
        [path],
        options,
        lambda: read_interactions(path, wanted, sep, header, duplicates, pair_duplicates),
        cache,
    )
    data = replace(data, name=name or path.name.split(".")[0])
    tables, columns = {}, set()
    for side, file, raw in (
        ("user", user_features, data.user_ids),
        ("item", item_features, data.item_ids),
    ):
        if file is not None:
            ids, table, names = _feature_file(file, 0, categorical_features, None, feature_sep)
            tables[f"{side}_features"] = table.align(ids, raw, f"{file} ({side} features)")
            columns |= set(names)
    unknown = sorted(set(categorical_features) - columns)
    if unknown:
        files = [str(f) for f in (user_features, item_features) if f is not None]
        raise DataError(
            f"categorical_features names column(s) {unknown} that no feature file has ({files})"
        )
    return data.with_features(**tables) if tables else data


def read_interactions(
    path: Path,
    wanted: dict[str, Column],
    sep: str | None = None,
    header: bool = True,
    duplicates: DuplicatePolicy = "keep_last",
    pair_duplicates: PairPolicy | None = None,
) -> Interactions:
    """The interactions of one delimited or Parquet file (`read_table` without its feature
    files and name): columns read by Arrow (`mfzoo.data.sources.delimited`, Parquet's reader),
    converted and checked as whole arrays; errors name the file, the column and the 1-based
    file line (Parquet: row)."""
    line_of: Callable[[int], int] | None  # 0-based data row -> file line (None: Parquet)
    if path.suffix.lower() == ".parquet":
        cols, labels = _parquet_columns(path, wanted, dictionary_roles=("user", "item"))
        offset, line_of = 1, None
    else:
        offset = 2 if header else 1  # row + offset is the file line when no line is blank
        try:
            read = delimited.read_columns(path, wanted, sep, header, _column_index)
            cols, labels, line_of = read.columns, read.labels, read.lines.line
        except delimited.Ragged:  # rows of several field counts: the row-by-row reader
            cells, labels, lines = _read_delimited(path, wanted, sep, header)
            cols, line_of = (
                {role: pa.chunked_array([pa.array(c)]) for role, c in cells.items()},
                (lambda k: int(lines[k]) if 0 <= k < len(lines) else k + offset),
            )
    relocate = _Located(labels, line_of, offset)  # warnings name lines too, as errors do
    columns_log.addFilter(relocate)
    try:
        return arrow_interactions(cols, str(path), duplicates, pair_duplicates, offset)
    except DataError as err:
        raise _locate(err, labels, line_of, offset) from None
    finally:
        columns_log.removeFilter(relocate)


class _Located(logging.Filter):
    """Rewrites a warning of `mfzoo.data.columns` (a fractional timestamp's row) as `_locate`
    rewrites errors: the file's column name and, for delimited files, the file line."""

    def __init__(
        self, labels: dict[str, str], line_of: Callable[[int], int | str] | None, offset: int
    ):
        super().__init__()
        self.labels, self.line_of, self.offset = labels, line_of, offset

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _locate_text(record.getMessage(), self.labels, self.line_of, self.offset)
        record.args = None
        return True


def arrow_interactions(
    cols: dict[str, pa.ChunkedArray | pa.Array],
    name: str,
    duplicates: DuplicatePolicy = "keep_last",
    pair_duplicates: PairPolicy | None = None,
    row_offset: int = 0,
) -> Interactions:
    """`Interactions` from Arrow columns by role ("user", "item", optional "value" and
    "timestamp"; ChunkedArrays or Arrays; the dict is emptied as they are converted): integer ids
    encoded by `Interactions.from_arrays` (a presence table), string ids (or dictionaries of
    strings) coded by a hash table over the trimmed cells (`_text_codes`, `_dictionary_ids`; ids
    that are all canonical integers become int64, as in `read_table`), numbers checked as whole
    arrays. An empty cell (null) raises `DataError` naming its column and row (`row_offset`
    added), as every other bad cell does."""
    # `cols` is consumed: each Arrow column is popped once converted, so that its memory is
    # freed then (peak memory: about one copy of the data, not two)
    n = len(cols["user"])
    if len(cols["item"]) != n:
        raise DataError(f"{name}: {n} users but {len(cols['item'])} items")
    values = None
    if "value" in cols:
        column = cols.pop("value")
        values = _float32(column)  # finite in float32, none stored as 0: checked already
        if values is None:  # a bad value, or text: the checking path converts it or names it
            numbers = _numbers(column, "value", name, row_offset, _as_float)
            values = values_column(numbers, name, row_offset, copy=False)
    # checked before the ids, as `from_arrays` orders its errors (`from_codes` takes them as
    # checked)
    times = (
        timestamps_column(
            _numbers(cols.pop("timestamp"), "timestamp", name, row_offset, _seconds),
            name,
            row_offset,
            copy=False,
        )
        if "timestamp" in cols
        else None
    )
    if _text(cols["user"].type) and _text(cols["item"].type):
        # text ids: the two columns coded at once, on two threads (the kernels and Arrow release
        # the GIL); an error names the user column first, as when they run in turn
        user_col, item_col = cols.pop("user"), cols.pop("item")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            pending = [
                pool.submit(_arrow_ids, column, role, name, row_offset)
                for column, role in ((user_col, "user"), (item_col, "item"))
            ]
            users, items = (future.result() for future in pending)
        del user_col, item_col
    else:
        users = _arrow_ids(cols.pop("user"), "user", name, row_offset)
        items = _arrow_ids(cols.pop("item"), "item", name, row_offset)
    if isinstance(users, np.ndarray) and isinstance(items, np.ndarray):
        return Interactions.from_arrays(
            users,
            items,
            values,
            times,
            name=name,
            duplicates=duplicates,
            pair_duplicates=pair_duplicates,
            row_offset=row_offset,
            copy=False,
        )
    user_ids, u = users if isinstance(users, tuple) else encode_ids(users, "user", name, row_offset)
    item_ids, i = items if isinstance(items, tuple) else encode_ids(items, "item", name, row_offset)
    return Interactions.from_codes(
        u,
        i,
        user_ids,
        item_ids,
        values,
        times,
        name=name,
        duplicates=duplicates,
        pair_duplicates=pair_duplicates,
        row_offset=row_offset,
        _checked=True,
    )


def arrow_numpy(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An Arrow column as numpy: numbers without nulls read from their buffers (one array, a view
    of a single chunk, a concatenation of several), anything else by `to_numpy`. The buffers
    are read directly because pyarrow's `to_numpy` imports pandas when it is installed (a
    quarter of a second, the whole read of a small file)."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    kind = col.type
    if col.null_count or not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return col.to_numpy(zero_copy_only=False)
    dtype = np.dtype(kind.to_pandas_dtype())
    views = [
        np.frombuffer(c.buffers()[1], dtype=dtype, count=len(c), offset=c.offset * dtype.itemsize)
        if len(c)
        else np.zeros(0, dtype=dtype)
        for c in chunks
    ]
    if not views:
        return np.zeros(0, dtype=dtype)
    return views[0] if len(views) == 1 else np.concatenate(views)


def _first_null(col: pa.ChunkedArray | pa.Array) -> int | None:
    """The 0-based row of a column's first null, or None."""
    if col.null_count == 0:
        return None
    return int(pc.index(pc.is_null(col), True).as_py())


def _numbers(
    col: pa.ChunkedArray | pa.Array,
    role: str,
    name: str,
    row_offset: int,
    convert: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """A value or timestamp column as numpy: numeric columns as they are (a null is an empty
    cell: `DataError`), text converted by `convert` (whose failures `from_arrays` names)."""
    if (row := _first_null(col)) is not None:
        raise DataError(f"{name}: column '{role}' is empty at row {row + row_offset}")
    kind = col.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        numbers = arrow_numpy(col)
        # a view of Arrow's memory is read-only
        return numbers if numbers.flags.writeable else numbers.copy()
    return convert(np.asarray(col.to_numpy(zero_copy_only=False), dtype=str))


def _float32(col: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """A float64 column without nulls as float32 [N], converted chunk by chunk on a thread pool
    (each chunk's rows stay in cache between the cast and the check), when every value is finite
    in float32 and no nonzero value became 0; else None."""
    if not pa.types.is_float64(col.type) or col.null_count:
        return None

    def convert(chunk: pa.Array, rows: np.ndarray) -> bool:
        given = arrow_numpy(chunk)
        with np.errstate(over="ignore", under="ignore"):  # beyond float32: inf or 0, found below
            np.copyto(rows, given, casting="same_kind")
        if not np.isfinite(rows).all():
            return False
        zero = rows == 0
        return not zero.any() or not (given[zero] != 0).any()  # no nonzero stored as 0

    return _by_chunks(col, np.float32, convert)


def _by_chunks(
    col: pa.ChunkedArray | pa.Array,
    dtype: type[np.generic],
    fill: Callable[[pa.Array, np.ndarray], bool],
) -> np.ndarray | None:
    """One array [N] of `dtype`, each chunk's rows filled by `fill(chunk, rows)` (chunks on a
    thread pool: Arrow, numpy and the C kernels release the GIL); None when `fill` refuses a
    chunk."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    out = np.empty(len(col), dtype=dtype)  # [N]
    starts = np.cumsum([0, *(len(c) for c in chunks)])

    def one(k: int) -> bool:
        return fill(chunks[k], out[starts[k] : starts[k + 1]])

    if len(chunks) < 2:
        return out if all(map(one, range(len(chunks)))) else None
    with concurrent.futures.ThreadPoolExecutor(min(len(chunks), os.cpu_count() or 1)) as pool:
        return out if all(pool.map(one, range(len(chunks)))) else None


def _arrow_ids(
    col: pa.ChunkedArray | pa.Array, role: str, name: str, row_offset: int
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Integer ids as a numpy int64 (or uint64, or float with a null as NaN) array, for
    `from_arrays` to encode; text ids that are all canonical integers ("17", not "017", "+17"
    or " 17") as int64 too; other text ids encoded here: (sorted distinct raw ids, codes [N])."""
    if (row := _first_null(col)) is not None:
        raise DataError(f"{name}: column '{role}' is missing at row {row + row_offset}")
    kind = col.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return _raw_ids(arrow_numpy(col))  # booleans: two ids, False and True
    if pa.types.is_dictionary(kind):
        coded = _dictionary_ids(col)
        if coded is not None:
            return coded
        col = col.cast(kind.value_type)  # no kernel, or a cell empty after trimming
    ints = canonical_ints(col)
    if ints is not None:
        return ints
    dictionary, indices = _text_codes(col, role, name, row_offset)
    raw, rank = _sorted_ids(dictionary)
    return raw, rank[indices]  # int32 codes: stored as they are, checked in C


def _sorted_ids(cells: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(the raw ids in sorted order [D], each cell's position among them [D]) of distinct text
    cells [D] (an Arrow string array): int64 ids when all are canonical integers, else the
    strings as objects. Sorted by Arrow (UTF-8 byte order is code-point order, as Python's str
    order): no fixed-width copy of the cells, whose size would follow the longest one."""
    if pa.types.is_large_string(cells.type) and cells.nbytes < 2**31:
        cells = cells.cast(pa.string())
    ints = canonical_ints(cells) if pa.types.is_string(cells.type) and len(cells) else None
    if ints is not None:
        order = np.argsort(ints, kind="stable")  # [D]
        raw: np.ndarray = ints[order]
    else:
        order = arrow_numpy(pc.sort_indices(cells))  # [D] (distinct cells: no ties)
        raw = np.array(cells.take(_arrow_int64(order)).to_pylist(), dtype=object)
    rank = np.empty(len(order), dtype=np.int32 if len(order) < 2**31 else np.int64)
    rank[order] = np.arange(len(order))
    return raw, rank


def _arrow_int64(values: np.ndarray) -> pa.Array:
    """An int64 numpy array as an Arrow array over its memory (`pa.array` on numpy input
    imports pandas, where it is installed: a fifth of a second)."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def _text(kind: pa.DataType) -> bool:
    """Whether a column of this type holds text ids (strings, or a dictionary of strings)."""
    return pa.types.is_string(kind) or (
        pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type)
    )


def _dictionary_ids(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """(the raw ids in sorted order [D], each row's code [N] int32) of a dictionary-encoded text
    column without nulls (a Parquet column read as stored), as `_arrow_ids` gives them for the
    decoded column: the chunks' dictionaries (a few entries each) trimmed and coded together by
    the C kernel (`native.text_codes`), the entries some row uses kept (a dictionary may hold
    values no row has), sorted, and each row's code looked up through its chunk's indices in
    one pass. None without the kernel, or where an entry is empty after trimming (the caller
    decodes the column and takes the string path, which names the row)."""
    lib = native.data_library(len(col))
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    if lib is None or not chunks:
        return None
    coded = native.text_codes(lib, [c.dictionary for c in chunks])
    if coded is None or coded.cells is None:  # no cells: one is empty after trimming
        return None
    bounds = np.cumsum([0, *(len(c.dictionary) for c in chunks)])
    # [entries of chunk k] -> the code of its trimmed cell, for each chunk
    lookups = [coded.codes[bounds[k] : bounds[k + 1]] for k in range(len(chunks))]
    indices = [arrow_numpy(c.indices) for c in chunks]  # views of Arrow's buffers
    used = np.zeros(len(coded.cells), dtype=bool)  # [G] cells some row has
    for lookup, index in zip(lookups, indices, strict=True):
        used[lookup[np.bincount(index, minlength=len(lookup)) > 0]] = True
    cells = coded.cells.take(_arrow_int64(np.flatnonzero(used)))  # [D]
    raw, rank = _sorted_ids(cells)
    final = np.zeros(len(used), dtype=rank.dtype)  # [G] a cell's code among the sorted ids
    final[used] = rank
    codes = np.empty(len(col), dtype=rank.dtype)  # [N]
    at = 0
    for lookup, index in zip(lookups, indices, strict=True):
        np.take(final[lookup], index, out=codes[at : at + len(index)])
        at += len(index)
    return raw, codes


def _text_codes(
    col: pa.ChunkedArray | pa.Array, role: str, name: str, row_offset: int
) -> tuple[pa.Array, np.ndarray]:
    """(the distinct cells [D], an Arrow string array, first seen first; each row's index into
    them [N]) of a text column without nulls, its cells trimmed of whitespace: by the C kernel
    (`native.text_codes`, one pass) for long string columns, else by Arrow's
    `utf8_trim_whitespace` and `dictionary_encode`. A cell empty after trimming raises
    `DataError` naming its row."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    lib = native.data_library(len(col))
    coded = None if lib is None else native.text_codes(lib, chunks)
    if coded is not None:
        if coded.empty is not None:
            raise DataError(f"{name}: column '{role}' is missing at row {coded.empty + row_offset}")
        assert coded.cells is not None  # set where no cell is empty
        return coded.cells, coded.codes
    encoded = pc.dictionary_encode(pc.utf8_trim_whitespace(col))
    chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
    if any(
        c.dictionary is not chunks[0].dictionary and not c.dictionary.equals(chunks[0].dictionary)
        for c in chunks[1:]
    ):
        encoded = encoded.unify_dictionaries()
        chunks = encoded.chunks
    dictionary = chunks[0].dictionary  # [D] distinct cells, first seen first
    indices = np.concatenate([arrow_numpy(c.indices) for c in chunks])  # [N] int32
    empty = np.flatnonzero(arrow_numpy(pc.utf8_length(dictionary)) == 0)
    if len(empty):
        row = int(np.flatnonzero(indices == empty[0])[0])
        raise DataError(f"{name}: column '{role}' is missing at row {row + row_offset}")
    return dictionary, indices


# [19] 10, 100, ..., 10^19: d digits hold less than _POWERS[d-1]
_POWERS = 10 ** np.arange(1, 20, dtype=np.uint64)
# [20] d digits: at least _LOWER[d]
_LOWER = np.concatenate([[0, 0], 10 ** np.arange(1, 19, dtype=np.uint64)]).astype(np.uint64)


def canonical_ints(col: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """A text column as int64 [N] when every cell is an integer written canonically (digits, an
    optional "-", no leading zero, no sign or space around it), else None. Each chunk is parsed
    by Arrow and its cells' byte lengths compared with the digit counts of the numbers: "007"
    parses as 7 but is 3 bytes long, so ids written with leading zeros stay text (and "007" and
    "7" two ids). Chunks run on a thread pool (Arrow and numpy release the GIL)."""
    if isinstance(col, pa.ChunkedArray) and col.num_chunks == 0:
        return None
    lib = native.data_library(len(col))

    def parse(chunk: pa.Array, rows: np.ndarray) -> bool:
        buffers = chunk.buffers()
        if lib is not None and chunk.type == pa.string() and buffers[2] is not None:
            # one pass in C over the cells' bytes: digits, sign and leading zeros together
            offsets = buffers[1].address + 4 * chunk.offset  # int32 offsets of this slice
            return native.canonical_ints(lib, offsets, buffers[2].address, rows)
        try:
            ints = pc.cast(chunk, pa.int64())  # refuses " 7", "+7", "7.0", ""
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return False
        values = arrow_numpy(ints)  # [n]
        offsets = np.frombuffer(buffers[1], dtype=np.int32)[
            chunk.offset : chunk.offset + len(chunk) + 1
        ]
        digits = np.diff(offsets) - (values < 0)  # [n] the cell's digits, as written
        if digits.min() < 1 or digits.max() > 19:
            return False
        # canonical: 10^(d-1) <= |v| < 10^d for d digits (0 alone for one digit); |-2^63| as uint64
        magnitude = np.abs(values).view(np.uint64)
        if not ((magnitude >= _LOWER[digits]) & (magnitude < _POWERS[digits - 1])).all():
            return False
        rows[:] = values
        return True

    return _by_chunks(col, np.int64, parse)


def read_features(
    path: str | os.PathLike,
    id_col: Column = 0,
    categorical: list[str] | tuple[str, ...] = (),
    sep: str | None = None,
    multi_sep: str = "|",
) -> tuple[np.ndarray, Features]:
    """A feature file: (raw ids [n], `Features` with one row per line, in file order).

    CSV/TSV (optionally `.gz`, with a header) or Parquet. `id_col` (a name or a position) holds
    the ids, parsed as `read_table` parses ids; every other column is a feature:
    - numeric, when every cell is a number (Parquet: a numeric or boolean column), kept as a
      number in `Features.dense` (column name as its name);
    - categorical otherwise, or when named in `categorical`: each distinct value becomes a
      vocabulary entry "column=value"; a cell may hold several values split by `multi_sep`
      ("Action|Comedy": multi-hot); an empty cell holds none.
    `DataError` naming the file, the column and the 1-based file line (Parquet: row) for a
    missing or repeated id, an empty or non-finite cell in a numeric column; and for a file
    that cannot be read, has no feature column, or names an unknown `categorical` column.
    """
    ids, table, names = _feature_file(path, id_col, categorical, sep, multi_sep)
    unknown = sorted(set(categorical) - set(names))
    if unknown:
        raise DataError(
            f"{path}: categorical feature column(s) {unknown} not found; columns: {names}"
        )
    return ids, table


def _feature_file(
    path: str | os.PathLike,
    id_col: Column,
    categorical: list[str] | tuple[str, ...],
    sep: str | None,
    multi_sep: str,
) -> tuple[np.ndarray, Features, list[str]]:
    """`read_features`, also returning the file's column names (`categorical` names that are
    not columns of this file are not looked at)."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".parquet":
        (cols, _), lines = _read_parquet(path, None), None
    else:
        cols, _, lines = _read_delimited(path, None, sep, header=True)
    names = list(cols)
    id_name = names[_column_index(path, id_col, names)]
    if len(names) < 2:
        raise DataError(f"{path}: no feature columns besides the id column {id_name!r}")
    n = len(cols[id_name])
    line_of = (lambda k: f"line {lines[k]}") if lines is not None else (lambda k: f"row {k + 1}")
    raw = cols[id_name]
    missing = np.array(
        [x is None or (isinstance(x, float) and x != x) or str(x).strip() == "" for x in raw]
    )
    if missing.any():
        raise DataError(
            f"{path}: column '{id_name}' (the id) is missing at "
            f"{line_of(int(np.flatnonzero(missing)[0]))}"
        )
    ids = _raw_ids(raw)
    keys = np.array([str(x) for x in ids], dtype=object)
    order = np.argsort(keys, kind="stable")
    repeated = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if len(repeated):
        a, b = sorted((int(order[repeated[0]]), int(order[repeated[0] + 1])))
        hint = (
            f" (the id column is the first one, '{id_name}', unless told otherwise: is it the id "
            "column?)"
            if id_col == 0
            else ""
        )
        raise DataError(
            f"{path}: column '{id_name}' repeats id {keys[a]!r} at {line_of(a)} and "
            f"{line_of(b)}{hint}"
        )
    categories, numeric = {}, {}
    for name in names:
        if name == id_name:
            continue
        cells = cols[name]
        values = None if name in categorical else _numeric_feature(cells)
        if values is None:
            categories[name] = [
                [] if c is None else [v.strip() for v in str(c).split(multi_sep) if v.strip()]
                for c in cells
            ]
            continue
        bad = ~np.isfinite(values)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            cell = cells[k]
            empty = cell is None or (
                str(cell).strip() == "" if isinstance(cell, str) else cell != cell
            )  # NaN: null
            what = "is empty" if empty else f"holds {str(cell).strip()!r}, not a finite number"
            raise DataError(
                f"{path}: numeric feature column '{name}' {what} at {line_of(k)}; give a number "
                f"(or list '{name}' in categorical features to take it as categories)"
            )
        numeric[name] = values
    return ids, Features.from_columns(n, categories, numeric), names


def _numeric_feature(cells: np.ndarray) -> np.ndarray | None:
    """float64 [n] when a column is numeric (empty cells NaN, "inf"/"nan" as written), None when
    it is categorical: text in some cell, or no number at all."""
    if cells.dtype.kind in "biuf":  # Parquet numbers (nulls are NaN)
        return cells.astype(np.float64)
    text = np.array(["" if c is None else str(c).strip() for c in cells], dtype=str)
    filled = text != ""
    if not filled.any():
        return None
    try:
        numbers = text[filled].astype(np.float64)
    except ValueError:
        return None
    out = np.full(len(text), np.nan)
    out[filled] = numbers
    return out


def _locate(
    err: DataError,
    labels: dict[str, str],
    line_of: Callable[[int], int | str] | None,
    offset: int,
) -> DataError:
    """Rewrite a `from_arrays` error with the file's column names and (delimited) line
    numbers: `line_of(k)` is the file line of 0-based data row k (None: Parquet, rows stay)."""
    return DataError(_locate_text(str(err), labels, line_of, offset))


def _locate_text(
    text: str, labels: dict[str, str], line_of: Callable[[int], int | str] | None, offset: int
) -> str:
    """`_locate` on a message's text."""
    msg = re.sub(
        r"column '(user|item|value|timestamp)'",
        lambda m: f"column '{labels.get(m[1], m[1])}'",
        text,
        count=1,
    )
    if line_of is not None:

        def file_line(row: str) -> str:  # row + offset -> the file line of that row
            return str(line_of(int(row) - offset))

        msg = re.sub(r"\brow (\d+)", lambda m: f"line {file_line(m[1])}", msg, count=1)
        msg = re.sub(
            r"\brows (\d+(?:, \d+)*)",
            lambda m: "lines " + ", ".join(file_line(r) for r in m[1].split(", ")),
            msg,
            count=1,
        )
    return msg


def _read_delimited(
    path: Path, wanted: dict[str, Column] | None, sep: str | None, header: bool
) -> tuple[dict[str, np.ndarray], dict[str, str], np.ndarray]:
    """Cells of the wanted columns (None: every column, keyed by its header name) as str
    arrays, their display names, and each row's line. A file that is not UTF-8 delimited text
    (binary, a bad or truncated gzip) raises `DataError`."""
    try:
        return _parse_delimited(path, wanted, sep, header)
    except UnicodeDecodeError as err:
        raise delimited.not_utf8(path, err) from None
    except (
        csv.Error,
        EOFError,
        OSError,
        ArrowException,
    ) as err:  # a bad archive: OSError or Arrow's error
        raise DataError(f"{path}: cannot be read as delimited text: {err}") from None


def _parse_delimited(
    path: Path, wanted: dict[str, Column] | None, sep: str | None, header: bool
) -> tuple[dict[str, np.ndarray], dict[str, str], np.ndarray]:
    delimited.widen_field_limit()
    with delimited.open_text(path) as f:
        sample = f.read(1 << 16)
        if not sample.strip():
            raise DataError(f"{path}: file is empty")
        sep = delimited.separator(path, sample, sep)
        f.seek(0)
        reader = csv.reader(f, delimiter=sep)
        names = [c.strip() for c in next(reader)] if header else None
        if wanted is None:
            wanted = _all_columns(path, names)
        index = {role: _column_index(path, col, names) for role, col in wanted.items()}
        labels = {
            role: str(col) if names is None else names[index[role]] for role, col in wanted.items()
        }
        need = max(index.values()) + 1
        cells: dict[str, list[str]] = {role: [] for role in index}
        lines: list[int] = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) < need:
                raise DataError(
                    f"{path}: line {reader.line_num} has {len(row)} field(s), {need} needed"
                )
            for role, k in index.items():
                cells[role].append(row[k].strip())
            lines.append(reader.line_num)
    if not lines:
        raise DataError(f"{path}: no data rows (a header only, or blank lines)")
    return {role: np.array(v, dtype=str) for role, v in cells.items()}, labels, np.array(lines)


def _check_file(path: Path) -> None:
    """`DataError` unless `path` is a readable file: it does not exist, or is a directory."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file (give the file inside it)")
    if not path.is_file():
        raise DataError(f"{path}: file not found")


def _column_index(path: Path, col: Column, names: list[str] | None) -> int:
    """0-based position of `col` (a header name, or a position)."""
    if isinstance(col, int) and not isinstance(col, bool):
        if col < 0 or (names is not None and col >= len(names)):
            raise DataError(f"{path}: column position {col} is out of range; columns: {names}")
        return col
    if names is None:
        raise DataError(
            f"{path}: column {col!r} given by name, but header=False; give its position"
        )
    if col not in names:
        hint = ""
        if len(names) == 1:  # one column: the file is likely split by another delimiter
            other = next((d for d in (";", "\t", "|", ",", " ") if d in names[0]), None)
            if other is not None:
                hint = (
                    f" (the header was read as one column: is the file delimited by {other!r}? "
                    f"give sep={other!r}, e.g. data.source.sep='{other}')"
                )
        raise DataError(f"{path}: no column {col!r}; available columns: {names}{hint}")
    return names.index(col)


def _all_columns(path: Path, names: list[str] | None) -> dict[str, Column]:
    """Every column of a file by its header name; `DataError` without a header or with a
    name twice."""
    if names is None:
        raise DataError(f"{path}: reading every column needs a header")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: the header names column(s) {repeated} more than once")
    return {name: name for name in names}


def _read_parquet(
    path: Path, wanted: dict[str, Column] | None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """`_parquet_columns` as numpy arrays (feature files)."""
    cols, labels = _parquet_columns(path, wanted)
    return {role: arrow_numpy(col) for role, col in cols.items()}, labels


def _parquet_columns(
    path: Path, wanted: dict[str, Column] | None, dictionary_roles: tuple[str, ...] = ()
) -> tuple[dict, dict[str, str]]:
    """Wanted Parquet columns (None: every column, keyed by name) as Arrow ChunkedArrays
    (datetimes as int64 seconds, dictionaries decoded, decimals as float64), and their names.
    The text columns of `dictionary_roles` are read as Parquet stores them, dictionary-encoded
    (Arrow DictionaryArrays of strings: no string is copied per row). A file pyarrow cannot read
    (empty, truncated, not Parquet) or a column that holds neither numbers nor strings raises
    `DataError`."""
    try:
        # not pq.read_table: that loads pyarrow.dataset (and pandas) on first use
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(err)})") from None
    if wanted is None:
        wanted = _all_columns(path, names)
    labels = {role: names[_column_index(path, col, names)] for role, col in wanted.items()}
    as_dictionary = [
        labels[role]
        for role in dictionary_roles
        if role in labels and _text(parquet.schema_arrow.field(labels[role]).type)
    ]
    keep_dictionary = set(as_dictionary)
    try:
        if as_dictionary:
            parquet = pq.ParquetFile(path, read_dictionary=as_dictionary)
        table = parquet.read(columns=sorted(set(labels.values())), use_threads=True)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"{path}: Parquet data cannot be read ({_first_line(err)})") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows")
    cols = {}
    for role, label in labels.items():
        col = table.column(label)
        if pa.types.is_dictionary(col.type):
            if label in keep_dictionary and pa.types.is_string(col.type.value_type):
                cols[role] = col  # decoded by `_arrow_ids`
                continue
            col = col.cast(col.type.value_type)
        if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
            col = col.cast(pa.timestamp("s"), safe=False).cast(pa.int64())
        elif pa.types.is_decimal(col.type):
            col = col.cast(pa.float64())
        elif pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type):
            col = col.cast(pa.string())
        elif not (
            pa.types.is_integer(col.type)
            or pa.types.is_floating(col.type)
            or pa.types.is_boolean(col.type)
            or pa.types.is_string(col.type)
        ):
            raise DataError(
                f"{path}: column '{label}' has type {col.type}; it must hold numbers or strings"
            )
        cols[role] = col
    return cols, labels


def _raw_ids(cells: np.ndarray) -> np.ndarray:
    """int64 when every id is a canonical integer ("17", not "017" or ""), else objects."""
    if cells.dtype.kind == "u" and len(cells) and cells.max() > np.iinfo(np.int64).max:
        return cells  # uint64 ids beyond int64 stay uint64 (a cast would wrap them)
    if cells.dtype.kind in "iuf":  # Parquet numbers; NaN (null) ids are reported by from_arrays
        return cells.astype(np.int64, copy=False) if cells.dtype.kind in "iu" else cells
    try:
        ints = cells.astype(np.int64)
        if cells.dtype.kind == "U" and (ints.astype(cells.dtype) == cells).all():
            return ints
    except (ValueError, TypeError, OverflowError):
        pass
    return cells.astype(object)


def _as_float(cells: np.ndarray) -> np.ndarray:
    """Vectorised float64 when every cell parses; else the cells, for `from_arrays` to report."""
    try:
        return cells.astype(np.float64)
    except (ValueError, TypeError):
        return cells.astype(object)


def _seconds(cells: np.ndarray) -> np.ndarray:
    """Whole numbers of seconds as int64 (exact: float64 would round those above 2^53), other
    numbers as float64; ISO-8601 strings converted to epoch seconds; cells that are neither
    stay as they are, for `from_arrays` to report."""
    if cells.dtype.kind == "U":
        try:
            return cells.astype(np.int64)
        except (ValueError, OverflowError):
            pass
    out = _as_float(cells)
    if out.dtype.kind == "f":
        big = np.flatnonzero(np.abs(out) >= 2.0**53)  # where float64 may have rounded an integer
        if len(big) == 0:
            return out
        out = out.astype(object)
        for b in big:
            with contextlib.suppress(TypeError, ValueError):
                out[b] = int(cells[b])
        return out
    for k, cell in enumerate(out):
        try:
            out[k] = int(cell)  # exact
            continue
        except (TypeError, ValueError):
            pass
        try:
            out[k] = float(cell)
        except (TypeError, ValueError):
            try:
                stamp = datetime.fromisoformat(str(cell).strip())
                out[k] = (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()
            except (ValueError, OverflowError, OSError):
                continue
    return out
