"""Numerics profiles: whose integers a quantization reproduces, the one home of each rule.

A profile fixes three things: the parameter rule (scale and zero point from a range),
the quantize arithmetic and the dequantize arithmetic (see ``docs/profiles.md``).

- ``"concrete"`` (the default): Concrete ML's rule in float64 (:mod:`qarray.core.rule`).
- ``"onnx"``: ONNX Runtime's quantization tool and its ``QuantizeLinear`` /
  ``DequantizeLinear``: float32 values, the scale and zero point of its
  ``compute_scale_zp``, ``saturate(round_half_even(x / scale) + zero_point)`` with a
  float32 quotient, ``(q - zero_point) * scale`` in float32.
- ``"torch"``: torchao's ``choose_qparams_affine`` / ``quantize_affine`` /
  ``dequantize_affine`` (the rule of ``torch.ao``'s observers): float32 parameters,
  ``clamp(round(x * (1 / scale)) + zero_point)`` with a float32 reciprocal,
  ``(q - zero_point) * scale`` in float32.

The rules here run elementwise on arrays of ranges (one per block, a 0-d array per
tensor) in any Array API library, with the same float32/float64 operations everywhere,
so every backend gets the same parameters.

Example:
    >>> import numpy
    >>> from qarray.core.rule import RuleOptions
    >>> options = RuleOptions(8, profile="onnx")
    >>> scale, zero, offset, _ = profile_rule(numpy.asarray(-1.0), numpy.asarray(3.0), options)
    >>> float(scale), int(zero), int(offset)
    (0.01568627543747425, 64, 0)
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy

from .checks import describe
from .namespace import array_namespace, device_of

__all__ = [
    "ARITHMETIC",
    "PROFILES",
    "PROFILE_DESCRIPTIONS",
    "check_profile",
    "check_profile_options",
    "onnx_qrange",
    "profile_rule",
    "reciprocal32",
    "torch_qrange",
]

PROFILES: Tuple[str, ...] = ("concrete", "onnx", "torch")
"""The numerics profiles, the default first."""

ARITHMETIC: Dict[str, str] = {"concrete": "float64", "onnx": "float32_divide", "torch": "float32_reciprocal"}
"""The quantize arithmetic of each profile (a :class:`~qarray.backends.spec.QuantSpec` field):
``float64`` ``rint(x / scale + zero_point)``; ``float32_divide`` ``rint(float32(x) / scale) +
zero_point``; ``float32_reciprocal`` ``rint(float32(x) * (1 / scale)) + zero_point``, the
reciprocal and the product in float32. The two float32 ones dequantize in float32."""

PROFILE_DESCRIPTIONS: Dict[str, str] = {
    "concrete": "concrete: Concrete ML's rule, float64 x / scale, float64 dequant",
    "onnx": "onnx: ONNX Runtime's parameters, float32 x / scale, float32 dequant",
    "torch": "torch: torchao's parameters, float32 x * (1 / scale), float32 dequant",
}
"""What each profile computes, in a line (the rich display's "numerics" row)."""

ONNX_BITS = (4, 8, 16)
TORCH_MAX_BITS = 8


def check_profile(value: Any, argument: str = "profile") -> str:
    """Return ``value`` if it names a profile.

    Raises:
        TypeError: if it is not a str.
        ValueError: if it is not one of :data:`PROFILES`.
    """
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be one of {', '.join(map(repr, PROFILES))}, got {describe(value)}")
    if value not in PROFILES:
        raise ValueError(f"{argument} must be one of {', '.join(map(repr, PROFILES))}, got {value!r}")
    return value


def check_profile_options(options: Any) -> None:
    """Check that a runtime profile can hold the options (the concrete profile holds all).

    Raises:
        ValueError: naming the option: ``n_bits`` a runtime has no type for (ONNX: 4, 8 or
            16; torch: 1 to 8), ``is_narrow`` with ``"onnx"`` (its ``QuantizeLinear``
            saturates to the type's whole range), or QAT (``is_qat``: the runtimes do not
            infer a scale from unique values).
    """
    profile = getattr(options, "profile", "concrete")
    if profile == "concrete":
        return
    n_bits = options.n_bits
    if profile == "onnx" and n_bits not in ONNX_BITS:
        raise ValueError(
            f"n_bits must be 4, 8 or 16 with profile='onnx' (the INT4/UINT4, INT8/UINT8 and INT16/UINT16 "
            f"types of ONNX), got n_bits={n_bits}"
        )
    if profile == "torch" and not 1 <= n_bits <= TORCH_MAX_BITS:
        raise ValueError(f"n_bits must be from 1 to {TORCH_MAX_BITS} with profile='torch', got n_bits={n_bits}")
    if profile == "onnx" and options.is_narrow:
        raise ValueError(
            "is_narrow=True is not available with profile='onnx': QuantizeLinear saturates to the "
            "type's whole range"
        )
    if options.is_qat or options.is_precomputed_qat:
        raise ValueError(
            f"is_qat=True (QAT scale inference) is Concrete ML's, not available with profile={profile!r}: "
            "give the parameters (UniformQuantizationParameters) instead"
        )


def onnx_qrange(n_bits: int, is_signed: bool, is_symmetric: bool) -> Tuple[int, int]:
    """``(qmin, qmax)`` of ONNX Runtime's ``get_qmin_qmax_for_qType`` (no reduced range).

    The symmetric table has INT8 ``[-127, 127]`` and INT16 ``[-32767, 32767]``; INT4 has
    no entry there, so it keeps ``[-8, 7]``.

    Example:
        >>> onnx_qrange(8, True, True), onnx_qrange(4, True, True), onnx_qrange(8, False, False)
        ((-127, 127), (-8, 7), (0, 255))
    """
    if not is_signed:
        return 0, 2**n_bits - 1
    half = 2 ** (n_bits - 1)
    if is_symmetric and n_bits in (8, 16):
        return -half + 1, half - 1
    return -half, half - 1


def torch_qrange(n_bits: int, is_signed: bool, is_narrow: bool) -> Tuple[int, int]:
    """``(quant_min, quant_max)`` of the torch profile.

    Example:
        >>> torch_qrange(8, True, False), torch_qrange(8, True, True), torch_qrange(4, False, False)
        ((-128, 127), (-127, 127), (0, 15))
    """
    if not is_signed:
        return 0, 2**n_bits - 1
    half = 2 ** (n_bits - 1)
    return -half + (1 if is_narrow else 0), half - 1


def reciprocal32(scale: Any) -> Any:
    """``float32(1) / float32(scale)``, elementwise (a host number, or an array of any library).

    The reciprocal the torch profile multiplies by. The result is float32 valued; a host
    number is returned as a Python float (exact).

    Example:
        >>> reciprocal32(0.1)
        10.0
    """
    if numpy.ndim(scale) == 0 and not hasattr(scale, "__array_namespace__") and not hasattr(scale, "device"):
        return float(numpy.float32(1.0) / numpy.float32(scale))
    xp = array_namespace(scale)
    one = xp.asarray(1.0, dtype=xp.float32, device=device_of(scale))
    return one / xp.astype(scale, xp.float32)


def profile_rule(rmin: Any, rmax: Any, options: Any) -> Tuple[Any, Any, Any, Any]:
    """``(scale, zero_point, offset, counts)`` of a runtime profile, elementwise on arrays of ranges.

    ``scale`` is float64 holding float32 values, ``zero_point`` and ``offset`` int64, all
    of the ranges' shape, library and device; ``offset`` is ``2**(n_bits - 1)`` when
    signed, else 0, so the clipping range ``[-offset + narrow, 2**n_bits - 1 - offset]``
    is the type's range. ``counts`` is a length-3 int64 array: non-finite ranges, ranges
    that give no valid parameters (rmin > rmax, a scale that is not a finite non-zero
    float32), and single-value ranges (always 0: the runtimes have no such case).

    The ranges are rounded to float32 first (the runtimes see float32 values; rounding
    is monotonic, so the min of the rounded values is the rounded min).
    """
    xp = array_namespace(rmin, rmax)
    low32, high32 = xp.astype(rmin, xp.float32), xp.astype(rmax, xp.float32)
    n_bits, signed = options.n_bits, bool(options.is_signed)
    with numpy.errstate(all="ignore"):
        if options.profile == "onnx":
            scale, zero = _onnx_rule(xp, low32, high32, n_bits, signed, bool(options.is_symmetric))
        else:
            scale, zero = _torch_rule(xp, low32, high32, n_bits, signed, options)
        nonfinite = xp.logical_not(xp.isfinite(low32) & xp.isfinite(high32))
        invalid = (low32 > high32) | xp.logical_not(xp.isfinite(scale) & (scale != 0.0))
        counts = xp.stack(
            [
                xp.sum(xp.astype(nonfinite, xp.int64)),
                xp.sum(xp.astype(invalid & ~nonfinite, xp.int64)),
                xp.sum(xp.zeros_like(nonfinite, dtype=xp.int64)),
            ]
        )
        device = getattr(low32, "device", None)
        offset = xp.full(low32.shape, 2 ** (n_bits - 1) if signed else 0, dtype=xp.int64, device=device)
        zero = xp.astype(xp.where(xp.isfinite(zero), zero, xp.zeros_like(zero)), xp.int64)
    return xp.astype(scale, xp.float64), zero, offset, counts


def _onnx_rule(xp: Any, low32: Any, high32: Any, n_bits: int, signed: bool, symmetric: bool) -> Tuple[Any, Any]:
    """ONNX Runtime's ``compute_scale_zp``: the range widened to hold 0 (and symmetrized),
    its width and scale in float64, the zero point from the float64 scale, the scale
    stored as float32 (or 1.0 with zero point 0 when it is below float32's smallest normal)."""
    qmin, qmax = onnx_qrange(n_bits, signed, symmetric)
    low = xp.clip(xp.astype(low32, xp.float64), max=0.0)
    high = xp.clip(xp.astype(high32, xp.float64), min=0.0)
    if symmetric:
        absmax = xp.maximum(xp.abs(low), xp.abs(high))
        low, high = -absmax, absmax
    scale64 = (high - low) / (float(qmax) - float(qmin))
    if symmetric:
        middle = float(numpy.round((qmin + qmax) / 2.0))
        zero = xp.full(low.shape, middle, dtype=xp.float64, device=getattr(low, "device", None))
    else:
        zero = xp.round(float(qmin) - low / scale64)
    tiny = scale64 < float(numpy.finfo(numpy.float32).tiny)
    scale = xp.where(tiny, xp.ones_like(scale64), xp.astype(xp.astype(scale64, xp.float32), xp.float64))
    zero = xp.where(tiny, xp.zeros_like(zero), zero)
    return scale, zero


def _torch_rule(xp: Any, low32: Any, high32: Any, n_bits: int, signed: bool, options: Any) -> Tuple[Any, Any]:
    """torchao's ``choose_qparams_affine`` in float32: the range widened to hold 0, the scale
    clamped below by float32's smallest normal, the zero point ``quant_min -
    round(min / scale)`` clamped to the quantized range (symmetric: the middle, 0)."""
    qmin, qmax = torch_qrange(n_bits, signed, bool(options.is_narrow))
    eps = float(numpy.finfo(numpy.float32).smallest_normal)
    low = xp.clip(low32, max=0.0)
    high = xp.clip(high32, min=0.0)
    if options.is_symmetric:
        high = xp.maximum(-low, high)
        scale = xp.clip(high / (float(qmax - qmin) / 2), min=eps)
        middle = float(int((qmax + qmin + 1) / 2))
        zero = xp.full(low.shape, middle, dtype=xp.float32, device=getattr(low, "device", None))
    else:
        scale = xp.clip((high - low) / float(qmax - qmin), min=eps)
        zero = xp.clip(float(qmin) - xp.round(low / scale), float(qmin), float(qmax))
    return scale, zero
