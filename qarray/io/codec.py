"""The JSON format of qarray objects: tags, versions, exact arrays, strict validation.

Every object dumps to a plain JSON object carrying a ``type`` tag and a
``format_version``. Arrays are stored as ``{"dtype", "shape", "data"}`` with the
data as base64 of the little-endian bytes, so every float bit comes back.
Loading never executes anything: the type tag is looked up in a fixed table of
qarray's own classes, dtypes come from an allow-list, and every field is
checked (presence, JSON type, range, size against the bytes given) before an
array is allocated: the header of every array of a document is checked before
any array is decoded. Malformed input raises ``ValueError`` or ``TypeError``.

Writing is the mirror image: an object whose fields contradict each other (what
loading would refuse) is refused before anything is written, and ``dump(file)``
streams arrays to the file in bounded pieces (lazy Dask arrays block by block),
so its memory does not grow with the size of the arrays.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import io
import json
import math
import numbers
import os
import secrets
import stat
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Literal, Optional, Tuple, Union, overload

import numpy

from ..core.checks import describe
from ..core.dtypes import DOCUMENT_DTYPES, FLOAT_DTYPES, INTEGER_DTYPES
from ..core.namespace import is_bfloat16, is_lazy, to_numpy
from .consistency import check_consistent

__all__ = [
    "ARRAY_DTYPES",
    "ARRAY_FIELD_DTYPES",
    "FORMAT_VERSION",
    "MAX_ARRAY_BYTES",
    "MAX_ARRAY_DIMENSIONS",
    "MAX_DOCUMENT_CHARS",
    "MAX_DUMPS_LAZY_BYTES",
    "Serializable",
    "check_array_headers",
    "check_fields",
    "check_keys",
    "check_shape",
    "decode_array",
    "decode_wire",
    "decode_float",
    "decode_int",
    "encode_array",
    "encoded_dtype",
    "parse_document",
    "write_binary",
    "write_document",
    "write_text",
]

FORMAT_VERSION = 3
"""The format version written: 2 adds the granularity (``axis``, ``block_size``) and
per-block parameter and range arrays, 3 the numerics ``profile`` of the options;
documents of versions 1 and 2 are still read."""

READABLE_VERSIONS = (1, 2, 3)
"""The format versions :func:`check_fields` accepts."""

ARRAY_DTYPES = DOCUMENT_DTYPES
"""The dtypes an array in a document may have; anything else is refused."""

_BFLOAT16 = "bfloat16"
"""The one document dtype NumPy lacks. Its data is the 2-byte patterns (little-endian),
which are the high half of the float32 holding each value exactly on the host: written
from float32 host copies and read back as float32, nothing is rounded."""

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

MAX_DUMPS_LAZY_BYTES = 64 << 20
"""The largest lazy (Dask) array ``dumps()`` computes into memory (64 MiB of array data).

``dumps()`` returns one string, so every array has to be in memory at once; for a
lazy array above this size it refuses, and ``dump(path)`` (or ``dump(file)``),
which computes and writes a lazy array block by block, is the way to save it.
"""

_WRITE_BYTES = 3 << 18
"""Raw bytes base64-encoded per piece when streaming (a multiple of 3, so pieces join exactly)."""

_SLAB_BYTES = 16 << 20
"""About how many bytes of an array are copied to the host (or computed) at a time while streaming."""

_TEMPORARY_MARK = ".qarray-tmp-"
"""Temporary files of ``dump(path)`` are named ``.<name>.qarray-tmp-<pid>-<random>``."""

_ENVELOPE = ("type", "format_version")

# Inside dumps()/dump(), encode_array leaves arrays where they are (see _DeferredData);
# the value maps id(array) to a check run on each host piece of a lazy array.
_DEFERRING: contextvars.ContextVar[Optional[Dict[int, Callable[[numpy.ndarray], None]]]] = (
    contextvars.ContextVar("qarray_deferring", default=None)
)


class Serializable:
    """Gives a class ``dumps()`` and ``dump(file)`` on top of its ``dump_dict()``."""

    _type_tag = ""

    def dump_dict(self) -> Dict[str, Any]:  # pragma: no cover - every subclass defines it
        """Dump itself to a JSON-ready dict."""
        raise NotImplementedError

    def _tagged(self, fields: Dict[str, Any]) -> Dict[str, Any]:
        return {"type": self._type_tag, "format_version": FORMAT_VERSION, **fields}

    def dumps(self) -> str:
        """Dump itself to a JSON string (see :func:`qarray.loads` to load it back).

        Raises:
            ValueError: if the object's fields contradict each other (what loading would
                refuse), or it holds a lazy (Dask) array of more than
                :data:`MAX_DUMPS_LAZY_BYTES`: save that with ``dump(path)``, which writes
                it block by block.
            TypeError: if an array has a dtype that cannot be serialized.
        """
        document = self._deferred_document()
        for data in _deferred_parts(document):
            if data.lazy and data.nbytes > MAX_DUMPS_LAZY_BYTES:
                raise ValueError(
                    f"dumps() would compute a lazy array of {data.nbytes} bytes (shape "
                    f"{data.shape}, {data.name}) into memory, more than MAX_DUMPS_LAZY_BYTES "
                    f"({MAX_DUMPS_LAZY_BYTES}); use dump(path) or dump(file), which compute and "
                    "write it block by block"
                )
        return "".join(render_document(document))

    def dump(self, file: Union[IO[str], IO[bytes], str, os.PathLike[str]]) -> None:
        """Dump itself to an open file, or atomically to a path.

        The text is exactly what :meth:`dumps` returns, but arrays are streamed to the
        file in pieces (lazy Dask arrays computed block by block), so memory stays
        bounded whatever the size of the arrays. See :func:`write_document` for how a
        path is written (atomic replacement, symlinks, permission bits).

        Args:
            file: an open text (or binary) file, or a path.

        Raises:
            ValueError: if the object's fields contradict each other (nothing is
                written), or ``file`` names something other than a regular file.
            TypeError: if ``file`` is neither a path nor a writable file.
            OSError: if the file system refuses the write.
        """
        write_document(render_document(self._deferred_document()), file)

    def _deferred_document(self) -> Dict[str, Any]:
        """Check the object, then return its ``dump_dict()`` with arrays left in place.

        Arrays become :class:`_DeferredData` placeholders that :func:`render_document`
        encodes piece by piece; lazy arrays carry the checks that could not run before
        their values are computed.
        """
        stream_checks = check_consistent(self)
        token = _DEFERRING.set(stream_checks)
        try:
            return self.dump_dict()
        finally:
            _DEFERRING.reset(token)


class _DeferredData:
    """The ``data`` of an encoded array, kept as the array itself until it is written."""

    def __init__(
        self,
        array: Any,
        name: str,
        shape: Tuple[int, ...],
        check: Optional[Callable[[numpy.ndarray], None]] = None,
    ) -> None:
        self.array = array
        self.name = name
        self.shape = shape
        self.check = check
        self.lazy = is_lazy(array)
        self.itemsize = _wire_dtype(name).itemsize
        self.nbytes = math.prod(shape) * self.itemsize

    def host_pieces(self) -> Iterator[numpy.ndarray]:
        """Yield the array's bytes in C order as little-endian uint8 host arrays of bounded size."""
        array = self.array
        if not self.shape:
            yield from self._bytes_of(to_numpy(array))
            return
        rows = self.shape[0]
        row_bytes = self.itemsize * math.prod(self.shape[1:])
        if rows == 0 or row_bytes == 0:
            return
        step = max(1, _SLAB_BYTES // row_bytes)
        if self.lazy:
            # Follow the blocks along the first axis (each is computed once); split a
            # block row only when it is too large to hold.
            bounds: List[Tuple[int, int]] = []
            start = 0
            for extent in array.chunks[0]:
                bounds.extend((low, min(low + step, start + extent)) for low in range(start, start + extent, step))
                start += extent
        else:
            bounds = [(low, min(low + step, rows)) for low in range(0, rows, step)]
        for low, high in bounds:
            yield from self._bytes_of(to_numpy(array[low:high, ...]))

    def _bytes_of(self, host: Any) -> Iterator[numpy.ndarray]:
        host = numpy.ascontiguousarray(host)
        if self.check is not None:
            self.check(host)
        yield _to_wire(host, self.name).reshape(-1).view(numpy.uint8)

    def base64_pieces(self) -> Iterator[str]:
        """Yield the base64 text of the array's bytes, exactly as one ``b64encode`` would."""
        carry = b""
        for raw in self.host_pieces():
            position = 0
            if carry:
                position = min(3 - len(carry), raw.shape[0])
                carry += raw[:position].tobytes()
                if len(carry) < 3:
                    continue
                yield base64.b64encode(carry).decode("ascii")
                carry = b""
            whole = position + (raw.shape[0] - position) // 3 * 3
            for low in range(position, whole, _WRITE_BYTES):
                yield base64.b64encode(raw[low : min(low + _WRITE_BYTES, whole)].data).decode("ascii")
            carry = raw[whole:].tobytes()
        if carry:
            yield base64.b64encode(carry).decode("ascii")


def _deferred_parts(value: Any) -> Iterator[_DeferredData]:
    """Yield every deferred array data of a document."""
    if isinstance(value, _DeferredData):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _deferred_parts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _deferred_parts(item)


def render_document(value: Any) -> Iterator[str]:
    """Yield the JSON text of a document in pieces, deferred arrays encoded as they come.

    The pieces join to exactly ``json.dumps(value, allow_nan=False, separators=(",", ":"))``
    of the same document with its arrays encoded.
    """
    if isinstance(value, _DeferredData):
        yield '"'
        yield from value.base64_pieces()
        yield '"'
    elif isinstance(value, dict):
        separator = "{"
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"document keys must be str, got {describe(key)}")
            yield separator + json.dumps(key) + ":"
            separator = ","
            yield from render_document(item)
        yield "{}" if separator == "{" else "}"
    elif isinstance(value, list) and any(True for _ in _deferred_parts(value)):
        separator = "["
        for item in value:
            yield separator
            separator = ","
            yield from render_document(item)
        yield "[]" if separator == "[" else "]"
    else:
        yield json.dumps(value, allow_nan=False, separators=(",", ":"))


def write_text(text: str, file: Union[IO[str], IO[bytes], str, os.PathLike[str]]) -> None:
    """Write ``text`` to an open file, or atomically to a path (see :func:`write_document`).

    Args:
        text: the document.
        file: a path, or an open text or binary file (binary files get UTF-8).

    Raises:
        TypeError: if ``file`` is neither a path nor a writable file.
        ValueError: if ``file`` names something other than a regular file.
        OSError: if the file system refuses the write.
    """
    write_document([text], file)


def write_document(pieces: Iterable[str], file: Union[IO[str], IO[bytes], str, os.PathLike[str]]) -> None:
    """Write a document given in pieces to an open file, or atomically to a path.

    A path is written to a temporary file in the same folder as its target, which is
    flushed, synced to disk and renamed over the target (then the folder is synced,
    where the platform allows it), so readers see the old document or the new one,
    never a part. The pieces are written as they come, never joined in memory.

    - A symlink is written through: its target gets the new document and the link
      stays a link. Anything but a regular file (a folder, a FIFO, a device) is refused.
    - A new file gets the permission bits the umask allows (like ``open(path, "w")``);
      an existing file keeps its permission bits (and, where allowed, its owner).
    - If anything fails on the way (an exception, an interrupt), the temporary file
      is removed and the file already at the path is left as it was. Temporary files
      are named ``.<name>.qarray-tmp-<pid>-<random>``; one left by a killed process
      is removed by the next dump to the same path.

    Args:
        pieces: the document's text, in pieces.
        file: a path, or an open text or binary file (binary files get UTF-8).

    Raises:
        TypeError: if ``file`` is neither a path nor a writable file.
        ValueError: if ``file`` names something other than a regular file.
        OSError: if the file system refuses the write.
    """
    if isinstance(file, (str, os.PathLike)):
        path = os.fspath(file)
        if not isinstance(path, str):
            raise TypeError(f"file must be a str path or an open file, got {type(file).__name__}")
        _write_path(pieces, path)
        return
    write = getattr(file, "write", None)
    if not callable(write):
        raise TypeError(f"file must be a path or a writable file, got {type(file).__name__}")
    binary = isinstance(file, (io.RawIOBase, io.BufferedIOBase)) or "b" in str(getattr(file, "mode", ""))
    for piece in pieces:
        write(piece.encode("utf-8") if binary else piece)


def write_binary(pieces: Iterable[Union[bytes, memoryview]], path: Union[str, os.PathLike[str]]) -> None:
    """Write a binary file given in pieces atomically to a path, as :func:`write_document` does.

    The same guarantees: a temporary file in the target's folder renamed over it, symlinks
    written through, the umask for a new file and the permission bits of an existing one
    kept, nothing left behind when writing fails. The pieces are written as they come.

    Raises:
        TypeError: if ``path`` is not a str or ``os.PathLike`` path.
        ValueError: if ``path`` names something other than a regular file.
        OSError: if the file system refuses the write.
    """
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        raise TypeError(f"path must be a str or os.PathLike path, got {type(path).__name__}")
    _write_path(pieces, os.fspath(path))


def _write_path(pieces: Iterable[Union[str, bytes, memoryview]], path: str) -> None:
    """Write the pieces (text, UTF-8 encoded, or bytes) atomically to ``path`` (see :func:`write_document`)."""
    target = os.path.realpath(path)  # through symlinks, so the link itself is kept
    try:
        existing: Optional[os.stat_result] = os.stat(target)
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise ValueError(
            f"file must be a regular file (or a symlink to one), but {path!r} is {_file_kind(existing.st_mode)}"
        )
    folder, name = os.path.split(target)
    _remove_stale_temporaries(folder, name)
    temporary = os.path.join(
        folder, f".{name}{_TEMPORARY_MARK}{os.getpid()}-{secrets.token_hex(6)}"
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    handle = os.open(temporary, flags, 0o666)  # the umask applies, as for any new file
    try:
        with os.fdopen(handle, "wb") as stream:
            for piece in pieces:
                stream.write(piece.encode("utf-8") if isinstance(piece, str) else piece)
            stream.flush()
            os.fsync(stream.fileno())
        if existing is not None:
            os.chmod(temporary, stat.S_IMODE(existing.st_mode))
            _keep_owner(temporary, existing)
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _sync_folder(folder)


def _file_kind(mode: int) -> str:
    """Name the kind of a file that is not a regular one, for error messages."""
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _keep_owner(temporary: str, existing: os.stat_result) -> None:
    """Give the new file the old one's owner and group, where the process may (as root)."""
    chown = getattr(os, "chown", None)
    if chown is None:
        return
    current = os.stat(temporary)
    if (current.st_uid, current.st_gid) == (existing.st_uid, existing.st_gid):
        return
    try:
        chown(temporary, existing.st_uid, existing.st_gid)
    except OSError:
        pass  # not allowed: the file belongs to whoever wrote it, as with any replacement


def _remove_stale_temporaries(folder: str, name: str) -> None:
    """Remove temporary files of earlier dumps to ``name`` whose process is gone."""
    if os.name != "posix":  # no cheap, harmless way to ask whether a pid is alive
        return
    prefix = f".{name}{_TEMPORARY_MARK}"
    try:
        entries = [entry.name for entry in os.scandir(folder) if entry.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        pid_text = entry[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        try:
            os.unlink(os.path.join(folder, entry))
        except OSError:
            pass


def _process_alive(pid: int) -> bool:
    """Return True unless process ``pid`` certainly does not exist (POSIX only)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # exists but belongs to someone else, or cannot be asked
    return True


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


def check_fields(
    metadata: Any,
    type_tag: str,
    names: Iterable[str],
    since_version_2: Optional[Dict[str, Any]] = None,
    since_version_3: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Check a dumped object's envelope and its exact set of fields; return the fields.

    Documents of every format version in :data:`READABLE_VERSIONS` are read. Fields
    that format 2 added (``since_version_2``, with the value they mean in older
    documents) must be absent from a version-1 document, and get that value.

    The headers of all arrays in the fields (nested documents included) are checked
    too (see :func:`check_array_headers`), so the caller decodes none of them before
    all are known to be well formed. The same holds for the fields format 3 added
    (``since_version_3``) in documents of versions 1 and 2.

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
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ValueError(
            f"{type_tag}: format_version must be one of {READABLE_VERSIONS}, got {describe(version)}"
        )
    names = tuple(names)
    defaults = {**(since_version_3 or {})} if version < 3 else {}
    if version == 1:
        defaults.update(since_version_2 or {})
    expected = set(names) - set(defaults)
    present = set(metadata) - set(_ENVELOPE)
    missing = sorted(expected - present)
    extra = sorted(present - expected)
    if missing:
        raise ValueError(f"{type_tag}: missing field(s) {', '.join(missing)}")
    if extra:
        raise ValueError(f"{type_tag}: unexpected field(s) {describe(', '.join(map(str, extra)))}")
    fields = {name: metadata[name] if name in metadata else defaults[name] for name in names}
    check_array_headers(fields)  # every array of the document, before any is decoded
    return fields


# With optional=False the decoders never return None.
@overload
def decode_float(value: Any, argument: str, optional: Literal[False]) -> numpy.float64: ...


@overload
def decode_float(value: Any, argument: str, optional: bool = True) -> Optional[numpy.float64]: ...


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


@overload
def decode_int(value: Any, argument: str, optional: Literal[False]) -> int: ...


@overload
def decode_int(value: Any, argument: str, optional: bool = True) -> Optional[int]: ...


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

    Inside ``dumps()`` and ``dump()`` the data is not encoded here: it stays a
    placeholder that is encoded piece by piece as the document is written.

    Raises:
        TypeError: if the array's dtype is not one of :data:`ARRAY_DTYPES` (or has no
            NumPy equivalent, like bfloat16).
    """
    if array is None:
        return None
    stream_checks = _DEFERRING.get()
    if stream_checks is not None:
        deferred = _defer(array, stream_checks.get(id(array)))
        if deferred is not None:
            return {"dtype": deferred.name, "shape": list(deferred.shape), "data": deferred}
    try:
        host = numpy.asarray(to_numpy(array), order="C")  # ascontiguousarray makes 0-d 1-d
    except TypeError as error:
        dtype = getattr(array, "dtype", type(array).__name__)
        raise TypeError(f"cannot serialize an array of dtype {dtype}: {error}") from None
    name = _document_dtype(array, host.dtype)
    return {
        "dtype": name,
        "shape": list(host.shape),
        "data": base64.b64encode(_to_wire(host, name).tobytes()).decode("ascii"),
    }


def _document_dtype(array: Any, host_dtype: numpy.dtype) -> str:
    """Return the dtype name a document gives ``array``, whose host copies have ``host_dtype``.

    Raises:
        TypeError: if that dtype is not one of :data:`ARRAY_DTYPES`.
    """
    if host_dtype.name not in ARRAY_DTYPES or host_dtype.kind not in "biuf":
        raise TypeError(
            f"cannot serialize arrays of dtype {host_dtype}; supported: {', '.join(ARRAY_DTYPES)}"
        )
    return _BFLOAT16 if is_bfloat16(array) else host_dtype.name


def _wire_dtype(name: str) -> numpy.dtype:
    """Return the little-endian NumPy dtype of the bytes a document holds for dtype ``name``."""
    return numpy.dtype("<u2") if name == _BFLOAT16 else numpy.dtype(name).newbyteorder("<")


def _to_wire(host: numpy.ndarray, name: str) -> numpy.ndarray:
    """Return the C-contiguous ``host`` array as the array whose bytes a document holds for ``name``."""
    if name == _BFLOAT16:  # float32 copies of bfloat16 values: their high 16 bits
        return (numpy.asarray(host, dtype=numpy.float32).view(numpy.uint32) >> 16).astype("<u2")
    return host.astype(_wire_dtype(name), copy=False)


def decode_wire(raw: Any, name: str, shape: List[int]) -> numpy.ndarray:
    """Return a fresh host array of the little-endian bytes ``raw`` holds for dtype ``name`` and ``shape``.

    The bytes are those a document's base64 data holds (bfloat16 as its 2-byte patterns,
    returned as float32, every value exact); ``raw`` is any buffer (bytes, a memoryview of
    a memory-mapped file) of exactly that many bytes. The caller has checked ``name``
    (one of :data:`ARRAY_DTYPES`) and the length.
    """
    return _from_wire(raw, name, shape)


def _from_wire(raw: Any, name: str, shape: List[int]) -> numpy.ndarray:
    """Return a fresh, writeable host array in native byte order of a document's bytes for ``name``."""
    decoded = numpy.frombuffer(raw, dtype=_wire_dtype(name)).reshape(shape)
    if name != _BFLOAT16:
        return decoded.astype(numpy.dtype(name), copy=True)
    host = numpy.empty(shape, dtype=numpy.float32)  # holds every bfloat16 exactly
    numpy.left_shift(decoded, 16, out=host.view(numpy.uint32), dtype=numpy.uint32)
    return host


def _defer(array: Any, check: Optional[Callable[[numpy.ndarray], None]]) -> Optional[_DeferredData]:
    """Return a placeholder for the array's data, or None when its shape is not known yet."""
    shape = tuple(getattr(array, "shape", ()))
    if not all(isinstance(extent, numbers.Integral) for extent in shape):
        return None  # a lazy array of unknown extent (NaN): computed whole, as before
    shape = tuple(int(extent) for extent in shape)
    dtype = getattr(array, "dtype", None)
    if not isinstance(dtype, numpy.dtype):
        try:  # another library's dtype: read it from an empty (or 0-d) host copy
            probe = to_numpy(array[0:0, ...] if shape else array)
        except TypeError as error:
            raise TypeError(f"cannot serialize an array of dtype {dtype}: {error}") from None
        dtype = numpy.asarray(probe).dtype
    return _DeferredData(array, _document_dtype(array, dtype), shape, check)


@overload
def decode_array(value: Any, argument: str, dtypes: Iterable[str], optional: Literal[False]) -> numpy.ndarray: ...


@overload
def decode_array(
    value: Any, argument: str, dtypes: Iterable[str] = ARRAY_DTYPES, optional: bool = True
) -> Optional[numpy.ndarray]: ...


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
    shape, n_bytes = _array_header(value, argument, dtypes)
    data = value["data"]
    if isinstance(data, numpy.ndarray):  # already decoded from a binary file (see _array_header)
        return data
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError(f"{argument}: data is not valid base64") from None
    if len(raw) != n_bytes:
        raise ValueError(f"{argument}: data holds {len(raw)} bytes, expected {n_bytes}")
    return _from_wire(raw, value["dtype"], shape)


def encoded_dtype(value: Any) -> Optional[str]:
    """Return the dtype name of an encoded array :func:`decode_array` accepted (None for null)."""
    return value["dtype"] if isinstance(value, dict) else None


def check_keys(value: Any, keys: Tuple[str, ...], argument: str, what: str) -> Dict[str, Any]:
    """Return ``value`` if it is a JSON object with exactly the keys ``keys``.

    Raises:
        TypeError: if it is not a dict (``what`` names what was expected).
        ValueError: if its keys differ.
    """
    if not isinstance(value, dict):
        raise TypeError(f"{argument} must be {what} (a JSON object), got {describe(value)}")
    if set(value) != set(keys):
        raise ValueError(
            f"{argument} must have exactly the keys {', '.join(keys[:-1])} and {keys[-1]}, "
            f"got {describe(sorted(value))}"
        )
    return value


def check_shape(shape: Any, argument: str, itemsize: int) -> int:
    """Check a JSON shape (a list of at most :data:`MAX_ARRAY_DIMENSIONS` ints >= 0); return its bytes.

    Nothing is allocated: a shape claiming more than :data:`MAX_ARRAY_BYTES` (its empty
    axes left out) is refused as absurd.

    Raises:
        TypeError: if it is not a list of ints.
        ValueError: if it has too many entries, a negative one, or claims too many bytes.
    """
    if not isinstance(shape, list):
        raise TypeError(f"{argument}: shape must be a list of ints, got {describe(shape)}")
    if len(shape) > MAX_ARRAY_DIMENSIONS:
        raise ValueError(
            f"{argument}: shape must have at most {MAX_ARRAY_DIMENSIONS} dimensions, got {len(shape)}"
        )
    count = 1
    claimed = itemsize  # bytes of the shape with its empty axes left out
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
    return count * itemsize


def _array_header(value: Any, argument: str, dtypes: Iterable[str]) -> Tuple[List[int], int]:
    """Check an encoded array's keys, dtype, shape and data length; return shape and bytes.

    Nothing is decoded or allocated: the data is only measured.
    """
    check_keys(value, ("dtype", "shape", "data"), argument, "an encoded array")
    dtype_name, shape, data = value["dtype"], value["shape"], value["data"]
    allowed = tuple(name for name in dtypes if name in ARRAY_DTYPES)
    if not isinstance(dtype_name, str):
        raise TypeError(f"{argument}: dtype must be a string, got {describe(dtype_name)}")
    if dtype_name not in allowed:
        raise ValueError(f"{argument}: dtype must be one of {', '.join(allowed)}, got {describe(dtype_name)}")
    n_bytes = check_shape(shape, argument, _wire_dtype(dtype_name).itemsize)
    if isinstance(data, numpy.ndarray):
        # An array a binary file's reader decoded (a safetensors tensor): parsed JSON never
        # holds one. It must be what decode_wire gives for this dtype and shape.
        expected_dtype = numpy.dtype(numpy.float32) if dtype_name == _BFLOAT16 else numpy.dtype(dtype_name)
        if data.dtype != expected_dtype or list(data.shape) != shape:
            raise ValueError(
                f"{argument}: the array read is {data.dtype} of shape {list(data.shape)}, expected "
                f"{dtype_name} of shape {describe(shape)}"
            )
        return shape, n_bytes
    if not isinstance(data, str):
        raise TypeError(f"{argument}: data must be a base64 string, got {type(data).__name__}")
    expected_chars = 4 * ((n_bytes + 2) // 3)
    if len(data) != expected_chars:
        raise ValueError(
            f"{argument}: data holds {len(data)} base64 characters, but shape {describe(shape)} of "
            f"{dtype_name} needs {expected_chars}"
        )
    return shape, n_bytes


ARRAY_FIELD_DTYPES: Dict[str, Tuple[str, ...]] = {
    "values": FLOAT_DTYPES,
    "uvalues": FLOAT_DTYPES,
    "qvalues": INTEGER_DTYPES,
    "zero_point": ("int64", "float64"),
}
"""The dtypes allowed for arrays of known field names (others: any of :data:`ARRAY_DTYPES`).

A new document type with array fields of its own may add its names here.
"""


def check_array_headers(fields: Dict[str, Any]) -> None:
    """Check the header of every encoded array in ``fields`` and nested documents.

    Run before any array is decoded, so that a malformed array late in a large
    document is refused before the others have cost their decoding. An encoded
    array is a JSON object without a ``type`` tag (nested documents have one).

    Raises:
        TypeError, ValueError: as :func:`decode_array` would, naming the field.
    """
    for name, value in fields.items():
        if not isinstance(value, dict):
            continue
        if "type" in value:
            check_array_headers({key: item for key, item in value.items() if key not in _ENVELOPE})
        elif {"dtype", "shape", "data"} & set(value):
            _array_header(value, str(name), ARRAY_FIELD_DTYPES.get(str(name), ARRAY_DTYPES))
