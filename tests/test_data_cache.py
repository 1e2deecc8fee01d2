"""The data cache (`mfzoo.data.cache`): hits, invalidation, concurrent writers, and the Arrow
reader behind it (`mfzoo.data.sources.delimited`) against the row-by-row one."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mfzoo.data import cache as data_cache
from mfzoo.data.errors import DataError
from mfzoo.data.sources import delimited, read_table, tables


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("MFZOO_CACHE_DIR", str(root))
    return root / "datasets"


def ratings_csv(path: Path, n: int = 300, seed: int = 0, string_users: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    keys = rng.choice(40 * 60, size=n, replace=False)
    users, items = keys // 60, keys % 60
    lines = ["user,item,rating,ts"] + [
        f"{f'u{u:03d}' if string_users else u},{i + 100},{rng.integers(1, 6)},{1_600_000_000 + k}"
        for k, (u, i) in enumerate(zip(users, items, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def same(a, b) -> None:
    for name in ("users", "items", "values"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.timestamps is None) == (b.timestamps is None)
    if a.timestamps is not None:
        assert torch.equal(a.timestamps, b.timestamps)
    assert a.user_ids.tolist() == b.user_ids.tolist() and a.item_ids.tolist() == b.item_ids.tolist()
    assert a.user_ids.dtype == b.user_ids.dtype and a.item_ids.dtype == b.item_ids.dtype
    assert a.name == b.name


def mapped_file(address: int) -> str:
    """The file mapped at `address` in this process ("" for anonymous memory), from /proc."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return fields[5] if len(fields) > 5 else ""
    return ""


def entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


@pytest.mark.parametrize("string_users", [False, True])
def test_a_second_load_is_mapped_from_the_cache_and_equal(
    tmp_path, cache_dir, monkeypatch, string_users
):
    path = ratings_csv(tmp_path / "r.csv", string_users=string_users)
    first = read_table(path, "user", "item", "rating", "ts", cache=True)
    assert len(entries(cache_dir)) == 1

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(tables, "read_interactions", no_parsing)
    second = read_table(path, "user", "item", "rating", "ts", cache=True)
    same(first, second)
    for name in ("users", "values"):  # the tensors' memory is the cache's files, mapped
        assert mapped_file(getattr(second, name).data_ptr()).endswith(f"{name}.npy")
    assert second.user_ids.dtype == (object if string_users else np.int64)
    # a run may write to its copy without touching the cache (copy-on-write pages)
    second.values[0] = 99.0
    third = read_table(path, "user", "item", "rating", "ts", cache=True)
    assert float(third.values[0]) == float(first.values[0])


def test_options_and_sources_key_the_entries(tmp_path, cache_dir):
    path = ratings_csv(tmp_path / "r.csv")
    read_table(path, "user", "item", "rating", "ts", cache=True)
    implicit = read_table(path, "user", "item", cache=True)  # other columns: another entry
    assert implicit.timestamps is None and torch.equal(implicit.values, torch.ones(len(implicit)))
    other = ratings_csv(tmp_path / "s.csv", seed=1)
    read_table(other, "user", "item", "rating", "ts", cache=True)
    assert len(entries(cache_dir)) == 3


def test_a_changed_source_is_parsed_again_and_a_touched_one_is_not(
    tmp_path, cache_dir, monkeypatch
):
    path = ratings_csv(tmp_path / "r.csv")
    before = read_table(path, "user", "item", "rating", "ts", cache=True)
    text = path.read_text().replace("\n0,", "\n0,", 1)
    os.utime(path, ns=(0, 10**18))  # touched, bytes unchanged: the digest decides, the entry stays
    calls = []
    real = tables.read_interactions
    monkeypatch.setattr(
        tables, "read_interactions", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    same(before, read_table(path, "user", "item", "rating", "ts", cache=True))
    assert calls == []
    meta = json.loads((entries(cache_dir)[0] / "meta.json").read_text())
    assert meta["sources"][0]["stat"]["mtime_ns"] == 10**18  # the new stat is recorded
    lines = text.splitlines()
    user, item, _, ts = lines[1].split(",")
    lines[1] = f"{user},{item},{'5' if lines[1].split(',')[2] != '5' else '1'},{ts}"
    path.write_text("\n".join(lines) + "\n")
    after = read_table(path, "user", "item", "rating", "ts", cache=True)
    assert calls == [1] and not torch.equal(after.values, before.values)
    assert len(entries(cache_dir)) == 1  # replaced, not added
    same(after, read_table(path, "user", "item", "rating", "ts", cache=False))


def test_small_files_are_not_cached_by_default_and_false_never(tmp_path, cache_dir, monkeypatch):
    path = ratings_csv(tmp_path / "r.csv")
    read_table(path, "user", "item", "rating", "ts")
    read_table(path, "user", "item", "rating", "ts", cache=False)
    assert entries(cache_dir) == []
    monkeypatch.setattr(data_cache, "AUTO_BYTES", 1)
    read_table(path, "user", "item", "rating", "ts")
    assert len(entries(cache_dir)) == 1


def test_an_unwritable_cache_is_logged_and_the_set_returned(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MFZOO_CACHE_DIR", str(blocker))  # a file where the folder would be
    path = ratings_csv(tmp_path / "r.csv")
    with caplog.at_level(logging.WARNING):
        data = read_table(path, "user", "item", "rating", "ts", cache=True)
    assert len(data) == 300 and "not cached" in caplog.text


def test_a_damaged_entry_is_parsed_again(tmp_path, cache_dir, caplog):
    path = ratings_csv(tmp_path / "r.csv")
    first = read_table(path, "user", "item", "rating", "ts", cache=True)
    (entries(cache_dir)[0] / "users.npy").write_bytes(b"not numpy")
    with caplog.at_level(logging.WARNING):
        same(first, read_table(path, "user", "item", "rating", "ts", cache=True))
    assert "unreadable" in caplog.text
    same(first, read_table(path, "user", "item", "rating", "ts", cache=True))  # rewritten whole


def _load_in_child(path: str, root: str, out: str) -> None:
    os.environ["MFZOO_CACHE_DIR"] = root
    data = read_table(path, "user", "item", "rating", "ts", cache=True)
    np.save(out, data.values.numpy())


def test_concurrent_first_loads_leave_one_whole_entry(tmp_path, cache_dir):
    path = ratings_csv(tmp_path / "r.csv", n=2000)
    ctx = mp.get_context("spawn")
    outs = [tmp_path / f"out{k}.npy" for k in range(3)]
    procs = [
        ctx.Process(target=_load_in_child, args=(str(path), str(cache_dir.parent), str(o)))
        for o in outs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    expected = read_table(path, "user", "item", "rating", "ts", cache=False).values.numpy()
    for out in outs:
        assert np.array_equal(np.load(out), expected)
    assert len(entries(cache_dir)) == 1
    assert not [
        p for p in cache_dir.iterdir() if p.name.startswith(".")
    ]  # no temporary folder left
    assert np.array_equal(
        read_table(path, "user", "item", "rating", "ts", cache=True).values.numpy(), expected
    )


# the Arrow reader ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.bz2", ".tsv"])
def test_arrow_reader_equals_the_row_by_row_reader(tmp_path, suffix):
    import bz2
    import gzip

    text = ratings_csv(tmp_path / "plain.csv", n=500).read_text()
    if suffix == ".tsv":
        text = text.replace(",", "\t")
    text = text.replace("\n", "\n\n", 3).replace("\n1,", "\n 1 ,", 2)  # blank lines, padded cells
    path = tmp_path / f"r{suffix}"
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    with opener(path, "wt") as f:
        f.write(text)
    wanted = {"user": "user", "item": "item", "value": "rating", "timestamp": "ts"}
    fast = read_table(path, "user", "item", "rating", "ts", cache=False)
    cells, _, _ = tables._read_delimited(path, wanted, None, True)
    slow = tables.arrow_interactions(
        {r: __import__("pyarrow").array(c) for r, c in cells.items()}, fast.name
    )
    same(fast, slow)


def test_leading_zero_ids_are_strings_and_integer_ids_are_int64(tmp_path):
    path = tmp_path / "z.csv"
    path.write_text("u,i,r\n007,1,2\n7,1,3\n-01,2,4\n")
    data = read_table(path, "u", "i", "r")
    assert sorted(data.user_ids.tolist()) == ["-01", "007", "7"] and data.item_ids.dtype == np.int64
    pa = __import__("pyarrow")
    ints = [0, 7, -7, 10, 99, 100, -100, 2**63 - 1, -(2**63), 10**18, 10**18 - 1]
    got = tables.canonical_ints(
        pa.chunked_array(
            [pa.array([str(x) for x in ints[:5]]), pa.array([str(x) for x in ints[5:]])]
        )
    )
    assert got.tolist() == ints and got.dtype == np.int64
    assert tables.canonical_ints(pa.array(["1", "22", "333"]).slice(1)).tolist() == [
        22,
        333,
    ]  # a sliced chunk
    for bad in (
        ["1", "07"],
        ["-0"],
        ["+7"],
        [" 7"],
        ["7.0"],
        ["1e3"],
        ["x"],
        [""],
        ["99999999999999999999"],
    ):
        assert tables.canonical_ints(pa.array(bad)) is None, bad


def test_ragged_rows_fall_back_and_short_rows_name_their_line(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("u,i,r\n1,1,2\n2,1,3,extra\n")
    data = read_table(path, "u", "i", "r")  # extra fields beyond the wanted columns: kept as before
    assert len(data) == 2
    path.write_text("u,i,r\n1,1,2\n2,1,3,extra\n3,1\n")
    with pytest.raises(DataError, match=r"ragged\.csv: line 4 has 2 field\(s\), 3 needed"):
        read_table(path, "u", "i", "r")


def test_a_character_cut_by_the_sample_is_not_taken_for_binary(tmp_path, monkeypatch):
    monkeypatch.setattr(delimited, "_SAMPLE_BYTES", 11)
    path = tmp_path / "utf8.csv"
    path.write_text("u,i,r\nzoë,1,2\nänne,2,3\n", encoding="utf-8")
    assert sorted(read_table(path, "u", "i", "r").user_ids.tolist()) == ["zoë", "änne"]


def test_non_utf8_bytes_after_the_sample_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr(delimited, "_SAMPLE_BYTES", 16)
    path = tmp_path / "late.csv"
    path.write_bytes(b"u,i,r\nab,1,2\ncd,2,3\n\xff\xfe,3,4\n")
    with pytest.raises(DataError, match=r"late\.csv: not UTF-8"):
        read_table(path, "u", "i", "r")


# found by a new user's pass -----------------------------------------------------------------
def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_hex_and_space_padded_ids_stay_strings(tmp_path):
    data = read_table(
        write(tmp_path, "h.csv", "user,item\n0x10,1\n16,2\n0xffffffffffffffff,3\n"), "user", "item"
    )
    assert sorted(data.user_ids.tolist()) == ["0x10", "0xffffffffffffffff", "16"]
    data = read_table(write(tmp_path, "s.csv", "user,item\n 007,1\n7,2\n"), "user", "item")
    assert sorted(data.user_ids.tolist()) == ["007", "7"]


def test_a_line_of_spaces_before_the_header_is_blank(tmp_path):
    data = read_table(
        write(tmp_path, "b.csv", "  \n\nuser,item,rating\n1,2,3\n3,4,5\n"), "user", "item", "rating"
    )
    assert data.user_ids.tolist() == [1, 3] and data.values.tolist() == [3.0, 5.0]
    with pytest.raises(DataError, match=r"b2\.csv: column 'rating' .*line 5"):
        read_table(
            write(tmp_path, "b2.csv", "  \n\nuser,item,rating\n1,2,3\n3,4,x\n"),
            "user",
            "item",
            "rating",
        )


def test_one_column_in_two_roles(tmp_path):
    path = write(tmp_path, "two.csv", "user,item,ts\n1,2,100\n3,4,200\n")
    data = read_table(path, "user", "item", "ts", "ts")
    assert data.values.tolist() == [100.0, 200.0] and data.timestamps.tolist() == [100, 200]
    data = read_table(path, "user", "item", "item")
    assert data.values.tolist() == [2.0, 4.0] and data.item_ids.tolist() == [2, 4]
    assert len(read_table(path, 0, 0, 2, header=True)) == 2


def test_boolean_ids_in_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"u": [True, False, True], "i": [1, 2, 3]}), tmp_path / "b.parquet")
    data = read_table(tmp_path / "b.parquet", "u", "i")
    assert data.user_ids.tolist() == [False, True] and data.users.tolist() == [1, 0, 1]


def test_long_quoted_fields_and_lines_after_quoted_newlines(tmp_path):
    big = "z" * 1_100_000
    data = read_table(
        write(tmp_path, "big.csv", f'user,item,note\n"{big}\nmore",1,x\nb,2,y\n'), "user", "item"
    )
    assert len(data) == 2
    with pytest.raises(DataError, match=r"q\.csv: column 'rating' .*line 4"):
        read_table(
            write(tmp_path, "q.csv", 'user,item,rating\n"a\nb",1,4\nc,2,x\n'),
            "user",
            "item",
            "rating",
        )
    with pytest.raises(DataError, match=r"short\.csv: line 3 has 2 field\(s\), 3 needed"):
        read_table(
            write(tmp_path, "short.csv", "a,b,c\n1,2," + "z" * 200_000 + "\n2,3\n"), "a", "b", "c"
        )


def test_a_header_without_a_newline_has_no_data_rows(tmp_path):
    with pytest.raises(DataError, match=r"h\.csv: no data rows"):
        read_table(write(tmp_path, "h.csv", "user,item"), "user", "item")


def test_an_edit_that_restores_size_and_mtime_is_seen(tmp_path):
    path = ratings_csv(tmp_path / "r.csv")
    before = read_table(path, "user", "item", "rating", "ts", cache=True)
    stat = path.stat()
    text = path.read_text()
    lines = text.split("\n")
    cells = lines[1].split(",")
    cells[2] = "1" if cells[2] != "1" else "2"  # same length
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    after = read_table(path, "user", "item", "rating", "ts", cache=True)
    assert not torch.equal(after.values, before.values)


def test_a_read_only_cache_serves_a_touched_source(tmp_path, monkeypatch, cache_dir):
    path = ratings_csv(tmp_path / "r.csv")
    before = read_table(path, "user", "item", "rating", "ts", cache=True)
    os.utime(path, ns=(0, 10**18))

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(data_cache, "_write_json", read_only)
    same(before, read_table(path, "user", "item", "rating", "ts", cache=True))


def test_an_entry_of_the_wrong_length_is_parsed_again(tmp_path, cache_dir, caplog):
    path = ratings_csv(tmp_path / "r.csv")
    first = read_table(path, "user", "item", "rating", "ts", cache=True)
    entry = entries(cache_dir)[0]
    np.save(entry / "values.npy", first.values.numpy()[:-1])  # a row short
    with caplog.at_level(logging.WARNING):
        same(first, read_table(path, "user", "item", "rating", "ts", cache=True))
    assert "unreadable" in caplog.text
    np.save(entry / "values.npy", first.values.numpy().astype(np.float64))  # another dtype
    same(first, read_table(path, "user", "item", "rating", "ts", cache=True))


# listing and pruning ---------------------------------------------------------------------------
COLUMNS = ("user", "item", "rating", "ts")


def three_entries(tmp_path: Path, cache_dir: Path) -> list[data_cache.CacheEntry]:
    """Three cached files, loaded in the order a, b, c and then a again (a is the newest use)."""
    paths = [
        ratings_csv(tmp_path / f"{name}.csv", n=200 + 50 * k, seed=k)
        for k, name in enumerate("abc")
    ]
    for path in paths:
        read_table(path, *COLUMNS, cache=True)
    listed = data_cache.entries(cache_dir)
    assert len(listed) == 3
    by_source = {Path(e.sources[0]).name: e for e in listed}
    for age, name in ((300, "a"), (200, "b"), (100, "c")):  # a written first, c last
        for f in by_source[f"{name}.csv"].path.iterdir():
            os.utime(f, (f.stat().st_atime, f.stat().st_mtime - age))
    read_table(paths[0], *COLUMNS, cache=True)  # a hit: marks a used now
    return data_cache.entries(cache_dir)


def test_entries_list_size_last_use_and_sources_least_recent_first(tmp_path, cache_dir):
    listed = three_entries(tmp_path, cache_dir)
    assert [Path(e.sources[0]).name for e in listed] == ["b.csv", "c.csv", "a.csv"]
    for e in listed:
        assert e.reader == "read_table" and e.size == sum(
            f.stat().st_size for f in e.path.iterdir()
        )
    assert listed[0].last_used < listed[1].last_used < listed[2].last_used


def test_prune_removes_the_least_recently_used_until_the_rest_fit(tmp_path, cache_dir):
    listed = three_entries(tmp_path, cache_dir)
    keep = listed[1].size + listed[2].size  # room for the two used last
    removed = data_cache.prune(keep, cache_dir)
    assert [e.path for e in removed] == [listed[0].path] and not listed[0].path.exists()
    assert [e.path for e in data_cache.entries(cache_dir)] == [listed[1].path, listed[2].path]
    assert data_cache.prune(keep, cache_dir) == []  # nothing more to do
    # a pruned source is parsed and cached again
    again = read_table(tmp_path / "b.csv", *COLUMNS, cache=True)
    same(again, read_table(tmp_path / "b.csv", *COLUMNS, cache=False))
    assert len(data_cache.entries(cache_dir)) == 3
    with pytest.raises(ValueError, match="max_bytes"):
        data_cache.prune(-1, cache_dir)


def test_a_pruned_entry_stays_readable_where_it_is_mapped(tmp_path, cache_dir):
    path = ratings_csv(tmp_path / "r.csv")
    read_table(path, *COLUMNS, cache=True)
    mapped = read_table(path, *COLUMNS, cache=True)  # arrays mapped from the entry
    expected = mapped.users.clone()
    (entry,) = data_cache.entries(cache_dir)
    assert mapped_file(mapped.users.data_ptr()) == str(entry.path / "users.npy")
    assert len(data_cache.prune(0, cache_dir)) == 1 and data_cache.entries(cache_dir) == []
    assert torch.equal(mapped.users, expected)  # the pages stay until the map is closed


def test_the_command_lists_prunes_and_clears(tmp_path, cache_dir, capsys):
    three_entries(tmp_path, cache_dir)
    data_cache.main(["list"])
    out = capsys.readouterr().out
    assert "3 entries" in out and all(f"{n}.csv" in out for n in "abc")
    data_cache.main(["prune", "--max-size", "1G"])
    assert "removed 0 entries" in capsys.readouterr().out
    data_cache.main(["clear"])
    assert "removed 3 entries" in capsys.readouterr().out and data_cache.entries(cache_dir) == []
    with pytest.raises(SystemExit):
        data_cache.main(["prune", "--max-size", "lots"])
    assert "not a size: 'lots'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "size"), [("2G", 2 << 30), ("500M", 500 << 20), ("1.5GiB", 3 << 29), ("0", 0)]
)
def test_sizes_are_read_in_powers_of_1024(text, size):
    assert data_cache.parse_size(text) == size
