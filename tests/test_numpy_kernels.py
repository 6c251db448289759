"""The NumPy backend's kernels: blocked NumPy and compiled Numba paths against the generic path.

The generic :class:`ArrayAPIBackend` over ``array_api_compat.numpy`` is the
reference; the blocked NumPy kernels and (when Numba is installed) the compiled
ones must give the very same bits on every size (across block and thread-chunk
boundaries), layout, input dtype, output dtype, clipping mode and output buffer,
and the same problem counts. Numba tests are skipped with the reason when Numba
is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import threading
from typing import Any, Optional, Tuple

import array_api_compat
import numpy
import pytest

from qarray import QuantizationOptions, UniformQuantizationParameters, UniformQuantizer
from qarray.backends import ArrayAPIBackend, NumpyBackend, _parallel, numba_kernels
from qarray.backends.numpy_backend import BLOCK_ELEMENTS, MINMAX_BLOCK_ELEMENTS, _blocks

from bits import assert_same_bits
from kernel_calls import dequantize, quantize

HAS_NUMBA = importlib.util.find_spec("numba") is not None
NO_NUMBA_REASON = "numba is not installed (pip install 'qarray[fast]')"

GENERIC = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))
BACKEND = NumpyBackend()

INTEGER_DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
FLOAT_DTYPES = ["float32", "float64"]
SMALL_CHUNK = 1 << 10  # thread chunks this small make several chunks of modest arrays
SIZES = [0, 1, 7, BLOCK_ELEMENTS - 1, BLOCK_ELEMENTS + 1, 2 * BLOCK_ELEMENTS + 3]


# -- the two paths ----------------------------------------------------------------------------


@pytest.fixture(params=["blocked", "numba"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each NumPy-backend path in turn: blocked NumPy, and Numba for every size.

    Chunks are made small and three threads are used, so that modest arrays take the
    threaded path with several chunks (even on a one-core machine).
    """
    monkeypatch.setattr(_parallel, "MIN_CHUNK", SMALL_CHUNK)
    monkeypatch.setattr(_parallel, "CHUNK_ALIGN", 64)
    monkeypatch.setattr(_parallel, "thread_count", lambda: 3)
    if request.param == "blocked":
        monkeypatch.setenv(numba_kernels.DISABLE_ENV, "1")
        return "blocked"
    if not HAS_NUMBA:
        pytest.skip(NO_NUMBA_REASON)
    monkeypatch.delenv(numba_kernels.DISABLE_ENV, raising=False)
    monkeypatch.setattr(numba_kernels, "MIN_ELEMENTS", 0)
    return "numba"


@pytest.fixture
def numba_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Numba enabled (tests that call the compiled kernels directly)."""
    if not HAS_NUMBA:
        pytest.skip(NO_NUMBA_REASON)
    monkeypatch.delenv(numba_kernels.DISABLE_ENV, raising=False)


# -- data and comparisons -----------------------------------------------------------------------


def _range_of(dtype: str) -> Tuple[int, int]:
    """A clipping range inside ``dtype`` whose bounds are exact in float64."""
    info = numpy.iinfo(dtype)
    return max(int(info.min), -(2**53)), min(int(info.max), 2**53)


def _values(size: int, dtype: str, low: float, high: float, scale: float, seed: int = 0) -> numpy.ndarray:
    """Values whose quotients spread 20% beyond ``[low, high]``, with exact .5 ties mixed in."""
    rng = numpy.random.default_rng(seed + size)
    span = high - low
    quotients = rng.uniform(low - 0.2 * span, high + 0.2 * span, size)
    quotients[::4] = numpy.floor(quotients[::4]) + 0.5  # ties (exact while |q| < 2**52)
    return (quotients * scale).astype(dtype)


def _assert_identical(result: Any, expected: Any) -> None:
    assert_same_bits(result, expected)


def _assert_problems(result: Optional[Any], expected: Optional[Any]) -> None:
    assert (result is None) == (expected is None)
    if expected is not None:
        numpy.testing.assert_array_equal(numpy.asarray(result), numpy.asarray(expected))


def _both(values: numpy.ndarray, *args: Any) -> Tuple[Any, Any, Any, Any]:
    with numpy.errstate(invalid="ignore", over="ignore"):
        expected, expected_problems = quantize(GENERIC, values, *args)
        result, problems = quantize(BACKEND, values, *args)
    return result, problems, expected, expected_problems


# -- quantize -----------------------------------------------------------------------------------


@pytest.mark.parametrize("out_dtype", INTEGER_DTYPES)
@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
def test_quantize_clipped_matches_generic_for_every_dtype(path, in_dtype, out_dtype):
    low, high = _range_of(out_dtype)
    scale = 0.37 if high < 2**20 else 2.0**-3
    values = _values(2 * BLOCK_ELEMENTS + 3, in_dtype, low, high, scale)
    result, problems, expected, expected_problems = _both(values, scale, 3.0, (low, high), out_dtype, True, None)
    _assert_identical(result, expected)
    _assert_problems(problems, expected_problems)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    "setting",
    ["uint8", "narrow-int8", "no-check"],
)
def test_quantize_matches_generic_across_block_boundaries(path, setting, in_dtype, size):
    clip, out_dtype, check_finite = {
        "uint8": ((0, 255), "uint8", True),
        "narrow-int8": ((-127, 127), "int8", True),
        "no-check": ((0, 15), "int64", False),
    }[setting]
    values = _values(size, in_dtype, clip[0], clip[1], 0.25)
    result, problems, expected, expected_problems = _both(values, 0.25, 1.0, clip, out_dtype, check_finite, None)
    _assert_identical(result, expected)
    _assert_problems(problems, expected_problems)


@pytest.mark.parametrize("size", [7, 2 * BLOCK_ELEMENTS + 3])
@pytest.mark.parametrize("out_dtype", ["int8", "uint16", "int32", "int64", "uint64"])
def test_quantize_without_clipping_counts_values_outside_the_dtype(path, out_dtype, size):
    low, high = _range_of(out_dtype)
    fit = (float(low), float(high))
    values = _values(size, "float64", low, high, 1.0)
    result, problems, expected, expected_problems = _both(values, 1.0, 0.0, None, out_dtype, False, fit)
    _assert_problems(problems, expected_problems)
    assert int(problems[1]) > 0
    inside = (numpy.rint(values) >= low) & (numpy.rint(values) <= high)
    _assert_identical(result[inside], expected[inside])


@pytest.mark.parametrize("out_dtype", ["int64", "uint64"])
def test_quantize_casts_64_bit_extremes_like_generic(path, out_dtype):
    """Rounded values near 2**63 and 2**64, far beyond 2**53, cast exactly as NumPy casts them."""
    info = numpy.iinfo(out_dtype)
    fit = (float(info.min), float(numpy.nextafter(float(info.max) + 1.0, 0.0)))
    rng = numpy.random.default_rng(11)
    values = numpy.concatenate([rng.uniform(fit[0], fit[1], 50_000), [fit[0], fit[1], 2.0**62 + 2048.0]])
    result, problems, expected, expected_problems = _both(values, 1.0, 0.0, None, out_dtype, True, fit)
    _assert_identical(result, expected)
    assert problems.tolist() == [0, 0]


def test_quantize_without_clipping_or_fit_counts_nothing_outside(path):
    values = _values(BLOCK_ELEMENTS + 1, "float64", 0, 100, 1.0)
    result, problems, expected, expected_problems = _both(values, 1.0, 0.0, None, "int64", True, None)
    _assert_identical(result, expected)
    _assert_problems(problems, expected_problems)
    assert problems.tolist() == [0, 0]


@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("size", [5, 2 * BLOCK_ELEMENTS + 3])
def test_quantize_counts_non_finite_values_like_generic(path, in_dtype, size):
    values = _values(size, in_dtype, 0, 255, 0.5)
    positions = sorted({0, size // 3, size // 2, size - 1, min(size - 1, BLOCK_ELEMENTS)})
    values[positions[:4]] = [numpy.nan, numpy.inf, -numpy.inf, numpy.nan][: len(positions[:4])]
    values[positions[-1]] = numpy.nan
    nan = numpy.isnan(values)
    for clip, fit in (((0, 255), None), (None, (-128.0, 127.0))):
        result, problems, expected, expected_problems = _both(values, 0.5, 2.0, clip, "int64", True, fit)
        _assert_problems(problems, expected_problems)
        assert int(problems[0]) == int(numpy.count_nonzero(~numpy.isfinite(values)))
        if clip is not None:  # ±Inf saturate to the clipping range on every path; NaN is unspecified
            _assert_identical(result[~nan], expected[~nan])


def test_nan_counts_as_outside_the_fit_range(path):
    values = numpy.zeros(BLOCK_ELEMENTS + 1)
    values[[3, BLOCK_ELEMENTS]] = numpy.nan
    _, problems, _, expected_problems = _both(values, 1.0, 0.0, None, "int64", False, (-10.0, 10.0))
    _assert_problems(problems, expected_problems)
    assert problems.tolist() == [0, 2]


@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
def test_ties_round_half_to_even(path, in_dtype):
    halves = numpy.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -126.5, -127.5])
    values = numpy.tile(halves, 4000).astype(in_dtype)  # large enough for the compiled path
    result, _, expected, _ = _both(values, 1.0, 0.0, (-1000, 1000), "int16", True, None)
    _assert_identical(result, expected)
    assert result[:10].tolist() == [0, 2, 2, 0, -2, -2, 126, 128, -126, -128]


def test_ties_round_half_to_even_up_to_two_to_the_52(path):
    """Exact .5 ties of every magnitude below 2**52, where float64 still holds them."""
    exponents = numpy.arange(0, 52)
    whole = numpy.floor(2.0**exponents) + numpy.arange(52) % 2  # odd and even neighbours
    ties = numpy.concatenate([whole + 0.5, -(whole + 0.5), whole - 0.5])
    values = numpy.tile(ties, 300)
    result, problems, expected, _ = _both(values, 1.0, 0.0, None, "int64", True, (-(2.0**62), 2.0**62))
    _assert_identical(result, expected)
    assert problems.tolist() == [0, 0]
    _assert_identical(result, numpy.rint(values).astype(numpy.int64))


def test_quantize_divides_rather_than_multiplies_by_the_inverse(path):
    """x / scale and x * (1 / scale) differ for some x: the result must follow the division."""
    scale = 0.1
    rng = numpy.random.default_rng(1)
    values = rng.uniform(-1e6, 1e6, 200_000)
    quotients = values / scale
    products = values * (1.0 / scale)
    differ = quotients != products
    assert differ.any()
    result, _, expected, _ = _both(values, scale, 0.0, None, "int64", False, (-(2.0**62), 2.0**62))
    _assert_identical(result, expected)
    _assert_identical(result, numpy.rint(quotients).astype(numpy.int64))


# -- layouts, shapes, buffers ------------------------------------------------------------------

def _read_only(array: numpy.ndarray) -> numpy.ndarray:
    array.flags.writeable = False
    return array


LAYOUTS = {
    "strided": lambda: _values(3 * BLOCK_ELEMENTS + 10, "float64", 0, 255, 0.25)[::3],
    "reversed": lambda: _values(BLOCK_ELEMENTS + 9, "float32", 0, 255, 0.25)[::-1],
    "transposed": lambda: _values(600, "float32", 0, 255, 0.25).reshape(20, 30).T,
    "fortran-large": lambda: numpy.asfortranarray(_values(300 * 500, "float64", 0, 255, 0.25).reshape(300, 500)),
    "sliced-3d": lambda: _values(40 * 50 * 70, "float64", 0, 255, 0.25).reshape(40, 50, 70)[:, 1:, ::2],
    "c-3d": lambda: _values(40 * 50 * 70, "float32", 0, 255, 0.25).reshape(40, 50, 70),
    "read-only": lambda: _read_only(_values(BLOCK_ELEMENTS + 9, "float32", 0, 255, 0.25)),
    "zero-d": lambda: numpy.array(1.25),
    "zero-d-float32": lambda: numpy.array(-7.75, dtype=numpy.float32),
    "empty": lambda: numpy.zeros(0),
    "empty-2d": lambda: numpy.zeros((3, 0), dtype=numpy.float32),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_quantize_matches_generic_on_any_layout(path, layout):
    values = LAYOUTS[layout]()
    result, problems, expected, expected_problems = _both(values, 0.25, 3.0, (0, 255), "uint8", True, None)
    _assert_identical(result, expected)
    _assert_problems(problems, expected_problems)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_dequantize_matches_generic_on_any_layout(path, layout):
    qvalues = numpy.rint(LAYOUTS[layout]()).astype(numpy.int32)
    for dtype in FLOAT_DTYPES:
        _assert_identical(
            dequantize(BACKEND, qvalues, 0.37, 3.0, dtype), dequantize(GENERIC, qvalues, 0.37, 3.0, dtype)
        )


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_copy_is_a_private_c_contiguous_copy(path, layout):
    values = LAYOUTS[layout]()
    copied = BACKEND.copy(values)
    _assert_identical(copied, numpy.array(values, order="C"))
    assert copied.flags.c_contiguous and copied.flags.writeable
    assert not numpy.shares_memory(copied, values)


@pytest.mark.parametrize("shape", [(10,), (7, 3), (5, 1, 9), (4, 6, 5, 3), (1,), ()])
@pytest.mark.parametrize("block", [1, 2, 4, 5, 16, 29, 1000])
def test_blocks_cover_the_array_in_c_order(shape, block):
    array = numpy.arange(int(numpy.prod(shape)), dtype=numpy.int64).reshape(shape)
    strided = numpy.asfortranarray(array)
    pieces = []
    for index, count in _blocks(strided, block):
        piece = strided[index]
        assert piece.size == count <= block
        assert numpy.shares_memory(piece, strided) or piece.size == 0
        pieces.append(piece.reshape(-1))
    covered = numpy.concatenate(pieces) if pieces else numpy.zeros(0, numpy.int64)
    _assert_identical(covered, array.reshape(-1))


def test_quantize_writes_into_a_given_buffer(path):
    values = _values(2 * BLOCK_ELEMENTS + 3, "float32", 0, 255, 0.25)
    expected, _ = quantize(GENERIC, values, 0.25, 3.0, (0, 255), "uint8", True, None)
    out = numpy.empty(values.shape, dtype=numpy.uint8)
    result, _ = quantize(BACKEND, values, 0.25, 3.0, (0, 255), "uint8", True, None, out)
    assert result is out
    _assert_identical(out, expected)


def test_quantize_writes_into_a_strided_buffer(path):
    values = _values(BLOCK_ELEMENTS + 3, "float64", 0, 255, 0.25)
    expected, _ = quantize(GENERIC, values, 0.25, 3.0, (0, 255), "int16", True, None)
    storage = numpy.zeros(2 * values.size, dtype=numpy.int16)
    result, _ = quantize(BACKEND, values, 0.25, 3.0, (0, 255), "int16", True, None, storage[::2])
    _assert_identical(storage[::2], expected)
    assert not storage[1::2].any()
    assert numpy.shares_memory(result, storage)


def test_quantize_into_the_memory_of_its_own_input(path):
    """An out buffer that overlaps the input still gets the right integers."""
    values = _values(2 * BLOCK_ELEMENTS + 3, "float64", -100, 100, 0.25)
    expected, _ = quantize(GENERIC, values, 0.25, 0.0, (-128, 127), "int8", True, None)
    out = values.view(numpy.int8)[: values.size]
    quantize(BACKEND, values, 0.25, 0.0, (-128, 127), "int8", True, None, out)
    _assert_identical(out, expected)


@pytest.mark.parametrize(
    "out, error",
    [
        (numpy.empty(9, dtype=numpy.uint8), ValueError),  # wrong shape
        (numpy.empty((2, 5), dtype=numpy.uint8), ValueError),  # wrong shape, same size
        (numpy.empty(10, dtype=numpy.int64), ValueError),  # wrong dtype
        (numpy.empty(10, dtype=numpy.uint8).view(">u2")[:0], ValueError),  # wrong everything
        ([0] * 10, TypeError),  # not an array
    ],
    ids=["shape", "same-size-shape", "dtype", "both", "list"],
)
def test_quantize_refuses_an_unfit_buffer(out, error):
    with pytest.raises(error, match="out"):
        quantize(BACKEND, numpy.zeros(10), 1.0, 0.0, (0, 255), "uint8", True, None, out)


def test_quantize_refuses_a_read_only_buffer():
    out = numpy.empty(10, dtype=numpy.uint8)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        quantize(BACKEND, numpy.zeros(10), 1.0, 0.0, (0, 255), "uint8", True, None, out)


@pytest.mark.parametrize("out", [numpy.empty(9), numpy.empty(10, dtype=numpy.float16)], ids=["shape", "dtype"])
def test_dequantize_refuses_an_unfit_buffer(out):
    with pytest.raises(ValueError, match="out"):
        dequantize(BACKEND, numpy.zeros(10, dtype=numpy.int64), 1.0, 0.0, "float64", out)


def test_quantizer_quant_and_dequant_write_into_out(path):
    quantizer = UniformQuantizer(QuantizationOptions(8), params=UniformQuantizationParameters(0.02, 128, 0))
    values = _values(BLOCK_ELEMENTS + 5, "float32", -128, 127, 0.02)
    out = numpy.empty(values.shape, dtype=numpy.uint8)
    assert quantizer.quant(values, dtype=numpy.uint8, out=out) is out
    _assert_identical(out, quantizer.quant(values, dtype=numpy.uint8))
    restored = numpy.empty(values.shape, dtype=numpy.float32)
    assert quantizer.dequant(out, dtype=numpy.float32, out=restored) is restored
    _assert_identical(restored, dequantize(GENERIC, out, 0.02, 128.0, "float32"))
    with pytest.raises(ValueError, match="out"):
        quantizer.quant(values, dtype=numpy.uint8, out=numpy.empty(values.shape, dtype=numpy.int64))
    with pytest.raises(ValueError, match="out"):
        quantizer.dequant(out, out=numpy.empty(3))


# -- dequantize ---------------------------------------------------------------------------------


@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("in_dtype", INTEGER_DTYPES)
def test_dequantize_matches_generic_for_every_dtype(path, in_dtype, out_dtype):
    info = numpy.iinfo(in_dtype)
    rng = numpy.random.default_rng(3)
    qvalues = rng.integers(info.min, info.max, size=2 * BLOCK_ELEMENTS + 3, dtype=in_dtype, endpoint=True)
    qvalues[:4] = [info.min, info.max, 0, 1]  # the extremes (beyond 2**53 for 64-bit: rounded)
    scale = float(numpy.nextafter(0.1, 1.0))
    for zero_point in (0.0, 17.0, -3.0):
        _assert_identical(
            dequantize(BACKEND, qvalues, scale, zero_point, out_dtype),
            dequantize(GENERIC, qvalues, scale, zero_point, out_dtype),
        )


@pytest.mark.parametrize("size", SIZES)
def test_dequantize_matches_generic_across_block_boundaries(path, size):
    qvalues = numpy.arange(size, dtype=numpy.int64) - size // 2
    for out_dtype in FLOAT_DTYPES:
        out = numpy.empty(size, dtype=out_dtype)
        assert dequantize(BACKEND, qvalues, 0.37, 3.0, out_dtype, out) is out
        _assert_identical(out, dequantize(GENERIC, qvalues, 0.37, 3.0, out_dtype))


# -- min and max --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, BLOCK_ELEMENTS + 1, MINMAX_BLOCK_ELEMENTS + 5])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_minmax_matches_numpy(path, dtype, size):
    values = _values(size, dtype, -1000, 1000, 0.01, seed=5)
    low, high = BACKEND.minmax(values)
    _assert_identical(low, numpy.asarray(numpy.min(values)))
    _assert_identical(high, numpy.asarray(numpy.max(values)))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    "special",
    [[numpy.inf], [-numpy.inf], [numpy.inf, -numpy.inf], [-0.0], [1e-40], [-1e-320]],
    ids=["inf", "-inf", "both-inf", "negative-zero", "subnormal", "negative-subnormal"],
)
def test_minmax_of_special_values_matches_numpy(path, dtype, special):
    values = numpy.full(BLOCK_ELEMENTS + 1, 3.0, dtype=dtype)
    if special == [-0.0]:
        values[:] = -0.0  # one sign of zero only: mixed signs may give either (NumPy too)
    values[[17, BLOCK_ELEMENTS][: len(special)]] = special
    low, high = BACKEND.minmax(values)
    _assert_identical(low, numpy.asarray(numpy.min(values)))
    _assert_identical(high, numpy.asarray(numpy.max(values)))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("position", [0, 100, BLOCK_ELEMENTS, MINMAX_BLOCK_ELEMENTS + 4])
@pytest.mark.parametrize("nan", [numpy.nan, -numpy.nan], ids=["nan", "negative-nan"])
def test_minmax_propagates_any_nan(path, dtype, position, nan):
    values = _values(MINMAX_BLOCK_ELEMENTS + 5, dtype, -10, 10, 1.0)
    values[position] = nan
    values[1] = numpy.inf
    low, high = BACKEND.minmax(values)
    assert numpy.isnan(low) and numpy.isnan(high)
    assert low.dtype == high.dtype == values.dtype


def test_minmax_omitting_non_finite_values_matches_generic(path):
    values = _values(BLOCK_ELEMENTS + 7, "float32", -10, 10, 1.0)
    values[[0, 5, BLOCK_ELEMENTS]] = [numpy.nan, numpy.inf, -numpy.inf]
    for got, want in zip(BACKEND.minmax(values, omit_nonfinite=True), GENERIC.minmax(values, omit_nonfinite=True)):
        _assert_identical(got, numpy.asarray(want))
    nothing = numpy.array([numpy.nan, numpy.inf])
    low, high = BACKEND.minmax(nothing, omit_nonfinite=True)
    assert (float(low), float(high)) == (numpy.inf, -numpy.inf)


@pytest.mark.parametrize("layout", ["strided", "fortran-large", "sliced-3d", "zero-d"])
def test_minmax_on_any_layout(path, layout):
    values = LAYOUTS[layout]()
    low, high = BACKEND.minmax(values)
    _assert_identical(low, numpy.asarray(numpy.min(values)))
    _assert_identical(high, numpy.asarray(numpy.max(values)))


def test_minmax_of_nothing_is_refused(path):
    with pytest.raises(ValueError):
        BACKEND.minmax(numpy.zeros(0))


def test_count_nonfinite_matches_generic():
    values = _values(2 * BLOCK_ELEMENTS + 3, "float64", 0, 1, 1.0)[::-1]
    values[[0, 9, BLOCK_ELEMENTS + 2]] = [numpy.nan, -numpy.inf, numpy.inf]
    assert int(BACKEND.count_nonfinite(values)) == int(GENERIC.count_nonfinite(values)) == 3


# -- the compiled kernels themselves ------------------------------------------------------------


def test_the_compiled_path_is_taken_for_large_contiguous_input(numba_only, monkeypatch):
    calls = []
    for name in ("minmax", "quantize", "dequantize"):
        original = getattr(numba_kernels, name)

        def spy(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(numba_kernels, name, spy)
    values = numpy.linspace(-1.0, 1.0, numba_kernels.MIN_ELEMENTS, dtype=numpy.float32)
    BACKEND.minmax(values)
    qvalues, _ = quantize(BACKEND, values, 0.01, 0.0, (-128, 127), "int8", True, None)
    dequantize(BACKEND, qvalues, 0.01, 0.0, "float32")
    assert calls == ["minmax", "quantize", "dequantize"]
    quantize(BACKEND, values[::2], 0.01, 0.0, (-128, 127), "int8", True, None)  # strided: NumPy path
    quantize(BACKEND, values[:100], 0.01, 0.0, (-128, 127), "int8", True, None)  # small: NumPy path
    assert calls == ["minmax", "quantize", "dequantize"]


def test_disabling_numba_with_the_environment_variable(monkeypatch):
    monkeypatch.setenv(numba_kernels.DISABLE_ENV, "1")
    assert not numba_kernels.available()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the compiled kernels were called although disabled")

    for name in ("minmax", "quantize", "dequantize"):
        monkeypatch.setattr(numba_kernels, name, refuse)
    values = numpy.linspace(-1.0, 1.0, 2 * numba_kernels.MIN_ELEMENTS)
    BACKEND.minmax(values)
    qvalues, _ = quantize(BACKEND, values, 0.01, 0.0, (-128, 127), "int8", True, None)
    dequantize(BACKEND, qvalues, 0.01, 0.0, "float64")
    monkeypatch.setenv(numba_kernels.DISABLE_ENV, "0")
    assert numba_kernels.available() == HAS_NUMBA


def test_without_numba_installed_the_numpy_path_serves(monkeypatch):
    monkeypatch.delenv(numba_kernels.DISABLE_ENV, raising=False)
    monkeypatch.setitem(numba_kernels._state, "importable", False)
    monkeypatch.setitem(numba_kernels._state, "kernels", None)
    assert not numba_kernels.available()
    with pytest.raises(ImportError, match="numba"):
        numba_kernels.quantize(numpy.zeros(4), numpy.zeros(4, dtype=numpy.uint8), 1.0, 0.0, 0, 255, True)
    values = _values(2 * numba_kernels.MIN_ELEMENTS, "float32", 0, 255, 0.25)
    result, _, expected, _ = _both(values, 0.25, 3.0, (0, 255), "uint8", True, None)
    _assert_identical(result, expected)


def test_a_broken_numba_install_warns_and_falls_back(monkeypatch):
    monkeypatch.delenv(numba_kernels.DISABLE_ENV, raising=False)
    monkeypatch.setitem(numba_kernels._state, "importable", None)
    monkeypatch.setitem(numba_kernels._state, "kernels", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: object())
    monkeypatch.setitem(sys.modules, "numba", None)  # importing it raises ImportError
    values = _values(2 * numba_kernels.MIN_ELEMENTS, "float64", 0, 255, 0.25)
    with pytest.warns(RuntimeWarning, match="numba"):
        result, _, expected, _ = _both(values, 0.25, 3.0, (0, 255), "uint8", True, None)
    _assert_identical(result, expected)
    assert not numba_kernels.available()


def test_chunks_cover_the_range_aligned():
    for size in (0, 1, 1000, 10**6 + 7, 10**8):
        for threads in (1, 2, 3, 16):
            chunks = _parallel.chunks(size, threads)
            assert chunks[0][0] == 0 and chunks[-1][1] == size
            assert all(first[1] == second[0] for first, second in zip(chunks, chunks[1:]))
            assert all(start % _parallel.CHUNK_ALIGN == 0 for start, _ in chunks)
            assert len(chunks) <= max(1, threads * _parallel.CHUNKS_PER_THREAD)
            if threads == 1 or size < 2 * _parallel.MIN_CHUNK:
                assert len(chunks) == 1


def test_chunks_run_under_the_callers_error_settings(monkeypatch):
    monkeypatch.setattr(_parallel, "MIN_CHUNK", SMALL_CHUNK)
    monkeypatch.setattr(_parallel, "CHUNK_ALIGN", 64)
    monkeypatch.setattr(_parallel, "thread_count", lambda: 2)
    seen = []
    with numpy.errstate(over="raise", invalid="ignore"):
        _parallel.run(4 * SMALL_CHUNK, lambda start, stop: seen.append(numpy.geterr()))
    assert len(seen) > 1
    assert all(settings["over"] == "raise" and settings["invalid"] == "ignore" for settings in seen)


def test_compiled_kernels_refuse_arrays_they_cannot_take(numba_only):
    target = numpy.empty(4, dtype=numpy.uint8)
    with pytest.raises(ValueError, match="source"):
        numba_kernels.quantize(numpy.zeros((2, 2)), target, 1.0, 0.0, 0, 255, True)
    with pytest.raises(TypeError, match="source"):
        numba_kernels.quantize(numpy.zeros(4, dtype=numpy.float16), target, 1.0, 0.0, 0, 255, True)
    with pytest.raises(ValueError, match="target"):
        numba_kernels.quantize(numpy.zeros(5), target, 1.0, 0.0, 0, 255, True)
    with pytest.raises(TypeError, match="target"):
        numba_kernels.dequantize(target, numpy.empty(4, dtype=numpy.int8), 1.0, 0.0)
    with pytest.raises(ValueError, match="values"):
        numba_kernels.minmax(numpy.zeros(8)[::2])
    with pytest.raises(ValueError, match="empty"):
        numba_kernels.minmax(numpy.zeros(0))


def test_concurrent_callers_get_identical_results(numba_only):
    values = _values(1 << 19, "float64", -128, 127, 0.1)
    expected, _ = quantize(GENERIC, values, 0.1, 0.0, (-128, 127), "int8", True, None)
    results = [None] * 6

    def work(slot: int) -> None:
        results[slot] = quantize(BACKEND, values, 0.1, 0.0, (-128, 127), "int8", True, None)[0]

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        _assert_identical(result, expected)


def test_the_pool_works_in_a_forked_child():
    """A child forked after the pool started builds its own pool instead of waiting forever."""
    multiprocessing = pytest.importorskip("multiprocessing")
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("fork is not available on this platform")
    out = _run_fresh(
        """
        import multiprocessing, numpy
        from qarray.backends import NumpyBackend, _parallel
        _parallel.MIN_CHUNK = 1 << 10
        _parallel.thread_count = lambda: 2
        backend = NumpyBackend()
        values = numpy.linspace(-1.0, 1.0, 1 << 16)
        from qarray.backends.spec import QuantSpec
        spec = QuantSpec(0.01, 0.0, -128, 127, True, "int8")
        first = backend.quantize(values, spec)[0]
        def child(queue):
            queue.put(numpy.array_equal(backend.quantize(values, spec)[0], first))
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        process = context.Process(target=child, args=(queue,))
        process.start()
        print(queue.get(timeout=60))
        process.join(60)
        """
    )
    assert out == "True"


def _run_fresh(code: str, env: Optional[dict] = None) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()


def test_import_and_small_arrays_do_not_import_numba():
    out = _run_fresh(
        """
        import sys, numpy, qarray
        before = "numba" in sys.modules
        qarray.QuantizedArray(8, numpy.linspace(-1.0, 1.0, 1000)).dequant()
        print(before, "numba" in sys.modules)
        """
    )
    assert out == "False False"


def test_first_compilation_from_several_threads_at_once(numba_only, tmp_path):
    """A cold cache, four threads calling a kernel for the first time together: one build, right bits."""
    out = _run_fresh(
        """
        import threading, numpy
        from qarray.backends import NumpyBackend, numba_kernels
        from qarray.backends.spec import QuantSpec
        backend = NumpyBackend()
        values = numpy.linspace(-3.0, 3.0, 1 << 17).astype(numpy.float32)
        rounded = numpy.rint(values.astype(numpy.float64) / 0.01 + 5.0)
        expected = numpy.clip(rounded, -2**31, 2**31 - 1).astype(numpy.int32)
        results = []
        def work():
            results.append(backend.quantize(values, QuantSpec(0.01, 5.0, -2**31, 2**31 - 1, True, "int32"))[0])
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads: thread.start()
        for thread in threads: thread.join()
        same = all(numpy.array_equal(r, expected) for r in results)
        print(len(results), same, numba_kernels._state["kernels"] is not None)
        """,
        env={"NUMBA_CACHE_DIR": str(tmp_path)},
    )
    assert out == "4 True True"


# -- the float32 candidate of the compiled quantization ----------------------------------------
# The compiled kernels keep a float32 candidate only where it provably equals the float64
# division (see the numba_kernels module documentation). These tests compare the kernels with
# the candidate, without it (FAST_PATH off) and the generic path, on data built to sit next to
# the rounding ties, and check that the candidate does serve ordinary data.


@pytest.fixture
def small_chunks(numba_only, monkeypatch: pytest.MonkeyPatch) -> None:
    """Numba enabled, and modest arrays split into several thread chunks (not sub-block aligned)."""
    monkeypatch.setattr(_parallel, "MIN_CHUNK", SMALL_CHUNK)
    monkeypatch.setattr(_parallel, "CHUNK_ALIGN", 64)
    monkeypatch.setattr(_parallel, "thread_count", lambda: 3)


def _compiled(values: numpy.ndarray, scale: float, zero_point: float, clip: Any, fit: Any, dtype: str,
              fast_path: bool) -> Tuple[numpy.ndarray, Tuple[int, int, int]]:
    saved = numba_kernels.FAST_PATH
    numba_kernels.FAST_PATH = fast_path
    try:
        result = numpy.empty(values.shape, dtype=dtype)
        with numpy.errstate(invalid="ignore", over="ignore"):
            bounds = clip if clip is not None else fit
            low, high = (None, None) if bounds is None else bounds
            counts = numba_kernels._quantize(values, result, scale, zero_point, low, high, clip is not None)
    finally:
        numba_kernels.FAST_PATH = saved
    return result, counts


def _check_candidate(values: numpy.ndarray, scale: float, zero_point: float, clip: Any, dtype: str,
                     fit: Any = None) -> int:
    """The kernels with and without the candidate agree bit for bit, counts included, and with
    the generic path (wherever NumPy's cast is defined); return how many elements the candidate gave."""
    result, counts = _compiled(values, scale, zero_point, clip, fit, dtype, True)
    divided, divided_counts = _compiled(values, scale, zero_point, clip, fit, dtype, False)
    assert divided_counts[2] == 0
    assert counts[:2] == divided_counts[:2]
    with numpy.errstate(invalid="ignore", over="ignore"):
        expected, problems = quantize(GENERIC, values, scale, zero_point, clip, dtype, True, fit)
        rounded = numpy.rint(values.astype(numpy.float64) / scale + zero_point)
    assert list(counts[:2]) == numpy.asarray(problems).tolist()
    # NaN, and without clipping values beyond the dtype, have unspecified integers (a cast
    # C leaves undefined; what the machine code gives differs between paths and CPUs)
    comparable = ~numpy.isnan(values)
    if clip is None:
        low, high = _range_of(dtype)
        comparable &= (rounded >= low) & (rounded <= high)
    _assert_identical(result[comparable], divided[comparable])
    _assert_identical(result[comparable], numpy.asarray(expected)[comparable])
    return counts[2]


def _tolerance(scale: float, zero_point: float, low: float, high: float) -> float:
    """The candidate's tolerance T for these parameters (0.5 minus its float32 limit)."""
    limit = numba_kernels._candidate(scale, zero_point, low, high)[-1]
    return 0.5 - float(numpy.asarray(limit).view(numpy.float32))


CANDIDATE_SCALES = [0.1, 1 / 3, 7e-5, 3e5, 0.0123, -0.37] + [
    float(scale) for scale in 10.0 ** numpy.random.default_rng(17).uniform(-6, 6, 4)
]


@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("clip, out_dtype", [((0, 255), "uint8"), ((-128, 127), "int8"), ((-1000, 1000), "int16")])
def test_candidate_matches_the_division_on_normal_data_at_many_scales(small_chunks, clip, out_dtype, in_dtype):
    rng = numpy.random.default_rng(2)
    middle, spread = (clip[0] + clip[1]) / 2, (clip[1] - clip[0]) / 5
    for scale in CANDIDATE_SCALES:
        for zero_point in (0.0, 128.0, -7.0, 2.0**40):
            quotients = rng.normal(middle - zero_point, spread, 20_000)
            values = (quotients * scale).astype(in_dtype)
            n_fast = _check_candidate(values, scale, zero_point, clip, out_dtype)
            if zero_point == 2.0**40:  # beyond the candidate's bound: all divided
                assert n_fast == 0
            else:
                assert n_fast > 0.5 * values.size


@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
def test_candidate_matches_the_division_next_to_ties(small_chunks, in_dtype):
    """Quotients a few ulps from k + 1/2, exact ties, and whole sub-blocks just beyond the tolerance."""
    rng = numpy.random.default_rng(3)
    sub = numba_kernels.SUB_BLOCK
    for scale in CANDIDATE_SCALES[:6] + [0.25, 3.0, 2.0**-10]:
        for zero_point in (0.0, 128.0, -7.0, 2.0**40):
            low, high = (-128, 127) if zero_point < 0 else (0, 255)
            k = rng.integers(low - 3, high + 3, 40 * sub).astype(numpy.float64)
            ties = (k + 0.5 - zero_point) * scale
            if in_dtype == "float32":
                ties = ties.astype(numpy.float32)
            steps = rng.integers(-4, 5, ties.size).astype(in_dtype)  # 0 and ±1..±4 ulps
            near = (ties + steps * numpy.spacing(numpy.abs(ties))).astype(in_dtype)
            exact = ties.astype(in_dtype)  # x / scale exactly k + 1/2 for the power-of-two and 3.0 scales
            parts = [near, exact]
            if zero_point != 2.0**40:
                tolerance = _tolerance(scale, zero_point, low, high)
                # sub-blocks whose quotients lie 1.1 to 3 tolerances from a tie: the candidate keeps them
                distance = rng.uniform(1.1, 3.0, 40 * sub) * tolerance * rng.choice([-1.0, 1.0], 40 * sub)
                parts.append(((k + 0.5 + distance - zero_point) * scale).astype(in_dtype))
            values = numpy.concatenate(parts)
            n_fast = _check_candidate(values, scale, zero_point, (low, high), "int16")
            if zero_point != 2.0**40:
                assert n_fast >= 20 * sub


@pytest.mark.parametrize("out_dtype", INTEGER_DTYPES)
@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
def test_candidate_for_every_dtype_clipped_or_fit_with_non_finite_values(small_chunks, in_dtype, out_dtype):
    rng = numpy.random.default_rng(4)
    signed = numpy.iinfo(out_dtype).min < 0
    low, high = (-128, 127) if signed else (0, 255)
    scale, zero_point = 0.0173, (0.0 if signed else 128.0)
    for size in (127, 128, 5 * 128 + 17, 3 * SMALL_CHUNK + 70):
        values = (rng.normal(0.0, 40.0, size) * scale).astype(in_dtype)
        for clip, fit in (((low, high), None), (None, (float(low), float(high)))):
            n_fast = _check_candidate(values, scale, zero_point, clip, out_dtype, fit)
            assert n_fast > 0  # partial sub-blocks (127, the tail of 5 * 128 + 17) too
        if size > 128:
            values[[3, size // 2, size - 2]] = [numpy.nan, numpy.inf, -numpy.inf]
            values[size // 3] = numpy.float32(1e30) * scale  # beyond the range: clipped, or outside the fit
            for clip, fit in (((low, high), None), (None, (float(low), float(high)))):
                _check_candidate(values, scale, zero_point, clip, out_dtype, fit)


def test_candidate_on_random_float32_bit_patterns(numba_only):
    """Every finite float32, in effect: millions of random bit patterns against plain NumPy float64."""
    rng = numpy.random.default_rng(5)
    bits = rng.integers(0, 2**32, 3_000_000, dtype=numpy.uint64).astype(numpy.uint32)
    values = bits.view(numpy.float32)
    values = values[numpy.isfinite(values)]
    settings = ((0.0123, 136.0, (0, 255), "uint8"), (1 / 3, -7.0, (-1000, 1000), "int16"))
    for scale, zero_point, clip, dtype in settings:
        # most patterns are far from the range; the ones near it come back as a second, dense sample
        near = (rng.uniform(clip[0] - 3, clip[1] + 3, 1_000_000) - zero_point) * scale
        for sample in (values, near.astype(numpy.float32)):
            result, counts = _compiled(sample, scale, zero_point, clip, None, dtype, True)
            with numpy.errstate(over="ignore"):
                expected = numpy.clip(numpy.rint(sample.astype(numpy.float64) / scale + zero_point), *clip)
            _assert_identical(result, expected.astype(dtype))
            assert counts[0] == 0 and counts[2] > 0


def test_candidate_only_for_parameters_its_bound_covers():
    assert numba_kernels._candidate(0.0123, 136.0, 0.0, 255.0) is not None
    for scale, zero_point, low, high in (
        (0.0123, 2.0**11, 0.0, 255.0),  # zero point too large for the tolerance
        (0.0123, 0.0, -(2.0**31), 2.0**31 - 1),  # int32-wide range
        (1e-35, 0.0, 0.0, 255.0),  # 1 / scale beyond 2**100
        (1e35, 0.0, 0.0, 255.0),  # 1 / scale below 2**-100
        (0.0, 0.0, 0.0, 255.0),
        (numpy.inf, 0.0, 0.0, 255.0),
        (0.0123, numpy.nan, 0.0, 255.0),
        (0.0123, 0.0, 0.1, 255.0),  # a bound that is no float32 number
        (0.0123, 0.0, -numpy.inf, numpy.inf),  # no fit range
    ):
        assert numba_kernels._candidate(scale, zero_point, low, high) is None
    inverse, zero32, low32, high32, limit = numba_kernels._candidate(0.0123, 136.0, 0.0, 255.0)
    assert [inverse.dtype, zero32.dtype, low32.dtype, high32.dtype] == [numpy.float32] * 4
    assert limit.dtype == numpy.int32
    assert float(numpy.asarray(limit).view(numpy.float32)) <= 0.5 - 2.0**-21 * (255 + 2 + 136)


def test_candidate_comes_back_after_a_run_of_ties(numba_only):
    """Exact ties make every sub-block fail and the kernel divide ahead; clean data after them
    is served by the candidate again."""
    sub = numba_kernels.SUB_BLOCK
    rng = numpy.random.default_rng(6)
    ties = numpy.floor(rng.uniform(0, 255, 300 * sub)) + 0.5
    clean = rng.uniform(0, 255, 300 * sub)
    values = numpy.concatenate([ties, clean, ties[: 50 * sub]]) * 0.25
    n_fast = _check_candidate(values, 0.25, 0.0, (0, 255), "uint8")
    assert n_fast >= 0.7 * clean.size  # at most _MAX_SKIP sub-blocks divided ahead, and a few random failures
    assert _compiled(ties * 0.25, 0.25, 0.0, (0, 255), None, "uint8", True)[1][2] == 0


@pytest.mark.parametrize("clip, fit", [((0, 255), None), (None, (0.0, 255.0))])
def test_a_stray_tie_costs_the_candidate_one_element_not_its_sub_block(numba_only, clip, fit):
    """One exact tie per sub-block: only the ties are divided; every other element keeps the
    candidate's integer, which is the division's."""
    sub = numba_kernels.SUB_BLOCK
    rng = numpy.random.default_rng(8)
    quotients = rng.uniform(2, 250, 200 * sub)
    quotients[::sub] = numpy.floor(quotients[::sub]) + 0.5  # x / 0.25 exactly k + 1/2
    values = quotients * 0.25
    n_fast = _check_candidate(values, 0.25, 0.0, clip, "uint8", fit)
    inverse, zero32, _, _, limit = numba_kernels._candidate(0.25, 0.0, 0.0, 255.0)
    candidate = values.astype(numpy.float32) * inverse + zero32  # y', as the kernel computes it
    distance = numpy.abs(candidate - numpy.rint(candidate))
    kept = distance < numpy.asarray(limit).view(numpy.float32)
    assert n_fast == numpy.count_nonzero(kept)  # all but the ties and the near-ties
    assert n_fast >= values.size - 200 - 0.01 * values.size


@pytest.mark.parametrize("group", [16, 32, 100, 128, 300])
def test_grid_kernel_serves_blocks_of_any_size_with_the_candidate(numba_only, group):
    """Per-block parameters, blocks shorter or longer than a sub-block: the compiled grid kernel's
    integers equal the division's, and the candidate gives nearly all of them."""
    rng = numpy.random.default_rng(9)
    rows, length = 40, 3 * group + group // 2  # a partial last block in every row
    n_groups = -(-length // group)
    values = (rng.normal(0, 1, (rows, length)) * rng.uniform(0.1, 10, (rows, 1))).astype(numpy.float32)
    padded = numpy.full((rows, n_groups * group), numpy.nan)
    padded[:, :length] = values
    blocks = padded.reshape(rows, n_groups, group)
    low_value = numpy.minimum(numpy.nanmin(blocks, axis=2), 0.0)
    scale = (numpy.maximum(numpy.nanmax(blocks, axis=2), 0.0) - low_value) / 255
    zero = numpy.rint(-low_value / scale)
    low, high = numpy.zeros_like(scale), numpy.full_like(scale, 255.0)
    kernel = numba_kernels._kernels().quantize_grid
    source, row_map = values.reshape(-1), numpy.arange(rows, dtype=numpy.int64)
    results = []
    for fast_path in (True, False):
        target = numpy.empty(values.size, dtype=numpy.uint8)
        counts = kernel(source, target, row_map, length, group, scale, zero, low, high, True, fast_path, 0, rows, 0,
                        n_groups)
        results.append((target, counts))
    (fast, fast_counts), (divided, divided_counts) = results
    expected = numpy.clip(numpy.rint(values.astype(numpy.float64) / numpy.repeat(scale, group, axis=1)[:, :length]
                                     + numpy.repeat(zero, group, axis=1)[:, :length]), 0, 255)
    numpy.testing.assert_array_equal(fast, expected.reshape(-1).astype(numpy.uint8))
    numpy.testing.assert_array_equal(divided, fast)
    assert divided_counts[2] == 0
    assert fast_counts[:2] == divided_counts[:2] == (0, 0)
    assert fast_counts[2] >= 0.99 * values.size


def test_the_backend_quantizes_ordinary_data_with_the_candidate(numba_only, monkeypatch):
    given = []
    original = numba_kernels._quantize

    def spy(*args: Any) -> Tuple[int, int, int]:
        counts = original(*args)
        given.append(counts[2])
        return counts

    monkeypatch.setattr(numba_kernels, "_quantize", spy)
    values = numpy.random.default_rng(7).standard_normal(numba_kernels.MIN_ELEMENTS).astype(numpy.float32)
    quantizer = UniformQuantizer(QuantizationOptions(8), params=UniformQuantizationParameters(0.0234, 128, 0))
    result = quantizer.quant(values, dtype=numpy.uint8)
    expected, _ = quantize(GENERIC, values, 0.0234, 128.0, (0, 255), "uint8", True, None)
    _assert_identical(result, expected)
    assert len(given) == 1 and given[0] > 0.8 * values.size
