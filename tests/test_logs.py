"""Tests for `mfzoo.data.sources.logs`: Netflix Prize files, JSON lines, Amazon review dumps."""

from __future__ import annotations

import bz2
import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch

from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions
from mfzoo.data.sources import amazon_reviews, json_lines, netflix_prize, read_table


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def epoch(date: str) -> int:
    return int(datetime.fromisoformat(date).replace(tzinfo=timezone.utc).timestamp())


def events(data: Interactions) -> list[tuple]:
    """(raw user, raw item, value, timestamp) of each row, in row order."""
    t = data.timestamps.tolist() if data.timestamps is not None else [None] * len(data)

    def raw(x):
        return x.item() if isinstance(x, np.generic) else x

    return [
        (raw(data.user_ids[u]), raw(data.item_ids[i]), v, s)
        for u, i, v, s in zip(
            data.users.tolist(), data.items.tolist(), data.values.tolist(), t, strict=True
        )
    ]


def same(a: Interactions, b: Interactions) -> None:
    assert (
        torch.equal(a.users, b.users)
        and torch.equal(a.items, b.items)
        and torch.equal(a.values, b.values)
    )
    assert (a.timestamps is None) == (b.timestamps is None)
    if a.timestamps is not None:
        assert torch.equal(a.timestamps, b.timestamps)
    for x, y in ((a.user_ids, b.user_ids), (a.item_ids, b.item_ids)):
        assert x.dtype == y.dtype and x.tolist() == y.tolist()


def raises(call, *parts: str) -> str:
    """Run `call`, expect a one-line `DataError` holding every one of `parts`; its message."""
    with pytest.raises(DataError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message
    return message


# Netflix Prize ------------------------------------------------------------------------------
COMBINED = (
    "1:\n1488844,3,2005-09-06\n822109,5,2005-05-13\n\n"  # a blank line between blocks
    "2:\n2059652,4,2005-09-05\n1488844,1,2004-01-30\n"
)
COMBINED_EVENTS = [
    (1488844, 1, 3.0, epoch("2005-09-06")),
    (822109, 1, 5.0, epoch("2005-05-13")),
    (2059652, 2, 4.0, epoch("2005-09-05")),
    (1488844, 2, 1.0, epoch("2004-01-30")),
]


def test_netflix_combined_file_round_trip(tmp_path):
    data = netflix_prize(write(tmp_path, "combined_data_1.txt", COMBINED))
    assert events(data) == COMBINED_EVENTS
    assert data.name == "combined_data_1"
    assert data.user_ids.dtype == np.int64 and data.item_ids.dtype == np.int64
    assert data.user_ids.tolist() == [822109, 1488844, 2059652]  # sorted distinct raw ids
    # UTC midnight
    assert data.timestamps.dtype == torch.int64 and data.timestamps[0].item() % 86400 == 0


def test_netflix_gzip_bz2_and_crlf(tmp_path):
    gz = tmp_path / "combined_data_1.txt.gz"
    gz.write_bytes(gzip.compress(COMBINED.encode()))
    bz = tmp_path / "ratings.txt.bz2"
    bz.write_bytes(bz2.compress(COMBINED.replace("\n", "\r\n").encode()))
    for path in (gz, bz):
        assert events(netflix_prize(path)) == COMBINED_EVENTS
    assert netflix_prize(gz, name="netflix").name == "netflix"


def test_netflix_training_set_directory_in_sorted_name_order(tmp_path):
    folder = tmp_path / "training_set"
    write(folder, "mv_0000002.txt", "2:\n7,4,2005-01-02\n9,2,2005-01-03\n")
    write(folder, "mv_0000001.txt", "1:\n9,5,2004-12-31\n")
    data = netflix_prize(folder)
    assert data.name == "training_set"
    assert events(data) == [
        (9, 1, 5.0, epoch("2004-12-31")),
        (7, 2, 4.0, epoch("2005-01-02")),
        (9, 2, 2.0, epoch("2005-01-03")),
    ]


def test_netflix_kaggle_directory_reads_only_the_rating_files(tmp_path):
    folder = tmp_path / "netflix"
    write(folder, "combined_data_2.txt", "3:\n5,1,2005-01-01\n")
    (folder / "combined_data_1.txt.gz").write_bytes(gzip.compress(COMBINED.encode()))
    write(folder, "movie_titles.csv", "1,2003,Dinosaur Planet\n")
    write(folder, "probe.txt", "1:\n30878\n")
    data = netflix_prize(folder)
    assert events(data) == [*COMBINED_EVENTS, (5, 3, 1.0, epoch("2005-01-01"))]


def test_netflix_matches_the_same_events_read_as_csv(tmp_path):
    csv = "user,item,rating,date\n" + "".join(
        f"{u},{i},{int(v)},{datetime.fromtimestamp(t, timezone.utc):%Y-%m-%d}\n"
        for u, i, v, t in COMBINED_EVENTS
    )
    oracle = read_table(write(tmp_path, "ratings.csv", csv), "user", "item", "rating", "date")
    same(netflix_prize(write(tmp_path, "combined_data_1.txt", COMBINED)), oracle)


def test_netflix_bad_cell_far_into_a_file_names_its_line(tmp_path):
    rows = [f"{u},{1 + u % 5},2005-01-01" for u in range(1, 1001)]
    rows[776] = "777,x,2005-01-01"  # file line 778 (the header is line 1)
    path = write(tmp_path, "mv_0000001.txt", "1:\n" + "\n".join(rows) + "\n")
    raises(
        lambda: netflix_prize(path), "mv_0000001.txt", "'Rating'", "line 778", "not a number", "'x'"
    )


@pytest.mark.parametrize(
    "text, parts",
    [
        ("7,3,2005-01-01\n1:\n", ["line 1", "before any 'MovieID:' line"]),
        ("\n1:\n7,3,2005-01-01\n8,3\n", ["line 4", "2 field(s), 3 expected", "'8,3'"]),
        ("1:\n7,3,2005-01-01,x\n", ["line 2", "4 field(s)"]),
        (
            "1:\n7,3,2005-01-01\nabc:\n8,3,2005-01-01\n",
            ["'MovieID'", "line 3", "not a whole number", "'abc'"],
        ),
        ("1:\n7,3,2005-01-01\n:\n", ["'MovieID'", "line 3", "missing"]),
        ("1:\n7,3,2005-01-01\nx7,3,2005-01-01\n", ["'CustomerID'", "line 3", "not a whole number"]),
        (
            "1:\n7,3,2005-01-01\n8,three,2005-01-01\n",
            ["'Rating'", "line 3", "not a number", "'three'"],
        ),
        ("1:\n7,,2005-01-01\n", ["'Rating'", "line 2", "empty"]),
        (
            "1:\n7,3,2005-01-01\n8,4,2005-13-01\n",
            ["'Date'", "line 3", "YYYY-MM-DD", "'2005-13-01'"],
        ),
        ("1:\n7,3,yesterday\n", ["'Date'", "line 2", "'yesterday'"]),
        (
            "1:\n7,3,2005-02-30\n",
            ["'Date'", "line 2", "not a valid YYYY-MM-DD date", "'2005-02-30'"],
        ),
        ("1:\n7,3,05-01-01\n", ["'Date'", "line 2", "YYYY-MM-DD"]),
        (
            "1:\n7,3,2005-01-01\n\n8,nan,2005-01-01\n",
            ["'Rating'", "line 4", "NaN"],
        ),  # from arrow_interactions
        ("1:\n7,3,2005-01-01\n7,4,2005-02-01\n", ["pair", "lines 2, 3"]),
        ("", ["empty"]),
        ("\n  \n", ["empty"]),
        ("1:\n", ["no ratings"]),
        ("1:\n7,3\x1f,2005-01-01\n", ["line 2", "x1f"]),
    ],
)
def test_netflix_errors_name_file_line_and_column(tmp_path, text, parts):
    path = write(tmp_path, "mv_0000001.txt", text)
    raises(lambda: netflix_prize(path), "mv_0000001.txt", *parts)


def test_netflix_errors_in_a_directory_name_the_file(tmp_path):
    folder = tmp_path / "training_set"
    write(folder, "mv_0000001.txt", "1:\n7,3,2005-01-01\n")
    write(folder, "mv_0000002.txt", "2:\n7,3,2005-01-01\n8,3,2005-01-01\n7,1,2005-02-01\n")
    raises(
        lambda: netflix_prize(folder),
        "training_set",
        "pair (7, 2)",
        "lines 2 of mv_0000002.txt, 4 of mv_0000002.txt",
    )
    assert len(netflix_prize(folder, pair_duplicates="last")) == 3
    write(folder, "mv_0000003.txt", "3:\n9,inf,2005-01-01\n")
    raises(
        lambda: netflix_prize(folder, pair_duplicates="last"),
        "'Rating'",
        "line 2 of mv_0000003.txt",
    )
    write(folder, "mv_0000004.txt", "4:\n9,4,2005-02-30\n")  # parsed before the files are joined
    raises(lambda: netflix_prize(folder), "mv_0000004.txt", "'Date'", "line 2")


def test_netflix_missing_empty_and_unreadable_inputs(tmp_path):
    raises(lambda: netflix_prize(tmp_path / "nope.txt"), "nope.txt", "not found")
    (tmp_path / "empty_dir").mkdir()
    raises(lambda: netflix_prize(tmp_path / "empty_dir"), "empty_dir", "no files")
    truncated = tmp_path / "mv_0000001.txt.gz"
    truncated.write_bytes(gzip.compress(COMBINED.encode())[:20])
    raises(lambda: netflix_prize(truncated), "mv_0000001.txt.gz", "cannot be read")


# JSON lines ---------------------------------------------------------------------------------
def jsonl(tmp_path: Path, name: str, records: list, blank_after: int | None = None) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    if blank_after is not None:
        lines.insert(blank_after, "")
    text = "\n".join(lines) + "\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    return path


LOG = [
    {"user": "alice", "item": 10, "stars": 4, "ms": 1609459200999, "text": "ok", "tags": ["a"]},
    {"user": "bob", "item": 20, "stars": 3.5, "ms": 1609459260000, "extra": {"nested": [1, 2]}},
    {"user": "alice", "item": 30, "stars": 1, "ms": -1},
]


def test_json_lines_round_trip_types_and_ms_flooring(tmp_path):
    data = json_lines(
        jsonl(tmp_path, "log.jsonl", LOG, blank_after=1),
        "user",
        "item",
        "stars",
        "ms",
        time_unit="ms",
    )
    assert data.name == "log"
    assert data.user_ids.tolist() == ["alice", "bob"]  # JSON strings stay strings
    assert data.item_ids.dtype == np.int64  # JSON integers stay integers
    assert events(data) == [
        ("alice", 10, 4.0, 1609459200),
        ("bob", 20, 3.5, 1609459260),
        ("alice", 30, 1.0, -1),
    ]


def test_json_lines_integer_users_string_items_seconds_and_implicit(tmp_path):
    records = [{"u": 7, "i": "007", "t": 100}, {"u": 8, "i": "7", "t": 200}]
    data = json_lines(jsonl(tmp_path, "log.ndjson.gz", records), "u", "i", time_col="t")
    assert data.user_ids.dtype == np.int64 and data.item_ids.tolist() == [
        "007",
        "7",
    ]  # "007" is not 7 here
    assert data.timestamps.tolist() == [100, 200] and torch.equal(data.values, torch.ones(2))
    assert json_lines(jsonl(tmp_path, "i.json", records), "u", "i").timestamps is None


def test_json_lines_times_as_iso_strings_fractions_and_ms_strings(tmp_path):
    records = [
        {"u": 1, "i": 1, "t": "2021-01-01"},
        {"u": 1, "i": 2, "t": "2021-01-01T01:00:00+01:00"},
        {"u": 2, "i": 1, "t": "2021-01-01 00:00:01Z"},
        {"u": 2, "i": 2, "t": "2021-01-02T00:00:00.75"},
    ]
    data = json_lines(jsonl(tmp_path, "iso.jsonl", records), "u", "i", time_col="t")
    base = epoch("2021-01-01")
    assert data.timestamps.tolist() == [base, base, base + 1, base + 86400]
    later_fraction = [{"u": 1, "i": 1, "t": 100}, {"u": 1, "i": 2, "t": 100.5}]
    data = json_lines(jsonl(tmp_path, "f.jsonl", later_fraction), "u", "i", time_col="t")
    assert data.timestamps.tolist() == [100, 100]
    as_text = [{"u": 1, "i": 1, "t": "1500"}, {"u": 1, "i": 2, "t": "-1"}]
    data = json_lines(jsonl(tmp_path, "ms.jsonl", as_text), "u", "i", time_col="t", time_unit="ms")
    assert data.timestamps.tolist() == [1, -1]


def test_json_lines_match_the_same_events_read_as_csv(tmp_path):
    rows = [
        ("alice", 10, 4.0, "2021-01-01T00:00:00"),
        ("bob", 20, 3.5, "2021-01-01T01:00:00+01:00"),
        ("alice", 30, 1.0, "2021-02-03"),
        ("carol", 10, 5.0, "2021-01-01T00:00:09"),
    ]
    csv = "user,item,rating,when\n" + "".join(f"{u},{i},{v},{t}\n" for u, i, v, t in rows)
    oracle = read_table(write(tmp_path, "r.csv", csv), "user", "item", "rating", "when")
    records = [{"user": u, "item": i, "rating": v, "when": t} for u, i, v, t in rows]
    same(json_lines(jsonl(tmp_path, "r.jsonl", records), "user", "item", "rating", "when"), oracle)
    numeric = [(3, 10, 2.0, 1700000000), (1, 20, 5.0, 1600000000), (3, 20, 1.5, 1650000000)]
    csv = "u,i,r,t\n" + "".join(f"{u},{i},{v},{t}\n" for u, i, v, t in numeric)
    oracle = read_table(write(tmp_path, "n.csv", csv), "u", "i", "r", "t")
    records = [{"u": u, "i": i, "r": v, "t": t * 1000} for u, i, v, t in numeric]
    same(
        json_lines(jsonl(tmp_path, "n.jsonl", records), "u", "i", "r", "t", time_unit="ms"), oracle
    )


GOOD = [{"u": "a", "i": 1, "r": 4, "t": 100}, {"u": "b", "i": 2, "r": 3, "t": 200}]


@pytest.mark.parametrize(
    "records, blank_after, parts",
    [
        ([*GOOD, {"u": "c", "r": 2, "t": 300}], None, ["field 'i'", "line 3", "missing"]),
        (
            [*GOOD, {"u": "c", "i": None, "r": 2, "t": 300}],
            1,
            ["field 'i'", "line 4", "missing"],
        ),  # blank line 2
        ([*GOOD, '{"u": "c", "i": 3,'], None, ["line 3", "not JSON"]),
        ([*GOOD, "[1, 2]"], None, ["line 3", "not a JSON object"]),
        (
            [*GOOD, {"u": 3, "i": 3, "r": 2, "t": 300}],
            None,
            ["field 'u'", "line 3", "integer", "string at line 1"],
        ),
        ([*GOOD, {"u": "c", "i": "3", "r": 2, "t": 300}], None, ["field 'i'", "line 3", "string"]),
        (
            [*GOOD, {"u": "c", "i": 3, "r": "lots", "t": 300}],
            None,
            ["field 'r'", "line 3", '"lots"', "integer at line 1"],
        ),
        (
            [*GOOD, {"u": "c", "i": 3, "r": 1e300, "t": 300}],
            None,
            ["field 'r'", "line 3", "float32"],
        ),
        ([*GOOD, {"u": "c", "i": 3, "r": 2, "t": "soon"}], None, ["field 't'", "line 3", "soon"]),
        (
            [*GOOD, '{"u": "c", "u": "d", "i": 3, "r": 2, "t": 300}'],
            None,
            ["line 3", "repeats the field 'u'"],
        ),
        (
            [{"u": "a", "r": 4, "t": 1}, *GOOD],
            None,
            ["field 'i'", "line 1", "missing (absent or null)"],
        ),
        ([{"u": {"id": 1}, "i": 1, "r": 4, "t": 1}], None, ["field 'u'", "line 1", "object"]),
        ([*GOOD, {"u": "a", "i": 1, "r": 5, "t": 300}], None, ["pair ('a', 1)", "lines 1, 3"]),
    ],
)
def test_json_lines_errors_name_file_field_and_line(tmp_path, records, blank_after, parts):
    path = jsonl(tmp_path, "bad.jsonl", records, blank_after)
    raises(lambda: json_lines(path, "u", "i", "r", "t"), "bad.jsonl", *parts)


def test_json_lines_absent_field_lists_the_fields_and_other_errors(tmp_path):
    path = jsonl(
        tmp_path, "log.jsonl", [{"user": "a", "item": 1}, {"user": "b", "item": 2, "rating": 3}]
    )
    raises(
        lambda: json_lines(path, "user", "item", "stars"),
        "log.jsonl",
        "'stars'",
        "['user', 'item', 'rating']",
    )
    raises(lambda: json_lines(path, "user", "item", time_unit="us"), "time_unit")
    raises(
        lambda: json_lines(write(tmp_path, "empty.jsonl", "\n\n"), "u", "i"), "empty.jsonl", "empty"
    )
    raises(lambda: json_lines(tmp_path / "nope.jsonl", "u", "i"), "nope.jsonl", "not found")
    array = write(tmp_path, "array.json", json.dumps([{"u": 1, "i": 2}]))
    raises(lambda: json_lines(array, "u", "i"), "array.json", "line 1", "one object per line")


# Amazon reviews -----------------------------------------------------------------------------
def test_amazon_2014_2018_layout(tmp_path):
    records = [
        {
            "reviewerID": "A2SUAM1J3GNN3B",
            "asin": "0000013714",
            "reviewerName": "J. McDonald",
            "helpful": [2, 3],
            "reviewText": "I bought this...",
            "overall": 5.0,
            "summary": "Heavenly",
            "unixReviewTime": 1252800000,
            "reviewTime": "09 13, 2009",
        },
        {
            "reviewerID": "A1",
            "asin": "0000013714",
            "overall": 2.0,
            "unixReviewTime": 1252800001,
            "style": {"Format:": " Hardcover"},
            "vote": "2",
            "verified": True,
        },
    ]
    data = amazon_reviews(jsonl(tmp_path, "reviews_Books_5.json.gz", records))
    assert data.name == "reviews_Books_5"
    assert events(data) == [
        ("A2SUAM1J3GNN3B", "0000013714", 5.0, 1252800000),
        ("A1", "0000013714", 2.0, 1252800001),
    ]


def test_amazon_2023_layout_parent_asin_and_milliseconds(tmp_path):
    records = [
        {
            "rating": 5.0,
            "title": "Great",
            "text": "...",
            "images": [],
            "asin": "B01",
            "parent_asin": "P1",
            "user_id": "AGKH",
            "timestamp": 1588687728923,
            "helpful_vote": 2,
            "verified_purchase": True,
        },
        {
            "rating": 3.0,
            "asin": "B02",
            "parent_asin": "P1",
            "user_id": "BXYZ",
            "timestamp": 1588687729000,
        },
    ]
    data = amazon_reviews(jsonl(tmp_path, "All_Beauty.jsonl", records), name="beauty")
    assert data.name == "beauty"
    assert events(data) == [("AGKH", "P1", 5.0, 1588687728), ("BXYZ", "P1", 3.0, 1588687729)]
    for r in records:
        del r["parent_asin"]
    data = amazon_reviews(jsonl(tmp_path, "old.jsonl", records))
    assert data.item_ids.tolist() == ["B01", "B02"]


def test_amazon_errors(tmp_path):
    path = jsonl(tmp_path, "other.jsonl", [{"user": "a", "movie": 1}])
    raises(
        lambda: amazon_reviews(path),
        "other.jsonl",
        "['movie', 'user']",
        "reviewerID",
        "user_id",
        "parent_asin",
    )
    records = [
        {"reviewerID": "A1", "asin": "B", "overall": 5.0, "unixReviewTime": 1},
        {"reviewerID": "A2", "asin": "B", "unixReviewTime": 2},
    ]
    raises(
        lambda: amazon_reviews(jsonl(tmp_path, "r.json", records)),
        "r.json",
        "field 'overall'",
        "line 2",
        "missing (absent or null)",
    )


def test_netflix_and_json_lines_use_the_data_cache(tmp_path, monkeypatch):
    from mfzoo.data.sources import logs

    monkeypatch.setenv("MFZOO_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "training_set"
    write(folder, "mv_0000001.txt", "1:\n9,5,2004-12-31\n")
    write(folder, "mv_0000002.txt", "2:\n7,4,2005-01-02\n")
    jsonl = write(
        tmp_path, "r.jsonl", '{"u": "a", "i": 1, "r": 4.0}\n{"u": "b", "i": 2, "r": 3.0}\n'
    )
    first = netflix_prize(folder, cache=True), json_lines(jsonl, "u", "i", "r", cache=True)
    monkeypatch.setattr(logs, "_netflix_set", lambda *a: pytest.fail("parsed again"))
    monkeypatch.setattr(logs, "_json_set", lambda *a: pytest.fail("parsed again"))
    second = netflix_prize(folder, cache=True), json_lines(jsonl, "u", "i", "r", cache=True)
    for a, b in zip(first, second, strict=True):
        same(a, b)
    write(folder, "mv_0000002.txt", "2:\n7,1,2005-01-02\n")  # a changed file: parsed again
    with pytest.raises(pytest.fail.Exception, match="parsed again"):
        netflix_prize(folder, cache=True)


def test_json_integer_ids_beyond_int64_are_refused(tmp_path):
    path = write(
        tmp_path,
        "big.jsonl",
        '{"u": 9223372036854775808, "i": 1}\n{"u": 9223372036854775809, "i": 2}\n',
    )
    with pytest.raises(
        DataError, match=r"big\.jsonl: field 'u' holds the integer 9223372036854775808 at line 1"
    ):
        json_lines(path, "u", "i")
