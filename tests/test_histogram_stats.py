"""HistogramQuantizationStats as users use it: streaming, merging, documents, copies, threads,
calibrate(method=...) and QuantizedArray(method=...), on every backend."""

from __future__ import annotations

import copy
import json
import pickle
import threading

import numpy
import pytest
from array_api_compat import numpy as compat_numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qarray
from qarray import HistogramQuantizationStats, QuantizedArray
from qarray.backends import ArrayAPIBackend
from qarray.calibration import histogram as H
from qarray.documents import load_dict

GENERIC = ArrayAPIBackend(compat_numpy)
"""The generic Array API path: the reference the one-pass update is compared with."""

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def heavy(size: int = 20_000, seed: int = 0) -> numpy.ndarray:
    return numpy.random.default_rng(seed).standard_t(2, size=size)


def filled(values, max_bins: int = 4096) -> HistogramQuantizationStats:
    stats = HistogramQuantizationStats(max_bins)
    stats.update(values)
    return stats


# -- streaming and merging ------------------------------------------------------------------------


@PROPERTY
@given(
    values=hnp.arrays(numpy.float64, st.integers(1, 300), elements=st.floats(-1e6, 1e6)),
    data=st.data(),
)
def test_batches_and_merges_give_the_statistics_and_ranges_of_one_update(values, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, values.size), max_size=5)))
    pieces = numpy.split(values, cuts)
    streamed = HistogramQuantizationStats(64)
    singles = []
    for piece in pieces:
        streamed.update(piece)
        singles.append(filled(piece, 64))
    merged = singles[0]
    for other in data.draw(st.permutations(singles[1:])):
        merged = other.merge(merged)
    whole = filled(values, 64)
    assert streamed == whole and merged == whole
    for method in H.METHODS:
        assert streamed.range(method, n_bits=4) == whole.range(method, n_bits=4)


def test_every_library_gives_the_numpy_histogram(xb):
    values = heavy(6000)
    stats = HistogramQuantizationStats()
    for piece in numpy.array_split(values, 3):
        stats.update(xb.asarray(piece))
    assert stats == filled(values)


def test_merge_leaves_both_sides_unchanged_and_refuses_other_max_bins():
    first, second = filled(numpy.array([0.0, 1.0])), filled(numpy.array([5.0]))
    merged = first.merge(second)
    assert merged.range("minmax") == (0.0, 5.0)
    assert first.range("minmax") == (0.0, 1.0) and second.range("minmax") == (5.0, 5.0)
    with pytest.raises(ValueError, match="max_bins"):
        first.merge(HistogramQuantizationStats(16))
    with pytest.raises(TypeError, match="HistogramQuantizationStats"):
        first.merge(qarray.MinMaxQuantizationStats())


def test_empty_batches_add_nothing_and_empty_statistics_have_no_range():
    stats = HistogramQuantizationStats()
    stats.update(numpy.zeros(0))
    assert stats.histogram is None and stats.count == 0
    with pytest.raises(ValueError, match="no data"):
        stats.range()


def test_nan_policy():
    stats = HistogramQuantizationStats()
    with pytest.raises(ValueError, match="non-finite"):
        stats.update(numpy.array([1.0, numpy.nan]))
    stats.update(numpy.array([1.0, numpy.nan, 2.0]), nan_policy="omit")
    assert stats.count == 2
    with pytest.raises(ValueError, match="nan_policy"):
        stats.update(numpy.ones(2), nan_policy="skip")
    with pytest.raises(TypeError, match="floating-point"):
        stats.update(numpy.arange(3))


def test_dask_nan_raises_when_read():
    dask_array = pytest.importorskip("dask.array")
    stats = HistogramQuantizationStats()
    stats.update(dask_array.from_array(numpy.array([1.0, numpy.nan, 3.0, 4.0]), chunks=2))
    with pytest.raises(ValueError, match="non-finite"):
        stats.range()
    assert "non-finite" in repr(stats)


def test_dask_chunks_merge_in_a_tree_to_the_histogram_of_all_the_data():
    dask_array = pytest.importorskip("dask.array")
    values = heavy(50_000)
    stats = HistogramQuantizationStats()
    stats.update(dask_array.from_array(values, chunks=1000))  # 50 chunks: two levels of the tree
    stats.update(values[:10])
    assert stats == filled(numpy.concatenate([values, values[:10]]))


def test_updates_from_many_threads_count_every_value():
    values = heavy(40_000)
    stats = HistogramQuantizationStats()
    pieces = numpy.array_split(values, 16)
    threads = [threading.Thread(target=stats.update, args=(piece,)) for piece in pieces]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats == filled(values)


# -- the one-pass update (NumPy with Numba) ---------------------------------------------------------


@pytest.fixture
def one_pass(monkeypatch):
    """Small arrays take the compiled kernels, in many chunks and blocks; yields the calls seen."""
    from qarray.backends import _parallel, numba_kernels

    if not numba_kernels.available():
        pytest.skip("numba is not installed")
    monkeypatch.setattr(numba_kernels, "MIN_ELEMENTS", 16)
    monkeypatch.setattr(_parallel, "MIN_CHUNK", 64)
    monkeypatch.setattr(_parallel, "CHUNK_ALIGN", 8)
    monkeypatch.setattr(_parallel, "thread_count", lambda: 3)
    seen = {"window": 0, "minmax": 0}
    window, minmax = numba_kernels.window_counts, numba_kernels.minmax

    def window_spy(*args):
        seen["window"] += 1
        return window(*args)

    def minmax_spy(*args):
        seen["minmax"] += 1
        return minmax(*args)

    monkeypatch.setattr(numba_kernels, "window_counts", window_spy)
    monkeypatch.setattr(numba_kernels, "minmax", minmax_spy)
    return seen


def _batches():
    """Batches that stay inside the range, widen it on either side a little or a lot (a new k),
    hold tiny values, signed zeros, or one value."""
    rng = numpy.random.default_rng(21)
    core = rng.standard_t(2, size=6000)
    return [
        core,
        core[:3000] * 0.5,
        numpy.concatenate([core[:2000], [core.max() * 1.01]]),
        numpy.concatenate([core[:2000], [core.min() * 3.0, 1e-300, -1e-300, -0.0, 0.0]]),
        core[:4000] * 1e3,
        numpy.full(100, core.max() * 1e3),
        rng.uniform(-1e-5, 1e-5, 3000),
    ]


@pytest.mark.parametrize("dtype", [numpy.float64, numpy.float32])
@pytest.mark.parametrize("max_bins", [16, 4096])
def test_one_pass_updates_equal_min_max_then_count(one_pass, dtype, max_bins):
    """Every batch after the first is counted in one pass (no min/max pass), and the histogram
    equals the two-pass one after each batch, in either order of the batches."""
    batches = [batch.astype(dtype) for batch in _batches()]
    for order in (batches, batches[::-1]):
        stats = HistogramQuantizationStats(max_bins)
        expected = None
        for batch in order:
            one_pass["minmax"] = 0
            stats.update(batch)
            expected = H.merge(expected, H.histogram(batch.astype(numpy.float64), max_bins, backend=GENERIC))
            assert stats.histogram == expected
        assert stats == filled(numpy.concatenate(order).astype(numpy.float64), max_bins)
    assert one_pass["window"] >= 2 * (len(batches) - 1)


def test_one_pass_update_equals_merging_the_two_pass_histogram(one_pass):
    """update(h, values) == merge(h, histogram(values)) for histograms h narrower, wider, far
    away, of one value, and for batches whose min or max falls in h's first or last bin."""
    rng = numpy.random.default_rng(22)
    values = rng.standard_t(3, size=5000)
    own = H.histogram(values, 64, backend=GENERIC)
    inner = values[numpy.abs(values) < 1.0]
    for before in (values[:100], values * 1e-3, values * 1e6, values + 1e4, numpy.array([5.0]), values):
        hist = H.histogram(before, 64)
        assert H.update(hist, values, 64) == H.merge(hist, own)
        for batch in (inner, numpy.concatenate([inner, [before.min(), before.max()]])):
            expected = H.merge(hist, H.histogram(batch, 64, backend=GENERIC))
            assert H.update(hist, batch, 64) == expected
    assert H.update(None, values, 64) == own
    assert H.update(own, numpy.zeros(0), 64) == own


def test_one_pass_recounts_when_too_many_values_fall_outside(one_pass, monkeypatch):
    from qarray.backends import numba_kernels

    monkeypatch.setattr(numba_kernels, "OUTLIER_CAPACITY", 3)
    values = heavy(6000, seed=4)
    stats = filled(values[:100])
    stats.update(values[100:])
    assert one_pass["window"] == 1 and one_pass["minmax"] == 2  # the second batch: window, then two passes
    assert stats == filled(values)


def test_one_pass_of_batches_beyond_the_range_stops_early_and_counts_them_again(one_pass):
    """Batches far beyond the range so far (sorted data): the pass stops once the values outside
    overflow, and the batch is counted in two passes, with the non-finite count of that path."""
    values = numpy.sort(heavy(20_000, seed=6))
    stats = filled(values[:100])
    for batch in numpy.array_split(values[100:], 4):
        stats.update(batch)
    assert stats == filled(values)
    bad = values[-5000:] * 10.0
    bad[[0, 4000]] = numpy.nan
    with pytest.raises(ValueError, match="2 non-finite value"):
        stats.update(bad)


def test_one_pass_non_finite_values(one_pass):
    """NaN/±Inf: refused with the count of the two-pass path, or left out under "omit"; a batch
    of nothing finite adds nothing."""
    values = heavy(3000, seed=5)
    stats = filled(values)
    bad = values.copy()
    bad[[5, 700, 2999]] = [numpy.nan, numpy.inf, -numpy.inf]
    with pytest.raises(ValueError, match="3 non-finite value"):
        stats.update(bad)
    with pytest.raises(ValueError, match="3 non-finite value"):
        H.histogram(bad)
    stats.update(bad, nan_policy="omit")
    stats.update(numpy.full(500, numpy.nan), nan_policy="omit")
    assert one_pass["window"] == 3
    assert stats == filled(numpy.concatenate([values, bad[numpy.isfinite(bad)]]))


# -- ranges and the quantizer ---------------------------------------------------------------------


def test_to_minmax_gives_statistics_for_the_quantizer():
    stats = filled(numpy.concatenate([numpy.linspace(-1.0, 1.0, 9999), [100.0]]))
    minmax = stats.to_minmax("percentile", percentile=99.9)
    assert isinstance(minmax, qarray.MinMaxQuantizationStats)
    assert (float(minmax.rmin), float(minmax.rmax)) == stats.range("percentile", percentile=99.9)


@pytest.mark.parametrize("method", H.METHODS)
def test_calibrate_and_quantized_array_choose_the_same_range(method):
    values = heavy()
    quantizer = qarray.calibrate(numpy.array_split(values, 7), n_bits=4, method=method, is_signed=True)
    array = QuantizedArray(4, values, method=method, is_signed=True)
    stats = filled(values)
    expected = stats.range(method, n_bits=4, is_signed=True)
    assert (float(quantizer.rmin), float(quantizer.rmax)) == expected
    assert (float(array.quantizer.rmin), float(array.quantizer.rmax)) == expected
    numpy.testing.assert_array_equal(array.qvalues, quantizer.quant(values))


def test_symmetric_options_reach_the_entropy_search():
    values = heavy()
    quantizer = qarray.calibrate([values], n_bits=8, method="entropy", is_signed=True, is_symmetric=True)
    expected = filled(values).range("entropy", is_signed=True, is_symmetric=True)
    assert (float(quantizer.rmin), float(quantizer.rmax)) == expected


BAD_OPTIONS = [
    dict(n_bits=2**34),
    dict(n_bits=54),
    dict(n_bits=0),
    dict(n_bits=8.0),
    dict(n_bits=True),
    dict(is_signed=True, is_symmetric="yes"),
    dict(is_signed=True, is_symmetric=1),
    dict(is_signed=1),
    dict(is_narrow=None),
    dict(is_qat=True, is_precomputed_qat="no"),
    dict(is_symmetric=True),
    dict(n_bits=1, is_signed=True, is_symmetric=True),
    dict(is_signed=True, is_symmetric=True, is_qat=True, is_precomputed_qat=True),
]


def options_refusal(n_bits=8, **flags):
    """What QuantizationOptions says about these fields (set as calibrate sets them)."""
    with pytest.raises((TypeError, ValueError)) as refusal:
        options = qarray.QuantizationOptions(n_bits)
        for name, value in flags.items():
            setattr(options, name, value)
        options.validate()
    return refusal.value


@pytest.mark.parametrize("method", H.METHODS)
@pytest.mark.parametrize("bad", BAD_OPTIONS, ids=repr)
def test_range_checks_its_options_as_quantization_options_does(method, bad):
    expected = options_refusal(**bad)
    with pytest.raises(type(expected)) as refusal:
        filled(heavy(1000)).range(method, **bad)
    assert str(refusal.value) == str(expected)


def test_range_refuses_qat_scale_inference_for_every_method():
    for method in H.METHODS:
        with pytest.raises(ValueError, match="is_precomputed_qat"):
            filled(heavy(100)).range(method, is_qat=True)


def test_mse_method_lowers_the_error_of_heavy_tailed_data_at_4_bits():
    values = heavy(100_000)
    errors = {}
    for method in ("minmax", "mse"):
        array = QuantizedArray(4, values, method=method)
        errors[method] = float(numpy.mean((array.quantizer.dequant(array.qvalues) - values) ** 2))
    assert errors["mse"] < 0.8 * errors["minmax"]


def test_method_arguments_are_checked():
    with pytest.raises(ValueError, match="method must be one of"):
        QuantizedArray(4, heavy(100), method="kl")
    with pytest.raises(ValueError, match="percentile"):
        QuantizedArray(4, heavy(100), method="percentile", percentile=20)
    with pytest.raises(ValueError, match="method must be one of"):
        qarray.calibrate([heavy(100)], n_bits=4, method="median")
    with pytest.raises(ValueError, match="QAT"):
        qarray.calibrate([heavy(100)], n_bits=4, method="mse", is_qat=True)
    with pytest.raises(ValueError, match="max_bins"):
        qarray.calibrate([heavy(100)], n_bits=4, method="mse", max_bins=2)


def test_method_and_percentile_are_not_unknown_keyword_arguments():
    array = QuantizedArray(4, heavy(100), method="percentile", percentile=99.0, is_signed=True)
    assert array.quantizer.options.is_signed
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        QuantizedArray(4, heavy(100), method="percentile", bins=3)


# -- documents, copies, display -------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, numpy.array([2.5]), heavy(3000)], ids=["empty", "constant", "heavy"])
def test_documents_copies_and_pickles_round_trip_exactly(values):
    stats = HistogramQuantizationStats(512)
    if values is not None:
        stats.update(values)
    document = json.loads(json.dumps(stats.dump_dict()))
    assert document["type"] == "HistogramQuantizationStats"
    for restored in (load_dict(document), copy.deepcopy(stats), pickle.loads(pickle.dumps(stats))):
        assert restored == stats
        assert restored.max_bins == 512
    assert qarray.loads(json.dumps(document)) == stats


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(k=d["k"] + 1), "do not fit"),
        (lambda d: d.update(j_lo=d["j_lo"] - 1), "do not fit"),
        (lambda d: d.update(vmax=d["vmax"] * 4), "do not fit"),
        (lambda d: d.update(vmin=d["vmax"] + 1), "must not exceed|do not fit"),
        (lambda d: d.update(k=None), "all be null"),
        (lambda d: d.update(k=5000), "k must be between"),
        (lambda d: d.update(max_bins=2), "max_bins"),
        (lambda d: d.update(counts={"dtype": "float64", "shape": [1], "data": "AAAAAAAAAAA="}), "dtype"),
        (lambda d: d.update(extra=1), "unexpected field"),
    ],
)
def test_hostile_documents_are_refused(change, message):
    document = filled(numpy.array([0.0, 1.0, 3.0]), 16).dump_dict()
    change(document)
    with pytest.raises((ValueError, TypeError), match=message):
        load_dict(document)


def test_negative_and_empty_bins_at_the_ends_are_refused():
    document = filled(numpy.array([0.0, 1.0, 3.0]), 16).dump_dict()
    counts = numpy.array([1, 0, -1, 1], dtype=numpy.int64)
    document["counts"] = qarray.io.codec.encode_array(counts)
    with pytest.raises(ValueError, match="counts"):
        load_dict(document)


def test_display_names_the_histogram_and_its_range():
    stats = filled(heavy(1000))
    text = qarray.display.summary(stats)
    assert "bins" in text and "calibration range" in text and "percentile" in text
    assert "<table" in stats._repr_html_()
    assert "count=1000" in repr(stats)
    assert "empty" in qarray.display.summary(HistogramQuantizationStats())


def test_plot_histogram_draws_every_range_and_refuses_empty_statistics():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from qarray.plot import plot_histogram

    ax = plot_histogram(filled(heavy(5000)), n_bits=3, methods=("mse", "minmax"))
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any(label.startswith("mse [") for label in labels) and any(label.startswith("minmax [") for label in labels)
    assert any("grid (8 levels)" in label for label in labels)
    with pytest.raises(ValueError, match="no data"):
        plot_histogram(HistogramQuantizationStats())
    with pytest.raises(TypeError, match="HistogramQuantizationStats"):
        plot_histogram(qarray.MinMaxQuantizationStats())
