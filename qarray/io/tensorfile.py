"""The safetensors container: its dtypes, a strict reader of its header, and its header's bytes.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of JSON
(a map of tensor names to ``{"dtype", "shape", "data_offsets"}`` plus an optional
``"__metadata__"`` map of str to str), then the tensors' bytes, little-endian, C order,
back to back. This module owns that layout and nothing above it: which objects the
tensors and metadata hold is ``qarray.safetensors_file``'s business.

The reader trusts nothing: the length is bounded and checked against the file, the JSON
is parsed strictly (:func:`~qarray.io.codec.parse_document`), every tensor entry must
have exactly its three fields with a known dtype, and the offsets must tile the data
region exactly, in order, with no gap and no overlap, each span as long as its shape
and dtype need (what the format itself defines as valid). Anything else raises
``ValueError`` (or ``TypeError`` for a field of the wrong JSON type).
"""

from __future__ import annotations

import json
import math
from typing import IO, Any, Dict, List, NamedTuple, Sequence, Tuple

import numpy

from ..core.checks import describe
from .codec import check_keys, check_shape, parse_document

__all__ = [
    "DTYPE_CODES",
    "MAX_HEADER_BYTES",
    "Header",
    "TensorEntry",
    "header_bytes",
    "nbytes",
    "read_header",
]

DTYPE_CODES: Dict[str, str] = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "uint16": "U16",
    "int16": "I16",
    "uint32": "U32",
    "int32": "I32",
    "uint64": "U64",
    "int64": "I64",
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float64": "F64",
}
"""qarray's dtype names and the safetensors codes of the same dtypes; other codes are refused."""

_DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}
_ITEMSIZES = {name: 2 if name == "bfloat16" else numpy.dtype(name).itemsize for name in DTYPE_CODES}

MAX_HEADER_BYTES = 100_000_000
"""The longest header read (the limit of the format's own reader); a longer claim is refused."""

_METADATA = "__metadata__"
_LENGTH_BYTES = 8
_ALIGNMENT = 8  # the data region starts at a multiple of 8 (the header is padded with spaces)


class TensorEntry(NamedTuple):
    """One tensor of a header: qarray's dtype name, its shape, and its bytes' span in the data region."""

    dtype: str
    shape: Tuple[int, ...]
    begin: int
    end: int


class Header(NamedTuple):
    """A checked header: the metadata map, the tensors by name, and where the data region starts."""

    metadata: Dict[str, str]
    tensors: Dict[str, TensorEntry]
    data_start: int


def nbytes(dtype: str, shape: Sequence[int]) -> int:
    """The bytes a tensor of qarray dtype ``dtype`` and ``shape`` takes."""
    return _ITEMSIZES[dtype] * math.prod(shape)


def read_header(stream: IO[bytes], file_size: int) -> Header:
    """Read and check the header of a safetensors file open at its start.

    Args:
        stream: the file, opened for binary reading, positioned at 0.
        file_size: the file's size in bytes.

    Raises:
        ValueError: if the file is too short, the length absurd or longer than the file,
            the header not strict JSON, a tensor entry malformed or of an unknown dtype,
            or the offsets do not tile the data region exactly.
        TypeError: if a field has the wrong JSON type.
    """
    if file_size < _LENGTH_BYTES:
        raise ValueError(f"not a safetensors file: {file_size} bytes, fewer than the 8 of the header length")
    length = int.from_bytes(stream.read(_LENGTH_BYTES), "little")
    if length > MAX_HEADER_BYTES:
        raise ValueError(f"the header length {length} is larger than the limit of {MAX_HEADER_BYTES} bytes")
    if _LENGTH_BYTES + length > file_size:
        raise ValueError(
            f"the header length {length} claims more bytes than the file holds ({file_size - _LENGTH_BYTES} after "
            "the length)"
        )
    text = stream.read(length)
    if len(text) != length:
        raise ValueError(f"the file ended inside its header ({len(text)} of {length} bytes)")
    if not text.startswith(b"{"):
        raise ValueError("the header is not a JSON object (it must start with '{')")
    parsed = parse_document(text)
    if not isinstance(parsed, dict):
        raise ValueError(f"the header must be a JSON object, got {type(parsed).__name__}")
    metadata = _metadata(parsed.pop(_METADATA, {}))
    tensors = {str(name): _entry(name, value) for name, value in parsed.items()}
    data_start = _LENGTH_BYTES + length
    _check_offsets(tensors, file_size - data_start)
    return Header(metadata, tensors, data_start)


def _metadata(value: Any) -> Dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError(f"{_METADATA} must be a JSON object of strings, got {describe(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise TypeError(f"{_METADATA}[{describe(key)}] must be a string, got {describe(item)}")
    return value


def _entry(name: str, value: Any) -> TensorEntry:
    """Check one tensor entry: exactly dtype, shape and data_offsets, each well formed."""
    where = f"tensor {describe(name)}"
    check_keys(value, ("dtype", "shape", "data_offsets"), where, "a tensor entry")
    code, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if not isinstance(code, str) or code not in _DTYPE_NAMES:
        raise ValueError(f"{where}: dtype must be one of {', '.join(_DTYPE_NAMES)}, got {describe(code)}")
    dtype = _DTYPE_NAMES[code]
    expected = check_shape(shape, where, _ITEMSIZES[dtype])
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(at) is int for at in offsets):
        raise TypeError(f"{where}: data_offsets must be a list of two ints, got {describe(offsets)}")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise ValueError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end, got {describe(offsets)}")
    if end - begin != expected:
        raise ValueError(
            f"{where}: data_offsets {describe(offsets)} span {end - begin} bytes, but shape {describe(shape)} of "
            f"{code} needs {expected}"
        )
    return TensorEntry(dtype, tuple(shape), begin, end)


def _check_offsets(tensors: Dict[str, TensorEntry], data_bytes: int) -> None:
    """The spans, in order, must tile ``[0, data_bytes)``: no gap, no overlap, nothing after."""
    position = 0
    for name, entry in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != position:
            problem = "overlaps the one before" if entry.begin < position else f"leaves a gap after byte {position}"
            raise ValueError(f"tensor {describe(name)}: data_offsets [{entry.begin}, {entry.end}] {problem}")
        position = entry.end
    if position != data_bytes:
        raise ValueError(
            f"the tensors' data_offsets end at byte {position}, but the file holds {data_bytes} bytes after its header"
        )


def header_bytes(metadata: Dict[str, str], tensors: List[Tuple[str, str, Tuple[int, ...]]]) -> bytes:
    """Return the length and header of a file holding ``tensors`` back to back, in that order.

    Args:
        metadata: the ``__metadata__`` map (str to str).
        tensors: ``(name, qarray dtype name, shape)`` of each tensor, in the order their
            bytes follow.

    Returns:
        The 8 length bytes and the JSON header, padded with spaces so that the data
        region starts at a multiple of 8.
    """
    header: Dict[str, Any] = {_METADATA: metadata}
    position = 0
    for name, dtype, shape in tensors:
        end = position + nbytes(dtype, shape)
        header[name] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [position, end]}
        position = end
    text = json.dumps(header, allow_nan=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(_LENGTH_BYTES + len(text)) % _ALIGNMENT)
    return len(text).to_bytes(_LENGTH_BYTES, "little") + text
