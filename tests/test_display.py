"""Jupyter display: informative reprs and HTML summaries that never copy big arrays to the host."""

from __future__ import annotations

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
from qarray.backends import backend_for
from qarray.display import error_summary, html_repr, mode_name, summary, summary_rows


def _values(size=1000):
    return numpy.random.default_rng(0).standard_normal(size).astype(numpy.float32)


def _rows(obj):
    return dict(summary_rows(obj))


def _options(n_bits=8, narrow=False, precomputed=False, **flags):
    options = QuantizationOptions(n_bits, **flags)
    options.is_narrow = narrow
    options.is_precomputed_qat = precomputed
    return options


@pytest.mark.parametrize(
    "options, expected",
    [
        (_options(), "unsigned"),
        (_options(is_signed=True), "signed"),
        (_options(is_signed=True, is_symmetric=True), "signed symmetric"),
        (_options(is_signed=True, is_symmetric=True, narrow=True), "signed symmetric, narrow"),
        (_options(is_qat=True), "unsigned QAT (inferred scale)"),
        (_options(is_qat=True, is_signed=True, precomputed=True), "signed QAT (precomputed)"),
    ],
)
def test_mode_names(options, expected):
    assert mode_name(options) == expected


def test_every_class_has_an_html_display():
    qa = QuantizedArray(8, _values())
    for obj in (qa, qa.quantizer, qa.quantizer.options, qa.quantizer.stats, qa.quantizer.params):
        html = obj._repr_html_()
        assert html.startswith("<div class='qarray-repr'>") and html.endswith("</div>")
        assert f"<strong>{type(obj).__name__}</strong>" in html
        assert html == html_repr(obj)


def test_quantized_array_display_shows_what_matters():
    qa = QuantizedArray(8, _values(), is_signed=True)
    rows = _rows(qa)
    assert rows["n_bits"] == "8"
    assert rows["mode"] == "signed"
    assert rows["scale"] == f"{float(qa.quantizer.scale):.6g}"
    assert rows["zero point"] == str(qa.quantizer.zero_point)
    assert rows["clip range"].startswith("[-128, 127]")
    assert rows["shape"] == "(1000,)"
    assert rows["values dtype"] == "float32" and rows["qvalues dtype"] == "int64"
    assert rows["backend"] == "numpy" and rows["device"] == "cpu"
    assert "within scale/2" in rows["round-trip error"]
    html = qa._repr_html_()
    for label in ("n_bits", "mode", "scale", "zero point", "clip range", "backend", "device", "round-trip error"):
        assert f">{label}</th>" in html


def test_error_summary_is_the_largest_round_trip_error(xb):
    host = _values(300)
    qa = QuantizedArray(6, xb.asarray(host))
    result = error_summary(qa)
    reference = QuantizedArray(6, host)
    expected = numpy.abs(reference.dequant() - host.astype(numpy.float64)).max()
    assert result["max_abs_error"] == expected
    assert result["bound"] == float(qa.quantizer.scale) / 2
    assert result["within_bound"] is True


def test_display_reads_back_one_number_not_the_array(xb, monkeypatch):
    qa = QuantizedArray(8, xb.asarray(_values(5000)))
    backend = backend_for(qa.values)
    sizes = []
    original = type(backend).to_numpy

    def recording(self, array):
        host = original(self, array)
        sizes.append(host.size)
        return host

    monkeypatch.setattr(type(backend), "to_numpy", recording)
    qa._repr_html_()
    if xb.name == "dask":
        assert sizes == []  # lazy arrays are not computed by a display
    else:
        assert sizes and max(sizes) == 1


def test_values_outside_the_clip_range_are_reported():
    quantizer = qarray.calibrate([numpy.linspace(-1.0, 1.0, 11)], n_bits=4)
    qa = QuantizedArray(4, numpy.array([-5.0, 0.0, 5.0]), params=quantizer.params, options=quantizer.options)
    assert error_summary(qa)["within_bound"] is False
    assert "exceeds" in _rows(qa)["round-trip error"]


def test_lazy_arrays_are_not_computed_by_the_display():
    da = pytest.importorskip("dask.array")
    callbacks = pytest.importorskip("dask.callbacks")

    class Counter(callbacks.Callback):
        count = 0

        def _start(self, dsk):
            Counter.count += 1

    qa = QuantizedArray(8, da.from_array(_values(), chunks=300))
    with Counter():
        rows = _rows(qa)
        qa._repr_html_()
        repr(qa)
    assert Counter.count == 0
    assert "not computed" in rows["round-trip error"]
    assert rows["chunks"] == "4 block(s) of numpy.ndarray, up to (300,)"
    assert error_summary(qa)["within_bound"] is True  # computed on request


def test_displays_of_incomplete_objects_do_not_fail():
    assert _rows(MinMaxQuantizationStats()) == {"calibration range": "not calibrated", "unique values": "not computed"}
    assert _rows(UniformQuantizationParameters())["scale"] == "None"
    assert _rows(UniformQuantizer()) == {"options": "unset"}
    assert "unknown" in _rows(UniformQuantizer(QuantizationOptions(4)))["clip range"]
    assert _rows(QuantizedArray(4, None))["values"] == "None"
    empty = (MinMaxQuantizationStats(), UniformQuantizationParameters(), UniformQuantizer(), QuantizedArray(4, None))
    for obj in empty:
        assert obj._repr_html_()


def test_stats_with_bad_pending_batches_display_the_problem():
    torch = pytest.importorskip("torch")
    stats = MinMaxQuantizationStats()
    stats.update(torch.tensor([0.0, float("nan")]))
    assert "invalid" in _rows(stats)["calibration range"]


def test_qat_and_per_channel_details():
    grid = numpy.round(_values() * 4) / 4
    qat = QuantizedArray(5, grid, is_qat=True)
    rows = _rows(qat)
    assert rows["clip range"] == "none (QAT with inferred parameters)"
    assert rows["unique values"].startswith(str(qat.quantizer.uvalues.shape[0]))
    params = UniformQuantizationParameters(0.1, numpy.array([1, 2, 3]), 0)
    assert _rows(params)["zero point"] == "per-channel array of shape (3,) in [1, 3]"
    no_clip = UniformQuantizer(QuantizationOptions(4), params=params, no_clipping=True)
    assert _rows(no_clip)["clip range"] == "none (no_clipping)"


def test_html_is_escaped():
    stats = MinMaxQuantizationStats()
    html = stats._repr_html_()
    assert "<script" not in html
    assert html_repr(QuantizationOptions(3)).count("<tr>") == 4


def test_text_summary_and_repr():
    qa = QuantizedArray(4, numpy.linspace(0.0, 1.5, 7))
    text = summary(qa)
    assert text.splitlines()[0] == "QuantizedArray"
    assert "mode" in text and "round-trip error" in text
    shown = repr(qa)
    assert shown.startswith("QuantizedArray(n_bits=4, shape=(7,), backend='numpy'")
    assert "mode='unsigned'" in shown and "dtype='float64'" in shown and "clip=(0, 15)" in shown
    with pytest.raises(TypeError, match="qarray object"):
        summary(42)
