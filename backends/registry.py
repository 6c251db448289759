"""The backend registry: which kernels serve which array library.

Backends are registered by name with a factory that builds them on first use,
so registering one never imports its library. :func:`backend_for` picks the
backend for an array from the library the array comes from (looked up through
``sys.modules``, never by importing anything); libraries without a registered
backend get the generic Array API backend over their namespace.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional

from qarray.core.namespace import array_namespace, library_name

from .array_api import ArrayAPIBackend

__all__ = [
    "BackendFactory",
    "available_backends",
    "backend_for",
    "get_backend",
    "registered_name",
    "register_backend",
]

BackendFactory = Callable[[], ArrayAPIBackend]
"""A callable with no arguments that imports a library and returns its backend."""

_factories: Dict[str, BackendFactory] = {}
_instances: Dict[str, ArrayAPIBackend] = {}
_generic: Dict[int, ArrayAPIBackend] = {}
_lock = threading.RLock()


def register_backend(name: str, factory: BackendFactory, replace: bool = False) -> None:
    """Register ``factory`` as the maker of the backend called ``name``.

    The factory is called once, on the first :func:`get_backend` of that name (or
    the first array of that library seen by :func:`backend_for`). For arrays to be
    routed to it automatically, ``name`` must be the library's name (``"cupy"``).

    Args:
        name: the backend's name.
        factory: a callable with no arguments returning the backend.
        replace: allow replacing an already registered backend.

    Raises:
        TypeError: if ``name`` is not a string or ``factory`` is not callable.
        ValueError: if ``name`` is taken and ``replace`` is False.

    Example:
        >>> from qarray.backends import register_backend, NumpyBackend
        >>> register_backend("my-numpy", NumpyBackend)
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {factory!r}")
    with _lock:
        if name in _factories and not replace:
            raise ValueError(f"a backend named {name!r} is already registered (pass replace=True)")
        _factories[name] = factory
        _instances.pop(name, None)


def get_backend(name: str) -> ArrayAPIBackend:
    """Return the backend registered as ``name``, building it on first use.

    Args:
        name: the name the backend was registered under (see :func:`available_backends`);
            a backend instance is returned as it is.

    Returns:
        The backend, the same instance on every call with that name.

    Raises:
        TypeError: if ``name`` is neither a string nor a backend, or the registered factory
            returns something that is not an :class:`ArrayAPIBackend`.
        ValueError: if no backend of that name is registered (the message lists them).
        ImportError: if the backend's library (or device) is not available here.
    """
    if isinstance(name, ArrayAPIBackend):
        return name
    if not isinstance(name, str):
        raise TypeError(f"backend must be a backend name (str), got {name!r}")
    with _lock:
        if name in _instances:
            return _instances[name]
        if name not in _factories:
            known = ", ".join(sorted(_factories))
            raise ValueError(f"unknown backend {name!r}; known backends: {known}")
        backend = _factories[name]()
        if not isinstance(backend, ArrayAPIBackend):
            raise TypeError(
                f"the factory of backend {name!r} returned {type(backend).__name__}, "
                "expected an ArrayAPIBackend"
            )
        _instances[name] = backend
        return backend


def backend_for(array: Any) -> ArrayAPIBackend:
    """Return the backend that serves ``array``'s library.

    A registered backend named after the library wins; otherwise the generic Array
    API backend over the array's namespace (one per namespace, cached).

    Args:
        array: an array of any Array API library.

    Returns:
        The backend for ``array``'s library.

    Raises:
        TypeError: if ``array`` is not an array of an Array API library.
        ImportError: if the registered backend of that library cannot be built here
            (see :func:`get_backend`).
    """
    xp = array_namespace(array)
    name = library_name(xp)
    with _lock:
        if name in _factories:
            return get_backend(name)
        backend = _generic.get(id(xp))
        if backend is None:
            backend = _generic[id(xp)] = ArrayAPIBackend(xp, name=name)
        return backend


def registered_name(backend: ArrayAPIBackend) -> Optional[str]:
    """Return the name under which ``backend`` was built by :func:`get_backend`, or None.

    Pickled objects store their backend by this name, so that unpickling finds the
    receiving process's own instance (and its library, device and kernels) again.

    Example:
        >>> registered_name(get_backend("numpy"))
        'numpy'
    """
    with _lock:
        for name, instance in _instances.items():
            if instance is backend:
                return name
    return None


def available_backends() -> List[str]:
    """Return the sorted names of the registered backends that can be used on this machine.

    This builds each backend (importing its library), so it is meant for humans
    and set-up code, not hot paths.

    Returns:
        The names, sorted; backends whose library cannot be imported are left out.
    """
    names = []
    for name in sorted(_factories):
        try:
            get_backend(name)
        except ImportError:
            continue
        names.append(name)
    return names
