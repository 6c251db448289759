"""Displays and plots of per-channel and per-group quantization, on every backend.

Summaries name the granularity and the parameter grid and digest the per-block
parameters from a few numbers reduced where the grid lives (never a host copy of a
grid, never a computation of a lazy array); the round-trip error compares every
block with its own ``scale / 2``; ``plot_block_parameters`` draws each block's
bound and error. Expected numbers come from a NumPy reading of the host copies.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy
import pytest

import qarray
from qarray import MinMaxQuantizationStats, QuantizationOptions, QuantizedArray, UniformQuantizationParameters
from qarray.backends import backend_for
from qarray.core.granularity import block_extent
from qarray.core.namespace import to_numpy
from qarray.display import error_summary, granularity_name, html_repr, summary, summary_rows

SHAPE = (6, 40)


def _weights(seed: int = 0) -> numpy.ndarray:
    """Rows of very different magnitudes, and one constant row (its blocks have offset 0)."""
    rng = numpy.random.default_rng(seed)
    values = rng.standard_normal(SHAPE) * numpy.array([[0.01], [1.0], [30.0], [0.5], [2.0], [1.0]])
    values[5] = 0.75
    return values


def _rows(obj: Any) -> Dict[str, str]:
    return dict(summary_rows(obj))


def _g(value: float) -> str:
    return f"{value:.6g}"


def _block_max(values: numpy.ndarray, extent: Any) -> numpy.ndarray:
    """The max of every block, read from slices (independent of the library's reductions)."""
    grid = tuple(-(-n // e) for n, e in zip(values.shape, extent))
    result = numpy.empty(grid)
    for index in numpy.ndindex(*grid):
        block = tuple(slice(i * e, (i + 1) * e) for i, e in zip(index, extent))
        result[index] = values[block].max()
    return result


@pytest.mark.parametrize(
    "granularity, expected",
    [
        ({}, "per tensor"),
        ({"axis": 0}, "per channel (axis=0)"),
        ({"axis": (0, 2)}, "per channel (axis=(0, 2))"),
        ({"block_size": 128}, "per group of 128 along the last axis (block_size=128)"),
        ({"block_size": (4, None)}, "per block (block_size=(4, None))"),
    ],
)
def test_granularity_is_named(granularity: Dict[str, Any], expected: str) -> None:
    options = QuantizationOptions(8, **granularity)
    assert granularity_name(options) == expected
    assert _rows(options)["granularity"] == expected


def test_per_block_summary_digests_the_parameters(xb: Any) -> None:
    array = QuantizedArray(4, xb.asarray(_weights()), block_size=16, is_signed=True)
    quantizer = array.quantizer
    scale, zero_point, offset = (to_numpy(getattr(quantizer, name)) for name in ("scale", "zero_point", "offset"))
    rows = _rows(array)
    assert rows["granularity"] == "per group of 16 along the last axis (block_size=16)"
    assert rows["parameter grid"] == "(6, 3): 18 blocks of up to (1, 16) values"
    assert rows["scale"] == f"min {_g(scale.min())}, median {_g(numpy.median(scale))}, max {_g(scale.max())}"
    assert rows["zero point"] == f"in [{zero_point.min()}, {zero_point.max()}]"
    # Signed blocks have offset 8; the three blocks of the constant row hold one value: 0.
    assert rows["offset"] == "in [0, 8]; 0 in 3 of 18 blocks"
    assert rows["clip range"] == "per block, with its offset: [-8, 7] to [0, 15]"
    assert numpy.unique(offset).tolist() == [0, 8]
    if xb.name == "dask":
        assert rows["calibration range"] == "per block, grid (6, 3): lazy (not computed by a display)"
        assert "not computed for lazy arrays" in rows["round-trip error"]
    else:
        rmin, rmax = to_numpy(quantizer.rmin), to_numpy(quantizer.rmax)
        assert rows["calibration range"] == (
            f"per block, grid (6, 3): rmin in [{_g(rmin.min())}, {_g(rmin.max())}], "
            f"rmax in [{_g(rmax.min())}, {_g(rmax.max())}]"
        )
        assert rows["round-trip error"].endswith(
            f"every block within its own scale/2; largest scale/2 = {_g(scale.max() / 2)}"
        )
    assert rows["shape"] == "(6, 40)"


def test_every_class_shows_its_granularity_in_html(xb: Any) -> None:
    array = QuantizedArray(8, xb.asarray(_weights()), axis=0)
    quantizer = array.quantizer
    for obj in (array, quantizer, quantizer.options, quantizer.stats, quantizer.params):
        shown = obj._repr_html_()
        assert shown == html_repr(obj)
        assert shown.startswith("<div class='qarray-repr'>")
    assert ">per channel (axis=0)</td>" in array._repr_html_()
    assert ">(6, 1): 6 blocks of (1, 40) values</td>" in array._repr_html_()
    assert _rows(quantizer.params)["parameter grid"] == "(6, 1): 6 blocks"
    assert _rows(quantizer)["parameter grid"] == "(6, 1): 6 blocks"
    assert _rows(quantizer)["clip range"] == "[0, 255] in every block"
    assert "per block, grid (6, 1)" in _rows(quantizer.stats)["calibration range"]
    assert summary(array).splitlines()[0] == "QuantizedArray"


def test_a_display_reads_back_a_few_numbers_not_the_grids(xb: Any, monkeypatch: Any) -> None:
    array = QuantizedArray(8, xb.asarray(_weights()), block_size=4)  # a grid of 60 blocks
    backend = backend_for(array.values)
    sizes = []
    original = type(backend).to_numpy

    def recording(self: Any, value: Any) -> numpy.ndarray:
        host = original(self, value)
        sizes.append(host.size)
        return host

    monkeypatch.setattr(type(backend), "to_numpy", recording)
    array._repr_html_()
    summary(array.quantizer)
    if xb.name == "dask":
        assert sizes == []  # parameters are host arrays, ranges lazy: nothing is computed
    else:
        assert sizes and max(sizes) <= 4


def test_lazy_block_ranges_are_not_computed_by_a_display() -> None:
    da = pytest.importorskip("dask.array")
    callbacks = pytest.importorskip("dask.callbacks")

    class Counter(callbacks.Callback):
        count = 0

        def _start(self, dsk: Any) -> None:
            Counter.count += 1

    array = QuantizedArray(8, da.from_array(_weights(), chunks=(2, 40)), block_size=8)
    with Counter():
        rows = _rows(array)
        array._repr_html_()
        repr(array)
        summary(array.quantizer.stats)
    assert Counter.count == 0
    assert rows["scale"].startswith("min ")
    assert error_summary(array)["within_bound"] is True  # computed on request
    loaded = qarray.loads(QuantizedArray(8, _weights(), block_size=8).dumps(), backend="dask")
    with Counter():  # parameters placed as lazy arrays: described, not computed
        rows = _rows(loaded)
    assert Counter.count == 0
    assert rows["scale"] == "lazy array of shape (6, 5) (not computed by a display)"
    assert rows["clip range"] == "per block, with its offset (lazy offsets, not computed by a display)"


def test_error_summary_compares_each_block_with_its_own_bound(xb: Any) -> None:
    host = _weights()
    array = QuantizedArray(6, xb.asarray(host), block_size=(2, 8), is_signed=True, is_symmetric=True)
    result = error_summary(array)
    reference = QuantizedArray(6, host, block_size=(2, 8), is_signed=True, is_symmetric=True)
    error = numpy.abs(reference.quantizer.dequant(reference.qvalues) - host)
    assert result["max_abs_error"] == error.max()
    assert result["bound"] == to_numpy(reference.quantizer.scale).max() / 2
    assert result["within_bound"] is True


def test_a_small_block_beyond_its_own_bound_is_reported() -> None:
    """The small row's error exceeds its scale/2 but not the large row's: per block, it shows."""
    fitted = numpy.array([[0.0, 0.5, 1.0, 0.25], [0.0, 50.0, 100.0, 25.0]])
    quantizer = QuantizedArray(4, fitted, axis=0).quantizer
    outside = fitted.copy()
    outside[0] *= 3  # beyond the small row's clip range, by less than the large row's scale/2
    array = QuantizedArray(4, outside, params=quantizer.params, options=quantizer.options)
    result = error_summary(array)
    assert result["max_abs_error"] <= result["bound"] * (1 + 1e-12)
    assert result["within_bound"] is False
    assert "some block exceeds its own scale/2" in _rows(array)["round-trip error"]


def test_nan_values_left_out_of_the_error() -> None:
    values = _weights()
    values[1, 3] = numpy.nan
    array = QuantizedArray(8, values, axis=0, nan_policy="omit")
    result = error_summary(array)
    assert numpy.isfinite(result["max_abs_error"]) and result["within_bound"] is True


def test_parameters_set_by_hand_display_as_grids() -> None:
    params = UniformQuantizationParameters(
        numpy.array([[0.5], [0.25]]), numpy.array([[3], [-2]]), numpy.array([[0], [0]])
    )
    rows = _rows(params)
    assert rows == {
        "parameter grid": "(2, 1): 2 blocks",
        "scale": "min 0.25, median 0.375, max 0.5",
        "zero point": "in [-2, 3]",
        "offset": "0 in every block",
    }
    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats(_weights(), axis=1)
    assert _rows(stats)["calibration range"].startswith("per block, grid (1, 40): rmin in [")
    pending = qarray.UniformQuantizer(QuantizationOptions(4, axis=0))
    assert _rows(pending)["parameter grid"] == "not computed yet"


# -- plot_block_parameters ------------------------------------------------------------------


@pytest.fixture
def agg() -> Any:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_plot_draws_each_blocks_bound_and_largest_error(xb: Any, agg: Any) -> None:
    from qarray.plot import plot_block_parameters

    host = _weights()
    array = QuantizedArray(4, xb.asarray(host), block_size=16, is_signed=True)
    ax = plot_block_parameters(array)
    bound, errors = ax.lines
    scale = to_numpy(array.quantizer.scale)
    numpy.testing.assert_array_equal(bound.get_ydata(), numpy.abs(scale.reshape(-1)) / 2)
    reference = QuantizedArray(4, host, block_size=16, is_signed=True)
    extent, _ = block_extent(SHAPE, block_size=16)
    expected = _block_max(numpy.abs(reference.quantizer.dequant(reference.qvalues) - host), extent)
    numpy.testing.assert_array_equal(errors.get_ydata(), expected.reshape(-1))
    assert numpy.all(errors.get_ydata() <= bound.get_ydata() * (1 + 1e-12))
    assert ax.get_yscale() == "log"
    assert "18 block(s)" in ax.get_title()


def test_plot_of_scales_alone_and_of_one_tensor(agg: Any) -> None:
    from qarray.plot import plot_block_parameters

    host = _weights()
    per_channel = QuantizedArray(8, host, axis=0).quantizer
    ax = plot_block_parameters(per_channel)  # a quantizer without values: the bounds only
    assert len(ax.lines) == 1 and len(ax.lines[0].get_ydata()) == 6
    whole = QuantizedArray(8, host).quantizer
    _, axes = agg.subplots()
    assert plot_block_parameters(whole, host, ax=axes) is axes
    bound, errors = axes.lines
    numpy.testing.assert_array_equal(bound.get_ydata(), [float(whole.scale) / 2])
    numpy.testing.assert_array_equal(errors.get_ydata(), [numpy.abs(whole.dequant(whole.quant(host)) - host).max()])


def test_plot_refuses_values_of_another_grid_and_missing_parameters(agg: Any) -> None:
    from qarray.plot import plot_block_parameters

    quantizer = QuantizedArray(8, _weights(), axis=0).quantizer
    with pytest.raises(ValueError, match="parameter grid"):
        plot_block_parameters(quantizer, numpy.zeros((5, 40)))
    with pytest.raises(ValueError, match="no parameters"):
        plot_block_parameters(qarray.UniformQuantizer(QuantizationOptions(8)))


# -- plot_grid and plot_error with per-block quantizers ---------------------------------------


@pytest.mark.parametrize("granularity, block, window", [
    ({"axis": 0}, 2, (slice(2, 3), slice(None))),
    ({"block_size": 16}, 5, (slice(1, 2), slice(32, 40))),  # grid (6, 3): block 5 is row 1, column 2
    ({"block_size": 16}, 17, (slice(5, 6), slice(32, 40))),  # the short last group of the constant row
])
def test_plot_grid_draws_one_blocks_values_and_its_own_grid(
    xb: Any, agg: Any, granularity: Dict[str, Any], block: int, window: Any
) -> None:
    from qarray.plot import plot_grid

    host = _weights()
    array = QuantizedArray(4, xb.asarray(host), is_signed=True, **granularity)
    ax = plot_grid(host, array.quantizer, block=block)
    alone = QuantizedArray(4, host[window], is_signed=True).quantizer
    low, high = alone.clip_range()
    expected = alone.dequant(numpy.arange(low, high + 1))
    numpy.testing.assert_array_equal([line.get_xdata()[0] for line in ax.lines], expected)
    heights = sum(patch.get_height() for patch in ax.patches)
    assert heights == host[window].size
    assert ax.get_title().startswith(f"block {block} of ")


def test_plot_error_of_a_per_block_quantizer_shows_every_element(xb: Any, agg: Any) -> None:
    from qarray.plot import plot_error

    host = _weights()
    array = QuantizedArray(4, xb.asarray(host), block_size=16)
    ax = plot_error(host, array)
    points, upper, lower = ax.lines
    reference = QuantizedArray(4, host, block_size=16).quantizer
    numpy.testing.assert_array_equal(points.get_ydata(), (reference.dequant(reference.quant(host)) - host).reshape(-1))
    largest = numpy.abs(to_numpy(reference.scale)).max() / 2
    numpy.testing.assert_array_equal(sorted([upper.get_ydata()[0], lower.get_ydata()[0]]), [-largest, largest])
    assert numpy.all(numpy.abs(points.get_ydata()) <= largest * (1 + 1e-12))


def test_plots_refuse_swapped_arguments_and_missing_blocks(agg: Any) -> None:
    from qarray.plot import plot_block_parameters, plot_error, plot_grid

    host = _weights()
    quantizer = QuantizedArray(8, host, axis=0).quantizer
    with pytest.raises(TypeError, match=r"quantizer must be .*got ndarray.*plot_block_parameters\(quantizer, values\)"):
        plot_block_parameters(host, quantizer)
    with pytest.raises(TypeError, match=r"quantizer must be .*plot_grid\(values, quantizer\)"):
        plot_grid(quantizer, host)
    with pytest.raises(TypeError, match=r"quantizer must be .*plot_error\(values, quantizer\)"):
        plot_error(quantizer, host)
    with pytest.raises(ValueError, match=r"block must be in \[0, 6\)"):
        plot_grid(host, quantizer, block=6)
    with pytest.raises(TypeError, match="block must be an int"):
        plot_grid(host, quantizer, block=1.0)
    with pytest.raises(ValueError, match="block must be 0 for a per-tensor quantizer"):
        plot_grid(host, QuantizedArray(8, host), block=1)
    with pytest.raises(ValueError, match="parameter grid"):
        plot_error(numpy.zeros((5, 40)), quantizer)
    with pytest.raises(ValueError, match="no parameters"):
        plot_grid(host, qarray.UniformQuantizer(QuantizationOptions(8)))
