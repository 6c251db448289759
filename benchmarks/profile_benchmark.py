"""The runtime profiles against the runtimes they reproduce: qarray's ``profile="onnx"`` next to
ONNX Runtime's ``QuantizeLinear``, ``profile="torch"`` next to torchao's ``quantize_affine``.

The data is the seeded float32 weight-like matrix of ``granularity_benchmark.py``
(``(rows, 4096)``, rows of log-normal spreads), unsigned 8 and 4 bits, per tensor and
group-128. For each profile qarray calibrates once (``qarray.calibrate(..., profile=)``);
every tool then quantizes the same data with those float32 scales and zero points:

    qarray numba       ``quantizer.quant(w, dtype=uint8)`` (a new array)
    qarray numba out=  the same into a preallocated uint8 array
    onnxruntime        a one-node ``QuantizeLinear`` model (opset 21; blocked with
                       ``axis=1, block_size=128``), I/O binding, output in ORT's memory
                       (uint4 is packed two to a byte there)
    torchao            ``quantize_affine`` with ``block_size`` (rows, cols) or (1, 128)

Each row gives the median wall time per call over ``--repeats`` interleaved runs after a
warm-up (a run is a burst of back-to-back calls on :data:`BURST_VALUES` values),
the throughput, the ratios to the runtime of the profile (its time / the row's time), and
the number of integers that differ from the profile's exact rule computed here in NumPy
(``clip(rint(float32(x) / scale) + zero_point)`` for onnx, ``clip(rint(float32(x) *
float32(1 / scale)) + zero_point)`` for torch). Every row must be exact, the runtimes'
included (that is what the profiles promise); the script exits with status 1 otherwise.
A row "uint8 cast (memory floor)" times a plain float32-to-uint8 cast on qarray's threads:
reading the values and writing one byte each, no arithmetic, the least any of these tools
can take on this machine.

Targets (the issue's): onnx per tensor into ``out=`` >= 1.1x ONNX Runtime; onnx group-128
>= 1.0x ONNX Runtime's blocked QuantizeLinear; torch >= 10x torchao.

Usage:
    python benchmarks/profile_benchmark.py                      # 1e7 1e8, 8 and 4 bits, 11 repeats
    python benchmarks/profile_benchmark.py --sizes 1e7 --bits 8 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy
from _machine import machine_info
from granularity_benchmark import (
    Case,
    _fmt,
    _import_torchao,
    count_differences,
    make_weights,
    onnxruntime_available,
    onnxruntime_tool,
    torchao_available,
    torchao_tool,
)

from qarray.backends import numba_kernels

PEERS = {"onnx": "onnxruntime", "torch": "torchao"}
SHOWN = ("per-tensor", "group-128")
BURST_VALUES = 5 * 10**7
"""Each timing runs a tool back to back on at least this many values (5 calls at 1e7, 1 at
1e8) and divides: a single call of a few milliseconds is at the mercy of the tool timed
before it (thread pools that spin after their work, OpenMP's under torch, take the cores
for a while) and of the other jobs of a shared machine."""


class ProfileCase(Case):
    """One (profile, bits, granularity): qarray's profile quantizer and its parameters as grids."""

    def reference(self, weights: numpy.ndarray) -> numpy.ndarray:
        """The profile's integers computed plainly in NumPy float32, a few rows at a time."""
        rows, cols = weights.shape
        out = numpy.empty(weights.shape, dtype=numpy.uint8)
        step = max(1, (1 << 21) // cols)
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            scale = self.expanded(self.scale_grid, start, stop, cols).astype(numpy.float32)
            zero = self.expanded(self.zero_grid, start, stop, cols).astype(numpy.float32)
            x = weights[start:stop].astype(numpy.float32)
            q = numpy.rint(x / scale) if self.profile == "onnx" else numpy.rint(x * (numpy.float32(1.0) / scale))
            out[start:stop] = numpy.clip(q + zero, 0, 2**self.n_bits - 1)
        return out


def qarray_tools(case: ProfileCase, weights: numpy.ndarray, out: numpy.ndarray) -> Dict[str, Tuple[Callable, Callable]]:
    quantizer = case.quantizer

    def fresh() -> Any:
        return quantizer.quant(weights, dtype=numpy.uint8)

    def into() -> Any:
        return quantizer.quant(weights, dtype=numpy.uint8, out=out)

    return {"qarray numba": (fresh, fresh), "qarray numba out=": (into, into)}


def cast_floor(weights: numpy.ndarray, out: numpy.ndarray) -> Callable[[], Any]:
    """The memory floor of any quantizer here: read the float32 values and write one byte each
    (a plain cast, no arithmetic), on the same threads as qarray's kernels."""
    from qarray.backends import _parallel

    flat, target = weights.reshape(-1), out.reshape(-1)
    if numba_kernels.available():
        import numba

        cast = numba.njit(nogil=True)(_cast_loop)
    else:
        def cast(source: numpy.ndarray, result: numpy.ndarray) -> None:
            numpy.copyto(result, source, casting="unsafe")

    def run() -> None:
        _parallel.run(flat.size, lambda start, stop: cast(flat[start:stop], target[start:stop]))

    return run


def _cast_loop(source: Any, target: Any) -> None:
    for i in range(numpy.uint64(source.size)):
        target[i] = numpy.uint8(numpy.int32(source[i]))


def run_size(size: int, bits: Sequence[int], repeats: int, seed: int, skipped: Dict[str, str]) -> Tuple[List, bool]:
    weights = make_weights(size, seed)
    n = weights.size
    out = numpy.ones(weights.shape, dtype=numpy.uint8)
    rows: List[Dict[str, Any]] = []
    ok = True
    floor = cast_floor(weights, out)
    floor()
    floor_times = []
    for n_bits in bits:
        entries = [{"case": None, "profile": "-", "granularity": "-", "tool": "uint8 cast (memory floor)",
                    "run": floor, "integers": None, "times": floor_times}] if n_bits == bits[0] else []
        for profile, peer in PEERS.items():
            for granularity in SHOWN:
                case = ProfileCase(weights, n_bits, granularity, profile=profile)
                tools = qarray_tools(case, weights, out)
                if peer not in skipped:
                    factory = onnxruntime_tool if peer == "onnxruntime" else torchao_tool
                    tools[peer] = factory(case, weights)
                for name, (run, integers) in tools.items():
                    run()  # warm-up: compilation, session set-up
                    entries.append({"case": case, "profile": profile, "granularity": granularity, "tool": name,
                                    "run": run, "integers": integers, "times": []})
        burst = max(1, BURST_VALUES // n)
        for _ in range(repeats):
            for entry in entries:
                start = time.perf_counter()
                for _ in range(burst):
                    entry["run"]()
                entry["times"].append((time.perf_counter() - start) / burst)
        for entry in entries:
            if entry["case"] is None:
                seconds = statistics.median(entry["times"])
                rows.append({"values": n, "bits": n_bits, "profile": "-", "granularity": "-", "tool": entry["tool"],
                             "median_s": seconds, "gvalues_per_s": n / seconds / 1e9, "vs_runtime": None,
                             "differ": None})
                continue
            differ = count_differences(entry["integers"](), entry["case"].reference(weights))
            ok &= differ == 0
            seconds = statistics.median(entry["times"])
            rows.append({"values": n, "bits": n_bits, "profile": entry["profile"], "granularity": entry["granularity"],
                         "tool": entry["tool"], "median_s": seconds, "gvalues_per_s": n / seconds / 1e9,
                         "vs_runtime": None, "differ": differ})
        print(f"  done: {size:.0e} values, {n_bits} bits", file=sys.stderr, flush=True)
    for row in rows:
        peer = next((r for r in rows if r["bits"] == row["bits"] and r["profile"] == row["profile"]
                     and r["granularity"] == row["granularity"] and r["tool"] == PEERS.get(row["profile"])), None)
        if peer is not None and row["tool"].startswith("qarray"):
            row["vs_runtime"] = peer["median_s"] / row["median_s"]
    return rows, ok


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    lines = ["| values | bits | profile | granularity | tool | median ms | Gvalues/s | vs its runtime | integers |",
             "|" + "---|" * 9]
    for row in rows:
        lines.append(
            f"| {row['values']:.0e} | {row['bits']} | {row['profile']} | {row['granularity']} | {row['tool']} "
            f"| {row['median_s'] * 1e3:.2f} | {row['gvalues_per_s']:.2f} | {_fmt(row['vs_runtime'], '.2f')} "
            f"| {_integers(row['differ'])} |"
        )
    return "\n".join(lines)


def _integers(differ: Optional[int]) -> str:
    return "-" if differ is None else "exact" if differ == 0 else f"{differ} differ"


def evaluate_targets(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The issue's targets, row by row."""
    lines = []
    for row in rows:
        target: Optional[float] = None
        if row["profile"] == "onnx" and row["tool"] == "qarray numba out=":
            target = 1.1 if row["granularity"] == "per-tensor" else 1.0
        elif row["profile"] == "torch" and row["tool"] == "qarray numba out=":
            target = 10.0
        if target is None or row["vs_runtime"] is None:
            continue
        met = "met" if row["vs_runtime"] >= target else "MISSED"
        lines.append(f"{row['values']:.0e} {row['bits']}-bit {row['profile']} {row['granularity']}: "
                     f"{row['vs_runtime']:.2f}x {PEERS[row['profile']]} (target >= {target}: {met})")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; print the table and the targets; return 1 if any row is not exact."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e7, 1e8])
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4], choices=[8, 4])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1 or any(size < 1 for size in args.sizes):
        parser.error("--repeats and --sizes must be >= 1")
    skipped = {name: why for name, why in (("torchao", torchao_available()),
                                           ("onnxruntime", onnxruntime_available())) if why}
    info = machine_info(("numba", "torch", "torchao", "onnxruntime", "onnx"), {"torchao": _import_torchao})
    print("machine: " + ", ".join(f"{key} {value}" for key, value in info.items()), flush=True)
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", flush=True)
    if not numba_kernels.available():
        print("note: Numba is not installed or disabled; the qarray rows time the NumPy path", flush=True)
    rows: List[Dict[str, Any]] = []
    ok = True
    for size in args.sizes:
        size_rows, size_ok = run_size(int(size), args.bits, args.repeats, args.seed, skipped)
        rows += size_rows
        ok &= size_ok
    print(format_table(rows))
    print("\ntargets:\n" + "\n".join(evaluate_targets(rows)))
    if not ok:
        print("\nFAILED: a row differs from its profile's exact integers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

