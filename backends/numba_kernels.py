"""Optional compiled kernels for the NumPy backend, built with Numba when it is installed.

The NumPy backend calls these for large, C-contiguous, native-endian float32 /
float64 input (and integer input for de-quantization; the per-block min/max,
:func:`minmax_grid`, takes 2-d views of any strides); everything else takes
the blocked NumPy path, which is also the fallback when Numba is missing. Both
paths give the integers of the same float64 operation sequence (``x / scale`` by
true division, ``+ zero_point``, round half to even, clip, cast), bit for bit;
the compiled one computes most of them by a cheaper, checked shortcut (see
below). The tests compare them.

How the kernels are built and run:

* Numba is imported, and the kernels compiled, on first use (the first array
  large enough for them), never by ``import qarray``; a lock makes that first
  build thread-safe, and Numba's own compiler lock serialises compiling each new
  dtype combination, also when several threads ask for it at once. ``cache=True`` keeps the machine
  code on disk, so later processes load it in milliseconds.
* Fast-math is off: every operation rounds as IEEE arithmetic does in NumPy (no
  fused multiply-add either), and ``numpy.rint`` compiles to the ``rint``
  instruction, which rounds half to even.
* Each kernel is a sequential loop the compiler vectorises (SIMD); it releases
  the GIL, and large arrays are split into chunks run on a small thread pool,
  one thread per available core (see :mod:`qarray.backends._parallel`). Chunks
  write disjoint parts of the output and return their counts, so results do not
  depend on the scheduling. (Numba's own ``prange`` would compile every dtype
  combination several times more slowly, for no speed gain here.)
* Quantization first tries a cheaper candidate, one sub-block of
  :data:`SUB_BLOCK` elements at a time, and keeps it only where it provably
  equals the division; see "The multiply-and-verify quantization" below.
* Minimum and maximum are computed on the integer images of the floats (a
  monotone bit mapping), which vectorise without fast-math: any NaN makes both
  results NaN, as ``numpy.min``/``numpy.max`` do. The one difference from NumPy:
  when the extreme is a zero and both signed zeros occur, NumPy may return
  either sign (it depends on the order and its SIMD code); here min returns
  ``-0.0`` and max ``+0.0``. Both compare equal and give the same parameters.

Set the environment variable ``QARRAY_DISABLE_NUMBA=1`` (read at each call) to
force the NumPy fallback even when Numba is installed. Install Numba with the
``fast`` extra: ``pip install "qarray[fast]"``.

The multiply-and-verify quantization
------------------------------------

The float64 division ``x / scale`` is not the only cost of the exact kernel: a
float64 vector holds 8 values, and converting, adding, rounding, clipping and
narrowing them costs about as much as the divider, so multiplying by
``1 / scale`` in float64 instead gains little. The candidate is computed in
float32 (16 values per vector), as PyTorch and ONNX Runtime do:
``y' = fl32(fl32(x' * v) + z')`` with ``x' = fl32(x)``, ``v = fl32(1 / scale)``,
``z' = fl32(zero_point)``, then ``rint``, clip and cast in float32 (the bounds
must be float32 numbers). An element keeps its integer only if its ``y'`` is
farther than a bound ``T`` from the nearest half-integer. One comparison of the
largest distance settles a whole sub-block; where it fails, a second loop keeps
the elements that pass and divides the others, so each of their integers and
counts comes from the division.

Why the kept integers are the division's: let ``u = 2**-24`` and
``Y = fl64(fl64(x / scale) + zero_point)``, whose ``rint`` is the reference.
Each float32 rounding (of ``x``, ``1 / scale``, the product, ``zero_point``, the
sum) has relative error at most ``u``, each float64 one at most ``2**-53``, so
``|y' - Y| <= E = 4.01 u (|y'| + |zero_point|)``, plus at most ``2**-50`` from
underflow (the path requires ``2**-100 <= |v| <= 2**100``). With the clip (or
fit) bounds ``low``, ``high``, ``B = max(|low|, |high|)``, the path requires
``B + 2 + |zero_point| <= 2**11`` and takes ``T = 2**-21 (B + 2 + |zero_point|)``:

* where ``|y'| <= B + 2``, ``E + 2**-50 <= 0.51 T``: when ``y'`` is farther than
  ``T`` from every half-integer, no half-integer lies between ``y'`` and ``Y``,
  so ``rint(y') == rint(Y)``. ``|y' - rint(y')|`` is exact in float32 (here
  ``|y'| < 2**23``) and is compared with ``0.5 - T`` rounded down;
* where ``|y'| > B + 2`` (with clipping), ``Y`` lies beyond the same bound by
  more than ``1/2``, so both roundings clip to that bound. Without clipping, a
  sub-block with a candidate outside the fit range is recomputed.

NaN and ±Inf inputs (and float32 overflow) make ``y' - rint(y')`` NaN, which
fails the check, so non-finite values are counted by the division loop. An
element fails the check at random with probability about ``2 T`` (a few per cent
of the sub-blocks hold one, for 8-bit parameters; only that element is divided),
and always where ``x / scale`` is a tie ``k + 1/2``; where the candidate serves
less than half of a sub-block (ties everywhere), after such sub-blocks in a row
the kernel divides the next ones straight away, for a growing number of them. Other
parameters (ranges or zero points beyond about ``2**11``, extreme scales)
always use the division; so does everything when :data:`FAST_PATH` is False
(the tests compare both).
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
import warnings
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy

from qarray.core.granularity import grid_shape

from . import _parallel, numba_profiles
from .spec import grid_layout

__all__ = [
    "DISABLE_ENV",
    "bin_counts",
    "MIN_ELEMENTS",
    "available",
    "dequantize",
    "dequantize_grid",
    "minmax",
    "minmax_grid",
    "quantize",
    "quantize_grid",
    "supported_float",
    "supported_integer",
]

DISABLE_ENV = "QARRAY_DISABLE_NUMBA"
"""Environment variable: set it to ``1`` (or any value but ``0``/empty) to disable Numba."""

MIN_ELEMENTS = 1 << 15
"""Arrays smaller than this take the NumPy path (the call overhead would dominate)."""

FAST_PATH = True
"""Try the float32 candidate of quantization (exact either way); False: divide everywhere."""

SUB_BLOCK = 128
"""Elements verified together: a failed check goes over this many again, element by element.

Smaller sub-blocks pay more loop overhead, larger ones fail more often at random.
The compiled kernels take its value when they are built.
"""

_LANES = 4
"""Rows of counters the bin-and-count kernel spreads consecutive elements over (``i % 4``).

Measured on 2-core AMD EPYC: 8 rows count no faster than 4, also when every value falls in one bin."""

COUNT_BLOCK = 1024
"""Elements whose bins the bin-and-count kernel computes (vectorised) before counting them."""

OUTLIER_CAPACITY = 1024
"""Finite values outside the counted bins that :func:`window_counts` keeps per chunk of the input."""

_MAX_SKIP = 64
"""Sub-blocks divided straight away, at most, after consecutive failed checks."""

_MAX_SPAN = 2.0**11
"""Largest ``B + 2 + |zero_point|`` for the float32 candidate (its tolerance ``T`` is then ``<= 2**-10``)."""

_FLOAT_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
_INTEGER_DTYPES = tuple(
    numpy.dtype(name)
    for name in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
)

_lock = threading.Lock()
_state: dict = {"importable": None, "kernels": None}


# -- availability ----------------------------------------------------------------------------


def available() -> bool:
    """Return True if the compiled kernels can be used: Numba importable and not disabled.

    Reads ``QARRAY_DISABLE_NUMBA`` each time. The first call that finds Numba
    installed imports it (that is, the first large array; never ``import qarray``);
    if the import fails, a ``RuntimeWarning`` says why and the NumPy path is used.

    Example:
        >>> isinstance(available(), bool)
        True
    """
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return False
    if _state["kernels"] is not None:
        return True
    if _state["importable"] is False:
        return False
    return _load() is not None


def supported_float(array: numpy.ndarray) -> bool:
    """Return True if ``array`` can be the input of :func:`minmax` and :func:`quantize`."""
    return array.dtype in _FLOAT_DTYPES and array.dtype.isnative and array.flags.c_contiguous


def supported_integer(array: numpy.ndarray) -> bool:
    """Return True if ``array`` can be the input of :func:`dequantize`."""
    return array.dtype in _INTEGER_DTYPES and array.dtype.isnative and array.flags.c_contiguous


# -- the kernels, as plain Python (compiled by _kernels) --------------------------------------
# Each works on a 1-d C-contiguous chunk and indexes it from 0 (or with unsigned integers),
# which lets the compiler prove the indices non-negative and vectorise the loop.


def _minmax_keys(bits: Any, flip: int, magnitude: int) -> Tuple[int, int, int]:
    """Smallest and largest order key, and the largest magnitude, of float bit patterns.

    ``key = bits ^ ((bits >> 63) & flip)`` orders the integer images of non-NaN floats
    as the floats are ordered; a magnitude above the infinity pattern is a NaN.
    """
    low = numpy.int64(0x7FFFFFFFFFFFFFFF)
    high = numpy.int64(-0x7FFFFFFFFFFFFFFF - 1)
    largest = numpy.int64(0)
    for i in range(bits.shape[0]):
        word = numpy.int64(bits[i])
        key = word ^ ((word >> 63) & flip)
        low = min(low, key)
        high = max(high, key)
        largest = max(largest, word & magnitude)
    return low, high, largest


def _clip_sub_block(
    source: Any,
    target: Any,
    first: Any,
    count: int,
    scale: float,
    zero_point: float,
    low: float,
    high: float,
    inverse: Any,
    zero32: Any,
    low32: Any,
    high32: Any,
    limit: Any,
    try_candidate: bool,
) -> Tuple[int, int]:
    """``target = clip(rint(source / scale + zero_point), low, high)`` over ``count`` elements from ``first``.

    With ``try_candidate``, the float32 candidate (``inverse``, ``zero32``, ``low32``,
    ``high32``) is computed for all of them first, and the largest ``|y' - rint(y')|``,
    compared by its bits, is checked against ``limit`` (the bits of ``0.5 - T``); where
    it fails, only the elements beyond the limit are divided. Return the non-finite
    count and the number of elements the candidate gave.
    """
    nonfinite = 0
    kept = 0
    if try_candidate:
        worst = numpy.int32(0)
        for i in range(count):
            j = first + numpy.uint64(i)  # unsigned indices: no negative-index wrap-around to vectorise
            y = numpy.float32(source[j]) * inverse + zero32
            rounded = numpy.rint(y)
            worst = max(worst, numpy.float32(abs(y - rounded)).view(numpy.int32))  # NaN's bits: above all
            rounded = low32 if rounded < low32 else rounded
            rounded = high32 if rounded > high32 else rounded
            target[j] = rounded
        if worst < limit:
            return 0, count
    for i in range(count):
        j = first + numpy.uint64(i)
        if try_candidate:
            y = numpy.float32(source[j]) * inverse + zero32
            if numpy.float32(abs(y - numpy.rint(y))).view(numpy.int32) < limit:  # the candidate stands
                kept += 1
                continue
        value = numpy.float64(source[j])
        nonfinite += numpy.int64(not (abs(value) < numpy.inf))
        rounded = numpy.rint(value / scale + zero_point)
        rounded = low if rounded < low else rounded
        rounded = high if rounded > high else rounded
        target[j] = rounded
    return nonfinite, kept


def _fit_sub_block(
    source: Any,
    target: Any,
    first: Any,
    count: int,
    scale: float,
    zero_point: float,
    low: float,
    high: float,
    inverse: Any,
    zero32: Any,
    low32: Any,
    high32: Any,
    limit: Any,
    try_candidate: bool,
) -> Tuple[int, int, int]:
    """``target = rint(source / scale + zero_point)`` over ``count`` elements from ``first``;
    count non-finite input and results outside ``[low, high]`` (NaN counts as outside).

    As :func:`_clip_sub_block`, except that the candidate stands for an element only if
    it also lies inside ``[low32, high32]``. Return the two counts and the number of
    elements the candidate gave.
    """
    nonfinite = 0
    outside = 0
    kept = 0
    if try_candidate:
        worst = numpy.int32(0)
        misses = numpy.int32(0)
        for i in range(count):
            j = first + numpy.uint64(i)
            y = numpy.float32(source[j]) * inverse + zero32
            rounded = numpy.rint(y)
            worst = max(worst, numpy.float32(abs(y - rounded)).view(numpy.int32))
            misses += numpy.int32(not ((rounded >= low32) & (rounded <= high32)))
            target[j] = rounded
        if worst < limit and misses == 0:
            return 0, 0, count
    for i in range(count):
        j = first + numpy.uint64(i)
        if try_candidate:
            y = numpy.float32(source[j]) * inverse + zero32
            rounded32 = numpy.rint(y)
            near = numpy.float32(abs(y - rounded32)).view(numpy.int32) < limit
            if near and (rounded32 >= low32) and (rounded32 <= high32):
                kept += 1
                continue
        value = numpy.float64(source[j])
        nonfinite += numpy.int64(not (abs(value) < numpy.inf))
        rounded = numpy.rint(value / scale + zero_point)
        outside += numpy.int64(not ((rounded >= low) & (rounded <= high)))
        target[j] = rounded
    return nonfinite, outside, kept


def _next_skip(kept: int, count: int, failures: int) -> Tuple[int, int]:
    """After a sub-block whose candidate was tried: ``(failures in a row, sub-blocks to divide
    straight away)``. A sub-block counts as failed when the candidate gave under half of it
    (ties, not a stray element near one): 0, 1, 2, 4, ... are then divided after 1, 2, 3,
    4, ... failures in a row, at most :data:`_MAX_SKIP`."""
    if 2 * kept >= count:
        return 0, 0
    failures += 1
    return failures, min(_MAX_SKIP, (1 << min(failures, 16)) >> 2)


def _quantize_span(
    source: Any,
    target: Any,
    begin: int,
    end: int,
    scale: float,
    zero_point: float,
    low: float,
    high: float,
    inverse: Any,
    zero32: Any,
    low32: Any,
    high32: Any,
    limit: Any,
    saturate: bool,
    failures: int,
    skip: int,
) -> Tuple[int, int, int, int, int]:
    """Quantize ``[begin, end)`` one sub-block of :data:`SUB_BLOCK` at a time: clipped to
    ``[low, high]`` (``saturate``, :func:`_clip_sub_block`) or with the values outside it
    counted (:func:`_fit_sub_block`); ``inverse == 0`` disables the float32 candidate.

    ``failures`` and ``skip`` carry :func:`_next_skip`'s state from the previous span.
    Return the non-finite and outside counts, the number of elements the candidate
    gave, and the new ``failures`` and ``skip``.
    """
    nonfinite = 0
    outside = 0
    fast = 0
    for start in range(begin, end, SUB_BLOCK):
        first = numpy.uint64(start)  # unsigned indices: no negative-index wrap-around to vectorise
        count = min(SUB_BLOCK, end - start)
        tried = skip == 0 and inverse != 0
        if saturate:
            clip_counts = _clip_sub_block(
                source, target, first, count, scale, zero_point, low, high, inverse, zero32, low32, high32, limit, tried
            )
            nonfinite += clip_counts[0]
            kept = clip_counts[1]
        else:
            fit_counts = _fit_sub_block(
                source, target, first, count, scale, zero_point, low, high, inverse, zero32, low32, high32, limit, tried
            )
            nonfinite += fit_counts[0]
            outside += fit_counts[1]
            kept = fit_counts[2]
        fast += kept
        if tried:
            failures, skip = _next_skip(kept, count, failures)
        elif skip > 0:
            skip -= 1
    return nonfinite, outside, fast, failures, skip


def _quantize_flat(
    source: Any,
    target: Any,
    scale: float,
    zero_point: float,
    low: float,
    high: float,
    inverse: Any,
    zero32: Any,
    low32: Any,
    high32: Any,
    limit: Any,
    saturate: bool,
) -> Tuple[int, int, int]:
    """Per-tensor quantization of a whole flat chunk (:func:`_quantize_span`): the
    non-finite and outside counts, and the number of elements the candidate gave."""
    counts = _quantize_span(
        source, target, 0, source.shape[0], scale, zero_point, low, high, inverse, zero32, low32, high32, limit,
        saturate, 0, 0,
    )
    return counts[0], counts[1], counts[2]


def _dequantize(source: Any, target: Any, scale: float, zero_point: float) -> None:
    """``target = scale * (float64(source) - zero_point)``, cast to target's dtype."""
    for i in range(source.shape[0]):
        target[i] = scale * (numpy.float64(source[i]) - zero_point)


def _row_candidates(
    scale: Any, zero: Any, low: Any, high: Any, first_group: int, last_group: int, candidates: Any, limits: Any
) -> None:
    """:func:`_candidate` for the blocks ``[first_group, last_group)`` of one grid row, without
    branches (so that the loop vectorises): ``candidates[:, g]`` receives the float32
    ``(inverse, zero32, low32, high32)`` and ``limits[g]`` the bits of the limit, with
    ``inverse == 0`` where the exactness argument does not cover the block (it is then divided).
    """
    for g in range(first_group, last_group):
        s, z, lo, hi = scale[g], zero[g], low[g], high[g]
        span = max(abs(lo), abs(hi)) + 2.0 + abs(z)  # NaN or above the bound for any non-finite part
        inverse = 1.0 / s  # 0, ±inf or NaN for an infinite, zero or NaN scale: out of the range below
        low32, high32 = numpy.float32(lo), numpy.float32(hi)
        covered = (
            (span <= _MAX_SPAN)
            & (abs(inverse) >= 2.0**-100)
            & (abs(inverse) <= 2.0**100)
            & (numpy.float64(low32) == lo)  # clipping in float32 must clip to the same values
            & (numpy.float64(high32) == hi)
        )
        bound = 0.5 - 2.0**-21 * span
        nearest = numpy.float32(bound)
        # where covered, bound lies in (1/4, 1/2): a positive normal float32, whose next value
        # towards zero has the bit pattern one below
        limits[g] = nearest.view(numpy.int32) - numpy.int32(numpy.float64(nearest) > bound)
        candidates[0, g] = numpy.float32(inverse) if covered else numpy.float32(0)
        candidates[1, g] = numpy.float32(z) if covered else numpy.float32(0)
        candidates[2, g] = low32 if covered else numpy.float32(0)
        candidates[3, g] = high32 if covered else numpy.float32(0)


def _quantize_grid(
    source: Any,
    target: Any,
    rows: Any,
    length: int,
    group: int,
    scale: Any,
    zero: Any,
    low: Any,
    high: Any,
    saturate: bool,
    fast_path: bool,
    first_row: int,
    last_row: int,
    first_group: int,
    last_group: int,
) -> Tuple[int, int, int]:
    """Per-block quantization of rows ``[first_row, last_row)``, groups ``[first_group, last_group)``.

    ``source``/``target`` are the flat C-order values of a ``(rows, length)`` matrix; row
    ``r`` takes grid row ``rows[r]``, and its values ``[g * group, (g + 1) * group)`` grid
    column ``g`` of the float64 grids ``scale``, ``zero``, ``low``, ``high``. Each block is
    quantized by the per-tensor sub-block kernels (:func:`_clip_sub_block`,
    :func:`_fit_sub_block`) with its own parameters and float32 candidate
    (:func:`_row_candidates`, when ``fast_path``), so every block gets exactly the
    per-tensor integers: a block of at most :data:`SUB_BLOCK` values as one sub-block,
    a longer one as :func:`_quantize_span` runs a flat array. Blocks do not divide ahead
    after failed checks (:func:`_next_skip`): that bookkeeping cost a fifth of the
    speed of 32-value blocks, while data made only of exact ties now takes about 1.4x
    the time of dividing it straight away (measured, group 128).
    Return the non-finite and outside counts, and how many elements the candidate gave.
    """
    nonfinite = 0
    outside = 0
    fast = 0
    n_groups = scale.shape[1]
    candidates = numpy.zeros((4, n_groups), dtype=numpy.float32)
    limits = numpy.zeros(n_groups, dtype=numpy.int32)
    last_candidates = -1  # the grid row whose candidates are in `candidates`
    for r in range(first_row, last_row):
        p = rows[r]
        if fast_path and p != last_candidates:
            _row_candidates(scale[p], zero[p], low[p], high[p], first_group, last_group, candidates, limits)
            last_candidates = p
        base = r * length
        for g in range(first_group, last_group):
            s, z, lo, hi = scale[p, g], zero[p, g], low[p, g], high[p, g]
            inverse, zero32, low32, high32 = candidates[0, g], candidates[1, g], candidates[2, g], candidates[3, g]
            limit = limits[g]
            stop = base + min((g + 1) * group, length)
            start = base + g * group
            if group > SUB_BLOCK:
                counts = _quantize_span(
                    source, target, start, stop, s, z, lo, hi, inverse, zero32, low32, high32, limit, saturate, 0, 0
                )
                nonfinite += counts[0]
                outside += counts[1]
                fast += counts[2]
            elif saturate:  # written out as in _quantize_span: a shared helper measured 10-20% slower
                clip_counts = _clip_sub_block(
                    source, target, numpy.uint64(start), stop - start, s, z, lo, hi, inverse, zero32, low32, high32,
                    limit, inverse != 0,
                )
                nonfinite += clip_counts[0]
                fast += clip_counts[1]
            else:
                fit_counts = _fit_sub_block(
                    source, target, numpy.uint64(start), stop - start, s, z, lo, hi, inverse, zero32, low32, high32,
                    limit, inverse != 0,
                )
                nonfinite += fit_counts[0]
                outside += fit_counts[1]
                fast += fit_counts[2]
    return nonfinite, outside, fast


def _dequantize_grid(
    source: Any,
    target: Any,
    rows: Any,
    scale: Any,
    zero: Any,
    group: int,
    first_row: int,
    last_row: int,
    first_group: int,
    last_group: int,
) -> None:
    """Per-block ``target = scale * (float64(source) - zero)`` over the same layout as
    :func:`_quantize_grid`."""
    length = source.shape[1]
    for r in range(first_row, last_row):
        p = rows[r]
        for g in range(first_group, last_group):
            s = scale[p, g]
            z = zero[p, g]
            start = g * group
            stop = min(start + group, length)
            for j in range(start, stop):
                target[r, j] = s * (numpy.float64(source[r, j]) - z)


def _minmax_grid(
    bits: Any,
    rows: Any,
    first_row: int,
    group: int,
    first_group: int,
    last_group: int,
    low: Any,
    high: Any,
    flip: int,
    magnitude: int,
    threshold: int,
    low_replace: int,
    high_replace: int,
) -> None:
    """Fold float bit patterns into per-block order keys: ``low[p, g]`` and ``high[p, g]``.

    ``bits`` (2-d, any strides) holds the integer images of rows ``first_row, first_row + 1,
    ...`` of the values' C-order ``(rows, length)`` matrix; row ``r`` belongs to grid row
    ``rows[r]``, and its values ``[g * group, (g + 1) * group)`` to grid column ``g``
    (only ``first_group <= g < last_group`` are read). Each value's order key
    (:func:`_minmax_keys`) is folded into the smallest (``low``) and largest (``high``) key
    of its block, one pass, in place. A value whose magnitude bits exceed ``threshold``
    (NaN; or NaN and ±Inf, to leave them out) folds as ``low_replace`` and ``high_replace``
    instead: the smallest and largest keys (NaN wins), or the keys of +Inf and -Inf (no effect).
    """
    # The loops index slices from 0, so that the compiler knows the indices are not negative
    # (no wrap-around test) and vectorises them.
    length = bits.shape[1]
    for r in range(bits.shape[0]):
        p = rows[first_row + r]
        if group == 1:  # one value per block and row: element-wise folds (two loops: faster, measured)
            values = bits[r, first_group:last_group]
            lows = low[p, first_group:last_group]
            for j in range(values.shape[0]):
                word = numpy.int64(values[j])
                key = word ^ ((word >> 63) & flip)
                lows[j] = min(numpy.int64(lows[j]), low_replace if (word & magnitude) > threshold else key)
            highs = high[p, first_group:last_group]
            for j in range(values.shape[0]):
                word = numpy.int64(values[j])
                key = word ^ ((word >> 63) & flip)
                highs[j] = max(numpy.int64(highs[j]), high_replace if (word & magnitude) > threshold else key)
            continue
        for g in range(first_group, last_group):
            segment = bits[r, g * group : min((g + 1) * group, length)]
            lowest = numpy.int64(low[p, g])
            highest = numpy.int64(high[p, g])
            for j in range(segment.shape[0]):
                word = numpy.int64(segment[j])
                key = word ^ ((word >> 63) & flip)
                bad = (word & magnitude) > threshold
                lowest = min(lowest, low_replace if bad else key)
                highest = max(highest, high_replace if bad else key)
            low[p, g] = lowest
            high[p, g] = highest


def _decode_keys(keys: Any, flip: int, nan_key: int, nan_bits: int) -> None:
    """Turn order keys back into float bit patterns, in place; ``nan_key`` (the key a NaN
    folds as) becomes the bits of NaN."""
    for i in range(keys.shape[0]):
        key = numpy.int64(keys[i])
        keys[i] = nan_bits if key == nan_key else key ^ ((key >> 63) & flip)


def _window_counts(
    values: Any,
    bits: Any,
    counts: Any,
    factor: Any,
    divide: bool,
    j_lo: Any,
    n_bins: Any,
    lanes: int,
    keys: Any,
    edges: Any,
    outliers: Any,
) -> Tuple[int, int, int, int]:
    """Add each finite value's bin, ``floor(x / 2**k) - j_lo``, into ``counts`` where it lies in
    ``[0, n_bins)``; keep the finite values outside, and the order keys of the finite min and max.

    ``x * 2**-k`` (``factor = 2**-k``) equals ``x / 2**k`` (``factor = 2**k``, ``divide``)
    bit for bit whenever ``2**-k`` is a number of the arithmetic's type (``factor``'s: float32
    for float32 input where the caller allows it, else float64) and the product is normal:
    both round the same exact quotient once. A product that underflows is below 1 in
    magnitude, so its floor is still 0 for ``x >= 0`` and -1 for ``x < 0`` (the ``-0.0`` of an
    underflowed negative is moved to -1); one that overflows is outside the bins. The floor
    is an integer of that type, and so is ``floor - j_lo`` inside the bins (``j_lo`` must be
    a number of the type, ``n_bins`` at most ``2**24``); rounding is monotone, so the test
    against ``[0, n_bins)`` is exact. NaN fails it.

    ``counts`` is 1-d: ``lanes`` rows of ``n_bins + 1`` counters (at most ``2**24`` in all), the last
    of each row for what is not counted; element ``i`` of a block counts into row
    ``i % lanes``, so that runs of values in one bin (the bulk of a peaked distribution) do
    not wait on one counter. Each block of :data:`COUNT_BLOCK` elements goes through two
    loops, its bins, then the counting; the first is vectorised by the compiler only as a
    simple loop (the row offsets come from a table for the same reason).

    Min and max: where ``keys`` (``flip``, the magnitude mask and the bits of infinity in
    ``bits``' type) is not empty, a third loop finds the order keys of the finite min and
    max (as :func:`_minmax_keys`) of each block holding a value whose bin (as a column)
    is at most ``edges[0]`` or at least ``edges[1]``, or one outside the bins or not finite;
    ``edges = (n_bins, -1)`` takes every block. Only such a block, still in cache, is read
    again: the finite values outside go to ``outliers`` (as many as it holds). A non-empty
    ``outliers`` that overflows ends the pass at the end of that block: the counts and
    the other results are then partial.

    Returns:
        ``(non-finite count, count of finite values outside, smallest key, largest key)``
        (the keys over the blocks read again); the smallest key is above the largest when
        those blocks hold no finite value, or without ``keys``.
    """
    track = keys.shape[0] != 0
    low_edge, high_edge = edges[0], edges[1]
    flip, magnitude, infinity = (keys[0], keys[1], keys[2]) if track else (0, 0, 0)
    sign = bits.itemsize * 8 - 1  # a constant of each compiled dtype: a variable shift would not vectorise
    stride = numpy.uint32(counts.shape[0] // lanes)
    dump = stride - numpy.uint32(1)
    offsets = numpy.empty(COUNT_BLOCK, dtype=numpy.float32)  # exact: lanes * stride <= 2**24
    for i in range(COUNT_BLOCK):
        offsets[i] = (i % lanes) * (counts.shape[0] // lanes)
    index = numpy.empty(COUNT_BLOCK, dtype=numpy.int32)
    low = bits.dtype.type(magnitude)
    high = ~low
    nonfinite = 0
    outside = 0
    size = values.shape[0]
    for start in range(0, size, COUNT_BLOCK):
        count = min(COUNT_BLOCK, size - start)
        first = numpy.uint64(start)  # unsigned indices: no negative-index wrap-around to vectorise
        missed = False  # flags as bools and the row offsets as floats: integer arithmetic in the
        edge = False  # loop would be widened to int64, halving the values per vector
        for i in range(count):
            value = values[first + numpy.uint64(i)]
            quotient = value / factor if divide else value * factor
            floor = numpy.floor(quotient)
            floor = floor - numpy.float32((floor == 0.0) & (value < 0.0))  # underflowed to -0.0: bin -1
            column = floor - j_lo
            inside = (column >= 0.0) & (column < n_bins)
            missed = missed | (not inside)
            edge = edge | (column <= low_edge) | (column >= high_edge)
            index[numpy.uint64(i)] = numpy.int32((column if inside else n_bins) + offsets[numpy.uint64(i)])
        for i in range(count):
            counts[numpy.uint32(index[numpy.uint64(i)])] += 1
        if track and (edge | missed):
            for i in range(count):
                word = bits[first + numpy.uint64(i)]
                key = word ^ ((word >> sign) & flip)
                finite = (word & magnitude) < infinity
                low = min(low, key if finite else magnitude)
                high = max(high, key if finite else ~magnitude)
        if missed:
            for i in range(count):
                j = first + numpy.uint64(i)
                value = values[j]
                if not abs(value) < numpy.inf:
                    nonfinite += 1
                elif numpy.uint32(index[numpy.uint64(i)]) - numpy.uint32(offsets[numpy.uint64(i)]) == dump:
                    if outside < outliers.shape[0]:
                        outliers[outside] = value
                    outside += 1
            if 0 < outliers.shape[0] < outside:  # the caller counts these values again: stop here
                break
    return nonfinite, outside, low, high


class _Kernels:
    """The compiled dispatchers (built once, by :func:`_kernels`)."""

    def __init__(self, numba: Any) -> None:
        # error_model="numpy": division follows IEEE (no ZeroDivisionError check, which
        # would block vectorisation); fastmath stays off so every operation rounds exactly.
        jit = numba.njit(cache=True, nogil=True, error_model="numpy")
        # The helpers are compiled into their callers: the per-tensor kernel runs one span of
        # sub-blocks, the grid kernel one per block (inlined by Numba: as a call per block of
        # 128 values it cost a quarter of the grid kernel's speed, measured).
        numba.extending.register_jitable(_clip_sub_block)
        numba.extending.register_jitable(_fit_sub_block)
        numba.extending.register_jitable(_next_skip)
        numba.extending.register_jitable(inline="always")(_quantize_span)
        numba.extending.register_jitable(_row_candidates)
        for helper in numba_profiles.HELPERS["inline"]:
            numba.extending.register_jitable(inline="always")(helper)
        for helper in numba_profiles.HELPERS["call"]:
            numba.extending.register_jitable(helper)
        self.minmax_keys = jit(_minmax_keys)
        self.quantize_flat = jit(_quantize_flat)
        self.dequantize = jit(_dequantize)
        self.window_counts = jit(_window_counts)
        self.quantize_grid = jit(_quantize_grid)
        self.dequantize_grid = jit(_dequantize_grid)
        self.minmax_grid = jit(_minmax_grid)
        self.decode_keys = jit(_decode_keys)
        for name, function in numba_profiles.KERNELS.items():  # the runtime profiles' arithmetic
            setattr(self, name, jit(function))


def _load() -> Optional[_Kernels]:
    """Import Numba and wrap the kernels, once, under the lock; None if Numba is unusable."""
    with _lock:
        if _state["kernels"] is None and _state["importable"] is not False:
            if importlib.util.find_spec("numba") is None:
                _state["importable"] = False
                return None
            try:
                import numba  # imported on first use only, on purpose
            except Exception as error:  # a broken install must not break quantization
                _state["importable"] = False
                warnings.warn(
                    f"numba is installed but cannot be imported ({error}); qarray uses its NumPy kernels",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return None
            _state["kernels"] = _Kernels(numba)
            _state["importable"] = True
        return _state["kernels"]


def _reset_lock_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # one held by another thread at the fork would never be released


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_after_fork)


def _kernels() -> _Kernels:
    """The compiled kernels (building them on first use).

    Raises:
        ImportError: if Numba is not installed or cannot be imported.
    """
    kernels = _state["kernels"] or _load()
    if kernels is None:
        raise ImportError("the compiled kernels need numba: pip install 'qarray[fast]'")
    return kernels


# -- public entry points -------------------------------------------------------------------------


def _check_flat(array: Any, argument: str, dtypes: tuple) -> None:
    if not isinstance(array, numpy.ndarray):
        raise TypeError(f"{argument} must be a NumPy array, got {type(array).__name__}")
    if array.ndim != 1 or not array.flags.c_contiguous or not array.dtype.isnative:
        raise ValueError(
            f"{argument} must be a 1-d C-contiguous native-endian array, got "
            f"{array.ndim}-d dtype {array.dtype} (contiguous: {array.flags.c_contiguous})"
        )
    if array.dtype not in dtypes:
        names = ", ".join(dtype.name for dtype in dtypes)
        raise TypeError(f"{argument} must have one of the dtypes {names}, got {array.dtype}")


def _check_target(target: Any, source: numpy.ndarray, dtypes: tuple) -> None:
    _check_flat(target, "target", dtypes)
    if target.shape != source.shape:
        raise ValueError(f"target must have shape {source.shape}, got {target.shape}")
    if not target.flags.writeable:
        raise ValueError("target must be writeable")


def minmax(values: numpy.ndarray) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Return ``(min, max)`` of a 1-d float32/float64 array as 0-d arrays of its dtype.

    Any NaN makes both NaN, as ``numpy.min``/``numpy.max`` do.

    Raises:
        TypeError, ValueError: if ``values`` is not a non-empty 1-d C-contiguous
            float32/float64 array.

    Example:
        >>> low, high = minmax(numpy.array([0.5, -2.0, 3.0]))  # doctest: +SKIP
        >>> float(low), float(high)  # doctest: +SKIP
        (-2.0, 3.0)
    """
    _check_flat(values, "values", _FLOAT_DTYPES)
    if values.size == 0:
        raise ValueError("values must not be empty: min and max of nothing are undefined")
    kernels = _kernels()
    integer, flip, infinity, _ = _GRID_KEYS[values.dtype]
    bits = values.view(integer)
    flip64 = numpy.int64(flip)
    parts = _parallel.run(bits.size, lambda start, stop: kernels.minmax_keys(bits[start:stop], flip64, flip64))
    low = min(part[0] for part in parts)
    high = max(part[1] for part in parts)
    if max(part[2] for part in parts) > infinity:
        nan = numpy.asarray(numpy.nan, dtype=values.dtype)
        return nan, nan.copy()
    return _decode_key(low, values.dtype), _decode_key(high, values.dtype)


def _decode_key(key: int, dtype: numpy.dtype) -> numpy.ndarray:
    """The 0-d array of ``dtype`` whose order key (see :func:`_minmax_keys`) is ``key``."""
    integer, flip, _, _ = _GRID_KEYS[numpy.dtype(dtype)]
    word = numpy.int64(key) ^ ((numpy.int64(key) >> numpy.int64(63)) & numpy.int64(flip))
    return numpy.asarray(word).astype(integer).view(dtype).reshape(())


def quantize(
    source: numpy.ndarray,
    target: numpy.ndarray,
    scale: float,
    zero_point: float,
    low: Optional[float],
    high: Optional[float],
    saturate: bool,
) -> Tuple[int, int]:
    """Quantize ``source`` into ``target``: ``rint(source / scale + zero_point)`` in float64.

    The integers are those of the division, bit for bit, also where the float32
    candidate gives them (see the module documentation). The bounds are a
    :class:`~qarray.backends.spec.QuantSpec`'s: clip to ``[low, high]`` when ``saturate``,
    else count the rounded values outside it.

    Args:
        source: 1-d C-contiguous float32/float64 array.
        target: 1-d C-contiguous integer array of the same length, written in place.
        scale: the quantization step.
        zero_point: the zero point, a scalar.
        low, high: the inclusive bounds, or None (no bounds: nothing clipped or counted).
        saturate: clip to the bounds, else count what falls outside them.

    Returns:
        ``(n_nonfinite, n_outside)``: non-finite inputs, and (without saturation, with
        bounds) rounded values outside them, NaN included; 0 when not applicable.

    Raises:
        TypeError, ValueError: for arrays the kernels cannot take.
    """
    n_nonfinite, n_outside, _ = _quantize(source, target, scale, zero_point, low, high, saturate)
    return n_nonfinite, n_outside


def _quantize(
    source: numpy.ndarray,
    target: numpy.ndarray,
    scale: float,
    zero_point: float,
    low: Optional[float],
    high: Optional[float],
    saturate: bool,
) -> Tuple[int, int, int]:
    """:func:`quantize`, also returning how many elements the float32 candidate gave."""
    _check_flat(source, "source", _FLOAT_DTYPES)
    _check_target(target, source, _INTEGER_DTYPES)
    kernels = _kernels()
    scale, zero_point = float(scale), float(zero_point)
    bounded = low is not None
    saturate = bool(saturate) and bounded
    low, high = (float(low), float(high)) if bounded else (-numpy.inf, numpy.inf)  # type: ignore[arg-type]
    candidate = (_candidate(scale, zero_point, low, high) if FAST_PATH else None) or _NO_CANDIDATE
    kernel = kernels.quantize_flat
    parts = _parallel.run(
        source.size,
        lambda start, stop: kernel(
            source[start:stop], target[start:stop], scale, zero_point, low, high, *candidate, saturate
        ),
    )
    n_nonfinite = int(sum(part[0] for part in parts))
    n_fast = int(sum(part[2] for part in parts))
    n_outside = 0 if saturate or not bounded else int(sum(part[1] for part in parts))
    return n_nonfinite, n_outside, n_fast


_NO_CANDIDATE = (numpy.float32(0), numpy.float32(0), numpy.float32(0), numpy.float32(0), numpy.int32(0))
"""Candidate parameters that make the kernels divide everywhere (``inverse == 0``)."""


def _candidate(scale: float, zero_point: float, low: float, high: float) -> Optional[tuple]:
    """The float32 candidate's parameters ``(inverse, zero32, low32, high32, limit)``, or None
    where the module's exactness argument does not cover ``scale``, ``zero_point`` and the bounds.

    ``limit`` holds the bits of the largest float32 not above ``0.5 - T``, as an int32.
    """
    if not all(math.isfinite(number) for number in (scale, zero_point, low, high)) or scale == 0.0:
        return None
    span = max(abs(low), abs(high)) + 2.0 + abs(zero_point)
    if span > _MAX_SPAN:
        return None
    inverse = 1.0 / scale
    if not 2.0**-100 <= abs(inverse) <= 2.0**100:
        return None
    low32, high32 = numpy.float32(low), numpy.float32(high)
    if float(low32) != low or float(high32) != high:  # clipping in float32 must clip to the same values
        return None
    bound = 0.5 - 2.0**-21 * span
    limit = numpy.float32(bound)
    if float(limit) > bound:
        limit = numpy.nextafter(limit, numpy.float32(0))
    bits = numpy.int32(numpy.array(limit, dtype=numpy.float32).view(numpy.int32)[()])
    return numpy.float32(inverse), numpy.float32(zero_point), low32, high32, bits


def bin_counts(values: numpy.ndarray, k: int, j_lo: int, max_bins: int) -> numpy.ndarray:
    """Count the finite values of a 1-d float32/float64 array into bins of width ``2**k``.

    Bin ``j = floor(x / 2**k)`` (exact; see :func:`qarray.calibration.histogram.bin_floor`) is counted
    at ``j - j_lo`` when that lies in ``[0, max_bins)``; NaN, ±Inf and values outside
    are left out. One pass, no sort: each chunk of the array counts into its own
    counters on the thread pool, and the chunks' counts are added.

    Returns:
        An int64 array of ``max_bins`` counts.

    Raises:
        TypeError, ValueError: for arrays the kernels cannot take.

    Example:
        >>> bin_counts(numpy.array([0.1, 0.6, 0.7, 1.9]), -1, 0, 4).tolist()  # doctest: +SKIP
        [1, 2, 0, 1]
    """
    return _count_window(values, k, j_lo, max_bins, 0, False, (max_bins, -1)).counts


class WindowCounts(NamedTuple):
    """What :func:`window_counts` returns."""

    counts: numpy.ndarray
    """int64 counts of the ``n_bins`` bins from ``j_lo``."""
    nonfinite: int
    """The number of NaN and ±Inf."""
    low: Optional[float]
    """The smallest finite value (None when there is none); with ``edges``, the smallest in
    the blocks that were read again (see :func:`window_counts`)."""
    high: Optional[float]
    """The largest finite value, as ``low``."""
    outliers: Optional[numpy.ndarray]
    """The finite values outside the bins (float64, in no particular order), or None when
    more of them than :data:`OUTLIER_CAPACITY` fell in one chunk of the input: that chunk
    was then left part counted, and every other field is partial too."""


def window_counts(
    values: numpy.ndarray, k: int, j_lo: int, n_bins: int, edges: Optional[Tuple[int, int]] = None
) -> WindowCounts:
    """One pass over a 1-d float32/float64 array: its counts in ``n_bins`` bins of width ``2**k``
    from ``j_lo`` (as :func:`bin_counts`), its finite min and max, its non-finite count, and the
    finite values outside those bins.

    With bins around a histogram's range, a batch's histogram then needs no other pass
    (see :func:`qarray.calibration.histogram.update`). With ``edges = (low, high)``, two
    bins (counted from ``j_lo``), min and max come only from the blocks of
    :data:`COUNT_BLOCK` values holding a value in a bin up to ``low`` or from ``high`` on, or
    outside the bins, or not finite: any other value lies strictly between the bins ``low``
    and ``high``, so when these are the bins of a histogram's min and max, it changes
    neither.

    Raises:
        TypeError, ValueError: for arrays the kernels cannot take.

    Example:
        >>> found = window_counts(numpy.array([0.1, 0.6, 9.0, numpy.nan]), -1, 0, 4)  # doctest: +SKIP
        >>> found.counts.tolist(), found.nonfinite, found.low, found.high, found.outliers.tolist()  # doctest: +SKIP
        ([1, 1, 0, 0], 1, 0.1, 9.0, [9.0])
    """
    return _count_window(values, k, j_lo, n_bins, OUTLIER_CAPACITY, True, edges or (n_bins, -1))


def _count_window(
    values: numpy.ndarray, k: int, j_lo: int, n_bins: int, capacity: int, track: bool, edges: Tuple[int, int]
) -> WindowCounts:
    """:func:`window_counts`, keeping at most ``capacity`` outliers per chunk (min and max only with ``track``)."""
    _check_flat(values, "values", _FLOAT_DTYPES)
    kernel = _kernels().window_counts
    k, j_lo, n_bins = int(k), int(j_lo), int(n_bins)
    if values.dtype == numpy.float32 and -127 <= k <= 126 and abs(j_lo) <= 2**24 and n_bins <= 2**24:
        # float32 arithmetic (twice the values per vector): 2**-k is a float32, and so are
        # j_lo and every bin index inside the bins
        arithmetic: Any = numpy.float32
    else:
        arithmetic = numpy.float64
    divide = k < -1023  # 2**-k is not a float64 there: divide by 2**k instead
    factor = arithmetic(math.ldexp(1.0, k) if divide else math.ldexp(1.0, -k))
    j_lo_float, n_bins_float = arithmetic(j_lo), arithmetic(n_bins)
    edge_columns = numpy.array([min(max(edge, -1), n_bins) for edge in edges], dtype=arithmetic)  # exact
    integer, flip, infinity, _ = _GRID_KEYS[values.dtype]
    bits = values.view(integer)
    keys = numpy.array([flip, flip, infinity] if track else [], dtype=integer)

    lanes = _LANES if _LANES * (n_bins + 1) <= 2**24 else 1  # the kernel's row offsets are float32

    def count(start: int, stop: int) -> Tuple[numpy.ndarray, int, int, int, int, numpy.ndarray]:
        # 32-bit counters hold a chunk's counts (chunks are far below 2**32 elements)
        dtype = numpy.uint32 if stop - start < 2**32 else numpy.int64
        counts = numpy.zeros(lanes * (n_bins + 1), dtype=dtype)
        outliers = numpy.empty(capacity, dtype=numpy.float64)
        nonfinite, outside, low, high = kernel(
            values[start:stop], bits[start:stop], counts, factor, divide, j_lo_float, n_bins_float, lanes, keys,
            edge_columns, outliers,
        )
        summed = counts.reshape(lanes, n_bins + 1)[:, :n_bins].sum(axis=0, dtype=numpy.int64)
        return summed, int(nonfinite), int(outside), int(low), int(high), outliers[: min(outside, capacity)].copy()

    parts = _parallel.run(values.size, count)
    total = parts[0][0]
    for part in parts[1:]:
        total += part[0]
    low, high = min(part[3] for part in parts), max(part[4] for part in parts)
    found = low <= high
    overflow = any(part[2] > capacity for part in parts)
    return WindowCounts(
        total,
        sum(part[1] for part in parts),
        float(_decode_key(low, values.dtype)) if found else None,
        float(_decode_key(high, values.dtype)) if found else None,
        None if overflow else numpy.concatenate([part[5] for part in parts]),
    )


def dequantize(source: numpy.ndarray, target: numpy.ndarray, scale: float, zero_point: float) -> None:
    """De-quantize ``source`` into ``target``: ``scale * (float64(source) - zero_point)``.

    Args:
        source: 1-d C-contiguous integer array.
        target: 1-d C-contiguous float32/float64 array of the same length, written in place.
        scale: the quantization step.
        zero_point: the zero point, a scalar.

    Raises:
        TypeError, ValueError: for arrays the kernels cannot take.
    """
    _check_flat(source, "source", _INTEGER_DTYPES)
    _check_target(target, source, _FLOAT_DTYPES)
    kernels = _kernels()
    scale, zero_point = float(scale), float(zero_point)
    kernel = kernels.dequantize
    _parallel.run(source.size, lambda start, stop: kernel(source[start:stop], target[start:stop], scale, zero_point))


def _grid_parts(n_rows: int, n_groups: int, group: int, task: Any,
                per_thread: int = _parallel.CHUNKS_PER_THREAD) -> List[Any]:
    """Run ``task(first_row, last_row, first_group, last_group)`` over parts of the rows (or,
    for few rows, of the groups), sized by elements so that every core gets work
    (``per_thread`` parts per thread, as :func:`_parallel.chunks` splits)."""
    length = n_groups * group
    if n_rows >= 4 * _parallel.thread_count() or n_groups == 1:
        return _parallel.run(n_rows * length, lambda start, stop: task(start // length, stop // length, 0, n_groups),
                             per_thread)
    unit = n_rows * group
    return _parallel.run(n_groups * unit, lambda start, stop: task(0, n_rows, start // unit, stop // unit), per_thread)


def quantize_grid(
    source: numpy.ndarray,
    target: numpy.ndarray,
    rows: numpy.ndarray,
    parameters: Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray],
    group: int,
    saturate: bool,
) -> Tuple[int, int]:
    """Quantize a 2-d ``(rows, length)`` array block by block (see :func:`_quantize_grid`).

    Each block is quantized as :func:`quantize` quantizes a whole array, with its own
    scale, zero point and bounds (float32 candidate included), so the integers are the
    per-tensor ones of every block, bit for bit.

    Args:
        source: 2-d C-contiguous float32/float64 array.
        target: 2-d C-contiguous integer array of the same shape, written in place.
        rows: int64, the grid row of each source row.
        parameters: ``(scale, zero, low, high)``, 2-d float64 grids ``(grid rows, grid columns)``
            (any strides: a bound the same for every block may be a broadcast view).
        group: the block extent along the last axis.
        saturate: clip to ``[low, high]``, else count the values outside.

    Returns:
        ``(n_nonfinite, n_outside)``.
    """
    kernels = _kernels()
    n_rows, length = source.shape
    scale, zero, low, high = (numpy.asarray(p, dtype=numpy.float64) for p in parameters)
    n_groups = scale.shape[1]
    flat_source, flat_target = source.reshape(-1), target.reshape(-1)
    kernel = kernels.quantize_grid
    parts = _grid_parts(
        n_rows,
        n_groups,
        group,
        lambda r0, r1, g0, g1: kernel(
            flat_source, flat_target, rows, length, group, scale, zero, low, high, saturate, FAST_PATH, r0, r1, g0, g1
        ),
    )
    return int(sum(part[0] for part in parts)), int(sum(part[1] for part in parts))


def dequantize_grid(
    source: numpy.ndarray,
    target: numpy.ndarray,
    rows: numpy.ndarray,
    parameters: Tuple[numpy.ndarray, numpy.ndarray],
    group: int,
) -> None:
    """De-quantize a 2-d ``(rows, length)`` integer array block by block into float ``target``."""
    kernels = _kernels()
    scale, zero = parameters
    n_rows = source.shape[0]
    kernel = kernels.dequantize_grid
    _grid_parts(
        n_rows,
        scale.shape[1],
        group,
        lambda r0, r1, g0, g1: kernel(source, target, rows, scale, zero, group, r0, r1, g0, g1),
    )


_GRID_KEYS = {
    # dtype: (integer image, flip, infinity's bits, NaN's bits)
    numpy.dtype(numpy.float32): (numpy.int32, 0x7FFFFFFF, 0x7F800000, 0x7FC00000),
    numpy.dtype(numpy.float64): (numpy.int64, 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000, 0x7FF8000000000000),
}


def minmax_grid(
    parts: Sequence[Tuple[int, numpy.ndarray]],
    shape: Tuple[int, ...],
    extent: Tuple[int, ...],
    omit_nonfinite: bool = False,
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Return the min and max of every block of float32/float64 values, in one pass.

    The values of ``shape`` are seen as their C-order ``(rows, length)`` matrix
    (:func:`qarray.backends.spec.grid_layout`), given as 2-d views of consecutive rows:
    ``parts`` lists ``(first_row, view)`` pairs that together cover every row once (one
    pair for a matrix that is one view, which then runs on the thread pool). Views may
    have any strides: nothing is copied. Each block's min and max come from the order keys
    of its values (see :func:`minmax`), so they are exact, also for subnormals and signed
    zeros (min takes ``-0.0``, max ``+0.0`` when both occur). NaN in a block makes both of
    its results NaN; with ``omit_nonfinite`` NaN and ±Inf are left out, and a block with
    nothing left gets ``(+Inf, -Inf)``.

    Args:
        parts: ``(first_row, view)`` pairs; every view 2-d, of one native float32/float64 dtype.
        shape: the values' shape (at least 1-d, no zero length).
        extent: the block extent along each axis (checked: one int >= 1 per axis).
        omit_nonfinite: leave NaN and ±Inf out.

    Returns:
        ``(low, high)``: arrays of the values' dtype and the parameter grid's shape.

    Raises:
        TypeError: if a view is not a 2-d float32/float64 NumPy array of native byte order.
        ValueError: if ``parts`` is empty.
        ImportError: if Numba is not installed.

    Example:
        >>> values = numpy.arange(12.0).reshape(3, 4)
        >>> low, high = minmax_grid([(0, values)], values.shape, (1, 3))  # doctest: +SKIP
        >>> low.tolist()  # doctest: +SKIP
        [[0.0, 3.0], [4.0, 7.0], [8.0, 11.0]]
    """
    if not parts:
        raise ValueError("parts must hold at least one (first_row, view) pair, got none")
    dtype = getattr(parts[0][1], "dtype", None)
    for _, view in parts:
        if isinstance(view, numpy.ndarray) and not view.dtype.isnative:
            raise TypeError(f"parts must be of native byte order, got dtype {view.dtype.str}")
        if not isinstance(view, numpy.ndarray) or view.ndim != 2 or view.dtype != dtype or view.dtype not in _GRID_KEYS:
            raise TypeError(
                "parts must hold 2-d float32/float64 NumPy arrays of one dtype, got "
                f"{type(view).__name__} {getattr(view, 'dtype', None)} of {getattr(view, 'ndim', None)} dimension(s)"
            )
    kernels = _kernels()
    dtype = numpy.dtype(dtype)
    image, flip, infinity, nan_bits = _GRID_KEYS[dtype]
    width = 8 * numpy.dtype(image).itemsize
    key_min, key_max = -(1 << (width - 1)), (1 << (width - 1)) - 1
    negative_infinity = ~infinity  # the key of -Inf: every bit of +Inf's key flipped
    rows, n_rows, length, group = grid_layout(shape, extent)
    grid = grid_shape(shape, extent)
    n_groups = grid[-1]
    low = numpy.full((max(1, math.prod(grid[:-1])), n_groups), infinity, dtype=image)
    high = numpy.full(low.shape, negative_infinity, dtype=image)
    # (flip, magnitude mask, threshold, low_replace, high_replace) of _minmax_grid
    if omit_nonfinite:  # NaN and ±Inf (magnitude >= infinity) fold as +Inf into low and -Inf into high
        settings = tuple(numpy.int64(n) for n in (flip, flip, infinity - 1, infinity, negative_infinity))
    else:  # NaN folds as the smallest and largest keys, which decode to NaN
        settings = tuple(numpy.int64(n) for n in (flip, flip, infinity, key_min, key_max))
    kernel = kernels.minmax_grid

    def fold(view: numpy.ndarray, first_row: int, first_group: int, last_group: int, into: Tuple[Any, Any]) -> None:
        kernel(view.view(image), rows, first_row, group, first_group, last_group, into[0], into[1], *settings)

    whole = len(parts) == 1 and parts[0][0] == 0 and parts[0][1].shape[0] == n_rows
    if whole:
        initial = (infinity, negative_infinity)
        _fold_grid_parallel(parts[0][1], tuple(shape), tuple(extent), group, n_groups, fold, (low, high), initial)
    else:
        for first_row, view in parts:
            fold(view, int(first_row), 0, n_groups, (low, high))
    for keys, nan_key in ((low, key_min), (high, key_max)):
        kernels.decode_keys(keys.reshape(-1), numpy.int64(flip), numpy.int64(nan_key), numpy.int64(nan_bits))
    return low.view(dtype).reshape(grid), high.view(dtype).reshape(grid)


def _fold_grid_parallel(
    matrix: numpy.ndarray,
    shape: Tuple[int, ...],
    extent: Tuple[int, ...],
    group: int,
    n_groups: int,
    fold: Callable[[numpy.ndarray, int, int, int, Tuple[Any, Any]], None],
    into: Tuple[numpy.ndarray, numpy.ndarray],
    initial: Tuple[int, int],
) -> None:
    """Run ``fold`` over the ``(rows, length)`` ``matrix`` on the thread pool, into the key grids ``into``.

    Runs of rows whose grid rows no other run has (:func:`_row_slabs`) write ``into``
    directly, when there are enough of them for the threads. Otherwise, when the grids are
    small, each chunk of rows folds into a private copy of them, filled with the ``initial``
    keys, and the copies are combined in chunk order afterwards. Else the few runs of rows,
    or ranges of grid columns of every row, write ``into`` directly; with neither, the
    calling thread folds everything. A block's
    keys are the same however it is split (min and max of integers), so results never
    depend on the split or the scheduling.
    """
    n_rows, length = matrix.shape
    size = n_rows * length
    threads = _parallel.thread_count()
    n_slabs, snap = _row_slabs(shape, extent)
    n_chunks = len(_parallel.chunks(size, threads))

    def rows_into(start: int, stop: int, target: Tuple[Any, Any]) -> Tuple[Any, Any]:
        first_row, last_row = snap(start // length), snap(stop // length)
        if last_row > first_row:
            fold(matrix[first_row:last_row], first_row, 0, n_groups, target)
        return target

    def private(start: int, stop: int) -> Tuple[Any, Any]:
        own = (numpy.full_like(into[0], initial[0]), numpy.full_like(into[1], initial[1]))
        first_row, last_row = start // length, stop // length
        if last_row > first_row:
            fold(matrix[first_row:last_row], first_row, 0, n_groups, own)
        return own

    if n_chunks == 1:
        fold(matrix, 0, 0, n_groups, into)
    elif n_slabs >= 2 * threads:
        _parallel.run(size, lambda start, stop: rows_into(start, stop, into))
    elif into[0].size * n_chunks <= size // 16:
        for low, high in _parallel.run(size, private):
            numpy.minimum(into[0], low, out=into[0])
            numpy.maximum(into[1], high, out=into[1])
    elif n_slabs > 1 and n_slabs >= n_groups:
        _parallel.run(size, lambda start, stop: rows_into(start, stop, into))
    elif n_groups > 1:
        # Column ranges of every row: scattered reads, the last resort (measured 2x slower than rows)
        unit = n_rows * group
        _parallel.run(n_groups * unit, lambda start, stop: fold(matrix, 0, start // unit, stop // unit, into))
    else:
        fold(matrix, 0, 0, n_groups, into)


def _row_slabs(shape: Tuple[int, ...], extent: Tuple[int, ...]) -> Tuple[int, Callable[[int], int]]:
    """Runs of consecutive rows of the ``(rows, length)`` matrix that share no grid row with other runs.

    Rows are C-ordered over the leading axes, and row ``r`` takes the grid row of its leading
    indices divided by the extent. Up to the first leading axis whose extent exceeds 1 (axis
    ``k``), every index starts a new set of grid rows; along axis ``k``, every ``extent[k]``-th
    index does; the axes after ``k`` never do. So the runs ("slabs") are ``extent[k]`` indices
    of axis ``k`` with all the axes after it (one row each when every leading extent is 1).

    Returns:
        ``(n_slabs, snap)``: how many slabs there are, and ``snap(row)``, the first slab
        boundary at or after ``row`` (``snap(0) == 0``, ``snap(n_rows) == n_rows``).
    """
    leading, leading_extent = shape[:-1], extent[:-1]
    axis = next((a for a, size in enumerate(leading_extent) if size > 1), len(leading))
    if axis == len(leading):
        return max(1, math.prod(leading)), lambda row: row
    unit = math.prod(leading[axis + 1 :])  # rows per index of the axis
    span = leading[axis] * unit  # rows per index of the axes before it
    slab = leading_extent[axis] * unit
    n_slabs = math.prod(leading[:axis]) * -(-leading[axis] // leading_extent[axis])

    def snap(row: int) -> int:
        outer, within = divmod(row, span)
        return outer * span + min(-(-within // slab) * slab, span)

    return n_slabs, snap
