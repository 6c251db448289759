"""The parameter rule: scale, zero point and offset from calibration ranges, the one home of it.

:func:`parameter_rule` computes the rule elementwise on arrays of ranges (one per
block, in their library and on their device; a 0-d array is one tensor), with the same
float64 operations everywhere, so every block gets exactly what the rule gives for that
block alone. :func:`tensor_parameters` is its per-tensor case on host numbers, with the
messages a single range calls for. The rule reads the options through their fields only
(``n_bits``, ``is_signed``, ``is_symmetric``, ``is_qat``, ``is_precomputed_qat``), so it
needs no class; :func:`check_combination` is the one check of how those fields combine.

The rule (see ``docs/semantics.md``), with ``offset = 2**(n_bits - 1)`` when signed, else 0:

- a single value (``rmax - rmin < STABILITY_CONST``): scale ``rmax`` and zero point 0, or
  scale 1 and zero point ``round(-rmin)`` when ``|rmax| < STABILITY_CONST``; offset 0;
- symmetric: scale ``max(|rmin|, |rmax|) / (2**n_bits - 1 - offset)``, zero point 0;
- otherwise scale ``(rmax - rmin) / (2**n_bits - 1)`` (QAT: the inferred or the kept
  precomputed scale) and, unless QAT, zero point
  ``round((rmax * -offset - rmin * (2**n_bits - 1 - offset)) / (rmax - rmin))``.

Example:
    >>> from types import SimpleNamespace
    >>> options = SimpleNamespace(n_bits=8, is_signed=False, is_symmetric=False, is_qat=False,
    ...                           is_precomputed_qat=False)
    >>> tensor_parameters(-1.0, 1.0, options)
    (np.float64(0.00784313725490196), 128, 0)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Dict, FrozenSet, Optional, Tuple

import numpy

from .checks import check_bool, check_finite_real, check_n_bits, describe
from .granularity import is_grid
from .namespace import array_namespace, as_array, is_array, is_lazy, to_numpy
from .profiles import check_profile, check_profile_options, profile_rule

__all__ = [
    "STABILITY_CONST",
    "ZERO_POINT_LIMIT",
    "BlockCheck",
    "RuleOptions",
    "asymmetric_zero_point",
    "OPTION_CHECKS",
    "check_combination",
    "checked_options",
    "check_option_fields",
    "check_scale",
    "check_zero_point",
    "parameter_rule",
    "ranges_ordered",
    "tensor_parameters",
]

STABILITY_CONST = 10**-6
"""Ranges narrower than this (``rmax - rmin``) are treated as one single value."""

ZERO_POINT_LIMIT = 2.0**63
"""Zero points must be smaller than this in magnitude (they must fit int64)."""


@dataclasses.dataclass(frozen=True)
class RuleOptions:
    """The option fields the rule reads, for callers without a ``QuantizationOptions``.

    Example:
        >>> RuleOptions(4, is_signed=True).n_bits
        4
    """

    n_bits: int
    is_signed: bool = False
    is_symmetric: bool = False
    is_qat: bool = False
    is_precomputed_qat: bool = False
    is_narrow: bool = False
    profile: str = "concrete"


OPTION_CHECKS: Dict[str, Callable[[Any, str], Any]] = {
    "n_bits": check_n_bits,
    "is_signed": check_bool,
    "is_symmetric": check_bool,
    "is_qat": check_bool,
    "is_narrow": check_bool,
    "is_precomputed_qat": check_bool,
    "profile": check_profile,
}
"""How each option field is checked: ``QuantizationOptions`` declares its fields with
these, and :func:`checked_options` applies them to loose arguments."""


def checked_options(owner: str = "QuantizationOptions", **fields: Any) -> RuleOptions:
    """Return :class:`RuleOptions` of loose option fields, checked as ``QuantizationOptions`` checks them.

    Each field goes through its :data:`OPTION_CHECKS` validator in the order given
    (messages name ``owner.field``), then :func:`check_combination`.

    Raises:
        TypeError, ValueError: as ``QuantizationOptions`` raises for the same fields.

    Example:
        >>> checked_options(n_bits=4, is_signed=True).is_signed
        True
    """
    checked = {name: OPTION_CHECKS[name](value, f"{owner}.{name}") for name, value in fields.items()}
    options = RuleOptions(**checked)
    check_combination(options)
    return options


RULE_FIELDS = ("n_bits", "is_signed", "is_symmetric", "is_qat", "is_precomputed_qat")
"""The option fields the parameter rule reads."""


def check_option_fields(options: Any, fields: Tuple[str, ...] = RULE_FIELDS) -> None:
    """Check that ``options`` has the option ``fields`` (a :class:`~qarray.QuantizationOptions`
    or any object with them): ``n_bits`` an int in range, the flags bools.

    Raises:
        TypeError: naming ``options`` and the fields it lacks, or a flag that is not a bool.
        ValueError: for ``n_bits`` out of range.
    """
    for field in fields:
        value = getattr(options, field, _MISSING)
        if type(value) is bool:  # (the common case, first: this runs on every quant)
            continue
        if value is _MISSING:
            missing = ", ".join(name for name in fields if not hasattr(options, name))
            raise TypeError(
                f"options must be a QuantizationOptions (or have its fields {', '.join(fields)}), got "
                f"{describe(options)} ({type(options).__name__}), without {missing}"
            )
        OPTION_CHECKS[field](value, f"options.{field}")


_MISSING = object()


def check_scale(value: Any) -> Any:
    """Return a scale as float64: finite and non-zero (negative only from a single negative value).

    An array with at least one axis is a scale per block: every entry is checked (one
    read-back) and it is kept as a float64 array in its library.
    """
    if value is None:
        return None
    if is_grid(value):
        host = to_numpy(value)
        if host.dtype.kind not in "iuf" or not numpy.all(numpy.isfinite(host)) or numpy.any(host == 0):
            raise ValueError(f"scale must hold finite non-zero numbers, got {describe(value)}")
        xp = array_namespace(value)
        return xp.astype(value, xp.float64)
    if is_array(value) and not isinstance(value, numpy.generic):
        host = to_numpy(value)
        if host.ndim != 0:
            raise TypeError(f"scale must be a scalar, got an array of shape {host.shape}")
        value = host[()]
    scale = check_finite_real(value, "scale")
    if scale == 0:
        raise ValueError("scale must be non-zero, got 0.0")
    return scale


def check_zero_point(value: Any) -> Any:
    """Return a zero point: an int, an integral float64, or a host float64/int64 array of them.

    Arrays given by hand are copied to the host (per-block zero points computed from
    the statistics stay on the data's device: they are set without this check).
    """
    if value is None:
        return None
    if is_array(value) and not isinstance(value, numpy.generic):
        host = numpy.array(to_numpy(value), copy=True)
        if host.dtype.kind not in "iuf":
            raise TypeError(f"zero_point must hold real numbers, got dtype {host.dtype}")
        if host.ndim == 0:
            value = host[()]
        else:
            as_float = host.astype(numpy.float64)
            integral = numpy.all(numpy.isfinite(as_float)) and numpy.all(as_float == numpy.rint(as_float))
            if not integral or not numpy.all(numpy.abs(as_float) < ZERO_POINT_LIMIT):
                raise ValueError("zero_point must hold integral values within ±2**63")
            return host.astype(numpy.float64 if host.dtype.kind == "f" else numpy.int64)
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"zero_point must be an int or an array, got {describe(value)} ({type(value).__name__})")
    if isinstance(value, numbers.Integral):
        if not abs(int(value)) < ZERO_POINT_LIMIT:
            raise ValueError(f"zero_point must be within ±2**63, got {describe(value)}")
        return int(value)
    converted = check_finite_real(value, "zero_point")
    if converted != numpy.rint(converted):
        raise ValueError(f"zero_point must be an integer value, got {value!r}")
    if not abs(converted) < ZERO_POINT_LIMIT:
        raise ValueError(f"zero_point must be within ±2**63, got {describe(value)}")
    return converted



def check_combination(options: Any) -> None:
    """Check how the option fields combine (fields may be set one by one, so this runs late).

    The ``profile`` field is optional (``"concrete"`` when absent).

    Raises:
        ValueError: if ``is_symmetric`` without ``is_signed``, ``is_qat`` with
            ``is_symmetric``, ``is_symmetric`` with fewer than 2 bits, or options a runtime
            profile cannot hold (see :func:`qarray.core.profiles.check_profile_options`).
    """
    check_option_fields(options)
    check_profile(getattr(options, "profile", "concrete"), "options.profile")
    if options.is_symmetric and not options.is_signed:
        raise ValueError("is_symmetric=True requires is_signed=True (symmetric is signed)")
    if options.is_qat and options.is_symmetric:
        raise ValueError("is_qat=True excludes is_symmetric=True (QAT is never symmetric)")
    if options.is_symmetric and options.n_bits < 2:
        raise ValueError(f"symmetric quantization needs n_bits >= 2, got n_bits={options.n_bits}")
    check_profile_options(options)


class BlockCheck:
    """What the rule found about the ranges, read back once, when first needed.

    The counts (non-finite ranges, ranges that give no valid parameters, single-value
    ranges) are computed where the ranges are. :meth:`read` brings them to the host (one
    read-back), raises on a bad block, and returns the offsets that occur: ``0`` for
    single-value blocks or unsigned options, ``2**(n_bits - 1)`` for the others, so that
    quantization knows the union of the blocks' clipping ranges without reading the
    offset grid. On a GPU the parameters are checked when something first reads back
    (a checked quantization, a document, a dtype that needs the offsets), not when they
    are computed: computing them reads nothing back.

    Example:
        >>> from types import SimpleNamespace
        >>> options = SimpleNamespace(n_bits=8, is_signed=True, is_symmetric=False, is_qat=False,
        ...                           is_precomputed_qat=False)
        >>> *_, check = parameter_rule(numpy.array([0.0, 1.0]), numpy.array([0.0, 3.0]), options)
        >>> sorted(check.read())
        [0, 128]

    Args:
        counts: the three counts (non-finite ranges, ranges without valid parameters,
            single-value ranges) as one integer array where the ranges are (not read yet).
        blocks: the number of blocks (ranges), for the messages.
        signed_offset: the offset of the blocks that are not single-value ones
            (``2**(n_bits - 1)`` for signed options, else ``0``).
    """

    def __init__(self, counts: Any, blocks: int, signed_offset: int) -> None:
        self._counts = counts
        self._blocks = blocks
        self._signed_offset = signed_offset
        self._offsets: Optional[FrozenSet[int]] = None

    @property
    def offsets(self) -> Optional[FrozenSet[int]]:
        """The offsets that occur, once :meth:`read` has passed; None before."""
        return self._offsets

    def read(self) -> FrozenSet[int]:
        """Read the counts back (the first call only), raise on a bad block, return the offsets.

        Returns:
            The offsets that occur among the blocks (see :attr:`offsets`).

        Raises:
            ValueError: if a block range is not finite (NaN or ±Inf in the calibration
                values, or no finite value under ``nan_policy='omit'``), or gives no valid
                parameters.
        """
        if self._offsets is not None:
            return self._offsets
        n_nonfinite, n_invalid, n_single = (int(count) for count in to_numpy(self._counts))  # the one read-back
        if n_nonfinite:
            raise ValueError(
                f"{n_nonfinite} of {self._blocks} block range(s) are not finite: the calibration values hold "
                "NaN or ±Inf there (or, under nan_policy='omit', no finite value); clean them, or pass "
                "nan_policy='omit'"
            )
        if n_invalid:
            raise ValueError(
                f"{n_invalid} of {self._blocks} block range(s) give no valid parameters: ranges must have "
                "rmin <= rmax, an asymmetric range must be narrower than float64's limit, and its zero "
                "point must fit int64"
            )
        offsets = {0} if n_single else set()
        if n_single < self._blocks:
            offsets.add(self._signed_offset)
        self._offsets = frozenset(offsets)
        return self._offsets


def ranges_ordered(rmin: Any, rmax: Any) -> bool:
    """Whether ``rmin <= rmax`` (everywhere, for per-block ranges of one shape; one read-back).

    Example:
        >>> ranges_ordered(numpy.array([0.0, 1.0]), numpy.array([1.0, 1.0])), ranges_ordered(2.0, 1.0)
        (True, False)
    """
    if is_grid(rmin) or is_grid(rmax):
        low, high = to_numpy(rmin), to_numpy(rmax)
        return low.shape == high.shape and bool(numpy.all(low <= high))
    return bool(rmin <= rmax)


def parameter_rule(
    rmin: Any, rmax: Any, options: Any, *, previous_scale: Any = None, qat_scale: Any = None
) -> Tuple[Any, Any, Any, BlockCheck]:
    """Return ``(scale, zero_point, offset, check)`` for arrays of ranges, elementwise.

    ``scale`` is float64, ``zero_point`` and ``offset`` int64, all of the ranges' shape,
    library and device; nothing is read back (``check.read()`` does that). Lazy (Dask)
    ranges are computed once, here: their parameters are host arrays.

    Args:
        rmin, rmax: real arrays of one shape (float64 is used throughout).
        options: anything with the option fields (``QuantizationOptions``).
        previous_scale: with ``options.is_precomputed_qat``, the scale(s) to keep.
        qat_scale: with ``options.is_qat`` (not precomputed), the scale inferred from the
            unique values (per tensor only).

    Raises:
        ValueError: for QAT scale inference without ``qat_scale`` on more than one range.
    """
    if options.is_qat and not options.is_precomputed_qat and qat_scale is None and numpy.ndim(rmin) > 0:
        raise ValueError(
            "QAT scale inference from unique values is not supported with a granularity "
            "(axis or block_size): give precomputed QAT parameters (is_precomputed_qat) instead"
        )
    if is_lazy(rmin) or is_lazy(rmax):
        rmin, rmax = to_numpy(rmin), to_numpy(rmax)
    n_bits = options.n_bits
    signed_offset = 2 ** (n_bits - 1) if options.is_signed else 0
    blocks = math.prod(int(n) for n in rmin.shape)
    if getattr(options, "profile", "concrete") != "concrete":
        scale, zero, offset, counts = profile_rule(rmin, rmax, options)
        return scale, zero, offset, BlockCheck(counts, blocks, signed_offset)
    xp = array_namespace(rmin, rmax)
    rmin, rmax = xp.astype(rmin, xp.float64), xp.astype(rmax, xp.float64)
    device = getattr(rmin, "device", None)

    def full(value: float, dtype: Any = xp.float64) -> Any:
        return xp.full(rmin.shape, value, dtype=dtype, device=device)

    # Ranges that the rule does not use (single values, overflowing products) divide by
    # zero or overflow on the way; only the selected entries matter, and they are checked.
    with numpy.errstate(all="ignore"):
        width = rmax - rmin
        single = width < STABILITY_CONST
        tiny = xp.abs(rmax) < STABILITY_CONST
        single_scale = xp.where(tiny, full(1.0), rmax)
        single_zero = xp.where(tiny, xp.round(-rmin), full(0.0))

        if options.is_symmetric:
            scale = xp.maximum(xp.abs(rmax), xp.abs(rmin)) / float(2**n_bits - 1 - signed_offset)
            zero = full(0.0)
        else:
            if options.is_precomputed_qat and previous_scale is not None:
                kept = as_array(previous_scale, "previous_scale")
                scale = xp.astype(xp.broadcast_to(xp.asarray(kept, device=device), rmin.shape), xp.float64)
            elif options.is_qat and qat_scale is not None:
                scale = full(float(qat_scale))
            else:
                scale = width / float(2**n_bits - 1)
            zero = full(0.0) if options.is_qat else _zero_points(xp, rmin, rmax, n_bits, signed_offset)

        scale = xp.where(single, single_scale, scale)
        zero = xp.where(single, single_zero, zero)
        offset = xp.where(single, full(0, xp.int64), full(signed_offset, xp.int64))
        nonfinite = xp.logical_not(xp.isfinite(rmin) & xp.isfinite(rmax))
        invalid = (rmin > rmax) | xp.logical_not(xp.isfinite(scale) & (scale != 0.0))
        invalid = invalid | xp.logical_not(xp.abs(zero) < ZERO_POINT_LIMIT)
        counts = xp.stack(
            [
                xp.sum(xp.astype(nonfinite, xp.int64)),
                xp.sum(xp.astype(invalid & ~nonfinite, xp.int64)),
                xp.sum(xp.astype(single, xp.int64)),
            ]
        )
        zero = xp.astype(zero, xp.int64)
    return scale, zero, offset, BlockCheck(counts, blocks, signed_offset)


def tensor_parameters(
    rmin: Any, rmax: Any, options: Any, *, previous_scale: Any = None, qat_scale: Any = None
) -> Tuple[numpy.float64, int, int]:
    """Return ``(scale, zero_point, offset)`` as host numbers for one range ``[rmin, rmax]``.

    :func:`parameter_rule` on 0-d arrays, with the message that range calls for.

    Raises:
        ValueError: if the range is inverted or not finite, an asymmetric range is wider
            than float64 holds (its width overflows), the scale is not a finite non-zero
            number, or the zero point does not fit int64.
    """
    low, high = numpy.float64(rmin), numpy.float64(rmax)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"the calibration range [{low}, {high}] must be finite")
    if low > high:
        raise ValueError(f"stats.rmin ({low}) must not exceed stats.rmax ({high})")
    scale, zero, offset, _ = parameter_rule(
        numpy.asarray(low), numpy.asarray(high), options, previous_scale=previous_scale, qat_scale=qat_scale
    )
    scale, zero_point, offset = numpy.float64(scale[()]), numpy.float64(zero[()]), int(offset[()])
    profile = getattr(options, "profile", "concrete")
    if profile != "concrete":
        with numpy.errstate(over="ignore"):
            beyond = not (numpy.isfinite(numpy.float32(low)) and numpy.isfinite(numpy.float32(high)))
        if beyond:
            raise ValueError(
                f"the calibration range [{low}, {high}] exceeds float32, in which profile={profile!r} computes"
            )
        if not (math.isfinite(scale) and scale != 0):
            raise ValueError(f"the scale of the range [{low}, {high}] under profile={profile!r} is not finite")
        return scale, int(zero_point), offset
    with numpy.errstate(over="ignore"):
        width = high - low
    single = width < STABILITY_CONST
    if not single and not options.is_symmetric and not math.isfinite(width):
        raise ValueError(
            f"the calibration range [{low}, {high}] is too wide: rmax - rmin overflows "
            "float64 (symmetric quantization handles such ranges)"
        )
    if not (math.isfinite(scale) and scale != 0):
        raise ValueError(f"the scale inferred from the statistics ({scale}) is not a finite non-zero number")
    if not single and not options.is_symmetric and not options.is_qat:
        exact = asymmetric_zero_point(low, high, options.n_bits, 2 ** (options.n_bits - 1) if options.is_signed else 0)
        if not abs(exact) < ZERO_POINT_LIMIT:
            raise ValueError(
                f"the calibration range [{low}, {high}] is too narrow for its distance from 0: "
                f"its zero point ({exact}) does not fit int64"
            )
    return scale, int(zero_point), offset


def asymmetric_zero_point(rmin: numpy.float64, rmax: numpy.float64, n_bits: int, offset: int) -> numpy.float64:
    """Return ``round((rmax * -offset - rmin * levels) / (rmax - rmin))`` in float64.

    ``levels = 2**n_bits - 1 - offset``; rounding is half to even. The range must have
    a finite, non-zero width. Near the ends of the float64 range the products of the
    formula can overflow although the zero point is small (``[-1e306, 1e306]`` at 8 bits
    has zero point 128). Then ``rmin`` and ``rmax`` are first multiplied by
    ``2**-(n_bits + 1)``: every product and difference of the formula scales by that same
    power of two and the final ratio does not change, so the result is the one float64
    arithmetic with an unbounded exponent gives. (Scaling is exact except for parts that
    become subnormal, and such parts are below half an ulp of the other, huge term, so
    they round away in both computations.) Where the plain formula does not overflow it
    is used as it is, so those results are bit-identical to it.

    Example:
        >>> float(asymmetric_zero_point(numpy.float64(-1e306), numpy.float64(1e306), 8, 0))
        128.0
    """
    xp = array_namespace(numpy.asarray(rmin))
    with numpy.errstate(all="ignore"):
        zero = _zero_points(xp, numpy.asarray(rmin, dtype=numpy.float64), numpy.asarray(rmax, dtype=numpy.float64),
                            n_bits, offset)
    return numpy.float64(zero[()])


def _zero_points(xp: Any, rmin: Any, rmax: Any, n_bits: int, offset: int) -> Any:
    """The asymmetric zero points elementwise, as float64 (see :func:`asymmetric_zero_point`).

    Where a product overflows although the zero point is small, the range is first scaled
    by ``2**-(n_bits + 1)``; every entry equals the plain formula wherever that does not
    overflow. ``|rmax * offset| + |rmin * levels| < max(|rmin|, |rmax|) * 2**n_bits <
    2**(1024 + n_bits)``: after the scaling no intermediate reaches ``2**1023``.
    """
    levels = float(2**n_bits - 1 - offset)
    plain = xp.round((rmax * float(-offset) - rmin * levels) / (rmax - rmin))
    factor = 2.0 ** -(n_bits + 1)
    low, high = rmin * factor, rmax * factor
    scaled = xp.round((high * float(-offset) - low * levels) / (high - low))
    return xp.where(xp.isfinite(plain), plain, scaled)
