"""Compiled sub-byte packing for the NumPy backend, built with Numba when it is installed.

:func:`pack_bits` and :func:`unpack_bits` give the bytes and values of the generic
path (:meth:`ArrayAPIBackend.pack_bits`, :meth:`ArrayAPIBackend.unpack_bits`) bit for
bit, in one pass: each output byte is made from its ``8 // n_bits`` values (and each
byte read gives them back) in registers, with the range check of the values folded
into the same loop as one flag. The width is a constant of each compiled kernel
(one per ``n_bits``), so the inner loop over a byte's values unrolls and the outer
loop vectorises. One-byte values (int8, uint8: what quantization gives for packing) in
one contiguous row of whole bytes take a faster kernel on little-endian machines: the
``8 // n_bits`` values of an output byte are read as one 16-, 32- or 64-bit word and
their low bits gathered into its low byte by two to four shifts, and the range is
checked per block as a minimum and a maximum (a per-value flag does not vectorise).

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
import sys
import threading
from typing import Any, Callable, Dict, Optional, Tuple

import numpy

from qarray.core.packing import pack_bounds, packed_length, values_per_byte

from . import _parallel, numba_kernels

__all__ = ["pack_bits", "takes", "unpack_bits"]

_INTEGER_KINDS = "iu"

_lock = threading.Lock()
_compiled: Dict[Tuple[int, Optional[Any]], Any] = {}


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


_WORDS = {
    4: (numpy.uint16, 0x0F0F, (4,)),
    2: (numpy.uint32, 0x03030303, (6, 12)),
    1: (numpy.uint64, 0x0101010101010101, (7, 14, 28)),
}
"""Per width: the word holding one output byte's values (one byte each), the mask of their
low bits, and the shifts that gather those bits into the word's low byte (first value in
the least significant bits; on a little-endian machine the first byte is the word's lowest)."""

_WORDS_PER_BLOCK = 2048
"""Words whose bytes are range-checked, then packed, while they are in L1 cache."""


def _word_pack_kernel(n_bits: int) -> Callable[..., bool]:
    """The packing kernel of one-byte values read ``8 // n_bits`` at a time as one word.

    Each word's low bits are gathered by shifts into its low byte (a few operations per
    output byte, in wide vector lanes); the values' range is checked block by block as a
    minimum and a maximum, which vectorise where a per-value flag does not.
    """
    word, mask_value, shifts = _WORDS[n_bits]
    per = values_per_byte(n_bits)
    mask = word(mask_value)
    shift_a = word(shifts[0])
    shift_b = word(shifts[1] if len(shifts) > 1 else 0)
    shift_c = word(shifts[2] if len(shifts) > 2 else 0)
    n_shifts = len(shifts)
    low_byte = word(0xFF)

    def pack(values: Any, words: Any, packed: Any, low: Any, high: Any, first: int, last: int) -> bool:
        """Pack words ``[first, last)`` (the bytes of ``values`` they hold); return whether a
        value is outside ``[low, high]``."""
        smallest, largest = high, low
        for start in range(first, last, _WORDS_PER_BLOCK):
            stop = min(last, start + _WORDS_PER_BLOCK)
            block = values[start * per : stop * per]
            for k in range(block.shape[0]):
                smallest = min(smallest, block[k])
                largest = max(largest, block[k])
            source = words[start:stop]
            target = packed[start:stop]
            for i in range(source.shape[0]):
                bits = source[i] & mask
                bits |= bits >> shift_a
                if n_shifts > 1:
                    bits |= bits >> shift_b
                if n_shifts > 2:
                    bits |= bits >> shift_c
                target[i] = numpy.uint8(bits & low_byte)
        return smallest < low or largest > high

    return pack


def _kernel(n_bits: int, signed: Optional[Any] = None) -> Any:
    """The compiled kernel of width ``n_bits``: packing (``signed`` None), packing one-byte
    values word by word (``signed="word"``) or unpacking, compiled once (under a lock) on first use.

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
            function: Callable[..., Any]
            if signed is None:
                function = _pack_kernel(n_bits)
            elif signed == "word":
                function = _word_pack_kernel(n_bits)
            else:
                function = _unpack_kernel(n_bits, signed)
            found = _compiled[key] = jit(function)
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


def _as_words(values: numpy.ndarray, n_bits: int) -> Optional[numpy.ndarray]:
    """One-byte values as the words of :data:`_WORDS` (a view), when the word kernel can take
    them: one C-contiguous row of whole bytes, aligned for the word, on a little-endian machine."""
    word = _WORDS[n_bits][0]
    if values.dtype.itemsize != 1 or values.shape[0] != 1 or sys.byteorder != "little":
        return None
    flat = values.reshape(-1)
    aligned = flat.ctypes.data % numpy.dtype(word).itemsize == 0
    if not (flat.flags.c_contiguous and aligned) or flat.size % values_per_byte(n_bits):
        return None
    return flat.view(word)


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
    per = values_per_byte(n_bits)
    packed = numpy.empty(q.shape[:-1] + (packed_length(q.shape[-1], n_bits),), dtype=numpy.uint8)
    values, target = _matrices(q, packed, per)
    low, high = pack_bounds(n_bits, q.dtype)
    words = _as_words(values, n_bits)
    if words is not None:
        word_kernel = _kernel(n_bits, "word")
        flat, flat_packed = values.reshape(-1), target.reshape(-1)
        flags = _parallel.run(
            words.size, lambda start, stop: word_kernel(flat, words, flat_packed, low, high, start, stop)
        )
        return packed, any(flags)
    kernel = _kernel(n_bits)
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

