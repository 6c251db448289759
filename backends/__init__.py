"""qarray.backends: the registry of array libraries and their quantization kernels.

Built in: ``numpy`` (blocked in-place kernels), ``cupy`` (GPU; CuPy is imported
on first use), ``dask`` (lazy block-wise kernels over NumPy or CuPy chunks; Dask
is imported on first use), ``torch`` and ``array_api_strict`` (the generic Array API path over
their namespaces). Any other Array API library is served by the generic
backend automatically.

Example:
    >>> import numpy
    >>> from qarray.backends import backend_for
    >>> backend_for(numpy.zeros(3)).name
    'numpy'
"""

from __future__ import annotations

from .array_api import ArrayAPIBackend
from .numpy_backend import NumpyBackend
from .registry import (
    BackendFactory,
    available_backends,
    backend_for,
    get_backend,
    register_backend,
)

__all__ = [
    "ArrayAPIBackend",
    "BackendFactory",
    "NumpyBackend",
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


def _generic_factory(module: str, compat_module: str) -> BackendFactory:
    """Return a factory for the generic backend over ``module``'s namespace, imported lazily."""

    def factory() -> ArrayAPIBackend:
        import importlib

        try:
            importlib.import_module(module)
            namespace = importlib.import_module(compat_module)
        except ImportError as error:
            raise ImportError(f"the {module} backend needs {module} installed: {error}") from error
        return ArrayAPIBackend(namespace, name=module)

    return factory


register_backend("numpy", NumpyBackend)
register_backend("cupy", _make_cupy)
register_backend("dask", _make_dask)
register_backend("torch", _generic_factory("torch", "array_api_compat.torch"))
register_backend("array_api_strict", _generic_factory("array_api_strict", "array_api_strict"))
