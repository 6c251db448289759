"""Inputs the CUDA emulation tests share, and where their integer results are defined."""

from __future__ import annotations

from typing import Tuple

import numpy

__all__ = ["clip_for", "defined_casts", "float32_subnormals"]


def float32_subnormals(count: int, seed: int) -> numpy.ndarray:
    """Subnormal float32 values of both signs, the smallest and largest included."""
    rng = numpy.random.default_rng(seed)
    bits = rng.integers(1, 0x800000, count, dtype=numpy.uint32)
    bits[:4] = [1, 0x7FFFFF, 2, 0x400000]
    bits[count // 2 :] |= numpy.uint32(0x80000000)
    return bits.view(numpy.float32)


def clip_for(dtype: str) -> Tuple[int, int]:
    """A clipping range inside ``dtype`` (at most 53 bits wide, as qarray produces)."""
    info = numpy.iinfo(dtype)
    bits = min(info.bits, 53)
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if info.min < 0 else (0, 2**bits - 1)


def defined_casts(rounded: numpy.ndarray, dtype: str) -> numpy.ndarray:
    """Where the float64 ``rounded`` casts to ``dtype`` without overflow (a defined cast: NaN and
    out-of-range casts are undefined in C++ and unspecified in qarray)."""
    info = numpy.iinfo(dtype)
    with numpy.errstate(invalid="ignore"):
        return numpy.isfinite(rounded) & (rounded >= float(info.min)) & (rounded < float(info.max) + 1.0)
