"""Every public name has a docstring that the API reference can render: a summary and its arguments.

Public means the names in ``__all__`` of the modules in ``PUBLIC_MODULES`` and, for the
classes among them, the methods and properties they define themselves (not starting with
``_``). A member a class inherits without overriding is checked on the class that defines
it (the API reference lists it there only). An override is checked like any method: its
``Args:`` section may be short and refer to the base method, but it names every parameter.

The rules checked (Google style, as napoleon reads it):

* a docstring whose first line is a summary (not blank, not a section heading);
* for a function, a method and a class (its constructor's parameters), an ``Args:``
  section naming every parameter but ``self`` and ``cls``. Variadic parameters
  (``*args``, ``**kwargs``) are not required: where they are documented, they are
  written ``*args`` and ``**kwargs``, which this check accepts as well as the bare names.
  Parameters documented together (``rmin, rmax: ...``, which napoleon renders as one
  entry) count as named;
* for a function or method (not a property, not a class) whose return annotation is not
  ``None``, a ``Returns:`` (or ``Yields:``) section;
* no ``Args:`` entry names a parameter the signature does not have.

A type alias (a module-level name that is neither a function, a class nor a module) is
documented with a ``#:`` comment or a string after its assignment in the module that
``__all__`` exports it from; the check reads that module's source for it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

PUBLIC_MODULES = ["qarray", "qarray.onnx", "qarray.display", "qarray.plot", "qarray.backends", "qarray.primitives"]
"""The modules whose ``__all__`` is the public API (as in tests/test_docs_site.py)."""

_SECTION = re.compile(r"^(\s*)([A-Z][A-Za-z ]*):\s*$")
_ENTRY = re.compile(r"^(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?:\([^)]*\))?\s*:")
_ARGS_HEADINGS = {"Args", "Arguments", "Parameters", "Keyword Args", "Keyword Arguments", "Other Parameters"}
_RETURNS_HEADINGS = {"Returns", "Return", "Yields", "Yield"}


def _sections(doc: str) -> Dict[str, List[str]]:
    """The Google-style sections of ``doc``: heading -> the lines indented under it."""
    sections: Dict[str, List[str]] = {}
    lines = inspect.cleandoc(doc).splitlines()
    current: Optional[str] = None
    indent = 0
    for line in lines:
        match = _SECTION.match(line)
        if match and (current is None or len(match.group(1)) <= indent):
            current, indent = match.group(2), len(match.group(1))
            sections.setdefault(current, [])
            continue
        if current is not None:
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                current = None
            else:
                sections[current].append(line)
    return sections


def _documented_args(doc: str, headings: frozenset = frozenset(_ARGS_HEADINGS)) -> List[str]:
    """The parameter names the ``Args:`` (and alike) sections of ``doc`` list."""
    names = []
    for heading, lines in _sections(doc).items():
        if heading not in headings:
            continue
        body = [line for line in lines if line.strip()]
        if not body:
            continue
        entry_indent = min(len(line) - len(line.lstrip()) for line in body)
        for line in body:
            if len(line) - len(line.lstrip()) == entry_indent:
                match = _ENTRY.match(line.strip())
                if match:
                    names.extend(name.strip().lstrip("*") for name in match.group(1).split(","))
    return names


def _public_objects() -> Iterator[Tuple[str, Any, str]]:
    """``(qualified name, object, kind)`` for every public name; kind is function, class, property or data."""
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            target = getattr(module, name)
            full = f"{module_name}.{name}"
            if inspect.ismodule(target):
                continue
            if inspect.isclass(target):
                yield full, target, "class"
                for member_name, member in vars(target).items():
                    if member_name.startswith("_"):
                        continue
                    member_full = f"{full}.{member_name}"
                    if isinstance(member, property):
                        yield member_full, member, "property"
                    elif isinstance(member, (staticmethod, classmethod)):
                        yield member_full, member.__func__, "function"
                    elif inspect.isfunction(member):
                        yield member_full, member, "function"
            elif callable(target) and (inspect.isfunction(target) or inspect.isbuiltin(target)):
                yield full, target, "function"
            else:
                yield full, module, "data"


def _attribute_doc(module: Any, name: str) -> Optional[str]:
    """The ``#:`` comment before, or the string after, the assignment of ``name`` in ``module``'s source."""
    source = Path(inspect.getsourcefile(module)).read_text(encoding="utf-8")
    lines = source.splitlines()
    body = ast.parse(source).body
    for index, node in enumerate(body):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if not any(isinstance(target, ast.Name) and target.id == name for target in targets):
            continue
        following = body[index + 1] if index + 1 < len(body) else None
        if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
            if isinstance(following.value.value, str):
                return following.value.value
        comments = []
        row = node.lineno - 2
        while row >= 0 and lines[row].lstrip().startswith("#:"):
            comments.insert(0, lines[row].lstrip()[2:].strip())
            row -= 1
        return "\n".join(comments) or None
    return None


PUBLIC = list(_public_objects())


def _problems(full: str, target: Any, kind: str) -> List[str]:
    """What the docstring of ``target`` lacks (empty when it has everything)."""
    if kind == "data":
        if not (inspect.isclass(target) or inspect.isfunction(target)):
            name = full.rsplit(".", 1)[1]
            value = getattr(target, name)
            if isinstance(value, (int, float, str)):
                return []  # a constant: documented in the module docstring and its own autodata entry
            doc = _attribute_doc(target, name)
            return [] if doc and doc.strip() else ["no #: comment or docstring at its assignment"]
    doc = target.fget.__doc__ if kind == "property" else target.__doc__
    if not doc or not doc.strip():
        return ["no docstring"]
    first = inspect.cleandoc(doc).splitlines()[0].strip()
    if not first or _SECTION.match(first):
        return ["no summary line"]
    if kind == "property":
        return []
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    required = []
    optional = set()
    for parameter in signature.parameters.values():
        if parameter.name in ("self", "cls"):
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            optional.add(parameter.name)
        else:
            required.append(parameter.name)
    # a dataclass's fields are its constructor's arguments: its Attributes section documents them
    headings = _ARGS_HEADINGS | ({"Attributes"} if dataclasses.is_dataclass(target) else set())
    documented = _documented_args(doc, frozenset(headings))
    problems = []
    missing = [name for name in required if name not in documented]
    if missing:
        problems.append(f"Args lacks {', '.join(missing)}")
    unknown = [name for name in documented if name not in required and name not in optional]
    if unknown:
        problems.append(f"Args names {', '.join(unknown)}, not parameters")
    if kind == "function":
        annotation = signature.return_annotation
        returns_nothing = annotation in (None, "None", inspect.Signature.empty, "NoReturn")
        if not returns_nothing and not set(_sections(doc)) & _RETURNS_HEADINGS:
            problems.append("no Returns section")
    return problems


def test_the_walk_finds_the_public_api() -> None:
    names = {full for full, _, _ in PUBLIC}
    for expected in (
        "qarray.UniformQuantizer.copy_opts",
        "qarray.QuantizedArray",
        "qarray.backends.NumpyBackend.quantize",
        "qarray.backends.BackendFactory",
        "qarray.primitives.quantize",
        "qarray.display.summary",
    ):
        assert expected in names
    assert len(PUBLIC) > 100


def test_the_check_finds_a_missing_argument() -> None:
    def documented(values: Any, bits: int) -> Any:
        """Quantize.

        Args:
            values: the values.
            bits (int): how many.

        Returns:
            Them.
        """

    def undocumented(values: Any, bits: int, *, axis: int = 0) -> Any:
        """Quantize.

        Args:
            values: the values.

        Returns:
            Them.
        """

    assert _problems("documented", documented, "function") == []
    assert _problems("undocumented", undocumented, "function") == ["Args lacks bits, axis"]


@pytest.mark.parametrize("full,target,kind", PUBLIC, ids=[full for full, _, _ in PUBLIC])
def test_public_docstring(full: str, target: Any, kind: str) -> None:
    problems = _problems(full, target, kind)
    assert not problems, f"{full}: {'; '.join(problems)}"
