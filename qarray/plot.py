"""Plots of quantization with matplotlib: value histograms on the grid, errors, bit sweeps,
and the parameters of per-channel and per-group quantization, block by block.

Small helpers for notebooks and reports. matplotlib is imported when a
function is called, never by ``import qarray`` (install it with the ``plot``
extra). Arrays of any library are accepted; they are copied to the host for
plotting, so these helpers are meant for arrays that fit a figure, not for
data sets too large for host memory.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import numpy

from .core.namespace import as_array, to_numpy
from .histogram_stats import HistogramQuantizationStats
from .options import QuantizationOptions
from .params import UniformQuantizationParameters
from .primitives import block_minmax
from .quantized_array import QuantizedArray
from .quantizer import UniformQuantizer

__all__ = ["plot_block_parameters", "plot_error", "plot_error_vs_bits", "plot_grid", "plot_histogram"]


def _axes(ax: Any) -> Any:
    """Return ``ax``, or new axes of a new figure when it is None."""
    if ax is not None:
        return ax
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            f"qarray.plot needs matplotlib (pip install 'qarray[plot]'): {error}"
        ) from error
    _, ax = plt.subplots(figsize=(7, 3.5))
    return ax


def _host(values: Any, argument: str) -> numpy.ndarray:
    """``values`` copied to the host as float64, in their shape (per-block grids need it)."""
    return numpy.asarray(to_numpy(as_array(values, argument)), dtype=numpy.float64)


def _fitted(quantizer: Any, call: str) -> UniformQuantizer:
    """The fitted quantizer of ``quantizer`` (a UniformQuantizer, or a QuantizedArray's).

    Raises:
        TypeError: for anything else, showing ``call`` (the order of the arguments).
        ValueError: if the quantizer has no parameters yet.
    """
    found = quantizer.quantizer if isinstance(quantizer, QuantizedArray) else quantizer
    if not isinstance(found, UniformQuantizer):
        raise TypeError(
            f"quantizer must be a UniformQuantizer or a QuantizedArray, got {type(quantizer).__name__} "
            f"(the arguments are {call})"
        )
    if found.scale is None:
        raise ValueError("quantizer has no parameters to plot: calibrate it first")
    return found


def _block(quantizer: UniformQuantizer, host: numpy.ndarray, block: Any) -> tuple:
    """Block ``block`` of a per-block quantizer: its values and a per-tensor quantizer with its parameters.

    Blocks are numbered in row-major order over the parameter grid. Per-block
    quantization equals per-tensor quantization of each block, so the block's own
    quantizer gives exactly its grid. A per-tensor quantizer is its only block, 0.

    Returns:
        ``(values of the block, quantizer of the block, description for a title)``.
    """
    if isinstance(block, bool) or not isinstance(block, (int, numpy.integer)):
        raise TypeError(f"block must be an int (a block's row-major index), got {type(block).__name__}")
    if not quantizer.is_per_block:
        if block != 0:
            raise ValueError(f"block must be 0 for a per-tensor quantizer (one block), got {block}")
        return host, quantizer, ""
    extent = quantizer.block_extent(host.shape)
    scale = numpy.asarray(to_numpy(quantizer.scale))
    if not 0 <= block < scale.size:
        raise ValueError(f"block must be in [0, {scale.size}) for the parameter grid {scale.shape}, got {block}")
    index = numpy.unravel_index(int(block), scale.shape)
    window = tuple(slice(i * e, (i + 1) * e) for i, e in zip(index, extent))

    def of_block(parameter: Any) -> Any:
        grid = numpy.asarray(to_numpy(parameter) if hasattr(parameter, "shape") else parameter)
        return (grid[index] if grid.ndim else grid).item()

    options = quantizer.quant_options
    options.axis, options.block_size = None, None
    params = UniformQuantizationParameters(
        numpy.float64(of_block(quantizer.scale)), of_block(quantizer.zero_point), of_block(quantizer.offset)
    )
    own = UniformQuantizer(options, params=params, no_clipping=quantizer.no_clipping)
    return host[window], own, f"block {int(block)} of {scale.size} (grid {scale.shape}), "


def plot_grid(
    values: Any,
    quantizer: Any,
    ax: Any = None,
    bins: int = 100,
    max_lines: int = 64,
    block: int = 0,
) -> Any:
    """Plot the histogram of ``values`` with the quantizer's grid of real values over it.

    The grid is the de-quantized value of every integer of the clip range (the
    calibration range when the quantizer does not clip); with more than
    ``max_lines`` levels only the two ends are drawn. With per-channel or
    per-group parameters every block has its own grid: the plot shows block
    ``block`` (row-major over the parameter grid), its values and its grid, and
    the title names it.

    Args:
        values: real values of any array library.
        quantizer: a fitted :class:`~qarray.UniformQuantizer` (or a QuantizedArray,
            whose quantizer is used).
        ax: matplotlib axes to draw on (new ones when None).
        bins: the number of histogram bins.
        max_lines: the most grid lines drawn one by one.
        block: the block drawn for a per-block quantizer (0 for a per-tensor one).

    Returns:
        The matplotlib axes.

    Raises:
        TypeError: if ``quantizer`` is not a quantizer (the values come first) or
            ``block`` is not an int.
        ValueError: if the quantizer has no parameters, ``values``' shape does not
            give its parameter grid, or ``block`` is not one of its blocks.

    Example:
        >>> import numpy, qarray
        >>> from qarray.plot import plot_grid
        >>> qa = qarray.QuantizedArray(3, numpy.random.default_rng(0).normal(size=1000))
        >>> ax = plot_grid(qa.values, qa.quantizer)  # doctest: +SKIP
    """
    quantizer = _fitted(quantizer, "plot_grid(values, quantizer)")
    host, quantizer, which = _block(quantizer, _host(values, "values"), block)
    host = host.reshape(-1)
    ax = _axes(ax)
    ax.hist(host, bins=bins, color="tab:blue", alpha=0.7, label="values")
    levels, count = _grid(quantizer, host)
    shown = levels if levels.size <= max_lines else levels[[0, -1]]
    for index, level in enumerate(shown):
        ax.axvline(level, color="tab:red", linewidth=0.8, alpha=0.8, label="grid" if index == 0 else None)
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax.set_title(f"{which}{quantizer.n_bits}-bit grid: {count} levels, scale {float(quantizer.scale):.4g}")
    ax.legend(loc="upper right")
    return ax


def plot_error(values: Any, quantizer: Any, ax: Any = None, max_points: int = 20000) -> Any:
    """Plot the round-trip error ``dequant(quant(values)) - values`` of each element.

    Args:
        values: real values of any array library.
        quantizer: a fitted :class:`~qarray.UniformQuantizer` (or a QuantizedArray).
        ax: matplotlib axes to draw on (new ones when None).
        max_points: plot at most this many elements (evenly spaced), to keep figures light.

    Returns:
        The matplotlib axes (the ``±scale/2`` bound is drawn as dashed lines; with
        per-channel or per-group parameters, the largest block's ``±scale/2``; each
        block's own bound is drawn by :func:`plot_block_parameters`).

    Raises:
        TypeError: if ``quantizer`` is not a quantizer (the values come first).
        ValueError: if the quantizer has no parameters, or ``values``' shape does not
            give its parameter grid.
    """
    quantizer = _fitted(quantizer, "plot_error(values, quantizer)")
    shaped = _host(values, "values")
    restored = numpy.asarray(to_numpy(quantizer.dequant(quantizer.quant(shaped))), dtype=numpy.float64)
    host = shaped.reshape(-1)
    error = restored.reshape(-1) - host
    step = max(1, host.size // max(1, max_points))
    ax = _axes(ax)
    ax.plot(host[::step], error[::step], ".", markersize=2, alpha=0.6, label="error")
    bound = float(numpy.max(numpy.abs(to_numpy(quantizer.scale)))) / 2
    label = "±largest block scale/2" if quantizer.is_per_block else "±scale/2"
    for sign in (-1, 1):
        ax.axhline(sign * bound, color="tab:red", linestyle="--", linewidth=1, label=label if sign > 0 else None)
    ax.set_xlabel("value")
    ax.set_ylabel("dequant(quant(x)) - x")
    ax.set_title(f"round-trip error, {quantizer.n_bits} bits")
    ax.legend(loc="upper right")
    return ax


def plot_error_vs_bits(
    values: Any,
    n_bits: Iterable[int] = range(2, 17),
    ax: Any = None,
    **option_kwargs: Any,
) -> Any:
    """Plot the largest and the RMS round-trip error against the number of bits.

    Each width gets its own :class:`~qarray.QuantizedArray` on ``values`` (with the
    given option fields, e.g. ``is_signed=True, is_symmetric=True``).

    Args:
        values: the values to quantize (an array of any Array API library; copied to the host).
        n_bits: the widths to try.
        ax: matplotlib axes to draw on (new ones when None).
        **option_kwargs: further option fields for each :class:`~qarray.QuantizedArray`.

    Returns:
        The matplotlib axes (log scale; the errors halve with each extra bit).

    Raises:
        ImportError: if matplotlib is not installed (and no ``ax`` is given).
        TypeError, ValueError: if ``values`` or an option field is refused by
            :class:`~qarray.QuantizedArray`.
    """
    host = _host(values, "values")
    widths: Sequence[int] = list(n_bits)
    largest, rms = [], []
    for width in widths:
        qa = QuantizedArray(width, host, **option_kwargs)
        error = numpy.asarray(to_numpy(qa.quantizer.dequant(qa.qvalues))) - host
        largest.append(float(numpy.max(numpy.abs(error))))
        rms.append(float(numpy.sqrt(numpy.mean(error**2))))
    ax = _axes(ax)
    ax.semilogy(widths, largest, "o-", label="max |error|")
    ax.semilogy(widths, rms, "s-", label="RMS error")
    ax.set_xlabel("n_bits")
    ax.set_ylabel("error")
    ax.set_title("round-trip error vs number of bits")
    ax.legend()
    return ax


def plot_histogram(
    stats: Any,
    n_bits: int = 8,
    methods: Sequence[str] = ("minmax", "percentile", "mse", "entropy"),
    ax: Any = None,
    max_lines: int = 64,
    log: bool = True,
    **options: Any,
) -> Any:
    """Plot a calibration histogram, the range each method chooses, and the grid of the first.

    Draws the exact dyadic histogram of a :class:`~qarray.HistogramQuantizationStats`
    (nothing is recomputed from data), a pair of vertical lines for the range of each
    of ``methods``, and the de-quantized levels of the ``n_bits`` quantizer fitted on
    the first method's range (only its two ends with more than ``max_lines`` levels).

    Args:
        stats: a HistogramQuantizationStats holding data.
        n_bits: the quantizer's width (also passed to ``mse`` and ``entropy``).
        methods: the calibration methods whose ranges are drawn.
        ax: matplotlib axes to draw on (new ones when None).
        max_lines: the most grid lines drawn one by one.
        log: a logarithmic count axis (heavy tails stay visible).
        options: ``percentile``, ``is_signed``, ``is_symmetric`` for the ranges and grid.

    Returns:
        The matplotlib axes.

    Raises:
        TypeError: if ``stats`` is not a HistogramQuantizationStats.
        ValueError: if it holds no data.

    Example:
        >>> import numpy, qarray
        >>> from qarray.plot import plot_histogram
        >>> stats = qarray.HistogramQuantizationStats()
        >>> stats.update(numpy.random.default_rng(0).standard_t(2, size=10_000))
        >>> ax = plot_histogram(stats, n_bits=4)  # doctest: +SKIP
    """
    if not isinstance(stats, HistogramQuantizationStats):
        raise TypeError(f"stats must be a HistogramQuantizationStats, got {type(stats).__name__}")
    hist = stats.histogram
    if hist is None:
        raise ValueError("stats hold no data to plot: update() them first")
    is_signed = bool(options.get("is_signed", False) or options.get("is_symmetric", False))
    is_symmetric = bool(options.get("is_symmetric", False))
    percentile = options.get("percentile", 99.99)
    ax = _axes(ax)
    edges = hist.edges()
    clipped_edges = numpy.clip(edges, float(hist.vmin), float(hist.vmax))
    ax.stairs(hist.counts, clipped_edges, fill=True, color="tab:blue", alpha=0.5, label="counts")
    if log:
        ax.set_yscale("log")
    colours = ("black", "tab:orange", "tab:green", "tab:purple", "tab:brown")
    ranges = {}
    for index, method in enumerate(methods):
        low, high = stats.range(
            method, percentile=percentile, n_bits=n_bits, is_signed=is_signed, is_symmetric=is_symmetric
        )
        ranges[method] = (low, high)
        colour = colours[index % len(colours)]
        ax.axvline(low, color=colour, linestyle="--", linewidth=1.2, label=f"{method} [{low:.4g}, {high:.4g}]")
        ax.axvline(high, color=colour, linestyle="--", linewidth=1.2)
    if methods:
        first = methods[0]
        grid_options = QuantizationOptions(n_bits, is_signed=is_signed, is_symmetric=is_symmetric)
        minmax = stats.to_minmax(
            first, percentile=percentile, n_bits=n_bits, is_signed=is_signed, is_symmetric=is_symmetric
        )
        quantizer = UniformQuantizer(grid_options, minmax)
        quantizer.compute_quantization_parameters(grid_options, quantizer.stats)
        levels, count = _grid(quantizer, numpy.asarray(ranges[first], dtype=numpy.float64))
        shown = levels if levels.size <= max_lines else levels[[0, -1]]
        for index, level in enumerate(shown):
            label = f"{first} grid ({count} levels)" if index == 0 else None
            ax.axvline(level, color="tab:red", linewidth=0.6, alpha=0.5, label=label)
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax.set_title(f"histogram of {hist.total} values, bin width 2**{hist.k}; {n_bits}-bit ranges")
    ax.legend(loc="upper right", fontsize="small")
    return ax


def plot_block_parameters(
    quantizer: Any,
    values: Any = None,
    ax: Any = None,
    max_points: int = 20000,
) -> Any:
    """Plot each block's ``scale / 2`` and, given values, each block's largest round-trip error.

    With per-channel (``axis=``) or per-group (``block_size=``) quantization every block
    has its own scale; this draws ``scale / 2``, the bound of the round-trip error, for
    each block of the parameter grid in row-major order, and with ``values`` the
    largest ``|dequant(quant(x)) - x|`` of each block as dots: each dot lies on or below
    its block's bound, unless values fall outside the clip range the quantizer was
    fitted for. A per-tensor quantizer is drawn as one block. The scales (and values)
    are copied to the host.

    Args:
        quantizer: a fitted :class:`~qarray.UniformQuantizer`, or a QuantizedArray
            (whose quantizer is used, and whose values when ``values`` is None).
        values: real values whose shape gives the quantizer's parameter grid (any
            array library), or None to draw the scales only.
        ax: matplotlib axes to draw on (new ones when None).
        max_points: draw at most this many blocks (evenly spaced), to keep figures light.

    Returns:
        The matplotlib axes (logarithmic scale axis when every scale is positive).

    Raises:
        TypeError: if ``quantizer`` is not a quantizer (it comes first, the values second).
        ValueError: if the quantizer has no parameters, or ``values``' shape does not
            give its parameter grid.

    Example:
        >>> import numpy, qarray
        >>> from qarray.plot import plot_block_parameters
        >>> w = numpy.random.default_rng(0).normal(size=(64, 256)) * numpy.geomspace(0.01, 10, 64)[:, None]
        >>> qa = qarray.QuantizedArray(4, w, block_size=32)
        >>> ax = plot_block_parameters(qa)  # doctest: +SKIP
    """
    if values is None and isinstance(quantizer, QuantizedArray):
        values = quantizer.values
    quantizer = _fitted(quantizer, "plot_block_parameters(quantizer, values)")
    scale = numpy.asarray(to_numpy(quantizer.scale), dtype=numpy.float64)
    grid = scale.shape
    half = numpy.abs(scale.reshape(-1)) / 2
    step = max(1, half.size // max(1, max_points))
    index = numpy.arange(half.size)[::step]
    ax = _axes(ax)
    ax.plot(index, half[::step], "-", color="tab:red", linewidth=1, label="scale/2 (error bound)")
    if values is not None:
        host = numpy.asarray(to_numpy(_as_values(values)), dtype=numpy.float64)
        restored = numpy.asarray(to_numpy(quantizer.dequant(quantizer.quant(host))), dtype=numpy.float64)
        extent = quantizer.block_extent(host.shape) if scale.ndim else tuple(max(1, n) for n in host.shape)
        _, largest = block_minmax(numpy.abs(restored - host), extent)
        largest = numpy.asarray(largest).reshape(-1)
        ax.plot(index, largest[::step], ".", color="tab:blue", markersize=3, label="max |error| of the block")
    if half.size and numpy.all(half > 0):
        ax.set_yscale("log")
    shown = "(" + ", ".join(str(n) for n in grid) + ("," if len(grid) == 1 else "") + ")"
    ax.set_xlabel(f"block (row-major over the grid {shown})")
    ax.set_ylabel("real units")
    ax.set_title(f"{quantizer.n_bits} bits: {half.size} block(s), scale/2 from {half.min():.3g} to {half.max():.3g}")
    ax.legend(loc="best")
    return ax


def _as_values(values: Any) -> Any:

    return as_array(values, "values", kind="float")


def _grid(quantizer: Any, host: numpy.ndarray) -> tuple:
    """The de-quantized levels of the quantizer's range (its clip range, else the data's),
    and how many integers that range holds."""
    clip: Optional[tuple] = quantizer.clip_range()
    if clip is None:
        q = numpy.asarray(to_numpy(quantizer.quant(host)))
        low, high = int(q.min()), int(q.max())
    else:
        low, high = clip
    count = high - low + 1
    if count > 1 << 16:  # wide grids: only the ends matter for a picture
        integers = numpy.array([low, high], dtype=numpy.int64)
    else:
        integers = numpy.arange(low, high + 1, dtype=numpy.int64)
    return numpy.asarray(to_numpy(quantizer.dequant(integers)), dtype=numpy.float64), count
