"""UniformQuantizationParameters: scale, zero point and offset, and how they are chosen.

:func:`choose_parameters` applies the parameter rule (:mod:`qarray.core.rule`,
its one home) to calibrated statistics; the class holds its result and validates
what users set by hand.
"""

from __future__ import annotations

import math
from typing import Any, Dict, FrozenSet, Optional, Tuple, Union

import numpy

from .backends import backend_for
from .core.checks import MAX_N_BITS, check_int, describe
from .core.granularity import is_grid
from .core.namespace import array_namespace, to_numpy
from .core.rich import render_html
from .core.rule import (
    STABILITY_CONST,
    ZERO_POINT_LIMIT,
    asymmetric_zero_point,
    check_scale,
    check_zero_point,
    tensor_parameters,
)
from .io.codec import Serializable, check_fields, decode_array, decode_float, decode_int, encode_array
from .options import QuantizationOptions
from .primitives import choose_block_parameters
from .stats import MinMaxQuantizationStats, arrays_equal

__all__ = [
    "STABILITY_CONST",
    "ZERO_POINT_LIMIT",
    "UniformQuantizationParameters",
    "asymmetric_zero_point",
    "choose_parameters",
]

ZeroPoint = Union[int, numpy.float64, numpy.ndarray]


def choose_parameters(
    options: QuantizationOptions,
    stats: MinMaxQuantizationStats,
    previous_scale: Optional[numpy.float64] = None,
) -> Tuple[numpy.float64, ZeroPoint, int]:
    """Return ``(scale, zero_point, offset)`` for ``options`` and calibrated ``stats``.

    The parameter rule (:func:`qarray.core.rule.tensor_parameters`) on the statistics'
    range, in float64 with round half to even. ``previous_scale`` is kept (asymmetric
    case) only when ``options.is_precomputed_qat``; QAT options without it infer the
    scale from the statistics' unique values when they look uniformly quantized.

    Every range whose width ``rmax - rmin`` is a finite float64 works, up to the ends
    of the float64 range: where an intermediate product of the zero point formula would
    overflow, the range is scaled by a power of two first (see
    :func:`asymmetric_zero_point`), so the numbers are those of the formula and are
    bit-identical to it wherever it does not overflow. An asymmetric range whose width
    itself overflows (``[-1.7e308, 1.7e308]``) has no finite scale by the formula and is
    refused; symmetric quantization and the single-value rule never overflow.

    Raises:
        ValueError: if the statistics are not calibrated, the options are invalid, the
            asymmetric range is wider than float64 holds, or its zero point does not fit
            int64.
    """
    options.validate()
    if stats.rmin is None or stats.rmax is None:
        raise ValueError("stats must be calibrated first (rmin and rmax are None)")
    rmin, rmax = numpy.float64(stats.rmin), numpy.float64(stats.rmax)
    qat_scale = None
    with numpy.errstate(over="ignore"):
        width = rmax - rmin
    if (
        options.is_qat
        and not options.is_precomputed_qat
        and not options.is_symmetric
        and STABILITY_CONST <= width < math.inf
        and stats.uvalues is not None
        and stats.check_is_uniform_quantized(options)
    ):
        qat_scale = stats.smallest_step()
    kept = previous_scale if options.is_precomputed_qat else None
    return tensor_parameters(rmin, rmax, options, previous_scale=kept, qat_scale=qat_scale)


class UniformQuantizationParameters(Serializable):
    """Quantization parameters for uniform quantization.

    Stores the parameters that map real values to integers,
    ``q = rint(x / scale + zero_point)``; they are computed from quantization
    options and calibration statistics, or given by hand.

    With a granularity (``axis`` / ``block_size`` on the options), the computed
    parameters are one per block: ``scale`` (float64), ``zero_point`` and ``offset``
    (int64) are arrays of the parameter grid, in the calibration data's library and
    on its device. Arrays given by hand are checked once (read back) when set.

    Args:
        scale: the quantization step, a finite non-zero float (stored as float64), or
            an array of them (one per block).
        zero_point: the integer the value 0 maps to: an int, an integral float, or an
            array of them (per-channel zero points, broadcast against the values; or
            one per block).
        offset: ``2**(n_bits - 1)`` for signed quantization, else 0 (or one per block).

    Raises:
        TypeError, ValueError: for a scale that is zero or not finite, a zero point that
            is not integral, or an offset that is not an int >= 0.

    Example:
        >>> params = UniformQuantizationParameters(scale=0.5, zero_point=3, offset=0)
        >>> float(params.scale), params.zero_point
        (0.5, 3)
    """

    # The fields, named for fill_from_kwargs (which reads them with get_type_hints); type
    # checkers read the properties below instead.

    # The distinct offsets of per-block parameters (a host set, known when they were
    # computed or set), so quantization knows the union of the blocks' clipping ranges
    # without reading the offset grid back; None per tensor. Not a field.
    _offsets_present: Optional[FrozenSet[int]] = None
    # Per-block parameters computed on a GPU: the check of the blocks, not read back yet
    # (see qarray.primitives.BlockCheck and settle()); None otherwise. Not a field.
    _pending_check: Any = None

    # The fields fill_from_kwargs fills, in order (the properties below declare them).
    _fields = ("scale", "zero_point", "offset")
    _type_tag = "UniformQuantizationParameters"
    _required_fields = ("scale", "zero_point", "offset")

    def __init__(
        self,
        scale: Optional[float] = None,
        zero_point: Optional[Union[int, float, Any]] = None,
        offset: Optional[int] = None,
    ) -> None:
        self._scale: Optional[numpy.float64] = None
        self._zero_point: Optional[ZeroPoint] = None
        self._offset: Optional[int] = None
        self.scale = scale
        self.zero_point = zero_point
        self.offset = offset

    @property
    def scale(self) -> Optional[numpy.float64]:
        """The quantization step (float64), or None before it is computed."""
        return self._scale

    @scale.setter
    def scale(self, value: Optional[float]) -> None:
        self._scale = check_scale(value)

    @property
    def zero_point(self) -> Optional[ZeroPoint]:
        """The zero point (int, float64 or host NumPy array), or None."""
        return self._zero_point

    @zero_point.setter
    def zero_point(self, value: Any) -> None:
        self._zero_point = check_zero_point(value)

    @property
    def offset(self) -> Optional[int]:
        """The offset: ``2**(n_bits - 1)`` when signed, else 0; or None."""
        return self._offset

    @offset.setter
    def offset(self, value: Optional[int]) -> None:
        if is_grid(value):
            host = to_numpy(value)
            if host.dtype.kind not in "iu" or not numpy.all((host >= 0) & (host <= 2 ** (MAX_N_BITS - 1))):
                raise ValueError(f"offset must hold integers between 0 and 2**{MAX_N_BITS - 1}, got {describe(value)}")
            xp = array_namespace(value)
            self._offset = xp.astype(value, xp.int64)
            self._offsets_present = frozenset(int(entry) for entry in numpy.unique(host))
            self._pending_check = None
            return
        if value is not None:
            value = check_int(value, "offset")
            if not 0 <= value <= 2 ** (MAX_N_BITS - 1):
                raise ValueError(f"offset must be between 0 and 2**{MAX_N_BITS - 1}, got {describe(value)}")
        self._offset = value
        self._offsets_present = None
        self._pending_check = None

    def compute_quantization_parameters(
        self, options: QuantizationOptions, stats: MinMaxQuantizationStats
    ) -> None:
        """Compute the quantization parameters from options and calibrated statistics.

        Args:
            options (QuantizationOptions): quantization options set
            stats (MinMaxQuantizationStats): calibrated statistics for quantization

        Raises:
            ValueError: if the statistics are not calibrated or the options invalid.
        """
        if not isinstance(options, QuantizationOptions):
            raise TypeError(f"options must be QuantizationOptions, got {type(options).__name__}")
        if not isinstance(stats, MinMaxQuantizationStats):
            raise TypeError(f"stats must be MinMaxQuantizationStats, got {type(stats).__name__}")
        if is_grid(stats.rmin) or is_grid(stats.rmax):

            previous = self._scale if is_grid(self._scale) else None
            self._scale, self._zero_point, self._offset, check = choose_block_parameters(
                stats.rmin, stats.rmax, options, previous_scale=previous
            )
            self._offsets_present, self._pending_check = check.offsets, (None if check.offsets else check)
            return
        self._scale, self._zero_point, self._offset = choose_parameters(options, stats, self._scale)
        self._offsets_present = None
        self._pending_check = None

    @property
    def is_per_block(self) -> bool:
        """True when the parameters are grids (one set per block: per channel or per group)."""
        return is_grid(self._scale)

    def settle(self) -> None:
        """Check per-block parameters computed on a GPU, if not done yet (one read-back).

        Per-block parameters are checked when computed where reading back is free; on a
        GPU the check waits until something reads back: a checked quantization, a
        document, a dtype that needs the blocks' offsets. This does it now. A no-op
        otherwise.

        Raises:
            ValueError: if a block's range is not finite or gives no valid parameters
                (as computing them on the host raises).
        """
        check = self._pending_check
        if check is not None:
            self._offsets_present = check.read()
            self._pending_check = None

    def copy_params(self, params: UniformQuantizationParameters) -> None:
        """Copy the parameters from a different structure.

        Args:
            params (UniformQuantizationParameters): parameter structure to copy

        Raises:
            TypeError: if ``params`` is not a UniformQuantizationParameters.
        """
        if not isinstance(params, UniformQuantizationParameters):
            raise TypeError(
                f"params must be UniformQuantizationParameters, got {type(params).__name__}"
            )
        # never share an array between structures: each gets its own copy
        self._scale, self._zero_point, self._offset = (
            _copy_array(params.scale),
            _copy_array(params.zero_point),
            _copy_array(params.offset),
        )
        self._offsets_present = params._offsets_present
        self._pending_check = params._pending_check

    @property
    def quant_params(self) -> UniformQuantizationParameters:
        """A fresh copy of these parameters."""
        copy = UniformQuantizationParameters()
        copy.copy_params(self)
        return copy

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UniformQuantizationParameters):
            return NotImplemented
        return (
            zero_points_equal(self.scale, other.scale)
            and zero_points_equal(self.zero_point, other.zero_point)
            and zero_points_equal(self.offset, other.offset)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        def shown(value: Any) -> str:
            if is_grid(value):
                return f"<array {tuple(value.shape)}>"
            return repr(None if value is None else (float(value) if isinstance(value, numpy.floating) else value))

        return (
            f"UniformQuantizationParameters(scale={shown(self.scale)}, zero_point={shown(self.zero_point)}, "
            f"offset={shown(self.offset)})"
        )

    def _repr_html_(self) -> str:
        """Rich display in Jupyter (the renderer :mod:`qarray.display` registers)."""
        return render_html(self)

    def dump_dict(self) -> Dict[str, Any]:
        """Dump itself to a JSON-ready dict.

        Returns:
            The dict, with a type tag and format version (see :func:`qarray.loads`).

        Raises:
            ValueError: if per-block parameters computed on a GPU fail their check (see
                :meth:`settle`): a document is never written that loading would refuse.
        """
        self.settle()
        scale, offset = self.scale, self.offset
        return self._tagged(
            {
                "scale": encode_array(scale) if is_grid(scale) else (None if scale is None else float(scale)),
                "zero_point": encode_zero_point(self.zero_point),
                "offset": encode_array(offset) if is_grid(offset) else offset,
            }
        )

    @classmethod
    def load_dict(cls, metadata: Dict[str, Any]) -> UniformQuantizationParameters:
        """Load parameters from a dict made by :meth:`dump_dict`.

        Args:
            metadata: the dict.

        Returns:
            The parameters.

        Raises:
            TypeError, ValueError: for a malformed document (a scale, zero point or offset
                of the wrong type, shape or range).
        """
        fields = check_fields(metadata, cls._type_tag, ("scale", "zero_point", "offset"))
        zero_point = fields["zero_point"]
        if isinstance(zero_point, dict):
            zero_point = decode_array(zero_point, "zero_point", ("int64", "float64"), optional=False)
            if zero_point.ndim == 0:  # dump_dict writes scalar zero points as numbers
                raise ValueError("zero_point: an encoded array must have at least one dimension")
        elif type(zero_point) is float:
            zero_point = decode_float(zero_point, "zero_point")
        elif zero_point is not None:
            zero_point = decode_int(zero_point, "zero_point")
        scale, offset = fields["scale"], fields["offset"]
        if isinstance(scale, dict):
            scale = decode_array(scale, "scale", ("float64",))
        else:
            scale = decode_float(scale, "scale")
        if isinstance(offset, dict):
            offset = decode_array(offset, "offset", ("int64",))
        else:
            offset = decode_int(offset, "offset")
        for name, value in (("scale", scale), ("offset", offset)):
            if isinstance(value, numpy.ndarray) and value.ndim == 0:
                raise ValueError(f"{name}: an encoded array must have at least one dimension")
        return cls(scale=scale, zero_point=zero_point, offset=offset)


def zero_points_equal(first: Any, second: Any) -> bool:
    """Compare parameters that may be numbers or arrays (of any library)."""
    if is_grid(first) or is_grid(second):
        return is_grid(first) and is_grid(second) and arrays_equal(first, second)
    return bool(first == second)


def _copy_array(value: Any) -> Any:
    """A copy of an array parameter in its own library; numbers as they are."""
    if not is_grid(value):
        return value
    if isinstance(value, numpy.ndarray):
        return value.copy()

    return backend_for(value).copy(value)


def encode_zero_point(value: Optional[ZeroPoint]) -> Any:
    """Encode a zero point for JSON: ints stay ints, floats floats, arrays exact arrays."""
    if is_grid(value):
        return encode_array(value)
    if isinstance(value, numpy.floating):
        return float(value)
    return value
