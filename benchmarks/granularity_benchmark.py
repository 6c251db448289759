"""Per-tensor, per-channel and per-group quantization: qarray against torchao and ONNX Runtime.

The data is a seeded float32 weight-like matrix, ``(rows, 4096)`` with about
``--sizes`` values (standard normal values, each row multiplied by its own
log-normal spread, so per-row parameters differ). For each size and bit width
(unsigned, asymmetric) three granularities are timed:

    per-tensor   one scale and zero point                   qarray: no axis, no block_size
    per-axis 0   one per row                                qarray: axis=0
    group-128    one per 128 consecutive values of a row    qarray: block_size=128

qarray calibrates each case once (min/max per block, ``qarray.calibrate``); every
tool then quantizes the same data with those scales and zero points:

    qarray numba       ``quantizer.quant(w, dtype=uint8)`` (a new array), with Numba
    qarray numba out=  the same into a preallocated uint8 array
    qarray numpy       the blocked NumPy path (``QARRAY_DISABLE_NUMBA=1``), a new array;
                       only at the ``--numpy-sizes`` (default 1e7)
    torchao            ``torchao.quantization.quant_primitives.quantize_affine`` with
                       ``block_size`` (rows, cols) / (1, cols) / (1, 128), float32 scales
                       (as torchao's own ``choose_qparams_affine`` makes them for float32
                       input) and int32 zero points; ``output_dtype`` uint8 / ``torch.uint4``
                       (one value per byte)
    onnxruntime        a one-node ONNX model, ``QuantizeLinear`` opset 21: per tensor
                       (scalar scale), per axis (``axis=0``, scale of shape (rows,)) and
                       blocked (``axis=1``, ``block_size=128``, scale of shape
                       (rows, cols/128)); float32 scales, uint8 / uint4 zero points and
                       outputs (uint4 is packed, two values per byte); run with I/O
                       binding, its output left in ONNX Runtime's memory; its threads do
                       not spin after a run (``session.intra_op.allow_spinning=0``), which
                       on a 2-core machine would slow the next tool timed, not ORT

Each row gives the median wall time over ``--repeats`` runs after one warm-up run
(all the rows of a bit width are timed in interleaved rounds, so that load from other
work on the machine falls on all of them alike),
the throughput in values per second, the speed-ups of the row over torchao and ONNX
Runtime on the same granularity (their time / the row's time), the row's throughput
relative to the same tool's per-tensor row (``x per-tensor``), the peak extra
memory (``peak MB``: the larger of the growth of the process's peak RSS from before
the tool is set up to after its timed runs, Linux, which sees what PyTorch and ONNX
Runtime allocate, ONNX Runtime's arena included, and the peak of one call's NumPy
allocations as tracemalloc sees them, since freed memory that NumPy reuses no longer
shows in the RSS), and the number of integers that differ from the exact reference:
``clip(rint(float64(x) / scale + zero_point), -offset, 2**n - 1 - offset)`` with
each block's own float64 parameters, computed in float64 by rows. qarray rows must be
exact: the script exits with status 1 if one is not. torchao computes
``round(x * (1 / scale)) + zero_point`` in float32 and ONNX Runtime ``x / scale`` in
float32, so some of their integers differ; they are counted, not failed.

torchao and ONNX Runtime (with onnx) are needed for their rows only, not by qarray;
a missing one is skipped with a message:

    pip install torchao onnxruntime onnx

Usage:
    python benchmarks/granularity_benchmark.py                  # sizes 1e7 1e8, 8 and 4 bits, 11 repeats
    python benchmarks/granularity_benchmark.py --sizes 1e7 --bits 8 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import statistics
import sys
import time
import tracemalloc
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy
from _machine import machine_info, peak_bytes, reset_peak, rss_bytes

import qarray
from qarray.backends import numba_kernels

COLUMNS = 4096
GROUP = 128
MB = 1024 * 1024
GRANULARITIES: Dict[str, Dict[str, Any]] = {
    "per-tensor": {},
    "per-axis 0": {"axis": 0},
    "group-128": {"block_size": GROUP},
}


# -- data, parameters and the exact reference -------------------------------------------------


def make_weights(size: int, seed: int) -> numpy.ndarray:
    """A seeded float32 ``(rows, COLUMNS)`` matrix of about ``size`` values, made by rows."""
    rows = max(1, round(size / COLUMNS))
    rng = numpy.random.default_rng(seed)
    weights = numpy.empty((rows, COLUMNS), dtype=numpy.float32)
    spread = rng.lognormal(-3.0, 0.5, size=(rows, 1)).astype(numpy.float32)
    step = max(1, (1 << 22) // COLUMNS)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        weights[start:stop] = rng.standard_normal((stop - start, COLUMNS), dtype=numpy.float32)
        weights[start:stop] *= spread[start:stop]
    return weights


class Case:
    """One (bits, granularity): qarray's quantizer and its parameters as full grids."""

    def __init__(self, weights: numpy.ndarray, n_bits: int, granularity: str, profile: str = "concrete") -> None:
        self.n_bits = n_bits
        self.granularity = granularity
        self.profile = profile
        self.quantizer = qarray.calibrate([weights], n_bits, profile=profile, **GRANULARITIES[granularity])
        rows, cols = weights.shape
        self.scale = numpy.asarray(self.quantizer.scale, dtype=numpy.float64)
        self.zero_point = numpy.asarray(self.quantizer.zero_point, dtype=numpy.int64)
        self.offset = numpy.asarray(self.quantizer.offset, dtype=numpy.int64)
        if numpy.any(self.offset != 0):
            raise RuntimeError("unsigned quantization expected (offset 0)")
        if numpy.any(self.zero_point < 0) or numpy.any(self.zero_point > 2**n_bits - 1):
            raise RuntimeError("zero points outside the unsigned range (the peers need them in it)")
        # (rows, blocks per row) grids and the extent of a block along the last axis
        self.extent = GROUP if granularity == "group-128" else cols
        shape = (rows, -(-cols // self.extent))
        self.scale_grid = numpy.broadcast_to(self.scale, shape)  # () or (rows, 1) or the grid itself
        self.zero_grid = numpy.broadcast_to(self.zero_point, shape)
        self.offset_grid = numpy.broadcast_to(self.offset, shape)

    def grid2d(self, grid: numpy.ndarray) -> numpy.ndarray:
        """A parameter grid as torchao takes it: (1, 1) per tensor, (rows, 1) per row, else the grid."""
        if self.granularity == "per-tensor":
            return numpy.ascontiguousarray(grid[:1, :1])
        if self.granularity == "per-axis 0":
            return numpy.ascontiguousarray(grid[:, :1])
        return numpy.ascontiguousarray(grid)

    def expanded(self, grid: numpy.ndarray, start: int, stop: int, cols: int) -> numpy.ndarray:
        """The parameter of every value of rows ``start:stop``."""
        return numpy.repeat(grid[start:stop], self.extent, axis=1)[:, :cols]

    def reference(self, weights: numpy.ndarray) -> numpy.ndarray:
        """The exact integers, in float64, a few rows at a time (as uint8: they fit)."""
        rows, cols = weights.shape
        out = numpy.empty(weights.shape, dtype=numpy.uint8)
        step = max(1, (1 << 21) // cols)
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            scale = self.expanded(self.scale_grid, start, stop, cols)
            zero = self.expanded(self.zero_grid, start, stop, cols).astype(numpy.float64)
            offset = self.expanded(self.offset_grid, start, stop, cols).astype(numpy.float64)
            q = numpy.rint(weights[start:stop].astype(numpy.float64) / scale + zero)
            out[start:stop] = numpy.clip(q, -offset, 2**self.n_bits - 1 - offset)
        return out


def count_differences(result: numpy.ndarray, expected: numpy.ndarray) -> int:
    """How many integers of ``result`` differ from ``expected``, by rows (no full-size temporaries)."""
    result = numpy.asarray(result).reshape(expected.shape)
    step = max(1, (1 << 22) // expected.shape[1])
    return sum(
        int(numpy.count_nonzero(result[start:start + step].astype(numpy.int64) != expected[start:start + step]))
        for start in range(0, expected.shape[0], step)
    )


# -- the tools: each returns (call to time, call giving the integers as a NumPy array) ------------

Tool = Tuple[Callable[[], Any], Callable[[], numpy.ndarray]]


class NumbaSwitch:
    """Switches qarray's NumPy backend between its Numba and blocked NumPy paths."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> NumbaSwitch:
        self._saved = os.environ.get(numba_kernels.DISABLE_ENV)
        os.environ[numba_kernels.DISABLE_ENV] = "0" if self.enabled else "1"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved is None:
            os.environ.pop(numba_kernels.DISABLE_ENV, None)
        else:
            os.environ[numba_kernels.DISABLE_ENV] = self._saved


def switched(call: Callable[[], Any], numba_on: bool) -> Callable[[], Any]:
    """``call`` with qarray's Numba path switched on or off around it."""
    def run() -> Any:
        with NumbaSwitch(numba_on):
            return call()
    return run


def qarray_tool(case: Case, weights: numpy.ndarray, preallocated: Optional[numpy.ndarray]) -> Tool:
    quantizer = case.quantizer
    if preallocated is None:
        def run() -> Any:
            return quantizer.quant(weights, dtype=numpy.uint8)
    else:
        def run() -> Any:
            return quantizer.quant(weights, dtype=numpy.uint8, out=preallocated)
    return run, run


def torchao_available() -> Optional[str]:
    """None when torchao imports, else why not."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchao") is None:
        return "torchao not installed (pip install torchao)"
    try:
        _import_torchao()
    except Exception as error:  # pragma: no cover - depends on the installed versions
        return f"torchao does not import: {type(error).__name__}: {error}"
    return None


def _import_torchao() -> Any:
    # torchao prints notes about its GPU-only extensions on import; they do not concern the CPU
    logging.getLogger("torchao").setLevel(logging.ERROR)
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        from torchao.quantization.quant_primitives import quantize_affine
    return quantize_affine


def torchao_tool(case: Case, weights: numpy.ndarray) -> Tool:
    import torch

    quantize_affine = _import_torchao()
    rows, cols = weights.shape
    block = {"per-tensor": (rows, cols), "per-axis 0": (1, cols), "group-128": (1, GROUP)}[case.granularity]
    scale = torch.from_numpy(case.grid2d(case.scale_grid).astype(numpy.float32))
    zero = torch.from_numpy(case.grid2d(case.zero_grid).astype(numpy.int32))
    output_dtype = torch.uint8 if case.n_bits == 8 else getattr(torch, f"uint{case.n_bits}")
    tensor = torch.from_numpy(weights)

    def run() -> Any:
        return quantize_affine(tensor, block, scale, zero, output_dtype, 0, 2**case.n_bits - 1)

    def integers() -> numpy.ndarray:
        return run().numpy()

    return run, integers


def onnxruntime_available() -> Optional[str]:
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return "onnxruntime or onnx not installed (pip install onnxruntime onnx)"
    return None


def onnxruntime_tool(case: Case, weights: numpy.ndarray) -> Tool:
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    rows, cols = weights.shape
    element = TensorProto.UINT8 if case.n_bits == 8 else TensorProto.UINT4
    # per tensor: scalars; per axis 0: (rows,); blocked: (rows, cols / 128)
    scale = case.grid2d(case.scale_grid).astype(numpy.float32)
    zero = case.grid2d(case.zero_grid)
    attributes: Dict[str, Any] = {"per-tensor": {}, "per-axis 0": {"axis": 0},
                                  "group-128": {"axis": 1, "block_size": GROUP}}[case.granularity]
    if case.granularity != "group-128":
        scale, zero = scale.reshape(-1), zero.reshape(-1)
    if case.granularity == "per-tensor":
        scale, zero = scale.reshape(()), zero.reshape(())

    def session(cast: bool) -> Any:
        nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["q" if cast else "y"], **attributes)]
        if cast:  # uint4 has no NumPy type: unpack it to uint8 to read the integers (not timed)
            nodes.append(helper.make_node("Cast", ["q"], ["y"], to=TensorProto.UINT8))
        graph = helper.make_graph(
            nodes,
            "quantize",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, cols])],
            [helper.make_tensor_value_info("y", TensorProto.UINT8 if cast else element, [rows, cols])],
            initializer=[
                numpy_helper.from_array(scale, "scale"),
                helper.make_tensor("zero_point", element, list(zero.shape), zero.ravel().tolist()),
            ],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        model.ir_version = 10
        onnx.checker.check_model(model)
        options = onnxruntime.SessionOptions()
        # its threads would otherwise spin on the cores for a while after each run, slowing
        # whatever runs next on this 2-core machine (not ONNX Runtime itself: same speed)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    timed = session(cast=False)
    binding = timed.io_binding()
    binding.bind_cpu_input("x", weights)
    binding.bind_output("y", "cpu")

    def run() -> Any:
        timed.run_with_iobinding(binding)
        return binding

    def integers() -> numpy.ndarray:
        if element == TensorProto.UINT8:
            run()
            return binding.copy_outputs_to_cpu()[0]
        return session(cast=True).run(None, {"x": weights})[0]

    return run, integers


# -- measuring ----------------------------------------------------------------------------------


def traced_peak(call: Callable[[], Any]) -> int:
    """Peak bytes that NumPy allocates during one ``call``, as tracemalloc sees them."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        result = call()
        _, peak = tracemalloc.get_traced_memory()
        del result
    finally:
        tracemalloc.stop()
    return max(0, peak - before)


def _row(**fields: Any) -> Dict[str, Any]:
    row = {
        "values": None, "shape": None, "bits": None, "granularity": None, "tool": None, "median_s": None,
        "gvalues_per_s": None, "vs_torchao": None, "vs_onnxruntime": None, "x_per_tensor": None,
        "peak_extra_mb": None, "differ": None, "note": None,
    }
    row.update(fields)
    return row


def run_size(size: int, bits: Sequence[int], repeats: int, numpy_path: bool, seed: int,
             skipped: Dict[str, str]) -> Tuple[List[Dict[str, Any]], bool]:
    weights = make_weights(size, seed)
    n = weights.size
    rows: List[Dict[str, Any]] = []
    ok = True
    preallocated = numpy.zeros(weights.shape, dtype=numpy.uint8)
    preallocated.fill(1)  # touch its pages, so that they count before the runs, not in the first
    tools: List[Tuple[str, Optional[bool], Callable[[Case], Tool]]] = []
    if numba_kernels.available():
        tools.append(("qarray numba", True, lambda case: qarray_tool(case, weights, None)))
        tools.append(("qarray numba out=", True, lambda case: qarray_tool(case, weights, preallocated)))
    if numpy_path:
        tools.append(("qarray numpy", False, lambda case: qarray_tool(case, weights, None)))
    if "torchao" not in skipped:
        tools.append(("torchao", None, lambda case: torchao_tool(case, weights)))
    if "onnxruntime" not in skipped:
        tools.append(("onnxruntime", None, lambda case: onnxruntime_tool(case, weights)))

    for n_bits in bits:
        # every tool of every granularity is set up (and warmed up) first, then timed in
        # interleaved rounds, so that load from elsewhere on the machine hits them alike
        cases = {granularity: Case(weights, n_bits, granularity) for granularity in GRANULARITIES}
        entries = []
        for granularity, case in cases.items():
            for name, numba_on, factory in tools:
                resettable = reset_peak()
                base = rss_bytes()
                with NumbaSwitch(numba_on) if numba_on is not None else contextlib.nullcontext():
                    run, integers = factory(case)
                    run()  # warm-up (compilation, session and arena set-up)
                held = peak_bytes() - base if resettable else 0
                if numba_on is not None:
                    run, integers = switched(run, numba_on), switched(integers, numba_on)
                entries.append({"granularity": granularity, "tool": name, "run": run, "integers": integers,
                                "held": held, "times": []})
        for _ in range(repeats):
            for entry in entries:
                start = time.perf_counter()
                result = entry["run"]()
                entry["times"].append(time.perf_counter() - start)
                del result
        for granularity, case in cases.items():
            expected = case.reference(weights)
            for entry in (e for e in entries if e["granularity"] == granularity):
                differ = count_differences(entry["integers"](), expected)
                if entry["tool"].startswith("qarray") and differ:
                    ok = False
                seconds = statistics.median(entry["times"])
                peak = max(entry["held"], traced_peak(entry["run"]))
                rows.append(_row(values=n, shape=list(weights.shape), bits=n_bits, granularity=granularity,
                                 tool=entry["tool"], median_s=seconds, gvalues_per_s=n / seconds / 1e9,
                                 peak_extra_mb=peak / MB, differ=differ))
            del expected
        del entries, cases
        print(f"  done: {size:.0e} values, {n_bits} bits", file=sys.stderr, flush=True)

    # ratios, all within this run
    def find(bits_: int, granularity: str, tool: str) -> Optional[Dict[str, Any]]:
        return next((r for r in rows if r["bits"] == bits_ and r["granularity"] == granularity
                     and r["tool"] == tool), None)

    for row in rows:
        for peer, key in (("torchao", "vs_torchao"), ("onnxruntime", "vs_onnxruntime")):
            other = find(row["bits"], row["granularity"], peer)
            if other is not None and row["tool"].startswith("qarray"):
                row[key] = other["median_s"] / row["median_s"]
        base = find(row["bits"], "per-tensor", row["tool"])
        if base is not None:
            row["x_per_tensor"] = base["median_s"] / row["median_s"]
    return rows, ok


# -- reporting -------------------------------------------------------------------------------------


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    lines = [
        "| values | bits | granularity | tool | median ms | Gvalues/s | vs torchao | vs ORT "
        "| x per-tensor | peak MB | integers |",
        "|" + "---|" * 11,
    ]
    for row in rows:
        differ = row["differ"]
        lines.append(
            f"| {row['values']:.2e} | {row['bits']} | {row['granularity']} | {row['tool']} "
            f"| {row['median_s'] * 1e3:.2f} | {row['gvalues_per_s']:.2f} | {_fmt(row['vs_torchao'], '.2f')} "
            f"| {_fmt(row['vs_onnxruntime'], '.2f')} | {_fmt(row['x_per_tensor'], '.2f')} "
            f"| {_fmt(row['peak_extra_mb'], '.0f')} | {'exact' if differ == 0 else f'{differ} differ'} |"
        )
    return "\n".join(lines)


def evaluate_targets(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Issue targets, at 1e8 values (and larger): group-128 with Numba >= 0.8x the per-tensor
    throughput, faster than both peers on group-128, and exact."""
    lines = []
    for row in rows:
        if row["values"] < 0.9e8 or row["granularity"] != "group-128" or not row["tool"].startswith("qarray numba"):
            continue
        label = f"{row['values']:.0e} {row['bits']}-bit group-128 {row['tool']}"
        got = row["x_per_tensor"]
        lines.append(f"{label}: {got:.2f}x per-tensor throughput (target >= 0.8: {'met' if got >= 0.8 else 'MISSED'})")
        for key, peer in (("vs_torchao", "torchao"), ("vs_onnxruntime", "onnxruntime")):
            if row[key] is None:
                lines.append(f"{label}: vs {peer}: not measured")
            else:
                lines.append(f"{label}: {row[key]:.2f}x vs {peer} (target > 1: {'met' if row[key] > 1 else 'MISSED'})")
        exact = "met" if row["differ"] == 0 else "MISSED"
        lines.append(f"{label}: {row['differ']} integers differ (target 0: {exact})")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; print the table; return 1 if a qarray result differs from the reference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e7, 1e8],
                        help="approximate numbers of values (default: 1e7 1e8)")
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4], choices=[8, 4])
    parser.add_argument("--numpy-sizes", type=float, nargs="*", default=[1e7],
                        help="sizes at which the NumPy-only path is timed too (default: 1e7)")
    parser.add_argument("--repeats", type=int, default=11, help="timed runs per row, after one warm-up (default 11)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the machine as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    sizes = [int(size) for size in args.sizes]
    if any(size < 1 for size in sizes):
        parser.error("--sizes must be >= 1")

    skipped = {name: why for name, why in (("torchao", torchao_available()),
                                           ("onnxruntime", onnxruntime_available())) if why}
    info = machine_info(("numba", "torch", "torchao", "onnxruntime", "onnx"), {"torchao": _import_torchao})
    print("machine: " + ", ".join(f"{key} {value}" for key, value in info.items()), flush=True)
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", flush=True)
    if not numba_kernels.available():
        print("skipped qarray numba: Numba not installed or disabled", flush=True)
    numpy_sizes = {int(size) for size in args.numpy_sizes}
    rows: List[Dict[str, Any]] = []
    ok = True
    for size in sizes:
        size_rows, size_ok = run_size(size, args.bits, args.repeats, size in numpy_sizes, args.seed, skipped)
        rows.extend(size_rows)
        ok &= size_ok
    print(format_table(rows))
    targets = evaluate_targets(rows)
    if targets:
        print("\ntargets:")
        print("\n".join(targets))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"machine": info, "repeats": args.repeats, "rows": rows, "targets": targets,
                       "skipped": skipped, "all_exact": ok}, handle, indent=2)
    if not ok:
        print("\nFAILED: a qarray result differs from the exact reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
