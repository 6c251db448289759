"""Every Python block of README.md and of the documentation pages (``docs/**/*.md``) runs as written.

Each ```python block is run by itself, in a fresh namespace and a temporary
working directory, so a reader can copy any one of them: a block defines what it
uses. Blocks that need a CUDA GPU (they mention CuPy) skip when none is visible,
and blocks that import an optional library skip when it is not installed; both
say why. Whatever blocks the README holds are run, new ones included.
"""

from __future__ import annotations

import ast
import doctest
import importlib.util
import io
import os
import re
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
"""The README and every documentation page; ``docs/_build`` (a built site) aside."""
PAGES = [page for page in PAGES if "_build" not in page.parts]

_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def _blocks() -> List[Tuple[str, int, str]]:
    """Return ``(where, line, code)`` for each ```python block of every page, in order."""
    blocks = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(ROOT).as_posix()
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            headings = re.findall(r"^#+ (.+)$", text[: match.start()], re.MULTILINE)
            blocks.append((f"{name}: {headings[-1] if headings else 'top'}", line, match.group(1)))
    return blocks


def _gpu_missing() -> Optional[str]:
    """Why CuPy cannot run here, or None when a CUDA GPU is visible to it."""
    if importlib.util.find_spec("cupy") is None:
        return "cupy is not installed"
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA GPU is visible"
    except Exception as error:  # CUDA driver or runtime errors without a GPU
        return f"no usable CUDA GPU: {error}"
    return None


def _uses_cupy(code: str) -> bool:
    """Whether the code (comments aside) names CuPy: ``import cupy`` or ``backend="cupy"``."""
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.NAME and token.string == "cupy":
            return True
        if token.type == tokenize.STRING and token.string.strip("\"'") == "cupy":
            return True
    return False


def _missing_imports(code: str) -> List[str]:
    """The top-level modules ``code`` imports that are not installed here."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return sorted(name for name in names if importlib.util.find_spec(name) is None)


def _needs(code: str) -> List[str]:
    """Optional libraries a block uses without importing them by name (``qarray.plot``)."""
    return ["matplotlib"] if re.search(r"\bqarray\.plot\b|\bplot_\w+\(", code) else []


def _run_doctest(code: str, name: str) -> None:
    """Run a ``>>>`` block as a doctest (NumPy's array reprs compared as printed)."""
    test = doctest.DocTestParser().get_doctest(code, {"__name__": "__readme__"}, name, name, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    out: List[str] = []
    runner.run(test, out=out.append)
    assert runner.failures == 0, "".join(out)


BLOCKS = _blocks()


def test_the_readme_has_python_blocks():
    in_readme = [block for block in BLOCKS if block[0].startswith("README.md")]
    assert len(in_readme) >= 5, f"expected the README's usage examples, found {len(in_readme)} python blocks"


@pytest.mark.parametrize("heading, line, code", BLOCKS, ids=[f"line{line}-{heading}" for heading, line, _ in BLOCKS])
def test_readme_block_runs(heading, line, code, tmp_path, monkeypatch):
    interactive = code.lstrip().startswith(">>>")  # an interactive session: its outputs are checked too
    source = doctest.script_from_examples(code) if interactive else code
    if _uses_cupy(source):
        reason = _gpu_missing()
        if reason:
            pytest.skip(f"block at line {line} ({heading}) needs a CUDA GPU with CuPy: {reason}")
    missing = _missing_imports(source) + [name for name in _needs(source) if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"block at line {line} ({heading}) needs {', '.join(missing)}, not installed here")
    monkeypatch.chdir(tmp_path)
    if importlib.util.find_spec("matplotlib") is not None:
        import matplotlib

        matplotlib.use("Agg")  # no window, whatever the machine's default
    if interactive:
        _run_doctest(code, f"{heading} (block at line {line})")
        return
    compiled = compile(code, f"{heading} (block at line {line})", "exec")
    try:
        exec(compiled, {"__name__": "__readme__"})
    finally:
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")


def test_qarray_plot_is_available_after_import_qarray_alone():
    """``qarray.plot`` needs no import of its own, and ``import qarray`` leaves matplotlib alone."""
    code = textwrap.dedent(
        """
        import sys
        import qarray
        print("matplotlib" in sys.modules)
        print(qarray.plot.plot_grid.__name__)
        print("matplotlib" in sys.modules)
        try:
            qarray.no_such_name
        except AttributeError as error:
            print(error)
        """
    )
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:4] == [
        "False",
        "plot_grid",
        "False",
        "module 'qarray' has no attribute 'no_such_name'",
    ]
