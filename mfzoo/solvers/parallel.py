"""Independent streams of torch work on Python threads, torch single-threaded meanwhile.

The solvers' inner loops run many small batched operations (Cholesky factorisations of
64 x 64 systems one after another, matrix-vector products over a block, gathers and scatters
of a few thousand rows). Inside torch such operations either run one item after another or
stay below the grain at which torch splits work between cores, so one stream of them leaves
the second core of a 2-core machine mostly idle. Two streams on two Python threads (torch
releases the GIL inside every operation), each running torch on one thread, keep both busy.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")


def cpu_streams(device: torch.device, requested: int | None = None) -> int:
    """How many streams to run: `requested` (None: `torch.get_num_threads()`) on a CPU, 1 on
    an accelerator (whose kernels are parallel already)."""
    if device.type != "cpu":
        return 1
    streams = torch.get_num_threads() if requested is None else int(requested)
    if streams < 1:
        raise ValueError(f"threads must be >= 1, got {streams}")
    return streams


def run_streams(work: Callable[[int], T], streams: int) -> list[T]:
    """[work(0), ..., work(streams − 1)], run at once on `streams` Python threads while torch
    runs single-threaded (`torch.set_num_threads(1)`, restored afterwards; the setting is
    process-wide, so other torch work of the process runs single-threaded meanwhile too).
    One stream runs inline with torch's threads untouched. A stream's exception is re-raised
    after all streams have stopped."""
    if streams <= 1:
        return [work(0)]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(streams) as pool:
            futures = [pool.submit(work, s) for s in range(streams)]
            return [f.result() for f in futures]
    finally:
        torch.set_num_threads(previous)
