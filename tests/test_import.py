"""Importing qarray stays light: CuPy, PyTorch and the other optional array libraries
are imported only when the caller uses them, never by qarray itself.

Each check runs in a fresh interpreter, since this test session has imported
those libraries already.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

OPTIONAL_LIBRARIES = ("cupy", "torch", "array_api_strict", "dask", "onnx", "onnxruntime")


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
    """`import qarray` leaves cupy, torch, array_api_strict, dask and onnx out of sys.modules."""
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


def test_qarray_onnx_imports_onnx_only_when_used():
    """`import qarray.onnx` (or reading the attribute `qarray.onnx`) does not import onnx."""
    assert _modules_loaded_after("import qarray.onnx") == set()
    assert _modules_loaded_after("import qarray\nqarray.onnx.quantize_weights") == set()


def test_missing_onnx_is_an_import_error_with_the_install_hint():
    """Without onnx, calling a qarray.onnx function says how to install it."""
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(
            """
            import sys
            sys.modules["onnx"] = None  # as if it were not installed
            import qarray.onnx
            try:
                qarray.onnx.quantize_weights(None)
            except ImportError as error:
                print(error)
            """
        )],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert 'pip install "qarray[onnx]"' in completed.stdout
