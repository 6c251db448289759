"""The runtime profiles' arithmetic as compiled kernels for the NumPy backend (Numba).

ONNX Runtime rounds the float32 quotient ``x / scale``; torchao the float32 product
``x * (1 / scale)``; both then add the zero point, clamp, and de-quantize with
``float32(q - zero_point) * scale`` in float32 (see :class:`~qarray.backends.spec.QuantSpec`,
``arithmetic``). These kernels do exactly that, one pass, on several threads; the
generic Array API path (:meth:`qarray.backends.ArrayAPIBackend.quantize`) is their
reference, bit for bit.

The zero point is added in float64 and the bounds compared in float64, as the generic
path does. Where the result is clamped to bounds inside ``±2**24`` the kernels add and
clamp in float32 instead, which gives the same integers (a float32 sum that is not
exact lies beyond ``2**24``, on the same side of the bounds as the exact sum, because
rounding is monotonic) at twice the vector width.

The functions here are plain Python; :mod:`qarray.backends.numba_kernels` compiles them
with its other kernels (fast-math off, so nothing is contracted or reassociated).
"""

from __future__ import annotations

from typing import Any, Tuple

import numpy

from . import _parallel

__all__ = ["dequantize32", "dequantize32_grid", "quantize32", "quantize32_grid"]

_FLOAT32_EXACT = 2.0**24
"""Integers up to this magnitude are exact in float32."""


def _quantize32_narrow(source: Any, target: Any, scale: Any, reciprocal: Any, zero: Any, low: Any, high: Any,
                       divide: bool) -> int:
    """Saturating quantization in float32 (bounds inside ``±2**24``); returns the non-finite count."""
    n_nonfinite = 0
    for i in range(source.size):
        x = numpy.float32(source[i])
        q = numpy.rint(x / scale) if divide else numpy.rint(x * reciprocal)
        value = q + zero
        value = value if value > low else low  # NaN takes low: an unspecified but defined integer
        value = value if value < high else high
        n_nonfinite += (x - x) != 0
        target[i] = value
    return n_nonfinite


def _quantize32_wide(source: Any, target: Any, scale: Any, reciprocal: Any, zero: float, low: float, high: float,
                     divide: bool, saturate: bool) -> Tuple[int, int]:
    """Quantization with the zero point added in float64; returns ``(non-finite, outside)``."""
    n_nonfinite = 0
    n_outside = 0
    for i in range(source.size):
        x = numpy.float32(source[i])
        q = numpy.rint(x / scale) if divide else numpy.rint(x * reciprocal)
        value = numpy.float64(q) + zero
        n_nonfinite += (x - x) != 0
        if saturate:
            value = value if value > low else low
            value = value if value < high else high
        else:
            n_outside += not (value >= low and value <= high)
        target[i] = value
    return n_nonfinite, n_outside


def _quantize32_grid(source: Any, target: Any, rows: Any, length: int, group: int, scale: Any, zero: Any, low: Any,
                     high: Any, divide: bool, saturate: bool, r0: int, r1: int, g0: int, g1: int) -> Tuple[int, int]:
    """Rows ``[r0, r1)`` and groups ``[g0, g1)`` of a flat ``(rows, length)`` array, each block
    with its own parameters (float64 grids of ``(grid rows, groups)``)."""
    n_nonfinite = 0
    n_outside = 0
    for r in range(r0, r1):
        g_row = rows[r]
        base = r * length
        for g in range(g0, g1):
            block_scale = numpy.float32(scale[g_row, g])
            reciprocal = numpy.float32(1.0) / block_scale
            block_zero = zero[g_row, g]
            block_low = low[g_row, g]
            block_high = high[g_row, g]
            start = base + g * group
            stop = base + min(length, (g + 1) * group)
            for i in range(start, stop):
                x = numpy.float32(source[i])
                q = numpy.rint(x / block_scale) if divide else numpy.rint(x * reciprocal)
                value = numpy.float64(q) + block_zero
                n_nonfinite += (x - x) != 0
                if saturate:
                    value = value if value > block_low else block_low
                    value = value if value < block_high else block_high
                else:
                    n_outside += not (value >= block_low and value <= block_high)
                target[i] = value
    return n_nonfinite, n_outside


def _dequantize32(source: Any, target: Any, scale: Any, zero: float) -> None:
    """``float32(q - zero) * scale`` in float32, written as ``target``'s dtype."""
    for i in range(source.size):
        target[i] = numpy.float32(numpy.float64(source[i]) - zero) * scale


def _dequantize32_grid(source: Any, target: Any, rows: Any, length: int, group: int, scale: Any, zero: Any,
                       r0: int, r1: int, g0: int, g1: int) -> None:
    """:func:`_dequantize32` block by block over rows ``[r0, r1)`` and groups ``[g0, g1)``."""
    for r in range(r0, r1):
        g_row = rows[r]
        base = r * length
        for g in range(g0, g1):
            block_scale = numpy.float32(scale[g_row, g])
            block_zero = zero[g_row, g]
            start = base + g * group
            stop = base + min(length, (g + 1) * group)
            for i in range(start, stop):
                target[i] = numpy.float32(numpy.float64(source[i]) - block_zero) * block_scale


KERNELS = {
    "quantize32_narrow": _quantize32_narrow,
    "quantize32_wide": _quantize32_wide,
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
    reciprocal = numpy.float32(1.0) / scale32
    if saturate and max(abs(low), abs(high), abs(zero_point)) < _FLOAT32_EXACT:
        kernel = kernels.quantize32_narrow
        zero32, low32, high32 = numpy.float32(zero_point), numpy.float32(low), numpy.float32(high)
        parts = _parallel.run(
            source.size,
            lambda start, stop: kernel(
                source[start:stop], target[start:stop], scale32, reciprocal, zero32, low32, high32, divide
            ),
        )
        return int(sum(parts)), 0
    wide = kernels.quantize32_wide
    counts = _parallel.run(
        source.size,
        lambda start, stop: wide(
            source[start:stop], target[start:stop], scale32, reciprocal, float(zero_point), float(low), float(high),
            divide, saturate,
        ),
    )
    return int(sum(part[0] for part in counts)), int(sum(part[1] for part in counts))


def quantize32_grid(kernels: Any, run_parts: Any, source: numpy.ndarray, target: numpy.ndarray, rows: numpy.ndarray,
                    parameters: Tuple[numpy.ndarray, ...], group: int, divide: bool, saturate: bool) -> Tuple[int, int]:
    """Quantize a 2-d C-contiguous ``(rows, length)`` array block by block (float64 grids
    ``(scale, zero, low, high)`` of ``(grid rows, groups)``); ``run_parts`` splits the work
    over threads as ``numba_kernels._grid_parts`` does. Returns ``(n_nonfinite, n_outside)``."""
    n_rows, length = source.shape
    scale, zero, low, high = (numpy.asarray(p, dtype=numpy.float64) for p in parameters)
    flat_source, flat_target = source.reshape(-1), target.reshape(-1)
    kernel = kernels.quantize32_grid
    parts = run_parts(
        n_rows,
        scale.shape[1],
        group,
        lambda r0, r1, g0, g1: kernel(
            flat_source, flat_target, rows, length, group, scale, zero, low, high, divide, saturate, r0, r1, g0, g1
        ),
    )
    return int(sum(part[0] for part in parts)), int(sum(part[1] for part in parts))


def dequantize32(kernels: Any, source: numpy.ndarray, target: numpy.ndarray, scale: float, zero_point: float) -> None:
    """De-quantize flat ``source`` into flat ``target``: ``float32(q - zero_point) * float32(scale)``."""
    scale32 = numpy.float32(scale)
    kernel = kernels.dequantize32
    zero = float(zero_point)
    _parallel.run(source.size, lambda start, stop: kernel(source[start:stop], target[start:stop], scale32, zero))


def dequantize32_grid(kernels: Any, run_parts: Any, source: numpy.ndarray, target: numpy.ndarray, rows: numpy.ndarray,
                      parameters: Tuple[numpy.ndarray, numpy.ndarray], group: int) -> None:
    """De-quantize a 2-d C-contiguous ``(rows, length)`` array block by block."""
    n_rows, length = source.shape
    scale, zero = (numpy.ascontiguousarray(p, dtype=numpy.float64) for p in parameters)
    flat_source, flat_target = source.reshape(-1), target.reshape(-1)
    kernel = kernels.dequantize32_grid
    run_parts(
        n_rows,
        scale.shape[1],
        group,
        lambda r0, r1, g0, g1: kernel(flat_source, flat_target, rows, length, group, scale, zero, r0, r1, g0, g1),
    )
