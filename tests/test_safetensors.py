"""Quantized arrays in safetensors files: exact round trips, small files, strict loading, safe writing.

``qarray.save_file`` / ``qarray.load_file`` keep the integers (in the smallest dtype,
packed at <= 4 bits) and the parameters exactly, so a loaded array de-quantizes bit
for bit as the saved one did; the format's own reader opens the files; hostile files
raise ``ValueError`` (or ``TypeError``) and nothing else; and writing has the
guarantees of ``dump(path)`` (atomic, through symlinks, permission bits, no leftovers).
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import array_api_compat
import numpy
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qarray
from qarray import QuantizationOptions, QuantizedArray, UniformQuantizationParameters, UniformQuantizer
from qarray.io.tensorfile import MAX_HEADER_BYTES

from bits import assert_same_bits
from disk_faults import DISK_FULL, make_step_fail

WEIGHTS = numpy.random.default_rng(7).normal(size=(6, 10)).astype(numpy.float32)
GRANULARITIES: Dict[str, Dict[str, Any]] = {
    "per-tensor": {},
    "axis0": {"axis": 0},
    "axis1": {"axis": 1},
    "blocks": {"block_size": (3, 5)},
}


def _quantized(n_bits: int, signed: bool, granularity: str, profile: str = "concrete") -> QuantizedArray:
    return QuantizedArray(n_bits, WEIGHTS, is_signed=signed, profile=profile, **GRANULARITIES[granularity])


def _round_trip(objects: Dict[str, Any], tmp_path: Path, **load: Any) -> Dict[str, Any]:
    path = tmp_path / "objects.safetensors"
    qarray.save_file(objects, path)
    loaded = qarray.load_file(path, **load)
    assert list(loaded) == list(objects)
    return loaded


def _assert_same_quantized(loaded: QuantizedArray, saved: QuantizedArray) -> None:
    assert loaded.quantizer == saved.quantizer  # options (profile included), statistics, parameters
    assert_same_bits(loaded.qvalues, saved.qvalues)
    assert_same_bits(loaded.values, saved.quantizer.dequant(saved.qvalues))  # values: the dequantized integers
    assert_same_bits(loaded.quantizer.dequant(loaded.qvalues), saved.quantizer.dequant(saved.qvalues))


def _profile_cases() -> List[Any]:
    """Every (profile, n_bits, signed, granularity) the profile accepts, among the tested ones."""
    cases = []
    for profile in ("concrete", "onnx", "torch"):
        for n_bits in (2, 3, 4, 7, 8, 12, 16):
            for signed in (False, True):
                for granularity in GRANULARITIES:
                    try:
                        _quantized(n_bits, signed, granularity, profile)
                    except ValueError:  # the profile has no such integer type or granularity
                        continue
                    cases.append(pytest.param(profile, n_bits, signed, granularity,
                                              id=f"{profile}-{n_bits}bit-{'signed' if signed else 'unsigned'}-{granularity}"))
    return cases


PROFILE_CASES = _profile_cases()


def test_every_profile_has_cases() -> None:
    assert {case.values[0] for case in PROFILE_CASES} == {"concrete", "onnx", "torch"}


@pytest.mark.parametrize("profile, n_bits, signed, granularity", PROFILE_CASES)
def test_a_quantized_array_round_trips_bit_for_bit(
    tmp_path: Path, profile: str, n_bits: int, signed: bool, granularity: str
) -> None:
    saved = _quantized(n_bits, signed, granularity, profile)
    loaded = _round_trip({"w": saved}, tmp_path)["w"]
    _assert_same_quantized(loaded, saved)


def test_loaded_values_are_what_dequant_returns(tmp_path: Path) -> None:
    saved = _quantized(8, True, "axis0")
    loaded = _round_trip({"w": saved}, tmp_path)["w"]
    assert loaded.values.dtype == numpy.float64  # not the float32 values it was made from
    assert_same_bits(loaded.values, saved.dequant())
    onnx = _round_trip({"w": _quantized(8, True, "axis0", "onnx")}, tmp_path)["w"]
    assert onnx.values.dtype == numpy.float32  # a runtime profile dequantizes in float32


@pytest.mark.parametrize("with_stats", [True, False])
def test_a_quantizer_round_trips(tmp_path: Path, with_stats: bool) -> None:
    if with_stats:
        quantizer = _quantized(4, True, "blocks").quantizer
    else:
        quantizer = UniformQuantizer(QuantizationOptions(8), params=UniformQuantizationParameters(0.1, 128, 0))
        assert quantizer.stats.rmin is None
    loaded = _round_trip({"q": quantizer}, tmp_path)["q"]
    assert loaded == quantizer
    integers = numpy.resize(numpy.arange(-8, 8), WEIGHTS.shape)
    assert_same_bits(loaded.dequant(integers), quantizer.dequant(integers))


def test_an_empty_quantizer_and_an_array_without_values_round_trip(tmp_path: Path) -> None:
    objects = {"empty": UniformQuantizer(), "none": QuantizedArray(4, None)}
    loaded = _round_trip(objects, tmp_path)
    assert loaded["empty"] == objects["empty"]
    assert loaded["none"].qvalues is None and loaded["none"].values is None
    assert loaded["none"].quantizer == objects["none"].quantizer


def test_several_objects_keep_their_names_and_order(tmp_path: Path) -> None:
    objects = {"z.layer": _quantized(8, False, "axis1"), "a": _quantized(3, True, "per-tensor"),
               "q": _quantized(12, False, "blocks").quantizer}
    loaded = _round_trip(objects, tmp_path)
    assert list(loaded) == ["z.layer", "a", "q"]
    _assert_same_quantized(loaded["z.layer"], objects["z.layer"])
    _assert_same_quantized(loaded["a"], objects["a"])
    assert loaded["q"] == objects["q"]


def test_odd_shapes_round_trip(tmp_path: Path) -> None:
    objects = {
        "scalar": QuantizedArray(4, numpy.float64(0.25)),
        "empty": QuantizedArray(4, numpy.zeros((3, 0), dtype=numpy.int64), value_is_float=False,
                                params=UniformQuantizationParameters(0.5, 3, 0)),
        "odd": QuantizedArray(1, numpy.linspace(-1, 1, 13)),
        "three-d": QuantizedArray(2, numpy.linspace(-1, 1, 2 * 3 * 7).reshape(2, 3, 7), axis=1),
    }
    loaded = _round_trip(objects, tmp_path)
    for name, saved in objects.items():
        assert_same_bits(loaded[name].qvalues, saved.qvalues)
        assert loaded[name].quantizer == saved.quantizer
    tensors = _tensors(tmp_path / "objects.safetensors")  # the format's reader takes 0-d and empty tensors
    assert tensors["scalar.qvalues"].shape == () and tensors["empty.qvalues"].shape == (3, 0)
    assert tensors["odd.qvalues"].shape == (2,)  # 13 one-bit values in two bytes


def test_a_lazy_array_is_written_block_by_block(tmp_path: Path) -> None:
    dask_array = pytest.importorskip("dask.array")
    values = numpy.linspace(-1.0, 1.0, 101)
    lazy = QuantizedArray(4, dask_array.from_array(values, chunks=7))  # chunks that do not fill bytes
    loaded = _round_trip({"lazy": lazy}, tmp_path)["lazy"]
    eager = QuantizedArray(4, values)
    assert_same_bits(loaded.qvalues, eager.qvalues)


def test_backend_places_the_arrays(tmp_path: Path) -> None:
    saved = _quantized(4, True, "blocks")
    loaded = _round_trip({"w": saved}, tmp_path, backend="numpy")["w"]
    assert isinstance(loaded.qvalues, numpy.ndarray)
    _assert_same_quantized(loaded, saved)
    qarray.save_file({"w": saved}, tmp_path / "f.safetensors")
    with pytest.raises(ValueError, match="backend"):
        qarray.load_file(tmp_path / "f.safetensors", backend="no-such-library")


def test_backend_places_every_array_in_that_library(tmp_path: Path, xb: Any) -> None:
    """backend= puts qvalues, values, uvalues and per-block parameters there; the numbers are unchanged."""
    objects = {"qat": QuantizedArray(3, numpy.array([-0.5, -0.25, 0.0, 0.25, 0.5]), is_qat=True),
               "blocks": _quantized(4, True, "blocks")}
    loaded = _round_trip(objects, tmp_path, backend=xb.name)
    namespace = array_api_compat.array_namespace(xb.asarray(numpy.zeros(1)))
    blocks = loaded["blocks"]
    for array in (loaded["qat"].qvalues, loaded["qat"].values, loaded["qat"].quantizer.stats.uvalues,
                  blocks.qvalues, blocks.values, blocks.quantizer.scale, blocks.quantizer.zero_point):
        assert array_api_compat.array_namespace(array) is namespace
    for name, saved in objects.items():
        assert loaded[name].backend.name == xb.name
        assert_same_bits(xb.to_numpy(loaded[name].qvalues), saved.qvalues)
        assert_same_bits(xb.to_numpy(loaded[name].values), saved.quantizer.dequant(saved.qvalues))


# -- what is stored ----------------------------------------------------------------------


def _tensors(path: Path) -> Dict[str, numpy.ndarray]:
    """The tensors as the format's own reader gives them."""
    return safetensors.numpy.load_file(str(path))


def _header(path: Path) -> Dict[str, Any]:
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length])


@pytest.mark.parametrize(
    "n_bits, signed, extra, dtype, packed",
    [
        (8, False, {}, "U8", None),
        (8, True, {}, "I8", None),
        (7, False, {}, "I8", None),
        (12, False, {}, "I16", None),
        (12, True, {}, "I16", None),
        (16, False, {}, "U16", None),
        (16, True, {}, "I16", None),
        (4, False, {}, "U8", "uint4"),
        (4, True, {}, "U8", "int4"),
        (3, True, {}, "U8", "int4"),
        (2, False, {}, "U8", "uint2"),
        (1, False, {}, "U8", "uint1"),
        (8, True, {"is_narrow": True, "is_symmetric": True}, "I8", None),
        (8, True, {"no_clipping": True}, "I64", None),  # no clipping range: the dtype the array has
    ],
)
def test_integers_are_stored_in_the_smallest_dtype(
    tmp_path: Path, n_bits: int, signed: bool, extra: Dict[str, Any], dtype: str, packed: Optional[str]
) -> None:
    no_clipping = extra.pop("no_clipping", False)
    saved = QuantizedArray(n_bits, WEIGHTS, is_signed=signed, **extra)
    saved.quantizer.no_clipping = no_clipping
    path = tmp_path / "w.safetensors"
    qarray.save_file({"w": saved}, path)
    header = _header(path)
    assert header["w.qvalues"]["dtype"] == dtype
    reference = json.loads(header["__metadata__"]["w"])["qvalues"]
    assert reference.get("packed") == packed
    assert reference["dtype"] == "int64" and reference["shape"] == list(WEIGHTS.shape)
    _assert_same_quantized(qarray.load_file(path)["w"], saved)


def test_the_format_reader_opens_the_file(tmp_path: Path) -> None:
    objects = {"w4": _quantized(4, True, "axis0"), "w8": _quantized(8, False, "blocks"),
               "q": _quantized(8, False, "axis1").quantizer}
    path = tmp_path / "w.safetensors"
    qarray.save_file(objects, path)
    tensors = _tensors(path)
    assert sorted(tensors) == sorted(
        ["w4.qvalues", "w4.scale", "w4.zero_point", "w4.offset", "w4.rmin", "w4.rmax",
         "w8.qvalues", "w8.scale", "w8.zero_point", "w8.offset", "w8.rmin", "w8.rmax",
         "q.scale", "q.zero_point", "q.offset", "q.rmin", "q.rmax"]
    )
    assert_same_bits(tensors["w4.qvalues"], qarray.pack(objects["w4"].qvalues, 4))
    assert_same_bits(tensors["w8.qvalues"], objects["w8"].qvalues.astype(numpy.uint8))
    assert_same_bits(tensors["w8.scale"], objects["w8"].quantizer.scale)
    assert_same_bits(tensors["q.zero_point"], objects["q"].zero_point)
    metadata = _header(path)["__metadata__"]
    assert json.loads(metadata["__qarray__"]) == {"format_version": 1, "objects": ["w4", "w8", "q"]}
    document = json.loads(metadata["w8"])
    assert document["type"] == "QuantizedArray" and document["values"] is None
    assert document["quantizer"]["options"]["block_size"] == [3, 5]


def test_packed_files_are_small(tmp_path: Path) -> None:
    values = numpy.random.default_rng(1).normal(size=(256, 1024)).astype(numpy.float32)
    sizes = {}
    for n_bits in (4, 8):
        path = tmp_path / f"w{n_bits}.safetensors"
        qarray.save_file({"w": QuantizedArray(n_bits, values, axis=0)}, path)
        sizes[n_bits] = path.stat().st_size
    assert values.size // 2 < sizes[4] < values.size // 2 + 32 * 1024
    assert values.size < sizes[8] < values.size + 32 * 1024
    assert sizes[8] < values.nbytes / 3.7 and sizes[4] < values.nbytes / 7  # against float32


def test_import_qarray_does_not_import_safetensors() -> None:
    code = "import sys, qarray; assert 'safetensors' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- refusals on saving ------------------------------------------------------------------


def test_save_refuses_what_it_cannot_store(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    good = _quantized(4, True, "per-tensor")
    with pytest.raises(TypeError, match="objects must be a dict"):
        qarray.save_file([good], path)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"objects\['w'\] must be a QuantizedArray or UniformQuantizer, got ndarray"):
        qarray.save_file({"w": WEIGHTS}, path)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="QuantizationOptions"):
        qarray.save_file({"o": QuantizationOptions(8)}, path)  # type: ignore[dict-item]
    for name in ("", 3, None, "__qarray__"):
        with pytest.raises(ValueError, match="object names"):
            qarray.save_file({name: good}, path)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="path"):
        qarray.save_file({"w": good}, 3)  # type: ignore[arg-type]
    assert not path.exists()


def test_an_inconsistent_object_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    broken = _quantized(4, False, "per-tensor")
    broken.qvalues = broken.qvalues + 100  # outside the clipping range
    with pytest.raises(ValueError, match="clipping range"):
        qarray.save_file({"w": broken}, path)
    assert list(tmp_path.iterdir()) == []


# -- hostile files -----------------------------------------------------------------------

GOOD = {"w": QuantizedArray(4, numpy.linspace(-1.0, 1.0, 12).reshape(3, 4), axis=0, is_signed=True),
        "b": QuantizedArray(8, numpy.linspace(-1.0, 1.0, 6))}


def _good_file(tmp_path: Path) -> bytes:
    path = tmp_path / "good.safetensors"
    qarray.save_file(GOOD, path)
    return path.read_bytes()


def _with_header(header: Dict[str, Any], data: bytes) -> bytes:
    text = json.dumps(header).encode("utf-8")
    return len(text).to_bytes(8, "little") + text + data


def _split(raw: bytes) -> Any:
    length = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def _load_bytes(tmp_path: Path, raw: bytes) -> Any:
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(raw)
    return qarray.load_file(path)


def _edit_metadata(raw: bytes, name: str, edit: Any) -> bytes:
    header, data = _split(raw)
    document = json.loads(header["__metadata__"][name])
    edit(document)
    header["__metadata__"][name] = json.dumps(document)
    return _with_header(header, data)


def _edit_tensor(raw: bytes, tensor: str, **fields: Any) -> bytes:
    header, data = _split(raw)
    header[tensor].update(fields)
    return _with_header(header, data)


def _hostile_cases(raw: bytes) -> List[Any]:
    header, data = _split(raw)
    tensors = sorted((name for name in header if name != "__metadata__"), key=lambda n: header[n]["data_offsets"])
    first, second = tensors[0], tensors[1]
    begin, end = header[first]["data_offsets"]
    second_begin, second_end = header[second]["data_offsets"]
    metadata = header["__metadata__"]

    def without(key: str) -> Dict[str, Any]:
        return {name: value for name, value in header.items() if name != key}

    return [
        ("empty file", b"", "fewer than the 8"),
        ("length only", raw[:8], "claims more bytes than the file"),
        ("length larger than the file", (len(raw)).to_bytes(8, "little") + raw[8:], "claims more bytes than the file"),
        ("huge length", (2**63).to_bytes(8, "little") + raw[8:], "larger than the limit"),
        ("length just over the limit", (MAX_HEADER_BYTES + 1).to_bytes(8, "little") + raw[8:], "larger than the limit"),
        ("truncated data", raw[:-1], "file holds"),
        ("extra data", raw + b"\0", "file holds"),
        ("not json", struct.pack("<Q", 4) + b"{abc" + data, "not valid JSON"),
        ("not an object", struct.pack("<Q", 5) + b"[1,2]" + data, "JSON object"),
        ("not utf-8", struct.pack("<Q", 4) + b'{"\xff}' + data, "UTF-8"),
        ("duplicate key", struct.pack("<Q", 23) + b'{"a":1,"a":2}          ' + data, "twice"),
        ("overlapping offsets", _edit_tensor(raw, second, data_offsets=[second_begin - 1, second_end - 1]), "overlaps the one before"),
        ("gap", _edit_tensor(raw, first, data_offsets=[begin + 1, end + 1]), "gap"),
        ("offsets past the data", _edit_tensor(raw, tensors[-1], data_offsets=[len(data), len(data) + header[tensors[-1]]["data_offsets"][1] - header[tensors[-1]]["data_offsets"][0]]), "gap|end at byte"),
        ("reversed offsets", _edit_tensor(raw, first, data_offsets=[end, begin]), "begin <= end"),
        ("negative offsets", _edit_tensor(raw, first, data_offsets=[-1, end]), "begin <= end"),
        ("three offsets", _edit_tensor(raw, first, data_offsets=[0, 1, 2]), "two ints"),
        ("unknown dtype", _edit_tensor(raw, "b.qvalues", dtype="F8_E4M3"), "dtype must be one of"),
        ("complex dtype", _edit_tensor(raw, "b.qvalues", dtype="C64"), "dtype must be one of"),
        ("dtype of another size", _edit_tensor(raw, "b.qvalues", dtype="I16"), "needs"),
        ("shape not matching the bytes", _edit_tensor(raw, "b.qvalues", shape=[7]), "needs"),
        ("negative shape", _edit_tensor(raw, "b.qvalues", shape=[-6]), ">= 0"),
        ("extra tensor field", _edit_tensor(raw, "b.qvalues", extra=1), "exactly the keys"),
        ("no metadata", _with_header(without("__metadata__"), data), "no '__qarray__' index"),
        ("metadata not strings", _with_header({**header, "__metadata__": {"__qarray__": 1}}, data), "must be a string"),
        ("no index", _with_header({**header, "__metadata__": {k: v for k, v in metadata.items() if k != "__qarray__"}}, data), "index"),
        ("index of another version", _with_header({**header, "__metadata__": {**metadata, "__qarray__": '{"format_version": 2, "objects": ["w", "b"]}'}}, data), "format_version"),
        ("object missing from the index", _with_header({**header, "__metadata__": {**metadata, "__qarray__": '{"format_version": 1, "objects": ["w"]}'}}, data), "metadata keys"),
        ("object not in the metadata", _with_header({**header, "__metadata__": {**metadata, "__qarray__": '{"format_version": 1, "objects": ["w", "b", "c"]}'}}, data), "metadata keys"),
        ("document not json", _with_header({**header, "__metadata__": {**metadata, "b": "{"}}, data), "not valid JSON"),
        ("unknown type tag", _edit_metadata(raw, "b", lambda d: d.update(type="os.system")), "expected a QuantizedArray or UniformQuantizer"),
        ("options document", _edit_metadata(raw, "b", lambda d: d.update(type="QuantizationOptions")), "expected a QuantizedArray"),
        ("missing field", _edit_metadata(raw, "b", lambda d: d.pop("n_bits")), "missing field"),
        ("unexpected field", _edit_metadata(raw, "b", lambda d: d.update(extra=1)), "unexpected field"),
        ("wrong field type", _edit_metadata(raw, "b", lambda d: d.update(n_bits="8")), "n_bits"),
        ("stored values", _edit_metadata(raw, "b", lambda d: d.update(values=d["qvalues"])), "values are not stored"),
        ("inline array", _edit_metadata(raw, "b", lambda d: d.update(qvalues={"dtype": "int64", "shape": [], "data": "AQAAAAAAAAA="})), "tensor reference"),
        ("reference to a missing tensor", _edit_metadata(raw, "b", lambda d: d["qvalues"].update(tensor="nope")), "not in the file"),
        ("tensor used twice", _edit_metadata(raw, "w", lambda d: d["quantizer"]["params"]["offset"].update(tensor="w.zero_point")), "twice"),
        ("unknown declared dtype", _edit_metadata(raw, "b", lambda d: d["qvalues"].update(dtype="object")), "dtype must be one of"),
        ("declared shape differs", _edit_metadata(raw, "b", lambda d: d["qvalues"].update(shape=[2, 3])), "shape"),
        ("float read from integers", _edit_metadata(raw, "w", lambda d: d["quantizer"]["params"]["scale"].update(dtype="float32")), "cannot be read"),
        ("unknown packing", _edit_metadata(raw, "w", lambda d: d["qvalues"].update(packed="int3")), "packed must be one of"),
        ("packing of another width", _edit_metadata(raw, "w", lambda d: d["qvalues"].update(packed="int2")), "U8 of shape"),
        ("unpacked as packed", _edit_metadata(raw, "b", lambda d: d["qvalues"].update(packed="int4")), "U8 of shape|must be an integer"),
        ("integers too wide for the declared dtype", _edit_metadata(raw, "b", lambda d: d["qvalues"].update(dtype="int8")), "outside the int8 range"),
        ("qvalues outside the clipping range", _edit_metadata(raw, "b", lambda d: d["quantizer"]["options"].update(is_narrow=True)), "clipping range|narrow"),
    ]


@pytest.fixture(scope="module")
def good_raw(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _good_file(tmp_path_factory.mktemp("good"))


def test_the_good_file_loads(tmp_path: Path, good_raw: bytes) -> None:
    loaded = _load_bytes(tmp_path, good_raw)
    for name, saved in GOOD.items():
        _assert_same_quantized(loaded[name], saved)


def test_every_hostile_file_is_refused_with_a_clear_message(tmp_path: Path, good_raw: bytes) -> None:
    failures = []
    for label, raw, message in _hostile_cases(good_raw):
        try:
            _load_bytes(tmp_path, raw)
        except (ValueError, TypeError) as error:
            if not re.search(message, str(error)):
                failures.append(f"{label}: {type(error).__name__}: {error}")
        else:
            failures.append(f"{label}: loaded")
    assert failures == []


def test_loading_maps_the_file_and_reads_only_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import qarray.safetensors_file as module

    path = tmp_path / "big.safetensors"
    qarray.save_file({"w": QuantizedArray(8, numpy.linspace(-1.0, 1.0, 1 << 16))}, path)
    maps: List[Any] = []
    real_mmap = module.mmap.mmap

    def mmap(*args: Any, **kwargs: Any) -> Any:
        maps.append(args)
        return real_mmap(*args, **kwargs)

    reads: List[int] = []
    real_open = open

    def recording_open(*args: Any, **kwargs: Any) -> Any:
        stream = real_open(*args, **kwargs)
        real_read = stream.read

        def read(size: int = -1) -> bytes:
            data = real_read(size)
            reads.append(len(data))
            return data

        stream.read = read
        return stream

    monkeypatch.setattr(module.mmap, "mmap", mmap)
    monkeypatch.setattr(module, "open", recording_open, raising=False)
    loaded = qarray.load_file(path)["w"]
    assert len(maps) == 1
    assert sum(reads) < 4096 < path.stat().st_size  # the 8 length bytes and the header, nothing more
    assert loaded.qvalues.shape == (1 << 16,)


def test_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        qarray.load_file(tmp_path / "absent.safetensors")
    with pytest.raises(TypeError, match="path"):
        qarray.load_file(3)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:overflow encountered")
@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_files_load_or_are_refused(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    folder = tmp_path_factory.mktemp("fuzz", numbered=True)
    raw = bytearray(_good_file(folder))
    length = int.from_bytes(raw[:8], "little")
    region = data.draw(st.sampled_from(["length", "header", "data", "anywhere"]))
    low, high = {"length": (0, 8), "header": (8, 8 + length), "data": (8 + length, len(raw)),
                 "anywhere": (0, len(raw))}[region]
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(low, max(low, min(high, len(raw)) - 1)))
        if kind == "flip" and at < len(raw):
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and at < len(raw):
            raw[at] = data.draw(st.sampled_from(list(b'{}[]",:0123456789-e.AIUF ') + [0, 255]))
        elif kind == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del raw[at : at + data.draw(st.integers(1, 8))]
        else:
            del raw[at:]
    try:
        loaded = _load_bytes(folder, bytes(raw))
    except (ValueError, TypeError):
        return
    for name, obj in loaded.items():  # what loads is whole: it saves again and loads back the same
        assert isinstance(obj, (QuantizedArray, UniformQuantizer)), name
    again = _round_trip(loaded, folder)
    for name, obj in loaded.items():
        if isinstance(obj, QuantizedArray):
            assert again[name].quantizer == obj.quantizer
            if obj.qvalues is not None:
                assert_same_bits(again[name].qvalues, obj.qvalues)
        else:
            assert again[name] == obj


REPLACEMENTS: List[Any] = [
    None, True, 0, -1, 3, 2**63, 10**400, 0.5, -0.0, 1e308, "", "int4", "b.qvalues", "w.scale", "float64",
    "QuantizedArray", [], [1], [[[]]], {}, {"dtype": "int64", "shape": [], "tensor": "b.qvalues"},
    {"type": "QuantizedArray"},
]
"""Values each metadata field is replaced by: wrong types, huge, negative, empty, null, and valid-looking."""


def _field_paths(value: Any, path: tuple = ()) -> List[tuple]:
    """Every path to a field of a JSON value, nested objects and lists included."""
    paths = [path] if path else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        paths.extend(_field_paths(item, path + (key,)))
    return paths


@pytest.mark.filterwarnings("ignore:overflow encountered")  # a huge scale dequantizes to inf, as it should
def test_structurally_mutated_metadata_loads_or_is_refused(tmp_path: Path, good_raw: bytes) -> None:
    """Every field of every document (tensor references included) replaced, deleted, or joined by a key."""
    header, _ = _split(good_raw)
    outcomes: Dict[str, int] = {}
    for name in ("w", "b", "__qarray__"):
        document = json.loads(header["__metadata__"][name])
        for path in _field_paths(document):
            for replacement in REPLACEMENTS + ["<delete>", "<extra key>"]:
                def edit(d: Any, path: tuple = path, replacement: Any = replacement) -> None:
                    for key in path[:-1]:
                        d = d[key]
                    if replacement == "<delete>":
                        del d[path[-1]]
                    elif replacement == "<extra key>":
                        if isinstance(d[path[-1]], dict):
                            d[path[-1]]["extra"] = 1
                    else:
                        d[path[-1]] = replacement

                try:
                    _load_bytes(tmp_path, _edit_metadata(good_raw, name, edit))
                    outcomes["loaded"] = outcomes.get("loaded", 0) + 1
                except (ValueError, TypeError):
                    outcomes["refused"] = outcomes.get("refused", 0) + 1
    assert outcomes["refused"] > 1000 and outcomes.get("loaded", 0) > 0


# -- writing: the guarantees of dump(path) -------------------------------------------------

OLD = {"w": QuantizedArray(4, numpy.linspace(-1.0, 1.0, 7))}
NEW = {"w": QuantizedArray(8, numpy.linspace(-3.0, 5.0, 1000), axis=0)}


def _files(folder: Path) -> List[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "weights.safetensors"
    qarray.save_file(OLD, path)
    return path


def _assert_holds(path: Path, objects: Dict[str, QuantizedArray]) -> None:
    loaded = qarray.load_file(path)
    for name, saved in objects.items():
        _assert_same_quantized(loaded[name], saved)


def test_save_replaces_an_existing_file_and_leaves_nothing_else(target: Path) -> None:
    qarray.save_file(NEW, target)
    _assert_holds(target, NEW)
    assert _files(target.parent) == [target.name]


@pytest.mark.parametrize("failing", ["write", "flush", "fsync", "replace", "chmod"])
def test_a_failed_save_leaves_the_old_file_and_no_temporary_file(
    target: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    make_step_fail(monkeypatch, failing)
    with pytest.raises(OSError, match=DISK_FULL):
        qarray.save_file(NEW, target)
    monkeypatch.undo()
    _assert_holds(target, OLD)
    assert _files(target.parent) == [target.name]


def test_an_error_while_streaming_the_tensors_leaves_no_temporary_file(
    target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qarray.safetensors_file as module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the lazy array failed to compute")

    monkeypatch.setattr(module, "pack", broken)
    with pytest.raises(RuntimeError, match="failed to compute"):
        qarray.save_file({"w": QuantizedArray(4, numpy.linspace(0, 1, 50))}, target)
    monkeypatch.undo()
    _assert_holds(target, OLD)
    assert _files(target.parent) == [target.name]


def test_save_writes_through_a_symlink(target: Path) -> None:
    link = target.parent / "link.safetensors"
    link.symlink_to(target.name)
    qarray.save_file(NEW, link)
    assert link.is_symlink() and os.readlink(link) == target.name
    _assert_holds(target, NEW)
    assert _files(target.parent) == sorted([target.name, link.name])


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_new_file_follows_the_umask_and_an_existing_one_keeps_its_bits(tmp_path: Path) -> None:
    old_umask = os.umask(0o027)
    try:
        path = tmp_path / "new.safetensors"
        qarray.save_file(NEW, path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        path.chmod(0o604)
        qarray.save_file(OLD, path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o604
    finally:
        os.umask(old_umask)


def test_save_refuses_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ValueError, match="directory"):
        qarray.save_file(NEW, folder)
    assert _files(folder) == []
