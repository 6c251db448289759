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


@pytest.mark.parametrize("divide", [True, False], ids=["quotient", "product"])
@pytest.mark.parametrize("saturate", [True, False], ids=["saturate", "count"])
@pytest.mark.parametrize("grid_dtype", [numpy.float64, numpy.float32])
def test_grid_kernel_chooses_float32_block_by_block(divide: bool, saturate: bool, grid_dtype: type) -> None:
    # Blocks whose zero point and bounds lie inside ±2**24 add and clamp in float32, the
    # others in float64; side by side in one grid, every block must give its exact integers.
    n_rows, length, group = 24, 1000, 128
    values = (spiked(n_rows * length, seed=4) * 1000.0).reshape(n_rows, length)
    rng = numpy.random.default_rng(6)
    n_groups = -(-length // group)
    scale = rng.uniform(0.001, 0.01, (n_rows, n_groups)).astype(numpy.float32).astype(grid_dtype)
    wide = rng.random((n_rows, n_groups)) < 0.5
    zero = numpy.where(wide, 2.0**25 + rng.integers(0, 1000, (n_rows, n_groups)) * 2.0,
                       rng.integers(0, 255, (n_rows, n_groups)).astype(numpy.float64))
    lows = numpy.where(wide, 2.0**25 - 2.0**20, 0.0)
    highs = numpy.where(wide, 2.0**25 + 2.0**20, 255.0)
    target = numpy.zeros(values.shape, dtype=numpy.float64)
    rows = numpy.arange(n_rows, dtype=numpy.int64)
    grids = tuple(grid.astype(grid_dtype) if grid_dtype is numpy.float32 and grid is not zero else grid
                  for grid in (scale, zero, lows, highs))
    counts = numba_profiles.quantize32_grid(numba_kernels._kernels(), numba_kernels._grid_parts, values, target, rows,
                                            grids, group, divide, saturate)
    columns = numpy.arange(length) // group
    expected, n_nonfinite, n_outside = reference(values, scale[:, columns], zero[:, columns], lows[:, columns],
                                                 highs[:, columns], divide, saturate)
    assert counts == (n_nonfinite, n_outside)
    finite = numpy.isfinite(values)
    numpy.testing.assert_array_equal(target[finite], expected[finite])


def test_grid_kernel_reads_broadcast_bounds() -> None:
    # The clipping bounds are mostly one number for every block: a view with zero strides,
    # read in place by the kernel.
    n_rows, length, group = 16, 512, 64
    values = spiked(n_rows * length, seed=7).reshape(n_rows, length)
    n_groups = length // group
    scale = numpy.full((n_rows, n_groups), numpy.float32(0.05), dtype=numpy.float64)
    zero = numpy.full((n_rows, n_groups), 7.0)
    low, high = (numpy.broadcast_to(numpy.float64(bound), (n_rows, n_groups)) for bound in (-8.0, 7.0))
    target = numpy.zeros(values.shape, dtype=numpy.int8)
    rows = numpy.arange(n_rows, dtype=numpy.int64)
    counts = numba_profiles.quantize32_grid(numba_kernels._kernels(), numba_kernels._grid_parts, values, target, rows,
                                            (scale, zero, low, high), group, True, True)
    expected, n_nonfinite, _ = reference(values, scale[:, :1], zero[:, :1], -8.0, 7.0, True, True)
    assert counts == (n_nonfinite, 0)
    finite = numpy.isfinite(values)
    numpy.testing.assert_array_equal(target[finite], expected[finite])
