"""Wrong refusals and crashes with the wrong exception, second round.

Four families of findings, one behaviour per test:

- calibration ranges near the ends of float64 whose width is finite were refused
  because the zero point formula overflowed midway; they now give the formula's
  numbers (bit-identical to it wherever it does not overflow);
- PyTorch tensors no kernel can handle (sparse, nested, float8, an ``out=`` that
  overlaps itself or requires grad) raised PyTorch's own errors; they are refused
  with TypeError/ValueError naming the argument;
- assigning the wrong kind of object to a quantizer's or array's part only failed
  later, with AttributeError (even in ``repr``); assignments are checked now;
- NumPy arrays of ml_dtypes' dtypes (bfloat16, float8, int4) failed with NumPy's
  own message, which names no argument.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qarray import (
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizationParameters,
    UniformQuantizer,
)
from qarray.params import STABILITY_CONST, ZERO_POINT_LIMIT, choose_parameters

from bits import assert_same_bits

FLOAT64_MAX = float(numpy.finfo(numpy.float64).max)


def _parameters(rmin: float, rmax: float, n_bits: int = 8, **options: Any) -> tuple:
    stats = MinMaxQuantizationStats(rmax=rmax, rmin=rmin)
    return choose_parameters(QuantizationOptions(n_bits, **options), stats)


def _plain_formula(rmin: float, rmax: float, n_bits: int, is_signed: bool) -> tuple:
    """The asymmetric rule of the specification, computed naively in float64.

    Returns ``(scale, zero_point)`` as float64, non-finite where an intermediate overflows.
    """
    rmin64, rmax64 = numpy.float64(rmin), numpy.float64(rmax)
    offset = 2 ** (n_bits - 1) if is_signed else 0
    with numpy.errstate(over="ignore", invalid="ignore"):
        scale = (rmax64 - rmin64) / numpy.float64(2**n_bits - 1)
        zero_point = numpy.round(
            (rmax64 * -offset - rmin64 * numpy.float64(2**n_bits - 1 - offset)) / (rmax64 - rmin64)
        )
    return scale, zero_point


# -- ranges with a finite width ------------------------------------------------------------


def test_range_near_the_float64_limit_gets_the_true_zero_point():
    """[-1e306, 1e306] at 8 bits: zero point 127.5 rounded half to even, not inf."""
    scale, zero_point, offset = _parameters(-1e306, 1e306)
    assert (float(scale), zero_point, offset) == (2e306 / 255, 128, 0)


@pytest.mark.parametrize(
    "rmin, rmax, n_bits, is_signed, expected_zero_point",
    [
        (-1e306, 1e306, 8, True, 0),
        (1e308, 1.5e308, 8, False, -510),
        (-1.7e308, -1e308, 8, True, 491),
        (-8e307, 8e307, 16, False, 32768),
        (-8e307, 8e307, 53, True, -1),  # exactly -0.5; float64 products round it to -1
    ],
)
def test_wide_finite_ranges_match_the_formula_on_a_scaled_down_range(
    rmin: float, rmax: float, n_bits: int, is_signed: bool, expected_zero_point: int
):
    """The zero point is scale-free: it is the plain formula's on the range times 2**-64."""
    _, plain = _plain_formula(rmin * 2.0**-64, rmax * 2.0**-64, n_bits, is_signed)
    scale, zero_point, _ = _parameters(rmin, rmax, n_bits, is_signed=is_signed)
    assert zero_point == int(plain) == expected_zero_point
    assert float(scale) == (rmax - rmin) / (2**n_bits - 1)


def test_quant_and_dequant_work_on_a_range_near_the_float64_limit():
    values = numpy.array([-1e306, -2.5e305, 0.0, 7e305, 1e306])
    qa = QuantizedArray(8, values)
    scale = float(qa.quantizer.scale)
    expected = numpy.clip(numpy.rint(values / scale + 128.0), 0, 255).astype(numpy.int64)
    numpy.testing.assert_array_equal(qa.qvalues, expected)
    restored = qa.dequant()
    assert numpy.all(numpy.isfinite(restored))
    # within one step: the rounded zero point shifts the grid by up to half a step
    numpy.testing.assert_allclose(restored, values, rtol=0, atol=scale)


def test_signed_quantization_of_a_range_at_the_top_of_float64():
    values = numpy.array([1e308, 1.2e308, 1.5e308])
    qa = QuantizedArray(8, values, is_signed=True)
    assert qa.qvalues.min() == -128 and qa.qvalues.max() == 127
    numpy.testing.assert_allclose(qa.dequant(), values, rtol=0, atol=float(qa.quantizer.scale) / 2)


def test_asymmetric_range_wider_than_float64_is_refused_clearly():
    """rmax - rmin overflows: the formula has no finite scale, so it is a ValueError."""
    with pytest.raises(ValueError, match=r"too wide: rmax - rmin overflows float64"):
        _parameters(-1.7e308, 1.7e308)


def test_symmetric_quantization_handles_a_range_wider_than_float64():
    values = numpy.array([-1.7e308, 0.0, 1.7e308])
    qa = QuantizedArray(8, values, is_signed=True, is_symmetric=True)
    assert float(qa.quantizer.scale) == 1.7e308 / 127
    numpy.testing.assert_array_equal(qa.qvalues, [-127, 0, 127])
    numpy.testing.assert_array_equal(qa.dequant(), numpy.float64(1.7e308 / 127) * numpy.array([-127.0, 0.0, 127.0]))


@pytest.mark.parametrize("value", [1.7e308, -1.7e308, FLOAT64_MAX])
def test_single_huge_value_follows_the_single_value_rule(value: float):
    qa = QuantizedArray(8, numpy.array([value, value]))
    assert (float(qa.quantizer.scale), qa.quantizer.zero_point) == (value, 0)
    numpy.testing.assert_array_equal(qa.qvalues, [1, 1])
    numpy.testing.assert_array_equal(qa.dequant(), [value, value])


@settings(max_examples=400, deadline=None)
@given(
    ends=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=2, max_size=2),
    n_bits=st.integers(1, 53),
    is_signed=st.booleans(),
)
def test_parameters_are_bit_identical_to_the_plain_formula_wherever_it_is_finite(
    ends: list, n_bits: int, is_signed: bool
):
    rmin, rmax = sorted(ends)
    with numpy.errstate(over="ignore"):
        width = numpy.float64(rmax) - numpy.float64(rmin)
    if not (math.isfinite(width) and width >= STABILITY_CONST):
        return  # refused (infinite width) or the single-value rule: not this formula
    scale, plain = _plain_formula(rmin, rmax, n_bits, is_signed)
    if not math.isfinite(plain):
        return  # the plain formula overflows: see the scaling property below
    if not abs(plain) < ZERO_POINT_LIMIT:
        with pytest.raises(ValueError, match="does not fit int64"):
            _parameters(rmin, rmax, n_bits, is_signed=is_signed)
        return
    got_scale, got_zero_point, offset = _parameters(rmin, rmax, n_bits, is_signed=is_signed)
    assert_same_bits(got_scale, scale)
    assert got_zero_point == int(plain)
    assert offset == (2 ** (n_bits - 1) if is_signed else 0)


@settings(max_examples=400, deadline=None)
@given(
    low=st.floats(-1e3, 1e3),
    width=st.floats(1e-3, 2e3),
    n_bits=st.integers(1, 53),
    is_signed=st.booleans(),
    headroom=st.integers(0, 8),
)
def test_scaling_a_range_by_a_power_of_two_up_to_overflow_keeps_its_zero_point(
    low: float, width: float, n_bits: int, is_signed: bool, headroom: int
):
    """Multiplying a range by 2**m changes no zero point, also where the formula would overflow."""
    rmin, rmax = low, low + width
    if not rmax - rmin >= STABILITY_CONST:
        return
    _, plain = _plain_formula(rmin, rmax, n_bits, is_signed)
    if not (math.isfinite(plain) and abs(plain) < ZERO_POINT_LIMIT):
        return
    biggest = max(abs(rmin), abs(rmax))
    power = 1022 - headroom - math.frexp(biggest)[1]  # puts the range just below 2**(1022 - headroom)
    big_min, big_max = math.ldexp(rmin, power), math.ldexp(rmax, power)
    if not math.isfinite(big_max - big_min):
        return
    scale, zero_point, _ = _parameters(big_min, big_max, n_bits, is_signed=is_signed)
    assert zero_point == int(plain)
    assert float(scale) == (big_max - big_min) / (2**n_bits - 1)


# -- PyTorch tensors no kernel handles -----------------------------------------------------


def _torch() -> Any:
    return pytest.importorskip("torch")


def _quantizer() -> UniformQuantizer:
    return UniformQuantizer(
        QuantizationOptions(8, is_signed=True), params=UniformQuantizationParameters(0.1, 0, 128)
    )


def _sparse_coo(torch: Any, dtype: Any) -> Any:
    return torch.ones(4, dtype=dtype).to_sparse()


def _sparse_csr(torch: Any, dtype: Any) -> Any:
    return torch.ones((2, 2), dtype=dtype).to_sparse_csr()


def _nested(torch: Any, dtype: Any) -> Any:
    return torch.nested.nested_tensor([torch.ones(2, dtype=dtype), torch.ones(3, dtype=dtype)])


UNSUPPORTED_LAYOUTS = {"sparse_coo": _sparse_coo, "sparse_csr": _sparse_csr, "nested": _nested}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("layout", sorted(UNSUPPORTED_LAYOUTS))
@pytest.mark.parametrize(
    "call, argument, kind",
    [
        (lambda q, x: q.quant(x), "values", "float"),
        (lambda q, x: q.dequant(x), "qvalues", "int"),
        (lambda q, x: MinMaxQuantizationStats().compute_quantization_stats(x), "values", "float"),
        (lambda q, x: MinMaxQuantizationStats().update(x), "values", "float"),
        (lambda q, x: QuantizedArray(8, x), "values", "float"),
        (lambda q, x: QuantizedArray(8, x, value_is_float=False, scale=0.1, zero_point=0, offset=0), "values", "int"),
    ],
    ids=["quant", "dequant", "calibrate", "update", "QuantizedArray", "QuantizedArray-int"],
)
def test_sparse_and_nested_tensors_are_refused_naming_the_argument(
    layout: str, call: Callable, argument: str, kind: str
):
    torch = _torch()
    tensor = UNSUPPORTED_LAYOUTS[layout](torch, torch.float32 if kind == "float" else torch.int64)
    with pytest.raises(TypeError, match=rf"^{argument} must be a dense"):
        call(_quantizer(), tensor)


@pytest.mark.parametrize("dtype_name", ["float8_e4m3fn", "float8_e5m2"])
@pytest.mark.parametrize(
    "call",
    [
        lambda q, x: q.quant(x),
        lambda q, x: MinMaxQuantizationStats().compute_quantization_stats(x),
        lambda q, x: MinMaxQuantizationStats().update(x),
        lambda q, x: QuantizedArray(8, x),
    ],
    ids=["quant", "calibrate", "update", "QuantizedArray"],
)
def test_float8_tensors_are_refused_naming_values(dtype_name: str, call: Callable):
    torch = _torch()
    values = torch.ones(3).to(getattr(torch, dtype_name))
    with pytest.raises(TypeError, match=rf"^values has dtype torch.{dtype_name}"):
        call(_quantizer(), values)


def test_bfloat16_tensors_still_calibrate_and_quantize():
    torch = _torch()
    values = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.bfloat16)
    qa = QuantizedArray(8, values)
    expected = QuantizedArray(8, values.to(torch.float64).numpy())
    numpy.testing.assert_array_equal(qa.qvalues.numpy(), expected.qvalues)


def _bad_outputs(torch: Any, dtype: Any) -> dict:
    return {
        "expanded": (lambda: torch.zeros(1, dtype=dtype).expand(4), ValueError, "must not overlap itself"),
        "requires-grad": (
            lambda: torch.zeros(4, dtype=dtype, requires_grad=dtype.is_floating_point),
            ValueError,
            "must not require grad",
        ),
        "sparse": (lambda: torch.zeros(4, dtype=dtype).to_sparse(), TypeError, "must be a dense"),
        "float8": (lambda: torch.zeros(4, dtype=torch.float8_e4m3fn), TypeError, "has dtype torch.float8"),
    }


@pytest.mark.parametrize("case", ["expanded", "sparse", "float8"])
def test_quant_refuses_an_unusable_out_before_writing(case: str):
    torch = _torch()
    make, error, text = _bad_outputs(torch, torch.int64)[case]
    out = make()
    with pytest.raises(error, match=rf"^out {text}"):
        _quantizer().quant(torch.linspace(-1.0, 1.0, 4), out=out)
    if case == "expanded":
        assert out.tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("case", ["expanded", "requires-grad", "sparse", "float8"])
def test_dequant_refuses_an_unusable_out_before_writing(case: str):
    torch = _torch()
    make, error, text = _bad_outputs(torch, torch.float64)[case]
    out = make()
    with pytest.raises(error, match=rf"^out {text}"):
        _quantizer().dequant(torch.arange(4), out=out)
    if case in ("expanded", "requires-grad"):
        assert out.tolist() == [0.0, 0.0, 0.0, 0.0]


def test_a_numpy_out_that_overlaps_itself_is_refused():
    """A writeable broadcast view would silently keep only the last element written."""
    out = numpy.lib.stride_tricks.as_strided(numpy.zeros(1, dtype=numpy.int64), shape=(4,), strides=(0,))
    with pytest.raises(ValueError, match=r"^out must not overlap itself"):
        _quantizer().quant(numpy.linspace(-1.0, 1.0, 4), out=out)


def test_a_tensor_out_with_a_broadcast_axis_of_length_one_is_accepted():
    torch = _torch()
    out = torch.zeros((1, 4), dtype=torch.int64)
    result = _quantizer().quant(torch.linspace(-1.0, 1.0, 4).reshape(1, 4), out=out)
    assert result is out and out.tolist() == [[-10, -3, 3, 10]]


# -- assignments are checked ----------------------------------------------------------------


@pytest.mark.parametrize(
    "attribute, value, expected",
    [
        ("params", None, "UniformQuantizationParameters"),
        ("params", QuantizationOptions(8), "UniformQuantizationParameters"),
        ("options", "junk", "QuantizationOptions or None"),
        ("stats", None, "MinMaxQuantizationStats"),
        ("stats", {"rmin": 0.0}, "MinMaxQuantizationStats"),
        ("no_clipping", 1, "bool"),
    ],
)
def test_quantizer_parts_are_checked_on_assignment(attribute: str, value: Any, expected: str):
    quantizer = QuantizedArray(8, numpy.linspace(-1.0, 1.0, 5)).quantizer
    before = repr(quantizer)
    with pytest.raises(TypeError, match=rf"^UniformQuantizer\.{attribute} must be a {expected}, got "):
        setattr(quantizer, attribute, value)
    assert repr(quantizer) == before


def test_quantizer_parts_accept_their_own_class():
    quantizer = UniformQuantizer(QuantizationOptions(8))
    params = UniformQuantizationParameters(0.5, 3, 0)
    quantizer.params = params
    quantizer.options = None
    quantizer.options = QuantizationOptions(4)
    quantizer.stats = MinMaxQuantizationStats(rmax=1.0, rmin=0.0)
    assert quantizer.params is params and quantizer.n_bits == 4 and float(quantizer.rmax) == 1.0


@pytest.mark.parametrize(
    "attribute, value, error, message",
    [
        ("quantizer", None, TypeError, r"^QuantizedArray\.quantizer must be a UniformQuantizer, got None"),
        ("quantizer", QuantizationOptions(8), TypeError, r"^QuantizedArray\.quantizer must be a UniformQuantizer"),
        ("values", "junk", TypeError, r"^values must be an array"),
        ("qvalues", {"a": 1}, TypeError, r"^qvalues must be an array"),
        ("n_bits", "8", TypeError, r"^QuantizedArray\.n_bits must be an int"),
        ("n_bits", 0, ValueError, r"^QuantizedArray\.n_bits must be an int between 1 and"),
    ],
)
def test_quantized_array_attributes_are_checked_on_assignment(
    attribute: str, value: Any, error: type, message: str
):
    qa = QuantizedArray(8, numpy.linspace(-1.0, 1.0, 5))
    before = repr(qa)
    with pytest.raises(error, match=message):
        setattr(qa, attribute, value)
    assert repr(qa) == before


def test_quantized_array_values_assigned_as_a_list_become_an_array():
    qa = QuantizedArray(4, numpy.array([0.0, 1.5]))
    qa.values = [0.7]
    numpy.testing.assert_array_equal(qa.quant(), [7])
    qa.qvalues = [3]
    numpy.testing.assert_array_equal(qa.dequant(), [float(qa.quantizer.scale) * 3])


# -- NumPy arrays of ml_dtypes' dtypes ------------------------------------------------------


def _ml_dtypes() -> Any:
    return pytest.importorskip("ml_dtypes")


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda q, x: q.quant(x), "values"),
        (lambda q, x: q.dequant(x), "qvalues"),
        (lambda q, x: MinMaxQuantizationStats().compute_quantization_stats(x), "values"),
        (lambda q, x: MinMaxQuantizationStats().update(x), "values"),
        (lambda q, x: QuantizedArray(8, x), "values"),
        (lambda q, x: QuantizedArray(8, x, value_is_float=False, scale=0.1, zero_point=0, offset=0), "values"),
        (lambda q, x: q.quant(numpy.ones(3), out=x), "out"),
        (lambda q, x: q.dequant(numpy.arange(3), out=x), "out"),
        (lambda q, x: MinMaxQuantizationStats(uvalues=x), "uvalues"),
    ],
    ids=["quant", "dequant", "calibrate", "update", "QuantizedArray", "QuantizedArray-int", "quant-out",
         "dequant-out", "uvalues"],
)
@pytest.mark.parametrize("dtype_name", ["bfloat16", "int4"])
def test_ml_dtypes_numpy_arrays_are_refused_naming_the_argument(call: Callable, argument: str, dtype_name: str):
    ml_dtypes = _ml_dtypes()
    array = numpy.ones(3, dtype=getattr(ml_dtypes, dtype_name))
    with pytest.raises(TypeError, match=rf"^{argument} has dtype {dtype_name}, which NumPy classifies as neither"):
        call(_quantizer(), array)


def test_ml_dtypes_float8_numpy_arrays_are_refused_naming_values():
    ml_dtypes = _ml_dtypes()
    with pytest.raises(TypeError, match=r"^values has dtype float8_e4m3fn"):
        _quantizer().quant(numpy.ones(3, dtype=ml_dtypes.float8_e4m3fn))


@pytest.mark.parametrize(
    "call",
    [lambda q, d: q.quant(numpy.ones(3), dtype=d), lambda q, d: q.dequant(numpy.arange(3), dtype=d)],
    ids=["quant", "dequant"],
)
def test_ml_dtypes_bfloat16_as_the_dtype_argument_is_refused_naming_dtype(call: Callable):
    ml_dtypes = _ml_dtypes()
    with pytest.raises(TypeError, match=r"^dtype must be one of"):
        call(_quantizer(), ml_dtypes.bfloat16)
