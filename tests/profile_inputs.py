"""Inputs and an independent reference for the numerics profiles' float32 kernels (CPU emulation and GPU tests).

:func:`rounded32` reads the float32 rule in plain NumPy, apart from the generic path
(:data:`GENERIC`, the library's reference) that the tests compare the kernels with.
"""

from __future__ import annotations

from typing import Any, Tuple

import array_api_compat
import numpy

from qarray.backends import ArrayAPIBackend
from qarray.backends.spec import QuantSpec
from qarray.core.granularity import expand_to_values

from cuda_emulation.inputs import float32_subnormals

__all__ = [
    "GENERIC", "SCALES", "block_values", "float32_ties", "integers", "neighbours", "profile_values", "rounded32",
    "special_values", "spread",
]

NUMPY = array_api_compat.array_namespace(numpy.zeros(1))
GENERIC = ArrayAPIBackend(NUMPY, name="generic")
"""The generic Array API path over NumPy: the reference of every backend."""

SCALES = tuple(float(numpy.float32(s)) for s in (0.1, 0.37, 0.125, 3.0, 1 / 255, 0.0157, 7e-3))
"""float32 scales: a power of two (ties stay ties) and others (ties made by the rounding)."""


def spread(parameter: Any, shape: Tuple[int, ...], spec: QuantSpec) -> Any:
    """A grid parameter repeated over the values (per tensor: as it is)."""
    if spec.extent is None or parameter is None or numpy.ndim(parameter) == 0:
        return parameter
    return numpy.asarray(expand_to_values(numpy.asarray(parameter, dtype=numpy.float64), shape, spec.extent, xp=NUMPY))


def rounded32(values: numpy.ndarray, spec: QuantSpec) -> numpy.ndarray:
    """The rule read independently in NumPy: float32 quotient or reciprocal product rounded half
    to even, the zero point added in float64, clipped when saturating (NaN stays NaN)."""
    shape = values.shape
    scale = numpy.asarray(spread(spec.scale, shape, spec), dtype=numpy.float32)
    zero = spread(spec.zero_point, shape, spec)
    with numpy.errstate(all="ignore"):
        x = values.astype(numpy.float32)
        if spec.arithmetic == "float32_divide":
            quotient = x / scale
        else:
            quotient = x * (numpy.float32(1.0) / scale)
        rounded = numpy.rint(quotient).astype(numpy.float64) + zero
    if spec.saturate:
        low, high = (spread(p, shape, spec) for p in (spec.low, spec.high))
        rounded = numpy.where(rounded < low, low, numpy.where(rounded > high, high, rounded))
    return numpy.asarray(rounded, dtype=numpy.float64)


def neighbours(x: numpy.ndarray, steps: int = 2) -> numpy.ndarray:
    """``x`` and its ``steps`` nearest representable neighbours on each side."""
    found = [x]
    up, down = x, x
    for _ in range(steps):
        up = numpy.nextafter(up, numpy.asarray(numpy.inf, dtype=x.dtype))
        down = numpy.nextafter(down, numpy.asarray(-numpy.inf, dtype=x.dtype))
        found += [up, down]
    return numpy.concatenate(found)


def float32_ties(scale: float, span: int = 150) -> numpy.ndarray:
    """float32 values whose float32 quotient by ``scale`` (or product with its reciprocal) is at
    or next to a tie ``k + 0.5``, for ``k`` in ``[-span, span)``."""
    k = numpy.arange(-span, span) + 0.5
    return neighbours((k * scale).astype(numpy.float32))


def special_values(dtype: str, seed: int) -> numpy.ndarray:
    """Signed zeros, NaN, ±Inf, values beyond float32 and subnormal float32."""
    values = [0.0, -0.0, numpy.nan, numpy.inf, -numpy.inf, 3e38, -3e38, 1e-40, -1e-40]
    if dtype == "float64":
        values += [1e39, -1e300, 1e300, 5e-324, 1e-320]  # finite in float64, not in float32
    return numpy.concatenate([numpy.array(values), float32_subnormals(40, seed).astype(numpy.float64)])


def profile_values(dtype: str, scale: float, seed: int) -> numpy.ndarray:
    """Values of ``dtype`` for ``scale``: float32 ties and neighbours, float64 values at float32
    rounding ties (float64 input), values far beyond the range, specials, random ones."""
    rng = numpy.random.default_rng(seed)
    ties = float32_ties(scale).astype(numpy.float64)
    parts = [ties, ties[:200] * 1000.0, rng.uniform(-400, 400, 500) * scale, special_values(dtype, seed)]
    if dtype == "float64":
        x = ties[:300].astype(numpy.float32)
        midpoints = (x.astype(numpy.float64) + numpy.nextafter(x, numpy.float32(numpy.inf)).astype(numpy.float64)) / 2
        parts += [midpoints, numpy.nextafter(midpoints, numpy.inf), numpy.nextafter(midpoints, -numpy.inf)]
    values = numpy.concatenate(parts)
    return rng.permutation(values).astype(dtype)


def block_values(shape: Tuple[int, ...], dtype: str, seed: int) -> numpy.ndarray:
    """Values of ``shape``: the ties and specials of :func:`profile_values`, cut or repeated."""
    values = profile_values(dtype, SCALES[seed % len(SCALES)], seed)
    return numpy.resize(values, shape)


def integers(shape: Tuple[int, ...], dtype: str, seed: int) -> numpy.ndarray:
    """Integers over ``dtype``'s whole range, its extremes first."""
    info = numpy.iinfo(dtype)
    rng = numpy.random.default_rng(seed)
    qvalues = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    qvalues.reshape(-1)[:4] = [info.min, info.max, 0, 1]
    return qvalues
