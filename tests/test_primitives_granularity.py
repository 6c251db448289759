"""The geometry of per-channel and per-group quantization, against a plain NumPy reading.

``block_extent`` turns ``axis`` / ``block_size`` into blocks (docs/granularity.md),
``block_minmax`` reduces every block on every library, and ``expand_to_values``
gives every value its block's parameter.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy
import pytest

from qarray.core.granularity import block_extent, expand_to_values
from qarray.core.namespace import array_namespace, to_numpy
from qarray.primitives import block_minmax

SHAPE = (5, 7, 9)

GRANULARITIES: Dict[str, Dict[str, Any]] = {
    "per-tensor": {},
    "axis-0": {"axis": 0},
    "axis-last-negative": {"axis": -1},
    "axes-0-2": {"axis": (0, 2)},
    "group-4": {"block_size": 4},
    "group-larger-than-axis": {"block_size": 100},
    "blocks-2-whole-4": {"block_size": (2, None, 4)},
    "blocks-3-3-3": {"block_size": (3, 3, 3)},
}


def _reference_blocks(shape: tuple, extent: tuple) -> Any:
    """Every block's index in the grid and its slices, straight from the definition."""
    grid = tuple(-(-n // e) for n, e in zip(shape, extent))
    for index in numpy.ndindex(*grid):
        yield index, tuple(slice(i * e, min((i + 1) * e, n)) for i, e, n in zip(index, extent, shape))


@pytest.mark.parametrize("name", list(GRANULARITIES))
def test_blocks_tile_the_array_and_minmax_is_each_blocks(xb: Any, name: str) -> None:
    values = numpy.random.default_rng(3).standard_normal(SHAPE)
    extent, grid = block_extent(SHAPE, **GRANULARITIES[name])
    covered = numpy.zeros(SHAPE, dtype=int)
    expected_min, expected_max = numpy.empty(grid), numpy.empty(grid)
    for index, block in _reference_blocks(SHAPE, extent):
        covered[block] += 1
        expected_min[index], expected_max[index] = values[block].min(), values[block].max()
    numpy.testing.assert_array_equal(covered, 1)
    array = xb.asarray(values)
    rmin, rmax = block_minmax(array, extent)
    numpy.testing.assert_array_equal(to_numpy(rmin), expected_min, strict=True)
    numpy.testing.assert_array_equal(to_numpy(rmax), expected_max, strict=True)


@pytest.mark.parametrize("name", list(GRANULARITIES))
def test_every_value_gets_its_blocks_parameter(xb: Any, name: str) -> None:
    extent, grid = block_extent(SHAPE, **GRANULARITIES[name])
    parameter = numpy.arange(float(numpy.prod(grid))).reshape(grid)
    grid_array = xb.asarray(parameter)
    spread = expand_to_values(grid_array, SHAPE, extent, xp=array_namespace(grid_array))
    spread = numpy.broadcast_to(to_numpy(spread), SHAPE)
    for index, block in _reference_blocks(SHAPE, extent):
        numpy.testing.assert_array_equal(spread[block], parameter[index])


def test_axis_keeps_reduced_axes_with_length_one() -> None:
    assert block_extent((3, 5, 2), axis=1) == ((3, 1, 2), (1, 5, 1))
    assert block_extent((3, 5, 2), axis=(0, -1)) == ((1, 5, 1), (3, 1, 2))


def test_group_size_cuts_the_last_axis_with_a_shorter_last_block() -> None:
    assert block_extent((4, 10), block_size=4) == ((1, 4), (4, 3))
    assert block_extent((10,), block_size=(3,)) == ((3,), (4,))


def test_no_granularity_is_one_block() -> None:
    assert block_extent((4, 10)) == ((4, 10), (1, 1))


@pytest.mark.parametrize(
    "shape, kwargs, error, match",
    [
        ((4, 4), {"axis": 0, "block_size": 2}, ValueError, "exclusive"),
        ((4, 4), {"axis": 2}, ValueError, "axis 2 is out of range"),
        ((4, 4), {"axis": -3}, ValueError, "axis -3 is out of range"),
        ((4, 4), {"axis": (0, 0)}, ValueError, "repeat"),
        ((4, 4), {"axis": (0, -2)}, ValueError, "repeat|out of range"),
        ((4, 4), {"block_size": 0}, ValueError, "block_size must be >= 1"),
        ((4, 4), {"block_size": (2,)}, ValueError, "one entry per axis"),
        ((4, 4), {"block_size": (2, 0)}, ValueError, ">= 1"),
        ((), {"axis": 0}, ValueError, "0-d"),
        ((), {"block_size": 2}, ValueError, "0-d"),
        ((4, 4), {"axis": 1.5}, TypeError, "axis must be an int"),
        ((4, 4), {"axis": True}, TypeError, "axis must be an int"),
        ((4, 4), {"block_size": "8"}, TypeError, "block_size must be an int"),
        ((4, 4), {"block_size": (2, 2.0)}, TypeError, "block_size must be an int"),
    ],
)
def test_bad_granularity_is_refused_naming_the_argument(shape: tuple, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        block_extent(shape, **kwargs)


def test_grid_layout_refuses_per_tensor_parameters() -> None:
    """The grid kernels' layout needs a block extent; a per-tensor spec has none."""
    from qarray.backends.spec import grid_layout

    rows, n_rows, length, group = grid_layout((4, 10), (2, 5))
    assert (rows.tolist(), n_rows, length, group) == ([0, 0, 1, 1], 4, 10, 5)
    with pytest.raises(ValueError, match="extent must be the block extent"):
        grid_layout((4, 10), None)
