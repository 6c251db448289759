"""Compiled sub-byte packing for the NumPy backend, built with Numba when it is installed.

:func:`pack_bits` and :func:`unpack_bits` give the bytes and values of the generic
path (:meth:`ArrayAPIBackend.pack_bits`, :meth:`ArrayAPIBackend.unpack_bits`) bit for
bit, in one pass: each output byte is made from its ``8 // n_bits`` values (and each
byte read gives them back) in registers, with the range check of the values folded
into the same loop as one flag. The width is a constant of each compiled kernel
(one per ``n_bits``), so the inner loop over a byte's values unrolls and the outer
loop vectorises.

The values are read as a ``(rows, length)`` matrix (any strides; a layout that has
no such view is copied once): a C-contiguous array whose rows fill whole bytes is
one long row. The work is split over rows, or for few long rows over the bytes of
every row, and run on the NumPy backend's thread pool (see :mod:`qarray.backends._parallel`).

Numba is imported and the kernels compiled on first use (cached on disk, as the
other compiled kernels are); :func:`qarray.backends.numba_kernels.available` decides
whether they are used (``QARRAY_DISABLE_NUMBA=1`` turns them off), and the NumPy
backend takes the generic path otherwise, and for arrays below
:data:`qarray.backends.numba_kernels.MIN_ELEMENTS` values.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, Optional, Tuple

import numpy

from qarray.core.packing import pack_bounds, packed_length, values_per_byte

from . import numba_kernels

__all__ = ["pack_bits", "takes", "unpack_bits"]

_INTEGER_KINDS = "iu"

_lock = threading.Lock()
_compiled: Dict[Tuple[int, Optional[bool]], Any] = {}


def takes(array: Any) -> bool:
    """Whether the compiled kernels take ``array``: a large enough, non-empty NumPy array of a
    native-endian integer dtype, with Numba available."""
    return (
        isinstance(array, numpy.ndarray)
        and array.dtype.kind in _INTEGER_KINDS
        and array.dtype.isnative
        and array.ndim >= 1
        and array.size > 0
        and array.size >= numba_kernels.MIN_ELEMENTS
        and numba_kernels.available()
    )


# -- the kernels, as plain Python (compiled by _kernel, one per width) -------------------------------


def _pack_kernel(n_bits: int) -> Callable[..., bool]:
    """The packing kernel of ``n_bits``-bit values (the width a compile-time constant)."""
    per, mask = values_per_byte(n_bits), (1 << n_bits) - 1

    def pack(values: Any, packed: Any, low: Any, high: Any, first_row: int, last_row: int, first: int,
             last: int) -> bool:
        """Pack bytes ``[first, last)`` of rows ``[first_row, last_row)``; return whether a value is
        outside ``[low, high]``."""
        length = values.shape[1]
        full = min(last, length // per)  # bytes that take ``per`` values
        outside = False
        for r in range(first_row, last_row):
            # slices indexed from 0: the compiler knows the indices are not negative and vectorises
            source = values[r, first * per : full * per]
            target = packed[r, first:full]
            for i in range(target.shape[0]):
                byte = 0
                for j in range(per):
                    value = source[i * per + j]
                    outside |= (value < low) | (value > high)
                    byte |= (value & mask) << (j * n_bits)
                target[i] = byte
            for c in range(max(first, full), last):  # the row's last byte, not full
                byte = 0
                for j in range(length - c * per):
                    value = values[r, c * per + j]
                    outside |= (value < low) | (value > high)
                    byte |= (value & mask) << (j * n_bits)
                packed[r, c] = byte
        return outside

    return pack


def _unpack_kernel(n_bits: int, signed: bool) -> Callable[..., None]:
    """The unpacking kernel of ``n_bits``-bit values (width and signedness compile-time constants).

    A value's bits ``x`` give ``x - 2 * (x & sign)`` (``sign = 2**(n_bits-1)`` when ``signed``,
    else 0): sign-extended, as ``(x ^ sign) - sign`` is; this form vectorises for every width.
    """
    per, mask = values_per_byte(n_bits), (1 << n_bits) - 1
    sign = 1 << (n_bits - 1) if signed else 0

    def unpack(packed: Any, values: Any, first_row: int, last_row: int, first: int, last: int) -> None:
        """Unpack bytes ``[first, last)`` of rows ``[first_row, last_row)``."""
        length = values.shape[1]
        full = min(last, length // per)
        for r in range(first_row, last_row):
            source = packed[r, first:full]
            target = values[r, first * per : full * per]
            for i in range(source.shape[0]):
                byte = numpy.int32(source[i])
                for j in range(per):
                    bits = (byte >> (j * n_bits)) & mask
                    target[i * per + j] = bits - ((bits & sign) << 1)
            for c in range(max(first, full), last):
                byte = numpy.int32(packed[r, c])
                for j in range(length - c * per):
                    bits = (byte >> (j * n_bits)) & mask
                    values[r, c * per + j] = bits - ((bits & sign) << 1)

    return unpack


def _kernel(n_bits: int, signed: Optional[bool] = None) -> Any:
    """The compiled kernel of width ``n_bits``: packing (``signed`` None) or unpacking, compiled
    once (under a lock) on first use.

    Raises:
        ImportError: if Numba is not available (or disabled).
    """
    key = (n_bits, signed)
    found = _compiled.get(key)
    if found is not None:
        return found
    if not numba_kernels.available():
        raise ImportError("the compiled packing kernels need numba: pip install 'qarray[fast]'")
    with _lock:
        found = _compiled.get(key)
        if found is None:
            import numba  # imported on first use only, on purpose (available() imported it already)

            # error_model="numpy": no division checks; fastmath is irrelevant (integers only)
            jit = numba.njit(cache=True, nogil=True, error_model="numpy")
            found = _compiled[key] = jit(_pack_kernel(n_bits) if signed is None else _unpack_kernel(n_bits, signed))
        return found


def _reset_lock_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # one held by another thread at the fork would never be released


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_after_fork)


# -- public entry points -------------------------------------------------------------------------


def _matrices(values: numpy.ndarray, packed: numpy.ndarray, per: int) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """``values`` and ``packed`` as ``(rows, length)`` and ``(rows, bytes)`` matrices: one row when
    ``values`` is C-contiguous and its rows fill whole bytes."""
    length = values.shape[-1]
    if values.flags.c_contiguous and length % per == 0:
        return values.reshape(1, -1), packed.reshape(1, -1)
    return values.reshape(-1, length), packed.reshape(-1, packed.shape[-1])


def pack_bits(q: numpy.ndarray, n_bits: int) -> Tuple[numpy.ndarray, bool]:
    """Pack the low ``n_bits`` bits of each integer of ``q`` along its last axis.

    Args:
        q: a non-empty integer array with at least one axis (:func:`takes`).
        n_bits: 1, 2 or 4.

    Returns:
        ``(packed, outside)``: uint8 of shape ``q.shape[:-1] + (ceil(L * n_bits / 8),)`` and
        whether any value lies outside :func:`~qarray.core.packing.pack_range` (the
        caller counts them, on that error path only).

    Raises:
        ImportError: if Numba is not available.

    Example:
        >>> pack_bits(numpy.array([1, 2, 3], dtype=numpy.int8), 4)  # doctest: +SKIP
        (array([33,  3], dtype=uint8), False)
    """
    kernel = _kernel(n_bits)
    per = values_per_byte(n_bits)
    packed = numpy.empty(q.shape[:-1] + (packed_length(q.shape[-1], n_bits),), dtype=numpy.uint8)
    values, target = _matrices(q, packed, per)
    low, high = pack_bounds(n_bits, q.dtype)
    flags = numba_kernels._grid_parts(  # rows, or for few rows the bytes of every row, on the pool
        target.shape[0], target.shape[1], per, lambda r0, r1, b0, b1: kernel(values, target, low, high, r0, r1, b0, b1)
    )
    return packed, any(flags)


def unpack_bits(packed: numpy.ndarray, n_bits: int, length: int, signed: bool) -> numpy.ndarray:
    """Unpack ``length`` values of ``n_bits`` bits from each row of uint8 ``packed``.

    Returns int8 values sign-extended from ``n_bits`` bits when ``signed``, else uint8
    values, of shape ``packed.shape[:-1] + (length,)``.

    Raises:
        ImportError: if Numba is not available.
    """
    kernel = _kernel(n_bits, signed)
    per = values_per_byte(n_bits)
    values = numpy.empty(packed.shape[:-1] + (length,), dtype=numpy.int8 if signed else numpy.uint8)
    if values.size == 0:
        return values
    target, source = _matrices(values, packed, per)
    numba_kernels._grid_parts(
        source.shape[0], source.shape[1], per, lambda r0, r1, b0, b1: kernel(source, target, r0, r1, b0, b1)
    )
    return values

