"""The CuPy backend: quantization on NVIDIA GPUs with fused kernels.

CuPy is imported when this backend is first asked for, never at ``import
qarray`` time. Quant, dequant and min/max each run as one fused kernel (see
:mod:`qarray.backends.cupy_kernels`): one read of the input and one write of
the output, the problem counts of quant accumulated on the device (and the
per-block min/max of every block of a parameter grid, in one read too). Every
kernel runs on CuPy's current stream, on the device of the array it is given,
and returns without waiting for the GPU; nothing is read back here (the core
reads the problem counts of quant once, and only when a check was asked for).
Per-channel (array) zero points and dtypes the kernels do not cover take the
generic Array API path, on the array's device. Results are bit-identical to
the NumPy backend because the arithmetic is the same float64 sequence, one
IEEE rounding per operation, rounded half to even.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import numbers
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy

from qarray.core.dyadic import Histogram, bin_floor
from qarray.core.granularity import grid_shape

from . import cupy_kernels, cupy_packing
from .array_api import ArrayAPIBackend
from .spec import Problems, QuantSpec, check_extent, check_out, grid_layout

__all__ = ["CupyBackend", "HistogramState", "make_cupy_backend"]

_PARAMETER_CACHE_SIZE = 32
"""How many per-channel zero points (per device) the backend keeps on the GPU."""

_FALLBACK_BLOCKS_PER_SM = 4
"""Resident blocks per multiprocessor assumed when the occupancy query is not available."""

_KEY_DTYPES: Dict[str, str] = {"float32": "uint32", "float64": "uint64"}
"""The dtype of the per-block min/max keys of each float dtype (``cupy_kernels.KEY_TYPES``)."""


class CupyBackend(ArrayAPIBackend):
    """Fused CUDA kernels for CuPy arrays; the generic Array API path where they do not apply.

    Args:
        cupy_namespace: CuPy's Array API namespace (``array_api_compat.cupy``).

    Example:
        >>> import cupy  # doctest: +SKIP
        >>> from qarray.backends import get_backend  # doctest: +SKIP
        >>> q, _ = get_backend("cupy").quantize(  # doctest: +SKIP
        ...     cupy.asarray([0.4, 2.6]), 1.0, 0.0, (0, 3), "int8", check_finite=False)
        >>> q  # doctest: +SKIP
        array([0, 3], dtype=int8)
    """

    defers_reads = True

    def __init__(self, cupy_namespace: Any) -> None:
        super().__init__(cupy_namespace, name="cupy")
        self._cupy = importlib.import_module("cupy")
        self._lock = threading.Lock()
        self._parameters: OrderedDict[Tuple[int, int], Tuple[numpy.ndarray, Any]] = OrderedDict()
        self._grids: Dict[Tuple[str, int], int] = {}
        self._row_maps: OrderedDict[Tuple[Any, ...], Tuple[Any, int, int]] = OrderedDict()

    # -- moving data -----------------------------------------------------------------------

    def synchronize(self) -> None:
        """Wait for the work queued on CuPy's current stream (for timing)."""
        self._cupy.cuda.get_current_stream().synchronize()

    def asarray(self, values: Any, device: Any = None) -> Any:
        """Return ``values`` on the GPU: CuPy arrays as they are, others copied once.

        Args:
            values: an array of any library, or a NumPy array.
            device: the CUDA device (a ``cupy.cuda.Device`` or its id) to copy host
                data to; default the current device. CuPy arrays are never moved.
        """
        if self.owns(values):
            return values
        host = values if isinstance(values, numpy.ndarray) else self.to_numpy(values)
        with self._device_context(device):
            return self._cupy.asarray(host)

    def copy(self, array: Any) -> Any:
        """Return a C-contiguous copy of ``array`` on the device it lives on."""
        if not isinstance(array, self._cupy.ndarray):
            return super().copy(array)
        with array.device:
            return array.copy(order="C")

    def parameter(self, host_value: Any, like: Any) -> Any:
        """Return a quantization parameter ready to combine with ``like`` (on ``like``'s device).

        Scalars become Python floats. Array (per-channel) zero points become float64 CuPy
        arrays on ``like``'s device; they are copied to the device once and kept (a small
        cache keyed by the host array, checked bit for bit on every use), so repeated
        calls with the same zero points make no host-to-device copy.
        """
        if numpy.ndim(host_value) == 0:
            return float(host_value)
        if not isinstance(host_value, numpy.ndarray) or not isinstance(like, self._cupy.ndarray):
            return super().parameter(host_value, like)
        converted = numpy.ascontiguousarray(host_value, dtype=numpy.float64)
        key = (id(host_value), like.device.id)
        with self._lock:
            cached = self._parameters.get(key)
            if cached is not None and _same_bits(cached[0], converted):
                self._parameters.move_to_end(key)
                return cached[1]
        with like.device:
            on_device = self._cupy.asarray(converted)
        with self._lock:
            self._parameters[key] = (converted.copy(), on_device)
            self._parameters.move_to_end(key)
            while len(self._parameters) > _PARAMETER_CACHE_SIZE:
                self._parameters.popitem(last=False)
        return on_device

    # -- kernels ---------------------------------------------------------------------------

    def minmax(
        self, values: Any, omit_nonfinite: bool = False, *, extent: Optional[Tuple[int, ...]] = None
    ) -> Tuple[Any, Any]:
        """Return ``(min, max)`` as arrays of ``values``' dtype, in one fused pass.

        See :meth:`ArrayAPIBackend.minmax`: NaN propagates unless ``omit_nonfinite``;
        with it, NaN and ±Inf are left out (+Inf, -Inf when nothing is left). Two
        kernel launches, no read-back: per-block results then their combination (0-d
        results), or, with an ``extent``, one pass that combines every block's order
        keys on the device with atomics (the grid kernels' row map says which block a
        value is in), then the keys back to floats (arrays of the parameter grid's
        shape). Other dtypes take the generic path, on the array's device.

        Raises:
            TypeError, ValueError: if ``extent`` is not one int >= 1 per axis of ``values``.
        """
        if extent is not None:
            extent = check_extent(extent, tuple(values.shape))
            if values.ndim != 0:
                return self._block_minmax_fused(values, extent, omit_nonfinite)
        dtype = self._fused_float(values)
        if dtype is None or values.size == 0:
            with self._on(values):
                return super().minmax(values, omit_nonfinite=omit_nonfinite)
        cupy = self._cupy
        with values.device:
            source = cupy.ascontiguousarray(values)
            count = int(source.size)
            partial_name = cupy_kernels.kernel_name("minmax_partial", dtype)
            partial_kernel = cupy_kernels.kernel(partial_name)
            final_kernel = cupy_kernels.kernel(cupy_kernels.kernel_name("minmax_final", dtype))
            grid = self._grid(partial_kernel, partial_name, count, values.device.id)
            partial = cupy.empty(2 * grid, dtype=cupy.float64)
            low = cupy.empty((), dtype=values.dtype)
            high = cupy.empty((), dtype=values.dtype)
            block = (cupy_kernels.BLOCK_THREADS,)
            partial_kernel(
                (grid,), block, (source, numpy.int64(count), numpy.int32(bool(omit_nonfinite)), partial)
            )
            final_kernel((1,), block, (partial, numpy.int64(grid), low, high))
        return low, high

    def _block_minmax_fused(self, values: Any, extent: Tuple[int, ...], omit_nonfinite: bool) -> Tuple[Any, Any]:
        """Per-block min and max (``extent`` checked, ``values`` at least 1-d): the two grid
        min/max kernels for non-empty float32/float64 CuPy arrays, else the generic path."""
        dtype = self._fused_float(values)
        if dtype is None or values.size == 0:
            with self._on(values):
                return super().minmax(values, omit_nonfinite, extent=extent)
        cupy = self._cupy
        shape = tuple(int(length) for length in values.shape)
        grid = grid_shape(shape, extent)
        n_grid = math.prod(grid)
        with values.device:
            source = cupy.ascontiguousarray(values)
            count = int(source.size)
            rows, length, group = self._row_map(shape, extent, values.device.id)
            n_groups = -(-length // group)
            keys = cupy.zeros(3 * n_grid, dtype=numpy.dtype(_KEY_DTYPES[dtype]))
            low = cupy.empty(grid, dtype=values.dtype)
            high = cupy.empty(grid, dtype=values.dtype)
            block = (cupy_kernels.BLOCK_THREADS,)
            scan_name = cupy_kernels.kernel_name("minmax_grid", dtype)
            scan = cupy_kernels.kernel(scan_name)
            scan(
                (self._grid(scan, scan_name, count, values.device.id),),
                block,
                (
                    source, numpy.int64(count), numpy.int64(length), numpy.int64(group), numpy.int64(n_groups),
                    rows, numpy.int32(bool(omit_nonfinite)), keys, numpy.int64(n_grid),
                ),
            )
            final_name = cupy_kernels.kernel_name("minmax_grid_final", dtype)
            final = cupy_kernels.kernel(final_name)
            final(
                (self._grid(final, final_name, n_grid, values.device.id),),
                block,
                (keys, numpy.int64(n_grid), low, high),
            )
        return low, high

    # -- histograms (see qarray.calibration.histogram) ---------------------------------------------------

    def histogram_state(self, values: Any, max_bins: int) -> HistogramState:
        """Return an empty device histogram of ``max_bins`` counts on ``values``' device."""
        cupy = self._cupy
        with values.device:
            return HistogramState(
                device_id=values.device.id,
                max_bins=int(max_bins),
                ints=cupy.zeros(cupy_kernels.HIST_STATE_INTS, dtype=cupy.int64),
                bounds=cupy.zeros(2, dtype=cupy.float64),
                buffers=[cupy.zeros(int(max_bins), dtype=cupy.uint64), cupy.empty(int(max_bins), dtype=cupy.uint64)],
            )

    def histogram_accepts(self, state: HistogramState, values: Any) -> bool:
        """Whether ``values`` can be counted into ``state`` (a CuPy array on its device)."""
        return isinstance(values, self._cupy.ndarray) and values.device.id == state.device_id

    def histogram_update(self, state: HistogramState, values: Any, omit_nan: bool = False) -> None:
        """Count ``values`` into the device histogram ``state``; nothing is read back.

        Four launches on the current stream: the scan (min/max per block, and every
        value whose bin is among the histogram's present bins counted there), the
        blocks' min/max, the one-block plan (fold the range in, choose the new ``k`` and
        ``j_lo``, coarsen the old counts into the other buffer, record what the scan
        counted), and the bin pass, which counts the rest and returns at once when the
        scan counted every value (a batch within the range so far: one read of the data).
        NaN/±Inf under ``omit_nan=False`` are remembered on the device and raised by
        :meth:`histogram_read`.
        """
        cupy = self._cupy
        values, dtype = self._fused_float_values(values)
        with values.device:
            source = cupy.ascontiguousarray(values)
            count = int(source.size)
            if count == 0:
                return
            old, new = state.buffers[state.current], state.buffers[1 - state.current]
            block = (cupy_kernels.BLOCK_THREADS,)
            use_shared = numpy.int32(state.max_bins <= cupy_kernels.HIST_SHARED_BINS)
            scan_name = cupy_kernels.kernel_name("hist_scan", dtype)
            scan = cupy_kernels.kernel(scan_name)
            grid = self._counting_grid(scan, scan_name, count, source.device.id)
            partial = cupy.empty(2 * grid, dtype=cupy.float64)
            scan(
                (grid,),
                block,
                (
                    source, numpy.int64(count), numpy.int32(bool(omit_nan)), state.ints,
                    numpy.int64(state.max_bins), old, partial, use_shared,
                ),
            )
            low = cupy.empty((), dtype=source.dtype)
            high = cupy.empty((), dtype=source.dtype)
            final = cupy_kernels.kernel(cupy_kernels.kernel_name("minmax_final", dtype))
            final((1,), block, (partial, numpy.int64(grid), low, high))
            plan = cupy_kernels.kernel(cupy_kernels.kernel_name("hist_plan", dtype))
            plan(
                (1,),
                block,
                (
                    low, high, numpy.int32(bool(omit_nan)), numpy.int64(state.max_bins),
                    state.ints, state.bounds, old, new,
                ),
            )
            state.current = 1 - state.current
            self._bin(source, dtype, state.ints, state.max_bins, new)

    def histogram_read(self, state: HistogramState) -> Tuple[Any, bool]:
        """Read the device histogram back (the one read-back): ``(host Histogram or None,
        whether a batch held NaN/±Inf under nan_policy="raise")``; the caller raises."""
        ints = self.to_numpy(state.ints)
        if ints[3]:
            return None, True
        if not ints[0]:
            return None, False
        bounds = self.to_numpy(state.bounds)
        k, j_lo = int(ints[1]), int(ints[2])
        vmin, vmax = numpy.float64(bounds[0]), numpy.float64(bounds[1])
        used = bin_floor(vmax, k) - j_lo + 1
        counts = self.to_numpy(state.buffers[state.current][:used]).astype(numpy.int64)
        return Histogram(k, j_lo, counts, vmin, vmax, state.max_bins), False

    def bin_counts(self, values: Any, *, k: int, j_lo: int, max_bins: int, omit_nan: bool) -> Any:
        """Count ``values`` into ``max_bins`` bins of width ``2**k`` from ``j_lo`` (one fused pass).

        See :meth:`ArrayAPIBackend.bin_counts`; returns int64 counts on ``values``' device.
        """
        cupy = self._cupy
        if not isinstance(values, cupy.ndarray):
            return super().bin_counts(values, k=k, j_lo=j_lo, max_bins=max_bins, omit_nan=omit_nan)
        values, dtype = self._fused_float_values(values)
        with values.device:
            source = cupy.ascontiguousarray(values)
            ints = numpy.zeros(cupy_kernels.HIST_STATE_INTS, dtype=numpy.int64)
            ints[:3] = (1, k, j_lo)  # a histogram at (k, j_lo) whose counts the bin pass makes
            ints = cupy.asarray(ints)
            counts = cupy.zeros(int(max_bins), dtype=cupy.uint64)
            self._bin(source, dtype, ints, int(max_bins), counts)
            return counts.astype(cupy.int64)

    def _bin(self, source: Any, dtype: str, ints: Any, max_bins: int, counts: Any) -> None:
        """Launch the fused bin-and-count kernel over ``source`` (under its device)."""
        count = int(source.size)
        if count == 0:
            return
        name = cupy_kernels.kernel_name("hist_bin", dtype)
        function = cupy_kernels.kernel(name)
        grid = self._counting_grid(function, name, count, source.device.id)
        use_shared = max_bins <= cupy_kernels.HIST_SHARED_BINS
        function(
            (grid,),
            (cupy_kernels.BLOCK_THREADS,),
            (source, numpy.int64(count), ints, numpy.int64(max_bins), counts, numpy.int32(use_shared)),
        )

    def count_nonfinite(self, values: Any) -> Any:
        """Return the number of NaN and ±Inf in ``values`` (generic path, on its device)."""
        with self._on(values):
            return super().count_nonfinite(values)

    def unique_rounded(self, values: Any, omit_nonfinite: bool = False) -> Any:
        """Return the sorted unique values rounded to 2 decimals (generic path, on the device).

        The generic path (float64 ``round(x * 100) / 100``, unique, sort) runs on CuPy as
        it is: the result stays on ``values``' device and is bit-identical to NumPy's.
        """
        with self._on(values):
            return super().unique_rounded(values, omit_nonfinite=omit_nonfinite)

    def quantize(
        self, values: Any, spec: QuantSpec, *, check_finite: bool = True, out: Any = None
    ) -> Tuple[Any, Optional[Problems]]:
        """Quantize with the fused kernels (see :meth:`ArrayAPIBackend.quantize` for the contract).

        ``rint((double)x / scale + zero_point)`` with IEEE float64 division and addition,
        clipped (``spec.saturate``) or checked against ``[low, high]``, written as
        ``spec.out_dtype``: a fast pass that settles nearly every value without dividing,
        and an exact pass over the few it leaves (two launches). A runtime's float32
        arithmetic (``spec.in_float32``) is one launch of the ``quant32`` kernels. The problem
        counts (non-finite inputs when ``check_finite``; rounded values outside the bounds, NaN
        included) are added up on the device into a length-2 int64 array that is returned
        unread. Parameter grids take the grid
        kernels (the parameters stay on the device); broadcast zero-point arrays and
        dtypes without a kernel take the generic path.

        Raises:
            TypeError: if ``out`` is not a CuPy array.
            ValueError: if ``out`` has the wrong shape or dtype, or lives on another device.
        """
        in_dtype = self._fused_float(values)
        grid = spec.extent is not None
        zero = None if grid else _scalar(spec.zero_point)
        if in_dtype is None or (zero is None and not grid) or spec.out_dtype not in cupy_kernels.INTEGER_TYPES:
            with self._on(values):
                return super().quantize(values, spec, check_finite=check_finite, out=out)
        cupy = self._cupy
        flags = _quant_flags(spec, check_finite)
        checked = bool(flags & (cupy_kernels.FLAG_COUNT_NONFINITE | cupy_kernels.FLAG_COUNT_OUTSIDE))
        with values.device:
            result, write_back = self._output(out, values, spec.out_dtype)
            problems = cupy.zeros(2, dtype=cupy.int64) if checked else None
            count = int(values.size)
            if count:
                source = cupy.ascontiguousarray(values)
                if grid:
                    layout = self._grid_arguments(values, spec, ("scale", "zero_point", "low", "high"))
                    arguments: Tuple[Any, ...] = (source, result, numpy.int64(count), *layout, numpy.int32(flags))
                else:
                    low = float(spec.low) if spec.low is not None else 0.0
                    high = float(spec.high) if spec.high is not None else 0.0
                    arguments = (
                        source,
                        result,
                        numpy.int64(count),
                        numpy.float64(spec.scale),
                        numpy.float64(zero),
                        numpy.int32(flags),
                        numpy.float64(low),
                        numpy.float64(high),
                        numpy.float64(low),
                        numpy.float64(high),
                    )
                counts = problems if problems is not None else numpy.uint64(0)  # 0: a null pointer
                if spec.in_float32:
                    kind = "quant32_grid" if grid else "quant32"
                    self._launch(kind, in_dtype, spec.out_dtype, values.device.id, count, (*arguments, counts))
                else:
                    self._quant_two_passes(grid, in_dtype, spec.out_dtype, values.device.id, count, arguments, counts)
            if write_back is not None:
                write_back[...] = result
                result = write_back
        return result, (Problems(problems) if problems is not None else None)

    def _quant_two_passes(
        self, grid: bool, in_dtype: str, out_dtype: str, device_id: int, count: int, arguments: Tuple[Any, ...],
        counts: Any,
    ) -> None:
        """Launch the float64 quant's fast pass and exact pass (under the values' device)."""
        # The fast pass settles nearly every vector of four values; the exact pass (a launch
        # of its own, see cupy_kernels) the ones it lists in pending, and the last count % 4.
        capacity = max(cupy_kernels.QUANT_PENDING_MIN_CAPACITY, count // 4 // 256)
        pending = self._cupy.empty(2 + capacity, dtype=self._cupy.uint64)
        pending[:2] = 0
        tail = (counts, pending, numpy.int64(capacity))
        kinds = ("quant_grid", "quant_grid_rest") if grid else ("quant", "quant_rest")
        for kind in kinds:
            self._launch(kind, in_dtype, out_dtype, device_id, count, (*arguments, *tail))

    def _launch(
        self, kind: str, first: str, second: str, device_id: int, count: int, arguments: Tuple[Any, ...]
    ) -> None:
        """Launch kernel ``kind`` of the dtype pair over ``count`` elements on device ``device_id``
        (the current one), one wave at most (the kernels loop over the array)."""
        name = cupy_kernels.kernel_name(kind, first, second)
        function = cupy_kernels.kernel(name)
        blocks = self._grid(function, name, count, device_id)
        function((blocks,), (cupy_kernels.BLOCK_THREADS,), arguments)

    def dequantize(self, qvalues: Any, spec: QuantSpec, *, dtype: str = "float64", out: Any = None) -> Any:
        """De-quantize in one fused pass: ``scale * ((double)q - zero_point)``, cast to ``dtype``.

        See :meth:`ArrayAPIBackend.dequantize`. float32 results are rounded to nearest even
        from the float64 value, subnormals included, as NumPy's cast. With a runtime's
        float32 arithmetic (``spec.in_float32``) the ``dequant32`` kernels compute
        ``float32((double)q - zero_point) * float32(scale)`` in float32 (a float64 ``dtype``
        widens it exactly).

        Raises:
            TypeError: if ``out`` is not a CuPy array.
            ValueError: if ``out`` has the wrong shape or dtype, or lives on another device.
        """
        in_dtype = self._fused_integer(qvalues)
        grid = spec.extent is not None
        zero = None if grid else _scalar(spec.zero_point)
        if in_dtype is None or (zero is None and not grid) or dtype not in cupy_kernels.FLOAT_TYPES:
            with self._on(qvalues):
                return super().dequantize(qvalues, spec, dtype=dtype, out=out)
        cupy = self._cupy
        kind = "dequant32" if spec.in_float32 else "dequant"
        with qvalues.device:
            result, write_back = self._output(out, qvalues, dtype)
            count = int(qvalues.size)
            if count:
                source = cupy.ascontiguousarray(qvalues)
                if grid:
                    layout = self._grid_arguments(qvalues, spec, ("scale", "zero_point"))
                    arguments = (source, result, numpy.int64(count), *layout)
                else:
                    arguments = (source, result, numpy.int64(count), numpy.float64(spec.scale), numpy.float64(zero))
                self._launch(f"{kind}_grid" if grid else kind, in_dtype, dtype, qvalues.device.id, count, arguments)
            if write_back is not None:
                write_back[...] = result
                result = write_back
        return result

    def _grid_arguments(self, like: Any, spec: QuantSpec, names: Tuple[str, ...]) -> Tuple[Any, ...]:
        """The grid kernels' layout arguments and the named parameters as device float64 matrices.

        The row map depends on the shape alone: it is computed on the host and copied to
        the device once per shape, extent and device (no read-back); the parameters stay
        where they are.
        """
        cupy = self._cupy
        rows, length, group = self._row_map(tuple(like.shape), tuple(spec.extent or ()), like.device.id)
        n_groups = -(-length // group)
        scale: Any = spec.scale  # an array of the parameter grid (grid kernels only)
        grid_shape = tuple(scale.shape)
        matrices = [
            cupy.ascontiguousarray(
                cupy.broadcast_to(cupy.asarray(getattr(spec, name), dtype=cupy.float64), grid_shape)
                .reshape(-1, n_groups)
            )
            for name in names
        ]
        return (
            numpy.int64(length),
            numpy.int64(group),
            numpy.int64(n_groups),
            rows,
            *matrices,
        )

    def _row_map(self, shape: Tuple[int, ...], extent: Tuple[int, ...], device_id: int) -> Tuple[Any, int, int]:
        """The grid kernels' row map on the device (see :func:`grid_layout`), its row length and
        group, kept for the last few shapes so that repeated calls copy nothing to the device."""
        key = (shape, extent, device_id)
        with self._lock:
            found = self._row_maps.get(key)
            if found is not None:
                self._row_maps.move_to_end(key)
                return found
        rows, _, length, group = grid_layout(shape, extent)
        entry = (self._cupy.asarray(rows), int(length), int(group))
        with self._lock:
            self._row_maps[key] = entry
            while len(self._row_maps) > _PARAMETER_CACHE_SIZE:
                self._row_maps.popitem(last=False)
        return entry

    def pack_bits(self, q: Any, n_bits: int) -> Tuple[Any, Any]:
        """Pack in one fused kernel (:mod:`qarray.backends.cupy_packing`), on ``q``'s device; see
        :meth:`ArrayAPIBackend.pack_bits`. The count of values outside is left on the device."""
        if not cupy_packing.takes(q, self._cupy):
            with self._on(q):
                return super().pack_bits(q, n_bits)
        with q.device:
            return cupy_packing.pack_bits(self._cupy, q, n_bits, self._blocks(q))

    def unpack_bits(self, packed: Any, n_bits: int, length: int, signed: bool) -> Any:
        """Unpack in one fused kernel, on ``packed``'s device; see :meth:`ArrayAPIBackend.unpack_bits`."""
        if not cupy_packing.takes(packed, self._cupy, {"uint8": "unsigned char"}):
            with self._on(packed):
                return super().unpack_bits(packed, n_bits, length, signed)
        with packed.device:
            return cupy_packing.unpack_bits(self._cupy, packed, n_bits, length, signed, self._blocks(packed))

    # -- helpers ---------------------------------------------------------------------------

    def _fused_float(self, values: Any) -> Optional[str]:
        """Return the dtype name if the fused float kernels take ``values``, else None."""
        if not isinstance(values, self._cupy.ndarray):
            return None
        name = numpy.dtype(values.dtype).name
        return name if name in cupy_kernels.FLOAT_TYPES else None

    def _fused_float_values(self, values: Any) -> Tuple[Any, str]:
        """``values`` in a dtype the fused float kernels take (float16 and friends become
        float64, exactly), with that dtype's name.

        Raises:
            TypeError: if ``values`` is not a CuPy floating-point array.
        """
        if self._fused_float(values) is None and isinstance(values, self._cupy.ndarray):
            with values.device:
                values = values.astype(self._cupy.float64)
        dtype = self._fused_float(values)
        if dtype is None:
            raise TypeError(f"values must be a CuPy floating-point array, got {type(values).__name__}")
        return values, dtype

    def _fused_integer(self, qvalues: Any) -> Optional[str]:
        """Return the dtype name if the fused integer kernels take ``qvalues``, else None."""
        if not isinstance(qvalues, self._cupy.ndarray):
            return None
        name = numpy.dtype(qvalues.dtype).name
        return name if name in cupy_kernels.INTEGER_TYPES else None

    def _output(self, out: Any, like: Any, dtype: str) -> Tuple[Any, Any]:
        """Return ``(buffer to write, array to copy it into afterwards or None)``.

        Runs under ``like``'s device. A given ``out`` that is C-contiguous is written
        directly; a strided one gets the result copied in.
        """
        cupy = self._cupy
        if out is None:
            return cupy.empty(like.shape, dtype=dtype), None
        check_out(
            out,
            shape=tuple(like.shape),
            dtype=numpy.dtype(dtype),
            library="CuPy",
            owns=isinstance(out, cupy.ndarray),
            device=like.device.id,
            out_device=out.device.id if isinstance(out, cupy.ndarray) else None,
        )
        if out.flags.c_contiguous:
            return out, None
        return cupy.empty(like.shape, dtype=dtype), out

    def _grid(self, function: Any, name: str, count: int, device_id: int) -> int:
        """Return the number of blocks for ``count`` elements: at most one full wave.

        The kernels loop over the array (grid-stride), so the grid is the number of blocks
        of kernel ``name`` that fit on the device at once (multiprocessors x resident
        blocks), or fewer for small arrays. The figure is computed once per kernel and device.
        """
        key = (name, device_id)
        capacity = self._grids.get(key)
        if capacity is None:
            capacity = _device_capacity(self._cupy, function, device_id)
            self._grids[key] = capacity
        needed = -(-count // cupy_kernels.BLOCK_THREADS)
        return max(1, min(needed, capacity))

    def _blocks(self, like: Any) -> cupy_packing.Blocks:
        """``blocks(function, name, count)``: :meth:`_grid` on ``like``'s device."""
        return lambda function, name, count: self._grid(function, name, count, like.device.id)

    def _counting_grid(self, function: Any, name: str, count: int, device_id: int) -> int:
        """The grid of a kernel that counts into 32-bit shared counters: at most one wave,
        and enough blocks that each counts fewer than 2**31 values."""
        return max(self._grid(function, name, count, device_id), -(-count // (1 << 31)))

    def _on(self, array: Any) -> Any:
        """A context that makes ``array``'s device current (a no-op for non-CuPy input)."""
        if isinstance(array, self._cupy.ndarray):
            return array.device
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _device_context(self, device: Any) -> Iterator[None]:
        if device is None:
            yield
            return
        if isinstance(device, numbers.Integral):
            device = self._cupy.cuda.Device(int(device))
        with device:
            yield


@dataclass
class HistogramState:
    """A dyadic histogram on one GPU: ``ints`` (``cupy_kernels.HIST_STATE_INTS`` int64: has_data,
    k, j_lo, nonfinite_seen, skip_batch, then what the last scan counted), ``bounds = [min,
    max]``, and two buffers of ``max_bins`` uint64 counts used in turn (``buffers[current]``
    holds the counts). Only the backend reads or writes it."""

    device_id: int
    max_bins: int
    ints: Any
    bounds: Any
    buffers: List[Any]
    current: int = 0


def _scalar(zero_point: Any) -> Optional[float]:
    """Return a scalar zero point as a float, or None for an array (per-channel) one."""
    if isinstance(zero_point, (bool, numpy.bool_)):
        return None
    if isinstance(zero_point, numbers.Real):
        return float(zero_point)
    if isinstance(zero_point, numpy.ndarray) and zero_point.ndim == 0:
        return float(zero_point)
    return None


def _quant_flags(spec: QuantSpec, check_finite: bool) -> int:
    """The quant kernels' flags for ``spec``: clip or count outside, count non-finite, and the
    float32 reciprocal (torchao's arithmetic)."""
    flags = 0
    if spec.saturate:
        flags |= cupy_kernels.FLAG_CLIP
    elif spec.low is not None:
        flags |= cupy_kernels.FLAG_COUNT_OUTSIDE
    if check_finite:
        flags |= cupy_kernels.FLAG_COUNT_NONFINITE
    if spec.arithmetic == "float32_reciprocal":
        flags |= cupy_kernels.FLAG_RECIPROCAL
    return flags


def _same_bits(first: numpy.ndarray, second: numpy.ndarray) -> bool:
    """True if two float64 arrays have the same shape and the same bits."""
    return first.shape == second.shape and first.tobytes() == second.tobytes()


def _device_capacity(cupy: Any, function: Any, device_id: int) -> int:
    """Return how many blocks of ``function`` run at once on device ``device_id``."""
    properties = cupy.cuda.runtime.getDeviceProperties(device_id)
    multiprocessors = int(properties.get("multiProcessorCount", 1)) or 1
    per_multiprocessor = _FALLBACK_BLOCKS_PER_SM
    try:
        occupancy = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor
        per_multiprocessor = int(occupancy(function.kernel.ptr, cupy_kernels.BLOCK_THREADS, 0))
    except Exception:  # an older CuPy without the query: fall back to the register count
        try:
            registers = int(function.num_regs)
            per_warp = -(-registers * 32 // 256) * 256  # registers are given out per warp, by 256
            warps = int(properties.get("regsPerMultiprocessor", 65536)) // max(per_warp, 1)
            per_multiprocessor = warps // (cupy_kernels.BLOCK_THREADS // 32)
        except Exception:
            per_multiprocessor = _FALLBACK_BLOCKS_PER_SM
    return multiprocessors * max(1, per_multiprocessor)


def make_cupy_backend() -> CupyBackend:
    """Import CuPy and return its backend.

    Raises:
        ImportError: if CuPy is not installed or no CUDA GPU is visible.
    """
    try:
        cupy = importlib.import_module("cupy")  # imported here, on first use, on purpose
        compat_cupy = importlib.import_module("array_api_compat.cupy")
    except Exception as error:  # CuPy raises various errors when CUDA is missing
        raise ImportError(f"the cupy backend needs CuPy and a CUDA GPU: {error}") from error
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        raise ImportError(f"the cupy backend found no usable CUDA GPU: {error}") from error
    if n_devices < 1:
        raise ImportError("the cupy backend found no CUDA GPU")
    return CupyBackend(compat_cupy)
