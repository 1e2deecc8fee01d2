"""Tests for `mfzoo.data.sources`: file readers, MovieLens loading (offline), synthetic data."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mfzoo.data.errors import DataError
from mfzoo.data.sources import (
    grouplens,
    movielens,
    movielens_titles,
    read_table,
    synthetic,
    synthetic_with_truth,
)

PIP_DOWNLOAD = grouplens._pip_download  # the real one, before `no_network` replaces it


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test fails rather than download or run pip, unless it installs its own fakes."""

    def refuse(*args, **kwargs):
        pytest.fail("a test tried to reach the network")

    monkeypatch.setattr(grouplens, "_download", refuse)
    monkeypatch.setattr(grouplens, "_pip_download", refuse)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# read_table -------------------------------------------------------------------------------
def test_csv_round_trip_maps_raw_ids_back(tmp_path):
    rows = [
        ("alice", 10, 4.0, 100),
        ("bob", 20, 3.5, 200),
        ("alice", 30, 1.0, 300),
        ("carol", 10, 5.0, 400),
    ]
    text = "user,item,rating,ts\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows)
    data = read_table(write(tmp_path, "ratings.csv", text), "user", "item", "rating", "ts")
    assert len(data) == 4 and data.n_users == 3 and data.n_items == 3
    assert data.name == "ratings"
    assert data.item_ids.dtype == np.int64  # canonical integer ids become int64
    columns = (
        data.users.tolist(),
        data.items.tolist(),
        data.values.tolist(),
        data.timestamps.tolist(),
    )
    got = [
        (data.user_ids[u], int(data.item_ids[i]), v, t) for u, i, v, t in zip(*columns, strict=True)
    ]
    assert got == rows
    assert data.values.dtype == torch.float32 and data.timestamps.dtype == torch.int64


def test_tsv_without_header_by_position_and_implicit(tmp_path):
    path = write(tmp_path, "log.tsv", "7\t1\n7\t2\n8\t1\n")
    data = read_table(path, 0, 1, header=False)
    assert len(data) == 3 and data.timestamps is None
    assert torch.equal(data.values, torch.ones(3))
    assert data.user_ids.tolist() == [7, 8]


def test_sniffed_separator_and_leading_zero_ids_stay_strings(tmp_path):
    path = write(tmp_path, "log.txt", "u;i;r\n007;1;2\n7;1;3\n")
    data = read_table(path, "u", "i", "r")
    assert data.n_users == 2 and sorted(data.user_ids.tolist()) == ["007", "7"]


def test_an_id_with_a_nul_byte_is_its_own_id(tmp_path):
    """The ids "a\\0" and "a" are two users (numpy's str dtype would drop the NUL and merge
    them), so their ratings of one item are two pairs, not a repeated one."""
    path = tmp_path / "r.csv"
    path.write_bytes(b"u,i,r\na,1,3\na\x00,1,4\n5\x00,2,1\n")
    data = read_table(path, "u", "i", "r", cache=False)
    assert sorted(data.user_ids.tolist()) == ["5\x00", "a", "a\x00"]
    assert len(set(data.user_ids.tolist())) == data.n_users == 3
    assert sorted(data.values.tolist()) == [1.0, 3.0, 4.0]


def test_a_value_float32_would_store_as_zero_is_named(tmp_path):
    """1e-50 is not 0: stored as float32 it would be, so the reader refuses it by its line."""
    path = tmp_path / "r.csv"
    path.write_text("u,i,r\n1,1,0\n1,2,1e-50\n2,1,3\n")
    with pytest.raises(DataError, match=r"r.csv: column 'r' .* too small for the float32.*line 3"):
        read_table(path, "u", "i", "r", cache=False)
    path.write_text("u,i,r\n1,1,0\n1,2,1e-40\n2,1,3\n")  # subnormal in float32: kept
    assert read_table(path, "u", "i", "r", cache=False).values.tolist()[1] > 0


def test_the_first_bad_value_is_named_whatever_its_kind(tmp_path):
    """A value beyond float32 before a NaN: the error names the first of them, not the NaN."""
    path = tmp_path / "r.csv"
    path.write_text("u,i,r\n1,1,3\n1,2,1e39\n2,1,nan\n")
    with pytest.raises(DataError, match=r"beyond the float32 range.*line 3"):
        read_table(path, "u", "i", "r", cache=False)
    path.write_text("u,i,r\n1,1,3\n1,2,nan\n2,1,1e39\n")
    with pytest.raises(DataError, match=r"non-finite.*line 3"):
        read_table(path, "u", "i", "r", cache=False)


def test_iso_timestamps_become_epoch_seconds(tmp_path):
    text = (
        "u,i,t\n1,1,2021-01-01T00:00:00\n1,2,2021-01-01T01:00:00+01:00\n2,1,2021-01-02\n"
        "2,2,1609459200\n"
    )
    data = read_table(write(tmp_path, "t.csv", text), "u", "i", time_col="t")
    assert data.timestamps.tolist() == [1609459200, 1609459200, 1609545600, 1609459200]


GOOD = "user,item,rating,ts\n1,10,4,100\n2,20,3,200\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD + "3,30,abc,300\n", ["'rating'", "line 4", "abc"]),
        (GOOD + "3,30,2,yesterday\n", ["'ts'", "line 4", "yesterday"]),
        ("user,item,rating,ts\n1,10,4,100\n2,20,nan,200\n", ["'rating'", "line 3", "NaN"]),
        (GOOD + "3,30,inf,300\n", ["'rating'", "line 4", "inf"]),
        (GOOD + "3,30,,300\n", ["'rating'", "line 4"]),
        (GOOD + ",30,2,300\n", ["'user'", "line 4", "missing"]),
        (GOOD + "3, ,2,300\n", ["'item'", "line 4", "missing"]),
        (GOOD + "\n\n3,30,x,300\n", ["'rating'", "line 6"]),  # blank lines keep file line numbers
        (GOOD + "3,30\n", ["line 4", "2 field"]),
    ],
)
def test_bad_cells_name_file_column_and_line(tmp_path, text, expected):
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(DataError) as err:
        read_table(path, "user", "item", "rating", "ts")
    message = str(err.value)
    assert "bad.csv" in message
    for part in expected:
        assert part in message, message


def test_bad_cell_line_without_header(tmp_path):
    path = write(tmp_path, "bad.tsv", "1\t10\t4\n2\t20\toops\n")
    with pytest.raises(DataError, match=r"bad\.tsv.*column '2'.*line 2"):
        read_table(path, 0, 1, 2, header=False)


def test_missing_file_empty_file_and_missing_column(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv.*not found"):
        read_table(tmp_path / "nope.csv", "user", "item")
    with pytest.raises(DataError, match=r"empty\.csv.*empty"):
        read_table(write(tmp_path, "empty.csv", ""), "user", "item")
    with pytest.raises(DataError, match=r"header\.csv.*no data rows"):
        read_table(write(tmp_path, "header.csv", "user,item\n"), "user", "item")
    with pytest.raises(DataError) as err:
        read_table(
            write(tmp_path, "cols.csv", "user,item,score\n1,2,3\n"), "user", "item", "rating"
        )
    assert "cols.csv" in str(err.value) and "'rating'" in str(err.value)
    assert "['user', 'item', 'score']" in str(err.value)
    with pytest.raises(DataError, match="header=False"):
        read_table(write(tmp_path, "n.csv", "1,2\n"), "user", "item", header=False)


def test_duplicates_keep_last_warns_and_error_policy_raises(tmp_path, caplog):
    path = write(tmp_path, "dup.csv", "u,i,r,t\n1,1,5,100\n1,2,4,100\n1,1,2,100\n")
    with caplog.at_level(logging.WARNING):
        data = read_table(path, "u", "i", "r", "t")
    assert len(data) == 2
    assert float(data.values[data.items == data.encode_items(np.array([1]))[0]]) == 2.0
    assert any("duplicate" in rec.getMessage() for rec in caplog.records)
    with pytest.raises(DataError, match=r"dup\.csv.*duplicate.*line 4"):
        read_table(path, "u", "i", "r", "t", duplicates="error")


def test_repeated_pairs_name_file_lines_or_follow_the_policy(tmp_path):
    path = write(
        tmp_path, "pairs.csv", "u,i,r,t\n1,1,5,100\n1,2,4,100\n\n1,1,2,300\n2,1,3,50\n1,1,3,200\n"
    )
    with pytest.raises(
        DataError,
        match=r"pairs\.csv: \(user, item\) pair \(1, 1\) occurs 3 times, at lines 2, 5, 7",
    ):
        read_table(path, "u", "i", "r", "t")
    merged = read_table(path, "u", "i", "r", "t", pair_duplicates="mean")
    assert merged.values.tolist() == pytest.approx(
        [4.0, 10 / 3, 3.0]
    ) and merged.timestamps.tolist() == [100, 300, 50]
    last = read_table(path, "u", "i", "r", "t", pair_duplicates="last")
    assert last.values.tolist() == [4.0, 2.0, 3.0]  # the latest event (t=300), not the last line
    events = read_table(path, "u", "i")  # no value column: implicit events, repeats kept
    assert len(events) == 5


def test_large_integer_timestamps_are_read_exactly(tmp_path):
    big = 2**62 + 1  # float64 would round it
    path = write(tmp_path, "t.csv", f"u,i,t\n1,1,{big}\n1,2,2021-01-01\n2,1,{-big}\n")
    assert read_table(path, "u", "i", time_col="t").timestamps.tolist() == [big, 1609459200, -big]
    path = write(tmp_path, "f.csv", f"u,i,t\n1,1,{big}\n1,2,0.5\n")
    assert read_table(path, "u", "i", time_col="t").timestamps.tolist() == [big, 0]


def test_gzip_csv(tmp_path):
    import gzip

    path = tmp_path / "r.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(GOOD)
    data = read_table(path, "user", "item", "rating", "ts")
    assert len(data) == 2 and data.name == "r"


def test_parquet_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"u": ["a", "b", "a"], "i": [1, 2, 2], "r": [1.0, 2.0, 3.0], "t": [5, 6, 7]})
    path = tmp_path / "r.parquet"
    pq.write_table(table, path)
    data = read_table(path, "u", "i", "r", "t")
    assert len(data) == 3 and sorted(data.user_ids.tolist()) == ["a", "b"]
    assert data.timestamps.tolist() == [5, 6, 7]
    with pytest.raises(DataError, match=r"r\.parquet.*'x'.*available"):
        read_table(path, "u", "x")
    pq.write_table(
        pa.table({"u": [1, 2], "i": [1, 2], "r": [1.0, float("nan")]}), tmp_path / "nan.parquet"
    )
    with pytest.raises(DataError, match=r"nan\.parquet.*'r'.*row 2"):
        read_table(tmp_path / "nan.parquet", "u", "i", "r")


# MovieLens (never touches the network) -----------------------------------------------------
INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n244\t51\t2\t880606923\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "242\tKolya\t1996\tComedy\n"
)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """GroupLens unreachable; `pip download` copies a tiny fake RecBole wheel."""
    wheel = tmp_path / "src" / "recbole-1.2.1-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(grouplens._RECBOLE_INTER, INTER)
        zf.writestr(grouplens._RECBOLE_ITEM, ITEM)
    calls = {"download": 0, "pip": 0}

    def unreachable(url, dest, timeout=None):
        calls["download"] += 1
        raise urllib.error.URLError("offline")

    def fake_pip(requirement, dest):
        calls["pip"] += 1
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(grouplens, "_download", unreachable)
    monkeypatch.setattr(grouplens, "_pip_download", fake_pip)
    monkeypatch.setattr(
        grouplens, "_RECBOLE_INTER_SHA256", hashlib.sha256(INTER.encode()).hexdigest()
    )
    monkeypatch.setattr(
        grouplens, "_RECBOLE_ITEM_SHA256", hashlib.sha256(ITEM.encode()).hexdigest()
    )
    monkeypatch.setitem(grouplens._EXPECTED_ROWS, "100k", 4)
    return calls


def test_movielens_100k_falls_back_to_recbole_and_caches(tmp_path, offline, caplog, monkeypatch):
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="mfzoo.data.sources"):
        data = movielens("100k", cache_dir=str(cache))
    assert len(data) == 4 and data.n_users == 4 and data.user_ids.dtype == np.int64
    assert data.values.tolist() == [3.0, 3.0, 1.0, 2.0]
    assert data.timestamps.dtype == torch.int64 and int(data.timestamps.max()) == 891717742
    assert "RecBole" in caplog.text
    assert offline == {"download": 1, "pip": 1}
    assert (cache / "ml-100k.inter").is_file()
    # second call: from the cache, no network, no pip
    monkeypatch.setattr(grouplens, "_pip_download", lambda *a: pytest.fail("pip ran again"))
    assert len(movielens("100k", cache_dir=str(cache))) == 4
    assert offline["download"] == 1
    assert movielens_titles("100k", cache_dir=str(cache)) == {242: "Kolya (1996)"}


def test_movielens_fallback_uses_a_wheel_already_in_the_cache(tmp_path, offline):
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    shutil.copy(tmp_path / "src" / "recbole-1.2.1-py3-none-any.whl", cache / "wheels")
    assert len(movielens(cache_dir=str(cache))) == 4
    assert offline["pip"] == 0


def test_movielens_fallback_rejects_wrong_checksum(tmp_path, offline, monkeypatch):
    monkeypatch.setattr(grouplens, "_RECBOLE_INTER_SHA256", "0" * 64)
    with pytest.raises(DataError, match="sha256") as err:
        movielens("100k", cache_dir=str(tmp_path / "cache"))
    assert "ml-100k.zip" in str(err.value)  # says how to place the file by hand
    assert not (tmp_path / "cache" / "ml-100k.inter").exists()


def test_movielens_reports_everything_tried_when_all_fails(tmp_path, offline, monkeypatch):
    def pip_fails(requirement, dest):
        raise OSError("no index")

    monkeypatch.setattr(grouplens, "_pip_download", pip_fails)
    with pytest.raises(DataError) as err:
        movielens("100k", cache_dir=str(tmp_path / "cache"))
    message = str(err.value)
    for part in (
        "files.grouplens.org",
        "offline",
        "recbole==1.2.1",
        "no index",
        "ml-100k.zip",
        "wheels",
    ):
        assert part in message, message
    with pytest.raises(DataError, match=r"ml-1m\.zip"):
        movielens("1m", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="unknown MovieLens"):
        movielens("7m", cache_dir=str(tmp_path / "cache"))


def test_pip_download_command_and_failure(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "recbole-1.2.1-py3-none-any.whl").write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(grouplens.subprocess, "run", fake_run)
    wheel = PIP_DOWNLOAD("recbole==1.2.1", tmp_path / "wheels")
    assert wheel == tmp_path / "wheels" / "recbole-1.2.1-py3-none-any.whl"
    assert (
        seen["cmd"][:4] == [sys.executable, "-m", "pip", "download"] and "--no-deps" in seen["cmd"]
    )
    monkeypatch.setattr(
        grouplens.subprocess,
        "run",
        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "boom"),
    )
    with pytest.raises(OSError, match="boom"):
        PIP_DOWNLOAD("recbole==9.9.9", tmp_path / "other")


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "name, files, titles",
    [
        (
            "100k",
            {
                "ml-100k/u.data": b"1\t10\t4\t100\n2\t10\t5\t200\n2\t11\t1\t300\n",
                "ml-100k/u.item": "10|Caf\xe9 (1995)|01-Jan-1995||x\n11|B (1996)|x\n".encode(
                    "latin-1"
                ),
            },
            {10: "Caf\xe9 (1995)", 11: "B (1996)"},
        ),
        (
            "1m",
            {
                "ml-1m/ratings.dat": b"1::10::4::100\n2::10::5::200\n2::11::1::300\n",
                "ml-1m/movies.dat": b"10::A (1995)::Drama\n11::B (1996)::Comedy\n",
            },
            {10: "A (1995)", 11: "B (1996)"},
        ),
        (
            "latest-small",
            {
                "ml-latest-small/ratings.csv": b"userId,movieId,rating,timestamp\n"
                b"1,10,4.0,100\n2,10,5.0,200\n2,11,0.5,300\n",
                "ml-latest-small/movies.csv": b"movieId,title,genres\n"
                b'10,"Good, Bad (1966)",Western\n11,B (1996),x\n',
            },
            {10: "Good, Bad (1966)", 11: "B (1996)"},
        ),
    ],
)
def test_movielens_parses_each_zip_format(tmp_path, offline, monkeypatch, name, files, titles):
    make_zip(tmp_path / grouplens._MOVIELENS[name][0], files)
    monkeypatch.setitem(grouplens._EXPECTED_ROWS, name, 3)
    data = movielens(name, cache_dir=str(tmp_path))
    assert (
        len(data) == 3 and data.user_ids.tolist() == [1, 2] and data.item_ids.tolist() == [10, 11]
    )
    assert sorted(data.timestamps.tolist()) == [100, 200, 300]
    assert movielens_titles(name, cache_dir=str(tmp_path)) == titles
    assert offline["download"] == 0
    monkeypatch.setitem(grouplens._EXPECTED_ROWS, name, 99)
    with pytest.raises(DataError, match="expected 99"):
        movielens(name, cache_dir=str(tmp_path))


def test_movielens_download_checks_sha256_and_env_cache(tmp_path, monkeypatch):
    zipped = make_zip(tmp_path / "src.zip", {"ml-1m/ratings.dat": b"1::10::4::100\n"})

    def fake_download(url, dest, timeout=None):
        assert url.endswith("/ml-1m.zip")
        shutil.copy(zipped, dest)

    monkeypatch.setattr(grouplens, "_download", fake_download)
    monkeypatch.setitem(grouplens._EXPECTED_ROWS, "1m", 1)
    monkeypatch.setenv("MFZOO_DATA", str(tmp_path / "env"))
    monkeypatch.setitem(grouplens._ZIP_SHA256, "ml-1m.zip", "f" * 64)
    with pytest.raises(DataError, match="sha256"):
        movielens("1m")
    assert not (tmp_path / "env" / "ml-1m.zip").exists()  # a bad download is removed
    monkeypatch.setitem(
        grouplens._ZIP_SHA256, "ml-1m.zip", hashlib.sha256(zipped.read_bytes()).hexdigest()
    )
    assert len(movielens("1m")) == 1 and (tmp_path / "env" / "ml-1m.zip").is_file()


def test_ratings_parser_reads_each_layout_and_names_bad_fields():
    rows = [(k, k + 1, (k % 5) + 0.5, 1000 + k) for k in range(50)]
    layouts = {
        (",", True): b"a,b,c,d\n" + b"".join(b"%d,%d,%.1f,%d\n" % r for r in rows),
        (":", False): b"".join(b"%d::%d::%.1f::%d\n" % r for r in rows),
        ("\t", False): b"".join(b"%d\t%d\t%.1f\t%d\n" % r for r in rows),
    }
    for (sep, header), raw in layouts.items():
        users, items, ratings, times = grouplens._parse_ratings(raw, sep, header, "x")
        assert users.dtype == items.dtype == times.dtype == np.int64
        assert (
            list(zip(users.tolist(), items.tolist(), ratings.tolist(), times.tolist(), strict=True))
            == rows
        )
    with pytest.raises(DataError, match=r"bad\.dat"):
        grouplens._parse_ratings(b"1::2::x::4\n", ":", False, "bad.dat")


# synthetic --------------------------------------------------------------------------------
def test_synthetic_shapes_uniqueness_scale_and_determinism():
    a = synthetic(n_users=300, n_items=200, n_interactions=6000, seed=3)
    b = synthetic(n_users=300, n_items=200, n_interactions=6000, seed=3)
    c = synthetic(n_users=300, n_items=200, n_interactions=6000, seed=4)
    assert (len(a), a.n_users, a.n_items) == (6000, 300, 200)
    for field in ("users", "items", "values", "timestamps"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.values, c.values) or not torch.equal(a.items, c.items)
    keys = a.users * a.n_items + a.items
    assert keys.unique().numel() == len(a)
    assert a.users.unique().numel() == 300 and a.items.unique().numel() == 200
    assert set(a.values.unique().tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    ts = a.timestamps
    assert bool((ts[1:] >= ts[:-1]).all()) and int(ts.min()) >= 1577836800
    assert int(ts.max()) < 1577836800 + 365 * 86400


def test_synthetic_popularity_is_heavy_tailed_and_signal_is_planted():
    data, truth = synthetic_with_truth(n_users=2000, n_items=1000, n_interactions=50000, seed=0)
    counts = torch.bincount(data.items, minlength=data.n_items).sort(descending=True).values
    assert counts[: data.n_items // 10].sum() / len(data) > 0.3
    assert truth["P"].shape == (2000, 8) and truth["Q"].shape == (1000, 8)
    u, i = data.users, data.items
    # [N]
    score = (truth["P"][u] * truth["Q"][i]).sum(1) + truth["user_bias"][u] + truth["item_bias"][i]
    corr = torch.corrcoef(torch.stack([score, data.values]))[0, 1]
    assert corr > 0.6


def test_synthetic_implicit_and_continuous_values():
    counts = synthetic(n_users=100, n_items=80, n_interactions=1000, implicit=True)
    assert float(counts.values.min()) >= 1 and torch.equal(counts.values, counts.values.round())
    raw = synthetic(n_users=100, n_items=80, n_interactions=1000, rating_scale=None)
    assert not torch.equal(raw.values, raw.values.round())


def test_synthetic_more_pairs_than_exist_is_capped(caplog):
    with caplog.at_level(logging.WARNING):
        data = synthetic(n_users=5, n_items=4, n_interactions=100)
    assert len(data) == 20 and "distinct" in caplog.text


def test_cached_files_are_checked_against_their_digest(tmp_path, offline, monkeypatch):
    # a downloaded zip gets a digest beside it; a later change of the cached file is refused
    zipped = make_zip(tmp_path / "src.zip", {"ml-1m/ratings.dat": b"1::10::4::100\n"})

    def serve_1m(url, dest, timeout=None):
        if not url.endswith("/ml-1m.zip"):
            raise urllib.error.URLError("offline")
        shutil.copy(zipped, dest)

    monkeypatch.setattr(grouplens, "_download", serve_1m)
    monkeypatch.setitem(grouplens._EXPECTED_ROWS, "1m", 1)
    cache = tmp_path / "cache"
    assert len(movielens("1m", cache_dir=str(cache))) == 1
    assert (cache / "ml-1m.zip.sha256").read_text().strip() == hashlib.sha256(
        zipped.read_bytes()
    ).hexdigest()
    assert len(movielens("1m", cache_dir=str(cache))) == 1  # cached and intact
    make_zip(cache / "ml-1m.zip", {"ml-1m/ratings.dat": b"1::10::5::100\n"})
    with pytest.raises(DataError, match=r"delete it.*sha256"):
        movielens("1m", cache_dir=str(cache))
    # the RecBole extract is checked against its recorded digest on every load
    movielens("100k", cache_dir=str(cache))
    (cache / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t4\n"
    )
    with pytest.raises(DataError, match="sha256"):
        movielens("100k", cache_dir=str(cache))


@pytest.mark.parametrize("kind", ["string", "large_string", "string_view"])
def test_parquet_text_ids_of_every_string_type_read_alike(tmp_path, kind):
    """Arrow's three string types in Parquet, and one id of 20 kB among short ones: the same
    set (sorted ids need no fixed-width copy, whose size would follow the longest id)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    long = "y" * 20_000
    users = ["u2", " u1", long, "u1", "u10"]
    table = pa.table(
        {
            "user": pa.array(users).cast(getattr(pa, kind)()),
            "item": pa.array(["a", "b", "c", "d", "e"]),
            "rating": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    path = tmp_path / f"{kind}.parquet"
    pq.write_table(table, path)
    data = read_table(path, "user", "item", "rating", cache=False)
    assert data.user_ids.tolist() == ["u1", "u10", "u2", long]
    assert data.users.tolist() == [2, 0, 3, 0, 1]
