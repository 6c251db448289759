"""qarray.onnx against ONNX Runtime: weights stored as integers, activation pairs, reading them back.

The models are small real graphs built with ``onnx.helper`` (MatMul + Add, Gemm with and
without ``transB``, Conv); each is run by ``onnxruntime.InferenceSession`` before and after
quantization. Dequantized weights are compared with ``QuantizedArray(..., profile="onnx")``
by their float32 bit patterns; model outputs are held to a bound derived from the scales.
"""

from __future__ import annotations

import dataclasses
import os
import tracemalloc
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy
import pytest

import qarray
import qarray.onnx
from qarray.core.granularity import block_extent

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

RNG_SEED = 7
UNIT_ROUNDOFF = 2.0**-24  # float32


def bits32(values: Any) -> numpy.ndarray:
    return numpy.ascontiguousarray(numpy.asarray(values, dtype=numpy.float32)).view(numpy.uint32)


def _weights(shape: Sequence[int], seed: int) -> numpy.ndarray:
    rng = numpy.random.default_rng(seed)
    values = rng.standard_normal(shape) * rng.uniform(0.01, 1.0, (shape[0],) + (1,) * (len(shape) - 1))
    return values.astype(numpy.float32)


def _model(nodes: List[Any], inputs: Dict[str, Tuple[int, ...]], outputs: Dict[str, Tuple[int, ...]],
           initializers: Dict[str, numpy.ndarray], opset: int = 21) -> Any:
    graph = helper.make_graph(
        nodes,
        "model",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)) for name, shape in outputs.items()],
        initializer=[numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10 if opset >= 21 else 7
    onnx.checker.check_model(model, full_check=True)
    return model


def matmul_model(opset: int = 21) -> Any:
    """``y = x[4, 64] @ W[64, 128] + b``."""
    return _model(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        {"x": (4, 64)},
        {"y": (4, 128)},
        {"W": _weights((64, 128), 1), "b": _weights((128,), 2)},
        opset,
    )


def gemm_model(trans_b: bool) -> Any:
    """``y = A[4, 64] @ B + C``, ``B`` stored ``[96, 64]`` when ``trans_b``."""
    shape = (96, 64) if trans_b else (64, 96)
    return _model(
        [helper.make_node("Gemm", ["a", "B", "C"], ["y"], transB=int(trans_b))],
        {"a": (4, 64)},
        {"y": (4, 96)},
        {"B": _weights(shape, 3), "C": _weights((96,), 4)},
    )


def conv_model() -> Any:
    """``y = Conv(x[2, 8, 10, 10], W[16, 8, 3, 3], bias[16])``, padding 1."""
    return _model(
        [helper.make_node("Conv", ["x", "W", "bias"], ["y"], pads=[1, 1, 1, 1])],
        {"x": (2, 8, 10, 10)},
        {"y": (2, 16, 10, 10)},
        {"W": _weights((16, 8, 3, 3), 5), "bias": _weights((16,), 6)},
    )


def _feeds(model: Any) -> Dict[str, numpy.ndarray]:
    rng = numpy.random.default_rng(RNG_SEED)
    feeds = {}
    for info in model.graph.input:
        shape = [dim.dim_value for dim in info.type.tensor_type.shape.dim]
        feeds[info.name] = (rng.standard_normal(shape) * 2.0).astype(numpy.float32)
    return feeds


def run(model: Any, feeds: Dict[str, numpy.ndarray], extra_outputs: Sequence[str] = ()) -> Dict[str, numpy.ndarray]:
    """Run ``model`` in ONNX Runtime; ``extra_outputs`` (inner tensors) become graph outputs to read them."""
    runnable = onnx.ModelProto()
    runnable.CopyFrom(model)
    for name in extra_outputs:
        runnable.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(runnable.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [output.name for output in runnable.graph.output]
    return dict(zip(names, session.run(names, feeds)))


def reference(model: Any, name: str, n_bits: int, **kwargs: Any) -> qarray.QuantizedArray:
    """The QuantizedArray of the initializer ``name`` as stored in ``model``."""
    weight = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)
    return qarray.QuantizedArray(n_bits, weight, profile="onnx", **kwargs)


def per_value(parameter: Any, shape: Tuple[int, ...], axis: Any, block_size: Any) -> numpy.ndarray:
    """A parameter grid spread over ``shape``: each value gets its block's parameter."""
    grid = numpy.asarray(parameter, dtype=numpy.float64)
    if grid.ndim == 0:
        return numpy.broadcast_to(grid, shape)
    extent, _ = block_extent(shape, axis, block_size)
    for d, length in enumerate(extent):
        grid = numpy.repeat(grid, length, axis=d)
    return grid[tuple(slice(0, length) for length in shape)]


def _gemm_like_bound(x: numpy.ndarray, half_step: numpy.ndarray, weight: numpy.ndarray, bias: numpy.ndarray,
                     terms: int, roundoff: float = UNIT_ROUNDOFF) -> numpy.ndarray:
    """``|x| @ half_step``, plus the rounding (unit ``roundoff``) of two products of ``terms`` terms and a bias add."""
    x = numpy.abs(x.astype(numpy.float64))
    rounding = (terms + 2) * 2 * roundoff * (x @ (numpy.abs(weight) + half_step) + numpy.abs(bias))
    return x @ half_step + rounding


def _conv_windows(x: numpy.ndarray) -> numpy.ndarray:
    padded = numpy.pad(x.astype(numpy.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    return numpy.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))


def _conv(x: numpy.ndarray, weight: numpy.ndarray) -> numpy.ndarray:
    return numpy.einsum("nchwij,ocij->nohw", _conv_windows(x), weight.astype(numpy.float64))


# ---- the cases ---------------------------------------------------------------------------------

MATMUL_CASES = [
    (8, {}),
    (8, {"axis": 1}),
    (8, {"axis": 0}),
    (8, {"axis": -1}),
    (8, {"is_signed": False, "is_symmetric": False}),
    (8, {"block_size": (16, 1)}),
    (8, {"block_size": (24, 1)}),  # the last block along axis 0 is shorter (64 = 24 + 24 + 16)
    (4, {}),
    (4, {"axis": 1, "is_symmetric": False}),
    (4, {"block_size": (32, 1)}),
    (4, {"block_size": 32}),
    (4, {"block_size": 48, "is_signed": False, "is_symmetric": False}),
    (16, {"axis": 1}),
    (16, {"block_size": (32, 1), "is_signed": False, "is_symmetric": False}),
]


def _options(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    return {"is_signed": kwargs.get("is_signed", True), "is_symmetric": kwargs.get("is_symmetric", True),
            "axis": kwargs.get("axis"), "block_size": kwargs.get("block_size")}


def _check_dequantized(model: Any, quantized: Any, outputs: Dict[str, numpy.ndarray], name: str, n_bits: int,
                       kwargs: Dict[str, Any]) -> qarray.QuantizedArray:
    expected = reference(model, name, n_bits, **_options(kwargs))
    numpy.testing.assert_array_equal(bits32(outputs[name]), bits32(expected.dequant()))
    return expected


def _quantize_and_run(model: Any, name: str, n_bits: int, kwargs: Dict[str, Any]) -> Tuple[Any, ...]:
    """Quantize ``model``, check it, run both models and check the weight ``name`` bit for bit.

    Returns the inputs, both models' outputs and the weight's reference QuantizedArray.
    """
    quantized = qarray.onnx.quantize_weights(model, n_bits=n_bits, **kwargs)
    onnx.checker.check_model(quantized, full_check=True)
    feeds = _feeds(model)
    before, after = run(model, feeds), run(quantized, feeds, extra_outputs=[name])
    return feeds, before, after, _check_dequantized(model, quantized, after, name, n_bits, kwargs)


@pytest.mark.parametrize("n_bits, kwargs", MATMUL_CASES)
def test_matmul_weights_dequantize_bit_for_bit_and_outputs_stay_in_bound(n_bits: int, kwargs: Dict[str, Any]) -> None:
    model = matmul_model()
    feeds, before, after, expected = _quantize_and_run(model, "W", n_bits, kwargs)
    weight = numpy_helper.to_array(model.graph.initializer[0])
    bias = numpy_helper.to_array(model.graph.initializer[1])
    half_step = per_value(expected.quantizer.scale, weight.shape, kwargs.get("axis"), kwargs.get("block_size")) / 2
    bound = _gemm_like_bound(feeds["x"], half_step, weight, bias, terms=64)
    moved = numpy.abs(after["y"].astype(numpy.float64) - before["y"])
    assert numpy.all(moved <= bound), float(numpy.max(moved - bound))
    assert numpy.any(moved > 0)


@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("n_bits, kwargs", [(8, {}), (8, {"axis": 0}), (4, {"block_size": 32}),
                                            (4, {"block_size": (16, 1)})])
def test_gemm_weights(trans_b: bool, n_bits: int, kwargs: Dict[str, Any]) -> None:
    model = gemm_model(trans_b)
    feeds, before, after, expected = _quantize_and_run(model, "B", n_bits, kwargs)
    stored = numpy_helper.to_array(model.graph.initializer[0])
    half_step = per_value(expected.quantizer.scale, stored.shape, kwargs.get("axis"), kwargs.get("block_size")) / 2
    if trans_b:
        stored, half_step = stored.T, half_step.T
    bound = _gemm_like_bound(feeds["a"], half_step, stored, numpy_helper.to_array(model.graph.initializer[1]), 64)
    assert numpy.all(numpy.abs(after["y"].astype(numpy.float64) - before["y"]) <= bound)


@pytest.mark.parametrize("n_bits, kwargs", [(8, {}), (8, {"axis": 0}), (4, {"axis": 0}),
                                            (4, {"block_size": (1, 4, 1, 1)}), (8, {"block_size": 3}),
                                            (16, {"block_size": (1, 8, 1, 1)})])
def test_conv_weights(n_bits: int, kwargs: Dict[str, Any]) -> None:
    model = conv_model()
    feeds, before, after, expected = _quantize_and_run(model, "W", n_bits, kwargs)
    weight = numpy_helper.to_array(model.graph.initializer[0])
    bias = numpy_helper.to_array(model.graph.initializer[1])[None, :, None, None]
    half_step = per_value(expected.quantizer.scale, weight.shape, kwargs.get("axis"), kwargs.get("block_size")) / 2
    x = numpy.abs(feeds["x"])
    rounding = (72 + 2) * 2 * UNIT_ROUNDOFF * (_conv(x, numpy.abs(weight) + half_step) + numpy.abs(bias))
    bound = _conv(x, half_step) + rounding
    assert numpy.all(numpy.abs(after["y"].astype(numpy.float64) - before["y"]) <= bound)


# ---- what else the result promises -------------------------------------------------------------


def test_the_input_model_is_not_modified() -> None:
    model = matmul_model(opset=13)
    serialized = model.SerializeToString()
    qarray.onnx.quantize_weights(model, n_bits=4, block_size=(32, 1))
    assert model.SerializeToString() == serialized


def test_small_initializers_and_other_inputs_are_untouched() -> None:
    model = matmul_model()
    quantized = qarray.onnx.quantize_weights(model)
    names = [tensor.name for tensor in quantized.graph.initializer]
    assert names == ["W_quantized", "W_scale", "W_zero_point", "b"]
    assert quantized.graph.initializer[3] == model.graph.initializer[1]  # the bias, 128 values
    assert [node.op_type for node in quantized.graph.node] == ["DequantizeLinear", "MatMul", "Add"]
    assert list(quantized.graph.node[1:]) == list(model.graph.node)
    assert quantized.graph.input == model.graph.input and quantized.graph.output == model.graph.output


def test_min_size_is_respected() -> None:
    model = matmul_model()
    assert qarray.onnx.quantize_weights_report(model, min_size=64 * 128 + 1)[1] == []
    assert [r.name for r in qarray.onnx.quantize_weights_report(model, min_size=64 * 128)[1]] == ["W"]
    # a bias that is large enough is still no weight: only the weight inputs of ops count
    assert [r.name for r in qarray.onnx.quantize_weights_report(model, min_size=1)[1]] == ["W"]


def test_ops_filter_is_respected() -> None:
    model = matmul_model()
    quantized, reports = qarray.onnx.quantize_weights_report(model, ops=("Gemm", "Conv"))
    assert reports == []
    assert quantized.SerializeToString() == model.SerializeToString()
    assert [r.name for r in qarray.onnx.quantize_weights_report(gemm_model(True), ops=["Gemm"])[1]] == ["B"]


def test_a_weight_read_by_several_nodes_gets_one_dequantize_node() -> None:
    weight = _weights((64, 64), 9)
    model = _model(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("MatMul", ["h", "W"], ["g"]),
         helper.make_node("Add", ["g", "W"], ["y"])],
        {"x": (64, 64)}, {"y": (64, 64)}, {"W": weight},
    )
    quantized = qarray.onnx.quantize_weights(model, n_bits=8, axis=1)
    onnx.checker.check_model(quantized, full_check=True)
    assert [node.op_type for node in quantized.graph.node] == ["DequantizeLinear", "MatMul", "MatMul", "Add"]
    feeds = _feeds(model)
    outputs = run(quantized, feeds, extra_outputs=["W"])
    _check_dequantized(model, quantized, outputs, "W", 8, {"axis": 1})


FLOAT_TYPES = {"float16": (TensorProto.FLOAT16, numpy.float16), "double": (TensorProto.DOUBLE, numpy.float64),
               "bfloat16": (TensorProto.BFLOAT16, None)}


@pytest.mark.parametrize("n_bits, kwargs", [(8, {"axis": 1}), (4, {"block_size": (32, 1)})])
@pytest.mark.parametrize("type_name", sorted(FLOAT_TYPES))
def test_weights_of_other_float_types_are_cast_back(type_name: str, n_bits: int, kwargs: Dict[str, Any]) -> None:
    element_type, dtype = FLOAT_TYPES[type_name]
    weight = _weights((64, 128), 1)
    stored = helper.make_tensor("W", element_type, [64, 128], weight.reshape(-1).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "model",
        [helper.make_tensor_value_info("x", element_type, [4, 64])],
        [helper.make_tensor_value_info("y", element_type, [4, 128])], initializer=[stored],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    quantized, (report,) = qarray.onnx.quantize_weights_report(model, n_bits=n_bits, **kwargs)
    onnx.checker.check_model(quantized, full_check=True)
    assert [node.op_type for node in quantized.graph.node] == ["DequantizeLinear", "Cast", "MatMul"]
    assert list(quantized.graph.node[1].output) == ["W"]
    values = numpy_helper.to_array(stored)
    expected = qarray.QuantizedArray(n_bits, values.astype(numpy.float32), profile="onnx", **_options(kwargs))
    # bfloat16 has no MatMul on ONNX Runtime's CPU: run the weight's nodes alone
    runnable = onnx.ModelProto()
    runnable.CopyFrom(quantized)
    del runnable.graph.node[2:]
    del runnable.graph.input[:]
    del runnable.graph.output[:]
    read = "W"
    if dtype is None:  # ONNX Runtime hands no bfloat16 arrays to NumPy; widening to float32 is exact
        runnable.graph.node.append(helper.make_node("Cast", ["W"], ["W_float"], to=TensorProto.FLOAT))
        read = "W_float"
    runnable.graph.output.extend([helper.make_tensor_value_info("W_dequantized", TensorProto.FLOAT, None),
                                  helper.make_tensor_value_info(read, TensorProto.FLOAT if dtype is None
                                                                else element_type, None)])
    session = onnxruntime.InferenceSession(runnable.SerializeToString(), providers=["CPUExecutionProvider"])
    dequantized, cast = session.run(None, {})
    numpy.testing.assert_array_equal(bits32(dequantized), bits32(expected.dequant()))
    numpy.testing.assert_array_equal(numpy.asarray(cast).astype(numpy.float64),
                                     expected.dequant().astype(values.dtype).astype(numpy.float64))
    assert report.float_bytes == values.nbytes
    error = numpy.abs(values.astype(numpy.float64) - expected.dequant().astype(values.dtype).astype(numpy.float64))
    assert report.max_abs_error == float(error.max())
    if dtype is not None:  # the whole model runs, and moves by no more than its weight's error allows
        feeds = {"x": _feeds(matmul_model())["x"].astype(dtype)}
        before, after = run(model, feeds)["y"], run(quantized, feeds)["y"]
        assert after.dtype == dtype
        bound = _gemm_like_bound(feeds["x"], error, values.astype(numpy.float64), numpy.zeros(128), terms=64,
                                 roundoff=float(numpy.finfo(dtype).eps) / 2)
        assert numpy.all(numpy.abs(after.astype(numpy.float64) - before) <= bound)


def test_the_opset_is_raised_where_needed() -> None:
    quantized = qarray.onnx.quantize_weights(matmul_model(opset=13), n_bits=4, block_size=(32, 1))
    assert [(o.domain, o.version) for o in quantized.opset_import] == [("", 21)]
    assert quantized.ir_version >= 10
    onnx.checker.check_model(quantized, full_check=True)
    feeds = _feeds(quantized)
    _check_dequantized(matmul_model(), quantized, run(quantized, feeds, ["W"]), "W", 4, {"block_size": (32, 1)})
    kept = qarray.onnx.quantize_weights(matmul_model(opset=13), n_bits=8, axis=1)
    assert [(o.domain, o.version) for o in kept.opset_import] == [("", 13)]


def _serialized_size(model: Any) -> int:
    return len(model.SerializeToString())


def test_int4_blocks_make_the_model_smaller_by_three_quarters_of_the_weights() -> None:
    model = matmul_model()
    float_bytes = 64 * 128 * 4
    quantized, reports = qarray.onnx.quantize_weights_report(model, n_bits=4, block_size=(32, 1))
    saved = _serialized_size(model) - _serialized_size(quantized)
    assert saved >= 0.75 * float_bytes, (saved, float_bytes)
    assert reports[0].float_bytes == float_bytes
    assert reports[0].quantized_bytes == 64 * 128 // 2 + 2 * 128 * 4 + 2 * 128 // 2


def test_report() -> None:
    model = matmul_model()
    calls: List[Tuple[int, int, str]] = []
    quantized, reports = qarray.onnx.quantize_weights_report(
        model, n_bits=8, axis=1, progress=lambda done, total, name: calls.append((done, total, name))
    )
    assert calls == [(1, 1, "W")]
    (report,) = reports
    expected = reference(model, "W", 8, **_options({"axis": 1}))
    weight = numpy_helper.to_array(model.graph.initializer[0]).astype(numpy.float64)
    assert report.name == "W" and report.shape == (64, 128) and report.n_bits == 8
    assert report.granularity == "axis 1"
    assert report.quantized_bytes == 64 * 128 + 128 * 4 + 128
    assert report.max_abs_error == float(numpy.max(numpy.abs(weight - expected.dequant())))
    assert report.error_bound == float(numpy.max(expected.quantizer.scale)) / 2
    assert report.max_abs_error <= report.error_bound * (1 + 2**-16)
    assert qarray.onnx.quantize_weights(model, n_bits=8, axis=1) == quantized
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.n_bits = 4  # type: ignore[misc]
    granularities = {
        "per-tensor": {}, "block 32 along axis 1": {"block_size": 32}, "block 16 along axis 0": {"block_size": (16, 1)}
    }
    for text, kwargs in granularities.items():
        assert qarray.onnx.quantize_weights_report(model, n_bits=4, **kwargs)[1][0].granularity == text


@pytest.mark.parametrize("kwargs, error, words", [
    ({"n_bits": 5}, ValueError, "n_bits"),
    ({"n_bits": 2}, ValueError, "n_bits"),
    ({"n_bits": True}, TypeError, "n_bits"),
    ({"n_bits": 8.0}, TypeError, "n_bits"),
    ({"axis": (0, 1)}, ValueError, "axis"),
    ({"axis": 2}, ValueError, "axis"),
    ({"axis": 0, "block_size": 32}, ValueError, "block_size"),
    ({"block_size": (32, 32)}, ValueError, "block_size"),
    ({"block_size": (None, 4)}, ValueError, "block_size"),
    ({"block_size": 0}, ValueError, "block_size"),
    ({"is_signed": False}, ValueError, "is_symmetric"),
    ({"is_signed": 1}, TypeError, "is_signed"),
    ({"min_size": -1}, ValueError, "min_size"),
    ({"min_size": 1.5}, TypeError, "min_size"),
    ({"ops": "MatMul"}, TypeError, "ops"),
    ({"ops": ("Relu",)}, ValueError, "ops"),
    ({"progress": 3}, TypeError, "progress"),
])
def test_bad_arguments_are_refused(kwargs: Dict[str, Any], error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        qarray.onnx.quantize_weights(matmul_model(), **kwargs)


def test_a_model_that_is_not_one_is_refused() -> None:
    with pytest.raises(TypeError, match="model"):
        qarray.onnx.quantize_weights(42)


# ---- weights held in Constant nodes ------------------------------------------------------------


def as_constants(model: Any, *names: str) -> Any:
    """``model`` with the initializers ``names`` written as ``Constant`` nodes at the start of the graph."""
    moved = onnx.ModelProto()
    moved.CopyFrom(model)
    graph = moved.graph
    tensors = {tensor.name: tensor for tensor in graph.initializer}
    constants = [helper.make_node("Constant", [], [name], name=f"{name}_Constant", value=tensors[name])
                 for name in names]
    kept = [tensor for tensor in model.graph.initializer if tensor.name not in names]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    graph.ClearField("node")
    graph.node.extend([*constants, *model.graph.node])
    onnx.checker.check_model(moved, full_check=True)
    return moved


def _producers(model: Any, name: str) -> List[str]:
    return [node.op_type for node in model.graph.node if name in node.output]


CONSTANT_CASES = [
    (matmul_model, "W", 8, {}),
    (matmul_model, "W", 4, {"block_size": (32, 1)}),
    (matmul_model, "W", 16, {"axis": 1, "is_signed": False, "is_symmetric": False}),
    (lambda: gemm_model(True), "B", 8, {"axis": 0}),
    (conv_model, "W", 4, {"axis": 0}),
]


@pytest.mark.parametrize("make, name, n_bits, kwargs", CONSTANT_CASES,
                         ids=["matmul-8", "matmul-4-blocks", "matmul-16-axis", "gemm-8-axis", "conv-4-axis"])
def test_a_constant_weight_is_quantized_as_its_initializer_would_be(
    make: Callable[[], Any], name: str, n_bits: int, kwargs: Dict[str, Any]
) -> None:
    model = make()
    constant = as_constants(model, name)
    assert _producers(constant, name) == ["Constant"]
    serialized = constant.SerializeToString()
    quantized, reports = qarray.onnx.quantize_weights_report(constant, n_bits=n_bits, min_size=64, **kwargs)
    assert constant.SerializeToString() == serialized  # the model given is not modified
    onnx.checker.check_model(quantized, full_check=True)
    # the Constant is gone; one DequantizeLinear gives its name, first in the graph
    assert "Constant" not in [node.op_type for node in quantized.graph.node]
    assert _producers(quantized, name) == ["DequantizeLinear"]
    assert quantized.graph.node[0].output == [name]
    assert [node.op_type for node in quantized.graph.node[1:]] == [node.op_type for node in model.graph.node]
    # the same integers, parameters, node and report as for the initializer
    from_initializer, expected_reports = qarray.onnx.quantize_weights_report(
        model, n_bits=n_bits, min_size=64, **kwargs
    )
    assert reports == expected_reports and [r.name for r in reports] == [name]
    tensors = {tensor.name: tensor for tensor in quantized.graph.initializer}
    for tensor in from_initializer.graph.initializer:
        assert tensors[tensor.name] == tensor
    assert quantized.graph.node[0] == from_initializer.graph.node[0]
    # ONNX Runtime dequantizes it to QuantizedArray.dequant() bit for bit
    feeds = _feeds(model)
    after = run(quantized, feeds, extra_outputs=[name])
    _check_dequantized(model, quantized, after, name, n_bits, kwargs)
    # and the model computes what the initializer's model computes (with and without the weight as an output,
    # which decides whether ONNX Runtime may fuse DequantizeLinear into the MatMul)
    for extra in ([name], []):
        got, expected_outputs = run(quantized, feeds, extra), run(from_initializer, feeds, extra)
        for output, values in expected_outputs.items():
            numpy.testing.assert_array_equal(bits32(got[output]), bits32(values))


def test_initializer_and_constant_weights_in_one_model_are_both_quantized() -> None:
    first, second = _weights((64, 96), 12), _weights((96, 32), 13)
    model = _model(
        [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("MatMul", ["h", "W2"], ["y"])],
        {"x": (4, 64)}, {"y": (4, 32)}, {"W1": first, "W2": second},
    )
    mixed = as_constants(model, "W2")
    quantized, reports = qarray.onnx.quantize_weights_report(mixed, n_bits=8, axis=1)
    onnx.checker.check_model(quantized, full_check=True)
    assert [r.name for r in reports] == ["W1", "W2"]
    assert [node.op_type for node in quantized.graph.node] == ["DequantizeLinear"] * 2 + ["MatMul"] * 2
    assert _producers(quantized, "W1") == _producers(quantized, "W2") == ["DequantizeLinear"]
    assert [tensor.name for tensor in quantized.graph.initializer] == [
        f"{name}_{part}" for name in ("W1", "W2") for part in ("quantized", "scale", "zero_point")
    ]
    outputs = run(quantized, _feeds(model), extra_outputs=["W1", "W2"])
    for name in ("W1", "W2"):
        _check_dequantized(model, quantized, outputs, name, 8, {"axis": 1})


def test_a_constant_weight_read_by_other_nodes_too_gets_one_dequantize_node() -> None:
    model = _model(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "W"], ["y"])],
        {"x": (64, 64)}, {"y": (64, 64)}, {"W": _weights((64, 64), 14)},
    )
    quantized = qarray.onnx.quantize_weights(as_constants(model, "W"), n_bits=8)
    onnx.checker.check_model(quantized, full_check=True)
    assert [node.op_type for node in quantized.graph.node] == ["DequantizeLinear", "MatMul", "Add"]
    outputs = run(quantized, _feeds(model), extra_outputs=["W"])
    _check_dequantized(model, quantized, outputs, "W", 8, {})


def test_a_float16_constant_weight_is_cast_back() -> None:
    weight = _weights((64, 128), 1).astype(numpy.float16)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(weight, "W")),
         helper.make_node("MatMul", ["x", "W"], ["y"])], "model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4, 128])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    quantized = qarray.onnx.quantize_weights(model, n_bits=8, axis=1)
    onnx.checker.check_model(quantized, full_check=True)
    assert [node.op_type for node in quantized.graph.node] == ["DequantizeLinear", "Cast", "MatMul"]
    assert _producers(quantized, "W") == ["Cast"]
    runnable = onnx.ModelProto()
    runnable.CopyFrom(quantized)
    runnable.graph.output.extend([helper.make_tensor_value_info("W_dequantized", TensorProto.FLOAT, None),
                                  helper.make_tensor_value_info("W", TensorProto.FLOAT16, None)])
    session = onnxruntime.InferenceSession(runnable.SerializeToString(), providers=["CPUExecutionProvider"])
    _, dequantized, cast = session.run(None, {"x": numpy.ones((4, 64), numpy.float16)})
    expected = qarray.QuantizedArray(8, weight.astype(numpy.float32), profile="onnx", **_options({"axis": 1}))
    expected = expected.dequant()
    numpy.testing.assert_array_equal(bits32(dequantized), bits32(expected))
    numpy.testing.assert_array_equal(cast, numpy.asarray(expected).astype(numpy.float16))


def _constant_model(constant: Any, weight_shape: Sequence[int], also_an_output: bool = False) -> Any:
    """``y = x[4, 64] @ w``, ``w`` given by the node ``constant`` (not checked: some are not valid weights)."""
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if also_an_output:
        outputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, list(weight_shape)))
    graph = helper.make_graph(
        [constant, helper.make_node("MatMul", ["x", "w"], ["y"])], "model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])], outputs,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def _constant_of(values: numpy.ndarray) -> Any:
    return helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(values, "w"))


@pytest.mark.parametrize("model, min_size", [
    (_constant_model(_constant_of(numpy.ones((64, 32), numpy.int32)), (64, 32)), 1),  # not a float type
    (_constant_model(_constant_of(_weights((64, 32), 15)), (64, 32)), 64 * 32 + 1),  # below min_size
    (_constant_model(_constant_of(_weights((64, 32), 15)), (64, 32), also_an_output=True), 1),  # a graph output
    (_constant_model(helper.make_node("Constant", [], ["w"], value_floats=[0.5] * 64), (64,)), 1),
    (_constant_model(helper.make_node("Constant", [], ["w"], value_float=0.5), ()), 1),
], ids=["int32", "below-min-size", "graph-output", "value_floats", "value_float"])
def test_other_constants_are_left_as_they_are(model: Any, min_size: int) -> None:
    quantized, reports = qarray.onnx.quantize_weights_report(model, min_size=min_size)
    assert reports == []
    assert quantized.SerializeToString() == model.SerializeToString()
    assert _producers(quantized, "w") == ["Constant"]


def test_a_constant_in_another_domain_or_for_another_op_is_left_as_it_is() -> None:
    model = as_constants(matmul_model(), "W")
    assert qarray.onnx.quantize_weights_report(model, ops=("Gemm",))[1] == []
    unknown = onnx.ModelProto()
    unknown.CopyFrom(model)
    unknown.graph.node[0].domain = "custom"
    quantized, reports = qarray.onnx.quantize_weights_report(unknown)
    assert reports == [] and quantized.SerializeToString() == unknown.SerializeToString()


# ---- models with external data -----------------------------------------------------------------


def test_a_model_with_external_data_quantized_by_its_path(tmp_path: Any) -> None:
    model = _model(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Gemm", ["h", "G", "c"], ["y"], transB=1),
         helper.make_node("Add", ["y", "E"], ["z"])],
        {"x": (4, 64)}, {"z": (4, 32)},
        {"W": _weights((64, 128), 1), "G": _weights((32, 128), 2), "c": _weights((32,), 3),
         "E": _weights((4, 32), 4)},
    )
    source = tmp_path / "source"
    source.mkdir()
    saved = onnx.ModelProto()
    saved.CopyFrom(model)  # saving with external data moves the tensors out of the proto it is given
    onnx.save_model(saved, str(source / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.data", size_threshold=0)
    calls: List[str] = []
    from_path = qarray.onnx.quantize_weights(str(source / "model.onnx"), n_bits=4, block_size=(32, 1),
                                             progress=lambda done, total, name: calls.append(name))
    in_memory = qarray.onnx.quantize_weights(model, n_bits=4, block_size=(32, 1))
    assert calls == ["W", "G"]
    # the untouched initializers still refer to the source's data file
    untouched = [t.name for t in from_path.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert untouched == ["c", "E"]
    onnx.external_data_helper.load_external_data_for_model(from_path, str(source))
    for tensor in from_path.graph.initializer:
        tensor.ClearField("data_location")  # loading sets it to DEFAULT explicitly
    assert from_path.SerializeToString() == in_memory.SerializeToString()
    # written elsewhere with its tensors in one external file, and run
    target = tmp_path / "target"
    target.mkdir()
    again = qarray.onnx.quantize_weights(source / "model.onnx", n_bits=4, block_size=(32, 1))
    with pytest.raises(ValueError, match="source_dir"):
        qarray.onnx.save_model(again, str(target / "q.onnx"), external_data="q.data")
    qarray.onnx.save_model(again, target / "q.onnx", external_data="q.data", source_dir=source, size_threshold=0)
    assert os.path.getsize(target / "q.data") > 0
    onnx.checker.check_model(str(target / "q.onnx"), full_check=True)
    session = onnxruntime.InferenceSession(str(target / "q.onnx"), providers=["CPUExecutionProvider"])
    feeds = _feeds(model)
    numpy.testing.assert_array_equal(bits32(session.run(None, feeds)[0]), bits32(run(in_memory, feeds)["z"]))
    # and in one file
    qarray.onnx.save_model(again, target / "inline.onnx", source_dir=source)
    inline = onnx.load_model(str(target / "inline.onnx"))
    for tensor in inline.graph.initializer:
        tensor.ClearField("data_location")
    assert inline.SerializeToString() == in_memory.SerializeToString()


def test_a_model_proto_with_unloaded_external_data_is_refused(tmp_path: Any) -> None:
    onnx.save_model(matmul_model(), str(tmp_path / "m.onnx"), save_as_external_data=True, size_threshold=0)
    unloaded = onnx.load_model(str(tmp_path / "m.onnx"), load_external_data=False)
    with pytest.raises(ValueError, match="path"):
        qarray.onnx.quantize_weights(unloaded)


# ---- activations -------------------------------------------------------------------------------

ACTIVATION_CASES = [(8, {}), (8, {"axis": 1}), (8, {"is_signed": False}), (4, {}), (4, {"axis": -1}),
                    (16, {"axis": 1}), (16, {"is_signed": False})]


def _relu_qdq_model(quantizer: qarray.UniformQuantizer, output_name: Optional[str] = None) -> Any:
    nodes, initializers = qarray.onnx.qdq_nodes(quantizer, "r", output_name=output_name)
    out = nodes[-1].output[0]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), *nodes],
        "activation",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [4, 64])],
        initializer=initializers,
        value_info=[helper.make_tensor_value_info("r", TensorProto.FLOAT, [4, 64])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("n_bits, kwargs", ACTIVATION_CASES)
def test_qdq_nodes_quantize_an_activation_bit_for_bit(n_bits: int, kwargs: Dict[str, Any]) -> None:
    rng = numpy.random.default_rng(11)
    calibration = numpy.maximum(rng.standard_normal((4, 64)) * rng.uniform(0.1, 3.0, (1, 64)), 0).astype(numpy.float32)
    signed = kwargs.pop("is_signed", True)
    quantizer = qarray.QuantizedArray(n_bits, calibration, is_signed=signed, is_symmetric=False, profile="onnx",
                                      **kwargs).quantizer
    model = _relu_qdq_model(quantizer)
    assert model.graph.output[0].name == "r_dequantized"
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for data in (calibration, (rng.standard_normal((4, 64)) * 5.0).astype(numpy.float32)):  # beyond: saturated
        (got,) = session.run(None, {"x": data})
        expected = quantizer.dequant(quantizer.quant(numpy.maximum(data, 0)))
        numpy.testing.assert_array_equal(bits32(got), bits32(expected))


def test_qdq_nodes_names() -> None:
    quantizer = qarray.QuantizedArray(8, numpy.linspace(0, 1, 9), profile="onnx", is_symmetric=False).quantizer
    nodes, initializers = qarray.onnx.qdq_nodes(quantizer, "act", output_name="act_q")
    assert [t.name for t in initializers] == ["act_scale", "act_zero_point"]
    assert [list(n.input) for n in nodes] == [["act", "act_scale", "act_zero_point"],
                                             ["act_quantized", "act_scale", "act_zero_point"]]
    assert nodes[1].output[0] == "act_q"


@pytest.mark.parametrize("quantizer, error, words", [
    (qarray.QuantizedArray(8, numpy.linspace(0, 1, 9)).quantizer, ValueError, "profile"),
    (qarray.QuantizedArray(8, numpy.ones((4, 8)), profile="onnx", block_size=4).quantizer, ValueError, "block_size"),
    (qarray.UniformQuantizer(qarray.QuantizationOptions(8, profile="onnx")), ValueError, "parameters"),
    ("quantizer", TypeError, "quantizer"),
])
def test_qdq_nodes_refusals(quantizer: Any, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        qarray.onnx.qdq_nodes(quantizer, "x")


# ---- reading DequantizeLinear nodes back -------------------------------------------------------


@pytest.mark.parametrize("n_bits, kwargs", MATMUL_CASES)
def test_read_qdq_round_trip(n_bits: int, kwargs: Dict[str, Any]) -> None:
    model = matmul_model()
    quantized = qarray.onnx.quantize_weights(model, n_bits=n_bits, **kwargs)
    quantizers = qarray.onnx.read_qdq(quantized)
    assert list(quantizers) == ["W_quantized"]
    quantizer = quantizers["W_quantized"]
    assert quantizer.quant_options.profile == "onnx" and quantizer.n_bits == n_bits
    stored = next(t for t in quantized.graph.initializer if t.name == "W_quantized")
    integers = numpy_helper.to_array(stored).astype(numpy.int64)
    expected = reference(model, "W", n_bits, **_options(kwargs))
    numpy.testing.assert_array_equal(integers, expected.qvalues)
    outputs = run(quantized, _feeds(model), extra_outputs=["W"])
    numpy.testing.assert_array_equal(bits32(quantizer.dequant(integers)), bits32(outputs["W"]))
    weight = numpy_helper.to_array(model.graph.initializer[0])
    numpy.testing.assert_array_equal(quantizer.quant(weight), expected.qvalues)


@pytest.mark.parametrize("n_bits, kwargs", ACTIVATION_CASES)
def test_read_qdq_reads_activation_pairs(n_bits: int, kwargs: Dict[str, Any]) -> None:
    kwargs = dict(kwargs)
    signed = kwargs.pop("is_signed", True)
    calibration = numpy.linspace(0, 3, 4 * 64, dtype=numpy.float32).reshape(4, 64)
    quantizer = qarray.QuantizedArray(n_bits, calibration, is_signed=signed, is_symmetric=False, profile="onnx",
                                      **kwargs).quantizer
    read = qarray.onnx.read_qdq(_relu_qdq_model(quantizer))["r_quantized"]
    integers = quantizer.quant(calibration * 1.5)
    numpy.testing.assert_array_equal(bits32(read.dequant(integers)), bits32(quantizer.dequant(integers)))
    numpy.testing.assert_array_equal(read.quant(calibration * 1.5), integers)


def test_a_model_quantized_by_its_path_holds_one_weight_at_a_time(tmp_path: Any) -> None:
    """The float values in memory are one weight's (and temporaries of its size), not the model's."""
    count, size = 32, 256
    model = _model(
        [helper.make_node("MatMul", [f"h{i}", f"W{i}"], [f"h{i + 1}"]) for i in range(count)],
        {"h0": (1, size)}, {f"h{count}": (1, size)}, {f"W{i}": _weights((size, size), i) for i in range(count)},
    )
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    del model
    weight_bytes, model_bytes = size * size * 4, count * size * size * 4
    qarray.onnx.quantize_weights(tmp_path / "m.onnx")  # compiles what the first call compiles
    tracemalloc.start()
    try:
        qarray.onnx.quantize_weights(tmp_path / "m.onnx")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * weight_bytes and peak < model_bytes / 2, (peak, weight_bytes, model_bytes)
