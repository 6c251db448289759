"""Tables of refused inputs: one bad call per row, the exception it must raise and a text
its message must hold (the argument it names)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Type

import pytest

__all__ = ["Case", "assert_refused"]


class Case(NamedTuple):
    """One bad call, the exception type it must raise and a text its message must hold."""

    id: str
    call: Callable[[], Any]
    error: Type[Exception]
    names: str


def assert_refused(case: Case) -> None:
    """Run the call: it must raise exactly ``case.error`` with ``case.names`` in its message."""
    with pytest.raises(Exception) as info:
        case.call()
    error = info.value
    assert type(error) is case.error, f"{type(error).__module__}.{type(error).__name__}: {error}"
    assert case.names in str(error), f"the message does not name {case.names!r}: {error}"
