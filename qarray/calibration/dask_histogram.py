"""Dask histograms: one histogram per chunk, merged in a lazy tree reduction.

Each chunk is counted by its own library's backend (the fused NumPy/Numba or
CuPy kernels) into an exact dyadic histogram on the worker; pairs of
histograms are merged level by level (:func:`qarray.calibration.histogram.merge` is exact,
so the tree's shape does not matter). Only the histograms, ``max_bins``
counts each, travel; the data never leaves its chunk. Nothing is computed until
:func:`compute_histogram` is called.

This module imports Dask; it is only imported when a Dask array is given to
:class:`~qarray.HistogramQuantizationStats`.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

from .histogram import histogram, merge

__all__ = ["compute_histogram", "lazy_histogram", "lazy_merge"]

FAN_IN = 8
"""Histograms merged together by one task of the tree reduction."""


def lazy_histogram(values: Any, max_bins: int, omit_nan: bool) -> Any:
    """Return a ``dask.delayed`` Histogram (or None) of a Dask array: per chunk, then a tree.

    Under ``omit_nan=False`` a chunk holding NaN or ±Inf raises ``ValueError`` when the
    result is computed.

    Example:
        >>> import numpy, dask.array
        >>> values = dask.array.from_array(numpy.arange(10.0), chunks=3)
        >>> compute_histogram(lazy_histogram(values, 16, False)).total
        10
    """
    import dask

    blocks = values.to_delayed().ravel().tolist()
    level: List[Any] = [dask.delayed(_chunk_histogram)(block, max_bins, omit_nan) for block in blocks]
    while len(level) > 1:
        level = [dask.delayed(_merge_many)(level[start : start + FAN_IN]) for start in range(0, len(level), FAN_IN)]
    return level[0]


def lazy_merge(parts: Sequence[Any]) -> Any:
    """Return the lazy merge of delayed histograms (one task over all of them)."""
    import dask

    return dask.delayed(_merge_many)(list(parts))


def compute_histogram(delayed: Any) -> Any:
    """Compute a delayed histogram (one ``dask.compute``) and return it (a Histogram or None)."""
    import dask

    (result,) = dask.compute(delayed)
    return result


def _chunk_histogram(block: Any, max_bins: int, omit_nan: bool) -> Any:

    return histogram(block, max_bins, nan_policy="omit" if omit_nan else "raise")


def _merge_many(parts: List[Optional[Any]]) -> Any:

    result = None
    for part in parts:
        result = merge(result, part)
    return result
