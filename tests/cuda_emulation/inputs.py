"""Inputs the CUDA emulation tests share."""

from __future__ import annotations

import numpy

__all__ = ["float32_subnormals"]


def float32_subnormals(count: int, seed: int) -> numpy.ndarray:
    """Subnormal float32 values of both signs, the smallest and largest included."""
    rng = numpy.random.default_rng(seed)
    bits = rng.integers(1, 0x800000, count, dtype=numpy.uint32)
    bits[:4] = [1, 0x7FFFFF, 2, 0x400000]
    bits[count // 2 :] |= numpy.uint32(0x80000000)
    return bits.view(numpy.float32)
