"""The NumPy backend: quantization kernels for host arrays without full-size temporaries.

The generic Array API path allocates a float64 copy of the input and several
full-size intermediates. Here the input is processed in blocks small enough to
stay in the processor's cache, with in-place ufuncs (``out=``) on one reusable
float64 buffer, and each block's result is written straight into the integer
output. The arithmetic is the same float64 sequence as the generic path, so
results are bit-identical to it.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy
from array_api_compat import numpy as compat_numpy

from .array_api import ArrayAPIBackend, Bounds

__all__ = ["NumpyBackend", "BLOCK_ELEMENTS"]

BLOCK_ELEMENTS = 1 << 16
"""Elements per block: a 512 KiB float64 buffer, which stays in a typical L2 cache."""


class NumpyBackend(ArrayAPIBackend):
    """Blocked, in-place NumPy kernels; falls back to the generic path where they do not apply.

    Example:
        >>> import numpy
        >>> q, _ = NumpyBackend().quantize(numpy.array([0.4, 2.6]), 1.0, 0, (0, 3), "int8")
        >>> q
        array([0, 3], dtype=int8)
    """

    host_resident = True

    def __init__(self) -> None:
        super().__init__(compat_numpy, name="numpy")

    def asarray(self, values: Any, device: Any = None) -> Any:
        """Return ``values`` as a NumPy array, copying other libraries' arrays to the host."""
        if isinstance(values, numpy.ndarray):
            return values
        return self.to_numpy(values)

    def copy(self, array: Any) -> Any:
        """Return a C-contiguous copy of ``array`` that shares no memory with it."""
        return numpy.array(array, copy=True, order="C")

    def minmax(self, values: Any, omit_nonfinite: bool = False) -> Tuple[Any, Any]:
        """Return ``(min, max)`` as 0-d arrays (see :meth:`ArrayAPIBackend.minmax`)."""
        if omit_nonfinite:
            return super().minmax(values, omit_nonfinite=True)
        return numpy.min(values), numpy.max(values)

    def quantize(
        self,
        values: Any,
        scale: float,
        zero_point: Any,
        clip: Bounds,
        dtype: str,
        check_finite: bool = True,
        fit: Bounds = None,
        out: Any = None,
    ) -> Tuple[Any, Any]:
        """Quantize block by block (see :meth:`ArrayAPIBackend.quantize` for the contract)."""
        if numpy.ndim(zero_point) != 0:
            return super().quantize(values, scale, zero_point, clip, dtype, check_finite, fit, out)
        result = _output(out, values.shape, dtype)
        source = numpy.ascontiguousarray(values).reshape(-1)
        target = result.reshape(-1)
        buffer = numpy.empty(min(BLOCK_ELEMENTS, source.size), dtype=numpy.float64)
        n_nonfinite = 0
        n_outside = 0
        for start in range(0, source.size, BLOCK_ELEMENTS):
            chunk = source[start : start + BLOCK_ELEMENTS]
            work = buffer[: chunk.size]
            numpy.divide(chunk, scale, out=work, dtype=numpy.float64)
            numpy.add(work, zero_point, out=work)
            numpy.rint(work, out=work)
            if check_finite:
                n_nonfinite += chunk.size - int(numpy.count_nonzero(numpy.isfinite(chunk)))
            if clip is not None:
                numpy.clip(work, clip[0], clip[1], out=work)
            elif fit is not None:
                inside = numpy.count_nonzero((work >= fit[0]) & (work <= fit[1]))
                n_outside += chunk.size - int(inside)
            numpy.copyto(target[start : start + chunk.size], work, casting="unsafe")
        problems = None
        if check_finite or fit is not None:
            problems = numpy.array([n_nonfinite, n_outside], dtype=numpy.int64)
        return result, problems

    def dequantize(
        self, qvalues: Any, scale: float, zero_point: Any, dtype: str, out: Any = None
    ) -> Any:
        """De-quantize block by block (see :meth:`ArrayAPIBackend.dequantize`)."""
        if numpy.ndim(zero_point) != 0:
            return super().dequantize(qvalues, scale, zero_point, dtype, out)
        result = _output(out, qvalues.shape, dtype)
        source = numpy.ascontiguousarray(qvalues).reshape(-1)
        target = result.reshape(-1)
        direct = dtype == "float64"
        buffer = None if direct else numpy.empty(min(BLOCK_ELEMENTS, source.size), numpy.float64)
        for start in range(0, source.size, BLOCK_ELEMENTS):
            chunk = source[start : start + BLOCK_ELEMENTS]
            work = target[start : start + chunk.size] if direct else buffer[: chunk.size]
            numpy.subtract(chunk, zero_point, out=work, dtype=numpy.float64)
            numpy.multiply(work, scale, out=work)
            if not direct:
                numpy.copyto(target[start : start + chunk.size], work, casting="unsafe")
        return result


def _output(out: Optional[numpy.ndarray], shape: tuple, dtype: str) -> numpy.ndarray:
    """Return ``out`` after checking it can take the result, or a new array."""
    if out is None:
        return numpy.empty(shape, dtype=dtype)
    if not isinstance(out, numpy.ndarray):
        raise TypeError(f"out must be a NumPy array for NumPy input, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != numpy.dtype(dtype):
        raise ValueError(
            f"out must have shape {tuple(shape)} and dtype {dtype}, "
            f"got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writeable C-contiguous array")
    return out
