"""Interactions from CSV/TSV (optionally gzipped) and Parquet files: `read_table` and its parsers."""

from __future__ import annotations

import csv
import gzip
import os
import re
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mfzoo.data.errors import DataError
from mfzoo.data.interactions import DuplicatePolicy, Interactions, PairPolicy

Column = str | int


def read_table(
    path: str | os.PathLike, user_col: Column, item_col: Column, value_col: Column | None = None,
    time_col: Column | None = None, sep: str | None = None, header: bool = True,
    duplicates: DuplicatePolicy = "keep_last", pair_duplicates: PairPolicy | None = None, name: str | None = None,
) -> Interactions:
    """Read interactions from CSV/TSV (optionally `.gz`) or Parquet.

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
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    wanted = {"user": user_col, "item": item_col, "value": value_col, "timestamp": time_col}
    wanted = {role: col for role, col in wanted.items() if col is not None}
    if path.suffix.lower() == ".parquet":
        cols, labels, lines, offset = *_read_parquet(path, wanted), None, 1
    else:
        cols, labels, lines = _read_delimited(path, wanted, sep, header)
        offset = 2 if header else 1  # with contiguous lines, row + offset is the file line
    users, items = _raw_ids(cols["user"]), _raw_ids(cols["item"])
    values = _as_float(cols["value"]) if "value" in cols else None
    times = _seconds(cols["timestamp"]) if "timestamp" in cols else None
    try:
        data = Interactions.from_arrays(users, items, values, times, name=str(path), duplicates=duplicates,
                                        pair_duplicates=pair_duplicates, row_offset=offset)
    except DataError as err:
        raise _locate(err, labels, lines, offset) from None
    return replace(data, name=name or path.name.split(".")[0])


def _locate(err: DataError, labels: dict[str, str], lines: np.ndarray | None, offset: int) -> DataError:
    """Rewrite a `from_arrays` error with the file's column names and (delimited) line numbers."""
    msg = re.sub(r"column '(user|item|value|timestamp)'", lambda m: f"column '{labels.get(m[1], m[1])}'",
                 str(err), count=1)
    if lines is not None:
        def file_line(row: str) -> str:  # row + offset -> the file line of that row
            k = int(row) - offset
            return str(lines[k]) if 0 <= k < len(lines) else row

        msg = re.sub(r"\brow (\d+)", lambda m: f"line {file_line(m[1])}", msg, count=1)
        msg = re.sub(r"\brows (\d+(?:, \d+)*)",
                     lambda m: "lines " + ", ".join(file_line(r) for r in m[1].split(", ")), msg, count=1)
    return DataError(msg)


def _read_delimited(
    path: Path, wanted: dict[str, Column], sep: str | None, header: bool
) -> tuple[dict[str, np.ndarray], dict[str, str], np.ndarray]:
    """Cells of the wanted columns as str arrays, their display names, and each row's line.
    A file that is not UTF-8 delimited text (binary, a bad or truncated gzip) raises `DataError`."""
    try:
        return _parse_delimited(path, wanted, sep, header)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} cannot be decoded); "
            "is it a binary file, or Parquet without the .parquet extension?"
        ) from None
    except (csv.Error, EOFError, OSError) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot be read as delimited text: {err}") from None


def _parse_delimited(
    path: Path, wanted: dict[str, Column], sep: str | None, header: bool
) -> tuple[dict[str, np.ndarray], dict[str, str], np.ndarray]:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
        sample = f.read(1 << 16)
        if not sample.strip():
            raise DataError(f"{path}: file is empty")
        if sep is None:
            ext = suffixes[-1] if suffixes else ""
            sep = {".tsv": "\t", ".tab": "\t", ".csv": ","}.get(ext) or _sniff(path, sample)
        if not isinstance(sep, str) or len(sep) != 1:
            raise DataError(f"{path}: sep must be one character, got {sep!r}")
        f.seek(0)
        reader = csv.reader(f, delimiter=sep)
        names = [c.strip() for c in next(reader)] if header else None
        index = {role: _column_index(path, col, names) for role, col in wanted.items()}
        labels = {role: str(col) if names is None else names[index[role]] for role, col in wanted.items()}
        need = max(index.values()) + 1
        cells: dict[str, list[str]] = {role: [] for role in index}
        lines: list[int] = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) < need:
                raise DataError(f"{path}: line {reader.line_num} has {len(row)} field(s), {need} needed")
            for role, k in index.items():
                cells[role].append(row[k].strip())
            lines.append(reader.line_num)
    if not lines:
        raise DataError(f"{path}: no data rows (a header only, or blank lines)")
    return {role: np.array(v, dtype=str) for role, v in cells.items()}, labels, np.array(lines)


def _sniff(path: Path, sample: str) -> str:
    """The separator csv.Sniffer finds among , tab ; | and space."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;| ").delimiter
    except csv.Error:
        raise DataError(f"{path}: cannot infer the separator; pass sep=") from None


def _column_index(path: Path, col: Column, names: list[str] | None) -> int:
    """0-based position of `col` (a header name, or a position)."""
    if isinstance(col, int) and not isinstance(col, bool):
        if col < 0 or (names is not None and col >= len(names)):
            raise DataError(f"{path}: column position {col} is out of range; columns: {names}")
        return col
    if names is None:
        raise DataError(f"{path}: column {col!r} given by name, but header=False; give its position")
    if col not in names:
        raise DataError(f"{path}: no column {col!r}; available columns: {names}")
    return names.index(col)


def _read_parquet(path: Path, wanted: dict[str, Column]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Wanted Parquet columns as numpy arrays (datetimes as int64 seconds), and their names.
    A file pyarrow cannot read (empty, truncated, not Parquet) or a column that holds neither
    numbers nor strings raises `DataError`."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(err)})") from None
    labels = {role: names[_column_index(path, col, names)] for role, col in wanted.items()}
    try:
        table = pq.read_table(path, columns=sorted(set(labels.values())))
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"{path}: Parquet data cannot be read ({_first_line(err)})") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows")
    cols = {}
    for role, label in labels.items():
        col = table.column(label)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
            col = col.cast(pa.timestamp("s"), safe=False).cast(pa.int64())
        elif pa.types.is_decimal(col.type):
            col = col.cast(pa.float64())
        elif not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)
                  or pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise DataError(f"{path}: column '{label}' has type {col.type}; it must hold numbers or strings")
        cols[role] = col.to_numpy(zero_copy_only=False)
    return cols, labels


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _raw_ids(cells: np.ndarray) -> np.ndarray:
    """int64 when every id is a canonical integer ("17", not "017" or ""), else objects."""
    if cells.dtype.kind == "u" and len(cells) and cells.max() > np.iinfo(np.int64).max:
        return cells  # uint64 ids beyond int64 stay uint64 (a cast would wrap them)
    if cells.dtype.kind in "iuf":  # Parquet numbers; NaN (null) ids are reported by from_arrays
        return cells.astype(np.int64) if cells.dtype.kind in "iu" else cells
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
        for k in big:
            try:
                out[k] = int(cells[k])
            except (TypeError, ValueError):
                pass
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
