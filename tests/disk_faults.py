"""Simulated disk failures for the tests of atomic writing (``dump(path)``, ``save_file``).

``make_step_fail(monkeypatch, step)`` makes one step of writing a file fail as a full
disk would: ``"write"`` (half of the first write reaches the file), ``"flush"``, or any
``os`` function by name (``"fsync"``, ``"replace"``, ``"chmod"``).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

__all__ = ["DISK_FULL", "make_step_fail"]

DISK_FULL = "No space left on device"


def _fail(*args: Any, **kwargs: Any) -> None:
    raise OSError(28, DISK_FULL)


def make_step_fail(monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    """Make ``step`` of the next file writes raise ``OSError(28)`` (undone by ``monkeypatch.undo()``)."""
    if step not in ("write", "flush"):
        monkeypatch.setattr(os, step, _fail)
        return
    real_fdopen = os.fdopen

    def fdopen(*args: Any, **kwargs: Any) -> Any:
        stream = real_fdopen(*args, **kwargs)
        if step == "write":
            real_write = stream.write

            def write(data: Any) -> int:
                real_write(data[: len(data) // 2])  # half of it reaches the temporary file
                raise OSError(28, DISK_FULL)

            stream.write = write
        else:
            stream.flush = _fail
        return stream

    monkeypatch.setattr(os, "fdopen", fdopen)
