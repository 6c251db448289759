"""MinMaxQuantizationStats: calibration statistics (range and, for QAT, unique values).

Statistics are computed by the backend of the calibration array, on its device.
``rmin`` and ``rmax`` are read back to the host once, when they are computed or
(for streaming updates) first read; ``uvalues`` stay in the calibration array's
library and on its device.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy

from ._checks import check_optional_real
from ._namespace import array_namespace, as_array, is_array, to_numpy
from ._serialization import Serializable, check_fields, decode_array, decode_float, encode_array

__all__ = ["MinMaxQuantizationStats", "NAN_POLICIES"]

NAN_POLICIES = ("raise", "omit")
"""What calibration does with NaN and ±Inf: refuse them (default) or leave them out."""


class MinMaxQuantizationStats(Serializable):
    """Calibration set statistics.

    Stores the minimum and maximum of the calibration data, which determine the
    quantization range, and optionally the sorted unique values rounded to two
    decimals (``uvalues``), which QAT scale inference uses.

    Args:
        rmax: the largest calibration value.
        rmin: the smallest calibration value.
        uvalues: the sorted unique calibration values rounded to 2 decimals.

    Example:
        >>> import numpy
        >>> stats = MinMaxQuantizationStats()
        >>> stats.compute_quantization_stats(numpy.array([0.5, -1.0, 2.0]))
        >>> float(stats.rmin), float(stats.rmax)
        (-1.0, 2.0)
    """

    rmax: Optional[float]
    rmin: Optional[float]
    uvalues: Optional[Any]

    _type_tag = "MinMaxQuantizationStats"
    _required_fields = ("rmax", "rmin")

    def __init__(
        self,
        rmax: Optional[float] = None,
        rmin: Optional[float] = None,
        uvalues: Optional[Any] = None,
    ) -> None:
        self._rmax: Optional[numpy.float64] = None
        self._rmin: Optional[numpy.float64] = None
        self._uvalues: Optional[Any] = None
        self.rmax = rmax
        self.rmin = rmin
        self.uvalues = uvalues

    # -- fields ----------------------------------------------------------------------------

    @property  # type: ignore[no-redef]
    def rmax(self) -> Optional[numpy.float64]:  # noqa: F811
        """The largest calibration value (a host float64), or None before calibration."""
        return self._rmax

    @rmax.setter
    def rmax(self, value: Optional[float]) -> None:
        self._rmax = check_optional_real(_host_scalar(value), "rmax")

    @property  # type: ignore[no-redef]
    def rmin(self) -> Optional[numpy.float64]:  # noqa: F811
        """The smallest calibration value (a host float64), or None before calibration."""
        return self._rmin

    @rmin.setter
    def rmin(self, value: Optional[float]) -> None:
        self._rmin = check_optional_real(_host_scalar(value), "rmin")

    @property  # type: ignore[no-redef]
    def uvalues(self) -> Optional[Any]:  # noqa: F811
        """Sorted unique calibration values rounded to 2 decimals, or None if not computed."""
        return self._uvalues

    @uvalues.setter
    def uvalues(self, value: Optional[Any]) -> None:
        if value is not None:
            value = as_array(value, "uvalues", kind="float")
            xp = array_namespace(value)
            if not xp.isdtype(value.dtype, "real floating") or value.ndim != 1:
                raise TypeError(
                    f"uvalues must be a 1-d float array, got {value.ndim}-d {value.dtype}"
                )
        self._uvalues = value

    # -- calibration -----------------------------------------------------------------------

    def compute_quantization_stats(
        self, values: Any, nan_policy: str = "raise", with_uvalues: bool = True
    ) -> None:
        """Compute the calibration set quantization statistics.

        Sets ``rmin``/``rmax`` to the min and max of ``values`` (read back to the host
        once) and, when ``with_uvalues``, ``uvalues`` to the sorted unique values rounded
        to 2 decimals in float64 (on ``values``' device).

        Args:
            values: floating-point calibration data of any array library.
            nan_policy: ``"raise"`` refuses NaN and ±Inf; ``"omit"`` leaves them out.
            with_uvalues: compute ``uvalues`` too (it costs a sort; only QAT uses it).

        Raises:
            TypeError: if ``values`` is not a floating-point array.
            ValueError: if it is empty, holds NaN/±Inf under ``"raise"``, or holds no
                finite value under ``"omit"``.
        """
        from .backends import backend_for

        omit = _check_nan_policy(nan_policy)
        values = as_array(values, "values", kind="float")
        backend = backend_for(values)
        _check_calibration_values(values, backend)
        rmin, rmax = _read_range(values, backend, omit)
        self._rmin, self._rmax = rmin, rmax
        self._uvalues = backend.unique_rounded(values, omit_nonfinite=omit) if with_uvalues else None

    @property
    def quant_stats(self) -> "MinMaxQuantizationStats":
        """A fresh copy of these statistics (``uvalues`` is shared, never modified in place)."""
        copy = MinMaxQuantizationStats()
        copy.copy_stats(self)
        return copy

    def copy_stats(self, stats: "MinMaxQuantizationStats") -> None:
        """Copy the statistics from a different structure.

        Args:
            stats (MinMaxQuantizationStats): structure to copy statistics from.
        """
        if not isinstance(stats, MinMaxQuantizationStats):
            raise TypeError(f"stats must be MinMaxQuantizationStats, got {type(stats).__name__}")
        self._rmax, self._rmin, self._uvalues = stats.rmax, stats.rmin, stats.uvalues

    def check_is_uniform_quantized(self, options: Any) -> bool:
        """Check if these statistics correspond to uniformly quantized values.

        False if there are more than ``2**n_bits`` unique values or just one; otherwise
        True iff every difference between consecutive unique values is (within
        ``rtol=1e-5, atol=0.02``) an integer multiple of the smallest one.

        Args:
            options (QuantizationOptions): used to quantize the values

        Returns:
            bool: check result.

        Raises:
            ValueError: if ``uvalues`` were not computed.
        """
        if self.uvalues is None:
            raise ValueError(
                "check_is_uniform_quantized needs uvalues; compute the statistics with "
                "with_uvalues=True"
            )
        uvalues = self.uvalues
        xp = array_namespace(uvalues)
        count = int(uvalues.shape[0])
        if count > 2**options.n_bits or count == 1:
            return False
        steps = xp.sort(xp.unique_values(uvalues[1:] - uvalues[:-1]))
        smallest = steps[0]
        requantized = xp.round(steps / smallest) * smallest
        close = xp.abs(steps - requantized) <= 0.02 + 1e-5 * xp.abs(requantized)
        return bool(xp.all(close))

    def smallest_step(self) -> numpy.float64:
        """Return the smallest difference between consecutive unique values (QAT scale)."""
        if self.uvalues is None or int(self.uvalues.shape[0]) < 2:
            raise ValueError("the QAT scale needs at least two unique calibration values")
        uvalues = self.uvalues
        xp = array_namespace(uvalues)
        return numpy.float64(to_numpy(xp.min(uvalues[1:] - uvalues[:-1])))

    # -- comparison and serialization ------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MinMaxQuantizationStats):
            return NotImplemented
        return (
            self.rmax == other.rmax
            and self.rmin == other.rmin
            and arrays_equal(self.uvalues, other.uvalues)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        count = None if self.uvalues is None else int(self.uvalues.shape[0])
        return f"MinMaxQuantizationStats(rmin={_fmt(self.rmin)}, rmax={_fmt(self.rmax)}, uvalues={'None' if count is None else f'<{count} values>'})"

    def dump_dict(self) -> Dict[str, Any]:
        """Dump itself to a JSON-ready dict (uvalues copied to the host)."""
        return self._tagged(
            {
                "rmax": _json_float(self.rmax),
                "rmin": _json_float(self.rmin),
                "uvalues": encode_array(self.uvalues),
            }
        )

    @classmethod
    def load_dict(cls, metadata: Dict[str, Any], backend: Optional[str] = None) -> "MinMaxQuantizationStats":
        """Load statistics from a dict made by :meth:`dump_dict`.

        Args:
            metadata: the dict.
            backend: the name of a backend to place ``uvalues`` with (default: NumPy).
        """
        fields = check_fields(metadata, cls._type_tag, ("rmax", "rmin", "uvalues"))
        rmax = decode_float(fields["rmax"], "rmax")
        rmin = decode_float(fields["rmin"], "rmin")
        if (rmax is None) != (rmin is None) or (rmax is not None and rmin > rmax):
            raise ValueError(f"{cls._type_tag}: rmin ({rmin}) and rmax ({rmax}) are inconsistent")
        uvalues = decode_array(fields["uvalues"], "uvalues", ("float64",))
        if uvalues is not None and uvalues.ndim != 1:
            raise ValueError(f"uvalues must be 1-d, got shape {uvalues.shape}")
        stats = cls(rmax=rmax, rmin=rmin)
        stats._uvalues = place(uvalues, backend)
        return stats


# -- helpers shared with the other classes ------------------------------------------------


def place(array: Optional[numpy.ndarray], backend: Optional[str]) -> Any:
    """Return a loaded host array placed with the named backend (NumPy when None)."""
    if array is None or backend is None:
        return array
    from .backends import get_backend

    return get_backend(backend).asarray(array)


def arrays_equal(first: Any, second: Any) -> bool:
    """Return True if both are None, or both are arrays of equal shape, dtype and values."""
    if first is None or second is None:
        return first is None and second is None
    left, right = to_numpy(first), to_numpy(second)
    return left.shape == right.shape and left.dtype == right.dtype and bool(
        numpy.array_equal(left, right)
    )


def _host_scalar(value: Any) -> Any:
    """Return a 0-d array of any library as a host scalar (a documented read-back)."""
    if is_array(value) and not isinstance(value, numpy.generic):
        host = to_numpy(value)
        if host.ndim != 0:
            raise TypeError(f"expected a scalar, got an array of shape {host.shape}")
        return host[()]
    return value


def _fmt(value: Optional[float]) -> str:
    return "None" if value is None else repr(float(value))


def _json_float(value: Optional[numpy.float64]) -> Optional[float]:
    return None if value is None else float(value)


def _check_nan_policy(nan_policy: str) -> bool:
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    return nan_policy == "omit"


def _check_calibration_values(values: Any, backend: Any) -> None:
    if not backend.is_floating(values):
        raise TypeError(
            f"values must be a floating-point array to calibrate on, got dtype {values.dtype}"
        )
    if backend.size(values) == 0:
        raise ValueError(f"values must not be empty to calibrate on, got shape {tuple(values.shape)}")


def _read_range(values: Any, backend: Any, omit: bool) -> Tuple[numpy.float64, numpy.float64]:
    """Compute min/max on the device and read them back once, checking finiteness."""
    low, high = backend.minmax(values, omit_nonfinite=omit)
    rmin = numpy.float64(backend.to_numpy(low))
    rmax = numpy.float64(backend.to_numpy(high))
    if math.isfinite(rmin) and math.isfinite(rmax):
        return rmin, rmax
    if omit:
        raise ValueError("values hold no finite value to calibrate on (all NaN or ±Inf)")
    n_bad = int(backend.to_numpy(backend.count_nonfinite(values)))
    raise ValueError(
        f"values hold {n_bad} non-finite value(s) (NaN or ±Inf) out of {backend.size(values)}; "
        "clean them, or pass nan_policy='omit' to calibrate on the finite values only"
    )

