"""The floors of qarray stay apart: each module imports only its own floor and the floors below.

From the bottom:

1. ``qarray.core`` (the rules: checks, dtypes, granularity, the parameter rule, dyadic
   histograms, the display registry): nothing of qarray outside ``qarray.core``;
2. ``qarray.backends`` (the kernels): ``qarray.core`` only;
3. ``qarray.io`` (the JSON codec, file writing, consistency checks), ``qarray.primitives``,
   ``qarray.packing`` and ``qarray.calibration`` (histograms and their range methods): the floors below, never
   the classes, the documents or the display;
4. the classes (``options``, ``stats``, ``histogram_stats``, ``params``, ``quantizer``,
   ``quantized_array``, ``kwargs``, ``streaming``) and the documents (``qarray.documents``):
   everything below, never the display or the plots;
5. the Face (``qarray/__init__.py``, ``__main__.py``, ``cli_onnx.py``, ``display.py``, ``onnx.py``, ``plot.py``).

The check reads each module's source (every import statement, at the top or inside a
function), so an import that climbs a floor cannot come back unnoticed. It also holds
that no circle of imports exists and that at most five imports of qarray's own modules
hide inside functions (the lazy loads of optional backends).
"""

from __future__ import annotations

import ast
import pathlib
from typing import Dict, Iterator, List, Set, Tuple

import pytest

import qarray
import qarray.backends
from qarray.core import rich

FACE = {"qarray", "qarray.__main__", "qarray.cli_onnx", "qarray.display", "qarray.onnx", "qarray.plot"}
CLASSES = {
    "qarray.options",
    "qarray.stats",
    "qarray.histogram_stats",
    "qarray.params",
    "qarray.quantizer",
    "qarray.quantized_array",
    "qarray.kwargs",
    "qarray.streaming",
    "qarray.documents",
    "qarray.safetensors_file",
}
PRIMITIVES = {"qarray.primitives", "qarray.packing"}
MIDDLE_PACKAGES = ("qarray.io", "qarray.calibration")
MAX_IMPORTS_IN_FUNCTIONS = 5


def _modules() -> Dict[str, Tuple[pathlib.Path, bool]]:
    """``{dotted name: (path, is a package)}`` of every module of qarray and qarray.backends."""
    found: Dict[str, Tuple[pathlib.Path, bool]] = {}
    for package in (qarray, qarray.backends):
        root = pathlib.Path(package.__path__[0])
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join([package.__name__] + parts)
            if package is qarray and name.startswith("qarray.backends"):
                continue
            found[name] = (path, is_package)
    return found


MODULES = _modules()


def floor(name: str) -> int:
    """The floor of a module (1 at the bottom), as the module docstring lists them."""
    if name == "qarray.core" or name.startswith("qarray.core."):
        return 1
    if name == "qarray.backends" or name.startswith("qarray.backends."):
        return 2
    if name in PRIMITIVES or any(name == p or name.startswith(p + ".") for p in MIDDLE_PACKAGES):
        return 3
    if name in CLASSES:
        return 4
    if name in FACE:
        return 5
    raise AssertionError(f"{name} is on no floor: add it to tests/test_layers.py")


def _imports(name: str) -> Iterator[Tuple[str, bool]]:
    """``(imported qarray module, inside a function)`` for every import statement of ``name``."""
    path, is_package = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    inside = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(function)
    }
    package = name if is_package else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        for imported in _resolve(package, node):
            if imported in MODULES:
                yield imported, id(node) in inside


def _resolve(package: str, node: ast.AST) -> List[str]:
    """The modules an import statement names, resolved to absolute names (``from . import x``: x)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = package.split(".")
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    names = [f"{prefix}.{alias.name}" for alias in node.names]
    if node.module is None and all(n in MODULES for n in names):
        return names
    return [prefix] + [n for n in names if n in MODULES]


def test_every_module_is_on_a_floor() -> None:
    for name in MODULES:
        assert 1 <= floor(name) <= 5
    assert {"qarray.core.rule", "qarray.primitives", "qarray.quantized_array", "qarray.backends.spec"} <= set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_higher_floor(name: str) -> None:
    own = floor(name)
    climbing = sorted({imported for imported, _ in _imports(name) if floor(imported) > own})
    assert climbing == [], f"{name} (floor {own}) imports {climbing} from a higher floor"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if floor(m) == 3))
def test_the_middle_floor_never_imports_another_middle_package_upward(name: str) -> None:
    """Primitives, calibration and io sit side by side; the primitives import neither, io imports no calibration."""
    imported = {module for module, _ in _imports(name)}
    if name in PRIMITIVES:
        assert not {m for m in imported if m.startswith(("qarray.calibration", "qarray.io"))}
    if name.startswith("qarray.io"):
        assert not {m for m in imported if m.startswith(("qarray.calibration", "qarray.primitives"))}


def test_documents_never_import_the_display() -> None:
    assert not {m for m, _ in _imports("qarray.documents")} & {"qarray.display", "qarray.plot"}


def test_no_import_cycle() -> None:
    graph: Dict[str, Set[str]] = {name: {m for m, _ in _imports(name) if m != name} for name in MODULES}
    state: Dict[str, int] = {}

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target] if target in path else [node, target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, path + [target])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])


def test_few_imports_hide_inside_functions() -> None:
    hidden = sorted((name, imported) for name in MODULES for imported, inside in _imports(name) if inside)
    assert len(hidden) <= MAX_IMPORTS_IN_FUNCTIONS, hidden


def test_the_checks_see_climbing_and_relative_imports() -> None:
    """The resolution itself: relative, absolute and from-package imports are all recognised."""
    for source, expected in (
        ("from ..display import html_repr", "qarray.display"),
        ("from .. import plot", "qarray.plot"),
        ("import qarray.quantizer", "qarray.quantizer"),
        ("def f():\n    from qarray import quantizer", "qarray.quantizer"),
    ):
        found = {m for node in ast.walk(ast.parse(source)) for m in _resolve("qarray.core", node)}
        assert expected in found, source


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
        assert rich.render_html.dispatch(cls) is qarray.display.html_repr, cls.__name__


def test_an_object_without_a_renderer_shows_its_escaped_repr() -> None:
    class Odd:
        def __repr__(self) -> str:
            return "<script>"

    assert rich.render_html(Odd()) == "<pre>&lt;script&gt;</pre>"
