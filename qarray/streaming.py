"""Streaming calibration: fit a quantizer on data that arrives in batches.

:func:`calibrate` folds an iterable of batches (of any array library, on any
device) into one :class:`~qarray.MinMaxQuantizationStats` with
:meth:`~qarray.MinMaxQuantizationStats.update`, then chooses the quantization
parameters once. On device backends the per-batch work stays on the device and
the running range is read back a single time, at the end. The result is the
quantizer one :class:`~qarray.QuantizedArray` would fit on the concatenated
batches.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from .calibration.histogram import check_method, check_percentile
from .core.checks import check_bool, check_n_bits
from .histogram_stats import HistogramQuantizationStats
from .kwargs import fill_from_kwargs
from .options import QuantizationOptions
from .quantizer import UniformQuantizer
from .stats import MinMaxQuantizationStats

__all__ = ["calibrate"]


def calibrate(
    batches: Iterable[Any],
    n_bits: Optional[int] = None,
    options: Optional[QuantizationOptions] = None,
    progress: bool = False,
    nan_policy: str = "raise",
    method: str = "minmax",
    percentile: float = 99.99,
    max_bins: int = 4096,
    **option_kwargs: Any,
) -> UniformQuantizer:
    """Calibrate a uniform quantizer on batches of data and return it, ready to use.

    Each batch is folded into the statistics as it comes (nothing is concatenated or
    kept); unique values, which cost a sort, are only gathered when the options ask
    for QAT scale inference (``is_qat`` and not ``is_precomputed_qat``).

    Args:
        batches: an iterable of floating-point arrays (NumPy, CuPy, Dask, PyTorch, any
            Array API library, or lists of numbers). Generators work: each batch is
            used once. Empty batches are skipped.
        n_bits: the number of bits. Required unless ``options`` is given; when both
            are given, it replaces ``options.n_bits``.
        options: quantization options (copied, never changed).
        progress: show a progress bar (with tqdm when it is installed; silently
            nothing otherwise).
        nan_policy: ``"raise"`` refuses NaN and ±Inf; ``"omit"`` leaves them out.
        method: how the range is chosen: ``"minmax"`` (the exact min and max) or, from
            an exact histogram of the batches (:class:`~qarray.HistogramQuantizationStats`),
            ``"percentile"``, ``"mse"`` or ``"entropy"`` (for these the options' ``n_bits``,
            ``is_signed`` and ``is_symmetric`` are passed on). QAT scale inference needs
            ``"minmax"``.
        percentile: the percentile of ``method="percentile"``, in ``(50, 100]``.
        max_bins: the most histogram bins (histogram methods only).
        option_kwargs: fields of :class:`~qarray.QuantizationOptions` (``is_signed``,
            ``is_symmetric``, ``is_qat``, ``is_narrow``, ``is_precomputed_qat``, and the
            granularity ``axis`` or ``block_size``: per-block ranges are folded batch by
            batch on the device, and the parameters are arrays of the grid).

    Returns:
        A :class:`~qarray.UniformQuantizer` with options, statistics and parameters.

    Raises:
        TypeError: if ``n_bits`` and ``options`` are both missing, a keyword is not an
            option field, or a batch is not floating point.
        ValueError: if there is no non-empty batch, a batch holds NaN/±Inf under
            ``"raise"``, or the options are invalid.

    Example:
        >>> import numpy, qarray
        >>> batches = (numpy.linspace(-1.0, 1.0, 100) * k for k in (0.5, 1.0, 2.0))
        >>> quantizer = qarray.calibrate(batches, n_bits=8)
        >>> float(quantizer.rmin), float(quantizer.rmax)
        (-2.0, 2.0)
        >>> quantizer.quant(numpy.array([-2.0, 0.0, 2.0]))
        array([  0, 128, 255])
    """
    options = _options(n_bits, options, option_kwargs)
    progress = check_bool(progress, "progress")
    with_uvalues = options.is_qat and not options.is_precomputed_qat
    if check_method(method) != "minmax":
        if options.is_granular:
            raise ValueError(
                f"method={method!r} is per tensor only: histogram calibration per channel or per "
                "group is not built; use method='minmax' with axis/block_size"
            )
        return _calibrate_histogram(batches, options, progress, nan_policy, method, percentile, max_bins)
    stats = MinMaxQuantizationStats()
    axis, block_size = options.axis, options.block_size
    with_uvalues = with_uvalues and not options.is_granular
    for batch in _with_progress(batches, progress):
        stats.update(batch, nan_policy=nan_policy, with_uvalues=with_uvalues, axis=axis, block_size=block_size)
    if not stats._has_data():
        raise ValueError("batches must hold at least one non-empty batch to calibrate on")
    quantizer = UniformQuantizer(options, stats)
    # Reading rmin/rmax here is the one read-back of the whole calibration.
    quantizer.compute_quantization_parameters(quantizer.quant_options, quantizer.stats)
    return quantizer


def _calibrate_histogram(
    batches: Iterable[Any],
    options: QuantizationOptions,
    progress: bool,
    nan_policy: str,
    method: str,
    percentile: float,
    max_bins: int,
) -> UniformQuantizer:
    """calibrate() with a range chosen from the exact histogram of the batches."""
    check_percentile(percentile)
    if options.is_qat and not options.is_precomputed_qat:
        raise ValueError(
            f"method={method!r} chooses a clipped range, which QAT scale inference cannot use; "
            "use method='minmax' (or is_precomputed_qat=True)"
        )
    histogram_stats = HistogramQuantizationStats(max_bins)
    for batch in _with_progress(batches, progress):
        histogram_stats.update(batch, nan_policy=nan_policy)
    if histogram_stats.histogram is None:  # the one read-back of the whole calibration
        raise ValueError("batches must hold at least one non-empty batch to calibrate on")
    stats = histogram_stats.to_minmax(
        method,
        percentile=percentile,
        n_bits=options.n_bits,
        is_signed=options.is_signed,
        is_symmetric=options.is_symmetric,
        is_narrow=options.is_narrow,
        is_qat=options.is_qat,
        is_precomputed_qat=options.is_precomputed_qat,
    )
    quantizer = UniformQuantizer(options, stats)
    quantizer.compute_quantization_parameters(quantizer.quant_options, quantizer.stats)
    return quantizer


def _options(
    n_bits: Optional[int], options: Optional[QuantizationOptions], option_kwargs: dict
) -> QuantizationOptions:
    """Return a validated copy of the options, with ``n_bits`` and keyword fields applied."""
    if options is not None and not isinstance(options, QuantizationOptions):
        raise TypeError(f"options must be QuantizationOptions or None, got {type(options).__name__}")
    if options is None:
        if n_bits is None:
            raise TypeError("calibrate needs n_bits (or options with n_bits)")
        options = QuantizationOptions(check_n_bits(n_bits))
    else:
        options = options.quant_options
        if n_bits is not None:
            options.n_bits = check_n_bits(n_bits)
    filled, rest = fill_from_kwargs(options, QuantizationOptions, **option_kwargs)
    if rest:
        raise TypeError(
            f"unexpected keyword argument(s) {', '.join(sorted(rest))}: keyword arguments must "
            "name fields of QuantizationOptions"
        )
    filled.validate()
    return filled


def _with_progress(batches: Iterable[Any], progress: bool) -> Iterable[Any]:
    """Wrap ``batches`` in a tqdm progress bar when asked and tqdm is installed."""
    if not progress:
        return batches
    try:
        from tqdm import tqdm
    except ImportError:
        return batches
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    return tqdm(batches, total=total, desc="calibrating", unit="batch")
