"""The data kernels of `mfzoo.native` against their oracles: canonical integer text (a regular
expression and Python's int), presence-table codes (`np.unique`), repeated pairs (a set of
pairs), text codes (Arrow's `utf8_trim_whitespace` and `dictionary_encode`); and a file read
with and without them giving the same arrays."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mfzoo import native
from mfzoo.data.columns import encode_ids
from mfzoo.data.duplicates import repeats_a_pair
from mfzoo.data.errors import DataError
from mfzoo.data.sources import read_table
from mfzoo.data.sources.tables import canonical_ints

pytestmark = pytest.mark.skipif(
    not native.available(), reason="mfzoo.native is unavailable here (no C compiler)"
)

INT64 = (-(2**63), 2**63 - 1)
CANONICAL = re.compile(r"-?(0|[1-9][0-9]*)")


def expected_ints(cells: list[str]) -> list[int] | None:
    """The oracle: every cell "-"? digits without a leading zero, not "-0", within int64."""
    out = []
    for cell in cells:
        if not CANONICAL.fullmatch(cell) or cell == "-0":
            return None
        value = int(cell)
        if not INT64[0] <= value <= INT64[1]:
            return None
        out.append(value)
    return out


def kernel_ints(cells: list[str], offset: int = 0) -> np.ndarray | None:
    """`mfzoo_canonical_ints` on the cells, read from an Arrow slice starting at `offset`."""
    array = pa.array(["x"] * offset + cells, type=pa.string()).slice(offset)
    buffers = array.buffers()
    lib = native.library()
    assert lib is not None
    if buffers[2] is None:  # no bytes at all: every cell empty, which is never canonical
        return None
    address = buffers[1].address + 4 * array.offset
    out = np.empty(len(array), dtype=np.int64)
    return out if native.canonical_ints(lib, address, buffers[2].address, out) else None


cells = st.lists(
    st.one_of(
        st.integers(*INT64).map(str),
        st.integers(-(2**65), 2**65).map(str),  # beyond int64 too
        st.text(alphabet="-+0123456789 .ae", max_size=22),
        st.sampled_from(["007", "-0", "0", "+1", " 1", "1 ", "", "-", "9223372036854775808"]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=400, deadline=None)
@given(cells, st.integers(0, 3))
def test_canonical_ints_kernel_matches_the_rule(values: list[str], offset: int) -> None:
    want = expected_ints(values)
    got = kernel_ints(values, offset)
    if want is None:
        assert got is None
    else:
        assert got is not None and got.tolist() == want


@settings(max_examples=100, deadline=None)
@given(cells)
def test_canonical_ints_numpy_and_kernel_agree(values: list[str]) -> None:
    column = pa.chunked_array([pa.array(values, type=pa.string())])
    with_kernel = _with_min_rows(0, lambda: canonical_ints(column))
    without = _with_min_rows(1 << 62, lambda: canonical_ints(column))
    if without is None:
        assert with_kernel is None
    else:
        assert with_kernel is not None and with_kernel.tolist() == without.tolist()


def _with_min_rows(rows: int, run):
    saved = native.DATA_MIN_ROWS
    native.DATA_MIN_ROWS = rows
    try:
        return run()
    finally:
        native.DATA_MIN_ROWS = saved


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-50, 50), min_size=1, max_size=200))
def test_dense_codes_kernel_is_np_unique(ids: list[int]) -> None:
    arr = np.array(ids, dtype=np.int64)
    low, span = int(arr.min()), int(arr.max() - arr.min()) + 1
    lib = native.library()
    present, codes = native.dense_codes(lib, arr, low, span)
    unique, inverse = np.unique(arr, return_inverse=True)
    assert (present + low).tolist() == unique.tolist()
    assert codes.dtype == np.int32 and codes.tolist() == inverse.reshape(-1).tolist()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 9)), min_size=0, max_size=60),
    st.integers(0, 3),
)
def test_pair_repeats_kernel_is_a_set_of_pairs(pairs: list[tuple[int, int]], extra: int) -> None:
    u = np.array([p[0] for p in pairs], dtype=np.int32)
    i = np.array([p[1] for p in pairs], dtype=np.int32)
    lib = native.library()
    n_users = (int(u.max()) + 1 if len(u) else 0) + extra  # users beyond the rows: no harm
    found = native.pair_repeats(lib, u, i, n_users, 10)
    assert found == (len(set(pairs)) < len(pairs))
    if len(pairs) >= 2:  # the reader's entry point, on both paths
        assert _with_min_rows(0, lambda: repeats_a_pair(u, i, 10)) == found
        assert _with_min_rows(1 << 62, lambda: repeats_a_pair(u, i, 10)) == found


def test_encode_ids_takes_the_kernel_for_long_columns_and_agrees() -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(-(10**5), 10**5, native.DATA_MIN_ROWS + 5).astype(np.int64)
    ids, codes = encode_ids(raw, "user", "t")
    unique, inverse = np.unique(raw, return_inverse=True)
    assert ids.dtype == raw.dtype and ids.tolist() == unique.tolist()
    assert codes.dtype == np.int32 and np.array_equal(codes, inverse.reshape(-1))


@pytest.mark.parametrize("ids", ["ints", "padded", "strings"])
def test_a_long_file_reads_the_same_with_and_without_the_kernels(
    tmp_path, monkeypatch, ids: str
) -> None:
    """A file long enough for the kernels, read twice (MFZOO_NATIVE=0 the second time): the
    same ids, codes, values and timestamps, whether the ids are integers, zero-padded text
    ("007" and "7" two ids) or strings; and a repeated pair refused by both."""
    rng = np.random.default_rng(1)
    n = native.DATA_MIN_ROWS + 1000
    keys = rng.permutation(3000 * 500)[:n]
    users, items = keys // 500, keys % 500
    fmt = {"ints": str, "padded": lambda x: f"{x:05d}" if x % 3 else str(x)}
    fmt["strings"] = lambda x: f"u{x}"
    lines = ["user,item,rating,ts"] + [
        f"{fmt[ids](u)},{i},{1 + (k % 5)},{1_600_000_000 + k}"
        for k, (u, i) in enumerate(zip(users.tolist(), items.tolist(), strict=True))
    ]
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")
    columns = ("user", "item", "rating", "ts")
    fast = read_table(path, *columns, cache=False)
    monkeypatch.setenv("MFZOO_NATIVE", "0")
    slow = read_table(path, *columns, cache=False)
    assert len(fast) == n
    assert np.array_equal(fast.user_ids, slow.user_ids)
    assert np.array_equal(fast.item_ids, slow.item_ids)
    for name in ("users", "items", "values", "timestamps"):
        assert np.array_equal(getattr(fast, name).numpy(), getattr(slow, name).numpy()), name
    if ids == "padded":  # "00003" and "3" stay two ids
        assert fast.user_ids.dtype == object and "00001" in set(fast.user_ids.tolist())
    repeated = tmp_path / "repeated.csv"
    user, item, rating, _ = lines[1].split(",")  # the first pair again, a day later
    repeated.write_text("\n".join([*lines, f"{user},{item},{rating},1600086400"]) + "\n")
    monkeypatch.delenv("MFZOO_NATIVE")
    with pytest.raises(Exception, match=r"repeat"):
        read_table(repeated, *columns, cache=False)
    monkeypatch.setenv("MFZOO_NATIVE", "0")
    with pytest.raises(Exception, match=r"repeat"):
        read_table(repeated, *columns, cache=False)


# every character Arrow's utf8_trim_whitespace trims (ASCII and Unicode), and some it does not
SPACES = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_SPACES = "\x00\x08\x7f\u200b\ufeff\u180e"


def arrow_codes(chunks: list[pa.Array]) -> tuple[list[str], list[int]]:
    """The oracle: Arrow trims, dictionary-encodes and unifies the chunks."""
    encoded = pc.dictionary_encode(pc.utf8_trim_whitespace(pa.chunked_array(chunks, pa.string())))
    encoded = encoded.unify_dictionaries()
    if encoded.num_chunks == 0:
        return [], []
    dictionary = encoded.chunks[0].dictionary.to_pylist()
    return dictionary, [x for c in encoded.chunks for x in c.indices.to_pylist()]


def sliced_chunks(cells: list[str], cuts: list[int], offset: int) -> list[pa.Array]:
    """The cells as Arrow chunks split at `cuts`, each a slice starting `offset` cells in."""
    bounds = sorted({0, len(cells), *(c % (len(cells) + 1) for c in cuts)})
    return [
        pa.array(["pad"] * offset + cells[a:b], type=pa.string()).slice(offset)
        for a, b in itertools.pairwise(bounds)
    ]


text_cells = st.lists(
    st.one_of(
        st.text(alphabet=st.sampled_from("ab\u00e9\u4e2d" + SPACES + NOT_SPACES), max_size=12),
        st.text(alphabet="xyz", min_size=7, max_size=20),  # longer than a word: memcmp
        st.sampled_from(["u1", " u1", "u1 ", "\u3000u1\xa0", "u1\u200b", "abcdefgh", "abcdefghi"]),
    ),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(text_cells, st.lists(st.integers(0, 100), max_size=4), st.integers(0, 3))
def test_text_codes_kernel_is_arrows_trim_and_dictionary_encode(
    values: list[str], cuts: list[int], offset: int
) -> None:
    chunks = sliced_chunks(values, cuts, offset)
    lib = native.library()
    coded = native.text_codes(lib, chunks)
    assert coded is not None
    dictionary, indices = arrow_codes(chunks)
    if "" in dictionary:  # a cell empty after trimming: the first such row is reported
        first = indices.index(dictionary.index(""))
        assert coded.empty == first and coded.codes.tolist() == indices[:first]
        return
    assert coded.empty is None
    assert coded.cells.to_pylist() == dictionary
    assert coded.codes.dtype == np.int32 and coded.codes.tolist() == indices


def test_text_codes_kernel_grows_its_table_and_refuses_other_types() -> None:
    rng = np.random.default_rng(3)
    # 200,000 cells over 60,000 distinct ids of 1-30 characters: the table grows many times
    words = [f"{'k' * int(rng.integers(0, 25))}{j}" for j in range(60_000)]
    cells = [words[j] for j in rng.integers(0, len(words), 200_000)]
    chunks = sliced_chunks(cells, [50_000, 123_457], 1)
    coded = native.text_codes(native.library(), chunks)
    dictionary, indices = arrow_codes(chunks)
    assert coded is not None and coded.cells.to_pylist() == dictionary
    assert np.array_equal(coded.codes, np.array(indices))
    assert native.text_codes(native.library(), [pa.array(["a"], pa.large_string())]) is None


@pytest.mark.parametrize("ids", ["strings", "ints_as_text", "unused_entries"])
def test_a_long_parquet_file_reads_its_dictionaries_as_the_decoded_column(
    tmp_path, monkeypatch, ids: str
) -> None:
    """Text ids in Parquet are read dictionary-encoded, as stored, and coded through the
    dictionaries; the result equals the decoded column's (MFZOO_NATIVE=0): row groups with
    dictionaries of their own, cells with whitespace around them, ids that are canonical
    integers written as text, and a dictionary holding values no row has."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(4)
    n = native.DATA_MIN_ROWS + 777
    keys = rng.permutation(4000 * 300)[:n]
    users, items = (keys // 300).tolist(), (keys % 300).tolist()
    text = {
        "strings": lambda u: f"u{u}" if u % 11 else f" u{u}\t",
        "ints_as_text": lambda u: str(u) if u % 7 else f" {u}",
        "unused_entries": lambda u: f"user{u}",
    }[ids]
    user_col = pa.array([text(u) for u in users], pa.string())
    if ids == "unused_entries":  # a categorical column whose dictionary has extra values
        user_col = pa.DictionaryArray.from_arrays(
            pa.array(np.array(users, dtype=np.int32) + 1),
            pa.array(["never"] + [f"user{u}" for u in range(4000)] + ["also never"]),
        )
    table = pa.table(
        {
            "user": user_col,
            "item": pa.array([f"m{i}" for i in items]),
            "rating": pa.array(rng.integers(1, 6, n).astype(np.float64)),
        }
    )
    path = tmp_path / "ratings.parquet"
    pq.write_table(table, path, row_group_size=20_000)
    from mfzoo.data.sources import tables

    taken = []
    coder = tables._dictionary_ids
    monkeypatch.setattr(
        tables, "_dictionary_ids", lambda col: taken.append(coder(col)) or taken[-1]
    )
    fast = read_table(path, "user", "item", "rating", cache=False)
    assert len(taken) == 2 and all(t is not None for t in taken)  # both columns, as stored
    monkeypatch.setenv("MFZOO_NATIVE", "0")
    slow = read_table(path, "user", "item", "rating", cache=False)
    assert np.array_equal(fast.user_ids, slow.user_ids)
    assert fast.user_ids.dtype == slow.user_ids.dtype
    assert np.array_equal(fast.item_ids, slow.item_ids)
    for name in ("users", "items", "values"):
        assert np.array_equal(getattr(fast, name).numpy(), getattr(slow, name).numpy()), name
    assert fast.users.dtype == torch.int32
    assert len(fast.user_ids) == len(set(users))  # no id that only a dictionary holds
    if ids == "ints_as_text":
        assert fast.user_ids.dtype == np.int64


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_an_empty_text_id_is_named_alike_with_and_without_the_kernels(tmp_path, monkeypatch, kind):
    import pyarrow.parquet as pq

    n = native.DATA_MIN_ROWS + 10
    users = [f"u{k % 977}{' ' if k % 7 == 0 else ''}" for k in range(n)]
    users[n - 5] = "\u3000 \t"  # whitespace only: missing
    table = pa.table({"user": users, "item": [f"m{k}" for k in range(n)], "rating": [4.0] * n})
    path = tmp_path / f"ratings.{kind}"
    if kind == "csv":
        pa.csv.write_csv(table, path, pa.csv.WriteOptions(quoting_style="none"))
    else:
        pq.write_table(table, path, row_group_size=30_000)
    messages = []
    for setting in ("1", "0"):
        monkeypatch.setenv("MFZOO_NATIVE", setting)
        with pytest.raises(DataError) as error:
            read_table(path, "user", "item", "rating", cache=False)
        messages.append(str(error.value))
    assert messages[0] == messages[1] and "'user'" in messages[0]
    # the 1-based file line after the header, or the Parquet row
    assert (f"line {n - 3}" if kind == "csv" else f"row {n - 4}") in messages[0]
