"""Backends: the registry, the NumPy kernels against the generic Array API path, and placement.

The generic :class:`ArrayAPIBackend` is the reference implementation of every
kernel; the NumPy backend's blocked kernels must give the very same bits on
every size (across block boundaries), layout, dtype and output buffer.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import array_api_compat
import numpy
import pytest

import qarray
import qarray.backends.registry as registry
from qarray.backends import (
    ArrayAPIBackend,
    NumpyBackend,
    available_backends,
    backend_for,
    get_backend,
    register_backend,
)
from qarray.backends.numpy_backend import BLOCK_ELEMENTS

from bits import assert_same_bits, fitting
from kernel_calls import dequantize, quantize

# -- the registry ---------------------------------------------------------------------------


@pytest.fixture
def isolated_registry(monkeypatch):
    """Let a test register backends without leaving them behind for other tests."""
    monkeypatch.setattr(registry, "_factories", dict(registry._factories))
    monkeypatch.setattr(registry, "_instances", dict(registry._instances))
    monkeypatch.setattr(registry, "_generic", dict(registry._generic))


class CountingFactory:
    """A backend factory that counts how often it is called."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> ArrayAPIBackend:
        self.calls += 1
        return NumpyBackend()


def test_registering_builds_nothing_until_first_use(isolated_registry):
    factory = CountingFactory()
    register_backend("counting", factory)
    assert factory.calls == 0
    first = get_backend("counting")
    assert get_backend("counting") is first
    assert factory.calls == 1


def test_duplicate_name_is_refused(isolated_registry):
    register_backend("twice", NumpyBackend)
    with pytest.raises(ValueError, match="twice"):
        register_backend("twice", NumpyBackend)


def test_duplicate_name_with_replace_takes_the_new_factory(isolated_registry):
    register_backend("twice", NumpyBackend)
    factory = CountingFactory()
    register_backend("twice", factory, replace=True)
    get_backend("twice")
    assert factory.calls == 1


@pytest.mark.parametrize("name, factory", [("", NumpyBackend), (3, NumpyBackend), ("not-callable", 42)])
def test_invalid_registration_is_a_type_error(isolated_registry, name, factory):
    with pytest.raises(TypeError):
        register_backend(name, factory)


def test_factory_must_return_a_backend(isolated_registry):
    register_backend("wrong", lambda: object())
    with pytest.raises(TypeError, match="wrong"):
        get_backend("wrong")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as error:
        get_backend("no-such-backend")
    message = str(error.value)
    assert "no-such-backend" in message
    for name in ("numpy", "cupy", "torch", "array_api_strict"):
        assert name in message


def test_backend_for_picks_the_array_library(xb):
    assert backend_for(xb.asarray(numpy.zeros(3))).name == xb.name


def test_backend_for_numpy_is_the_numpy_backend():
    assert isinstance(backend_for(numpy.zeros(3)), NumpyBackend)


def test_backend_for_refuses_non_arrays():
    with pytest.raises(TypeError):
        backend_for("not an array")


def test_unregistered_library_gets_the_generic_backend(isolated_registry):
    strict = pytest.importorskip("array_api_strict")
    del registry._factories["array_api_strict"]
    registry._instances.pop("array_api_strict", None)
    backend = backend_for(strict.asarray([1.0]))
    assert type(backend) is ArrayAPIBackend
    assert backend.name == "array_api_strict"
    assert backend_for(strict.asarray([2.0])) is backend


def test_array_routes_to_the_backend_registered_under_its_library_name(isolated_registry):
    """Replacing the "numpy" backend changes what quantizes NumPy arrays."""

    class RecordingBackend(NumpyBackend):
        quantize_calls = 0

        def quantize(self, *args: Any, **kwargs: Any) -> Any:
            RecordingBackend.quantize_calls += 1
            return super().quantize(*args, **kwargs)

    register_backend("numpy", RecordingBackend, replace=True)
    qarray.QuantizedArray(4, numpy.array([0.0, 1.0]))
    assert RecordingBackend.quantize_calls == 1


def test_available_backends_lists_usable_ones_sorted(isolated_registry):
    def unavailable() -> ArrayAPIBackend:
        raise ImportError("not installed here")

    register_backend("unavailable", unavailable)
    names = available_backends()
    assert names == sorted(names)
    assert "numpy" in names
    assert "unavailable" not in names


# -- NumPy kernels against the generic Array API path ---------------------------------------

NUMPY = NumpyBackend()
GENERIC = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))

SIZES = [0, 1, 7, BLOCK_ELEMENTS - 1, BLOCK_ELEMENTS, BLOCK_ELEMENTS + 1, 2 * BLOCK_ELEMENTS + 3]

INT64_FIT = (-9.223372036854775e18, 9.223372036854775e18)

# (scale, zero_point, clip, dtype, check_finite, fit)
QUANTIZE_SETTINGS = {
    "unsigned-8": (0.37, 3.0, (0, 255), "int64", True, None),
    "signed-int8": (0.37, -7.0, (-128, 127), "int8", True, None),
    "narrow-uint8": (0.25, 8.0, (1, 15), "uint8", False, None),
    "ties-no-clip": (0.5, 0.0, None, "int64", True, INT64_FIT),
    "no-clip-overflowing-int16": (0.01, 0.0, None, "int16", False, (-32768.0, 32767.0)),
}


def _values(size: int, dtype: str, seed: int = 0) -> numpy.ndarray:
    """Wide-ranging values with exact ties (k + 0.5) * 0.5 mixed in."""
    rng = numpy.random.default_rng(seed + size)
    values = rng.standard_normal(size) * 50.0
    values[::5] = (numpy.arange(values[::5].size) - 40 + 0.5) * 0.5
    return values.astype(dtype)


def _assert_identical(first: Any, second: Any, where: Optional[numpy.ndarray] = None) -> None:
    assert_same_bits(first, second, where)


def _assert_problems_equal(first: Optional[Any], second: Optional[Any]) -> None:
    assert (first is None) == (second is None)
    if first is not None:
        numpy.testing.assert_array_equal(numpy.asarray(first), numpy.asarray(second))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("setting", list(QUANTIZE_SETTINGS))
def test_numpy_quantize_matches_generic(setting, size, dtype):
    scale, zero_point, clip, out_dtype, check_finite, fit = QUANTIZE_SETTINGS[setting]
    values = _values(size, dtype)
    expected, expected_problems = quantize(GENERIC, values, scale, zero_point, clip, out_dtype, check_finite, fit)
    result, problems = quantize(NUMPY, values, scale, zero_point, clip, out_dtype, check_finite, fit)
    # Integers of rounded values outside the output dtype are unspecified (quant refuses
    # the call): only the others are compared, and how many lie outside.
    _assert_identical(result, expected, fitting(values, scale, zero_point, fit))
    _assert_problems_equal(problems, expected_problems)


def test_overflow_setting_does_overflow():
    """The no-clip int16 setting above really has values outside int16 (problems counted)."""
    scale, zero_point, clip, out_dtype, check_finite, fit = QUANTIZE_SETTINGS["no-clip-overflowing-int16"]
    values = _values(BLOCK_ELEMENTS + 1, "float64")
    _, problems = quantize(NUMPY, values, scale, zero_point, clip, out_dtype, check_finite, fit)
    assert int(numpy.asarray(problems)[1]) > 0


@pytest.mark.parametrize("size", [3, BLOCK_ELEMENTS + 5])
def test_numpy_quantize_counts_non_finite_values_like_generic(size):
    values = _values(size, "float64")
    values[[0, size // 2, size - 1]] = [numpy.nan, numpy.inf, -numpy.inf]
    finite = numpy.isfinite(values)
    with numpy.errstate(invalid="ignore"):
        expected, expected_problems = quantize(GENERIC, values, 0.37, 3.0, (0, 255), "int64", True, None)
        result, problems = quantize(NUMPY, values, 0.37, 3.0, (0, 255), "int64", True, None)
    _assert_problems_equal(problems, expected_problems)
    assert int(numpy.asarray(problems)[0]) == 3
    _assert_identical(result[finite], expected[finite])


LAYOUTS = {
    "strided": lambda: _values(3 * BLOCK_ELEMENTS + 10, "float64")[::3],
    "transposed": lambda: _values(600, "float32").reshape(20, 30).T,
    "fortran": lambda: numpy.asfortranarray(_values(600, "float64").reshape(20, 30)),
    "reversed": lambda: _values(1000, "float64")[::-1],
    "zero-d": lambda: numpy.array(1.25),
    "empty-2d": lambda: numpy.zeros((3, 0)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_numpy_quantize_matches_generic_on_any_layout(layout):
    values = LAYOUTS[layout]()
    expected, _ = quantize(GENERIC, values, 0.37, 3.0, (0, 255), "int64", True, None)
    result, _ = quantize(NUMPY, values, 0.37, 3.0, (0, 255), "int64", True, None)
    _assert_identical(result, expected)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_numpy_dequantize_matches_generic_on_any_layout(layout):
    qvalues = numpy.rint(LAYOUTS[layout]()).astype(numpy.int64)
    _assert_identical(
        dequantize(NUMPY, qvalues, 0.37, 3.0, "float64"), dequantize(GENERIC, qvalues, 0.37, 3.0, "float64")
    )


@pytest.mark.parametrize("out_dtype", ["float32", "float64"])
@pytest.mark.parametrize("in_dtype", ["int8", "uint16", "int64"])
@pytest.mark.parametrize("size", [0, 5, BLOCK_ELEMENTS, 2 * BLOCK_ELEMENTS + 3])
def test_numpy_dequantize_matches_generic(size, in_dtype, out_dtype):
    info = numpy.iinfo(in_dtype)
    rng = numpy.random.default_rng(size)
    qvalues = rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), size=size, dtype=in_dtype)
    scale, zero_point = float(numpy.nextafter(0.1, 1.0)), 17.0
    _assert_identical(
        dequantize(NUMPY, qvalues, scale, zero_point, out_dtype),
        dequantize(GENERIC, qvalues, scale, zero_point, out_dtype),
    )


def test_numpy_kernels_match_generic_with_a_per_channel_zero_point():
    values = _values(12, "float64").reshape(3, 4)
    zero_point = NUMPY.parameter(numpy.array([[1.0], [-2.0], [7.0]]), values)
    generic_zero_point = GENERIC.parameter(numpy.array([[1.0], [-2.0], [7.0]]), values)
    expected, _ = quantize(GENERIC, values, 0.3, generic_zero_point, (-32, 31), "int64", True, None)
    result, _ = quantize(NUMPY, values, 0.3, zero_point, (-32, 31), "int64", True, None)
    _assert_identical(result, expected)
    _assert_identical(
        dequantize(NUMPY, result, 0.3, zero_point, "float64"),
        dequantize(GENERIC, result, 0.3, generic_zero_point, "float64"),
    )


@pytest.mark.parametrize("size", [5, BLOCK_ELEMENTS + 1])
def test_numpy_quantize_writes_into_out(size):
    values = _values(size, "float64")
    expected, _ = quantize(GENERIC, values, 0.37, 3.0, (0, 255), "uint8", True, None)
    out = numpy.empty(size, dtype=numpy.uint8)
    result, _ = quantize(NUMPY, values, 0.37, 3.0, (0, 255), "uint8", True, None, out)
    assert result is out
    _assert_identical(out, expected)


@pytest.mark.parametrize("size", [5, BLOCK_ELEMENTS + 1])
@pytest.mark.parametrize("out_dtype", ["float32", "float64"])
def test_numpy_dequantize_writes_into_out(size, out_dtype):
    qvalues = numpy.arange(size, dtype=numpy.int64) - size // 2
    expected = dequantize(GENERIC, qvalues, 0.37, 3.0, out_dtype)
    out = numpy.empty(size, dtype=out_dtype)
    result = dequantize(NUMPY, qvalues, 0.37, 3.0, out_dtype, out)
    assert result is out
    _assert_identical(out, expected)


def test_generic_quantize_writes_into_out():
    values = _values(9, "float64")
    out = numpy.empty(9, dtype=numpy.int64)
    result, _ = quantize(GENERIC, values, 0.37, 3.0, (0, 255), "int64", True, None, out)
    assert result is out
    _assert_identical(out, quantize(NUMPY, values, 0.37, 3.0, (0, 255), "int64", True, None)[0])


@pytest.mark.parametrize("omit_nonfinite", [False, True])
@pytest.mark.parametrize("size", [1, 7, BLOCK_ELEMENTS + 1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_minmax_matches_generic(size, dtype, omit_nonfinite):
    values = _values(size, dtype)
    if omit_nonfinite and size > 2:
        values[[0, size - 1]] = [numpy.nan, -numpy.inf]
    expected = GENERIC.minmax(values, omit_nonfinite=omit_nonfinite)
    result = NUMPY.minmax(values, omit_nonfinite=omit_nonfinite)
    for got, want in zip(result, expected):
        _assert_identical(got, want)


def test_numpy_minmax_propagates_nan_like_generic():
    values = numpy.array([1.0, numpy.nan, 3.0])
    for got, want in zip(NUMPY.minmax(values), GENERIC.minmax(values)):
        assert numpy.isnan(got) and numpy.isnan(want)


@pytest.mark.parametrize("size", [1, 7, BLOCK_ELEMENTS + 1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_unique_rounded_matches_generic(size, dtype):
    values = (numpy.round(_values(size, dtype) * 8) / 8).astype(dtype)
    values[0] = -0.001  # rounds to -0.0, which is folded into 0.0
    _assert_identical(NUMPY.unique_rounded(values), GENERIC.unique_rounded(values))


# -- where QuantizedArray keeps its arrays --------------------------------------------------


def _assert_in_place_of(array: Any, source: Any) -> None:
    assert array_api_compat.array_namespace(array) is array_api_compat.array_namespace(source)
    assert array_api_compat.device(array) == array_api_compat.device(source)


def _stored_arrays(qa: qarray.QuantizedArray) -> Tuple[Any, ...]:
    stored = (qa.values, qa.qvalues)
    if qa.quantizer.stats.uvalues is not None:
        stored += (qa.quantizer.stats.uvalues,)
    return stored


@pytest.mark.parametrize("is_qat", [False, True], ids=["plain", "qat"])
def test_quantized_array_keeps_every_array_with_the_input(xb, is_qat):
    """values, qvalues and (for QAT) uvalues stay in the input's library and on its device."""
    source = xb.asarray(numpy.array([-0.5, -0.25, 0.0, 0.25, 0.5]))
    qa = qarray.QuantizedArray(3, source, is_qat=is_qat)
    assert (qa.quantizer.stats.uvalues is not None) is is_qat
    for array in _stored_arrays(qa):
        _assert_in_place_of(array, source)


def test_quantized_array_keeps_arrays_with_the_input_after_updates(xb):
    source = xb.asarray(numpy.array([-1.0, 0.0, 1.0]))
    qa = qarray.QuantizedArray(4, source)
    qa.update_values(xb.asarray(numpy.array([0.5, 0.25])))
    for array in _stored_arrays(qa):
        _assert_in_place_of(array, source)
    qa.update_quantized_values(xb.asarray(numpy.array([1, 2, 3])))
    for array in _stored_arrays(qa):
        _assert_in_place_of(array, source)
    _assert_in_place_of(qa.dequant(), source)
    _assert_in_place_of(qa.quant(), source)


def test_quantized_array_from_integers_keeps_arrays_with_the_input(xb):
    source = xb.asarray(numpy.array([0, 3, 7]))
    qa = qarray.QuantizedArray(4, source, value_is_float=False, scale=0.5, zero_point=1, offset=0)
    for array in _stored_arrays(qa):
        _assert_in_place_of(array, source)


def test_statistics_keep_uvalues_with_the_input(xb):
    source = xb.asarray(numpy.array([0.125, 0.5, 0.5]))
    stats = qarray.MinMaxQuantizationStats()
    stats.compute_quantization_stats(source)
    _assert_in_place_of(stats.uvalues, source)
    assert isinstance(stats.rmin, numpy.float64) and isinstance(stats.rmax, numpy.float64)
