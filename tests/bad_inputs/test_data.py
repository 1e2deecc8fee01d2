"""Hostile data: every case gives a one-line `DataError` naming the problem (file, column, line
or row), or, where a policy is chosen, the honest result; nothing is dropped or corrupted
silently."""

from __future__ import annotations

import gzip
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf, open_dict

from mfzoo.data.errors import DataError
from mfzoo.data.interactions import Interactions
from mfzoo.data.sources import read_table, synthetic
from mfzoo.data.splits import (
    KFold,
    LeaveLastOut,
    RandomSplit,
    TemporalSplit,
    UserRandomSplit,
    check_disjoint,
)
from mfzoo.training.run import train
from mfzoo.training.rundir import RunError
from tests.bad_inputs.conftest import tiny_cfg
from tests.conftest import CONFIG_DIR

HEADER = "user_id,item_id,rating,ts\n"
GOOD_ROWS = "1,10,4,1600000000\n2,20,3,1600000100\n"


def one_line_error(err: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message
    return message


# cells and files that cannot be loaded ------------------------------------------------------------
CSV_CASES = {
    # a rating beyond float32 would be stored as inf (and training would write NaN)
    "rating_1e39": (
        HEADER + GOOD_ROWS + "3,30,1e39,1600000200\n",
        ["'rating'", "line 4", "float32"],
    ),
    "rating_minus_1e39": (
        HEADER + GOOD_ROWS + "3,30,-1e39,1600000200\n",
        ["'rating'", "line 4", "float32"],
    ),
    # a timestamp beyond int64 would be stored as INT64_MIN
    "timestamp_1e30": (HEADER + GOOD_ROWS + "3,30,5,1e30\n", ["'ts'", "line 4", "int64"]),
    "timestamp_20_digits": (
        HEADER + "3,30,5,99999999999999999999\n" + GOOD_ROWS,
        ["'ts'", "line 2", "int64"],
    ),
    "rating_nan": (HEADER + "3,30,nan,1600000200\n" + GOOD_ROWS, ["'rating'", "line 2", "NaN"]),
    "timestamp_inf": (HEADER + GOOD_ROWS + "3,30,5,inf\n", ["'ts'", "line 4", "inf"]),
    "empty_0_bytes": ("", ["empty"]),
    "header_only": (HEADER, ["no data rows"]),
    "blank_lines_only": ("\n\n  \n", ["empty"]),
    # a .csv delimited by ';': one column is read; the message says which delimiter it holds
    "semicolons": (
        HEADER.replace(",", ";") + GOOD_ROWS.replace(",", ";"),
        ["no column 'user_id'", "delimited by ';'", "data.source.sep=';'"],
    ),
}


def test_a_directory_instead_of_a_file_is_named(tmp_path):
    with pytest.raises(DataError) as err:
        read_table(tmp_path, "user_id", "item_id", "rating")
    one_line_error(err, str(tmp_path), "is a directory")


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_hostile_csv_is_named(case, tmp_path):
    text, parts = CSV_CASES[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_table(path, "user_id", "item_id", "rating", "ts")
    one_line_error(err, f"{case}.csv", *parts)


def binary_garbage() -> bytes:
    return np.random.default_rng(0).integers(0, 256, size=4096, dtype=np.uint8).tobytes()


def truncated_gzip() -> bytes:
    whole = gzip.compress((HEADER + GOOD_ROWS * 50).encode())
    return whole[: len(whole) // 2]


BINARY_CASES = {
    "garbage.csv": (binary_garbage, ["not UTF-8"]),
    "nul_bytes.csv": (lambda: b"\x00" * 100 + b"\xfe\xff", ["not UTF-8"]),
    "truncated.csv.gz": (truncated_gzip, ["cannot be read"]),
    "not_gzip.csv.gz": (lambda: (HEADER + GOOD_ROWS).encode(), ["cannot be read"]),
}


@pytest.mark.parametrize("name", list(BINARY_CASES))
def test_unreadable_delimited_file_is_named(name, tmp_path):
    make, parts = BINARY_CASES[name]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(DataError) as err:
        read_table(path, "user_id", "item_id", "rating", "ts")
    one_line_error(err, name, *parts)


def parquet_bytes() -> bytes:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    buffer = io.BytesIO()
    table = pa.table(
        {"user_id": np.arange(200), "item_id": np.arange(200) % 7, "rating": np.ones(200)}
    )
    pq.write_table(table, buffer)
    return buffer.getvalue()


PARQUET_CASES = {
    "empty_0_bytes": lambda: b"",
    "garbage": binary_garbage,
    "magic_only": lambda: b"PAR1",
    "truncated": lambda: parquet_bytes()[:-300],
    "csv_text_named_parquet": lambda: (HEADER + GOOD_ROWS).encode(),
}


@pytest.mark.parametrize("case", list(PARQUET_CASES))
def test_unreadable_parquet_is_named(case, tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / f"{case}.parquet"
    path.write_bytes(PARQUET_CASES[case]())
    with pytest.raises(DataError) as err:
        read_table(path, "user_id", "item_id", "rating")
    one_line_error(err, f"{case}.parquet", "Parquet")


def test_parquet_with_a_nested_column_is_named(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "nested.parquet"
    pq.write_table(
        pa.table({"user_id": [[1, 2], [3]], "item_id": [1, 2], "rating": [1.0, 2.0]}), path
    )
    with pytest.raises(DataError) as err:
        read_table(path, "user_id", "item_id", "rating")
    one_line_error(err, "nested.parquet", "'user_id'", "list")


def test_parquet_header_only_is_named(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "header.parquet"
    pq.write_table(
        pa.table({"user_id": pa.array([], pa.int64()), "item_id": pa.array([], pa.int64())}), path
    )
    with pytest.raises(DataError) as err:
        read_table(path, "user_id", "item_id")
    one_line_error(err, "header.parquet", "no data rows")


def test_fractional_timestamps_are_floored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "frac.csv"
    path.write_text(HEADER + "1,10,4,100.75\n2,20,3,-0.5\n3,30,2,7\n")
    with caplog.at_level(logging.WARNING, logger="mfzoo.data.columns"):
        data = read_table(path, "user_id", "item_id", "rating", "ts")
    assert data.timestamps.tolist() == [100, -1, 7]  # floor keeps the order of events
    assert "frac.csv: column 'ts' has 2 fractional value(s)" in caplog.text
    assert "first at line 2: 100.75" in caplog.text  # the file line, as errors name it


# repeated (user, item) pairs ----------------------------------------------------------------------
def ratings_csv(path: Path, copies: int, seed: int = 0) -> Interactions:
    """A file of synthetic ratings written `copies` times one after the other; the ratings once."""
    data = synthetic(n_users=120, n_items=80, n_interactions=3000, seed=seed)
    u, i, v = (x.numpy() for x in (data.users, data.items, data.values))
    rows = "".join(f"{a},{b},{c:g}\n" for a, b, c in zip(u, i, v, strict=True))
    path.write_text("user_id,item_id,rating\n" + rows * copies)
    return data


def test_triplicated_ratings_are_refused_by_default(tmp_path):
    path = tmp_path / "triple.csv"
    original = ratings_csv(path, 3)
    with pytest.raises(DataError) as err:
        read_table(path, "user_id", "item_id", "rating")
    u, i = int(original.users[0]), int(original.items[0])  # raw ids are 0..n-1
    message = one_line_error(
        err,
        "triple.csv",
        f"pair ({u}, {i}) occurs 3 times",
        "lines 2, 3002, 6002",
        "3000 pair(s) repeat",
        "mean",
        "keep",
    )
    assert "first" in message and "last" in message and "sum" in message and "max" in message


def test_triplicated_ratings_with_mean_are_the_ratings_once(tmp_path):
    path = tmp_path / "triple.csv"
    original = ratings_csv(path, 3)
    merged = read_table(path, "user_id", "item_id", "rating", pair_duplicates="mean")
    for field in ("users", "items", "values"):
        assert np.array_equal(getattr(merged, field).numpy(), getattr(original, field).numpy()), (
            field
        )
    split, honest = RandomSplit(test=0.1, val=0.1)(merged), RandomSplit(test=0.1, val=0.1)(original)
    assert np.array_equal(split.test.values.numpy(), honest.test.values.numpy())


def test_triplicated_ratings_kept_stay_together_in_every_split(tmp_path):
    path = tmp_path / "triple.csv"
    ratings_csv(path, 3)
    kept = read_table(path, "user_id", "item_id", "rating", pair_duplicates="keep")
    assert len(kept) == 9000
    split = RandomSplit(test=0.1, val=0.1)(kept)
    check_disjoint(split)  # no copy of a test rating in train
    assert (
        len(split.test) == 3 * 300 and len(split.train) + len(split.val) + len(split.test) == 9000
    )


def repeated_events(seed: int = 1) -> Interactions:
    """300 pairs of implicit events, each 1-5 times at random times (repeats are data: kept)."""
    rng = np.random.default_rng(seed)
    keys = np.repeat(rng.choice(40 * 30, size=300, replace=False), rng.integers(1, 6, size=300))
    keys = keys[rng.permutation(len(keys))]
    times = 1_600_000_000 + rng.integers(0, 10**6, size=len(keys))
    return Interactions.from_arrays(keys // 30, keys % 30, None, times, name="events")


SPLITS = {
    "random": RandomSplit(test=0.2, val=0.1),
    "kfold": KFold(n_folds=4, fold=1, val=0.1),
    "user_random": UserRandomSplit(test=0.2, val=0.1),
    "leave_last": LeaveLastOut(n=1, val_n=1),
    "temporal": TemporalSplit(test=0.2, val=0.1),
    "temporal_cut": TemporalSplit(test=None, cut=1_600_500_000),
}


@pytest.mark.parametrize("name", list(SPLITS))
def test_repeated_pairs_stay_in_one_part_under_every_split(name):
    data = repeated_events()
    keys = (data.users * data.n_items + data.items).numpy()
    assert len(data) > 2 * len(np.unique(keys))  # repeats kept by default for implicit events
    split = SPLITS[name](data)
    check_disjoint(split)  # no pair key in two parts
    assert sum(len(p) for p in split.parts().values()) == len(data)  # no row lost
    # a pair counts at its latest event: no train event after a held-out one
    if name.startswith("temporal"):
        held_out = [p for k, p in split.parts().items() if k != "train"]
        assert int(split.train.timestamps.max()) < min(latest_by_pair(p).min() for p in held_out)


def latest_by_pair(part: Interactions) -> np.ndarray:
    """The latest event of every pair of `part`. [P]"""
    keys, t = (part.users * part.n_items + part.items).numpy(), part.timestamps.numpy()
    order = np.lexsort((t, keys))
    return t[order][np.r_[keys[order][1:] != keys[order][:-1], True]]


# through the glue ---------------------------------------------------------------------------------
def table_cfg(path: Path, *overrides: str):
    """The tiny run's config reading `path` with the table source of the configs."""
    cfg = tiny_cfg(*overrides)
    source = OmegaConf.load(CONFIG_DIR / "data" / "source" / "table.yaml")
    source.path = str(path)
    with open_dict(cfg):
        cfg.data.source = source
    return cfg


@pytest.mark.parametrize("case", ["triplicated", "rating_1e39"])
def test_hostile_file_through_the_glue_writes_no_metrics(case, tmp_path):
    path = tmp_path / f"{case}.csv"
    if case == "triplicated":
        ratings_csv(path, 3)
        expected = r"triplicated\.csv: \(user, item\) pair .* occurs 3 times, at lines"
    else:
        ratings_csv(path, 1)
        with path.open("a") as f:
            f.write("5,7,1e39\n")
        expected = r"rating_1e39\.csv: column 'rating' .* float32 .* line 3002"
    run = tmp_path / "run"
    with pytest.raises((RunError, DataError), match=expected):
        train(table_cfg(path), run)
    assert not (run / "metrics.json").exists()


def test_triplicated_file_with_mean_gives_the_honest_result(tmp_path):
    once, triple = tmp_path / "once.csv", tmp_path / "triple.csv"
    ratings_csv(once, 1)
    ratings_csv(triple, 3)
    honest = train(table_cfg(once), tmp_path / "once")
    merged = train(table_cfg(triple, "data.pair_duplicates=mean"), tmp_path / "triple")
    assert merged["test"]["rmse"] == pytest.approx(honest["test"]["rmse"], abs=1e-6)
    saved = json.loads((tmp_path / "triple" / "metrics.json").read_text())
    assert saved["test"]["rmse"] == pytest.approx(honest["test"]["rmse"], abs=1e-6)
