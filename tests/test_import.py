"""Importing qarray stays light: CuPy, PyTorch and the other optional array libraries
are imported only when the caller uses them, never by qarray itself.

Each check runs in a fresh interpreter, since this test session has imported
those libraries already.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

OPTIONAL_LIBRARIES = ("cupy", "torch", "array_api_strict", "dask")


def _modules_loaded_after(code: str) -> set:
    """Run ``code`` in a fresh interpreter and return the optional libraries it left imported."""
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import sys
        print(",".join(name for name in {OPTIONAL_LIBRARIES!r} if name in sys.modules))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return {name for name in completed.stdout.strip().split(",") if name}


def test_import_qarray_imports_no_optional_library():
    """`import qarray` leaves cupy, torch, array_api_strict and dask out of sys.modules."""
    assert _modules_loaded_after("import qarray") == set()


def test_numpy_quantized_array_imports_no_optional_library():
    """Quantizing, de-quantizing and reloading NumPy data imports no optional library."""
    loaded = _modules_loaded_after(
        """
        import numpy
        import qarray
        qa = qarray.QuantizedArray(8, numpy.linspace(-1.0, 1.0, 9), is_qat=True)
        qa.dequant()
        qarray.loads(qa.dumps())
        qarray.backends.backend_for(numpy.zeros(2))
        """
    )
    assert loaded == set()
