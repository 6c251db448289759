"""What makes a qarray object whole: the checks shared by dumping and loading.

Fields can be assigned one by one, so an object can pass through states whose
fields contradict each other (``rmin`` above ``rmax``, an offset that the options
do not give, quantized values outside the clipping range). Such a state is
refused when it is written (``dumps()``/``dump()``) and when it is read back
(``load``/``loads``), by the same functions, so that whatever ``dumps()``
writes, ``loads()`` accepts. Checks are registered per document type tag; a new
document type adds its own with :func:`register_consistency_check`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy

from ..backends import backend_for
from ..core.checks import check_broadcastable
from ..core.dtypes import DOCUMENT_DTYPES, FLOAT_DTYPES, INTEGER_DTYPES
from ..core.granularity import expand_to_values, is_grid
from ..core.namespace import array_namespace, is_lazy, to_numpy
from ..core.rule import ranges_ordered

__all__ = ["StreamChecks", "check_consistent", "clip_bounds", "register_consistency_check"]

StreamChecks = Dict[int, Callable[[numpy.ndarray], None]]
"""Checks for lazy arrays, keyed by ``id(array)``, run on each host piece as it is written."""


_CHECKS: Dict[str, Callable[[Any, StreamChecks], None]] = {}


def register_consistency_check(type_tag: str, check: Callable[[Any, StreamChecks], None]) -> None:
    """Register the consistency check of a document type.

    Args:
        type_tag: the ``type`` tag of the documents the check applies to.
        check: called with the object and a dict it may fill with checks for lazy
            arrays (see :data:`StreamChecks`); raises ``ValueError`` if the object is
            inconsistent.

    Raises:
        TypeError: if ``type_tag`` is not a str or ``check`` is not callable.
    """
    if not isinstance(type_tag, str):
        raise TypeError(f"type_tag must be a str, got {type(type_tag).__name__}")
    if not callable(check):
        raise TypeError(f"check must be callable, got {type(check).__name__}")
    _CHECKS[type_tag] = check


def check_consistent(obj: Any) -> StreamChecks:
    """Raise ``ValueError`` if ``obj``'s fields contradict each other (what loading refuses).

    Arrays that are not lazy are read once (a documented boundary: dump and load read
    back anyway); lazy arrays cannot be checked before they are computed, so their
    checks are returned, to be run on each piece as it is written.

    Args:
        obj: a qarray object (any class with a registered type tag; others pass).

    Returns:
        The checks to run on lazy arrays, keyed by ``id(array)``.

    Raises:
        ValueError: naming the inconsistent fields.
    """
    stream_checks: StreamChecks = {}
    check = _CHECKS.get(getattr(obj, "_type_tag", ""))
    if check is not None:
        check(obj, stream_checks)
    return stream_checks


# -- the five classes ---------------------------------------------------------------------


def _check_options(options: Any, stream_checks: StreamChecks) -> None:
    options.validate()


def _check_stats(stats: Any, stream_checks: StreamChecks) -> None:
    rmin, rmax = stats.rmin, stats.rmax
    if (rmin is None) != (rmax is None):
        raise ValueError(
            f"stats: rmin ({rmin}) and rmax ({rmax}) must be both set or both None"
        )
    if rmin is not None:
        if not ranges_ordered(rmin, rmax):
            raise ValueError(
                f"stats: rmin ({rmin}) must not exceed rmax ({rmax}), and per-block ranges must share a shape"
            )
    uvalues = stats.uvalues
    if uvalues is None:
        return
    if is_lazy(uvalues):
        stream_checks[id(uvalues)] = _UvaluesPieces()
        return
    xp = array_namespace(uvalues)
    finite = bool(xp.all(xp.isfinite(uvalues)))
    ordered = uvalues.shape[0] < 2 or bool(xp.all(uvalues[1:] > uvalues[:-1]))
    if not (finite and ordered):
        raise ValueError("stats: uvalues must be sorted, unique and finite")


class _UvaluesPieces:
    """Check lazy uvalues piece by piece: finite, and increasing across pieces too."""

    def __init__(self) -> None:
        self.last: Optional[float] = None

    def __call__(self, piece: numpy.ndarray) -> None:
        flat = piece.reshape(-1)
        if flat.size == 0:
            return
        ordered = bool(numpy.all(flat[1:] > flat[:-1])) and (self.last is None or flat[0] > self.last)
        if not (bool(numpy.all(numpy.isfinite(flat))) and ordered):
            raise ValueError("stats: uvalues must be sorted, unique and finite")
        self.last = float(flat[-1])


def _check_params(params: Any, stream_checks: StreamChecks) -> None:
    """Parameters alone: every field is validated when it is set."""


def _check_quantizer(quantizer: Any, stream_checks: StreamChecks) -> None:
    options, params, stats = quantizer.options, quantizer.params, quantizer.stats
    _check_stats(stats, stream_checks)
    if options is None:
        if params.scale is not None:
            raise ValueError("UniformQuantizer: parameters without options cannot be used")
        return
    options.validate()
    _check_stats_grid(stats, params)
    offset = params.offset
    if offset is None:
        return
    # The rule gives 2**(n - 1) when signed, else 0, and 0 for a single-value range
    # whatever the sign; parameters given by hand (value_is_float=False, imported from
    # a model) may pair either with the options' sign. Any other offset (left behind
    # when n_bits changed, or set by hand) contradicts n_bits.
    allowed = (0, 2 ** (options.n_bits - 1))
    if is_grid(offset) or params.is_per_block:  # an offset grid with scalar scale is refused there
        _check_block_parameters(quantizer, allowed)
        return
    if offset not in allowed:
        raise ValueError(
            f"UniformQuantizer: offset {offset} contradicts the options: n_bits={options.n_bits} "
            f"allows offset {allowed[1]} (signed) or 0 (unsigned, or a single-value range)"
        )


def _check_stats_grid(stats: Any, params: Any) -> None:
    """Statistics and the parameters computed from them have one grid: both per tensor, or
    both per block with arrays of one shape (only shapes are read)."""
    rmin, scale = stats.rmin, params.scale
    if rmin is None or scale is None:
        return
    ranges = tuple(rmin.shape) if is_grid(rmin) else ()
    parameters = tuple(scale.shape) if is_grid(scale) else ()
    if ranges != parameters:
        raise ValueError(
            f"UniformQuantizer: the statistics ({_grid_name(ranges)}) and the parameters "
            f"({_grid_name(parameters)}) must have one grid, as when the parameters are computed from them"
        )


def _grid_name(grid: Tuple[int, ...]) -> str:
    return f"grid {grid}" if grid else "per tensor"


def _check_block_parameters(quantizer: Any, allowed: Tuple[int, int]) -> None:
    """Per-block parameters: one grid shape for all three, the options' granularity, and
    offsets the rule can give (read once: dumping and loading read back anyway)."""
    params, options = quantizer.params, quantizer.options
    shapes = {name: tuple(value.shape) if is_grid(value) else None for name, value in
              (("scale", params.scale), ("zero_point", params.zero_point), ("offset", params.offset))}
    # The scale is the grid; a zero point or offset may be one number shared by every block.
    if shapes["scale"] is None or {shape for shape in shapes.values() if shape is not None} != {shapes["scale"]}:
        raise ValueError(f"UniformQuantizer: per-block parameters must share one grid shape, got {shapes}")
    if not options.is_granular:
        raise ValueError("UniformQuantizer: per-block parameters need options with axis or block_size")
    offset = params.offset
    offsets = numpy.unique(numpy.asarray(to_numpy(offset) if is_grid(offset) else offset))
    if not set(int(value) for value in offsets) <= set(allowed):
        raise ValueError(
            f"UniformQuantizer: offsets {offsets.tolist()[:4]} contradict the options: n_bits={options.n_bits} "
            f"allows offset {allowed[1]} (signed) or 0 (unsigned, or a single-value range)"
        )


def _check_quantized_array(array: Any, stream_checks: StreamChecks) -> None:
    quantizer = array.quantizer
    _check_quantizer(quantizer, stream_checks)
    if quantizer.options is None or quantizer.n_bits != array.n_bits:
        raise ValueError(
            f"QuantizedArray: n_bits {array.n_bits} differs from the quantizer's {quantizer.n_bits}"
        )
    values, qvalues = array.values, array.qvalues
    if (values is None) != (qvalues is None):
        raise ValueError("QuantizedArray: values and qvalues must both be present or both None")
    if values is None:
        return
    _check_dtype(values, "values", FLOAT_DTYPES)
    _check_dtype(qvalues, "qvalues", INTEGER_DTYPES)
    if tuple(values.shape) != tuple(qvalues.shape):
        raise ValueError(
            f"QuantizedArray: values shape {tuple(values.shape)} differs from qvalues shape "
            f"{tuple(qvalues.shape)}"
        )
    zero_point = quantizer.zero_point
    extent: Optional[Tuple[int, ...]] = None
    if quantizer.is_per_block:
        extent = quantizer.block_extent(tuple(values.shape))  # the values give the parameters' grid
    elif isinstance(zero_point, numpy.ndarray):
        check_broadcastable(zero_point, values)
    bounds = clip_bounds(quantizer)
    if bounds is None:
        return
    if is_grid(bounds[0]):  # one clipping range per block, each block checked against its own
        if extent is None:  # clip_range refuses an offset grid with one scale: never reached
            raise ValueError("QuantizedArray: offset is an array of blocks but scale is one number")
        _check_block_ranges(qvalues, extent, (to_numpy(bounds[0]), to_numpy(bounds[1])), stream_checks)
        return
    if is_lazy(qvalues):
        stream_checks[id(qvalues)] = _RangePieces(bounds)
        return
    if _size(qvalues) == 0:
        return
    xp = array_namespace(qvalues)
    _check_range(int(xp.min(qvalues)), int(xp.max(qvalues)), bounds)


def clip_bounds(quantizer: Any) -> Optional[Tuple[Any, Any]]:
    """The clipping range the qvalues must lie in (arrays of the grid when every block has its
    own offset), or None when quant does not clip."""
    params = quantizer.params
    if params.scale is None or params.zero_point is None or params.offset is None:
        return None  # no parameters: nothing says what the integers mean
    return quantizer.clip_range()


def _check_block_ranges(
    qvalues: Any, extent: Tuple[int, ...], bounds: Tuple[numpy.ndarray, numpy.ndarray], stream_checks: StreamChecks
) -> None:
    """Check every block of ``qvalues`` against its own clipping range (``bounds``: host
    arrays of the grid). Lazy qvalues are checked piece by piece as they are written;
    others with one per-block min/max on their device, of which only the grid is read."""
    if is_lazy(qvalues):
        stream_checks[id(qvalues)] = _BlockRangePieces(extent, bounds, int(qvalues.shape[0]))
        return
    if _size(qvalues) == 0:
        return
    low, high = (to_numpy(reduced) for reduced in backend_for(qvalues).minmax(qvalues, False, extent=extent))
    bad = (low < bounds[0]) | (high > bounds[1])
    if bool(bad.any()):
        block = tuple(int(index) for index in numpy.argwhere(bad)[0])
        outside = low[block] if low[block] < bounds[0][block] else high[block]
        _refuse_block(block, int(outside), bounds)


class _BlockRangePieces:
    """Check lazy qvalues piece by piece (whole rows along the first axis, in order), each
    value against the clipping range of its own block."""

    def __init__(self, extent: Tuple[int, ...], bounds: Tuple[numpy.ndarray, numpy.ndarray], rows: int) -> None:
        self.extent = extent
        self.bounds = bounds
        self.rows = rows
        self.row = 0  # the first row of the next piece (back to 0 when the array is written again)

    def __call__(self, piece: numpy.ndarray) -> None:
        rows = int(piece.shape[0])
        if piece.size:
            blocks = (self.row + numpy.arange(rows)) // self.extent[0]
            inner = (1,) + tuple(self.extent[1:])
            low, high = (expand_to_values(bound[blocks], piece.shape, inner, xp=numpy) for bound in self.bounds)
            bad = (piece < low) | (piece > high)
            if bool(bad.any()):
                index = numpy.unravel_index(int(numpy.argmax(bad)), piece.shape)
                block = tuple(int(at) // int(size) for at, size in zip((self.row + index[0],) + index[1:], self.extent))
                _refuse_block(block, int(piece[index]), self.bounds)
        self.row = (self.row + rows) % self.rows


def _refuse_block(block: Tuple[int, ...], outside: int, bounds: Tuple[numpy.ndarray, numpy.ndarray]) -> None:
    raise ValueError(
        f"QuantizedArray: qvalues of block {block} reach {outside}, outside that block's clipping "
        f"range [{int(bounds[0][block])}, {int(bounds[1][block])}] of the options (n_bits, is_signed, "
        "is_narrow) and its offset"
    )


class _RangePieces:
    """Check lazy qvalues piece by piece against the clipping range."""

    def __init__(self, bounds: Tuple[int, int]) -> None:
        self.bounds = bounds

    def __call__(self, piece: numpy.ndarray) -> None:
        if piece.size:
            _check_range(int(piece.min()), int(piece.max()), self.bounds)


def _check_range(low: int, high: int, bounds: Tuple[int, int]) -> None:
    if low < bounds[0] or high > bounds[1]:
        raise ValueError(
            f"QuantizedArray: qvalues span [{low}, {high}], outside the clipping range "
            f"[{bounds[0]}, {bounds[1]}] of the options (n_bits, is_signed, is_narrow) and offset"
        )


def _check_dtype(array: Any, argument: str, names: Tuple[str, ...]) -> None:
    dtype = getattr(array, "dtype", None)
    name = dtype.name if isinstance(dtype, numpy.dtype) else str(dtype).rsplit(".", 1)[-1]
    if name in DOCUMENT_DTYPES and name not in names:  # (others: encoding refuses them, TypeError)
        raise ValueError(f"QuantizedArray: {argument} must have a dtype among {', '.join(names)}, got {dtype}")


def _size(array: Any) -> int:
    size = 1
    for extent in array.shape:
        size *= int(extent)
    return size


for _tag, _check in (
    ("QuantizationOptions", _check_options),
    ("MinMaxQuantizationStats", _check_stats),
    ("UniformQuantizationParameters", _check_params),
    ("UniformQuantizer", _check_quantizer),
    ("QuantizedArray", _check_quantized_array),
):
    register_consistency_check(_tag, _check)
