"""Array namespaces: the one module of qarray that talks to array-api-compat.

Everything that asks "which library does this array belong to, on which
device does it live, and how do I get a NumPy copy of it" goes through here,
so that the rest of the core stays free of library-specific code. Detection
goes through array-api-compat, which looks libraries up in ``sys.modules``
and therefore never imports one that the caller has not imported already.
"""

from __future__ import annotations

import numbers
import sys
from typing import Any, Optional

import numpy
from array_api_compat import array_namespace as _compat_namespace
from array_api_compat import device as _compat_device
from array_api_compat import is_array_api_obj, is_dask_array, is_numpy_array

from ._checks import describe

__all__ = [
    "ArrayLike",
    "array_namespace",
    "as_array",
    "device_of",
    "is_array",
    "is_lazy",
    "library_name",
    "to_numpy",
]

ArrayLike = Any
"""Any array of an Array API library, or a Python number or (nested) list."""


def is_array(value: object) -> bool:
    """Return True for an array of any Array API library (NumPy included)."""
    return is_array_api_obj(value) and not isinstance(value, numbers.Number)


def is_lazy(array: object) -> bool:
    """Return True for arrays whose values are only known once computed (Dask)."""
    return is_dask_array(array)


def array_namespace(*arrays: Any) -> Any:
    """Return the Array API namespace shared by ``arrays``.

    Raises:
        TypeError: if the arrays come from different libraries, or one is not an array.
    """
    try:
        return _compat_namespace(*arrays)
    except TypeError as error:
        kinds = ", ".join(sorted({type(a).__module__ + "." + type(a).__name__ for a in arrays}))
        raise TypeError(
            f"arrays must all come from one array library, got {kinds}: {error}"
        ) from None


def device_of(array: Any) -> Any:
    """Return the device ``array`` lives on (``"cpu"`` for NumPy)."""
    return _compat_device(array)


def library_name(xp: Any) -> str:
    """Return the short name of the library behind namespace ``xp`` (``"numpy"``, ``"cupy"``)."""
    name = getattr(xp, "__name__", type(xp).__name__)
    if name.startswith("array_api_compat."):
        name = name[len("array_api_compat.") :]
    return name.split(".")[0] if not name.startswith("dask") else "dask"


def as_array(value: Any, argument: str, kind: Optional[str] = None) -> Any:
    """Return ``value`` as an array: arrays pass through, Python numbers and lists become NumPy.

    Args:
        value: an array, or a Python number or (nested) list of numbers.
        argument: the argument's name, for error messages.
        kind: for Python input, ``"float"`` makes float64 and ``"int"`` makes int64
            (refusing non-integral numbers); None keeps NumPy's choice.

    Raises:
        TypeError: if ``value`` is neither an array nor Python numbers of the right kind,
            or is a NumPy masked array (or a Dask array of them): qarray has no notion of
            a mask, and would otherwise calibrate on and quantize the hidden values.
    """
    if is_array(value) and not isinstance(value, numpy.generic):
        _refuse_masked(value, argument)
        return value
    if isinstance(value, (numbers.Number, list, tuple)) and not isinstance(value, str):
        try:
            converted = numpy.asarray(value)
        except (ValueError, TypeError) as error:
            raise TypeError(
                f"{argument} must be an array or a (nested) list of numbers, got {describe(value)}: {error}"
            ) from None
        if converted.dtype.kind not in "iuf" or (kind == "int" and converted.dtype.kind == "f"):
            wanted = "integers" if kind == "int" else "real numbers"
            raise TypeError(f"{argument} must hold {wanted}, got {converted.dtype} from {describe(value)}")
        if kind == "float":
            return converted.astype(numpy.float64)
        if kind == "int":
            return converted.astype(numpy.int64)
        return converted
    raise TypeError(
        f"{argument} must be an array (NumPy, CuPy or any Array API library) or a list of "
        f"numbers, got {type(value).__name__}"
    )


def _refuse_masked(value: Any, argument: str) -> None:
    """Raise TypeError if ``value`` is a NumPy masked array or a Dask array of them.

    ``numpy.ma`` is looked up in ``sys.modules``, never imported: when nothing has
    imported it, no masked array can exist.
    """
    ma = sys.modules.get("numpy.ma")
    if ma is None:
        return
    masked = isinstance(value, ma.MaskedArray) or (
        is_dask_array(value) and isinstance(getattr(value, "_meta", None), ma.MaskedArray)
    )
    if masked:
        raise TypeError(
            f"{argument} must not be a masked array (got {type(value).__module__}."
            f"{type(value).__name__}): qarray ignores masks and would use the hidden values; "
            f"pass {argument}.compressed() for the visible values only, or "
            f"{argument}.filled(fill_value) to choose what hidden entries become"
        )


def to_numpy(array: Any) -> numpy.ndarray:
    """Return a NumPy copy of ``array`` on the host: the one place data leaves its device.

    NumPy arrays come back as they are (no copy). Dask arrays are computed first.
    """
    if is_numpy_array(array):
        return numpy.asarray(array)
    if is_dask_array(array):
        return to_numpy(array.compute())
    getter = getattr(array, "get", None)
    if callable(getter) and type(array).__module__.startswith("cupy"):
        return numpy.asarray(getter())
    try:
        return numpy.array(numpy.from_dlpack(array), copy=True)
    except (BufferError, RuntimeError, TypeError, ValueError):
        pass
    cpu = getattr(array, "cpu", None)  # PyTorch tensors on an accelerator
    if callable(cpu):
        try:
            return numpy.asarray(cpu().detach().numpy())
        except (NotImplementedError, RuntimeError, TypeError) as error:  # meta tensors, bfloat16
            raise TypeError(
                f"cannot copy a {type(array).__name__} of dtype {getattr(array, 'dtype', '?')} "
                f"on device {getattr(array, 'device', '?')} to the host as a NumPy array: {error}"
            ) from None
    raise TypeError(f"cannot copy a {type(array).__name__} to the host as a NumPy array")
