"""An independent float64 NumPy reference of the quantization contract.

Written from the specification alone (it does not import qarray), step by
step and in plain NumPy float64 with round half to even, so that the tests can
check qarray's integers bit for bit against it on every backend.

Example:
    >>> import numpy
    >>> result = quantize(numpy.array([0.0, 0.5, 1.0, 1.5]), Options(n_bits=2))
    >>> result.qvalues
    array([0, 1, 2, 3])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy

__all__ = [
    "STABILITY_CONST",
    "Options",
    "Parameters",
    "Result",
    "Stats",
    "check_is_uniform_quantized",
    "choose_parameters",
    "clip_range",
    "compute_stats",
    "dequant",
    "quant",
    "quantize",
]

STABILITY_CONST = 1e-6

ZeroPoint = Union[int, float, numpy.ndarray]


@dataclass
class Options:
    """The six quantization options."""

    n_bits: int
    is_signed: bool = False
    is_symmetric: bool = False
    is_qat: bool = False
    is_narrow: bool = False
    is_precomputed_qat: bool = False


@dataclass
class Stats:
    """Calibration statistics: range and sorted unique values rounded to 2 decimals."""

    rmin: numpy.float64
    rmax: numpy.float64
    uvalues: Optional[numpy.ndarray]


@dataclass
class Parameters:
    """Scale, zero point and offset."""

    scale: numpy.float64
    zero_point: ZeroPoint
    offset: int


@dataclass
class Result:
    """Everything the pipeline computes for one array."""

    stats: Stats
    params: Parameters
    qvalues: numpy.ndarray
    values: numpy.ndarray


def compute_stats(values: numpy.ndarray) -> Stats:
    """Return min, max and the sorted unique values rounded to 2 decimals, all in float64."""
    as_float64 = numpy.asarray(values).astype(numpy.float64)
    rmin = numpy.float64(numpy.min(as_float64))
    rmax = numpy.float64(numpy.max(as_float64))
    uvalues = numpy.unique(numpy.round(as_float64, 2))
    return Stats(rmin=rmin, rmax=rmax, uvalues=uvalues)


def check_is_uniform_quantized(uvalues: numpy.ndarray, n_bits: int) -> bool:
    """Return True if the unique values look like a uniform grid (QAT scale inference)."""
    if len(uvalues) > 2**n_bits or len(uvalues) == 1:
        return False
    steps = numpy.unique(numpy.diff(uvalues))
    smallest = steps[0]
    return bool(numpy.allclose(steps, numpy.rint(steps / smallest) * smallest, rtol=1e-5, atol=0.02))


def choose_parameters(
    options: Options, stats: Stats, previous_scale: Optional[float] = None
) -> Parameters:
    """Return the quantization parameters for ``options`` and ``stats``.

    ``previous_scale`` is a scale set before the computation; it is kept only for
    precomputed QAT in the asymmetric case.
    """
    n = options.n_bits
    rmin, rmax = numpy.float64(stats.rmin), numpy.float64(stats.rmax)
    offset = 2 ** (n - 1) if options.is_signed else 0

    if rmax - rmin < STABILITY_CONST:
        if numpy.abs(rmax) < STABILITY_CONST:
            return Parameters(numpy.float64(1.0), int(numpy.rint(-rmin)), 0)
        return Parameters(numpy.float64(rmax), 0, 0)

    if options.is_symmetric:
        largest = numpy.maximum(numpy.abs(rmax), numpy.abs(rmin))
        return Parameters(largest / numpy.float64(2**n - 1 - offset), 0, offset)

    scale = numpy.float64(previous_scale) if options.is_precomputed_qat and previous_scale is not None else None
    if (
        scale is None
        and options.is_qat
        and not options.is_precomputed_qat
        and stats.uvalues is not None
        and len(stats.uvalues) > 1
        and check_is_uniform_quantized(stats.uvalues, n)
    ):
        scale = numpy.float64(numpy.min(numpy.diff(stats.uvalues)))
    if scale is None:
        scale = (rmax - rmin) / numpy.float64(2**n - 1)
    if options.is_qat:
        return Parameters(scale, 0, offset)
    levels = numpy.float64(2**n - 1 - offset)
    zero_point = numpy.round((rmax * numpy.float64(-offset) - rmin * levels) / (rmax - rmin))
    return Parameters(scale, int(zero_point), offset)


def clip_range(options: Options, offset: int, no_clipping: bool = False) -> Optional[Tuple[int, int]]:
    """Return the inclusive range quant clips to, or None when it does not clip."""
    if no_clipping or (options.is_qat and not options.is_precomputed_qat):
        return None
    return -offset + (1 if options.is_narrow else 0), 2**options.n_bits - 1 - offset


def quant(
    values: numpy.ndarray, scale: float, zero_point: ZeroPoint, clip: Optional[Tuple[int, int]]
) -> numpy.ndarray:
    """Return ``rint(values / scale + zero_point)`` in float64, clipped, as int64."""
    as_float64 = numpy.asarray(values).astype(numpy.float64)
    zero_point64 = numpy.asarray(zero_point).astype(numpy.float64)
    rounded = numpy.rint(as_float64 / numpy.float64(scale) + zero_point64)
    if clip is not None:
        rounded = numpy.clip(rounded, numpy.float64(clip[0]), numpy.float64(clip[1]))
    return rounded.astype(numpy.int64)


def dequant(
    qvalues: numpy.ndarray, scale: float, zero_point: ZeroPoint, dtype: type = numpy.float64
) -> numpy.ndarray:
    """Return ``scale * (qvalues - float64(zero_point))`` computed in float64, cast to ``dtype``."""
    as_float64 = numpy.asarray(qvalues).astype(numpy.float64)
    zero_point64 = numpy.asarray(zero_point).astype(numpy.float64)
    return (numpy.float64(scale) * (as_float64 - zero_point64)).astype(dtype)


def quantize(values: numpy.ndarray, options: Options, no_clipping: bool = False) -> Result:
    """Run the whole pipeline: statistics, parameters, quant, dequant.

    Unique values are only used when the options ask for QAT scale inference.
    """
    stats = compute_stats(values)
    if not (options.is_qat and not options.is_precomputed_qat):
        stats = Stats(stats.rmin, stats.rmax, None)
    params = choose_parameters(options, stats)
    qvalues = quant(values, params.scale, params.zero_point, clip_range(options, params.offset, no_clipping))
    return Result(stats, params, qvalues, dequant(qvalues, params.scale, params.zero_point))
