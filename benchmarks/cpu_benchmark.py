"""CPU benchmark of qarray's NumPy backend: the blocked NumPy path and the Numba path.

For float32 input quantized at 8 bits it times, at each size: calibration
(statistics + parameters), quantization to uint8 (into a new array, and into a
preallocated one with ``out=``) and to int64, de-quantization
to float32 and float64, calibration followed by quantization, and the
construction of a ``QuantizedArray``. Each row gives the median time over
``--repeats`` runs after one warm-up run, the effective bandwidth (bytes read +
bytes written, counting each input and output once), the time relative to a
roofline (``numpy.copyto`` of the row's input into a preallocated array of the
same length and dtype), the speedup over the reference algorithm, and the peak
extra memory of one call as ``tracemalloc`` sees it (NumPy reports its array
allocations to it; allocations inside PyTorch or ONNX Runtime are invisible to
it, so their rows show none).

The reference is Concrete ML's algorithm, implemented here on full-size float64
temporaries: ``rint(values / scale + zero_point)``, ``clip``, ``astype(int64)``
for quantization, ``scale * (qvalues - zero_point)`` for de-quantization, and
``min``, ``max`` and ``unique(round(values, 2))`` for calibration (qarray skips
the unique values unless QAT needs them). Every qarray row checks that its
integers (or floats) equal the reference's and the script exits with status 1
if one does not. ``torch.quantize_per_tensor`` and ONNX Runtime's
``QuantizeLinear`` (a one-node model), when installed, are timed on the same
data with the same scale and zero point; they compute in float32 and round
differently, so their rows report how many integers differ from the reference
instead of failing.

Both qarray paths are measured in the same run: ``numba`` (when Numba is
installed) and ``numpy`` (the blocked fallback, forced with
``QARRAY_DISABLE_NUMBA=1``).

Usage::

    python benchmarks/cpu_benchmark.py                       # sizes 1e6 1e7 1e8, 5 repeats
    python benchmarks/cpu_benchmark.py --sizes 1e6 --repeats 3 --json results.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import tracemalloc
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy
from _machine import machine_info

from qarray import (
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizationParameters,
    UniformQuantizer,
)
from qarray.backends import numba_kernels

N_BITS = 8
MB = 1024 * 1024


# -- the reference algorithm (Concrete ML's, on full-size float64 temporaries) -------------------


def reference_calibrate(values: numpy.ndarray) -> Tuple[float, int, numpy.ndarray]:
    """min, max and unique rounded values; then scale and zero point (unsigned, asymmetric)."""
    rmin, rmax = float(numpy.min(values)), float(numpy.max(values))
    uvalues = numpy.unique(numpy.round(values, 2))
    levels = 2**N_BITS - 1
    scale = (rmax - rmin) / levels
    zero_point = int(numpy.round((rmax * -0 - rmin * levels) / (rmax - rmin)))
    return scale, zero_point, uvalues


def reference_quant(values: numpy.ndarray, scale: float, zero_point: int) -> numpy.ndarray:
    """``rint(values / scale + zero_point)``, clipped to the 8-bit range, as int64."""
    qvalues = numpy.rint(values / numpy.float64(scale) + zero_point)
    qvalues = numpy.clip(qvalues, 0, 2**N_BITS - 1)
    return qvalues.astype(numpy.int64)


def reference_dequant(qvalues: numpy.ndarray, scale: float, zero_point: int, dtype: Any) -> numpy.ndarray:
    """``scale * (qvalues - float64(zero_point))``, cast to ``dtype``."""
    values = numpy.float64(scale) * (qvalues - numpy.float64(zero_point))
    return values if dtype == numpy.float64 else values.astype(dtype)


def reference_quantized_array(values: numpy.ndarray) -> numpy.ndarray:
    """What constructing Concrete ML's QuantizedArray computes: copy, calibrate, quantize."""
    own = values.copy()
    scale, zero_point, _ = reference_calibrate(own)
    return reference_quant(own, scale, zero_point)


# -- competitors ------------------------------------------------------------------------------


def torch_quantizer(scale: float, zero_point: int) -> Optional[Callable[[numpy.ndarray], Any]]:
    """``torch.quantize_per_tensor`` to quint8, or None when PyTorch is not installed."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    def run(values: numpy.ndarray) -> Any:
        with warnings.catch_warnings():  # its deprecation notice, once per call
            warnings.simplefilter("ignore")
            return torch.quantize_per_tensor(torch.from_numpy(values), scale, zero_point, torch.quint8)

    return run


def onnxruntime_quantizer(scale: float, zero_point: int) -> Optional[Callable[[numpy.ndarray], Any]]:
    """A one-node ONNX ``QuantizeLinear`` model run by ONNX Runtime, or None when not installed."""
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return None
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["y"])],
        "quantize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [None])],
        initializer=[
            numpy_helper.from_array(numpy.array(scale, dtype=numpy.float32), "scale"),
            numpy_helper.from_array(numpy.array(zero_point, dtype=numpy.uint8), "zero_point"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(values: numpy.ndarray) -> Any:
        return session.run(None, {"x": values})[0]

    return run


# -- measuring ----------------------------------------------------------------------------------


def median_time(call: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``call`` over ``repeats`` runs, after one warm-up run."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_extra_memory(call: Callable[[], Any]) -> int:
    """Peak bytes allocated (and seen by tracemalloc) during one ``call``, over what was there before."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = call()
        _, peak = tracemalloc.get_traced_memory()
        del result
    finally:
        tracemalloc.stop()
    return max(0, peak - before)


class Path:
    """Switches the NumPy backend between its Numba and blocked NumPy paths."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> Path:
        self._saved = os.environ.get(numba_kernels.DISABLE_ENV)
        os.environ[numba_kernels.DISABLE_ENV] = "0" if self.name == "numba" else "1"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved is None:
            os.environ.pop(numba_kernels.DISABLE_ENV, None)
        else:
            os.environ[numba_kernels.DISABLE_ENV] = self._saved


# -- one size -----------------------------------------------------------------------------------


def _row(**fields: Any) -> Dict[str, Any]:
    row = {
        "size": None, "operation": None, "path": None, "median_s": None, "gb_per_s": None,
        "x_copy": None, "speedup_vs_reference": None, "speedup_vs_torch": None,
        "speedup_vs_onnxruntime": None, "peak_extra_mb": None, "memory_limit_mb": None,
        "check": None,
    }
    row.update(fields)
    return row


def run_size(size: int, repeats: int, paths: Sequence[str], seed: int) -> Tuple[List[Dict[str, Any]], bool]:
    """Benchmark every operation at ``size``; return the rows and whether every check passed."""
    values = numpy.random.default_rng(seed).standard_normal(size, dtype=numpy.float32)
    rows: List[Dict[str, Any]] = []
    ok = True

    # reference, and the parameters every path must agree on
    scale, zero_point, _ = reference_calibrate(values)
    expected_q = reference_quant(values, scale, zero_point)
    expected_f32 = reference_dequant(expected_q, scale, zero_point, numpy.float32)
    expected_f64 = reference_dequant(expected_q, scale, zero_point, numpy.float64)
    options = QuantizationOptions(N_BITS)
    quantizer = UniformQuantizer(options, params=UniformQuantizationParameters(scale, zero_point, 0))

    # rooflines: copying the row's input into a preallocated array of its dtype
    copy_time = {}
    for name, source in (("float32", values), ("int64", expected_q)):
        target = numpy.empty_like(source)
        copy_time[name] = median_time(lambda s=source, t=target: numpy.copyto(t, s), repeats)
        rows.append(_row(size=size, operation=f"copyto {name}", path="roofline", median_s=copy_time[name],
                         gb_per_s=2 * source.nbytes / copy_time[name] / 1e9, x_copy=1.0))
        del target

    def calibrate() -> UniformQuantizationParameters:
        stats = MinMaxQuantizationStats()
        stats.compute_quantization_stats(values, with_uvalues=False)
        params = UniformQuantizationParameters()
        params.compute_quantization_parameters(options, stats)
        return params

    def calibrate_quant() -> Any:
        params = calibrate()
        return UniformQuantizer(options, params=params).quant(values)

    n = size
    preallocated = numpy.empty(n, dtype=numpy.uint8)
    # (operation, qarray call, reference call, input roofline, bytes moved, output bytes, check)
    Operation = Tuple[str, Callable[[], Any], Callable[[], Any], str, int, Optional[int], Callable[[Any], bool]]
    operations: List[Operation] = [
        ("calibrate", calibrate, lambda: reference_calibrate(values), "float32", 4 * n, None,
         lambda p: float(p.scale) == scale and int(p.zero_point) == zero_point),
        ("quant -> uint8", lambda: quantizer.quant(values, dtype=numpy.uint8), None, "float32", 5 * n, n,
         lambda q: q.dtype == numpy.uint8 and numpy.array_equal(q, expected_q)),
        ("quant -> uint8 out=", lambda: quantizer.quant(values, dtype=numpy.uint8, out=preallocated), None,
         "float32", 5 * n, 0, lambda q: q is preallocated and numpy.array_equal(q, expected_q)),
        ("quant -> int64", lambda: quantizer.quant(values), lambda: reference_quant(values, scale, zero_point),
         "float32", 12 * n, 8 * n, lambda q: q.dtype == numpy.int64 and numpy.array_equal(q, expected_q)),
        ("dequant -> float32", lambda: quantizer.dequant(expected_q, dtype=numpy.float32),
         lambda: reference_dequant(expected_q, scale, zero_point, numpy.float32), "int64", 12 * n, 4 * n,
         lambda v: v.dtype == numpy.float32 and v.tobytes() == expected_f32.tobytes()),
        ("dequant -> float64", lambda: quantizer.dequant(expected_q),
         lambda: reference_dequant(expected_q, scale, zero_point, numpy.float64), "int64", 16 * n, 8 * n,
         lambda v: v.dtype == numpy.float64 and v.tobytes() == expected_f64.tobytes()),
        ("calibrate + quant", calibrate_quant,
         lambda: reference_quant(values, *reference_calibrate(values)[:2]), "float32", 12 * n, 8 * n,
         lambda q: numpy.array_equal(q, expected_q)),
        ("QuantizedArray", lambda: QuantizedArray(N_BITS, values),
         lambda: reference_quantized_array(values), "float32", 16 * n, 12 * n,
         lambda qa: numpy.array_equal(qa.qvalues, expected_q)),
    ]

    reference_time: Dict[str, float] = {}
    for operation, _, reference_call, roofline, moved, _, _ in operations:
        if reference_call is None:
            continue
        seconds = median_time(reference_call, repeats)
        reference_time[operation] = seconds
        rows.append(_row(size=size, operation=operation, path="reference", median_s=seconds,
                         gb_per_s=moved / seconds / 1e9, x_copy=seconds / copy_time[roofline],
                         speedup_vs_reference=1.0, peak_extra_mb=peak_extra_memory(reference_call) / MB))
    reference_time["quant -> uint8"] = reference_time["quant -> int64"]  # Concrete ML returns int64
    reference_time["quant -> uint8 out="] = reference_time["quant -> int64"]

    competitor_time: Dict[str, float] = {}
    for name, factory in (("torch.quantize_per_tensor", torch_quantizer),
                          ("onnxruntime QuantizeLinear", onnxruntime_quantizer)):
        run = factory(scale, zero_point)
        if run is None:
            rows.append(_row(size=size, operation="quant -> uint8", path=name, check="not installed"))
            continue
        seconds = median_time(lambda run=run: run(values), repeats)
        competitor_time[name] = seconds
        result = run(values)
        integers = result.int_repr().numpy() if hasattr(result, "int_repr") else numpy.asarray(result)
        mismatches = int(numpy.count_nonzero(integers.astype(numpy.int64) != expected_q))
        rows.append(_row(size=size, operation="quant -> uint8", path=name, median_s=seconds,
                         gb_per_s=5 * n / seconds / 1e9, x_copy=seconds / copy_time["float32"],
                         speedup_vs_reference=reference_time["quant -> uint8"] / seconds,
                         check=f"{mismatches} differ"))

    for path in paths:
        with Path(path):
            for operation, call, _, roofline, moved, output_bytes, check in operations:
                seconds = median_time(call, repeats)
                peak = peak_extra_memory(call) / MB
                passed = bool(check(call()))
                ok &= passed
                row = _row(size=size, operation=operation, path=path, median_s=seconds,
                           gb_per_s=moved / seconds / 1e9, x_copy=seconds / copy_time[roofline],
                           speedup_vs_reference=reference_time[operation] / seconds,
                           peak_extra_mb=peak, check="equal" if passed else "DIFFERENT")
                if operation.startswith("quant"):
                    row["memory_limit_mb"] = 1.1 * output_bytes / MB + 16
                if operation.startswith("quant -> uint8"):
                    for name, key in (("torch.quantize_per_tensor", "speedup_vs_torch"),
                                      ("onnxruntime QuantizeLinear", "speedup_vs_onnxruntime")):
                        if name in competitor_time:
                            row[key] = competitor_time[name] / seconds
                rows.append(row)
    return rows, ok


# -- reporting -------------------------------------------------------------------------------------


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    header = ("| size | operation | path | median ms | GB/s | x copy | vs ref | vs torch | vs ORT "
              "| peak MB | limit MB | check |")
    lines = [header, "|" + "---|" * 12]
    for row in rows:
        lines.append(
            f"| {row['size']:.0e} | {row['operation']} | {row['path']} "
            f"| {_fmt(None if row['median_s'] is None else row['median_s'] * 1e3, '.2f')} "
            f"| {_fmt(row['gb_per_s'], '.1f')} | {_fmt(row['x_copy'], '.2f')} "
            f"| {_fmt(row['speedup_vs_reference'], '.1f')} | {_fmt(row['speedup_vs_torch'], '.2f')} "
            f"| {_fmt(row['speedup_vs_onnxruntime'], '.2f')} | {_fmt(row['peak_extra_mb'], '.1f')} "
            f"| {_fmt(row['memory_limit_mb'], '.1f')} | {row['check'] or ''} |"
        )
    return "\n".join(lines)


def evaluate_targets(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Check the performance targets at 1e7 and larger; one line per target."""
    lines = []
    for row in rows:
        if row["size"] < 10**7 or row["path"] not in ("numpy", "numba"):
            continue
        if row["operation"] in ("quant -> uint8", "quant -> uint8 out=", "quant -> int64", "calibrate + quant"):
            goal = 3.0 if row["path"] == "numpy" else 15.0
            got = row["speedup_vs_reference"]
            lines.append(f"{row['size']:.0e} {row['path']} {row['operation']}: {got:.1f}x vs reference "
                         f"(target >= {goal:g}x: {'met' if got >= goal else 'MISSED'})")
        if row["path"] == "numba" and row["operation"].startswith("quant -> uint8"):
            for key, name in (("speedup_vs_torch", "torch"), ("speedup_vs_onnxruntime", "onnxruntime")):
                if row[key] is not None:
                    lines.append(f"{row['size']:.0e} numba {row['operation']}: {row[key]:.2f}x vs {name} "
                                 f"(target > 1: {'met' if row[key] > 1 else 'MISSED'})")
        if row["memory_limit_mb"] is not None:
            fits = row["peak_extra_mb"] <= row["memory_limit_mb"]
            lines.append(f"{row['size']:.0e} {row['path']} {row['operation']}: peak {row['peak_extra_mb']:.1f} MB "
                         f"(limit {row['memory_limit_mb']:.1f} MB: {'met' if fits else 'MISSED'})")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; print the table; return 1 if a qarray result differed from the reference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7, 1e8],
                        help="numbers of values (default: 1e6 1e7 1e8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row, after one warm-up (default 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the machine as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    sizes = [int(size) for size in args.sizes]
    if any(size < 1 for size in sizes):
        parser.error("--sizes must be >= 1")

    paths = ["numba", "numpy"] if importlib.util.find_spec("numba") is not None else ["numpy"]
    info = machine_info(("numba", "torch", "onnxruntime"))
    print("machine: " + ", ".join(f"{key} {value}" for key, value in info.items()), flush=True)
    rows: List[Dict[str, Any]] = []
    ok = True
    for size in sizes:
        size_rows, size_ok = run_size(size, args.repeats, paths, args.seed)
        rows.extend(size_rows)
        ok &= size_ok
        print(f"size {size:.0e} done", file=sys.stderr, flush=True)
    print(format_table(rows))
    targets = evaluate_targets(rows)
    if targets:
        print("\ntargets:")
        print("\n".join(targets))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"machine": info, "repeats": args.repeats, "rows": rows, "targets": targets,
                       "all_equal": ok}, handle, indent=2)
    if not ok:
        print("\nFAILED: a qarray result differs from the reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
