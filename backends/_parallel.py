"""Running a kernel over chunks of a large array on a small shared thread pool.

The NumPy backend's kernels (the blocked NumPy ones and the compiled Numba ones)
release the GIL while they work, so large arrays are split into contiguous,
aligned chunks that run on one thread per available core. Each chunk writes its
own part of the output and returns its own counts, combined in chunk order, so
results never depend on the scheduling. Small arrays run in the calling thread.

The pool is created on first use and re-created in a forked child (which
inherits the pool object but not its threads). NumPy's floating-point error
settings (``numpy.errstate``) are per thread, so each chunk runs under the
caller's settings.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

import numpy

if TYPE_CHECKING:  # imported when the pool is first needed
    from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "CHUNK_ALIGN", "CHUNKS_PER_THREAD", "MIN_CHUNK", "STREAMING_CHUNKS_PER_THREAD", "chunks", "run", "thread_count",
]

MIN_CHUNK = 1 << 18
"""Elements below which a thread hand-off costs more than it saves."""

CHUNK_ALIGN = 1 << 12
"""Chunks start at multiples of this many elements (cache-line and page aligned for every dtype)."""

CHUNKS_PER_THREAD = 4
"""More chunks than threads even out the work when other processes share the cores."""

STREAMING_CHUNKS_PER_THREAD = 1
"""Chunks per thread for one-pass kernels bound by memory bandwidth (the runtime profiles'
quantization): each chunk costs a hand-off to the pool (tens of microseconds), and one
chunk per thread measured 3-9% faster than four at 1e7 float32 values on 2 cores, the
same at 1e8."""

_lock = threading.Lock()
_pool: dict = {"executor": None, "workers": 0}


def thread_count() -> int:
    """Return the number of threads to use: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def chunks(size: int, threads: Optional[int] = None, per_thread: int = CHUNKS_PER_THREAD) -> List[Tuple[int, int]]:
    """Split ``range(size)`` into ``(start, stop)`` chunks: one when small, else ``per_thread`` per thread.

    Example:
        >>> chunks(10)
        [(0, 10)]
    """
    threads = thread_count() if threads is None else threads
    if threads <= 1 or size < 2 * MIN_CHUNK:
        return [(0, size)]
    length = max(MIN_CHUNK, -(-size // (threads * per_thread)))
    length = -(-length // CHUNK_ALIGN) * CHUNK_ALIGN
    return [(start, min(size, start + length)) for start in range(0, size, length)]


def _executor(workers: int) -> ThreadPoolExecutor:
    from concurrent.futures import ThreadPoolExecutor

    executor = _pool["executor"]
    if executor is None or _pool["workers"] < workers:
        with _lock:
            executor = _pool["executor"]
            if executor is None or _pool["workers"] < workers:
                if executor is not None:
                    executor.shutdown(wait=False)
                executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qarray")
                _pool["executor"], _pool["workers"] = executor, workers
    return executor


def _forget_pool_after_fork() -> None:
    # The child has none of the pool's threads, and a lock held by another thread at
    # the fork would stay held forever: start both afresh.
    global _lock
    _lock = threading.Lock()
    _pool["executor"] = None
    _pool["workers"] = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def run(size: int, task: Callable[[int, int], Any], per_thread: int = CHUNKS_PER_THREAD) -> List[Any]:
    """Run ``task(start, stop)`` over the chunks of ``range(size)``; return the results in chunk order.

    ``per_thread`` chunks go to each thread (see :func:`chunks`).

    ``task`` must only write its own part of any output. It runs in the calling
    thread when there is one chunk, else on the pool under the caller's
    ``numpy.errstate``.
    """
    threads = thread_count()
    parts = chunks(size, threads, per_thread)
    if len(parts) == 1:
        return [task(0, size)]
    settings = numpy.geterr()

    def run_part(part: Tuple[int, int]) -> Any:
        with numpy.errstate(**settings):
            return task(*part)

    return list(_executor(threads).map(run_part, parts))
