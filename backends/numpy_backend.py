"""The NumPy backend: quantization kernels for host arrays without full-size temporaries.

The generic Array API path allocates a float64 copy of the input and several
full-size intermediates. Here the input is processed in blocks small enough to
stay in the processor's cache, with in-place ufuncs (``out=``) on one reusable
float64 buffer, and each block's result is written straight into the integer
output. The arithmetic is the same float64 sequence as the generic path
(``x / scale`` by true division, ``+ zero_point``, round half to even, clip,
cast), so results are bit-identical to it.

When Numba is installed, large C-contiguous float32/float64 arrays go through
the compiled kernels of :mod:`qarray.backends.numba_kernels` instead (one pass,
vectorised, on all cores), which give the same bits; set
``QARRAY_DISABLE_NUMBA=1`` to keep the NumPy path. Numba is only imported the
first time such an array is quantized. The per-block min/max (``minmax`` with an
``extent``) takes its compiled kernel for large float32/float64 input of any
layout (strided views are read where they are), and the generic path otherwise.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, List, Optional, Tuple

import numpy
from array_api_compat import numpy as compat_numpy

from . import _parallel, numba_kernels, numba_packing, numba_profiles
from .array_api import ArrayAPIBackend, Bounds
from .spec import Problems, QuantSpec, check_extent, check_out, grid_layout

__all__ = ["NumpyBackend", "BLOCK_ELEMENTS", "MINMAX_BLOCK_ELEMENTS"]

BLOCK_ELEMENTS = 1 << 16
"""Elements per block: a 512 KiB float64 buffer, which stays in a typical L2 cache."""
PIECE_ELEMENTS = 1 << 20
"""Elements of one piece when per-block quant/dequant reads a non-contiguous array: two buffers
of this many elements (8 MiB each for float64 values or int64 integers) stand in for a
copy of the whole array."""

MINMAX_BLOCK_ELEMENTS = 1 << 18
"""Elements per block of the min/max pass: min then max of one block read it from cache."""


class NumpyBackend(ArrayAPIBackend):
    """Blocked, in-place NumPy kernels (compiled ones with Numba); generic path for the rest.

    Zero-point arrays that broadcast against the values take the generic path;
    parameter grids (per channel, per group) have their own kernels.

    Example:
        >>> import numpy
        >>> from qarray.backends.spec import QuantSpec
        >>> q, _ = NumpyBackend().quantize(numpy.array([0.4, 2.6]), QuantSpec.per_tensor(1.0, 0, (0, 3), "int8"))
        >>> q
        array([0, 3], dtype=int8)
    """

    host_resident = True

    def __init__(self) -> None:
        super().__init__(compat_numpy, name="numpy")

    def asarray(self, values: Any, device: Any = None) -> Any:
        """Return ``values`` as a NumPy array, copying other libraries' arrays to the host.

        Args:
            values: an array of any library; a NumPy array is returned as it is.
            device: not used (NumPy arrays live on the host); see :meth:`ArrayAPIBackend.asarray`.

        Returns:
            A NumPy array (``values`` itself, or a host copy).
        """
        if isinstance(values, numpy.ndarray):
            return values
        return self.to_numpy(values)

    def copy(self, array: Any) -> Any:
        """Return a C-contiguous copy of ``array`` that shares no memory with it.

        Large arrays are copied in chunks on several threads (first touching a new
        array's pages costs as much as copying into it).

        Args:
            array: a NumPy array.

        Returns:
            The copy (see :meth:`ArrayAPIBackend.copy`).
        """
        array = numpy.asarray(array)
        if array.dtype.hasobject:
            return numpy.array(array, copy=True, order="C")
        result = numpy.empty(array.shape, dtype=array.dtype)
        pair = _flat_pair(array, result)
        if pair is None:
            numpy.copyto(result, array)
            return result
        source, target = pair
        _parallel.run(source.size, lambda start, stop: numpy.copyto(target[start:stop], source[start:stop]))
        return result

    # -- statistics ------------------------------------------------------------------------

    def minmax(
        self, values: Any, omit_nonfinite: bool = False, *, extent: Optional[Tuple[int, ...]] = None
    ) -> Tuple[Any, Any]:
        """Return ``(min, max)`` as arrays of ``values``' dtype, reading the input once.

        NaN propagates into both (any NaN gives NaN, as ``numpy.min`` does); see
        :meth:`ArrayAPIBackend.minmax` for ``omit_nonfinite`` and ``extent``. Without an
        extent the results are 0-d, and empty input raises ``ValueError`` as ``numpy.min``
        does. With one, they are arrays of the parameter grid's shape: large float32 and
        float64 input of any layout (strided views too, nothing copied) takes the compiled
        one-pass kernel (:func:`numba_kernels.minmax_grid`) when Numba is available, other
        input the generic path.

        Args:
            values: a real NumPy array.
            omit_nonfinite: leave NaN and ±Inf out (see :meth:`ArrayAPIBackend.minmax`).
            extent: None for the whole array, else the block extent along each axis
                (see :meth:`ArrayAPIBackend.minmax`).

        Returns:
            ``(min, max)`` as 0-d arrays, or as grids with ``extent``.

        Raises:
            TypeError, ValueError: if ``extent`` is not one int >= 1 per axis of ``values``.
            ValueError: if ``values`` is empty and there is no ``extent``.
        """
        values = numpy.asarray(values)
        if extent is not None:
            extent = check_extent(extent, values.shape)
            if values.ndim != 0:
                if _use_numba_grid(values):
                    return _minmax_grid(values, extent, omit_nonfinite)
                return super().minmax(values, omit_nonfinite, extent=extent)
        if values.size == 0:
            return numpy.min(values), numpy.max(values)  # raises NumPy's ValueError
        if not omit_nonfinite and _use_numba(values):
            return numba_kernels.minmax(values.reshape(-1))
        return _minmax_blocked(values, omit_nonfinite)

    def count_nonfinite(self, values: Any) -> Any:
        """Return the number of NaN and ±Inf in ``values`` as a 0-d int64 array (blockwise).

        Args:
            values: a real NumPy array (integers have none).

        Returns:
            A 0-d int64 NumPy array (see :meth:`ArrayAPIBackend.count_nonfinite`).
        """
        values = numpy.asarray(values)
        if values.dtype.kind != "f" or values.size == 0:
            return numpy.asarray(0, dtype=numpy.int64)
        flat = _flat(values)
        if flat is None:
            total = _count_nonfinite_range(values)
        else:
            total = sum(_parallel.run(flat.size, lambda start, stop: _count_nonfinite_range(flat[start:stop])))
        return numpy.asarray(total, dtype=numpy.int64)

    def bin_counts(self, values: Any, *, k: int, j_lo: int, max_bins: int, omit_nan: bool) -> Any:
        """Count ``values`` into ``max_bins`` bins of width ``2**k`` from ``j_lo``, in one pass.

        The compiled kernel (with Numba) or blocked NumPy (``floor`` of the float64
        quotient, then ``bincount``) give the counts of :meth:`ArrayAPIBackend.bin_counts`
        exactly, without sorting and without full-size temporaries. NaN and ±Inf are
        never counted.

        Args:
            values: a real NumPy array.
            k: the bin width is ``2**k``.
            j_lo: the index of the first bin.
            max_bins: the number of bins counted.
            omit_nan: leave NaN and ±Inf out (never counted here either way); see
                :meth:`ArrayAPIBackend.bin_counts` for all four.

        Returns:
            An int64 NumPy array of ``max_bins`` counts.
        """
        values = numpy.asarray(values)
        if values.size and _use_numba(values):
            return numba_kernels.bin_counts(values.reshape(-1), k, j_lo, max_bins)
        flat = _flat(values)
        if flat is None:
            return _bin_counts_range(values, k, j_lo, max_bins)
        parts = _parallel.run(flat.size, lambda start, stop: _bin_counts_range(flat[start:stop], k, j_lo, max_bins))
        total = numpy.zeros(max_bins, dtype=numpy.int64)
        for part in parts:
            total += part
        return total

    def window_counts(
        self, values: Any, *, k: int, j_lo: int, n_bins: int, edges: Optional[Tuple[int, int]] = None
    ) -> Optional[Any]:
        """One pass: counts in ``n_bins`` bins from ``j_lo``, non-finite count, finite min and max,
        and the finite values outside the bins, for large float32/float64 input with Numba.

        Args:
            values: a real NumPy array.
            k: the bins' width is ``2**k``.
            j_lo: the index of the first bin.
            n_bins: how many bins to count into.
            edges: the bins of the current min and max, to read min and max only from the
                blocks that reach them (see :func:`numba_kernels.window_counts`), or None.

        Returns:
            What :func:`numba_kernels.window_counts` returns, or None for input the kernel
            does not take (the caller then makes two passes).
        """
        values = numpy.asarray(values)
        if not _use_numba(values):
            return None
        return numba_kernels.window_counts(values.reshape(-1), k, j_lo, n_bins, edges)

    def unique_rounded(self, values: Any, omit_nonfinite: bool = False) -> numpy.ndarray:
        """Return the sorted unique values rounded to 2 decimals in float64, block by block.

        The same values as :meth:`ArrayAPIBackend.unique_rounded`, bit for bit, without
        its full-size float64 copies: each block of :data:`BLOCK_ELEMENTS` values is
        rounded in a small buffer and reduced to its unique values, and those are merged
        as they come. Memory then grows with the number of unique values, not with the
        input (data rounded to 2 decimals rarely has many).

        Args:
            values: a real NumPy array.
            omit_nonfinite: leave NaN and ±Inf out (see :meth:`ArrayAPIBackend.unique_rounded`).

        Returns:
            A 1-d float64 NumPy array.
        """
        values = numpy.asarray(values)
        flat = _flat(values)
        if flat is None:
            return _unique_rounded_range(values, omit_nonfinite)
        parts = _parallel.run(flat.size, lambda start, stop: _unique_rounded_range(flat[start:stop], omit_nonfinite))
        return _merge_sorted_unique(parts)

    # -- quantization ----------------------------------------------------------------------

    def quantize(
        self, values: Any, spec: QuantSpec, *, check_finite: bool = True, out: Any = None
    ) -> Tuple[Any, Optional[Problems]]:
        """Quantize block by block, or with the compiled kernels (see :meth:`ArrayAPIBackend.quantize`).

        ``out`` must be a writeable NumPy array of ``spec.out_dtype`` and ``values``' shape
        (any layout; it may even be ``values``' own memory). Parameter grids (per channel,
        per group) take the fused grid kernel, or a blocked NumPy path without Numba.

        Args:
            values: a real floating-point NumPy array.
            spec: the quantization (see :class:`~qarray.backends.spec.QuantSpec`).
            check_finite: also count the non-finite values.
            out: an array to write into, or None; see :meth:`ArrayAPIBackend.quantize` for all four.

        Returns:
            ``(qvalues, problems)``, as :meth:`ArrayAPIBackend.quantize` returns them.

        Raises:
            TypeError: if ``out`` is not a NumPy array.
            ValueError: if ``out`` has the wrong shape or dtype, or is read-only.
        """
        values = numpy.asarray(values)
        result = _output(out, values.shape, spec.out_dtype)
        if spec.extent is None and numpy.ndim(spec.zero_point) != 0:  # broadcast zero points: generic
            return super().quantize(values, spec, check_finite=check_finite, out=out)
        if out is not None and numpy.may_share_memory(out, values):
            # Writing a block could overwrite input not read yet: work on a private copy.
            quantized, problems = self.quantize(values, spec, check_finite=check_finite)
            numpy.copyto(result, quantized)
            return result, problems
        saturate = spec.saturate
        checks_bounds = not saturate and spec.low is not None
        if spec.extent is not None:
            n_nonfinite, n_outside = _quantize_grid(values, result, spec)
        else:
            scale, zero_point = float(spec.scale), float(spec.zero_point)
            if spec.in_float32 and _use_numba(values) and result.flags.c_contiguous:
                bounded = spec.low is not None
                n_nonfinite, n_outside = numba_profiles.quantize32(
                    numba_kernels._kernels(), values.reshape(-1), result.reshape(-1), scale, zero_point,
                    float(spec.low) if bounded else -numpy.inf, float(spec.high) if bounded else numpy.inf,
                    spec.arithmetic == "float32_divide", saturate and bounded,
                )
            elif spec.in_float32:
                n_nonfinite, n_outside = _quantize_blocked(values, result, scale, zero_point, spec, check_finite)
            elif _use_numba(values) and result.flags.c_contiguous:
                n_nonfinite, n_outside = numba_kernels.quantize(
                    values.reshape(-1), result.reshape(-1), scale, zero_point, spec.low, spec.high, saturate
                )
            else:
                n_nonfinite, n_outside = _quantize_blocked(values, result, scale, zero_point, spec, check_finite)
        if not (check_finite or checks_bounds):
            return result, None
        counts = [n_nonfinite if check_finite else 0, n_outside if checks_bounds else 0]
        return result, Problems(numpy.array(counts, dtype=numpy.int64))

    def dequantize(self, qvalues: Any, spec: QuantSpec, *, dtype: str = "float64", out: Any = None) -> Any:
        """De-quantize block by block, or with the compiled kernels (see :meth:`ArrayAPIBackend.dequantize`).

        Args:
            qvalues: an integer NumPy array.
            spec: the quantization (see :class:`~qarray.backends.spec.QuantSpec`).
            dtype: the name of the floating-point dtype of the result.
            out: a writeable NumPy array of ``dtype`` and ``qvalues``' shape, or None; see
                :meth:`ArrayAPIBackend.dequantize` for all four.

        Returns:
            The floats, in a new array or in ``out``.

        Raises:
            TypeError: if ``out`` is not a NumPy array.
            ValueError: if ``out`` has the wrong shape or dtype, or is read-only.
        """
        qvalues = numpy.asarray(qvalues)
        result = _output(out, qvalues.shape, dtype)
        if spec.extent is None and numpy.ndim(spec.zero_point) != 0:  # broadcast zero points: generic
            return super().dequantize(qvalues, spec, dtype=dtype, out=out)
        if out is not None and numpy.may_share_memory(out, qvalues):
            numpy.copyto(result, self.dequantize(qvalues, spec, dtype=dtype))
            return result
        if spec.extent is not None:
            _dequantize_grid(qvalues, result, spec)
            return result
        scale, zero_point = float(spec.scale), float(spec.zero_point)
        if (
            qvalues.size >= numba_kernels.MIN_ELEMENTS
            and numba_kernels.supported_integer(qvalues)
            and result.flags.c_contiguous
            and numba_kernels.available()
        ):
            if spec.in_float32:
                kernels = numba_kernels._kernels()
                numba_profiles.dequantize32(kernels, qvalues.reshape(-1), result.reshape(-1), scale, zero_point)
            else:
                numba_kernels.dequantize(qvalues.reshape(-1), result.reshape(-1), scale, zero_point)
            return result
        _dequantize_blocked(qvalues, result, scale, zero_point, spec.in_float32)
        return result

    def fill_nan(self, qvalues: Any, values: Any, fill: numpy.ndarray) -> Any:
        """Write ``fill`` into ``qvalues`` where ``values`` is NaN, in place, and return it.

        A scalar ``fill`` goes block by block, so no full-size mask is made; a
        per-channel one (broadcast to ``values``) uses one boolean mask.

        Args:
            qvalues: integers of ``values``' shape, written in place.
            values: the floats they were quantized from.
            fill: a host integer array of ``qvalues``' dtype, 0-d or broadcastable to
                ``values``; see :meth:`ArrayAPIBackend.fill_nan`.

        Returns:
            ``qvalues``, filled.
        """
        values = numpy.asarray(values)
        fill = numpy.asarray(fill, dtype=qvalues.dtype)
        if fill.ndim != 0:
            numpy.copyto(qvalues, fill, where=numpy.isnan(values))
            return qvalues
        pair = _flat_pair(values, qvalues)
        if pair is None:
            _fill_nan_range(values, qvalues, fill)
        else:
            source, target = pair
            _parallel.run(
                source.size, lambda start, stop: _fill_nan_range(source[start:stop], target[start:stop], fill)
            )
        return qvalues

    def pack_bits(self, q: Any, n_bits: int) -> Tuple[Any, Any]:
        """Pack with the compiled kernel of :mod:`qarray.backends.numba_packing`, else the generic path.

        The compiled kernel serves large arrays when Numba is available; see
        :meth:`ArrayAPIBackend.pack_bits`. The values outside the range are counted only
        when there are some.

        Args:
            q: an integer NumPy array of at least one axis.
            n_bits: 1, 2 or 4 (checked by the caller).

        Returns:
            ``(packed, n_outside)``, as :meth:`ArrayAPIBackend.pack_bits` returns them.
        """
        q = numpy.asarray(q)
        if not numba_packing.takes(q):
            return super().pack_bits(q, n_bits)
        packed, outside = numba_packing.pack_bits(q, n_bits)
        return packed, self.count_outside_pack(q, n_bits) if outside else numpy.asarray(0, dtype=numpy.int64)

    def unpack_bits(self, packed: Any, n_bits: int, length: int, signed: bool) -> Any:
        """Unpack with the compiled kernel (large arrays, Numba available), else the generic path.

        Args:
            packed: a uint8 NumPy array of at least one axis.
            n_bits: 1, 2 or 4 (checked by the caller).
            length: the number of values in each row.
            signed: sign-extend the values to int8; see :meth:`ArrayAPIBackend.unpack_bits`.

        Returns:
            An array of shape ``packed.shape[:-1] + (length,)``.
        """
        packed = numpy.asarray(packed)
        if numba_packing.takes(packed):
            return numba_packing.unpack_bits(packed, n_bits, length, signed)
        return super().unpack_bits(packed, n_bits, length, signed)


# -- the blocked NumPy kernels ----------------------------------------------------------------
# Each ``_*_range`` function works on one array (or one chunk of a flat array) with its
# own small buffers; the callers split flat arrays into chunks run on several threads
# (NumPy's ufuncs release the GIL), and walk other layouts in one thread.


def _minmax_blocked(values: numpy.ndarray, omit_nonfinite: bool) -> Tuple[numpy.ndarray, numpy.ndarray]:
    flat = _flat(values)
    if flat is None:
        parts = [_minmax_range(values, omit_nonfinite)]
    else:
        parts = _parallel.run(flat.size, lambda start, stop: _minmax_range(flat[start:stop], omit_nonfinite))
    low = numpy.min(numpy.asarray([part[0] for part in parts], dtype=values.dtype))
    high = numpy.max(numpy.asarray([part[1] for part in parts], dtype=values.dtype))
    return numpy.asarray(low, dtype=values.dtype), numpy.asarray(high, dtype=values.dtype)


def _minmax_range(values: numpy.ndarray, omit_nonfinite: bool) -> Tuple[Any, Any]:
    """min and max of one block after the other: the max reads the block from cache."""
    lows, highs = [], []
    finite: Any = numpy.empty(min(MINMAX_BLOCK_ELEMENTS, values.size), dtype=bool) if omit_nonfinite else None
    for index, count in _blocks(values, MINMAX_BLOCK_ELEMENTS):
        block = values[index]
        if omit_nonfinite:
            mask = finite[:count].reshape(block.shape)
            numpy.isfinite(block, out=mask)
            lows.append(numpy.min(block, where=mask, initial=numpy.inf))
            highs.append(numpy.max(block, where=mask, initial=-numpy.inf))
        else:
            lows.append(numpy.min(block))
            highs.append(numpy.max(block))
    return numpy.min(numpy.asarray(lows, dtype=values.dtype)), numpy.max(numpy.asarray(highs, dtype=values.dtype))


def _minmax_grid(
    values: numpy.ndarray, extent: Tuple[int, ...], omit_nonfinite: bool
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Per-block min and max with the compiled kernel, for any layout, without copying the input.

    The axes are first put in order of decreasing stride (a transposed view: an
    F-ordered array becomes C-ordered, with the extent and the grid permuted alike,
    which leaves every block's values as they are; the results are transposed views
    of the grids). The values then go to the kernel as 2-d ``(rows, length)`` views:
    one for the whole array when its leading axes collapse into one (any contiguous
    array, most strided views), else one per index of the fewest outer axes for which
    they do.
    """
    ndim = values.ndim
    order = sorted(range(ndim), key=lambda axis: -abs(values.strides[axis]))
    if order != list(range(ndim)):
        low, high = _minmax_grid(values.transpose(order), tuple(extent[axis] for axis in order), omit_nonfinite)
        inverse = tuple(int(axis) for axis in numpy.argsort(order))
        return low.transpose(inverse), high.transpose(inverse)  # views: a copy would cost more than the pass
    shape, length = values.shape, values.shape[-1]
    parts: List[Tuple[int, numpy.ndarray]] = []
    for outer in range(ndim):  # the fewest outer axes whose every index leaves a collapsible array
        row_stride = _row_stride(shape[outer:], values.strides[outer:])
        if row_stride is None:
            continue
        rows_per_index = math.prod(shape[outer:-1])
        for index, position in enumerate(numpy.ndindex(*shape[:outer])):
            part = numpy.lib.stride_tricks.as_strided(
                values[position], (rows_per_index, length), (row_stride, values.strides[-1]), writeable=False
            )
            parts.append((index * rows_per_index, part))
        break
    return numba_kernels.minmax_grid(parts, tuple(shape), extent, omit_nonfinite)


def _row_stride(shape: Tuple[int, ...], strides: Tuple[int, ...]) -> Optional[int]:
    """The stride of the rows when all axes but the last collapse into one (a view), else None."""
    leading = [(length, stride) for length, stride in zip(shape[:-1], strides[:-1]) if length != 1]
    if not leading:
        return 0  # one row
    for (_, outer_stride), (inner_length, inner_stride) in zip(leading, leading[1:]):
        if outer_stride != inner_stride * inner_length:
            return None
    return leading[-1][1]


def _bin_counts_range(values: numpy.ndarray, k: int, j_lo: int, max_bins: int) -> numpy.ndarray:
    """Bin counts of one block range: float64 quotient, floor, -1 for an underflowed negative."""
    counts = numpy.zeros(max_bins, dtype=numpy.int64)
    if values.size == 0:
        return counts
    width = 2.0**k
    buffer = numpy.empty(min(BLOCK_ELEMENTS, values.size), dtype=numpy.float64)
    negative = numpy.empty(buffer.size, dtype=bool)
    for index, count in _blocks(values, BLOCK_ELEMENTS):
        chunk = values[index]
        work = buffer[:count].reshape(chunk.shape)
        below = negative[:count].reshape(chunk.shape)
        with numpy.errstate(invalid="ignore", over="ignore", under="ignore"):
            numpy.divide(chunk, width, out=work, dtype=numpy.float64)
            numpy.less(chunk, 0.0, out=below)
            numpy.logical_and(below, work == 0.0, out=below)  # underflowed to -0.0: bin -1
            numpy.floor(work, out=work)
            numpy.subtract(work, below, out=work)
            numpy.subtract(work, float(j_lo), out=work)
        flat = work.reshape(-1)
        inside = flat[(flat >= 0.0) & (flat < max_bins)]  # NaN and ±Inf fail both
        counts += numpy.bincount(inside.astype(numpy.int64), minlength=max_bins)
    return counts


def _unique_rounded_range(source: numpy.ndarray, omit_nonfinite: bool) -> numpy.ndarray:
    """Sorted unique values of ``source`` rounded to 2 decimals (float64), one block at a time.

    Each block is cast into a float64 buffer and rounded there by the generic path's
    operation sequence (``rint(x * 100) / 100 + 0``, which also folds -0.0 into 0.0).
    Its unique values wait in a list, merged into the running result whenever they
    outnumber it, so merging costs O(n log n) in all, even when most values are unique.
    """
    merged = numpy.empty(0, dtype=numpy.float64)
    if source.size == 0:
        return merged
    buffer = numpy.empty(min(BLOCK_ELEMENTS, source.size), dtype=numpy.float64)
    waiting: List[numpy.ndarray] = []
    n_waiting = 0
    for index, count in _blocks(source, BLOCK_ELEMENTS):
        chunk = source[index]
        work = buffer[:count]
        numpy.copyto(work.reshape(chunk.shape), chunk, casting="unsafe")
        if omit_nonfinite:
            work = work[numpy.isfinite(work)]
        numpy.multiply(work, 100.0, out=work)
        numpy.rint(work, out=work)  # round half to even, as xp.round
        numpy.divide(work, 100.0, out=work)
        numpy.add(work, 0.0, out=work)
        # equal_nan=False: every NaN stays, as in the generic path's unique_values
        waiting.append(numpy.unique(work, equal_nan=False))
        n_waiting += waiting[-1].size
        if n_waiting >= max(merged.size, BLOCK_ELEMENTS):
            merged = _merge_sorted_unique([merged, *waiting])
            waiting, n_waiting = [], 0
    return _merge_sorted_unique([merged, *waiting])


def _merge_sorted_unique(runs: List[numpy.ndarray]) -> numpy.ndarray:
    """Merge sorted arrays of unique float64 values into one (NaN, never equal, all kept)."""
    runs = [run for run in runs if run.size]
    if not runs:
        return numpy.empty(0, dtype=numpy.float64)
    if len(runs) == 1:
        return runs[0]
    joined = numpy.concatenate(runs)
    joined.sort(kind="stable")  # a merge sort: linear on a few sorted runs
    keep = numpy.empty(joined.size, dtype=bool)
    keep[0] = True
    numpy.not_equal(joined[1:], joined[:-1], out=keep[1:])
    return joined[keep]


def _count_nonfinite_range(values: numpy.ndarray) -> int:
    mask = numpy.empty(min(BLOCK_ELEMENTS, values.size), dtype=bool)
    total = 0
    for index, count in _blocks(values, BLOCK_ELEMENTS):
        block = values[index]
        finite = mask[:count].reshape(block.shape)
        numpy.isfinite(block, out=finite)
        total += count - int(numpy.count_nonzero(finite))
    return total


def _quantize_blocked(
    values: numpy.ndarray,
    result: numpy.ndarray,
    scale: float,
    zero_point: float,
    spec: QuantSpec,
    check_finite: bool,
) -> Tuple[int, int]:
    """Quantize ``values`` into ``result`` block by block (the bounds as ``spec`` says);
    return the two problem counts."""
    if values.size == 0:
        return 0, 0
    bounds = None if spec.low is None else (float(spec.low), float(spec.high))
    arguments = (scale, zero_point, bounds, spec.saturate, check_finite, spec.arithmetic)
    pair = _flat_pair(values, result)
    if pair is None:
        return _quantize_range(values, result, *arguments)
    source, target = pair
    parts = _parallel.run(
        source.size, lambda start, stop: _quantize_range(source[start:stop], target[start:stop], *arguments)
    )
    return sum(part[0] for part in parts), sum(part[1] for part in parts)


def _quantize_range(
    source: numpy.ndarray,
    target: numpy.ndarray,
    scale: float,
    zero_point: float,
    bounds: Bounds,
    saturate: bool,
    check_finite: bool,
    arithmetic: str = "float64",
) -> Tuple[int, int]:
    buffer = numpy.empty(min(BLOCK_ELEMENTS, source.size), dtype=numpy.float64)
    rounding = None if arithmetic == "float64" else _Float32Rounding(arithmetic, scale, buffer.size)
    clip, fit = (bounds, None) if saturate else (None, bounds)
    checks_fit = clip is None and fit is not None
    mask: Any = numpy.empty(buffer.size, dtype=bool) if check_finite or checks_fit else None
    inside: Any = numpy.empty(buffer.size, dtype=bool) if checks_fit else None
    n_nonfinite = 0
    n_outside = 0
    for index, count in _blocks(source, BLOCK_ELEMENTS):
        chunk = source[index]
        shape = chunk.shape
        work = buffer[:count].reshape(shape)
        if rounding is not None:
            rounding.round_into(chunk, work)
            numpy.add(work, zero_point, out=work)
        else:
            numpy.divide(chunk, scale, out=work, dtype=numpy.float64)  # true division, never * (1/scale)
            numpy.add(work, zero_point, out=work)
            numpy.rint(work, out=work)  # round half to even
        if check_finite:
            finite = mask[:count].reshape(shape)
            numpy.isfinite(chunk, out=finite)
            n_nonfinite += count - int(numpy.count_nonzero(finite))
        if clip is not None:
            numpy.clip(work, clip[0], clip[1], out=work)
        elif fit is not None:
            low_ok = mask[:count].reshape(shape)
            high_ok = inside[:count].reshape(shape)
            numpy.greater_equal(work, fit[0], out=low_ok)
            numpy.less_equal(work, fit[1], out=high_ok)
            numpy.logical_and(low_ok, high_ok, out=high_ok)  # NaN fails both: outside
            n_outside += count - int(numpy.count_nonzero(high_ok))
        numpy.copyto(target[index], work, casting="unsafe")
    return n_nonfinite, n_outside


class _Float32Rounding:
    """A runtime's float32 rounding of chunks: ``rint(float32(x) / scale)`` (``float32_divide``)
    or ``rint(float32(x) * (1 / scale))`` (``float32_reciprocal``), through one float32 buffer."""

    def __init__(self, arithmetic: str, scale: Any, size: int) -> None:
        self.divide = arithmetic == "float32_divide"
        self.scale = numpy.asarray(scale, dtype=numpy.float32)
        self.reciprocal = numpy.float32(1.0) / self.scale
        self.buffer = numpy.empty(size, dtype=numpy.float32)

    def round_into(self, chunk: numpy.ndarray, work: numpy.ndarray, scale: Any = None) -> None:
        """Write the rounded float32 values of ``chunk`` into the float64 ``work`` (its shape);
        ``scale`` (float32, broadcast to the chunk) replaces the one given at construction."""
        values = self.buffer[: chunk.size].reshape(chunk.shape)
        numpy.copyto(values, chunk, casting="unsafe")
        if scale is None:
            step = self.scale if self.divide else self.reciprocal
        else:
            step = scale if self.divide else numpy.float32(1.0) / scale
        (numpy.divide if self.divide else numpy.multiply)(values, step, out=values)
        numpy.rint(values, out=values)
        numpy.copyto(work, values)


def _fill_nan_range(source: numpy.ndarray, target: numpy.ndarray, fill: numpy.ndarray) -> None:
    """Write the scalar ``fill`` into ``target`` where ``source`` is NaN, one block at a time."""
    if source.size == 0:
        return
    mask = numpy.empty(min(BLOCK_ELEMENTS, source.size), dtype=bool)
    for index, count in _blocks(source, BLOCK_ELEMENTS):
        chunk = source[index]
        is_nan = mask[:count].reshape(chunk.shape)
        numpy.isnan(chunk, out=is_nan)
        numpy.copyto(target[index], fill, where=is_nan)


def _dequantize_blocked(
    qvalues: numpy.ndarray, result: numpy.ndarray, scale: float, zero_point: float, in_float32: bool = False
) -> None:
    """De-quantize ``qvalues`` into ``result`` block by block (float64 math, then cast; float32
    math for a runtime profile)."""
    if qvalues.size == 0:
        return
    pair = _flat_pair(qvalues, result)
    if pair is None:
        _dequantize_range(qvalues, result, scale, zero_point, in_float32)
        return
    source, target = pair
    _parallel.run(
        source.size,
        lambda start, stop: _dequantize_range(source[start:stop], target[start:stop], scale, zero_point, in_float32),
    )


def _dequantize_range(
    source: numpy.ndarray, target: numpy.ndarray, scale: Any, zero_point: Any, in_float32: bool = False
) -> None:
    direct = target.dtype == numpy.float64 and not in_float32
    buffer: Any = None if direct else numpy.empty(min(BLOCK_ELEMENTS, source.size), dtype=numpy.float64)
    for index, count in _blocks(source, BLOCK_ELEMENTS):
        chunk = source[index]
        work = target[index] if direct else buffer[:count].reshape(chunk.shape)
        numpy.subtract(chunk, zero_point, out=work, dtype=numpy.float64)
        if in_float32:
            product = numpy.multiply(work.astype(numpy.float32), numpy.asarray(scale, dtype=numpy.float32))
            numpy.copyto(target[index], product, casting="unsafe")
            continue
        numpy.multiply(scale, work, out=work)
        if not direct:
            numpy.copyto(target[index], work, casting="unsafe")


# -- parameter grids (per channel, per group) ----------------------------------------------------
# Values are seen as a 2-d ``(rows, length)`` array (C order): every row takes the
# parameters of one grid row (its leading indices divided by the block extent), and
# consecutive runs of ``group`` values along the last axis one grid column each.


def _grid_matrix(parameter: Any, grid_shape: Tuple[int, ...], n_columns: int) -> numpy.ndarray:
    """A grid parameter as a float64 ``(grid rows, grid columns)`` matrix: C-contiguous, or for
    one number for every block (the clipping bounds, mostly) a read-only view of it."""
    array = numpy.asarray(parameter, dtype=numpy.float64)
    if array.ndim == 0:
        return numpy.broadcast_to(array, (max(1, math.prod(grid_shape)) // n_columns, n_columns))
    return numpy.ascontiguousarray(numpy.broadcast_to(array, grid_shape).reshape(-1, n_columns))


def _quantize_grid(values: numpy.ndarray, result: numpy.ndarray, spec: QuantSpec) -> Tuple[int, int]:
    """Quantize with one parameter set per block into ``result``; return the problem counts."""
    if values.size == 0:
        return 0, 0
    rows, n_rows, length, group = grid_layout(values.shape, spec.extent)
    n_columns = -(-length // group)
    low = spec.low if spec.low is not None else -numpy.inf
    high = spec.high if spec.high is not None else numpy.inf
    grid_shape = numpy.shape(spec.scale)
    parameters = tuple(
        _grid_matrix(parameter, grid_shape, n_columns) for parameter in (spec.scale, spec.zero_point, low, high)
    )
    saturate = bool(spec.saturate)
    n_nonfinite = n_outside = 0
    for first, last, columns, source, target in _grid_pieces(values, result, n_rows, length, group):
        scale, zero, low_m, high_m = (matrix[:, columns] for matrix in parameters)
        piece = (scale, zero, low_m, high_m)
        if spec.in_float32 and _use_numba(source):
            counts = numba_profiles.quantize32_grid(
                numba_kernels._kernels(), numba_kernels._grid_parts, source, target, rows[first:last], piece, group,
                spec.arithmetic == "float32_divide", saturate,
            )
        elif _use_numba(source) and not spec.in_float32:
            counts = numba_kernels.quantize_grid(source, target, rows[first:last], piece, group, saturate)
        else:
            counts = _quantize_grid_tiles(source, target, rows[first:last], piece, group, saturate, spec.arithmetic)
        n_nonfinite, n_outside = n_nonfinite + counts[0], n_outside + counts[1]
    return n_nonfinite, n_outside


def _grid_pieces(
    source: numpy.ndarray, target: numpy.ndarray, n_rows: int, length: int, group: int
) -> Iterator[Tuple[int, int, slice, numpy.ndarray, numpy.ndarray]]:
    """Yield the ``(rows, length)`` matrices of ``source`` and ``target`` for the grid kernels.

    Yields ``(first_row, last_row, grid_columns, source_piece, target_piece)``: C-contiguous
    2-d pieces, ``grid_columns`` the slice of the parameter grid's columns they take. When
    both arrays are C-contiguous that is one piece, the arrays themselves. Any other
    layout (Fortran order, strides, a non-contiguous ``out``) goes piece by piece through
    two buffers of about :data:`PIECE_ELEMENTS` (or of one block along the last axis when
    that is longer), so no copy of the whole array is ever made; a target piece is
    written back after the caller has filled it (when the generator resumes).
    """
    if source.flags.c_contiguous and target.flags.c_contiguous:
        yield 0, n_rows, slice(None), source.reshape(n_rows, length), target.reshape(n_rows, length)
        return
    width = length if length <= PIECE_ELEMENTS else max(group, PIECE_ELEMENTS // group * group)
    rows_per_piece = max(1, PIECE_ELEMENTS // width)
    for first, source_rows, target_rows in zip(*_row_views(source, length), _row_views(target, length)[1]):
        for r0 in range(0, source_rows.shape[0], rows_per_piece):
            r1 = min(source_rows.shape[0], r0 + rows_per_piece)
            for c0 in range(0, length, width):
                c1 = min(length, c0 + width)
                piece = numpy.ascontiguousarray(source_rows[r0:r1, c0:c1])
                written = numpy.empty(piece.shape, dtype=target.dtype)
                yield first + r0, first + r1, slice(c0 // group, -(-c1 // group)), piece, written
                numpy.copyto(target_rows[r0:r1, c0:c1], written)


def _row_views(array: numpy.ndarray, length: int) -> Tuple[List[int], List[numpy.ndarray]]:
    """2-d views (never copies) covering ``array`` read as a C-order ``(rows, length)`` matrix,
    with the matrix row each starts at: one view per index of the axes before the last two."""
    if array.ndim <= 1:
        return [0], [array.reshape(1, length)]
    per = array.shape[-2]
    indices = list(numpy.ndindex(*array.shape[:-2]))
    return [k * per for k in range(len(indices))], [array[index] for index in indices]


def _grid_tiles(n_rows: int, length: int, group: int) -> Iterator[Tuple[int, int, int, int]]:
    """Yield ``(first_row, last_row, first_column, last_column)`` tiles of about a block each,
    with column ranges that start on a group boundary."""
    columns = length if length <= BLOCK_ELEMENTS else max(group, BLOCK_ELEMENTS // group * group)
    rows_per_tile = max(1, BLOCK_ELEMENTS // max(1, columns))
    for first_row in range(0, n_rows, rows_per_tile):
        for first_column in range(0, length, columns):
            yield first_row, min(n_rows, first_row + rows_per_tile), first_column, min(length, first_column + columns)


def _tile_parameter(matrix: numpy.ndarray, rows: numpy.ndarray, group: int, first: int, last: int) -> numpy.ndarray:
    """The parameters of every value of one tile (``rows`` already cut to it)."""
    columns = matrix[rows, first // group : -(-last // group)]
    return numpy.repeat(columns, group, axis=1)[:, : last - first]


def _quantize_grid_tiles(
    source: numpy.ndarray,
    target: numpy.ndarray,
    rows: numpy.ndarray,
    parameters: Tuple[numpy.ndarray, ...],
    group: int,
    saturate: bool,
    arithmetic: str = "float64",
) -> Tuple[int, int]:
    """The NumPy path of :func:`_quantize_grid`: the same operations, one tile at a time."""
    n_nonfinite = n_outside = 0
    rounding = None if arithmetic == "float64" else _Float32Rounding(arithmetic, 1.0, BLOCK_ELEMENTS)
    for r0, r1, c0, c1 in _grid_tiles(source.shape[0], source.shape[1], group):
        scale, zero, low, high = (_tile_parameter(m, rows[r0:r1], group, c0, c1) for m in parameters)
        chunk = source[r0:r1, c0:c1]
        if rounding is not None:
            work = numpy.empty(chunk.shape, dtype=numpy.float64)
            rounding.round_into(chunk, work, scale.astype(numpy.float32))
            numpy.add(work, zero, out=work)
        else:
            work = numpy.divide(chunk, scale, dtype=numpy.float64)
            numpy.add(work, zero, out=work)
            numpy.rint(work, out=work)
        n_nonfinite += chunk.size - int(numpy.count_nonzero(numpy.isfinite(chunk)))
        if saturate:
            numpy.minimum(numpy.maximum(work, low, out=work), high, out=work)
        else:
            n_outside += chunk.size - int(numpy.count_nonzero((work >= low) & (work <= high)))
        numpy.copyto(target[r0:r1, c0:c1], work, casting="unsafe")
    return n_nonfinite, n_outside


def _dequantize_grid(qvalues: numpy.ndarray, result: numpy.ndarray, spec: QuantSpec) -> None:
    """De-quantize with one parameter set per block into ``result``."""
    if qvalues.size == 0:
        return
    rows, n_rows, length, group = grid_layout(qvalues.shape, spec.extent)
    n_columns = -(-length // group)
    parameters = tuple(
        _grid_matrix(parameter, numpy.shape(spec.scale), n_columns) for parameter in (spec.scale, spec.zero_point)
    )
    for first, last, columns, source, target in _grid_pieces(qvalues, result, n_rows, length, group):
        scale, zero = (matrix[:, columns] for matrix in parameters)
        piece_rows = rows[first:last]
        if (
            source.size >= numba_kernels.MIN_ELEMENTS
            and numba_kernels.supported_integer(source)
            and numba_kernels.available()
        ):
            if spec.in_float32:
                numba_profiles.dequantize32_grid(
                    numba_kernels._kernels(), numba_kernels._grid_parts, source, target, piece_rows, (scale, zero),
                    group,
                )
            else:
                numba_kernels.dequantize_grid(source, target, piece_rows, (scale, zero), group)
            continue
        for r0, r1, c0, c1 in _grid_tiles(source.shape[0], source.shape[1], group):
            work = numpy.subtract(
                source[r0:r1, c0:c1], _tile_parameter(zero, piece_rows[r0:r1], group, c0, c1), dtype=numpy.float64
            )
            tile_scale = _tile_parameter(scale, piece_rows[r0:r1], group, c0, c1)
            if spec.in_float32:
                numpy.copyto(target[r0:r1, c0:c1], work.astype(numpy.float32) * tile_scale.astype(numpy.float32),
                             casting="unsafe")
                continue
            numpy.multiply(tile_scale, work, out=work)
            numpy.copyto(target[r0:r1, c0:c1], work, casting="unsafe")


def _use_numba(values: numpy.ndarray) -> bool:
    """Whether the compiled kernels take this float input (large, contiguous, Numba usable)."""
    return (
        values.size >= numba_kernels.MIN_ELEMENTS
        and numba_kernels.supported_float(values)
        and numba_kernels.available()
    )


def _use_numba_grid(values: numpy.ndarray) -> bool:
    """Whether the compiled per-block min/max takes this input (large float32/float64, native
    byte order, any layout, Numba usable)."""
    return (
        values.size >= numba_kernels.MIN_ELEMENTS
        and values.dtype in (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
        and values.dtype.isnative
        and numba_kernels.available()
    )


def _flat(array: numpy.ndarray) -> Optional[numpy.ndarray]:
    """``array`` as a 1-d view (possibly strided) when that needs no copy, else None."""
    if array.ndim <= 1 or array.flags.c_contiguous:
        return array.reshape(-1)
    return None


def _flat_pair(source: numpy.ndarray, target: numpy.ndarray) -> Optional[Tuple[numpy.ndarray, numpy.ndarray]]:
    """Both arrays as 1-d views in the same (C) order when possible without a copy, else None."""
    if (source.ndim <= 1 and target.ndim <= 1) or (source.flags.c_contiguous and target.flags.c_contiguous):
        return source.reshape(-1), target.reshape(-1)
    return None


def _blocks(array: numpy.ndarray, block: int) -> Iterator[Tuple[Tuple[Any, ...], int]]:
    """Yield ``(index, count)``: indexes of consecutive C-order blocks of at most ``block`` elements.

    ``array[index]`` is a view (strided for non-contiguous arrays, never a copy) of
    ``count`` elements, and the blocks cover the array in C order. Blocks are whole
    runs of the trailing axes: a block spans several indices of one axis and all of
    the axes after it.
    """
    shape = array.shape
    size = array.size
    if size == 0:
        return
    if size <= block:
        yield (Ellipsis,), size
        return
    # the first axis from which the trailing sub-array fits in a block
    axis = len(shape)
    inner = 1
    while axis > 0 and inner * shape[axis - 1] <= block:
        axis -= 1
        inner *= shape[axis]
    split = axis - 1  # split this axis into runs; iterate over the axes before it
    step = max(1, block // inner)
    extent = shape[split]
    for outer in numpy.ndindex(*shape[:split]):
        for start in range(0, extent, step):
            stop = min(extent, start + step)
            yield outer + (slice(start, stop),), (stop - start) * inner


def _output(out: Optional[Any], shape: tuple, dtype: str) -> numpy.ndarray:
    """Return ``out`` after checking it can take the result, or a new C-contiguous array."""
    if out is None:
        return numpy.empty(shape, dtype=dtype)
    check_out(
        out,
        shape=tuple(shape),
        dtype=numpy.dtype(dtype),
        library="NumPy",
        owns=isinstance(out, numpy.ndarray),
    )
    return out
