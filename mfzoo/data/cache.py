"""A cache of encoded data sets: a source parsed once, loaded later as memory-mapped arrays.

The first load of a source (a ratings file, a MovieLens zip) writes what parsing made of it
(the interaction arrays, the raw-id tables, the name) under a folder whose name is a digest of
the reader, its options and this format's version; later loads with the same source and
options map those arrays instead of parsing (`np.load(mmap_mode="c")`: pages are read on first
touch and shared between processes, and a run may still write to its copy).

A source is known by its SHA-256, computed on the first load. A later load compares the file's
size, modification and status-change times and inode with those recorded; when they differ it
hashes the file again and uses the entry only if the content is the same (a touched but
unchanged file), else it parses the source and replaces the entry. (A write changes the
status-change time, which no program can set back, so an edit that restores the size and the
modification time is still seen.) Entries are written into a temporary folder and renamed into
place, so concurrent runs of a sweep see a whole entry or none; when two write the same entry,
the first rename wins and the other run uses it.

Where: `$MFZOO_CACHE_DIR/datasets`, else `$XDG_CACHE_HOME/mfzoo/datasets`, else
`~/.cache/mfzoo/datasets`. `cache=None` (the readers' default) caches sources of at least
`AUTO_BYTES` (small files parse in milliseconds); `cache=True` always, `cache=False` never.
Deleting the folder is always safe.

Entries are kept until removed: `entries()` lists them with their size and last use (a load
from an entry marks it used), `prune(max_bytes)` removes the least recently used ones until
the rest fit, `prune(0)` empties the cache. A removed entry is renamed away first, so a run
loading it at that moment sees it whole or not at all, and a run that has it mapped keeps
reading its pages until it closes them. From the command line:

    python -m mfzoo.data.cache list
    python -m mfzoo.data.cache prune --max-size 20G
    python -m mfzoo.data.cache clear
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mfzoo.data.interactions import Interactions

log = logging.getLogger(__name__)

FORMAT = 1  # bump when what an entry holds changes: old entries are then never matched
AUTO_BYTES = 16 << 20  # cache=None caches sources of at least this many bytes
_HASH_BLOCK = 8 << 20
_ARRAYS = ("users", "items", "values", "timestamps")


def cache_root() -> Path:
    """The folder of encoded data sets (not created here)."""
    if os.environ.get("MFZOO_CACHE_DIR"):
        return Path(os.environ["MFZOO_CACHE_DIR"]).expanduser() / "datasets"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mfzoo" / "datasets"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (read in blocks: a file of any size in bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def wanted(cache: bool | None, sources: list[Path]) -> bool:
    """Whether a load should use the cache: `cache`, or for None, sources of at least
    `AUTO_BYTES` in all."""
    if cache is not None:
        return bool(cache)
    return sum(p.stat().st_size for p in sources if p.is_file()) >= AUTO_BYTES


def cached(
    reader: str,
    sources: list[Path],
    options: dict,
    build: Callable[[], Interactions],
    cache: bool | None = None,
) -> Interactions:
    """The set `build()` makes of `sources` with `options`, from the cache when a whole entry
    for them exists and the sources are unchanged; else built, then written to the cache.

    `reader` names the reading function and `options` (JSON-serialisable) everything besides
    the sources' bytes that shapes the result (columns, separators, duplicate policies): two
    calls share an entry only when both are equal. With `cache` false (or None and small
    sources) this is `build()`. A cache that cannot be written (read-only, full disk) is
    logged and the built set returned."""
    sources = [Path(p).resolve() for p in sources]
    if not wanted(cache, sources):
        return build()
    key = json.dumps(
        {
            "reader": reader,
            "options": options,
            "sources": [str(p) for p in sources],
            "format": FORMAT,
        },
        sort_keys=True,
        default=str,
    )
    folder = cache_root() / f"{reader}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"
    hashed: dict[Path, str] = {}  # digests `_load` computed (a changed file is hashed once)
    hit = _load(folder, sources, hashed)
    if hit is not None:
        _mark_used(folder)
        return hit
    digests = [hashed.get(p) or file_digest(p) for p in sources]
    data = build()
    try:
        _write(folder, data, sources, digests, key)
    except OSError as err:
        log.warning("data cache: could not write %s (%s); the set is not cached", folder, err)
    return data


def _stat(path: Path) -> dict:
    """What a write to the file changes: its size, modification and status-change times (the
    latter cannot be set back by a program, as the modification time can) and its inode (a
    file replaced by another)."""
    st = path.stat()
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
    }


def _load(folder: Path, sources: list[Path], hashed: dict[Path, str]) -> Interactions | None:
    """The entry in `folder` when it exists, is whole, and its sources are unchanged; the
    digests it computes on the way are left in `hashed`."""
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    try:
        recorded = meta["sources"]
        if [r["path"] for r in recorded] != [str(p) for p in sources]:
            return None
        refreshed = False
        for record, path in zip(recorded, sources, strict=True):
            now = _stat(path)
            if now == record["stat"]:
                continue
            hashed[path] = file_digest(path)
            if hashed[path] != record["sha256"]:
                log.info("data cache: %s changed since it was cached; parsing it again", path)
                return None
            record["stat"], refreshed = now, True  # touched, same bytes: keep the entry
        arrays = {
            k: np.load(folder / f"{k}.npy", mmap_mode="c") for k in _ARRAYS if k in meta["arrays"]
        }
        ids = {
            k: _ids(np.load(folder / f"{k}.npy", allow_pickle=False), meta["id_kinds"][k])
            for k in ("user_ids", "item_ids")
        }
        _check_entry(arrays, ids, meta["n"])
    except (OSError, KeyError, ValueError, TypeError) as err:
        log.warning(
            "data cache: entry %s is unreadable (%s); parsing the source again", folder, err
        )
        return None
    if refreshed:
        try:
            _write_json(meta_path, meta)
        except OSError as err:  # a read-only cache: the entry is used, the new stat not recorded
            log.info("data cache: could not record the new stat in %s (%s)", meta_path, err)
    times = arrays.get("timestamps")
    return Interactions(
        users=torch.from_numpy(arrays["users"]),
        items=torch.from_numpy(arrays["items"]),
        values=torch.from_numpy(arrays["values"]),
        timestamps=None if times is None else torch.from_numpy(times),
        user_ids=ids["user_ids"],
        item_ids=ids["item_ids"],
        name=meta["name"],
    )


_DTYPES = {
    "users": ("int32", "int64"),
    "items": ("int32", "int64"),
    "values": ("float32",),
    "timestamps": ("int64",),
}


def _check_entry(arrays: dict, ids: dict, n: int) -> None:
    """`ValueError` unless the entry's arrays have the recorded length, the stored dtypes and
    one dimension, and the id tables are one-dimensional (a damaged or foreign entry is parsed
    again, never loaded). The codes' range is not scanned (that would read every page)."""
    for k, arr in arrays.items():
        if arr.ndim != 1 or len(arr) != n or arr.dtype.name not in _DTYPES[k]:
            raise ValueError(
                f"{k}.npy holds {arr.dtype}{list(arr.shape)}, not {n} of {' or '.join(_DTYPES[k])}"
            )
    if any(t.ndim != 1 or len(t) == 0 for t in ids.values()):
        raise ValueError("an id table is not a non-empty vector")


def _ids(stored: np.ndarray, kind: str) -> np.ndarray:
    """Raw ids as `read_table` makes them: numbers as stored, strings as an object array."""
    return stored.astype(object) if kind == "str" else stored


def _write(
    folder: Path, data: Interactions, sources: list[Path], digests: list[str], key: str
) -> None:
    """Write an entry through a temporary folder renamed into place (a reader sees all of it
    or nothing); an existing entry (stale, or written meanwhile by another run) is replaced."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        arrays = {
            "users": data.users,
            "items": data.items,
            "values": data.values,
            "timestamps": data.timestamps,
        }
        for k, tensor in arrays.items():
            if tensor is not None:
                np.save(tmp / f"{k}.npy", tensor.cpu().numpy())
        kinds = {}
        for k in ("user_ids", "item_ids"):
            raw = getattr(data, k)
            kinds[k] = "str" if raw.dtype == object else "number"
            np.save(
                tmp / f"{k}.npy",
                raw.astype(str) if raw.dtype == object else raw,
                allow_pickle=False,
            )
        meta = {
            "key": json.loads(key),
            "name": data.name,
            "n": len(data),
            "created": time.time(),
            "arrays": [k for k, t in arrays.items() if t is not None],
            "id_kinds": kinds,
            "sources": [
                {"path": str(p), "sha256": d, "stat": _stat(p)}
                for p, d in zip(sources, digests, strict=True)
            ],
        }
        _write_json(tmp / "meta.json", meta)
        try:
            os.rename(tmp, folder)
        # an entry is there: another run's (same bytes: keep it) or stale (replace it)
        except OSError:
            if _same_sources(folder, digests):
                return
            stale = folder.with_name(f".{folder.name}.stale-{uuid.uuid4().hex[:8]}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(folder, stale)
            os.rename(tmp, folder)
            shutil.rmtree(stale, ignore_errors=True)  # open maps of it stay valid until closed
        log.info("data cache: wrote %s (%d interactions)", folder, len(data))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _same_sources(folder: Path, digests: list[str]) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        return [r["sha256"] for r in meta["sources"]] == digests
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_json(path: Path, obj: dict) -> None:
    part = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    part.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(part, path)


# listing and pruning --------------------------------------------------------------------------
_USED = "used"  # an empty file whose modification time is the entry's last load


@dataclass(frozen=True)
class CacheEntry:
    """One cached data set: its folder, its size on disk, when it was last loaded or written
    (seconds since the epoch), its reader and its source files."""

    path: Path
    size: int
    last_used: float
    reader: str
    sources: tuple[str, ...]


def _mark_used(folder: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only cache is still read
        (folder / _USED).touch()


def entries(root: Path | None = None) -> list[CacheEntry]:
    """The whole entries under `root` (default `cache_root()`), least recently used first;
    folders being written or removed (their names start with ".") are not entries."""
    root = cache_root() if root is None else root
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            meta = json.loads((folder / "meta.json").read_text())
            files = [f for f in folder.iterdir() if f.is_file()]
            size = sum(f.stat().st_size for f in files)
            used = max(f.stat().st_mtime for f in files if f.name in (_USED, "meta.json"))
            reader = str(meta["key"]["reader"])
            sources = tuple(str(r["path"]) for r in meta["sources"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # removed meanwhile, or not an entry of this format
        found.append(CacheEntry(folder, size, used, reader, sources))
    return sorted(found, key=lambda e: (e.last_used, e.path.name))


def prune(max_bytes: int, root: Path | None = None) -> list[CacheEntry]:
    """Remove the least recently used entries until the others take at most `max_bytes`
    (0: all of them), and what interrupted writes and removals left behind; returns the
    entries removed."""
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    root = cache_root() if root is None else root
    listed = entries(root)
    total = sum(e.size for e in listed)
    removed = []
    for entry in listed:
        if total <= max_bytes:
            break
        stale = entry.path.with_name(f".{entry.path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(entry.path, stale)  # from here on no load finds it
        except OSError:
            continue  # removed or replaced meanwhile
        shutil.rmtree(stale, ignore_errors=True)
        total -= entry.size
        removed.append(entry)
    for leftover in root.glob(".*") if root.is_dir() else []:
        # a write or removal a killed process left; a write in progress is younger than this
        if leftover.is_dir() and time.time() - leftover.stat().st_mtime > 24 * 3600:
            shutil.rmtree(leftover, ignore_errors=True)
    return removed


def parse_size(text: str) -> int:
    """Bytes from "2G", "500M", "1.5GiB", "800k" or a number of bytes (K/M/G/T as powers of
    1024)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = cleaned.rstrip("KMGT"), cleaned[len(cleaned.rstrip("KMGT")) :]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in units or not value >= 0 or value == float("inf"):
        raise ValueError(f"not a size: {text!r} (e.g. 20G, 500M, 1.5GiB or a number of bytes)")
    return int(value * units[unit])


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m mfzoo.data.cache list | prune --max-size SIZE | clear`."""
    parser = argparse.ArgumentParser(
        prog="python -m mfzoo.data.cache", description="List or prune mfzoo's data-set cache."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every entry: size, last use, reader, sources")
    pruning = commands.add_parser("prune", help="remove least recently used entries")
    pruning.add_argument("--max-size", required=True, help="what may stay, e.g. 20G or 500M")
    commands.add_parser("clear", help="remove every entry")
    args = parser.parse_args(argv)
    root = cache_root()
    if args.command == "list":
        listed = entries(root)
        for e in listed:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
            print(f"{e.size / 2**20:10.1f} MiB  {when}  {e.reader}  {', '.join(e.sources)}")
        print(f"{len(listed)} entries, {sum(e.size for e in listed) / 2**20:.1f} MiB in {root}")
        return
    try:
        limit = 0 if args.command == "clear" else parse_size(args.max_size)
    except ValueError as err:
        parser.error(str(err))
    gone = prune(limit, root)
    print(f"removed {len(gone)} entries ({sum(e.size for e in gone) / 2**20:.1f} MiB) from {root}")


if __name__ == "__main__":
    main()
