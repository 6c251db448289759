"""``python -m qarray quantize-onnx``: the command on models built here, run in ONNX Runtime.

The models are made in this file only (a small convolutional classifier, and a model with
a weight too small to quantize), so the command meets graphs its own code has not seen.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import qarray  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def classifier(path: Path, dense_in_a_constant: bool = False) -> None:
    """Conv (8 filters 3x3 over 3 channels) -> Relu -> Flatten -> Gemm (transB) -> Softmax.

    With ``dense_in_a_constant``, the Gemm's weight is a ``Constant`` node rather than an initializer.
    """
    rng = numpy.random.default_rng(11)
    conv = (rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(numpy.float32)
    dense = (rng.standard_normal((10, 8 * 14 * 14)) * 0.02).astype(numpy.float32)
    bias = rng.standard_normal(10).astype(numpy.float32)
    nodes = [
        helper.make_node("Conv", ["image", "conv_w"], ["c"], pads=[0, 0, 0, 0]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "dense_w", "dense_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"]),
    ]
    initializers = [numpy_helper.from_array(conv, "conv_w"), numpy_helper.from_array(dense, "dense_w"),
                    numpy_helper.from_array(bias, "dense_b")]
    if dense_in_a_constant:
        nodes.insert(0, helper.make_node("Constant", [], ["dense_w"], value=initializers.pop(1)))
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3, 16, 16])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])],
        initializer=initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def run_cli(arguments: List[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "qarray", "quantize-onnx", *arguments], capture_output=True,
                          text=True, env=env, timeout=120)


def outputs(path: Path, images: numpy.ndarray) -> numpy.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": images})[0]


@pytest.mark.parametrize("arguments", [["--bits", "8"], ["--bits", "4", "--block-size", "32"],
                                       ["--bits", "8", "--axis", "0", "--unsigned", "--asymmetric"]])
def test_quantizes_a_model_it_has_not_seen(tmp_path: Path, arguments: List[str]) -> None:
    source, target = tmp_path / "classifier.onnx", tmp_path / "quantized.onnx"
    classifier(source)
    result = run_cli([str(source), str(target), "--min-size", "64", "--no-progress", *arguments])
    assert result.returncode == 0, result.stderr
    onnx.checker.check_model(onnx.load(str(target)), full_check=True)
    # the table: one row per weight (the bias is below --min-size), every error within its bound
    rows = [line for line in result.stdout.splitlines() if line.startswith(("conv_w", "dense_w", "dense_b"))]
    assert [row.split()[0] for row in rows] == ["conv_w", "dense_w"]
    assert all(row.split()[-1] == "yes" for row in rows)
    assert "2 weights quantized" in result.stdout
    assert target.stat().st_size < 0.5 * source.stat().st_size
    # the quantized model runs, and its probabilities stay close to the float model's
    images = numpy.random.default_rng(3).standard_normal((4, 3, 16, 16)).astype(numpy.float32)
    numpy.testing.assert_allclose(outputs(target, images), outputs(source, images), atol=0.05)
    # its weights are those of the onnx profile
    quantizers = qarray.onnx.read_qdq(onnx.load(str(target)))
    assert len(quantizers) == 2


def test_quantizes_a_weight_held_in_a_constant_node(tmp_path: Path) -> None:
    source, target = tmp_path / "classifier.onnx", tmp_path / "quantized.onnx"
    classifier(source, dense_in_a_constant=True)
    result = run_cli([str(source), str(target), "--min-size", "64", "--bits", "8", "--axis", "0"])
    assert result.returncode == 0, result.stderr
    assert "2/2" in result.stderr and "2 weights quantized" in result.stdout
    rows = [line.split()[0] for line in result.stdout.splitlines() if line.startswith(("conv_w", "dense_w"))]
    assert rows == ["conv_w", "dense_w"]  # the initializers first, then the Constant weights
    quantized = onnx.load(str(target))
    onnx.checker.check_model(quantized, full_check=True)
    assert "Constant" not in [node.op_type for node in quantized.graph.node]
    assert [node.op_type for node in quantized.graph.node if "dense_w" in node.output] == ["DequantizeLinear"]
    images = numpy.random.default_rng(5).standard_normal((4, 3, 16, 16)).astype(numpy.float32)
    numpy.testing.assert_allclose(outputs(target, images), outputs(source, images), atol=0.05)


def test_draws_a_progress_bar_on_stderr(tmp_path: Path) -> None:
    source = tmp_path / "classifier.onnx"
    classifier(source)
    result = run_cli([str(source), str(tmp_path / "out.onnx"), "--min-size", "64"])
    assert result.returncode == 0, result.stderr
    assert "2/2" in result.stderr


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["missing.onnx", "out.onnx"], "no such file"),
        (["SAME", "SAME"], "must differ from the input"),
        (["SOURCE", "out.onnx", "--bits", "6"], "invalid choice"),
        (["SOURCE", "out.onnx", "--block-size", "0"], "must be an integer >= 1"),
        (["SOURCE", "out.onnx", "--axis", "7"], "axis"),
    ],
)
def test_refuses_bad_arguments_in_one_line(tmp_path: Path, arguments: List[str], message: str) -> None:
    source = tmp_path / "classifier.onnx"
    classifier(source)
    names = {"SOURCE": str(source), "SAME": str(source)}
    result = run_cli([names.get(argument, argument) for argument in arguments])
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out.onnx").exists()
