"""Run directories: a unique name per run, and a lock so that no two runs write into one.

A run directory is named `ROOT/DATE/HH-MM-SS.micro_RAND_NAME`: the start time to the
microsecond, four random hex digits (from the OS, not from the run's seeded generators) and
the run name made of the command-line overrides, so two runs started in the same microsecond
still get two directories. `mfzoo-train` takes the name from Hydra (`hydra.run.dir` and
`hydra.sweep.dir` call the `mfzoo_run_dir` resolver, registered by `register_resolvers`).

`claim(run_dir)` then holds `run.lock` (created exclusively, holding the owner's host and pid)
for the run's lifetime. A second run that finds the lock held by a live process, or finds a
run directory already used by another run, stops with `RunError` instead of mixing its files
with the other's. The ranks of one multi-process run (which Lightning relaunches into the
same directory) share it: only rank 0 claims it and writes `config.yaml`, `metrics.json` and
checkpoints.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pickle
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

from omegaconf import OmegaConf

LOCK = "run.lock"
# the files that say a directory holds a run
RUN_FILES = ("config.yaml", "metrics.json", "checkpoints")


class RunError(ValueError):
    """A run directory that cannot be used or loaded, with a message saying why."""


def rank() -> int:
    """This process's global rank (0 for a single-process run), from the launcher's
    environment, as Lightning reads it before the trainer exists."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def new_name(root: str, name: str = "") -> str:
    """`root/DATE/HH-MM-SS.micro_RAND[_name]`, unique even for runs started together."""
    now = dt.datetime.now()
    stem = f"{now:%H-%M-%S}.{now:%f}_{os.urandom(2).hex()}"
    return f"{root}/{now:%Y-%m-%d}/{stem}_{name}" if name else f"{root}/{now:%Y-%m-%d}/{stem}"


def world_size() -> int:
    """The number of processes the launcher started (1 without a launcher), from its environment."""
    for name in ("WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def agreed(name: str) -> str:
    """Rank 0's `name` on every process of a multi-process launch, so that the ranks of one
    run share one directory. Under torchrun (single or multi-node) rank 0 publishes it in the
    launcher's key-value store, which the other ranks read; a launcher without such a store
    (srun, mpirun) must be given the directory (`hydra.run.dir=...`): `RunError` otherwise.
    Lightning's own launcher passes rank 0's directory to the processes it starts, so this is
    not asked there."""
    if world_size() == 1:
        return name
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        raise RunError(
            f"{world_size()} processes were started by a launcher other than torchrun; give them "
            "one run directory to share: hydra.run.dir=DIR (e.g. runs/$SLURM_JOB_ID)"
        )
    from datetime import timedelta

    from torch.distributed import TCPStore

    store = TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=timedelta(minutes=10),
    )
    key = f"mfzoo/run_dir/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if rank() == 0:
        store.set(key, name)
    return store.get(key).decode()


def _run_dir_resolver(
    root: str, overrides: Sequence[str] | None = None, resume: str | None = None
) -> str:
    """`${mfzoo_run_dir:ROOT,${hydra:overrides.task},${resume}}`: the directory of a resumed
    run as given, else a new unique one named after the overrides (rank 0's, for every
    process of a multi-process run: `agreed`)."""
    if resume:
        return str(resume)
    from mfzoo.training.tensorboard import run_name

    task = [o for o in (overrides or []) if not str(o).startswith("resume=")]
    return agreed(new_name(root, run_name(task) if task else ""))


def _run_name_resolver(overrides: Sequence[str] | None = None) -> str:
    from mfzoo.training.tensorboard import run_name

    return run_name(list(overrides or []))


def _hydra_subdir_resolver(run_dir: str | None = None, resume: str | None = None) -> str | None:
    """`${mfzoo_hydra_subdir:${hydra.run.dir},${resume}}`: where Hydra writes its own record
    of the job (`.hydra/`): nowhere for a resumed run or a directory that already holds a run,
    so the original job's record is never replaced by a later command's."""
    if resume or (run_dir and (Path(run_dir) / "config.yaml").exists()):
        return None
    return ".hydra"


def register_resolvers() -> None:
    """Register `mfzoo_run_dir`, `mfzoo_run_name` and `mfzoo_hydra_subdir` (used by
    `configs/train.yaml`'s `hydra` settings); the directory is cached, so a run resolves it once."""
    if not OmegaConf.has_resolver("mfzoo_run_dir"):
        OmegaConf.register_new_resolver("mfzoo_run_dir", _run_dir_resolver, use_cache=True)
    if not OmegaConf.has_resolver("mfzoo_run_name"):
        OmegaConf.register_new_resolver("mfzoo_run_name", _run_name_resolver)
    if not OmegaConf.has_resolver("mfzoo_hydra_subdir"):
        OmegaConf.register_new_resolver("mfzoo_hydra_subdir", _hydra_subdir_resolver)


def _alive(owner: dict) -> bool:
    """Whether the process that wrote a lock still runs (a lock of another host counts as live:
    its process cannot be checked from here)."""
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(owner.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def _owner(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def claim(run_dir: str | Path, resume: bool = False) -> Iterator[Path]:
    """Hold `run_dir` for one run (see the module docstring).

    A new run needs a directory that holds no run yet (Hydra's own `.hydra/` and log file may
    be there); `resume=True` continues the run in `run_dir` and takes over a lock whose process
    has died (a killed run). Ranks other than 0 share rank 0's claim and take no lock.
    """
    run_dir = Path(run_dir)
    if rank() != 0:
        yield run_dir
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK
    owner = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": dt.datetime.now().isoformat(),
    }
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            held = _owner(lock)
            if _alive(held) or not resume:
                raise RunError(
                    f"{run_dir} is in use by another run (host {held.get('host')}, pid "
                    f"{held.get('pid')}, since {held.get('started')}); give each run its own "
                    "directory"
                    + (
                        ""
                        if resume or _alive(held)
                        else f", or continue that killed run with resume={run_dir}"
                    )
                ) from None
            lock.unlink(missing_ok=True)  # a killed run's lock: take it over
    else:
        raise RunError(f"{run_dir}: could not take the run lock")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(owner, f)
        if not resume:
            used = [name for name in RUN_FILES if (run_dir / name).exists()]
            if used:
                raise RunError(
                    f"{run_dir} already holds a run ({', '.join(used)}); "
                    f"a new run needs a new directory (or resume={run_dir} to continue it)"
                )
        yield run_dir
    finally:
        lock.unlink(missing_ok=True)


def relative(path: str | Path | None, run_dir: str | Path) -> str | None:
    """`path` relative to `run_dir` when inside it (what metrics.json records), else as is."""
    if not path:
        return None
    path, run_dir = Path(path).resolve(), Path(run_dir).resolve()
    try:
        return path.relative_to(run_dir).as_posix()
    except ValueError:
        return str(path)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint read with `torch.load(weights_only=True)` (tensors and plain types only:
    nothing in it runs); `RunError` naming the file when it is missing, truncated or not a
    checkpoint."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            # torch's notes on pickle protocols: the error says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RunError(
            f"{path}: not a readable checkpoint (it holds objects other than tensors and plain "
            "types, which are refused: loading them could run code)"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, AttributeError) as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise RunError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {first})"
        ) from None


def sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file (what metrics.json records for the run's checkpoints)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resume_command(run_dir: str | Path) -> str:
    """The shell command that continues the run in `run_dir` (quoted for the shell)."""
    import shlex

    return f"mfzoo-train resume={shlex.quote(str(run_dir))}"


def relocate(checkpoint: dict, checkpoints_dir: str | Path) -> bool:
    """Point the checkpoint callbacks' saved paths (best, k-th best, last) at `checkpoints_dir`
    when the run directory was moved or copied since they were written, so that resuming keeps
    the best epoch found so far; True when something was changed."""
    target = os.path.realpath(checkpoints_dir)
    moved = False
    for state in checkpoint.get("callbacks", {}).values():
        old = state.get("dirpath") if isinstance(state, dict) else None
        if not old or old == target:
            continue
        moved = True

        def swap(path, old=old):
            return (
                target + path[len(old) :]
                if isinstance(path, str) and path.startswith(old)
                else path
            )

        state["dirpath"] = target
        for name in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if name in state:
                state[name] = swap(state[name])
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {swap(k): v for k, v in state["best_k_models"].items()}
    return moved
