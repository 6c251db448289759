"""Optional compiled kernels for the NumPy backend, built with Numba when it is installed.

The NumPy backend calls these for large, C-contiguous, native-endian float32 /
float64 input (and integer input for de-quantization); everything else takes
the blocked NumPy path, which is also the fallback when Numba is missing. Both
paths run the same float64 operation sequence (``x / scale`` by true division,
``+ zero_point``, round half to even, clip, cast) and give the same integers,
bit for bit; the tests compare them.

How the kernels are built and run:

* Numba is imported, and the kernels compiled, on first use (the first array
  large enough for them), never by ``import qarray``; a lock makes that first
  build thread-safe, and Numba's own compiler lock serialises compiling each new
  dtype combination, also when several threads ask for it at once. ``cache=True`` keeps the machine
  code on disk, so later processes load it in milliseconds.
* Fast-math is off: every operation rounds as IEEE float64 does in NumPy, and
  ``numpy.rint`` compiles to the ``rint`` instruction, which rounds half to even.
* Each kernel is a sequential loop the compiler vectorises (SIMD); it releases
  the GIL, and large arrays are split into chunks run on a small thread pool,
  one thread per available core (see :mod:`qarray.backends._parallel`). Chunks
  write disjoint parts of the output and return their counts, so results do not
  depend on the scheduling. (Numba's own ``prange`` would compile every dtype
  combination several times more slowly, for no speed gain here.)
* Minimum and maximum are computed on the integer images of the floats (a
  monotone bit mapping), which vectorise without fast-math: any NaN makes both
  results NaN, as ``numpy.min``/``numpy.max`` do. The one difference from NumPy:
  when the extreme is a zero and both signed zeros occur, NumPy may return
  either sign (it depends on the order and its SIMD code); here min returns
  ``-0.0`` and max ``+0.0``. Both compare equal and give the same parameters.

Set the environment variable ``QARRAY_DISABLE_NUMBA=1`` (read at each call) to
force the NumPy fallback even when Numba is installed. Install Numba with the
``fast`` extra: ``pip install "qarray[fast]"``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from typing import Any, Optional, Tuple

import numpy

from . import _parallel

__all__ = [
    "DISABLE_ENV",
    "MIN_ELEMENTS",
    "available",
    "dequantize",
    "minmax",
    "quantize",
    "supported_float",
    "supported_integer",
]

DISABLE_ENV = "QARRAY_DISABLE_NUMBA"
"""Environment variable: set it to ``1`` (or any value but ``0``/empty) to disable Numba."""

MIN_ELEMENTS = 1 << 15
"""Arrays smaller than this take the NumPy path (the call overhead would dominate)."""

_FLOAT_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
_INTEGER_DTYPES = tuple(
    numpy.dtype(name)
    for name in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
)

_lock = threading.Lock()
_state: dict = {"importable": None, "kernels": None}


# -- availability ----------------------------------------------------------------------------


def available() -> bool:
    """Return True if the compiled kernels can be used: Numba importable and not disabled.

    Reads ``QARRAY_DISABLE_NUMBA`` each time. The first call that finds Numba
    installed imports it (that is, the first large array; never ``import qarray``);
    if the import fails, a ``RuntimeWarning`` says why and the NumPy path is used.

    Example:
        >>> isinstance(available(), bool)
        True
    """
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return False
    if _state["kernels"] is not None:
        return True
    if _state["importable"] is False:
        return False
    return _load() is not None


def supported_float(array: numpy.ndarray) -> bool:
    """Return True if ``array`` can be the input of :func:`minmax` and :func:`quantize`."""
    return array.dtype in _FLOAT_DTYPES and array.dtype.isnative and array.flags.c_contiguous


def supported_integer(array: numpy.ndarray) -> bool:
    """Return True if ``array`` can be the input of :func:`dequantize`."""
    return array.dtype in _INTEGER_DTYPES and array.dtype.isnative and array.flags.c_contiguous


# -- the kernels, as plain Python (compiled by _kernels) --------------------------------------
# Each works on a 1-d C-contiguous chunk and indexes it from 0, which lets the compiler
# prove the indices non-negative and vectorise the loop.


def _minmax_keys(bits: Any, flip: int, magnitude: int) -> Tuple[int, int, int]:
    """Smallest and largest order key, and the largest magnitude, of float bit patterns.

    ``key = bits ^ ((bits >> 63) & flip)`` orders the integer images of non-NaN floats
    as the floats are ordered; a magnitude above the infinity pattern is a NaN.
    """
    low = numpy.int64(0x7FFFFFFFFFFFFFFF)
    high = numpy.int64(-0x7FFFFFFFFFFFFFFF - 1)
    largest = numpy.int64(0)
    for i in range(bits.shape[0]):
        word = numpy.int64(bits[i])
        key = word ^ ((word >> 63) & flip)
        low = min(low, key)
        high = max(high, key)
        largest = max(largest, word & magnitude)
    return low, high, largest


def _quantize_clip(
    source: Any, target: Any, scale: float, zero_point: float, low: float, high: float
) -> int:
    """``target = clip(rint(source / scale + zero_point), low, high)``; return the non-finite count."""
    nonfinite = 0
    for i in range(source.shape[0]):
        value = numpy.float64(source[i])
        nonfinite += numpy.int64(not (abs(value) < numpy.inf))
        rounded = numpy.rint(value / scale + zero_point)
        rounded = low if rounded < low else rounded
        rounded = high if rounded > high else rounded
        target[i] = rounded
    return nonfinite


def _quantize_fit(
    source: Any, target: Any, scale: float, zero_point: float, low: float, high: float
) -> Tuple[int, int]:
    """``target = rint(source / scale + zero_point)``; count non-finite input and results
    outside ``[low, high]`` (NaN counts as outside)."""
    nonfinite = 0
    outside = 0
    for i in range(source.shape[0]):
        value = numpy.float64(source[i])
        nonfinite += numpy.int64(not (abs(value) < numpy.inf))
        rounded = numpy.rint(value / scale + zero_point)
        outside += numpy.int64(not ((rounded >= low) & (rounded <= high)))
        target[i] = rounded
    return nonfinite, outside


def _dequantize(source: Any, target: Any, scale: float, zero_point: float) -> None:
    """``target = scale * (float64(source) - zero_point)``, cast to target's dtype."""
    for i in range(source.shape[0]):
        target[i] = scale * (numpy.float64(source[i]) - zero_point)


class _Kernels:
    """The compiled dispatchers (built once, by :func:`_kernels`)."""

    def __init__(self, numba: Any) -> None:
        # error_model="numpy": division follows IEEE (no ZeroDivisionError check, which
        # would block vectorisation); fastmath stays off so every operation rounds exactly.
        jit = numba.njit(cache=True, nogil=True, error_model="numpy")
        self.minmax_keys = jit(_minmax_keys)
        self.quantize_clip = jit(_quantize_clip)
        self.quantize_fit = jit(_quantize_fit)
        self.dequantize = jit(_dequantize)


def _load() -> Optional[_Kernels]:
    """Import Numba and wrap the kernels, once, under the lock; None if Numba is unusable."""
    with _lock:
        if _state["kernels"] is None and _state["importable"] is not False:
            if importlib.util.find_spec("numba") is None:
                _state["importable"] = False
                return None
            try:
                import numba  # imported on first use only, on purpose
            except Exception as error:  # a broken install must not break quantization
                _state["importable"] = False
                warnings.warn(
                    f"numba is installed but cannot be imported ({error}); qarray uses its NumPy kernels",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return None
            _state["kernels"] = _Kernels(numba)
            _state["importable"] = True
        return _state["kernels"]


def _reset_lock_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # one held by another thread at the fork would never be released


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_after_fork)


def _kernels() -> _Kernels:
    """The compiled kernels (building them on first use).

    Raises:
        ImportError: if Numba is not installed or cannot be imported.
    """
    kernels = _state["kernels"] or _load()
    if kernels is None:
        raise ImportError("the compiled kernels need numba: pip install 'qarray[fast]'")
    return kernels


# -- public entry points -------------------------------------------------------------------------


def _check_flat(array: Any, argument: str, dtypes: tuple) -> None:
    if not isinstance(array, numpy.ndarray):
        raise TypeError(f"{argument} must be a NumPy array, got {type(array).__name__}")
    if array.ndim != 1 or not array.flags.c_contiguous or not array.dtype.isnative:
        raise ValueError(
            f"{argument} must be a 1-d C-contiguous native-endian array, got "
            f"{array.ndim}-d dtype {array.dtype} (contiguous: {array.flags.c_contiguous})"
        )
    if array.dtype not in dtypes:
        names = ", ".join(dtype.name for dtype in dtypes)
        raise TypeError(f"{argument} must have one of the dtypes {names}, got {array.dtype}")


def _check_target(target: Any, source: numpy.ndarray, dtypes: tuple) -> None:
    _check_flat(target, "target", dtypes)
    if target.shape != source.shape:
        raise ValueError(f"target must have shape {source.shape}, got {target.shape}")
    if not target.flags.writeable:
        raise ValueError("target must be writeable")


def minmax(values: numpy.ndarray) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Return ``(min, max)`` of a 1-d float32/float64 array as 0-d arrays of its dtype.

    Any NaN makes both NaN, as ``numpy.min``/``numpy.max`` do.

    Raises:
        TypeError, ValueError: if ``values`` is not a non-empty 1-d C-contiguous
            float32/float64 array.

    Example:
        >>> low, high = minmax(numpy.array([0.5, -2.0, 3.0]))  # doctest: +SKIP
        >>> float(low), float(high)  # doctest: +SKIP
        (-2.0, 3.0)
    """
    _check_flat(values, "values", _FLOAT_DTYPES)
    if values.size == 0:
        raise ValueError("values must not be empty: min and max of nothing are undefined")
    kernels = _kernels()
    if values.dtype == numpy.float32:
        bits, flip, infinity, width = values.view(numpy.int32), 0x7FFFFFFF, 0x7F800000, numpy.int32
    else:
        bits, flip, infinity = values.view(numpy.int64), 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000
        width = numpy.int64
    flip64 = numpy.int64(flip)
    parts = _parallel.run(bits.size, lambda start, stop: kernels.minmax_keys(bits[start:stop], flip64, flip64))
    low = min(part[0] for part in parts)
    high = max(part[1] for part in parts)
    if max(part[2] for part in parts) > infinity:
        nan = numpy.asarray(numpy.nan, dtype=values.dtype)
        return nan, nan.copy()

    def decode(key: int) -> numpy.ndarray:
        word = numpy.int64(key) ^ ((numpy.int64(key) >> numpy.int64(63)) & flip64)
        return numpy.asarray(word).astype(width).view(values.dtype).reshape(())

    return decode(low), decode(high)


def quantize(
    source: numpy.ndarray,
    target: numpy.ndarray,
    scale: float,
    zero_point: float,
    clip: Optional[Tuple[float, float]],
    fit: Optional[Tuple[float, float]] = None,
) -> Tuple[int, int]:
    """Quantize ``source`` into ``target``: ``rint(source / scale + zero_point)`` in float64.

    Args:
        source: 1-d C-contiguous float32/float64 array.
        target: 1-d C-contiguous integer array of the same length, written in place.
        scale: the quantization step.
        zero_point: the zero point, a scalar.
        clip: the inclusive range to clip to, or None.
        fit: without clipping, the range results must lie in; the others are counted.

    Returns:
        ``(n_nonfinite, n_outside)``: non-finite inputs, and (without clipping, with
        ``fit``) rounded values outside ``fit``, NaN included; 0 when not applicable.

    Raises:
        TypeError, ValueError: for arrays the kernels cannot take.
    """
    _check_flat(source, "source", _FLOAT_DTYPES)
    _check_target(target, source, _INTEGER_DTYPES)
    kernels = _kernels()
    scale, zero_point = float(scale), float(zero_point)
    if clip is not None:
        low, high = float(clip[0]), float(clip[1])
        kernel = kernels.quantize_clip
        parts = _parallel.run(
            source.size,
            lambda start, stop: kernel(source[start:stop], target[start:stop], scale, zero_point, low, high),
        )
        return int(sum(parts)), 0
    low, high = (-numpy.inf, numpy.inf) if fit is None else (float(fit[0]), float(fit[1]))
    kernel = kernels.quantize_fit
    parts = _parallel.run(
        source.size,
        lambda start, stop: kernel(source[start:stop], target[start:stop], scale, zero_point, low, high),
    )
    n_nonfinite = int(sum(part[0] for part in parts))
    n_outside = 0 if fit is None else int(sum(part[1] for part in parts))
    return n_nonfinite, n_outside


def dequantize(source: numpy.ndarray, target: numpy.ndarray, scale: float, zero_point: float) -> None:
    """De-quantize ``source`` into ``target``: ``scale * (float64(source) - zero_point)``.

    Args:
        source: 1-d C-contiguous integer array.
        target: 1-d C-contiguous float32/float64 array of the same length, written in place.
        scale: the quantization step.
        zero_point: the zero point, a scalar.

    Raises:
        TypeError, ValueError: for arrays the kernels cannot take.
    """
    _check_flat(source, "source", _INTEGER_DTYPES)
    _check_target(target, source, _FLOAT_DTYPES)
    kernels = _kernels()
    scale, zero_point = float(scale), float(zero_point)
    kernel = kernels.dequantize
    _parallel.run(source.size, lambda start, stop: kernel(source[start:stop], target[start:stop], scale, zero_point))
