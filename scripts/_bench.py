"""What the benchmark scripts share: quiet logging, printing / writing the result tables, timed
solver sweeps."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

from mfzoo.cli import quiet_lightning


def quiet() -> None:
    """Warnings and Lightning's per-fit messages off: the tables are the output."""
    logging.basicConfig(level=logging.WARNING)
    quiet_lightning()
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def emit(lines: list[str], out: Path | None) -> None:
    """Print the tables and, with `out`, write them there too."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def read_results(path, what: str, keys: tuple[str, ...]) -> dict:
    """The JSON object in `path` that a script wrote (`what`, e.g. "a --results-out file of
    scripts/nested_cv.py"), with `keys`; anything else stops with one line naming the file."""
    import json

    path = Path(str(path))
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SystemExit(f"{path}: not JSON ({err}); expected {what}") from None
    missing = [k for k in keys if not isinstance(raw, dict) or k not in raw]
    if missing:
        raise SystemExit(f"{path}: not {what} (no {', '.join(repr(k) for k in missing)})")
    return raw


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """ "A:B,C:D" -> [(A, B), (C, D)]; anything else stops with one line."""
    pairs = []
    for item in (p for p in text.split(",") if p):
        parts = item.split(":")
        if len(parts) != 2 or not all(parts):
            raise SystemExit(f"--pairs: {item!r} is not A:B (two names joined by ':')")
        pairs.append((parts[0], parts[1]))
    return pairs


def mean_sd(values: list[float]) -> str:
    """ "mean ± sd" (sample sd) to 4 decimals; one value has no sd: "mean (n = 1)"."""
    import statistics

    if len(values) == 1:
        return f"{values[0]:.4f} (n = 1)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def sweep_seconds(solver, data, factors: int, sweeps: int, seed: int) -> list[float]:
    """Seconds of each of `sweeps` calls of `solver.sweep` on `data`, from a fresh plain MF of
    `factors` (no biases, factors N(0, 0.01²), seeded)."""
    import torch

    from mfzoo.models.mf import MF

    torch.manual_seed(seed)
    model = MF(data.n_users, data.n_items, dim=factors, biases=False, init_std=0.01)
    seconds = []
    for _ in range(sweeps):
        start = time.perf_counter()
        solver.sweep(model, data)
        seconds.append(time.perf_counter() - start)
    return seconds


def interleaved_medians(runs: dict, repeats: int) -> dict[str, float]:
    """`repeats` rounds of every run in turn (each returns a list of per-iteration seconds),
    so that a slow stretch of a shared machine falls on all of them; the median per run."""
    import statistics

    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name] += run()
    return {name: statistics.median(v) for name, v in times.items()}


def kernel_note() -> str:
    """How this process got mfzoo's C kernels (`mfzoo.native`), for a table's footnote."""
    from mfzoo import native

    how = (
        "loaded from the cache"
        if native.compile_seconds == 0.0
        else f"compiled in {native.compile_seconds:.1f} s"
        if native.compile_seconds
        else "unavailable"
    )
    return f"The C kernels were {how} (once per machine, not in the medians)."
