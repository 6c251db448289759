"""The generic Array API backend: the reference implementation of every kernel.

It serves any namespace that follows the Array API standard (NumPy through
array-api-compat, array-api-strict, PyTorch, CuPy, Dask, ...). Specialised
backends subclass it and replace kernels with fused ones; the tests compare
each replacement with the methods here, bit for bit.

Kernels never read a device value back to the host: they return arrays
(0-d ones for statistics and problem counts) and leave reading them to the
core, at its documented boundaries.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy

from qarray.core.granularity import expand_to_values, grid_shape, reduce_blocks
from qarray.core.namespace import array_namespace, device_of, library_name, to_numpy
from qarray.core.packing import pack_range, packed_length, values_per_byte
from qarray.core.profiles import reciprocal32

from .spec import Problems, QuantSpec, check_extent, check_out

__all__ = ["ArrayAPIBackend", "Bounds", "spread"]

Bounds = Optional[Tuple[float, float]]
"""An inclusive ``(low, high)`` range of integers, or None for no range."""


class ArrayAPIBackend:
    """Quantization kernels written against the Array API standard alone.

    Args:
        xp: the array namespace to compute with (as array-api-compat returns it).
        name: the name the backend is registered under; defaults to the library's.

    Example:
        >>> import numpy, array_api_compat
        >>> backend = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))
        >>> backend.name
        'numpy'
    """

    #: whether the arrays this backend makes live in host memory (reading them back is free)
    host_resident = False
    defers_reads = False
    """Whether a read back to the host synchronises with a device (a GPU): checks whose
    result the caller does not need at once are then left on the device until first read."""

    def __init__(self, xp: Any, name: Optional[str] = None) -> None:
        self.xp = xp
        self.name = name or library_name(xp)

    def __repr__(self) -> str:
        return f"<qarray backend {self.name!r}>"

    # -- moving data -----------------------------------------------------------------------

    def owns(self, array: Any) -> bool:
        """Return True if ``array`` already belongs to this backend's library.

        Args:
            array: any object; one that is not an array of any library gives False.

        Returns:
            Whether ``array`` is an array of this backend's library.
        """
        try:
            return library_name(array_namespace(array)) == library_name(self.xp)
        except TypeError:
            return False

    def asarray(self, values: Any, device: Any = None) -> Any:
        """Return ``values`` as an array of this backend, copying across libraries via the host.

        Arrays of this backend's library are returned as they are (no copy).

        Args:
            values: an array of any library (or anything NumPy can make an array of).
            device: the device to put the new array on; None for the library's default.
                Not used for arrays of this backend's library, returned as they are.

        Returns:
            An array of this backend's library (``values`` itself, or a copy).
        """
        if self.owns(values):
            return values
        # A NumPy input is the caller's memory: copy it, since xp.asarray may share it
        # (PyTorch, array-api-strict); a host copy made by to_numpy is already private.
        if isinstance(values, numpy.ndarray):
            host, copy = values, True
        else:
            host, copy = to_numpy(values), None
        if device is None:
            return self.xp.asarray(host, copy=copy)
        return self.xp.asarray(host, device=device, copy=copy)

    def to_numpy(self, array: Any) -> numpy.ndarray:
        """Return a host NumPy copy of ``array`` (the one named place data leaves the device).

        Args:
            array: an array of this backend's library.

        Returns:
            A NumPy array with ``array``'s values.
        """
        return to_numpy(array)

    def copy(self, array: Any) -> Any:
        """Return a copy of ``array`` that shares no memory with it, on the same device.

        Args:
            array: an array of this backend's library.

        Returns:
            The copy.
        """
        return self.xp.asarray(array, copy=True)

    def device(self, array: Any) -> Any:
        """Return the device ``array`` lives on.

        Args:
            array: an array of this backend's library.

        Returns:
            The device object of ``array``'s library.
        """
        return device_of(array)

    def parameter(self, host_value: Any, like: Any) -> Any:
        """Return a quantization parameter ready to combine with ``like`` in this namespace.

        Scalars become Python floats; arrays (per-channel zero points) become float64
        arrays of this namespace on ``like``'s device.

        Args:
            host_value: the parameter on the host: a number or a NumPy array.
            like: an array of this namespace whose device the parameter goes to.

        Returns:
            A Python float, or a float64 array of this namespace.
        """
        if numpy.ndim(host_value) == 0:
            return float(host_value)
        xp = self.xp
        return xp.asarray(numpy.asarray(host_value, dtype=numpy.float64), device=self.device(like))

    def synchronize(self) -> None:
        """Wait until the work queued on this backend's device is done (for timing).

        The generic backend computes eagerly, so there is nothing to wait for.
        """

    # -- dtypes ----------------------------------------------------------------------------

    def is_floating(self, array: Any) -> bool:
        """Return True if ``array`` holds real floating-point numbers.

        Args:
            array: an array of this backend's library.

        Returns:
            Whether ``array``'s dtype is a real floating-point one.
        """
        return bool(self.xp.isdtype(array.dtype, "real floating"))

    def is_integer(self, array: Any) -> bool:
        """Return True if ``array`` holds (signed or unsigned) integers.

        Args:
            array: an array of this backend's library.

        Returns:
            Whether ``array``'s dtype is an integer one.
        """
        return bool(self.xp.isdtype(array.dtype, "integral"))

    def dtype(self, name: str) -> Any:
        """Return this namespace's dtype called ``name`` (``"int8"``, ``"float64"``, ...).

        Args:
            name: the dtype's name in the Array API standard.

        Returns:
            The dtype object of this namespace.

        Raises:
            AttributeError: if the namespace has no dtype of that name.
        """
        return getattr(self.xp, name)

    def size(self, array: Any) -> Optional[int]:
        """Return the number of elements, or None when a lazy array does not know it yet.

        Args:
            array: an array of this backend's library.

        Returns:
            The number of elements, or None if an extent of the shape is unknown.
        """
        size = 1
        for extent in array.shape:
            if extent is None or extent != extent:  # unknown (None or NaN) extents
                return None
            size *= int(extent)
        return size

    def with_known_shape(self, array: Any, argument: str = "values") -> Any:
        """Return ``array`` with every extent of its shape known (as it is, when it is).

        Per-block parameters and documents need the shape; a lazy array whose shape
        depends on its data (Dask's ``x[x > 0]``) has it learnt by :meth:`_learn_shape`.

        Args:
            array: an array of this backend's library.
            argument: the name of the caller's argument, shown in the error.

        Returns:
            ``array``, or an array of the same values whose shape is known.

        Raises:
            ValueError: if an extent is unknown and the backend cannot learn it, naming ``argument``.
        """
        if self.size(array) is not None:
            return array
        return self._learn_shape(array, argument)

    def _learn_shape(self, array: Any, argument: str) -> Any:
        """Return ``array`` with its unknown extents learnt; the generic backend cannot."""
        raise ValueError(
            f"{argument} must have a known shape, got {tuple(array.shape)}: this library "
            "cannot tell the unknown extents without computing them"
        )

    # -- kernels ---------------------------------------------------------------------------

    def minmax(
        self, values: Any, omit_nonfinite: bool = False, *, extent: Optional[Tuple[int, ...]] = None
    ) -> Tuple[Any, Any]:
        """Return ``(min, max)`` of ``values`` (or of each block), without reading them back.

        NaN propagates into min and max, so any non-finite input shows as a non-finite
        min or max. With ``omit_nonfinite`` NaN and ±Inf are left out; if nothing is
        left, min is +Inf and max is -Inf.

        Args:
            values: a real array.
            omit_nonfinite: leave NaN and ±Inf out.
            extent: None for the whole array (0-d results); else the block extent along
                each axis (see :func:`qarray.core.granularity.block_extent`): the results are
                then arrays of the parameter grid's shape, ``ceil(shape[d] / extent[d])``
                per axis, one min and max per block, each as the whole-array rule gives
                for that block alone. They are of ``values``' library, dtype and device.
                The blocks are reduced axis by axis (the min of mins is the min, so the
                numbers do not depend on the order). Empty ``values`` give empty grids.

        Returns:
            ``(min, max)`` as 0-d arrays, or as grids with ``extent``.

        Raises:
            TypeError, ValueError: if ``extent`` is not one int >= 1 per axis of ``values``.

        Example:
            >>> import numpy, array_api_compat
            >>> backend = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))
            >>> low, high = backend.minmax(numpy.arange(10.0).reshape(2, 5), extent=(1, 3))
            >>> low.tolist(), high.tolist()
            ([[0.0, 3.0], [5.0, 8.0]], [[2.0, 4.0], [7.0, 9.0]])
        """
        xp = self.xp
        if extent is not None:
            extent = check_extent(extent, tuple(values.shape))
            if values.ndim != 0:
                return self._block_minmax(values, extent, omit_nonfinite)
        if not omit_nonfinite:
            return xp.min(values), xp.max(values)
        finite = xp.isfinite(values)
        inf = xp.asarray(float("inf"), dtype=values.dtype, device=self.device(values))
        return xp.min(xp.where(finite, values, inf)), xp.max(xp.where(finite, values, -inf))

    def _block_minmax(self, values: Any, extent: Tuple[int, ...], omit_nonfinite: bool) -> Tuple[Any, Any]:
        """The generic per-block min and max (``extent`` checked, ``values`` at least 1-d)."""
        xp = self.xp
        shape = tuple(int(length) for length in values.shape)
        grid = grid_shape(shape, extent)
        if 0 in shape:  # no block at all: empty grids
            device = self.device(values)
            return xp.empty(grid, dtype=values.dtype, device=device), xp.empty(grid, dtype=values.dtype, device=device)
        low_source, high_source = values, values
        if omit_nonfinite:
            finite = xp.isfinite(values)
            inf = xp.asarray(float("inf"), dtype=values.dtype, device=self.device(values))
            low_source, high_source = xp.where(finite, values, inf), xp.where(finite, values, -inf)
        return reduce_blocks(low_source, extent, xp.min, xp=xp), reduce_blocks(high_source, extent, xp.max, xp=xp)

    def count_nonfinite(self, values: Any) -> Any:
        """Return the number of NaN and ±Inf in ``values`` as a 0-d integer array.

        Args:
            values: a real array of this backend's library.

        Returns:
            A 0-d int64 array on ``values``' device (not read back).
        """
        xp = self.xp
        return xp.sum(xp.astype(xp.logical_not(xp.isfinite(values)), xp.int64))

    def unique_rounded(self, values: Any, omit_nonfinite: bool = False) -> Any:
        """Return the sorted unique values of ``values`` rounded to 2 decimals, in float64.

        Rounding follows NumPy's ``round(values, 2)``: multiply by 100, round half to
        even, divide by 100, all in float64. Negative zero is folded into zero.

        Args:
            values: a real array of this backend's library.
            omit_nonfinite: leave NaN and ±Inf out.

        Returns:
            A 1-d float64 array of this backend's library.
        """
        xp = self.xp
        as_float64 = xp.astype(xp.reshape(values, (-1,)), xp.float64)
        if omit_nonfinite:
            as_float64 = as_float64[xp.isfinite(as_float64)]
        rounded = xp.round(as_float64 * 100.0) / 100.0 + 0.0
        return xp.sort(xp.unique_values(rounded))

    def bin_counts(self, values: Any, *, k: int, j_lo: int, max_bins: int, omit_nan: bool) -> Any:
        """Count ``values`` into the ``max_bins`` bins ``j_lo, j_lo + 1, ...`` of width ``2**k``.

        The reference of every backend's histogram kernel (see :mod:`qarray.calibration.histogram`):
        each value's bin index (:meth:`_bin_indices`) is counted; values whose bin is outside
        the range, and (with ``omit_nan``) NaN and ±Inf, are not counted. The Array API has
        no bincount, so the indices are sorted and each bin's count is the distance between
        its two ``searchsorted`` positions. Nothing is read back.

        Args:
            values: a real array of this backend's library.
            k: the bin width is ``2**k``.
            j_lo: the index of the first bin (bin ``j`` holds ``[j * 2**k, (j + 1) * 2**k)``).
            max_bins: the number of bins counted.
            omit_nan: leave NaN and ±Inf out (they fall outside every bin anyway).

        Returns:
            An int64 array of ``max_bins`` counts on ``values``' device.
        """
        xp = self.xp
        index = self._bin_indices(values, k=k, j_lo=j_lo, max_bins=max_bins)
        ordered = xp.sort(index)
        bins = xp.arange(max_bins, dtype=xp.int64, device=self.device(values))
        low = xp.searchsorted(ordered, bins, side="left")
        high = xp.searchsorted(ordered, bins, side="right")
        return xp.astype(high - low, xp.int64)

    def _bin_indices(self, values: Any, *, k: int, j_lo: int, max_bins: int) -> Any:
        """Return the bin of each value, flattened, as int64 indices from ``j_lo`` (``max_bins`` when not counted).

        ``j = floor(x / 2**k)`` in float64, with ``-1`` where a negative ``x`` underflows to
        ``-0.0``; the index is ``j - j_lo``, and values whose index is outside
        ``[0, max_bins)``, NaN and ±Inf get ``max_bins``. Several full-size temporaries:
        kernels that count with it work on chunks.

        Example:
            >>> import numpy, array_api_compat
            >>> backend = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))
            >>> backend._bin_indices(numpy.array([0.1, 1.9, -0.2, 9.0]), k=-1, j_lo=0, max_bins=4).tolist()
            [0, 3, 4, 4]
        """
        xp = self.xp
        flat = xp.reshape(xp.astype(values, xp.float64), (-1,))
        finite = xp.isfinite(flat)
        quotient = xp.where(finite, flat, 0.0) / (2.0**k)
        index = xp.floor(quotient)
        index = xp.where(xp.logical_and(quotient == 0.0, flat < 0.0), -1.0, index)
        index = index - float(j_lo)
        outside = xp.logical_or(xp.logical_not(finite), xp.logical_or(index < 0.0, index >= float(max_bins)))
        return xp.astype(xp.where(outside, float(max_bins), index), xp.int64)

    def quantize(
        self, values: Any, spec: QuantSpec, *, check_finite: bool = True, out: Any = None
    ) -> Tuple[Any, Optional[Problems]]:
        """Quantize: ``rint(values / scale + zero_point)`` in float64, saturated or checked.

        Args:
            values: real floating-point array.
            spec: the quantization (see :class:`~qarray.backends.spec.QuantSpec`): host
                numbers per tensor, or arrays of the parameter grid with its ``extent``.
            check_finite: also count the non-finite values.
            out: an array of ``spec.out_dtype`` and ``values``' shape to write into
                (checked before anything is written).

        Returns:
            ``(qvalues, problems)``: problems is None when nothing was checked (no
            ``check_finite``, and saturating or no bounds), else the device counts.

        Raises:
            TypeError, ValueError: if ``out`` is given and cannot take the result
                (see :meth:`check_out`).
        """
        xp = self.xp
        if out is not None:
            self.check_out(out, values, spec.out_dtype)
        shape = tuple(values.shape)
        scale, zero_point, low, high = (
            spread(parameter, shape, spec.extent, xp=xp)
            for parameter in (spec.scale, spec.zero_point, spec.low, spec.high)
        )
        if spec.in_float32:
            rounded = xp.astype(self._round32(values, scale, spec), xp.float64) + zero_point
        else:
            rounded = xp.round(xp.astype(values, xp.float64) / scale + zero_point)
        if spec.saturate:
            if spec.extent is None or isinstance(low, (int, float)):  # one range for every block
                rounded = xp.clip(rounded, low, high)
            else:
                rounded = xp.minimum(xp.maximum(rounded, xp.astype(low, xp.float64)), xp.astype(high, xp.float64))
        problems = None
        counts_outside = not spec.saturate and spec.low is not None
        if check_finite or counts_outside:
            zero = xp.asarray(0, dtype=xp.int64, device=self.device(values))
            n_nonfinite = self.count_nonfinite(values) if check_finite else zero
            n_outside = zero
            if counts_outside:
                inside = xp.logical_and(rounded >= low, rounded <= high)
                outside = xp.logical_not(inside)  # NaN counts as outside
                n_outside = xp.sum(xp.astype(outside, xp.int64))
            problems = Problems(xp.stack([n_nonfinite, n_outside]))
        return self._write(xp.astype(rounded, self.dtype(spec.out_dtype)), out), problems

    def dequantize(self, qvalues: Any, spec: QuantSpec, *, dtype: str = "float64", out: Any = None) -> Any:
        """De-quantize: ``scale * (qvalues - zero_point)`` in float64, cast to ``dtype``.

        Only ``spec``'s scale, zero point and extent are used.

        Args:
            qvalues: an integer array of this backend's library.
            spec: the quantization (see :class:`~qarray.backends.spec.QuantSpec`).
            dtype: the name of the floating-point dtype of the result.
            out: an array of ``dtype`` and ``qvalues``' shape to write into (checked
                before anything is written).

        Returns:
            The floats, in a new array or in ``out``.

        Raises:
            TypeError, ValueError: if ``out`` is given and cannot take the result
                (see :meth:`check_out`).
        """
        xp = self.xp
        if out is not None:
            self.check_out(out, qvalues, dtype)
        shape = tuple(qvalues.shape)
        scale, zero_point = (
            spread(parameter, shape, spec.extent, xp=xp) for parameter in (spec.scale, spec.zero_point)
        )
        if spec.extent is not None:
            zero_point = xp.astype(zero_point, xp.float64)
        if spec.in_float32:
            difference = xp.astype(xp.astype(qvalues, xp.float64) - zero_point, xp.float32)
            result = difference * self._float32(scale, qvalues)
        else:
            result = scale * (xp.astype(qvalues, xp.float64) - zero_point)
        if dtype != "float64" or spec.in_float32:
            result = xp.astype(result, self.dtype(dtype))
        return self._write(result, out)

    def _round32(self, values: Any, scale: Any, spec: QuantSpec) -> Any:
        """``rint(float32(x) / scale)`` or ``rint(float32(x) * (1 / scale))`` in float32 (a runtime's
        arithmetic, see :class:`QuantSpec`), ``scale`` a host number or spread to the values."""
        xp = self.xp
        divisor = self._float32(scale, values)
        values32 = xp.astype(values, xp.float32)
        if spec.arithmetic == "float32_divide":
            return xp.round(values32 / divisor)
        return xp.round(values32 * reciprocal32(divisor))

    def _float32(self, parameter: Any, like: Any) -> Any:
        """A float32 parameter on ``like``'s device: a host number as a 0-d array there (never a
        host scalar, which some libraries turn a division by into a product with its reciprocal)."""
        xp = self.xp
        if isinstance(parameter, (int, float)):
            return xp.asarray(parameter, dtype=xp.float32, device=self.device(like))
        return xp.astype(parameter, xp.float32)

    def pack_bits(self, q: Any, n_bits: int) -> Tuple[Any, Any]:
        """Pack the low ``n_bits`` bits of each integer of ``q`` along its last axis into uint8.

        The layout of :mod:`qarray.core.packing`: ``8 // n_bits`` values to a byte, the
        first in the least significant bits, the last byte of each row padded with zero
        bits. The reference: masks, shifts and ORs of the Array API alone.

        Args:
            q: an integer array of at least one axis.
            n_bits: 1, 2 or 4 (checked by the caller).

        Returns:
            ``(packed, n_outside)``: uint8 of shape ``q.shape[:-1] + (ceil(L * n_bits / 8),)``,
            and the number of values outside :func:`~qarray.core.packing.pack_range`
            (a 0-d int64 array, not read back).

        Example:
            >>> import numpy, array_api_compat
            >>> backend = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))
            >>> packed, n_outside = backend.pack_bits(numpy.array([1, 2, 3]), 4)
            >>> [hex(byte) for byte in packed.tolist()], int(n_outside)
            (['0x21', '0x3'], 0)
        """
        xp = self.xp
        per = values_per_byte(n_bits)
        shape = tuple(int(length) for length in q.shape)
        leading, n_bytes = shape[:-1], packed_length(shape[-1], n_bits)
        low_bits = xp.astype(q & ((1 << n_bits) - 1), xp.uint8)
        padding = n_bytes * per - shape[-1]
        if padding:
            zeros = xp.zeros(leading + (padding,), dtype=xp.uint8, device=self.device(q))
            low_bits = xp.concat([low_bits, zeros], axis=-1)
        groups = xp.reshape(low_bits, leading + (n_bytes, per))
        packed = groups[..., 0] | (groups[..., 1] << n_bits)
        for j in range(2, per):
            packed = packed | (groups[..., j] << (j * n_bits))
        return packed, self.count_outside_pack(q, n_bits)

    def count_outside_pack(self, q: Any, n_bits: int) -> Any:
        """The number of integers of ``q`` that ``n_bits`` bits cannot hold (a 0-d int64 array).

        Bounds beyond ``q``'s dtype are not compared (nothing lies beyond them).

        Args:
            q: an integer array of this backend's library.
            n_bits: 1, 2 or 4 (see :func:`~qarray.core.packing.pack_range`).

        Returns:
            A 0-d int64 array on ``q``'s device (not read back).
        """
        xp = self.xp
        low, high = pack_range(n_bits)
        info = xp.iinfo(q.dtype)
        outside = [q < low] if low > info.min else []
        if high < info.max:
            outside.append(q > high)
        if not outside:
            return xp.asarray(0, dtype=xp.int64, device=self.device(q))
        mask = outside[0] if len(outside) == 1 else xp.logical_or(outside[0], outside[1])
        return xp.sum(xp.astype(mask, xp.int64))

    def unpack_bits(self, packed: Any, n_bits: int, length: int, signed: bool) -> Any:
        """Unpack ``length`` values of ``n_bits`` bits from each row of uint8 ``packed``.

        The inverse of :meth:`pack_bits` (the padding bits are ignored): int8 values
        sign-extended from ``n_bits`` bits when ``signed``, else uint8 values. ``packed``'s
        last axis holds ``ceil(length * n_bits / 8)`` bytes (checked by the caller).

        Args:
            packed: a uint8 array of at least one axis.
            n_bits: 1, 2 or 4 (checked by the caller).
            length: the number of values in each row.
            signed: sign-extend the values to int8 (else they are uint8).

        Returns:
            An array of shape ``packed.shape[:-1] + (length,)``.

        Example:
            >>> import numpy, array_api_compat
            >>> backend = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))
            >>> backend.unpack_bits(numpy.array([0x21, 0x0F], dtype=numpy.uint8), 4, 3, True).tolist()
            [1, 2, -1]
        """
        xp = self.xp
        per, mask = values_per_byte(n_bits), (1 << n_bits) - 1
        leading, n_bytes = tuple(packed.shape[:-1]), int(packed.shape[-1])
        parts = [(packed >> (j * n_bits)) & mask for j in range(per)]
        values = xp.reshape(xp.stack(parts, axis=-1), leading + (n_bytes * per,))[..., :length]
        if not signed:
            return values
        sign = 1 << (n_bits - 1)
        return xp.astype(values ^ sign, xp.int8) - sign

    def check_out(self, out: Any, like: Any, dtype: str) -> None:
        """Check that ``out`` can take a result of ``like``'s shape and ``dtype`` (before any write).

        Args:
            out: the array the caller means to write into.
            like: an array of the result's shape and device.
            dtype: the name of the result's dtype.

        Raises:
            TypeError: if ``out`` is not an array of this backend's library.
            ValueError: if its shape, dtype or device differ, or it is read-only.
        """
        owns = self.owns(out)
        check_out(
            out,
            shape=tuple(like.shape),
            dtype=self.dtype(dtype),
            library=self.name,
            owns=owns,
            device=self.device(like),
            out_device=self.device(out) if owns else None,
        )

    def fill_nan(self, qvalues: Any, values: Any, fill: numpy.ndarray) -> Any:
        """Return ``qvalues`` with ``fill`` where ``values`` is NaN.

        Args:
            qvalues: integers of this namespace, of ``values``' shape.
            values: the floats they were quantized from.
            fill: a host integer array of ``qvalues``' dtype, 0-d or broadcastable to
                ``values`` (a per-channel zero point's shape).

        Returns:
            The integers: a new array here; specialised backends may write ``qvalues``
            in place and return it.
        """
        xp = self.xp
        fill = xp.asarray(fill, dtype=qvalues.dtype, device=self.device(qvalues))
        return xp.where(xp.isnan(values), fill, qvalues)

    def _write(self, result: Any, out: Any) -> Any:
        """Copy ``result`` into ``out`` (already checked by :meth:`check_out`) when given."""
        if out is None:
            return result
        out[...] = result
        return out


def spread(parameter: Any, shape: Tuple[int, ...], extent: Optional[Tuple[int, ...]], *, xp: Any) -> Any:
    """Give every value of ``shape`` its block's entry of a grid ``parameter`` (per tensor: as is)."""
    if extent is None or parameter is None or isinstance(parameter, (int, float)):
        return parameter
    return expand_to_values(parameter, shape, extent, xp=xp)
