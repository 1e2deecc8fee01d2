"""Rating logs in public layouts: the Netflix Prize files and JSON lines (Amazon reviews).

`netflix_prize` reads the "MovieID:" blocks of the Netflix Prize (the original
`training_set/mv_*.txt` files and Kaggle's `combined_data_*.txt`), `json_lines` reads
newline-delimited JSON records, and `amazon_reviews` reads the Amazon review dumps (2014/2018
and 2023 layouts) through `json_lines`. Files are parsed by Arrow (its CSV reader as a line
splitter, its JSON reader) and converted as whole columns; encoding, value checks and the
duplicate policies are those of `mfzoo.data.sources.tables.arrow_interactions`. Python loops
over lines run only once something is wrong, to name the file line of the bad record.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson

from mfzoo.data.cache import cached
from mfzoo.data.errors import DataError
from mfzoo.data.interactions import DuplicatePolicy, Interactions, PairPolicy
from mfzoo.data.sources.tables import (
    _check_file,
    _first_line,
    _locate,
    arrow_interactions,
    arrow_numpy,
)

log = logging.getLogger(__name__)

NETFLIX_COLUMNS = {"user": "CustomerID", "item": "MovieID", "value": "Rating", "timestamp": "Date"}
# the file names of both Netflix distributions; a directory holding some of them is read as
# those only
_NETFLIX_FILE = re.compile(r"(mv_\d+|combined_data_\d+)\.txt(\.gz|\.bz2)?", re.IGNORECASE)
# the unit separator: never in a Netflix line, so the CSV reader yields whole lines
_LINE_DELIMITER = "\x1f"
_SHOWN = 60  # characters of a bad line or cell quoted in an error
_SAMPLE_BYTES = 1 << 16  # bytes read at a time while looking for the first JSON record
_JSON_BLOCK = 1 << 20  # Arrow's JSON block size; a retry uses _JSON_BLOCK_RETRY for longer lines
_JSON_BLOCK_RETRY = 1 << 26
AMAZON_LAYOUTS = {  # layout -> (user, item, value, timestamp fields, time unit)
    "2014/2018": ("reviewerID", "asin", "overall", "unixReviewTime", "s"),
    "2023": ("user_id", "parent_asin", "rating", "timestamp", "ms"),
}


# Netflix Prize ------------------------------------------------------------------------------
def netflix_prize(
    path: str | os.PathLike,
    duplicates: DuplicatePolicy = "keep_last",
    pair_duplicates: PairPolicy | None = None,
    name: str | None = None,
    cache: bool | None = None,
) -> Interactions:
    """Read the Netflix Prize ratings: one file, or a directory of files read as one set.

    A file holds blocks: a line `MovieID:` followed by lines `CustomerID,Rating,Date` (Date as
    YYYY-MM-DD). That is the layout of the original `training_set/mv_0000001.txt` files (one
    block per file) and of Kaggle's `combined_data_1.txt` (many blocks per file); files may be
    plain or `.gz` / `.bz2`. A directory is read file by file in sorted name order: its
    `mv_*.txt` and `combined_data_*.txt` files when it has any (so Kaggle's folder, with its
    `movie_titles.csv`, `probe.txt` and `qualifying.txt`, can be given as it is), else every
    file in it (hidden files aside). Blank lines are skipped.

    Users are the CustomerIDs and items the MovieIDs (int64 raw ids), values the ratings
    (float), timestamps the dates as int64 epoch seconds (UTC midnight). `duplicates` and
    `pair_duplicates` are the policies of `Interactions.from_arrays` (by default a customer
    rating a movie twice is an error). The set is named `name`, else the file or directory
    name without its extensions.

    Bad input raises `DataError` (one line) naming the file and the 1-based file line: a data
    line before any `MovieID:` line, a line without exactly 3 fields, a MovieID or CustomerID
    that is not a whole number, a rating that is not a number (or NaN, inf, beyond float32),
    a date that is not YYYY-MM-DD, an empty file, a directory without files, a file that is
    not UTF-8 text or not a readable archive. Errors found once the files are joined (bad
    ratings, repeated pairs) name the column ('Rating', ...) and, for a directory, the line
    and the file ("line 3 of mv_0000002.txt").

    `cache`: keep the parsed set in the data cache (`mfzoo.data.cache`), keyed by every file's
    SHA-256: None (default) when the files hold 16 MiB or more, True always, False never.
    """
    path = Path(path)
    files = _netflix_files(path)
    data = cached(
        "netflix_prize",
        files,
        {"duplicates": duplicates, "pair_duplicates": pair_duplicates},
        lambda: _netflix_set(path, files, duplicates, pair_duplicates),
        cache,
    )
    return replace(data, name=name or _stem(path))


def _netflix_set(
    path: Path, files: list[Path], duplicates: DuplicatePolicy, pair_duplicates: PairPolicy | None
) -> Interactions:
    """The ratings of `files` as one set (`netflix_prize` without its cache and name)."""
    blocks = [_netflix_file(f) for f in files]
    # [F + 1] first row of each file in the joined set
    rows = np.cumsum([0] + [b.rows for b in blocks])
    if rows[-1] == 0:
        raise DataError(f"{path}: no ratings (only 'MovieID:' lines)")
    cols = {
        role: pa.chunked_array([b.columns[role] for b in blocks if b.rows])
        for role in NETFLIX_COLUMNS
    }

    def line_of(row: int) -> str:
        k = int(np.searchsorted(rows, row, side="right")) - 1
        if not 0 <= row < rows[-1]:
            return str(row + 1)
        line = blocks[k].line(row - int(rows[k]))
        return f"{line} of {files[k].name}" if path.is_dir() else str(line)

    try:
        return arrow_interactions(cols, str(path), duplicates, pair_duplicates, 0)
    except DataError as err:
        raise _locate(err, NETFLIX_COLUMNS, line_of, 0) from None


@dataclass
class _NetflixBlock:
    """The ratings of one Netflix file: Arrow arrays by role, and where its data lines are."""

    columns: dict[str, pa.Array]
    rows: int
    # [S] sorted 0-based positions of the lines that are not ratings (headers, blanks)
    skipped: np.ndarray

    def line(self, row: int) -> int:
        """The 1-based file line of 0-based rating `row`: skipped line s_j has s_j - j ratings
        before it, so the row lies after the skipped lines whose count of ratings before is <=
        row."""
        before = self.skipped - np.arange(len(self.skipped))
        return row + int(np.searchsorted(before, row, side="right")) + 1


def _netflix_files(path: Path) -> list[Path]:
    if not path.is_dir():
        _check_file(path)
        return [path]
    files = sorted(
        (p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    known = [p for p in files if _NETFLIX_FILE.fullmatch(p.name)]
    if not files:
        raise DataError(
            f"{path}: directory has no files (expected the Netflix Prize training_set/mv_*.txt "
            "or combined_data_*.txt files)"
        )
    if known and len(known) < len(files):
        names = {p.name for p in known}
        log.info(
            "%s: reading the %d Netflix rating files, not %s",
            path,
            len(known),
            [p.name for p in files if p.name not in names],
        )
    return known or files


def _netflix_file(file: Path) -> _NetflixBlock:
    """One Netflix file: its lines as one string column, the `MovieID:` headers found and their
    ids carried forward to the ratings after them, the ratings split and typed as columns."""
    text = pc.utf8_trim_whitespace(_file_lines(file))  # [L] line k is file line k + 1
    blank = pc.equal(text, "").to_numpy(zero_copy_only=False)  # [L]
    header = pc.ends_with(text, ":").to_numpy(zero_copy_only=False)  # [L]
    if blank.all():
        raise DataError(f"{file}: file is empty")
    heads = np.flatnonzero(header)  # [H] lines of the MovieID: headers
    movie_text = pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(text.take(pa.array(heads)), 0, -1))
    movie_ids = _whole_numbers(movie_text, file, heads, "MovieID", "a 'MovieID:' line")
    data = np.flatnonzero(~(header | blank))  # [N] lines of ratings
    movie_of_line = np.cumsum(header) - 1  # [L] the last header at or before each line (-1: none)
    if len(data) and movie_of_line[data[0]] < 0:
        raise DataError(
            f"{file}: line {data[0] + 1} comes before any 'MovieID:' line: "
            f"{_shown(text[int(data[0])].as_py())}"
        )
    skipped = np.flatnonzero(header | blank)
    if len(data) == 0:
        empty = {
            role: pa.array([], type=t)
            for role, t in (
                ("user", pa.int64()),
                ("item", pa.int64()),
                ("value", pa.float64()),
                ("timestamp", pa.int64()),
            )
        }
        return _NetflixBlock(empty, 0, skipped)
    ratings = text.take(pa.array(data))
    fields = pc.split_pattern(ratings, ",")
    counts = arrow_numpy(pc.list_value_length(fields))
    if (bad := np.flatnonzero(counts != 3)).size:
        k = int(bad[0])
        raise DataError(
            f"{file}: line {data[k] + 1} has {counts[k]} field(s), 3 expected "
            f"(CustomerID,Rating,Date): {_shown(ratings[k].as_py())}"
        )
    cell = [pc.utf8_trim_whitespace(pc.list_element(fields, j)) for j in range(3)]
    users = _whole_numbers(cell[0], file, data, "CustomerID", "a rating line")
    values = _parsed(
        cell[1], file, data, "Rating", lambda c: pc.cast(c, pa.float64()), "is not a number"
    )
    # Arrow's ISO parser refuses 2005-02-30, which strptime would roll over to March 2
    _matching(
        cell[2], r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", file, data, "Date", "is not a YYYY-MM-DD date"
    )
    dates = _parsed(
        cell[2],
        file,
        data,
        "Date",
        lambda c: pc.cast(c, pa.timestamp("s")),
        "is not a valid YYYY-MM-DD date",
    )
    items = pa.array(movie_ids[movie_of_line[data]])
    columns = {
        "user": users,
        "item": items,
        "value": values,
        "timestamp": pc.cast(dates, pa.int64()),
    }
    return _NetflixBlock({role: _array(col) for role, col in columns.items()}, len(data), skipped)


def _file_lines(file: Path) -> pa.ChunkedArray:
    """Every line of a text file (plain, .gz or .bz2) as one Arrow string column, blank lines
    included (so row k is line k + 1): Arrow's CSV reader with a delimiter and no quote
    character, which no Netflix line holds."""
    read = pcsv.ReadOptions(column_names=["line"], use_threads=True)
    parse = pcsv.ParseOptions(
        delimiter=_LINE_DELIMITER, quote_char=False, escape_char=False, ignore_empty_lines=False
    )
    convert = pcsv.ConvertOptions(
        column_types={"line": pa.string()},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        return pcsv.read_csv(str(file), read, parse, convert).column("line")
    except pa.ArrowInvalid as err:
        message = _first_line(err)
        if "Empty CSV" in message:
            raise DataError(f"{file}: file is empty") from None
        if "UTF8" in message or "UTF-8" in message:
            raise DataError(f"{file}: not UTF-8 text ({message}); is it a binary file?") from None
        if "Expected 1 columns" in message:  # a line holding the delimiter: find it (error path)
            with pa.input_stream(str(file), compression="detect") as stream:
                content = stream.read()
            line = content[: content.find(_LINE_DELIMITER.encode())].count(b"\n") + 1
            raise DataError(
                f"{file}: line {line} holds the control character \\x1f; not a Netflix ratings line"
            ) from None
        raise DataError(f"{file}: cannot be read as text: {message}") from None
    except (OSError, pa.ArrowException, EOFError) as err:  # a bad or truncated archive
        raise DataError(f"{file}: cannot be read as text: {_first_line(err)}") from None


def _whole_numbers(
    cells: pa.ChunkedArray, file: Path, lines: np.ndarray, column: str, where: str
) -> np.ndarray:
    """Trimmed text cells that must be unsigned whole numbers, as int64 numpy; `DataError`
    naming the file line (`lines[k]` + 1 for cell k) of the first one that is not."""
    _matching(cells, r"^[0-9]+$", file, lines, column, f"({where}) is not a whole number")
    numbers = _parsed(
        cells, file, lines, column, lambda c: pc.cast(c, pa.int64()), "is beyond int64"
    )
    return arrow_numpy(numbers) if len(cells) else np.zeros(0, dtype=np.int64)


def _matching(
    cells: pa.ChunkedArray, pattern: str, file: Path, lines: np.ndarray, column: str, what: str
) -> None:
    """`DataError` naming the first cell that does not match `pattern` and its file line
    (`lines[k]` + 1 for cell k): "is missing" when it is empty, else `what` and the cell."""
    ok = pc.match_substring_regex(cells, pattern).to_numpy(zero_copy_only=False)
    if not ok.all():
        k = int(np.flatnonzero(~ok)[0])
        value = cells[k].as_py()
        said = "is missing" if value == "" else f"{what}: {_shown(value)}"
        raise DataError(f"{file}: column '{column}' at line {lines[k] + 1} {said}")


def _parsed(
    cells: pa.ChunkedArray,
    file: Path,
    lines: np.ndarray,
    column: str,
    convert: Callable[[pa.ChunkedArray], pa.ChunkedArray],
    what: str,
) -> pa.ChunkedArray:
    """`convert(cells)` (an Arrow cast of the whole column); where it fails, `DataError`
    naming the first cell it refuses and its file line (`lines[k]` + 1)."""
    try:
        return convert(cells)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        k = _first_refused(cells, convert)
        value = cells[k].as_py()
        what = "is empty" if value == "" else f"{what}: {_shown(value)}"
        raise DataError(f"{file}: column '{column}' at line {lines[k] + 1} {what}") from None


def _first_refused(
    cells: pa.ChunkedArray, convert: Callable[[pa.ChunkedArray], pa.ChunkedArray]
) -> int:
    """The position of the first cell `convert` refuses, found by bisection (error path only):
    each step converts the first half of what remains, n cells in all over log n steps."""
    lo, hi = 0, len(cells)  # the first refused cell lies in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            convert(cells.slice(lo, mid - lo))
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    return lo


def _array(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A ChunkedArray as one Array (the joined set is a ChunkedArray of the files' Arrays)."""
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


# JSON lines --------------------------------------------------------------------------------
def json_lines(
    path: str | os.PathLike,
    user_col: str,
    item_col: str,
    value_col: str | None = None,
    time_col: str | None = None,
    time_unit: str = "s",
    duplicates: DuplicatePolicy = "keep_last",
    pair_duplicates: PairPolicy | None = None,
    name: str | None = None,
    cache: bool | None = None,
) -> Interactions:
    """Read interactions from newline-delimited JSON: one object per line (`.json`, `.jsonl`,
    `.ndjson`; plain or `.gz` / `.bz2`), blank lines skipped, other fields ignored.

    `user_col`, `item_col`, `value_col` and `time_col` name the fields. Ids keep their JSON
    type: strings stay string raw ids, integers become int64 raw ids (a field must hold one
    type throughout; integer ids beyond int64 are refused). Values are numbers (or numeric
    strings; true and false are 1 and 0); without `value_col` every value is 1. Times are numbers in
    `time_unit` ("s" or "ms"; milliseconds are floored to whole seconds) or ISO-8601 strings
    ("2021-03-04", "2021-03-04T05:06:07+01:00"; naive ones are UTC), stored as int64 epoch seconds.
    The types are those of the first record, and the file is read by Arrow's JSON reader as whole
    columns. `duplicates` and `pair_duplicates` are the policies of `Interactions.from_arrays`. The
    set is named `name`, else the file name without its extensions.

    Bad input raises `DataError` (one line) naming the file, the field and the 1-based file
    line: a record without the field or with null there (missing cell), a field holding
    another JSON type than in the first record, a value that is not a number, a time that is
    neither a number nor an ISO date, a line that is not a JSON object; a field absent from
    every record names the fields the records have. An empty file raises too.

    `cache`: as `read_table`'s (None: files of 16 MiB or more are kept in the data cache).
    """
    path = Path(path)
    _check_file(path)
    if time_unit not in ("s", "ms"):
        raise DataError(f"{path}: time_unit must be 's' or 'ms', got {time_unit!r}")
    given = {"user": user_col, "item": item_col, "value": value_col, "timestamp": time_col}
    wanted = {role: field for role, field in given.items() if field is not None}
    options = {
        "columns": wanted,
        "time_unit": time_unit,
        "duplicates": duplicates,
        "pair_duplicates": pair_duplicates,
    }
    data = cached(
        "json_lines",
        [path],
        options,
        lambda: _json_set(path, wanted, time_col, time_unit, duplicates, pair_duplicates),
        cache,
    )
    return replace(data, name=name or _stem(path))


def _json_set(
    path: Path,
    wanted: dict[str, str],
    time_col: str | None,
    time_unit: str,
    duplicates: DuplicatePolicy,
    pair_duplicates: PairPolicy | None,
) -> Interactions:
    """The records of `path` as a set (`json_lines` without its cache and name)."""
    record, first = _first_record(path)
    types = {}
    for role, field in wanted.items():
        if record.get(field) is None:  # the first record already misses it: an error either way
            raise _missing_field(path, field, first)
        types[field] = _arrow_type(path, role, field, record[field], first)
    table = _read_json(path, types, time_col)
    cols = {role: table.column(field) for role, field in wanted.items()}
    if "timestamp" in cols:
        cols["timestamp"] = _seconds_column(cols["timestamp"], time_unit)
    lines = _JsonLines(path)
    try:
        return arrow_interactions(cols, str(path), duplicates, pair_duplicates, 0)
    except DataError as err:
        message = re.sub(
            r"\bcolumn '", "field '", str(_locate(err, wanted, lines.line, 0)), count=1
        )
        # a null cell is a record without the field or with null there, not an empty CSV cell
        raise DataError(
            re.sub(r"\bis (empty|missing) at\b", "is missing (absent or null) at", message, count=1)
        ) from None


def amazon_reviews(
    path: str | os.PathLike,
    duplicates: DuplicatePolicy = "keep_last",
    pair_duplicates: PairPolicy | None = None,
    name: str | None = None,
    cache: bool | None = None,
) -> Interactions:
    """Read an Amazon reviews dump (JSON lines, plain or `.gz`), its layout told by the first
    record:

    - 2014/2018 (McAuley et al.): users `reviewerID`, items `asin`, values `overall`,
      timestamps `unixReviewTime` (seconds);
    - 2023 (Hou et al.): users `user_id`, items `parent_asin` (the product, across its
      variants; `asin` when the first record has no `parent_asin`), values `rating`,
      timestamps `timestamp` (milliseconds, floored to seconds).

    Ids are strings. Read by `json_lines`, whose errors (naming the file, field and line)
    apply; a file of neither layout raises `DataError` naming the fields of its first record
    and the two layouts.
    """
    path = Path(path)
    _check_file(path)
    record, _ = _first_record(path)
    if "reviewerID" in record:
        user, item, value, time, unit = AMAZON_LAYOUTS["2014/2018"]
    elif "user_id" in record:
        user, item, value, time, unit = AMAZON_LAYOUTS["2023"]
        if item not in record and "asin" in record:
            item = "asin"
    else:
        old, new = AMAZON_LAYOUTS["2014/2018"], AMAZON_LAYOUTS["2023"]
        raise DataError(
            f"{path}: not an Amazon reviews file: its first record has fields {sorted(record)}; "
            f"expected the 2014/2018 layout ({', '.join(old[:4])}) or the 2023 layout "
            f"({new[0]}, {new[1]} or asin, {', '.join(new[2:4])})"
        )
    return json_lines(path, user, item, value, time, unit, duplicates, pair_duplicates, name, cache)


def _first_record(path: Path) -> tuple[dict, int]:
    """The first record of a JSON-lines file and its 1-based line (reads only that far)."""
    head, number = b"", 1
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            while True:
                chunk = stream.read(_SAMPLE_BYTES)
                head += chunk
                while b"\n" in head:
                    line, head = head.split(b"\n", 1)
                    if line.strip():
                        return _record(path, line, number), number
                    number += 1
                if not chunk:
                    break
    except (OSError, pa.ArrowException, EOFError) as err:
        raise DataError(f"{path}: cannot be read: {_first_line(err)}") from None
    if head.strip():
        return _record(path, head, number), number
    raise DataError(f"{path}: file is empty")


def _record(path: Path, line: bytes, number: int) -> dict:
    """One line as a JSON object; `DataError` naming the line when it is not one."""
    try:
        text = line.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: line {number} is not UTF-8 text; is it a binary file?") from None
    repeated: list[str] = []

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        keys = [k for k, _ in items]
        repeated.extend(k for k in keys if keys.count(k) > 1)
        return dict(items)

    try:
        record = json.loads(text, object_pairs_hook=pairs)
    except ValueError as err:
        raise DataError(
            f"{path}: line {number} is not JSON ({getattr(err, 'msg', err)}): {_shown(text)}"
        ) from None
    if not isinstance(record, dict):
        hint = (
            " (a JSON array of records? give one object per line)"
            if isinstance(record, list)
            else ""
        )
        raise DataError(f"{path}: line {number} is not a JSON object{hint}: {_shown(text)}")
    if repeated:
        raise DataError(f"{path}: line {number} repeats the field '{repeated[0]}'")
    return record


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", dict: "object", list: "array"}.get(type(value), "null")


def _arrow_type(path: Path, role: str, field: str, value: object, line: int) -> pa.DataType:
    """The Arrow type to read `field` as, from its value in the first record: ids as their
    JSON type (int64 or string), values as float64 (integers too, so a later 4.5 fits),
    times as int64, float64 or string."""
    kind = _json_kind(value)
    allowed = {
        "user": ("integer", "string"),
        "item": ("integer", "string"),
        "value": ("integer", "number", "string", "boolean"),
        "timestamp": ("integer", "number", "string"),
    }[role]
    if kind not in allowed:
        what = {"user": "ids", "item": "ids", "value": "numbers", "timestamp": "times"}[role]
        raise DataError(
            f"{path}: field '{field}' holds a JSON {kind} at line {line} ({_json_text(value)}); "
            f"{role} {what} must be JSON {' or '.join(k + 's' for k in allowed)}"
        )
    if kind == "integer" and isinstance(value, int) and not -(2**63) <= value < 2**63:
        if role in ("user", "item"):  # as a double, nearby ids would merge
            raise DataError(
                f"{path}: field '{field}' holds the integer {value} at line {line}, beyond the "
                "int64 range of integer ids; write such ids as JSON strings"
            )
        kind = "number"  # Arrow reads an integer beyond int64 as a double
    if role == "value" and kind == "integer":
        kind = "number"
    return {
        "integer": pa.int64(),
        "number": pa.float64(),
        "string": pa.string(),
        "boolean": pa.bool_(),
    }[kind]


def _read_json(path: Path, types: dict[str, pa.DataType], time_field: str | None) -> pa.Table:
    """The wanted fields of a JSON-lines file (field -> Arrow type) as an Arrow table, other
    fields skipped unparsed. A failure is located line by line (`_json_failure`)."""
    block = _JSON_BLOCK
    while True:
        parse = pjson.ParseOptions(
            explicit_schema=pa.schema(list(types.items())), unexpected_field_behavior="ignore"
        )
        try:
            return pjson.read_json(
                str(path), pjson.ReadOptions(use_threads=True, block_size=block), parse
            )
        except pa.ArrowInvalid as err:
            message = _first_line(err)
            if "straddling" in message.lower() and block < _JSON_BLOCK_RETRY:
                block = _JSON_BLOCK_RETRY  # a line longer than a block
                continue
            if "to int64" in message and time_field is not None and types[time_field] == pa.int64():
                # a fraction after whole numbers in the time field (what Arrow's own inference
                # would promote): read the times as float64, floored later
                types = {**types, time_field: pa.float64()}
                continue
            raise _json_failure(path, types, message) from None
        except (OSError, pa.ArrowException, EOFError) as err:
            raise DataError(f"{path}: cannot be read as JSON lines: {_first_line(err)}") from None


def _json_lines_of(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line, bytes) of every non-blank line of a file (error paths only)."""
    with pa.input_stream(str(path), compression="detect") as stream:
        content = stream.read()
    for number, line in enumerate(content.split(b"\n"), 1):
        if line.strip():
            yield number, line


def _json_failure(path: Path, types: dict[str, pa.DataType], message: str) -> DataError:
    """The error for a file Arrow's JSON reader refused: the first line that is not a JSON
    object, or whose wanted field holds another JSON type than the column's (read again line
    by line: an error path); Arrow's own message when no line is found."""
    accepted = {
        pa.int64(): ("integer",),
        pa.float64(): ("integer", "number"),
        pa.string(): ("string",),
        pa.bool_(): ("boolean",),
    }
    seen: dict[str, tuple[str, int]] = {}  # field -> (JSON kind, line) of its first value
    for number, line in _json_lines_of(path):
        record = _record(path, line, number)
        for field, kind_of in types.items():
            value = record.get(field)
            if value is None:
                continue
            kind = _json_kind(value)
            seen.setdefault(field, (kind, number))
            if kind not in accepted.get(kind_of, ()) or (
                kind == "integer" and not -(2**63) <= value < 2**63
            ):
                first_kind, first_line = seen[field]
                raise DataError(
                    f"{path}: field '{field}' holds a JSON {kind} at line {number} "
                    f"({_json_text(value)}), but a JSON {first_kind} at line {first_line}; a field "
                    "must hold one type in every record"
                )
    return DataError(f"{path}: cannot be read as JSON lines: {message}")


def _missing_field(path: Path, field: str, line: int) -> DataError:
    """The error for a field the first record (at `line`) lacks: absent from every record
    (naming the fields there are), or missing there (read line by line: an error path)."""
    fields: dict[str, None] = {}
    for number, raw in _json_lines_of(path):
        record = _record(path, raw, number)
        if field in record:
            break
        fields.update(dict.fromkeys(record))
    else:
        return DataError(
            f"{path}: no record has the field '{field}'; the records have fields {list(fields)}"
        )
    return DataError(f"{path}: field '{field}' is missing (absent or null) at line {line}")


class _JsonLines:
    """File lines of the records (Arrow's reader skips blank lines), found only when an error
    names a row."""

    def __init__(self, path: Path):
        self._path = path
        self._lines: np.ndarray | None = None  # [records] the line of each record, once read

    def line(self, row: int) -> int:
        if self._lines is None:
            self._lines = np.array(
                [number for number, _ in _json_lines_of(self._path)], dtype=np.int64
            )
        return int(self._lines[row]) if 0 <= row < len(self._lines) else row + 1


def _seconds_column(col: pa.ChunkedArray, unit: str) -> pa.ChunkedArray | pa.Array:
    """A time column as whole seconds where that can be done on the whole column: numbers in
    `unit` (milliseconds floored), ISO-8601 strings parsed by Arrow. Anything else (a null, a
    string Arrow cannot parse) is left for `arrow_interactions`, which names the bad cell."""
    if col.null_count:
        return col
    kind = col.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        if unit == "s":
            return col
        numbers = arrow_numpy(col)
        return pa.array(numbers // 1000 if pa.types.is_integer(kind) else np.floor(numbers / 1000))
    if not pa.types.is_string(kind):
        return col
    text = pc.utf8_trim_whitespace(col)
    if pc.all(pc.match_substring_regex(text, r"^[+-]?[0-9]+$")).as_py():
        if unit == "s":
            return col  # whole numbers of seconds: arrow_interactions reads them exactly
        try:
            return pa.array(arrow_numpy(pc.cast(text, pa.int64())) // 1000)
        except pa.ArrowInvalid:
            return col
    # a zone (Z, +01:00) after a time: Arrow parses those only into a UTC timestamp, the others only
    # naive
    zoned = pc.match_substring_regex(text, r"\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)$")
    try:
        naive = pc.cast(pc.if_else(zoned, "1970-01-01", text), pa.timestamp("us"))
        aware = pc.cast(pc.if_else(zoned, text, "1970-01-01T00:00:00Z"), pa.timestamp("us", "UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return col
    micro = arrow_numpy(pc.if_else(zoned, pc.cast(aware, pa.int64()), pc.cast(naive, pa.int64())))
    if (micro % 1_000_000).any():
        return pa.array(micro / 1e6)  # fractions of seconds: from_arrays floors them (and says so)
    return pa.array(micro // 1_000_000)


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def _json_text(value: object) -> str:
    """A JSON value quoted in an error, as JSON (one line), cut to `_SHOWN` characters."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _shown(text: str) -> str:
    """A line or cell quoted in an error: its repr (one line), cut to `_SHOWN` characters."""
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")
