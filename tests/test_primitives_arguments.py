"""The public primitives and histogram functions check their arguments as the classes do.

Each bad input below once ended in ``IndexError``, ``KeyError``, ``AttributeError``,
``OverflowError``, a NumPy-internal message, or a silently wrong grid; every one must
now be a ``TypeError`` or ``ValueError`` whose message names the argument.
"""

from __future__ import annotations

from typing import Any

import numpy
import pytest
from refusals import Case, assert_refused

from qarray import QuantizationOptions
from qarray import primitives as P
from qarray.calibration import histogram as H
from qarray.core.dyadic import Histogram

X = numpy.linspace(-1.0, 1.0, 12).reshape(3, 4)
Q = numpy.arange(12, dtype=numpy.int64).reshape(3, 4)
OPTIONS = QuantizationOptions(8)
HIST = H.histogram(numpy.linspace(-1.0, 1.0, 100))
COUNTS = HIST.counts


def _grid_spec() -> Any:
    return P.quant_spec(numpy.full((3, 1), 0.1), 128, 0, OPTIONS, "uint8", like=X, extent=(1, 4))


def _histogram(**changes: Any) -> Histogram:
    fields = {"k": HIST.k, "j_lo": HIST.j_lo, "counts": COUNTS, "vmin": HIST.vmin, "vmax": HIST.vmax}
    fields.update(changes)
    return Histogram(max_bins=HIST.max_bins, **fields)


CASES = [
    # block geometry
    Case("block_extent-negative-length", lambda: P.block_extent((3, -4), axis=0), ValueError, "shape"),
    Case("block_extent-float-length", lambda: P.block_extent((3.5, 4), axis=0), TypeError, "shape"),
    Case("block_extent-shape-none", lambda: P.block_extent(None, axis=0), TypeError, "shape"),
    Case("block_minmax-extent-none", lambda: P.block_minmax(X, None), TypeError, "extent"),
    Case("block_minmax-extent-int", lambda: P.block_minmax(X, 4), TypeError, "extent"),
    Case("block_minmax-extent-short", lambda: P.block_minmax(X, (1,)), ValueError, "extent"),
    Case("block_minmax-complex", lambda: P.block_minmax(X.astype(complex), (1, 4)), TypeError, "values"),
    Case("block_minmax-bool", lambda: P.block_minmax(X > 0, (1, 4)), TypeError, "values"),
    Case("block_minmax-omit-str", lambda: P.block_minmax(X, (1, 4), omit_nonfinite="yes"), TypeError, "omit_nonfinite"),
    Case("minmax-empty", lambda: P.minmax(numpy.zeros(0)), ValueError, "values"),
    Case("minmax-complex", lambda: P.minmax(numpy.ones(3, dtype=complex)), TypeError, "values"),
    # parameters from ranges
    Case("choose_parameters-options-none", lambda: P.choose_parameters(0.0, 1.0, None), TypeError, "options"),
    Case("choose_parameters-options-str", lambda: P.choose_parameters(0.0, 1.0, "8"), TypeError, "options"),
    Case(
        "choose_parameters-grids-of-two-shapes",
        lambda: P.choose_parameters(numpy.zeros((3, 1)), numpy.ones((1, 3)), OPTIONS),
        ValueError,
        "rmin and rmax",
    ),
    Case(
        "choose_block_parameters-number-and-grid",
        lambda: P.choose_block_parameters(numpy.zeros((3, 1)), 1.0, OPTIONS),
        ValueError,
        "rmin and rmax",
    ),
    # specs
    Case("quant_spec-options-none", lambda: P.quant_spec(0.5, 0, 0, None, "uint8", like=X), TypeError, "options"),
    Case("quant_spec-out_dtype-float", lambda: P.quant_spec(0.5, 0, 0, OPTIONS, "float32", like=X), TypeError, "out_dtype"),
    Case("quant_spec-out_dtype-class", lambda: P.quant_spec(0.5, 0, 0, OPTIONS, numpy.uint8, like=X), TypeError, "out_dtype"),
    Case("quant_spec-scale-zero", lambda: P.quant_spec(0.0, 0, 0, OPTIONS, "uint8", like=X), ValueError, "scale"),
    Case("quant_spec-scale-nan", lambda: P.quant_spec(float("nan"), 0, 0, OPTIONS, "uint8", like=X), ValueError, "scale"),
    Case("quant_spec-scale-str", lambda: P.quant_spec("a", 0, 0, OPTIONS, "uint8", like=X), TypeError, "scale"),
    Case("quant_spec-zero_point-huge", lambda: P.quant_spec(0.5, 2**70, 0, OPTIONS, "int64", like=X), ValueError, "zero_point"),
    Case("quant_spec-zero_point-fraction", lambda: P.quant_spec(0.5, 0.5, 0, OPTIONS, "uint8", like=X), ValueError, "zero_point"),
    Case("quant_spec-offset-str", lambda: P.quant_spec(0.5, 0, "a", OPTIONS, "uint8", like=X), TypeError, "offset"),
    Case(
        "quant_spec-scale-grid-without-extent",
        lambda: P.quant_spec(numpy.ones((3, 1)), 0, 0, OPTIONS, "uint8", like=X),
        ValueError,
        "scale",
    ),
    Case(
        "quant_spec-offset-grid-without-extent",
        lambda: P.quant_spec(0.5, 0, numpy.zeros((3, 1), dtype=numpy.int64), OPTIONS, "uint8", like=X),
        ValueError,
        "offset",
    ),
    Case("quant_spec-no_clipping-str", lambda: P.quant_spec(0.5, 0, 0, OPTIONS, "uint8", like=X, no_clipping="no"), TypeError, "no_clipping"),
    Case("dequant_spec-scale-str", lambda: P.dequant_spec("a", 0, like=Q), TypeError, "scale"),
    Case("dequant_spec-scale-grid-without-extent", lambda: P.dequant_spec(numpy.ones((3, 1)), 0, like=Q), ValueError, "scale"),
    Case("dequant_spec-zero_point-fraction", lambda: P.dequant_spec(0.5, 0.5, like=Q), ValueError, "zero_point"),
    # applying a spec
    Case("quantize-spec-none", lambda: P.quantize(X, None), TypeError, "spec"),
    Case("quantize-spec-str", lambda: P.quantize(X, "spec"), TypeError, "spec"),
    Case("quantize-integer-values", lambda: P.quantize(Q, P.quant_spec(0.5, 0, 0, OPTIONS, "uint8", like=Q)), TypeError, "values"),
    Case("quantize-values-of-another-grid", lambda: P.quantize(numpy.zeros((2, 4)), _grid_spec()), ValueError, "values"),
    Case(
        "quantize-check_finite-str",
        lambda: P.quantize(X, P.quant_spec(0.5, 0, 0, OPTIONS, "uint8", like=X), check_finite="no"),
        TypeError,
        "check_finite",
    ),
    Case("dequantize-spec-none", lambda: P.dequantize(Q, None), TypeError, "spec"),
    Case("dequantize-dtype-int8", lambda: P.dequantize(Q, P.dequant_spec(0.5, 0, like=Q), dtype="int8"), TypeError, "dtype"),
    Case("dequantize-float-qvalues", lambda: P.dequantize(X, P.dequant_spec(0.5, 0, like=X)), TypeError, "qvalues"),
    Case(
        "dequantize-qvalues-of-another-grid",
        lambda: P.dequantize(numpy.zeros((2, 4), dtype=numpy.int64), _grid_spec()),
        ValueError,
        "qvalues",
    ),
    # histograms
    Case("bin_counts-integer-values", lambda: H.bin_counts(numpy.arange(3), 0, 0, 4), TypeError, "values"),
    Case("bin_counts-j_lo-beyond-2**53", lambda: H.bin_counts(numpy.ones(3), 0, 2**60, 4), ValueError, "j_lo"),
    Case("device_histogram-max_bins-str", lambda: H.device_histogram(numpy.ones(3), "x"), TypeError, "max_bins"),
    Case("bin_floor-k-huge", lambda: H.bin_floor(1.0, 2**70), ValueError, "k"),
    Case("bin_floor-value-inf", lambda: H.bin_floor(float("inf"), 0), ValueError, "value"),
    Case("bin_floor-value-too-fine", lambda: H.bin_floor(1e300, -1074), ValueError, "value"),
    Case("choose_k-str", lambda: H.choose_k("a", 1.0), TypeError, "vmin"),
    Case("coarsen-empty-counts", lambda: H.coarsen(_histogram(counts=COUNTS[:0]), 1), ValueError, "hist.counts"),
    Case("merge-empty-counts", lambda: H.merge(_histogram(counts=COUNTS[:0]), HIST), ValueError, "hist.counts"),
    Case("percentile_range-empty-counts", lambda: H.percentile_range(_histogram(counts=COUNTS[:0])), ValueError, "hist.counts"),
    Case("mse_range-empty-counts", lambda: H.mse_range(_histogram(counts=COUNTS[:0]), 8), ValueError, "hist.counts"),
    Case("entropy_range-empty-counts", lambda: H.entropy_range(_histogram(counts=COUNTS[:0]), 8), ValueError, "hist.counts"),
    Case("percentile_range-negative-count", lambda: H.percentile_range(_histogram(counts=COUNTS * -1)), ValueError, "hist.counts"),
    Case("percentile_range-float-counts", lambda: H.percentile_range(_histogram(counts=COUNTS * 1.0)), TypeError, "hist.counts"),
    Case("percentile_range-j_lo-off", lambda: H.percentile_range(_histogram(j_lo=HIST.j_lo + 1)), ValueError, "hist.j_lo"),
    Case("percentile_range-vmin-above-vmax", lambda: H.percentile_range(_histogram(vmin=HIST.vmax, vmax=HIST.vmin)), ValueError, "hist.vmin"),
    Case("percentile_range-vmin-nan", lambda: H.percentile_range(_histogram(vmin=numpy.float64("nan"))), ValueError, "hist.vmin"),
    Case("percentile_range-k-huge", lambda: H.percentile_range(_histogram(k=2**70)), ValueError, "hist.k"),
    Case("quantization_mse-rmin-above-rmax", lambda: H.quantization_mse(HIST, 1.0, -1.0), ValueError, "rmin"),
    Case("mse_range-percentiles-none", lambda: H.mse_range(HIST, 8, percentiles=None), TypeError, "percentiles"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_argument_is_refused_naming_it(case: Case) -> None:
    assert_refused(case)


def test_the_valid_neighbours_of_the_bad_inputs_still_work() -> None:
    """What the checks must let through: a number shared by every block, integer values
    for the min/max, an empty axis, a negative scale (a single negative value), and
    options given as any object with the fields."""
    from types import SimpleNamespace

    extent, grid = P.block_extent([3, numpy.int64(4)], axis=0)
    assert (extent, grid) == ((1, 4), (3, 1))
    low, high = P.block_minmax(Q, (1, 4))
    numpy.testing.assert_array_equal(low.ravel(), [0, 4, 8])
    assert P.block_minmax(numpy.zeros((0, 4)), (1, 4))[0].shape == (0, 1)
    spec = P.quant_spec(-0.5, 0, 0, OPTIONS, "uint8", like=X)
    assert spec.scale == -0.5
    fields = SimpleNamespace(n_bits=8, is_signed=False, is_symmetric=False, is_qat=False, is_precomputed_qat=False)
    assert P.choose_parameters(-1.0, 1.0, fields) == P.choose_parameters(-1.0, 1.0, OPTIONS)
    qvalues, _ = P.quantize(X, _grid_spec())
    back = P.dequantize(qvalues.astype(numpy.int64), P.dequant_spec(numpy.full((3, 1), 0.1), 128, like=Q, extent=(1, 4)))
    numpy.testing.assert_allclose(back, X, atol=0.05)
    assert H.percentile_range(HIST, 99.0) == H.percentile_range(_histogram(), 99.0)


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"n_bits": 2**34}, ValueError, r"entropy_range\.n_bits must be an int between 1 and 53"),
        ({"n_bits": 54}, ValueError, r"entropy_range\.n_bits must be an int between 1 and 53"),
        ({"n_bits": 8.0}, TypeError, r"entropy_range\.n_bits must be an int"),
        ({"n_bits": 8, "is_symmetric": 1}, TypeError, r"entropy_range\.is_symmetric must be a bool"),
        ({"n_bits": 1, "is_symmetric": True}, ValueError, "symmetric quantization needs n_bits >= 2"),
    ],
)
def test_entropy_range_checks_its_options_as_quantization_options_do(arguments, error, message):
    """entropy_range was reachable with any n_bits (2**34 exhausted memory) and any is_symmetric."""
    hist = H.histogram(numpy.linspace(-1.0, 1.0, 1000))
    with pytest.raises(error, match=message):
        H.entropy_range(hist, **arguments)
