"""Dyadic histograms on the host: the value type and the rules of bins, below the kernels.

:class:`Histogram` (bin ``j`` of width ``2**k`` holds the values ``x`` with
``j * 2**k <= x < (j + 1) * 2**k``), the exact bin index :func:`bin_floor`, the choice
of ``k`` (:func:`choose_k`), and the checks of histogram arguments. The kernels build
histograms of this type (the GPU's are read back into one); :mod:`qarray.calibration.histogram`
counts, merges and reads ranges from them. See ``docs/calibration.md``.

Example:
    >>> choose_k(0.0, 1.0, 4096), bin_floor(-0.75, -1)
    (-11, -2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy

from .checks import check_finite_real, check_int, describe

__all__ = [
    "DEFAULT_MAX_BINS",
    "Histogram",
    "MAX_K",
    "MAX_MAX_BINS",
    "MIN_K",
    "MIN_MAX_BINS",
    "bin_floor",
    "check_histogram",
    "check_max_bins",
    "choose_k",
]

DEFAULT_MAX_BINS = 4096
"""The default number of bins a histogram may use (``max_bins``)."""

MAX_MAX_BINS = 1 << 24
"""The largest ``max_bins`` accepted (16 Mi bins of int64 counts: 128 MiB)."""

MIN_MAX_BINS = 4
"""The smallest ``max_bins`` accepted: with 4 bins every finite range fits some ``k <= 1023``."""

MIN_K = -1074
"""The smallest ``k``: ``2**-1074`` is the smallest positive float64."""

MAX_K = 1023
"""The largest ``k`` ever needed (with ``max_bins >= 4``): ``2**1023`` is the largest power of two."""

_MAX_INDEX = 2.0**53
"""Bin indices stay below this in magnitude, so each is an exact integer in float64."""


@dataclass(frozen=True, eq=False)
class Histogram:
    """A dyadic histogram on the host: bin width ``2**k``, counts of bins ``j_lo..j_hi``.

    Attributes:
        k: the bin width is ``2**k``.
        j_lo: the index of the bin holding ``vmin``.
        counts: int64 counts of the bins ``j_lo..j_hi`` (``counts[0]`` and
            ``counts[-1]`` are positive: they hold min and max).
        vmin: the exact smallest value (float64).
        vmax: the exact largest value (float64).
        max_bins: the most bins the histogram may use.

    Build one with :func:`histogram`; combine two with :func:`merge`.

    Example:
        >>> import numpy
        >>> from qarray.calibration.histogram import histogram
        >>> hist = histogram(numpy.array([0.25, 0.5, 3.0]), max_bins=8)
        >>> hist.k, hist.j_lo, hist.j_hi, hist.counts.tolist()
        (-1, 0, 6, [1, 1, 0, 0, 0, 0, 1])
    """

    k: int
    j_lo: int
    counts: numpy.ndarray
    vmin: numpy.float64
    vmax: numpy.float64
    max_bins: int = DEFAULT_MAX_BINS

    @property
    def j_hi(self) -> int:
        """The index of the bin holding ``vmax``."""
        return self.j_lo + int(self.counts.shape[0]) - 1

    @property
    def width(self) -> float:
        """The bin width ``2**k`` (a float64 power of two)."""
        return math.ldexp(1.0, self.k)

    @property
    def total(self) -> int:
        """The number of values counted."""
        return int(self.counts.sum())

    def edges(self) -> numpy.ndarray:
        """The ``len(counts) + 1`` bin edges ``j * 2**k`` (float64; exact up to overflow)."""
        indices = numpy.arange(self.j_lo, self.j_hi + 2, dtype=numpy.float64)
        with numpy.errstate(over="ignore"):
            return indices * self.width

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self.k == other.k
            and self.j_lo == other.j_lo
            and self.max_bins == other.max_bins
            and _same_float(self.vmin, other.vmin)
            and _same_float(self.vmax, other.vmax)
            and self.counts.shape == other.counts.shape
            and bool(numpy.array_equal(self.counts, other.counts))
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Histogram(k={self.k}, j_lo={self.j_lo}, j_hi={self.j_hi}, total={self.total}, "
            f"vmin={float(self.vmin)!r}, vmax={float(self.vmax)!r}, max_bins={self.max_bins})"
        )


# -- checks ------------------------------------------------------------------------------------


def check_max_bins(max_bins: Any) -> int:
    """Return ``max_bins`` as an int in ``[4, 2**24]``.

    Raises:
        TypeError: if it is not an int.
        ValueError: if it is out of range.

    Example:
        >>> check_max_bins(4096)
        4096
    """
    value = check_int(max_bins, "max_bins")
    if not MIN_MAX_BINS <= value <= MAX_MAX_BINS:
        raise ValueError(f"max_bins must be an int between {MIN_MAX_BINS} and {MAX_MAX_BINS}, got {value}")
    return value


def check_histogram(hist: Any) -> Histogram:
    """Return ``hist`` if it is a whole :class:`Histogram`, as :func:`histogram` makes them.

    Its fields must agree: ``k`` in ``[MIN_K, MAX_K]``, ``max_bins`` in range, finite
    ``vmin <= vmax`` whose bins at width ``2**k`` are ``j_lo`` and ``j_hi``, and 1 to
    ``max_bins`` non-negative int64 counts, the first and last positive (they hold min
    and max). One pass over the counts.

    Raises:
        TypeError: if ``hist`` is not a Histogram, or a field has the wrong type.
        ValueError: naming the field that contradicts the others.
    """
    if not isinstance(hist, Histogram):
        raise TypeError(f"hist must be a Histogram, got {type(hist).__name__}")
    k, j_lo = check_int(hist.k, "hist.k"), check_int(hist.j_lo, "hist.j_lo")
    if not MIN_K <= k <= MAX_K:
        raise ValueError(f"hist.k must be between {MIN_K} and {MAX_K}, got {k}")
    max_bins = check_max_bins(hist.max_bins)
    vmin, vmax = check_finite_real(hist.vmin, "hist.vmin"), check_finite_real(hist.vmax, "hist.vmax")
    counts = hist.counts
    if not isinstance(counts, numpy.ndarray) or counts.dtype != numpy.int64 or counts.ndim != 1:
        raise TypeError(f"hist.counts must be a 1-d int64 NumPy array, got {describe(counts)}")
    if not 1 <= counts.shape[0] <= max_bins or counts[0] <= 0 or counts[-1] <= 0 or bool((counts < 0).any()):
        raise ValueError(
            f"hist.counts must be 1 to max_bins ({max_bins}) counts >= 0, the first and last > 0 (they "
            f"hold min and max), got {counts.shape[0]} counts"
        )
    if not (vmin <= vmax and _fits(vmin, k) and _fits(vmax, k)):
        raise ValueError(f"hist.vmin ({vmin!r}) and hist.vmax ({vmax!r}) do not fit bins of width 2**{k}")
    if (bin_floor(vmin, k), bin_floor(vmax, k)) != (j_lo, hist.j_hi):
        raise ValueError(
            f"hist.j_lo and the number of counts must give the bins of vmin and vmax at width 2**{k}: "
            f"{bin_floor(vmin, k)} and {bin_floor(vmax, k)}, got {j_lo} and {hist.j_hi}"
        )
    return hist


def _fits(value: float, k: int) -> bool:
    """Whether ``|value| / 2**k < 2**53`` (bin indices are exact integers in float64)."""
    return k + 53 > MAX_K or abs(value) < math.ldexp(1.0, k + 53)


# -- bin indices and k ---------------------------------------------------------------------------


def bin_floor(value: float, k: int) -> int:
    """Return the index of the bin of width ``2**k`` holding ``value``: ``floor(value / 2**k)``.

    Exact for every finite float64 ``value`` and ``k`` in ``[-1074, 1023]`` with
    ``|value| / 2**k < 2**53`` (an underflowing quotient still floors to 0 or -1).

    Raises:
        TypeError: if ``value`` is not a real number or ``k`` not an int.
        ValueError: for a non-finite ``value``, ``k`` out of range, or ``|value| / 2**k >= 2**53``.

    Example:
        >>> bin_floor(-0.75, -1), bin_floor(3.0, 1), bin_floor(-1e-300, 900)
        (-2, 1, -1)
    """
    value, k = check_finite_real(value, "value"), check_int(k, "k")
    if not MIN_K <= k <= MAX_K:
        raise ValueError(f"k must be between {MIN_K} and {MAX_K}, got {k}")
    if not _fits(value, k):
        raise ValueError(f"value {value!r} has no exact bin index at width 2**{k} (|value| / 2**k >= 2**53)")
    return _floor_index(float(value), k)


def _floor_index(value: float, k: int) -> int:
    """:func:`bin_floor` without its checks (the callers have made them)."""
    quotient = value / math.ldexp(1.0, k)
    if quotient == 0.0 and value < 0.0:  # underflowed to -0.0: the true floor is -1
        return -1
    return math.floor(quotient)


def choose_k(vmin: float, vmax: float, max_bins: int = DEFAULT_MAX_BINS) -> int:
    """Return the ``k`` of the dyadic histogram (``docs/calibration.md``) for data spanning ``[vmin, vmax]``.

    The smallest integer ``k >= -1074`` with
    ``floor(vmax / 2**k) - floor(vmin / 2**k) + 1 <= max_bins`` and
    ``max(|vmin|, |vmax|) / 2**k < 2**53``. Both conditions only get easier as ``k``
    grows, so a binary search over ``[-1074, 1023]`` finds it with exact integer
    arithmetic (the CUDA kernel runs the same search).

    Raises:
        TypeError: if a bound is not a real number.
        ValueError: if the bounds are not finite or ``vmin > vmax``.

    Example:
        >>> choose_k(0.0, 1.0, 4096), choose_k(-3.0, 3.0, 4), choose_k(5.0, 5.0)
        (-11, 1, -50)
    """
    max_bins = check_max_bins(max_bins)
    vmin, vmax = float(check_finite_real(vmin, "vmin")), float(check_finite_real(vmax, "vmax"))
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or vmin > vmax:
        raise ValueError(f"vmin and vmax must be finite with vmin <= vmax, got {vmin!r} and {vmax!r}")
    largest = max(abs(vmin), abs(vmax))
    low = MIN_K
    if largest > 0.0:
        low = max(low, math.frexp(largest)[1] - 53)
    high = MAX_K
    while low < high:  # the smallest k in [low, high] whose span fits (every k >= low fits 2**53)
        middle = (low + high) // 2
        if _floor_index(vmax, middle) - _floor_index(vmin, middle) + 1 <= max_bins:
            high = middle
        else:
            low = middle + 1
    return low


def _same_float(first: Any, second: Any) -> bool:
    return numpy.float64(first).tobytes() == numpy.float64(second).tobytes()
