"""GPU benchmark: qarray's fused CuPy kernels against naive CuPy code and PyTorch.

For float32 arrays of 2^24, 2^27 and 2^29 elements (sizes that do not fit the
GPU's free memory are skipped) it times these operations:

- ``quant_int8``: quantization to int8 (signed 8-bit, clipped);
- ``dequant_float32``: de-quantization of those int8 values to float32;
- ``calibration``: the calibration statistics (qarray: min and max in one fused pass);
- ``calibration_quant``: calibration, parameters and quantization together;
- ``quant_int8_group128`` / ``dequant_float32_group128``: the same with one scale and
  zero point per group of 128 consecutive values (the array seen as rows of 4096
  values, ``block_size=128``: per-block parameters, the grid kernels). Quant to int8
  includes the small read of the offset grid that checks the blocks' clip ranges
  against the dtype;
- ``histogram_update``: ``HistogramQuantizationStats.update`` of the whole array on
  the GPU (min/max, re-binning plan and the fused bin-and-count pass; no read-back).

Each is timed with CUDA events (median of the repeats, after warm-up runs) and
reported as effective bandwidth: the bytes a single pass must read and write
(for example 4 + 1 bytes per element for quant to int8), divided by the time,
and as a fraction of a device-to-device copy's bandwidth measured in the same
run. Side by side:

- ``qarray``: the public API on CuPy arrays (``check_finite=False`` for the bare
  kernel; ``qarray_checked`` with the default check and its one read-back), one call
  timed alone (the host's per-call work counted in full); ``qarray_x10``: ten calls
  queued back to back, the time divided by ten (the host's work overlapped with the
  GPU's, as in a loop over batches);
- ``naive``: the same formulas as plain CuPy array operations, as Concrete ML's
  NumPy code runs on a CuPy array (``rint(x / scale + zero_point)``, ``clip``,
  ``astype(int64)``; calibration with ``min``, ``max`` and
  ``unique(round(x, 2))``);
- ``torch``: ``torch.quantize_per_tensor`` / ``dequantize`` / ``aminmax`` on
  CUDA, when PyTorch is importable (float32 arithmetic: timing only).

qarray's integers are checked against a float64 CuPy computation of the
specification (and its float32 results and min/max likewise); the process
exits with 1 when a check fails, 2 when no GPU is usable.

``--dry-run`` needs no GPU: it runs the per-group and histogram set-up and their
checks on small NumPy arrays (the same functions the GPU run uses), times nothing, and
exits with 1 when a check fails.

Usage::

    python benchmarks/gpu_benchmark.py [--quick] [--json results.json] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy

BYTES_PER_ELEMENT_NEEDED = 64
"""Device memory per float32 element the whole run may hold at once (naive temporaries included)."""


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=None,
        help="sizes as powers of two (default 24 27 29; with --quick 24 27)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 10; --quick 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing (default 2)")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--device", type=int, default=0, help="CUDA device id (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="no GPU: run the per-group and histogram set-up and checks on small NumPy arrays",
    )
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [24, 27] if args.quick else [24, 27, 29]
    if args.repeats is None:
        args.repeats = 5 if args.quick else 10
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if any(not 1 <= size <= 34 for size in args.sizes):
        parser.error("--sizes must be powers of two between 1 and 34")
    return args


def _write_json(path: Optional[str], document: Dict[str, Any]) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=False)
            handle.write("\n")


class Timer:
    """Median time of a callable with CUDA events of one library (CuPy or PyTorch)."""

    def __init__(self, cupy: Any, torch: Any, repeats: int, warmup: int) -> None:
        self.cupy = cupy
        self.torch = torch
        self.repeats = repeats
        self.warmup = warmup

    def __call__(self, function: Callable[[], Any], library: str = "cupy", calls: int = 1) -> float:
        """Return the median seconds of one call of ``function`` (results are dropped).

        With ``calls`` > 1, each timed run queues that many calls back to back and the time
        is divided by ``calls``: the host's per-call work then overlaps the GPU's, as in a
        loop over batches. With 1, it is counted in full.
        """
        for _ in range(self.warmup):
            function()
        self._synchronize(library)
        times = []
        for _ in range(self.repeats):
            if library == "torch":
                start = self.torch.cuda.Event(enable_timing=True)
                end = self.torch.cuda.Event(enable_timing=True)
            else:
                start, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
            start.record()
            for _ in range(calls):
                function()
            end.record()
            end.synchronize()
            if library == "torch":
                milliseconds = start.elapsed_time(end)
            else:
                milliseconds = self.cupy.cuda.get_elapsed_time(start, end)
            times.append(milliseconds / 1e3 / calls)
        return statistics.median(times)

    def _synchronize(self, library: str) -> None:
        if library == "torch":
            self.torch.cuda.synchronize()
        self.cupy.cuda.get_current_stream().synchronize()


def _import_torch(enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        import torch  # imported here: optional
    except Exception:
        return None
    try:
        return torch if torch.cuda.is_available() else None
    except Exception:
        return None


def _naive_parameters(rmin: float, rmax: float, n_bits: int, offset: int):
    """Concrete ML's asymmetric rule on host numbers (for the naive calibration path)."""
    scale = (rmax - rmin) / (2**n_bits - 1)
    zero_point = int(numpy.round((rmax * -offset - rmin * (2**n_bits - 1 - offset)) / (rmax - rmin)))
    return numpy.float64(scale), zero_point


STREAM = 10
"""Calls queued back to back in the ``qarray_x10`` rows (the host's per-call work overlapped)."""

GROUP = 128
"""Values per group of the per-group (per-block) rows."""

GROUP_COLUMNS = 4096
"""The per-group rows see the values as rows of this many values (fewer for tiny sizes)."""

GROUP_REQUIRED_CHECKS = (
    "group128_quant_equals_float64_reference",
    "group128_dequant_equals_float64_reference",
    "histogram_update_equals_minmax_and_count",
)
"""The checks of the per-group and histogram rows that must pass."""


def _group_matrix(x: Any) -> Any:
    """The 1-d ``x`` as a C-order matrix of rows of ``GROUP_COLUMNS`` values (a view)."""
    return x.reshape(-1, min(GROUP_COLUMNS, int(x.shape[0])))


def _group_quantizer(matrix: Any, options: Any) -> Any:
    """A quantizer with one parameter set per group of ``GROUP`` values along the rows of ``matrix``."""
    from qarray import MinMaxQuantizationStats, UniformQuantizationParameters, UniformQuantizer

    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats(matrix, with_uvalues=False, block_size=GROUP)
    params = UniformQuantizationParameters()
    params.compute_quantization_parameters(options, stats)
    return UniformQuantizer(options, stats, params)


def _per_value(xp: Any, grid: Any, columns: int) -> Any:
    """A ``(rows, groups)`` parameter grid repeated over the ``(rows, columns)`` values."""
    return xp.repeat(grid, GROUP, axis=1)[:, :columns]


def _group_reference_quant(xp: Any, matrix: Any, quantizer: Any) -> Any:
    """The specification in float64, value by value: ``clip(rint(x / scale + zero_point))`` (int64)."""
    columns = int(matrix.shape[1])
    scale = _per_value(xp, xp.asarray(quantizer.scale, dtype=xp.float64), columns)
    zero = _per_value(xp, xp.asarray(quantizer.zero_point, dtype=xp.float64), columns)
    low, high = (_per_value(xp, xp.asarray(bound, dtype=xp.float64), columns) for bound in quantizer.clip_range())
    return xp.clip(xp.rint(matrix.astype(xp.float64) / scale + zero), low, high).astype(xp.int64)


def _group_reference_dequant(xp: Any, qvalues: Any, quantizer: Any) -> Any:
    """``scale * (q - zero_point)`` in float64, value by value, rounded once to float32."""
    columns = int(qvalues.shape[1])
    scale = _per_value(xp, xp.asarray(quantizer.scale, dtype=xp.float64), columns)
    zero = _per_value(xp, xp.asarray(quantizer.zero_point, dtype=xp.float64), columns)
    return (scale * (qvalues.astype(xp.float64) - zero)).astype(xp.float32)


def _group_naive_quant(xp: Any, matrix: Any, scale: Any, zero: Any, low: Any, high: Any) -> Any:
    """Per-group quant as plain array code: the rows cut into groups, parameters broadcast."""
    rows, columns = (int(n) for n in matrix.shape)
    groups = -(-columns // GROUP)
    blocks = matrix.reshape(rows, groups, -1)  # sizes are powers of two: groups divide the rows
    rounded = xp.rint(blocks / scale[:, :, None] + zero[:, :, None])
    return xp.clip(rounded, low[:, :, None], high[:, :, None]).astype(xp.int8).reshape(rows, columns)


def _histogram_checks(xp: Any, x: Any, stats: Any, host_histogram: Any) -> bool:
    """The device histogram's min, max and total against the data (and the host histogram when given)."""
    hist = stats.histogram
    ok = bool(
        hist is not None
        and float(hist.vmin) == float(xp.min(x))
        and float(hist.vmax) == float(xp.max(x))
        and int(hist.total) == int(x.size)
    )
    if ok and host_histogram is not None:
        ok = (hist.k, hist.j_lo, hist.vmin, hist.vmax) == (
            host_histogram.k, host_histogram.j_lo, host_histogram.vmin, host_histogram.vmax
        ) and numpy.array_equal(numpy.asarray(hist.counts), numpy.asarray(host_histogram.counts))
    return ok


def _dry_run(args: argparse.Namespace) -> int:
    """The per-group and histogram set-up and checks on NumPy (no GPU, no timing)."""
    from qarray import HistogramQuantizationStats, QuantizationOptions
    from qarray.calibration.histogram import histogram

    document: Dict[str, Any] = {"python": platform.python_version(), "dry_run": True, "sizes": []}
    options = QuantizationOptions(8, is_signed=True, block_size=GROUP)
    for exponent in (5, 12, 14):
        x = numpy.random.default_rng(args.seed + exponent).standard_normal(1 << exponent).astype(numpy.float32)
        matrix = _group_matrix(x)
        quantizer = _group_quantizer(matrix, options)
        q8 = quantizer.quant(matrix, dtype=numpy.int8, check_finite=False)
        low, high = quantizer.clip_range()
        naive = _group_naive_quant(numpy, matrix, quantizer.scale, quantizer.zero_point, low, high)
        restored = quantizer.dequant(q8, dtype=numpy.float32)
        stats = HistogramQuantizationStats()
        stats.update(x)
        checks = {
            "group128_quant_equals_float64_reference": bool(
                numpy.array_equal(q8.astype(numpy.int64), _group_reference_quant(numpy, matrix, quantizer))
            ),
            "group128_quant_equals_naive": bool(numpy.array_equal(q8, naive)),
            "group128_dequant_equals_float64_reference": bool(
                numpy.array_equal(
                    restored.view(numpy.uint32), _group_reference_dequant(numpy, q8, quantizer).view(numpy.uint32)
                )
            ),
            "histogram_update_equals_minmax_and_count": _histogram_checks(
                numpy, x, stats, histogram(x, stats.max_bins)
            ),
        }
        summary = ", ".join(f"{name}={value}" for name, value in checks.items())
        print(f"dry run 2^{exponent}: grid {tuple(quantizer.scale.shape)}; {summary}")
        document["sizes"].append({"exponent": exponent, "checks": checks})
    required = GROUP_REQUIRED_CHECKS + ("group128_quant_equals_naive",)
    passed = all(size["checks"][name] for size in document["sizes"] for name in required)
    document["all_checks_passed"] = passed
    _write_json(args.json, document)
    print(f"dry run checks: {'all passed' if passed else 'FAILED'}")
    return 0 if passed else 1


def _bench_size(exponent: int, args: argparse.Namespace, cupy: Any, torch: Any, timer: Timer) -> Dict[str, Any]:
    import qarray
    from qarray import (
        HistogramQuantizationStats,
        MinMaxQuantizationStats,
        QuantizationOptions,
        UniformQuantizationParameters,
        UniformQuantizer,
    )
    from qarray.backends import get_backend

    count = 1 << exponent
    backend = get_backend("cupy")
    x = cupy.random.RandomState(args.seed + exponent).standard_normal(size=count, dtype=cupy.float32)
    options = QuantizationOptions(8, is_signed=True)
    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats(x, with_uvalues=False)
    params = UniformQuantizationParameters()
    params.compute_quantization_parameters(options, stats)
    quantizer = UniformQuantizer(options, stats, params)
    scale, zero_point = numpy.float64(quantizer.scale), int(quantizer.zero_point)
    low, high = quantizer.clip_range()
    n_bits, offset = options.n_bits, int(quantizer.offset)

    rows: List[Dict[str, Any]] = []
    checks: Dict[str, Any] = {}

    def record(op: str, impl: str, seconds: float, nbytes: int) -> None:
        rows.append(
            {"op": op, "impl": impl, "median_ms": seconds * 1e3, "bytes": nbytes, "gbps": nbytes / seconds / 1e9}
        )

    def release() -> None:
        cupy.get_default_memory_pool().free_all_blocks()
        if torch is not None:
            torch.cuda.empty_cache()

    # -- the copy that sets the scale: read 4 bytes, write 4 bytes per element ---------------
    target = cupy.empty_like(x)
    copy_seconds = timer(lambda: cupy.copyto(target, x))
    copy_gbps = 8 * count / copy_seconds / 1e9
    release()

    # -- quant to int8 ---------------------------------------------------------------------------
    q8 = quantizer.quant(x, dtype=cupy.int8, check_finite=False)
    reference = cupy.clip(cupy.rint(x.astype(cupy.float64) / scale + zero_point), low, high).astype(cupy.int64)
    checks["quant_int8_equals_float64_reference"] = bool(cupy.array_equal(q8.astype(cupy.int64), reference))
    literal = cupy.clip(cupy.rint(x / scale + zero_point), low, high).astype(cupy.int64)
    checks["naive_literal_dtype"] = str((x / scale).dtype)
    checks["quant_int8_equals_naive_literal"] = bool(cupy.array_equal(q8.astype(cupy.int64), literal))
    del reference, literal
    release()
    record("quant_int8", "qarray", timer(lambda: quantizer.quant(x, dtype=cupy.int8, check_finite=False)), 5 * count)
    record(
        "quant_int8", f"qarray_x{STREAM}",
        timer(lambda: quantizer.quant(x, dtype=cupy.int8, check_finite=False), calls=STREAM), 5 * count,
    )
    record("quant_int8", "qarray_checked", timer(lambda: quantizer.quant(x, dtype=cupy.int8)), 5 * count)
    record(
        "quant_int8", "naive",
        timer(lambda: cupy.clip(cupy.rint(x / scale + zero_point), low, high).astype(cupy.int64)),
        5 * count,
    )
    release()
    tensor = qtensor = None
    if torch is not None:
        tensor = torch.from_dlpack(x)
        record(
            "quant_int8", "torch",
            timer(lambda: torch.quantize_per_tensor(tensor, float(scale), zero_point, torch.qint8), "torch"),
            5 * count,
        )
        qtensor = torch.quantize_per_tensor(tensor, float(scale), zero_point, torch.qint8)
        release()

    # -- dequant to float32 ----------------------------------------------------------------------
    restored = quantizer.dequant(q8, dtype=cupy.float32)
    expected = (scale * (q8.astype(cupy.float64) - numpy.float64(zero_point))).astype(cupy.float32)
    checks["dequant_float32_equals_float64_reference"] = bool(
        cupy.array_equal(restored.view(cupy.uint32), expected.view(cupy.uint32))
    )
    del restored, expected
    release()
    record("dequant_float32", "qarray", timer(lambda: quantizer.dequant(q8, dtype=cupy.float32)), 5 * count)
    record(
        "dequant_float32", f"qarray_x{STREAM}",
        timer(lambda: quantizer.dequant(q8, dtype=cupy.float32), calls=STREAM), 5 * count,
    )
    record(
        "dequant_float32", "naive",
        timer(lambda: (scale * (q8.astype(cupy.float64) - numpy.float64(zero_point))).astype(cupy.float32)),
        5 * count,
    )
    release()
    if qtensor is not None:
        record("dequant_float32", "torch", timer(lambda: qtensor.dequantize(), "torch"), 5 * count)
        release()

    # -- calibration -----------------------------------------------------------------------------
    rmin, rmax = backend.minmax(x)
    checks["minmax_equals_cupy"] = bool(float(rmin) == float(x.min()) and float(rmax) == float(x.max()))
    record("calibration", "qarray", timer(lambda: backend.minmax(x)), 4 * count)
    record("calibration", f"qarray_x{STREAM}", timer(lambda: backend.minmax(x), calls=STREAM), 4 * count)
    record("calibration", "naive_minmax", timer(lambda: (x.min(), x.max())), 4 * count)
    record(
        "calibration", "naive",
        timer(lambda: (x.min(), x.max(), cupy.unique(cupy.round(x, 2)))),
        4 * count,
    )
    release()
    if tensor is not None:
        record("calibration", "torch", timer(lambda: torch.aminmax(tensor), "torch"), 4 * count)
        release()

    # -- calibration + parameters + quant ----------------------------------------------------------
    def qarray_pipeline() -> Any:
        calibrated = MinMaxQuantizationStats()
        calibrated.compute_quantization_stats(x, with_uvalues=False)
        chosen = UniformQuantizationParameters()
        chosen.compute_quantization_parameters(options, calibrated)
        return UniformQuantizer(options, calibrated, chosen).quant(x, dtype=cupy.int8)

    def naive_pipeline() -> Any:
        rmin_, rmax_ = float(x.min()), float(x.max())  # Concrete ML reads the range to the host
        cupy.unique(cupy.round(x, 2))
        scale_, zero_point_ = _naive_parameters(rmin_, rmax_, n_bits, offset)
        return cupy.clip(cupy.rint(x / scale_ + zero_point_), low, high).astype(cupy.int64)

    checks["pipeline_equals_quant"] = bool(cupy.array_equal(qarray_pipeline(), q8))
    record("calibration_quant", "qarray", timer(qarray_pipeline), 9 * count)
    record("calibration_quant", "naive", timer(naive_pipeline), 9 * count)
    release()
    if tensor is not None:

        def torch_pipeline() -> Any:
            low_, high_ = torch.aminmax(tensor)
            scale_, zero_point_ = _naive_parameters(float(low_), float(high_), n_bits, offset)
            return torch.quantize_per_tensor(tensor, float(scale_), zero_point_, torch.qint8)

        record("calibration_quant", "torch", timer(torch_pipeline, "torch"), 9 * count)
        release()

    # -- per group of 128: quant to int8 and dequant to float32 with per-block parameters -------
    matrix = _group_matrix(x)
    group_options = QuantizationOptions(8, is_signed=True, block_size=GROUP)
    grouped = _group_quantizer(matrix, group_options)
    group_low, group_high = grouped.clip_range()
    checks["group128_grid"] = list(grouped.scale.shape)
    checks["group128_parameters_on_device"] = all(
        isinstance(p, cupy.ndarray) and p.device.id == x.device.id
        for p in (grouped.scale, grouped.zero_point, group_low, group_high)
    )
    g8 = grouped.quant(matrix, dtype=cupy.int8, check_finite=False)
    checks["group128_quant_equals_float64_reference"] = bool(
        cupy.array_equal(g8.astype(cupy.int64), _group_reference_quant(cupy, matrix, grouped))
    )
    naive_scale, naive_zero = grouped.scale, grouped.zero_point.astype(cupy.float64)
    checks["group128_quant_equals_naive"] = bool(
        cupy.array_equal(g8, _group_naive_quant(cupy, matrix, naive_scale, naive_zero, group_low, group_high))
    )
    g_restored = grouped.dequant(g8, dtype=cupy.float32)
    checks["group128_dequant_equals_float64_reference"] = bool(
        cupy.array_equal(g_restored.view(cupy.uint32), _group_reference_dequant(cupy, g8, grouped).view(cupy.uint32))
    )
    del g_restored
    release()
    record(
        "quant_int8_group128", "qarray",
        timer(lambda: grouped.quant(matrix, dtype=cupy.int8, check_finite=False)),
        5 * count,
    )
    record(
        "quant_int8_group128", f"qarray_x{STREAM}",
        timer(lambda: grouped.quant(matrix, dtype=cupy.int8, check_finite=False), calls=STREAM), 5 * count,
    )
    record("quant_int8_group128", "qarray_checked", timer(lambda: grouped.quant(matrix, dtype=cupy.int8)), 5 * count)
    record(
        "quant_int8_group128", "naive",
        timer(lambda: _group_naive_quant(cupy, matrix, naive_scale, naive_zero, group_low, group_high)),
        5 * count,
    )
    release()
    if tensor is not None:
        try:
            blocks = tensor.reshape(-1, min(GROUP, count))
            torch_scales = torch.from_dlpack(cupy.ascontiguousarray(grouped.scale.reshape(-1)))
            torch_zeros = torch.from_dlpack(cupy.ascontiguousarray(grouped.zero_point.reshape(-1).astype(cupy.int64)))
            record(
                "quant_int8_group128", "torch_per_channel",
                timer(lambda: torch.quantize_per_channel(blocks, torch_scales, torch_zeros, 0, torch.qint8), "torch"),
                5 * count,
            )
        except Exception as error:  # timing only: an older PyTorch may refuse the layout
            checks["group128_torch_error"] = f"{type(error).__name__}: {error}"
        release()
    record("dequant_float32_group128", "qarray", timer(lambda: grouped.dequant(g8, dtype=cupy.float32)), 5 * count)
    record(
        "dequant_float32_group128", f"qarray_x{STREAM}",
        timer(lambda: grouped.dequant(g8, dtype=cupy.float32), calls=STREAM), 5 * count,
    )
    record(
        "dequant_float32_group128", "naive",
        timer(lambda: _group_reference_dequant(cupy, g8, grouped)),
        5 * count,
    )
    release()

    # -- histogram calibration: HistogramQuantizationStats.update on the GPU ----------------------
    hist_stats = HistogramQuantizationStats()
    hist_stats.update(x)
    host_histogram = None
    if count <= 1 << 24:  # the host histogram of a host copy: exact, but slow for the largest sizes
        from qarray.calibration.histogram import histogram

        host_histogram = histogram(cupy.asnumpy(x), hist_stats.max_bins)
    checks["histogram_update_equals_minmax_and_count"] = _histogram_checks(cupy, x, hist_stats, host_histogram)
    checks["histogram_update_compared_with_host_histogram"] = host_histogram is not None
    running = HistogramQuantizationStats()
    record("histogram_update", "qarray", timer(lambda: running.update(x)), 4 * count)
    record("histogram_update", f"qarray_x{STREAM}", timer(lambda: running.update(x), calls=STREAM), 4 * count)
    updates = 2 * args.warmup + args.repeats * (1 + STREAM)
    checks["histogram_update_repeated_total"] = int(running.count) == updates * count
    if host_histogram is not None:  # every repeated update after the first counted by the scan alone
        repeated = running.histogram
        checks["histogram_update_repeated_equals_host"] = repeated is not None and bool(
            (repeated.k, repeated.j_lo) == (host_histogram.k, host_histogram.j_lo)
            and numpy.array_equal(numpy.asarray(repeated.counts), updates * numpy.asarray(host_histogram.counts))
        )
    record(
        "histogram_update", "naive_cupy_histogram",
        timer(lambda: cupy.histogram(x, bins=hist_stats.max_bins)),
        4 * count,
    )
    release()
    if tensor is not None:
        record(
            "histogram_update", "torch_histc",
            timer(lambda: torch.histc(tensor, bins=hist_stats.max_bins), "torch"),
            4 * count,
        )
        release()

    for row in rows:
        row["vs_copy"] = row["gbps"] / copy_gbps
    return {
        "exponent": exponent,
        "elements": count,
        "scale": float(scale),
        "zero_point": zero_point,
        "qarray_version": qarray.__version__,
        "copy_gbps": copy_gbps,
        "results": rows,
        "checks": checks,
    }


def _print_size(result: Dict[str, Any]) -> None:
    print(
        f"\n2^{result['exponent']} = {result['elements']:,} float32 values; "
        f"device-to-device copy: {result['copy_gbps']:.0f} GB/s (read + write)"
    )
    print(f"{'operation':<24} {'implementation':<20} {'median ms':>10} {'GB/s':>8} {'vs copy':>8}")
    for row in result["results"]:
        print(
            f"{row['op']:<24} {row['impl']:<20} {row['median_ms']:>10.3f} "
            f"{row['gbps']:>8.1f} {row['vs_copy']:>8.2f}"
        )
    for name, value in result["checks"].items():
        print(f"  check {name}: {value}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; return the process exit status (0 ok, 1 a check failed, 2 no GPU)."""
    args = _parse(argv)
    if args.dry_run:
        return _dry_run(args)
    document: Dict[str, Any] = {"python": platform.python_version(), "sizes": [], "skipped_sizes": []}
    try:
        import cupy  # imported here: the benchmark needs it, qarray does not

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA GPU is visible")
    except Exception as error:
        reason = f"CuPy with a CUDA GPU is needed: {error}"
        print(f"skipped: {reason}")
        document["skipped"] = reason
        _write_json(args.json, document)
        return 2
    torch = _import_torch(not args.no_torch)
    with cupy.cuda.Device(args.device):
        if torch is not None:
            torch.cuda.set_device(args.device)
        properties = cupy.cuda.runtime.getDeviceProperties(args.device)
        name = properties.get("name", b"?")
        document.update(
            device=name.decode() if isinstance(name, bytes) else str(name),
            cupy=cupy.__version__,
            torch=None if torch is None else torch.__version__,
            repeats=args.repeats,
            warmup=args.warmup,
        )
        print(f"qarray GPU benchmark on {document['device']} (CuPy {cupy.__version__}, "
              f"PyTorch {document['torch'] or 'not used'}); median of {args.repeats} runs")
        timer = Timer(cupy, torch, args.repeats, args.warmup)
        for exponent in args.sizes:
            free, _total = cupy.cuda.runtime.memGetInfo()
            needed = (1 << exponent) * BYTES_PER_ELEMENT_NEEDED
            if needed > free:
                print(f"\n2^{exponent}: skipped, needs about {needed / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
                document["skipped_sizes"].append({"exponent": exponent, "needed_bytes": needed, "free_bytes": free})
                continue
            result = _bench_size(exponent, args, cupy, torch, timer)
            cupy.get_default_memory_pool().free_all_blocks()  # this size's arrays are gone now
            if torch is not None:
                torch.cuda.empty_cache()
            _print_size(result)
            document["sizes"].append(result)
    required = ("quant_int8_equals_float64_reference", "dequant_float32_equals_float64_reference",
                "minmax_equals_cupy", "pipeline_equals_quant", *GROUP_REQUIRED_CHECKS,
                "group128_parameters_on_device")
    passed = all(size["checks"][name] for size in document["sizes"] for name in required) and all(
        size["checks"].get("histogram_update_repeated_equals_host", True) for size in document["sizes"]
    )
    document["all_checks_passed"] = passed
    _write_json(args.json, document)
    print(f"\nchecks: {'all passed' if passed else 'FAILED'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
