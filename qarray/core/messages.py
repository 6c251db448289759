"""The checks of calibration input and the errors qarray raises about data: the one home of each text.

Statistics, histograms and quantization all refuse the same kinds of data (not
floating point, empty, NaN or ±Inf, nothing finite); the texts live here so that
every path says the same thing.

Example:
    >>> str(nonfinite_values(3, 10))
    "values hold 3 non-finite value(s) (NaN or ±Inf) out of 10; clean them, or pass nan_policy='omit' to calibrate on the finite values only"
"""  # noqa: E501 (the example's output is one line)

from __future__ import annotations

from typing import Any, Optional

from .checks import describe
from .packing import pack_range

__all__ = [
    "NAN_POLICIES",
    "check_calibration_values",
    "check_nan_policy",
    "no_finite_value",
    "nonfinite_values",
    "not_floating",
    "outside_pack_range",
    "raise_on_problems",
]

NAN_POLICIES = ("raise", "omit")
"""How calibration treats NaN and ±Inf: refuse them (the default) or leave them out."""


def check_nan_policy(nan_policy: Any) -> bool:
    """Return True for ``"omit"``, False for ``"raise"``.

    Raises:
        ValueError: naming the policies, for anything else.
    """
    if not isinstance(nan_policy, str) or nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {describe(nan_policy)}")
    return nan_policy == "omit"


def not_floating(values: Any) -> TypeError:
    """The error for calibration values that are not floating point."""
    return TypeError(f"values must be a floating-point array to calibrate on, got dtype {values.dtype}")


def check_calibration_values(values: Any, backend: Any, *, allow_empty: bool = False) -> bool:
    """Check values to calibrate on with their backend; return whether there is any value.

    Raises:
        TypeError: if ``values`` is not floating point.
        ValueError: if it is empty and ``allow_empty`` is False.
    """
    if not backend.is_floating(values):
        raise not_floating(values)
    if backend.size(values) == 0:
        if allow_empty:
            return False
        raise ValueError(f"values must not be empty to calibrate on, got shape {tuple(values.shape)}")
    return True


def no_finite_value(*, where: str = "values", block: bool = False) -> ValueError:
    """The error for calibration values (or a block of them) without any finite value."""
    subject = f"{where} hold a block with" if block else f"{where} hold"
    return ValueError(f"{subject} no finite value to calibrate on (all NaN or ±Inf)")


def nonfinite_values(count: Optional[int] = None, total: Optional[int] = None, *, where: str = "values") -> ValueError:
    """The error for calibration values holding NaN or ±Inf (counted when the count is known)."""
    held = f"{count} non-finite value(s)" if count is not None else "non-finite value(s)"
    out_of = f" out of {total}" if total is not None else ""
    return ValueError(
        f"{where} hold {held} (NaN or ±Inf){out_of}; clean them, or pass nan_policy='omit' to calibrate on "
        "the finite values only"
    )


def outside_pack_range(count: int, n_bits: int, where: str) -> ValueError:
    """The error for values to pack that do not fit ``n_bits`` bits (``count`` of them, ``where``)."""
    low, high = pack_range(n_bits)
    return ValueError(
        f"q holds {count} value(s) {where} outside [{low}, {high}], the values n_bits={n_bits} can pack "
        f"(signed [{low}, {-low - 1}] or unsigned [0, {high}]); quantize to {n_bits} bits first"
    )


def raise_on_problems(counts: Any, dtype: str, where: str) -> None:
    """Raise the ValueError that a quantization kernel's problem counts call for.

    Args:
        counts: the host pair ``[n_nonfinite, n_outside]`` a backend's ``quantize`` returned.
        dtype: the name of the requested integer dtype.
        where: how many values were checked, for the message (``"out of 1000"``).
    """
    n_nonfinite, n_outside = (int(count) for count in counts)
    if n_nonfinite:
        raise ValueError(
            f"values hold {n_nonfinite} non-finite value(s) (NaN or ±Inf) {where}; "
            "clean them, or pass check_finite=False to skip this check"
        )
    if n_outside:
        raise ValueError(
            f"{n_outside} quantized value(s) {where} do not fit dtype {dtype} (no clipping "
            "applies); use a wider integer dtype"
        )
