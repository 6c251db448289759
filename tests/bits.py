"""Bit-for-bit array comparisons whose failure messages stay short.

``a.tobytes() == b.tobytes()`` makes pytest print a full diff of two byte strings
when it fails, which for large arrays (and with ``CI=true``, where pytest does not
truncate) can run for many minutes. These helpers compare the same bits through
``numpy.testing``, which reports a count and a few mismatching elements.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy

__all__ = ["assert_same_bits", "fitting"]


def _as_bits(array: numpy.ndarray) -> numpy.ndarray:
    """View ``array``'s elements as unsigned integers of the same width (exact bits)."""
    array = numpy.ascontiguousarray(array)
    if array.dtype.kind in "fc" and array.dtype.itemsize in (2, 4, 8):
        return array.view(numpy.dtype(f"u{array.dtype.itemsize}"))
    return array


def assert_same_bits(actual: Any, expected: Any, where: Optional[numpy.ndarray] = None) -> None:
    """Assert equal dtype, shape and identical bits (NaN payloads and -0.0 included).

    Args:
        actual, expected: arrays (anything ``numpy.asarray`` accepts).
        where: an optional boolean mask of the elements whose bits are specified;
            the others are not compared (shape and dtype still are).
    """
    actual, expected = numpy.asarray(actual), numpy.asarray(expected)
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    actual_bits, expected_bits = _as_bits(actual), _as_bits(expected)
    if where is not None:
        actual_bits, expected_bits = actual_bits[where], expected_bits[where]
    numpy.testing.assert_array_equal(actual_bits, expected_bits, strict=True)


def fitting(values: Any, scale: float, zero_point: float, fit: Optional[tuple]) -> Optional[numpy.ndarray]:
    """Return the mask of ``values`` whose rounded quotient lies in ``fit`` (None: all).

    Without clipping, the integers written for rounded values outside the output
    dtype are unspecified (``quant`` refuses such a call): only those inside are
    compared.
    """
    if fit is None:
        return None
    with numpy.errstate(invalid="ignore", over="ignore"):
        rounded = numpy.rint(numpy.asarray(values, dtype=numpy.float64) / scale + zero_point)
    return (rounded >= fit[0]) & (rounded <= fit[1])
