"""Histogram calibration: qarray against ONNX Runtime's collector and PyTorch's HistogramObserver.

Same data (float32 Student-t with 2 degrees of freedom, seeded), same run. For each
tool and size: the median time of one calibration pass over the data in 10 batches
(histogram updates only; ranges are computed afterwards), the peak memory that pass
adds on top of the data, the ranges each finds, and the same ranges after feeding the
same values in 37 batches in reverse order: a range that moves depends on the
batching. Each (tool, size) runs in its own process, so peak memory is that tool's.

Tools:
    qarray  HistogramQuantizationStats.update (min/max + fused bin-and-count per batch)
    ort     onnxruntime.quantization.calibrate.HistogramCollector (collect_value, 2048 bins,
            as its percentile/entropy calibraters collect), percentile 99.99 and entropy
    torch   torch.ao.quantization.HistogramObserver (CPU, 2048 bins), its L2 search range
    minmax  a min/max pass over the same batches (qarray's one-read min/max kernel): reading the
            data once, the least a histogram update can take; the table says how many of these
            passes qarray's update costs

ONNX Runtime (with onnx) and PyTorch are needed for their rows only, not by qarray:
    pip install onnxruntime onnx torch

Usage:
    python benchmarks/histogram_benchmark.py [--sizes 1e7 1e8] [--repeats 3] [--tools qarray ort minmax]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Tuple

import numpy
from _machine import machine_info, peak_bytes, reset_peak, rss_bytes

SEED = 0
BATCHES_A = 10
BATCHES_B = 37


def make_data(size: int) -> numpy.ndarray:
    """Seeded float32 Student-t(2) values, made in chunks so generating them stays small."""
    rng = numpy.random.default_rng(SEED)
    data = numpy.empty(size, dtype=numpy.float32)
    step = 1 << 22
    for start in range(0, size, step):
        stop = min(size, start + step)
        data[start:stop] = rng.standard_t(2, size=stop - start)
    return data


def batching_a(data: numpy.ndarray) -> List[numpy.ndarray]:
    return numpy.array_split(data, BATCHES_A)


def batching_b(data: numpy.ndarray) -> List[numpy.ndarray]:
    return numpy.array_split(data, BATCHES_B)[::-1]


# -- the tools -------------------------------------------------------------------------------------


def run_qarray(batches: List[numpy.ndarray]) -> Any:
    import qarray

    stats = qarray.HistogramQuantizationStats()
    for batch in batches:
        stats.update(batch)
    return stats


def ranges_qarray(stats: Any) -> Dict[str, Tuple[float, float]]:
    return {
        "percentile 99.99": stats.range("percentile", percentile=99.99),
        "entropy 8 bits": stats.range("entropy", n_bits=8),
        "mse 8 bits": stats.range("mse", n_bits=8),
    }


def run_ort(batches: List[numpy.ndarray]) -> Any:
    from onnxruntime.quantization.calibrate import HistogramCollector

    collector = HistogramCollector(
        method="percentile", symmetric=False, num_bins=2048, num_quantized_bins=128, percentile=99.99, scenario="same"
    )
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per call
        for batch in batches:
            collector.collect({"x": batch})
    return collector


def ranges_ort(collector: Any) -> Dict[str, Tuple[float, float]]:
    with contextlib.redirect_stdout(io.StringIO()):
        collector.method = "percentile"
        percentile = collector.compute_collection_result()["x"]
        collector.method = "entropy"
        entropy = collector.compute_collection_result()["x"]
    return {
        "percentile 99.99": (float(percentile[0]), float(percentile[1])),
        "entropy 8 bits": (float(entropy[0]), float(entropy[1])),
    }


def run_torch(batches: List[numpy.ndarray]) -> Any:
    import torch
    from torch.ao.quantization import HistogramObserver

    torch.set_num_threads(os.cpu_count() or 1)
    observer = HistogramObserver(bins=2048)
    for batch in batches:
        observer(torch.from_numpy(batch))
    return observer


def ranges_torch(observer: Any) -> Dict[str, Tuple[float, float]]:
    low, high = observer._non_linear_param_search()
    return {"L2 search 8 bits": (float(low), float(high))}


def run_minmax(batches: List[numpy.ndarray]) -> Any:
    from qarray.backends import get_backend

    backend = get_backend("numpy")
    low, high = numpy.inf, -numpy.inf
    for batch in batches:
        batch_low, batch_high = backend.minmax(batch)
        low, high = min(low, float(batch_low)), max(high, float(batch_high))
    return low, high


def ranges_minmax(found: Any) -> Dict[str, Tuple[float, float]]:
    return {"min/max": found}


TOOLS = {
    "qarray": (run_qarray, ranges_qarray),
    "ort": (run_ort, ranges_ort),
    "torch": (run_torch, ranges_torch),
    "minmax": (run_minmax, ranges_minmax),
}


def warm_up(tool: str) -> None:
    """Compile / import once on small data, so the timed passes measure the steady state."""
    run, ranges = TOOLS[tool]
    sample = make_data(1 << 20)  # batches large enough for the compiled kernels
    ranges(run(batching_a(sample)))


def child(tool: str, size: int, repeats: int) -> Dict[str, Any]:
    """One tool on one size, in this process: times, peak memory, ranges for both batchings."""
    run, ranges = TOOLS[tool]
    warm_up(tool)
    data = make_data(size)
    reset_peak()
    base = rss_bytes()
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run(batching_a(data))
        times.append(time.perf_counter() - start)
    peak = peak_bytes()
    ranges_a = ranges(result)
    del result
    ranges_b = ranges(run(batching_b(data)))
    return {
        "tool": tool,
        "size": size,
        "seconds": statistics.median(times),
        "extra_peak_bytes": max(0, peak - base),
        "ranges_a": ranges_a,
        "ranges_b": ranges_b,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e7, 1e8])
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed passes per tool (the median is shown; at most 3 above 1e7 values)"
    )
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=list(TOOLS))
    parser.add_argument("--child", nargs=3, metavar=("TOOL", "SIZE", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), int(args.child[2]))))
        return
    info = machine_info(("numba", "torch", "onnxruntime", "onnx"))
    print(", ".join(f"{key} {value}" for key, value in info.items()))
    results = []
    for size in (int(size) for size in args.sizes):
        repeats = args.repeats if size <= 10**7 else min(args.repeats, 3)
        for tool in args.tools:
            output = subprocess.run(
                [sys.executable, __file__, "--child", tool, str(size), str(repeats)],
                capture_output=True, text=True, check=True,
            ).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
            print(f"  done: {tool} on {size:.0e} values", file=sys.stderr)
    print()
    print(
        "| values | tool | update pass (median) | qarray is faster by | extra peak memory "
        "| range(s), 10 batches | same after 37 reversed batches? |"
    )
    print("|---|---|---|---|---|---|---|")
    for result in results:
        mine = next(r for r in results if r["size"] == result["size"] and r["tool"] == "qarray")
        ratio = result["seconds"] / mine["seconds"]
        ranges = "; ".join(f"{name} [{low:.4g}, {high:.4g}]" for name, (low, high) in result["ranges_a"].items())
        moved = [
            name for name in result["ranges_a"] if tuple(result["ranges_a"][name]) != tuple(result["ranges_b"][name])
        ]
        same = "yes" if not moved else "no: " + "; ".join(
            f"{name} -> [{result['ranges_b'][name][0]:.4g}, {result['ranges_b'][name][1]:.4g}]" for name in moved
        )
        print(
            f"| {result['size']:.0e} | {result['tool']} | {result['seconds'] * 1e3:.0f} ms | "
            f"{_ratio(result['tool'], ratio)} | "
            f"{result['extra_peak_bytes'] / 2**20:.0f} MiB | {ranges} | {same} |"
        )


def _ratio(tool: str, ratio: float) -> str:
    if tool == "qarray":
        return "-"
    if tool == "minmax":
        return f"(qarray takes {1 / ratio:.1f} min/max passes)"
    return f"{ratio:.1f}x"


if __name__ == "__main__":
    main()
