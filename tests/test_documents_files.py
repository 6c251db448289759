"""Nothing lost: ``dump(path)`` is atomic, and round trips are exact for every dtype and shape.

A path is written through a temporary file in the same folder that is flushed,
synced and renamed over the target. If the write fails at any step (the disk
fills, the sync fails, the rename fails, the process is interrupted), the file
that was there before is intact and no temporary file is left behind.
"""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any, List

import numpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qarray
from qarray import (
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizationParameters,
    UniformQuantizer,
)
from qarray.io.codec import ARRAY_DTYPES, decode_array, encode_array

from bits import assert_same_bits
from disk_faults import DISK_FULL, make_step_fail

OLD = QuantizedArray(4, numpy.linspace(-1.0, 1.0, 7))
NEW = QuantizedArray(8, numpy.linspace(-3.0, 5.0, 1000))


def _files(folder: Path) -> List[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A path that already holds a good dump of ``OLD``."""
    path = tmp_path / "quantized.json"
    OLD.dump(path)
    return path


def _assert_old_file_intact(target: Path) -> None:
    assert qarray.load(target) == OLD
    assert _files(target.parent) == [target.name], "a temporary file was left behind"


def test_dump_to_a_path_writes_a_loadable_document(tmp_path: Path) -> None:
    for path in (tmp_path / "a.json", str(tmp_path / "b.json")):
        NEW.dump(path)
        assert qarray.load(path) == NEW
    assert _files(tmp_path) == ["a.json", "b.json"]


def test_dump_replaces_an_existing_file(target: Path) -> None:
    NEW.dump(target)
    assert qarray.load(target) == NEW
    assert _files(target.parent) == [target.name]


def test_the_write_goes_through_a_synced_temporary_file_in_the_same_folder(
    target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: List[Any] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(handle: int) -> None:
        steps.append("fsync")
        real_fsync(handle)

    def replace(source: str, destination: str) -> None:
        steps.append(("replace", Path(source).parent, Path(destination)))
        assert Path(source).read_text(encoding="utf-8") == NEW.dumps(), "renamed before fully written"
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    NEW.dump(target)
    assert steps[0] == "fsync", "the data must be synced before the rename"
    assert steps[1] == ("replace", target.parent, target)
    assert qarray.load(target) == NEW


@pytest.mark.parametrize(
    "failing",
    ["write", "flush", "fsync", "replace", "chmod"],
)
def test_a_failed_write_leaves_the_old_file_intact(target: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    make_step_fail(monkeypatch, failing)
    with pytest.raises(OSError, match=DISK_FULL):
        NEW.dump(target)
    monkeypatch.undo()
    _assert_old_file_intact(target)


def test_an_interrupted_write_leaves_the_old_file_intact(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(handle: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        NEW.dump(target)
    monkeypatch.undo()
    _assert_old_file_intact(target)


def test_an_object_that_cannot_be_dumped_leaves_the_old_file_intact(target: Path) -> None:
    unserializable = QuantizedArray(4, numpy.linspace(-1.0, 1.0, 7).astype(numpy.longdouble))
    with pytest.raises(TypeError, match="dtype"):
        unserializable.dump(target)
    _assert_old_file_intact(target)


def test_a_missing_folder_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        NEW.dump(tmp_path / "missing" / "quantized.json")
    assert _files(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_an_existing_file_keeps_its_permissions(target: Path) -> None:
    os.chmod(target, 0o640)
    NEW.dump(target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640


def test_dump_to_open_text_and_binary_files() -> None:
    text, binary = io.StringIO(), io.BytesIO()
    NEW.dump(text)
    NEW.dump(binary)
    assert qarray.loads(text.getvalue()) == NEW
    assert qarray.load(io.BytesIO(binary.getvalue())) == NEW
    assert binary.getvalue().decode("utf-8") == text.getvalue()


def test_concurrent_dumps_to_one_path_leave_one_whole_document(tmp_path: Path) -> None:
    path = tmp_path / "shared.json"
    objects = [QuantizedArray(8, numpy.linspace(-float(i), float(i) + 1.0, 500)) for i in range(8)]
    barrier = threading.Barrier(len(objects))

    def dump(obj: QuantizedArray) -> None:
        barrier.wait()
        for _ in range(5):
            obj.dump(path)

    threads = [threading.Thread(target=dump, args=(obj,)) for obj in objects]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert qarray.load(path) in objects
    assert _files(tmp_path) == ["shared.json"]


# -- exact round trips of every dtype and shape ----------------------------------------------

_shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dtype=st.sampled_from([name for name in ARRAY_DTYPES if name != "bfloat16"]))
def test_encoded_arrays_come_back_bit_for_bit(data: st.DataObject, dtype: str) -> None:
    array = data.draw(hnp.arrays(numpy.dtype(dtype), _shapes, elements=None if dtype != "bool" else st.booleans()))
    if data.draw(st.booleans()):
        array = array.astype(array.dtype.newbyteorder(">"))  # big-endian input is stored little-endian
    decoded = decode_array(json.loads(json.dumps(encode_array(array))), "array")
    assert decoded.dtype == numpy.dtype(dtype) and decoded.shape == array.shape
    assert_same_bits(decoded, array.astype(numpy.dtype(dtype)))
    assert decoded.flags.writeable and decoded.flags.owndata


def test_every_bfloat16_is_written_as_its_own_two_bytes_and_comes_back_exactly() -> None:
    torch = pytest.importorskip("torch")
    patterns = numpy.arange(1 << 16, dtype=numpy.uint16).reshape(256, 256)
    array = torch.from_numpy(patterns.view(numpy.int16)).view(torch.bfloat16)
    encoded = json.loads(json.dumps(encode_array(array)))
    assert encoded["dtype"] == "bfloat16" and encoded["shape"] == [256, 256]
    assert base64.b64decode(encoded["data"]) == patterns.astype("<u2").tobytes()
    decoded = decode_array(encoded, "array")
    assert decoded.dtype == numpy.float32 and decoded.flags.writeable
    assert_same_bits(decoded, (patterns.astype(numpy.uint32) << 16).view(numpy.float32))  # exact
    assert_same_bits(decoded, array.float().numpy())


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    values=hnp.arrays(
        st.sampled_from([numpy.float16, numpy.float32, numpy.float64]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4),
        elements=st.floats(-1e4, 1e4, width=16),
    ),
    n_bits=st.integers(1, 16),
    is_signed=st.booleans(),
)
def test_quantized_arrays_round_trip_through_a_path_exactly(
    values: numpy.ndarray, n_bits: int, is_signed: bool, tmp_path: Path
) -> None:
    array = QuantizedArray(n_bits, values, is_signed=is_signed)
    path = tmp_path / "array.json"
    array.dump(path)
    loaded = qarray.load(path)
    assert loaded == array
    assert loaded.values.dtype == values.dtype and loaded.values.shape == values.shape
    assert_same_bits(loaded.values, array.values)
    assert loaded.dumps() == array.dumps()


@settings(max_examples=60, deadline=None)
@given(
    qvalues=hnp.arrays(
        st.sampled_from(["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    ),
    scale=st.floats(1e-100, 1e100).flatmap(lambda s: st.sampled_from([s, -s])),
    zero_point=st.integers(-(2**62), 2**62) | st.floats(-1e15, 1e15).map(round).map(float),
)
def test_integer_path_arrays_round_trip_exactly(qvalues: numpy.ndarray, scale: float, zero_point: Any) -> None:
    # QAT does not clip, so integers outside the 8-bit range are consistent (clipped ones are refused)
    array = QuantizedArray(8, qvalues, value_is_float=False, is_qat=True, scale=scale, zero_point=zero_point, offset=0)
    loaded = qarray.loads(array.dumps())
    assert loaded == array
    assert_same_bits(loaded.qvalues, qvalues)
    assert type(loaded.quantizer.zero_point) is type(array.quantizer.zero_point)
    assert_same_bits(loaded.quantizer.scale, array.quantizer.scale)


@settings(max_examples=60, deadline=None)
@given(
    rmin=st.floats(allow_nan=False, allow_infinity=False),
    width=st.floats(0, 1e300),
    uvalues=hnp.arrays(
        numpy.float64, st.integers(0, 6), elements=st.floats(allow_nan=False, allow_infinity=False), unique=True
    ),
    n_bits=st.integers(1, 53),
    flags=st.tuples(*[st.booleans()] * 5),
    no_clipping=st.booleans(),
)
def test_every_part_round_trips_exactly(
    rmin: float, width: float, uvalues: numpy.ndarray, n_bits: int, flags: Any, no_clipping: bool
) -> None:
    is_signed, is_symmetric, is_qat, is_narrow, is_precomputed_qat = flags
    is_symmetric = is_symmetric and is_signed and not is_qat and n_bits >= 2
    options = QuantizationOptions(n_bits, is_signed=is_signed, is_symmetric=is_symmetric, is_qat=is_qat)
    options.is_narrow, options.is_precomputed_qat = is_narrow, is_precomputed_qat
    rmax = min(rmin + width, numpy.finfo(numpy.float64).max)
    stats = MinMaxQuantizationStats(rmax=rmax, rmin=rmin, uvalues=numpy.sort(uvalues) + 0.0)
    params = UniformQuantizationParameters(0.25, -3, 2 ** (n_bits - 1) if is_signed else 0)
    quantizer = UniformQuantizer(options, stats, params, no_clipping=no_clipping)
    for obj in (options, stats, params, quantizer):
        loaded = qarray.loads(obj.dumps())
        assert loaded == obj
        assert loaded.dumps() == obj.dumps()
