"""ONNX models: weights stored as integers, activation quantize/dequantize pairs, and reading them back.

This module owns the translation between qarray's ``profile="onnx"`` quantization and ONNX
graphs: :func:`quantize_weights` replaces the float weights of ``MatMul``, ``Gemm`` and
``Conv`` nodes by integer initializers and a ``DequantizeLinear`` node whose output keeps the
weight's name (the integers and scales are those of ``QuantizedArray(..., profile="onnx")``,
so ONNX Runtime's ``DequantizeLinear`` gives ``QuantizedArray.dequant()`` bit for bit);
:func:`qdq_nodes` builds a ``QuantizeLinear`` + ``DequantizeLinear`` pair for an activation
quantizer; :func:`read_qdq` turns the ``DequantizeLinear`` nodes of a model back into
quantizers; :func:`save_model` writes a result with its tensors in an external data file.
The ``onnx`` package is imported on first use, never by ``import qarray`` (install it with
``pip install "qarray[onnx]"``). See ``docs/onnx.md``.

Example:
    >>> import numpy
    >>> import qarray.onnx
    >>> from onnx import TensorProto, helper, numpy_helper
    >>> weight = numpy.linspace(-1.0, 1.0, 64 * 32, dtype=numpy.float32).reshape(64, 32)
    >>> graph = helper.make_graph(
    ...     [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
    ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
    ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
    ...     initializer=[numpy_helper.from_array(weight, "w")])
    >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    >>> quantized, report = qarray.onnx.quantize_weights_report(model, n_bits=4, block_size=(32, 1))
    >>> [node.op_type for node in quantized.graph.node]
    ['DequantizeLinear', 'MatMul']
    >>> report[0].granularity, report[0].float_bytes, report[0].quantized_bytes
    ('block 32 along axis 0', 8192, 1312)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy

from .core.checks import check_bool, check_int, describe
from .core.granularity import block_extent
from .options import QuantizationOptions
from .packing import pack
from .params import UniformQuantizationParameters
from .quantized_array import QuantizedArray
from .quantizer import UniformQuantizer

__all__ = ["WeightReport", "qdq_nodes", "quantize_weights", "quantize_weights_report", "read_qdq", "save_model"]

ModelLike = Union[Any, str, "os.PathLike[str]"]
"""A ``onnx.ModelProto``, or the path of a model file."""

Progress = Callable[[int, int, str], Any]

WEIGHT_INPUTS: Dict[str, int] = {"MatMul": 1, "Gemm": 1, "Conv": 1}
"""The input that holds the weight, for each operator :func:`quantize_weights` knows."""

# (n_bits, is_signed) -> the ONNX element type's name, and the little-endian NumPy dtype of
# its stored bytes (None: 4-bit values, stored packed two to a byte).
_INTEGER_TYPES: Dict[Tuple[int, bool], Tuple[str, Optional[str]]] = {
    (4, True): ("INT4", None),
    (4, False): ("UINT4", None),
    (8, True): ("INT8", "<i1"),
    (8, False): ("UINT8", "<u1"),
    (16, True): ("INT16", "<i2"),
    (16, False): ("UINT16", "<u2"),
}

_FLOAT_TYPES = ("FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE")
"""The initializer types quantized; all but FLOAT get a Cast back to their type after DequantizeLinear."""

_DEFAULT_DOMAINS = ("", "ai.onnx")
_BLOCKED_OPSET = 21  # DequantizeLinear's block_size, and INT4/UINT4/INT16/UINT16
_PER_AXIS_OPSET = 13  # DequantizeLinear's axis
_PER_TENSOR_OPSET = 10


def _onnx() -> Any:
    """Import ``onnx`` on first use, with an install hint when it is missing."""
    try:
        import onnx
        import onnx.external_data_helper  # noqa: F401 (used through the onnx namespace)
        import onnx.numpy_helper  # noqa: F401
    except ImportError as error:
        raise ImportError('qarray.onnx needs the onnx package: pip install "qarray[onnx]"') from error
    return onnx


@dataclass(frozen=True)
class WeightReport:
    """What :func:`quantize_weights_report` did to one weight.

    Attributes:
        name: the weight's name, an initializer's or a ``Constant`` node's output (the
            ``DequantizeLinear`` output keeps it).
        shape: the weight's shape as stored.
        n_bits: the integers' width.
        granularity: ``"per-tensor"``, ``"axis A"`` or ``"block B along axis A"``, in ONNX's terms.
        float_bytes: the weight's size in bytes, in its stored type.
        quantized_bytes: the integers (packed at 4 bits), scales and zero points, in bytes.
        max_abs_error: ``max |w - dequant(q)|`` over the weight, computed in float64 (``dequant``
            cast to the stored type first, as the model's Cast node does for non-FLOAT weights).
        error_bound: ``max(scale) / 2``, the rounding error's nominal bound (float32
            rounding of the quotient and of the product can add a few units in the last place).
    """

    name: str
    shape: Tuple[int, ...]
    n_bits: int
    granularity: str
    float_bytes: int
    quantized_bytes: int
    max_abs_error: float
    error_bound: float


# ---- arguments -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    """The checked arguments of :func:`quantize_weights`."""

    options: QuantizationOptions
    min_size: int
    ops: Tuple[str, ...]
    progress: Optional[Progress]


def _check_settings(
    n_bits: Any,
    axis: Any,
    block_size: Any,
    is_signed: Any,
    is_symmetric: Any,
    min_size: Any,
    ops: Any,
    progress: Any,
) -> _Settings:
    n_bits = check_int(n_bits, "n_bits")
    if n_bits not in (4, 8, 16):
        raise ValueError(
            "n_bits must be 4, 8 or 16 (DequantizeLinear's INT4/UINT4, INT8/UINT8 or INT16/UINT16), "
            f"got {n_bits!r}"
        )
    is_signed = check_bool(is_signed, "is_signed")
    is_symmetric = check_bool(is_symmetric, "is_symmetric")
    if is_symmetric and not is_signed:
        raise ValueError("is_symmetric=True needs is_signed=True; pass is_symmetric=False for unsigned integers")
    min_size = check_int(min_size, "min_size")
    if min_size < 0:
        raise ValueError(f"min_size must be an int >= 0, got {min_size!r}")
    if isinstance(ops, str) or not isinstance(ops, (tuple, list, set, frozenset)):
        raise TypeError(f"ops must be a tuple of operator names such as ('MatMul', 'Gemm'), got {describe(ops)}")
    unknown = [op for op in ops if op not in WEIGHT_INPUTS]
    if unknown:
        raise ValueError(f"ops must name operators among {sorted(WEIGHT_INPUTS)}, got {unknown!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be None or a callable progress(done, total, name), got {describe(progress)}")
    if isinstance(axis, (tuple, list)) and len(axis) != 1:
        raise ValueError(f"axis must be one axis (DequantizeLinear has one quantization axis), got {axis!r}")
    if isinstance(axis, (tuple, list)):
        axis = axis[0]
    options = QuantizationOptions(
        n_bits, is_signed=is_signed, is_symmetric=is_symmetric, axis=axis, block_size=block_size, profile="onnx"
    )
    return _Settings(options, min_size, tuple(ops), progress)


# ---- granularity -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """How one array's parameter grid is written for ONNX's QuantizeLinear/DequantizeLinear."""

    attributes: Dict[str, int]  # axis / block_size
    parameter_shape: Tuple[int, ...]  # the shape of the scale and zero-point tensors
    granularity: str  # for the report

    @property
    def opset(self) -> int:
        if "block_size" in self.attributes:
            return _BLOCKED_OPSET
        return _PER_AXIS_OPSET if "axis" in self.attributes else _PER_TENSOR_OPSET


def _layout(shape: Tuple[int, ...], axis: Any, block_size: Any, name: str) -> _Layout:
    """ONNX's spelling of qarray's ``axis`` / ``block_size`` for an array of ``shape``.

    ``axis=a`` is ONNX's per-axis quantization along ``a`` (1-d parameters). Blocks are
    ONNX's blocked quantization when they are longer than one value along one axis at most:
    ``block_size=g`` (the last axis) or a tuple such as ``(32, 1)``; the parameter grid is then
    the scale's shape, ``ceil(shape[a] / g)`` along that axis, exactly ONNX's rule.
    """
    if axis is None and block_size is None:
        return _Layout({}, (), "per-tensor")
    extent, grid = block_extent(shape, axis, block_size)
    if axis is not None:
        along = axis % len(shape)
        return _Layout({"axis": along}, (shape[along],), f"axis {along}")
    long_axes = [d for d, length in enumerate(extent) if length > 1]
    if len(long_axes) > 1:
        raise ValueError(
            f"block_size={block_size!r} gives blocks of extent {extent} on the weight {name!r} of shape {shape}, "
            "but DequantizeLinear blocks along one axis only: expected a block_size whose extent is 1 on every "
            "axis but one, e.g. an int (blocks along the last axis) or (32, 1)"
        )
    along = long_axes[0] if long_axes else len(shape) - 1
    return _Layout(
        {"axis": along, "block_size": extent[along]}, tuple(grid), f"block {extent[along]} along axis {along}"
    )


# ---- tensors ---------------------------------------------------------------------------------


def _integer_tensor(name: str, values: Any, n_bits: int, is_signed: bool, dims: Sequence[int]) -> Any:
    """An initializer of ONNX's integer type for ``values`` (4-bit values packed as ONNX stores them)."""
    onnx = _onnx()
    type_name, dtype = _INTEGER_TYPES[(n_bits, is_signed)]
    flat = numpy.asarray(values).reshape(-1)
    raw = numpy.asarray(pack(flat, 4)).tobytes() if dtype is None else flat.astype(dtype).tobytes()
    return onnx.helper.make_tensor(name, getattr(onnx.TensorProto, type_name), list(dims), raw, raw=True)


def _parameter_tensors(
    quantizer: UniformQuantizer, layout: _Layout, scale_name: str, zero_name: str
) -> Tuple[Any, Any]:
    """The scale (float32) and zero-point (the integer type) initializers of a quantizer."""
    onnx = _onnx()
    options = quantizer.quant_options
    scale = numpy.asarray(quantizer.scale, dtype=numpy.float64)
    zero = numpy.asarray(quantizer.zero_point, dtype=numpy.int64)
    scale32 = numpy.broadcast_to(scale, scale.shape).astype(numpy.float32).reshape(layout.parameter_shape)
    zero = numpy.broadcast_to(zero, scale.shape).reshape(layout.parameter_shape)
    scale_tensor = onnx.numpy_helper.from_array(scale32, scale_name)
    zero_tensor = _integer_tensor(zero_name, zero, options.n_bits, options.is_signed, layout.parameter_shape)
    return scale_tensor, zero_tensor


def _raw_size(tensor: Any) -> int:
    return len(tensor.raw_data)


class _Names:
    """Names not yet used in a graph; a wanted name gets ``_1``, ``_2``, ... when it is taken."""

    def __init__(self, graph: Any) -> None:
        taken: Set[str] = {tensor.name for tensor in graph.initializer}
        taken.update(info.name for info in (*graph.input, *graph.output, *graph.value_info))
        for node in graph.node:
            taken.update(node.input)
            taken.update(node.output)
            taken.add(node.name)
        self.taken = taken

    def new(self, wanted: str) -> str:
        name, count = wanted, 0
        while name in self.taken:
            count += 1
            name = f"{wanted}_{count}"
        self.taken.add(name)
        return name


# ---- quantize_weights ------------------------------------------------------------------------


def _load(model: ModelLike) -> Tuple[Any, Optional[str]]:
    """A ModelProto the caller does not own, and the directory its external data is relative to."""
    onnx = _onnx()
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        return onnx.load_model(path, load_external_data=False), os.path.dirname(os.path.abspath(path))
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model must be an onnx.ModelProto or the path of a model file, got {describe(model)}")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy, None


def _stored_values(tensor: Any, base_dir: Optional[str]) -> numpy.ndarray:
    """An initializer's values in its stored type, reading external data (this tensor's bytes only) if needed."""
    onnx = _onnx()
    if onnx.external_data_helper.uses_external_data(tensor):
        if base_dir is None:
            raise ValueError(
                f"model holds the initializer {tensor.name!r} as external data that is not loaded; "
                "pass the model's path instead of the ModelProto, or load it with load_external_data=True"
            )
        loaded = onnx.TensorProto()
        loaded.CopyFrom(tensor)
        onnx.external_data_helper.load_external_data_for_tensor(loaded, base_dir)
        return numpy.asarray(onnx.numpy_helper.to_array(loaded))
    return numpy.asarray(onnx.numpy_helper.to_array(tensor))


def _weight_inputs(graph: Any, ops: Tuple[str, ...]) -> Set[str]:
    """The names the main graph's nodes of ``ops`` read as their weight."""
    weights = set()
    for node in graph.node:
        index = WEIGHT_INPUTS.get(node.op_type)
        if node.op_type in ops and node.domain in _DEFAULT_DOMAINS and index is not None and len(node.input) > index:
            weights.add(node.input[index])
    return weights


def _quantizable(tensor: Any, min_size: int) -> bool:
    """Whether a weight's tensor is of a float type quantized, of rank 1 or more, with ``min_size`` values."""
    onnx = _onnx()
    float_types = {getattr(onnx.TensorProto, name) for name in _FLOAT_TYPES}
    return tensor.data_type in float_types and len(tensor.dims) >= 1 and math.prod(tensor.dims) >= max(min_size, 1)


def _constant_value(node: Any) -> Optional[Any]:
    """The tensor of a default-domain ``Constant`` node holding its one output in ``value``, else None."""
    onnx = _onnx()
    if node.op_type != "Constant" or node.domain not in _DEFAULT_DOMAINS or len(node.output) != 1:
        return None
    if len(node.attribute) != 1:
        return None
    attribute = node.attribute[0]
    if attribute.name != "value" or attribute.type != onnx.AttributeProto.TENSOR or not attribute.HasField("t"):
        return None
    return attribute.t


def _constants_to_initializers(graph: Any, ops: Tuple[str, ...], min_size: int) -> None:
    """Turn the ``Constant`` nodes that hold a weight to quantize into initializers, in place.

    A ``Constant`` node of the main graph whose ``value`` tensor is the weight input of a
    node of ``ops`` and passes the same type and size checks as an initializer becomes an
    initializer of its output's name (appended after the others, in node order) and is
    removed, so the rest of :func:`quantize_weights` treats it as any other initializer.
    A ``Constant`` whose output is a graph output, a graph input or an initializer's name
    stays a node, as do those holding anything else (``value_float``, ``sparse_value``, ...).
    """
    weights = _weight_inputs(graph, ops)
    left = {info.name for info in (*graph.input, *graph.output)}
    left.update(tensor.name for tensor in graph.initializer)
    moved = []
    for index, node in enumerate(graph.node):
        tensor = _constant_value(node)
        name = node.output[0] if tensor is not None else ""
        if tensor is None or name not in weights or name in left or not _quantizable(tensor, min_size):
            continue
        initializer = graph.initializer.add()
        initializer.CopyFrom(tensor)
        initializer.name = name
        left.add(name)
        moved.append(index)
    for index in reversed(moved):
        del graph.node[index]


def _weight_names(graph: Any, ops: Tuple[str, ...], min_size: int) -> List[str]:
    """The initializers to quantize, in the graph's initializer order."""
    weights = _weight_inputs(graph, ops)
    overridable = {info.name for info in graph.input}  # an initializer that is also an input may be fed at run time
    return [
        tensor.name
        for tensor in graph.initializer
        if tensor.name in weights and tensor.name not in overridable and _quantizable(tensor, min_size)
    ]


def _default_opset(model: Any) -> Optional[Any]:
    for opset in model.opset_import:
        if opset.domain in _DEFAULT_DOMAINS:
            return opset
    return None


def _raise_opset(model: Any, needed: int) -> Any:
    """``model`` with a default-domain opset of at least ``needed`` (converted if it was lower)."""
    onnx = _onnx()
    opset = _default_opset(model)
    if opset is None:
        model.opset_import.append(onnx.helper.make_opsetid("", needed))
    elif opset.version < needed:
        import onnx.version_converter

        try:
            model = onnx.version_converter.convert_version(model, needed)
        except Exception as error:
            raise ValueError(
                f"model has opset {opset.version}, below the {needed} that DequantizeLinear needs for these "
                f"arguments, and ONNX's version converter could not raise it: {error}"
            ) from error
    minimum_ir = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    model.ir_version = max(model.ir_version, minimum_ir)
    return model


def _needed_opset(settings: _Settings, layouts: Sequence[_Layout]) -> int:
    needed = max(layout.opset for layout in layouts)
    if settings.options.n_bits != 8:
        needed = _BLOCKED_OPSET
    return needed


def quantize_weights_report(
    model: ModelLike,
    *,
    n_bits: int = 8,
    axis: Optional[Union[int, Tuple[int]]] = None,
    block_size: Optional[Union[int, Tuple[Optional[int], ...]]] = None,
    is_signed: bool = True,
    is_symmetric: bool = True,
    min_size: int = 1024,
    ops: Sequence[str] = ("MatMul", "Gemm", "Conv"),
    progress: Optional[Progress] = None,
) -> Tuple[Any, List[WeightReport]]:
    """:func:`quantize_weights`, and a :class:`WeightReport` for each weight it quantized.

    Takes the same arguments and raises the same errors as :func:`quantize_weights`.

    Args:
        model: an ``onnx.ModelProto``, or the path of a model file (external data read
            one initializer at a time).
        n_bits: 4, 8 or 16.
        axis: one scale per slice along this axis of each weight, as stored.
        block_size: one scale per block of this many values (qarray's meaning).
        is_signed: signed integers (INT4/INT8/INT16), else unsigned.
        is_symmetric: the symmetric range of the ``"onnx"`` profile.
        min_size: the fewest values a weight must have to be quantized.
        ops: the node types whose weight input is quantized.
        progress: called as ``progress(done, total, name)`` after each weight.

    Returns:
        ``(model, reports)``: the new ``onnx.ModelProto`` and one report per quantized
        weight, in the graph's initializer order, then the ``Constant`` weights in node order.

    Example:
        See the module's docstring.
    """
    return _quantize(model, _check_settings(n_bits, axis, block_size, is_signed, is_symmetric, min_size, ops, progress))


def _quantize_one(
    tensor: Any, base_dir: Optional[str], options: QuantizationOptions, layout: _Layout, fresh: _Names
) -> Tuple[List[Any], List[Any], WeightReport]:
    """One weight's initializers, its DequantizeLinear node (and Cast back to its type), and its report."""
    onnx = _onnx()
    name = tensor.name
    stored = _stored_values(tensor, base_dir)
    values = stored.astype(numpy.float32)  # exact from FLOAT16 and BFLOAT16; DOUBLE is rounded
    quantized = QuantizedArray(
        options.n_bits,
        values,
        is_signed=options.is_signed,
        is_symmetric=options.is_symmetric,
        axis=options.axis,
        block_size=options.block_size,
        profile="onnx",
    )
    quantizer = quantized.quantizer
    integers = _integer_tensor(
        fresh.new(f"{name}_quantized"), quantized.qvalues, options.n_bits, options.is_signed, values.shape
    )
    scale, zero = _parameter_tensors(quantizer, layout, fresh.new(f"{name}_scale"), fresh.new(f"{name}_zero_point"))
    dequantized = numpy.asarray(quantized.dequant())
    cast = tensor.data_type != onnx.TensorProto.FLOAT
    dequantize_output = fresh.new(f"{name}_dequantized") if cast else name
    nodes = [
        onnx.helper.make_node(
            "DequantizeLinear",
            [integers.name, scale.name, zero.name],
            [dequantize_output],
            name=fresh.new(f"{name}_DequantizeLinear"),
            **layout.attributes,
        )
    ]
    if cast:  # DequantizeLinear gives float32 with a float32 scale; the consumers expect the stored type
        nodes.append(
            onnx.helper.make_node(
                "Cast", [dequantize_output], [name], name=fresh.new(f"{name}_Cast"), to=tensor.data_type
            )
        )
        dequantized = dequantized.astype(stored.dtype)
    error = numpy.abs(stored.astype(numpy.float64) - dequantized.astype(numpy.float64))
    report = WeightReport(
        name=name,
        shape=tuple(values.shape),
        n_bits=options.n_bits,
        granularity=layout.granularity,
        float_bytes=int(stored.nbytes),
        quantized_bytes=_raw_size(integers) + _raw_size(scale) + _raw_size(zero),
        max_abs_error=float(error.max()) if error.size else 0.0,
        error_bound=float(numpy.max(numpy.asarray(quantizer.scale, dtype=numpy.float32))) / 2.0,
    )
    return [integers, scale, zero], nodes, report


def _quantize(model: ModelLike, settings: _Settings) -> Tuple[Any, List[WeightReport]]:
    """The one code path of :func:`quantize_weights` and :func:`quantize_weights_report`."""
    result, base_dir = _load(model)
    graph = result.graph
    _constants_to_initializers(graph, settings.ops, settings.min_size)
    names = _weight_names(graph, settings.ops, settings.min_size)
    if not names:
        return result, []
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    options = settings.options
    layouts = [_layout(tuple(initializers[name].dims), options.axis, options.block_size, name) for name in names]
    result = _raise_opset(result, _needed_opset(settings, layouts))
    graph = result.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    fresh = _Names(graph)
    replaced: Dict[str, List[Any]] = {}
    dequantize_nodes = []
    reports = []
    for done, (name, layout) in enumerate(zip(names, layouts), start=1):
        replaced[name], nodes, report = _quantize_one(initializers[name], base_dir, options, layout, fresh)
        dequantize_nodes.extend(nodes)
        reports.append(report)
        if settings.progress is not None:
            settings.progress(done, len(names), name)
    kept = []
    for tensor in graph.initializer:
        kept.extend(replaced.get(tensor.name, [tensor]))
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    nodes = [*dequantize_nodes, *graph.node]
    graph.ClearField("node")
    graph.node.extend(nodes)
    return result, reports


def quantize_weights(
    model: ModelLike,
    *,
    n_bits: int = 8,
    axis: Optional[Union[int, Tuple[int]]] = None,
    block_size: Optional[Union[int, Tuple[Optional[int], ...]]] = None,
    is_signed: bool = True,
    is_symmetric: bool = True,
    min_size: int = 1024,
    ops: Sequence[str] = ("MatMul", "Gemm", "Conv"),
    progress: Optional[Progress] = None,
) -> Any:
    """A new model whose large float weights are stored as integers and dequantized in the graph.

    Each float initializer of at least ``min_size`` values that is the weight of a node of
    ``ops`` (``MatMul``'s second input, ``Gemm``'s ``B``, ``Conv``'s ``W``) is replaced by
    three initializers, its integers (INT4/UINT4 packed two to a byte, INT8/UINT8,
    INT16/UINT16), a float32 scale and a zero point of the integer type, and a
    ``DequantizeLinear`` node whose output has the weight's name, so every consumer reads
    the dequantized weight unchanged. The integers and scales are exactly those of
    ``QuantizedArray(n_bits, weight, is_signed=..., is_symmetric=..., axis=..., block_size=...,
    profile="onnx")``, and ONNX Runtime's ``DequantizeLinear`` gives that array's
    ``dequant()`` bit for bit. A weight used by several nodes gets one node. The
    ``DequantizeLinear`` nodes come first in the graph; every other node (but the
    ``Constant`` nodes of quantized weights), input and output is kept as it was.

    A weight held in a ``Constant`` node of the main graph (its ``value`` attribute a
    tensor, as some exporters write weights) is quantized the same way when its tensor
    passes the same checks: the ``Constant`` node is removed and the ``DequantizeLinear``
    node (or the ``Cast`` after it) produces its output's name instead, with the same
    initializers as for an initializer of that name. Other ``Constant`` nodes stay as they are: those
    holding ``value_float``, ``sparse_value`` or another attribute, a tensor of another type
    or with too few values, and those whose output is a graph output.

    FLOAT16, BFLOAT16 and DOUBLE weights are quantized as float32 values (exact from the
    16-bit types, rounded from DOUBLE), and a ``Cast`` node after ``DequantizeLinear``
    (whose output is then ``{name}_dequantized``) gives the consumers their type back.
    Left as they are: initializers that are also graph inputs (the caller may feed them),
    and subgraphs (their initializers and ``Constant`` nodes included).

    The default-domain opset is raised where the new nodes need it: 21 for ``block_size``
    and for 4- and 16-bit integers, 13 for ``axis`` (ONNX's version converter rewrites the
    other nodes if the model's opset was lower); the IR version follows.

    Args:
        model: an ``onnx.ModelProto`` (not modified), or the path of a model file. Given a
            path, the model is loaded without its external data, and each weight stored as
            external data is read on its own, so the float values in memory at any time are
            one weight's; the initializers left as they are keep referring to the external
            files, relative to the source model's directory (see :func:`save_model`).
        n_bits: 4, 8 or 16.
        axis: one axis of the weight as stored: a scale per index along it (ONNX's per-axis
            quantization).
        block_size: qarray's blocks (see ``docs/granularity.md``) that ONNX can express,
            blocks longer than one value along one axis at most: an int ``g`` (``g``
            consecutive values of the last axis) or a tuple such as ``(32, 1)`` (32 values
            along axis 0). A shorter last block is allowed, as in ONNX.
        is_signed: INT types if True, else UINT types.
        is_symmetric: ONNX Runtime's symmetric parameters (zero point 0); needs ``is_signed``.
        min_size: the fewest values a weight must have to be quantized.
        ops: the operators whose weights are quantized, among ``MatMul``, ``Gemm``, ``Conv``.
        progress: called as ``progress(done, total, name)`` after each weight.

    Returns:
        A new ``onnx.ModelProto`` that passes ``onnx.checker.check_model(full_check=True)``
        (a result that still refers to external data passes once written with
        :func:`save_model`: the checker reads the files the references name).

    Raises:
        TypeError: for a model that is neither a ModelProto nor a path, or an argument of
            the wrong type (the message names it).
        ValueError: for ``n_bits`` not 4, 8 or 16, ``is_symmetric`` without ``is_signed``,
            ``min_size < 0``, an unknown operator in ``ops``, more than one ``axis``, a
            ``block_size`` whose blocks are longer than one value along two axes, an axis
            out of range, or an opset that cannot be converted.
        ImportError: when ``onnx`` is not installed.

    Example:
        >>> import numpy, qarray.onnx
        >>> from onnx import TensorProto, helper, numpy_helper
        >>> graph = helper.make_graph(
        ...     [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        ...     initializer=[numpy_helper.from_array(numpy.ones((32, 64), numpy.float32), "w")])
        >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        >>> quantized = qarray.onnx.quantize_weights(model, axis=0)
        >>> [tensor.name for tensor in quantized.graph.initializer]
        ['w_quantized', 'w_scale', 'w_zero_point']
    """
    settings = _check_settings(n_bits, axis, block_size, is_signed, is_symmetric, min_size, ops, progress)
    return _quantize(model, settings)[0]


# ---- activations -----------------------------------------------------------------------------


def qdq_nodes(
    quantizer: UniformQuantizer, input_name: str, *, output_name: Optional[str] = None
) -> Tuple[List[Any], List[Any]]:
    """A ``QuantizeLinear`` + ``DequantizeLinear`` pair for an activation, and its initializers.

    The pair computes ``quantizer.dequant(quantizer.quant(x))`` bit for bit in ONNX Runtime,
    for a fitted quantizer of the ``"onnx"`` profile, per tensor or per axis. Names:
    ``{input_name}_scale`` and ``{input_name}_zero_point`` (the initializers),
    ``{input_name}_quantized`` (the integers between the two nodes),
    ``{input_name}_QuantizeLinear`` and ``{input_name}_DequantizeLinear`` (the nodes); the
    output is ``output_name``, by default ``{input_name}_dequantized``. Consumers of the
    activation that should read the quantized values must be rewired to the output by the
    caller. The nodes need opset 13 (INT8/UINT8) or 21 (4- and 16-bit types).

    Args:
        quantizer: a :class:`~qarray.UniformQuantizer` with ``profile="onnx"`` and
            parameters (calibrated or set by hand).
        input_name: the activation's tensor name.
        output_name: the dequantized tensor's name.

    Returns:
        ``(nodes, initializers)``: ``[QuantizeLinear, DequantizeLinear]`` and
        ``[scale, zero_point]``.

    Raises:
        TypeError: if ``quantizer`` is not a UniformQuantizer or a name is not a str.
        ValueError: for another profile, a quantizer without parameters, or a
            ``block_size`` granularity (per-tensor and per-axis only).

    Example:
        >>> import numpy, qarray, qarray.onnx
        >>> qa = qarray.QuantizedArray(8, numpy.linspace(-1, 1, 9), is_signed=True, profile="onnx")
        >>> nodes, initializers = qarray.onnx.qdq_nodes(qa.quantizer, "relu_out")
        >>> [node.op_type for node in nodes], nodes[1].output[0]
        (['QuantizeLinear', 'DequantizeLinear'], 'relu_out_dequantized')
    """
    onnx = _onnx()
    if not isinstance(quantizer, UniformQuantizer):
        raise TypeError(f"quantizer must be a qarray.UniformQuantizer, got {describe(quantizer)}")
    if not isinstance(input_name, str) or not input_name:
        raise TypeError(f"input_name must be a non-empty str, got {describe(input_name)}")
    if output_name is None:
        output_name = f"{input_name}_dequantized"
    if not isinstance(output_name, str) or not output_name:
        raise TypeError(f"output_name must be a non-empty str or None, got {describe(output_name)}")
    if quantizer.options is None or quantizer.scale is None or quantizer.zero_point is None:
        raise ValueError("quantizer must have options and parameters (calibrate it first)")
    options = quantizer.quant_options
    if options.profile != "onnx":
        raise ValueError(
            f"quantizer must use profile='onnx' (QuantizeLinear's numerics), got profile={options.profile!r}"
        )
    if options.block_size is not None:
        raise ValueError(
            f"quantizer must be per tensor or per axis, got block_size={options.block_size!r}; "
            "blocked activations are not supported"
        )
    if options.axis is None:
        layout = _Layout({}, (), "per-tensor")
    else:
        if isinstance(options.axis, tuple) and len(options.axis) != 1:
            raise ValueError(f"quantizer must have one axis (QuantizeLinear has one), got axis={options.axis!r}")
        grid = numpy.shape(quantizer.scale)
        along = (options.axis[0] if isinstance(options.axis, tuple) else options.axis) % len(grid)
        layout = _Layout({"axis": along}, (grid[along],), f"axis {along}")
    scale, zero = _parameter_tensors(quantizer, layout, f"{input_name}_scale", f"{input_name}_zero_point")
    quantized_name = f"{input_name}_quantized"
    nodes = [
        onnx.helper.make_node(
            "QuantizeLinear",
            [input_name, scale.name, zero.name],
            [quantized_name],
            name=f"{input_name}_QuantizeLinear",
            **layout.attributes,
        ),
        onnx.helper.make_node(
            "DequantizeLinear",
            [quantized_name, scale.name, zero.name],
            [output_name],
            name=f"{input_name}_DequantizeLinear",
            **layout.attributes,
        ),
    ]
    return nodes, [scale, zero]


# ---- reading a model back --------------------------------------------------------------------


def _integer_types_by_onnx_type() -> Dict[int, Tuple[int, bool]]:
    onnx = _onnx()
    return {getattr(onnx.TensorProto, name): key for key, (name, _) in _INTEGER_TYPES.items()}


class _Ranks:
    """Tensor ranks, from initializers and declared shapes, and from shape inference if needed."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.ranks: Optional[Dict[str, int]] = None
        self.inferred = False

    def _collect(self, graph: Any) -> Dict[str, int]:
        ranks = {tensor.name: len(tensor.dims) for tensor in graph.initializer}
        for info in (*graph.input, *graph.output, *graph.value_info):
            if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
                ranks[info.name] = len(info.type.tensor_type.shape.dim)
        return ranks

    def rank(self, name: str) -> Optional[int]:
        if self.ranks is None:
            self.ranks = self._collect(self.model.graph)
        if name not in self.ranks and not self.inferred:
            self.inferred = True
            try:
                inferred = _onnx().shape_inference.infer_shapes(self.model)
                self.ranks.update(self._collect(inferred.graph))
            except Exception:  # noqa: BLE001 (a model shape inference cannot read has no more ranks to give)
                pass
        return self.ranks.get(name)


def read_qdq(model: ModelLike) -> Dict[str, UniformQuantizer]:
    """Quantizers for the ``DequantizeLinear`` nodes of a model.

    For every ``DequantizeLinear`` node of the main graph whose scale (FLOAT) and zero point
    (INT4/UINT4, INT8/UINT8 or INT16/UINT16) are initializers, the key is the name of its
    quantized input and the value a :class:`~qarray.UniformQuantizer` with
    ``profile="onnx"`` whose ``dequant`` of that input's integers equals the node's output
    bit for bit (and whose ``quant`` is the matching ``QuantizeLinear``). ONNX's per-axis
    parameters become ``axis=a`` (the input's rank is read from an initializer, a declared
    shape or shape inference); blocked ones become ``block_size`` (an int along the last
    axis, else a tuple with 1 on the other axes). The options say ``is_symmetric=False``:
    a node holds parameters, not how they were chosen. Other nodes (no zero point, a scale
    or zero point computed in the graph, other types) are skipped. If two nodes read the
    same input, the first one is kept.

    Args:
        model: an ``onnx.ModelProto`` or the path of a model file.

    Returns:
        ``{input name: quantizer}``.

    Raises:
        ValueError: if a per-axis node's input has no known rank, or its parameters are not
            valid quantization parameters (a zero or non-finite scale); the message names
            the node.

    Example:
        >>> import numpy, qarray, qarray.onnx
        >>> qa = qarray.QuantizedArray(8, numpy.linspace(-1, 1, 9), is_signed=True, profile="onnx")
        >>> nodes, initializers = qarray.onnx.qdq_nodes(qa.quantizer, "x")
        >>> from onnx import helper
        >>> graph = helper.make_graph(nodes, "g", [], [], initializer=initializers)
        >>> quantizers = qarray.onnx.read_qdq(helper.make_model(graph))
        >>> float(quantizers["x_quantized"].scale) == float(qa.quantizer.scale)
        True
    """
    onnx = _onnx()
    loaded, _ = _load(model)
    graph = loaded.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    types = _integer_types_by_onnx_type()
    ranks = _Ranks(loaded)
    found: Dict[str, UniformQuantizer] = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.domain not in _DEFAULT_DOMAINS or len(node.input) < 3:
            continue
        source, scale_name, zero_name = node.input[:3]
        scale_tensor, zero_tensor = initializers.get(scale_name), initializers.get(zero_name)
        if source in found or scale_tensor is None or zero_tensor is None:
            continue
        if scale_tensor.data_type != onnx.TensorProto.FLOAT or zero_tensor.data_type not in types:
            continue
        n_bits, is_signed = types[zero_tensor.data_type]
        scale = numpy.asarray(onnx.numpy_helper.to_array(scale_tensor), dtype=numpy.float64)
        zero = numpy.asarray(onnx.numpy_helper.to_array(zero_tensor)).astype(numpy.int64)
        attributes = {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}
        granularity: Dict[str, Any] = {}
        if int(attributes.get("block_size", 0)) > 0:
            rank = scale.ndim
            along = int(attributes.get("axis", 1)) % rank
            size = int(attributes["block_size"])
            granularity["block_size"] = size if along == rank - 1 else tuple(
                size if d == along else 1 for d in range(rank)
            )
        elif scale.size > 1 or scale.ndim > 1:
            rank_or_none = ranks.rank(source)
            if rank_or_none is None:
                raise ValueError(
                    f"DequantizeLinear node {node.name!r} has per-axis parameters, but the rank of its input "
                    f"{source!r} is unknown: declare its shape (a value_info) so the axis can be placed"
                )
            along = int(attributes.get("axis", 1)) % rank_or_none
            grid = [1] * rank_or_none
            grid[along] = scale.size
            scale, zero = scale.reshape(grid), zero.reshape(grid)
            granularity["axis"] = along
        else:
            scale, zero = scale.reshape(()), zero.reshape(())
        try:
            options = QuantizationOptions(n_bits, is_signed=is_signed, profile="onnx", **granularity)
            scale_value: Any = scale if scale.ndim else float(scale)  # a grid, or one float per tensor
            zero_value: Any = zero if zero.ndim else int(zero)
            params = UniformQuantizationParameters(scale_value, zero_value, 2 ** (n_bits - 1) if is_signed else 0)
        except (TypeError, ValueError) as error:
            raise ValueError(f"DequantizeLinear node {node.name!r} (input {source!r}): {error}") from error
        found[source] = UniformQuantizer(options, params=params)
    return found


# ---- writing ---------------------------------------------------------------------------------


def _external_source(tensor: Any, source_dir: str) -> Tuple[str, int, int]:
    """The file, offset and length of a tensor's external bytes, inside ``source_dir``."""
    onnx = _onnx()
    info = onnx.external_data_helper.ExternalDataInfo(tensor)
    location = os.path.normpath(info.location)
    if os.path.isabs(location) or location.startswith(os.pardir):
        raise ValueError(f"initializer {tensor.name!r} refers to {info.location!r}, outside source_dir")
    path = os.path.join(source_dir, location)
    offset = int(info.offset or 0)
    length = int(info.length) if info.length is not None else os.path.getsize(path) - offset
    return path, offset, length


def save_model(
    model: Any,
    path: Union[str, os.PathLike[str]],
    *,
    external_data: Optional[str] = None,
    source_dir: Optional[Union[str, os.PathLike[str]]] = None,
    size_threshold: int = 1024,
) -> None:
    """Write a model, its large initializers in one external data file if asked.

    The model given is not modified. With ``external_data`` (a file name, written next to
    ``path``), every main-graph initializer of at least ``size_threshold`` bytes is stored in
    that file; initializers that already refer to external data (those
    :func:`quantize_weights` left as they were when it was given a path) are copied from
    ``source_dir`` in chunks, so memory stays bounded by the in-memory model. Without
    ``external_data``, the model is written in one file (ONNX files are limited to 2 GB),
    loading any external data from ``source_dir`` first.

    Args:
        model: an ``onnx.ModelProto``.
        path: the model file to write.
        external_data: the external data file's name, relative to ``path``'s directory.
        source_dir: the directory the model's existing external data references are
            relative to (the source model's directory).
        size_threshold: the smallest initializer, in bytes, written to ``external_data``.

    Raises:
        TypeError: if ``model`` is not a ModelProto.
        ValueError: if the model refers to external data and ``source_dir`` is None, or a
            reference points outside ``source_dir``.

    Example:
        >>> import os, tempfile, numpy, qarray.onnx
        >>> from onnx import helper, numpy_helper
        >>> graph = helper.make_graph([], "g", [], [],
        ...     initializer=[numpy_helper.from_array(numpy.ones(4096, numpy.float32), "w")])
        >>> folder = tempfile.mkdtemp()
        >>> qarray.onnx.save_model(helper.make_model(graph), os.path.join(folder, "m.onnx"), external_data="m.data")
        >>> os.path.getsize(os.path.join(folder, "m.data"))
        16384
    """
    onnx = _onnx()
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model must be an onnx.ModelProto, got {describe(model)}")
    if external_data is not None and (not isinstance(external_data, str) or os.path.isabs(external_data)):
        raise ValueError(f"external_data must be a relative file name or None, got {external_data!r}")
    size_threshold = check_int(size_threshold, "size_threshold")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    external = [t for t in out.graph.initializer if onnx.external_data_helper.uses_external_data(t)]
    if external and source_dir is None:
        raise ValueError(
            f"model refers to external data (initializer {external[0].name!r}); "
            "pass source_dir, the directory of the model it came from"
        )
    path = os.fspath(path)
    if external_data is None:
        for tensor in external:
            onnx.external_data_helper.load_external_data_for_tensor(tensor, os.fspath(source_dir))  # type: ignore[arg-type]
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
        onnx.save_model(out, path)
        return
    data_path = os.path.join(os.path.dirname(os.path.abspath(path)), external_data)
    chunk = 1 << 24
    with open(data_path, "wb") as data:
        for tensor in out.graph.initializer:
            if onnx.external_data_helper.uses_external_data(tensor):
                source, offset, length = _external_source(tensor, os.fspath(source_dir))  # type: ignore[arg-type]
                start = data.tell()
                with open(source, "rb") as handle:
                    handle.seek(offset)
                    left = length
                    while left:
                        piece = handle.read(min(chunk, left))
                        if not piece:
                            raise ValueError(f"initializer {tensor.name!r}: {source!r} ends before its data")
                        data.write(piece)
                        left -= len(piece)
            elif tensor.HasField("raw_data") and len(tensor.raw_data) >= size_threshold:
                start = data.tell()
                data.write(tensor.raw_data)
                length = len(tensor.raw_data)
                tensor.ClearField("raw_data")
            else:
                continue
            del tensor.external_data[:]
            for key, value in (("location", external_data), ("offset", start), ("length", length)):
                tensor.external_data.add(key=key, value=str(value))
            tensor.data_location = onnx.TensorProto.EXTERNAL
    with open(path, "wb") as handle:
        handle.write(out.SerializeToString())
