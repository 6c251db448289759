"""Bad input gets a ValueError or TypeError that names the argument, and nothing else.

Each row of ``CASES`` is one bad call: its id, the call, the exact exception type
expected (not a subclass: a library's own error type would leak through), and a
piece of text the message must contain, naming the argument at fault. A second
table, ``ACCEPTED``, lists inputs that look odd but are valid on purpose (0-d
arrays, a negative scale, a quantizer fitted on one library applied to another).
"""

from __future__ import annotations

import importlib
import json
from typing import Any, Callable, NamedTuple

import numpy
import pytest
from refusals import Case, assert_refused

import qarray
from qarray import (
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizationParameters,
    UniformQuantizer,
    fill_from_kwargs,
)
from qarray.backends import get_backend, register_backend

X = numpy.linspace(-1.0, 1.0, 10)
"""Ordinary float64 values."""

PARAMS = {"scale": 0.1, "zero_point": 0, "offset": 0}


def _bfloat16_qvalues_document() -> str:
    """A QuantizedArray document whose integers claim to be bfloat16 (a float dtype)."""
    document = json.loads(QuantizedArray(8, X).dumps())
    document["qvalues"]["dtype"] = "bfloat16"
    return json.dumps(document)


def _module(name: str) -> Any:
    """Import an optional library, skipping the case when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        pytest.skip(f"{name} is not available here: {error}")


def torch() -> Any:
    return _module("torch")


def strict() -> Any:
    return _module("array_api_strict")


def strict_device1(values: Any) -> Any:
    """``values`` as an array-api-strict array on its non-default device."""
    xp = strict()
    return xp.asarray(numpy.asarray(values), device=xp.Device("device1"))


def quantizer(n_bits: int = 8, **options: Any) -> UniformQuantizer:
    """A quantizer calibrated on ``X``."""
    return QuantizedArray(n_bits, X, **options).quantizer


def no_clip_quantizer() -> UniformQuantizer:
    return UniformQuantizer(
        QuantizationOptions(8), params=UniformQuantizationParameters(0.001, 0, 0), no_clipping=True
    )


def deep_list(depth: int = 100_000) -> list:
    nested: Any = 1.0
    for _ in range(depth):
        nested = [nested]
    return nested


def self_referencing_list() -> list:
    looped: list = []
    looped.append(looped)
    return looped


def set_attribute(obj: Any, name: str, value: Any) -> None:
    setattr(obj, name, value)


def options_set_to(**flags: Any) -> QuantizationOptions:
    """Options whose flags were set one by one, bypassing the constructor's check."""
    options = QuantizationOptions(8)
    for name, value in flags.items():
        setattr(options, name, value)
    return options


CASES = [
    # -- n_bits, wherever it is given -----------------------------------------------------
    *[
        Case(f"QuantizedArray-n_bits-{label}", (lambda v=value: QuantizedArray(v, X)), error, "n_bits")
        for label, value, error in [
            ("True", True, TypeError),
            ("False", False, TypeError),
            ("float", 8.0, TypeError),
            ("numpy-float", numpy.float64(8), TypeError),
            ("str", "8", TypeError),
            ("None", None, TypeError),
            ("list", [8], TypeError),
            ("complex", 8j, TypeError),
            ("zero", 0, ValueError),
            ("negative", -1, ValueError),
            ("too-large", 54, ValueError),
            ("huge", 10**30, ValueError),
            ("too-long-for-str", 10**5000, ValueError),
        ]
    ],
    Case("QuantizationOptions-n_bits-bool", lambda: QuantizationOptions(True), TypeError, "n_bits"),
    Case("QuantizationOptions-n_bits-zero", lambda: QuantizationOptions(0), ValueError, "n_bits"),
    Case("QuantizationOptions-n_bits-deep-list", lambda: QuantizationOptions(deep_list()), TypeError, "n_bits"),
    Case("options.n_bits-setter", lambda: set_attribute(QuantizationOptions(8), "n_bits", 99), ValueError, "n_bits"),
    Case("quantizer.n_bits-setter", lambda: set_attribute(quantizer(), "n_bits", 0), ValueError, "n_bits"),
    Case("quantizer-n_bits-without-options", lambda: set_attribute(UniformQuantizer(), "n_bits", 1.5), TypeError, "n_bits"),
    # -- option flags and their combinations ----------------------------------------------
    Case("flag-int", lambda: QuantizationOptions(8, is_signed=1), TypeError, "is_signed"),
    Case("flag-str", lambda: QuantizationOptions(8, is_qat="yes"), TypeError, "is_qat"),
    Case("flag-None", lambda: QuantizationOptions(8, is_symmetric=None), TypeError, "is_symmetric"),
    Case("flag-setter", lambda: set_attribute(QuantizationOptions(8), "is_narrow", 1), TypeError, "is_narrow"),
    Case("flag-kwarg", lambda: QuantizedArray(8, X, is_precomputed_qat=0), TypeError, "is_precomputed_qat"),
    Case("symmetric-unsigned", lambda: QuantizationOptions(8, is_symmetric=True), ValueError, "is_symmetric"),
    Case(
        "qat-symmetric",
        lambda: QuantizationOptions(8, is_signed=True, is_symmetric=True, is_qat=True),
        ValueError,
        "is_qat",
    ),
    Case(
        "symmetric-one-bit",
        lambda: QuantizationOptions(1, is_signed=True, is_symmetric=True),
        ValueError,
        "n_bits",
    ),
    Case("kwargs-symmetric-unsigned", lambda: QuantizedArray(8, X, is_symmetric=True), ValueError, "is_symmetric"),
    Case(
        "kwargs-symmetric-one-bit",
        lambda: QuantizedArray(1, X, is_signed=True, is_symmetric=True),
        ValueError,
        "n_bits",
    ),
    Case(
        "options-set-one-by-one",
        lambda: QuantizedArray(8, X, options=options_set_to(is_symmetric=True)),
        ValueError,
        "is_symmetric",
    ),
    Case(
        "options-n_bits-overridden-to-one",
        lambda: QuantizedArray(1, X, options=QuantizationOptions(8, is_signed=True, is_symmetric=True)),
        ValueError,
        "n_bits",
    ),
    Case(
        "quant-with-options-made-invalid",
        lambda: (lambda q: (set_attribute(q, "is_qat", True), set_attribute(q, "is_signed", True),
                            set_attribute(q, "is_symmetric", True), q.quant(X)))(quantizer()),
        ValueError,
        "is_qat",
    ),
    # -- values on the float path ---------------------------------------------------------
    *[
        Case(f"float-path-dtype-{numpy.dtype(dtype).name}", (lambda d=dtype: QuantizedArray(8, numpy.ones(3, d))), TypeError, "values")
        for dtype in (numpy.int32, numpy.uint8, numpy.int64, numpy.bool_, numpy.complex128, "U3", object, "datetime64[D]")
    ],
    Case("float-path-structured", lambda: QuantizedArray(8, numpy.zeros(3, [("a", "f8")])), TypeError, "values"),
    Case("float-path-str", lambda: QuantizedArray(8, "1.0"), TypeError, "values"),
    Case("float-path-bytes", lambda: QuantizedArray(8, b"\x00\x01"), TypeError, "values"),
    Case("float-path-dict", lambda: QuantizedArray(8, {"a": 1.0}), TypeError, "values"),
    Case("float-path-set", lambda: QuantizedArray(8, {1.0}), TypeError, "values"),
    Case("float-path-bool", lambda: QuantizedArray(8, True), TypeError, "values"),
    Case("float-path-complex-scalar", lambda: QuantizedArray(8, 1j), TypeError, "values"),
    Case("float-path-list-of-str", lambda: QuantizedArray(8, ["a", "b"]), TypeError, "values"),
    Case("float-path-list-of-None", lambda: QuantizedArray(8, [None]), TypeError, "values"),
    Case("float-path-ragged-list", lambda: QuantizedArray(8, [[1.0], [1.0, 2.0]]), TypeError, "values"),
    Case("float-path-deep-list", lambda: QuantizedArray(8, deep_list()), TypeError, "values"),
    Case("float-path-self-referencing-list", lambda: QuantizedArray(8, self_referencing_list()), TypeError, "values"),
    Case("float-path-huge-int", lambda: QuantizedArray(8, [10**400]), TypeError, "values"),
    Case("float-path-torch-int", lambda: QuantizedArray(8, torch().arange(3)), TypeError, "values"),
    Case("float-path-torch-complex", lambda: QuantizedArray(8, torch().zeros(3, dtype=torch().complex64)), TypeError, "values"),
    Case("float-path-strict-bool", lambda: QuantizedArray(8, strict_device1([True, False])), TypeError, "values"),
    Case("update_values-int", lambda: QuantizedArray(8, X).update_values(numpy.arange(3)), TypeError, "values"),
    Case("value_is_float-int", lambda: QuantizedArray(8, X, value_is_float=1), TypeError, "value_is_float"),
    # -- values on the integer path -------------------------------------------------------
    Case("int-path-float", lambda: QuantizedArray(8, X, value_is_float=False, **PARAMS), TypeError, "values"),
    Case("int-path-bool", lambda: QuantizedArray(8, numpy.array([True]), value_is_float=False, **PARAMS), TypeError, "values"),
    Case("int-path-complex", lambda: QuantizedArray(8, numpy.array([1j]), value_is_float=False, **PARAMS), TypeError, "values"),
    Case("int-path-float-list", lambda: QuantizedArray(8, [0.5], value_is_float=False, **PARAMS), TypeError, "values"),
    Case("int-path-huge-int-list", lambda: QuantizedArray(8, [2**70], value_is_float=False, **PARAMS), TypeError, "values"),
    Case("int-path-torch-float", lambda: QuantizedArray(8, torch().zeros(2), value_is_float=False, **PARAMS), TypeError, "values"),
    Case("int-path-without-params", lambda: QuantizedArray(8, numpy.arange(3), value_is_float=False), ValueError, "value_is_float"),
    Case("update_quantized_values-float", lambda: QuantizedArray(8, X).update_quantized_values(X), TypeError, "qvalues"),
    # -- empty calibration data and non-finite values ----------------------------------------
    Case("empty-1d", lambda: QuantizedArray(8, numpy.array([])), ValueError, "values"),
    Case("empty-2d", lambda: QuantizedArray(8, numpy.zeros((0, 3))), ValueError, "values"),
    Case("empty-list", lambda: QuantizedArray(8, []), ValueError, "values"),
    Case("empty-torch", lambda: QuantizedArray(8, torch().zeros(0)), ValueError, "values"),
    Case("empty-strict", lambda: QuantizedArray(8, strict_device1(numpy.zeros((2, 0)))), ValueError, "values"),
    Case("empty-stats", lambda: MinMaxQuantizationStats().compute_quantization_stats(numpy.zeros(0)), ValueError, "values"),
    Case("calibration-nan", lambda: QuantizedArray(8, numpy.array([0.0, numpy.nan])), ValueError, "nan_policy"),
    Case("calibration-inf", lambda: QuantizedArray(8, numpy.array([0.0, numpy.inf])), ValueError, "nan_policy"),
    Case("calibration-all-nan-omitted", lambda: QuantizedArray(8, numpy.array([numpy.nan]), nan_policy="omit"), ValueError, "finite"),
    Case("nan_policy-unknown", lambda: QuantizedArray(8, X, nan_policy="ignore"), ValueError, "nan_policy"),
    Case("nan_policy-case", lambda: QuantizedArray(8, X, nan_policy="OMIT"), ValueError, "nan_policy"),
    Case("nan_policy-None", lambda: QuantizedArray(8, X, nan_policy=None), ValueError, "nan_policy"),
    Case("nan_policy-list", lambda: QuantizedArray(8, X, nan_policy=["omit"]), ValueError, "nan_policy"),
    Case("stats-nan_policy", lambda: MinMaxQuantizationStats().compute_quantization_stats(X, nan_policy="drop"), ValueError, "nan_policy"),
    Case("stats-with_uvalues-int", lambda: MinMaxQuantizationStats().compute_quantization_stats(X, with_uvalues=1), TypeError, "with_uvalues"),
    Case("quant-nan", lambda: quantizer().quant(numpy.array([0.0, numpy.nan])), ValueError, "check_finite"),
    Case("quant-inf-torch", lambda: quantizer().quant(torch().tensor([0.0, float("-inf")])), ValueError, "check_finite"),
    Case("quant-nan-strict", lambda: quantizer().quant(strict_device1([numpy.nan])), ValueError, "check_finite"),
    Case("quant-check_finite-int", lambda: quantizer().quant(X, check_finite=0), TypeError, "check_finite"),
    Case("quant-check_finite-str", lambda: quantizer().quant(X, check_finite="no"), TypeError, "check_finite"),
    # -- quant / dequant arguments --------------------------------------------------------
    Case("quant-int-values", lambda: quantizer().quant(numpy.arange(3)), TypeError, "values"),
    Case("quant-bool-values", lambda: quantizer().quant(numpy.array([True])), TypeError, "values"),
    Case("quant-complex-values", lambda: quantizer().quant(numpy.array([1j])), TypeError, "values"),
    Case("quant-None", lambda: quantizer().quant(None), TypeError, "values"),
    Case("quant-object-values", lambda: quantizer().quant(numpy.array([1.0], dtype=object)), TypeError, "values"),
    Case("dequant-float-qvalues", lambda: quantizer().dequant(X), TypeError, "qvalues"),
    Case("dequant-bool-qvalues", lambda: quantizer().dequant(numpy.array([True])), TypeError, "qvalues"),
    Case("dequant-float-list", lambda: quantizer().dequant([0.5]), TypeError, "qvalues"),
    Case("dequant-huge-int-list", lambda: quantizer().dequant([-(2**70)]), TypeError, "qvalues"),
    *[
        Case(f"quant-dtype-{label}", (lambda d=dtype: quantizer().quant(X, dtype=d)), TypeError, "dtype")
        for label, dtype in [
            ("float32", numpy.float32),
            ("float64-name", "float64"),
            ("None", None),
            ("int", 3),
            ("int128", "int128"),
            ("object", object),
            ("O", "O"),
            ("bool", numpy.bool_),
        ]
    ],
    Case("quant-dtype-of-another-library", lambda: quantizer().quant(X, dtype=torch().int16), TypeError, "dtype"),
    Case("quant-dtype-strict-for-numpy", lambda: quantizer().quant(X, dtype=strict().int16), TypeError, "dtype"),
    Case("quant-int8-too-small-unsigned", lambda: quantizer().quant(X, dtype=numpy.int8), ValueError, "dtype"),
    Case("quant-uint8-signed", lambda: quantizer(is_signed=True).quant(X, dtype="uint8"), ValueError, "dtype"),
    Case("quant-int16-for-17-bits", lambda: quantizer(17).quant(X, dtype="int16"), ValueError, "dtype"),
    Case("quant-uint32-for-33-bits-torch", lambda: quantizer(33).quant(torch().tensor(X), dtype="uint32"), ValueError, "dtype"),
    Case("quant-no-clipping-overflow-int8", lambda: no_clip_quantizer().quant(X, dtype="int8"), ValueError, "dtype"),
    Case("quant-no-clipping-overflow-strict", lambda: no_clip_quantizer().quant(strict_device1(X), dtype="int8"), ValueError, "dtype"),
    Case("quant-no-clipping-overflow-int64", lambda: no_clip_quantizer().quant(numpy.array([1e300])), ValueError, "dtype"),
    Case("dequant-dtype-int", lambda: quantizer().dequant(numpy.arange(2), dtype=numpy.int64), TypeError, "dtype"),
    Case("dequant-dtype-float16", lambda: quantizer().dequant(numpy.arange(2), dtype="float16"), TypeError, "dtype"),
    Case("dequant-dtype-object", lambda: quantizer().dequant(numpy.arange(2), dtype=object), TypeError, "dtype"),
    # -- out buffers: wrong shape, dtype, library or device ---------------------------------------
    Case("quant-out-shape", lambda: quantizer().quant(X, out=numpy.empty(3, numpy.int64)), ValueError, "out"),
    Case("quant-out-dtype", lambda: quantizer().quant(X, out=numpy.empty(10, numpy.int32)), ValueError, "out"),
    Case("quant-out-list", lambda: quantizer().quant(X, out=[0] * 10), TypeError, "out"),
    Case("quant-out-torch-for-numpy", lambda: quantizer().quant(X, out=torch().zeros(10, dtype=torch().int64)), TypeError, "out"),
    Case("quant-out-numpy-for-torch", lambda: quantizer().quant(torch().tensor(X), out=numpy.zeros(10, numpy.int64)), TypeError, "out"),
    Case("quant-out-torch-shape", lambda: quantizer().quant(torch().tensor(X), out=torch().zeros(3, dtype=torch().int64)), ValueError, "out"),
    Case("quant-out-torch-dtype", lambda: quantizer().quant(torch().tensor(X), out=torch().zeros(10, dtype=torch().int32)), ValueError, "out"),
    Case("quant-out-strict-device", lambda: quantizer().quant(strict_device1(X), out=strict().zeros(10, dtype=strict().int64)), ValueError, "out"),
    Case("dequant-out-torch-shape", lambda: quantizer().dequant(torch().tensor([1]), out=torch().zeros(3, dtype=torch().float64)), ValueError, "out"),
    Case("dequant-out-numpy-shape", lambda: quantizer().dequant(numpy.array([1]), out=numpy.zeros(3)), ValueError, "out"),
    # -- scale, zero point and offset, through kwargs or params ---------------------------------
    *[
        Case(f"scale-{label}", (lambda v=value: QuantizedArray(8, X, scale=v, zero_point=0, offset=0)), error, "scale")
        for label, value, error in [
            ("zero", 0, ValueError),
            ("zero-float", 0.0, ValueError),
            ("negative-zero", -0.0, ValueError),
            ("nan", float("nan"), ValueError),
            ("inf", float("inf"), ValueError),
            ("minus-inf", float("-inf"), ValueError),
            ("numpy-nan", numpy.float32("nan"), ValueError),
            ("huge-int", 10**400, ValueError),
            ("str", "0.1", TypeError),
            ("bool", True, TypeError),
            ("complex", 0.1j, TypeError),
            ("None", None, TypeError),
            ("array-without-granularity", numpy.array([0.1, 0.2]), ValueError),
            ("list", [0.1], TypeError),
        ]
    ],
    Case("params-scale-zero", lambda: UniformQuantizationParameters(0.0, 0, 0), ValueError, "scale"),
    Case("params-scale-nan", lambda: UniformQuantizationParameters(float("nan"), 0, 0), ValueError, "scale"),
    Case("params-scale-torch-0d-zero", lambda: UniformQuantizationParameters(torch().tensor(0.0), 0, 0), ValueError, "scale"),
    Case("params-scale-setter", lambda: set_attribute(quantizer(), "scale", float("inf")), ValueError, "scale"),
    *[
        Case(f"zero_point-{label}", (lambda v=value: QuantizedArray(8, X, scale=0.1, zero_point=v, offset=0)), error, "zero_point")
        for label, value, error in [
            ("half", 0.5, ValueError),
            ("nan", float("nan"), ValueError),
            ("inf", float("inf"), ValueError),
            ("beyond-int64", 2**64, ValueError),
            ("float-beyond-int64", 2.0**70, ValueError),
            ("too-long-for-str", 10**5000, ValueError),
            ("str", "1", TypeError),
            ("bool", True, TypeError),
            ("None", None, TypeError),
            ("list", [0, 1], TypeError),
            ("array-non-integral", numpy.array([0.5]), ValueError),
            ("array-nan", numpy.array([numpy.nan]), ValueError),
            ("array-str", numpy.array(["a"]), TypeError),
            ("array-complex", numpy.array([1j]), TypeError),
            ("array-uint64-beyond-int64", numpy.array([2**63], dtype=numpy.uint64), ValueError),
            ("array-not-broadcasting", numpy.arange(3), ValueError),
            ("array-growing-values", numpy.zeros((2, 10), numpy.int64), ValueError),
        ]
    ],
    Case("zero_point-torch-not-broadcasting", lambda: QuantizedArray(8, X, scale=0.1, zero_point=torch().arange(3), offset=0), ValueError, "zero_point"),
    Case("zero_point-strict-float", lambda: QuantizedArray(8, X, scale=0.1, zero_point=strict_device1([0.5] * 10), offset=0), ValueError, "zero_point"),
    Case("zero_point-setter", lambda: set_attribute(quantizer(), "zero_point", 1.5), ValueError, "zero_point"),
    *[
        Case(f"offset-{label}", (lambda v=value: QuantizedArray(8, X, scale=0.1, zero_point=0, offset=v)), error, "offset")
        for label, value, error in [
            ("negative", -1, ValueError),
            ("huge", 2**60, ValueError),
            ("float", 1.5, TypeError),
            ("bool", True, TypeError),
            ("str", "0", TypeError),
        ]
    ],
    # -- keyword arguments and parameter structures ------------------------------------------
    Case("kwargs-unknown", lambda: QuantizedArray(8, X, foo=1), TypeError, "foo"),
    Case("kwargs-params-incomplete", lambda: QuantizedArray(8, X, scale=0.1), TypeError, "zero_point"),
    Case("kwargs-stats-incomplete", lambda: QuantizedArray(8, X, rmin=0.0), TypeError, "rmax"),
    Case("kwargs-rmin-above-rmax", lambda: QuantizedArray(8, X, rmin=1.0, rmax=0.0), ValueError, "rmin"),
    Case("kwargs-rmin-nan", lambda: QuantizedArray(8, X, rmin=float("nan"), rmax=0.0), ValueError, "rmin"),
    Case("kwargs-rmax-str", lambda: QuantizedArray(8, X, rmin=0.0, rmax="1"), TypeError, "rmax"),
    Case("kwargs-rmax-huge", lambda: QuantizedArray(8, X, rmin=0.0, rmax=10**400), ValueError, "rmax"),
    Case("kwargs-rmax-array-without-granularity", lambda: QuantizedArray(8, X, rmin=0.0, rmax=numpy.array([1.0])), ValueError, "granularity"),
    Case("kwargs-uvalues-2d", lambda: QuantizedArray(8, X, rmin=0.0, rmax=1.0, uvalues=numpy.zeros((2, 2))), TypeError, "uvalues"),
    Case("kwargs-uvalues-int", lambda: QuantizedArray(8, X, rmin=0.0, rmax=1.0, uvalues=numpy.arange(3)), TypeError, "uvalues"),
    Case("options-wrong-type", lambda: QuantizedArray(8, X, options=8), TypeError, "options"),
    Case("stats-wrong-type", lambda: QuantizedArray(8, X, stats={}), TypeError, "stats"),
    Case("params-wrong-type", lambda: QuantizedArray(8, X, params=1), TypeError, "params"),
    Case("backend-unknown", lambda: QuantizedArray(8, X, backend="nope"), ValueError, "backend"),
    Case("backend-int", lambda: QuantizedArray(8, X, backend=3), TypeError, "backend"),
    Case("fill_from_kwargs-obj", lambda: fill_from_kwargs(3, QuantizationOptions, n_bits=3), TypeError, "obj"),
    Case("fill_from_kwargs-klass", lambda: fill_from_kwargs(None, 3, n_bits=3), TypeError, "klass"),
    Case("fill_from_kwargs-options-without-n_bits", lambda: fill_from_kwargs(None, QuantizationOptions, is_signed=True), TypeError, "n_bits"),
    Case("quantizer-no_clipping-int", lambda: UniformQuantizer(no_clipping=0), TypeError, "no_clipping"),
    Case("quantizer-options-wrong-type", lambda: UniformQuantizer(options=3), TypeError, "options"),
    Case("quantizer-stats-wrong-type", lambda: UniformQuantizer(stats=3), TypeError, "stats"),
    Case("quantizer-params-wrong-type", lambda: UniformQuantizer(params=3), TypeError, "params"),
    Case("quantizer-without-params", lambda: UniformQuantizer(QuantizationOptions(8)).quant(X), ValueError, "scale"),
    Case("quantizer-without-options", lambda: UniformQuantizer().quant(X), ValueError, "options"),
    Case("is_equal-wrong-type", lambda: QuantizationOptions(8).is_equal(3), TypeError, "opts"),
    Case("copy_opts-wrong-type", lambda: QuantizationOptions(8).copy_opts(None), TypeError, "opts"),
    Case("copy_stats-wrong-type", lambda: MinMaxQuantizationStats().copy_stats(1.0), TypeError, "stats"),
    Case("copy_params-wrong-type", lambda: UniformQuantizationParameters().copy_params({}), TypeError, "params"),
    Case("compute-parameters-options", lambda: UniformQuantizationParameters().compute_quantization_parameters(None, MinMaxQuantizationStats()), TypeError, "options"),
    Case("compute-parameters-uncalibrated", lambda: UniformQuantizationParameters().compute_quantization_parameters(QuantizationOptions(8), MinMaxQuantizationStats()), ValueError, "stats"),
    Case("compute-parameters-rmin-above-rmax", lambda: UniformQuantizationParameters().compute_quantization_parameters(QuantizationOptions(8), MinMaxQuantizationStats(rmax=0.0, rmin=1.0)), ValueError, "rmin"),
    Case("check_is_uniform_quantized-options", lambda: MinMaxQuantizationStats(1.0, 0.0, numpy.array([0.0, 1.0])).check_is_uniform_quantized(None), TypeError, "options"),
    Case("check_is_uniform_quantized-no-uvalues", lambda: MinMaxQuantizationStats(1.0, 0.0).check_is_uniform_quantized(QuantizationOptions(8)), ValueError, "uvalues"),
    # -- ranges float64 cannot serve -----------------------------------------------------
    Case("range-too-wide", lambda: QuantizedArray(8, numpy.array([-1e308, 1e308])), ValueError, "calibration range"),
    Case("range-too-wide-qat", lambda: QuantizedArray(8, numpy.array([-1e308, 1e308]), is_qat=True), ValueError, "calibration range"),
    Case("range-too-narrow-for-its-offset", lambda: QuantizedArray(53, numpy.array([1e10, 1e10 + 1e-5])), ValueError, "zero point"),
    # -- backends, files and documents -----------------------------------------------------
    Case("register_backend-name", lambda: register_backend(3, lambda: None), TypeError, "name"),
    Case("register_backend-factory", lambda: register_backend("bad-input-factory", 3), TypeError, "factory"),
    Case("register_backend-taken", lambda: register_backend("numpy", lambda: None), ValueError, "numpy"),
    Case("get_backend-unknown", lambda: get_backend("no-such-backend"), ValueError, "backend"),
    Case("get_backend-int", lambda: get_backend(3), TypeError, "backend"),
    Case("loads-int", lambda: qarray.loads(3), TypeError, "document"),
    Case("loads-backend-unknown", lambda: qarray.loads(QuantizationOptions(3).dumps(), backend="nope"), ValueError, "backend"),
    Case("load-None", lambda: qarray.load(None), TypeError, "file"),
    Case("dump-int", lambda: QuantizationOptions(3).dump(3), TypeError, "file"),
    Case("loads-bfloat16-qvalues", lambda: qarray.loads(_bfloat16_qvalues_document()), ValueError, "qvalues"),
    Case("dump-longdouble", lambda: QuantizedArray(8, X.astype(numpy.longdouble)).dumps(), TypeError, "dtype"),
    Case("to-host-meta-tensor", lambda: QuantizedArray(8, torch().zeros(3, device="meta")), TypeError, "meta"),
]


def test_the_table_is_large() -> None:
    """The table covers many distinct bad inputs (its size is reported)."""
    assert len(CASES) >= 150, len(CASES)
    assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"


# calibrating QAT uvalues on values near the float64 limit overflows on the way to the refusal
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused(case: Case) -> None:
    assert_refused(case)


class Accepted(NamedTuple):
    """An input that looks odd but is valid, and what it must give."""

    id: str
    call: Callable[[], Any]
    expected: Any


def _host(array: Any) -> numpy.ndarray:
    return qarray.core.namespace.to_numpy(array)


ACCEPTED = [
    Accepted("0-d-numpy", lambda: _host(QuantizedArray(8, numpy.array(3.0)).qvalues), numpy.array(1)),
    Accepted("0-d-python-float", lambda: _host(QuantizedArray(8, 3.0).qvalues), numpy.array(1)),
    Accepted("0-d-torch", lambda: _host(QuantizedArray(8, torch().tensor(3.0)).qvalues), numpy.array(1)),
    Accepted("0-d-strict-device1", lambda: _host(QuantizedArray(8, strict_device1(3.0)).qvalues), numpy.array(1)),
    Accepted("0-d-quant", lambda: _host(quantizer().quant(numpy.array(1.0))), numpy.array(255)),
    Accepted("empty-quant", lambda: _host(quantizer().quant(numpy.zeros((0, 2)))).shape, (0, 2)),
    # all values equal to one negative constant: the single-value rule makes the scale negative
    Accepted("negative-constant-scale", lambda: float(QuantizedArray(8, numpy.full(4, -2.0)).quantizer.scale), -2.0),
    Accepted("negative-constant-qvalues", lambda: _host(QuantizedArray(8, numpy.full(4, -2.0)).qvalues).tolist(), [1, 1, 1, 1]),
    Accepted("negative-scale-by-hand", lambda: _host(QuantizedArray(8, X, scale=-0.5, zero_point=0, offset=0).qvalues)[:3].tolist(), [2, 2, 1]),
    Accepted("numpy-fitted-on-torch", lambda: _host(quantizer().quant(torch().tensor(X))).tolist(), _host(quantizer().quant(X)).tolist()),
    Accepted("numpy-fitted-on-strict-device1", lambda: _host(quantizer().quant(strict_device1(X))).tolist(), _host(quantizer().quant(X)).tolist()),
    Accepted(
        "torch-fitted-on-numpy",
        lambda: _host(QuantizedArray(8, torch().tensor(X)).quantizer.quant(X)).tolist(),
        _host(quantizer().quant(X)).tolist(),
    ),
    Accepted(
        "torch-zero-point-numpy-values",
        lambda: _host(QuantizedArray(8, X, scale=0.1, zero_point=torch().arange(10), offset=0).qvalues).tolist(),
        _host(QuantizedArray(8, X, scale=0.1, zero_point=numpy.arange(10), offset=0).qvalues).tolist(),
    ),
    Accepted(
        "strict-device1-zero-point-numpy-values",
        lambda: _host(QuantizedArray(8, X, scale=0.1, zero_point=strict_device1(numpy.arange(10)), offset=0).qvalues).tolist(),
        _host(QuantizedArray(8, X, scale=0.1, zero_point=numpy.arange(10), offset=0).qvalues).tolist(),
    ),
    Accepted(
        "numpy-zero-point-torch-values",
        lambda: _host(QuantizedArray(8, torch().tensor(X), scale=0.1, zero_point=numpy.arange(10), offset=0).qvalues).tolist(),
        _host(QuantizedArray(8, X, scale=0.1, zero_point=numpy.arange(10), offset=0).qvalues).tolist(),
    ),
    Accepted(
        "per-channel-zero-point-follows-strict-device1-values",
        lambda: str(QuantizedArray(8, strict_device1(X), scale=0.1, zero_point=numpy.arange(10), offset=0).qvalues.device),
        str(strict().Device("device1")),
    ),
    Accepted(
        "update_values-with-another-library",
        lambda: _host(QuantizedArray(8, X).update_values(torch().tensor(X[:3]))).tolist(),
        _host(quantizer().quant(X[:3])).tolist(),
    ),
    Accepted("numpy-dtype-for-torch-values", lambda: str(quantizer().quant(torch().tensor(X), dtype=numpy.uint8).dtype), "torch.uint8"),
    Accepted("numpy-values-into-torch-backend", lambda: torch() and QuantizedArray(8, X, backend="torch").backend.name, "torch"),
    Accepted("float16-values", lambda: _host(quantizer().quant(X.astype(numpy.float16))).tolist(), _host(quantizer().quant(X.astype(numpy.float16).astype(numpy.float64))).tolist()),
    Accepted("big-endian-values", lambda: _host(quantizer().quant(X.astype(">f8"))).tolist(), _host(quantizer().quant(X)).tolist()),
    Accepted("read-only-values", lambda: _host(QuantizedArray(8, _read_only(X)).qvalues).tolist(), _host(quantizer().quant(X)).tolist()),
    Accepted("strided-values", lambda: _host(quantizer().quant(X[::2])).tolist(), _host(quantizer().quant(X))[::2].tolist()),
    Accepted("nested-list-values", lambda: _host(QuantizedArray(2, [[0.0, 0.5], [1.0, 1.5]]).qvalues).tolist(), [[0, 1], [2, 3]]),
    Accepted("subnormal-scale-saturates", lambda: _host(QuantizedArray(8, X, scale=1e-320, zero_point=0, offset=0).qvalues)[[0, -1]].tolist(), [0, 255]),
]


def _read_only(values: numpy.ndarray) -> numpy.ndarray:
    copy = values.copy()
    copy.flags.writeable = False
    return copy


@pytest.mark.parametrize("case", ACCEPTED, ids=[case.id for case in ACCEPTED])
def test_odd_but_valid_input_is_accepted(case: Accepted) -> None:
    result = case.call()
    if isinstance(case.expected, numpy.ndarray):
        assert numpy.array_equal(result, case.expected) and result.shape == case.expected.shape
    else:
        assert result == case.expected


def test_nothing_warns_on_refused_non_finite_input() -> None:
    """A refused NaN gives the ValueError alone, not also NumPy's cast warnings."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="check_finite"):
            quantizer().quant(numpy.array([numpy.nan, numpy.inf, 1.0]))
        quantizer().quant(numpy.array([numpy.nan, numpy.inf, 1.0]), check_finite=False)
