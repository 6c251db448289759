"""qarray gives the integers of the reference, bit for bit, on every array library.

Each test quantizes small arrays with qarray on one backend (the ``xb``
fixture) and with the independent float64 NumPy reference in
``tests/reference.py``, then checks that parameters, integers and de-quantized
values agree exactly, with the right dtypes, in the input's library and on its
device. Widths, option sets and input dtypes are combined so that every width
from 1 to 32 (and a few up to 53) meets several option sets without running the
full product.
"""

from __future__ import annotations

from typing import Any, List, Tuple

import array_api_compat
import numpy
import pytest

import qarray

import reference
from bits import assert_same_bits
from reference import Options

RNG_SEED = 20240601

WIDTHS = list(range(1, 33)) + [40, 48, 53]


# -- helpers ------------------------------------------------------------------------------


def assert_in_place_of(result: Any, source: Any) -> None:
    """The result is an array of the source's library, on the source's device."""
    assert array_api_compat.array_namespace(result) is array_api_compat.array_namespace(source)
    assert array_api_compat.device(result) == array_api_compat.device(source)


def assert_identical(result: Any, expected: numpy.ndarray, xb: Any) -> None:
    """The result has the expected dtype and shape, and the very same bits."""
    assert result.dtype == getattr(array_api_compat.array_namespace(result), expected.dtype.name)
    host = xb.to_numpy(result)
    assert host.dtype == expected.dtype
    assert host.shape == expected.shape
    if expected.dtype.kind == "f":
        unsigned = numpy.dtype(f"uint{8 * expected.dtype.itemsize}")
        numpy.testing.assert_array_equal(host.view(unsigned), expected.view(unsigned))
    else:
        numpy.testing.assert_array_equal(host, expected)


def make_options(options: Options) -> qarray.QuantizationOptions:
    """qarray options with the same six fields as the reference options."""
    made = qarray.QuantizationOptions(
        options.n_bits,
        is_signed=options.is_signed,
        is_symmetric=options.is_symmetric,
        is_qat=options.is_qat,
    )
    made.is_narrow = options.is_narrow
    made.is_precomputed_qat = options.is_precomputed_qat
    return made


def assert_parameters_match(quantizer: qarray.UniformQuantizer, expected: reference.Parameters) -> None:
    """Scale, zero point and offset are host numbers equal to the reference's, bit for bit."""
    assert isinstance(quantizer.scale, numpy.float64)
    assert_same_bits(quantizer.scale, numpy.float64(expected.scale))
    assert isinstance(quantizer.zero_point, (int, numpy.integer))
    assert quantizer.zero_point == expected.zero_point
    assert isinstance(quantizer.offset, (int, numpy.integer))
    assert quantizer.offset == expected.offset


def random_values(count: int, seed: int, dtype: Any) -> numpy.ndarray:
    """Normally distributed values with a shifted centre, in ``dtype``."""
    rng = numpy.random.default_rng(seed)
    return (rng.standard_normal(count) * 3.0 + 0.7).astype(dtype)


def quarter_grid(n_bits: int, seed: int, dtype: Any) -> numpy.ndarray:
    """Values on the grid k * 0.25 (as a QAT model produces), with at most 2**n_bits levels."""
    levels = min(2**n_bits, 12)
    rng = numpy.random.default_rng(seed)
    grid = -0.5 + 0.25 * numpy.arange(levels)
    return rng.permutation(numpy.concatenate([grid, grid[: levels // 2]])).astype(dtype)


NON_UNIFORM = numpy.array([0.0, 0.1, 0.35, 1.0, 0.1, 0.35])


# -- the case table -----------------------------------------------------------------------

FLAVOURS = {
    "unsigned": dict(),
    "signed": dict(is_signed=True),
    "unsigned-narrow": dict(is_narrow=True),
    "signed-narrow": dict(is_signed=True, is_narrow=True),
    "symmetric": dict(is_signed=True, is_symmetric=True),
    "symmetric-narrow": dict(is_signed=True, is_symmetric=True, is_narrow=True),
    "qat-grid": dict(is_qat=True),
    "qat-signed-grid": dict(is_qat=True, is_signed=True),
    "qat-non-uniform": dict(is_qat=True),
}


def _cases() -> List[Tuple[int, str, str]]:
    """Every width with every flavour that is valid for it; the input dtype alternates."""
    cases = []
    for n_bits in WIDTHS:
        for index, flavour in enumerate(FLAVOURS):
            if "symmetric" in flavour and n_bits < 2:
                continue
            dtype = "float32" if (n_bits + index) % 2 else "float64"
            cases.append((n_bits, flavour, dtype))
    return cases


def _case_values(n_bits: int, flavour: str, dtype: str) -> numpy.ndarray:
    if flavour.endswith("grid"):
        return quarter_grid(n_bits, RNG_SEED + n_bits, dtype)
    if flavour == "qat-non-uniform":
        return NON_UNIFORM.astype(dtype)
    return random_values(23, RNG_SEED + n_bits, dtype)


@pytest.mark.parametrize("n_bits, flavour, dtype", _cases(), ids=lambda v: str(v))
def test_quantized_array_matches_reference(xb, n_bits, flavour, dtype):
    """Statistics, parameters, integers and de-quantized values equal the reference's."""
    options = Options(n_bits, **FLAVOURS[flavour])
    host = _case_values(n_bits, flavour, dtype)
    expected = reference.quantize(host, options)
    source = xb.asarray(host)

    qa = qarray.QuantizedArray(n_bits, source, options=make_options(options))

    assert float(qa.quantizer.rmin) == expected.stats.rmin
    assert float(qa.quantizer.rmax) == expected.stats.rmax
    assert_parameters_match(qa.quantizer, expected.params)
    assert_in_place_of(qa.qvalues, source)
    assert_identical(qa.qvalues, expected.qvalues, xb)
    dequantized = qa.dequant()
    assert_in_place_of(dequantized, source)
    assert_identical(dequantized, expected.values, xb)


@pytest.mark.parametrize("n_bits", [1, 2, 3, 4, 8, 32])
def test_qat_grid_infers_the_grid_step_as_scale(xb, n_bits):
    """QAT values on a k * 0.25 grid get scale 0.25 and integers k, not clipped."""
    host = quarter_grid(n_bits, RNG_SEED, numpy.float64)
    qa = qarray.QuantizedArray(n_bits, xb.asarray(host), options=qarray.QuantizationOptions(n_bits, is_qat=True))
    assert qa.quantizer.scale == 0.25
    assert qa.quantizer.zero_point == 0
    numpy.testing.assert_array_equal(xb.to_numpy(qa.qvalues), numpy.rint(host / 0.25).astype(numpy.int64))
    assert xb.to_numpy(qa.qvalues).min() < 0  # the grid starts at -0.5: negative integers are kept


@pytest.mark.parametrize("n_bits", [2, 8])
def test_qat_non_uniform_values_fall_back_to_the_range_scale(xb, n_bits):
    """QAT values that are not on a grid get scale (rmax - rmin) / (2**n - 1)."""
    qa = qarray.QuantizedArray(n_bits, xb.asarray(NON_UNIFORM), options=qarray.QuantizationOptions(n_bits, is_qat=True))
    assert qa.quantizer.scale == numpy.float64(1.0) / (2**n_bits - 1)
    assert qa.quantizer.zero_point == 0


# -- single values and near-constant ranges ------------------------------------------------

CONSTANTS = [0.0, 5e-7, -5e-7, -3.0, 2.5, 1e6]
CONSTANT_FLAVOURS = ["unsigned", "signed", "symmetric-narrow", "qat-grid", "unsigned-narrow"]


def _constant_cases() -> List[Tuple[float, str, int, str]]:
    """Every constant with every flavour; widths and input dtypes rotate through the cases."""
    cases = []
    for index, (constant, flavour) in enumerate((c, f) for c in CONSTANTS for f in CONSTANT_FLAVOURS):
        widths = [2, 8, 32] if "symmetric" in flavour else [1, 2, 8, 32]
        cases.append((constant, flavour, widths[index % len(widths)], "float32" if index % 3 == 0 else "float64"))
    return cases


@pytest.mark.parametrize("constant, flavour, n_bits, dtype", _constant_cases(), ids=lambda v: str(v))
def test_constant_input_matches_reference(xb, constant, flavour, n_bits, dtype):
    """A single repeated value follows the single-value rule (offset 0, scale 1 or the value)."""
    options = Options(n_bits, **FLAVOURS[flavour])
    host = numpy.full(7, constant, dtype=dtype)
    expected = reference.quantize(host, options)
    assert expected.params.offset == 0

    qa = qarray.QuantizedArray(n_bits, xb.asarray(host), options=make_options(options))

    assert_parameters_match(qa.quantizer, expected.params)
    assert_identical(qa.qvalues, expected.qvalues, xb)
    assert_identical(qa.dequant(), expected.values, xb)


@pytest.mark.parametrize(
    "constant, scale, zero_point, qvalue",
    [(0.0, 1.0, 0, 0), (5e-7, 1.0, 0, 0), (-5e-7, 1.0, 0, 0), (-3.0, -3.0, 0, 1), (2.5, 2.5, 0, 1)],
)
def test_constant_input_known_parameters(xb, constant, scale, zero_point, qvalue):
    """Near zero: scale 1 and zero point rint(-value); otherwise scale = the value, integer 1."""
    qa = qarray.QuantizedArray(8, xb.asarray(numpy.full(3, constant)), is_signed=True)
    assert (qa.quantizer.scale, qa.quantizer.zero_point, qa.quantizer.offset) == (scale, zero_point, 0)
    numpy.testing.assert_array_equal(xb.to_numpy(qa.qvalues), [qvalue] * 3)


NEAR_CONSTANT = [
    (0.0, 0.9e-6),
    (0.0, 1.1e-6),
    (1.0, 0.999e-6),
    (1.0, 1.001e-6),
    (-2.0, 0.5e-6),
    (-2.0, 2e-6),
    (-0.5e-6, 0.9e-6),
    (1000.0, 1.5e-6),
]


@pytest.mark.parametrize("start, width", NEAR_CONSTANT, ids=lambda v: repr(v))
@pytest.mark.parametrize("n_bits, flavour", [(2, "unsigned"), (8, "signed"), (16, "symmetric")])
def test_near_constant_range_matches_reference(xb, start, width, n_bits, flavour):
    """Ranges just below 1e-6 take the single-value rule, just above the ordinary one."""
    options = Options(n_bits, **FLAVOURS[flavour])
    host = numpy.linspace(start, start + width, 5)
    assert (host.max() - host.min() < reference.STABILITY_CONST) == (width < 1e-6)
    expected = reference.quantize(host, options)

    qa = qarray.QuantizedArray(n_bits, xb.asarray(host), options=make_options(options))

    assert_parameters_match(qa.quantizer, expected.params)
    assert_identical(qa.qvalues, expected.qvalues, xb)


def test_near_constant_float32_input_matches_reference(xb):
    """float32 neighbours of 1.0 form a range below 1e-6: one single value."""
    host = numpy.array([1.0, numpy.nextafter(numpy.float32(1.0), numpy.float32(2.0))], dtype=numpy.float32)
    expected = reference.quantize(host, Options(8))
    qa = qarray.QuantizedArray(8, xb.asarray(host))
    assert_parameters_match(qa.quantizer, expected.params)
    assert_identical(qa.qvalues, expected.qvalues, xb)


# -- exact ties -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("zero_point", [0, 3, -4])
def test_exact_ties_round_half_to_even(xb, dtype, zero_point):
    """values / scale + zero_point landing on x.5 rounds to the even neighbour."""
    values = (numpy.arange(-6, 6) * 0.5 + 0.25).astype(dtype)  # / 0.5 gives k + 0.5 exactly
    quantizer = qarray.UniformQuantizer(
        qarray.QuantizationOptions(8, is_signed=True),
        params=qarray.UniformQuantizationParameters(scale=0.5, zero_point=zero_point, offset=128),
    )
    halves = numpy.arange(-6, 6) + 0.5 + zero_point
    even = numpy.where(numpy.floor(halves) % 2 == 0, numpy.floor(halves), numpy.ceil(halves)).astype(numpy.int64)

    result = quantizer.quant(xb.asarray(values))

    assert_identical(result, even, xb)
    assert_identical(result, reference.quant(values, 0.5, zero_point, (-128, 127)), xb)


def test_known_ties_round_half_to_even(xb):
    """0.25, 0.75, 1.25, -0.25, -0.75 at scale 0.5 give 0, 2, 2, 0, -2."""
    quantizer = qarray.UniformQuantizer(
        qarray.QuantizationOptions(4, is_signed=True),
        params=qarray.UniformQuantizationParameters(scale=0.5, zero_point=0, offset=8),
    )
    result = quantizer.quant(xb.asarray(numpy.array([0.25, 0.75, 1.25, -0.25, -0.75])))
    numpy.testing.assert_array_equal(xb.to_numpy(result), [0, 2, 2, 0, -2])


def test_calibrated_value_ties_round_half_to_even(xb):
    """Calibrating on [0, 3] with 2 bits gives scale 1: 0.5, 1.5 and 2.5 round to 0, 2, 2."""
    host = numpy.array([0.0, 0.5, 1.5, 2.5, 3.0])
    qa = qarray.QuantizedArray(2, xb.asarray(host))
    assert qa.quantizer.scale == 1.0
    numpy.testing.assert_array_equal(xb.to_numpy(qa.qvalues), [0, 0, 2, 2, 3])
    assert_identical(qa.qvalues, reference.quantize(host, Options(2)).qvalues, xb)


@pytest.mark.parametrize("rmin, rmax, zero_point", [(-0.5, 2.5, 0), (-1.5, 1.5, 2), (-2.5, 0.5, 2)])
def test_zero_point_ties_round_half_to_even(xb, rmin, rmax, zero_point):
    """A zero point of exactly x.5 rounds to the even neighbour (2 bits, unsigned)."""
    host = numpy.array([rmin, 0.0, rmax])
    qa = qarray.QuantizedArray(2, xb.asarray(host))
    assert qa.quantizer.zero_point == zero_point
    assert reference.quantize(host, Options(2)).params.zero_point == zero_point


# -- QAT with precomputed parameters and no clipping ----------------------------------------


@pytest.mark.parametrize("n_bits, is_signed", [(3, False), (4, True), (8, True)])
def test_precomputed_qat_keeps_its_scale_and_clips(xb, n_bits, is_signed):
    """A QAT scale set before computing parameters is kept, and quant clips to the range."""
    options = make_options(Options(n_bits, is_signed=is_signed, is_qat=True, is_precomputed_qat=True))
    host = random_values(19, RNG_SEED, numpy.float64)
    quantizer = qarray.UniformQuantizer(options, params=qarray.UniformQuantizationParameters(scale=0.3))
    quantizer.compute_quantization_stats(xb.asarray(host))
    quantizer.compute_quantization_parameters(options, quantizer.stats)

    ref_options = Options(n_bits, is_signed=is_signed, is_qat=True, is_precomputed_qat=True)
    expected_params = reference.choose_parameters(ref_options, reference.compute_stats(host), previous_scale=0.3)
    assert expected_params.scale == 0.3
    assert_parameters_match(quantizer, expected_params)
    expected = reference.quant(host, 0.3, 0, reference.clip_range(ref_options, expected_params.offset))
    assert_identical(quantizer.quant(xb.asarray(host)), expected, xb)


def test_recomputing_parameters_without_precomputed_qat_replaces_the_scale(xb):
    """Outside precomputed QAT a scale set earlier is recomputed from the new statistics."""
    options = qarray.QuantizationOptions(4)
    host = random_values(11, RNG_SEED, numpy.float64)
    quantizer = qarray.UniformQuantizer(options, params=qarray.UniformQuantizationParameters(scale=0.3))
    quantizer.compute_quantization_stats(xb.asarray(host))
    quantizer.compute_quantization_parameters(options, quantizer.stats)
    expected = reference.choose_parameters(Options(4), reference.compute_stats(host))
    assert_parameters_match(quantizer, expected)


@pytest.mark.parametrize("n_bits, is_signed", [(2, False), (5, True), (31, True)])
def test_no_clipping_keeps_values_outside_the_range(xb, n_bits, is_signed):
    """With no_clipping the integers may leave the n_bits range, as the reference computes."""
    options = Options(n_bits, is_signed=is_signed)
    host = random_values(17, RNG_SEED + n_bits, numpy.float64)
    params = reference.choose_parameters(options, reference.compute_stats(host[:5]))
    quantizer = qarray.UniformQuantizer(
        make_options(options),
        params=qarray.UniformQuantizationParameters(params.scale, params.zero_point, params.offset),
        no_clipping=True,
    )
    expected = reference.quant(host, params.scale, params.zero_point, None)
    low, high = -params.offset, 2**n_bits - 1 - params.offset
    assert expected.min() < low or expected.max() > high  # the case does leave the range

    assert_identical(quantizer.quant(xb.asarray(host)), expected, xb)


# -- dequantization dtypes and zero-point kinds ----------------------------------------------

ZERO_POINTS = {
    "int": 5,
    "float": -3.0,
    "array": numpy.array([[1], [-2], [7]], dtype=numpy.int64),
    "float-array": numpy.array([0.0, 4.0, -1.0, 2.0]),
}


@pytest.mark.parametrize("zero_point_kind", sorted(ZERO_POINTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dequant_matches_reference(xb, zero_point_kind, dtype):
    """dequant computes scale * (q - zero_point) in float64 and returns the asked dtype."""
    zero_point = ZERO_POINTS[zero_point_kind]
    scale = numpy.nextafter(0.1, 1.0)
    qvalues = numpy.arange(-6, 6, dtype=numpy.int64).reshape(3, 4) * 1234567
    quantizer = qarray.UniformQuantizer(
        qarray.QuantizationOptions(32, is_signed=True),
        params=qarray.UniformQuantizationParameters(scale=scale, zero_point=zero_point, offset=2**31),
    )
    source = xb.asarray(qvalues)

    result = quantizer.dequant(source, dtype=getattr(numpy, dtype))

    assert_in_place_of(result, source)
    assert_identical(result, reference.dequant(qvalues, scale, zero_point, getattr(numpy, dtype)), xb)


@pytest.mark.parametrize("zero_point_kind", ["array", "float-array", "float"])
def test_quant_with_zero_point_kinds_matches_reference(xb, zero_point_kind):
    """Per-channel (array) and float zero points broadcast and give the reference's integers."""
    zero_point = ZERO_POINTS[zero_point_kind]
    host = random_values(12, RNG_SEED, numpy.float32).reshape(3, 4)
    quantizer = qarray.UniformQuantizer(
        qarray.QuantizationOptions(6, is_signed=True),
        params=qarray.UniformQuantizationParameters(scale=0.2, zero_point=zero_point, offset=32),
    )
    source = xb.asarray(host)
    result = quantizer.quant(source)
    assert_in_place_of(result, source)
    assert_identical(result, reference.quant(host, 0.2, zero_point, (-32, 31)), xb)


# -- statistics -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_statistics_match_reference(xb, dtype):
    """min, max and unique values rounded to 2 decimals in float64 equal the reference's."""
    host = numpy.concatenate(
        [random_values(40, RNG_SEED, dtype), numpy.array([0.125, 0.015, -0.005, 0.005, 2.675], dtype=dtype)]
    )
    expected = reference.compute_stats(host)
    stats = qarray.MinMaxQuantizationStats()
    source = xb.asarray(host)

    stats.compute_quantization_stats(source)

    assert float(stats.rmin) == expected.rmin
    assert float(stats.rmax) == expected.rmax
    assert_in_place_of(stats.uvalues, source)
    assert stats.uvalues.dtype == xb.xp.float64
    numpy.testing.assert_array_equal(xb.to_numpy(stats.uvalues), expected.uvalues)


UVALUE_SETS = [
    ([0.0, 0.25, 0.5, 1.0], 2, "uniform with a gap"),
    ([0.0, 0.25, 0.5, 0.75, 1.0], 2, "more values than levels"),
    ([0.5], 4, "a single value"),
    ([0.0, 0.1, 0.35, 1.0], 4, "not a grid"),
    ([0.0, 0.1, 0.21, 0.3], 4, "off the grid within atol"),
    ([0.0, 0.1, 0.23, 0.3], 4, "off the grid beyond atol"),
    ([-1.0, 1.0], 1, "two values, one bit"),
]


@pytest.mark.parametrize("uvalues, n_bits, label", UVALUE_SETS, ids=[case[2] for case in UVALUE_SETS])
def test_check_is_uniform_quantized_matches_reference(xb, uvalues, n_bits, label):
    """The grid test agrees with the reference (count limits and tolerances included)."""
    host = numpy.array(uvalues, dtype=numpy.float64)
    stats = qarray.MinMaxQuantizationStats(rmax=host.max(), rmin=host.min(), uvalues=xb.asarray(host))
    result = stats.check_is_uniform_quantized(qarray.QuantizationOptions(n_bits))
    assert result is reference.check_is_uniform_quantized(host, n_bits)
