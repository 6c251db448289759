"""The documentation site's sources: every public name has an API entry, every page is in a toctree.

The site itself is built by CI with warnings as errors (``sphinx-build -W``); these checks
run without Sphinx, so that a missing entry is caught by the test suite on any machine.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PUBLIC_MODULES = ["qarray", "qarray.onnx", "qarray.display", "qarray.plot", "qarray.backends", "qarray.primitives"]
"""The modules whose ``__all__`` is the public API (the package's submodules are listed in it)."""

_DIRECTIVE = re.compile(r"^\.\. (?:auto(?:class|function|data|module|exception)|py:data)::\s+(\S+)", re.MULTILINE)
_VALUE = re.compile(r"^\.\. py:data::\s+(\S+)\n\s+:value: (.+)$", re.MULTILINE)
"""A constant documented by hand (autodoc would show its type's docstring) with its value."""


def documented() -> set:
    """The names the API reference has an autodoc directive for."""
    return set(_DIRECTIVE.findall((DOCS / "api.md").read_text(encoding="utf-8")))


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_in_the_api_reference(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = documented()
    assert module_name in names, f"docs/api.md has no automodule for {module_name}"
    missing = []
    for name in module.__all__:
        target = getattr(module, name)
        full = f"{module_name}.{name}"
        if inspect.ismodule(target):
            if target.__name__ not in names:
                missing.append(target.__name__)
        elif full not in names:
            missing.append(full)
    assert not missing, f"docs/api.md lacks {', '.join(missing)}"


def test_constants_are_documented_with_their_values() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    found = _VALUE.findall(text)
    assert found, "docs/api.md documents no constant"
    for name, value in found:
        module_name, _, attribute = name.rpartition(".")
        assert repr(getattr(importlib.import_module(module_name), attribute)) == value, name


def test_every_page_is_in_a_toctree() -> None:
    pages = {
        path.relative_to(DOCS).with_suffix("").as_posix()
        for path in DOCS.rglob("*.md")
        if "_build" not in path.parts and path.name != "index.md"
    }
    listed = set()
    for path in DOCS.rglob("*.md"):
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"```\{toctree\}(.*?)```", text, re.DOTALL):
            folder = path.parent.relative_to(DOCS)
            for line in block.splitlines():
                line = line.strip()
                if line and not line.startswith(":"):
                    listed.add((folder / line).as_posix())
    assert not pages - listed, f"pages in no toctree: {sorted(pages - listed)}"


def test_every_notebook_is_rendered() -> None:
    notebooks = {path.stem for path in (DOCS.parent / "notebooks").glob("*.ipynb")}
    text = (DOCS / "notebooks.md").read_text(encoding="utf-8")
    assert notebooks == set(re.findall(r"^notebooks/(\S+)$", text, re.MULTILINE))
