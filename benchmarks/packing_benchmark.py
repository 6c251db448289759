"""Sub-byte packing on NumPy/Numba: qarray.pack and qarray.unpack against a uint8 copy.

For each size and width: int8 values in the signed range of ``n_bits`` bits (seeded),
packed with ``qarray.pack(q, n_bits)`` and unpacked with ``qarray.unpack(packed, n_bits,
length, signed=True)``: the public calls, argument checks, allocation of the result and
the range check included. The reference is ``numpy.copyto`` of a uint8 array of ``q``'s
size into an existing one, timed in the same runs (interleaved, so that the load of a
shared machine weighs on all alike). Bandwidth is bytes read plus bytes written per
second, for the copy too: a copy of ``N`` bytes moves ``2 N``, packing ``N`` values moves
``N + N * n_bits / 8``, and so does unpacking. The table shows the median of the runs.

Usage:
    python benchmarks/packing_benchmark.py [--sizes 1e7 1e8] [--bits 4 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import numpy
from _machine import machine_info

import qarray
from qarray.backends import numba_kernels

SEED = 0


def make_values(size: int, n_bits: int) -> numpy.ndarray:
    """Seeded int8 values in ``[-2**(n_bits-1), 2**(n_bits-1) - 1]``."""
    rng = numpy.random.default_rng(SEED)
    return rng.integers(-(1 << (n_bits - 1)), 1 << (n_bits - 1), size, dtype=numpy.int8)


def seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(size: int, n_bits: int, repeats: int) -> Dict[str, float]:
    """Median seconds of the copy, pack and unpack of ``size`` values, interleaved run by run."""
    q = make_values(size, n_bits)
    source = q.view(numpy.uint8)
    target = numpy.empty_like(source)
    numpy.copyto(target, source)  # the copy's target exists and is paged in, as a copy's would be
    packed = qarray.pack(q, n_bits)  # compiles the kernels (once per process, or from the disk cache)
    if not numpy.array_equal(qarray.unpack(packed, n_bits, size, signed=True), q):
        raise RuntimeError("unpack(pack(q)) is not q")
    times: Dict[str, List[float]] = {"copy": [], "pack": [], "unpack": []}
    for _ in range(repeats):
        times["copy"].append(seconds(lambda: numpy.copyto(target, source)))
        times["pack"].append(seconds(lambda: qarray.pack(q, n_bits)))
        times["unpack"].append(seconds(lambda: qarray.unpack(packed, n_bits, size, signed=True)))
    return {name: statistics.median(runs) for name, runs in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e7, 1e8], help="values per array")
    parser.add_argument("--bits", nargs="+", type=int, default=[4, 2], choices=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each (the median is shown)")
    args = parser.parse_args()
    info = machine_info(("numba",))
    info["compiled kernels"] = numba_kernels.available()
    print(", ".join(f"{key} {value}" for key, value in info.items()))
    print()
    print("| values | n_bits | operation | median time | bandwidth (read + written) | of a uint8 copy's |")
    print("|---|---|---|---|---|---|")
    for size in (int(size) for size in args.sizes):
        for n_bits in args.bits:
            median = measure(size, n_bits, args.repeats)
            moved = {"copy": 2 * size, "pack": size + size * n_bits / 8, "unpack": size + size * n_bits / 8}
            copy_rate = moved["copy"] / median["copy"]
            for name in ("copy", "pack", "unpack"):
                rate = moved[name] / median[name]
                label = "uint8 copy" if name == "copy" else name
                print(
                    f"| {size:.0e} | {n_bits} | {label} | {median[name] * 1e3:.2f} ms | {rate / 1e9:.1f} GB/s "
                    f"| {rate / copy_rate:.0%} |"
                )


if __name__ == "__main__":
    main()
