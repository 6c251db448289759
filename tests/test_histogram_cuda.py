"""The CUDA histogram kernels, run on the CPU emulation of the GPU, against the host histogram.

:meth:`CupyBackend.histogram_update` and :meth:`CupyBackend.histogram_read` run as they
are, with NumPy standing in for CuPy and every launch going to the real kernel source
compiled for the CPU (``tests/cuda_emulation``): the scan (min/max per block, and the
values counted at the histogram's present bins), the blocks' min/max, the plan (fold the
range in, choose ``k`` and ``j_lo``, coarsen the old counts), and the bin pass (the rest).
After any batching the result must equal :func:`qarray.calibration.histogram.histogram` of all the
data, bit for bit: batches that stay within the range (the scan counts everything), that
widen it on one side or both (the scan counts part, the bin pass the rest), and the first.
"""

from __future__ import annotations

from typing import Any, List

import numpy
import pytest

from qarray.backends import cupy_kernels
from qarray.calibration import histogram as H

BLOCK = cupy_kernels.BLOCK_THREADS


def streamed(emulation: Any, parts: List[numpy.ndarray], max_bins: int, omit: bool = False, capacity: int = 3) -> Any:
    """The device histogram of ``parts``, one update per part, read back as a host Histogram."""
    hist, nonfinite = emulation(capacity).histogram(parts, max_bins, omit)
    assert not nonfinite
    return hist


def batches(dtype: str, seed: int):
    rng = numpy.random.default_rng(seed)
    grow = [rng.normal(size=700) * scale for scale in (1e-3, 1.0, 50.0, 1e4)]  # k grows batch by batch
    grow.append(numpy.array([-0.0, 0.0, -1e-30, 1e-30]))
    grow.append(rng.standard_t(2, size=2000) * 1e5)
    return [batch.astype(dtype) for batch in grow]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("max_bins", [4, 37, 4096, 5000])  # 5000: global-memory counters
def test_streamed_device_histogram_equals_the_host_histogram(emulation, dtype, max_bins):
    parts = batches(dtype, seed=max_bins)
    assert streamed(emulation, parts, max_bins) == H.histogram(numpy.concatenate(parts), max_bins)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("max_bins", [8, 2048, 5000])
def test_batches_within_and_beyond_the_range_so_far(emulation, dtype, max_bins):
    """Within the range (the scan counts all), past one end, past both, at the bin edges."""
    rng = numpy.random.default_rng(max_bins)
    first = rng.normal(size=3000)
    within = numpy.clip(rng.normal(size=3000), first.min(), first.max())
    hist = H.histogram(first.astype(dtype), max_bins)
    width = 2.0**hist.k
    edges = (hist.j_lo + numpy.array([0, 1, max_bins - 1, max_bins, max_bins + 1])) * width
    edges = numpy.concatenate([edges, numpy.nextafter(edges, -numpy.inf), numpy.nextafter(edges, numpy.inf)])
    parts = [first, within, first.max() + rng.uniform(0, 2, 2500), edges, rng.normal(size=2000) * 8, within]
    parts = [part.astype(dtype) for part in parts]
    expected = H.histogram(numpy.concatenate(parts), max_bins)
    assert streamed(emulation, parts, max_bins) == expected
    assert streamed(emulation, parts, max_bins, capacity=1) == expected


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_scan_counts_a_batch_within_the_range_and_the_bin_pass_the_rest(emulation, dtype):
    from cuda_emulation.backend import on_device

    rng = numpy.random.default_rng(3)
    first = rng.normal(size=2000).astype(dtype)
    backend = emulation(2).backend
    state = backend.histogram_state(on_device(first), 256)
    counted_by_scan = []
    for part in (first, first[::-1].copy(), first * 3, first[:10] * 0.5):
        backend.histogram_update(state, on_device(part))
        counted_by_scan.append(int(state.ints[5]))
    assert counted_by_scan == [0, 2, 1, 2]  # none (no bins yet), all, part, all
    parts = [first, first[::-1], first * 3, first[:10] * 0.5]
    assert backend.histogram_read(state) == (H.histogram(numpy.concatenate(parts), 256), False)


def test_subnormal_float32_and_tiny_values_against_wide_bins(emulation):
    tiny = (numpy.random.default_rng(5).normal(size=3000) * 1e-41).astype(numpy.float32)
    assert streamed(emulation, [tiny], 64) == H.histogram(tiny, 64)
    assert streamed(emulation, [tiny, tiny[::-1].copy()], 64) == H.histogram(numpy.concatenate([tiny, tiny]), 64)
    wide = numpy.array([-1e-300, 1e-300, -1e300, 1e300, -5e-324, 0.0])
    assert streamed(emulation, [wide[:2], wide[2:]], 16) == H.histogram(wide, 16)


def test_float32_bins_beyond_the_float32_shortcut(emulation):
    """Ranges where the bins are not within +-2**22, or 2**-k is no float32: the float64 way."""
    rng = numpy.random.default_rng(11)
    narrow_far = (1e6 + rng.uniform(0, 1, 3000)).astype(numpy.float32)  # j_lo far beyond 2**22
    huge = (rng.normal(size=3000) * 1e37).astype(numpy.float32)  # k > 126
    small = (rng.normal(size=3000) * 1e-36).astype(numpy.float32)  # k < -100
    for part in (narrow_far, huge, small):
        assert streamed(emulation, [part, part[::-1].copy()], 512) == H.histogram(numpy.concatenate([part, part]), 512)


def test_nan_is_remembered_under_raise_and_left_out_under_omit(emulation):
    values = numpy.array([1.0, numpy.nan, 3.0, numpy.inf, -2.0])
    nothing_finite = numpy.array([numpy.nan, numpy.inf])  # skipped under omit
    assert streamed(emulation, [values, nothing_finite, values], 32, omit=True) == H.histogram(
        numpy.concatenate([values, values]), 32, nan_policy="omit"
    )
    hist, nonfinite = emulation(3).histogram([values[[0, 2, 4]], values], 32, omit=False)
    assert nonfinite and hist is None  # the caller raises (HistogramQuantizationStats)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bin_counts_alone_count_like_the_generic_reference(emulation, dtype):
    from array_api_compat import numpy as compat_numpy

    from qarray.backends import ArrayAPIBackend

    from cuda_emulation.backend import on_device

    values = numpy.random.default_rng(9).standard_t(3, size=4000).astype(dtype)
    hist = H.histogram(values)
    backend = emulation(3).backend
    counts = backend.bin_counts(on_device(values), k=hist.k, j_lo=hist.j_lo + 5, max_bins=4096, omit_nan=True)
    generic = ArrayAPIBackend(compat_numpy)
    expected = generic.bin_counts(values, k=hist.k, j_lo=hist.j_lo + 5, max_bins=4096, omit_nan=True)
    numpy.testing.assert_array_equal(numpy.asarray(counts), expected)
