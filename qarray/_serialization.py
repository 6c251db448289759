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
import io
import json
import math
import os
import stat
import tempfile
from typing import IO, Any, Dict, Iterable, Optional, Union

import numpy

from ._checks import describe
from ._namespace import to_numpy

__all__ = [
    "ARRAY_DTYPES",
    "FORMAT_VERSION",
    "MAX_ARRAY_BYTES",
    "MAX_ARRAY_DIMENSIONS",
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

MAX_ARRAY_BYTES = 1 << 48
"""The largest array a document may claim (256 TiB): larger claims are refused as absurd.

A document also has to carry every byte it claims, so any real array is far smaller;
the bound keeps size arithmetic and shapes with zero-sized axes well inside what
NumPy accepts.
"""

MAX_ARRAY_DIMENSIONS = 32
"""The most dimensions an array in a document may have."""

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

    def dump(self, file: Union[IO[str], IO[bytes], str, "os.PathLike[str]"]) -> None:
        """Dump itself to an open file, or atomically to a path.

        Args:
            file: an open text (or binary) file, or a path. A path is written through a
                temporary file in the same folder that is flushed, synced and renamed
                over the target, so a crash never leaves a truncated file behind and a
                failed write leaves the previous file intact.
        """
        write_text(self.dumps(), file)


def write_text(text: str, file: Union[IO[str], IO[bytes], str, "os.PathLike[str]"]) -> None:
    """Write ``text`` to an open file, or atomically to a path.

    A path is written to a temporary file in the same folder, which is flushed,
    synced to disk and renamed over the target (then the folder is synced, where the
    platform allows it). If anything fails on the way, the temporary file is removed
    and a file already at the path is left as it was. An existing file keeps its
    permission bits.

    Args:
        text: the document.
        file: a path, or an open text or binary file (binary files get UTF-8).

    Raises:
        TypeError: if ``file`` is neither a path nor a writable file.
        OSError: if the file system refuses the write.
    """
    if isinstance(file, (str, os.PathLike)):
        path = os.fspath(file)
        if not isinstance(path, str):
            raise TypeError(f"file must be a str path or an open file, got {type(file).__name__}")
        folder = os.path.dirname(os.path.abspath(path))
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            mode = None
        handle, temporary = tempfile.mkstemp(prefix=".qarray-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            if mode is not None:
                os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        _sync_folder(folder)
        return
    write = getattr(file, "write", None)
    if not callable(write):
        raise TypeError(f"file must be a path or a writable file, got {type(file).__name__}")
    if isinstance(file, (io.RawIOBase, io.BufferedIOBase)) or "b" in str(getattr(file, "mode", "")):
        write(text.encode("utf-8"))
    else:
        write(text)


def _sync_folder(folder: str) -> None:
    """Sync a folder so that a rename in it survives a crash (a no-op where unsupported)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _refuse_constant(token: str) -> None:
    raise ValueError(f"the document holds {token}, which is not a finite JSON number")


def _refuse_duplicates(pairs: Any) -> Dict[str, Any]:
    """Build a JSON object, refusing a key given twice (JSON leaves its meaning open)."""
    result: Dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the document gives the key {describe(key)} twice in one object")
        result[key] = value
    return result


def parse_document(text: Any) -> Any:
    """Parse JSON text strictly: no NaN/Infinity tokens, no duplicate keys, bounded size and nesting.

    Args:
        text: the document, as str or UTF-8 bytes (bytes, bytearray or memoryview).

    Raises:
        TypeError: if ``text`` is not str or bytes.
        ValueError: if it is not valid UTF-8 JSON, or holds NaN/Infinity, a duplicate
            key, an integer too long to convert, or nesting too deep to parse.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"the document is not valid UTF-8: {error}") from None
    if not isinstance(text, str):
        raise TypeError(f"the document must be a JSON str or bytes, got {type(text).__name__}")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ValueError(f"the document is too large ({len(text)} characters)")
    try:
        return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicates)
    except RecursionError:
        raise ValueError("the document is nested too deeply") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"the document is not valid JSON: {error}") from None
    except ValueError as error:  # ours above, or Python's limit on the digits of an int
        raise ValueError(f"the document is not acceptable JSON: {error}") from None


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
        raise ValueError(f"expected a document of type {type_tag!r}, got type {describe(tag)}")
    version = metadata.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ValueError(
            f"{type_tag}: format_version must be {FORMAT_VERSION}, got {describe(version)}"
        )
    expected = set(names)
    present = set(metadata) - set(_ENVELOPE)
    missing = sorted(expected - present)
    extra = sorted(present - expected)
    if missing:
        raise ValueError(f"{type_tag}: missing field(s) {', '.join(missing)}")
    if extra:
        raise ValueError(f"{type_tag}: unexpected field(s) {describe(', '.join(map(str, extra)))}")
    return {name: metadata[name] for name in names}


def decode_float(value: Any, argument: str, optional: bool = True) -> Optional[numpy.float64]:
    """Return a JSON number as a finite float64 (``None`` passes when ``optional``).

    Raises:
        TypeError: if ``value`` is not a JSON number (``true`` and strings included).
        ValueError: if it is out of the float64 range or not finite.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument} must be a JSON number, got {describe(value)}")
    try:
        converted = numpy.float64(value)
    except OverflowError:
        raise ValueError(f"{argument} is out of the float64 range: {describe(value)}") from None
    if not math.isfinite(converted):
        raise ValueError(f"{argument} must be finite, got {describe(value)}")
    return converted


def decode_int(value: Any, argument: str, optional: bool = True) -> Optional[int]:
    """Return a JSON integer as an int (``None`` passes when ``optional``).

    Raises:
        TypeError: if ``value`` is not a JSON integer (``true`` and ``1.0`` included).
    """
    if value is None and optional:
        return None
    if type(value) is not int:
        raise TypeError(f"{argument} must be a JSON integer, got {describe(value)}")
    return value


def encode_array(array: Any) -> Optional[Dict[str, Any]]:
    """Encode an array of any library (copied to the host) as an exact JSON object.

    Raises:
        TypeError: if the array's dtype is not one of :data:`ARRAY_DTYPES` (or has no
            NumPy equivalent, like bfloat16).
    """
    if array is None:
        return None
    try:
        host = numpy.asarray(to_numpy(array), order="C")  # ascontiguousarray makes 0-d 1-d
    except TypeError as error:
        dtype = getattr(array, "dtype", type(array).__name__)
        raise TypeError(f"cannot serialize an array of dtype {dtype}: {error}") from None
    if host.dtype.name not in ARRAY_DTYPES or host.dtype.kind not in "biuf":
        raise TypeError(
            f"cannot serialize arrays of dtype {host.dtype}; supported: {', '.join(ARRAY_DTYPES)}"
        )
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

    The dtype must be one of ``dtypes`` (a subset of :data:`ARRAY_DTYPES`; names are
    never passed to NumPy unchecked), the shape a list of at most
    :data:`MAX_ARRAY_DIMENSIONS` ints >= 0 claiming at most :data:`MAX_ARRAY_BYTES`,
    and the base64 data exactly as long as the shape needs; only then are the bytes
    decoded.

    Args:
        value: the JSON object (or None when ``optional``).
        argument: the field name, for error messages.
        dtypes: the dtype names allowed for this field.
        optional: whether None is accepted.

    Returns:
        A fresh, writeable NumPy array in native byte order (or None).

    Raises:
        TypeError: if a part has the wrong JSON type, naming ``argument``.
        ValueError: if a part has a wrong value, naming ``argument``.
    """
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"{argument} must be an encoded array (a JSON object), got {describe(value)}")
    if set(value) != {"dtype", "shape", "data"}:
        raise ValueError(
            f"{argument} must have exactly the keys dtype, shape and data, got {describe(sorted(value))}"
        )
    dtype_name, shape, data = value["dtype"], value["shape"], value["data"]
    allowed = tuple(name for name in dtypes if name in ARRAY_DTYPES)
    if not isinstance(dtype_name, str):
        raise TypeError(f"{argument}: dtype must be a string, got {describe(dtype_name)}")
    if dtype_name not in allowed:
        raise ValueError(f"{argument}: dtype must be one of {', '.join(allowed)}, got {describe(dtype_name)}")
    if not isinstance(shape, list):
        raise TypeError(f"{argument}: shape must be a list of ints, got {describe(shape)}")
    if len(shape) > MAX_ARRAY_DIMENSIONS:
        raise ValueError(
            f"{argument}: shape must have at most {MAX_ARRAY_DIMENSIONS} dimensions, got {len(shape)}"
        )
    dtype = numpy.dtype(dtype_name)
    count = 1
    claimed = dtype.itemsize  # bytes of the shape with its empty axes left out
    for extent in shape:
        if type(extent) is not int:
            raise TypeError(f"{argument}: shape entries must be ints, got {describe(shape)}")
        if extent < 0:
            raise ValueError(f"{argument}: shape entries must be >= 0, got {describe(shape)}")
        count *= extent
        claimed *= max(extent, 1)
        if claimed > MAX_ARRAY_BYTES:
            raise ValueError(
                f"{argument}: shape {describe(shape)} claims more than {MAX_ARRAY_BYTES} bytes"
            )
    if not isinstance(data, str):
        raise TypeError(f"{argument}: data must be a base64 string, got {type(data).__name__}")
    n_bytes = count * dtype.itemsize
    expected_chars = 4 * ((n_bytes + 2) // 3)
    if len(data) != expected_chars:
        raise ValueError(
            f"{argument}: data holds {len(data)} base64 characters, but shape {describe(shape)} of "
            f"{dtype_name} needs {expected_chars}"
        )
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError(f"{argument}: data is not valid base64") from None
    if len(raw) != n_bytes:
        raise ValueError(f"{argument}: data holds {len(raw)} bytes, expected {n_bytes}")
    decoded = numpy.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
    return decoded.astype(dtype, copy=True)
