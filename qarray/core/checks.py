"""Argument checks shared by the public classes.

Each check either returns the value in its canonical form (``int``, ``bool``,
``numpy.float64``) or raises ``TypeError``/``ValueError`` with a message that
names the argument, shows what was received and says what was expected.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from typing import Any, Optional

import numpy

__all__ = [
    "MAX_N_BITS",
    "check_bool",
    "check_broadcastable",
    "check_finite_real",
    "check_instance",
    "check_int",
    "check_n_bits",
    "check_optional_real",
    "describe",
]

MAX_N_BITS = 53
"""The widest supported quantization.

Every integer up to ``2**53`` is exact in float64, the arithmetic quantization
uses, so up to 53 bits every quantized value and clipping bound is exact.
"""


class _BoundedRepr(reprlib.Repr):
    """``reprlib.Repr`` that also survives ints too long for ``repr``."""

    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:  # more digits than Python converts to str
            return f"<int of {x.bit_length()} bits>"


_bounded = _BoundedRepr()
_bounded.maxstring = 60
_bounded.maxother = 60


def describe(value: Any) -> str:
    """Return a short ``repr`` of ``value`` for an error message, bounded in size and depth.

    Unlike ``repr``, it never fails on huge ints or deeply nested lists.
    """
    try:
        return _bounded.repr(value)
    except Exception:  # a user object whose __repr__ fails
        return f"<{type(value).__name__} object>"


def check_bool(value: Any, argument: str) -> bool:
    """Return ``value`` as a bool; refuse anything that is not a bool (1 and "yes" included)."""
    if isinstance(value, (bool, numpy.bool_)):
        return bool(value)
    raise TypeError(f"{argument} must be a bool, got {describe(value)} ({type(value).__name__})")


def check_int(value: Any, argument: str) -> int:
    """Return ``value`` as an int; refuse bools, floats and strings."""
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argument} must be an int, got {describe(value)} ({type(value).__name__})")
    return int(value)


def check_n_bits(value: Any, argument: str = "n_bits") -> int:
    """Return ``value`` as an int in ``[1, MAX_N_BITS]``."""
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{argument} must be an int between 1 and {MAX_N_BITS}, "
            f"got {describe(value)} ({type(value).__name__})"
        )
    if not 1 <= int(value) <= MAX_N_BITS:
        raise ValueError(f"{argument} must be an int between 1 and {MAX_N_BITS}, got {describe(value)}")
    return int(value)


def check_finite_real(value: Any, argument: str) -> numpy.float64:
    """Return ``value`` as a finite ``numpy.float64``; accepts Python and NumPy real scalars."""
    if isinstance(value, numpy.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{argument} must be a real number, got {describe(value)} ({type(value).__name__})"
        )
    try:
        converted = numpy.float64(value)
    except OverflowError:  # an int (or Fraction) beyond the float64 range
        raise ValueError(f"{argument} must be finite, got a number beyond the float64 range") from None
    if not math.isfinite(converted):
        raise ValueError(f"{argument} must be finite, got {describe(value)}")
    return converted


def check_optional_real(value: Any, argument: str) -> Optional[numpy.float64]:
    """Like :func:`check_finite_real`, but ``None`` passes through (a field not yet computed)."""
    return None if value is None else check_finite_real(value, argument)


def check_instance(value: Any, argument: str, klass: type, optional: bool = False) -> Any:
    """Return ``value`` if it is an instance of ``klass`` (or None, when ``optional``).

    Raises:
        TypeError: naming ``argument``, the value received and the expected class.
    """
    if isinstance(value, klass) or (optional and value is None):
        return value
    expected = f"a {klass.__name__}" + (" or None" if optional else "")
    raise TypeError(f"{argument} must be {expected}, got {describe(value)} ({type(value).__name__})")


def check_broadcastable(zero_point: Any, values: Any) -> Any:
    """Return a host array ``zero_point`` if it broadcasts to ``values``' shape without growing it.

    Raises:
        ValueError: naming ``zero_point``, its shape and the values' shape.
    """
    if isinstance(zero_point, numpy.ndarray):
        shape = tuple(values.shape)
        try:
            broadcast = numpy.broadcast_shapes(zero_point.shape, shape)
        except ValueError:
            broadcast = None
        if broadcast != shape:
            raise ValueError(
                f"zero_point of shape {zero_point.shape} does not broadcast to values of shape {shape}"
            )
    return zero_point
