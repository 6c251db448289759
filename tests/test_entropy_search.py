"""The entropy (KL-divergence) search: the same windows as the plain loop over every window,
in near-linear time, and within max_bins in memory and time for every option."""

from __future__ import annotations

import math
import time
import tracemalloc

import numpy
import pytest

import qarray
from qarray.calibration import histogram as H

# -- the plain loop the search replaces: every window scored by _kl_divergence -----------------------


def reference_one_sided(counts: numpy.ndarray, levels: int) -> int:
    counts = numpy.asarray(counts, dtype=numpy.float64)
    n_bins = counts.size
    if n_bins <= levels:
        return n_bins
    tail = numpy.concatenate([numpy.cumsum(counts[::-1])[::-1], [0.0]])
    best_stop, best = n_bins, math.inf
    for stop in range(levels, n_bins + 1):
        divergence = H._kl_divergence(counts[:stop], 0.0, float(tail[stop]), levels)
        if divergence < best:
            best_stop, best = stop, divergence
    return best_stop


def reference_centred(counts: numpy.ndarray, zero: int, levels: int) -> int:
    padded, half_max = H._centred_counts(counts, zero)
    prefix = numpy.concatenate([[0.0], numpy.cumsum(padded)])
    total = prefix[-1]
    if 2 * half_max <= levels:
        return half_max
    best_half, best = half_max, math.inf
    for half in range(max(1, -(-levels // 2)), half_max + 1):
        start, stop = half_max - half, half_max + half
        divergence = H._kl_divergence(padded[start:stop], float(prefix[start]), float(total - prefix[stop]), levels)
        if divergence < best:
            best_half, best = half, divergence
    return best_half


def random_counts(rng: numpy.random.Generator) -> numpy.ndarray:
    """Counts of many shapes: sparse and dense, small and huge, with empty runs and spikes."""
    size = int(rng.integers(2, 400))
    kind = rng.integers(4)
    if kind == 0:
        counts = rng.integers(0, 4, size=size)
    elif kind == 1:
        counts = rng.poisson(rng.uniform(0.1, 50.0) * numpy.exp(-numpy.linspace(0, rng.uniform(1, 20), size)))
    elif kind == 2:
        counts = rng.integers(0, 2**40, size=size) * (rng.random(size) < rng.uniform(0.05, 1.0))
    else:
        counts = numpy.zeros(size, dtype=numpy.int64)
        counts[rng.integers(0, size, size=int(rng.integers(1, 6)))] = rng.integers(1, 1000, size=1)
    counts = numpy.asarray(counts, dtype=numpy.int64)
    counts[0] = max(counts[0], 1)  # histograms have non-empty end bins
    counts[-1] = max(counts[-1], 1)
    return counts


def test_the_one_sided_search_chooses_the_window_of_the_plain_loop():
    rng = numpy.random.default_rng(6)
    for _ in range(300):
        counts = random_counts(rng)
        levels = int(2 ** rng.integers(1, 7))
        assert H._kl_one_sided(counts, levels) == reference_one_sided(counts, levels), (counts.tolist(), levels)


def test_the_centred_search_chooses_the_window_of_the_plain_loop():
    rng = numpy.random.default_rng(7)
    for _ in range(300):
        counts = random_counts(rng)
        zero = int(rng.integers(1, counts.size))
        levels = int(2 ** rng.integers(1, 7))
        assert H._kl_centred(counts, zero, levels) == reference_centred(counts, zero, levels), (
            counts.tolist(),
            zero,
            levels,
        )


# -- bounded by max_bins ------------------------------------------------------------------------------


def timed_peak(function):
    """``(result, seconds, peak bytes traced)`` of ``function()``."""
    tracemalloc.start()
    try:
        begin = time.perf_counter()
        result = function()
        return result, time.perf_counter() - begin, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("centre", [16.5, 1e6, -1e6, 3e300])
def test_symmetric_entropy_of_data_far_from_zero_stays_within_max_bins(centre):
    values = centre + numpy.random.default_rng(5).uniform(-0.5, 0.5, size=10_000) * (abs(centre) / 33.0)
    hist = H.histogram(values)
    (lower, upper), seconds, peak = timed_peak(lambda: H.entropy_range(hist, 8, is_symmetric=True))
    assert hist.vmin <= lower <= upper <= hist.vmax
    assert peak < 1024 * hist.max_bins  # arrays of max_bins entries: 1 to 4 MiB (was 30 GiB near 1e6)
    assert seconds < 5.0  # milliseconds here (was minutes in [16, 17])


def test_symmetric_entropy_with_default_options_finishes_on_data_in_16_to_17():
    values = numpy.random.default_rng(4).uniform(16.0, 17.0, size=10_000)
    array, seconds, _ = timed_peak(
        lambda: qarray.QuantizedArray(8, values, method="entropy", is_signed=True, is_symmetric=True)
    )
    assert seconds < 5.0
    assert 16.0 <= float(array.quantizer.rmin) <= float(array.quantizer.rmax) <= 17.0


def test_the_search_over_2_to_the_17_bins_takes_well_under_a_second_per_option():
    rng = numpy.random.default_rng(3)
    hist = H.histogram(numpy.concatenate([rng.normal(size=200_000), [-4.0, 7.9]]), 2**17)
    assert hist.counts.size > 100_000
    for n_bits in (4, 8, 9, 12, 16):
        for symmetric in (False, True):
            _, seconds, _ = timed_peak(lambda n=n_bits, s=symmetric: H.entropy_range(hist, n, is_symmetric=s))
            assert seconds < 10.0, (n_bits, symmetric, seconds)  # about 0.2 s at most here (was minutes)


def test_a_centred_search_beyond_a_second_is_refused_naming_max_bins():
    hist = H.histogram(numpy.linspace(-1.0, 1.0, 2**21), 2**21)
    begin = time.perf_counter()
    with pytest.raises(ValueError, match="smaller max_bins"):
        H.entropy_range(hist, 8)
    assert time.perf_counter() - begin < 5.0
    assert H.entropy_range(hist, 8, is_symmetric=True) == (-1.0, 1.0)  # linear: answered
