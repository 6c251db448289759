"""Module-level loading: ``qarray.load(file)`` and ``qarray.loads(text)`` for every class.

The type tag of a document is looked up in a fixed table of qarray's five
serializable classes; nothing named in a file is ever imported or executed.
"""

from __future__ import annotations

import os
from typing import IO, Any, Dict, Optional, Union

from .backends import get_backend
from .core.checks import describe
from .histogram_stats import HistogramQuantizationStats
from .io.codec import FORMAT_VERSION, MAX_DUMPS_LAZY_BYTES, parse_document
from .io.consistency import check_consistent
from .options import QuantizationOptions
from .params import UniformQuantizationParameters
from .quantized_array import QuantizedArray
from .quantizer import UniformQuantizer
from .stats import MinMaxQuantizationStats

__all__ = ["FORMAT_VERSION", "MAX_DUMPS_LAZY_BYTES", "load", "load_dict", "loads"]

_PLACED = {"MinMaxQuantizationStats", "UniformQuantizer", "QuantizedArray"}
# Each has load_dict(metadata), and those in _PLACED load_dict(metadata, backend=).
_CLASSES: Dict[str, Any] = {
    "QuantizationOptions": QuantizationOptions,
    "MinMaxQuantizationStats": MinMaxQuantizationStats,
    "HistogramQuantizationStats": HistogramQuantizationStats,
    "UniformQuantizationParameters": UniformQuantizationParameters,
    "UniformQuantizer": UniformQuantizer,
    "QuantizedArray": QuantizedArray,
}


def load_dict(metadata: Any, backend: Optional[str] = None) -> Any:
    """Rebuild any qarray object from the dict its ``dump_dict()`` made.

    Args:
        metadata: the dict.
        backend: a backend name (``"cupy"``) to place the arrays with; NumPy by default.

    Raises:
        TypeError, ValueError: for a malformed, unknown or inconsistent document (one
            whose fields contradict each other, like an offset the options do not give
            or quantized values outside the clipping range).
    """
    if not isinstance(metadata, dict):
        raise TypeError(f"a qarray document must be a JSON object, got {type(metadata).__name__}")
    tag = metadata.get("type")
    if not isinstance(tag, str) or tag not in _CLASSES:
        raise ValueError(
            f"unknown document type {describe(tag)}; expected one of {', '.join(sorted(_CLASSES))}"
        )
    klass = _CLASSES[tag]
    if backend is not None:

        get_backend(backend)  # an unknown name is refused even when the document has no array
    loaded = klass.load_dict(metadata, backend=backend) if tag in _PLACED else klass.load_dict(metadata)
    check_consistent(loaded)  # refuse what dumps() refuses to write
    return loaded


def loads(text: Union[str, bytes], backend: Optional[str] = None) -> Any:
    """Load any qarray object from a JSON string made by its ``dumps()``.

    Args:
        text: the JSON document, as str or UTF-8 bytes.
        backend: a backend name (``"cupy"``) to place the arrays with; NumPy by default.

    Returns:
        The object the document describes (of one of qarray's six classes).

    Raises:
        TypeError, ValueError: for text that is not a JSON document (not str or bytes,
            not UTF-8, not JSON, too large or too deeply nested), or a malformed, unknown
            or inconsistent document.
        ImportError: if ``backend`` names a backend whose library is not available here.

    Example:
        >>> import qarray
        >>> qarray.loads(qarray.QuantizationOptions(4).dumps())
        QuantizationOptions(n_bits=4, is_signed=False, is_symmetric=False, is_qat=False, is_narrow=False, is_precomputed_qat=False)
    """  # noqa: E501 (the example's output is one repr line)
    return load_dict(parse_document(text), backend=backend)


def load(file: Union[IO[str], str, os.PathLike[str]], backend: Optional[str] = None) -> Any:
    """Load any qarray object from a text file object or a path written by ``dump()``.

    Args:
        file: a path (str or path-like), or a readable file object.
        backend: a backend name (``"cupy"``) to place the arrays with; NumPy by default.

    Returns:
        The object the document describes (of one of qarray's six classes).

    Raises:
        TypeError: if ``file`` is neither a path nor a readable file.
        OSError: if the path cannot be opened or read.
        TypeError, ValueError: as :func:`loads`, for what the file holds.
        ImportError: if ``backend`` names a backend whose library is not available here.
    """
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as stream:
            return loads(stream.read(), backend=backend)
    read = getattr(file, "read", None)
    if not callable(read):
        raise TypeError(f"file must be a path or a readable file, got {type(file).__name__}")
    return loads(read(), backend=backend)
