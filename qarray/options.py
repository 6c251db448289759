"""QuantizationOptions: how many bits, and which kind of uniform quantization.

The options say nothing about data; together with calibration statistics they
determine the quantization parameters (see :mod:`qarray.params`).
"""

from __future__ import annotations

from typing import Any, Dict

from ._checks import check_bool, check_n_bits
from ._serialization import Serializable, check_fields

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

    Args:
        n_bits: the number of bits, an int from 1 to 53.
        is_signed: allow negative quantized values.
        is_symmetric: symmetric quantization around 0 (zero point 0).
        is_qat: the values are already quantized; infer the scale from them.

    Raises:
        TypeError: if ``n_bits`` is not an int or a flag is not a bool.
        ValueError: if ``n_bits`` is out of range or the combination is invalid.

    Example:
        >>> QuantizationOptions(8, is_signed=True, is_symmetric=True)
        QuantizationOptions(n_bits=8, is_signed=True, is_symmetric=True, is_qat=False, is_narrow=False, is_precomputed_qat=False)
    """

    n_bits: int
    is_signed: bool
    is_symmetric: bool
    is_qat: bool
    is_narrow: bool
    is_precomputed_qat: bool

    _type_tag = "QuantizationOptions"
    _required_fields = ("n_bits",)
    _constructor_fields = ("n_bits",)

    def __init__(
        self, n_bits: int, is_signed: bool = False, is_symmetric: bool = False, is_qat: bool = False
    ) -> None:
        self._n_bits = check_n_bits(n_bits)
        self._flags: Dict[str, bool] = dict.fromkeys(_FLAGS, False)
        self.is_signed = is_signed
        self.is_symmetric = is_symmetric
        self.is_qat = is_qat
        self.validate()

    @property  # type: ignore[no-redef]
    def n_bits(self) -> int:  # noqa: F811
        """The number of bits (an int from 1 to 53)."""
        return self._n_bits

    @n_bits.setter
    def n_bits(self, value: int) -> None:
        self._n_bits = check_n_bits(value)

    def validate(self) -> None:
        """Check that the option combination is valid.

        Fields can be set one by one (``fill_from_kwargs`` does), so the combination is
        checked at construction, by the users of the options and by this method.

        Raises:
            ValueError: if ``is_symmetric`` without ``is_signed``, ``is_qat`` with
                ``is_symmetric``, or ``is_symmetric`` with fewer than 2 bits.
        """
        if self.is_symmetric and not self.is_signed:
            raise ValueError("is_symmetric=True requires is_signed=True (symmetric is signed)")
        if self.is_qat and self.is_symmetric:
            raise ValueError("is_qat=True excludes is_symmetric=True (QAT is never symmetric)")
        if self.is_symmetric and self.n_bits < 2:
            raise ValueError(
                f"symmetric quantization needs n_bits >= 2, got n_bits={self.n_bits}"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantizationOptions):
            return NotImplemented
        return self.n_bits == other.n_bits and self._flags == other._flags

    __hash__ = None  # type: ignore[assignment]  (mutable)

    def __repr__(self) -> str:
        flags = ", ".join(f"{name}={self._flags[name]}" for name in _FLAGS)
        return f"QuantizationOptions(n_bits={self.n_bits}, {flags})"

    def _repr_html_(self) -> str:
        """Rich display in Jupyter (see :mod:`qarray.display`)."""
        from .display import html_repr

        return html_repr(self)

    def copy_opts(self, opts: "QuantizationOptions") -> None:
        """Copy the options from a different structure.

        Args:
            opts (QuantizationOptions): structure to copy parameters from.
        """
        if not isinstance(opts, QuantizationOptions):
            raise TypeError(f"opts must be QuantizationOptions, got {type(opts).__name__}")
        self._n_bits = opts.n_bits
        self._flags = dict(opts._flags)

    @property
    def quant_options(self) -> "QuantizationOptions":
        """A fresh copy of these options."""
        copy = QuantizationOptions(self.n_bits)
        copy.copy_opts(self)
        return copy

    def is_equal(self, opts: "QuantizationOptions", ignore_sign_qat: bool = False) -> bool:
        """Compare two quantization options sets.

        Compares n_bits, is_qat, is_symmetric and, unless ``opts.is_qat`` and
        ``ignore_sign_qat``, is_signed.

        Args:
            opts (QuantizationOptions): options to compare this instance to
            ignore_sign_qat (bool): ignore sign comparison for QAT options

        Returns:
            bool: whether the two quantization options compared are equivalent
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
        """Dump itself to a JSON-ready dict (with a type tag and format version)."""
        return self._tagged({"n_bits": self.n_bits, **self._flags})

    @classmethod
    def load_dict(cls, metadata: Dict[str, Any]) -> "QuantizationOptions":
        """Load options from a dict made by :meth:`dump_dict`.

        Raises:
            ValueError, TypeError: if the dict is malformed or the options invalid.
        """
        fields = check_fields(metadata, cls._type_tag, ("n_bits",) + _FLAGS)
        options = cls(fields["n_bits"])
        for name in _FLAGS:
            setattr(options, name, fields[name])
        options.validate()
        return options


def _flag_property(name: str) -> property:
    def getter(self: QuantizationOptions) -> bool:
        return self._flags[name]

    def setter(self: QuantizationOptions, value: bool) -> None:
        self._flags[name] = check_bool(value, name)

    return property(getter, setter, doc=f"The ``{name}`` option (a bool).")


for _name in _FLAGS:
    setattr(QuantizationOptions, _name, _flag_property(_name))
