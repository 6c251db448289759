"""The runtime profiles' compiled kernels against plain NumPy float32 arithmetic.

The kernels keep one flag per span instead of counting in the loop, and choose float32 or
float64 for the zero point and bounds from their magnitude; both shortcuts must leave the
integers and the problem counts exactly as the plain arithmetic gives them, wherever the
non-finite and out-of-range values fall (first, last, across spans and thread chunks).
"""

from __future__ import annotations

import importlib.util
from typing import Tuple

import numpy
import pytest

from qarray.backends import _parallel, numba_kernels, numba_profiles

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba is not installed")

SPAN = numba_profiles._SPAN


def reference(values: numpy.ndarray, scale: numpy.ndarray, zero: numpy.ndarray, low: float, high: float,
              divide: bool, saturate: bool) -> Tuple[numpy.ndarray, int, int]:
    """Integers (as float64) and the (non-finite, outside) counts, in plain NumPy."""
    x = values.astype(numpy.float32)
    scale32 = scale.astype(numpy.float32)
    with numpy.errstate(all="ignore"):
        q = numpy.rint(x / scale32) if divide else numpy.rint(x * (numpy.float32(1.0) / scale32))
        value = q.astype(numpy.float64) + zero
        inside = (value >= low) & (value <= high)
    n_nonfinite = int(numpy.count_nonzero(~numpy.isfinite(x)))
    if saturate:
        return numpy.clip(value, low, high), n_nonfinite, 0
    return value, n_nonfinite, int(numpy.count_nonzero(~inside))


def spiked(size: int, seed: int) -> numpy.ndarray:
    """Normal data with NaN and infinities at span edges, the ends, and random places."""
    rng = numpy.random.default_rng(seed)
    values = (rng.standard_normal(size) * 3.0).astype(numpy.float32)
    places = [0, SPAN - 1, SPAN, 3 * SPAN + 7, size - 1, *rng.integers(0, size, 5)]
    for k, place in enumerate(places):
        values[place % size] = (numpy.nan, numpy.inf, -numpy.inf)[k % 3]
    return values


@pytest.mark.parametrize("divide", [True, False], ids=["quotient", "product"])
@pytest.mark.parametrize("saturate", [True, False], ids=["saturate", "count"])
@pytest.mark.parametrize("bounds", [(0.0, 255.0, 128.0), (-(2.0**31), 2.0**31 - 1, 3.0), (-8.0, 7.0, 0.0)],
                         ids=["uint8", "int32-wide", "int4"])
def test_per_tensor_kernel_matches_float32_arithmetic(divide: bool, saturate: bool, bounds: tuple,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parallel, "MIN_CHUNK", 1 << 12, raising=False)
    low, high, zero = bounds
    values = spiked(5 * SPAN + 123, seed=1)
    scale = numpy.float32(0.0371)
    target = numpy.zeros(values.size, dtype=numpy.float64)
    counts = numba_profiles.quantize32(numba_kernels._kernels(), values, target, float(scale), zero, low, high,
                                       divide, saturate)
    expected, n_nonfinite, n_outside = reference(values, numpy.array(scale), numpy.array(zero), low, high, divide,
                                                 saturate)
    assert counts == (n_nonfinite, n_outside)
    finite = numpy.isfinite(values)
    numpy.testing.assert_array_equal(target[finite], expected[finite])


@pytest.mark.parametrize("divide", [True, False], ids=["quotient", "product"])
@pytest.mark.parametrize("saturate", [True, False], ids=["saturate", "count"])
@pytest.mark.parametrize("wide", [False, True], ids=["narrow", "wide"])
def test_grid_kernel_matches_float32_arithmetic(divide: bool, saturate: bool, wide: bool) -> None:
    n_rows, length, group = 48, 1000, 128
    values = spiked(n_rows * length, seed=2).reshape(n_rows, length)
    rng = numpy.random.default_rng(5)
    n_groups = -(-length // group)
    scale = rng.uniform(0.01, 0.1, (n_rows, n_groups)).astype(numpy.float32).astype(numpy.float64)
    zero = rng.integers(0, 255, (n_rows, n_groups)).astype(numpy.float64)
    low, high = (-(2.0**30), 2.0**30) if wide else (0.0, 255.0)
    lows, highs = numpy.full_like(zero, low), numpy.full_like(zero, high)
    target = numpy.zeros(values.shape, dtype=numpy.float64)
    rows = numpy.arange(n_rows, dtype=numpy.int64)
    counts = numba_profiles.quantize32_grid(numba_kernels._kernels(), numba_kernels._grid_parts, values, target, rows,
                                            (scale, zero, lows, highs), group, divide, saturate)
    columns = numpy.arange(length) // group
    expected, n_nonfinite, n_outside = reference(values, scale[:, columns], zero[:, columns], low, high, divide,
                                                 saturate)
    assert counts == (n_nonfinite, n_outside)
    finite = numpy.isfinite(values)
    numpy.testing.assert_array_equal(target[finite], expected[finite])
