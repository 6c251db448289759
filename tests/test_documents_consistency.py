"""Documents and files: what dumps() writes loads() accepts, and dump(path) treats files with care.

- Whatever sequence of field assignments succeeded, ``dumps()`` either refuses with
  ``ValueError`` or writes a document that ``loads()`` accepts and that loads equal.
  The loader refuses documents whose fields contradict each other.
- ``dump(path)`` writes through symlinks, refuses anything but a regular file,
  gives new files the umask's permission bits, streams arrays in bounded memory
  (lazy Dask arrays block by block), leaves no temporary file behind on an error
  and removes the ones a killed process left.
- Loading checks the header of every array before decoding any.
"""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, List

import numpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qarray
import qarray.io.codec as serialization
from qarray import (
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizationParameters,
    UniformQuantizer,
)
from qarray.documents import load_dict
from qarray.io.codec import MAX_DUMPS_LAZY_BYTES, encode_array

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX files and permission bits")


def _reference_text(obj: Any) -> str:
    """The document as one json.dumps of dump_dict() writes it (the format's definition)."""
    return json.dumps(obj.dump_dict(), allow_nan=False, separators=(",", ":"))


def _files(folder: Path) -> List[str]:
    return sorted(path.name for path in folder.iterdir())


def _lazy_array(n_bits: int, host: numpy.ndarray, chunks: Any, **kwargs: Any) -> QuantizedArray:
    return QuantizedArray(n_bits, da.from_array(host, chunks=chunks), **kwargs)


# -- dumps() never writes what loads() refuses -----------------------------------------------


def test_changing_n_bits_on_the_options_is_refused_at_dump_time(tmp_path: Path) -> None:
    array = QuantizedArray(8, numpy.linspace(-1.0, 1.0, 11))
    array.quantizer.options.n_bits = 4
    with pytest.raises(ValueError, match="n_bits"):
        array.dumps()
    with pytest.raises(ValueError, match="n_bits"):
        array.dump(tmp_path / "array.json")
    assert _files(tmp_path) == []


def test_rmin_above_rmax_is_refused_at_dump_time() -> None:
    quantizer = QuantizedArray(8, numpy.linspace(-1.0, 1.0, 11)).quantizer
    quantizer.stats.rmin = 5.0
    for obj in (quantizer.stats, quantizer):
        with pytest.raises(ValueError, match="rmin"):
            obj.dumps()


def test_an_invalid_option_combination_is_refused_at_dump_time() -> None:
    options = QuantizationOptions(8)
    options.is_symmetric = True  # without is_signed
    with pytest.raises(ValueError, match="is_signed"):
        options.dumps()


def test_uvalues_changed_in_place_to_inf_are_refused_at_dump_time() -> None:
    stats = MinMaxQuantizationStats(rmax=1.0, rmin=0.0, uvalues=numpy.array([0.0, 0.5, 1.0]))
    stats.uvalues[-1] = numpy.inf
    with pytest.raises(ValueError, match="uvalues"):
        stats.dumps()


def test_parameters_without_options_are_refused_at_dump_time() -> None:
    quantizer = UniformQuantizer()
    quantizer.params.scale = 0.5
    with pytest.raises(ValueError, match="options"):
        quantizer.dumps()


_OPTION_FLAGS = ("is_signed", "is_symmetric", "is_qat", "is_narrow", "is_precomputed_qat")
_floats = st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([numpy.inf, -numpy.inf, numpy.nan])

_assignment = st.one_of(
    st.tuples(st.just("options"), st.just("n_bits"), st.integers(1, 12)),
    st.tuples(st.just("options"), st.sampled_from(_OPTION_FLAGS), st.booleans()),
    st.tuples(st.just("stats"), st.sampled_from(["rmin", "rmax"]), _floats),
    st.tuples(
        st.just("stats"),
        st.just("uvalues"),
        hnp.arrays(numpy.float64, st.integers(0, 4), elements=_floats) | st.none(),
    ),
    st.tuples(st.just("params"), st.just("scale"), _floats | st.none()),
    st.tuples(st.just("params"), st.just("zero_point"), st.integers(-300, 300) | st.none()),
    st.tuples(st.just("params"), st.just("offset"), st.sampled_from([0, 1, 2, 8, 128, 255, 2048]) | st.none()),
    st.tuples(st.just("quantizer"), st.just("no_clipping"), st.booleans()),
    st.tuples(st.just("array"), st.just("n_bits"), st.integers(1, 12)),
    st.tuples(st.just("qvalue"), st.integers(0, 5), st.integers(-5000, 5000)),
)


def _assign(array: QuantizedArray, part: str, name: Any, value: Any) -> None:
    owners = {
        "options": lambda: array.quantizer.options,
        "stats": lambda: array.quantizer.stats,
        "params": lambda: array.quantizer.params,
        "quantizer": lambda: array.quantizer,
        "array": lambda: array,
    }
    if part == "qvalue":  # a quantized value changed in place
        array.qvalues[name % array.qvalues.shape[0]] = value
    else:
        setattr(owners[part](), name, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_bits=st.integers(2, 10),
    signed=st.booleans(),
    values=hnp.arrays(numpy.float64, st.integers(1, 6), elements=st.floats(-100, 100)),
    assignments=st.lists(_assignment, max_size=6),
)
def test_whatever_was_assigned_dumps_refuses_or_loads_give_it_back(
    n_bits: int, signed: bool, values: numpy.ndarray, assignments: List[Any]
) -> None:
    array = QuantizedArray(n_bits, values, is_signed=signed)
    for part, name, value in assignments:
        try:
            _assign(array, part, name, value)
        except (TypeError, ValueError):
            pass  # refused at assignment: fine too
    for obj in (array, array.quantizer, array.quantizer.stats, array.quantizer.params, array.quantizer.options):
        try:
            text = obj.dumps()
        except ValueError:
            continue
        loaded = qarray.loads(text)
        assert loaded == obj
        assert loaded.dumps() == text


# -- the loader refuses inconsistent documents, and accepts exactly the valid cases ----------


def _quantizer_document(n_bits: int, is_signed: bool, offset: int, rmin: float = -1.0, rmax: float = 1.0) -> Any:
    quantizer = UniformQuantizer(
        QuantizationOptions(n_bits, is_signed=is_signed),
        MinMaxQuantizationStats(rmax=rmax, rmin=rmin),
        UniformQuantizationParameters(0.25, 0, 0),
    )
    document = quantizer.dump_dict()
    document["params"]["offset"] = offset
    return document


@pytest.mark.parametrize("n_bits, is_signed, offset", [(8, True, 5), (4, True, 128), (8, False, 300), (3, False, 8)])
def test_an_offset_that_contradicts_n_bits_is_refused(n_bits: int, is_signed: bool, offset: int) -> None:
    with pytest.raises(ValueError, match="offset"):
        load_dict(_quantizer_document(n_bits, is_signed, offset))


@pytest.mark.parametrize("n_bits, is_signed, offset", [(8, True, 128), (8, False, 0), (4, True, 8), (1, True, 1)])
def test_the_offset_the_rule_gives_is_accepted(n_bits: int, is_signed: bool, offset: int) -> None:
    assert load_dict(_quantizer_document(n_bits, is_signed, offset)).offset == offset


def test_the_single_value_rule_offset_0_with_signed_options_round_trips() -> None:
    array = QuantizedArray(8, numpy.full(5, 2.5), is_signed=True)
    assert array.quantizer.offset == 0  # the single-value rule
    assert qarray.loads(array.dumps()) == array


def test_hand_given_signed_offset_with_unsigned_options_round_trips() -> None:
    """Parameters imported with value_is_float=False may pair offset 2**(n-1) with unsigned options."""
    array = QuantizedArray(8, numpy.array([-128, 0, 127], dtype=numpy.int8), value_is_float=False,
                           scale=0.5, zero_point=0, offset=128)
    assert qarray.loads(array.dumps()) == array


@pytest.mark.parametrize("bad", [numpy.inf, -numpy.inf])
def test_uvalues_holding_inf_are_refused(bad: float) -> None:
    document = MinMaxQuantizationStats(rmax=1.0, rmin=0.0).dump_dict()
    document["uvalues"] = encode_array(numpy.sort(numpy.array([0.0, 0.5, bad])))
    with pytest.raises(ValueError, match="uvalues"):
        load_dict(document)


def _array_document_with_qvalues(qvalues: numpy.ndarray, **changes: Any) -> Any:
    array = QuantizedArray(4, numpy.linspace(-1.0, 1.0, qvalues.shape[0]))
    document = array.dump_dict()
    document["qvalues"] = encode_array(qvalues)
    for name, value in changes.items():
        part, field = name.split("__")
        document["quantizer"][part][field] = value
    return document


@pytest.mark.parametrize("outside", [16, -1, 2**40])
def test_clipped_qvalues_outside_the_range_are_refused(outside: int) -> None:
    qvalues = numpy.array([0, 5, outside], dtype=numpy.int64)
    with pytest.raises(ValueError, match="clipping range"):
        load_dict(_array_document_with_qvalues(qvalues))


def test_narrow_clipping_refuses_the_lowest_integer() -> None:
    qvalues = numpy.array([-8, 0, 7], dtype=numpy.int64)
    document = _array_document_with_qvalues(qvalues, options__is_signed=True, params__offset=8)
    assert load_dict(document).qvalues.min() == -8
    document["quantizer"]["options"]["is_narrow"] = True
    with pytest.raises(ValueError, match="clipping range"):
        load_dict(document)


def test_unclipped_qvalues_outside_the_range_are_accepted() -> None:
    qvalues = numpy.array([0, 5, 100], dtype=numpy.int64)
    document = _array_document_with_qvalues(qvalues)
    document["quantizer"]["no_clipping"] = True
    numpy.testing.assert_array_equal(load_dict(document).qvalues, qvalues)
    qat = _array_document_with_qvalues(qvalues, options__is_qat=True)
    numpy.testing.assert_array_equal(load_dict(qat).qvalues, qvalues)
    precomputed = _array_document_with_qvalues(qvalues, options__is_qat=True, options__is_precomputed_qat=True)
    with pytest.raises(ValueError, match="clipping range"):  # precomputed QAT clips again
        load_dict(precomputed)


def test_class_loaders_refuse_inconsistent_documents_too() -> None:
    with pytest.raises(ValueError, match="clipping range"):
        QuantizedArray.load_dict(_array_document_with_qvalues(numpy.array([0, 5, 16])))
    with pytest.raises(ValueError, match="offset"):
        UniformQuantizer.load_dict(_quantizer_document(8, True, 5))


# -- per-block objects: each block against its own clipping range, one grid for all ----------

# Signed 8-bit per row: rows 0 and 2 clip to [-128, 127] (offset 128); row 1 is one value, so its
# offset is 0 and it clips to [0, 255]. The union of the ranges, [-128, 255], holds every value below.
_BLOCK_VALUES = numpy.array([[-1.0, 1.0, 0.5, -0.5], [0.3, 0.3, 0.3, 0.3], [-2.0, 0.0, 1.0, 2.0]])


def _per_row_array(make: Any = numpy.asarray) -> QuantizedArray:
    return QuantizedArray(8, make(_BLOCK_VALUES), is_signed=True, axis=0)


@pytest.mark.parametrize("row, column, value, block", [(0, 0, 200, (0, 0)), (2, 3, 128, (2, 0)), (1, 2, -5, (1, 0))])
def test_per_block_qvalues_outside_their_own_blocks_range_are_refused(
    row: int, column: int, value: int, block: Any
) -> None:
    document = _per_row_array().dump_dict()
    qvalues = _per_row_array().qvalues.copy()
    qvalues[row, column] = value  # inside the union of the blocks' ranges, outside its own block's
    document["qvalues"] = encode_array(qvalues)
    expected = rf"qvalues of block \({block[0]}, 0\) reach {value}, outside .* \[-?\d+, \d+\]"
    with pytest.raises(ValueError, match=expected):
        load_dict(document)


def test_per_block_qvalues_at_the_ends_of_their_own_blocks_range_load() -> None:
    array = _per_row_array()
    qvalues = array.qvalues.copy()
    qvalues[0, 0], qvalues[1, 0], qvalues[1, 1], qvalues[2, 0] = -128, 0, 255, 127
    document = array.dump_dict()
    document["qvalues"] = encode_array(qvalues)
    numpy.testing.assert_array_equal(load_dict(document).qvalues, qvalues)


def test_per_block_qvalues_outside_their_own_blocks_range_are_refused_at_dump_time(xb: Any, tmp_path: Path) -> None:
    array = _per_row_array(xb.asarray)
    qvalues = xb.to_numpy(array.qvalues).copy()
    qvalues[0, 0] = 200
    array.qvalues = xb.asarray(qvalues)
    expected = r"qvalues of block \(0, 0\) reach 200, outside that block's clipping range \[-128, 127\]"
    with pytest.raises(ValueError, match=expected):
        array.dumps()
    with pytest.raises(ValueError, match=r"block \(0, 0\)"):
        array.dump(tmp_path / "array.json")
    assert _files(tmp_path) == []


@pytest.mark.parametrize("row, column, value, block", [(4, 0, 200, (0, 0)), (5, 1, -5, (0, 1)), (1, 2, 130, (0, 2))])
def test_lazy_per_block_qvalues_are_checked_block_by_block_as_they_are_written(
    monkeypatch: pytest.MonkeyPatch, row: int, column: int, value: int, block: Any
) -> None:
    """Blocks of 6 rows (one per column), written in pieces of 2 rows: every piece is checked
    against the ranges of the blocks its rows belong to."""
    monkeypatch.setattr(serialization, "_SLAB_BYTES", 48)  # 2 rows of 3 int64
    host = numpy.linspace(-1.0, 1.0, 18).reshape(6, 3)
    host[:, 1] = 0.25  # column 1 is one value: offset 0, range [0, 255]
    array = QuantizedArray(8, da.from_array(host, chunks=(3, 3)), is_signed=True, axis=1)
    good = qarray.loads(array.dumps())  # and again: the check starts from the first row each time
    assert qarray.loads(array.dumps()) == good
    qvalues = array.qvalues.compute()
    qvalues[0, 1] = 200  # fits column 1's own range
    qvalues[row, column] = value
    array.qvalues = da.from_array(qvalues, chunks=(3, 3))
    with pytest.raises(ValueError, match=rf"qvalues of block \(0, {block[1]}\) reach {value}, outside"):
        array.dumps()


def _per_row_quantizer() -> UniformQuantizer:
    return _per_row_array().quantizer


@pytest.mark.parametrize("grid", [(), (1, 3), (2, 1)])
def test_statistics_of_another_grid_than_the_parameters_are_refused(grid: Any, tmp_path: Path) -> None:
    quantizer = _per_row_quantizer()
    document = quantizer.dump_dict()
    document["stats"] = MinMaxQuantizationStats(rmin=-1.0, rmax=1.0).dump_dict()
    if grid:
        document["stats"]["rmin"] = encode_array(numpy.full(grid, -1.0))
        document["stats"]["rmax"] = encode_array(numpy.full(grid, 1.0))
    expected = r"the statistics \((per tensor|grid \(\d, \d\))\) and the parameters \(grid \(3, 1\)\) must"
    with pytest.raises(ValueError, match=expected):
        load_dict(document)
    written = UniformQuantizer(quantizer.options, params=quantizer.params)
    written.stats = load_dict(document["stats"])
    with pytest.raises(ValueError, match="must have one grid"):
        written.dumps()
    with pytest.raises(ValueError, match="must have one grid"):
        written.dump(tmp_path / "quantizer.json")
    assert _files(tmp_path) == []


def test_per_block_statistics_with_per_tensor_parameters_are_refused() -> None:
    document = QuantizedArray(8, _BLOCK_VALUES).quantizer.dump_dict()  # per tensor
    document["stats"] = _per_row_quantizer().stats.dump_dict()
    with pytest.raises(ValueError, match=r"the statistics \(grid \(3, 1\)\) and the parameters \(per tensor\)"):
        load_dict(document)


# -- the loader checks every array's header before decoding any ------------------------------


def test_a_malformed_array_is_refused_before_any_array_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    array = QuantizedArray(8, numpy.linspace(-1.0, 1.0, 3000), is_qat=True)
    document = json.loads(array.dumps())
    document["qvalues"]["data"] = document["qvalues"]["data"][:-4]  # one array too short
    decoded: List[int] = []
    real = base64.b64decode

    def counting(data: Any, *args: Any, **kwargs: Any) -> bytes:
        decoded.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(base64, "b64decode", counting)
    with pytest.raises(ValueError, match="qvalues.*base64 characters"):
        qarray.loads(json.dumps(document))
    assert decoded == [], "arrays were decoded before the malformed one was found"


@pytest.mark.parametrize(
    "where, change, message",
    [
        (("qvalues",), {"dtype": "float64"}, "qvalues: dtype"),
        (("quantizer", "stats", "uvalues"), {"shape": [-1]}, "uvalues: shape"),
        (("quantizer", "stats", "uvalues"), {"dtype": "complex128"}, "uvalues: dtype"),
        (("quantizer", "params", "zero_point"), {"dtype": "int8"}, "zero_point: dtype"),
    ],
)
def test_every_header_is_checked_first(
    monkeypatch: pytest.MonkeyPatch, where: Any, change: Any, message: str
) -> None:
    array = QuantizedArray(8, numpy.linspace(-1.0, 1.0, 3000), is_qat=True)
    array.quantizer.params.zero_point = numpy.zeros(3000, dtype=numpy.int64)
    document = json.loads(array.dumps())
    node = document
    for key in where:
        node = node[key]
    node.update(change)
    monkeypatch.setattr(base64, "b64decode", pytest.fail)
    with pytest.raises(ValueError, match=message):
        qarray.loads(json.dumps(document))


# -- dump(path): symlinks, special files, permission bits ------------------------------------

OLD = QuantizedArray(4, numpy.linspace(-1.0, 1.0, 7))
NEW = QuantizedArray(8, numpy.linspace(-3.0, 5.0, 100))


@posix_only
def test_dump_writes_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    OLD.dump(target)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    NEW.dump(link)
    assert link.is_symlink(), "the symlink was replaced by a regular file"
    assert qarray.load(target) == NEW
    assert _files(tmp_path) == ["link.json", "real.json"]


@posix_only
def test_dump_through_a_relative_symlink_into_another_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "data" / "real.json"
    OLD.dump(target)
    link = tmp_path / "links" / "link.json"
    link.symlink_to(Path("..") / "data" / "real.json")
    NEW.dump(link)
    assert link.is_symlink()
    assert qarray.load(target) == NEW
    assert _files(tmp_path / "data") == ["real.json"]


@posix_only
def test_dump_through_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "created.json")
    NEW.dump(link)
    assert link.is_symlink()
    assert qarray.load(tmp_path / "created.json") == NEW


@posix_only
def test_a_fifo_is_refused_and_left_alone(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="file must be a regular file.*FIFO"):
        NEW.dump(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert _files(tmp_path) == ["pipe"]


@posix_only
def test_a_symlink_to_a_character_device_is_refused(tmp_path: Path) -> None:
    if not os.path.exists(os.devnull) or not stat.S_ISCHR(os.stat(os.devnull).st_mode):
        pytest.skip("no character device at os.devnull")
    link = tmp_path / "device"
    link.symlink_to(os.devnull)
    with pytest.raises(ValueError, match="file must be a regular file.*character device"):
        NEW.dump(link)
    assert link.is_symlink()
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="file must be a regular file.*directory"):
        NEW.dump(tmp_path / "folder")
    assert _files(tmp_path / "folder") == []


@posix_only
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_follows_the_umask(tmp_path: Path, umask: int, expected: int) -> None:
    previous = os.umask(umask)
    try:
        NEW.dump(tmp_path / "new.json")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == expected


@posix_only
def test_a_symlink_target_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    OLD.dump(target)
    os.chmod(target, 0o604)
    (tmp_path / "link.json").symlink_to(target)
    NEW.dump(tmp_path / "link.json")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o604


# -- dump(path): temporary files ---------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@posix_only
def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "array.json"
    stale = tmp_path / f".array.json.qarray-tmp-{_dead_pid()}-0a1b2c"
    live = tmp_path / f".array.json.qarray-tmp-{os.getppid()}-3d4e5f"  # a process that is alive
    other = tmp_path / f".other.json.qarray-tmp-{_dead_pid()}-6a7b8c"  # another target's
    for path in (stale, live, other):
        path.write_text("partial", encoding="utf-8")
    NEW.dump(target)
    assert _files(tmp_path) == sorted([live.name, other.name, target.name])
    assert qarray.load(target) == NEW


@posix_only
def test_a_killed_dump_leaves_a_temporary_file_the_next_dump_removes(tmp_path: Path) -> None:
    target = tmp_path / "array.json"
    script = (
        "import os, signal, numpy, qarray, qarray.io.codec as s\n"
        "real = s._DeferredData.base64_pieces\n"
        "def pieces(self):\n"
        "    for i, piece in enumerate(real(self)):\n"
        "        yield piece\n"
        "        if i == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
        "s._DeferredData.base64_pieces = pieces\n"
        "s._WRITE_BYTES = 3\n"
        f"qarray.QuantizedArray(8, numpy.linspace(-1, 1, 100)).dump({str(target)!r})\n"
    )
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True)
    assert result.returncode == -9, result.stderr.decode()
    leftovers = _files(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(".array.json.qarray-tmp-")
    NEW.dump(target)
    assert _files(tmp_path) == ["array.json"]


def test_an_error_while_computing_a_lazy_array_leaves_no_file(tmp_path: Path) -> None:
    host = numpy.linspace(-1.0, 1.0, 1000)
    array = _lazy_array(8, host, chunks=100)
    poisoned = host.copy()
    poisoned[950] = numpy.nan  # found only when the last blocks are computed
    array.update_values(da.from_array(poisoned, chunks=100))
    target = tmp_path / "array.json"
    OLD.dump(target)
    with pytest.raises(ValueError, match="NaN|non-finite|finite"):
        array.dump(target)
    assert _files(tmp_path) == ["array.json"]
    assert qarray.load(target) == OLD


# -- streaming -------------------------------------------------------------------------------


def _streamed_objects() -> List[Any]:
    rng = numpy.random.default_rng(1)
    return [
        QuantizedArray(8, rng.standard_normal(1001)),
        QuantizedArray(5, rng.standard_normal((7, 3, 2)).astype(numpy.float32), is_qat=True),
        QuantizedArray(8, numpy.array(0.75)),
        QuantizedArray(8, numpy.zeros((0, 3), dtype=numpy.int32), value_is_float=False, scale=1.0,
                       zero_point=0, offset=0),
        QuantizedArray(3, rng.standard_normal((5, 4)).astype(numpy.float16)),
        MinMaxQuantizationStats(rmax=1.0, rmin=0.0, uvalues=numpy.linspace(0.0, 1.0, 11)),
        UniformQuantizationParameters(0.5, numpy.arange(7, dtype=numpy.int64), 0),
        QuantizationOptions(4),
    ]


@pytest.mark.parametrize("write_bytes, slab_bytes", [(3, 1), (6, 7), (3 << 18, 16 << 20)])
def test_streamed_documents_are_byte_identical_to_one_json_dumps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_bytes: int, slab_bytes: int
) -> None:
    monkeypatch.setattr(serialization, "_WRITE_BYTES", write_bytes)
    monkeypatch.setattr(serialization, "_SLAB_BYTES", slab_bytes)
    for obj in _streamed_objects():
        reference = _reference_text(obj)
        assert obj.dumps() == reference
        obj.dump(tmp_path / "object.json")
        assert (tmp_path / "object.json").read_bytes() == reference.encode("ascii")
        text, binary = io.StringIO(), io.BytesIO()
        obj.dump(text)
        obj.dump(binary)
        assert text.getvalue() == reference
        assert binary.getvalue() == reference.encode("ascii")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=hnp.arrays(
        st.sampled_from(["float16", "float32", "float64"]),
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=7),
        elements=st.floats(-10, 10, width=16),
    ),
    chunk=st.integers(1, 4),
    write_bytes=st.sampled_from([3, 6, 9, 30]),
    slab_bytes=st.integers(1, 64),
)
def test_lazy_arrays_stream_byte_identically(
    values: numpy.ndarray, chunk: int, write_bytes: int, slab_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serialization, "_WRITE_BYTES", write_bytes)
    monkeypatch.setattr(serialization, "_SLAB_BYTES", slab_bytes)
    lazy = _lazy_array(6, values, chunks=chunk)
    stream = io.StringIO()
    with dask.config.set(scheduler="synchronous"):
        lazy.dump(stream)
        reference = _reference_text(lazy)  # dump_dict() computes each array whole
    assert stream.getvalue() == reference
    loaded = qarray.loads(stream.getvalue())
    numpy.testing.assert_array_equal(loaded.values, values)
    numpy.testing.assert_array_equal(loaded.qvalues, lazy.qvalues.compute())


def test_dump_memory_does_not_grow_with_the_array(tmp_path: Path) -> None:
    values = numpy.random.default_rng(0).standard_normal(4_000_000).astype(numpy.float32)
    array = QuantizedArray(8, values)
    array_bytes = array.values.nbytes + array.qvalues.nbytes  # 48 MB
    tracemalloc.start()
    try:
        array.dump(tmp_path / "array.json")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < array_bytes / 8, f"dump(path) peaked at {peak} bytes for {array_bytes} bytes of arrays"
    assert qarray.load(tmp_path / "array.json") == array


def test_a_lazy_array_is_dumped_block_by_block(tmp_path: Path) -> None:
    host = numpy.random.default_rng(0).standard_normal(2_000_000).astype(numpy.float32)
    array = _lazy_array(8, host, chunks=100_000)
    array_bytes = host.nbytes + host.shape[0] * 8  # float32 values, int64 qvalues: 24 MB
    tracemalloc.start()
    try:
        array.dump(tmp_path / "array.json")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < array_bytes / 3, f"dump(path) peaked at {peak} bytes for {array_bytes} bytes of lazy arrays"
    assert qarray.load(tmp_path / "array.json") == QuantizedArray(8, host)


def test_dumps_refuses_a_lazy_array_above_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_DUMPS_LAZY_BYTES == 64 * 2**20
    monkeypatch.setattr(serialization, "MAX_DUMPS_LAZY_BYTES", 8 * 999)
    below = _lazy_array(8, numpy.linspace(-1.0, 1.0, 999), chunks=100)
    assert qarray.loads(below.dumps()) == QuantizedArray(8, numpy.linspace(-1.0, 1.0, 999))
    above = _lazy_array(8, numpy.linspace(-1.0, 1.0, 1000), chunks=100)
    with pytest.raises(ValueError, match=r"lazy array of 8000 bytes.*use dump\(path\)"):
        above.dumps()
    stream = io.StringIO()
    above.dump(stream)  # streaming is not limited
    assert qarray.loads(stream.getvalue()) == QuantizedArray(8, numpy.linspace(-1.0, 1.0, 1000))


@pytest.mark.parametrize("how", ["dumps", "path"])
def test_lazy_qvalues_outside_the_range_are_refused_while_written(tmp_path: Path, how: str) -> None:
    array = _lazy_array(8, numpy.linspace(-1.0, 1.0, 1000), chunks=100)
    array.n_bits = 4
    array.quantizer.options.n_bits = 4  # the 8-bit qvalues no longer fit
    with pytest.raises(ValueError, match="clipping range"):
        array.dumps() if how == "dumps" else array.dump(tmp_path / "array.json")
    assert _files(tmp_path) == []


def test_lazy_uvalues_are_checked_across_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serialization, "_SLAB_BYTES", 8)
    good = MinMaxQuantizationStats(rmax=1.0, rmin=0.0)
    good.uvalues = da.from_array(numpy.linspace(0.0, 1.0, 5), chunks=2)
    assert qarray.loads(good.dumps()).uvalues.tolist() == numpy.linspace(0.0, 1.0, 5).tolist()
    for bad in ([0.0, 0.5, 0.25, 1.0], [0.0, 0.5, 1.0, numpy.inf]):
        stats = MinMaxQuantizationStats(rmax=1.0, rmin=0.0)
        stats.uvalues = da.from_array(numpy.array(bad), chunks=2)
        with pytest.raises(ValueError, match="uvalues"):
            stats.dumps()


def test_arrays_of_every_library_stream_byte_identically(xb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serialization, "_WRITE_BYTES", 3)
    monkeypatch.setattr(serialization, "_SLAB_BYTES", 40)  # pieces of a few rows of 2-d arrays
    values = numpy.random.default_rng(2).standard_normal((9, 4, 3))
    array = QuantizedArray(7, xb.asarray(values), is_qat=True)
    stream = io.StringIO()
    array.dump(stream)
    assert stream.getvalue() == _reference_text(array)
    loaded = qarray.loads(stream.getvalue())
    numpy.testing.assert_array_equal(loaded.values, values)
    numpy.testing.assert_array_equal(loaded.qvalues, xb.to_numpy(array.qvalues))
