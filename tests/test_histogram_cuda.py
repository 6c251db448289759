"""The CUDA histogram kernels, run on the CPU emulation of the GPU, against the host histogram.

The launches follow the CuPy backend's ``histogram_update``: min/max of the batch (two
launches), the one-block plan (fold the range in, choose ``k`` and ``j_lo``, coarsen the
old counts into the other buffer), the fused bin-and-count pass; then the state is read
as ``histogram_read`` reads it. After any batching the result must equal
:func:`qarray.histogram.histogram` of all the data, bit for bit. The emulation
(``tests/cuda_emulation``) compiles the real kernel source with the host compiler.
"""

from __future__ import annotations

import numpy
import pytest

from qarray import histogram as H
from qarray.backends import cupy_kernels

from cuda_emulation.build import EmulatedModule

BLOCK = cupy_kernels.BLOCK_THREADS


class EmulatedState:
    """The device state of the CuPy backend, as host arrays the emulated kernels write."""

    def __init__(self, max_bins: int) -> None:
        self.max_bins = max_bins
        self.ints = numpy.zeros(5, dtype=numpy.int64)
        self.bounds = numpy.zeros(2, dtype=numpy.float64)
        self.buffers = [numpy.zeros(max_bins, dtype=numpy.uint64), numpy.zeros(max_bins, dtype=numpy.uint64)]
        self.current = 0

    def update(self, module: EmulatedModule, x: numpy.ndarray, omit: bool, capacity: int = 3) -> None:
        grid = max(1, min(-(-x.size // BLOCK), capacity))
        name = x.dtype.name
        partial = numpy.empty(2 * grid, dtype=numpy.float64)
        low, high = numpy.empty(1, dtype=x.dtype), numpy.empty(1, dtype=x.dtype)
        module.launch(cupy_kernels.kernel_name("minmax_partial", name), grid, BLOCK, x, x.size, int(omit), partial)
        module.launch(cupy_kernels.kernel_name("minmax_final", name), 1, BLOCK, partial, grid, low, high)
        old, new = self.buffers[self.current], self.buffers[1 - self.current]
        new[...] = 0xA5A5A5A5  # garbage: the plan must zero it
        module.launch(
            cupy_kernels.kernel_name("hist_plan", name), 1, BLOCK, low, high, int(omit), self.max_bins,
            self.ints, self.bounds, old, new,
        )
        self.current = 1 - self.current
        use_shared = int(self.max_bins <= cupy_kernels.HIST_SHARED_BINS)
        module.launch(
            cupy_kernels.kernel_name("hist_bin", name), grid, BLOCK, x, x.size, self.ints, self.max_bins,
            new, use_shared,
        )

    def read(self):
        if self.ints[3]:
            raise ValueError("non-finite")
        if not self.ints[0]:
            return None
        k, j_lo = int(self.ints[1]), int(self.ints[2])
        used = H.bin_floor(self.bounds[1], k) - j_lo + 1
        counts = self.buffers[self.current][:used].astype(numpy.int64)
        return H.Histogram(k, j_lo, counts, numpy.float64(self.bounds[0]), numpy.float64(self.bounds[1]), self.max_bins)


def batches(dtype: str, seed: int):
    rng = numpy.random.default_rng(seed)
    grow = [rng.normal(size=700) * scale for scale in (1e-3, 1.0, 50.0, 1e4)]  # k grows batch by batch
    grow.append(numpy.array([-0.0, 0.0, -1e-30, 1e-30]))
    grow.append(rng.standard_t(2, size=2000) * 1e5)
    return [batch.astype(dtype) for batch in grow]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("max_bins", [4, 37, 4096, 5000])  # 5000: global-memory counters
def test_streamed_device_histogram_equals_the_host_histogram(emulated, dtype, max_bins):
    parts = batches(dtype, seed=max_bins)
    state = EmulatedState(max_bins)
    for part in parts:
        state.update(emulated, part, omit=False)
    assert state.read() == H.histogram(numpy.concatenate(parts), max_bins)


def test_subnormal_float32_and_tiny_values_against_wide_bins(emulated):
    tiny = (numpy.random.default_rng(5).normal(size=3000) * 1e-41).astype(numpy.float32)
    state = EmulatedState(64)
    state.update(emulated, tiny, omit=False)
    assert state.read() == H.histogram(tiny, 64)
    wide = numpy.array([-1e-300, 1e-300, -1e300, 1e300, -5e-324, 0.0])
    state = EmulatedState(16)
    state.update(emulated, wide[:2], omit=False)
    state.update(emulated, wide[2:], omit=False)
    assert state.read() == H.histogram(wide, 16)


def test_nan_is_remembered_under_raise_and_left_out_under_omit(emulated):
    values = numpy.array([1.0, numpy.nan, 3.0, numpy.inf, -2.0])
    state = EmulatedState(32)
    state.update(emulated, values, omit=True)
    state.update(emulated, numpy.array([numpy.nan, numpy.inf]), omit=True)  # nothing finite: skipped
    assert state.read() == H.histogram(values, 32, nan_policy="omit")
    state.update(emulated, values, omit=False)
    with pytest.raises(ValueError):
        state.read()


def test_bin_kernel_alone_counts_like_the_generic_reference(emulated):
    from array_api_compat import numpy as compat_numpy

    from qarray.backends import ArrayAPIBackend

    values = numpy.random.default_rng(9).standard_t(3, size=4000)
    hist = H.histogram(values)
    ints = numpy.array([1, hist.k, hist.j_lo + 5, 0, 0], dtype=numpy.int64)
    counts = numpy.zeros(4096, dtype=numpy.uint64)
    kernel = cupy_kernels.kernel_name("hist_bin", "float64")
    emulated.launch(kernel, 3, BLOCK, values, values.size, ints, 4096, counts, 1)
    generic = ArrayAPIBackend(compat_numpy)
    expected = generic.bin_counts(values, k=hist.k, j_lo=hist.j_lo + 5, max_bins=4096, omit_nan=True)
    numpy.testing.assert_array_equal(counts.astype(numpy.int64), expected)
