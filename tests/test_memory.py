"""Memory bounds of the paths that used to make full-size temporaries.

Peaks are measured with :mod:`tracemalloc`, which sees NumPy's array buffers, so
the bounds are deterministic (no timing, no process-wide RSS). Each bound is a
fraction of the input's bytes that the old code exceeded several times over:

* ``nan_policy="omit"`` quantized a full-size array of zeros (per-channel zero
  points) or built a second full-size integer array with ``where`` to learn and
  write the integer of 0.0;
* QAT calibration (unique values rounded to 2 decimals) made several full-size
  float64 copies of the input and sorted one of them.
"""

from __future__ import annotations

import tracemalloc
from typing import Any, Callable, Tuple

import array_api_compat
import numpy
import pytest

import qarray
from qarray import QuantizedArray
from qarray.backends import ArrayAPIBackend, NumpyBackend, numpy_backend

GENERIC = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))
NUMPY = NumpyBackend()


def _peak(call: Callable[[], Any]) -> Tuple[Any, int]:
    """Run ``call`` and return its result and the peak of memory it allocated on top."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    return result, peak


def _with_nan(size: int) -> numpy.ndarray:
    values = numpy.random.default_rng(3).standard_normal(size)
    values[::11] = numpy.nan
    return values


# -- nan_policy="omit" --------------------------------------------------------------------------


def test_omit_quantizes_without_a_second_full_size_array():
    """Re-quantizing under "omit" allocates the result and small blocks, nothing full-size more."""
    qa = QuantizedArray(8, _with_nan(1 << 20), nan_policy="omit")
    expected = qa.qvalues.copy()
    qa.quant()  # kernels loaded (compiled code and threads) before measuring
    qvalues, peak = _peak(qa.quant)
    numpy.testing.assert_array_equal(qvalues, expected)
    assert peak <= qvalues.nbytes + qa.values.nbytes // 8, (peak, qvalues.nbytes)


def test_omit_construction_holds_two_full_size_arrays_at_most():
    """QuantizedArray under "omit" keeps a copy of the values and the integers, and no more."""
    values = _with_nan(1 << 20)
    QuantizedArray(8, values[:1 << 16], nan_policy="omit")
    qa, peak = _peak(lambda: QuantizedArray(8, values, nan_policy="omit"))
    assert peak <= 2 * values.nbytes + values.nbytes // 8, (peak, values.nbytes)
    assert qa.qvalues[0::11].tolist() == [int(qa.quantizer.quant(numpy.zeros(1))[0])] * qa.qvalues[0::11].size


@pytest.mark.parametrize("values", [
    numpy.array([5.0, numpy.nan, 6.0]),  # the zero point lies outside the clipped range
    numpy.array([-1.0, numpy.nan, 2.0, numpy.inf]),
])
def test_omit_writes_the_integer_quant_gives_for_zero(values):
    qa = QuantizedArray(4, values, nan_policy="omit")
    zero = qa.quantizer.quant(numpy.zeros(1))
    assert qa.qvalues[1] == zero[0]


def test_omit_with_a_per_channel_zero_point_writes_each_channel_integer():
    values = numpy.array([[numpy.nan, 0.5], [1.0, numpy.nan], [numpy.nan, numpy.nan]])
    params = qarray.UniformQuantizationParameters(scale=0.25, zero_point=numpy.array([[-3], [2], [40]]), offset=0)
    stats = qarray.MinMaxQuantizationStats(rmin=-1.0, rmax=1.0)
    qa = QuantizedArray(4, values, params=params, stats=stats, nan_policy="omit")
    zero = qa.quantizer.quant(numpy.zeros((3, 2)))
    numpy.testing.assert_array_equal(qa.qvalues[numpy.isnan(values)], zero[numpy.isnan(values)])
    numpy.testing.assert_array_equal(zero[:, 0], [0, 2, 15])  # clipped to [0, 15]


@pytest.mark.parametrize("shape", [(7,), (3 * numpy_backend.BLOCK_ELEMENTS + 5,), (300, 500)])
def test_numpy_fill_nan_matches_the_generic_path(shape):
    values = numpy.random.default_rng(4).standard_normal(shape)
    values.reshape(-1)[::5] = numpy.nan
    qvalues = numpy.arange(values.size, dtype=numpy.int64).reshape(shape)
    expected = GENERIC.fill_nan(qvalues.copy(), values, numpy.asarray(7))
    result = NUMPY.fill_nan(qvalues.copy(), values, numpy.asarray(7))
    numpy.testing.assert_array_equal(result, expected)
    strided = values[..., ::2]
    numpy.testing.assert_array_equal(
        NUMPY.fill_nan(numpy.zeros(strided.shape, dtype=numpy.int64), strided, numpy.asarray(-2)),
        GENERIC.fill_nan(numpy.zeros(strided.shape, dtype=numpy.int64), strided, numpy.asarray(-2)),
    )


# -- QAT calibration (unique rounded values) ----------------------------------------------------


def test_qat_calibration_never_copies_the_whole_input():
    """calibrate(is_qat=True) works block by block: its peak stays below the input's size."""
    values = numpy.random.default_rng(5).standard_normal(1 << 21, dtype=numpy.float32)
    qarray.calibrate([values[:1 << 16]], n_bits=8, is_qat=True)  # threads and kernels ready
    quantizer, peak = _peak(lambda: qarray.calibrate([values], n_bits=8, is_qat=True))
    assert peak <= values.nbytes, (peak, values.nbytes)
    numpy.testing.assert_array_equal(quantizer.uvalues, GENERIC.unique_rounded(values))


def _bits(array: numpy.ndarray) -> numpy.ndarray:
    return array.view(numpy.int64)


@pytest.mark.parametrize("omit", [False, True])
@pytest.mark.parametrize("case", ["normal", "mostly-unique", "special", "float16", "strided", "empty"])
def test_numpy_unique_rounded_matches_the_generic_path_bit_for_bit(case, omit, monkeypatch):
    """Blocks of 64 values: block uniques, their merges and the chunk merges all run."""
    monkeypatch.setattr(numpy_backend, "BLOCK_ELEMENTS", 64)
    rng = numpy.random.default_rng(6)
    values = {
        "normal": lambda: rng.standard_normal(10_001),
        "mostly-unique": lambda: (rng.standard_normal(5_000) * 1e4).astype(numpy.float32),
        "special": lambda: numpy.array(
            [-0.0, 0.0, -0.001, 0.005, 0.015, numpy.nan, numpy.inf, -numpy.inf, numpy.nan] * 20
        ),
        "float16": lambda: rng.standard_normal((70, 30)).astype(numpy.float16),
        "strided": lambda: rng.standard_normal((70, 300))[:, ::2],
        "empty": lambda: numpy.zeros(0, dtype=numpy.float32),
    }[case]()
    expected = GENERIC.unique_rounded(values, omit_nonfinite=omit)
    result = NUMPY.unique_rounded(values, omit_nonfinite=omit)
    assert result.dtype == expected.dtype == numpy.float64
    numpy.testing.assert_array_equal(_bits(result), _bits(expected))


# -- per-block quant/dequant of any memory layout -----------------------------------------------

LAYOUTS = {
    "C": lambda a: a,
    "Fortran": numpy.asfortranarray,
    "strided": lambda a: numpy.repeat(a, 2, axis=-1)[..., ::2],
    "transposed": lambda a: a.T.copy().T,
}


def _per_block(shape: Tuple[int, ...], **granularity: Any) -> Tuple[numpy.ndarray, Any]:
    values = numpy.random.default_rng(7).standard_normal(shape) * numpy.linspace(0.1, 10, shape[-1])
    return values, QuantizedArray(8, values, is_signed=True, **granularity).quantizer


@pytest.mark.parametrize("layout", ["Fortran", "strided"])
def test_per_block_quant_and_dequant_never_copy_the_whole_input(layout, monkeypatch):
    """A non-C-contiguous input (or out) goes through pieces of PIECE_ELEMENTS, not a full copy."""
    monkeypatch.setattr(numpy_backend, "PIECE_ELEMENTS", 1 << 16, raising=False)
    pieces = 4 * (1 << 16) * 8  # two pieces of values and integers may be alive at once
    values, quantizer = _per_block((1024, 2048), block_size=128)
    shaped = LAYOUTS[layout](values)
    expected = quantizer.quant(values)
    quantizer.quant(shaped)  # kernels loaded before measuring
    qvalues, peak = _peak(lambda: quantizer.quant(shaped))
    numpy.testing.assert_array_equal(qvalues, expected)
    assert peak <= qvalues.nbytes + pieces + values.nbytes // 10, (layout, peak, values.nbytes)
    integers = LAYOUTS[layout](expected)
    quantizer.dequant(integers)  # kernels compiled before measuring
    restored, peak = _peak(lambda: quantizer.dequant(integers))
    numpy.testing.assert_array_equal(restored, quantizer.dequant(expected))
    assert peak <= restored.nbytes + pieces + values.nbytes // 10, (layout, peak, values.nbytes)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize(
    "shape, granularity",
    [
        ((300, 70), {"block_size": 16}),  # the last group of every row is short
        ((6, 50, 41), {"block_size": (2, 5, 8)}),
        ((6, 50, 41), {"axis": 1}),
        ((5000,), {"block_size": 96}),
        ((40, 3000), {"axis": 0}),  # one block longer than a piece along the last axis
    ],
)
@pytest.mark.parametrize("piece", [64, 1000])
def test_pieces_of_any_layout_give_the_integers_of_one_call(layout, shape, granularity, piece, monkeypatch):
    """Pieces cut anywhere (rows, groups, the axes before the last two) change no integer and no value,
    on the compiled kernels and the NumPy path, into a fresh result or a non-contiguous out."""
    values, quantizer = _per_block(shape, **granularity)
    expected = quantizer.quant(values)
    restored = quantizer.dequant(expected)
    monkeypatch.setattr(numpy_backend, "PIECE_ELEMENTS", piece)
    shaped = LAYOUTS[layout](values)
    numpy.testing.assert_array_equal(quantizer.quant(shaped), expected)
    numpy.testing.assert_array_equal(quantizer.dequant(LAYOUTS[layout](expected)), restored)
    out = LAYOUTS["Fortran"](numpy.zeros(shape, dtype=numpy.int64))
    numpy.testing.assert_array_equal(quantizer.quant(shaped, out=out), expected)
    floats = LAYOUTS["Fortran"](numpy.zeros(shape))
    numpy.testing.assert_array_equal(quantizer.dequant(LAYOUTS[layout](expected), out=floats), restored)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("nan_policy", ["raise", "omit"])
@pytest.mark.parametrize("granularity", [{"block_size": 128}, {"axis": 0}, {"block_size": (4, 256)}])
def test_per_block_calibration_needs_a_tenth_of_the_input(layout, nan_policy, granularity):
    """Per-block min/max of any layout reads the values where they lie: its peak is the grids and
    bounded buffers, at most a tenth of the input (it was twice the input, 3.3x under "omit")."""
    values = numpy.random.default_rng(5).standard_normal((1024, 2048))
    if nan_policy == "omit":
        values[::7, ::13] = numpy.nan
    shaped = LAYOUTS[layout](values)
    stats = qarray.MinMaxQuantizationStats()
    stats.compute_quantization_stats(shaped, nan_policy=nan_policy, **granularity)  # kernels loaded
    _, peak = _peak(lambda: stats.compute_quantization_stats(shaped, nan_policy=nan_policy, **granularity))
    assert peak <= values.nbytes // 10, (peak, values.nbytes)
