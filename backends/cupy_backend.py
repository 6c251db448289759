"""The CuPy backend: quantization on NVIDIA GPUs.

CuPy is imported when this backend is first asked for, never at ``import
qarray`` time. Arrays stay on the device they came from; results are
bit-identical to the NumPy backend because the arithmetic is the same float64
sequence, rounded half to even.
"""

from __future__ import annotations

from typing import Any

from .array_api import ArrayAPIBackend

__all__ = ["CupyBackend", "make_cupy_backend"]


class CupyBackend(ArrayAPIBackend):
    """Kernels for CuPy arrays (the generic Array API path on CuPy's namespace)."""

    def __init__(self, cupy_namespace: Any) -> None:
        super().__init__(cupy_namespace, name="cupy")

    def asarray(self, values: Any, device: Any = None) -> Any:
        """Return ``values`` on the GPU: CuPy arrays as they are, others copied once."""
        if self.owns(values):
            return values
        host = self.to_numpy(values)
        if device is None:
            return self.xp.asarray(host)
        with device:
            return self.xp.asarray(host)


def make_cupy_backend() -> CupyBackend:
    """Import CuPy and return its backend.

    Raises:
        ImportError: if CuPy is not installed or no CUDA GPU is visible.
    """
    try:
        import cupy  # noqa: F401  (imported here, on first use, on purpose)
        from array_api_compat import cupy as compat_cupy
    except Exception as error:  # CuPy raises various errors when CUDA is missing
        raise ImportError(f"the cupy backend needs CuPy and a CUDA GPU: {error}") from error
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        raise ImportError(f"the cupy backend found no usable CUDA GPU: {error}") from error
    if n_devices < 1:
        raise ImportError("the cupy backend found no CUDA GPU")
    return CupyBackend(compat_cupy)
