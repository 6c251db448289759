"""qarray: uniform (affine) quantization of arrays, bit-exact on every array library.

The API is that of Concrete ML's quantizers (QuantizationOptions,
MinMaxQuantizationStats, UniformQuantizationParameters, UniformQuantizer,
QuantizedArray, fill_from_kwargs, STABILITY_CONST), written against the Python
Array API standard: NumPy on the CPU, CuPy on NVIDIA GPUs, and any other Array
API library give the same integers, bit for bit, and results stay in the
caller's library and on its device.

Example:
    >>> import numpy, qarray
    >>> qa = qarray.QuantizedArray(8, numpy.linspace(-1.0, 1.0, 5))
    >>> qa.qvalues
    array([  0,  64, 128, 192, 255])
"""

from __future__ import annotations

from . import display
from .core.checks import MAX_N_BITS
from .documents import FORMAT_VERSION, load, loads
from .histogram_stats import HistogramQuantizationStats
from .kwargs import fill_from_kwargs
from .options import QuantizationOptions
from .packing import pack, unpack
from .params import STABILITY_CONST, UniformQuantizationParameters
from .quantized_array import QuantizedArray
from .quantizer import UniformQuantizer
from .safetensors_file import load_file, save_file
from .stats import MinMaxQuantizationStats
from .streaming import calibrate

try:
    from . import backends
except ImportError as error:  # pragma: no cover - only in a checkout that is not installed
    raise ImportError(
        "qarray.backends is missing: qarray is being imported from a source checkout that is "
        "not installed. Install it first (pip install -e .)"
    ) from error

__version__ = "0.1.0"


_LAZY_SUBMODULES = ("onnx", "plot")
"""Submodules imported on first access, each importing its optional library only when used."""


def __getattr__(name: str) -> object:
    """Import the submodules ``qarray.plot`` and ``qarray.onnx`` on first access.

    ``qarray.plot`` and ``qarray.onnx`` work without importing them first while
    ``import qarray`` stays light: the plot helpers import matplotlib, and the ONNX
    functions import onnx, only when one is called.
    """
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, with the lazily imported submodules among them."""
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))


__all__ = [
    "FORMAT_VERSION",
    "HistogramQuantizationStats",
    "MAX_N_BITS",
    "MinMaxQuantizationStats",
    "QuantizationOptions",
    "QuantizedArray",
    "STABILITY_CONST",
    "UniformQuantizationParameters",
    "UniformQuantizer",
    "backends",
    "display",
    "calibrate",
    "fill_from_kwargs",
    "load",
    "load_file",
    "loads",
    "onnx",
    "pack",
    "plot",
    "save_file",
    "unpack",
]
