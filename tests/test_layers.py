"""The layers stay apart: the classes and everything below them never import the Face.

``qarray/__init__.py``, ``__main__.py``, ``display.py`` and ``plot.py`` are the top
floor; every other module of ``qarray`` and ``qarray.backends`` reaches the display
only through the registry in ``qarray.core.rich`` that ``qarray.display`` fills. The
check reads the modules' source (every import statement, at the top or inside a
function), so a cycle cannot come back unnoticed.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Iterator, List, Tuple

import pytest

import qarray
import qarray.backends
from qarray.core import rich as _rich

FACE = {"__init__", "__main__", "display", "plot"}
FORBIDDEN = {"qarray.display", "qarray.plot"}


def _lower_modules() -> List[Tuple[str, pathlib.Path]]:
    """``(dotted name, path)`` of every module below the Face."""
    modules = []
    for package in (qarray, qarray.backends):
        for path in sorted(pathlib.Path(package.__path__[0]).glob("*.py")):
            if package is qarray and path.stem in FACE:
                continue
            name = package.__name__ if path.stem == "__init__" else f"{package.__name__}.{path.stem}"
            modules.append((name, path))
    return modules


def _imported(package: str, tree: ast.AST) -> Iterator[str]:
    """Every module an import statement of ``tree`` names, resolved to its absolute name.

    ``package`` is the package relative imports start from (the module's own package).
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            yield prefix
            yield from (f"{prefix}.{alias.name}" for alias in node.names)


def test_the_modules_below_the_face_are_found() -> None:
    names = [name for name, _ in _lower_modules()]
    for expected in ("qarray.options", "qarray.quantized_array", "qarray.histogram_stats", "qarray.backends.spec"):
        assert expected in names


@pytest.mark.parametrize("name, path", _lower_modules(), ids=lambda value: str(value) if isinstance(value, str) else "")
def test_no_class_module_imports_display_or_plot(name: str, path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found = sorted({imported for imported in _imported(package, tree) if imported in FORBIDDEN})
    assert found == [], f"{name} imports {found}: go through qarray.core.rich instead"


def test_the_resolution_of_imports_sees_a_forbidden_one() -> None:
    """The check itself: relative, absolute and from-package imports are all recognised."""
    for source in (
        "from .display import html_repr",
        "from . import plot",
        "import qarray.display",
        "def f():\n    from qarray import display",
    ):
        assert FORBIDDEN & set(_imported("qarray", ast.parse(source))), source
    assert FORBIDDEN & set(_imported("qarray.backends", ast.parse("from ..display import summary")))
    assert not FORBIDDEN & set(_imported("qarray", ast.parse("from ._rich import render_html")))
    assert not FORBIDDEN & set(_imported("qarray.backends", ast.parse("from .display import x")))


def test_display_registers_a_renderer_for_every_class() -> None:
    classes = (
        qarray.QuantizationOptions,
        qarray.MinMaxQuantizationStats,
        qarray.HistogramQuantizationStats,
        qarray.UniformQuantizationParameters,
        qarray.UniformQuantizer,
        qarray.QuantizedArray,
    )
    for cls in classes:
        assert _rich.render_html.dispatch(cls) is qarray.display.html_repr, cls.__name__


def test_an_object_without_a_renderer_shows_its_escaped_repr() -> None:
    class Odd:
        def __repr__(self) -> str:
            return "<script>"

    assert _rich.render_html(Odd()) == "<pre>&lt;script&gt;</pre>"
