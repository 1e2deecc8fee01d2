"""Reading ratings files: mfzoo's Arrow reader and data cache against pandas with pyarrow.

For each size (default 1M, 10M and 25M rows) a synthetic ratings file in MovieLens-25M's layout
(`userId,movieId,rating,timestamp`; users and items power-law, movie ids spread over a span
3.5 times their count as in the real file, ratings 0.5-5.0 in halves, no repeated pair) is
written as CSV and as Parquet, and every measurement runs in a fresh process (so that peak
memory is the load's own), interleaved over `--repeats` rounds; times are measured inside the
process with the imports done, medians reported:

- `read_table(..., cache=False)` on the CSV and on the Parquet file (file -> `Interactions`:
  typed columns, ids encoded, values and timestamps checked, repeated pairs looked for);
- `pandas.read_csv(engine="pyarrow")` / `pandas.read_parquet` on the same files (a DataFrame:
  no encoding, no checks), the reference of the targets;
- the CSV's first load with the cache on (parse + digest + write) and a later, cached load
  (memory-mapped arrays);
- bytes per interaction of the loaded set: the (user, item, value) arrays, and those plus both
  CSR views (by user, by item); timestamps apart.

`--scale N` instead: N interactions written as Parquet (row groups of 10M), then one process
loads the file with `read_table` and runs one iALS-CG sweep (k = 64) on it: seconds and peak RSS.

    python scripts/bench_data.py --repeats 3 --out experiments/data/read.md
    python scripts/bench_data.py --scale 100000000 --out experiments/data/scale.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COLUMNS = ("userId", "movieId", "rating", "timestamp")
MODES = (
    "mfzoo_csv",
    "pandas_csv",
    "mfzoo_parquet",
    "pandas_parquet",
    "mfzoo_first_cached",
    "mfzoo_cached",
)


def ratings(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n distinct (user, movie) ratings in MovieLens-25M's layout, power-law on both sides."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(n // 150, 100), max(min(n // 400, 60_000), 100)
    draw = int(n * 1.6) + 1000
    while True:
        users = np.minimum((rng.pareto(1.2, draw) * n_users / 20).astype(np.int64), n_users - 1)
        items = np.minimum((rng.pareto(0.9, draw) * n_items / 50).astype(np.int64), n_items - 1)
        keys = np.unique(users * n_items + items)
        if len(keys) >= n:
            break
        draw *= 2
    keys = rng.permutation(keys)[:n]
    movie_ids = np.sort(rng.choice(int(n_items * 3.5), size=n_items, replace=False)) + 1
    return {
        "userId": keys // n_items + 1,
        "movieId": movie_ids[keys % n_items],
        "rating": rng.integers(1, 11, n) / 2.0,
        "timestamp": rng.integers(789_652_009, 1_574_327_703, n),
    }


def write_files(n: int, folder: Path, string_ids: bool = False) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    columns: dict[str, object] = dict(ratings(n))
    if string_ids:  # "u17", "m42": ids that are text, coded by Arrow's dictionary encoding
        columns["userId"] = np.char.add("u", columns["userId"].astype(str))
        columns["movieId"] = np.char.add("m", columns["movieId"].astype(str))
    table = pa.table(columns)
    csv_path, parquet_path = folder / f"ratings_{n}.csv", folder / f"ratings_{n}.parquet"
    pcsv.write_csv(table, csv_path, pcsv.WriteOptions(quoting_style="none"))
    pq.write_table(table, parquet_path)
    return csv_path, parquet_path


def rss_gib(field: str = "VmRSS") -> float:
    """The process's resident memory now (VmRSS) or at its peak (VmHWM: this program's own,
    where getrusage's maxrss would carry the parent's size across fork and exec)."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith(f"{field}:"))
    return kib / 2**20


def child(mode: str, path: str) -> dict:
    """One measurement, in this (fresh) process."""
    import pyarrow
    import pyarrow.csv
    import pyarrow.parquet  # noqa: F401
    import torch

    from mfzoo.data.sources import read_table

    if mode.startswith("pandas"):
        import pandas as pd
    torch.set_num_threads(os.cpu_count() or 1)
    base = rss_gib()
    start = time.perf_counter()
    if mode == "pandas_csv":
        frame = pd.read_csv(path, engine="pyarrow")
        n = len(frame)
    elif mode == "pandas_parquet":
        frame = pd.read_parquet(path)
        n = len(frame)
    else:
        cache = mode in ("mfzoo_first_cached", "mfzoo_cached")
        data = read_table(path, *COLUMNS, cache=cache)
        n = len(data)
    seconds = time.perf_counter() - start
    peak = rss_gib("VmHWM")
    out = {"seconds": seconds, "peak_gib": peak, "base_gib": base, "n": n}
    if mode.startswith("mfzoo"):
        from mfzoo import native

        out["native"] = native.data_library(n) is not None
    if mode == "mfzoo_csv":
        arrays = sum(t.element_size() * t.numel() for t in (data.users, data.items, data.values))
        csr = sum(
            t.element_size() * t.numel()
            for by in ("user", "item")
            for t in (
                data.csr(by).crow_indices(),
                data.csr(by).col_indices(),
                data.csr(by).values(),
            )
        )
        out |= {
            "bytes_arrays": arrays / n,
            "bytes_with_csr": (arrays + csr) / n,
            "bytes_timestamps": data.timestamps.element_size(),
        }
    return out


def scale_child(path: str) -> dict:
    import torch

    from mfzoo.data.sources import read_table
    from mfzoo.models.mf import MF
    from mfzoo.solvers.solver import IALSSolver

    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    data = read_table(path, *COLUMNS, cache=False)
    loaded = time.perf_counter() - start
    load_peak = rss_gib("VmHWM")
    torch.manual_seed(0)
    model = MF(data.n_users, data.n_items, dim=64, biases=False, init_std=0.01)
    start = time.perf_counter()
    IALSSolver(l2=0.1, alpha=9.0, method="cg", cg_steps=3).sweep(model, data)
    return {
        "n": len(data),
        "load_s": loaded,
        "load_peak_gib": load_peak,
        "sweep_s": time.perf_counter() - start,
        "peak_gib": rss_gib("VmHWM"),
    }


def run_child(*args: str, env: dict | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# files this small are read in about 0.1 s, where the machine's noise is as large as the
# differences: more rounds for them (they cost little)
SMALL_ROWS, SMALL_ROUNDS = 2_000_000, 7


def rounds(n: int, repeats: int) -> int:
    """Timed rounds for a file of n rows."""
    return max(repeats, SMALL_ROUNDS) if n <= SMALL_ROWS else repeats


def table(
    sizes: list[int], repeats: int, folder: Path, env: dict[str, str], string_ids: bool = False
) -> str:
    lines = [
        "| rows | file | mfzoo s | pandas s | mfzoo / pandas | mfzoo peak RSS (GiB) | above "
        "imports (GiB) | pandas peak RSS (GiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cache_lines = [
        "| rows | first load, cache on (s) | cached load (s) | cached peak RSS (GiB) | B / "
        "interaction: (user, item, value) | with both CSR views | timestamps |",
        "|---|---|---|---|---|---|---|",
    ]
    worst = {}
    kernels = set()
    cache_dir = folder / "cache"
    for k, n in enumerate(sizes):
        csv_path, parquet_path = write_files(n, folder, string_ids)
        if k == 0:  # the C kernels compiled (or found) once, before any timed process
            run_child("mfzoo_csv", str(csv_path), env={"MFZOO_CACHE_DIR": str(cache_dir), **env})
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        for _ in range(rounds(n, repeats)):
            for mode in MODES:
                if mode == "mfzoo_first_cached":
                    # the data sets only: the compiled C kernels (cache_dir/native) stay, as
                    # they do on a user's machine after the first use
                    shutil.rmtree(cache_dir / "datasets", ignore_errors=True)
                path = parquet_path if "parquet" in mode else csv_path
                runs[mode].append(
                    run_child(mode, str(path), env={"MFZOO_CACHE_DIR": str(cache_dir), **env})
                )
        kernels |= {r["native"] for m in MODES if m.startswith("mfzoo") for r in runs[m]}
        med = {m: statistics.median(r["seconds"] for r in runs[m]) for m in MODES}
        peak = {m: max(r["peak_gib"] for r in runs[m]) for m in MODES}
        base = {m: statistics.median(r["base_gib"] for r in runs[m]) for m in MODES}
        for kind in ("csv", "parquet"):
            ratio = med[f"mfzoo_{kind}"] / med[f"pandas_{kind}"]
            worst[kind] = max(worst.get(kind, 0.0), ratio)
            lines.append(
                f"| {n:,} | {kind.upper() if kind == 'csv' else 'Parquet'} | "
                f"{med[f'mfzoo_{kind}']:.2f} | {med[f'pandas_{kind}']:.2f} | {ratio:.2f} | "
                f"{peak[f'mfzoo_{kind}']:.2f} | "
                f"{peak[f'mfzoo_{kind}'] - base[f'mfzoo_{kind}']:.2f} | "
                f"{peak[f'pandas_{kind}']:.2f} |"
            )
            print(lines[-1], flush=True)
        b = runs["mfzoo_csv"][0]
        cache_lines.append(
            f"| {n:,} | {med['mfzoo_first_cached']:.2f} | {med['mfzoo_cached']:.3f} | "
            f"{peak['mfzoo_cached']:.2f} | {b['bytes_arrays']:.0f} | {b['bytes_with_csr']:.0f} | "
            f"{b['bytes_timestamps']} |"
        )
        print(cache_lines[-1], flush=True)
        csv_path.unlink()
        parquet_path.unlink()
        shutil.rmtree(cache_dir / "datasets", ignore_errors=True)
    shutil.rmtree(cache_dir, ignore_errors=True)
    import pyarrow
    import torch

    head = (
        f"{repeats} interleaved fresh processes per cell ({SMALL_ROUNDS} for {SMALL_ROWS:,} rows "
        f"or fewer, whose reads last a tenth of a second), median seconds, peak RSS the largest "
        f"of them; {os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}, "
        f"pyarrow {pyarrow.__version__}, pandas {_pandas_version()}; mfzoo's C data kernels "
        f"(`mfzoo.native`, compiled once per machine and kept): "
        f"{' and '.join(sorted({True: 'used', False: 'not used'}[k] for k in kernels))}"
        f"{'; ids written as text (u17, m42)' if string_ids else ''}.\n\n"
    )
    summary = (
        "\n\n"
        + ", ".join(
            f"worst mfzoo / pandas, {k.upper() if k == 'csv' else 'Parquet'}: {v:.2f}"
            for k, v in worst.items()
        )
        + "\n"
    )
    return head + "\n".join(lines) + "\n\n" + "\n".join(cache_lines) + summary


def _pandas_version() -> str:
    try:
        import pandas

        return pandas.__version__
    except ImportError:
        return "not installed"


def scale(n: int, folder: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / f"ratings_{n}.parquet"
    data = ratings(n, seed=1)
    with pq.ParquetWriter(
        path, pa.schema([(c, pa.float64() if c == "rating" else pa.int64()) for c in COLUMNS])
    ) as w:
        for start in range(0, n, 10_000_000):
            w.write_table(pa.table({c: v[start : start + 10_000_000] for c, v in data.items()}))
    del data
    r = run_child("scale", str(path))
    path.unlink()
    return (
        "| interactions | users | load s | peak RSS after load (GiB) | one iALS-CG sweep, k = 64 "
        "(s) | peak RSS (GiB) | bytes per interaction (peak) |\n|---|---|---|---|---|---|---|\n| "
        f"{r['n']:,} | {max(n // 150, 100):,} | {r['load_s']:.1f} | {r['load_peak_gib']:.2f} | "
        f"{r['sweep_s']:.1f} | {r['peak_gib']:.2f} | {r['peak_gib'] * 2**30 / r['n']:.0f} |\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000, 25_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--scale",
        type=int,
        default=None,
        metavar="N",
        help="instead: N rows as Parquet, load + one iALS sweep",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="scratch folder for the files (default: a temporary one)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the tables (markdown) here"
    )
    parser.add_argument(
        "--string-ids",
        action="store_true",
        help='user and movie ids written as text ("u17", "m42") instead of integers',
    )
    parser.add_argument(
        "--no-native",
        action="store_true",
        help="read with the numpy paths (MFZOO_NATIVE=0), not the C data kernels",
    )
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, path = args.child
        print(json.dumps(scale_child(path) if mode == "scale" else child(mode, path)))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        text = (
            scale(args.scale, Path(tmp))
            if args.scale
            else table(
                args.rows,
                args.repeats,
                Path(tmp),
                {"MFZOO_NATIVE": "0"} if args.no_native else {},
                args.string_ids,
            )
        )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
