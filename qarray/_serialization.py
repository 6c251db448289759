"""The JSON format of qarray objects: tags, versions, exact arrays, strict validation.

Every object dumps to a plain JSON object carrying a ``type`` tag and a
``format_version``. Arrays are stored as ``{"dtype", "shape", "data"}`` with the
data as base64 of the little-endian bytes, so every float bit comes back.
Loading never executes anything: the type tag is looked up in a fixed table of
qarray's own classes, dtypes come from an allow-list, and every field is
checked (presence, JSON type, range, size against the bytes given) before an
array is allocated. Malformed input raises ``ValueError`` or ``TypeError``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import tempfile
from typing import IO, Any, Dict, Iterable, Optional, Union

import numpy

from ._namespace import to_numpy

__all__ = [
    "ARRAY_DTYPES",
    "FORMAT_VERSION",
    "MAX_DOCUMENT_CHARS",
    "Serializable",
    "check_fields",
    "decode_array",
    "decode_float",
    "decode_int",
    "encode_array",
    "parse_document",
    "write_text",
]

FORMAT_VERSION = 1
"""The version of the JSON format written by this release (and the only one it reads)."""

ARRAY_DTYPES = (
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
)
"""The dtypes an array in a document may have; anything else is refused."""

MAX_DOCUMENT_CHARS = 1 << 34
"""Documents longer than this (16 Gi characters) are refused before parsing."""

_ENVELOPE = ("type", "format_version")


class Serializable:
    """Gives a class ``dumps()`` and ``dump(file)`` on top of its ``dump_dict()``."""

    _type_tag = ""

    def dump_dict(self) -> Dict[str, Any]:  # pragma: no cover - every subclass defines it
        """Dump itself to a JSON-ready dict."""
        raise NotImplementedError

    def _tagged(self, fields: Dict[str, Any]) -> Dict[str, Any]:
        return {"type": self._type_tag, "format_version": FORMAT_VERSION, **fields}

    def dumps(self) -> str:
        """Dump itself to a JSON string (see :func:`qarray.loads` to load it back)."""
        return json.dumps(self.dump_dict(), allow_nan=False, separators=(",", ":"))

    def dump(self, file: Union[IO[str], str, "os.PathLike[str]"]) -> None:
        """Dump itself to a text file object, or atomically to a path.

        Args:
            file: an open text file, or a path. A path is written through a temporary
                file in the same folder that is flushed, synced and renamed over the
                target, so a crash never leaves a truncated file behind.
        """
        write_text(self.dumps(), file)


def write_text(text: str, file: Union[IO[str], str, "os.PathLike[str]"]) -> None:
    """Write ``text`` to an open text file, or atomically to a path."""
    if isinstance(file, (str, os.PathLike)):
        path = os.fspath(file)
        folder = os.path.dirname(os.path.abspath(path))
        handle, temporary = tempfile.mkstemp(prefix=".qarray-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        return
    write = getattr(file, "write", None)
    if not callable(write):
        raise TypeError(f"file must be a path or a writable text file, got {type(file).__name__}")
    write(text)


def _refuse_constant(token: str) -> None:
    raise ValueError(f"the document holds {token}, which is not a finite JSON number")


def parse_document(text: Any) -> Any:
    """Parse JSON text strictly: no NaN/Infinity tokens, bounded size and nesting.

    Raises:
        TypeError: if ``text`` is not str or bytes.
        ValueError: if it is not valid UTF-8 JSON.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"the document is not valid UTF-8: {error}") from None
    if not isinstance(text, str):
        raise TypeError(f"the document must be a JSON str or bytes, got {type(text).__name__}")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ValueError(f"the document is too large ({len(text)} characters)")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("the document is nested too deeply") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"the document is not valid JSON: {error}") from None


def check_fields(metadata: Any, type_tag: str, names: Iterable[str]) -> Dict[str, Any]:
    """Check a dumped object's envelope and its exact set of fields; return the fields.

    Raises:
        TypeError: if ``metadata`` is not a dict.
        ValueError: on a wrong type tag, an unknown format version, or missing or
            unexpected fields.
    """
    if not isinstance(metadata, dict):
        raise TypeError(
            f"a {type_tag} document must be a JSON object, got {type(metadata).__name__}"
        )
    tag = metadata.get("type")
    if tag != type_tag:
        raise ValueError(f"expected a document of type {type_tag!r}, got type {tag!r}")
    version = metadata.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ValueError(
            f"{type_tag}: format_version must be {FORMAT_VERSION}, got {version!r}"
        )
    expected = set(names)
    present = set(metadata) - set(_ENVELOPE)
    missing = sorted(expected - present)
    extra = sorted(present - expected)
    if missing:
        raise ValueError(f"{type_tag}: missing field(s) {', '.join(missing)}")
    if extra:
        raise ValueError(f"{type_tag}: unexpected field(s) {', '.join(map(str, extra))}")
    return {name: metadata[name] for name in names}


def decode_float(value: Any, argument: str, optional: bool = True) -> Optional[numpy.float64]:
    """Return a JSON number as a finite float64 (``None`` passes when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument} must be a JSON number, got {value!r}")
    try:
        converted = numpy.float64(value)
    except OverflowError:
        raise ValueError(f"{argument} is out of the float64 range: {value!r}") from None
    if not math.isfinite(converted):
        raise ValueError(f"{argument} must be finite, got {value!r}")
    return converted


def decode_int(value: Any, argument: str, optional: bool = True) -> Optional[int]:
    """Return a JSON integer as an int (``None`` passes when ``optional``)."""
    if value is None and optional:
        return None
    if type(value) is not int:
        raise TypeError(f"{argument} must be a JSON integer, got {value!r}")
    return value


def encode_array(array: Any) -> Optional[Dict[str, Any]]:
    """Encode an array of any library (copied to the host) as an exact JSON object."""
    if array is None:
        return None
    host = numpy.ascontiguousarray(to_numpy(array))
    if host.dtype.name not in ARRAY_DTYPES:
        raise TypeError(f"cannot serialize arrays of dtype {host.dtype}")
    little = host.astype(host.dtype.newbyteorder("<"), copy=False)
    return {
        "dtype": host.dtype.name,
        "shape": list(host.shape),
        "data": base64.b64encode(little.tobytes()).decode("ascii"),
    }


def decode_array(
    value: Any, argument: str, dtypes: Iterable[str] = ARRAY_DTYPES, optional: bool = True
) -> Optional[numpy.ndarray]:
    """Decode an array written by :func:`encode_array`, checking it before allocating.

    Args:
        value: the JSON object (or None when ``optional``).
        argument: the field name, for error messages.
        dtypes: the dtype names allowed for this field.
        optional: whether None is accepted.

    Raises:
        TypeError, ValueError: naming ``argument`` and the problem.
    """
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"{argument} must be an encoded array (a JSON object), got {value!r:.80}")
    if set(value) != {"dtype", "shape", "data"}:
        raise ValueError(
            f"{argument} must have exactly the keys dtype, shape and data, got {sorted(value)}"
        )
    dtype_name, shape, data = value["dtype"], value["shape"], value["data"]
    allowed = tuple(dtypes)
    if not isinstance(dtype_name, str) or dtype_name not in allowed:
        raise ValueError(f"{argument}: dtype must be one of {', '.join(allowed)}, got {dtype_name!r:.40}")
    if not isinstance(shape, list) or len(shape) > 32:
        raise ValueError(f"{argument}: shape must be a list of at most 32 sizes, got {shape!r:.80}")
    count = 1
    for extent in shape:
        if type(extent) is not int or extent < 0:
            raise ValueError(f"{argument}: shape entries must be ints >= 0, got {shape!r:.80}")
        count *= extent
    if not isinstance(data, str):
        raise TypeError(f"{argument}: data must be a base64 string, got {type(data).__name__}")
    dtype = numpy.dtype(dtype_name)
    expected_chars = 4 * ((count * dtype.itemsize + 2) // 3)
    if len(data) != expected_chars:
        raise ValueError(
            f"{argument}: data holds {len(data)} base64 characters, but shape {shape} of "
            f"{dtype_name} needs {expected_chars}"
        )
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError(f"{argument}: data is not valid base64") from None
    if len(raw) != count * dtype.itemsize:
        raise ValueError(f"{argument}: data holds {len(raw)} bytes, expected {count * dtype.itemsize}")
    decoded = numpy.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
    return decoded.astype(dtype, copy=True)
