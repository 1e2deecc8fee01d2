"""Delimited text (CSV/TSV, plain or compressed) read by Arrow's multithreaded CSV reader.

`read_columns` returns the wanted columns as Arrow arrays, typed on read: ids as text
(`mfzoo.data.sources.tables.canonical_ints` makes integers of them where every cell is one,
written without a leading zero), values as float64, timestamps as int64 (else as strings,
for ISO dates or fractions). A column that does not
parse as its type is read again as strings, once, and the caller converts it (and names the
first bad cell). No Python code runs per row or per cell unless something is wrong: the
file lines of bad rows are found (`Lines`) only when an error names them.

Rows of another field count than the first line are refused by Arrow; such files (ragged
rows, quoted fields holding newlines) are read by the row-by-row reader of
`mfzoo.data.sources.tables`, which accepts rows with extra fields as it always has.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from mfzoo.data.errors import DataError

Column = str | int
# ids as text: Arrow copies text faster than it parses integers, and the ids' text is needed
# anyway to keep "007" apart from "7" (`tables.canonical_ints` parses them after)
ROLE_TYPES = {
    "user": pa.string(),
    "item": pa.string(),
    "value": pa.float64(),
    "timestamp": pa.int64(),
}
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd", ".lz4": "lz4"}
_SAMPLE_BYTES = 1 << 16  # what the separator sniffer and the header reader see


class Ragged(Exception):
    """The file has rows of another field count than its first line (Arrow cannot read it)."""


@dataclass
class Delimited:
    """The wanted columns of a delimited file (role -> Arrow ChunkedArray), their display
    names (header names, or positions), and the file's lines (to name them in errors)."""

    columns: dict[str, pa.ChunkedArray]
    labels: dict[str, str]
    lines: Lines


def file_buffer(path: Path) -> pa.Buffer:
    """The bytes of `path` as an Arrow buffer: memory-mapped when plain, decompressed into
    memory when its extension names a compression (.gz, .bz2, .zst, .lz4)."""
    compression = COMPRESSIONS.get(path.suffix.lower())
    if compression is None:
        return pa.memory_map(str(path), "r").read_buffer()
    with pa.input_stream(str(path), compression=compression) as stream:
        return stream.read_buffer()


def open_text(path: Path) -> TextIO:
    """`path` as a text stream for the row-by-row reader (decompressed as `file_buffer` does)."""
    compression = COMPRESSIONS.get(path.suffix.lower())
    if compression is None:
        return open(path, encoding="utf-8-sig", newline="")
    # whole: the reader seeks back
    with pa.input_stream(str(path), compression=compression) as stream:
        return io.StringIO(stream.read().decode("utf-8-sig"), newline="")


def first_text(head: bytes) -> str:
    """The file's first `_SAMPLE_BYTES` bytes as text (a byte-order mark dropped; a character
    cut at the end of the sample left out). `UnicodeDecodeError` when it is not UTF-8."""
    return codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=len(head) < _SAMPLE_BYTES)


def not_utf8(path: Path, err: UnicodeDecodeError) -> DataError:
    """The error for a file whose start is not UTF-8 text."""
    return DataError(
        f"{path}: not UTF-8 text (byte {err.object[err.start : err.start + 1]!r} cannot be "
        "decoded); is it a binary file, or Parquet without the .parquet extension?"
    )


def _sniff(path: Path, sample: str) -> str:
    """The separator csv.Sniffer finds among , tab ; | and space."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;| ").delimiter
    except csv.Error:
        raise DataError(f"{path}: cannot infer the separator; pass sep=") from None


def separator(path: Path, sample: str, sep: str | None) -> str:
    """`sep`, else the one the extension names (.tsv/.tab tab, .csv comma), else sniffed."""
    if sep is None:
        suffixes = [s.lower() for s in path.suffixes if s.lower() not in COMPRESSIONS]
        ext = suffixes[-1] if suffixes else ""
        sep = {".tsv": "\t", ".tab": "\t", ".csv": ","}.get(ext) or _sniff(path, sample)
    if not isinstance(sep, str) or len(sep) != 1:
        raise DataError(f"{path}: sep must be one character, got {sep!r}")
    return sep


def first_row(sample: str, sep: str) -> list[str]:
    """The fields of the first non-blank line of `sample`."""
    for row in csv.reader(sample.splitlines()[:50] or [""], delimiter=sep):
        if row and not (len(row) == 1 and not row[0].strip()):
            return row
    return []


class Lines:
    """File lines of data rows, found by reading the file again only when an error names a row.

    Data rows are the file's records after the header that are not blank (blank lines are
    skipped by both readers); `line(row)` is the 1-based file line where 0-based data row `row`
    ends (a quoted field may hold newlines: records are counted by a csv reader, not by lines)."""

    def __init__(self, path: Path, header: bool, sep: str):
        self._path, self._header, self._sep = path, header, sep
        self._lines: np.ndarray | None = None  # [rows] the line of each data row, once read

    def line(self, row: int) -> int:
        """The 1-based file line where 0-based data row `row` ends."""
        if self._lines is None:
            ends: list[int] = []
            try:
                for line, _ in data_records(self._path, self._sep, self._header):
                    ends.append(line)
            except csv.Error:
                pass  # a malformed tail: the rows before it keep their lines
            self._lines = np.array(ends, dtype=np.int64)
        return int(self._lines[row]) if 0 <= row < len(self._lines) else row + 1


def data_records(path: Path, sep: str, header: bool) -> Iterator[tuple[int, list[str]]]:
    """(file line where the record ends, fields) of every data record of a file, read row by
    row (error paths only): blank records and the header skipped, fields of any size."""
    widen_field_limit()
    reader = csv.reader(io.StringIO(_text(path), newline=""), delimiter=sep)
    for record in reader:
        if not record or (len(record) == 1 and not record[0].strip()):
            continue
        if header:
            header = False
            continue
        yield reader.line_num, record


def widen_field_limit() -> None:
    """Let the csv module read fields of any size (its default stops at 128 KiB)."""
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


def read_columns(
    path: Path,
    wanted: dict[str, Column],
    sep: str | None,
    header: bool,
    column_index: Callable[[Path, Column, list[str] | None], int],
) -> Delimited:
    """The wanted columns (role -> `Column`) of a delimited file, read by Arrow.

    `column_index(path, col, names)` resolves a header name or position. Raises `DataError`
    for a file that is empty, not UTF-8 text, not readable (a bad or truncated archive), or
    whose rows have fewer fields than the wanted columns need (naming the line); `Ragged`
    for rows of another field count that still hold every wanted column."""
    compressed = path.suffix.lower() in COMPRESSIONS
    try:
        # compressed: decompressed once into memory; plain: streamed by Arrow, so the file's
        # pages are not held (a memory map would count them all in the process)
        if compressed:
            buffer = file_buffer(path)
            head = memoryview(buffer)[:_SAMPLE_BYTES].tobytes()
        else:
            with open(path, "rb") as f:
                head = f.read(_SAMPLE_BYTES)
    except (OSError, pa.ArrowException, EOFError) as err:
        raise DataError(f"{path}: cannot be read as delimited text: {err}") from None
    try:
        sample = first_text(head)
    except UnicodeDecodeError as err:
        raise not_utf8(path, err) from None
    if not sample.strip():
        raise DataError(f"{path}: file is empty")
    sep = separator(path, sample, sep)
    fields = [c.strip() for c in first_row(sample, sep)]
    names = fields if header else None
    index = {role: column_index(path, col, names) for role, col in wanted.items()}
    labels = {
        role: str(col) if names is None else names[index[role]] for role, col in wanted.items()
    }
    need = max(index.values()) + 1
    lines = Lines(path, header, sep)
    # the first non-blank line (the header, when there is one): lines before it are skipped
    physical = re.split(r"\r\n|\r|\n", sample)
    first = next((k for k, line in enumerate(physical) if line.strip()), 0)
    if need > len(fields):
        raise DataError(f"{path}: line {first + 1} has {len(fields)} field(s), {need} needed")
    # column -> Arrow type; a column of two roles of two types is read as text
    types: dict[int, object] = {}
    for role in wanted:
        kind = ROLE_TYPES[role]
        types[index[role]] = kind if types.get(index[role], kind) == kind else pa.string()
    invalid: list[pcsv.InvalidRow] = []

    def handler(row: pcsv.InvalidRow) -> str:
        if not row.text.strip():
            return "skip"  # a line of spaces: blank, as the row-by-row reader takes it
        invalid.append(row)
        return "error"

    n_fields = len(fields)
    block = 1 << 20  # Arrow's default; a header longer than a block needs a larger one
    for _ in range(len(types) + 2):  # each retry reads one more column as text (or a larger block)
        read = pcsv.ReadOptions(
            column_names=[f"f{k}" for k in range(n_fields)],
            skip_rows=first + 1 if header else 0,
            use_threads=True,
            block_size=block,
        )
        parse = pcsv.ParseOptions(delimiter=sep, invalid_row_handler=handler)
        convert = pcsv.ConvertOptions(
            include_columns=[f"f{k}" for k in types],
            column_types={f"f{k}": kind for k, kind in types.items()},
            null_values=[""],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        invalid.clear()
        try:
            table = pcsv.read_csv(
                pa.BufferReader(buffer) if compressed else str(path), read, parse, convert
            )
        except pa.ArrowInvalid as err:
            message = str(err)
            if invalid:
                _refuse_short_rows(path, sep, header, need)
                raise Ragged(message) from None
            if "UTF8" in message or "UTF-8" in message:
                raise DataError(
                    f"{path}: not UTF-8 text ({first_line(message)}); is it a binary file?"
                ) from None
            # the header fills a block: a larger one, or no row after it
            if "skip initial" in message:
                if (
                    block < 1 << 28
                    and "larger than block size" in message
                    and "\n" in sample.strip("\r\n")
                ):
                    block <<= 4
                    continue
                raise DataError(f"{path}: no data rows (a header only, or blank lines)") from None
            bad = re.search(r"column #(\d+)", message)
            column = int(bad[1]) if bad else -1
            if types.get(column, pa.string()) == pa.string():
                raise DataError(
                    f"{path}: cannot be read as delimited text: {first_line(message)}"
                ) from None
            types[column] = pa.string()  # the caller converts it and names the bad cell
            continue
        except (OSError, pa.ArrowException) as err:
            raise DataError(
                f"{path}: cannot be read as delimited text: {first_line(err)}"
            ) from None
        if table.num_rows == 0:
            raise DataError(f"{path}: no data rows (a header only, or blank lines)")
        columns = {role: table.column(f"f{index[role]}") for role in wanted}
        return Delimited(columns, labels, lines)
    raise AssertionError("unreachable: every column is a string after the retries")


def _refuse_short_rows(path: Path, sep: str, header: bool, need: int) -> None:
    """`DataError` naming the first line with fewer fields than `need` (read row by row: an
    error path only)."""
    line = 0
    try:
        for line, row in data_records(path, sep, header):
            if len(row) < need:
                raise DataError(f"{path}: line {line} has {len(row)} field(s), {need} needed")
    except csv.Error as err:
        raise DataError(
            f"{path}: cannot be read as delimited text: after line {line}: {err}"
        ) from None


def _text(path: Path) -> str:
    """The whole file as text (error paths only: they name lines)."""
    return memoryview(file_buffer(path)).tobytes().decode("utf-8-sig", errors="replace")


def first_line(err: object) -> str:
    """The first line of an error's message (Arrow's run over several)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
