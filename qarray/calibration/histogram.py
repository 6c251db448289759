"""Exact, mergeable dyadic histograms and the calibration ranges computed from them.

This module owns the histogram of ``docs/calibration.md`` as plain functions over a
small frozen value, :class:`Histogram`: bin ``j`` of width ``w = 2**k`` holds the
values ``x`` with ``j * w <= x < (j + 1) * w``; the histogram keeps the counts of
the bins ``j_lo..j_hi`` that span the data's exact ``[min, max]``, and min and
max themselves. ``k`` depends on min, max and ``max_bins`` only
(:func:`choose_k`), and coarsening a histogram to a wider bin adds counts
(:func:`coarsen`), so :func:`merge` is exact: any batching and any merge order
give the histogram of one pass over all the data, bit for bit.

The ranges (:func:`percentile_range`, :func:`mse_range`, :func:`entropy_range`)
read nothing but a host histogram. :func:`bin_counts` and :func:`histogram`
count an array of any library with its backend's kernel (fused on NumPy/Numba
and CuPy; the generic Array API path is the reference); :func:`update` merges
a batch into a histogram, in one pass over it on NumPy with Numba.

Bin indices are exact floors: ``x / w`` is exact in float64 wherever the
quotient is a normal number; where it underflows (a tiny ``|x|`` against a wide
bin) the floor is still 0 for ``x >= 0`` and -1 for ``x < 0``, which is what
every kernel returns (also when the quotient rounds to ``-0.0``).

Example:
    >>> import numpy
    >>> from qarray.calibration.histogram import histogram, merge, percentile_range
    >>> data = numpy.arange(1000, dtype=numpy.float64)
    >>> whole = histogram(data, max_bins=64)
    >>> parts = merge(histogram(data[:300], max_bins=64), histogram(data[300:], max_bins=64))
    >>> whole == parts
    True
    >>> percentile_range(whole, 99.0)
    (0.0, 992.0)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Tuple

import numpy

from .. import primitives
from ..backends import backend_for, get_backend
from ..backends.spec import DeviceHistograms, WindowCounting
from ..core.checks import check_bool, check_finite_real, check_int, describe
from ..core.dyadic import (
    DEFAULT_MAX_BINS,
    MAX_K,
    MIN_K,
    Histogram,
    bin_floor,
    check_histogram,
    check_max_bins,
    choose_k,
)
from ..core.messages import check_calibration_values, check_nan_policy, nonfinite_values, not_floating
from ..core.namespace import as_array
from ..core.rule import RuleOptions, checked_options, tensor_parameters

__all__ = [
    "DEFAULT_MAX_BINS",
    "DEFAULT_PERCENTILE",
    "Histogram",
    "MAX_K",
    "METHODS",
    "MIN_K",
    "MSE_PERCENTILES",
    "bin_counts",
    "bin_floor",
    "check_max_bins",
    "check_method",
    "check_percentile",
    "choose_k",
    "DeviceHistogram",
    "coarsen",
    "device_histogram",
    "entropy_range",
    "histogram",
    "merge",
    "mse_range",
    "percentile_range",
    "quantization_mse",
    "range_for",
    "update",
]

DEFAULT_PERCENTILE = 99.99
"""The default ``percentile`` of the ``percentile`` method."""

MSE_PERCENTILES = (
    75.0,
    90.0,
    95.0,
    97.5,
    99.0,
    99.5,
    99.75,
    99.9,
    99.95,
    99.975,
    99.99,
    99.995,
    99.999,
    99.9995,
    99.9999,
    99.99995,
    99.99999,
    100.0,
)
"""The ladder of percentiles whose ranges the ``mse`` method compares (100 is min/max)."""

def check_percentile(percentile: Any) -> float:
    """Return ``percentile`` as a float in ``(50, 100]``.

    Raises:
        TypeError: if it is not a real number.
        ValueError: if it is outside ``(50, 100]`` (or NaN).
    """
    if isinstance(percentile, (bool, numpy.bool_)) or not isinstance(
        percentile, (int, float, numpy.floating, numpy.integer)
    ):
        raise TypeError(f"percentile must be a real number in (50, 100], got {describe(percentile)}")
    value = float(percentile)
    if not 50.0 < value <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {describe(percentile)}")
    return value


def check_method(method: Any) -> str:
    """Return ``method`` if it names a calibration method (see :data:`METHODS`).

    Raises:
        ValueError: naming the methods, for anything else.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {describe(method)}")
    return method


def bin_counts(
    values: Any, k: int, j_lo: int, max_bins: int = DEFAULT_MAX_BINS, *, omit_nan: bool = False, backend: Any = None
) -> Any:
    """Count ``values`` into the ``max_bins`` bins ``j_lo, j_lo + 1, ...`` of width ``2**k``.

    The counting kernel of ``values``' backend (fused on NumPy/Numba and CuPy; sort
    and search on the generic Array API path). Values outside those bins are not
    counted; with ``omit_nan`` NaN and ±Inf are left out (without it they must not
    occur: the caller checks them first). Nothing is read back.

    Args:
        values: a floating-point array of any library.
        k: the bin width is ``2**k``.
        j_lo: the index of the first bin.
        max_bins: the number of bins counted.
        omit_nan: leave NaN and ±Inf out.
        backend: the backend (or its name); default the values' own.

    Returns:
        An int64 array of ``max_bins`` counts in ``values``' library, on its device.

    Example:
        >>> import numpy
        >>> bin_counts(numpy.array([0.1, 0.6, 0.7, 1.9]), -1, 0, 4).tolist()
        [1, 2, 0, 1]
    """
    values = as_array(values, "values", kind="float")
    backend = backend_for(values) if backend is None else get_backend(backend)
    if not backend.is_floating(values):
        raise not_floating(values)
    k = check_int(k, "k")
    if not MIN_K <= k <= MAX_K:
        raise ValueError(f"k must be between {MIN_K} and {MAX_K}, got {k}")
    j_lo = check_int(j_lo, "j_lo")
    if not abs(j_lo) < 2**53:  # bin indices are exact integers in float64
        raise ValueError(f"j_lo must be within ±2**53, got {describe(j_lo)}")
    return backend.bin_counts(
        values, k=k, j_lo=j_lo, max_bins=check_max_bins(max_bins), omit_nan=check_bool(omit_nan, "omit_nan")
    )


def histogram(
    values: Any, max_bins: int = DEFAULT_MAX_BINS, *, nan_policy: str = "raise", backend: Any = None
) -> Optional[Histogram]:
    """Return the dyadic histogram of ``values`` (None when there is nothing to count).

    Two passes over ``values`` on its device: min/max (read back, to choose ``k``),
    then the fused bin-and-count; the ``max_bins`` counts are read back once.

    Args:
        values: a floating-point array of any library (Dask arrays: see
            :class:`~qarray.HistogramQuantizationStats`, which merges per-chunk histograms).
        max_bins: the most bins the histogram may use.
        nan_policy: ``"raise"`` refuses NaN and ±Inf; ``"omit"`` leaves them out.
        backend: the backend (or its name); default the values' own.

    Returns:
        A :class:`Histogram`, or None for empty input (or, under ``"omit"``, input
        without a finite value).

    Raises:
        TypeError: if ``values`` is not a floating-point array.
        ValueError: for NaN/±Inf under ``"raise"`` or an unknown ``nan_policy``.

    Example:
        >>> import numpy
        >>> histogram(numpy.array([1.0, 2.0, 2.5]), max_bins=4).counts.tolist()
        [1, 0, 1, 1]
    """
    omit = check_nan_policy(nan_policy)
    max_bins = check_max_bins(max_bins)
    values = as_array(values, "values", kind="float")
    backend = backend_for(values) if backend is None else get_backend(backend)
    if not check_calibration_values(values, backend, allow_empty=True):
        return None
    low, high = backend.minmax(values, omit_nonfinite=omit)
    xp = backend.xp
    both = backend.to_numpy(xp.stack([xp.astype(low, xp.float64), xp.astype(high, xp.float64)]))
    vmin, vmax = numpy.float64(both[0]), numpy.float64(both[1])
    if not (math.isfinite(vmin) and math.isfinite(vmax)):
        if omit:
            return None  # nothing finite to count
        raise nonfinite_values(int(backend.to_numpy(backend.count_nonfinite(values))), backend.size(values))
    vmin, vmax = vmin + 0.0, vmax + 0.0  # -0.0 and 0.0 are one value: keep the bounds canonical
    k = choose_k(vmin, vmax, max_bins)
    j_lo, j_hi = bin_floor(vmin, k), bin_floor(vmax, k)
    counts = backend.bin_counts(values, k=k, j_lo=j_lo, max_bins=max_bins, omit_nan=omit)
    host = numpy.asarray(backend.to_numpy(counts), dtype=numpy.int64)[: j_hi - j_lo + 1].copy()
    return Histogram(k, j_lo, host, vmin, vmax, max_bins)


def update(
    hist: Optional[Histogram],
    values: Any,
    max_bins: int = DEFAULT_MAX_BINS,
    *,
    nan_policy: str = "raise",
    backend: Any = None,
) -> Optional[Histogram]:
    """Return ``merge(hist, histogram(values, max_bins, ...))``, bit for bit, in one pass where the backend can.

    A backend that counts into given bins while it finds min and max
    (:class:`~qarray.backends.spec.WindowCounting`: NumPy with Numba) counts ``values``
    into ``max_bins`` bins of ``hist``'s width around ``hist``'s range, keeping the few
    values outside them; min and max are read only from the blocks of values that reach
    the bins of ``hist``'s min or max (any other value lies strictly between them, so it
    changes neither). The merged histogram needs a width of at least ``hist``'s (``merge``
    never narrows a bin), so the count is coarsened to it exactly and the kept values are
    binned there. Otherwise, and when more values fall outside than the kernel keeps, the
    batch is counted by :func:`histogram` (two passes) and merged.

    Raises:
        TypeError, ValueError: as :func:`histogram` and :func:`merge`.

    Example:
        >>> import numpy
        >>> first = histogram(numpy.array([0.0, 1.0]), max_bins=4)
        >>> update(first, numpy.array([7.0]), max_bins=4) == merge(first, histogram(numpy.array([7.0]), max_bins=4))
        True
    """
    omit = check_nan_policy(nan_policy)
    max_bins = check_max_bins(max_bins)
    values = as_array(values, "values", kind="float")
    backend = backend_for(values) if backend is None else get_backend(backend)
    if hist is not None and isinstance(backend, WindowCounting) and check_calibration_values(
        values, backend, allow_empty=True
    ):
        merged = _update_in_window(check_histogram(hist), values, max_bins, omit, backend)
        if merged is not None:
            return merged
    return merge(hist, histogram(values, max_bins, nan_policy=nan_policy, backend=backend))


def _update_in_window(hist: Histogram, values: Any, max_bins: int, omit: bool, backend: Any) -> Optional[Histogram]:
    """The one-pass :func:`update` of non-empty ``values``, or None where it takes two passes."""
    if hist.max_bins != max_bins:
        raise ValueError(f"histograms with different max_bins cannot merge: {hist.max_bins} and {max_bins}")
    spare = max_bins - hist.counts.shape[0]
    start = hist.j_lo - spare // 2  # the window: max_bins bins, hist's range in the middle
    if not abs(start) < 2**53:  # bin indices stay exact integers in float64
        start = hist.j_lo
    edges = (hist.j_lo - start, hist.j_hi - start)
    counted = backend.window_counts(values, k=hist.k, j_lo=start, n_bins=max_bins, edges=edges)
    if counted is None:
        return None
    counts, nonfinite, low, high, outliers = counted
    if outliers is None:  # too many values outside: the kernel stopped early, every count is partial
        return None
    if nonfinite and not omit:
        raise nonfinite_values(int(nonfinite), backend.size(values))
    # -0.0 and 0.0 are one value: keep the bounds canonical, as histogram() does
    vmin = hist.vmin if low is None else min(hist.vmin, numpy.float64(low) + 0.0)
    vmax = hist.vmax if high is None else max(hist.vmax, numpy.float64(high) + 0.0)
    if vmin == hist.vmin and vmax == hist.vmax:  # the range stays: so do k (hist.k >= choose_k) and the bins
        k, j_lo, j_hi = hist.k, hist.j_lo, hist.j_hi
    else:
        k = max(hist.k, choose_k(vmin, vmax, max_bins))
        j_lo, j_hi = bin_floor(vmin, k), bin_floor(vmax, k)
    before = _coarsen(hist, k)
    total = numpy.zeros(j_hi - j_lo + 1, dtype=numpy.int64)
    total[before.j_lo - j_lo : before.j_hi - j_lo + 1] += before.counts
    if k == hist.k:  # every value counted lies in the bins j_lo..j_hi: add the overlap
        first, last = max(start, j_lo), min(start + max_bins, j_hi + 1)
        if first < last:
            total[first - j_lo : last - j_lo] += counts[first - start : last - start]
    elif counts.any():
        filled = numpy.flatnonzero(counts)  # the window's bins, coarsened as coarsen() does (sorted: add runs)
        bins = ((filled + start) >> min(k - hist.k, 63)) - j_lo
        runs = numpy.flatnonzero(numpy.diff(bins, prepend=-1))
        total[bins[runs]] += numpy.add.reduceat(counts[filled], runs)
    if outliers.size:
        total += get_backend("numpy").bin_counts(outliers, k=k, j_lo=j_lo, max_bins=total.size, omit_nan=False)
    return Histogram(k, j_lo, total, numpy.float64(vmin), numpy.float64(vmax), max_bins)


# -- coarsening and merging -----------------------------------------------------------------------


class DeviceHistogram:
    """A dyadic histogram kept on a device across batches (backends with ``DeviceHistograms``).

    Counting a batch reads nothing back; :meth:`read` is the one read-back. Made by
    :func:`device_histogram`.
    """

    def __init__(self, backend: Any, state: Any) -> None:
        self.backend = backend
        self.state = state

    def accepts(self, values: Any) -> bool:
        """Whether ``values`` can be counted here (the same library and device)."""
        return bool(self.backend.histogram_accepts(self.state, values))

    def update(self, values: Any, *, omit_nan: bool = False) -> None:
        """Count ``values`` (non-finite ones remembered under ``omit_nan=False``, raised when read)."""
        self.backend.histogram_update(self.state, values, omit_nan=omit_nan)

    def read(self) -> Optional[Histogram]:
        """The host histogram of everything counted (None when nothing finite was).

        Raises:
            ValueError: if a batch held NaN/±Inf under ``nan_policy="raise"`` (every read does).
        """
        hist, nonfinite = self.backend.histogram_read(self.state)
        if nonfinite:
            raise nonfinite_values(where="values given to update()")
        return hist


def device_histogram(values: Any, max_bins: int, *, backend: Any = None) -> Optional[DeviceHistogram]:
    """An empty device histogram next to ``values``, or None when its backend keeps none.

    Example:
        >>> import numpy
        >>> device_histogram(numpy.zeros(3), 64) is None  # NumPy counts each batch on the host
        True
    """
    max_bins = check_max_bins(max_bins)
    backend = backend or backend_for(values)
    if not isinstance(backend, DeviceHistograms):
        return None
    return DeviceHistogram(backend, backend.histogram_state(values, max_bins))


def coarsen(hist: Histogram, k: int) -> Histogram:
    """Return ``hist`` with bins of width ``2**k`` (``k >= hist.k``): bin ``j`` goes to ``j >> (k - hist.k)``.

    Exact: counts are added, min and max kept. ``j_lo`` and ``j_hi`` become the floors
    of min and max at the new width.

    Raises:
        ValueError: if ``k`` is smaller than ``hist.k`` or beyond :data:`MAX_K`.

    Example:
        >>> import numpy
        >>> hist = histogram(numpy.array([0.0, 1.0, 2.0, 3.0]), max_bins=4)
        >>> coarsen(hist, hist.k + 1).counts.tolist()
        [2, 2]
    """
    hist = check_histogram(hist)
    k = check_int(k, "k")
    if not hist.k <= k <= MAX_K:
        raise ValueError(f"k must be between the histogram's k ({hist.k}) and {MAX_K}, got {k}")
    return _coarsen(hist, k)


def _coarsen(hist: Histogram, k: int) -> Histogram:
    """:func:`coarsen` of a checked histogram to a checked ``k``."""
    if k == hist.k:
        return hist
    shift = min(k - hist.k, 63)  # |j| < 2**53: a shift by 63 already gives 0 or -1
    indices = numpy.arange(hist.j_lo, hist.j_hi + 1, dtype=numpy.int64) >> shift
    j_lo = int(indices[0])
    # numpy.bincount with weights would add in float64: add the int64 counts exactly instead
    counts = numpy.zeros(int(indices[-1]) - j_lo + 1, dtype=numpy.int64)
    numpy.add.at(counts, indices - j_lo, hist.counts)
    return Histogram(k, j_lo, counts, hist.vmin, hist.vmax, hist.max_bins)


def merge(first: Optional[Histogram], second: Optional[Histogram]) -> Optional[Histogram]:
    """Return the histogram of the data of both (None stands for no data).

    Both are coarsened to the ``k`` that the combined min and max need (at least
    either's), then their counts are added: the result is exactly the histogram of
    one pass over all the data.

    Raises:
        TypeError: if an argument is neither a Histogram nor None.
        ValueError: if their ``max_bins`` differ.

    Example:
        >>> import numpy
        >>> a = histogram(numpy.array([0.0, 1.0]), max_bins=4)
        >>> b = histogram(numpy.array([7.0]), max_bins=4)
        >>> merged = merge(a, b)
        >>> merged == histogram(numpy.array([0.0, 1.0, 7.0]), max_bins=4)
        True
    """
    if first is None or second is None:
        if first is not None:
            return check_histogram(first)
        return None if second is None else check_histogram(second)
    first, second = check_histogram(first), check_histogram(second)
    if first.max_bins != second.max_bins:
        raise ValueError(f"histograms with different max_bins cannot merge: {first.max_bins} and {second.max_bins}")
    vmin = min(first.vmin, second.vmin)
    vmax = max(first.vmax, second.vmax)
    k = max(choose_k(vmin, vmax, first.max_bins), first.k, second.k)
    a, b = _coarsen(first, k), _coarsen(second, k)  # both checked above
    j_lo = min(a.j_lo, b.j_lo)
    j_hi = max(a.j_hi, b.j_hi)
    counts = numpy.zeros(j_hi - j_lo + 1, dtype=numpy.int64)
    counts[a.j_lo - j_lo : a.j_hi - j_lo + 1] += a.counts
    counts[b.j_lo - j_lo : b.j_hi - j_lo + 1] += b.counts
    return Histogram(k, j_lo, counts, numpy.float64(vmin), numpy.float64(vmax), first.max_bins)


# -- ranges -----------------------------------------------------------------------------------------


def percentile_range(hist: Histogram, percentile: float = DEFAULT_PERCENTILE) -> Tuple[float, float]:
    """Return the ``(lower, upper)`` range keeping the central ``percentile`` per cent.

    With ``N`` values and ``value(r)`` the ``r``-th smallest: ``upper`` is the upper edge
    of the bin holding ``value(ceil(p / 100 * N))`` and ``lower`` the lower edge of
    the bin holding ``value(floor((1 - p / 100) * N) + 1)``, each clamped to
    ``[min, max]``. So ``value <= upper <= value + 2**k`` and the mirror for ``lower``.

    Raises:
        TypeError, ValueError: for a bad histogram or a percentile outside ``(50, 100]``.

    Example:
        >>> import numpy
        >>> data = numpy.concatenate([numpy.linspace(-1.0, 1.0, 9999), [1000.0]])
        >>> percentile_range(histogram(data), 99.9)
        (-1.0, 1.0)
    """
    hist = check_histogram(hist)
    p = check_percentile(percentile)
    cumulative = numpy.cumsum(hist.counts)
    total = int(cumulative[-1])
    upper_rank = min(max(math.ceil(p / 100 * total), 1), total)
    lower_rank = min(max(math.floor((1 - p / 100) * total) + 1, 1), total)
    upper_bin = int(numpy.searchsorted(cumulative, upper_rank, side="left"))
    lower_bin = int(numpy.searchsorted(cumulative, lower_rank, side="left"))
    width = hist.width
    with numpy.errstate(over="ignore"):
        upper = numpy.float64(hist.j_lo + upper_bin + 1) * width
        lower = numpy.float64(hist.j_lo + lower_bin) * width
    return _clamped(lower, hist), _clamped(upper, hist)


def quantization_mse(
    hist: Histogram,
    rmin: float,
    rmax: float,
    n_bits: int = 8,
    *,
    is_signed: bool = False,
    is_symmetric: bool = False,
    is_narrow: bool = False,
    is_qat: bool = False,
    is_precomputed_qat: bool = False,
) -> float:
    """Estimate from ``hist`` the mean squared error of quantizing with the range ``[rmin, rmax]``.

    The quantizer is exactly the one the options give on that range: the parameters of
    the rule (:func:`qarray.core.rule.tensor_parameters`: zero point 0 for symmetric and
    precomputed-QAT options) and the quantizer's own spec and kernels
    (:func:`qarray.primitives.quant_spec`, so its clipping range, narrow with
    ``is_narrow``). Each bin's values are taken at the bin's centre, clamped to
    ``[min, max]``, quantized and de-quantized as the quantizer does, and compared in
    float64. A range the rule refuses scores infinity.

    Raises:
        TypeError, ValueError: for a bad histogram or range, options that
            ``QuantizationOptions`` refuses, and ``is_qat`` without ``is_precomputed_qat``
            (its scale comes from unique values that a histogram does not keep).

    Example:
        >>> import numpy
        >>> hist = histogram(numpy.linspace(0.0, 1.0, 1001))
        >>> quantization_mse(hist, 0.0, 1.0, 8) < quantization_mse(hist, 0.0, 0.5, 8)
        True
    """
    hist = check_histogram(hist)
    options = _range_options(n_bits, is_signed, is_symmetric, is_qat, is_narrow, is_precomputed_qat)
    low, high = check_finite_real(rmin, "rmin"), check_finite_real(rmax, "rmax")
    if low > high:
        raise ValueError(f"rmin must not exceed rmax, got rmin={float(low)!r} and rmax={float(high)!r}")
    return _estimated_mse(hist, low, high, options)


def mse_range(
    hist: Histogram,
    n_bits: int = 8,
    *,
    is_signed: bool = False,
    is_symmetric: bool = False,
    is_narrow: bool = False,
    is_qat: bool = False,
    is_precomputed_qat: bool = False,
    percentiles: Tuple[float, ...] = MSE_PERCENTILES,
) -> Tuple[float, float]:
    """Return the candidate range with the smallest estimated quantization MSE.

    Candidates are the :func:`percentile_range` of each ``p`` in ``percentiles`` (100
    included: min/max); each is scored by :func:`quantization_mse` with the given
    options, and ties go to the wider range. Min/max is always a candidate, so the
    estimate of the result is never worse than that of min/max.

    Raises:
        TypeError, ValueError: as :func:`quantization_mse`.

    Example:
        >>> import numpy
        >>> rng = numpy.random.default_rng(0)
        >>> data = numpy.concatenate([rng.normal(size=100_000), [80.0]])
        >>> lower, upper = mse_range(histogram(data), 4)
        >>> upper < 80.0
        True
    """
    hist = check_histogram(hist)
    if not isinstance(percentiles, (tuple, list)):
        raise TypeError(f"percentiles must be a tuple of numbers in (50, 100], got {describe(percentiles)}")
    options = _range_options(n_bits, is_signed, is_symmetric, is_qat, is_narrow, is_precomputed_qat)
    return _best_mse_range(hist, options, percentiles)


def _best_mse_range(
    hist: Histogram, options: RuleOptions, percentiles: Tuple[float, ...]
) -> Tuple[float, float]:
    """:func:`mse_range` with checked options."""
    candidates = {(float(hist.vmin), float(hist.vmax))}
    for p in percentiles:
        candidates.add(percentile_range(hist, p))
    best: Optional[Tuple[float, float, float]] = None  # (error, lower, upper)
    chosen = (float(hist.vmin), float(hist.vmax))
    # wider first, so that a tie keeps the wider range
    for lower, upper in sorted(candidates, key=lambda pair: (-(pair[1] - pair[0]), pair[0])):
        if upper - lower <= 0.0 and (lower, upper) != chosen:
            continue
        error = _estimated_mse(hist, numpy.float64(lower), numpy.float64(upper), options)
        if best is None or error < best[0]:
            best = (error, lower, upper)
    if best is None:
        return chosen
    return best[1], best[2]


def entropy_range(hist: Histogram, n_bits: int = 8, *, is_symmetric: bool = False) -> Tuple[float, float]:
    """Return the range whose clipped histogram loses the least information (KL divergence).

    TensorRT's entropy calibration, as ONNX Runtime's entropy calibrator runs it: for
    each candidate window of bins, the reference distribution ``p`` is the histogram
    clipped to the window (the counts beyond each end added to the end bin); ``q``
    merges the window's bins into as many groups as the quantizer has levels there
    (the last group also takes the remainder), spreads each group's count evenly over
    its non-empty bins, both are smoothed (empty bins get ``1e-4``) and the window with
    the smallest ``KL(p || q)`` wins (the first, among equals).

    * ``is_symmetric``: on the histogram of ``|x|``, windows ``[0, t)`` with
      ``2**(n_bits - 1)`` levels (half of the symmetric grid); the range is ``[-t, t]``.
    * otherwise, on both tails: when the data straddle 0, windows ``[-t, t)`` of the
      signed histogram with ``2**n_bits`` levels, the outliers of both tails folded into
      the end bins (ONNX Runtime's asymmetric case); data on one side of 0 get
      windows from their edge nearest 0, with ``2**n_bits`` levels.

    The range is then clamped to ``[min, max]``. With fewer bins than levels there is
    nothing to search: the window holds all the data.

    Example:
        >>> import numpy
        >>> rng = numpy.random.default_rng(0)
        >>> data = numpy.concatenate([rng.normal(size=100_000), [-60.0, 90.0]])
        >>> lower, upper = entropy_range(histogram(data), 8)
        >>> -60.0 < lower < 0.0 < upper < 90.0
        True
    """
    hist = check_histogram(hist)
    options = checked_options("entropy_range", n_bits=n_bits, is_symmetric=is_symmetric, is_signed=is_symmetric)
    n_bits, is_symmetric = options.n_bits, options.is_symmetric
    width = hist.width
    with numpy.errstate(over="ignore"):
        if is_symmetric:
            folded, folded_width = _fold_absolute(hist)
            stop = _kl_one_sided(folded, 2 ** (n_bits - 1))
            threshold = numpy.float64(stop) * folded_width
            return _clamped(-threshold, hist), _clamped(threshold, hist)
        levels = 2**n_bits
        if hist.j_lo < 0 <= hist.j_hi:  # bins on both sides of 0: a window centred on 0
            half = _kl_centred(hist.counts, -hist.j_lo, levels)
            threshold = numpy.float64(half) * width
            return _clamped(-threshold, hist), _clamped(threshold, hist)
        if hist.j_lo >= 0:  # all values >= 0: windows from the minimum up
            stop = _kl_one_sided(hist.counts, levels)
            return float(hist.vmin), _clamped(numpy.float64(hist.j_lo + stop) * width, hist)
        stop = _kl_one_sided(hist.counts[::-1], levels)  # all < 0: from the maximum down
        return _clamped(numpy.float64(hist.j_hi + 1 - stop) * width, hist), float(hist.vmax)


def range_for(
    hist: Histogram,
    method: str = "percentile",
    *,
    percentile: float = DEFAULT_PERCENTILE,
    n_bits: int = 8,
    is_signed: bool = False,
    is_symmetric: bool = False,
    is_narrow: bool = False,
    is_qat: bool = False,
    is_precomputed_qat: bool = False,
) -> Tuple[float, float]:
    """Return the range ``method`` chooses from ``hist`` (see :data:`METHODS`).

    The options are those of the quantizer the range is for, checked as
    ``QuantizationOptions`` checks them whatever the method (``mse`` scores its
    candidates with that quantizer; ``entropy`` reads ``n_bits`` and ``is_symmetric``).

    Raises:
        TypeError, ValueError: for a bad histogram, method or percentile, options that
            ``QuantizationOptions`` refuses, and ``is_qat`` without ``is_precomputed_qat``
            (QAT scale inference needs the exact unique values, which a histogram does
            not keep).

    Example:
        >>> import numpy
        >>> range_for(histogram(numpy.array([-1.0, 0.0, 4.0])), "minmax")
        (-1.0, 4.0)
    """
    hist = check_histogram(hist)
    method = check_method(method)
    options = _range_options(n_bits, is_signed, is_symmetric, is_qat, is_narrow, is_precomputed_qat)
    return _RANGE_METHODS[method](hist, percentile=percentile, options=options)


_RANGE_METHODS: Dict[str, Callable[..., Tuple[float, float]]] = {
    "minmax": lambda hist, **_: (float(hist.vmin), float(hist.vmax)),
    "percentile": lambda hist, percentile, **_: percentile_range(hist, percentile),
    "mse": lambda hist, options, **_: _best_mse_range(hist, options, MSE_PERCENTILES),
    "entropy": lambda hist, options, **_: entropy_range(hist, options.n_bits, is_symmetric=options.is_symmetric),
}
"""The range methods by name: a new method is one range function and one entry here."""

METHODS: Tuple[str, ...] = tuple(_RANGE_METHODS)
"""The calibration methods :func:`range_for` (and ``method=``) know."""


# -- helpers ------------------------------------------------------------------------------------------


def _range_options(
    n_bits: Any, is_signed: Any, is_symmetric: Any, is_qat: Any, is_narrow: Any, is_precomputed_qat: Any
) -> RuleOptions:
    """The quantizer's options, checked as ``QuantizationOptions`` checks them (each field's
    validator, then how they combine), as ``calibrate`` and ``QuantizedArray`` check them.

    QAT scale inference (``is_qat`` without ``is_precomputed_qat``) is refused: its scale
    comes from the exact unique values, and its quantization does not clip.
    """
    flags = {"is_signed": is_signed, "is_symmetric": is_symmetric, "is_qat": is_qat, "is_narrow": is_narrow}
    options = checked_options(n_bits=n_bits, **flags, is_precomputed_qat=is_precomputed_qat)
    if options.is_qat and not options.is_precomputed_qat:
        raise ValueError(
            "is_qat=True without is_precomputed_qat infers the scale from the exact unique values, "
            "which a histogram does not keep: pass is_precomputed_qat=True (or is_qat=False)"
        )
    return options


def _estimated_mse(hist: Histogram, rmin: numpy.float64, rmax: numpy.float64, options: RuleOptions) -> float:
    """:func:`quantization_mse` with checked arguments: the quantizer's own spec and kernels
    applied to the bin centres; inf for a range the rule refuses."""
    try:
        scale, zero_point, offset = tensor_parameters(rmin, rmax, options)
    except ValueError:  # a range too wide (or too narrow) for parameters: never the best one
        return math.inf
    occupied = hist.counts > 0
    centres = _centres(hist)[occupied]
    backend = get_backend("numpy")
    spec = primitives.quant_spec(scale, zero_point, offset, options, "int64", like=centres, backend=backend)
    with numpy.errstate(over="ignore", invalid="ignore"):  # huge quotients saturate to the clipping range
        quantized, _ = primitives.quantize(centres, spec, check_finite=False, backend=backend)
        restored = primitives.dequantize(
            quantized, primitives.dequant_spec(scale, zero_point, like=quantized, backend=backend), backend=backend
        )
        error = float(numpy.sum(hist.counts[occupied] * (restored - centres) ** 2) / hist.total)
    return error if not math.isnan(error) else math.inf  # overflowing ranges: never the best


def _clamped(value: Any, hist: Histogram) -> float:
    return float(min(max(numpy.float64(value), hist.vmin), hist.vmax))


def _centres(hist: Histogram) -> numpy.ndarray:
    """Each bin's centre ``(j + 1/2) * 2**k``, clamped to ``[min, max]``."""
    indices = numpy.arange(hist.j_lo, hist.j_hi + 1, dtype=numpy.float64) + 0.5
    with numpy.errstate(over="ignore"):
        centres = indices * hist.width
    return numpy.clip(centres, hist.vmin, hist.vmax)


def _fold_absolute(hist: Histogram) -> Tuple[numpy.ndarray, float]:
    """Counts of ``|x|`` in the bins ``0..m`` of width ``2**k``, and that width.

    Bin ``j < 0`` goes to ``-j - 1``. ``k`` is the histogram's, unless ``[0, max |x|]``
    needs more than ``max_bins`` bins at that width (data far from 0, such as values in
    ``[16, 17]``): then ``k`` is the smallest that covers it in ``max_bins`` bins
    (:func:`choose_k`) and the histogram is coarsened to it first. So the folded counts,
    and the search over them, never exceed ``max_bins`` bins.
    """
    largest = max(abs(float(hist.vmin)), abs(float(hist.vmax)))
    hist = coarsen(hist, max(hist.k, choose_k(0.0, largest, hist.max_bins)))
    indices = numpy.arange(hist.j_lo, hist.j_hi + 1, dtype=numpy.int64)
    folded_index = numpy.where(indices < 0, -indices - 1, indices)
    folded = numpy.zeros(int(folded_index.max()) + 1, dtype=numpy.int64)
    numpy.add.at(folded, folded_index, hist.counts)
    return folded, hist.width


def _smooth(distribution: numpy.ndarray, eps: float = 1e-4) -> Optional[numpy.ndarray]:
    """Normalise to a probability distribution in which zeros become ``eps`` (None if all zero).

    The non-zero entries are scaled to hold the rest of the mass, so every entry stays
    positive (taking ``eps`` off each, as the original does, can make small ones negative).
    """
    zeros = distribution == 0
    n_zeros = int(numpy.count_nonzero(zeros))
    if n_zeros == distribution.size:
        return None
    eps = min(eps, 0.5 / max(n_zeros, 1))
    scaled = distribution * ((1.0 - eps * n_zeros) / distribution.sum())
    return numpy.where(zeros, eps, scaled)


def _kl_divergence(window: numpy.ndarray, below: float, above: float, levels: int) -> float:
    """KL(p || q) of one window of counts (see :func:`entropy_range`); inf if undefined."""
    reference = window.copy()
    reference[0] += below
    reference[-1] += above
    size = window.size
    group = size // levels
    labels = numpy.minimum(numpy.arange(size) // group, levels - 1)
    nonzero = window != 0
    sums = numpy.bincount(labels, weights=window, minlength=levels)
    norms = numpy.bincount(labels, weights=nonzero, minlength=levels)
    with numpy.errstate(divide="ignore", invalid="ignore"):
        spread = numpy.where(norms > 0, sums / numpy.maximum(norms, 1.0), 0.0)
    expanded = numpy.where(nonzero, spread[labels], 0.0)
    p = _smooth(reference)
    q = _smooth(expanded)
    if p is None or q is None:
        return math.inf
    return float(numpy.sum(p * numpy.log(p / q)))


# The search scores every window with a closed form over prefix sums (counts, non-empty
# bins, c * log(c)), so a window costs O(1) plus its groups; the windows whose score is
# within rounding of the least are then scored again by :func:`_kl_divergence` itself, so
# the window chosen is the one the plain loop over :func:`_kl_divergence` chooses.

_NEAR_LEAST = 1e-8
"""Windows scoring within this (relative to ``1 + |least|``) of the least are re-scored exactly."""

_MOST_RESCORED = 64
"""At most this many near-least windows are re-scored exactly (the lowest fast scores first)."""

_MOST_GROUP_TERMS = 1 << 26
"""The most group sums a centred entropy search computes (about a second); more is refused."""

_CHUNK = 1 << 20
"""The most group entries scored at once (bounds the memory of the search)."""


@dataclasses.dataclass(frozen=True)
class _Prefix:
    """Prefix sums of a counts array for the closed-form KL score."""

    counts: numpy.ndarray  # float64 counts
    sums: numpy.ndarray  # sums[i] = sum(counts[:i])
    nonzero: numpy.ndarray  # nonzero[i] = count of non-zero counts[:i]
    xlogx: numpy.ndarray  # xlogx[i] = sum(c * log(c) for c in counts[:i] if c > 0)
    total: float

    @classmethod
    def of(cls, counts: numpy.ndarray) -> _Prefix:
        sums = numpy.concatenate([[0.0], numpy.cumsum(counts)])
        nonzero = numpy.concatenate([[0], numpy.cumsum(counts > 0)])
        xlogx = numpy.concatenate([[0.0], numpy.cumsum(_xlogx(counts))])
        return cls(counts, sums, nonzero, xlogx, float(sums[-1]))


def _xlogx(values: numpy.ndarray) -> numpy.ndarray:
    with numpy.errstate(divide="ignore", invalid="ignore"):
        return numpy.where(values > 0, values * numpy.log(values), 0.0)


def _group_sums(prefix: _Prefix, low: numpy.ndarray, high: numpy.ndarray) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """The count and the number of non-empty bins of the groups ``[low, high)``."""
    return prefix.sums[high] - prefix.sums[low], (prefix.nonzero[high] - prefix.nonzero[low]).astype(numpy.float64)


def _log_spread(total: numpy.ndarray, nonzero: numpy.ndarray) -> numpy.ndarray:
    """``log(total / nonzero)`` of groups (0 for an empty group)."""
    with numpy.errstate(divide="ignore", invalid="ignore"):
        return numpy.where(nonzero > 0, numpy.log(total / numpy.maximum(nonzero, 1.0)), 0.0)


def _fast_scores(
    prefix: _Prefix, start: numpy.ndarray, stop: numpy.ndarray, groups: Tuple[numpy.ndarray, ...]
) -> numpy.ndarray:
    """KL(p || q) of the windows ``[start, stop)`` (see :func:`_kl_divergence`) from prefix sums.

    ``groups`` is ``(sum over groups of G * log(G / n), G and n of the first group, G and n
    of the last group)`` per window. The reference ``p`` is the window with the mass below
    and above added to its end bins; ``q`` spreads each group's count ``G`` over its ``n``
    non-empty bins; both are smoothed as :func:`_smooth` does. Non-empty bins contribute
    ``a * r * log(a * r / (b * G / n))``, end bins empty in the window but not in ``p``
    ``a * r * log(a * r / eps_q)``, and the other empty bins ``eps_p * log(eps_p / eps_q)``.
    """
    group_log, first_sum, first_nonzero, last_sum, last_nonzero = groups
    counts = prefix.counts
    below = prefix.sums[start]
    above = prefix.total - prefix.sums[stop]
    window = prefix.sums[stop] - prefix.sums[start]
    zeros = (stop - start) - (prefix.nonzero[stop] - prefix.nonzero[start])
    first, last = counts[start], counts[stop - 1]
    first_filled, last_filled = (first == 0) & (below > 0), (last == 0) & (above > 0)
    zeros_p = zeros - first_filled - last_filled
    eps_p = numpy.minimum(1e-4, 0.5 / numpy.maximum(zeros_p, 1))
    eps_q = numpy.minimum(1e-4, 0.5 / numpy.maximum(zeros, 1))
    with numpy.errstate(divide="ignore", invalid="ignore"):
        a = (1.0 - eps_p * zeros_p) / prefix.total
        b = (1.0 - eps_q * zeros) / window
        below_in = numpy.where(first > 0, below, 0.0)
        above_in = numpy.where(last > 0, above, 0.0)
        mass = window + below_in + above_in
        rlogr = (
            prefix.xlogx[stop]
            - prefix.xlogx[start]
            + _xlogx(first + below_in)
            - _xlogx(first)
            + _xlogx(last + above_in)
            - _xlogx(last)
        )
        group_log = (
            group_log
            + below_in * _log_spread(first_sum, first_nonzero)
            + above_in * _log_spread(last_sum, last_nonzero)
        )
        filled = numpy.where(first_filled, _xlogx(a * below) - a * below * numpy.log(eps_q), 0.0) + numpy.where(
            last_filled, _xlogx(a * above) - a * above * numpy.log(eps_q), 0.0
        )
        score = (
            a * ((numpy.log(a) - numpy.log(b)) * mass + rlogr - group_log)
            + filled
            + zeros_p * eps_p * numpy.log(eps_p / eps_q)
        )
    return numpy.where(window > 0, score, math.inf)


def _group_terms(prefix: _Prefix, bounds: numpy.ndarray) -> Tuple[numpy.ndarray, ...]:
    """The ``groups`` of :func:`_fast_scores` from group boundaries (one row of ``levels + 1`` per window)."""
    sums, nonzero = _group_sums(prefix, bounds[:, :-1], bounds[:, 1:])
    terms = sums * _log_spread(sums, nonzero)
    return terms.sum(axis=1), sums[:, 0], nonzero[:, 0], sums[:, -1], nonzero[:, -1]


def _least_window(fast: numpy.ndarray, exact: Callable[[int], float]) -> Optional[int]:
    """The index of the first window with the least exact score, given the fast scores of all.

    Only the windows whose fast score is within rounding of the least are scored exactly
    (``exact(index)``); None when every score is infinite.
    """
    least = float(numpy.min(fast)) if fast.size else math.inf
    if not math.isfinite(least):
        return None
    near = numpy.flatnonzero(fast <= least + _NEAR_LEAST * (1.0 + abs(least)))
    if near.size > _MOST_RESCORED:
        near = numpy.sort(near[numpy.argsort(fast[near], kind="stable")[:_MOST_RESCORED]])
    best_index, best = int(near[0]), math.inf
    for index in near:
        score = exact(int(index))
        if score < best:
            best_index, best = int(index), score
    return best_index


def _kl_one_sided(counts: numpy.ndarray, levels: int) -> int:
    """How many bins from the start of ``counts`` the least-KL window ``[0, stop)`` keeps.

    Windows with the same group width ``g = stop // levels`` share all groups but the last,
    so each width's groups are summed once: O(len(counts)) in all.
    """
    counts = numpy.asarray(counts, dtype=numpy.float64)
    n_bins = counts.size
    if n_bins <= levels:
        return n_bins
    tail = numpy.concatenate([numpy.cumsum(counts[::-1])[::-1], [0.0]])  # tail[i] = sum(counts[i:])
    prefix = _Prefix.of(counts)
    stops = numpy.arange(levels, n_bins + 1)
    widths = stops // levels
    width_values = numpy.arange(1, n_bins // levels + 1)
    fixed = numpy.empty(width_values.size)
    first_sum, first_nonzero = _group_sums(prefix, numpy.zeros_like(width_values), width_values)
    rows = max(1, _CHUNK // levels)
    for begin in range(0, width_values.size, rows):
        chunk = width_values[begin : begin + rows]
        bounds = chunk[:, None] * numpy.arange(levels)[None, :]  # the first levels - 1 groups
        sums, nonzero = _group_sums(prefix, bounds[:, :-1], bounds[:, 1:])
        fixed[begin : begin + rows] = (sums * _log_spread(sums, nonzero)).sum(axis=1)
    last_low = widths * (levels - 1)
    last_sum, last_nonzero = _group_sums(prefix, last_low, stops)
    groups = (
        fixed[widths - 1] + last_sum * _log_spread(last_sum, last_nonzero),
        first_sum[widths - 1],
        first_nonzero[widths - 1],
        last_sum,
        last_nonzero,
    )
    fast = _fast_scores(prefix, numpy.zeros_like(stops), stops, groups)
    index = _least_window(
        fast, lambda i: _kl_divergence(counts[: stops[i]], 0.0, float(tail[stops[i]]), levels)
    )
    return n_bins if index is None else int(stops[index])


def _kl_centred(counts: numpy.ndarray, zero: int, levels: int) -> int:
    """The half-width ``h`` (in bins) of the least-KL window ``[-h, h)`` around bin ``zero``.

    The windows of one group width ``g = 2 * h // levels`` are scored together, their
    groups summed from prefix sums: one per window and group where the groups are wide
    (:func:`_direct_group_terms`), or by running sums along ``g`` where they are narrow
    (:func:`_strided_group_terms`), whichever is less work. O(n * min(levels, n / levels))
    for ``n`` bins.
    """
    padded, half_max = _centred_counts(counts, zero)
    first = max(1, -(-levels // 2))
    if 2 * half_max <= levels:
        return half_max
    sums = _Prefix.of(padded)
    prefix, total = sums.sums, sums.sums[-1]
    halves = numpy.arange(first, half_max + 1)
    starts, stops = half_max - halves, half_max + halves
    widths = 2 * halves // levels
    fast = numpy.empty(halves.size)
    narrow = widths < levels // 2  # running sums cost levels * g per width, direct levels**2 / 2
    _check_search_work(widths, narrow, levels, counts.size)
    for width in numpy.unique(widths[narrow]):
        chosen = numpy.flatnonzero(widths == width)
        groups = _strided_group_terms(sums, starts[chosen], stops[chosen], int(width), levels)
        fast[chosen] = _fast_scores(sums, starts[chosen], stops[chosen], groups)
    wide = numpy.flatnonzero(~narrow)
    rows = max(1, _CHUNK // levels)
    for begin in range(0, wide.size, rows):
        chosen = wide[begin : begin + rows]
        groups = _direct_group_terms(sums, starts[chosen], stops[chosen], levels)
        fast[chosen] = _fast_scores(sums, starts[chosen], stops[chosen], groups)
    index = _least_window(
        fast,
        lambda i: _kl_divergence(
            padded[starts[i] : stops[i]], float(prefix[starts[i]]), float(total - prefix[stops[i]]), levels
        ),
    )
    return half_max if index is None else int(halves[index])


def _centred_counts(counts: numpy.ndarray, zero: int) -> Tuple[numpy.ndarray, int]:
    """``counts`` as float64, padded with zeros to ``2 * half_max`` bins centred on bin ``zero``."""
    counts = numpy.asarray(counts, dtype=numpy.float64)
    half_max = max(zero, counts.size - zero)
    padded = numpy.zeros(2 * half_max, dtype=numpy.float64)
    padded[half_max - zero : half_max - zero + counts.size] = counts
    return padded, half_max


def _check_search_work(widths: numpy.ndarray, narrow: numpy.ndarray, levels: int, n_bins: int) -> None:
    """Refuse a centred search of more than :data:`_MOST_GROUP_TERMS` group terms (about a second).

    Raises:
        ValueError: naming ``max_bins``, the bins and the levels.
    """
    narrow_widths, members = numpy.unique(widths[narrow], return_counts=True)
    work = int(numpy.count_nonzero(~narrow)) * levels + int(numpy.sum(levels * narrow_widths + members))
    if work > _MOST_GROUP_TERMS:
        raise ValueError(
            f"the entropy search over {n_bins} bins around 0 with {levels} levels would score {work} group "
            f"sums (more than {_MOST_GROUP_TERMS}, about a second): use a histogram with a smaller max_bins, "
            "fewer n_bits, or is_symmetric=True (whose search is linear in the bins)"
        )


def _direct_group_terms(
    prefix: _Prefix, start: numpy.ndarray, stop: numpy.ndarray, levels: int
) -> Tuple[numpy.ndarray, ...]:
    """The ``groups`` of :func:`_fast_scores` for windows ``[start, stop)``, group by group."""
    bounds = start[:, None] + ((stop - start) // levels)[:, None] * numpy.arange(levels + 1)[None, :]
    bounds[:, -1] = stop
    return _group_terms(prefix, bounds)


def _strided_group_terms(
    prefix: _Prefix, start: numpy.ndarray, stop: numpy.ndarray, width: int, levels: int
) -> Tuple[numpy.ndarray, ...]:
    """The ``groups`` of :func:`_fast_scores` for windows whose groups are ``width`` bins wide.

    The first ``levels - 1`` groups of a window starting at ``s`` are the blocks
    ``[s + i * width, s + (i + 1) * width)``: each block's term is computed once, and running
    sums along steps of ``width`` give every window's sum with two look-ups.
    """
    low = int(start.min())
    positions = numpy.arange(low, int(start.max()) + (levels - 2) * width + 1)
    block_sums, block_nonzero = _group_sums(prefix, positions, positions + width)
    terms = numpy.zeros(width + positions.size + (-(width + positions.size)) % width)
    terms[width : width + positions.size] = block_sums * _log_spread(block_sums, block_nonzero)
    running = numpy.cumsum(terms.reshape(-1, width), axis=0).reshape(-1)  # running[j] = terms[j] + running[j - width]
    # running is indexed by position - low + width
    fixed = running[start - low + (levels - 2) * width + width] - running[start - low]
    first_sum, first_nonzero = _group_sums(prefix, start, start + width)
    last_sum, last_nonzero = _group_sums(prefix, start + (levels - 1) * width, stop)
    group_log = fixed + last_sum * _log_spread(last_sum, last_nonzero)
    return group_log, first_sum, first_nonzero, last_sum, last_nonzero
