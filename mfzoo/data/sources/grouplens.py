"""MovieLens releases from GroupLens: download, cache, checksum, the RecBole fallback (100k),
parsers."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from mfzoo.data.cache import cached
from mfzoo.data.duplicates import PairPolicy
from mfzoo.data.errors import DataError
from mfzoo.data.features import Features
from mfzoo.data.interactions import DuplicatePolicy, Interactions
from mfzoo.data.sources.delimited import first_line
from mfzoo.data.sources.tables import arrow_numpy

log = logging.getLogger(__name__)

_GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/"
# release -> (zip name, ratings file, titles file); files are found by base name in the zip
_MOVIELENS: dict[str, tuple[str, str, str]] = {
    "100k": ("ml-100k.zip", "u.data", "u.item"),
    "1m": ("ml-1m.zip", "ratings.dat", "movies.dat"),
    "10m": ("ml-10m.zip", "ratings.dat", "movies.dat"),
    "20m": ("ml-20m.zip", "ratings.csv", "movies.csv"),
    "25m": ("ml-25m.zip", "ratings.csv", "movies.csv"),
    "latest-small": ("ml-latest-small.zip", "ratings.csv", "movies.csv"),
}
# sha256 of GroupLens zips, checked after download when present. None is recorded (GroupLens
# publishes md5 only), so the parsed row count is checked instead ("latest-small" changes
# between snapshots: only non-empty).
_ZIP_SHA256: dict[str, str] = {}
_EXPECTED_ROWS: dict[str, int] = {
    "100k": 100_000,
    "1m": 1_000_209,
    "10m": 10_000_054,
    "20m": 20_000_263,
    "25m": 25_000_095,
}
_DOWNLOAD_TIMEOUT_S = 10.0
# Offline fallback for 100k: the RecBole wheel on PyPI ships ml-100k as atomic files.
_RECBOLE_REQUIREMENT = "recbole==1.2.1"
_RECBOLE_INTER = "recbole/dataset_example/ml-100k/ml-100k.inter"
_RECBOLE_ITEM = "recbole/dataset_example/ml-100k/ml-100k.item"
_RECBOLE_USER = "recbole/dataset_example/ml-100k/ml-100k.user"
_RECBOLE_INTER_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
_RECBOLE_ITEM_SHA256 = "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"
_RECBOLE_USER_SHA256 = "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972"
# MovieLens-100K side information: the 19 genre flags of u.item in column order (u.genre), and
# the age groups of MovieLens-1M's users.dat (upper bound exclusive -> label) for u.user's ages
_ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_AGE_GROUPS = (
    (18, "<18"),
    (25, "18-24"),
    (35, "25-34"),
    (45, "35-44"),
    (50, "45-49"),
    (56, "50-55"),
)


def movielens(
    name: str = "100k",
    cache_dir: str | None = None,
    duplicates: DuplicatePolicy = "keep_last",
    pair_duplicates: PairPolicy | None = None,
    features: bool = False,
    cache: bool | None = None,
) -> Interactions:
    """Load a MovieLens release ("100k", "1m", "10m", "20m", "25m", "latest-small").

    The zip is taken from `cache_dir` (default: `$MFZOO_DATA`, else `~/.cache/mfzoo`) or
    downloaded there from files.grouplens.org. For "100k" only, when GroupLens cannot be
    reached, the copy inside the `recbole==1.2.1` wheel is fetched with `pip download`
    (not installed), checked by sha256 and cached as `ml-100k.inter`. Raw ids are int64,
    ratings float32, timestamps int64 seconds. Raises `DataError` when no source works.
    `pair_duplicates`: what to do with a (user, item) pair rated more than once (see
    `Interactions.from_arrays`; the releases hold one rating per pair).

    The ratings file is read by Arrow; `cache` keeps the parsed set in the data cache
    (`mfzoo.data.cache`: None, the default, for sources of 16 MiB or more, i.e. 10M and up;
    True always; False never), keyed by the source's SHA-256 and the duplicate policies.

    `features=True` (100k only) attaches side information (`Interactions.user_features`,
    `item_features`, see `movielens_features`).
    """
    if features and name != "100k":
        raise DataError(f"MovieLens features are read for 100k only, not {name!r}")
    source = _movielens_source(name, cache_dir)
    start = time.perf_counter()
    options = {"name": name, "duplicates": duplicates, "pair_duplicates": pair_duplicates}
    data = cached(
        "movielens",
        [source],
        options,
        lambda: _parse_movielens(source, name, duplicates, pair_duplicates),
        cache,
    )
    if features:
        (user_ids, users_table), (item_ids, items_table) = movielens_features(name, cache_dir)
        data = data.with_features(
            users_table.align(user_ids, data.user_ids, f"movielens-{name} users"),
            items_table.align(item_ids, data.item_ids, f"movielens-{name} items"),
        )
    log.info(
        "movielens-%s: %d ratings from %s in %.2fs",
        name,
        len(data),
        source,
        time.perf_counter() - start,
    )
    return data


def _parse_movielens(
    source: Path, name: str, duplicates: DuplicatePolicy, pair_duplicates: PairPolicy | None
) -> Interactions:
    users, items, ratings, times = _read_ratings(source, name)  # each [N]
    expected = _EXPECTED_ROWS.get(name)
    if len(users) == 0 or (expected is not None and len(users) != expected):
        raise DataError(
            f"{source}: parsed {len(users)} MovieLens-{name} ratings, expected "
            f"{expected or 'some'}; the file looks damaged: delete it and load again"
        )
    return Interactions.from_arrays(
        users,
        items,
        ratings,
        times,
        name=f"movielens-{name}",
        duplicates=duplicates,
        pair_duplicates=pair_duplicates,
    )


def movielens_features(
    name: str = "100k", cache_dir: str | None = None
) -> tuple[tuple[np.ndarray, Features], tuple[np.ndarray, Features]]:
    """The side information of MovieLens-100K, ((raw user ids, user table), (raw item ids,
    item table)), rows in file order (`Features.align` puts them in a model's id order).

    Users: "age=<18|18-24|25-34|35-44|45-49|50-55|56+" (the age groups of MovieLens-1M),
    "gender=F|M", "occupation=..." (one-hot each). Items: "genre=..." multi-hot over the 19
    genres (an item may have several). Read from `u.user` and the genre flags of `u.item` in
    the GroupLens zip, or from `ml-100k.user` and the `class:token_seq` column of
    `ml-100k.item` of the RecBole copy (checked by sha256, taken from the wheel when not yet
    cached); both give the same tables. Malformed rows raise `DataError` naming the file
    and line."""
    if name != "100k":
        raise DataError(f"MovieLens features are read for 100k only, not {name!r}")
    source = _movielens_source(name, cache_dir)
    where: Path | str  # the file the user rows come from, as errors name it
    if source.suffix == ".inter":
        root = source.parent
        users = _recbole_rows(
            _recbole_extra(root, _RECBOLE_USER),
            ("user_id:token", "age:token", "gender:token", "occupation:token"),
        )
        items = _recbole_rows(
            _recbole_extra(root, _RECBOLE_ITEM), ("item_id:token", "class:token_seq")
        )
        item_ids = [row[0] for _, row in items]
        genres = [row[1].split() for _, row in items]
        for (line, _), cell in zip(items, genres, strict=True):
            unknown = sorted(set(cell) - set(_ML100K_GENRES))
            if unknown:
                raise DataError(
                    f"{root / 'ml-100k.item'}: column 'class:token_seq' line {line} names unknown "
                    f"genre(s) {unknown}"
                )
        user_rows, where = [row for _, row in users], root / "ml-100k.user"
        user_lines = [line for line, _ in users]
    else:
        with zipfile.ZipFile(source) as zf:
            text = {}
            for base in ("u.user", "u.item"):
                member = _zip_member(zf, base)
                if member is None:
                    raise DataError(
                        f"{source}: no {base} inside, which MovieLens-100K features need"
                    )
                text[base] = (f"{source}!{member}", zf.read(member).decode("latin-1"))
        where, lines = text["u.user"][0], text["u.user"][1].splitlines()
        user_lines = [k + 1 for k, line in enumerate(lines) if line.strip()]
        user_rows = [lines[k - 1].split("|") for k in user_lines]
        item_ids, genres = [], []
        item_where, lines = text["u.item"][0], text["u.item"][1].splitlines()
        for k, item_line in enumerate(lines, start=1):
            if not item_line.strip():
                continue
            fields = item_line.split("|")
            flags = fields[5:]
            if len(fields) != 5 + len(_ML100K_GENRES) or any(
                f.strip() not in ("0", "1") for f in flags
            ):
                raise DataError(
                    f"{item_where}: line {k} does not end in {len(_ML100K_GENRES)} genre flags "
                    f"(0/1) after 5 fields ({len(fields)} fields)"
                )
            item_ids.append(fields[0])
            genres.append(
                [g for g, f in zip(_ML100K_GENRES, flags, strict=True) if f.strip() == "1"]
            )
    ages, genders, occupations = [], [], []
    for line, row in zip(user_lines, user_rows, strict=True):
        if len(row) < 4:
            raise DataError(
                f"{where}: line {line} has {len(row)} field(s), 4 needed (id, age, gender, "
                "occupation)"
            )
        try:
            age = int(row[1])
        except ValueError:
            raise DataError(
                f"{where}: column 'age' line {line} holds {row[1]!r}, not a whole number"
            ) from None
        ages.append([_age_group(age)])
        genders.append([row[2].strip()])
        occupations.append([row[3].strip()])
    users_table = Features.from_columns(
        len(user_rows), {"age": ages, "gender": genders, "occupation": occupations}
    )
    items_table = Features.from_columns(len(item_ids), {"genre": genres})
    return (
        (_int_ids([r[0] for r in user_rows], where), users_table),
        (_int_ids(item_ids, where), items_table),
    )


def _age_group(age: int) -> str:
    """The MovieLens-1M age group of an age in years."""
    return next((label for bound, label in _AGE_GROUPS if age < bound), "56+")


def _int_ids(ids: list[str], where: object) -> np.ndarray:
    try:
        return np.array([int(x) for x in ids], dtype=np.int64)
    except ValueError as err:
        raise DataError(f"{where}: an id is not a whole number ({err})") from None


def _recbole_rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """(line, [cells of `columns`]) for every data line of a RecBole atomic file (tab-separated,
    a typed header); `DataError` naming the file for a missing column or a short line."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    head = lines[0].split("\t") if lines else []
    missing = [c for c in columns if c not in head]
    if missing:
        raise DataError(f"{path}: no column(s) {missing} in its header {head}")
    index = [head.index(c) for c in columns]
    rows = []
    for k, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) <= max(index):
            raise DataError(f"{path}: line {k} has {len(cells)} field(s), {max(index) + 1} needed")
        rows.append((k, [cells[i] for i in index]))
    return rows


def movielens_titles(name: str = "100k", cache_dir: str | None = None) -> dict[int, str]:
    """Raw item id -> title for a MovieLens release (fetched like `movielens`); {} when the
    source holds no titles."""
    source = _movielens_source(name, cache_dir)
    if source.suffix == ".inter":  # RecBole copy: tab-separated, title and year in separate columns
        item_file = source.with_suffix(".item")
        if not item_file.is_file():
            return {}
        _check_cached(item_file, _RECBOLE_ITEM_SHA256)
        lines = item_file.read_text(encoding="utf-8", errors="replace").splitlines()
        head = lines[0].split("\t")
        t, y = head.index("movie_title:token_seq"), head.index("release_year:token")
        rows = [line.split("\t") for line in lines[1:] if line.strip()]
        return {int(r[0]): f"{r[t]} ({r[y]})" if len(r) > y and r[y] else r[t] for r in rows}
    with zipfile.ZipFile(source) as zf:
        member = _zip_member(zf, _MOVIELENS[name][2])
        if member is None:
            return {}
        raw = zf.read(member)
    if member.endswith("u.item"):
        rows = [line.split("|") for line in raw.decode("latin-1").splitlines()]
    elif member.endswith(".dat"):  # 1m is latin-1, 10m utf-8
        rows = [line.split("::") for line in _decode(raw).splitlines()]
    else:
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8", errors="replace"))))[1:]
    return {int(r[0]): r[1] for r in rows if len(r) > 1 and r[0].strip()}


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """The cache folder (created): `cache_dir`, else `$MFZOO_DATA`, else `~/.cache/mfzoo`."""
    root = Path(
        cache_dir or os.environ.get("MFZOO_DATA") or Path.home() / ".cache" / "mfzoo"
    ).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _movielens_source(name: str, cache_dir: str | None) -> Path:
    """A local file holding release `name`: cached zip, cached RecBole extract (100k), a
    fresh GroupLens download, or (100k) the RecBole wheel, in that order."""
    if name not in _MOVIELENS:
        raise DataError(f"unknown MovieLens release {name!r}; choose one of {sorted(_MOVIELENS)}")
    root = _cache_root(cache_dir)
    zip_path, inter_path = root / _MOVIELENS[name][0], root / "ml-100k.inter"
    if zip_path.is_file():
        log.info("movielens-%s: using cached %s", name, zip_path)
        _check_cached(zip_path, _ZIP_SHA256.get(zip_path.name))
        return zip_path
    if name == "100k" and inter_path.is_file():
        log.info("movielens-100k: using cached RecBole copy %s", inter_path)
        _check_cached(inter_path, _RECBOLE_INTER_SHA256)
        return inter_path
    url = _GROUPLENS_URL + zip_path.name
    try:
        log.info("movielens-%s: downloading %s", name, url)
        _download(url, zip_path)
        if zip_path.name in _ZIP_SHA256:
            try:
                _check_sha256(zip_path.read_bytes(), _ZIP_SHA256[zip_path.name], url)
            except DataError:
                zip_path.unlink()
                raise
        # trust on first use: later loads check the cached zip against this digest
        _sidecar(zip_path).write_text(hashlib.sha256(zip_path.read_bytes()).hexdigest() + "\n")
        return zip_path
    except OSError as err:  # URLError, timeouts and refused connections are all OSError
        download_error = err
        log.warning("movielens-%s: download failed: %s", name, err)
    if name != "100k":
        raise DataError(
            f"could not download {url} ({download_error}); place the zip at {zip_path} by hand"
        )
    try:
        path = _recbole_fallback(root)
    except (OSError, subprocess.SubprocessError, zipfile.BadZipFile, KeyError, DataError) as err:
        raise DataError(
            f"MovieLens 100k is unavailable. Tried (1) {url}: {download_error}; (2) the ml-100k "
            f"copy in the {_RECBOLE_REQUIREMENT} wheel via pip download: {err}. Place ml-100k.zip "
            f"at {zip_path}, or a {_RECBOLE_REQUIREMENT} wheel in {root / 'wheels'}, or its "
            f"{_RECBOLE_INTER} at {inter_path}"
        ) from err
    log.info("movielens-100k: using the RecBole copy, cached at %s", path)
    return path


def _download(url: str, dest: Path, timeout: float | None = None) -> None:
    """Fetch `url` into `dest`, through a `.part` file so a broken transfer leaves nothing."""
    part = dest.with_name(dest.name + ".part")
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout or _DOWNLOAD_TIMEOUT_S) as response,
            open(part, "wb") as out,
        ):
            shutil.copyfileobj(response, out, 1 << 20)
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _check_cached(path: Path, expected: str | None) -> None:
    """Check a cached file against a recorded sha256 (or, failing that, the digest written
    beside it when it was downloaded); raise `DataError` telling how to recover."""
    sidecar = _sidecar(path)
    if expected is None and sidecar.is_file():
        expected = sidecar.read_text().strip()
    if expected is not None:
        _check_sha256(path.read_bytes(), expected, f"cached {path} (delete it to fetch it again)")


def _check_sha256(data: bytes, expected: str, what: str) -> None:
    """Raise `DataError` when `data` does not hash to `expected`."""
    if (digest := hashlib.sha256(data).hexdigest()) != expected:
        raise DataError(f"{what}: sha256 {digest} does not match the recorded {expected}")


def _pip_download(requirement: str, dest: Path) -> Path:
    """Run `pip download --no-deps` for one pure-Python wheel into `dest`; return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        requirement,
        "-d",
        str(dest),
    ]
    log.info("running %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise OSError(f"pip download {requirement} failed: {done.stderr.strip()[-800:]}")
    if (wheel := _find_wheel(dest, requirement)) is None:
        raise OSError(f"pip download left no {requirement} wheel in {dest}")
    return wheel


def _find_wheel(folder: Path, requirement: str) -> Path | None:
    return next(iter(sorted(folder.glob("{}-{}-*.whl".format(*requirement.split("=="))))), None)


def _recbole_fallback(root: Path) -> Path:
    """Extract ml-100k from the RecBole wheel (cached in `root/wheels` or pip-downloaded
    there), verify it, and cache `ml-100k.inter` / `ml-100k.item` / `ml-100k.user` in `root`."""
    wheels = root / "wheels"
    wheel = _find_wheel(wheels, _RECBOLE_REQUIREMENT) or _pip_download(_RECBOLE_REQUIREMENT, wheels)
    with zipfile.ZipFile(wheel) as zf:
        inter = zf.read(_RECBOLE_INTER)
        extras = {m: zf.read(m) for m in (_RECBOLE_ITEM, _RECBOLE_USER) if m in zf.namelist()}
    _check_sha256(inter, _RECBOLE_INTER_SHA256, f"{wheel}!{_RECBOLE_INTER}")
    for member, data in extras.items():
        _check_sha256(data, _recorded_sha256(member), f"{wheel}!{member}")
        _write_whole(root / member.rsplit("/", 1)[-1], data)
    # the .inter file appears whole or not at all
    return _write_whole(root / "ml-100k.inter", inter)


def _recorded_sha256(member: str) -> str:
    """The recorded sha256 of a RecBole ml-100k member."""
    return {
        _RECBOLE_INTER: _RECBOLE_INTER_SHA256,
        _RECBOLE_ITEM: _RECBOLE_ITEM_SHA256,
        _RECBOLE_USER: _RECBOLE_USER_SHA256,
    }[member]


def _write_whole(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through a `.part` file, so that `path` appears whole or not at all."""
    (part := path.with_name(path.name + ".part")).write_bytes(data)
    return part.replace(path)


def _recbole_extra(root: Path, member: str) -> Path:
    """A side file of the RecBole ml-100k copy (`ml-100k.item`, `ml-100k.user`) in `root`:
    the cached one, checked against its recorded sha256, else extracted from the wheel (cached in
    `root/wheels` or pip-downloaded there) and checked. `DataError` when neither works."""
    path, expected = root / member.rsplit("/", 1)[-1], _recorded_sha256(member)
    if path.is_file():
        _check_cached(path, expected)
        return path
    try:
        wheels = root / "wheels"
        wheel = _find_wheel(wheels, _RECBOLE_REQUIREMENT) or _pip_download(
            _RECBOLE_REQUIREMENT, wheels
        )
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(member)
    except (OSError, subprocess.SubprocessError, zipfile.BadZipFile, KeyError) as err:
        raise DataError(
            f"{path} is missing and could not be taken from the {_RECBOLE_REQUIREMENT} wheel "
            f"({err}); place its {member} at {path}"
        ) from None
    _check_sha256(data, expected, f"{wheel}!{member}")
    return _write_whole(path, data)


def _zip_member(zf: zipfile.ZipFile, base: str) -> str | None:
    """The first member of `zf` whose file name is `base` (any folder), or None."""
    return next(
        (n for n in zf.namelist() if n.rsplit("/", 1)[-1] == base and "__MACOSX" not in n), None
    )


def _read_ratings(source: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ratings of a MovieLens source: users, items (int64), ratings, timestamps (int64)."""
    if source.suffix == ".inter":
        return _parse_ratings(source.read_bytes(), "\t", header=True, what=str(source))
    try:
        with zipfile.ZipFile(source) as zf:
            member = _zip_member(zf, _MOVIELENS[name][1])
            if member is None:
                raise DataError(
                    f"{source}: no {_MOVIELENS[name][1]} inside; delete the file and load again"
                )
            raw = zf.read(member)
    except zipfile.BadZipFile as err:
        raise DataError(
            f"{source}: not a readable zip ({err}); delete the file and load again"
        ) from None
    sep = "," if member.endswith(".csv") else ":" if member.endswith(".dat") else "\t"
    return _parse_ratings(raw, sep, header=member.endswith(".csv"), what=f"{source}!{member}")


def _parse_ratings(
    raw: bytes, sep: str, header: bool, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Four numeric columns (user, item, rating, timestamp) of a ratings file, read by Arrow's
    CSV reader. `sep=":"` reads the `::`-separated .dat files: every second field is the
    empty one between the two colons."""
    step = 2 if sep == ":" else 1
    names = [f"f{k}" for k in range(3 * step + 1)]
    wanted = names[::step]
    types = dict(zip(wanted, (pa.int64(), pa.int64(), pa.float64(), pa.int64()), strict=True))
    try:
        table = pcsv.read_csv(
            pa.BufferReader(raw),
            pcsv.ReadOptions(column_names=names, skip_rows=1 if header else 0),
            pcsv.ParseOptions(delimiter=sep),
            pcsv.ConvertOptions(include_columns=wanted, column_types=types),
        )
    except pa.ArrowException as err:
        raise DataError(f"{what}: {first_line(err)}") from None
    if any(table.column(c).null_count for c in wanted):
        raise DataError(f"{what}: an empty field where a number is expected")
    users, items, ratings, times = (arrow_numpy(table.column(c)) for c in wanted)
    return users, items, ratings, times
