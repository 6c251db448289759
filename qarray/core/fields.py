"""Fields of the classes as descriptors: validated attributes and fields forwarded to a part.

:class:`CheckedAttribute` stores a plain instance attribute and validates what is
assigned; :class:`Forwarded` reads and sets a field of one of the object's parts
(``quantizer.n_bits`` is ``quantizer.options.n_bits``). Both are generic in the field's
type, so type checkers see each field where it is declared.

Example:
    >>> class Box:
    ...     size = CheckedAttribute(check_int, "The size.")
    >>> box = Box()
    >>> box.size = "big"
    Traceback (most recent call last):
    ...
    TypeError: Box.size must be an int, got 'big' (str)
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Optional, TypeVar, overload

from .checks import check_int  # noqa: F401  (the module example uses it)

__all__ = ["CheckedAttribute", "Forwarded"]

T = TypeVar("T")


class _NamedField:
    """A descriptor that knows its name and the ``"Owner.name"`` its messages show."""

    def __init__(self, doc: Optional[str]) -> None:
        self.name = ""
        self.argument = ""
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.argument = f"{owner.__name__}.{name}"


class CheckedAttribute(_NamedField, Generic[T]):
    """An attribute whose assignments are validated, stored as a plain instance attribute.

    The value lives in the instance ``__dict__`` under the attribute's own name, so
    pickling, ``copy`` and ``__dict__``-based state handling see an ordinary attribute;
    only assignment goes through ``check(value, argument)``, which returns the value
    to store or raises ``TypeError``/``ValueError``.

    Args:
        check: the validator, called with the assigned value and ``"Owner.name"``.
        doc: the attribute's docstring.
    """

    def __init__(self, check: Callable[[Any, str], T], doc: Optional[str] = None) -> None:
        super().__init__(doc)
        self.check = check

    @overload
    def __get__(self, instance: None, owner: Optional[type] = None) -> CheckedAttribute[T]: ...

    @overload
    def __get__(self, instance: object, owner: Optional[type] = None) -> T: ...

    def __get__(self, instance: Any, owner: Optional[type] = None) -> Any:
        if instance is None:
            return self
        try:
            return instance.__dict__[self.name]
        except KeyError:
            raise AttributeError(f"{type(instance).__name__!r} object has no attribute {self.name!r}") from None

    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.name] = self.check(value, self.argument)


class Forwarded(_NamedField, Generic[T]):
    """A field of one of the object's parts, read and set on the object itself.

    Reading gives None while the part is None. Setting goes to the part (whose own
    checks apply); an owner may refuse or create a missing part in ``_set_forwarded``.

    Args:
        part: the name of the attribute holding the part (``"options"``).
        doc: the field's docstring.

    Example:
        >>> class Inner:
        ...     size = 3
        >>> class Outer:
        ...     part = Inner()
        ...     size = Forwarded[int]("part", "The part's size.")
        >>> Outer().size
        3
    """

    def __init__(self, part: str, doc: Optional[str] = None) -> None:
        super().__init__(doc)
        self.part = part

    @overload
    def __get__(self, instance: None, owner: Optional[type] = None) -> Forwarded[T]: ...

    @overload
    def __get__(self, instance: object, owner: Optional[type] = None) -> Optional[T]: ...

    def __get__(self, instance: Any, owner: Optional[type] = None) -> Any:
        if instance is None:
            return self
        part = getattr(instance, self.part)
        return None if part is None else getattr(part, self.name)

    def __set__(self, instance: Any, value: Any) -> None:
        # Check the value where it lands, but name the field the caller assigned.
        owner: Any = getattr(instance, self.part, None)
        field: Any = self
        while isinstance(field, Forwarded) and owner is not None:
            field = getattr(type(owner), field.name, None)
            if isinstance(field, Forwarded):
                owner = getattr(owner, field.part, None)
        if isinstance(field, CheckedAttribute):
            value = field.check(value, self.argument)
        setter = getattr(instance, "_set_forwarded", None)
        if setter is not None:
            setter(self.part, self.name, value)
        else:
            setattr(getattr(instance, self.part), self.name, value)
