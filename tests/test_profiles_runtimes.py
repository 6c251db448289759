"""The runtime profiles against the runtimes themselves, bit for bit.

The oracles are the real thing: ONNX Runtime's quantization tool
(``onnxruntime.quantization.quant_utils``: ``compute_scale_zp``, ``quantize_data``,
``quantize_nparray``), one-node ONNX models run by ``onnxruntime.InferenceSession``
(``QuantizeLinear`` / ``DequantizeLinear`` per tensor, per axis and blocked, for INT4/UINT4,
INT8/UINT8 and INT16/UINT16), and torchao's ``choose_qparams_affine``,
``quantize_affine`` and ``dequantize_affine``.

The data holds values at float32 ties (``x / scale = k + 0.5`` in float32) and their
float32 neighbours, values outside the calibration range, outliers, and rows of very
different spreads. Integers and parameters are compared exactly, de-quantized values
by their float32 bit patterns.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Tuple

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qarray
from qarray.core.profiles import onnx_qrange, torch_qrange

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import quant_utils

ONNX_TYPES = {
    (4, True): TensorProto.INT4,
    (4, False): TensorProto.UINT4,
    (8, True): TensorProto.INT8,
    (8, False): TensorProto.UINT8,
    (16, True): TensorProto.INT16,
    (16, False): TensorProto.UINT16,
}
ONNX_CASES = [(n_bits, signed, symmetric) for (n_bits, signed) in ONNX_TYPES for symmetric in (False, True)
              if signed or not symmetric]


def bits32(values: Any) -> numpy.ndarray:
    """float32 values as their bit patterns (NaN and the sign of zero compared exactly)."""
    return numpy.ascontiguousarray(numpy.asarray(values, dtype=numpy.float32)).view(numpy.uint32)


def spread_rows(rows: int = 12, length: int = 256, seed: int = 0) -> numpy.ndarray:
    """float32 rows of very different spreads and centres, with an outlier in some."""
    rng = numpy.random.default_rng(seed)
    spreads = numpy.logspace(-3, 3, rows)[:, None]
    centres = rng.uniform(-2.0, 2.0, (rows, 1)) * spreads
    values = rng.standard_normal((rows, length)) * spreads + centres
    values[::3, 7] *= 40.0  # outliers
    values[1] = numpy.abs(values[1])  # a row without negatives
    return values.astype(numpy.float32)


def with_ties(values: numpy.ndarray, scale: float, zero: int, qmin: int, qmax: int) -> numpy.ndarray:
    """``values`` with some entries replaced by float32 ties of ``scale`` and their neighbours,
    all inside the range of ``values`` (so the calibration range stays the same)."""
    scale32 = numpy.float32(scale)
    low, high = float(values.min()), float(values.max())
    ties = []
    for k in range(qmin - zero, qmax - zero):
        tie = numpy.float32((k + 0.5) * float(scale32))
        below, above = numpy.nextafter(tie, numpy.float32(-numpy.inf)), numpy.nextafter(tie, numpy.float32(numpy.inf))
        for candidate in (tie, below, above):
            if low <= candidate <= high:
                ties.append(candidate)
    flat = values.reshape(-1).copy()
    ties_array = numpy.asarray(ties, dtype=numpy.float32)[: flat.size // 2]
    positions = numpy.linspace(1, flat.size - 2, ties_array.size).astype(int)
    keep = (flat[positions] != low) & (flat[positions] != high)
    flat[positions[keep]] = ties_array[keep]
    return flat.reshape(values.shape)


# ---- ONNX Runtime's quantization tool ----------------------------------------------------


def ort_parameters(rmin: float, rmax: float, n_bits: int, signed: bool, symmetric: bool) -> Tuple[float, int]:
    """``compute_scale_zp`` as ONNX Runtime's tool calls it for float32 data."""
    qtype = ONNX_TYPES[(n_bits, signed)]
    qmin, qmax = quant_utils.get_qmin_qmax_for_qType(qtype, symmetric=symmetric)
    zero, scale = quant_utils.compute_scale_zp(numpy.float32(rmin), numpy.float32(rmax), qmin, qmax, symmetric)
    return float(scale), int(zero)


@pytest.mark.parametrize("n_bits, signed, symmetric", ONNX_CASES)
def test_onnx_qrange_is_onnxruntimes_table(n_bits: int, signed: bool, symmetric: bool) -> None:
    qmin, qmax = quant_utils.get_qmin_qmax_for_qType(ONNX_TYPES[(n_bits, signed)], symmetric=symmetric)
    assert onnx_qrange(n_bits, signed, symmetric) == (int(qmin), int(qmax))


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-1e6, 1e6, width=32),
    st.floats(-1e6, 1e6, width=32),
    st.sampled_from(ONNX_CASES),
)
def test_onnx_parameters_equal_compute_scale_zp(a: float, b: float, case: Tuple[int, bool, bool]) -> None:
    n_bits, signed, symmetric = case
    rmin, rmax = min(a, b), max(a, b)
    options = qarray.QuantizationOptions(n_bits, is_signed=signed, is_symmetric=symmetric, profile="onnx")
    params = qarray.UniformQuantizationParameters()
    params.compute_quantization_parameters(options, _stats(rmin, rmax))
    scale, zero = ort_parameters(rmin, rmax, n_bits, signed, symmetric)
    assert float(params.scale) == scale
    assert int(params.zero_point) == zero


def _stats(rmin: float, rmax: float) -> qarray.MinMaxQuantizationStats:
    stats = qarray.MinMaxQuantizationStats()
    stats.rmin, stats.rmax = rmin, rmax
    return stats


@pytest.mark.parametrize("n_bits, signed, symmetric", ONNX_CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_onnx_quantize_data_bit_for_bit(n_bits: int, signed: bool, symmetric: bool, seed: int) -> None:
    values = spread_rows(4, 300, seed)[2]
    scale, zero = ort_parameters(float(values.min()), float(values.max()), n_bits, signed, symmetric)
    qmin, qmax = onnx_qrange(n_bits, signed, False)
    values = with_ties(values, scale, zero, qmin, qmax)
    ort_zero, ort_scale, ort_q = quant_utils.quantize_data(values, ONNX_TYPES[(n_bits, signed)], symmetric)
    qa = qarray.QuantizedArray(n_bits, values, is_signed=signed, is_symmetric=symmetric, profile="onnx")
    assert float(qa.quantizer.scale) == float(ort_scale)
    assert int(qa.quantizer.zero_point) == int(ort_zero)
    numpy.testing.assert_array_equal(qa.qvalues, numpy.asarray(ort_q).astype(numpy.int64))
    # Values outside the calibration range saturate to the type's whole range, as QuantizeLinear does.
    outside = numpy.concatenate([values * 3.0, values - 5.0 * float(numpy.abs(values).max())]).astype(numpy.float32)
    expected = quant_utils.quantize_nparray(ONNX_TYPES[(n_bits, signed)], outside, ort_scale, ort_zero)
    numpy.testing.assert_array_equal(qa.quantizer.quant(outside), numpy.asarray(expected).astype(numpy.int64))


# ---- one-node models in ONNX Runtime -------------------------------------------------------


def _onnx_session(
    qtype: int, shape: Tuple[int, ...], scale: numpy.ndarray, zero: numpy.ndarray, attributes: Dict[str, int]
) -> Any:
    """A model ``x -> QuantizeLinear -> (Cast to int32, DequantizeLinear)`` with constant parameters."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], **attributes),
        helper.make_node("Cast", ["q"], ["q32"], to=TensorProto.INT32),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"], **attributes),
    ]
    graph = helper.make_graph(
        nodes,
        "quantize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [
            helper.make_tensor_value_info("q32", TensorProto.INT32, list(shape)),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape)),
        ],
        initializer=[
            numpy_helper.from_array(numpy.asarray(scale, dtype=numpy.float32), "scale"),
            helper.make_tensor("zero", qtype, list(numpy.shape(zero)), numpy.asarray(zero).reshape(-1).tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


GRANULARITIES = {
    "tensor": ({}, {}),
    "axis": ({"axis": 0}, {"axis": 0}),
    "block": ({"block_size": 32}, {"axis": 1, "block_size": 32}),
}


@pytest.mark.parametrize("n_bits, signed, symmetric", ONNX_CASES)
@pytest.mark.parametrize("granularity", sorted(GRANULARITIES))
def test_onnx_operators_bit_for_bit(n_bits: int, signed: bool, symmetric: bool, granularity: str) -> None:
    ours, theirs = GRANULARITIES[granularity]
    values = spread_rows()
    qa = qarray.QuantizedArray(n_bits, values, is_signed=signed, is_symmetric=symmetric, profile="onnx", **ours)
    quantizer = qa.quantizer
    scale, zero = numpy.asarray(quantizer.scale), numpy.asarray(quantizer.zero_point)
    if granularity == "axis":  # ONNX takes per-axis parameters as 1-d tensors
        scale, zero = scale.reshape(-1), zero.reshape(-1)
    session = _onnx_session(ONNX_TYPES[(n_bits, signed)], values.shape, scale, zero, theirs)
    # The calibration data, at ties of row 0's scale, and beyond the range (saturated).
    tied = values.copy()
    row_scale, row_zero = float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0])
    qmin, qmax = onnx_qrange(n_bits, signed, False)
    tied[0] = with_ties(values[0], row_scale, row_zero, qmin, qmax)
    for data in (values, tied, values * 4.0, -values * 4.0):
        q, y = session.run(None, {"x": data})
        ours_q = quantizer.quant(data)
        numpy.testing.assert_array_equal(ours_q, q.astype(numpy.int64))
        ours_y = quantizer.dequant(ours_q)
        assert ours_y.dtype == numpy.float32
        numpy.testing.assert_array_equal(bits32(ours_y), bits32(y))


def test_onnx_saturates_to_the_whole_type_with_symmetric_parameters() -> None:
    values = numpy.linspace(-1.0, 1.0, 101, dtype=numpy.float32)
    qa = qarray.QuantizedArray(8, values, is_signed=True, is_symmetric=True, profile="onnx")
    assert int(qa.qvalues.min()) == -127  # the symmetric table's range...
    # ...but QuantizeLinear saturates to INT8's whole range
    assert int(qa.quantizer.quant(numpy.array([-5.0], dtype=numpy.float32))[0]) == -128


# ---- torchao ---------------------------------------------------------------------------------

torch = pytest.importorskip("torch")


def _torchao() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchao.quantization import quant_primitives
    return quant_primitives


TORCH_CASES = [(n_bits, signed, symmetric, narrow)
               for n_bits in (2, 4, 8) for signed in (False, True) for symmetric in (False, True)
               for narrow in (False, True) if (signed or not (symmetric or narrow))]


def _torchao_quantize(values: numpy.ndarray, block: Tuple[int, ...], n_bits: int, signed: bool, symmetric: bool,
                      narrow: bool, data: Optional[numpy.ndarray] = None) -> Tuple[Any, ...]:
    primitives = _torchao()
    qmin, qmax = torch_qrange(n_bits, signed, narrow)
    target = torch.int8 if signed else torch.uint8
    mapping = primitives.MappingType.SYMMETRIC if symmetric else primitives.MappingType.ASYMMETRIC
    tensor = torch.from_numpy(values)
    scale, zero = primitives.choose_qparams_affine(tensor, mapping, block, target, qmin, qmax)
    source = tensor if data is None else torch.from_numpy(data)
    q = primitives.quantize_affine(source, block, scale, zero, target, qmin, qmax)
    y = primitives.dequantize_affine(q, block, scale, zero, target, qmin, qmax, output_dtype=torch.float32)
    return scale.numpy(), zero.numpy(), q.numpy(), y.numpy()


TORCH_GRANULARITIES = {
    "tensor": ({}, lambda shape: tuple(shape)),
    "axis": ({"axis": 0}, lambda shape: (1, shape[1])),
    "group": ({"block_size": 32}, lambda shape: (1, 32)),
}


@pytest.mark.parametrize("n_bits, signed, symmetric, narrow", TORCH_CASES)
@pytest.mark.parametrize("granularity", sorted(TORCH_GRANULARITIES))
def test_torch_primitives_bit_for_bit(n_bits: int, signed: bool, symmetric: bool, narrow: bool,
                                      granularity: str) -> None:
    ours, block_of = TORCH_GRANULARITIES[granularity]
    values = spread_rows()
    qa = qarray.QuantizedArray(
        n_bits, values, is_signed=signed, is_symmetric=symmetric, is_narrow=narrow, profile="torch", **ours
    )
    quantizer = qa.quantizer
    block = block_of(values.shape)
    scale, zero, _, _ = _torchao_quantize(values, block, n_bits, signed, symmetric, narrow)
    numpy.testing.assert_array_equal(bits32(numpy.asarray(quantizer.scale).reshape(-1)), bits32(scale.reshape(-1)))
    numpy.testing.assert_array_equal(numpy.asarray(quantizer.zero_point).reshape(-1), zero.reshape(-1))
    tied = values.copy()
    qmin, qmax = torch_qrange(n_bits, signed, narrow)
    tied[0] = with_ties(values[0], float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0]), qmin, qmax)
    for data in (values, tied, values * 4.0):
        _, _, q, y = _torchao_quantize(values, block, n_bits, signed, symmetric, narrow, data)
        ours_q = quantizer.quant(data)
        numpy.testing.assert_array_equal(ours_q, q.astype(numpy.int64))
        numpy.testing.assert_array_equal(bits32(quantizer.dequant(ours_q)), bits32(y))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e4, 1e4, width=32), min_size=2, max_size=64),
    st.sampled_from(TORCH_CASES),
)
def test_torch_per_tensor_any_values(values: list, case: Tuple[int, bool, bool, bool]) -> None:
    n_bits, signed, symmetric, narrow = case
    data = numpy.asarray(values, dtype=numpy.float32)
    options = qarray.QuantizationOptions(n_bits, is_signed=signed, is_symmetric=symmetric, profile="torch")
    options.is_narrow = narrow
    qa = qarray.QuantizedArray(n_bits, data, options=options)
    scale, zero, q, y = _torchao_quantize(data, data.shape, n_bits, signed, symmetric, narrow)
    assert float(qa.quantizer.scale) == float(scale)
    assert int(qa.quantizer.zero_point) == int(zero)
    numpy.testing.assert_array_equal(qa.qvalues, q.astype(numpy.int64))
    numpy.testing.assert_array_equal(bits32(qa.dequant()), bits32(y))
