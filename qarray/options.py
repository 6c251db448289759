"""QuantizationOptions: how many bits, and which kind of uniform quantization.

The options say nothing about data; together with calibration statistics they
determine the quantization parameters (see :mod:`qarray.params`).
"""

from __future__ import annotations

from typing import Any, Dict

from .core.fields import CheckedAttribute
from .core.granularity import Axis, BlockSize, Granularity
from .core.rich import render_html
from .core.rule import OPTION_CHECKS, check_combination
from .io.codec import Serializable, check_fields

__all__ = ["QuantizationOptions"]

_FLAGS = ("is_signed", "is_symmetric", "is_qat", "is_narrow", "is_precomputed_qat")


class QuantizationOptions(Serializable):
    """Options for quantization.

    Determines the number of bits for quantization and the method of quantization
    of the values. Signed quantization allows negative quantized values. Symmetric
    quantization assumes the float values are distributed symmetrically around
    x=0 and assigns signed values around 0 to the float values (it requires
    ``is_signed`` and at least 2 bits). QAT (quantization aware training)
    quantization assumes the values are already quantized, taking a discrete set
    of values, and assigns these values to integers, computing only the scale (it
    excludes ``is_symmetric``).

    Two fields are set after construction: ``is_narrow`` (clip to
    ``[-offset + 1, 2**n - 1 - offset]``) and ``is_precomputed_qat`` (the scale
    comes from a QAT model and is kept as given).

    The granularity says which values share parameters: per tensor by default;
    ``axis`` keeps one parameter set per index along the given axes (per channel);
    ``block_size`` one per block of consecutive values (per group; see
    :func:`qarray.core.granularity.block_extent`).

    Args:
        n_bits: the number of bits, an int from 1 to 53.
        is_signed: allow negative quantized values.
        is_symmetric: symmetric quantization around 0 (zero point 0).
        is_qat: the values are already quantized; infer the scale from them.
        axis: an int or a tuple of ints: per-channel parameters along these axes.
        block_size: an int (groups along the last axis) or a tuple of block extents
            per axis (``None`` for a whole axis). Exclusive with ``axis``.
        profile: whose integers to compute (see ``docs/profiles.md``): ``"concrete"``
            (default, Concrete ML's float64 rule), ``"onnx"`` (ONNX Runtime's parameters,
            ``QuantizeLinear`` and ``DequantizeLinear``) or ``"torch"`` (torchao's
            ``choose_qparams_affine``, ``quantize_affine`` and ``dequantize_affine``).

    Raises:
        TypeError: if ``n_bits`` is not an int or a flag is not a bool.
        ValueError: if ``n_bits`` is out of range or the combination is invalid.

    Example:
        >>> QuantizationOptions(8, is_signed=True, is_symmetric=True)
        QuantizationOptions(n_bits=8, is_signed=True, is_symmetric=True, is_qat=False, is_narrow=False, is_precomputed_qat=False)
        >>> QuantizationOptions(4, block_size=128).block_size
        128
    """  # noqa: E501 (the example's output is one repr line)

    n_bits = CheckedAttribute[int](OPTION_CHECKS["n_bits"], "The number of bits (an int from 1 to 53).")
    is_signed = CheckedAttribute[bool](
        OPTION_CHECKS["is_signed"], "Allow negative quantized values (offset ``2**(n_bits - 1)``)."
    )
    is_symmetric = CheckedAttribute[bool](
        OPTION_CHECKS["is_symmetric"], "Symmetric quantization around 0 (zero point 0; requires ``is_signed``)."
    )
    is_qat = CheckedAttribute[bool](
        OPTION_CHECKS["is_qat"], "The values are already quantized (quantization aware training)."
    )
    is_narrow = CheckedAttribute[bool](
        OPTION_CHECKS["is_narrow"], "Clip to the narrow range ``[-offset + 1, 2**n - 1 - offset]``."
    )
    is_precomputed_qat = CheckedAttribute[bool](
        OPTION_CHECKS["is_precomputed_qat"], "The scale comes from a QAT model and is kept as given."
    )
    profile = CheckedAttribute[str](
        OPTION_CHECKS["profile"],
        "Whose integers to compute: ``\"concrete\"`` (Concrete ML's float64 rule, the default), "
        "``\"onnx\"`` (ONNX Runtime) or ``\"torch\"`` (torchao / torch.ao).",
    )

    _type_tag = "QuantizationOptions"
    # The fields fill_from_kwargs fills, in order.
    _fields = ("n_bits",) + _FLAGS + ("axis", "block_size", "profile")
    _required_fields = ("n_bits",)
    _constructor_fields = ("n_bits",)

    def __init__(
        self,
        n_bits: int,
        is_signed: bool = False,
        is_symmetric: bool = False,
        is_qat: bool = False,
        *,
        axis: Axis = None,
        block_size: BlockSize = None,
        profile: str = "concrete",
    ) -> None:
        self.n_bits = n_bits
        for name in _FLAGS:
            setattr(self, name, False)
        self.profile = profile
        self._granularity = Granularity(axis, block_size)
        self.is_signed = is_signed
        self.is_symmetric = is_symmetric
        self.is_qat = is_qat
        self.validate()

    def _flags(self) -> Dict[str, bool]:
        return {name: getattr(self, name) for name in _FLAGS}

    @property
    def axis(self) -> Axis:
        """Per-channel granularity: the axes that keep one parameter set per index (or None)."""
        return self._granularity.axis

    @axis.setter
    def axis(self, value: Axis) -> None:
        self._granularity = Granularity(value, self._granularity.block_size)

    @property
    def block_size(self) -> BlockSize:
        """Per-group granularity: the block extent (or None)."""
        return self._granularity.block_size

    @block_size.setter
    def block_size(self, value: BlockSize) -> None:
        self._granularity = Granularity(self._granularity.axis, value)

    @property
    def is_granular(self) -> bool:
        """True with a granularity (``axis`` or ``block_size``): parameters are arrays."""
        return not self._granularity.is_per_tensor

    @property
    def granularity(self) -> Granularity:
        """The granularity (``axis`` and ``block_size`` as one frozen value)."""
        return self._granularity

    def validate(self) -> None:
        """Check that the option combination is valid.

        Fields can be set one by one (``fill_from_kwargs`` does), so the combination is
        checked at construction, by the users of the options and by this method.

        Raises:
            ValueError: if ``is_symmetric`` without ``is_signed``, ``is_qat`` with
                ``is_symmetric``, or ``is_symmetric`` with fewer than 2 bits.
        """
        check_combination(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantizationOptions):
            return NotImplemented
        return (
            self.n_bits == other.n_bits
            and self._flags() == other._flags()
            and self._granularity == other._granularity
            and self.profile == other.profile
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        flags = ", ".join(f"{name}={getattr(self, name)}" for name in _FLAGS)
        granularity = "".join(
            f", {name}={value!r}"
            for name, value in (("axis", self.axis), ("block_size", self.block_size))
            if value is not None
        )
        profile = "" if self.profile == "concrete" else f", profile={self.profile!r}"
        return f"QuantizationOptions(n_bits={self.n_bits}, {flags}{granularity}{profile})"

    def _repr_html_(self) -> str:
        """Rich display in Jupyter (the renderer :mod:`qarray.display` registers)."""
        return render_html(self)

    def copy_opts(self, opts: QuantizationOptions) -> None:
        """Copy the options from a different structure.

        Args:
            opts (QuantizationOptions): structure to copy parameters from.

        Raises:
            TypeError: if ``opts`` is not a QuantizationOptions.
        """
        if not isinstance(opts, QuantizationOptions):
            raise TypeError(f"opts must be QuantizationOptions, got {type(opts).__name__}")
        self.n_bits = opts.n_bits
        for name in _FLAGS:
            setattr(self, name, getattr(opts, name))
        self._granularity = opts._granularity
        self.profile = opts.profile

    @property
    def quant_options(self) -> QuantizationOptions:
        """A fresh copy of these options."""
        copy = QuantizationOptions(self.n_bits)
        copy.copy_opts(self)
        return copy

    def is_equal(self, opts: QuantizationOptions, ignore_sign_qat: bool = False) -> bool:
        """Compare two quantization options sets.

        Compares n_bits, is_qat, is_symmetric and, unless ``opts.is_qat`` and
        ``ignore_sign_qat``, is_signed.

        Args:
            opts (QuantizationOptions): options to compare this instance to
            ignore_sign_qat (bool): ignore sign comparison for QAT options

        Returns:
            bool: whether the two quantization options compared are equivalent

        Raises:
            TypeError: if ``opts`` is not a QuantizationOptions.
        """
        if not isinstance(opts, QuantizationOptions):
            raise TypeError(f"opts must be QuantizationOptions, got {type(opts).__name__}")
        sign_equal = (opts.is_qat and ignore_sign_qat) or opts.is_signed == self.is_signed
        return (
            opts.is_qat == self.is_qat
            and bool(sign_equal)
            and opts.is_symmetric == self.is_symmetric
            and opts.n_bits == self.n_bits
        )

    def dump_dict(self) -> Dict[str, Any]:
        """Dump itself to a JSON-ready dict (with a type tag and format version).

        Returns:
            The dict (see :func:`qarray.loads`).
        """
        return self._tagged(
            {
                "n_bits": self.n_bits,
                **self._flags(),
                "axis": _json_tuple(self.axis),
                "block_size": _json_tuple(self.block_size),
                "profile": self.profile,
            }
        )

    @classmethod
    def load_dict(cls, metadata: Dict[str, Any]) -> QuantizationOptions:
        """Load options from a dict made by :meth:`dump_dict`.

        Args:
            metadata: the dict.

        Returns:
            The options.

        Raises:
            ValueError, TypeError: if the dict is malformed or the options invalid.
        """
        fields = check_fields(
            metadata,
            cls._type_tag,
            ("n_bits",) + _FLAGS + ("axis", "block_size", "profile"),
            since_version_2={"axis": None, "block_size": None},
            since_version_3={"profile": "concrete"},
        )
        options = cls(fields["n_bits"])
        for name in _FLAGS:
            setattr(options, name, fields[name])
        options._granularity = Granularity(_loaded_tuple(fields["axis"]), _loaded_tuple(fields["block_size"]))
        options.profile = fields["profile"]
        options.validate()
        return options


def _json_tuple(value: Any) -> Any:
    """A granularity for JSON: tuples become lists (ints and None stay as they are)."""
    return list(value) if isinstance(value, tuple) else value


def _loaded_tuple(value: Any) -> Any:
    """A granularity read from JSON: lists become tuples (the checks refuse anything else)."""
    return tuple(value) if isinstance(value, list) else value
