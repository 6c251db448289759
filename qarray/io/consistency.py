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

from ..core.checks import check_broadcastable
from ..core.dtypes import DOCUMENT_DTYPES, FLOAT_DTYPES, INTEGER_DTYPES
from ..core.granularity import is_grid
from ..core.namespace import array_namespace, is_lazy, to_numpy
from ..core.rule import ranges_ordered

__all__ = ["StreamChecks", "check_consistent", "register_consistency_check"]

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
    if quantizer.is_per_block:
        quantizer.block_extent(tuple(values.shape))  # the values give the parameters' grid
    elif isinstance(zero_point, numpy.ndarray):
        check_broadcastable(zero_point, values)
    bounds = _clip_bounds(quantizer)
    if bounds is None:
        return
    if is_lazy(qvalues):
        stream_checks[id(qvalues)] = _RangePieces(bounds)
        return
    if _size(qvalues) == 0:
        return
    xp = array_namespace(qvalues)
    _check_range(int(xp.min(qvalues)), int(xp.max(qvalues)), bounds)


def _clip_bounds(quantizer: Any) -> Optional[Tuple[int, int]]:
    """The clipping range the qvalues must lie in, or None when quant does not clip."""
    params = quantizer.params
    if params.scale is None or params.zero_point is None or params.offset is None:
        return None  # no parameters: nothing says what the integers mean
    clip = quantizer.clip_range()
    if clip is not None and is_grid(clip[0]):  # per block: the union of the blocks' ranges
        return int(numpy.min(to_numpy(clip[0]))), int(numpy.max(to_numpy(clip[1])))
    return clip


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
