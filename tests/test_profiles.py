"""Profiles everywhere: every backend gives the same bits, every class carries the profile.

The runtimes themselves are the oracles in ``test_profiles_runtimes.py``; here the
generic Array API path (the reference) is compared with every backend and with the
compiled NumPy kernels, and the profile is followed through options, quantizers,
documents, copies, pickles, display, ``calibrate`` and ``fill_from_kwargs``.
"""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import array_api_compat
import numpy
import pytest

import qarray
from qarray import primitives
from qarray.backends import ArrayAPIBackend, numba_kernels

PROFILES = ("onnx", "torch")
GRANULARITIES = ({}, {"axis": 0}, {"block_size": 32}, {"block_size": (2, 48)})
GENERIC = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)), name="generic")


def bits32(values: Any) -> numpy.ndarray:
    """float32 values as their bit patterns."""
    return numpy.ascontiguousarray(numpy.asarray(values, dtype=numpy.float32)).view(numpy.uint32)


def data(rows: int = 6, length: int = 100, seed: int = 0) -> numpy.ndarray:
    """float32 rows of different spreads, with quotients near ties for common scales."""
    rng = numpy.random.default_rng(seed)
    spreads = numpy.logspace(-2, 2, rows)[:, None]
    return (rng.standard_normal((rows, length)) * spreads + rng.uniform(-1, 1, (rows, 1)) * spreads).astype(
        numpy.float32
    )


def generic_quant(quantizer: qarray.UniformQuantizer, values: numpy.ndarray, dtype: str = "int64") -> numpy.ndarray:
    """The reference: the generic Array API path with the quantizer's spec."""
    spec = quantizer._quant_spec(values, GENERIC, dtype)
    return numpy.asarray(GENERIC.quantize(values, spec, check_finite=False)[0])


def generic_dequant(quantizer: qarray.UniformQuantizer, qvalues: numpy.ndarray) -> numpy.ndarray:
    extent = quantizer.block_extent(qvalues.shape) if quantizer.is_per_block else None
    spec = primitives.dequant_spec(
        quantizer.scale, quantizer.zero_point, like=qvalues, backend=GENERIC, extent=extent,
        profile=quantizer.options.profile,
    )
    return numpy.asarray(GENERIC.dequantize(qvalues, spec, dtype="float32"))


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("granularity", GRANULARITIES, ids=str)
@pytest.mark.parametrize("n_bits, signed", [(4, True), (8, False), (8, True), (16, True)])
def test_every_backend_gives_the_reference_bits(xb: Any, profile: str, granularity: dict, n_bits: int,
                                                signed: bool) -> None:
    if profile == "torch" and n_bits == 16:  # torch's profile ends at 8 bits
        n_bits = 2
    values = data()
    reference = qarray.QuantizedArray(n_bits, values, is_signed=signed, profile=profile, **granularity)
    expected_q = generic_quant(reference.quantizer, values)
    numpy.testing.assert_array_equal(reference.qvalues, expected_q)
    qa = qarray.QuantizedArray(n_bits, xb.asarray(values), is_signed=signed, profile=profile, **granularity)
    numpy.testing.assert_array_equal(xb.to_numpy(qa.qvalues), expected_q)
    numpy.testing.assert_array_equal(
        numpy.asarray(qa.quantizer.scale, dtype=numpy.float64).reshape(-1) if not qa.quantizer.is_per_block
        else xb.to_numpy(qa.quantizer.scale).reshape(-1),
        numpy.asarray(reference.quantizer.scale if not reference.quantizer.is_per_block
                      else reference.quantizer.scale).reshape(-1),
    )
    dequantized = qa.dequant()
    assert "float32" in str(dequantized.dtype)
    numpy.testing.assert_array_equal(bits32(xb.to_numpy(dequantized)), bits32(generic_dequant(reference.quantizer,
                                                                                              expected_q)))


@pytest.mark.skipif(not numba_kernels.available(), reason="Numba is not installed")
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("granularity", ({}, {"block_size": 128}, {"axis": 0}), ids=str)
@pytest.mark.parametrize("dtype", ["uint8", "int16", "int64"])
def test_compiled_kernels_equal_the_generic_path(profile: str, granularity: dict, dtype: str) -> None:
    rng = numpy.random.default_rng(3)
    values = (rng.standard_normal((64, 1024)) * 2.0).astype(numpy.float32)  # above the compiled threshold
    assert values.size >= numba_kernels.MIN_ELEMENTS
    n_bits, signed = (8, False) if dtype == "uint8" else (8, True)
    quantizer = qarray.calibrate([values], n_bits, is_signed=signed, profile=profile, **granularity)
    # ties of the first block's scale, their neighbours, values beyond the range, NaN-free
    scale = float(numpy.asarray(quantizer.scale).reshape(-1)[0])
    ties = (numpy.arange(-100, 100) + 0.5).astype(numpy.float32) * numpy.float32(scale)
    values[0, : ties.size] = ties
    values[1, : ties.size] = numpy.nextafter(ties, numpy.float32(numpy.inf))
    values[2, :50] *= 1000.0
    compiled = quantizer.quant(values, dtype=dtype)
    numpy.testing.assert_array_equal(compiled, generic_quant(quantizer, values, dtype))
    for layout in (values[:, ::2], numpy.asfortranarray(values)):  # the blocked NumPy paths
        if not quantizer.is_per_block or layout.shape == values.shape:
            numpy.testing.assert_array_equal(quantizer.quant(layout, dtype=dtype),
                                             generic_quant(quantizer, numpy.ascontiguousarray(layout), dtype))
    numpy.testing.assert_array_equal(bits32(quantizer.dequant(compiled)),
                                     bits32(generic_dequant(quantizer, compiled)))
    out = numpy.empty(values.shape, dtype=dtype)
    assert quantizer.quant(values, dtype=dtype, out=out) is out
    numpy.testing.assert_array_equal(out, compiled)


@pytest.mark.parametrize("profile", PROFILES)
def test_the_compiled_path_checks_as_the_generic_one(profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    values = data(64, 1024)
    quantizer = qarray.calibrate([values], 8, profile=profile)
    bad = values.copy()
    bad[3, 5] = numpy.nan
    with pytest.raises(ValueError, match="NaN"):
        quantizer.quant(bad)
    monkeypatch.setenv(numba_kernels.DISABLE_ENV, "1")
    with pytest.raises(ValueError, match="NaN"):
        quantizer.quant(bad)
    numpy.testing.assert_array_equal(quantizer.quant(values), generic_quant(quantizer, values))


@pytest.mark.parametrize("profile", PROFILES)
def test_nan_policy_omit_follows_qarray(profile: str) -> None:
    values = numpy.array([-1.0, numpy.nan, 0.5, numpy.inf, 2.0], dtype=numpy.float32)
    qa = qarray.QuantizedArray(8, values, profile=profile, nan_policy="omit")
    finite = qarray.QuantizedArray(8, values[numpy.isfinite(values)], profile=profile)
    assert qa.quantizer.params == finite.quantizer.params
    zero = int(qa.quantizer.zero_point)
    assert qa.qvalues.tolist() == [finite.qvalues[0], zero, finite.qvalues[1], 255, finite.qvalues[2]]


def test_profiles_differ_where_the_arithmetic_differs() -> None:
    """The same weights give other integers under each profile, and each profile its runtime's."""
    rng = numpy.random.default_rng(5)
    weights = rng.standard_normal(20_000).astype(numpy.float32)
    results = {p: qarray.QuantizedArray(8, weights, is_signed=True, profile=p) for p in ("concrete", "onnx", "torch")}
    scale = numpy.float32(results["onnx"].quantizer.scale)
    ties = ((numpy.arange(-100, 100) + 0.5) * scale).astype(numpy.float32)  # float32 ties of the onnx scale
    near = numpy.concatenate([ties, numpy.nextafter(ties, numpy.float32(numpy.inf))])
    integers = {p: qa.quantizer.quant(near) for p, qa in results.items()}
    # the float64 quotient, the float32 quotient and the float32 reciprocal product round differently somewhere
    assert numpy.count_nonzero(integers["onnx"] != integers["torch"]) > 0
    assert numpy.count_nonzero(integers["onnx"] != integers["concrete"]) > 0
    assert results["concrete"].dequant().dtype == numpy.float64
    assert results["onnx"].dequant().dtype == numpy.float32


# ---- the profile as a field ----------------------------------------------------------------


def test_profile_is_an_option_field() -> None:
    options = qarray.QuantizationOptions(8, profile="onnx")
    assert options.profile == "onnx"
    assert "profile='onnx'" in repr(options)
    assert options != qarray.QuantizationOptions(8)
    assert options.quant_options == options
    assert qarray.QuantizationOptions.load_dict(options.dump_dict()) == options
    filled, rest = qarray.fill_from_kwargs(None, qarray.QuantizationOptions, n_bits=4, profile="torch", other=1)
    assert filled is not None and filled.profile == "torch" and rest == {"other": 1}
    assert repr(qarray.QuantizationOptions(8)).endswith("is_precomputed_qat=False)")  # the default is not shown


def test_documents_copies_pickles_and_display_keep_the_profile() -> None:
    qa = qarray.QuantizedArray(4, data(), is_signed=True, profile="onnx", block_size=32)
    for restored in (qarray.loads(qa.dumps()), copy.deepcopy(qa), pickle.loads(pickle.dumps(qa))):
        assert restored.quantizer.options.profile == "onnx"
        numpy.testing.assert_array_equal(restored.qvalues, qa.qvalues)
        assert restored.dequant().dtype == numpy.float32
    quantizer = qarray.loads(qa.quantizer.dumps())
    assert quantizer.profile == "onnx"
    assert "onnx" in qa._repr_html_() and "onnx" in qa.quantizer._repr_html_()


def test_older_documents_load_as_concrete() -> None:
    qa = qarray.QuantizedArray(8, data())
    document = json.loads(qa.dumps())

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "QuantizationOptions":
                del node["profile"]
            for value in node.values():
                strip(value)

    strip(document)
    assert "profile" not in json.dumps(document)
    with pytest.raises(ValueError, match="missing field.*profile"):  # a version-3 document needs it
        qarray.loads(json.dumps(document))

    def version_2(node: Any) -> None:
        if isinstance(node, dict):
            if "format_version" in node:
                node["format_version"] = 2
            for value in node.values():
                version_2(value)

    version_2(document)
    loaded = qarray.loads(json.dumps(document))
    assert loaded.quantizer.options.profile == "concrete"
    numpy.testing.assert_array_equal(loaded.qvalues, qa.qvalues)


def test_calibrate_and_histogram_methods_take_the_profile() -> None:
    batches = [data(seed=seed) for seed in range(3)]
    quantizer = qarray.calibrate(batches, 8, is_signed=True, profile="torch")
    whole = qarray.QuantizedArray(8, numpy.concatenate(batches), is_signed=True, profile="torch")
    assert quantizer.params == whole.quantizer.params
    for method in ("percentile", "mse", "entropy"):
        onnx = qarray.calibrate(batches, 8, profile="onnx", method=method)
        concrete = qarray.calibrate(batches, 8, method=method)
        assert onnx.profile == "onnx"
        # the range the method finds goes through the profile's parameter rule
        assert (onnx.rmin, onnx.rmax) == (concrete.rmin, concrete.rmax)
        expected = qarray.UniformQuantizationParameters()
        expected.compute_quantization_parameters(onnx.options, onnx.stats)
        assert onnx.params == expected
        qa = qarray.QuantizedArray(8, batches[0], profile="onnx", method=method)
        assert qa.quantizer.profile == "onnx"


# ---- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"profile": "tflite"}, "profile must be one of"),
        ({"profile": "onnx", "n_bits": 6}, "n_bits must be 4, 8 or 16 with profile='onnx'"),
        ({"profile": "onnx", "n_bits": 2}, "n_bits must be 4, 8 or 16"),
        ({"profile": "torch", "n_bits": 9}, "n_bits must be from 1 to 8 with profile='torch'"),
        ({"profile": "onnx", "is_narrow": True}, "is_narrow=True is not available with profile='onnx'"),
        ({"profile": "onnx", "is_qat": True}, "is_qat=True"),
        ({"profile": "torch", "is_qat": True}, "is_qat=True"),
    ],
)
def test_refusals_name_the_argument(kwargs: dict, match: str) -> None:
    kwargs = {"n_bits": 8, **kwargs}
    n_bits = kwargs.pop("n_bits")
    with pytest.raises(ValueError, match=match):
        qarray.QuantizedArray(n_bits, data(), **kwargs)
    with pytest.raises(ValueError, match=match):
        qarray.calibrate([data()], n_bits, **kwargs)


def test_profile_type_and_late_changes_are_checked() -> None:
    with pytest.raises(TypeError, match="profile must be one of"):
        qarray.QuantizationOptions(8, profile=None)  # type: ignore[arg-type]
    options = qarray.QuantizationOptions(6)
    options.profile = "onnx"  # fields are set one by one: the combination is checked when used
    with pytest.raises(ValueError, match="n_bits must be 4, 8 or 16"):
        options.validate()
    with pytest.raises(ValueError, match="profile must be one of"):
        primitives.dequant_spec(0.5, 0, like=numpy.zeros(3, dtype=numpy.int8), profile="tf")


def test_a_range_beyond_float32_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds float32"):
        qarray.QuantizedArray(8, numpy.array([0.0, 1e39]), profile="onnx")
    with pytest.raises(ValueError, match="not finite"):  # torchao's float32 width overflows
        qarray.QuantizedArray(8, numpy.array([-3e38, 3e38], dtype=numpy.float32), profile="torch")
