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
from array_api_compat import is_array_api_obj, is_dask_array, is_numpy_array, is_torch_array

from .checks import describe

__all__ = [
    "ArrayLike",
    "array_namespace",
    "as_array",
    "check_output",
    "check_supported_array",
    "device_of",
    "is_array",
    "is_bfloat16",
    "is_lazy",
    "library_name",
    "to_numpy",
]

ArrayLike = Any
"""Any array of an Array API library, or a Python number or (nested) list."""


def is_array(value: object) -> bool:
    """Return True for an array of any Array API library (NumPy included)."""
    return is_array_api_obj(value) and not isinstance(value, numbers.Number)


def is_bfloat16(array: object) -> bool:
    """Return True for an array of dtype bfloat16 (torch's), which NumPy lacks.

    Its host copies (:func:`to_numpy`) are float32, which holds every bfloat16 exactly.
    """
    return str(getattr(array, "dtype", "")).rsplit(".", 1)[-1] == "bfloat16"


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
        check_supported_array(value, argument)
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


def check_supported_array(value: Any, argument: str) -> None:
    """Refuse arrays that no kernel can read, with an error naming ``argument``.

    Detection is by duck typing (``is_nested``, ``layout``, dtype names), so PyTorch is
    never imported: sparse and nested tensors, 8- and 4-bit float dtypes, and NumPy
    extension dtypes (ml_dtypes' bfloat16, float8, int4, ...) would otherwise fail deep
    inside a library with an error that does not say which argument is at fault.

    Raises:
        TypeError: for a sparse or nested tensor, or one of those dtypes.
    """
    if is_torch_array(value):
        if getattr(value, "is_nested", False):
            raise TypeError(
                f"{argument} must be a dense tensor, got a nested tensor; pad it into one "
                f"(torch.nested.to_padded_tensor) or pass its components one by one"
            )
        layout = str(getattr(value, "layout", "torch.strided"))
        if layout != "torch.strided" or getattr(value, "is_sparse", False):
            raise TypeError(
                f"{argument} must be a dense (strided) tensor, got layout {layout}; "
                f"convert it with {argument}.to_dense()"
            )
    dtype = getattr(value, "dtype", None)
    name = str(dtype)
    if "float8" in name or "float4" in name:
        raise TypeError(
            f"{argument} has dtype {name}, which qarray does not compute with; convert it to "
            "float32 first (every 8- and 4-bit float converts exactly)"
        )
    if isinstance(dtype, numpy.dtype) and dtype.kind == "V":
        raise TypeError(
            f"{argument} has dtype {dtype.name}, which NumPy classifies as neither floating "
            f"point nor integer (an extension dtype such as ml_dtypes' bfloat16 or int4, or raw "
            f"bytes); convert it with {argument}.astype(numpy.float32) (or an integer dtype) first"
        )


def check_output(out: Any, argument: str = "out") -> None:
    """Refuse an output buffer that cannot take a result element by element.

    Checked before anything is written: besides :func:`check_supported_array`, a buffer
    whose elements share memory (a stride of 0 along an axis longer than 1, as from
    ``expand`` or ``broadcast_to``) and a tensor that requires grad (qarray's results
    carry no gradient; PyTorch refuses in-place writes to such leaves) are refused.

    Raises:
        TypeError: as :func:`check_supported_array`.
        ValueError: for a self-overlapping buffer or one that requires grad.
    """
    if out is None:
        return
    check_supported_array(out, argument)
    if getattr(out, "requires_grad", False) is True:
        raise ValueError(
            f"{argument} must not require grad (qarray's results carry no gradient), got a "
            f"tensor with requires_grad=True; pass a buffer created without it or under torch.no_grad()"
        )
    strides = getattr(out, "strides", None)
    stride = getattr(out, "stride", None)
    if is_torch_array(out) and callable(stride):
        strides = stride()
    shape = getattr(out, "shape", None)
    if isinstance(strides, tuple) and shape is not None and len(strides) == len(shape):
        for extent, step in zip(shape, strides):
            if step == 0 and extent is not None and extent > 1:
                raise ValueError(
                    f"{argument} must not overlap itself, got an array of shape {tuple(shape)} with "
                    f"strides {tuple(strides)} (an expanded or broadcast view, where several "
                    f"elements share one memory location); pass a contiguous copy"
                )


def to_numpy(array: Any) -> numpy.ndarray:
    """Return a NumPy copy of ``array`` on the host: the one place data leaves its device.

    NumPy arrays come back as they are (no copy). Dask arrays are computed first.
    bfloat16 arrays, which NumPy cannot hold, come back as float32 (every value exact).
    """
    if is_numpy_array(array):
        return numpy.asarray(array)
    if is_dask_array(array):
        return to_numpy(array.compute())
    if is_bfloat16(array):
        xp = array_namespace(array)
        return to_numpy(xp.astype(array, xp.float32))
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
        except (NotImplementedError, RuntimeError, TypeError) as error:  # meta tensors
            raise TypeError(
                f"cannot copy a {type(array).__name__} of dtype {getattr(array, 'dtype', '?')} "
                f"on device {getattr(array, 'device', '?')} to the host as a NumPy array: {error}"
            ) from None
    raise TypeError(f"cannot copy a {type(array).__name__} to the host as a NumPy array")
