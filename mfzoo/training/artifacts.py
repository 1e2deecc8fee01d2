"""What a run directory keeps of its data, so that it serves and evaluates without the source.

    data/meta.json    sha256 digest of the split parts and id maps, their sizes, how they were
                      kept (`keep_data`), the data config they came from, and the sha256 of
                      each other file in data/ (checked whenever one is read)
    data/parts.pt     the split parts as plain tensors (users and items int32 where they fit,
                      values float32, timestamps int64): `torch.load(weights_only=True)` reads it
    data/ids.json     raw user and item ids in model-id order (`user_ids[u]`, `item_ids[i]`)
    data/features.pt  the user and item feature tables (`mfzoo.data.features.Features`: CSR
                      tensors, vocabulary, numeric columns), where the data has them
    data/titles.json  item titles by raw id, where the source has them

With `keep_data: digest` only meta.json (and titles) are written: the run then re-reads its
source when loaded, and refuses when the digest of what it reads differs from the recorded
one, instead of silently serving another user's factors.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mfzoo.data.features import Features
from mfzoo.data.interactions import Interactions
from mfzoo.data.splits import Split
from mfzoo.training.rundir import RunError, sha256

KeepData = Literal["copy", "digest"]
DATA = "data"


def _canonical_ids(ids: np.ndarray) -> bytes:
    """Raw ids as bytes independent of their storage width (int32 or int64 alike)."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "biu":
        return b"i" + ids.astype(np.int64).tobytes()
    if ids.dtype.kind == "f":
        return b"f" + ids.astype(np.float64).tobytes()
    return b"s" + "\x00".join(str(x) for x in ids).encode("utf-8")


def digest(split: Split) -> str:
    """sha256 of the split: every part's (user, item, value, timestamp) rows in order and the
    raw id maps. Equal digests mean the same model ids denote the same users and items."""
    h = hashlib.sha256()
    h.update(_canonical_ids(split.train.user_ids))
    h.update(_canonical_ids(split.train.item_ids))
    for name in ("train", "val", "test"):
        part = getattr(split, name)
        h.update(name.encode())
        if part is None:
            h.update(b"none")
            continue
        h.update(part.users.cpu().to(torch.int64).numpy().tobytes())
        h.update(part.items.cpu().to(torch.int64).numpy().tobytes())
        h.update(part.values.cpu().to(torch.float32).numpy().tobytes())
        h.update(
            b"none"
            if part.timestamps is None
            else part.timestamps.cpu().to(torch.int64).numpy().tobytes()
        )
    # data without features: the digest it always had
    for side, table in _tables(split.train).items():
        h.update(side.encode())
        h.update("\x00".join((*table.vocabulary, "|", *table.dense_names)).encode("utf-8"))
        for tensor in (table.offsets, table.indices, table.weights, table.dense):
            h.update(b"none" if tensor is None else tensor.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _tables(part: Interactions) -> dict[str, Features]:
    """The feature tables a part carries: {"user": ..., "item": ...}, those it has."""
    return {
        side: table
        for side, table in (("user", part.user_features), ("item", part.item_features))
        if table is not None
    }


def _stored_table(table: Features) -> dict[str, Any]:
    return {
        "offsets": table.offsets.cpu(),
        "indices": table.indices.cpu(),
        "weights": table.weights.cpu().float(),
        "dense": None if table.dense is None else table.dense.cpu(),
        "vocabulary": list(table.vocabulary),
        "dense_names": list(table.dense_names),
    }


def _read_table(stored: dict[str, Any]) -> Features:
    return Features(
        stored["offsets"],
        stored["indices"],
        stored["weights"],
        tuple(stored["vocabulary"]),
        stored["dense"],
        tuple(stored["dense_names"]),
    )


def _compact(part: Interactions) -> dict[str, torch.Tensor]:
    fits = max(part.n_users, part.n_items) < 2**31
    ids = torch.int32 if fits else torch.int64
    out = {
        "users": part.users.cpu().to(ids),
        "items": part.items.cpu().to(ids),
        "values": part.values.cpu().float(),
    }
    if part.timestamps is not None:
        out["timestamps"] = part.timestamps.cpu().to(torch.int64)
    return out


def _ids_json(ids: np.ndarray) -> dict[str, Any]:
    ids = np.asarray(ids)
    return {"dtype": ids.dtype.str if ids.dtype.kind != "O" else "object", "values": ids.tolist()}


def _ids_array(stored: dict[str, Any]) -> np.ndarray:
    dtype = stored["dtype"]
    return np.array(stored["values"], dtype=object if dtype == "object" else np.dtype(dtype))


def save(
    run_dir: str | Path,
    split: Split,
    keep: KeepData = "copy",
    source: dict | None = None,
    titles: dict | None = None,
) -> str:
    """Write the run's data files (see the module docstring); returns the digest."""
    if keep not in ("copy", "digest"):
        raise ValueError(f"keep_data must be 'copy' or 'digest', got {keep!r}")
    out = Path(run_dir) / DATA
    out.mkdir(parents=True, exist_ok=True)
    value = digest(split)
    parts = split.parts()
    meta = {
        "digest": value,
        "keep_data": keep,
        "names": {name: part.name for name, part in parts.items()},
        "rows": {name: len(part) for name, part in parts.items()},
        "n_users": split.train.n_users,
        "n_items": split.train.n_items,
        "source": source,
    }
    if keep == "copy":
        torch.save({name: _compact(part) for name, part in parts.items()}, out / "parts.pt")
        ids = {"users": _ids_json(split.train.user_ids), "items": _ids_json(split.train.item_ids)}
        (out / "ids.json").write_text(json.dumps(ids))
        tables = _tables(split.train)
        if tables:
            torch.save(
                {side: _stored_table(table) for side, table in tables.items()}, out / "features.pt"
            )
    if titles:
        (out / "titles.json").write_text(
            json.dumps({str(k): v for k, v in titles.items()}, ensure_ascii=False)
        )
    meta["files"] = {p.name: sha256(p) for p in sorted(out.iterdir()) if p.name != "meta.json"}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return value


def meta(run_dir: str | Path) -> dict:
    """The run's data/meta.json; `RunError` when it has none (a run made before runs kept
    their data)."""
    path = Path(run_dir) / DATA / "meta.json"
    if not path.is_file():
        raise RunError(
            f"{run_dir}: no {DATA}/meta.json (the run's data record); retrain it with this version"
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(record, dict) or "digest" not in record:
        raise RunError(f"{path}: not a data record (no digest)")
    return record


def _verified(run_dir: str | Path, name: str, record: dict) -> Path:
    """`data/name`, refused when its sha256 differs from the one meta.json recorded for it."""
    path = Path(run_dir) / DATA / name
    expected = (record.get("files") or {}).get(name)
    if expected is not None and path.is_file() and sha256(path) != expected:
        raise RunError(
            f"{path} was changed after the run wrote it (its sha256 differs from the one in "
            f"{DATA}/meta.json): restore it or retrain"
        )
    return path


def load(run_dir: str | Path) -> Split | None:
    """The split the run trained and was evaluated on, from its own files; None when the run
    kept only the digest. The digest of what is read is checked against the recorded one."""
    record = meta(run_dir)
    if record["keep_data"] != "copy":
        return None
    try:
        stored = torch.load(
            _verified(run_dir, "parts.pt", record), map_location="cpu", weights_only=True
        )
        ids = json.loads(_verified(run_dir, "ids.json", record).read_text())
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise RunError(
            f"{run_dir}: cannot read the run's data ({DATA}/parts.pt, {DATA}/ids.json): {err}"
        ) from None
    user_ids, item_ids = _ids_array(ids["users"]), _ids_array(ids["items"])
    parts = {}
    for name, tensors in stored.items():
        parts[name] = Interactions(
            users=tensors["users"].long(),
            items=tensors["items"].long(),
            values=tensors["values"],
            timestamps=tensors.get("timestamps"),
            user_ids=user_ids,
            item_ids=item_ids,
            name=record["names"].get(name, name),
        )
    if "features.pt" in (record.get("files") or {}):
        try:
            stored = torch.load(
                _verified(run_dir, "features.pt", record), map_location="cpu", weights_only=True
            )
            tables = {f"{side}_features": _read_table(table) for side, table in stored.items()}
            parts = {name: part.with_features(**tables) for name, part in parts.items()}
        except (
            OSError,
            RuntimeError,
            ValueError,
            EOFError,
            KeyError,
            TypeError,
            pickle.UnpicklingError,
        ) as err:
            raise RunError(
                f"{run_dir}: cannot read the run's feature tables ({DATA}/features.pt): {err}"
            ) from None
    split = Split(train=parts["train"], val=parts.get("val"), test=parts["test"])
    check(run_dir, split, record)
    return split


def check(run_dir: str | Path, split: Split, record: dict | None = None) -> None:
    """`RunError` unless `split` has the digest recorded for the run: the data changed since
    training, and the model's ids would denote other users and items."""
    record = meta(run_dir) if record is None else record
    found = digest(split)
    if found != record["digest"]:
        raise RunError(
            f"{run_dir}: the data differs from what the run was trained on (sha256 {found[:12]}… "
            f"instead of {record['digest'][:12]}…, source {record.get('source')}); refusing to "
            "serve another data set's ids with this model: restore the original data or retrain"
        )


def titles(run_dir: str | Path) -> dict[str, str]:
    """Item titles by raw id (as a string), as the run recorded them; {} when none."""
    path = Path(run_dir) / DATA / "titles.json"
    if not path.is_file():
        return {}
    record = meta(run_dir) if (Path(run_dir) / DATA / "meta.json").is_file() else {}
    verified = _verified(run_dir, "titles.json", record)
    try:
        return json.loads(verified.read_text())
    except (OSError, ValueError) as err:
        raise RunError(f"{path}: not readable JSON ({err})") from None
