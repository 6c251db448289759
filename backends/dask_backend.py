"""The Dask backend: lazy, chunked quantization of arrays larger than memory.

Dask arrays (with NumPy chunks on the CPU or CuPy chunks on a GPU) are
quantized block by block: ``quantize`` and ``dequantize`` return lazy Dask
arrays built with ``map_blocks``, whose block function hands each chunk to the
backend of the chunk's own library (the NumPy or CuPy kernels) with the
fitted parameters, so the integers are exactly those of the chunk library
(per-block min/max too: each chunk, rechunked to hold whole blocks or lie in one,
is reduced by its library's kernel).
The checks that the eager backends read back (non-finite input, values that do
not fit the output dtype) run inside the block function and raise
``ValueError`` when the result is computed. Calibration builds the lazy
``min``/``max`` reductions; the core reads them back together, in one compute.

This module imports Dask; it is only imported when a Dask array shows up (or
``get_backend("dask")`` is called), never by ``import qarray``.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, List, Optional, Tuple

import numpy

from qarray.core.granularity import grid_shape
from qarray.core.messages import outside_pack_range, raise_on_problems
from qarray.core.namespace import array_namespace, to_numpy
from qarray.core.packing import values_per_byte

from .array_api import ArrayAPIBackend
from .registry import backend_for
from .spec import Problems, QuantSpec, check_extent

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
        >>> from qarray.backends.spec import QuantSpec
        >>> q, problems = backend.quantize(values, QuantSpec.per_tensor(1.0, 0, (0, 3), "int8"))
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

    def _learn_shape(self, array: Any, argument: str) -> Any:
        """Return a new array over the same graph with the unknown chunk sizes (``x[x > 0]``) computed.

        Learning the sizes computes the graph once (only each chunk's length is kept);
        ``array`` itself is left as it is.
        """
        known = array.copy()
        known.compute_chunk_sizes()
        return known

    def parameter(self, host_value: Any, like: Any) -> Any:
        """Return a parameter for the block functions: a float, or a host float64 array.

        Array parameters (per-channel zero points) stay on the host: each block takes
        the slice it needs and places it with its chunk's library.
        """
        if numpy.ndim(host_value) == 0:
            return float(host_value)
        return numpy.asarray(host_value, dtype=numpy.float64)

    # -- kernels ---------------------------------------------------------------------------

    def minmax(
        self, values: Any, omit_nonfinite: bool = False, *, extent: Optional[Tuple[int, ...]] = None
    ) -> Tuple[Any, Any]:
        """Return lazy Dask arrays ``(min, max)`` (see :meth:`ArrayAPIBackend.minmax`).

        Nothing is computed here; reading both back together costs one pass over the data.
        Without ``extent`` they are 0-d. With one, they have the parameter grid's shape:
        the array is rechunked so that no chunk straddles a block boundary (chunk ends are
        moved to the nearest multiple of the extent, or, along an axis whose blocks are
        longer than its chunks, the block ends are added), each chunk reduces its blocks
        (or its piece of one block) with its own library's kernel (the NumPy or CuPy fused
        one), and the pieces of a block spread over several chunks are reduced together.

        Raises:
            TypeError, ValueError: if ``extent`` is not one int >= 1 per axis of ``values``,
                or the chunk sizes are unknown.
        """
        import dask.array as da

        if extent is not None:
            extent = check_extent(extent, tuple(values.shape))
            if values.ndim != 0:
                return _lazy_block_minmax(values, extent, omit_nonfinite)
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
        self, values: Any, spec: QuantSpec, *, check_finite: bool = True, out: Any = None
    ) -> Tuple[Any, Optional[Problems]]:
        """Quantize lazily, block by block (see :meth:`ArrayAPIBackend.quantize`).

        Returns ``(qvalues, None)``: the checks run inside each block and raise
        ``ValueError`` when ``qvalues`` is computed, so there is nothing to read here.
        Grid parameters (host or chunk-library arrays) are cut to each chunk.

        Raises:
            TypeError: if ``out`` is given (Dask arrays cannot be written into).
        """
        _refuse_out(out)
        meta = values._meta.astype(spec.out_dtype)
        qvalues = values.map_blocks(
            _quantize_block,
            dtype=numpy.dtype(spec.out_dtype),
            meta=meta,
            spec=spec,
            check_finite=check_finite,
            ndim=values.ndim,
        )
        return qvalues, None

    def dequantize(self, qvalues: Any, spec: QuantSpec, *, dtype: str = "float64", out: Any = None) -> Any:
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
            spec=spec,
            float_dtype=dtype,
            ndim=qvalues.ndim,
        )

    def pack_bits(self, q: Any, n_bits: int) -> Tuple[Any, Optional[Any]]:
        """Pack lazily, chunk by chunk (see :meth:`ArrayAPIBackend.pack_bits`).

        The last axis is rechunked so that every chunk but the last holds whole bytes (its
        ends moved to the nearest multiple of ``8 // n_bits``); each chunk is packed by its
        own library's kernel. Returns ``(packed, None)``: the range check runs inside each
        chunk and raises ``ValueError`` when ``packed`` is computed.
        """
        per = values_per_byte(n_bits)
        aligned = q.rechunk({q.ndim - 1: _aligned_chunks(q.chunks[-1], per)})
        chunks = aligned.chunks[:-1] + (tuple(-(-chunk // per) for chunk in aligned.chunks[-1]),)
        packed = aligned.map_blocks(
            _pack_block, n_bits=n_bits, chunks=chunks, dtype=numpy.uint8, meta=q._meta.astype(numpy.uint8)
        )
        return packed, None

    def unpack_bits(self, packed: Any, n_bits: int, length: int, signed: bool) -> Any:
        """Unpack lazily, chunk by chunk (see :meth:`ArrayAPIBackend.unpack_bits`): every byte
        of a chunk, by the chunk's library, then the padding values cut off the end."""
        per = values_per_byte(n_bits)
        dtype = numpy.dtype(numpy.int8 if signed else numpy.uint8)
        chunks = packed.chunks[:-1] + (tuple(chunk * per for chunk in packed.chunks[-1]),)
        values = packed.map_blocks(
            _unpack_block, n_bits=n_bits, signed=signed, chunks=chunks, dtype=dtype, meta=packed._meta.astype(dtype)
        )
        return values[..., :length]


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


def _lazy_block_minmax(values: Any, extent: Tuple[int, ...], omit_nonfinite: bool) -> Tuple[Any, Any]:
    """Lazy per-block min and max of a Dask array (``extent`` checked, ``values`` at least 1-d)."""
    shape = tuple(int(length) for length in values.shape)
    grid = grid_shape(shape, extent)
    if 0 in shape:  # no block at all: empty grids, of the chunks' library
        empty = values[tuple(slice(0, length) for length in grid)]
        return empty, empty.copy()
    plans = [_axis_plan(chunks, length, size) for chunks, length, size in zip(values.chunks, shape, extent)]
    aligned = values.rechunk(tuple(chunks for chunks, _ in plans))
    pieces = tuple(
        tuple(-(-chunk // min(size, chunk)) for chunk in chunks) for (chunks, _), size in zip(plans, extent)
    )
    stacked = aligned.map_blocks(
        _minmax_block,
        extent=extent,
        omit_nonfinite=bool(omit_nonfinite),
        chunks=((2,), *pieces),
        new_axis=0,
        dtype=values.dtype,
        meta=values._meta.reshape((0,) * (values.ndim + 1)),
    )
    for axis, (_, counts) in enumerate(plans):
        if counts is None:
            continue
        # every block's pieces into one chunk, reduced to one entry
        stacked = stacked.rechunk({axis + 1: counts})
        reduced_chunks = list(stacked.chunks)
        reduced_chunks[axis + 1] = (1,) * len(counts)
        stacked = stacked.map_blocks(
            _combine_pieces, axis=axis, chunks=tuple(reduced_chunks), dtype=values.dtype, meta=stacked._meta
        )
    return stacked[0], stacked[1]


def _axis_plan(chunks: Tuple[int, ...], length: int, size: int) -> Tuple[Tuple[int, ...], Optional[Tuple[int, ...]]]:
    """How one axis is cut for blocks of ``size``: ``(chunks, counts)``.

    Where blocks fit in the chunks, chunk ends move to the nearest multiple of ``size``
    (chunks keep about their length and hold whole blocks; ``counts`` is None). Where
    blocks are longer than every chunk, the block ends are added to the chunk ends, so
    each chunk lies in one block, and ``counts`` says how many chunks each block spans
    (None when one each).
    """
    if size < length and size <= max(chunks):
        return _aligned_chunks(chunks, size), None
    ends = [0]
    for chunk in chunks:
        ends.append(ends[-1] + int(chunk))
    bounds = sorted(set(ends) | set(range(size, length, size)))
    aligned = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    counts: List[int] = []
    previous = -1
    for start in bounds[:-1]:
        if start // size == previous:
            counts[-1] += 1
        else:
            counts.append(1)
            previous = start // size
    return aligned, (tuple(counts) if any(count > 1 for count in counts) else None)


def _aligned_chunks(chunks: Tuple[int, ...], size: int) -> Tuple[int, ...]:
    """The chunks of an axis with each end but the last moved to the nearest multiple of ``size``
    (ends that meet are merged), so that every chunk but the last holds whole runs of ``size``."""
    ends = list(itertools.accumulate(int(chunk) for chunk in chunks))
    length = ends[-1] if ends else 0
    nearest = {(end + size // 2) // size * size for end in ends[:-1]}
    bounds = [0, *sorted(end for end in nearest if 0 < end < length), length]
    return tuple(b - a for a, b in zip(bounds, bounds[1:]))


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


def _local_grid(extent: Tuple[int, ...], location: Any) -> Tuple[Tuple[Any, ...], Tuple[int, ...]]:
    """How a chunk at ``location`` sees a parameter grid: per axis, the grid index (a slice,
    or an index array for chunks that start inside a block) and the chunk's block extent."""
    index: List[Any] = []  # per axis, a slice or an index array
    local: List[int] = []
    for size, (start, stop) in zip(extent, location):
        first, last = start // size, (stop - 1) // size if stop > start else start // size
        if first == last:  # the chunk lies in one block along this axis
            index.append(slice(first, first + 1))
            local.append(max(1, stop - start))
        elif start % size == 0:  # starts on a block boundary: the same blocks, cut at the end
            index.append(slice(first, last + 1))
            local.append(size)
        else:  # blocks straddle the chunk's start: one parameter per value along this axis
            index.append(numpy.arange(start, stop) // size)
            local.append(1)
    return tuple(index), tuple(local)


def _take_grid(parameter: numpy.ndarray, index: Tuple[Any, ...]) -> numpy.ndarray:
    """A host ``parameter`` grid cut to one chunk by :func:`_local_grid`'s index, axis by axis."""
    for axis, entry in enumerate(index):
        parameter = parameter[(slice(None),) * axis + (entry,)]
    return parameter


def _block_spec(spec: QuantSpec, block: Any, ndim: int, block_info: Optional[dict]) -> Tuple[Any, QuantSpec]:
    """The chunk library's backend, and ``spec`` with its parameters cut to the current block."""
    backend = backend_for(block)
    if spec.extent is None:
        zero = _block_zero_point(spec.zero_point, ndim, block_info)
        if numpy.ndim(zero) != 0:
            zero = backend.parameter(zero, block)
        return backend, dataclasses.replace(spec, zero_point=zero)
    if block_info is None or None not in block_info:  # Dask probing with a stand-in block
        location = [(0, length) for length in block.shape]
    else:
        location = block_info[None]["array-location"]
    index, local_extent = _local_grid(spec.extent, location)
    placed = {}
    for name in ("scale", "zero_point", "low", "high"):
        value = getattr(spec, name)
        if value is not None and numpy.ndim(value) != 0:
            value = backend.parameter(_take_grid(to_numpy(value), index), block)
        placed[name] = value
    return backend, dataclasses.replace(spec, extent=local_extent, **placed)


def _quantize_block(
    block: Any,
    spec: QuantSpec,
    check_finite: bool,
    ndim: int,
    block_info: Optional[dict] = None,
) -> Any:
    """Quantize one chunk with its own library's backend; raise on the checks it fails."""
    backend, local = _block_spec(spec, block, ndim, block_info)
    # NaN/±Inf are counted below; NumPy's cast warnings about them would only repeat that.
    with numpy.errstate(invalid="ignore", over="ignore"):
        qvalues, problems = backend.quantize(block, local, check_finite=check_finite)
    if problems is not None:
        raise_on_problems(problems.read(), spec.out_dtype, f"in a block of {backend.size(block)}")
    return qvalues


def _dequantize_block(
    block: Any,
    spec: QuantSpec,
    float_dtype: str,
    ndim: int,
    block_info: Optional[dict] = None,
) -> Any:
    """De-quantize one chunk with its own library's backend."""
    backend, local = _block_spec(spec, block, ndim, block_info)
    return backend.dequantize(block, local, dtype=float_dtype)


def _minmax_block(block: Any, extent: Tuple[int, ...], omit_nonfinite: bool) -> Any:
    """The min and max of the blocks in one chunk, stacked ``(2, ...)``, by its library's backend.

    The chunk holds whole blocks, or lies in one block (then its extent is its length).
    """
    local = tuple(min(size, max(1, int(length))) for size, length in zip(extent, block.shape))
    low, high = backend_for(block).minmax(block, omit_nonfinite, extent=local)
    return array_namespace(low).stack([low, high])


def _combine_pieces(stacked: Any, axis: int) -> Any:
    """Reduce stacked ``(2, ...)`` pieces of one block along data axis ``axis`` (min, then max)."""
    xp = array_namespace(stacked)
    low = xp.min(stacked[0, ...], axis=axis, keepdims=True)
    high = xp.max(stacked[1, ...], axis=axis, keepdims=True)
    return xp.stack([low, high])


def _pack_block(block: Any, n_bits: int) -> Any:
    """Pack one chunk with its own library's backend; raise if it holds values ``n_bits`` cannot."""
    backend = backend_for(block)
    packed, n_outside = backend.pack_bits(block, n_bits)
    count = int(backend.to_numpy(n_outside))
    if count:
        raise outside_pack_range(count, n_bits, f"in a block of {backend.size(block)}")
    return packed


def _unpack_block(block: Any, n_bits: int, signed: bool) -> Any:
    """Unpack every byte of one chunk with its own library's backend."""
    return backend_for(block).unpack_bits(block, n_bits, int(block.shape[-1]) * values_per_byte(n_bits), signed)


def _unique_block(block: Any, omit_nonfinite: bool) -> Any:
    """The sorted unique rounded values of one chunk, by its library's backend."""
    return backend_for(block).unique_rounded(block, omit_nonfinite=omit_nonfinite)


def _merge_unique(parts: list) -> Any:
    """Merge the per-block unique values into one sorted unique array (chunk library)."""
    xp = array_namespace(*parts)
    return xp.sort(xp.unique_values(xp.concat(parts)))
