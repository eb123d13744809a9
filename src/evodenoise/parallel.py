"""CPU threads for the E-steps and the estimate: rows in parts, side by side, one core each.

An E-step's operators are many and small (a few hundred rows of a few dozen values): split
over two cores inside each operator they gain little, while two threads that each run the
whole E-step on half of the rows keep both cores busy. Every data point's E-step depends on its
own row only, so the parts give the same result, bit for bit, as one piece.

:func:`split_rows` is set once per run at the edge (``restore.py``); inside it torch's own
thread count is one, and :func:`map_rows` runs a function on row parts in the run's threads
(an E-step's batch: one part per thread); :func:`map_slices` on parts of a given size,
whatever the thread count (the estimate's groups of patches: the cut, and so the result,
then does not depend on the threads either).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import TypeVar

import torch

MIN_ROWS = 64  # rows per part below which a batch is not split
_POOL: ContextVar[ThreadPoolExecutor | None] = ContextVar("evodenoise_rows", default=None)
T = TypeVar("T")


@contextlib.contextmanager
def split_rows(device: torch.device, enabled: bool = True) -> Iterator[int]:
    """Within the block, E-steps on the CPU split their rows over torch's thread count at
    entry (when more than one and ``enabled``), with torch's own thread count set to one
    (restored at exit). Yields the number of threads (1: no split)."""
    threads = torch.get_num_threads()
    if not enabled or device.type != "cpu" or threads < 2 or _POOL.get() is not None:
        yield 1
        return
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="evodenoise-rows") as pool:
            token = _POOL.set(pool)
            try:
                yield threads
            finally:
                _POOL.reset(token)
    finally:
        torch.set_num_threads(threads)


def n_parts(n: int) -> int:
    """The parts :func:`map_rows` cuts n rows into (1: no split)."""
    pool = _POOL.get()
    return 1 if pool is None else max(1, min(pool._max_workers, n // MIN_ROWS))


def map_rows(fn: Callable[[slice], T], n: int) -> list[T]:
    """``fn`` applied to consecutive row slices covering range(n): one slice per thread of the
    current :func:`split_rows` (at least ``MIN_ROWS`` rows each), or one slice, in this
    thread. Each call runs with gradients off (grad mode is per thread)."""
    parts = n_parts(n)
    if parts < 2:
        return [fn(slice(0, n))]
    return map_slices(fn, n, -(-n // parts))


def map_slices(fn: Callable[[slice], T], n: int, size: int) -> list[T]:
    """``fn`` applied to the consecutive slices of ``size`` rows covering range(n), in order,
    spread over the threads of the current :func:`split_rows` (in this thread without one):
    how the rows are cut does not depend on the thread count. Each call runs with gradients
    off and without a split of its own."""

    def run(lo: int) -> T:
        token = _POOL.set(None)  # a part runs unsplit
        try:
            with torch.no_grad():
                return fn(slice(lo, min(lo + size, n)))
        finally:
            _POOL.reset(token)

    pool, starts = _POOL.get(), range(0, n, max(1, size))
    if pool is None or len(starts) < 2:
        return [run(lo) for lo in starts]
    return list(pool.map(run, starts))
