"""A deterministic fuzz of the loader: mutated dumps load faithfully or raise ValueError/TypeError.

Valid dumps of every class are mutated in two ways, with a fixed seed:

* structurally: every field, at every depth (array dtypes, shapes and their
  entries included), is replaced in turn by wrongly typed, huge, negative, empty
  and null values, deleted, or joined by an extra key;
* textually: the JSON text (as UTF-8 bytes) gets random byte flips, insertions,
  deletions, swaps of a piece and truncations.

For every mutated document there are two acceptable outcomes: ``qarray.loads``
raises exactly ``ValueError`` or ``TypeError``, or it returns an object whose own
dump is equivalent to the mutated document (same fields, same numbers, arrays with
the same dtype, shape and bytes). Anything else (another exception, or an object
that silently differs from its document) fails the test. ``COUNTS`` records how
many documents were tried and how each ended; the final test prints it.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import random
from typing import Any, Dict, Iterator, List, Tuple

import numpy
import pytest

import qarray
from qarray import (
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizationParameters,
    UniformQuantizer,
)

SEED = 20240611
TEXT_MUTATIONS_PER_DOCUMENT = 2000

COUNTS: Dict[str, int] = collections.Counter()
"""How many mutated documents were tried, by mutation kind and outcome."""

FLOAT_FIELDS = {"scale", "rmin", "rmax"}
"""Fields that hold float64: a JSON int there means the same number as a float."""

REPLACEMENTS: List[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    3,
    53,
    2**31,
    2**63,
    -(2**63) - 1,
    2**64,
    10**30,
    10**400,
    0.5,
    -0.0,
    1e308,
    5e-324,
    "",
    "1",
    "float64",
    "QuantizedArray",
    "A" * 64,
    [],
    [1],
    [[[[]]]],
    {},
    {"dtype": "float64", "shape": [1], "data": "AAAAAAAA8D8="},
    {"dtype": "int64", "shape": [], "data": "AQAAAAAAAAA="},
]
"""Values each field is replaced by: wrong types, huge, negative, empty, null, and valid-looking."""


def _documents() -> Dict[str, Dict[str, Any]]:
    rng = numpy.random.default_rng(SEED)
    values = rng.standard_normal((3, 4)).astype(numpy.float32)
    options = QuantizationOptions(5, is_signed=True, is_qat=True)
    options.is_narrow = True
    per_channel = QuantizedArray(
        6, values.astype(numpy.float64), scale=0.05, zero_point=numpy.array([[1], [2], [3]]), offset=0
    )
    unfilled = QuantizedArray(4, None)
    return {
        "options": QuantizationOptions(8, is_signed=True, is_symmetric=True).dump_dict(),
        "options-flags": options.dump_dict(),
        "stats-empty": MinMaxQuantizationStats().dump_dict(),
        "stats": MinMaxQuantizationStats(rmax=2.0, rmin=-1.0, uvalues=numpy.array([-1.0, 0.5, 2.0])).dump_dict(),
        "params-int": UniformQuantizationParameters(0.1, -7, 128).dump_dict(),
        "params-float": UniformQuantizationParameters(-2.0, 3.0, 0).dump_dict(),
        "params-array": UniformQuantizationParameters(0.5, numpy.array([1.0, -2.0]), 0).dump_dict(),
        "quantizer": QuantizedArray(8, values).quantizer.dump_dict(),
        "quantizer-empty": UniformQuantizer().dump_dict(),
        "array": QuantizedArray(8, values).dump_dict(),
        "array-qat": QuantizedArray(3, numpy.array([-0.5, 0.0, 0.25, 0.5]), is_qat=True).dump_dict(),
        "array-per-channel": per_channel.dump_dict(),
        "array-float16-int-path": QuantizedArray(
            4, numpy.array([1, 2], dtype=numpy.int8), value_is_float=False, scale=0.5, zero_point=1, offset=0
        ).dump_dict(),
        "array-unfilled": unfilled.dump_dict(),
        "array-onnx-blocks": QuantizedArray(4, values, is_signed=True, profile="onnx", block_size=2).dump_dict(),
    }


DOCUMENTS = _documents()


# -- equivalence of a document and the dump of what was loaded from it ---------------------


def _decoded_array(value: Dict[str, Any]) -> Any:
    try:
        raw = base64.b64decode(value["data"].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError, AttributeError):
        return ("undecodable", value["data"])
    return ("array", value["dtype"], tuple(value["shape"]) if isinstance(value["shape"], list) else value["shape"], raw)


def normalized(value: Any, key: str = "") -> Any:
    """A form of a document in which equivalent documents are equal.

    Encoded arrays compare by dtype, shape and decoded bytes (base64 has non-canonical
    spellings of the same bytes); float fields compare as float64.
    """
    if isinstance(value, dict):
        if set(value) == {"dtype", "shape", "data"}:
            return _decoded_array(value)
        version = value.get("format_version")
        if version in (1, 2):  # an older document re-dumps in the current format
            value = {**value, "format_version": qarray.FORMAT_VERSION}
            if value.get("type") == "QuantizationOptions":
                value = {**value, "profile": "concrete"}
                if version == 1:
                    value = {**value, "axis": None, "block_size": None}
        return {name: normalized(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [normalized(item) for item in value]
    if key in FLOAT_FIELDS and type(value) is int:
        return ("float", float(value).hex())
    if type(value) is float:
        return ("float", value.hex())  # -0.0 and 0.0 differ, as do NaN payloads
    return value


def outcome(document: bytes) -> str:
    """Load one document; return how it ended, or raise AssertionError if it is not acceptable."""
    try:
        loaded = qarray.loads(document)
    except (ValueError, TypeError) as error:
        if type(error) not in (ValueError, TypeError):
            raise AssertionError(f"refused with {type(error).__module__}.{type(error).__name__}: {error}") from error
        return "refused"
    except RecursionError as error:  # pragma: no cover - reported below
        raise AssertionError(f"RecursionError: {error}") from error
    except Exception as error:
        raise AssertionError(f"{type(error).__module__}.{type(error).__name__}: {error}") from error
    again = json.loads(loaded.dumps())
    parsed = json.loads(document.decode("utf-8"))
    if normalized(again) != normalized(parsed):
        raise AssertionError(f"loaded object differs from its document:\n{parsed}\n{again}")
    return "loaded"


# -- structural mutations -----------------------------------------------------------------


def _paths(value: Any, prefix: Tuple[Any, ...] = ()) -> Iterator[Tuple[Any, ...]]:
    if isinstance(value, dict):
        for name, item in value.items():
            yield prefix + (name,)
            yield from _paths(item, prefix + (name,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield prefix + (index,)
            yield from _paths(item, prefix + (index,))


def _dict_paths(value: Any, prefix: Tuple[Any, ...] = ()) -> Iterator[Tuple[Any, ...]]:
    if isinstance(value, dict):
        yield prefix
        for name, item in value.items():
            yield from _dict_paths(item, prefix + (name,))


def _with(document: Dict[str, Any], path: Tuple[Any, ...], action: str, value: Any = None) -> Dict[str, Any]:
    copy = json.loads(json.dumps(document))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    elif action == "replace":
        parent[path[-1]] = value
    elif action == "add":
        target = parent[path[-1]] if path else copy
        target[value[0]] = value[1]
    return copy


def structural_mutations(document: Dict[str, Any]) -> Iterator[Tuple[str, Dict[str, Any]]]:
    for path in _paths(document):
        for replacement in REPLACEMENTS:
            yield "replace", _with(document, path, "replace", replacement)
        if isinstance(path[-1], str):
            yield "delete", _with(document, path, "delete")
    for path in _dict_paths(document):
        for extra in (("extra", 1), ("__class__", "os.system"), ("type", "QuantizationOptions"), ("data", "")):
            yield "add-key", _with(document, path, "add", extra)


# -- text mutations ----------------------------------------------------------------------


def text_mutations(document: Dict[str, Any], rng: random.Random, count: int) -> Iterator[Tuple[str, bytes]]:
    original = json.dumps(document, separators=(",", ":")).encode("utf-8")
    for _ in range(count):
        data = bytearray(original)
        kind = rng.choice(("flip", "flip", "insert", "delete", "swap", "truncate", "digit"))
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            if not data:
                break
            at = rng.randrange(len(data))
            if kind == "flip":
                data[at] ^= 1 << rng.randrange(8)
            elif kind == "insert":
                data[at:at] = bytes([rng.choice(b'{}[]",:0123456789-.eEtfn \\')])
            elif kind == "delete":
                del data[at : at + rng.randint(1, 4)]
            elif kind == "swap":
                other = rng.randrange(len(data))
                data[at], data[other] = data[other], data[at]
            elif kind == "truncate":
                del data[at:]
            elif kind == "digit":  # numbers and base64 letters change, the JSON stays valid more often
                if chr(data[at]).isalnum():
                    data[at] = ord(rng.choice("0123456789ABCDEFabcdef+/"))
        yield f"text-{kind}", bytes(data)


# -- the tests ---------------------------------------------------------------------------


def _run(tries: Iterator[Tuple[str, Any]], label: str) -> None:
    failures: List[str] = []
    for kind, document in tries:
        data = document if isinstance(document, bytes) else json.dumps(document).encode("utf-8")
        try:
            result = outcome(data)
        except AssertionError as error:
            result = "FAILED"
            if len(failures) < 5:
                failures.append(f"{label}/{kind}: {str(error)[:600]}\n  document: {data[:400]!r}")
        COUNTS["tried"] += 1
        COUNTS[result] += 1
        COUNTS[f"{kind}:{result}"] += 1
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_structural_mutations_load_faithfully_or_are_refused(name: str) -> None:
    assert outcome(json.dumps(DOCUMENTS[name]).encode()) == "loaded"
    _run(structural_mutations(DOCUMENTS[name]), name)


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_text_mutations_load_faithfully_or_are_refused(name: str) -> None:
    rng = random.Random(f"{SEED}-{name}")
    _run(text_mutations(DOCUMENTS[name], rng, TEXT_MUTATIONS_PER_DOCUMENT), name)


def test_zz_report_how_many_documents_were_tried() -> None:
    """Runs last in this file: the fuzz tried thousands of documents (printed with ``-s``)."""
    if COUNTS["tried"] == 0:
        pytest.skip("the fuzz tests did not run in this session")
    summary = ", ".join(f"{key}={COUNTS[key]}" for key in ("tried", "loaded", "refused", "FAILED"))
    print(f"\nfuzz: {summary}")
    for key in sorted(COUNTS):
        if ":" in key:
            print(f"  {key}: {COUNTS[key]}")
    assert COUNTS["FAILED"] == 0, summary
    assert COUNTS["tried"] >= 5000, summary
    assert COUNTS["loaded"] > 0 and COUNTS["refused"] > 0, summary
