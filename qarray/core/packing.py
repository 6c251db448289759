"""The rules of sub-byte packing: the widths, the value range, the byte layout.

``n_bits``-bit values (1, 2 or 4 bits) are packed along the last axis into uint8,
``8 // n_bits`` to a byte, the first value in the least significant bits (ONNX's
INT4/UINT4 and INT2/UINT2 layout); the last byte of a row that is not full is
padded with zero bits. A value packs when it lies in ``[-2**(n_bits-1), 2**n_bits - 1]``:
its low ``n_bits`` bits then give it back, sign-extended (the signed range) or not
(the unsigned range). Every backend and the primitives take these rules from here.

Example:
    >>> values_per_byte(4), packed_length(3, 4), pack_range(4)
    (2, 2, (-8, 15))
"""

from __future__ import annotations

import numbers
from typing import Any, Tuple

import numpy

from .checks import describe

__all__ = ["PACK_BITS", "check_pack_bits", "pack_bounds", "pack_range", "packed_length", "values_per_byte"]

PACK_BITS: Tuple[int, ...] = (1, 2, 4)
"""The widths values can be packed at: each divides a byte."""


def check_pack_bits(n_bits: Any) -> int:
    """Return ``n_bits`` as an int of :data:`PACK_BITS`.

    Raises:
        TypeError: if ``n_bits`` is not an int (bools refused).
        ValueError: if it is not 1, 2 or 4.
    """
    if isinstance(n_bits, (bool, numpy.bool_)) or not isinstance(n_bits, numbers.Integral):
        raise TypeError(f"n_bits must be an int (1, 2 or 4), got {describe(n_bits)} ({type(n_bits).__name__})")
    if int(n_bits) not in PACK_BITS:
        raise ValueError(f"n_bits must be 1, 2 or 4 (the widths that divide a byte), got {describe(n_bits)}")
    return int(n_bits)


def values_per_byte(n_bits: int) -> int:
    """How many ``n_bits``-bit values one byte holds."""
    return 8 // n_bits


def packed_length(length: int, n_bits: int) -> int:
    """The bytes ``length`` values of ``n_bits`` bits take: ``ceil(length * n_bits / 8)``."""
    return -(-length // values_per_byte(n_bits))


def pack_range(n_bits: int) -> Tuple[int, int]:
    """The inclusive range of values that pack at ``n_bits``: the signed and unsigned ranges together."""
    return -(1 << (n_bits - 1)), (1 << n_bits) - 1


def pack_bounds(n_bits: int, dtype: Any) -> Tuple[Any, Any]:
    """:func:`pack_range` cut to the range of the integer ``dtype``, as two scalars of it (what a
    kernel compares values of that dtype with: no bound overflows it).

    Example:
        >>> pack_bounds(4, numpy.dtype("uint8"))
        (np.uint8(0), np.uint8(15))
    """
    dtype = numpy.dtype(dtype)
    info = numpy.iinfo(dtype)
    low, high = pack_range(n_bits)
    return dtype.type(max(low, int(info.min))), dtype.type(min(high, int(info.max)))
