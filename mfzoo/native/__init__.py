"""CPU kernels for the inner loops of the solvers, compiled at first use.

The iALS conjugate-gradient half-step and the LearnBPR epoch spend their time in loops over
the entries of each row (a dot product and an update per entry, per CG step or sample), where
torch's per-operation dispatch and the [b, L, k] gathers of the batched torch path cost more
than the arithmetic. `kernels.c` runs those loops in C on POSIX threads, reading each y_i once
per step where it sits in memory. It needs no torch headers: it is compiled by the system's C
compiler (`$CC`, else `cc`) into a shared library on the first call in a machine's lifetime
(about a second), kept under the cache directory, and loaded with `ctypes` (which releases the
GIL during each call). The torch paths stay beside it as the reference and the fallback.

`library()` returns the loaded library, or None when it cannot be had: `MFZOO_NATIVE=0` in the
environment, no compiler, or a failed compile (a warning says why, once per process). Callers
then run the torch path. The cache directory is `$MFZOO_CACHE_DIR/native`, else
`$XDG_CACHE_HOME/mfzoo/native`, else `~/.cache/mfzoo/native`; the library's name holds a digest
of the source, the compiler's version, the flags and the CPU (the code is built for the CPU it
runs on, `-march=native`), so a change to any of them builds a new one. Writes are atomic (a
temporary file renamed into place): processes of a sweep that start at once may each compile,
and every one loads a complete library.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

SOURCES = ("kernels.c", "kernels.inc")
# -fopenmp-simd: the `omp simd` reductions vectorise, without an OpenMP runtime
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fPIC", "-shared")
LIBS = ("-lpthread", "-lm")
NATIVE_VERSION = 4  # what kernels.c's mfzoo_native_version() returns

# seconds the last build took in this process (0.0: loaded from the cache, None: no build yet)
compile_seconds: float | None = None


def cache_dir() -> Path:
    """Where the compiled library is kept (see the module docstring)."""
    if os.environ.get("MFZOO_CACHE_DIR"):
        return Path(os.environ["MFZOO_CACHE_DIR"]).expanduser() / "native"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mfzoo" / "native"


def enabled() -> bool:
    """False when `MFZOO_NATIVE` is set to 0, false, no or off."""
    return os.environ.get("MFZOO_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def _cpu() -> str:
    """The CPU's model and feature flags (what -march=native builds for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = [
        line for line in lines if line.startswith(("model name", "flags", "Features", "CPU part"))
    ]
    return "\n".join(dict.fromkeys(wanted))  # the first core's lines (every core repeats them)


def _compiler() -> list[str] | None:
    """The compiler command: `$CC` (split like a shell word list, e.g. "gcc -O2") when set, else
    `cc`, `gcc` or `clang`, whichever is found first; None when `$CC` names no program (it is
    not replaced by another) or none of those exists."""
    if os.environ.get("CC", "").strip():
        words = shlex.split(os.environ["CC"])
        found = shutil.which(words[0])
        return None if found is None else [found, *words[1:]]
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path is not None:
            return [path]
    return None


@functools.cache
def library() -> ctypes.CDLL | None:
    """The kernels, built or loaded once per process; None when unavailable (module docstring)."""
    global compile_seconds
    if not enabled():
        return None
    here = Path(__file__).resolve().parent
    compiler = _compiler()
    if compiler is None:
        named = (
            f"CC={os.environ['CC']!r} names no program"
            if os.environ.get("CC", "").strip()
            else "no C compiler found (cc, gcc, clang; or set CC)"
        )
        log.warning(
            "mfzoo.native: %s; the solvers run their torch paths, the readers their numpy ones",
            named,
        )
        return None
    try:
        version = subprocess.run(
            [*compiler, "--version"], capture_output=True, text=True, timeout=60
        ).stdout
        digest = hashlib.sha256()
        for name in SOURCES:
            digest.update((here / name).read_bytes())
        digest.update("\0".join([version, *FLAGS, *LIBS, _cpu(), platform.machine()]).encode())
        target = cache_dir() / f"kernels-{digest.hexdigest()[:20]}.so"
        if target.exists():
            try:  # a file left damaged (a full disk, a copied cache) is rebuilt, not trusted
                lib = _load(target)
                compile_seconds = 0.0
                return lib
            except (OSError, AttributeError, RuntimeError) as error:
                log.warning(
                    "mfzoo.native: the cached %s is unusable (%s); building it again",
                    target.name,
                    error,
                )
        compile_seconds = _build(compiler, here / "kernels.c", target)
        log.info("mfzoo.native: compiled %s in %.1f s", target.name, compile_seconds)
        return _load(target)
    except Exception as error:
        log.warning(
            "mfzoo.native: the C kernels are unavailable (%s: %s); the solvers run their torch "
            "paths, the readers their numpy ones",
            type(error).__name__,
            error,
        )
        return None


def _build(compiler: list[str], source: Path, target: Path) -> float:
    """Compiles `source` into `target` (written elsewhere, then renamed into place: a concurrent
    loader sees the old state or the whole file); returns the seconds it took."""
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run(
            [*compiler, *FLAGS, "-o", str(built), str(source), *LIBS],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            last = result.stderr.strip().splitlines()[-1:] or [
                f"exit status {result.returncode}, no message"
            ]
            raise RuntimeError(f"{' '.join(compiler)} failed: {last[0]}")
        if not built.exists():
            raise RuntimeError(f"{' '.join(compiler)} exited 0 but wrote no library")
        os.replace(built, target)
    return time.perf_counter() - start


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.mfzoo_native_version.restype = ctypes.c_int
    if lib.mfzoo_native_version() != NATIVE_VERSION:
        raise RuntimeError(
            f"{path.name} is version {lib.mfzoo_native_version()}, not {NATIVE_VERSION}"
        )
    _declare(lib)
    _declare_data(lib)
    return lib


def available() -> bool:
    """Whether the kernels can be used in this process."""
    return library() is not None


def unavailable_reason(*tensors: Tensor) -> str | None:
    """Why `supports(*tensors)` is False (None when it is True), for error messages."""
    if not enabled():
        return "MFZOO_NATIVE is set to disable them"
    if any(t.device.type != "cpu" for t in tensors):
        return (
            "they run on the CPU, the tensors are on "
            f"{next(t.device for t in tensors if t.device.type != 'cpu')}"
        )
    floating = {t.dtype for t in tensors if t.is_floating_point()}
    if not floating <= {torch.float32, torch.float64} or len(floating) > 1:
        return f"they run float32 or float64, got {', '.join(sorted(str(d) for d in floating))}"
    if not available():
        return "the library could not be built or loaded (see the warning logged before)"
    return None


# cache lines of y_i rows the CG kernel loads ahead of the entry it works on (in A/B runs on a
# 2-core machine, 32 and 64 beat 8, 16 and 128 over 64-256 factors)
CG_PREFETCH_LINES = 32

_i64, _int, _p, _u64, _dp = (
    ctypes.c_int64,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_uint64,
    ctypes.POINTER(ctypes.c_double),
)
_REAL = {"_f32": ctypes.c_float, "_f64": ctypes.c_double}


def _declare(lib: ctypes.CDLL) -> None:
    for suffix, real in _REAL.items():
        fn = getattr(lib, f"ials_cg{suffix}")
        fn.argtypes = [_i64, _i64, _p, _p, _p, _p, _p, _p, _p, _p, _int, _int, _int]
        fn.restype = _int
        fn = getattr(lib, f"bpr_epoch{suffix}")
        fn.argtypes = [
            _i64,
            _i64,
            _i64,
            _i64,
            _p,
            _p,
            _p,
            _p,
            _int,
            _int,
            _p,
            _int,
            _p,
            _p,
            _p,
            real,
            real,
            real,
            _u64,
            _int,
            _dp,
        ]
        fn.restype = _int


def _declare_data(lib: ctypes.CDLL) -> None:
    lib.mfzoo_canonical_ints.argtypes = [_p, _p, _i64, _p]
    lib.mfzoo_canonical_ints.restype = _i64
    lib.mfzoo_dense_codes.argtypes = [_p, _i64, _i64, _i64, _p, _p]
    lib.mfzoo_dense_codes.restype = _i64
    lib.mfzoo_pair_repeats.argtypes = [_p, _p, _i64, _i64, _i64]
    lib.mfzoo_pair_repeats.restype = _int
    lib.mfzoo_text_new.argtypes = []
    lib.mfzoo_text_new.restype = _p
    lib.mfzoo_text_free.argtypes = [_p]
    lib.mfzoo_text_free.restype = None
    lib.mfzoo_text_encode.argtypes = [_p, _p, _p, _i64, _p]
    lib.mfzoo_text_encode.restype = _i64
    lib.mfzoo_text_count.argtypes = [_p, _p]
    lib.mfzoo_text_count.restype = _i64
    lib.mfzoo_text_cells.argtypes = [_p, _p, _p]
    lib.mfzoo_text_cells.restype = None


def supports(*tensors: Tensor) -> bool:
    """Whether the kernels can run on these tensors: the library is there, and they are on the
    CPU, in float32 or float64 (one of them for all floating tensors)."""
    return unavailable_reason(*tensors) is None


def _suffix(dtype: torch.dtype) -> str:
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"mfzoo.native: the kernels run float32 and float64, got {dtype}")
    return "_f32" if dtype == torch.float32 else "_f64"


def _ptr(t: Tensor, dtype: torch.dtype, name: str) -> int:
    if t.dtype != dtype or not t.is_contiguous() or t.device.type != "cpu":
        raise ValueError(
            f"mfzoo.native: {name} must be a contiguous CPU {dtype} tensor, got {t.dtype} "
            f"{'contiguous' if t.is_contiguous() else 'strided'} on {t.device}"
        )
    return t.data_ptr()


def _indices(crow: Tensor, col: Tensor) -> tuple[Tensor, Tensor]:
    """CSR indices as the kernels read them: row pointers int64 (n_rows + 1 of them: a small
    copy when int32), column ids int32 (no copy when `Interactions.csr` made them; column ids
    are below 2^31, which the callers check)."""
    return crow.to(torch.long).contiguous(), col.to(torch.int32).contiguous()


def threads_for(threads: int | None) -> int:
    """Worker threads: `threads`, or torch's thread count when None."""
    n = torch.get_num_threads() if threads is None else int(threads)
    if not 1 <= n <= 256:
        raise ValueError(f"threads must be in 1..256, got {n}")
    return n


def ials_cg(
    crow: Tensor,
    col: Tensor,
    gram_weight: Tensor,
    weight: Tensor,
    Y: Tensor,
    YtY: Tensor,
    reg: Tensor,
    X: Tensor,
    steps: int,
    threads: int | None = None,
) -> None:
    """`steps` CG iterations on every row's iALS system, X [n_rows, k] updated in place (the
    warm start in, the result out). The system of row u is that of `als.ials_half_step_cg`:
    A_u = YtY + Σ_i gram_weight_ui y_i y_iᵀ + reg_u I, b_u = Σ_i weight_ui y_i (YtY already
    scaled by α₀, gram_weight = c − α₀, weight = c, per CSR entry). crow [n_rows + 1] and col
    [nnz] of either index dtype (the kernel reads int64 row pointers and int32 column ids, 4
    bytes per entry: `Interactions.csr` stores them so); every floating tensor in X's dtype,
    contiguous, on the CPU. The result does not depend on `threads` (rows are independent)."""
    lib = library()
    if lib is None:
        raise RuntimeError("mfzoo.native is unavailable")
    n_rows, k = X.shape
    dt = X.dtype
    crow, col = _indices(crow, col)
    status = getattr(lib, f"ials_cg{_suffix(dt)}")(
        n_rows,
        k,
        _ptr(crow, torch.long, "crow"),
        _ptr(col, torch.int32, "col"),
        _ptr(gram_weight, dt, "gram_weight"),
        _ptr(weight, dt, "weight"),
        _ptr(Y, dt, "Y"),
        _ptr(YtY, dt, "YtY"),
        _ptr(reg, dt, "reg"),
        _ptr(X, dt, "X"),
        int(steps),
        threads_for(threads),
        int(CG_PREFETCH_LINES),
    )
    if status != 0:
        raise MemoryError(f"mfzoo.native.ials_cg failed (status {status})")


def bpr_epoch(
    users: Tensor,
    items: Tensor,
    crow: Tensor,
    col: Tensor,
    P: Tensor,
    Q: Tensor,
    bias: Tensor | None,
    lr: float,
    l2: float,
    l2_bias: float,
    seed: int,
    n_samples: int | None = None,
    reject: bool = True,
    max_tries: int = 120,
    threads: int | None = None,
    seen_filter: Tensor | None = None,
    filter_bits: int = 0,
) -> float:
    """One LearnBPR epoch of per-sample SGD in place on P [n_users, k], Q [n_items, k] and
    bias [n_items] (or None): `n_samples` (default len(users)) bootstrap samples of the
    training pairs (users, items) [n] int32, one uniform negative each, redrawn while it is a
    training item of its user (`reject`; the sorted CSR rows crow, col of the user × item
    matrix) for at most `max_tries` draws; the update is that of `bpr.bpr_step` for one
    sample. `seen_filter`, `filter_bits`: the bit filter of a `mfzoo.data.sampling.PairSet` of
    the same pairs (uint8 [2^bits / 8]), which answers most membership queries with one byte
    (the binary search runs only where its bit is set). `threads` workers share the tables without
    locks (Hogwild!); with one, the epoch is reproducible bit for bit from `seed`. Returns the mean
    −ln σ(x)."""
    lib = library()
    if lib is None:
        raise RuntimeError("mfzoo.native is unavailable")
    dt = P.dtype
    n = len(users) if n_samples is None else int(n_samples)
    crow, col = _indices(crow, col)
    loss = ctypes.c_double(0.0)
    status = getattr(lib, f"bpr_epoch{_suffix(dt)}")(
        n,
        len(users),
        Q.shape[0],
        P.shape[1],
        _ptr(users, torch.int32, "users"),
        _ptr(items, torch.int32, "items"),
        _ptr(crow, torch.long, "crow"),
        _ptr(col, torch.int32, "col"),
        int(reject),
        int(max_tries),
        None if seen_filter is None else _ptr(seen_filter, torch.uint8, "seen_filter"),
        int(filter_bits),
        _ptr(P, dt, "P"),
        _ptr(Q, dt, "Q"),
        None if bias is None else _ptr(bias, dt, "bias"),
        float(lr),
        float(l2),
        float(l2_bias),
        int(seed) % 2**64,
        threads_for(threads),
        ctypes.byref(loss),
    )
    if status != 0:
        raise MemoryError(f"mfzoo.native.bpr_epoch failed (status {status})")
    return loss.value / max(n, 1)


# data kernels ---------------------------------------------------------------------------------
# Used by the readers (mfzoo.data) for columns of at least this many rows; shorter ones take the
# numpy paths, which need no compiled library (a small file never triggers a build).
DATA_MIN_ROWS = 1 << 16


def data_library(n_rows: int) -> ctypes.CDLL | None:
    """The library when a column of `n_rows` rows should use the data kernels, else None."""
    return library() if n_rows >= DATA_MIN_ROWS and enabled() else None


def canonical_ints(
    lib: ctypes.CDLL, offsets_address: int, data_address: int, out: np.ndarray
) -> bool:
    """Whether the len(out) Arrow text cells (int32 offsets at `offsets_address`, the bytes at
    `data_address`) are all integers written canonically (`mfzoo_canonical_ints`); their values
    go into `out` (int64, contiguous), which holds garbage when they are not."""
    assert out.dtype == np.int64 and out.flags.c_contiguous
    return lib.mfzoo_canonical_ints(offsets_address, data_address, len(out), out.ctypes.data) < 0


def dense_codes(
    lib: ctypes.CDLL, ids: np.ndarray, low: int, span: int
) -> tuple[np.ndarray, np.ndarray]:
    """(the present offsets [U] sorted, the code of each id [N] int32) for int64 ids in
    [low, low + span): `np.unique(ids - low, return_inverse=True)` in O(N + span)."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    rank = np.zeros(span, dtype=np.int32)
    codes = np.empty(len(ids), dtype=np.int32)
    lib.mfzoo_dense_codes(ids.ctypes.data, len(ids), low, span, rank.ctypes.data, codes.ctypes.data)
    return np.flatnonzero(rank >= 0), codes


def pair_repeats(
    lib: ctypes.CDLL, u: np.ndarray, i: np.ndarray, n_users: int, n_items: int
) -> bool | None:
    """Whether some (u[k], i[k]) pair occurs twice (int32 codes in [0, n_users) x [0, n_items)),
    in O(N) (`mfzoo_pair_repeats`); None when its workspace cannot be allocated."""
    u = np.ascontiguousarray(u, dtype=np.int32)
    i = np.ascontiguousarray(i, dtype=np.int32)
    found = lib.mfzoo_pair_repeats(u.ctypes.data, i.ctypes.data, len(u), n_users, n_items)
    return None if found < 0 else bool(found)


@dataclass
class TextCodes:
    """What `text_codes` found: the distinct cells in code order (first seen first), each
    cell's code, and the first cell empty after trimming (None when there is none; where there
    is one, `cells` is None and `codes` stops before it)."""

    cells: pa.Array | None  # [D] large_string
    codes: np.ndarray  # [N] int32
    empty: int | None = None


def text_codes(lib: ctypes.CDLL, chunks: Sequence[pa.Array]) -> TextCodes | None:
    """The cells of a text column (Arrow string chunks, in order) trimmed of whitespace as
    `pyarrow.compute.utf8_trim_whitespace` trims it and coded in one pass
    (`mfzoo_text_encode`): what `utf8_trim_whitespace`, `dictionary_encode` and
    `unify_dictionaries` give, without a copy of the column. None when a chunk is not a string
    array or memory runs out (the caller then takes Arrow's path). Where a cell is empty after
    trimming the codes stop there (`TextCodes.empty`, its row)."""
    import pyarrow as pa  # here: the solvers, which use this module too, need no pyarrow

    if any(c.type != pa.string() for c in chunks):
        return None
    coder = lib.mfzoo_text_new()
    if not coder:
        return None
    try:
        codes = np.empty(sum(len(c) for c in chunks), dtype=np.int32)  # [N]
        at = 0
        for chunk in chunks:
            buffers = chunk.buffers()
            if len(chunk) and buffers[2] is not None:  # all-empty cells may have no data buffer
                offsets = buffers[1].address + 4 * chunk.offset  # int32 offsets of this slice
                found = lib.mfzoo_text_encode(
                    coder, offsets, buffers[2].address, len(chunk), codes[at:].ctypes.data
                )
                if found == -2:
                    return None
                if found >= 0:
                    return TextCodes(None, codes[: at + found], at + found)
            elif len(chunk):
                return TextCodes(None, codes[:at], at)
            at += len(chunk)
        size = ctypes.c_int64()
        count = lib.mfzoo_text_count(coder, ctypes.byref(size))
        offsets_out = np.empty(count + 1, dtype=np.int64)
        data_out = np.empty(max(size.value, 1), dtype=np.uint8)
        lib.mfzoo_text_cells(coder, offsets_out.ctypes.data, data_out.ctypes.data)
        cells = pa.LargeStringArray.from_buffers(
            count, pa.py_buffer(offsets_out), pa.py_buffer(data_out)
        )
        return TextCodes(cells, codes)
    finally:
        lib.mfzoo_text_free(coder)
