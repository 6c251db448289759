"""Quantized arrays and quantizers in one safetensors file: ``save_file`` and ``load_file``.

Each object's document (its ``dump_dict()``, as :meth:`dumps` would write it) goes into
the header's ``__metadata__`` as a JSON string, with every array of it replaced by a
reference to a tensor: the quantized integers in the smallest integer dtype that holds
their clipping range (packed with :func:`qarray.pack` at 4, 2 or 1 bits when
``n_bits <= 4``), the parameter and range grids as they are. The float values are not
stored: a loaded :class:`~qarray.QuantizedArray`'s ``values`` are its de-quantized
integers. The file is plain safetensors, which the format's own readers open.

Loading reads the header with strict checks (:mod:`qarray.io.tensorfile`), memory-maps
the data, turns each tensor reference back into an array and hands every document to
:func:`qarray.documents.load_dict`, so that a file passes exactly the checks a JSON
document passes; nothing named in a file is imported or executed. ``docs/safetensors.md``
describes the layout.
"""

from __future__ import annotations

import base64
import json
import mmap
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple, Union

import numpy

from .core.checks import describe
from .core.dtypes import INTEGER_DTYPES, INTEGER_RANGES
from .core.granularity import is_grid
from .core.namespace import to_numpy
from .core.packing import PACK_BITS, packed_length, values_per_byte
from .documents import load_dict
from .io.codec import DOCUMENT_DTYPES, check_shape, decode_wire, parse_document, write_binary
from .io.consistency import clip_bounds
from .io.tensorfile import DTYPE_CODES, Header, TensorEntry, header_bytes, nbytes, read_header
from .packing import pack, unpack
from .quantized_array import QuantizedArray
from .quantizer import UniformQuantizer

__all__ = ["FILE_FORMAT_VERSION", "INDEX_KEY", "load_file", "save_file"]

FILE_FORMAT_VERSION = 1
"""The version of the layout of qarray's safetensors files (the index's ``format_version``)."""

INDEX_KEY = "__qarray__"
"""The ``__metadata__`` key of the index: ``{"format_version": 1, "objects": [names]}``, as JSON.

No object may have this name; every other key of ``__metadata__`` is an object's name.
"""

_PACKED = {f"{sign}int{bits}": (bits, sign == "") for bits in PACK_BITS for sign in ("", "u")}
"""The ``packed`` tags of a packed tensor reference: its width and whether it is signed."""

_STORAGE_ORDER = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
"""The dtypes integers are stored in, smallest first; signed first where both hold a range."""

_SAVED_TYPES = (QuantizedArray, UniformQuantizer)

Pieces = Callable[[], Iterator[Any]]


def save_file(objects: Dict[str, Union[QuantizedArray, UniformQuantizer]], path: Union[str, os.PathLike[str]]) -> None:
    """Save named quantized arrays and quantizers to one safetensors file, atomically.

    Integers are stored in the smallest integer dtype holding their clipping range (packed
    along the last axis, 1, 2 or 4 bits to a value, when ``n_bits <= 4``); parameter and
    range grids as tensors; options, statistics and the profile in the metadata. The
    float ``values`` are not stored (see :func:`load_file`). The file is written as
    ``dump(path)`` writes a document: a temporary file renamed over the target, through
    symlinks, with the umask for a new file and an existing file's permission bits, and
    nothing left behind when writing fails.

    Args:
        objects: ``{name: QuantizedArray or UniformQuantizer}``; names are non-empty str
            other than ``"__qarray__"``.
        path: where to write.

    Raises:
        TypeError: if ``objects`` is not a dict, a value is of another type, or ``path``
            is not a path.
        ValueError: for a bad name, or an object whose fields contradict each other
            (nothing is written); or ``path`` names something other than a regular file.
        OSError: if the file system refuses the write.

    Example:
        >>> import numpy, os, tempfile, qarray
        >>> qa = qarray.QuantizedArray(4, numpy.linspace(-1.0, 1.0, 6))
        >>> path = os.path.join(tempfile.mkdtemp(), "weights.safetensors")
        >>> qarray.save_file({"w": qa}, path)
        >>> qarray.load_file(path)["w"].qvalues
        array([ 0,  4,  6, 10, 12, 15])
    """
    if not isinstance(objects, dict):
        raise TypeError(
            f"objects must be a dict of names to QuantizedArray or UniformQuantizer, got {type(objects).__name__}"
        )
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike path, got {type(path).__name__}")
    metadata: Dict[str, str] = {}
    tensors: List[Tuple[str, str, Tuple[int, ...], Pieces]] = []
    for name, obj in objects.items():
        if not isinstance(name, str) or not name or name == INDEX_KEY:
            raise ValueError(f"object names must be non-empty str other than {INDEX_KEY!r}, got {describe(name)}")
        if not isinstance(obj, _SAVED_TYPES):
            raise TypeError(f"objects[{name!r}] must be a QuantizedArray or UniformQuantizer, got {type(obj).__name__}")
        document = obj._deferred_document()  # checked as dump() checks it: nothing is written otherwise
        metadata[name] = _render(_detach_arrays(document, name, obj, tensors))
    metadata[INDEX_KEY] = _render({"format_version": FILE_FORMAT_VERSION, "objects": list(objects)})
    header = header_bytes(metadata, [(tensor, dtype, shape) for tensor, dtype, shape, _ in tensors])
    write_binary(_file_pieces(header, tensors), path)


def _render(value: Any) -> str:
    """The compact JSON text of a document without arrays (as ``dumps()`` writes it)."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def _detach_arrays(
    document: Dict[str, Any], name: str, obj: Any, tensors: List[Tuple[str, str, Tuple[int, ...], Pieces]]
) -> Dict[str, Any]:
    """Return the document with each array a tensor reference, adding the tensors to ``tensors``.

    A QuantizedArray's ``values`` become null; its ``qvalues`` are stored as
    :func:`_integer_storage` says. Tensors are named ``<name>.<field>`` (``w.qvalues``,
    ``w.scale``); a field name that occurs twice in one document gets its full path.
    """
    found: List[Tuple[Tuple[str, ...], Dict[str, Any]]] = list(_encoded_arrays(document, ()))
    leaves = [path[-1] for path, _ in found]
    references: Dict[Tuple[str, ...], Dict[str, Any]] = {}
    for path, encoded in found:
        if path == ("values",) and isinstance(obj, QuantizedArray):
            continue
        field = path[-1] if leaves.count(path[-1]) == 1 else ".".join(path)
        tensor = f"{name}.{field}"
        declared, shape = encoded["dtype"], tuple(encoded["shape"])
        reference: Dict[str, Any] = {"dtype": declared, "shape": list(shape), "tensor": tensor}
        source = _host_pieces(encoded)
        if path == ("qvalues",) and isinstance(obj, QuantizedArray):
            storage, bits = _integer_storage(obj, declared, shape)
            if bits is not None:
                signed = storage == "int8"
                reference["packed"] = f"{'' if signed else 'u'}int{bits}"
                pieces = _packed_pieces(source, declared, shape, bits)
                tensors.append((tensor, "uint8", _packed_shape(shape, bits), pieces))
            else:
                tensors.append((tensor, storage, shape, _converted_pieces(source, declared, storage)))
        else:
            tensors.append((tensor, declared, shape, source))
        references[path] = reference
    return _replaced(document, (), references, isinstance(obj, QuantizedArray))


def _encoded_arrays(value: Any, path: Tuple[str, ...]) -> Iterator[Tuple[Tuple[str, ...], Dict[str, Any]]]:
    """Yield ``(path, encoded array)`` of every array in a document (nested documents included)."""
    if not isinstance(value, dict):
        return
    if "type" not in value and set(value) == {"dtype", "shape", "data"}:
        yield path, value
        return
    for key, item in value.items():
        yield from _encoded_arrays(item, path + (key,))


def _replaced(value: Any, path: Tuple[str, ...], references: Dict[Tuple[str, ...], Any], drop_values: bool) -> Any:
    if path in references:
        return references[path]
    if drop_values and path == ("values",):
        return None
    if isinstance(value, dict):
        return {key: _replaced(item, path + (key,), references, drop_values) for key, item in value.items()}
    return value


def _host_pieces(encoded: Dict[str, Any]) -> Pieces:
    """The array's little-endian bytes in bounded host pieces (lazy arrays computed as they go)."""
    data = encoded["data"]
    if isinstance(data, str):  # encoded already (a lazy array whose shape was unknown): the same bytes
        return lambda: iter([numpy.frombuffer(base64.b64decode(data), dtype=numpy.uint8)])
    return data.host_pieces


def _integer_storage(array: QuantizedArray, declared: str, shape: Tuple[int, ...]) -> Tuple[str, Optional[int]]:
    """The dtype a QuantizedArray's integers are stored in, and the width they are packed at (or None).

    The clipping range decides (every block's, with per-block offsets): the narrowest of
    int/uint 1, 2 or 4 packed when ``n_bits <= 4`` and the array has an axis, else the
    smallest integer dtype holding it. Without clipping, the declared dtype.
    """
    bounds = clip_bounds(array.quantizer)
    if bounds is None:
        return declared, None
    low = int(numpy.min(to_numpy(bounds[0]))) if is_grid(bounds[0]) else int(bounds[0])
    high = int(numpy.max(to_numpy(bounds[1]))) if is_grid(bounds[1]) else int(bounds[1])
    n_bits = array.n_bits
    if n_bits is not None and n_bits <= max(PACK_BITS) and len(shape) >= 1:
        for bits in PACK_BITS:
            if low >= 0 and high <= (1 << bits) - 1:
                return "uint8", bits
            if low >= -(1 << (bits - 1)) and high <= (1 << (bits - 1)) - 1:
                return "int8", bits
    for name in _STORAGE_ORDER:
        if INTEGER_RANGES[name][0] <= low and high <= INTEGER_RANGES[name][1]:
            return name, None
    return declared, None


def _packed_shape(shape: Tuple[int, ...], bits: int) -> Tuple[int, ...]:
    return shape[:-1] + (packed_length(shape[-1], bits),)


def _typed(piece: numpy.ndarray, declared: str, shape: Tuple[int, ...]) -> numpy.ndarray:
    """A host piece of little-endian bytes as whole rows of the declared integer dtype."""
    values = piece.view(numpy.dtype(declared).newbyteorder("<"))
    return values.reshape((-1,) + shape[1:]) if shape else values.reshape(())


def _converted_pieces(source: Pieces, declared: str, storage: str) -> Pieces:
    def pieces() -> Iterator[Any]:
        for piece in source():
            typed = piece.view(numpy.dtype(declared).newbyteorder("<"))
            yield typed.astype(numpy.dtype(storage).newbyteorder("<")).view(numpy.uint8)

    return pieces


def _packed_pieces(source: Pieces, declared: str, shape: Tuple[int, ...], bits: int) -> Pieces:
    """Pack whole rows as they come; a 1-d array carries the values that do not fill a byte."""

    def pieces() -> Iterator[Any]:
        carry = numpy.zeros(0, dtype=numpy.dtype(declared))
        for piece in source():
            rows = _typed(piece, declared, shape)
            if len(shape) > 1:
                yield pack(rows, bits).reshape(-1)
                continue
            rows = numpy.concatenate([carry, rows])
            whole = rows.shape[0] // values_per_byte(bits) * values_per_byte(bits)
            if whole:
                yield pack(rows[:whole], bits)
            carry = rows[whole:]
        if carry.shape[0]:
            yield pack(carry, bits)

    return pieces


def _file_pieces(header: bytes, tensors: List[Tuple[str, str, Tuple[int, ...], Pieces]]) -> Iterator[Any]:
    yield header
    for name, dtype, shape, source in tensors:
        expected = nbytes(dtype, shape)
        written = 0
        for piece in source():
            data = memoryview(numpy.ascontiguousarray(piece).reshape(-1).data)
            written += data.nbytes
            yield data
        if written != expected:  # a lazy array that computed to another size than it claimed
            raise ValueError(f"tensor {name!r}: {written} bytes were computed, {expected} expected")


def load_file(path: Union[str, os.PathLike[str]], *, backend: Optional[str] = None) -> Dict[str, Any]:
    """Load the quantized arrays and quantizers of a file written by :func:`save_file`.

    The header is checked before any data is read, the data is memory-mapped (only the
    tensors' bytes are read, each once), and every object goes through the checks of
    :func:`qarray.loads`. A loaded QuantizedArray's ``values`` are its de-quantized
    integers, what its ``dequant()`` returns (float64, or float32 with the ``"onnx"`` and
    ``"torch"`` profiles): the float values it was made from are not in the file.

    Args:
        path: the file.
        backend: a backend name (``"cupy"``) to place the arrays with, as
            :func:`qarray.load` does; NumPy by default.

    Returns:
        ``{name: object}`` in the order they were saved.

    Raises:
        ValueError: if the file is not a well-formed safetensors file (a header length
            or offsets claiming bytes the file lacks, overlapping, gapped or unordered
            offsets, an unknown dtype, a shape that does not match the bytes), or its
            metadata is not a qarray index and documents (missing or unexpected keys,
            unknown type tags, tensors the documents do not match).
        TypeError: if ``path`` is not a path, or a header or document field has the
            wrong JSON type.
        OSError: if the file cannot be read.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike path, got {type(path).__name__}")
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        header = read_header(stream, size)
        documents = _documents(header.metadata)
        plans = _plan(documents, header.tensors)  # every reference checked before any data is read
        if size == header.data_start:
            return _load_objects(documents, plans, b"", header, backend)
        mapped = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            return _load_objects(documents, plans, mapped, header, backend)
        finally:
            try:
                mapped.close()
            except BufferError:  # a view is still referenced (by a traceback): closed when it goes
                pass


def _documents(metadata: Dict[str, str]) -> Dict[str, Dict[str, Any]]:
    """Parse the index and each object's document; refuse anything that is not qarray's."""
    if INDEX_KEY not in metadata:
        raise ValueError(f"not a qarray file: the metadata has no {INDEX_KEY!r} index")
    index = parse_document(metadata[INDEX_KEY])
    if not isinstance(index, dict) or set(index) != {"format_version", "objects"}:
        raise ValueError(
            f"the {INDEX_KEY!r} index must be a JSON object with format_version and objects, got {describe(index)}"
        )
    if type(index["format_version"]) is not int or index["format_version"] != FILE_FORMAT_VERSION:
        raise ValueError(
            f"the file's format_version must be {FILE_FORMAT_VERSION}, got {describe(index['format_version'])}"
        )
    names = index["objects"]
    if not isinstance(names, list) or not all(isinstance(name, str) and name and name != INDEX_KEY for name in names):
        raise ValueError(f"the index's objects must be a list of object names, got {describe(names)}")
    if len(set(names)) != len(names) or set(names) | {INDEX_KEY} != set(metadata):
        raise ValueError(
            f"the metadata keys {describe(sorted(metadata))} must be the index's objects {describe(names)} "
            f"and {INDEX_KEY!r}, each once"
        )
    documents: Dict[str, Dict[str, Any]] = {}
    for name in names:
        document = parse_document(metadata[name])
        tag = document.get("type") if isinstance(document, dict) else None
        if tag not in ("QuantizedArray", "UniformQuantizer"):
            raise ValueError(
                f"object {name!r}: expected a QuantizedArray or UniformQuantizer document, got type {describe(tag)}"
            )
        if tag == "QuantizedArray" and document.get("values", None) is not None:
            raise ValueError(f"object {name!r}: values are not stored in a file (they are the dequantized qvalues)")
        documents[name] = document
    return documents


_Plan = Dict[str, List[Tuple[Tuple[str, ...], Dict[str, Any], TensorEntry]]]


def _plan(documents: Dict[str, Dict[str, Any]], tensors: Dict[str, TensorEntry]) -> _Plan:
    """Match every tensor reference with its tensor, checking dtypes and shapes; each tensor used once."""
    used: Set[str] = set()
    plans: _Plan = {}
    for name, document in documents.items():
        plans[name] = []
        for path, reference in _references(document, ()):
            where = f"object {name!r}, {'.'.join(path)}"
            tensor = _check_reference(reference, where)
            if tensor not in tensors or tensor in used:
                problem = "is not in the file" if tensor not in tensors else "is referred to twice"
                raise ValueError(f"{where}: tensor {describe(tensor)} {problem}")
            used.add(tensor)
            _check_tensor(reference, tensors[tensor], f"{where} (tensor {tensor!r})")
            plans[name].append((path, reference, tensors[tensor]))
    unused = sorted(set(tensors) - used)
    if unused:
        raise ValueError(f"tensor(s) {describe(unused)} belong to no object of the metadata")
    return plans


def _references(value: Any, path: Tuple[str, ...]) -> Iterator[Tuple[Tuple[str, ...], Any]]:
    """Yield every array of a document: an object without a type tag that has array keys."""
    if isinstance(value, list):
        for position, item in enumerate(value):
            yield from _references(item, path + (str(position),))
        return
    if not isinstance(value, dict):
        return
    if "type" not in value and {"dtype", "shape", "data", "tensor", "packed"} & set(value):
        yield path, value
        return
    for key, item in value.items():
        yield from _references(item, path + (str(key),))


def _check_reference(reference: Dict[str, Any], where: str) -> str:
    keys = set(reference)
    if keys not in ({"dtype", "shape", "tensor"}, {"dtype", "shape", "tensor", "packed"}):
        raise ValueError(
            f"{where}: an array must be a tensor reference with the keys dtype, shape, tensor (and packed), "
            f"got {describe(sorted(keys))}"
        )
    if not isinstance(reference["tensor"], str):
        raise TypeError(f"{where}: tensor must be a tensor name (str), got {describe(reference['tensor'])}")
    if not isinstance(reference["dtype"], str) or reference["dtype"] not in DOCUMENT_DTYPES:
        raise ValueError(
            f"{where}: dtype must be one of {', '.join(DOCUMENT_DTYPES)}, got {describe(reference['dtype'])}"
        )
    check_shape(reference["shape"], where, 1)
    if "packed" in reference and reference["packed"] not in _PACKED:
        raise ValueError(f"{where}: packed must be one of {', '.join(_PACKED)}, got {describe(reference['packed'])}")
    return str(reference["tensor"])


def _check_tensor(reference: Dict[str, Any], entry: TensorEntry, where: str) -> None:
    """The tensor must hold the declared array: same shape (packed: the packed shape), a dtype that converts."""
    declared, shape = reference["dtype"], tuple(reference["shape"])
    packed = reference.get("packed")
    if packed is not None:
        bits = _PACKED[packed][0]
        expected = _packed_shape(shape, bits) if shape else None
        if declared not in INTEGER_DTYPES or expected is None or (entry.dtype, entry.shape) != ("uint8", expected):
            raise ValueError(
                f"{where}: a {packed}-packed {declared} array of shape {list(shape)} must be an integer array "
                f"stored as U8 of shape {list(expected) if expected else '(at least one axis)'}, "
                f"got {DTYPE_CODES[entry.dtype]} of shape {list(entry.shape)}"
            )
        return
    if entry.shape != shape:
        raise ValueError(f"{where}: the tensor has shape {list(entry.shape)}, the document says {list(shape)}")
    integer = declared in INTEGER_DTYPES
    if (integer and entry.dtype not in INTEGER_DTYPES) or (not integer and entry.dtype != declared):
        raise ValueError(
            f"{where}: a {declared} array cannot be read from a {DTYPE_CODES[entry.dtype]} tensor "
            f"({'an integer one' if integer else DTYPE_CODES.get(declared, declared)} expected)"
        )


def _load_objects(
    documents: Dict[str, Dict[str, Any]], plans: _Plan, buffer: Any, header: Header, backend: Optional[str]
) -> Dict[str, Any]:
    """Read each object's tensors, then load its document as ``qarray.loads`` would."""
    view = memoryview(buffer)  # released when this returns (after an error, when the traceback goes)
    loaded: Dict[str, Any] = {}
    for name, document in documents.items():
        arrays = {
            path: _read(reference, entry, view, header.data_start, f"object {name!r}, {'.'.join(path)}")
            for path, reference, entry in plans[name]
        }
        filled = _filled(document, (), arrays)
        qvalues = filled.get("qvalues") if filled["type"] == "QuantizedArray" else None
        if isinstance(qvalues, dict) and isinstance(qvalues.get("shape"), list):
            # values of the right dtype and shape costing no memory, replaced by the dequantized qvalues
            filled["values"] = {
                "dtype": "float64",
                "shape": qvalues["shape"],
                "data": numpy.broadcast_to(numpy.zeros((), dtype=numpy.float64), tuple(qvalues["shape"])),
            }
        obj = load_dict(filled, backend=backend)
        if isinstance(obj, QuantizedArray) and obj.qvalues is not None:
            obj.dequant()
        loaded[name] = obj
    return loaded


def _filled(value: Any, path: Tuple[str, ...], arrays: Dict[Tuple[str, ...], Any]) -> Any:
    if path in arrays:
        return arrays[path]
    if isinstance(value, dict):
        return {key: _filled(item, path + (str(key),), arrays) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, path + (str(position),), arrays) for position, item in enumerate(value)]
    return value


def _read(
    reference: Dict[str, Any], entry: TensorEntry, view: memoryview, data_start: int, where: str
) -> Dict[str, Any]:
    """Read one tensor from the mapped file into a fresh host array of the declared dtype."""
    declared, shape = reference["dtype"], list(reference["shape"])
    raw = view[data_start + entry.begin : data_start + entry.end]
    packed = reference.get("packed")
    if packed is not None:
        bits, signed = _PACKED[packed]
        stored = numpy.frombuffer(raw, dtype=numpy.uint8).reshape(entry.shape)
        host = _as_integers(unpack(stored, bits, shape[-1], signed=signed), declared, where)
    elif declared in INTEGER_DTYPES:
        stored = numpy.frombuffer(raw, dtype=numpy.dtype(entry.dtype).newbyteorder("<")).reshape(entry.shape)
        host = _as_integers(stored, declared, where)
    else:
        host = decode_wire(raw, declared, shape)
    return {"dtype": declared, "shape": shape, "data": host}


def _as_integers(stored: numpy.ndarray, declared: str, where: str) -> numpy.ndarray:
    """Integers as the declared dtype, refusing values it cannot hold (never wrapped around)."""
    if not numpy.can_cast(stored.dtype, declared, "safe") and stored.size:
        low, high = INTEGER_RANGES[declared]
        if int(stored.min()) < low or int(stored.max()) > high:
            raise ValueError(f"{where}: the tensor holds integers outside the {declared} range [{low}, {high}]")
    return stored.astype(numpy.dtype(declared))
