"""The block scheduler of the ALS half-steps: which rows are solved together, in what memory,
on how many threads. The maths of a block (normal equations, Woodbury, CG) is in
`mfzoo.solvers.als`; this module only hands each block its gathered rows.

A half-step solves one small system per row u of a sparse CSR pattern (crow, col), each built
from the rows y_i of the fixed factors Y [n_cols, k] at the entries i of row u. Rows are taken
by ascending degree (`row_order`) in blocks of at most `block_size` rows and about
`block_elements` gathered entries (`plan`: on a CPU the streams' blocks together fill the
last-level cache; on an accelerator 16 times the CPU default, where a block is one batched
call per degree bucket); `for_blocks` gathers a block's y_i into one padded
[b, L, k] tensor and calls the block solver on it, on as many threads as torch has.

What depends on the pattern alone (row order, block plan) is kept in a `cache` dict that the
caller keeps with the matrix (`memo`), so repeated sweeps over one training set compute it once.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from mfzoo.data.interactions import Interactions
from mfzoo.solvers.parallel import cpu_streams, run_streams

log = logging.getLogger(__name__)

# entries of a block's gathered rows [b, L, k] on a CPU: None derives them from the machine
# (`block_elements`: the streams' buffers together fill the last-level cache); a number fixes them
BLOCK_ELEMENTS: int | None = None
# where the cache size cannot be read: 2^22 (16 MiB of float32), what the rule gives on the
# 2-core machine it was measured on (32 MiB of L3, two streams), where 2^22 ran sweeps about 6%
# faster than 2^23
FALLBACK_ELEMENTS = 1 << 22
MIN_ELEMENTS = 1 << 16
# on an accelerator, few large batched calls: 16 times the entries (256 MiB of float32) and, by
# default, 8192 rows per block (a GPU runs a [b, k, k] batched Cholesky in one launch; per-launch
# overhead, not caches, sets the size there)
DEVICE_BLOCK_FACTOR = 16
DEVICE_BLOCK_ROWS = 8192
CPU_BLOCK_ROWS = 512


def block_rows(block_size: int | None, device: torch.device) -> int:
    """The rows per block: `block_size` when given, else the device's default (512 on a CPU,
    `DEVICE_BLOCK_ROWS` on an accelerator)."""
    if block_size is not None:
        return block_size
    return CPU_BLOCK_ROWS if torch.device(device).type == "cpu" else DEVICE_BLOCK_ROWS


def block_elements(device: torch.device, itemsize: int = 4, streams: int = 1) -> int:
    """Entries of a block's gathered rows. On a CPU: `BLOCK_ELEMENTS` where it is set, else as
    many as let the `streams` buffers of `itemsize`-byte entries together fill the last-level
    cache (`last_level_cache`; at least 2^16, `FALLBACK_ELEMENTS` where the size is unknown).
    On an accelerator, 16 times the fallback (per-launch overhead, not caches, decides there)."""
    if torch.device(device).type != "cpu":
        return FALLBACK_ELEMENTS * DEVICE_BLOCK_FACTOR
    if BLOCK_ELEMENTS is not None:
        return BLOCK_ELEMENTS
    cache = last_level_cache()
    if cache is None:
        return FALLBACK_ELEMENTS
    return max(MIN_ELEMENTS, cache // (max(1, itemsize) * max(1, streams)))


@functools.cache
def last_level_cache() -> int | None:
    """Bytes of the CPU's last-level data cache (Linux sysfs), or None where it cannot be read."""
    from pathlib import Path

    best: tuple[int, int] | None = None  # (level, bytes)
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level, size = (
                int((index / "level").read_text()),
                (index / "size").read_text().strip().upper(),
            )
            units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
            size_bytes = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        except (OSError, ValueError):
            continue
        if best is None or level > best[0]:
            best = (level, size_bytes)
    return None if best is None else best[1]


def memo(cache: dict | None, key: tuple, make: Callable[[], Any]) -> Any:
    """cache[key], made by `make()` on first use; just `make()` without a cache."""
    if cache is None:
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]


def kept_with(caches: dict, R: Tensor, limit: int = 4) -> dict:
    """The dict kept with the matrix R in `caches` across sweeps (the training matrices, which
    `Interactions` keeps, and their device copies); a new R replaces the old ones once `limit`
    matrices are held (a sweep uses two, and their copies on the model's device)."""
    kept = caches.get(id(R))
    if kept is None or kept[0] is not R:
        if len(caches) >= limit:
            caches.clear()
        kept = caches[id(R)] = (R, {})
    return kept[1]


def matrix_on(
    caches: dict, train: Interactions, by: Literal["user", "item"], device: torch.device
) -> Tensor:
    """`train.csr(by)` on `device`: the matrix itself where it lives there, else a copy kept
    with it (`kept_with`), so that sweeps of a model on a GPU over a CPU training set move it
    once, not once per sweep."""
    R = train.csr(by)
    if R.device == device:
        return R
    return kept_with(caches, R).setdefault(("on", str(device)), R.to(device))


def row_order(crow: Tensor, cache: dict | None) -> Tensor:
    """Rows by ascending degree (stable) [n_rows], from the cache when it has them."""
    return memo(cache, ("order", crow.device), lambda: torch.argsort(crow.diff(), stable=True))


def for_blocks(
    solve: Callable[..., None],
    crow: Tensor,
    col: Tensor,
    weights: tuple[Tensor, ...],
    Y: Tensor,
    block_size: int,
    order: Tensor,
    cache: dict | None = None,
) -> None:
    """Calls `solve(block, Yg [b, L, k], *weights each [b, L])` for the rows of a CSR pattern in
    blocks of the row order `order` (rows by ascending degree, `row_order`): `block` is a slice
    of `order`, and row j of Yg holds y_i of the entries of row `order[block][j]`, padded to the
    block's longest row with a zero row of weight 0. Sorted rows waste little on padding (about
    4% on power-law data); a block holds at most `block_size` rows and about `block_elements`
    entries of Yg. `solve` writes its results itself (the blocks are disjoint), typically into
    tensors already in `order`, so that a block is a contiguous slice rather than a gather.

    Yg is written into a buffer allocated once per thread (`index_select(out=)`): fresh
    multi-megabyte tensors per block cost more in page faults than the gather itself on a CPU.

    On a CPU with more than one torch thread the blocks (longest rows first) are taken in turn
    by that many streams (`mfzoo.solvers.parallel.run_streams`: Python threads, torch
    single-threaded meanwhile), which keeps both cores of a 2-core machine busy where one
    multi-threaded stream of small batched operations does not. Every block's arithmetic is the
    same either way, so the result does not depend on the number of threads.
    """
    k, streams = Y.shape[1], cpu_streams(Y.device)
    elements = block_elements(Y.device, Y.element_size(), streams)
    counts, starts, degree, blocks = memo(
        cache, ("plan", block_size, k, elements), lambda: plan(crow, order, block_size, k, elements)
    )
    Y_pad = torch.cat([Y, Y.new_zeros(1, k)])  # [n_cols + 1, k]: the last row pads
    pad, last = Y.shape[0], max(col.numel() - 1, 0)

    tasks, lock = (
        iter(blocks[::-1]),
        threading.Lock(),
    )  # longest rows first: the threads finish together
    layout = scripted(block_layout)

    def run(_stream: int) -> None:
        buffer = Y.new_empty(0)  # grows (doubling) to the largest block
        while True:
            with lock:
                start, end = next(tasks, (0, 0))
            if start == end:
                return
            b, longest = end - start, degree[end - 1]  # the block's rows, its longest row L
            if buffer.numel() < b * longest * k:
                buffer = Y.new_empty(max(b * longest * k, 2 * buffer.numel()))
            Yg = buffer[: b * longest * k].view(b * longest, k)
            if col.numel():
                padded = layout(
                    counts[start:end],
                    starts[start:end],
                    longest,
                    last,
                    pad,
                    col,
                    list(weights),
                    Y_pad,
                    Yg,
                )
            else:  # no entries at all: every row is padding
                padded = [Y.new_zeros(b, longest) for _ in weights]
                torch.index_select(
                    Y_pad, 0, torch.full((b * longest,), pad, device=Y.device), out=Yg
                )
            solve(slice(start, end), Yg.view(b, longest, k), *padded)

    run_streams(run, min(streams, len(blocks)))


def plan(
    crow: Tensor,
    order: Tensor,
    block_size: int,
    k: int,
    elements: int | None = None,
) -> tuple[Tensor, Tensor, list[int], list[tuple[int, int]]]:
    """The blocks of `for_blocks`: the rows' entry counts and first entries in `order`
    ([n_rows] each), the counts as a list, and (start, end) slices of `order` of at most
    `block_size` rows and about `elements` (default `block_elements` on a CPU) entries of Yg."""
    elements = block_elements(torch.device("cpu")) if elements is None else elements
    n_rows = crow.numel() - 1
    counts = crow.diff().index_select(0, order)  # [n_rows] ascending
    starts = crow[:-1].index_select(0, order)  # [n_rows] first entry of each row
    degree = counts.tolist()
    blocks, start = [], 0  # (start, end) in `order`
    while start < n_rows:
        end = min(start + block_size, n_rows)
        end = min(end, start + max(1, elements // max(1, degree[end - 1] * k)))  # memory
        blocks.append((start, end))
        start = end
    return counts, starts, degree, blocks


def block_layout(
    counts: Tensor,
    starts: Tensor,
    longest: int,
    last: int,
    pad: int,
    col: Tensor,
    weights: list[Tensor],
    Y_pad: Tensor,
    out: Tensor,
) -> list[Tensor]:
    """The padded layout of one block of `for_blocks`: the rows y_i of every entry gathered
    into `out` [b·L, k] (row j·L + l: entry l of the block's row j, `pad` (a zero row of Y_pad)
    past the row's end), and each of `weights` [nnz] laid out as [b, L] with 0 on padding.
    counts, starts [b]: the rows' entry counts and first positions in `col`; last: the last
    valid position. Runs as TorchScript where torch has it (`scripted`), for the reason given
    in `mfzoo.solvers.als._cg_block`."""
    b = counts.shape[0]
    slots = torch.arange(longest, device=col.device)  # [L]
    invalid = slots >= counts.unsqueeze(1)  # [b, L] padding
    pos = (starts.unsqueeze(1) + slots).clamp_(max=last).view(-1)  # [b·L] entry positions
    items = col.index_select(0, pos).view(b, longest).masked_fill_(invalid, pad)  # [b, L]
    torch.index_select(Y_pad, 0, items.view(-1), out=out)
    return [w.index_select(0, pos).view(b, longest).masked_fill_(invalid, 0.0) for w in weights]


@functools.cache
def scripted(fn: Callable) -> Callable:
    """`fn` compiled by TorchScript, or `fn` itself where that fails (TorchScript is deprecated
    in torch 2.x and may go; the eager function computes the same)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(fn)
    except Exception as error:
        log.debug("TorchScript unavailable for %s (%s); running eager", fn.__name__, error)
        return fn
