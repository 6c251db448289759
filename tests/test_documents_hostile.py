"""Hostile documents: ``qarray.loads`` refuses them with ValueError or TypeError, and does no harm.

``HOSTILE`` is a table of hand-made bad documents, each derived from a valid dump
by one change (or written out as text or bytes): broken JSON, unknown or missing
type tags, missing, extra or wrongly typed fields, dtypes outside the allow-list,
shapes that do not match the payload, absurd sizes, deep nesting, NaN tokens,
huge ints, invalid option combinations, inconsistent statistics. Each must raise
exactly ValueError or TypeError (no library-internal subclass) with a message
naming the field at fault. Further tests check that absurd size claims are
refused before any allocation and that nothing named in a document is imported.
"""

from __future__ import annotations

import builtins
import copy
import json
import pickle
import sys
import tracemalloc
from typing import Any, Callable, Dict, List, NamedTuple, Tuple, Type, Union

import numpy
import pytest

import qarray
from qarray import QuantizationOptions, QuantizedArray, UniformQuantizationParameters

DELETE = object()
"""Marks a field to remove instead of replace."""


def _valid_documents() -> Dict[str, Dict[str, Any]]:
    """One valid dump of every class, with every optional part present."""
    qat = QuantizedArray(3, numpy.array([[-0.5, -0.25], [0.0, 0.5]], dtype=numpy.float32), is_qat=True)
    per_channel = UniformQuantizationParameters(0.5, numpy.array([1, -2, 3], dtype=numpy.int64), 0)
    return {
        "options": QuantizationOptions(8, is_signed=True, is_symmetric=True).dump_dict(),
        "stats": qat.quantizer.stats.dump_dict(),
        "params": per_channel.dump_dict(),
        "quantizer": qat.quantizer.dump_dict(),
        "array": qat.dump_dict(),
    }


VALID = _valid_documents()


def changed(kind: str, path: Tuple[Union[str, int], ...], value: Any) -> Dict[str, Any]:
    """A deep copy of the valid document ``kind`` with the field at ``path`` replaced (or deleted)."""
    document = copy.deepcopy(VALID[kind])
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return document


def text(document: Any) -> str:
    return json.dumps(document)


def replaced(kind: str, old: str, new: str) -> str:
    """The valid document ``kind`` as compact JSON text with one piece of text replaced."""
    compact = json.dumps(VALID[kind], separators=(",", ":"))
    if old not in compact:
        raise KeyError(f"{old!r} is not in the {kind} document")
    return compact.replace(old, new, 1)


class Hostile(NamedTuple):
    """A hostile document, the exception type it must raise and a text its message must hold."""

    id: str
    document: Union[str, bytes, Callable[[], Union[str, bytes]]]
    error: Type[Exception]
    names: str


ARRAY_PATH = ("values",)
BASE = VALID["array"]["values"]


def array_field(**fields: Any) -> Dict[str, Any]:
    """The encoded ``values`` array of the valid QuantizedArray with some keys replaced."""
    encoded = dict(BASE)
    for name, value in fields.items():
        if value is DELETE:
            del encoded[name]
        else:
            encoded[name] = value
    return encoded


def nested(depth: int, opening: str, closing: str, inner: str = "") -> str:
    return opening * depth + inner + closing * depth


HOSTILE: List[Hostile] = [
    # -- not JSON, or not JSON we accept ------------------------------------------------------
    Hostile("empty", "", ValueError, "JSON"),
    Hostile("truncated", replaced("options", "", "")[:-1], ValueError, "JSON"),
    Hostile("single-quotes", "{'type': 'QuantizationOptions'}", ValueError, "JSON"),
    Hostile("trailing-comma", replaced("options", "}", ",}"), ValueError, "JSON"),
    Hostile("trailing-garbage", replaced("options", "", "") + "x", ValueError, "JSON"),
    Hostile("two-documents", replaced("options", "", "") * 2, ValueError, "JSON"),
    Hostile("not-utf8", b"\xff\xfe{}", ValueError, "UTF-8"),
    Hostile("overlong-utf8", b'{"type":"\xc0\xaf"}', ValueError, "UTF-8"),
    Hostile("utf16", text(VALID["options"]).encode("utf-16"), ValueError, "UTF-8"),
    Hostile("utf8-bom", b"\xef\xbb\xbf" + text(VALID["options"]).encode(), ValueError, "JSON"),
    Hostile("nan-token", replaced("params", '"scale":0.5', '"scale":NaN'), ValueError, "NaN"),
    Hostile("infinity-token", replaced("params", '"scale":0.5', '"scale":Infinity'), ValueError, "Infinity"),
    Hostile("minus-infinity-token", replaced("stats", '"rmin":-0.5', '"rmin":-Infinity'), ValueError, "Infinity"),
    Hostile("overflowing-number", replaced("params", '"scale":0.5', '"scale":1e999'), ValueError, "scale"),
    Hostile("huge-int", replaced("options", '"n_bits":8', '"n_bits":' + "9" * 5000), ValueError, "digits"),
    Hostile("big-int", replaced("options", '"n_bits":8', '"n_bits":' + "9" * 400), ValueError, "n_bits"),
    Hostile("duplicate-key", replaced("options", '"n_bits":8', '"n_bits":8,"n_bits":2'), ValueError, "n_bits"),
    Hostile("deep-lists", lambda: nested(100_000, "[", "]"), ValueError, "nested"),
    Hostile("deep-objects", lambda: nested(100_000, '{"a":', "}", "1"), ValueError, "nested"),
    Hostile("deep-in-a-field", lambda: replaced("options", '"n_bits":8', '"n_bits":' + nested(100_000, "[", "]")), ValueError, "nested"),
    Hostile("deep-but-parsable-type", lambda: '{"type":' + nested(500, "[", "]") + "}", ValueError, "type"),
    Hostile("nul-character", replaced("options", "QuantizationOptions", "Quantization\\u0000Options"), ValueError, "type"),
    Hostile("lone-surrogate", replaced("options", "QuantizationOptions", "\\ud800"), ValueError, "type"),
    # -- the envelope ---------------------------------------------------------------------
    Hostile("top-level-list", "[]", TypeError, "JSON object"),
    Hostile("top-level-string", '"QuantizationOptions"', TypeError, "JSON object"),
    Hostile("top-level-number", "8", TypeError, "JSON object"),
    Hostile("top-level-null", "null", TypeError, "JSON object"),
    Hostile("empty-object", "{}", ValueError, "type"),
    Hostile("type-missing", text(changed("options", ("type",), DELETE)), ValueError, "type"),
    Hostile("type-os-system", text(changed("options", ("type",), "os.system")), ValueError, "type"),
    Hostile("type-import-expression", text(changed("options", ("type",), "__import__('os').system('true')")), ValueError, "type"),
    Hostile("type-pickle-module", text(changed("array", ("type",), "pickle.loads")), ValueError, "type"),
    Hostile("type-builtins-eval", text(changed("array", ("type",), "builtins.eval")), ValueError, "type"),
    Hostile("type-lower-case", text(changed("options", ("type",), "quantizationoptions")), ValueError, "type"),
    Hostile("type-with-space", text(changed("options", ("type",), "QuantizationOptions ")), ValueError, "type"),
    Hostile("type-null", text(changed("options", ("type",), None)), ValueError, "type"),
    Hostile("type-list", text(changed("options", ("type",), ["QuantizationOptions"])), ValueError, "type"),
    Hostile("type-object", text(changed("options", ("type",), {"name": "QuantizationOptions"})), ValueError, "type"),
    Hostile("type-of-a-private-class", text(changed("options", ("type",), "Serializable")), ValueError, "type"),
    Hostile("nested-type-wrong", text(changed("array", ("quantizer", "type"), "QuantizedArray")), ValueError, "UniformQuantizer"),
    Hostile("nested-type-swapped", text(changed("quantizer", ("options", "type"), "UniformQuantizationParameters")), ValueError, "QuantizationOptions"),
    Hostile("version-missing", text(changed("options", ("format_version",), DELETE)), ValueError, "format_version"),
    Hostile("version-zero", text(changed("options", ("format_version",), 0)), ValueError, "format_version"),
    Hostile("version-future", text(changed("array", ("format_version",), qarray.FORMAT_VERSION + 1)), ValueError,
            "format_version"),
    Hostile("version-string", text(changed("options", ("format_version",), "1")), ValueError, "format_version"),
    Hostile("version-float", text(changed("options", ("format_version",), 1.0)), ValueError, "format_version"),
    Hostile("version-true", text(changed("options", ("format_version",), True)), ValueError, "format_version"),
    Hostile("version-huge", text(changed("options", ("format_version",), 10**30)), ValueError, "format_version"),
    Hostile("nested-version-wrong", text(changed("array", ("quantizer", "stats", "format_version"), 7)), ValueError, "format_version"),
    # -- QuantizationOptions ----------------------------------------------------------------
    Hostile("options-n_bits-true", text(changed("options", ("n_bits",), True)), TypeError, "n_bits"),
    Hostile("options-n_bits-string", text(changed("options", ("n_bits",), "8")), TypeError, "n_bits"),
    Hostile("options-n_bits-float", text(changed("options", ("n_bits",), 8.0)), TypeError, "n_bits"),
    Hostile("options-n_bits-null", text(changed("options", ("n_bits",), None)), TypeError, "n_bits"),
    Hostile("options-n_bits-list", text(changed("options", ("n_bits",), [8])), TypeError, "n_bits"),
    Hostile("options-n_bits-zero", text(changed("options", ("n_bits",), 0)), ValueError, "n_bits"),
    Hostile("options-n_bits-negative", text(changed("options", ("n_bits",), -8)), ValueError, "n_bits"),
    Hostile("options-n_bits-too-large", text(changed("options", ("n_bits",), 54)), ValueError, "n_bits"),
    Hostile("options-flag-int", text(changed("options", ("is_signed",), 1)), TypeError, "is_signed"),
    Hostile("options-flag-string", text(changed("options", ("is_qat",), "false")), TypeError, "is_qat"),
    Hostile("options-flag-null", text(changed("options", ("is_narrow",), None)), TypeError, "is_narrow"),
    Hostile("options-symmetric-unsigned", text(changed("options", ("is_signed",), False)), ValueError, "is_symmetric"),
    Hostile("options-symmetric-qat", text(changed("options", ("is_qat",), True)), ValueError, "is_qat"),
    Hostile("options-symmetric-one-bit", text(changed("options", ("n_bits",), 1)), ValueError, "n_bits"),
    Hostile("options-as-list", text(changed("quantizer", ("options",), [8, False])), TypeError, "QuantizationOptions"),
    # -- MinMaxQuantizationStats ------------------------------------------------------------
    Hostile("stats-rmin-above-rmax", text(changed("stats", ("rmin",), 5.0)), ValueError, "rmin"),
    Hostile("stats-rmin-without-rmax", text(changed("stats", ("rmax",), None)), ValueError, "rmax"),
    Hostile("stats-rmax-string", text(changed("stats", ("rmax",), "0.5")), TypeError, "rmax"),
    Hostile("stats-rmax-true", text(changed("stats", ("rmax",), True)), TypeError, "rmax"),
    Hostile("stats-rmax-huge-int", text(changed("stats", ("rmax",), 10**400)), ValueError, "rmax"),
    # an object is a per-block range (an encoded array) since format 2: a malformed one is refused
    Hostile("stats-rmin-object", text(changed("stats", ("rmin",), {"value": 0})), ValueError, "rmin"),
    Hostile("stats-uvalues-plain-list", text(changed("stats", ("uvalues",), [-0.5, 0.5])), TypeError, "uvalues"),
    Hostile("stats-uvalues-int-dtype", text(changed("stats", ("uvalues",), {"dtype": "int64", "shape": [1], "data": "AAAAAAAAAAA="})), ValueError, "uvalues"),
    Hostile("stats-uvalues-nan", text(changed("stats", ("uvalues",), {"dtype": "float64", "shape": [1], "data": "AAAAAAAA+H8="})), ValueError, "uvalues"),
    Hostile("stats-uvalues-unsorted", text(changed("stats", ("uvalues",), {"dtype": "float64", "shape": [2], "data": "AAAAAAAA8D8AAAAAAAAAAA=="})), ValueError, "uvalues"),
    Hostile("stats-uvalues-repeated", text(changed("stats", ("uvalues",), {"dtype": "float64", "shape": [2], "data": "AAAAAAAA8D8AAAAAAADwPw=="})), ValueError, "uvalues"),
    Hostile("stats-uvalues-2d", text(changed("stats", ("uvalues",), {"dtype": "float64", "shape": [1, 1], "data": "AAAAAAAAAAA="})), ValueError, "uvalues"),
    Hostile("stats-as-null", text(changed("quantizer", ("stats",), None)), TypeError, "MinMaxQuantizationStats"),
    # -- UniformQuantizationParameters -----------------------------------------------------
    Hostile("params-scale-zero", text(changed("params", ("scale",), 0)), ValueError, "scale"),
    Hostile("params-scale-negative-zero", text(changed("params", ("scale",), -0.0)), ValueError, "scale"),
    Hostile("params-scale-string", text(changed("params", ("scale",), "0.5")), TypeError, "scale"),
    Hostile("params-scale-true", text(changed("params", ("scale",), True)), TypeError, "scale"),
    Hostile("params-scale-list", text(changed("params", ("scale",), [0.5])), TypeError, "scale"),
    Hostile("params-scale-huge-int", text(changed("params", ("scale",), 10**400)), ValueError, "scale"),
    Hostile("params-zero-point-half", text(changed("params", ("zero_point",), 0.5)), ValueError, "zero_point"),
    Hostile("params-zero-point-string", text(changed("params", ("zero_point",), "1")), TypeError, "zero_point"),
    Hostile("params-zero-point-true", text(changed("params", ("zero_point",), True)), TypeError, "zero_point"),
    Hostile("params-zero-point-list", text(changed("params", ("zero_point",), [1, 2, 3])), TypeError, "zero_point"),
    Hostile("params-zero-point-beyond-int64", text(changed("params", ("zero_point",), 2**64)), ValueError, "zero_point"),
    Hostile("params-zero-point-float-beyond-int64", text(changed("params", ("zero_point",), 1e19)), ValueError, "zero_point"),
    Hostile("params-zero-point-array-non-integral", text(changed("params", ("zero_point",), {"dtype": "float64", "shape": [1], "data": "AAAAAAAA4D8="})), ValueError, "zero_point"),
    Hostile("params-zero-point-array-0d", text(changed("params", ("zero_point",), {"dtype": "int64", "shape": [], "data": "AQAAAAAAAAA="})), ValueError, "zero_point"),
    Hostile("params-zero-point-array-int8", text(changed("params", ("zero_point",), {"dtype": "int8", "shape": [1], "data": "AQ=="})), ValueError, "zero_point"),
    Hostile("params-zero-point-array-bool", text(changed("params", ("zero_point",), {"dtype": "bool", "shape": [1], "data": "AQ=="})), ValueError, "zero_point"),
    Hostile("params-offset-negative", text(changed("params", ("offset",), -1)), ValueError, "offset"),
    Hostile("params-offset-float", text(changed("params", ("offset",), 1.5)), TypeError, "offset"),
    Hostile("params-offset-true", text(changed("params", ("offset",), True)), TypeError, "offset"),
    Hostile("params-offset-huge", text(changed("params", ("offset",), 2**60)), ValueError, "offset"),
    # -- UniformQuantizer ---------------------------------------------------------------------
    Hostile("quantizer-no_clipping-int", text(changed("quantizer", ("no_clipping",), 0)), TypeError, "no_clipping"),
    Hostile("quantizer-no_clipping-string", text(changed("quantizer", ("no_clipping",), "false")), TypeError, "no_clipping"),
    Hostile("quantizer-no_clipping-null", text(changed("quantizer", ("no_clipping",), None)), TypeError, "no_clipping"),
    Hostile("quantizer-params-without-options", text(changed("quantizer", ("options",), None)), ValueError, "options"),
    Hostile("quantizer-params-string", text(changed("quantizer", ("params",), "scale=1")), TypeError, "UniformQuantizationParameters"),
    # -- QuantizedArray -----------------------------------------------------------------------
    Hostile("array-n_bits-differs", text(changed("array", ("n_bits",), 4)), ValueError, "n_bits"),
    Hostile("array-options-n_bits-differs", text(changed("array", ("quantizer", "options", "n_bits"), 4)), ValueError, "n_bits"),
    Hostile("array-n_bits-true", text(changed("array", ("n_bits",), True)), TypeError, "n_bits"),
    Hostile("array-n_bits-null", text(changed("array", ("n_bits",), None)), TypeError, "n_bits"),
    Hostile("array-values-without-qvalues", text(changed("array", ("qvalues",), None)), ValueError, "qvalues"),
    Hostile("array-qvalues-without-values", text(changed("array", ("values",), None)), ValueError, "values"),
    Hostile("array-shapes-differ", text(changed("array", ("values",), array_field(shape=[4]))), ValueError, "shape"),
    Hostile("array-values-int-dtype", text(changed("array", ("values",), array_field(dtype="int32"))), ValueError, "values"),
    Hostile("array-qvalues-float-dtype", text(changed("array", ("qvalues", "dtype"), "float64")), ValueError, "qvalues"),
    Hostile(
        "array-zero-point-not-broadcasting",
        text(changed("array", ("quantizer", "params", "zero_point"), {"dtype": "int64", "shape": [3], "data": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})),
        ValueError,
        "zero_point",
    ),
    Hostile("array-as-list", text(changed("array", ("values",), [[-0.5, -0.25], [0.0, 0.5]])), TypeError, "values"),
    Hostile("array-key-missing", text(changed("array", ("values",), array_field(data=DELETE))), ValueError, "values"),
    Hostile("array-key-extra", text(changed("array", ("values",), array_field(order="F"))), ValueError, "values"),
    Hostile("array-key-code", text(changed("array", ("values",), array_field(__reduce__="os.system"))), ValueError, "values"),
    *[
        Hostile(f"array-dtype-{label}", text(changed("array", ("values",), array_field(dtype=dtype))), error, "dtype")
        for label, dtype, error in [
            ("object", "object", ValueError),
            ("O", "O", ValueError),
            ("pipe-O", "|O", ValueError),
            ("void", "void", ValueError),
            ("V8", "V8", ValueError),
            ("str", "str", ValueError),
            ("U10", "<U10", ValueError),
            ("S8", "S8", ValueError),
            ("float128", "float128", ValueError),
            ("complex128", "complex128", ValueError),
            ("big-endian", ">f4", ValueError),
            ("datetime", "datetime64[s]", ValueError),
            ("structured", "[('a', '<f8')]", ValueError),
            ("empty", "", ValueError),
            ("null", None, TypeError),
            ("number", 11, TypeError),
            ("list", ["float32"], TypeError),
        ]
    ],
    *[
        Hostile(f"array-shape-{label}", text(changed("array", ("values",), array_field(shape=shape))), error, "shape")
        for label, shape, error in [
            ("string", "2,2", TypeError),
            ("number", 4, TypeError),
            ("null", None, TypeError),
            ("object", {"0": 2}, TypeError),
            ("negative", [-2, -2], ValueError),
            ("float", [2.0, 2.0], TypeError),
            ("true", [True, 4], TypeError),
            ("null-entry", [None, 4], TypeError),
            ("too-many-dimensions", [1] * 33, ValueError),
            ("larger-than-the-bytes", [2, 3], ValueError),
            ("smaller-than-the-bytes", [1, 2], ValueError),
            ("absurd", [2**40, 2**40], ValueError),
            ("absurd-with-an-empty-axis", [0, 10**30], ValueError),
            ("absurd-int64-overflow", [0, 2**62, 2**62], ValueError),
            ("beyond-int64", [2**64], ValueError),
        ]
    ],
    *[
        Hostile(f"array-data-{label}", text(changed("array", ("values",), array_field(data=data))), error, "data")
        for label, data, error in [
            ("number", 0, TypeError),
            ("null", None, TypeError),
            ("list", [0, 0, 0, 0], TypeError),
            ("truncated", BASE["data"][:-4], ValueError),
            ("extended", BASE["data"] + "AAAA", ValueError),
            ("not-base64", "!" * len(BASE["data"]), ValueError),
            ("non-ascii", "é" * len(BASE["data"]), ValueError),
            ("whitespace", " " + BASE["data"][1:], ValueError),
            ("misplaced-padding", "=" + BASE["data"][1:], ValueError),
        ]
    ],
]


def _document(case: Hostile) -> Union[str, bytes]:
    return case.document() if callable(case.document) else case.document


def test_the_table_is_large() -> None:
    """Many distinct hostile documents (the count is reported)."""
    assert len(HOSTILE) >= 150, len(HOSTILE)
    assert len({case.id for case in HOSTILE}) == len(HOSTILE), "ids must be unique"


@pytest.mark.parametrize("case", HOSTILE, ids=[case.id for case in HOSTILE])
def test_hostile_document_is_refused(case: Hostile) -> None:
    with pytest.raises(Exception) as info:
        qarray.loads(_document(case))
    error = info.value
    assert type(error) is case.error, f"{type(error).__module__}.{type(error).__name__}: {error}"
    assert case.names in str(error), f"the message does not name {case.names!r}: {error}"


@pytest.mark.parametrize("case", HOSTILE, ids=[case.id for case in HOSTILE])
def test_hostile_document_is_refused_from_a_file(case: Hostile, tmp_path: Any) -> None:
    """``load(path)`` refuses what ``loads`` refuses, with the same exception type."""
    document = _document(case)
    path = tmp_path / "document.json"
    path.write_bytes(document if isinstance(document, bytes) else document.encode("utf-8", "surrogatepass"))
    with pytest.raises((ValueError, TypeError)) as info:
        qarray.load(path)
    assert type(info.value) in (ValueError, TypeError)


@pytest.mark.parametrize("kind", sorted(VALID))
def test_every_missing_field_is_named(kind: str) -> None:
    fields = [name for name in VALID[kind] if name not in ("type", "format_version")]
    for name in fields:
        with pytest.raises(ValueError, match=f"missing field.*{name}"):
            qarray.loads(text(changed(kind, (name,), DELETE)))


@pytest.mark.parametrize("kind", sorted(VALID))
def test_every_extra_field_is_named(kind: str) -> None:
    for name in ("extra", "__class__", "__reduce__", "dtype", ""):
        with pytest.raises(ValueError, match="unexpected field"):
            qarray.loads(text(changed(kind, (name,), 1)))


@pytest.mark.parametrize(
    "shape",
    [[2**40, 2**40], [2**31, 2**31], [2**62], [0, 2**62, 2**62], [2**28]],
    ids=str,
)
def test_a_size_claim_is_refused_before_allocating(shape: List[int]) -> None:
    """A claim larger than the bytes given allocates nothing on the way to its refusal."""
    document = text(changed("array", ("values",), array_field(shape=shape)))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="values"):
            qarray.loads(document)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(document) + (1 << 20), f"peak {peak} bytes while refusing {shape}"


def test_base64_is_only_decoded_once_its_length_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    import qarray.io.codec as serialization

    def refuse(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("base64 was decoded before the size was checked")

    monkeypatch.setattr(serialization.base64, "b64decode", refuse)
    with pytest.raises(ValueError, match="base64 characters"):
        uvalues = dict(VALID["stats"]["uvalues"], shape=[2**20])
        qarray.loads(text(changed("stats", ("uvalues",), uvalues)))


def test_loading_never_imports_evaluates_or_unpickles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents naming modules and code are refused without importing or running anything."""
    calls: List[str] = []

    def forbidden(name: str) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} was called while loading")

        return record

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden(name))
    monkeypatch.setattr(pickle, "loads", forbidden("pickle.loads"))
    monkeypatch.setattr(numpy, "load", forbidden("numpy.load"))
    names = ["antigravity", "this", "os.path", "subprocess", "ctypes", "__main__"]
    before = set(sys.modules)
    for name in names:
        for kind in ("options", "array"):
            with pytest.raises(ValueError, match="type"):
                qarray.loads(text(changed(kind, ("type",), name)))
        with pytest.raises(ValueError):
            qarray.loads(text(changed("array", ("values",), array_field(dtype=name))))
    assert calls == []
    assert set(sys.modules) - before == set(), "loading imported modules named in documents"


def test_nothing_but_valid_documents_loads() -> None:
    """The valid documents the table starts from do load (so each refusal is the change's)."""
    for kind, document in VALID.items():
        loaded = qarray.loads(text(document))
        assert json.loads(loaded.dumps()) == document, kind
