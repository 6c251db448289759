"""The examples in docstrings are right: every module's doctests run.

Modules are found in the installed ``qarray`` and ``qarray.backends`` packages and
imported by name (so ``backends/`` is ``qarray.backends``). Examples that need a
GPU or an optional library mark themselves ``# doctest: +SKIP``, or the module is
listed in ``NEEDS`` with its library; a module that cannot be imported here for want
of an optional library is skipped with the reason.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from typing import List

import pytest

import qarray
import qarray.backends


def _module_names() -> List[str]:
    names = []
    for package in (qarray, qarray.backends):
        names.append(package.__name__)
        for info in pkgutil.iter_modules(package.__path__, prefix=f"{package.__name__}."):
            if info.name != "qarray.backends":  # listed as a package of its own above
                names.append(info.name)
    return sorted(set(names))


MODULES = _module_names()

NEEDS = {"qarray.backends.torch_backend": "torch", "qarray.onnx": "onnx"}
"""Modules that import without their library (it loads lazily) but whose examples need it."""


def test_every_module_is_found():
    for name in ("qarray", "qarray.quantized_array", "qarray.streaming", "qarray.backends.numpy_backend"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name, monkeypatch, tmp_path):
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        pytest.skip(f"{name} needs an optional library that is not installed here: {error}")
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    tests = [test for test in doctest.DocTestFinder().find(module, name) if test.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures: List[str] = []
    for test in tests:
        runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)
