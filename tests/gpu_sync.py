"""Helpers for the GPU tests: skip where no GPU is usable, and prove a call returns before the
GPU is done (no hidden sync).

Only the GPU test modules import this. CuPy is imported by :func:`require_gpu` and in the
functions that need it, never at import time.
"""

from __future__ import annotations

from typing import Any, Callable, Tuple

import numpy
import pytest

__all__ = ["assert_returned_while_busy", "busy_launcher", "require_gpu"]

_BUSY_SOURCE = r"""
extern "C" __global__ void qarray_test_busy_wait(long long cycles) {
    const long long start = clock64();
    while (clock64() - start < cycles) {
    }
}
"""


def require_gpu() -> Tuple[Any, int]:
    """Return ``(cupy, number of devices)``; called at the top of a GPU test module, it skips the
    whole module, with the reason, where CuPy or a usable CUDA GPU is missing."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed: the GPU tests need CuPy and an NVIDIA GPU")
    try:
        n_devices = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as error:  # CuPy raises CUDA errors when there is no driver or GPU
        pytest.skip(f"CuPy found no usable CUDA GPU: {error}", allow_module_level=True)
    if n_devices < 1:
        pytest.skip("CuPy found no CUDA GPU", allow_module_level=True)
    return cupy, n_devices


def busy_launcher() -> Callable[[float], None]:
    """Return ``launch(seconds)``: enqueue a one-thread kernel that spins for about ``seconds``
    on the current stream (its clock rate measured here, keeping the fastest of three readings)."""
    import cupy

    kernel = cupy.RawKernel(_BUSY_SOURCE, "qarray_test_busy_wait")
    calibration = 20_000_000
    kernel((1,), (1,), (numpy.int64(calibration),))  # compile and load
    cupy.cuda.get_current_stream().synchronize()
    cycles_per_second = 0.0
    for _ in range(3):  # the clock may still be ramping up: keep the fastest reading
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        kernel((1,), (1,), (numpy.int64(calibration),))
        end.record()
        end.synchronize()
        seconds = max(cupy.cuda.get_elapsed_time(start, end) / 1e3, 1e-6)
        cycles_per_second = max(cycles_per_second, calibration / seconds)

    def launch(seconds: float) -> None:
        kernel((1,), (1,), (numpy.int64(int(cycles_per_second * seconds)),))

    return launch


def assert_returned_while_busy(returned: float, still_busy: bool, finished: float) -> None:
    """The calls returned (``returned`` s) while the busy kernel still ran (``finished`` s in all)."""
    assert still_busy, f"the stream was idle when the calls returned ({returned:.3f} s): a hidden sync"
    assert finished > 0.1, f"the busy kernel ran only {finished:.3f} s"
    assert returned < 0.5 * finished, f"returned after {returned:.3f} s of {finished:.3f} s"
