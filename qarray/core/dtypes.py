"""The dtype tables and the integer-range rules: the one home of each.

Which integer dtypes quantized values may have and their ranges, which float dtypes
values and de-quantized results may have, which dtypes a document may hold, the
clipping range ``[-offset + narrow, 2**n_bits - 1 - offset]``, and the float bounds
that hold exactly a dtype's integers. Every other module (the kernels included)
takes them from here.

Example:
    >>> clip_range(8, 128, True)
    (-127, 127)
    >>> INTEGER_RANGES["int8"]
    (-128, 127)
"""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple, Union

import numpy

from .checks import describe

__all__ = [
    "DOCUMENT_DTYPES",
    "FLOAT_DTYPES",
    "INTEGER_DTYPES",
    "INTEGER_RANGES",
    "OUTPUT_FLOAT_DTYPES",
    "Parameter",
    "clip_range",
    "dtype_name",
    "exact_float_bounds",
    "integer_dtype_name",
    "integer_dtype_range",
]

INTEGER_DTYPES: Tuple[str, ...] = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
"""The integer dtypes quantized values may have (``quant``'s ``dtype``, ``qvalues``)."""

INTEGER_RANGES: Dict[str, Tuple[int, int]] = {
    name: (int(numpy.iinfo(name).min), int(numpy.iinfo(name).max)) for name in INTEGER_DTYPES
}
"""Each integer dtype with its inclusive range."""

FLOAT_DTYPES: Tuple[str, ...] = ("bfloat16", "float16", "float32", "float64")
"""The float dtypes values may have in a document (``values``, ``uvalues``).

bfloat16 (torch's) has no NumPy dtype: a document holds its 2-byte patterns, and on
the host it is float32, which holds every bfloat16 exactly.
"""

OUTPUT_FLOAT_DTYPES: Tuple[str, ...] = ("float32", "float64")
"""The float dtypes ``dequant`` writes (and the fused kernels read)."""

DOCUMENT_DTYPES: Tuple[str, ...] = ("bool",) + INTEGER_DTYPES + FLOAT_DTYPES
"""The dtypes an array in a document may have; anything else is refused."""

Parameter = Union[int, float, Any]
"""A host number (per tensor) or an array of the parameter grid (per block)."""


def clip_range(n_bits: int, offset: Parameter, narrow: bool) -> Tuple[Parameter, Parameter]:
    """Return the inclusive clipping range ``[-offset + narrow, 2**n_bits - 1 - offset]``.

    ``offset`` may be an int or an integer array of the parameter grid (each block
    clips with its own offset); the bounds are then arrays of the same shape.

    Example:
        >>> clip_range(8, 0, False)
        (0, 255)
    """
    return -offset + (1 if narrow else 0), (2**n_bits - 1) - offset


def integer_dtype_range(name: str) -> Tuple[int, int]:
    """Return the smallest and largest value of the integer dtype called ``name``."""
    return INTEGER_RANGES[name]


def exact_float_bounds(dtype: str) -> Tuple[float, float]:
    """Return the float64 range holding exactly the integers of ``dtype`` (no rounding into it).

    For 64-bit dtypes the largest integer is not a float64: the bound is the largest
    float64 below ``max + 1``.

    Example:
        >>> exact_float_bounds("int8")
        (-128.0, 127.0)
    """
    low, high = INTEGER_RANGES[dtype]
    upper = float(high)
    if int(upper) > high:
        upper = float(numpy.nextafter(upper, 0.0))
    return float(low), upper


def dtype_name(dtype: Any, xp: Any, allowed: Sequence[str], argument: str = "dtype") -> str:
    """Return the canonical name of ``dtype`` if it is one of ``allowed``.

    ``dtype`` may be a name, a NumPy dtype or scalar type, or a dtype object of the
    namespace ``xp`` (``torch.int8``).

    Raises:
        TypeError: if ``dtype`` is not one of the allowed dtypes.
    """
    name = None
    if isinstance(dtype, str):
        name = dtype
    elif isinstance(dtype, numpy.dtype) or (isinstance(dtype, type) and issubclass(dtype, numpy.generic)):
        name = numpy.dtype(dtype).name
    elif xp is not None:
        # compare only dtype objects of one kind: a dtype of another library is refused,
        # and comparing across libraries warns in some (array-api-strict)
        name = next(
            (
                n
                for n in allowed
                if getattr(xp, n, None) is dtype
                or (type(getattr(xp, n, None)) is type(dtype) and getattr(xp, n) == dtype)
            ),
            None,
        )
    if name is not None and name in allowed:
        return name
    raise TypeError(
        f"{argument} must be one of {', '.join(allowed)} (as a name, a NumPy dtype or a dtype "
        f"of the array's own library), got {describe(dtype)}"
    )


def integer_dtype_name(dtype: Any, xp: Any = None, argument: str = "dtype") -> str:
    """Return the canonical name (``"int8"`` ...) of an integer dtype (see :func:`dtype_name`)."""
    return dtype_name(dtype, xp, INTEGER_DTYPES, argument)
