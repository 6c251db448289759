"""Serialization: exact round trips for all five classes, and refusal of malformed documents.

Every round trip (dump_dict/load_dict, dumps/loads, dump/load through an open
file and through a path) must give back an equal object whose every float bit,
dtype and shape is the original's; checked both with ``==`` and by dumping the
loaded object again and comparing the documents, which encode floats exactly.
"""

from __future__ import annotations

import io
import json
from typing import Any, Callable, Dict

import array_api_compat
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

from bits import assert_same_bits

TINY = numpy.nextafter(0.0, 1.0)  # the smallest subnormal
ODD_FLOATS = numpy.array([-0.0, TINY, -TINY, numpy.nextafter(0.1, 1.0), 1e308, -2.2250738585072014e-308])


# -- the objects --------------------------------------------------------------------------


def _options_all_flags() -> QuantizationOptions:
    options = QuantizationOptions(53, is_signed=True, is_qat=True)
    options.is_narrow = True
    options.is_precomputed_qat = True
    return options


def _qat_quantized_array() -> QuantizedArray:
    return QuantizedArray(3, numpy.array([-0.5, -0.25, 0.0, 0.25, 0.5]), is_qat=True)


OBJECTS: Dict[str, Callable[[], Any]] = {
    "options-default": lambda: QuantizationOptions(8),
    "options-symmetric": lambda: QuantizationOptions(2, is_signed=True, is_symmetric=True),
    "options-all-flags": _options_all_flags,
    "stats-empty": MinMaxQuantizationStats,
    "stats-odd-floats": lambda: MinMaxQuantizationStats(rmax=numpy.nextafter(1.0, 2.0), rmin=-0.0),
    "stats-subnormal-range": lambda: MinMaxQuantizationStats(rmax=TINY, rmin=-TINY),
    "stats-uvalues": lambda: MinMaxQuantizationStats(rmax=1e308, rmin=-TINY, uvalues=numpy.sort(ODD_FLOATS)),
    "stats-empty-uvalues": lambda: MinMaxQuantizationStats(rmax=1.0, rmin=0.0, uvalues=numpy.array([])),
    "params-empty": UniformQuantizationParameters,
    "params-int-zero-point": lambda: UniformQuantizationParameters(numpy.nextafter(0.1, 0.0), -(2**62), 128),
    "params-float-zero-point": lambda: UniformQuantizationParameters(TINY, 3.0, 0),
    "params-negative-zero-zero-point": lambda: UniformQuantizationParameters(-3.0, -0.0, 0),
    "params-array-zero-point": lambda: UniformQuantizationParameters(
        0.5, numpy.array([[1], [-2], [2**40]], dtype=numpy.int64), 2**31
    ),
    "params-float-array-zero-point": lambda: UniformQuantizationParameters(0.5, numpy.array([-0.0, 4.0]), 0),
    "quantizer-empty": UniformQuantizer,
    "quantizer-fitted-qat": lambda: _qat_quantized_array().quantizer,
    "quantizer-no-clipping": lambda: UniformQuantizer(
        QuantizationOptions(4), params=UniformQuantizationParameters(0.25, 1, 0), no_clipping=True
    ),
    "array-none": lambda: QuantizedArray(8, None),
    "array-float64": lambda: QuantizedArray(8, ODD_FLOATS[:5]),
    "array-float32": lambda: QuantizedArray(
        5, numpy.array([numpy.nextafter(numpy.float32(1), numpy.float32(2)), -0.0, 3.5], dtype=numpy.float32)
    ),
    "array-float16": lambda: QuantizedArray(4, numpy.array([0.5, -1.5, 2.0], dtype=numpy.float16)),
    "array-2d": lambda: QuantizedArray(
        7, numpy.random.default_rng(0).standard_normal((3, 5)), is_signed=True, is_symmetric=True
    ),
    "array-0d": lambda: QuantizedArray(8, numpy.array(0.75)),
    "array-qat-uvalues": _qat_quantized_array,
    "array-int8-qvalues": lambda: QuantizedArray(
        8, numpy.array([-128, 0, 127], dtype=numpy.int8), value_is_float=False, scale=0.5, zero_point=0, offset=128
    ),
    "array-uint16-qvalues-2d": lambda: QuantizedArray(
        16, numpy.arange(6, dtype=numpy.uint16).reshape(2, 3), value_is_float=False, scale=0.1, zero_point=7, offset=0
    ),
    "array-empty": lambda: QuantizedArray(
        8, numpy.zeros((0, 3), dtype=numpy.int32), value_is_float=False, scale=1.0, zero_point=0, offset=0
    ),
}


def _dict_round_trip(obj: Any, tmp_path: Any) -> Any:
    document = obj.dump_dict()
    json.dumps(document, allow_nan=False)  # plain JSON
    return type(obj).load_dict(document)


def _string_round_trip(obj: Any, tmp_path: Any) -> Any:
    return qarray.loads(obj.dumps())


def _file_object_round_trip(obj: Any, tmp_path: Any) -> Any:
    stream = io.StringIO()
    obj.dump(stream)
    stream.seek(0)
    return qarray.load(stream)


def _path_round_trip(obj: Any, tmp_path: Any) -> Any:
    path = tmp_path / "object.json"
    obj.dump(path)
    loaded_from_path = qarray.load(path)
    assert qarray.load(str(path)) == loaded_from_path
    return loaded_from_path


ROUND_TRIPS = {
    "dict": _dict_round_trip,
    "string": _string_round_trip,
    "file-object": _file_object_round_trip,
    "path": _path_round_trip,
}


def _arrays_of(obj: Any) -> Dict[str, Any]:
    """The arrays an object holds, by name."""
    if isinstance(obj, QuantizedArray):
        return {"values": obj.values, "qvalues": obj.qvalues, **_arrays_of(obj.quantizer)}
    if isinstance(obj, UniformQuantizer):
        return {**_arrays_of(obj.stats), **_arrays_of(obj.params)}
    if isinstance(obj, MinMaxQuantizationStats):
        return {"uvalues": obj.uvalues}
    if isinstance(obj, UniformQuantizationParameters) and isinstance(obj.zero_point, numpy.ndarray):
        return {"zero_point": obj.zero_point}
    return {}


@pytest.mark.parametrize("how", list(ROUND_TRIPS))
@pytest.mark.parametrize("name", list(OBJECTS))
def test_round_trip_is_exact(name, how, tmp_path):
    """The loaded object equals the original and dumps to the very same document."""
    original = OBJECTS[name]()
    loaded = ROUND_TRIPS[how](original, tmp_path)
    assert type(loaded) is type(original)
    assert loaded == original
    assert loaded.dumps() == original.dumps()
    for key, array in _arrays_of(original).items():
        copy = _arrays_of(loaded)[key]
        if array is None:
            assert copy is None
            continue
        assert isinstance(copy, numpy.ndarray)
        assert_same_bits(copy, array)


@pytest.mark.parametrize("shape", [(), (0,), (4,), (2, 0, 3), (2, 3)], ids=str)
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"])
def test_round_trip_keeps_every_integer_dtype_and_shape(dtype, shape):
    info = numpy.iinfo(dtype)
    extremes = numpy.array([info.max, info.min, 0, 1, info.max - 1, info.min + 1], dtype=dtype)
    qvalues = numpy.resize(extremes, shape)
    # QAT does not clip, so integers outside the 8-bit range are consistent (clipped ones are refused)
    original = QuantizedArray(8, qvalues, value_is_float=False, is_qat=True, scale=TINY, zero_point=-3, offset=0)
    loaded = qarray.loads(original.dumps())
    assert (loaded.qvalues.dtype, loaded.qvalues.shape) == (numpy.dtype(dtype), shape)
    assert_same_bits(loaded.qvalues, qvalues)
    assert_same_bits(loaded.values, original.values)


def test_round_trip_keeps_float_bits_of_scalars():
    """-0.0, subnormals and neighbours of round numbers come back bit for bit."""
    stats = qarray.loads(MinMaxQuantizationStats(rmax=TINY, rmin=-0.0).dumps())
    assert_same_bits(numpy.float64(stats.rmin), numpy.float64(-0.0))
    assert_same_bits(numpy.float64(stats.rmax), TINY)
    params = qarray.loads(UniformQuantizationParameters(numpy.nextafter(0.1, 1.0), 0, 0).dumps())
    assert_same_bits(params.scale, numpy.nextafter(0.1, 1.0))


@pytest.mark.parametrize("zero_point", [7, 7.0, numpy.array([1, 2], dtype=numpy.int64)], ids=["int", "float", "array"])
def test_round_trip_keeps_the_kind_of_zero_point(zero_point):
    loaded = qarray.loads(UniformQuantizationParameters(1.0, zero_point, 0).dumps())
    assert type(loaded.zero_point) is type(UniformQuantizationParameters(1.0, zero_point, 0).zero_point)


def test_round_trip_of_a_quantized_array_still_quantizes_alike():
    original = QuantizedArray(6, numpy.linspace(-2.0, 3.0, 11), is_signed=True)
    loaded = qarray.loads(original.dumps())
    probe = numpy.array([-1.3, 0.0, 2.7])
    numpy.testing.assert_array_equal(loaded.quantizer.quant(probe), original.quantizer.quant(probe))


@pytest.mark.parametrize("name", list(OBJECTS))
def test_module_loads_dispatches_on_the_type_tag(name):
    original = OBJECTS[name]()
    assert type(qarray.loads(original.dumps())) is type(original)


def test_loads_accepts_bytes():
    assert qarray.loads(QuantizationOptions(4).dumps().encode("utf-8")) == QuantizationOptions(4)


# -- placing loaded arrays with a backend ---------------------------------------------------


def _assert_with_library(array: Any, xb: Any) -> None:
    assert array_api_compat.array_namespace(array) is array_api_compat.array_namespace(
        xb.asarray(numpy.zeros(1))
    )


def test_loading_with_a_backend_places_every_array(xb):
    """backend= puts values, qvalues and uvalues in that library; the numbers are unchanged."""
    original = _qat_quantized_array()
    loaded = qarray.loads(original.dumps(), backend=xb.name)
    for array in (loaded.values, loaded.qvalues, loaded.quantizer.stats.uvalues):
        _assert_with_library(array, xb)
    assert loaded.backend.name == xb.name
    numpy.testing.assert_array_equal(xb.to_numpy(loaded.qvalues), original.qvalues)
    numpy.testing.assert_array_equal(xb.to_numpy(loaded.values), original.values)
    assert loaded == original


@pytest.mark.parametrize(
    "make", [lambda: _qat_quantized_array().quantizer, lambda: _qat_quantized_array().quantizer.stats]
)
def test_loading_statistics_with_a_backend_places_uvalues(xb, make):
    loaded = qarray.loads(make().dumps(), backend=xb.name)
    stats = loaded.stats if isinstance(loaded, UniformQuantizer) else loaded
    _assert_with_library(stats.uvalues, xb)


def test_loading_with_array_api_strict_places_arrays_there():
    pytest.importorskip("array_api_strict")
    loaded = qarray.loads(_qat_quantized_array().dumps(), backend="array_api_strict")
    assert type(loaded.values).__module__.startswith("array_api_strict")
    assert type(loaded.qvalues).__module__.startswith("array_api_strict")
    assert type(loaded.quantizer.stats.uvalues).__module__.startswith("array_api_strict")


def test_loading_with_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="numpy"):
        qarray.loads(_qat_quantized_array().dumps(), backend="no-such-backend")


# -- malformed documents --------------------------------------------------------------------


def _document(obj: Any) -> Dict[str, Any]:
    return json.loads(obj.dumps())


def _with(document: Dict[str, Any], **changes: Any) -> Dict[str, Any]:
    changed = dict(document)
    changed.update(changes)
    return changed


def _without(document: Dict[str, Any], key: str) -> Dict[str, Any]:
    return {k: v for k, v in document.items() if k != key}


def _array_values(**changes: Any) -> Dict[str, Any]:
    document = _document(QuantizedArray(4, numpy.array([0.0, 0.5, 1.0])))
    document["values"] = _with(document["values"], **changes)
    return document


def _mismatched_shapes() -> Dict[str, Any]:
    document = _document(QuantizedArray(4, numpy.array([0.0, 0.5, 1.0])))
    document["qvalues"] = _document(QuantizedArray(4, numpy.array([0.0, 1.0])))["qvalues"]
    return document


OPTIONS_DOCUMENT = _document(QuantizationOptions(8))
PARAMS_DOCUMENT = _document(UniformQuantizationParameters(0.5, 1, 0))

MALFORMED: Dict[str, Any] = {
    "unknown-type": _with(OPTIONS_DOCUMENT, type="Pickle"),
    "no-type": _without(OPTIONS_DOCUMENT, "type"),
    "future-version": _with(OPTIONS_DOCUMENT, format_version=qarray.FORMAT_VERSION + 1),
    "string-version": _with(OPTIONS_DOCUMENT, format_version="1"),
    "missing-field": _without(OPTIONS_DOCUMENT, "n_bits"),
    "extra-field": _with(OPTIONS_DOCUMENT, exec="print('hi')"),
    "n_bits-out-of-range": _with(OPTIONS_DOCUMENT, n_bits=0),
    "n_bits-string": _with(OPTIONS_DOCUMENT, n_bits="8"),
    "flag-not-bool": _with(OPTIONS_DOCUMENT, is_signed=1),
    "invalid-combination": _with(OPTIONS_DOCUMENT, is_symmetric=True),
    "scale-string": _with(PARAMS_DOCUMENT, scale="0.5"),
    "scale-zero": _with(PARAMS_DOCUMENT, scale=0.0),
    "zero-point-fractional": _with(PARAMS_DOCUMENT, zero_point=0.5),
    "dtype-not-allowed": _array_values(dtype="object"),
    "dtype-complex": _array_values(dtype="complex128"),
    "dtype-int-for-values": _array_values(dtype="int64"),
    "shape-data-mismatch": _array_values(shape=[4]),
    "shape-negative": _array_values(shape=[-3]),
    "data-not-base64": _array_values(data="!" * 32),
    "values-qvalues-shapes-differ": _mismatched_shapes(),
    "nested-wrong-type": _with(_document(QuantizedArray(4, None)), quantizer=OPTIONS_DOCUMENT),
    "top-level-list": [OPTIONS_DOCUMENT],
}


@pytest.mark.parametrize("document", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_documents_are_refused(document):
    with pytest.raises((ValueError, TypeError)):
        qarray.loads(json.dumps(document))


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"UniformQuantizationParameters","format_version":1,"scale":NaN,"zero_point":0,"offset":0}',
        '{"type":"UniformQuantizationParameters","format_version":1,"scale":Infinity,"zero_point":0,"offset":0}',
        '{"type":"QuantizationOptions"',
        "",
    ],
    ids=["nan-token", "infinity-token", "truncated", "empty"],
)
def test_invalid_json_text_is_refused(text):
    with pytest.raises(ValueError):
        qarray.loads(text)


def test_loading_a_document_of_another_class_is_refused():
    with pytest.raises(ValueError, match="QuantizationOptions"):
        UniformQuantizer.load_dict(OPTIONS_DOCUMENT)


def test_loads_refuses_non_text():
    with pytest.raises(TypeError):
        qarray.loads(12)


# -- the sign of a zero range -----------------------------------------------------------------

SIGNED_ZEROS = numpy.array([[0.0, -0.0, 0.0, -0.0], [-0.0, -0.0, -0.0, -0.0], [-0.0, 1.5, 0.0, -2.0]])


def _per_tensor(make: Callable[[numpy.ndarray], Any]) -> str:
    return QuantizedArray(8, make(SIGNED_ZEROS[:2])).quantizer.dumps()


def _per_block(make: Callable[[numpy.ndarray], Any]) -> str:
    return QuantizedArray(8, make(SIGNED_ZEROS), axis=0).quantizer.dumps()


def _per_group(make: Callable[[numpy.ndarray], Any]) -> str:
    return QuantizedArray(4, make(SIGNED_ZEROS), block_size=2).quantizer.dumps()


def _streamed(make: Callable[[numpy.ndarray], Any]) -> str:
    stats = MinMaxQuantizationStats()
    for row in SIGNED_ZEROS[:2]:
        stats.update(make(row))
    return stats.dumps()


def _streamed_per_block(make: Callable[[numpy.ndarray], Any]) -> str:
    stats = MinMaxQuantizationStats()
    for rows in (SIGNED_ZEROS[:, :2], SIGNED_ZEROS[:, 2:]):
        stats.update(make(rows), axis=0)
    return stats.dumps()


def _merged(make: Callable[[numpy.ndarray], Any]) -> str:
    first, second = MinMaxQuantizationStats(), MinMaxQuantizationStats()
    first.compute_quantization_stats(make(SIGNED_ZEROS[0]))
    second.update(make(SIGNED_ZEROS[1]))
    return first.merge(second).dumps()


ZERO_RANGE_CALIBRATIONS = [_per_tensor, _per_block, _per_group, _streamed, _streamed_per_block, _merged]


@pytest.mark.parametrize("calibrate", ZERO_RANGE_CALIBRATIONS, ids=lambda f: f.__name__)
def test_a_zero_range_is_written_as_plus_zero_on_every_backend(xb, calibrate):
    """min and max of zeros are +0.0 whatever the signs of the zeros and the library: the
    documents of one calibration are the same text (that of the data without -0.0)."""
    text = calibrate(xb.asarray)
    assert text == calibrate(lambda host: host + 0.0)  # -0.0 + 0.0 is +0.0


# -- torch's half-precision floats ----------------------------------------------------------

# bfloat16 has no NumPy dtype: a document names it and holds its 2-byte patterns;
# on the host it is float32 (which holds every bfloat16 exactly).
_HALF_FLOATS = ["bfloat16", "float16"]


def _half_float_array(dtype_name: str, **kwargs: Any) -> QuantizedArray:
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    largest, tiny = torch.finfo(dtype).max, torch.finfo(dtype).smallest_normal
    host = numpy.concatenate([[-0.0, tiny / 4, -tiny], numpy.linspace(-3.0, 5.0, 37), [largest, -largest]])
    return QuantizedArray(8, torch.asarray(host).to(dtype), **kwargs)


@pytest.mark.parametrize("kwargs", [{}, {"block_size": 8}], ids=["per-tensor", "per-block"])
@pytest.mark.parametrize("dtype_name", _HALF_FLOATS)
def test_torch_half_float_arrays_compare_and_round_trip_with_their_dtype(dtype_name, kwargs):
    original = _half_float_array(dtype_name, **kwargs)
    assert original == original
    text = original.dumps()
    assert json.loads(text)["values"]["dtype"] == dtype_name
    loaded = qarray.loads(text, backend="torch")
    assert loaded == original
    assert str(loaded.values.dtype) == f"torch.{dtype_name}"
    assert loaded.dumps() == text
    host = original.values.float().numpy()
    numpy.testing.assert_array_equal(loaded.values.float().numpy(), host)
    numpy.testing.assert_array_equal(loaded.qvalues.numpy(), original.qvalues.numpy())


def test_a_bfloat16_document_loads_as_exact_float32_where_numpy_has_no_bfloat16():
    original = _half_float_array("bfloat16")
    loaded = qarray.loads(original.dumps())
    assert loaded.values.dtype == numpy.float32
    numpy.testing.assert_array_equal(loaded.values, original.values.float().numpy())
    assert loaded != original  # another dtype
    assert loaded.quantizer == original.quantizer
    numpy.testing.assert_array_equal(loaded.qvalues, original.qvalues.numpy())


def test_bfloat16_and_float32_arrays_of_equal_values_differ():
    torch = pytest.importorskip("torch")
    values = torch.linspace(-1.0, 1.0, 9)
    assert QuantizedArray(8, values.to(torch.bfloat16)) != QuantizedArray(8, values.to(torch.bfloat16).float())


def test_bfloat16_dump_to_a_file_streams_the_same_document(tmp_path):
    original = _half_float_array("bfloat16", block_size=8)
    original.dump(tmp_path / "qa.json")
    assert (tmp_path / "qa.json").read_text() == original.dumps()
    assert qarray.load(tmp_path / "qa.json", backend="torch") == original
