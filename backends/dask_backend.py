"""The Dask backend: lazy, chunked quantization of arrays larger than memory.

Dask arrays (with NumPy chunks on the CPU or CuPy chunks on a GPU) are
quantized block by block: ``quantize`` and ``dequantize`` return lazy Dask
arrays built with ``map_blocks``, whose block function hands each chunk to the
backend of the chunk's own library (the NumPy or CuPy kernels) with the
fitted parameters, so the integers are exactly those of the chunk library.
The checks that the eager backends read back (non-finite input, values that do
not fit the output dtype) run inside the block function and raise
``ValueError`` when the result is computed. Calibration builds the lazy
``min``/``max`` reductions; the core reads them back together, in one compute.

This module imports Dask; it is only imported when a Dask array shows up (or
``get_backend("dask")`` is called), never by ``import qarray``.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy

from qarray._checks import raise_on_problems
from qarray._namespace import to_numpy

from .array_api import ArrayAPIBackend, Bounds

__all__ = ["DaskBackend", "make_dask_backend"]


class DaskBackend(ArrayAPIBackend):
    """Kernels for Dask arrays: lazy ``map_blocks`` over the chunk library's kernels.

    Args:
        xp: the Dask namespace of array-api-compat (``array_api_compat.dask.array``).

    Example:
        >>> import numpy, dask.array
        >>> from qarray.backends import get_backend
        >>> backend = get_backend("dask")
        >>> values = dask.array.from_array(numpy.array([0.4, 2.6, 1.5, 3.9]), chunks=2)
        >>> q, problems = backend.quantize(values, 1.0, 0, (0, 3), "int8")
        >>> q.compute(), problems
        (array([0, 3, 2, 3], dtype=int8), None)
    """

    #: Dask arrays are lazy: reading one back means computing its whole graph
    host_resident = False

    def __init__(self, xp: Any) -> None:
        super().__init__(xp, name="dask")

    # -- moving data -----------------------------------------------------------------------

    def asarray(self, values: Any, device: Any = None) -> Any:
        """Return ``values`` as a Dask array.

        Dask arrays are returned as they are. NumPy and CuPy arrays are copied (so later
        changes to them do not show) and wrapped with automatic chunks, keeping their
        library as the chunk type; other libraries' arrays go through the host.
        """
        import dask.array as da

        if self.owns(values):
            return values
        chunk = values if _is_chunk_array(values) else to_numpy(values)
        return da.from_array(chunk.copy(), chunks="auto")

    def copy(self, array: Any) -> Any:
        """Return a new Dask array over the same graph.

        Dask arrays cannot be changed in place (assigning into one rebuilds that
        object's graph), so a new array object is an independent copy.
        """
        return array.copy()

    def parameter(self, host_value: Any, like: Any) -> Any:
        """Return a parameter for the block functions: a float, or a host float64 array.

        Array parameters (per-channel zero points) stay on the host: each block takes
        the slice it needs and places it with its chunk's library.
        """
        if numpy.ndim(host_value) == 0:
            return float(host_value)
        return numpy.asarray(host_value, dtype=numpy.float64)

    # -- kernels ---------------------------------------------------------------------------

    def minmax(self, values: Any, omit_nonfinite: bool = False) -> Tuple[Any, Any]:
        """Return lazy 0-d Dask arrays ``(min, max)`` (see :meth:`ArrayAPIBackend.minmax`).

        Nothing is computed here; reading both back together costs one pass over the data.
        """
        import dask.array as da

        if not omit_nonfinite:
            return da.min(values), da.max(values)
        finite = da.isfinite(values)
        low = da.min(da.where(finite, values, float("inf")))
        high = da.max(da.where(finite, values, float("-inf")))
        return low.astype(values.dtype), high.astype(values.dtype)

    def unique_rounded(self, values: Any, omit_nonfinite: bool = False) -> Any:
        """Return the sorted unique values rounded to 2 decimals, as a one-chunk Dask array.

        Each block finds its own unique values with its chunk library's kernel; they are
        merged and computed here, in one pass, because their number decides the QAT scale
        (this is part of calibration, which reads back anyway). The result keeps the chunk
        library (NumPy or CuPy) and has a known length.
        """
        import dask
        import dask.array as da

        blocks = values.to_delayed().ravel().tolist()
        parts = [dask.delayed(_unique_block)(block, omit_nonfinite) for block in blocks]
        (merged,) = dask.compute(dask.delayed(_merge_unique)(parts))
        return da.from_array(merged, chunks=(max(1, int(merged.shape[0])),))

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
        """Quantize lazily, block by block (see :meth:`ArrayAPIBackend.quantize`).

        Returns ``(qvalues, None)``: the checks run inside each block and raise
        ``ValueError`` when ``qvalues`` is computed, so there is nothing to read here.

        Raises:
            TypeError: if ``out`` is given (Dask arrays cannot be written into).
        """
        _refuse_out(out)
        meta = values._meta.astype(dtype)
        qvalues = values.map_blocks(
            _quantize_block,
            dtype=numpy.dtype(dtype),
            meta=meta,
            scale=scale,
            zero_point=zero_point,
            clip=clip,
            integer_dtype=dtype,
            check_finite=check_finite,
            fit=fit,
            ndim=values.ndim,
        )
        return qvalues, None

    def dequantize(
        self, qvalues: Any, scale: float, zero_point: Any, dtype: str, out: Any = None
    ) -> Any:
        """De-quantize lazily, block by block (see :meth:`ArrayAPIBackend.dequantize`).

        Raises:
            TypeError: if ``out`` is given (Dask arrays cannot be written into).
        """
        _refuse_out(out)
        meta = qvalues._meta.astype(dtype)
        return qvalues.map_blocks(
            _dequantize_block,
            dtype=numpy.dtype(dtype),
            meta=meta,
            scale=scale,
            zero_point=zero_point,
            float_dtype=dtype,
            ndim=qvalues.ndim,
        )


def make_dask_backend() -> DaskBackend:
    """Import Dask and return its backend.

    Raises:
        ImportError: if ``dask[array]`` is not installed.
    """
    try:
        import dask.array  # noqa: F401  (imported here, on first use, on purpose)
        from array_api_compat.dask import array as compat_dask
    except ImportError as error:
        raise ImportError(f"the dask backend needs dask[array] installed: {error}") from error
    return DaskBackend(compat_dask)


# -- block functions (module level, so that distributed workers can unpickle them) ---------


def _is_chunk_array(values: Any) -> bool:
    """Return True for arrays Dask can hold as chunks directly (NumPy, CuPy)."""
    module = type(values).__module__
    return isinstance(values, numpy.ndarray) or module.startswith("cupy")


def _refuse_out(out: Any) -> None:
    if out is not None:
        raise TypeError(
            f"out is not supported for Dask arrays (they cannot be written into), got {type(out).__name__}"
        )


def _block_zero_point(zero_point: Any, ndim: int, block_info: Optional[dict]) -> Any:
    """Return the part of a host zero-point array that lines up with the current block."""
    if numpy.ndim(zero_point) == 0:
        return zero_point
    full = numpy.reshape(zero_point, (1,) * (ndim - zero_point.ndim) + zero_point.shape)
    if block_info is None or None not in block_info:
        return full
    location = block_info[None]["array-location"]
    index = tuple(
        slice(None) if extent == 1 else slice(start, stop)
        for extent, (start, stop) in zip(full.shape, location)
    )
    return full[index]


def _block_backend(block: Any, zero_point: Any, ndim: int, block_info: Optional[dict]) -> Tuple[Any, Any]:
    """The chunk library's backend, and the zero point (this block's slice) ready for it."""
    from qarray.backends import backend_for

    backend = backend_for(block)
    zero = _block_zero_point(zero_point, ndim, block_info)
    return backend, zero if numpy.ndim(zero) == 0 else backend.parameter(zero, block)


def _quantize_block(
    block: Any,
    scale: float,
    zero_point: Any,
    clip: Bounds,
    integer_dtype: str,
    check_finite: bool,
    fit: Bounds,
    ndim: int,
    block_info: Optional[dict] = None,
) -> Any:
    """Quantize one chunk with its own library's backend; raise on the checks it fails."""
    backend, zero = _block_backend(block, zero_point, ndim, block_info)
    # NaN/±Inf are counted below; NumPy's cast warnings about them would only repeat that.
    with numpy.errstate(invalid="ignore", over="ignore"):
        qvalues, problems = backend.quantize(block, scale, zero, clip, integer_dtype, check_finite, fit)
    if problems is not None:
        counts = backend.to_numpy(problems)  # one small read per block, inside the task
        raise_on_problems(counts, integer_dtype, f"in a block of {backend.size(block)}")
    return qvalues


def _dequantize_block(
    block: Any,
    scale: float,
    zero_point: Any,
    float_dtype: str,
    ndim: int,
    block_info: Optional[dict] = None,
) -> Any:
    """De-quantize one chunk with its own library's backend."""
    backend, zero = _block_backend(block, zero_point, ndim, block_info)
    return backend.dequantize(block, scale, zero, float_dtype)


def _unique_block(block: Any, omit_nonfinite: bool) -> Any:
    """The sorted unique rounded values of one chunk, by its library's backend."""
    from qarray.backends import backend_for

    return backend_for(block).unique_rounded(block, omit_nonfinite=omit_nonfinite)


def _merge_unique(parts: list) -> Any:
    """Merge the per-block unique values into one sorted unique array (chunk library)."""
    from qarray._namespace import array_namespace

    xp = array_namespace(*parts)
    return xp.sort(xp.unique_values(xp.concat(parts)))
