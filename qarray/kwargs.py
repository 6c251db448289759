"""fill_from_kwargs: build or complete a parameter structure from keyword arguments."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Type, TypeVar, get_type_hints, overload

__all__ = ["fill_from_kwargs"]

T = TypeVar("T")


# Only None may stay None: an object that is given comes back (filled).
@overload
def fill_from_kwargs(obj: None, klass: Type[T], **kwargs: Any) -> Tuple[Optional[T], Dict[str, Any]]: ...


@overload
def fill_from_kwargs(obj: T, klass: Type[T], **kwargs: Any) -> Tuple[T, Dict[str, Any]]: ...


def fill_from_kwargs(obj: Optional[T], klass: Type[T], **kwargs: Any) -> Tuple[Optional[T], Dict[str, Any]]:
    """Fill a parameter set structure from kwargs parameters.

    Takes the kwargs that name fields of ``klass`` (its ``_fields``, else its annotations) into
    ``obj``, creating it if it is None and any field appears. A structure that was
    created or touched must then be complete.

    Args:
        obj: an object of type klass, if None the object is created if any of the type's
            members appear in the kwargs
        klass: the type of object to fill
        kwargs: parameter names and values to fill into an instance of the klass type

    Returns:
        obj: an object of type klass
        kwargs: remaining parameter names and values that were not filled into obj

    Raises:
        TypeError: if a field has a value of the wrong type, or a structure that was
            created or touched misses a required field.

    Example:
        >>> from qarray import UniformQuantizationParameters
        >>> params, rest = fill_from_kwargs(
        ...     None, UniformQuantizationParameters, scale=0.5, zero_point=0, offset=0, other=1)
        >>> float(params.scale), rest
        (0.5, {'other': 1})
    """
    if not isinstance(klass, type):
        raise TypeError(f"klass must be a class, got {type(klass).__name__}")
    if obj is not None and not isinstance(obj, klass):
        raise TypeError(f"obj must be a {klass.__name__} or None, got {type(obj).__name__}")
    fields = getattr(klass, "_fields", None) or tuple(get_type_hints(klass))
    used = {name: value for name, value in kwargs.items() if name in fields}
    remaining = {name: value for name, value in kwargs.items() if name not in fields}
    if not used:
        return obj, remaining
    if obj is None:
        obj = klass.__new__(klass)
        needed = getattr(klass, "_constructor_fields", ())
        absent = [name for name in needed if name not in used]
        if absent:
            raise TypeError(f"missing quantizer parameter(s) {', '.join(absent)} for {klass.__name__}")
        klass.__init__(obj, **{name: used[name] for name in needed})
    for name, value in used.items():
        setattr(obj, name, value)
    required = getattr(klass, "_required_fields", tuple(fields))
    missing = [name for name in required if getattr(obj, name) is None]
    if missing:
        raise TypeError(
            f"missing quantizer parameter(s) {', '.join(missing)} for {klass.__name__} "
            f"(given: {', '.join(used)})"
        )
    return obj, remaining
