"""Side information: feature tables, their loaders, batches that carry them, the feature-aware
model, and the cold-start item split."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mfzoo.data.batch import Batch
from mfzoo.data.datamodule import InteractionsDataModule
from mfzoo.data.errors import DataError
from mfzoo.data.features import Features
from mfzoo.data.interactions import Interactions
from mfzoo.data.loader import BatchLoader
from mfzoo.data.sampling import UniformSampler
from mfzoo.data.sources import grouplens, movielens, read_features, read_table
from mfzoo.data.splits import ColdItemSplit, RandomSplit, check_disjoint
from mfzoo.evaluation.beyond import feature_popularity_scores
from mfzoo.evaluation.ranking import evaluate_ranking
from mfzoo.losses import BPRLoss
from mfzoo.models.contract import capabilities
from mfzoo.models.features import FeatureMF


def table(rows: list[list[str]], numeric: list[float] | None = None) -> Features:
    """A one-column ("tag") table from per-row values, with an optional numeric column "x"."""
    return Features.from_columns(
        len(rows), {"tag": rows}, None if numeric is None else {"x": np.array(numeric)}
    )


# Features ----------------------------------------------------------------------------------
def test_from_columns_builds_named_multi_hot_and_dense_rows():
    t = Features.from_columns(
        3,
        {"genre": [["b", "a"], [], ["a"]], "size": [["L"], ["S"], []]},
        {"year": np.array([1990.0, 2000.0, 1995.0])},
    )
    assert t.vocabulary == ("genre=a", "genre=b", "size=L", "size=S")
    assert t.names == ["genre=a", "genre=b", "size=L", "size=S", "year"]
    assert t.offsets.tolist() == [0, 3, 4, 5]
    assert t.to_dense().tolist() == [[1, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]]
    assert t.row(0) == (["genre=a", "genre=b", "size=L"], [1990.0])
    assert t.row(1) == (["size=S"], [2000.0])


def test_take_gathers_rows_in_order_with_repeats():
    t = table([["a", "b"], [], ["c"], ["a"]], numeric=[1.0, 2.0, 3.0, 4.0])
    picked = t.take(torch.tensor([[2, 0], [1, 2]]))  # row-major: 2, 0, 1, 2
    assert len(picked) == 4
    assert torch.equal(picked.to_dense(), t.to_dense()[[2, 0, 1, 2]])
    assert picked.dense.squeeze(1).tolist() == [3.0, 1.0, 2.0, 3.0]
    assert picked.vocabulary == t.vocabulary
    assert len(t.take(torch.tensor([1, 1]))) == 2 and len(t.take(torch.tensor([1, 1])).indices) == 0


def test_align_orders_rows_by_model_ids_and_fills_missing_rows():
    t = table([["x"], ["y"], ["z"]], numeric=[10.0, 20.0, 60.0])
    aligned = t.align(np.array([7, 3, 9]), np.array([3, 5, 7]))  # 5 has no row, 9 is not an id
    assert aligned.row(0) == (["tag=y"], [20.0])
    assert aligned.row(1) == ([], [30.0])  # no categories, the column mean
    assert aligned.row(2) == (["tag=x"], [10.0])
    assert aligned.align(np.array(["3", "5", "7"]), np.array([7])).row(0) == (
        ["tag=x"],
        [10.0],
    )  # matched as text
    with pytest.raises(DataError, match="none of the 2 ids"):
        t.align(np.array([7, 3, 9]), np.array([1, 2]))


def test_equals_compares_contents():
    a, b = table([["a"], ["b"]]), table([["a"], ["b"]])
    assert a.equals(b) and not a.equals(table([["b"], ["a"]])) and not a.equals(None)


# Interactions keep their tables ------------------------------------------------------------
@pytest.fixture
def featured(ratings) -> Interactions:
    rng = np.random.default_rng(1)
    tags = [
        [f"g{k}" for k in rng.choice(5, size=rng.integers(1, 3), replace=False)]
        for _ in range(ratings.n_items)
    ]
    items = Features.from_columns(
        ratings.n_items, {"genre": tags}, {"year": rng.normal(1990, 10, ratings.n_items)}
    )
    users = Features.from_columns(
        ratings.n_users, {"job": [[str(u % 3)] for u in range(ratings.n_users)]}
    )
    return ratings.with_features(user_features=users, item_features=items)


def test_tables_survive_subset_concat_to_and_splits(featured):
    items, users = featured.item_features, featured.user_features
    part = featured.subset(featured.values >= 3)
    assert part.item_features is items and part.user_features is users
    again = Interactions.concat([part, featured.subset(featured.values < 3)])
    assert again.item_features is items and again.user_features is users
    assert featured.to("cpu").item_features is items
    for split in (
        RandomSplit(test=0.2, val=0.1, seed=0)(featured),
        ColdItemSplit(0.2, 0.1, seed=0)(featured),
    ):
        for p in split.parts().values():
            assert p.item_features is items and p.user_features is users
    plain = featured.subset(torch.arange(10)).with_features(
        item_features=table([["a"]] * featured.n_items)
    )
    with pytest.raises(ValueError, match="item_features"):
        Interactions.concat([featured, plain])


def test_with_features_refuses_a_table_of_the_wrong_size(ratings):
    with pytest.raises(
        DataError, match=f"item feature table has 3 rows, but there are {ratings.n_items} items"
    ):
        ratings.with_features(item_features=table([["a"], ["b"], ["c"]]))


# the cold-start split ----------------------------------------------------------------------
def test_cold_item_split_puts_whole_items_in_val_and_test(featured):
    split = ColdItemSplit(test_items=0.25, val_items=0.15, seed=3)(featured)
    check_disjoint(split)
    train, val, test = (set(p.items.tolist()) for p in (split.train, split.val, split.test))
    assert not (train & test) and not (train & val) and not (val & test)
    n = len(train | val | test)
    assert n == featured.n_items
    assert (len(test), len(val)) == (round(0.25 * n), round(0.15 * n))
    assert len(split.train) + len(split.val) + len(split.test) == len(featured)
    again = ColdItemSplit(test_items=0.25, val_items=0.15, seed=3)(featured)
    assert torch.equal(again.test.items, split.test.items)
    assert (
        set(ColdItemSplit(test_items=0.25, val_items=0.15, seed=4)(featured).test.items.tolist())
        != test
    )


def test_cold_item_split_rejects_bad_shares(featured):
    with pytest.raises(ValueError, match="test_items"):
        ColdItemSplit(test_items=0.0)
    with pytest.raises(ValueError, match="test_items \\+ val_items"):
        ColdItemSplit(test_items=0.6, val_items=0.4)
    with pytest.raises(DataError, match="without items"):
        ColdItemSplit(test_items=0.001, val_items=0.0)(featured)


# loaders fill batches only when asked ------------------------------------------------------
def test_loader_fills_feature_rows_only_when_asked(featured):
    sampler = UniformSampler(featured, n_negatives=3)
    plain = next(iter(BatchLoader(featured, 16, shuffle=True, sampler=sampler)))
    assert plain.user_features is None and plain.item_features is None
    batch = next(iter(BatchLoader(featured, 16, shuffle=True, sampler=sampler, features=True)))
    assert (
        batch.items.shape == (16, 4)
        and len(batch.item_features) == 64
        and len(batch.user_features) == 16
    )
    assert torch.equal(
        batch.item_features.to_dense(), featured.item_features.to_dense()[batch.items.reshape(-1)]
    )
    assert torch.equal(
        batch.item_features.dense, featured.item_features.dense[batch.items.reshape(-1)]
    )
    assert torch.equal(
        batch.user_features.to_dense(), featured.user_features.to_dense()[batch.users]
    )
    no_tables = featured.subset(torch.arange(len(featured)))
    no_tables = Interactions(
        no_tables.users,
        no_tables.items,
        no_tables.values,
        None,
        featured.user_ids,
        featured.item_ids,
    )
    bare = next(iter(BatchLoader(no_tables, 16, features=True)))
    assert bare.item_features is None and bare.user_features is None


def test_datamodule_batch_features_reach_every_loader(featured):
    for asked in (False, True):
        dm = InteractionsDataModule(
            featured, RandomSplit(test=0.2, val=0.1), batch_size=8, batch_features=asked
        )
        for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
            assert (next(iter(loader)).item_features is not None) is asked


# the feature-aware model -------------------------------------------------------------------
def model_on(data: Interactions, train: Interactions | None = None, **kwargs) -> FeatureMF:
    model = FeatureMF(data.n_users, data.n_items, dim=6, **kwargs)
    model.prepare(data if train is None else train)
    with torch.no_grad():  # biases and feature parts away from their zero start
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


@pytest.mark.parametrize("biases", [True, False])
def test_factors_reproduce_forward_scores(featured, biases):
    model = model_on(featured, biases=biases)
    assert capabilities(model) == ["Scorer", "Prepared", "Penalised", "Factorised"]
    users = torch.arange(featured.n_users).repeat_interleave(2)[:50]
    items = torch.randint(0, featured.n_items, (50, 4))
    scores = model(Batch(users, items))
    full = model.user_factors() @ model.item_factors().T  # [U, I]
    assert model.item_factors().shape[1] == 6 + 2 * biases
    torch.testing.assert_close(scores, full[users.unsqueeze(1), items], atol=1e-5, rtol=1e-5)
    assert scores.std() > 0.1  # the check compares non-trivial scores


def test_scores_from_batch_rows_equal_scores_from_the_model_tables(featured):
    model = model_on(featured)
    batch = next(
        iter(
            BatchLoader(
                featured, 32, shuffle=True, sampler=UniformSampler(featured, 2), features=True
            )
        )
    )
    bare = Batch(batch.users, batch.items)
    torch.testing.assert_close(model(batch), model(bare))
    torch.testing.assert_close(model.penalty(batch), model.penalty(bare), rtol=1e-5, atol=1e-5)


def test_penalty_is_the_sum_of_squared_parts_per_use(featured):
    model = model_on(featured)
    users, items = torch.tensor([0, 0, 3]), torch.tensor([[1, 2], [1, 1], [5, 0]])
    p_id, i_id = model.user_embedding.weight, model.item_embedding.weight
    full_users = model.user_factors()[:, :6]  # p_u = e_u + feature part (all users seen)
    full_items = model.item_factors()[:, :6]
    expected = 0.0
    for u in users.tolist():
        expected += p_id[u].pow(2).sum() + (full_users[u] - p_id[u]).pow(2).sum()
    for i in items.reshape(-1).tolist():
        expected += i_id[i].pow(2).sum() + (full_items[i] - i_id[i]).pow(2).sum()
    torch.testing.assert_close(model.penalty(Batch(users, items))[0], expected)


def test_cold_items_are_scored_from_their_features_alone(featured):
    split = ColdItemSplit(test_items=0.3, val_items=0.0, seed=0)(featured)
    cold = sorted(set(split.test.items.tolist()))
    tables = featured.item_features
    a, b = cold[0], cold[1]
    # give cold item b the features of cold item a
    same = Features.from_dense(
        torch.where(
            (torch.arange(featured.n_items) == b).unsqueeze(1),
            tables.to_dense()[a],
            tables.to_dense(),
        ),
        tables.vocabulary,
    )
    dense = tables.dense.clone()
    dense[b] = dense[a]
    data = featured.with_features(
        item_features=Features(
            same.offsets, same.indices, same.weights, same.vocabulary, dense, tables.dense_names
        )
    )
    train = split.train.with_features(item_features=data.item_features)
    model = model_on(data, train)
    warm = int(split.train.items[0])
    scores = model.user_factors() @ model.item_factors().T
    torch.testing.assert_close(scores[:, a], scores[:, b])
    with torch.no_grad():
        model.item_embedding.weight[a] += 5.0
        model.item_bias.weight[a] += 5.0
        model.item_bias.weight[warm] += 5.0
    after = model.user_factors() @ model.item_factors().T
    torch.testing.assert_close(after[:, a], scores[:, a])  # a cold item's id part is not used
    torch.testing.assert_close(
        after[:, warm] - scores[:, warm], torch.full((featured.n_users,), 5.0)
    )  # a warm one's is
    batch_scores = model(
        Batch(torch.arange(featured.n_users), torch.tensor([[a]] * featured.n_users))
    )
    torch.testing.assert_close(batch_scores[:, 0], scores[:, a])


def test_prepare_refuses_a_table_of_another_size(featured):
    model = FeatureMF(featured.n_users + 1, featured.n_items, dim=4)
    with pytest.raises(ValueError, match="user feature table has"):
        model.prepare(featured)
    with pytest.raises(ValueError, match="item_id_dropout"):
        FeatureMF(2, 2, item_id_dropout=1.0)


def genre_world(seed: int = 0) -> Interactions:
    """200 users x 300 items, 8 genres (1-2 per item); each user likes 2 genres and interacts
    with 25 items, 90% of them of a liked genre: item features determine preference."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_genres = 200, 300, 8
    genres = [rng.choice(n_genres, size=rng.integers(1, 3), replace=False) for _ in range(n_items)]
    has = np.zeros((n_items, n_genres), dtype=bool)
    for i, g in enumerate(genres):
        has[i, g] = True
    users, items = [], []
    for u in range(n_users):
        liked = rng.choice(n_genres, size=2, replace=False)
        good = np.flatnonzero(has[:, liked].any(1))
        other = np.setdiff1d(np.arange(n_items), good)
        chosen = np.concatenate(
            [rng.choice(good, 22, replace=False), rng.choice(other, 3, replace=False)]
        )
        users += [u] * len(chosen)
        items += chosen.tolist()
    data = Interactions.from_arrays(np.array(users), np.array(items))
    names = {"genre": [[str(g) for g in genres[int(raw)]] for raw in data.item_ids]}
    return data.with_features(item_features=Features.from_columns(data.n_items, names))


def test_feature_model_ranks_cold_items_better_than_random():
    data = genre_world()
    split = ColdItemSplit(test_items=0.2, val_items=0.0, seed=0)(data)
    torch.manual_seed(0)
    model = FeatureMF(
        data.n_users, data.n_items, dim=16, biases=False, item_id_dropout=0.5, user_features=False
    )
    model.prepare(split.train)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    loss_fn = BPRLoss(l2=1e-4)
    loader = BatchLoader(
        split.train, 512, shuffle=True, sampler=UniformSampler(split.train, 4, reject_seen=True)
    )
    for _ in range(15):
        for batch in loader:
            optimizer.zero_grad()
            loss_fn(model(batch), batch, model.penalty(batch)).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        users, items = model.user_factors(), model.item_factors()
    learned = evaluate_ranking(
        lambda u: users[u] @ items.T, split.train, split.test, ks=[10], candidates="test_items"
    )
    generator = torch.Generator().manual_seed(0)
    rand = evaluate_ranking(
        lambda u: torch.rand(len(u), data.n_items, generator=generator),
        split.train,
        split.test,
        ks=[10],
        candidates="test_items",
    )
    assert rand["ndcg@10"] < 0.3
    assert learned["ndcg@10"] > rand["ndcg@10"] + 0.2, (learned["ndcg@10"], rand["ndcg@10"])


# MovieLens-100K side information, offline ------------------------------------------------------
U_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "2|GoldenEye (1995)|01-Jan-1995||http://y|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n"
)
U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n3|17|M|student|32067\n"
U_DATA = "1\t1\t5\t874965758\n2\t2\t3\t876893171\n3\t1\t4\t878542960\n"
INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1\t1\t5\t874965758\n2\t2\t3\t876893171\n3\t1\t4\t878542960\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "2\tGoldenEye\t1995\tAction Adventure Thriller\n"
)
USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n3\t17\tM\tstudent\t32067\n"
)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """GroupLens unreachable; `pip download` copies a tiny fake RecBole wheel with .user."""
    wheel = tmp_path / "src" / "recbole-1.2.1-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        for member, text in (
            (grouplens._RECBOLE_INTER, INTER),
            (grouplens._RECBOLE_ITEM, ITEM),
            (grouplens._RECBOLE_USER, USER),
        ):
            zf.writestr(member, text)

    def unreachable(url, dest, timeout=None):
        raise urllib.error.URLError("offline")

    def fake_pip(requirement, dest):
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(grouplens, "_download", unreachable)
    monkeypatch.setattr(grouplens, "_pip_download", fake_pip)
    for name, text in (("INTER", INTER), ("ITEM", ITEM), ("USER", USER)):
        monkeypatch.setattr(
            grouplens, f"_RECBOLE_{name}_SHA256", hashlib.sha256(text.encode()).hexdigest()
        )
    monkeypatch.setitem(grouplens._EXPECTED_ROWS, "100k", 3)


def check_ml100k_features(data: Interactions) -> None:
    assert data.item_ids.tolist() == [1, 2] and data.user_ids.tolist() == [1, 2, 3]
    assert data.item_features.row(0)[0] == ["genre=Animation", "genre=Children's", "genre=Comedy"]
    assert data.item_features.row(1)[0] == ["genre=Action", "genre=Adventure", "genre=Thriller"]
    assert data.user_features.row(0)[0] == ["age=18-24", "gender=M", "occupation=technician"]
    assert data.user_features.row(1)[0] == ["age=50-55", "gender=F", "occupation=other"]
    assert data.user_features.row(2)[0] == ["age=<18", "gender=M", "occupation=student"]


def test_movielens_100k_features_from_the_recbole_wheel(tmp_path, offline):
    data = movielens("100k", cache_dir=str(tmp_path / "cache"), features=True)
    check_ml100k_features(data)
    assert (tmp_path / "cache" / "ml-100k.user").is_file()
    # only when asked
    assert movielens("100k", cache_dir=str(tmp_path / "cache")).item_features is None


def test_movielens_100k_features_from_the_grouplens_zip_match_the_recbole_copy(tmp_path, offline):
    with zipfile.ZipFile(tmp_path / "ml-100k.zip", "w") as zf:
        for name, text in (("u.data", U_DATA), ("u.item", U_ITEM), ("u.user", U_USER)):
            zf.writestr(f"ml-100k/{name}", text.encode("latin-1"))
    from_zip = movielens("100k", cache_dir=str(tmp_path), features=True)
    check_ml100k_features(from_zip)
    from_wheel = movielens("100k", cache_dir=str(tmp_path / "other"), features=True)
    assert from_zip.item_features.equals(from_wheel.item_features)
    assert from_zip.user_features.equals(from_wheel.user_features)


def test_movielens_features_name_the_bad_line(tmp_path, offline, monkeypatch):
    with zipfile.ZipFile(tmp_path / "ml-100k.zip", "w") as zf:
        zf.writestr("ml-100k/u.data", U_DATA)
        zf.writestr("ml-100k/u.item", U_ITEM + "3|Bad (1995)|x||y|0|1\n")
        zf.writestr("ml-100k/u.user", U_USER)
    with pytest.raises(DataError, match=r"u\.item: line 3 does not end in 19 genre flags"):
        movielens("100k", cache_dir=str(tmp_path), features=True)
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(grouplens, "_RECBOLE_USER_SHA256", "0" * 64)
    with pytest.raises(DataError, match="sha256"):
        movielens("100k", cache_dir=str(cache), features=True)
    with pytest.raises(DataError, match="100k only"):
        movielens("1m", cache_dir=str(cache), features=True)


# feature files ---------------------------------------------------------------------------
def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


RATINGS = "user,item,rating\n1,10,4\n2,10,3\n2,11,5\n3,12,1\n"


def test_read_table_attaches_user_and_item_feature_files(tmp_path):
    items = write(
        tmp_path,
        "items.csv",
        "item,genres,year,zip\n11,Drama,1990,12345\n10,Action|Comedy,1995,00501\n99,Drama,2000,1\n",
    )
    users = write(tmp_path, "users.tsv", "user\tgender\n2\tF\n1\tM\n3\t\n")
    data = read_table(
        write(tmp_path, "r.csv", RATINGS),
        "user",
        "item",
        "rating",
        user_features=users,
        item_features=items,
        categorical_features=["zip"],
    )
    f = data.item_features
    assert f.vocabulary == (
        "genres=Action",
        "genres=Comedy",
        "genres=Drama",
        "zip=00501",
        "zip=1",
        "zip=12345",
    )
    assert f.dense_names == ("year",)
    by_id = {int(raw): f.row(i) for i, raw in enumerate(data.item_ids)}
    assert by_id[10] == (["genres=Action", "genres=Comedy", "zip=00501"], [1995.0])
    assert by_id[11] == (["genres=Drama", "zip=12345"], [1990.0])
    assert by_id[12] == ([], [1995.0])  # no row: no categories, the mean year
    assert [data.user_features.row(u)[0] for u in range(3)] == [["gender=M"], ["gender=F"], []]
    with pytest.raises(DataError, match=r"\['postcode'\] that no feature file has"):
        read_table(
            write(tmp_path, "r.csv", RATINGS),
            "user",
            "item",
            "rating",
            item_features=items,
            categorical_features=["postcode"],
        )


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "item,year\n10,1995\n11,\n",
            r"items\.csv: numeric feature column 'year' is empty at line 3",
        ),
        (
            "item,year\n10,1995\n11,inf\n",
            r"column 'year' holds 'inf', not a finite number at line 3",
        ),
        ("item,year\n10,1\n\n10,2\n", r"column 'item' repeats id '10' at line 2 and line 4"),
        ("item,year\n10,1\n,2\n", r"column 'item' \(the id\) is missing at line 3"),
        ("item\n10\n", r"no feature columns besides the id column 'item'"),
        ("item,g,g\n10,a,b\n", r"names column\(s\) \['g'\] more than once"),
    ],
)
def test_feature_file_errors_name_file_column_and_line(tmp_path, text, expected):
    with pytest.raises(DataError, match=expected):
        read_features(write(tmp_path, "items.csv", text))


def test_parquet_feature_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "items.parquet"
    pq.write_table(
        pa.table({"item": [10, 11], "genres": ["a|b", None], "year": [1990.0, 2000.0]}), path
    )
    ids, t = read_features(path)
    assert (
        ids.tolist() == [10, 11]
        and t.row(0) == (["genres=a", "genres=b"], [1990.0])
        and t.row(1) == ([], [2000.0])
    )
    pq.write_table(pa.table({"item": [10, 11], "year": [1990.0, None]}), path)
    with pytest.raises(DataError, match="column 'year' is empty at row 2"):
        read_features(path)


# cold-start helpers: negatives over the training items, the feature-popularity baseline ----------
def test_train_items_only_never_draws_an_item_without_training_events():
    data = Interactions.from_arrays(
        np.array([0, 0, 1, 1, 2, 2, 0]), np.array([0, 1, 1, 2, 3, 4, 5])
    )
    train = data.subset(data.items <= 2)  # items 3, 4, 5 keep their ids but have no training events
    sampler = UniformSampler(train, n_negatives=3, train_items_only=True)
    items, log_q = sampler(torch.tensor([0, 1, 2] * 200), torch.Generator().manual_seed(0))
    assert set(items.unique().tolist()) == {0, 1, 2}
    assert torch.allclose(log_q, torch.full_like(log_q, -math.log(3)))
    assert sampler.log_prob(torch.tensor([0, 3, 4, 5])).tolist() == pytest.approx(
        [-math.log(3), -math.inf, -math.inf, -math.inf]
    )
    everywhere = UniformSampler(train, n_negatives=3)(
        torch.tensor([0, 1, 2] * 200), torch.Generator().manual_seed(0)
    )[0]
    # the default draws from the whole catalogue
    assert {3, 4, 5} <= set(everywhere.unique().tolist())
    with pytest.raises(ValueError, match="no items"):
        UniformSampler(
            train.subset(torch.zeros(len(train), dtype=torch.bool)), train_items_only=True
        )


def test_feature_popularity_scores_by_hand():
    """Items 0..3 with tags 0:{a}, 1:{a, b}, 2:{b}, 3:{c}; training events on item 0 (x3) and
    item 1 (x1), N = 4: share_a = (3 + 1)/4 = 1, share_b = 1/4, share_c = 0.
    Scores: item 0 = 1, item 1 = (1 + 1/4)/2 = 5/8, item 2 = 1/4, item 3 = 0."""
    data = Interactions.from_arrays(np.array([0, 1, 2, 0, 1, 2]), np.array([0, 0, 0, 1, 2, 3]))
    data = data.with_features(item_features=table([["a"], ["a", "b"], ["b"], ["c"]]))
    # the events on items 2 and 3 are not training events
    train = data.subset(torch.arange(len(data)) < 4)
    scores = feature_popularity_scores(train)(torch.tensor([0, 2]))
    assert scores.shape == (2, 4)
    assert scores[0].tolist() == pytest.approx([1.0, 5 / 8, 1 / 4, 0.0])
    assert torch.equal(scores[0], scores[1])
    with pytest.raises(ValueError, match="needs item features"):
        feature_popularity_scores(Interactions.from_arrays(np.array([0]), np.array([0])))


# a run keeps its feature tables ---------------------------------------------------------------
def _featured_run_cfg(tmp_path: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONFIG_DIR

    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 40, 1500), rng.integers(0, 30, 1500)
    lines = sorted({(int(u), int(i)) for u, i in zip(users, items, strict=True)})
    (tmp_path / "events.csv").write_text(
        "user_id,item_id,rating\n" + "".join(f"u{u},m{i},1\n" for u, i in lines)
    )
    genres = ["Drama", "Comedy", "Action|Comedy"]
    (tmp_path / "items.csv").write_text(
        "item,genre,year\n" + "".join(f"m{i},{genres[i % 3]},{1990 + i}\n" for i in range(30))
    )
    (tmp_path / "users.csv").write_text(
        "user,age\n" + "".join(f"u{u},{20 + u % 5}\n" for u in range(40))
    )
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "experiment=ml100k_cold_items",
                "data/source=table",
                "~data.source.features",
                f"data.source.path={tmp_path / 'events.csv'}",
                f"data.source.item_features={tmp_path / 'items.csv'}",
                f"data.source.user_features={tmp_path / 'users.csv'}",
                "data.source.categorical_features=[age]",
                "data.split.test_items=0.2",
                "data.split.val_items=0.2",
                "model.dim=8",
                "data.batch_size=256",
                "trainer.max_epochs=2",
                "logger=none",
                "progress=false",
                *overrides,
            ],
        )


@pytest.mark.parametrize("keep", ["copy", "digest"])
def test_a_run_keeps_its_feature_tables_and_refuses_changed_ones(tmp_path, keep):
    from mfzoo.training.restore import load_run
    from mfzoo.training.run import train
    from mfzoo.training.rundir import RunError

    cfg = _featured_run_cfg(tmp_path, f"keep_data={keep}")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["val"]["ndcg@10"] > 0 and metrics["test"]["ndcg@10"] > 0
    _, datamodule, model = load_run(tmp_path / "run")
    train_part = datamodule.train
    assert train_part.item_features.vocabulary == ("genre=Action", "genre=Comedy", "genre=Drama")
    assert train_part.item_features.dense_names == ("year",)
    assert train_part.user_features.vocabulary == tuple(f"age={a}" for a in range(20, 25))
    m3 = int(np.flatnonzero(train_part.item_ids == "m2")[0])
    assert train_part.item_features.row(m3)[0] == ["genre=Action", "genre=Comedy"]
    assert train_part.item_features.row(m3)[1] == [1992.0]
    assert model.feature_embedding["item"].weight.shape == (
        3,
        8,
    )  # weights loaded into a model sized from them
    if keep == "copy":
        path = tmp_path / "run" / "data" / "features.pt"
        stored = torch.load(path, weights_only=True)
        stored["item"]["indices"] = stored["item"]["indices"].flip(0)
        torch.save(stored, path)
        with pytest.raises(RunError, match=r"features\.pt was changed after the run"):
            load_run(tmp_path / "run")
    else:  # the source is re-read: a changed feature file changes the digest
        (tmp_path / "items.csv").write_text(
            (tmp_path / "items.csv").read_text().replace("m0,Drama", "m0,Comedy")
        )
        with pytest.raises(RunError, match="the data differs from what the run was trained on"):
            load_run(tmp_path / "run")


def test_batch_feature_rows_train_the_same_model_as_the_model_tables(tmp_path):
    """FeatureMF scores a batch from its own feature rows when it carries them: with the same
    seed, data.batch_features=true trains to the same metrics as the model's tables."""
    from mfzoo.training.run import train

    results = {}
    for flag in ("false", "true"):
        (tmp_path / flag).mkdir()
        results[flag] = train(
            _featured_run_cfg(tmp_path / flag, f"data.batch_features={flag}"),
            tmp_path / flag / "run",
        )
    assert results["true"]["val"]["ndcg@10"] == pytest.approx(
        results["false"]["val"]["ndcg@10"], abs=1e-5
    )
    assert results["true"]["test"]["ndcg@10"] == pytest.approx(
        results["false"]["test"]["ndcg@10"], abs=1e-5
    )


def test_feature_mf_refuses_data_without_its_tables(featured):
    bare = dataclasses.replace(featured, user_features=None, item_features=None)
    with pytest.raises(
        DataError, match=r"needs the training data's user feature table.*model\.user_features=false"
    ):
        FeatureMF(bare.n_users, bare.n_items, dim=4).prepare(bare)
    FeatureMF(bare.n_users, bare.n_items, dim=4, user_features=False, item_features=False).prepare(
        bare
    )  # id-only: fine
