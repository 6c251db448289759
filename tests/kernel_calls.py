"""The kernel contract called the short way, for tests that sweep many parameter settings.

Backends take a :class:`~qarray.backends.spec.QuantSpec`; these helpers build one from
``(scale, zero_point, clip, dtype, check_finite, fit)`` as the tests list them, and
return the problem counts as a device array (or None), ready to compare.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from qarray.backends.spec import QuantSpec

__all__ = ["dequantize", "quantize", "spec_of"]


def spec_of(scale: float, zero_point: Any, clip: Optional[tuple], dtype: str, fit: Optional[tuple] = None) -> QuantSpec:
    """Saturate to ``clip``; else check ``fit`` (when given); else check nothing."""
    if clip is not None:
        return QuantSpec(scale, zero_point, clip[0], clip[1], True, dtype)
    if fit is not None:
        return QuantSpec(scale, zero_point, fit[0], fit[1], False, dtype)
    return QuantSpec(scale, zero_point, None, None, False, dtype)


def quantize(
    backend: Any,
    values: Any,
    scale: float,
    zero_point: Any,
    clip: Optional[tuple],
    dtype: str,
    check_finite: bool = True,
    fit: Optional[tuple] = None,
    out: Any = None,
) -> Tuple[Any, Any]:
    """``backend.quantize`` with a spec built from the arguments; problems as their counts array."""
    spec = spec_of(scale, zero_point, clip, dtype, fit)
    result, problems = backend.quantize(values, spec, check_finite=check_finite, out=out)
    return result, None if problems is None else problems.counts


def dequantize(backend: Any, qvalues: Any, scale: float, zero_point: Any, dtype: str, out: Any = None) -> Any:
    """``backend.dequantize`` with a per-tensor spec."""
    return backend.dequantize(qvalues, QuantSpec(scale, zero_point), dtype=dtype, out=out)
