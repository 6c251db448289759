"""Sub-byte packing: 1-, 2- and 4-bit integers stored 8, 4 and 2 to a byte.

- :func:`pack`: the low ``n_bits`` bits of each value, packed along the last axis into
  uint8, the first value in the least significant bits (ONNX's INT4/UINT4 and INT2/UINT2
  layout), the last byte of each row padded with zero bits;
- :func:`unpack`: the values back, sign-extended to int8 or as uint8.

Both check their arguments, resolve the backend once and call its kernels (fused on
NumPy/Numba and CuPy); results stay in the input's library and on its device. The
layout and its rules are in :mod:`qarray.core.packing`; ``docs/packing.md`` says more.

Example:
    >>> import numpy
    >>> q = numpy.array([[1, -2, 3], [-8, 7, 0]], dtype=numpy.int8)
    >>> packed = pack(q, 4)
    >>> packed
    array([[225,   3],
           [120,   0]], dtype=uint8)
    >>> unpack(packed, 4, 3, signed=True)
    array([[ 1, -2,  3],
           [-8,  7,  0]], dtype=int8)
"""

from __future__ import annotations

from typing import Any

from .backends import backend_for
from .core.checks import check_bool, check_int
from .core.messages import outside_pack_range
from .core.namespace import as_array
from .core.packing import check_pack_bits, packed_length

__all__ = ["pack", "unpack"]


def pack(q: Any, n_bits: int) -> Any:
    """Pack integers of ``n_bits`` bits (1, 2 or 4) along the last axis into uint8.

    Each byte holds ``8 // n_bits`` consecutive values of a row, the first in its least
    significant bits; a row whose length is not a multiple of that ends in a byte padded
    with zero bits. Each value keeps its low ``n_bits`` bits, so both the signed range
    ``[-2**(n_bits-1), 2**(n_bits-1) - 1]`` and the unsigned range ``[0, 2**n_bits - 1]``
    pack, and :func:`unpack` gives them back (``signed=True`` resp. ``False``). The bytes
    of 4- and 2-bit values are those of ONNX's INT4/UINT4 and INT2/UINT2 tensors (whose
    rows are not padded: a 1-d array, or rows of an even length at 4 bits, match them).

    Args:
        q: an integer array (signed or unsigned, any Array API library, at least one axis,
            any layout), or a (nested) list of ints.
        n_bits: 1, 2 or 4.

    Returns:
        uint8 of shape ``q.shape[:-1] + (ceil(q.shape[-1] * n_bits / 8),)``, of ``q``'s
        library and device. For a Dask array, a lazy array whose range check runs (and
        raises) when it is computed.

    Raises:
        TypeError: if ``q`` is not an array of integers (bool and floats refused) or
            ``n_bits`` not an int.
        ValueError: if ``n_bits`` is not 1, 2 or 4, ``q`` is 0-d, or holds values outside
            ``[-2**(n_bits-1), 2**n_bits - 1]`` (the message says how many).

    Example:
        >>> [hex(byte) for byte in pack([1, 2, 3], 4).tolist()]
        ['0x21', '0x3']
    """
    q = as_array(q, "q", kind="int")
    backend = backend_for(q)
    if not backend.is_integer(q):
        raise TypeError(f"q must be an array of integers (signed or unsigned), got dtype {q.dtype}")
    n_bits = check_pack_bits(n_bits)
    if q.ndim == 0:
        raise ValueError("q must have at least one axis (values are packed along the last), got a 0-d array")
    q = _known_last_axis(q, backend, "q")
    packed, n_outside = backend.pack_bits(q, n_bits)
    if n_outside is not None:
        count = int(backend.to_numpy(n_outside))
        if count:
            raise outside_pack_range(count, n_bits, f"out of {backend.size(q)}")
    return packed


def unpack(packed: Any, n_bits: int, length: int, *, signed: bool) -> Any:
    """Unpack ``length`` values of ``n_bits`` bits (1, 2 or 4) from each row of uint8 ``packed``.

    The inverse of :func:`pack`: ``unpack(pack(q, n), n, q.shape[-1], signed=...)`` is ``q``
    for values in the signed (resp. unsigned) range of ``n`` bits. The padding bits of a
    row's last byte are ignored.

    Args:
        packed: a uint8 array (any Array API library, at least one axis) whose last axis
            holds ``ceil(length * n_bits / 8)`` bytes.
        n_bits: 1, 2 or 4.
        length: the number of values in each row (the unpacked last axis), >= 0.
        signed: sign-extend the values from ``n_bits`` bits (int8 result, values in
            ``[-2**(n_bits-1), 2**(n_bits-1) - 1]``), else read them as unsigned (uint8, in
            ``[0, 2**n_bits - 1]``).

    Returns:
        int8 or uint8 of shape ``packed.shape[:-1] + (length,)``, of ``packed``'s library and
        device.

    Raises:
        TypeError: if ``packed`` is not a uint8 array, ``n_bits`` or ``length`` not an int,
            or ``signed`` not a bool.
        ValueError: if ``n_bits`` is not 1, 2 or 4, ``length`` is negative, ``packed`` is
            0-d or its last axis does not hold ``ceil(length * n_bits / 8)`` bytes.

    Example:
        >>> import numpy
        >>> unpack(numpy.array([0x21, 0x0F], dtype=numpy.uint8), 4, 3, signed=False)
        array([ 1,  2, 15], dtype=uint8)
    """
    packed = as_array(packed, "packed")
    backend = backend_for(packed)
    if packed.dtype != backend.dtype("uint8"):
        raise TypeError(f"packed must be a uint8 array (what pack returns), got dtype {packed.dtype}")
    n_bits = check_pack_bits(n_bits)
    length = check_int(length, "length")
    signed = check_bool(signed, "signed")
    if length < 0:
        raise ValueError(f"length must be >= 0 (the values in each row), got {length}")
    if packed.ndim == 0:
        raise ValueError("packed must have at least one axis (bytes along the last), got a 0-d array")
    packed = _known_last_axis(packed, backend, "packed")
    expected = packed_length(length, n_bits)
    if int(packed.shape[-1]) != expected:
        raise ValueError(
            f"packed must hold {expected} byte(s) along its last axis for length={length} values of "
            f"n_bits={n_bits}, got {int(packed.shape[-1])} (shape {tuple(packed.shape)})"
        )
    return backend.unpack_bits(packed, n_bits, length, signed)


def _known_last_axis(array: Any, backend: Any, argument: str) -> Any:
    """``array`` with a known last axis (a lazy array's chunk sizes learnt when it is not)."""
    last = array.shape[-1]
    if last is None or last != last:  # None or NaN: a lazy array's unknown length
        return backend.with_known_shape(array, argument)
    return array
