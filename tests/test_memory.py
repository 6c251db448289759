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
