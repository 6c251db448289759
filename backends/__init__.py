"""qarray.backends: the registry of array libraries and their quantization kernels.

Built in: ``numpy`` (blocked in-place kernels), ``cupy`` (GPU; CuPy is imported
on first use), ``dask`` (lazy block-wise kernels over NumPy or CuPy chunks; Dask
is imported on first use), ``torch`` (the generic Array API path, with a histogram
count that never sorts) and ``array_api_strict`` (the generic Array API path over its
namespace). Any other Array API library is served by the generic backend automatically.

Example:
    >>> import numpy
    >>> from qarray.backends import backend_for
    >>> backend_for(numpy.zeros(3)).name
    'numpy'
"""

from __future__ import annotations

from typing import Any

from . import registry
from .array_api import ArrayAPIBackend
from .numpy_backend import NumpyBackend
from .registry import (
    available_backends,
    backend_for,
    get_backend,
    register_backend,
)
from .torch_backend import TorchBackend

#: The type of a backend factory, a callable with no arguments that imports a library
#: and returns its backend (an :class:`ArrayAPIBackend`). :func:`register_backend` takes
#: one per name and calls it on the first :func:`get_backend` of that name.
BackendFactory = registry.BackendFactory

__all__ = [
    "ArrayAPIBackend",
    "BackendFactory",
    "NumpyBackend",
    "TorchBackend",
    "available_backends",
    "backend_for",
    "get_backend",
    "register_backend",
]


def _make_cupy() -> ArrayAPIBackend:
    from .cupy_backend import make_cupy_backend

    return make_cupy_backend()


def _make_dask() -> ArrayAPIBackend:
    from .dask_backend import make_dask_backend

    return make_dask_backend()


def _namespace(module: str, compat_module: str) -> Any:
    """Import ``module`` and return its Array API namespace (``compat_module``)."""
    import importlib

    try:
        importlib.import_module(module)
        return importlib.import_module(compat_module)
    except ImportError as error:
        raise ImportError(f"the {module} backend needs {module} installed: {error}") from error


def _make_torch() -> ArrayAPIBackend:
    return TorchBackend(_namespace("torch", "array_api_compat.torch"))


def _make_array_api_strict() -> ArrayAPIBackend:
    return ArrayAPIBackend(_namespace("array_api_strict", "array_api_strict"), name="array_api_strict")


register_backend("numpy", NumpyBackend)
register_backend("cupy", _make_cupy)
register_backend("dask", _make_dask)
register_backend("torch", _make_torch)
register_backend("array_api_strict", _make_array_api_strict)
