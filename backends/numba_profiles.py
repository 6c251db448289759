"""The runtime profiles' arithmetic as compiled kernels for the NumPy backend (Numba).

ONNX Runtime rounds the float32 quotient ``x / scale``; torchao the float32 product
``x * (1 / scale)``; both then add the zero point, clamp, and de-quantize with
``float32(q - zero_point) * scale`` in float32 (see :class:`~qarray.backends.spec.QuantSpec`,
``arithmetic``). These kernels do exactly that, one pass, on several threads; the
generic Array API path (:meth:`qarray.backends.ArrayAPIBackend.quantize`) is their
reference, bit for bit.

One loop serves every case; the types of its arguments choose the arithmetic, as Numba
compiles one specialisation per signature:

- ``reciprocal=None`` divides (ONNX Runtime); a float32 ``reciprocal`` multiplies (torchao).
  Numba prunes the ``is None`` branch at compile time, so each loop holds one operation.
- The zero point and bounds as float64 add and clamp in float64, as the generic path
  does. Where a tensor's (or a block's) bounds and zero point lie inside ``±2**24`` they
  are passed as float32 and the loop adds and clamps in float32 instead, which gives the same
  integers (a float32 sum that is not exact lies beyond ``2**24``, on the same side of
  the bounds as the exact sum, because rounding is monotonic) at twice the vector width.

Counting non-finite input (and, without saturation, results outside the bounds) element by
element would widen the loop's counters to 64 bits and halve its vector width. The loop
keeps instead the largest ``|x|`` by its bits (a 32-bit maximum; NaN and infinities are the
largest) and whether any result fell outside; only a span where one did is counted again.

The functions here are plain Python; :mod:`qarray.backends.numba_kernels` compiles them
with its other kernels (fast-math off, so nothing is contracted or reassociated).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy

from . import _parallel

__all__ = ["dequantize32", "dequantize32_grid", "quantize32", "quantize32_grid"]

_FLOAT32_EXACT = 2.0**24
"""Integers up to this magnitude are exact in float32."""

_SPAN = 4096
"""Elements a per-tensor kernel quantizes before it checks its flags (a span in L1 cache)."""

_NONFINITE_BITS = 0x7F800000
"""The bits of float32 infinity: ``|x|``'s bits reach it only for infinities and NaN."""


def _rounded32(x: Any, scale: Any, reciprocal: Any) -> Any:
    """``rint(x / scale)`` (``reciprocal is None``) or ``rint(x * reciprocal)``, in float32."""
    if reciprocal is None:
        return numpy.rint(x / scale)
    return numpy.rint(x * reciprocal)


def _block_reciprocal(scale: Any, reciprocal_wanted: Any) -> Any:
    """``1 / scale`` in float32 for the product, ``None`` for the quotient (``reciprocal_wanted is None``)."""
    if reciprocal_wanted is None:
        return None
    return numpy.float32(1.0) / scale


def _quantize32_span(source: Any, target: Any, first: Any, count: int, scale: Any, reciprocal: Any, zero: Any,
                     low: Any, high: Any, saturate: bool) -> bool:
    """Quantize ``count`` elements from ``first``: clamped to ``[low, high]`` (``saturate``)
    or stored as they are. Return whether the span needs :func:`_count_span` (a non-finite
    input, or a result outside the bounds without saturation)."""
    largest = numpy.int32(0)
    end = first + numpy.uint64(count)  # unsigned indices: no negative-index wrap-around to vectorise
    if saturate:
        for j in range(first, end):
            x = numpy.float32(source[j])
            value = _rounded32(x, scale, reciprocal) + zero
            value = value if value > low else low  # NaN takes low: an unspecified but defined integer
            value = value if value < high else high
            largest = max(largest, numpy.float32(abs(x)).view(numpy.int32))
            target[j] = value
        return largest >= _NONFINITE_BITS
    outside = numpy.int32(0)
    for j in range(first, end):
        x = numpy.float32(source[j])
        value = _rounded32(x, scale, reciprocal) + zero
        largest = max(largest, numpy.float32(abs(x)).view(numpy.int32))
        outside = max(outside, numpy.int32(0) if (value >= low and value <= high) else numpy.int32(1))
        target[j] = value
    return largest >= _NONFINITE_BITS or outside > 0


def _count_span(source: Any, first: Any, count: int, scale: Any, reciprocal: Any, zero: Any, low: Any, high: Any,
                saturate: bool) -> Tuple[int, int]:
    """The non-finite inputs and (without ``saturate``) the results outside ``[low, high]``
    among ``count`` elements from ``first``, as :func:`_quantize32_span` computes them."""
    n_nonfinite = 0
    n_outside = 0
    for i in range(count):
        x = numpy.float32(source[first + numpy.uint64(i)])
        n_nonfinite += not (abs(x) < numpy.inf)
        if not saturate:
            value = _rounded32(x, scale, reciprocal) + zero
            n_outside += not (value >= low and value <= high)
    return n_nonfinite, n_outside


def _quantize32_block(source: Any, target: Any, first: Any, count: int, scale: Any, reciprocal: Any, zero: Any,
                      low: Any, high: Any, saturate: bool) -> Tuple[int, int]:
    """Quantize one span or block; return its ``(non-finite, outside)`` counts, counted only when flagged."""
    if _quantize32_span(source, target, first, count, scale, reciprocal, zero, low, high, saturate):
        return _count_span(source, first, count, scale, reciprocal, zero, low, high, saturate)
    return 0, 0


def _quantize32(source: Any, target: Any, scale: Any, reciprocal: Any, zero: Any, low: Any, high: Any,
                saturate: bool) -> Tuple[int, int]:
    """Per-tensor quantization of a flat chunk, span by span; returns ``(non-finite, outside)``."""
    n_nonfinite = 0
    n_outside = 0
    size = source.size
    for start in range(0, size, _SPAN):
        first = numpy.uint64(start)
        count = min(_SPAN, size - start)
        counts = _quantize32_block(source, target, first, count, scale, reciprocal, zero, low, high, saturate)
        n_nonfinite += counts[0]
        n_outside += counts[1]
    return n_nonfinite, n_outside


def _narrow_block(zero: Any, low: Any, high: Any) -> bool:
    """Whether a block's zero point and bounds all lie inside ``±2**24`` (see the module's notes)."""
    return (-_FLOAT32_EXACT < zero < _FLOAT32_EXACT and -_FLOAT32_EXACT < low < _FLOAT32_EXACT
            and -_FLOAT32_EXACT < high < _FLOAT32_EXACT)


def _quantize32_grid(source: Any, target: Any, rows: Any, length: int, group: int, scale: Any, zero: Any, low: Any,
                     high: Any, reciprocal_wanted: Any, saturate: bool, r0: int, r1: int, g0: int,
                     g1: int) -> Tuple[int, int]:
    """Rows ``[r0, r1)`` and groups ``[g0, g1)`` of a flat ``(rows, length)`` array, each block
    with its own parameters (grids of ``(grid rows, groups)``, any strides: float32-valued
    scales, zero points and bounds, as float64 or float32); ``reciprocal_wanted`` as
    :func:`_block_reciprocal`. A block whose zero point and bounds lie inside ``±2**24``
    adds and clamps in float32, any other in float64 (the same integers, see the module)."""
    n_nonfinite = 0
    n_outside = 0
    for r in range(r0, r1):
        g_row = rows[r]
        base = r * length
        for g in range(g0, g1):
            block_scale = numpy.float32(scale[g_row, g])
            reciprocal = _block_reciprocal(block_scale, reciprocal_wanted)
            first = numpy.uint64(base + g * group)
            count = min(length, (g + 1) * group) - g * group
            block_zero, block_low, block_high = zero[g_row, g], low[g_row, g], high[g_row, g]
            if _narrow_block(block_zero, block_low, block_high):
                counts = _quantize32_block(source, target, first, count, block_scale, reciprocal,
                                           numpy.float32(block_zero), numpy.float32(block_low),
                                           numpy.float32(block_high), saturate)
            else:
                counts = _quantize32_block(source, target, first, count, block_scale, reciprocal,
                                           numpy.float64(block_zero), numpy.float64(block_low),
                                           numpy.float64(block_high), saturate)
            n_nonfinite += counts[0]
            n_outside += counts[1]
    return n_nonfinite, n_outside


def _dequantize32_span(source: Any, target: Any, first: Any, count: int, scale: Any, zero: float) -> None:
    """``float32(q - zero) * scale`` in float32 over ``count`` elements from ``first``."""
    for i in range(count):
        j = first + numpy.uint64(i)
        target[j] = numpy.float32(numpy.float64(source[j]) - zero) * scale


def _dequantize32(source: Any, target: Any, scale: Any, zero: float) -> None:
    """:func:`_dequantize32_span` over a whole flat chunk, written as ``target``'s dtype."""
    _dequantize32_span(source, target, numpy.uint64(0), source.size, scale, zero)


def _dequantize32_grid(source: Any, target: Any, rows: Any, length: int, group: int, scale: Any, zero: Any,
                       r0: int, r1: int, g0: int, g1: int) -> None:
    """:func:`_dequantize32_span` block by block over rows ``[r0, r1)`` and groups ``[g0, g1)``
    (grids of any strides, float32-valued scales)."""
    for r in range(r0, r1):
        g_row = rows[r]
        base = r * length
        for g in range(g0, g1):
            count = min(length, (g + 1) * group) - g * group
            _dequantize32_span(source, target, numpy.uint64(base + g * group), count, numpy.float32(scale[g_row, g]),
                               numpy.float64(zero[g_row, g]))


HELPERS = {
    "inline": (_quantize32_span, _quantize32_block, _dequantize32_span),
    "call": (_rounded32, _block_reciprocal, _count_span, _narrow_block),
}
"""The helpers :mod:`qarray.backends.numba_kernels` registers before compiling :data:`KERNELS`:
``"inline"`` ones are inlined into their callers (a call per block of a grid would cost)."""

KERNELS = {
    "quantize32": _quantize32,
    "quantize32_grid": _quantize32_grid,
    "dequantize32": _dequantize32,
    "dequantize32_grid": _dequantize32_grid,
}
"""The kernels :mod:`qarray.backends.numba_kernels` compiles, by name."""


def quantize32(kernels: Any, source: numpy.ndarray, target: numpy.ndarray, scale: float, zero_point: float,
               low: float, high: float, divide: bool, saturate: bool) -> Tuple[int, int]:
    """Quantize flat ``source`` into flat ``target`` with a runtime's float32 arithmetic.

    Args:
        kernels: the compiled kernels (``numba_kernels._kernels()``).
        source, target: 1-d C-contiguous float32/float64 and integer arrays of one length.
        scale: the float32-valued scale; zero_point: an integer-valued float.
        low, high: the bounds (``±inf`` for none).
        divide: ONNX Runtime's quotient, else torchao's product with the reciprocal.
        saturate: clamp to the bounds, else count the values outside them.

    Returns:
        ``(n_nonfinite, n_outside)``.
    """
    scale32 = numpy.float32(scale)
    reciprocal: Optional[numpy.float32] = None if divide else numpy.float32(1.0) / scale32
    kind = numpy.float32 if _narrow_block(zero_point, low, high) else numpy.float64
    zero, low_k, high_k = kind(zero_point), kind(low), kind(high)
    kernel = kernels.quantize32
    counts = _parallel.run(
        source.size,
        lambda start, stop: kernel(
            source[start:stop], target[start:stop], scale32, reciprocal, zero, low_k, high_k, saturate
        ),
        _parallel.STREAMING_CHUNKS_PER_THREAD,
    )
    return int(sum(part[0] for part in counts)), int(sum(part[1] for part in counts))


def quantize32_grid(kernels: Any, run_parts: Any, source: numpy.ndarray, target: numpy.ndarray, rows: numpy.ndarray,
                    parameters: Tuple[numpy.ndarray, ...], group: int, divide: bool, saturate: bool) -> Tuple[int, int]:
    """Quantize a 2-d C-contiguous ``(rows, length)`` array block by block (grids
    ``(scale, zero, low, high)`` of ``(grid rows, groups)``, float64 or float32, any strides:
    the kernel reads them as they are, block by block, so nothing of the grid's size is
    converted per call); ``run_parts`` splits the work over threads as
    ``numba_kernels._grid_parts`` does. Returns ``(n_nonfinite, n_outside)``."""
    n_rows, length = source.shape
    scale, zero, low, high = (numpy.asarray(parameter) for parameter in parameters)
    flat_source, flat_target = source.reshape(-1), target.reshape(-1)
    reciprocal_wanted = None if divide else numpy.float32(1.0)
    kernel = kernels.quantize32_grid
    parts = run_parts(
        n_rows,
        scale.shape[1],
        group,
        lambda r0, r1, g0, g1: kernel(
            flat_source, flat_target, rows, length, group, scale, zero, low, high, reciprocal_wanted, saturate,
            r0, r1, g0, g1,
        ),
        _parallel.STREAMING_CHUNKS_PER_THREAD,
    )
    return int(sum(part[0] for part in parts)), int(sum(part[1] for part in parts))


def dequantize32(kernels: Any, source: numpy.ndarray, target: numpy.ndarray, scale: float, zero_point: float) -> None:
    """De-quantize flat ``source`` into flat ``target``: ``float32(q - zero_point) * float32(scale)``."""
    scale32 = numpy.float32(scale)
    kernel = kernels.dequantize32
    zero = float(zero_point)
    _parallel.run(source.size, lambda start, stop: kernel(source[start:stop], target[start:stop], scale32, zero),
                  _parallel.STREAMING_CHUNKS_PER_THREAD)


def dequantize32_grid(kernels: Any, run_parts: Any, source: numpy.ndarray, target: numpy.ndarray, rows: numpy.ndarray,
                      parameters: Tuple[numpy.ndarray, numpy.ndarray], group: int) -> None:
    """De-quantize a 2-d C-contiguous ``(rows, length)`` array block by block."""
    n_rows, length = source.shape
    scale, zero = (numpy.asarray(parameter) for parameter in parameters)
    flat_source, flat_target = source.reshape(-1), target.reshape(-1)
    kernel = kernels.dequantize32_grid
    run_parts(
        n_rows,
        scale.shape[1],
        group,
        lambda r0, r1, g0, g1: kernel(flat_source, flat_target, rows, length, group, scale, zero, r0, r1, g0, g1),
        _parallel.STREAMING_CHUNKS_PER_THREAD,
    )
