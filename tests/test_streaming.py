"""Streaming calibration: update, merge and calibrate give what one call on all the data gives.

Every library runs the same expectations (the ``xb`` fixture); the reference is
one ``compute_quantization_stats`` / ``QuantizedArray`` on the concatenated
NumPy data. Device-resident libraries must keep the per-batch work on the
device and read the range back once.
"""

from __future__ import annotations

import sys

import numpy
import pytest

import qarray
from qarray import MinMaxQuantizationStats, QuantizationOptions, QuantizedArray
from qarray.backends import backend_for

SIZES = (7, 0, 23, 1, 12)


def _batches(seed: int = 0, dtype=numpy.float32, sizes=SIZES):
    rng = numpy.random.default_rng(seed)
    return [(rng.standard_normal(size) * (index + 1)).astype(dtype) for index, size in enumerate(sizes)]


def _reference(batches, with_uvalues=True) -> MinMaxQuantizationStats:
    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats(numpy.concatenate(batches), with_uvalues=with_uvalues)
    return stats


def _host(array):
    return None if array is None else qarray.core.namespace.to_numpy(array)


# -- update ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_update_equals_one_call_on_the_concatenation(xb, dtype):
    batches = _batches(dtype=dtype)
    stats = MinMaxQuantizationStats()
    for batch in batches:
        stats.update(xb.asarray(batch), with_uvalues=True)
    reference = _reference(batches)
    assert (stats.rmin, stats.rmax) == (reference.rmin, reference.rmax)
    numpy.testing.assert_array_equal(_host(stats.uvalues), reference.uvalues)
    assert stats == reference


def test_update_without_uvalues_leaves_them_none(xb):
    stats = MinMaxQuantizationStats()
    for batch in _batches():
        stats.update(xb.asarray(batch))
    assert stats.uvalues is None
    assert stats == _reference(_batches(), with_uvalues=False)


def test_uvalues_stay_none_once_a_batch_skipped_them():
    first, second = _batches()[0], _batches()[2]
    stats = MinMaxQuantizationStats()
    stats.update(first, with_uvalues=False)
    stats.update(second, with_uvalues=True)
    assert stats.uvalues is None
    stats = MinMaxQuantizationStats()
    stats.update(first, with_uvalues=True)
    stats.update(second, with_uvalues=False)
    assert stats.uvalues is None


def test_update_continues_a_computed_calibration(xb):
    batches = _batches()
    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats(xb.asarray(batches[0]))
    for batch in batches[1:]:
        stats.update(xb.asarray(batch), with_uvalues=True)
    assert stats == _reference(batches)


def test_update_keeps_the_running_range_on_the_device(xb, monkeypatch):
    backend = backend_for(xb.asarray(numpy.zeros(1, dtype=numpy.float32)))
    if backend.host_resident:
        pytest.skip(f"{xb.name} is host resident: batches are checked at once")
    reads = []
    original = qarray.stats.to_numpy
    monkeypatch.setattr(qarray.stats, "to_numpy", lambda array: reads.append(1) or original(array))
    monkeypatch.setattr(type(backend), "to_numpy", lambda self, array: reads.append(1) or original(array))
    stats = MinMaxQuantizationStats()
    for batch in _batches():
        stats.update(xb.asarray(batch))
    assert reads == []
    low, high = stats._pending.newest
    assert qarray.core.namespace.library_name(qarray.core.namespace.array_namespace(low)) == backend.name
    assert stats.rmin == _reference(_batches()).rmin
    assert len(reads) == 1  # min and max read back together, once
    assert stats.rmax == _reference(_batches()).rmax
    assert len(reads) == 1


def test_update_from_several_libraries(xb):
    batches = _batches()
    stats = MinMaxQuantizationStats()
    for index, batch in enumerate(batches):
        stats.update(xb.asarray(batch) if index % 2 else batch, with_uvalues=True)
    assert stats == _reference(batches)


@pytest.mark.parametrize("bad", [numpy.nan, numpy.inf, -numpy.inf])
def test_update_refuses_non_finite_values(xb, bad):
    batch = numpy.array([0.5, bad, 1.0])
    stats = MinMaxQuantizationStats()
    stats.update(numpy.array([0.0, 2.0]))
    with pytest.raises(ValueError, match="non-finite"):
        stats.update(xb.asarray(batch))
        # device backends check when the range is read
        stats.rmin  # noqa: B018


def test_host_batches_are_checked_at_once():
    stats = MinMaxQuantizationStats()
    with pytest.raises(ValueError, match="1 non-finite"):
        stats.update(numpy.array([0.5, numpy.nan]))
    assert stats.rmin is None  # the bad batch was not folded in


def test_nan_policy_omit_leaves_non_finite_values_out(xb):
    stats = MinMaxQuantizationStats()
    stats.update(xb.asarray(numpy.array([numpy.nan, numpy.inf])), nan_policy="omit")
    stats.update(xb.asarray(numpy.array([1.0, numpy.nan, -3.0])), nan_policy="omit", with_uvalues=False)
    assert (stats.rmin, stats.rmax) == (-3.0, 1.0)


def test_only_non_finite_batches_under_omit_raise_when_read(xb):
    stats = MinMaxQuantizationStats()
    stats.update(xb.asarray(numpy.array([numpy.nan, -numpy.inf])), nan_policy="omit")
    with pytest.raises(ValueError, match="no finite value"):
        stats.rmin  # noqa: B018


def test_empty_batches_add_nothing(xb):
    stats = MinMaxQuantizationStats()
    stats.update(xb.asarray(numpy.zeros(0, dtype=numpy.float32)))
    assert stats.rmin is None and stats.rmax is None
    stats.update(xb.asarray(numpy.array([2.0, 3.0])))
    assert (stats.rmin, stats.rmax) == (2.0, 3.0)


def test_update_refuses_bad_arguments():
    stats = MinMaxQuantizationStats()
    with pytest.raises(TypeError, match="floating-point"):
        stats.update(numpy.arange(3))
    with pytest.raises(ValueError, match="nan_policy"):
        stats.update(numpy.ones(3), nan_policy="ignore")
    with pytest.raises(TypeError, match="with_uvalues"):
        stats.update(numpy.ones(3), with_uvalues=1)


def test_repr_of_statistics_with_bad_pending_batches_does_not_raise():
    torch = pytest.importorskip("torch")
    stats = MinMaxQuantizationStats()
    stats.update(torch.tensor([1.0, float("nan")]))
    assert "non-finite" in repr(stats)


# -- merge ----------------------------------------------------------------------------------


def test_merge_equals_one_call_on_both_sets(xb):
    batches = _batches()
    first, second = MinMaxQuantizationStats(), MinMaxQuantizationStats()
    for batch in batches[:2]:
        first.update(xb.asarray(batch), with_uvalues=True)
    for batch in batches[2:]:
        second.update(xb.asarray(batch), with_uvalues=True)
    merged = first.merge(second)
    assert merged == _reference(batches)
    assert merged is not first and merged is not second


def test_merge_leaves_its_operands_unchanged(xb):
    batches = _batches()
    first, second = MinMaxQuantizationStats(), MinMaxQuantizationStats()
    first.update(xb.asarray(batches[0]))
    second.update(xb.asarray(batches[2]))
    first.merge(second)
    assert first == _reference(batches[:1], with_uvalues=False)
    assert second == _reference(batches[2:3], with_uvalues=False)


def test_merge_with_empty_statistics(xb):
    stats = MinMaxQuantizationStats()
    stats.update(xb.asarray(_batches()[0]), with_uvalues=True)
    assert stats.merge(MinMaxQuantizationStats()) == stats
    assert MinMaxQuantizationStats().merge(stats) == stats
    assert MinMaxQuantizationStats().merge(MinMaxQuantizationStats()).rmin is None


def test_merge_drops_uvalues_that_only_one_side_has():
    first, second = MinMaxQuantizationStats(), MinMaxQuantizationStats()
    first.update(_batches()[0], with_uvalues=True)
    second.update(_batches()[2], with_uvalues=False)
    assert first.merge(second).uvalues is None


def test_merge_of_computed_statistics():
    batches = _batches()
    first = _reference(batches[:2])
    second = _reference(batches[2:])
    assert first.merge(second) == _reference(batches)


def test_merge_refuses_other_types():
    with pytest.raises(TypeError, match="other"):
        MinMaxQuantizationStats().merge({"rmin": 0.0})


# -- calibrate ------------------------------------------------------------------------------

OPTION_SETS = [
    {},
    {"is_signed": True},
    {"is_signed": True, "is_symmetric": True},
    {"is_signed": True, "is_narrow": True},
    {"is_qat": True},
]


@pytest.mark.parametrize("kwargs", OPTION_SETS, ids=lambda k: ",".join(k) or "unsigned")
def test_calibrate_equals_a_quantized_array_on_all_the_data(xb, kwargs):
    batches = _batches()
    if kwargs.get("is_qat"):
        batches = [numpy.round(batch * 2) / 2 for batch in batches]  # a uniform grid
    quantizer = qarray.calibrate((xb.asarray(batch) for batch in batches), n_bits=5, **kwargs)
    reference = QuantizedArray(5, numpy.concatenate(batches), **kwargs).quantizer
    assert quantizer == reference
    numpy.testing.assert_array_equal(
        xb.to_numpy(quantizer.quant(xb.asarray(batches[2]))), reference.quant(batches[2])
    )


def test_calibrate_gathers_uvalues_only_for_qat_inference():
    assert qarray.calibrate(_batches(), n_bits=4).uvalues is None
    assert qarray.calibrate(_batches(), n_bits=4, is_qat=True).uvalues is not None
    options = QuantizationOptions(4, is_qat=True)
    options.is_precomputed_qat = True
    assert qarray.calibrate(_batches(), options=options).uvalues is None


def test_calibrate_with_options_and_n_bits():
    options = QuantizationOptions(8, is_signed=True)
    quantizer = qarray.calibrate(_batches(), n_bits=4, options=options)
    assert quantizer.n_bits == 4 and quantizer.is_signed
    assert options.n_bits == 8  # the caller's options are not changed
    assert qarray.calibrate(_batches(), options=options).n_bits == 8


def test_calibrate_reads_the_device_once(xb, monkeypatch):
    backend = backend_for(xb.asarray(numpy.zeros(1, dtype=numpy.float32)))
    if backend.host_resident:
        pytest.skip(f"{xb.name} is host resident")
    reads = []
    original = qarray.stats.to_numpy
    monkeypatch.setattr(qarray.stats, "to_numpy", lambda array: reads.append(1) or original(array))
    monkeypatch.setattr(type(backend), "to_numpy", lambda self, array: reads.append(1) or original(array))
    qarray.calibrate([xb.asarray(batch) for batch in _batches()], n_bits=8)
    assert len(reads) == 1


def test_calibrate_with_nan_policy_omit():
    batches = [numpy.array([1.0, numpy.nan]), numpy.array([-1.0, numpy.inf])]
    quantizer = qarray.calibrate(batches, n_bits=8, nan_policy="omit")
    assert (quantizer.rmin, quantizer.rmax) == (-1.0, 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        qarray.calibrate(batches, n_bits=8)


def test_calibrate_shows_a_progress_bar_with_tqdm(capsys):
    pytest.importorskip("tqdm")
    qarray.calibrate(_batches(), n_bits=8, progress=True)
    assert "calibrating" in capsys.readouterr().err


def test_calibrate_progress_is_silent_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes "import tqdm" fail
    quantizer = qarray.calibrate(iter(_batches()), n_bits=8, progress=True)
    assert quantizer.scale is not None
    assert capsys.readouterr().err == ""


def test_calibrate_refuses_bad_arguments():
    with pytest.raises(TypeError, match="n_bits"):
        qarray.calibrate(_batches())
    with pytest.raises(ValueError, match="non-empty batch"):
        qarray.calibrate([], n_bits=8)
    with pytest.raises(ValueError, match="non-empty batch"):
        qarray.calibrate([numpy.zeros(0)], n_bits=8)
    with pytest.raises(TypeError, match="is_fancy"):
        qarray.calibrate(_batches(), n_bits=8, is_fancy=True)
    with pytest.raises(ValueError, match="is_symmetric"):
        qarray.calibrate(_batches(), n_bits=8, is_symmetric=True)
    with pytest.raises(TypeError, match="floating-point"):
        qarray.calibrate([numpy.arange(4)], n_bits=8)
    with pytest.raises(TypeError, match="options"):
        qarray.calibrate(_batches(), options={"n_bits": 8})
    with pytest.raises(TypeError, match="progress"):
        qarray.calibrate(_batches(), n_bits=8, progress="yes")


def test_calibrated_quantizer_round_trips_through_json():
    quantizer = qarray.calibrate(_batches(), n_bits=6, is_qat=True)
    assert qarray.loads(quantizer.dumps()) == quantizer
