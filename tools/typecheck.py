"""Type-check qarray with mypy, every module under the name Python imports it by.

``backends/`` is installed as ``qarray.backends`` (``[tool.setuptools.package-dir]``), a
mapping that an editable install makes with an import hook and that plain ``mypy`` cannot
follow: given the files, it would check ``backends/spec.py`` as ``backends.spec`` and fail
to resolve ``from qarray.backends import ...``. So this script imports the installed
``qarray`` and ``qarray.backends``, lists their modules from the packages' own ``__path__``
(the same files the tests run) and hands mypy each file with its module name. mypy's
settings come from ``[tool.mypy]`` in pyproject.toml; extra mypy flags may be given.

Usage (from the repository root, with qarray installed)::

    python tools/typecheck.py [mypy flags, e.g. --no-incremental]

Exit status: 0 when mypy finds nothing, 1 when it reports errors, 2 on a usage error.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from typing import List

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

PACKAGES = ("qarray", "qarray.backends")


def sources(packages: tuple[str, ...] = PACKAGES) -> List[BuildSource]:
    """Each module of ``packages`` and of their subpackages, as a file and its module name."""
    found = []
    for name in packages:
        package = importlib.import_module(name)
        for directory in package.__path__:
            found.append(BuildSource(os.path.join(directory, "__init__.py"), name))
            for info in pkgutil.iter_modules([directory], prefix=f"{name}."):
                leaf = info.name.rpartition(".")[2]
                if info.ispkg:
                    if info.name not in packages:  # qarray.backends is listed on its own
                        found.extend(sources((info.name,)))
                else:
                    found.append(BuildSource(os.path.join(directory, leaf + ".py"), info.name))
    return found


def main(argv: List[str]) -> int:
    targets, options = process_options(argv, require_targets=False)
    if targets:
        print("typecheck.py checks the qarray packages; give mypy flags only, no files", file=sys.stderr)
        return 2
    modules = sources()
    try:
        result = build.build(modules, options)
        messages = result.errors
    except CompileError as error:  # a blocking error (a syntax error, say) stops the build
        messages = error.messages
    for line in messages:
        print(line)
    errors = [line for line in messages if ": error:" in line]
    files = {line.split(":", 1)[0] for line in errors}
    if errors:
        print(f"Found {len(errors)} errors in {len(files)} files (checked {len(modules)} source files)")
        return 1
    print(f"Success: no issues found in {len(modules)} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
