"""Granularity: which values share one set of quantization parameters.

Per tensor, every value shares one scale and zero point. Per channel (``axis=``)
and per group (``block_size=``), the array is cut into blocks, and each block is
quantized as a small tensor of its own (``docs/granularity.md``). This module owns
the geometry of that cut and the reductions over it, as plain functions over
any Array API namespace:

- :func:`block_extent` turns ``axis`` / ``block_size`` into the extent of one
  block along each axis and the shape of the parameter grid;
- :func:`reduce_blocks` reduces every block (the generic per-block min and max the
  kernels' ``minmax(extent=...)`` is compared with);
- :func:`expand_to_values` spreads a parameter grid over the values' shape, for
  the generic (reference) quantization path.

Example:
    >>> import numpy
    >>> extent, grid = block_extent((4, 10), block_size=4)
    >>> extent, grid
    ((1, 4), (4, 3))
    >>> reduce_blocks(numpy.arange(40.0).reshape(4, 10), extent, numpy.max, xp=numpy)[0].tolist()
    [3.0, 7.0, 9.0]
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy

from .checks import describe
from .namespace import array_namespace, is_array

__all__ = [
    "Axis",
    "BlockSize",
    "Granularity",
    "block_extent",
    "check_granularity",
    "check_parameter_grids",
    "check_shape",
    "expand_to_values",
    "grid_shape",
    "reduce_blocks",
    "is_grid",
]

Axis = Union[int, Tuple[int, ...], None]
"""The axes that keep one parameter set per index (``None``: none)."""

BlockSize = Union[int, Tuple[Optional[int], ...], None]
"""Blocks of consecutive values along the last axis (int), or a block's extent per axis."""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_granularity(axis: Any, block_size: Any) -> Tuple[Axis, BlockSize]:
    """Validate ``axis`` and ``block_size`` on their own (without a shape) and normalise them.

    Lists become tuples and NumPy integers become ints, so the values compare,
    hash and dump alike whatever the caller passed.

    Raises:
        TypeError: if either is not an int, a tuple of ints (``None`` entries allowed
            in ``block_size``) or None.
        ValueError: if both are given, an entry repeats (``axis``) or an extent is < 1.
    """
    if axis is not None and block_size is not None:
        raise ValueError(
            f"axis and block_size are exclusive: give one of them, got axis={axis!r} "
            f"and block_size={block_size!r}"
        )
    if axis is not None:
        entries = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
        if not entries or not all(_is_int(entry) for entry in entries):
            raise TypeError(f"axis must be an int or a non-empty tuple of ints, got {describe(axis)}")
        entries = tuple(int(entry) for entry in entries)
        if len(set(entries)) != len(entries):
            raise ValueError(f"axis must not repeat an axis, got {axis!r}")
        axis = entries[0] if not isinstance(axis, (tuple, list)) else entries
    if block_size is not None:
        if isinstance(block_size, (tuple, list)):
            if not block_size or not all(entry is None or _is_int(entry) for entry in block_size):
                raise TypeError(
                    "block_size must be an int or a non-empty tuple of ints and None, "
                    f"got {describe(block_size)}"
                )
            block_size = tuple(None if entry is None else int(entry) for entry in block_size)
            if any(entry is not None and entry < 1 for entry in block_size):
                raise ValueError(f"block_size entries must be >= 1 (or None for a whole axis), got {block_size!r}")
        elif _is_int(block_size):
            block_size = int(block_size)
            if block_size < 1:
                raise ValueError(f"block_size must be >= 1, got {block_size!r}")
        else:
            raise TypeError(f"block_size must be an int or a tuple of ints and None, got {describe(block_size)}")
    return axis, block_size


@dataclass(frozen=True)
class Granularity:
    """Which values share one set of parameters: the one representation of a granularity.

    Per tensor (both fields None), per channel (``axis``: the axes that keep one
    parameter set per index) or per group (``block_size``: the extent of a block along
    the last axis, or along each axis). Validated and normalised when made (lists
    become tuples, NumPy integers ints), so two granularities compare equal when they
    ask for the same blocks as written; :meth:`extent` gives the blocks for a shape.

    Raises:
        TypeError, ValueError: as :func:`check_granularity`.

    Example:
        >>> Granularity(block_size=4).extent((4, 10))
        ((1, 4), (4, 3))
        >>> Granularity().is_per_tensor
        True
    """

    axis: Axis = None
    block_size: BlockSize = None

    def __post_init__(self) -> None:
        axis, block_size = check_granularity(self.axis, self.block_size)
        object.__setattr__(self, "axis", axis)
        object.__setattr__(self, "block_size", block_size)

    @property
    def is_per_tensor(self) -> bool:
        """True when every value shares one parameter set (no ``axis``, no ``block_size``)."""
        return self.axis is None and self.block_size is None

    def extent(self, shape: Sequence[int]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        """Return ``(extent, grid)`` for values of ``shape`` (see :func:`block_extent`)."""
        return block_extent(tuple(shape), axis=self.axis, block_size=self.block_size)

    def blocks_key(self, shape: Sequence[int]) -> Tuple[Any, ...]:
        """What two batches of statistics must share to be folded together: the
        granularity, and with ``block_size`` the values' shape (per channel, the kept
        axes' lengths are checked by the grids' shapes). The axes are compared as the
        sorted non-negative tuple they name for ``shape``, so ``axis=0``, ``axis=-2`` and
        ``axis=(0,)`` on 2-D values are one granularity."""
        if self.axis is None:
            return (self, tuple(int(n) for n in shape))
        ndim = len(shape)
        entries = self.axis if isinstance(self.axis, tuple) else (self.axis,)
        kept = tuple(sorted(entry % ndim if ndim and -ndim <= entry < ndim else entry for entry in entries))
        return (Granularity(axis=kept), None)

    def __str__(self) -> str:
        return f"axis={self.axis!r}, block_size={self.block_size!r}"


def block_extent(
    shape: Sequence[int], axis: Axis = None, block_size: BlockSize = None
) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Return ``(extent, grid)``: a block's extent along each axis and the parameter grid's shape.

    ``axis=a`` keeps one block per index along the axes in ``a`` (extent 1) and
    reduces every other axis whole; ``block_size=g`` cuts the last axis into
    blocks of ``g`` consecutive values (extent 1 elsewhere); a ``block_size``
    tuple gives the extent per axis (``None``: the whole axis). Both None: one
    block, the whole array. ``grid[d] = ceil(shape[d] / extent[d])``; the last
    block along an axis is shorter when ``extent[d]`` does not divide it.

    Args:
        shape: the values' shape.
        axis: an int or a tuple of ints (negative counts from the end).
        block_size: an int, or a tuple with one entry (int or None) per axis.

    Returns:
        Two tuples of ints, each with one entry per axis.

    Raises:
        ValueError: if both are given, an axis is out of range or repeats, a tuple has
            the wrong length, an extent is < 1, or the array is 0-d with a granularity.
        TypeError: if an argument has the wrong type.

    Example:
        >>> block_extent((3, 5), axis=0)
        ((1, 5), (3, 1))
        >>> block_extent((3, 5), block_size=(2, None))
        ((2, 5), (2, 1))
    """
    shape = check_shape(shape)
    axis, block_size = check_granularity(axis, block_size)
    ndim = len(shape)
    whole = tuple(max(length, 1) for length in shape)
    if axis is None and block_size is None:
        extent = whole
    elif ndim == 0:
        raise ValueError(
            "a 0-d array has no axis to quantize per channel or per group: "
            f"got axis={axis!r}, block_size={block_size!r}"
        )
    elif axis is not None:
        kept = set()
        for entry in axis if isinstance(axis, tuple) else (axis,):
            if not -ndim <= entry < ndim:
                raise ValueError(f"axis {entry} is out of range for an array of {ndim} dimension(s)")
            if entry % ndim in kept:
                raise ValueError(f"axis must not repeat an axis, got {axis!r} for {ndim} dimension(s)")
            kept.add(entry % ndim)
        extent = tuple(1 if d in kept else whole[d] for d in range(ndim))
    elif isinstance(block_size, tuple):
        if len(block_size) != ndim:
            raise ValueError(
                f"block_size must have one entry per axis ({ndim}), got {len(block_size)}: {block_size!r}"
            )
        extent = tuple(whole[d] if entry is None else min(entry, whole[d]) for d, entry in enumerate(block_size))
    else:
        if not isinstance(block_size, int):
            raise TypeError(f"block_size must be an int or a tuple, got {type(block_size).__name__}")
        extent = (1,) * (ndim - 1) + (min(block_size, whole[-1]),)
    return extent, grid_shape(shape, extent)


def check_shape(shape: Any, argument: str = "shape") -> Tuple[int, ...]:
    """Return an array shape as a tuple of ints >= 0.

    Raises:
        TypeError: if ``shape`` is not a tuple (or list) of ints.
        ValueError: for a negative length, or an unknown one (None or NaN: a lazy array's).

    Example:
        >>> check_shape([3, numpy.int64(4)])
        (3, 4)
    """
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{argument} must be a tuple of ints, got {describe(shape)}")
    for length in shape:
        if length is None or (isinstance(length, float) and length != length):
            raise ValueError(f"{argument} must be known, got {tuple(shape)} (compute a lazy array's chunk sizes first)")
        if isinstance(length, (bool, numpy.bool_)) or not isinstance(length, numbers.Integral):
            raise TypeError(f"{argument} must be a tuple of ints, got {describe(shape)}")
        if length < 0:
            raise ValueError(f"{argument} must hold lengths >= 0, got {tuple(shape)}")
    return tuple(int(length) for length in shape)


def check_parameter_grids(grid: Sequence[int], where: str, **parameters: Any) -> None:
    """Check per-block parameters against the parameter grid ``grid`` of the values.

    Each parameter is one number shared by every block (a 0-d array counts as one),
    or an array of exactly the grid's shape; an array's dtype must be real (integral
    for ``offset``). Only shapes and dtypes are read: nothing leaves a device.

    Args:
        grid: the parameter grid the values give (:func:`block_extent`).
        where: what gives the grid, the message's subject (``"values of shape (3, 4) in
            blocks of (1, 4)"``: "... give the parameter grid (3, 1), but ...").
        parameters: the parameters by name (``scale=..., zero_point=..., offset=...``).

    Raises:
        ValueError: naming the first parameter that is an array of another shape.
        TypeError: naming a parameter array whose dtype is not real (or not integral).

    Example:
        >>> check_parameter_grids((3, 1), "values of shape (3, 4)", scale=numpy.ones((3, 1)), zero_point=0)
        >>> check_parameter_grids((3, 1), "values of shape (3, 4)", zero_point=numpy.zeros((1, 3)))
        Traceback (most recent call last):
        ...
        ValueError: values of shape (3, 4) give the parameter grid (3, 1), but zero_point is an array of shape (1, 3): it must be one number or an array of that grid
    """  # noqa: E501 (the example's message is one line)
    grid = tuple(int(length) for length in grid)
    for argument, parameter in parameters.items():
        if not is_grid(parameter):
            continue
        if tuple(parameter.shape) != grid:
            raise ValueError(
                f"{where} give the parameter grid {grid}, but {argument} is an array of shape "
                f"{tuple(parameter.shape)}: it must be one number or an array of that grid"
            )
        kinds = "integral" if argument == "offset" else ("integral", "real floating")
        if not array_namespace(parameter).isdtype(parameter.dtype, kinds):
            expected = "integers" if argument == "offset" else "real numbers"
            raise TypeError(f"{argument} must hold {expected}, got an array of dtype {parameter.dtype}")


def grid_shape(shape: Sequence[int], extent: Sequence[int]) -> Tuple[int, ...]:
    """Return the parameter grid's shape: ``ceil(shape[d] / extent[d])`` per axis."""
    return tuple(-(-int(length) // int(size)) for length, size in zip(shape, extent))


def reduce_blocks(values: Any, extent: Sequence[int], reduce: Callable[..., Any], *, xp: Any) -> Any:
    """Reduce every block of ``extent`` of a non-empty ``values`` with ``reduce`` (``xp.min``, ``xp.max``).

    Axis by axis: each axis is cut into consecutive segments of ``extent[axis]`` values
    (the last may be shorter), each reduced to one entry; the min of mins is the min, so
    the result is exact whatever the order, and NaN propagates into its block. The
    result has the parameter grid's shape, stays in ``values``' library and on its
    device, and is a new array (never ``values`` itself). This is the generic (reference)
    per-block reduction; the backends fuse it where they can.

    Example:
        >>> reduce_blocks(numpy.arange(40.0).reshape(4, 10), (1, 4), numpy.min, xp=numpy)[0].tolist()
        [0.0, 4.0, 8.0]
    """
    reduced = values
    for axis, size in enumerate(extent):
        reduced = _reduce_segments(reduced, axis, int(size), reduce, xp=xp)
    return reduced


def _reduce_segments(array: Any, axis: int, size: int, reduce: Callable[..., Any], *, xp: Any) -> Any:
    """Reduce ``array`` along ``axis`` in consecutive segments of ``size`` (the last may be shorter)."""
    length = int(array.shape[axis])
    if size >= length:
        return reduce(array, axis=axis, keepdims=True)
    full = length // size * size
    parts = []
    if full:
        head = array[(slice(None),) * axis + (slice(0, full), ...)]
        split = tuple(head.shape[:axis]) + (full // size, size) + tuple(head.shape[axis + 1 :])
        parts.append(reduce(xp.reshape(head, split), axis=axis + 1))
    if full < length:
        tail = array[(slice(None),) * axis + (slice(full, length), ...)]
        parts.append(reduce(tail, axis=axis, keepdims=True))
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=axis)


def expand_to_values(parameter: Any, shape: Sequence[int], extent: Sequence[int], *, xp: Any) -> Any:
    """Spread a parameter grid over ``shape``: every value gets its block's parameter.

    Axes where the grid has one entry stay of length 1 (they broadcast), so a
    per-channel grid is not copied at all; blocked axes are repeated ``extent``
    times and cut to the values' length.
    """
    for axis, (length, size) in enumerate(zip(shape, extent)):
        if parameter.shape[axis] == 1:
            continue
        parameter = xp.repeat(parameter, int(size), axis=axis)
        if parameter.shape[axis] != length:
            parameter = parameter[(slice(None),) * axis + (slice(0, int(length)), ...)]
    return parameter


def is_grid(value: Any) -> bool:
    """Whether a parameter or range holds one entry per block: an array with at least one axis.

    Per-tensor values are host numbers (or 0-d arrays); per-block ones are arrays of the
    parameter grid, in their library and on their device.

    Example:
        >>> is_grid(numpy.zeros(3)), is_grid(numpy.float64(1.0)), is_grid(None)
        (True, False, False)
    """
    return value is not None and is_array(value) and not isinstance(value, numpy.generic) and value.ndim > 0
