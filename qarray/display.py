"""Rich display of qarray objects: the summaries Jupyter shows, as HTML or text.

The five public classes get a ``_repr_html_`` that calls :func:`html_repr`;
:func:`summary` gives the same rows as plain text. Each summary says what the
object is in quantization terms: number of bits, mode (unsigned, signed,
symmetric, narrow, QAT), scale, zero point, clip range, calibration range,
and for arrays their shape, dtype, backend and device. A QuantizedArray also
shows its round-trip error, ``max |dequant(q) - values|`` against the bound
``scale / 2``: computed on the array's device as one 0-d reduction, read back
once (never a host copy of the array). Displays are read-back boundaries: they
may read calibration statistics and that one number, and nothing else. Lazy
(Dask) arrays are not computed by a display; :func:`error_summary` computes
their error on request.
"""

from __future__ import annotations

import html
from typing import Any, Dict, List, Optional, Tuple

import numpy

__all__ = ["error_summary", "html_repr", "mode_name", "summary", "summary_rows"]

Row = Tuple[str, str]


def mode_name(options: Any) -> str:
    """Return a short name for the kind of quantization ``options`` ask for.

    Example:
        >>> from qarray import QuantizationOptions
        >>> mode_name(QuantizationOptions(8, is_signed=True, is_symmetric=True))
        'signed symmetric'
    """
    if options is None:
        return "unset"
    name = "signed" if options.is_signed else "unsigned"
    if options.is_symmetric:
        name += " symmetric"
    if options.is_qat:
        name += " QAT (precomputed)" if options.is_precomputed_qat else " QAT (inferred scale)"
    if options.is_narrow:
        name += ", narrow"
    return name


def error_summary(array: Any) -> Dict[str, Any]:
    """Return the round-trip error of a QuantizedArray: ``max |dequant(q) - values|``.

    The maximum is reduced on the array's device (a lazy array is computed, for this
    one number) and read back once.

    Returns:
        A dict with ``max_abs_error`` (float, or None for an empty array), ``bound``
        (``scale / 2``) and ``within_bound`` (bool, or None for an empty array). Values
        outside the clip range (parameters fitted on other data) legitimately exceed
        the bound.

    Raises:
        ValueError: if the array holds no values or has no parameters.

    Example:
        >>> import numpy
        >>> from qarray import QuantizedArray
        >>> error_summary(QuantizedArray(4, numpy.linspace(0.0, 1.5, 7)))["within_bound"]
        True
    """
    if getattr(array, "values", None) is None or getattr(array, "qvalues", None) is None:
        raise ValueError("array must be a QuantizedArray holding values and qvalues")
    quantizer = array.quantizer
    bound = abs(float(quantizer.scale)) / 2.0
    backend = array.backend
    if backend.size(array.values) == 0:
        return {"max_abs_error": None, "bound": bound, "within_bound": None}
    xp = backend.xp
    restored = quantizer.dequant(array.qvalues)
    error = xp.max(xp.abs(restored - xp.astype(array.values, xp.float64)))
    largest = float(numpy.asarray(backend.to_numpy(error)))
    # A few ulps of slack: the difference of two rounded float64 numbers of this magnitude.
    magnitudes = [1.0, abs(float(quantizer.scale)) * 2.0**quantizer.n_bits]
    magnitudes += [abs(float(v)) for v in (quantizer.stats._rmin, quantizer.stats._rmax) if v is not None]
    slack = 8 * numpy.finfo(numpy.float64).eps * max(magnitudes)
    return {"max_abs_error": largest, "bound": bound, "within_bound": bool(largest <= bound + slack)}


def summary_rows(obj: Any) -> List[Row]:
    """Return the ``(label, text)`` rows that describe a qarray object.

    Raises:
        TypeError: if ``obj`` is not one of qarray's five classes.
    """
    from .options import QuantizationOptions
    from .params import UniformQuantizationParameters
    from .quantized_array import QuantizedArray
    from .quantizer import UniformQuantizer
    from .stats import MinMaxQuantizationStats

    if isinstance(obj, QuantizedArray):
        return _array_rows(obj)
    if isinstance(obj, UniformQuantizer):
        return _quantizer_rows(obj)
    if isinstance(obj, QuantizationOptions):
        return _options_rows(obj)
    if isinstance(obj, MinMaxQuantizationStats):
        return _stats_rows(obj)
    from .histogram_stats import HistogramQuantizationStats

    if isinstance(obj, HistogramQuantizationStats):
        return _histogram_rows(obj)
    if isinstance(obj, UniformQuantizationParameters):
        return _params_rows(obj)
    raise TypeError(f"obj must be a qarray object (QuantizedArray, UniformQuantizer, ...), got {type(obj).__name__}")


def summary(obj: Any) -> str:
    """Return a plain-text, multi-line summary of a qarray object (the rows of its display).

    Example:
        >>> from qarray import QuantizationOptions
        >>> print(summary(QuantizationOptions(4)))
        QuantizationOptions
          n_bits         4
          mode           unsigned
          integer range  [0, 15]
    """
    rows = summary_rows(obj)
    width = max((len(label) for label, _ in rows), default=0)
    lines = [type(obj).__name__] + [f"  {label.ljust(width)}  {text}" for label, text in rows]
    return "\n".join(lines)


def html_repr(obj: Any) -> str:
    """Return the HTML that Jupyter shows for a qarray object (a titled two-column table)."""
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
    return rows


def _stats_rows(stats: Any) -> List[Row]:
    try:
        rmin, rmax = stats.rmin, stats.rmax
    except ValueError as error:  # pending streaming batches held NaN/±Inf
        return [("calibration range", f"invalid: {error}")]
    if rmin is None or rmax is None:
        rows = [("calibration range", "not calibrated")]
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


def _params_rows(params: Any) -> List[Row]:
    return [
        ("scale", _number(params.scale)),
        ("zero point", _zero_point_text(params.zero_point)),
        ("offset", "None" if params.offset is None else str(params.offset)),
    ]


def _quantizer_rows(quantizer: Any) -> List[Row]:
    options = quantizer.options
    if options is None:
        return [("options", "unset")]
    rows = [("n_bits", str(options.n_bits)), ("mode", mode_name(options))]
    rows += _params_rows(quantizer.params)
    rows.append(("clip range", _clip_text(quantizer)))
    rows += _stats_rows(quantizer.stats)
    return rows


def _array_rows(array: Any) -> List[Row]:
    rows = _quantizer_rows(array.quantizer)
    if array.values is None and array.qvalues is None:
        return rows + [("values", "None")]
    backend = array.backend
    reference = array.values if array.values is not None else array.qvalues
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


# -- formatting helpers ---------------------------------------------------------------------


def _number(value: Any) -> str:
    if value is None:
        return "None"
    return f"{float(value):.6g}"


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
    text = f"[{clip[0]}, {clip[1]}]"
    zero_point = quantizer.zero_point
    if quantizer.scale is not None and zero_point is not None and numpy.ndim(zero_point) == 0:
        scale, zero = float(quantizer.scale), float(zero_point)
        text += f" = reals [{_number(scale * (clip[0] - zero))}, {_number(scale * (clip[1] - zero))}]"
    return text


def _shape_text(shape: Any) -> str:
    return "(" + ", ".join("?" if extent is None or extent != extent else str(int(extent)) for extent in shape) + ("," if len(shape) == 1 else "") + ")"


def _dtype_text(array: Any) -> str:
    return "None" if array is None else str(array.dtype)


def _device_text(backend: Any, array: Any) -> str:
    from ._namespace import is_lazy

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
    from ._namespace import is_lazy

    if not is_lazy(array):
        return None
    chunk_type = type(getattr(array, "_meta", None))
    library = chunk_type.__module__.split(".")[0]
    blocks = int(numpy.prod(array.numblocks)) if array.numblocks else 1
    largest = tuple(max(sizes) if sizes else 0 for sizes in array.chunks)
    return f"{blocks} block(s) of {library}.{chunk_type.__name__}, up to {_shape_text(largest)}"


def _error_text(array: Any) -> str:
    from ._namespace import is_lazy

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
    verdict = "within" if result["within_bound"] else "exceeds (values outside the clip range)"
    return f"max |dequant(q) - values| = {_number(result['max_abs_error'])}, {verdict} scale/2 = {_number(result['bound'])}"
