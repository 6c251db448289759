"""Rich display of qarray objects: the summaries Jupyter shows, as HTML or text.

Importing this module (``import qarray`` does) registers :func:`html_repr` as
the renderer of qarray's six classes in :mod:`qarray.core.rich`, which their
``_repr_html_`` calls; the classes never import this module. :func:`summary`
gives the same rows as plain text. Each summary says what the object is in
quantization terms: number of bits, mode (unsigned, signed, symmetric, narrow,
QAT), granularity (per tensor, per channel, per group) and parameter grid,
scale, zero point, clip range, calibration range, and for arrays their shape,
dtype, backend and device. Per-block parameters are summarized (scale min,
median and max; zero point and offset ranges), each from a handful of numbers
reduced on the grid's device and read back once: never a host copy of a grid.

A QuantizedArray also shows its round-trip error, ``max |dequant(q) - values|``
against the bound ``scale / 2`` (each block's own with per-block parameters):
computed on the array's device and read back as a few numbers (never a host
copy of the array). Displays are read-back boundaries: they may read
calibration statistics and these few numbers, and nothing else. Lazy (Dask)
arrays are not computed by a display (per-block calibration ranges of Dask
input included); :func:`error_summary` computes their error on request.
"""

from __future__ import annotations

import functools
import html
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy

from .backends import backend_for
from .core.dtypes import clip_range
from .core.granularity import is_grid
from .core.namespace import array_namespace, is_lazy
from .core.profiles import PROFILE_DESCRIPTIONS
from .core.rich import mode_name, render_html
from .histogram_stats import HistogramQuantizationStats
from .options import QuantizationOptions
from .params import UniformQuantizationParameters
from .primitives import block_minmax
from .quantized_array import QuantizedArray
from .quantizer import UniformQuantizer
from .stats import MinMaxQuantizationStats

__all__ = ["error_summary", "granularity_name", "html_repr", "mode_name", "summary", "summary_rows"]

Row = Tuple[str, str]


def granularity_name(options: Any) -> str:
    """Return which values share one set of parameters under ``options``, in words.

    Args:
        options: a :class:`~qarray.QuantizationOptions` (or an object with its ``axis``
            and ``block_size`` fields), or None.

    Returns:
        The granularity in words; ``"unset"`` for None.

    Example:
        >>> from qarray import QuantizationOptions
        >>> granularity_name(QuantizationOptions(8))
        'per tensor'
        >>> granularity_name(QuantizationOptions(8, axis=0))
        'per channel (axis=0)'
        >>> granularity_name(QuantizationOptions(4, block_size=32))
        'per group of 32 along the last axis (block_size=32)'
        >>> granularity_name(QuantizationOptions(4, block_size=(2, None)))
        'per block (block_size=(2, None))'
    """
    if options is None:
        return "unset"
    if options.axis is not None:
        return f"per channel (axis={options.axis!r})"
    block_size = options.block_size
    if isinstance(block_size, int):
        return f"per group of {block_size} along the last axis (block_size={block_size})"
    if block_size is not None:
        return f"per block (block_size={block_size!r})"
    return "per tensor"


def error_summary(array: Any) -> Dict[str, Any]:
    """Return the round-trip error of a QuantizedArray: ``max |dequant(q) - values|``.

    The maximum is reduced on the array's device (a lazy array is computed, for these
    few numbers) and read back once. NaN and ±Inf values (kept under
    ``nan_policy="omit"``) are left out. With per-block parameters each value is
    compared with its own block's ``scale / 2``.

    Args:
        array: a :class:`~qarray.QuantizedArray` holding values and quantized values.

    Returns:
        A dict with ``max_abs_error`` (float, or None for an empty array), ``bound``
        (``scale / 2``; with per-block parameters the largest block's) and
        ``within_bound`` (bool: every value within its bound, or None for an empty
        array). Values outside the clip range (parameters fitted on other data)
        legitimately exceed the bound.

    Raises:
        ValueError: if the array holds no values or has no parameters.

    Example:
        >>> import numpy
        >>> from qarray import QuantizedArray
        >>> error_summary(QuantizedArray(4, numpy.linspace(0.0, 1.5, 7)))["within_bound"]
        True
        >>> rows = numpy.array([[0.0, 0.5, 1.0], [0.0, 50.0, 100.0]])
        >>> error_summary(QuantizedArray(4, rows, axis=0))["bound"]  # the wider row's scale / 2
        3.3333333333333335
    """
    if getattr(array, "values", None) is None or getattr(array, "qvalues", None) is None:
        raise ValueError("array must be a QuantizedArray holding values and qvalues")
    quantizer = array.quantizer
    if quantizer.scale is None:
        raise ValueError("array must have quantization parameters (its quantizer has no scale)")
    if quantizer.is_per_block:
        return _grid_error_summary(array)
    bound = abs(float(quantizer.scale)) / 2.0
    backend = array.backend
    if backend.size(array.values) == 0:
        return {"max_abs_error": None, "bound": bound, "within_bound": None}
    xp = backend.xp
    values = xp.astype(array.values, xp.float64)
    error = xp.abs(quantizer.dequant(array.qvalues) - values)
    error = xp.where(xp.isfinite(values), error, xp.zeros_like(error))
    largest = float(_read(xp.max(error), backend))
    # A few ulps of slack: the difference of two rounded float64 numbers of this magnitude.
    magnitudes = [1.0, abs(float(quantizer.scale)) * 2.0**quantizer.n_bits]
    magnitudes += [abs(float(v)) for v in (quantizer.stats._rmin, quantizer.stats._rmax) if v is not None]
    slack = 8 * numpy.finfo(numpy.float64).eps * max(magnitudes)
    return {"max_abs_error": largest, "bound": bound, "within_bound": bool(largest <= bound + slack)}


def _grid_error_summary(array: Any) -> Dict[str, Any]:
    """:func:`error_summary` with per-block parameters: each block against its own scale / 2."""
    quantizer, backend = array.quantizer, array.backend
    xp = backend.xp
    values = xp.astype(array.values, xp.float64)
    extent = quantizer.block_extent(tuple(values.shape))
    scale = _with_values(quantizer.scale, array.values, backend)
    if backend.size(array.values) == 0:
        bound = float(_read(xp.max(xp.abs(scale)), backend)) / 2.0
        return {"max_abs_error": None, "bound": bound, "within_bound": None}
    finite = xp.isfinite(values)
    error = xp.abs(quantizer.dequant(array.qvalues) - values)
    error = xp.where(finite, error, xp.zeros_like(error))
    _, block_error = block_minmax(error, extent)
    _, magnitude = block_minmax(xp.where(finite, xp.abs(values), xp.zeros_like(values)), extent)
    half = xp.abs(scale) / 2.0
    # A few ulps of slack per block, as per tensor: its largest magnitude and its grid's.
    eps = float(numpy.finfo(numpy.float64).eps)
    slack = 8 * eps * xp.maximum(xp.maximum(magnitude, half * 2.0 ** (quantizer.n_bits + 1)), xp.ones_like(half))
    excess = xp.max(block_error - half - slack)
    largest, worst, bound = (float(v) for v in _read(xp.stack([xp.max(block_error), excess, xp.max(half)]), backend))
    return {"max_abs_error": largest, "bound": bound, "within_bound": bool(worst <= 0.0)}


@functools.singledispatch
def summary_rows(obj: Any) -> List[Row]:
    """Return the ``(label, text)`` rows that describe a qarray object.

    Args:
        obj: one of qarray's six classes: :class:`~qarray.QuantizationOptions`,
            :class:`~qarray.MinMaxQuantizationStats`, :class:`~qarray.HistogramQuantizationStats`,
            :class:`~qarray.UniformQuantizationParameters`, :class:`~qarray.UniformQuantizer`
            or :class:`~qarray.QuantizedArray`.

    Returns:
        The rows, in display order.

    Raises:
        TypeError: if ``obj`` is not one of qarray's six classes.

    Example:
        >>> from qarray import QuantizationOptions
        >>> summary_rows(QuantizationOptions(8, axis=0))[-1]
        ('granularity', 'per channel (axis=0)')
    """
    raise TypeError(f"obj must be a qarray object (QuantizedArray, UniformQuantizer, ...), got {type(obj).__name__}")


def summary(obj: Any) -> str:
    """Return a plain-text, multi-line summary of a qarray object (the rows of its display).

    Args:
        obj: one of qarray's six classes (see :func:`summary_rows`).

    Returns:
        The class name, then one indented ``label  text`` line per row.

    Raises:
        TypeError: if ``obj`` is not one of qarray's six classes.

    Example:
        >>> from qarray import QuantizationOptions
        >>> print(summary(QuantizationOptions(4)))
        QuantizationOptions
          n_bits         4
          mode           unsigned
          integer range  [0, 15]
          granularity    per tensor
    """
    rows = summary_rows(obj)
    width = max((len(label) for label, _ in rows), default=0)
    lines = [type(obj).__name__] + [f"  {label.ljust(width)}  {text}" for label, text in rows]
    return "\n".join(lines)


def html_repr(obj: Any) -> str:
    """Return the HTML that Jupyter shows for a qarray object (a titled two-column table).

    Args:
        obj: one of qarray's six classes (see :func:`summary_rows`).

    Returns:
        The HTML fragment.

    Raises:
        TypeError: if ``obj`` is not one of qarray's six classes.

    Example:
        >>> from qarray import QuantizationOptions
        >>> html_repr(QuantizationOptions(4)).count("<tr>")
        4
    """
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(label)}</th>"
        f"<td style='text-align:left'>{html.escape(text)}</td></tr>"
        for label, text in summary_rows(obj)
    )
    title = html.escape(type(obj).__name__)
    return (
        f"<div class='qarray-repr'><strong>{title}</strong>"
        f"<table style='border-collapse:collapse'>{rows}</table></div>"
    )


# -- rows of each class ---------------------------------------------------------------------


def _options_rows(options: Any) -> List[Row]:
    rows = [("n_bits", str(options.n_bits)), ("mode", mode_name(options))]
    offset = 2 ** (options.n_bits - 1) if options.is_signed else 0
    low = -offset + (1 if options.is_narrow else 0)
    rows.append(("integer range", f"[{low}, {2**options.n_bits - 1 - offset}]"))
    rows.append(("granularity", granularity_name(options)))
    return rows + _profile_rows(options)


def _profile_rows(options: Any) -> List[Row]:
    """What a runtime profile computes (nothing for the default, concrete one)."""
    if options.profile == "concrete":
        return []
    return [("numerics", PROFILE_DESCRIPTIONS[options.profile])]


def _stats_rows(stats: Any) -> List[Row]:
    try:
        rmin, rmax = stats.rmin, stats.rmax
    except ValueError as error:  # pending streaming batches held NaN/±Inf
        return [("calibration range", f"invalid: {error}")]
    if rmin is None or rmax is None:
        rows = [("calibration range", "not calibrated")]
    elif stats.is_per_block:
        rows = [("calibration range", _block_range_text(rmin, rmax))]
    else:
        rows = [("calibration range", f"[{_number(rmin)}, {_number(rmax)}]")]
    rows.append(("unique values", _uvalues_text(stats.uvalues)))
    return rows


def _histogram_rows(stats: Any) -> List[Row]:
    try:
        hist = stats.histogram
    except ValueError as error:  # pending device batches held NaN/±Inf
        return [("histogram", f"invalid: {error}")]
    if hist is None:
        return [("histogram", f"empty (up to {stats.max_bins} bins)")]
    used = hist.j_hi - hist.j_lo + 1
    lower, upper = stats.range("percentile")
    return [
        ("values", str(hist.total)),
        ("calibration range", f"[{_number(hist.vmin)}, {_number(hist.vmax)}] (min/max)"),
        ("bins", f"{used} of {stats.max_bins}, width 2**{hist.k} = {_number(hist.width)}"),
        ("99.99th percentile range", f"[{_number(lower)}, {_number(upper)}]"),
    ]


def _params_rows(params: Any, shape: Optional[Tuple[int, ...]] = None, quantizer: Any = None) -> List[Row]:
    scale, zero_point, offset = params.scale, params.zero_point, params.offset
    if not params.is_per_block:
        return [
            ("scale", _number(scale)),
            ("zero point", _zero_point_text(zero_point)),
            ("offset", "None" if offset is None else str(offset)),
        ]
    return [
        ("parameter grid", _grid_text(scale, shape, quantizer)),
        ("scale", _float_grid_text(scale)),
        ("zero point", _int_grid_text(zero_point)),
        ("offset", _int_grid_text(offset, count_low=True)),
    ]


def _quantizer_rows(quantizer: Any, shape: Optional[Tuple[int, ...]] = None) -> List[Row]:
    options = quantizer.options
    if options is None:
        return [("options", "unset")]
    rows = [("n_bits", str(options.n_bits)), ("mode", mode_name(options))]
    rows.append(("granularity", granularity_name(options)))
    rows += _profile_rows(options)
    if options.is_granular and quantizer.params.scale is None:
        rows.append(("parameter grid", "not computed yet"))
    rows += _params_rows(quantizer.params, shape, quantizer)
    rows.append(("clip range", _clip_text(quantizer)))
    rows += _stats_rows(quantizer.stats)
    return rows


def _array_rows(array: Any) -> List[Row]:
    reference = array.values if array.values is not None else array.qvalues
    rows = _quantizer_rows(array.quantizer, None if reference is None else tuple(reference.shape))
    if reference is None:
        return rows + [("values", "None")]
    backend = array.backend
    rows.append(("shape", _shape_text(reference.shape)))
    rows.append(("values dtype", _dtype_text(array.values)))
    rows.append(("qvalues dtype", _dtype_text(array.qvalues)))
    rows.append(("backend", "None" if backend is None else backend.name))
    rows.append(("device", _device_text(backend, reference)))
    chunks = _chunks_text(reference)
    if chunks:
        rows.append(("chunks", chunks))
    rows.append(("round-trip error", _error_text(array)))
    return rows


_ROWS: Dict[type, Callable[[Any], List[Row]]] = {
    QuantizedArray: _array_rows,
    UniformQuantizer: _quantizer_rows,
    QuantizationOptions: _options_rows,
    MinMaxQuantizationStats: _stats_rows,
    HistogramQuantizationStats: _histogram_rows,
    UniformQuantizationParameters: _params_rows,
}

for _cls, _rows_of in _ROWS.items():
    summary_rows.register(_cls, _rows_of)
    render_html.register(_cls, html_repr)


# -- reading small arrays back ----------------------------------------------------------------


def _read(array: Any, backend: Any = None) -> numpy.ndarray:
    """Read a small array back to the host through its backend (the display's one boundary)."""
    if backend is None:

        if isinstance(array, numpy.generic):  # a NumPy scalar is already a host number
            return numpy.asarray(array)
        backend = backend_for(array)
    return numpy.asarray(backend.to_numpy(array))


def _with_values(parameter: Any, values: Any, backend: Any) -> Any:
    """``parameter`` as a float64 array of ``values``' library, on their device."""
    xp = backend.xp
    if backend.owns(parameter):
        return xp.astype(parameter, xp.float64)
    host = numpy.asarray(_read(parameter), dtype=numpy.float64)
    if is_lazy(values):
        return backend.asarray(host)
    return backend.asarray(host, device=backend.device(values))


def _float_summary(grid: Any) -> Tuple[float, float, float]:
    """``(min, median, max)`` of a float grid, reduced on its device and read back once."""
    xp = array_namespace(grid)
    flat = xp.sort(xp.reshape(xp.astype(grid, xp.float64), (-1,)))
    size = int(flat.shape[0])
    median = (flat[(size - 1) // 2] + flat[size // 2]) / 2.0
    low, middle, high = _read(xp.stack([flat[0], median, flat[size - 1]]))
    return float(low), float(middle), float(high)


def _int_summary(grid: Any) -> Tuple[int, int, int]:
    """``(min, max, blocks at the min)`` of an integer grid, reduced on its device, read back once."""
    xp = array_namespace(grid)
    flat = xp.reshape(xp.astype(grid, xp.int64), (-1,))
    low = xp.min(flat)
    count = xp.sum(xp.astype(flat == low, xp.int64))
    low_, high, at_low = _read(xp.stack([low, xp.max(flat), count]))
    return int(low_), int(high), int(at_low)


# -- formatting helpers ---------------------------------------------------------------------


def _number(value: Any) -> str:
    if value is None:
        return "None"
    return f"{float(value):.6g}"


def _blocks(grid: Any) -> int:
    return int(numpy.prod([int(length) for length in grid.shape]))


def _grid_text(scale: Any, shape: Optional[Tuple[int, ...]], quantizer: Any) -> str:
    grid = tuple(int(length) for length in scale.shape)
    text = f"{_shape_text(grid)}: {_blocks(scale)} blocks"
    if shape is None or quantizer is None:
        return text
    try:
        extent = tuple(quantizer.block_extent(shape))
    except ValueError:  # parameters set by hand for another shape: the rest still shows
        return text + f" (not the grid of shape {_shape_text(shape)})"
    uneven = any(int(length) % size for length, size in zip(shape, extent))
    return text + f" of {'up to ' if uneven else ''}{_shape_text(extent)} values"


def _float_grid_text(grid: Any) -> str:
    if _blocks(grid) == 0:
        return f"array of shape {_shape_text(grid.shape)}"
    if is_lazy(grid):
        return f"lazy array of shape {_shape_text(grid.shape)} (not computed by a display)"
    low, median, high = _float_summary(grid)
    return f"min {_number(low)}, median {_number(median)}, max {_number(high)}"


def _int_grid_text(grid: Any, count_low: bool = False) -> str:
    if grid is None:
        return "None"
    if not is_grid(grid):
        return _number(grid)
    if _blocks(grid) == 0:
        return f"array of shape {_shape_text(grid.shape)}"
    if is_lazy(grid):
        return f"lazy array of shape {_shape_text(grid.shape)} (not computed by a display)"
    low, high, at_low = _int_summary(grid)
    if low == high:
        return f"{low} in every block"
    if not count_low:
        return f"in [{low}, {high}]"
    return f"in [{low}, {high}]; {low} in {at_low} of {_blocks(grid)} blocks"


def _block_range_text(rmin: Any, rmax: Any) -> str:
    grid = rmin if is_grid(rmin) else rmax
    text = f"per block, grid {_shape_text(grid.shape)}"
    if is_lazy(rmin) or is_lazy(rmax):
        return text + ": lazy (not computed by a display)"
    if _blocks(grid) == 0:
        return text

    xp = array_namespace(grid)
    low, high = xp.astype(rmin, xp.float64), xp.astype(rmax, xp.float64)
    ends = _read(xp.stack([xp.min(low), xp.max(low), xp.min(high), xp.max(high)]))
    return (
        f"{text}: rmin in [{_number(ends[0])}, {_number(ends[1])}], "
        f"rmax in [{_number(ends[2])}, {_number(ends[3])}]"
    )


def _zero_point_text(zero_point: Any) -> str:
    if zero_point is None:
        return "None"
    if isinstance(zero_point, numpy.ndarray):
        if zero_point.size == 0:
            return f"array of shape {zero_point.shape}"
        return (
            f"per-channel array of shape {zero_point.shape} "
            f"in [{_number(zero_point.min())}, {_number(zero_point.max())}]"
        )
    return _number(zero_point)


def _uvalues_text(uvalues: Any) -> str:
    if uvalues is None:
        return "not computed"
    count = uvalues.shape[0]
    return f"{count} (grid for QAT scale inference)"


def _clip_text(quantizer: Any) -> str:
    if quantizer.params.offset is None:
        return "unknown (no parameters yet)"
    clip = quantizer.clip_range()
    if clip is None:
        reason = "no_clipping" if quantizer.no_clipping else "QAT with inferred parameters"
        return f"none ({reason})"
    offset = quantizer.offset
    if is_grid(offset):
        if _blocks(offset) == 0:
            return "per block (no blocks)"
        if is_lazy(offset):
            return "per block, with its offset (lazy offsets, not computed by a display)"
        n_bits, narrow = quantizer.n_bits, quantizer.options.is_narrow
        low, high, _ = _int_summary(offset)
        widest, narrowest = clip_range(n_bits, high, narrow), clip_range(n_bits, low, narrow)
        if low == high:
            return f"[{narrowest[0]}, {narrowest[1]}] in every block"
        return f"per block, with its offset: [{widest[0]}, {widest[1]}] to [{narrowest[0]}, {narrowest[1]}]"
    text = f"[{clip[0]}, {clip[1]}]"
    zero_point = quantizer.zero_point
    if quantizer.scale is not None and zero_point is not None and numpy.ndim(zero_point) == 0:
        scale, zero = float(quantizer.scale), float(zero_point)
        text += f" = reals [{_number(scale * (clip[0] - zero))}, {_number(scale * (clip[1] - zero))}]"
    return text


def _shape_text(shape: Any) -> str:
    lengths = ["?" if extent is None or extent != extent else str(int(extent)) for extent in shape]
    return "(" + ", ".join(lengths) + ("," if len(shape) == 1 else "") + ")"


def _dtype_text(array: Any) -> str:
    return "None" if array is None else str(array.dtype)


def _device_text(backend: Any, array: Any) -> str:
    if backend is None:
        return "unknown"
    if is_lazy(array):  # where the chunks will be computed: their library tells
        library = type(getattr(array, "_meta", None)).__module__.split(".")[0]
        return "GPU (CuPy chunks)" if library == "cupy" else f"host ({library} chunks)"
    try:
        return str(backend.device(array))
    except Exception:  # some libraries cannot tell (lazy arrays): say so, never fail a display
        return "unknown"


def _chunks_text(array: Any) -> Optional[str]:
    if not is_lazy(array):
        return None
    chunk_type = type(getattr(array, "_meta", None))
    library = chunk_type.__module__.split(".")[0]
    blocks = int(numpy.prod(array.numblocks)) if array.numblocks else 1
    largest = tuple(max(sizes) if sizes else 0 for sizes in array.chunks)
    return f"{blocks} block(s) of {library}.{chunk_type.__name__}, up to {_shape_text(largest)}"


def _error_text(array: Any) -> str:
    if array.values is None or array.qvalues is None or array.quantizer.scale is None:
        return "n/a"
    if is_lazy(array.values) or is_lazy(array.qvalues):
        return "not computed for lazy arrays (qarray.display.error_summary(array) computes it)"
    try:
        result = error_summary(array)
    except Exception as error:  # a display must not fail; say why instead
        return f"unavailable: {error}"
    if result["max_abs_error"] is None:
        return "n/a (empty)"
    if array.quantizer.is_per_block:
        verdict = (
            "every block within its own scale/2"
            if result["within_bound"]
            else "some block exceeds its own scale/2 (values outside its clip range)"
        )
        return (
            f"max |dequant(q) - values| = {_number(result['max_abs_error'])}, {verdict}; "
            f"largest scale/2 = {_number(result['bound'])}"
        )
    verdict = "within" if result["within_bound"] else "exceeds (values outside the clip range)"
    largest = _number(result["max_abs_error"])
    return f"max |dequant(q) - values| = {largest}, {verdict} scale/2 = {_number(result['bound'])}"
