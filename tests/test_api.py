"""The public API: names, signatures and the behaviour users rely on.

Names, arguments and defaults follow Concrete ML's quantizers API reference;
behaviour follows the specification (copies, validation, error types).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Tuple

import array_api_compat
import numpy
import pytest

import qarray
from qarray import (
    STABILITY_CONST,
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizationParameters,
    UniformQuantizer,
    fill_from_kwargs,
)

VALUES = numpy.array([-1.0, -0.25, 0.0, 0.3, 0.75, 2.0])

# -- names and signatures --------------------------------------------------------------------

REQUIRED = inspect.Parameter.empty

# (name, method or None for the constructor, [(argument, default)]): the reference's arguments,
# in order; an implementation may add arguments after them, with defaults.
REFERENCE_SIGNATURES: List[Tuple[str, str, List[Tuple[str, Any]]]] = [
    ("fill_from_kwargs", "", [("obj", REQUIRED), ("klass", REQUIRED)]),
    (
        "QuantizationOptions",
        "__init__",
        [("n_bits", REQUIRED), ("is_signed", False), ("is_symmetric", False), ("is_qat", False)],
    ),
    ("QuantizationOptions", "copy_opts", [("opts", REQUIRED)]),
    ("QuantizationOptions", "is_equal", [("opts", REQUIRED), ("ignore_sign_qat", False)]),
    ("MinMaxQuantizationStats", "__init__", [("rmax", None), ("rmin", None), ("uvalues", None)]),
    ("MinMaxQuantizationStats", "check_is_uniform_quantized", [("options", REQUIRED)]),
    ("MinMaxQuantizationStats", "compute_quantization_stats", [("values", REQUIRED)]),
    ("MinMaxQuantizationStats", "copy_stats", [("stats", REQUIRED)]),
    ("UniformQuantizationParameters", "__init__", [("scale", None), ("zero_point", None), ("offset", None)]),
    ("UniformQuantizationParameters", "compute_quantization_parameters", [("options", REQUIRED), ("stats", REQUIRED)]),
    ("UniformQuantizationParameters", "copy_params", [("params", REQUIRED)]),
    ("UniformQuantizer", "__init__", [("options", None), ("stats", None), ("params", None), ("no_clipping", False)]),
    ("UniformQuantizer", "check_is_uniform_quantized", [("options", REQUIRED)]),
    ("UniformQuantizer", "compute_quantization_parameters", [("options", REQUIRED), ("stats", REQUIRED)]),
    ("UniformQuantizer", "compute_quantization_stats", [("values", REQUIRED)]),
    ("UniformQuantizer", "copy_opts", [("opts", REQUIRED)]),
    ("UniformQuantizer", "copy_params", [("params", REQUIRED)]),
    ("UniformQuantizer", "copy_stats", [("stats", REQUIRED)]),
    ("UniformQuantizer", "is_equal", [("opts", REQUIRED), ("ignore_sign_qat", False)]),
    ("UniformQuantizer", "quant", [("values", REQUIRED)]),
    ("UniformQuantizer", "dequant", [("qvalues", REQUIRED)]),
    (
        "QuantizedArray",
        "__init__",
        [
            ("n_bits", REQUIRED), ("values", REQUIRED), ("value_is_float", True),
            ("options", None), ("stats", None), ("params", None),
        ],
    ),
    ("QuantizedArray", "quant", []),
    ("QuantizedArray", "dequant", []),
    ("QuantizedArray", "update_values", [("values", REQUIRED)]),
    ("QuantizedArray", "update_quantized_values", [("qvalues", REQUIRED)]),
]

SERIALIZABLE = [
    "QuantizationOptions",
    "MinMaxQuantizationStats",
    "UniformQuantizationParameters",
    "UniformQuantizer",
    "QuantizedArray",
]
for _class in SERIALIZABLE:
    REFERENCE_SIGNATURES += [
        (_class, "dump_dict", []),
        (_class, "dumps", []),
        (_class, "dump", [("file", REQUIRED)]),
        (_class, "load_dict", [("metadata", REQUIRED)]),
    ]

PROPERTIES = [
    ("QuantizationOptions", "quant_options"),
    ("MinMaxQuantizationStats", "quant_stats"),
    ("UniformQuantizationParameters", "quant_params"),
    ("UniformQuantizer", "quant_options"),
    ("UniformQuantizer", "quant_stats"),
    ("UniformQuantizer", "quant_params"),
]


@pytest.mark.parametrize(
    "name, method, arguments", REFERENCE_SIGNATURES, ids=[f"{n}.{m}" if m else n for n, m, _a in REFERENCE_SIGNATURES]
)
def test_reference_signature(name, method, arguments):
    """Each public callable takes the reference's arguments, in order, with its defaults."""
    owner = getattr(qarray, name)
    function = getattr(owner, method) if method else owner
    parameters = list(inspect.signature(function).parameters.values())
    if method and not isinstance(inspect.getattr_static(owner, method), (classmethod, staticmethod)):
        parameters = parameters[1:]  # self
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert [(p.name, p.default) for p in positional[: len(arguments)]] == arguments
    extra = [p for p in parameters[len(arguments) :] if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    assert all(p.default is not p.empty for p in extra), "added arguments must be optional"


@pytest.mark.parametrize("name", ["fill_from_kwargs", "QuantizedArray"])
def test_functions_with_kwargs_accept_arbitrary_keywords(name):
    """fill_from_kwargs and QuantizedArray take **kwargs, as in the reference."""
    function = getattr(qarray, name)
    kinds = [p.kind for p in inspect.signature(function).parameters.values()]
    assert inspect.Parameter.VAR_KEYWORD in kinds


@pytest.mark.parametrize("name, prop", PROPERTIES, ids=[f"{n}.{p}" for n, p in PROPERTIES])
def test_reference_properties(name, prop):
    """The quant_* accessors are properties."""
    assert isinstance(inspect.getattr_static(getattr(qarray, name), prop), property)


def test_stability_const_is_one_millionth():
    assert STABILITY_CONST == 1e-6


# -- fill_from_kwargs ------------------------------------------------------------------------


def test_fill_from_kwargs_fills_an_existing_structure():
    options = QuantizationOptions(8)
    filled, rest = fill_from_kwargs(options, QuantizationOptions, is_signed=True, unrelated=3)
    assert filled is options
    assert options.is_signed is True
    assert rest == {"unrelated": 3}


def test_fill_from_kwargs_creates_a_structure_when_its_fields_appear():
    params, rest = fill_from_kwargs(None, UniformQuantizationParameters, scale=0.5, zero_point=3, offset=0)
    assert isinstance(params, UniformQuantizationParameters)
    assert (params.scale, params.zero_point, params.offset) == (0.5, 3, 0)
    assert rest == {}


def test_fill_from_kwargs_without_fields_leaves_everything_alone():
    kwargs = {"scale": 1.0, "other": "x"}
    obj, rest = fill_from_kwargs(None, MinMaxQuantizationStats, **kwargs)
    assert obj is None
    assert rest == kwargs


@pytest.mark.parametrize(
    "klass, kwargs, missing",
    [
        (UniformQuantizationParameters, {"scale": 0.5}, "zero_point"),
        (UniformQuantizationParameters, {"scale": 0.5, "zero_point": 1}, "offset"),
        (MinMaxQuantizationStats, {"rmax": 1.0}, "rmin"),
        (QuantizationOptions, {"is_signed": True}, "n_bits"),
    ],
)
def test_fill_from_kwargs_refuses_an_incomplete_new_structure(klass, kwargs, missing):
    """A structure created from kwargs must be complete; the error names the missing field."""
    with pytest.raises(TypeError, match=missing):
        fill_from_kwargs(None, klass, **kwargs)


def test_fill_from_kwargs_refuses_an_incomplete_touched_structure():
    params = UniformQuantizationParameters(scale=0.5)
    with pytest.raises(TypeError, match="offset"):
        fill_from_kwargs(params, UniformQuantizationParameters, zero_point=0)


# -- QuantizationOptions ----------------------------------------------------------------------


def test_is_equal_compares_bits_qat_symmetric_and_sign():
    base = QuantizationOptions(8, is_signed=True, is_symmetric=True)
    assert base.is_equal(QuantizationOptions(8, is_signed=True, is_symmetric=True))
    assert not base.is_equal(QuantizationOptions(7, is_signed=True, is_symmetric=True))
    assert not base.is_equal(QuantizationOptions(8, is_signed=True))
    assert not QuantizationOptions(8).is_equal(QuantizationOptions(8, is_qat=True))


def test_is_equal_ignores_narrow_and_precomputed_qat():
    other = QuantizationOptions(8)
    other.is_narrow = True
    other.is_precomputed_qat = True
    assert QuantizationOptions(8).is_equal(other)


def test_is_equal_ignore_sign_qat_ignores_sign_of_qat_options_only():
    signed_qat = QuantizationOptions(8, is_signed=True, is_qat=True)
    unsigned_qat = QuantizationOptions(8, is_qat=True)
    assert not signed_qat.is_equal(unsigned_qat)
    assert signed_qat.is_equal(unsigned_qat, ignore_sign_qat=True)
    assert not QuantizationOptions(8, is_signed=True).is_equal(QuantizationOptions(8), ignore_sign_qat=True)


def _all_set_options() -> QuantizationOptions:
    options = QuantizationOptions(5, is_signed=True, is_qat=True)
    options.is_narrow = True
    options.is_precomputed_qat = True
    return options


def test_copy_opts_copies_all_six_fields():
    source = _all_set_options()
    target = QuantizationOptions(2)
    target.copy_opts(source)
    assert (target.n_bits, target.is_signed, target.is_symmetric, target.is_qat) == (5, True, False, True)
    assert (target.is_narrow, target.is_precomputed_qat) == (True, True)


def test_quant_options_is_an_equal_independent_copy():
    options = _all_set_options()
    copy = options.quant_options
    assert copy == options and copy is not options
    copy.is_narrow = False
    copy.n_bits = 3
    assert options.is_narrow is True and options.n_bits == 5


@pytest.mark.parametrize("field", ["n_bits", "is_signed", "is_qat", "is_narrow", "is_precomputed_qat"])
def test_options_equality_looks_at_every_field(field):
    first, second = _all_set_options(), _all_set_options()
    assert first == second
    setattr(second, field, 7 if field == "n_bits" else not getattr(second, field))
    assert first != second


def test_options_equality_looks_at_is_symmetric():
    assert QuantizationOptions(8, is_signed=True) != QuantizationOptions(8, is_signed=True, is_symmetric=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n_bits=8, is_symmetric=True),
        dict(n_bits=8, is_signed=True, is_symmetric=True, is_qat=True),
        dict(n_bits=1, is_signed=True, is_symmetric=True),
    ],
    ids=["symmetric-unsigned", "symmetric-qat", "symmetric-one-bit"],
)
def test_invalid_option_combinations_are_refused(kwargs):
    with pytest.raises(ValueError):
        QuantizationOptions(**kwargs)


@pytest.mark.parametrize("n_bits", [8.0, "8", None, True, [8]])
def test_n_bits_must_be_an_int(n_bits):
    with pytest.raises(TypeError, match="n_bits"):
        QuantizationOptions(n_bits)


@pytest.mark.parametrize("n_bits", [0, -1, qarray.MAX_N_BITS + 1])
def test_n_bits_must_be_in_range(n_bits):
    with pytest.raises(ValueError, match="n_bits"):
        QuantizationOptions(n_bits)


@pytest.mark.parametrize("n_bits", [1, 32, qarray.MAX_N_BITS, numpy.int64(8)])
def test_n_bits_within_range_is_accepted(n_bits):
    assert QuantizationOptions(n_bits).n_bits == int(n_bits)


def test_largest_supported_width_covers_32_bits():
    assert qarray.MAX_N_BITS >= 32
    assert 2**32 < QuantizedArray(qarray.MAX_N_BITS, VALUES).qvalues.max() <= 2**qarray.MAX_N_BITS - 1


# -- QuantizedArray -------------------------------------------------------------------------


def test_quantized_array_quantizes_float_values():
    qa = QuantizedArray(4, VALUES)
    assert qa.qvalues.dtype == numpy.int64
    assert qa.qvalues.min() == 0 and qa.qvalues.max() == 15
    numpy.testing.assert_array_equal(qa(), qa.qvalues)


def test_quantized_array_refuses_integer_values_as_floats():
    with pytest.raises(TypeError, match="value_is_float"):
        QuantizedArray(4, numpy.array([1, 2, 3]))


def test_quantized_array_from_integers_dequantizes_them():
    qa = QuantizedArray(4, numpy.array([0, 2, 5]), value_is_float=False, scale=0.5, zero_point=1, offset=0)
    numpy.testing.assert_array_equal(qa.qvalues, [0, 2, 5])
    numpy.testing.assert_array_equal(qa.values, [-0.5, 0.5, 2.0])
    assert qa.values.dtype == numpy.float64


def test_quantized_array_from_integers_needs_parameters():
    with pytest.raises(ValueError, match="param"):
        QuantizedArray(4, numpy.array([0, 2, 5]), value_is_float=False)


def test_quantized_array_from_integers_refuses_floats():
    with pytest.raises(TypeError):
        QuantizedArray(4, numpy.array([0.0, 2.0]), value_is_float=False, scale=0.5, zero_point=1, offset=0)


def test_quantized_array_kwargs_fill_options():
    qa = QuantizedArray(4, VALUES, is_signed=True, is_symmetric=True)
    assert qa.quantizer.is_signed and qa.quantizer.is_symmetric
    assert qa.quantizer.zero_point == 0 and qa.qvalues.min() < 0


def test_quantized_array_kwargs_give_parameters_that_are_used_as_is():
    qa = QuantizedArray(4, VALUES, scale=0.25, zero_point=4, offset=0)
    assert (qa.quantizer.scale, qa.quantizer.zero_point) == (0.25, 4)
    numpy.testing.assert_array_equal(qa.qvalues, numpy.clip(numpy.rint(VALUES / 0.25 + 4), 0, 15))


def test_quantized_array_kwargs_give_statistics_for_the_parameters():
    qa = QuantizedArray(4, VALUES, rmin=-3.0, rmax=12.0)
    assert qa.quantizer.scale == 1.0 and qa.quantizer.zero_point == 3


def test_quantized_array_refuses_unexpected_kwargs_by_name():
    with pytest.raises(TypeError, match="not_an_option"):
        QuantizedArray(4, VALUES, not_an_option=1)


def test_quantized_array_copies_options_and_sets_n_bits():
    options = QuantizationOptions(8, is_signed=True)
    qa = QuantizedArray(3, VALUES, options=options)
    assert qa.quantizer.n_bits == 3 and qa.n_bits == 3
    assert qa.quantizer.is_signed
    assert options.n_bits == 8
    options.is_signed = False
    assert qa.quantizer.is_signed


def test_quantized_array_does_not_modify_given_parameters():
    params = UniformQuantizationParameters(scale=0.5)
    QuantizedArray(4, VALUES, params=params, zero_point=0, offset=0)
    assert params.zero_point is None and params.offset is None


def test_quantized_array_values_are_copied(xb):
    """Changing the caller's array afterwards changes neither values nor qvalues."""
    host = VALUES.copy()
    source = xb.asarray(host)
    qa = QuantizedArray(4, source)
    before_values, before_q = xb.to_numpy(qa.values).copy(), xb.to_numpy(qa.qvalues).copy()
    source[...] = 100.0
    numpy.testing.assert_array_equal(xb.to_numpy(qa.values), before_values)
    numpy.testing.assert_array_equal(xb.to_numpy(qa.qvalues), before_q)


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict", "torch"])
def test_quantized_array_moved_to_a_backend_copies_the_values(backend):
    """Moving NumPy values to another backend never shares memory with the caller's array."""
    pytest.importorskip(backend)
    host = VALUES.copy()
    qa = QuantizedArray(4, host, backend=backend)
    host[...] = 100.0
    numpy.testing.assert_array_equal(qarray.core.namespace.to_numpy(qa.values), VALUES)


def test_quantized_array_integer_values_are_copied(xb):
    source = xb.asarray(numpy.array([0, 2, 5]))
    qa = QuantizedArray(4, source, value_is_float=False, scale=0.5, zero_point=1, offset=0)
    source[...] = 9
    numpy.testing.assert_array_equal(xb.to_numpy(qa.qvalues), [0, 2, 5])


def test_update_values_replaces_values_and_returns_new_qvalues(xb):
    qa = QuantizedArray(4, xb.asarray(VALUES))
    new = xb.asarray(numpy.array([-1.0, 2.0]))
    qvalues = qa.update_values(new)
    numpy.testing.assert_array_equal(xb.to_numpy(qvalues), [0, 15])
    assert qvalues is qa.qvalues
    new[...] = 0.0
    numpy.testing.assert_array_equal(xb.to_numpy(qa.values), [-1.0, 2.0])


def test_update_quantized_values_replaces_qvalues_and_returns_new_values(xb):
    qa = QuantizedArray(4, xb.asarray(numpy.array([0.0, 1.5])))
    new = xb.asarray(numpy.array([0, 5, 15]))
    values = qa.update_quantized_values(new)
    numpy.testing.assert_array_equal(xb.to_numpy(values), [0.0, 0.5, 1.5])
    assert values is qa.values
    new[...] = 1
    numpy.testing.assert_array_equal(xb.to_numpy(qa.qvalues), [0, 5, 15])


def test_quant_and_dequant_recompute_one_side_from_the_other():
    qa = QuantizedArray(4, numpy.array([0.0, 1.5]))
    qa.values = numpy.array([0.7])
    numpy.testing.assert_array_equal(qa.quant(), [7])
    qa.qvalues = numpy.array([3])
    numpy.testing.assert_array_equal(qa.dequant(), [qa.quantizer.scale * 3])


def test_quantized_array_equality_compares_values_and_quantizer():
    assert QuantizedArray(4, VALUES) == QuantizedArray(4, VALUES.copy())
    assert QuantizedArray(4, VALUES) != QuantizedArray(5, VALUES)
    assert QuantizedArray(4, VALUES) != QuantizedArray(4, VALUES + 0.01)
    assert QuantizedArray(4, VALUES) != QuantizedArray(4, VALUES, is_signed=True)


@pytest.mark.parametrize(
    "options, computed",
    [
        (QuantizationOptions(4), False),
        (QuantizationOptions(4, is_signed=True, is_symmetric=True), False),
        (QuantizationOptions(4, is_qat=True), True),
    ],
    ids=["plain", "symmetric", "qat"],
)
def test_unique_values_are_only_computed_for_qat_inference(options, computed):
    qa = QuantizedArray(4, VALUES, options=options)
    assert (qa.quantizer.stats.uvalues is not None) is computed


def test_unique_values_are_skipped_for_precomputed_qat():
    options = QuantizationOptions(4, is_qat=True)
    options.is_precomputed_qat = True
    assert QuantizedArray(4, VALUES, options=options).quantizer.stats.uvalues is None


def test_public_statistics_method_computes_unique_values():
    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats(VALUES)
    numpy.testing.assert_array_equal(stats.uvalues, numpy.unique(numpy.round(VALUES, 2)))


def test_quantized_array_backend_follows_the_values(xb):
    qa = QuantizedArray(4, xb.asarray(VALUES))
    assert qa.backend.name == xb.name


def test_quantized_array_backend_argument_moves_values():
    pytest.importorskip("array_api_strict")
    qa = QuantizedArray(4, VALUES, backend="array_api_strict")
    assert qa.backend.name == "array_api_strict"
    assert type(qa.values).__module__.startswith("array_api_strict")
    assert type(qa.qvalues).__module__.startswith("array_api_strict")
    numpy.testing.assert_array_equal(
        qarray.core.namespace.to_numpy(qa.qvalues), QuantizedArray(4, VALUES).qvalues
    )


def test_quantized_array_unknown_backend_lists_known_ones():
    with pytest.raises(ValueError, match="numpy") as error:
        QuantizedArray(4, VALUES, backend="no-such-backend")
    assert "no-such-backend" in str(error.value)


# -- statistics, parameters and quantizer structures ----------------------------------------


def test_quant_stats_is_an_equal_independent_copy():
    stats = MinMaxQuantizationStats(rmax=2.0, rmin=-1.0, uvalues=numpy.array([-1.0, 2.0]))
    copy = stats.quant_stats
    assert copy == stats and copy is not stats
    copy.rmax = 5.0
    assert stats.rmax == 2.0


def test_statistics_equality_compares_uvalues_as_arrays():
    with_uvalues = MinMaxQuantizationStats(rmax=2.0, rmin=-1.0, uvalues=numpy.array([-1.0, 2.0]))
    assert with_uvalues == MinMaxQuantizationStats(rmax=2.0, rmin=-1.0, uvalues=numpy.array([-1.0, 2.0]))
    assert with_uvalues != MinMaxQuantizationStats(rmax=2.0, rmin=-1.0, uvalues=numpy.array([-1.0, 1.0, 2.0]))
    assert with_uvalues != MinMaxQuantizationStats(rmax=2.0, rmin=-1.0)


def test_quant_params_is_an_equal_independent_copy():
    params = UniformQuantizationParameters(scale=0.5, zero_point=3, offset=0)
    copy = params.quant_params
    assert copy == params and copy is not params
    copy.zero_point = 4
    assert params.zero_point == 3


def test_quantizer_stores_a_given_scale_as_float64():
    quantizer = UniformQuantizer(QuantizationOptions(8), params=UniformQuantizationParameters(1, 0, 0))
    assert isinstance(quantizer.scale, numpy.float64)


def test_quantizer_copies_the_structures_it_is_given():
    options = QuantizationOptions(8)
    params = UniformQuantizationParameters(0.5, 0, 0)
    quantizer = UniformQuantizer(options, params=params)
    options.is_signed = True
    params.zero_point = 9
    assert not quantizer.is_signed and quantizer.zero_point == 0


def test_computed_parameters_are_host_numbers(xb):
    qa = QuantizedArray(8, xb.asarray(VALUES), is_signed=True)
    assert isinstance(qa.quantizer.scale, numpy.float64)
    assert isinstance(qa.quantizer.zero_point, (int, numpy.integer))
    assert isinstance(qa.quantizer.offset, (int, numpy.integer))
    assert isinstance(qa.quantizer.rmin, numpy.float64) and isinstance(qa.quantizer.rmax, numpy.float64)


@pytest.mark.parametrize(
    "change",
    [
        lambda q: setattr(q, "no_clipping", True),
        lambda q: setattr(q.options, "is_narrow", True),
        lambda q: setattr(q.stats, "rmax", 3.0),
        lambda q: setattr(q.params, "zero_point", 1),
    ],
    ids=["no_clipping", "options", "stats", "params"],
)
def test_quantizer_equality_compares_every_part(change):
    first, second = QuantizedArray(4, VALUES).quantizer, QuantizedArray(4, VALUES).quantizer
    assert first == second
    change(second)
    assert first != second


# -- UniformQuantizer.quant dtype -------------------------------------------------------------


def _quantizer(n_bits: int, is_signed: bool = False, no_clipping: bool = False) -> UniformQuantizer:
    offset = 2 ** (n_bits - 1) if is_signed else 0
    return UniformQuantizer(
        QuantizationOptions(n_bits, is_signed=is_signed),
        params=UniformQuantizationParameters(scale=0.1, zero_point=0, offset=offset),
        no_clipping=no_clipping,
    )


@pytest.mark.parametrize(
    "n_bits, is_signed, dtype",
    [
        (8, False, "uint8"),
        (8, True, "int8"),
        (7, False, "int8"),
        (8, False, "int16"),
        (16, False, "uint16"),
        (16, True, "int16"),
        (16, False, "int32"),
        (32, False, "uint32"),
        (32, True, "int32"),
    ],
)
def test_quant_dtype_that_holds_the_range_is_accepted(xb, n_bits, is_signed, dtype):
    quantizer = _quantizer(n_bits, is_signed)
    values = xb.asarray(numpy.array([-1e12, -0.26, 0.0, 0.26, 1e12]))
    result = quantizer.quant(values, dtype=getattr(xb.xp, dtype))
    assert result.dtype == getattr(xb.xp, dtype)
    numpy.testing.assert_array_equal(xb.to_numpy(result), xb.to_numpy(quantizer.quant(values)))


@pytest.mark.parametrize(
    "n_bits, is_signed, dtype",
    [(8, False, "int8"), (8, True, "uint8"), (9, False, "uint8"), (16, False, "int16"), (32, False, "int32")],
)
def test_quant_dtype_too_small_for_the_range_is_refused(n_bits, is_signed, dtype):
    with pytest.raises(ValueError, match=dtype):
        _quantizer(n_bits, is_signed).quant(numpy.array([0.5]), dtype=getattr(numpy, dtype))


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64, "float64", numpy.bool_, numpy.complex128])
def test_quant_non_integer_dtype_is_a_type_error(dtype):
    with pytest.raises(TypeError, match="dtype"):
        _quantizer(8).quant(numpy.array([0.5]), dtype=dtype)


def test_quant_default_dtype_is_int64(xb):
    assert _quantizer(8).quant(xb.asarray(numpy.array([0.5]))).dtype == xb.xp.int64


def test_quant_without_clipping_accepts_a_small_dtype_when_values_fit():
    result = _quantizer(16, no_clipping=True).quant(numpy.array([-12.7, 12.7]), dtype=numpy.int8)
    numpy.testing.assert_array_equal(result, numpy.array([-127, 127], dtype=numpy.int8))


@pytest.mark.parametrize("value", [12.8, -12.9, 1e300])
def test_quant_without_clipping_refuses_values_that_do_not_fit(value):
    with pytest.raises(ValueError, match="int8"):
        _quantizer(16, no_clipping=True).quant(numpy.array([0.0, value]), dtype=numpy.int8)


def test_quant_of_inferred_qat_does_not_clip():
    qa = QuantizedArray(2, numpy.array([-1.0, -0.5, 0.0, 0.5]), is_qat=True)
    quantized = qa.quantizer.quant(numpy.array([10.0]))
    numpy.testing.assert_array_equal(quantized, [20])


def test_dequant_dtype_float32_and_refusal_of_others():
    quantizer = _quantizer(8)
    assert quantizer.dequant(numpy.array([1, 2]), dtype=numpy.float32).dtype == numpy.float32
    with pytest.raises(TypeError, match="dtype"):
        quantizer.dequant(numpy.array([1, 2]), dtype=numpy.int64)


# -- other libraries, lists and non-finite values --------------------------------------------


def test_quantizer_fitted_on_numpy_applies_to_any_library(xb):
    """Parameters are host numbers: the quantizer serves arrays of every library."""
    quantizer = QuantizedArray(6, VALUES).quantizer
    source = xb.asarray(VALUES[::-1].copy())
    qvalues = quantizer.quant(source)
    assert array_api_compat.array_namespace(qvalues) is array_api_compat.array_namespace(source)
    assert array_api_compat.device(qvalues) == array_api_compat.device(source)
    numpy.testing.assert_array_equal(xb.to_numpy(qvalues), quantizer.quant(VALUES[::-1].copy()))
    values = quantizer.dequant(qvalues)
    assert array_api_compat.array_namespace(values) is array_api_compat.array_namespace(source)
    assert array_api_compat.device(values) == array_api_compat.device(source)


def test_python_lists_are_accepted():
    qa = QuantizedArray(4, [0.0, 0.75, 1.5])
    numpy.testing.assert_array_equal(qa.qvalues, [0, 8, 15])
    numpy.testing.assert_array_equal(qa.quantizer.quant([0.1, 1.5]), [1, 15])
    numpy.testing.assert_array_equal(qa.quantizer.dequant([0, 15]), [0.0, 1.5])
    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats([2.0, -1.0])
    assert (stats.rmin, stats.rmax) == (-1.0, 2.0)


@pytest.mark.parametrize("bad", [numpy.nan, numpy.inf, -numpy.inf])
def test_quant_refuses_non_finite_values(xb, bad):
    """NaN and ±Inf are refused (for lazy arrays, when the result is computed)."""
    with pytest.raises(ValueError, match="non-finite"):
        xb.to_numpy(_quantizer(8).quant(xb.asarray(numpy.array([0.5, bad, 1.0]))))


def test_quant_check_finite_false_skips_the_check(xb):
    result = _quantizer(8).quant(xb.asarray(numpy.array([0.5, numpy.inf, 1.0])), check_finite=False)
    host = xb.to_numpy(result)
    numpy.testing.assert_array_equal(host[[0, 2]], [5, 10])


@pytest.mark.parametrize("bad", [numpy.nan, numpy.inf])
def test_calibration_refuses_non_finite_values(xb, bad):
    with pytest.raises(ValueError):
        QuantizedArray(8, xb.asarray(numpy.array([0.5, bad])))


# -- errors are ValueError / TypeError, never AssertionError ----------------------------------

BAD_CALLS: Dict[str, Callable[[], Any]] = {
    "options-n_bits-float": lambda: QuantizationOptions(2.5),
    "options-symmetric-unsigned": lambda: QuantizationOptions(8, is_symmetric=True),
    "options-copy-from-non-options": lambda: QuantizationOptions(8).copy_opts(3),
    "stats-empty": lambda: MinMaxQuantizationStats().compute_quantization_stats(numpy.array([])),
    "stats-integers": lambda: MinMaxQuantizationStats().compute_quantization_stats(numpy.array([1, 2])),
    "stats-string": lambda: MinMaxQuantizationStats().compute_quantization_stats("1.0"),
    "stats-uniform-without-uvalues": lambda: MinMaxQuantizationStats(1.0, 0.0).check_is_uniform_quantized(
        QuantizationOptions(8)
    ),
    "params-uncalibrated": lambda: UniformQuantizationParameters().compute_quantization_parameters(
        QuantizationOptions(8), MinMaxQuantizationStats()
    ),
    "params-zero-scale": lambda: UniformQuantizationParameters(scale=0.0),
    "params-nan-scale": lambda: UniformQuantizationParameters(scale=float("nan")),
    "params-fractional-zero-point": lambda: UniformQuantizationParameters(zero_point=0.5),
    "params-string-scale": lambda: UniformQuantizationParameters(scale="1"),
    "quantizer-without-params": lambda: UniformQuantizer(QuantizationOptions(8)).quant(numpy.array([1.0])),
    "quantizer-without-options": lambda: UniformQuantizer().quant(numpy.array([1.0])),
    "quantizer-integer-values": lambda: _quantizer(8).quant(numpy.array([1, 2])),
    "quantizer-float-qvalues": lambda: _quantizer(8).dequant(numpy.array([1.0])),
    "quantizer-zero-point-shape": lambda: UniformQuantizer(
        QuantizationOptions(8), params=UniformQuantizationParameters(1.0, numpy.array([1, 2, 3]), 0)
    ).quant(numpy.ones(4)),
    "quantized-array-n_bits": lambda: QuantizedArray(0, VALUES),
    "quantized-array-options-type": lambda: QuantizedArray(4, VALUES, options="signed"),
    "quantized-array-constant-nan": lambda: QuantizedArray(4, numpy.array([numpy.nan])),
    "quantized-array-incomplete-params": lambda: QuantizedArray(4, VALUES, scale=1.0),
    "load-garbage": lambda: qarray.loads("not json"),
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=list(BAD_CALLS))
def test_invalid_input_raises_value_or_type_error(call):
    with pytest.raises((ValueError, TypeError)):
        call()


# -- copies never share arrays -----------------------------------------------------------


def test_quant_stats_copy_does_not_share_uvalues():
    """Changing the uvalues of a copy leaves the original statistics as they were."""
    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats(numpy.array([0.0, 0.5, 1.0]))
    copy = stats.quant_stats
    copy.uvalues[0] = 42.0
    assert stats.uvalues.tolist() == [0.0, 0.5, 1.0]


def test_quant_params_copy_does_not_share_an_array_zero_point():
    """Changing a copied per-channel zero point leaves the original parameters as they were."""
    params = UniformQuantizationParameters(1.0, numpy.array([1, 2]), 0)
    copy = params.quant_params
    copy.zero_point[0] = 77
    assert params.zero_point.tolist() == [1, 2]


def test_quantizer_does_not_follow_later_changes_to_the_users_stats():
    """A quantizer built from statistics keeps its own uvalues."""
    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats(numpy.array([0.0, 0.25, 0.5]))
    quantizer = UniformQuantizer(QuantizationOptions(4, is_qat=True), stats=stats)
    stats.uvalues[1] = 0.3
    assert quantizer.uvalues.tolist() == [0.0, 0.25, 0.5]


def test_unsorted_uvalues_are_refused():
    """QAT infers the scale from consecutive differences, so uvalues must increase."""
    with pytest.raises(ValueError, match="uvalues"):
        QuantizedArray(4, numpy.array([0.0, 0.5, 1.0]), is_qat=True, rmin=0.0, rmax=1.0, uvalues=[1.0, 0.5, 0.0])


def test_bfloat16_tensors_calibrate_like_their_float64_values():
    """A dtype NumPy lacks still calibrates: min/max are widened on the device before reading."""
    torch = pytest.importorskip("torch")
    values = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.bfloat16)
    qa = QuantizedArray(8, values)
    expected = QuantizedArray(8, values.to(torch.float64).numpy())
    assert qa.qvalues.tolist() == expected.qvalues.tolist()
    assert qa.quantizer.scale == expected.quantizer.scale


def test_repr_survives_options_made_invalid_by_hand():
    """repr never raises, even when options were set to an invalid combination afterwards."""
    qa = QuantizedArray(8, numpy.linspace(0.0, 1.0, 5))
    qa.quantizer.options.is_symmetric = True
    assert "invalid options" in repr(qa)


def test_display_module_is_reachable_from_the_package():
    """qarray.display works right after import qarray, as the README shows."""
    import qarray

    text = qarray.display.summary(QuantizedArray(8, numpy.linspace(-1.0, 1.0, 5)))
    assert "scale" in text


def test_nan_under_omit_quantizes_to_the_integer_of_zero(xb):
    """With nan_policy="omit", NaN maps to the clipped zero point and ±Inf saturate, on every backend."""
    values = numpy.array([0.5, numpy.nan, -1.0, numpy.inf, 2.0, -numpy.inf])
    qa = QuantizedArray(8, xb.asarray(values), nan_policy="omit")
    zero_point = int(qa.quantizer.zero_point)
    assert xb.to_numpy(qa.qvalues).tolist() == [128, zero_point, 0, 255, 255, 0]
    assert float(xb.to_numpy(qa.quantizer.dequant(qa.qvalues))[1]) == 0.0


def test_nan_under_omit_with_a_clipped_zero_point():
    """A zero point outside the clipping range gives the nearest clipping bound for NaN."""
    values = numpy.array([5.0, numpy.nan, 6.0])
    qa = QuantizedArray(4, values, nan_policy="omit")
    assert qa.quantizer.zero_point < 0
    assert qa.qvalues.tolist()[1] == 0
