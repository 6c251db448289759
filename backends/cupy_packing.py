"""CUDA kernels of sub-byte packing for the CuPy backend, and their launches.

One thread per byte: a packing thread reads the ``8 // n_bits`` values of its output
byte, keeps their low ``n_bits`` bits (the first value in the least significant bits,
as :mod:`qarray.core.packing` says) and counts the values outside the packable range
(one atomic add per thread that found any: an error path); an unpacking thread reads
its byte and writes its values, sign-extended or not. The loops are grid-stride, so a
grid of at most one wave covers any size. The values are read as a C-contiguous
``(rows, length)`` matrix: a contiguous array whose rows fill whole bytes is one row,
which spares each thread a 64-bit division.

The width and signedness are template parameters (one kernel per width, input dtype
and signedness; :func:`kernel_names`). The module is compiled with the options of
:mod:`qarray.backends.cupy_kernels` on first use; importing this module imports no CuPy.

Example:
    >>> kernel_name("pack", 4, "int8"), kernel_name("unpack", 2, "int8")
    ('qarray_pack4_int8', 'qarray_unpack2_int8')
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Callable, Dict, Optional, Tuple

import numpy

from qarray.core.packing import PACK_BITS, pack_bounds, packed_length, values_per_byte

from .cupy_kernels import BLOCK_THREADS, COMPILE_OPTIONS, INTEGER_TYPES

__all__ = ["kernel", "kernel_name", "kernel_names", "pack_bits", "source", "takes", "unpack_bits"]

UNPACKED_TYPES: Dict[str, str] = {"int8": "signed char", "uint8": "unsigned char"}
"""The dtypes unpacking writes (signed: int8, unsigned: uint8), with their CUDA C++ types."""

Blocks = Callable[[Any, str, int], int]
"""``blocks(function, name, count)``: the grid of kernel ``name`` for ``count`` threads of work."""

_TEMPLATES = r"""
// qarray sub-byte packing: one thread per byte, the first value in the least significant bits.

template <int BITS, typename T>
__device__ __forceinline__ void qarray_pack(
    const T* __restrict__ values, unsigned char* __restrict__ packed, long long n_rows, long long length,
    long long n_bytes, T low, T high, unsigned long long* __restrict__ outside) {
    constexpr int PER = 8 / BITS;
    constexpr unsigned int MASK = (1u << BITS) - 1u;
    const long long total = n_rows * n_bytes;
    unsigned long long count = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long row = n_rows == 1 ? 0 : i / n_bytes;
        const long long first = (i - row * n_bytes) * PER;
        const T* source = values + row * length;
        unsigned int byte = 0u;
#pragma unroll
        for (int j = 0; j < PER; ++j) {
            if (first + j < length) {
                const T value = source[first + j];
                count += (value < low || value > high) ? 1ull : 0ull;
                byte |= ((unsigned int)value & MASK) << (j * BITS);
            }
        }
        packed[i] = (unsigned char)byte;
    }
    if (count != 0ull) {
        atomicAdd(outside, count);
    }
}

template <int BITS, typename T>
__device__ __forceinline__ void qarray_unpack(
    const unsigned char* __restrict__ packed, T* __restrict__ values, long long n_rows, long long length,
    long long n_bytes, int sign) {
    constexpr int PER = 8 / BITS;
    constexpr int MASK = (1 << BITS) - 1;
    const long long total = n_rows * n_bytes;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long row = n_rows == 1 ? 0 : i / n_bytes;
        const long long first = (i - row * n_bytes) * PER;
        T* target = values + row * length;
        const int byte = (int)packed[i];
#pragma unroll
        for (int j = 0; j < PER; ++j) {
            if (first + j < length) {
                const int bits = (byte >> (j * BITS)) & MASK;
                target[first + j] = (T)(bits - ((bits & sign) << 1));  // sign-extended when sign != 0
            }
        }
    }
}
"""

_PACK = r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__) __NAME__(
    const __T__* values, unsigned char* packed, long long n_rows, long long length, long long n_bytes,
    __T__ low, __T__ high, unsigned long long* outside) {
    qarray_pack<__BITS__, __T__>(values, packed, n_rows, length, n_bytes, low, high, outside);
}
"""

_UNPACK = r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__) __NAME__(
    const unsigned char* packed, __T__* values, long long n_rows, long long length, long long n_bytes,
    int sign) {
    qarray_unpack<__BITS__, __T__>(packed, values, n_rows, length, n_bytes, sign);
}
"""


def kernel_name(kind: str, n_bits: int, dtype: str) -> str:
    """Return the CUDA name of a kernel.

    Args:
        kind: ``"pack"`` (``dtype`` the values' integer dtype) or ``"unpack"`` (``dtype`` the
            values written: ``"int8"`` sign-extended, ``"uint8"``).
        n_bits: 1, 2 or 4.
        dtype: the values' dtype name.

    Raises:
        ValueError: if the module has no such kernel.
    """
    types = {"pack": INTEGER_TYPES, "unpack": UNPACKED_TYPES}.get(kind)
    if types is None:
        raise ValueError(f"kind must be 'pack' or 'unpack', got {kind!r}")
    if n_bits not in PACK_BITS or dtype not in types:
        raise ValueError(f"n_bits must be 1, 2 or 4 and dtype one of {', '.join(types)}, got {n_bits!r}, {dtype!r}")
    return f"qarray_{kind}{n_bits}_{dtype}"


def _kernels() -> Tuple[Tuple[str, str, int, str], ...]:
    """``(kind, template, n_bits, dtype)`` of every kernel, in source order."""
    return tuple(
        (kind, template, n_bits, dtype)
        for kind, template, types in (("pack", _PACK, INTEGER_TYPES), ("unpack", _UNPACK, UNPACKED_TYPES))
        for n_bits in PACK_BITS
        for dtype in types
    )


def kernel_names() -> Tuple[str, ...]:
    """Return the names of every kernel in the module, in source order."""
    return tuple(kernel_name(kind, n_bits, dtype) for kind, _, n_bits, dtype in _kernels())


def source() -> str:
    """Return the CUDA C++ source of the whole module."""
    parts = [_TEMPLATES]
    for kind, template, n_bits, dtype in _kernels():
        c_type = INTEGER_TYPES[dtype]
        text = template.replace("__NAME__", kernel_name(kind, n_bits, dtype)).replace("__T__", c_type)
        parts.append(text.replace("__BITS__", str(n_bits)).replace("__BLOCK__", str(BLOCK_THREADS)))
    return "\n".join(parts)


_lock = threading.Lock()
_module: Dict[str, Any] = {}
_NAMES = frozenset(kernel_names())


def kernel(name: str) -> Any:
    """Return the compiled kernel called ``name`` (a ``cupy.RawKernel``), compiling the module once.

    Raises:
        ImportError: if CuPy is not installed.
        ValueError: if the module has no kernel called ``name``.
    """
    if name not in _NAMES:
        raise ValueError(f"name must name a kernel of the qarray packing module, got {name!r}")
    found = _module.get(name)
    if found is None:
        with _lock:
            if "" not in _module:  # the module itself, under the empty name
                _module[""] = importlib.import_module("cupy").RawModule(code=source(), options=COMPILE_OPTIONS)
            found = _module[name] = _module[""].get_function(name)
    return found


# -- launches (under the array's device; nothing read back) ------------------------------------------


def takes(array: Any, cupy: Any, dtypes: Optional[Dict[str, str]] = None) -> bool:
    """Whether the kernels take ``array``: a CuPy array of one of ``dtypes`` (default: any integer)."""
    return isinstance(array, cupy.ndarray) and numpy.dtype(array.dtype).name in (dtypes or INTEGER_TYPES)


def _rows(shape: Tuple[int, ...], contiguous: bool, per: int) -> int:
    """How many rows the kernels see: one for a C-contiguous array whose rows fill whole bytes."""
    if contiguous and shape[-1] % per == 0:
        return 1
    return int(numpy.prod(shape[:-1], dtype=numpy.int64))


def pack_bits(cupy: Any, q: Any, n_bits: int, blocks: Blocks) -> Tuple[Any, Any]:
    """Pack a CuPy integer array (see :meth:`ArrayAPIBackend.pack_bits`) in one kernel launch.

    Returns:
        ``(packed, n_outside)``: uint8 on ``q``'s device, and a 0-d int64 device count.
    """
    dtype = numpy.dtype(q.dtype)
    per, length = values_per_byte(n_bits), int(q.shape[-1])
    packed = cupy.empty(tuple(q.shape[:-1]) + (packed_length(length, n_bits),), dtype=numpy.uint8)
    outside = cupy.zeros((), dtype=cupy.int64)
    if packed.size:
        n_rows = _rows(tuple(q.shape), bool(q.flags.c_contiguous), per)
        name = kernel_name("pack", n_bits, dtype.name)
        function = kernel(name)
        arguments = (cupy.ascontiguousarray(q), packed, numpy.int64(n_rows), numpy.int64(q.size // n_rows),
                     numpy.int64(packed.size // n_rows), *pack_bounds(n_bits, dtype), outside)
        function((blocks(function, name, int(packed.size)),), (BLOCK_THREADS,), arguments)
    return packed, outside


def unpack_bits(cupy: Any, packed: Any, n_bits: int, length: int, signed: bool, blocks: Blocks) -> Any:
    """Unpack a CuPy uint8 array (see :meth:`ArrayAPIBackend.unpack_bits`) in one kernel launch."""
    dtype = "int8" if signed else "uint8"
    values = cupy.empty(tuple(packed.shape[:-1]) + (length,), dtype=dtype)
    if values.size:
        n_rows = _rows(tuple(values.shape), True, values_per_byte(n_bits))
        name = kernel_name("unpack", n_bits, dtype)
        function = kernel(name)
        sign = numpy.int32(1 << (n_bits - 1) if signed else 0)
        arguments = (cupy.ascontiguousarray(packed), values, numpy.int64(n_rows), numpy.int64(values.size // n_rows),
                     numpy.int64(packed.size // n_rows), sign)
        function((blocks(function, name, int(packed.size)),), (BLOCK_THREADS,), arguments)
    return values
