"""Quantization primitives: plain functions under the classes, in the shape of torchao's.

- :func:`block_extent`, :func:`block_minmax`: the blocks of a granularity and their ranges;
- :func:`choose_parameters`: scale, zero point and offset from ranges, per tensor
  (host numbers) or per block (arrays of the parameter grid, computed on the
  values' device with the same float64 operations, so the numbers are equal);
- :func:`quantize`, :func:`dequantize`: apply a :class:`QuantSpec` with the
  backend's fused kernels.

Each function resolves the backend once, at its top, and the classes
(:class:`~qarray.UniformQuantizer`, :class:`~qarray.QuantizedArray`) are thin
façades over them.

Example:
    >>> import numpy
    >>> from qarray import QuantizationOptions
    >>> w = numpy.array([[0.0, 1.0, 2.0, 3.0], [-4.0, 0.0, 4.0, 8.0]])
    >>> extent, grid = block_extent(w.shape, axis=0)
    >>> rmin, rmax = block_minmax(w, extent)
    >>> scale, zero_point, offset = choose_parameters(rmin, rmax, QuantizationOptions(8))
    >>> scale.ravel().tolist(), zero_point.ravel().tolist()
    ([0.011764705882352941, 0.047058823529411764], [0, 85])
"""

from __future__ import annotations

from typing import Any, FrozenSet, Optional, Tuple

import numpy

from .core.granularity import block_extent, expand_to_values
from .core.granularity import block_minmax as _block_minmax
from .core.namespace import array_namespace, as_array, is_array, is_lazy, to_numpy

__all__ = [
    "BlockCheck",
    "block_extent",
    "block_minmax",
    "choose_block_parameters",
    "choose_parameters",
    "dequantize",
    "quantize",
]

_STABILITY_CONST = 10**-6  # the same constant as qarray.params.STABILITY_CONST (imported there)
_ZERO_POINT_LIMIT = 2.0**63


def block_minmax(values: Any, extent: Tuple[int, ...], *, omit_nonfinite: bool = False) -> Tuple[Any, Any]:
    """Return the min and max of every block of ``values`` (arrays of the parameter grid).

    Args:
        values: a real array of any Array API library.
        extent: the block extent per axis (:func:`block_extent`).
        omit_nonfinite: leave NaN and ±Inf out (a block without finite values then
            has min +Inf and max -Inf); by default they propagate into their block.

    Example:
        >>> import numpy
        >>> block_minmax(numpy.array([[1.0, 5.0], [2.0, -3.0]]), (1, 2))[0].tolist()
        [[1.0], [-3.0]]
    """
    xp = array_namespace(values)
    if not omit_nonfinite:
        return _block_minmax(values, extent, xp=xp)
    finite = xp.isfinite(values)
    inf = xp.asarray(float("inf"), dtype=values.dtype, device=getattr(values, "device", None))
    low, _ = _block_minmax(xp.where(finite, values, inf), extent, xp=xp)
    _, high = _block_minmax(xp.where(finite, values, -inf), extent, xp=xp)
    return low, high


def choose_parameters(
    rmin: Any, rmax: Any, options: Any, *, previous_scale: Any = None
) -> Tuple[Any, Any, Any]:
    """Return ``(scale, zero_point, offset)`` for ranges ``[rmin, rmax]`` under ``options``.

    With host numbers, this is :func:`qarray.params.choose_parameters`' rule. With
    arrays (one range per block), every entry gets exactly what that rule gives for
    its block alone (the single-value rule included, so ``offset`` is per block),
    computed elementwise on the arrays' device with the same float64 operations:
    ``scale`` float64, ``zero_point`` and ``offset`` int64, all of the ranges' shape.

    Args:
        rmin, rmax: numbers, or real arrays of one shape (float64 is used throughout).
        options: the :class:`~qarray.QuantizationOptions`.
        previous_scale: with ``options.is_precomputed_qat``, the scale(s) to keep.

    Raises:
        ValueError: if a range is not finite, has rmin > rmax, is wider than float64
            holds (asymmetric), or gives a zero point beyond int64; and for QAT scale
            inference from unique values, which needs one tensor's values (not supported
            per block). Checking arrays reads one count back from their device (this
            function always checks at once; see :func:`choose_block_parameters`).
    """
    if not is_array(rmin) and not is_array(rmax):
        from .params import choose_parameters as per_tensor
        from .stats import MinMaxQuantizationStats

        return per_tensor(options, MinMaxQuantizationStats(rmax=rmax, rmin=rmin), previous_scale)
    # Blocks that the rule does not use (single values, overflowing products) divide by
    # zero or overflow on the way; only the selected entries matter, and they are checked.
    scale, zero_point, offset, check = choose_block_parameters(rmin, rmax, options, previous_scale=previous_scale)
    check.read()
    return scale, zero_point, offset


class BlockCheck:
    """What the per-block rule found about the blocks, read back once, when first needed.

    The counts (non-finite ranges, ranges that give no valid parameters, single-value
    blocks) are computed where the ranges are. :meth:`read` brings them to the host (one
    read-back), raises on a bad block, and returns the offsets that occur: ``0`` for
    single-value blocks or unsigned options, ``2**(n_bits - 1)`` for the others, so that
    quantization knows the union of the blocks' clipping ranges without reading the
    offset grid. On a GPU the parameters are checked when something first reads back
    (a checked quantization, a document, a dtype that needs the offsets), not when they
    are computed: computing them reads nothing back.

    Example:
        >>> import numpy
        >>> from qarray import QuantizationOptions
        >>> *_, check = choose_block_parameters(numpy.array([0.0, 1.0]), numpy.array([0.0, 3.0]),
        ...                                     QuantizationOptions(8, is_signed=True))
        >>> sorted(check.read())
        [0, 128]
    """

    def __init__(self, counts: Any, blocks: int, signed_offset: int) -> None:
        self._counts = counts
        self._blocks = blocks
        self._signed_offset = signed_offset
        self._offsets: Optional[FrozenSet[int]] = None

    @property
    def offsets(self) -> Optional[FrozenSet[int]]:
        """The offsets that occur, once :meth:`read` has passed; None before."""
        return self._offsets

    def read(self) -> FrozenSet[int]:
        """Read the counts back (the first call only), raise on a bad block, return the offsets.

        Raises:
            ValueError: if a block range is not finite (NaN or ±Inf in the calibration
                values, or no finite value under ``nan_policy='omit'``), or gives no valid
                parameters.
        """
        if self._offsets is not None:
            return self._offsets
        n_nonfinite, n_invalid, n_single = (int(count) for count in to_numpy(self._counts))  # the one read-back
        if n_nonfinite:
            raise ValueError(
                f"{n_nonfinite} of {self._blocks} block range(s) are not finite: the calibration values hold "
                "NaN or ±Inf there (or, under nan_policy='omit', no finite value); clean them, or pass "
                "nan_policy='omit'"
            )
        if n_invalid:
            raise ValueError(
                f"{n_invalid} of {self._blocks} block range(s) give no valid parameters: ranges must have "
                "rmin <= rmax, an asymmetric range must be narrower than float64's limit, and its zero "
                "point must fit int64"
            )
        offsets = {0} if n_single else set()
        if n_single < self._blocks:
            offsets.add(self._signed_offset)
        self._offsets = frozenset(offsets)
        return self._offsets


def choose_block_parameters(
    rmin: Any, rmax: Any, options: Any, *, previous_scale: Any = None
) -> Tuple[Any, Any, Any, BlockCheck]:
    """:func:`choose_parameters` for arrays of ranges, with the check of the blocks.

    Returns ``(scale, zero_point, offset, check)``. Where reading back is free (host
    arrays) the check is read at once, so a bad block raises here; on a device whose
    reads synchronise (a GPU), nothing is read back: ``check.read()`` raises later, when
    first called (see :class:`BlockCheck`).

    Raises:
        ValueError: as :func:`choose_parameters` (at once on the host).
    """
    # Blocks that the rule does not use (single values, overflowing products) divide by
    # zero or overflow on the way; only the selected entries matter, and they are checked.
    with numpy.errstate(all="ignore"):
        scale, zero_point, offset, check = _grid_parameters(
            as_array(rmin, "rmin"), as_array(rmax, "rmax"), options, previous_scale
        )
    from .backends import backend_for

    if not backend_for(scale).defers_reads:
        check.read()
    return scale, zero_point, offset, check


def _grid_parameters(rmin: Any, rmax: Any, options: Any, previous_scale: Any) -> Tuple[Any, Any, Any, BlockCheck]:
    """The per-block parameter rule, elementwise (see :func:`choose_parameters`)."""
    options.validate()
    if options.is_qat and not options.is_precomputed_qat:
        raise ValueError(
            "QAT scale inference from unique values is not supported with a granularity "
            "(axis or block_size): give precomputed QAT parameters (is_precomputed_qat) instead"
        )
    if is_lazy(rmin) or is_lazy(rmax):
        # Dask: the ranges are computed once, here, and the parameters are host arrays
        # that every chunk takes its part of.
        rmin, rmax = to_numpy(rmin), to_numpy(rmax)
    xp = array_namespace(rmin, rmax)
    rmin, rmax = xp.astype(rmin, xp.float64), xp.astype(rmax, xp.float64)
    n_bits = options.n_bits
    signed_offset = 2 ** (n_bits - 1) if options.is_signed else 0
    device = getattr(rmin, "device", None)

    def full(value: float, dtype: Any = xp.float64) -> Any:
        return xp.full(rmin.shape, value, dtype=dtype, device=device)

    width = rmax - rmin
    single = width < _STABILITY_CONST
    tiny = xp.abs(rmax) < _STABILITY_CONST
    single_scale = xp.where(tiny, full(1.0), rmax)
    single_zero = xp.where(tiny, xp.round(-rmin), full(0.0))

    if options.is_symmetric:
        scale = xp.maximum(xp.abs(rmax), xp.abs(rmin)) / float(2**n_bits - 1 - signed_offset)
        zero = full(0.0)
    else:
        if options.is_precomputed_qat and previous_scale is not None:
            scale = xp.astype(xp.broadcast_to(as_array(previous_scale, "previous_scale"), rmin.shape), xp.float64)
        else:
            scale = width / float(2**n_bits - 1)
        zero = full(0.0) if options.is_qat else _zero_points(xp, rmin, rmax, n_bits, signed_offset)

    scale = xp.where(single, single_scale, scale)
    zero = xp.where(single, single_zero, zero)
    offset = xp.where(single, full(0, xp.int64), full(signed_offset, xp.int64))
    nonfinite = xp.logical_not(xp.isfinite(rmin) & xp.isfinite(rmax))
    invalid = (rmin > rmax) | xp.logical_not(xp.isfinite(scale) & (scale != 0.0))
    invalid = invalid | xp.logical_not(xp.abs(zero) < _ZERO_POINT_LIMIT)
    counts = xp.stack(
        [
            xp.sum(xp.astype(nonfinite, xp.int64)),
            xp.sum(xp.astype(invalid & ~nonfinite, xp.int64)),
            xp.sum(xp.astype(single, xp.int64)),
        ]
    )
    blocks = int(numpy.prod(rmin.shape))
    return scale, xp.astype(zero, xp.int64), offset, BlockCheck(counts, blocks, signed_offset)


def _zero_points(xp: Any, rmin: Any, rmax: Any, n_bits: int, offset: int) -> Any:
    """``round((rmax * -offset - rmin * levels) / (rmax - rmin))`` per block, as float64.

    Where a product overflows although the zero point is small, the range is first
    scaled by ``2**-(n_bits + 1)``, as :func:`qarray.params.asymmetric_zero_point`
    does per tensor, so every entry equals the per-tensor number.
    """
    levels = float(2**n_bits - 1 - offset)
    plain = xp.round((rmax * float(-offset) - rmin * levels) / (rmax - rmin))
    factor = 2.0 ** -(n_bits + 1)
    low, high = rmin * factor, rmax * factor
    scaled = xp.round((high * float(-offset) - low * levels) / (high - low))
    return xp.where(xp.isfinite(plain), plain, scaled)


def quantize(
    values: Any, spec: Any, *, check_finite: bool = True, out: Any = None, backend: Any = None
) -> Tuple[Any, Any]:
    """Quantize ``values`` as ``spec`` says, with the backend's kernels: ``(qvalues, problems)``.

    ``problems`` is None when nothing was checked, else a :class:`~qarray.backends.spec.Problems`
    of 0-d arrays left on the device (read them to raise, as :meth:`UniformQuantizer.quant` does).
    A grid spec's parameter arrays must be in ``values``' library and on its device.
    """
    from .backends import backend_for

    backend = backend or backend_for(values)
    return backend.quantize(values, spec, check_finite=check_finite, out=out)


def dequantize(qvalues: Any, spec: Any, *, dtype: str = "float64", out: Any = None, backend: Any = None) -> Any:
    """De-quantize: ``scale * (qvalues - zero_point)`` in float64, written as ``dtype``."""
    from .backends import backend_for

    backend = backend or backend_for(qvalues)
    return backend.dequantize(qvalues, spec, dtype=dtype, out=out)


def spread(parameter: Any, shape: Tuple[int, ...], extent: Optional[Tuple[int, ...]]) -> Any:
    """Give every value of ``shape`` its block's entry of ``parameter`` (per tensor: as is)."""
    if extent is None or not is_array(parameter):
        return parameter
    return expand_to_values(parameter, shape, extent, xp=array_namespace(parameter))
