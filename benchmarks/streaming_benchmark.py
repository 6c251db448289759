"""Streaming Dask batches into the statistics: the cost of an update, early and late in a stream.

Each statistics path gets ``--batches`` small seeded Dask batches (``8 x 4`` float64
values in two chunks) one ``update`` at a time; nothing is computed until the end.
The table gives, per path, the time of the first ``--window`` updates, of the
``--window`` updates after ``--late`` batches, their ratio (1 when an update costs the
same however many batches came before; it grows with the stream when every update
merges the whole graph so far), the ratio of the two windows' median update times
(blind to the rare update that combines a level of the pending tree or meets a
garbage collection of the growing graph), and the time of the one read at the end,
which computes the whole stream. Each number is the median over ``--repeats`` streams.

Paths:
    minmax         MinMaxQuantizationStats.update(batch)
    minmax axis=0  MinMaxQuantizationStats.update(batch, axis=0) (a lazy grid of 4 ranges)
    histogram      HistogramQuantizationStats.update(batch)

Usage:
    python benchmarks/streaming_benchmark.py [--batches 1900] [--late 1700] [--window 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy
from _machine import machine_info

SEED = 0

PATHS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "minmax": ("MinMaxQuantizationStats", {}),
    "minmax axis=0": ("MinMaxQuantizationStats", {"axis": 0}),
    "histogram": ("HistogramQuantizationStats", {}),
}


def make_batches(count: int) -> List[Any]:
    """``count`` seeded Dask batches of 8 x 4 float64 values in two chunks."""
    import dask.array

    rng = numpy.random.default_rng(SEED)
    return [dask.array.from_array(rng.standard_normal((8, 4)), chunks=(4, 4)) for _ in range(count)]


def stream(path: str, batches: List[Any], late: int, window: int) -> Tuple[float, float, float, float]:
    """Stream ``batches`` into new statistics; return (first window, late window, median
    ratio, read): the windows' and the read's seconds, the late over the first median update."""
    import qarray

    class_name, keywords = PATHS[path]
    stats = getattr(qarray, class_name)()
    update: Callable[..., None] = stats.update
    times = []
    for batch in batches:
        start = time.perf_counter()
        update(batch, **keywords)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    numpy.asarray(stats.rmin)  # the one read: computes the whole stream
    read = time.perf_counter() - start
    first, later = times[:window], times[late : late + window]
    return sum(first), sum(later), statistics.median(later) / statistics.median(first), read


def format_table(rows: List[Tuple[str, float, float, float, float]], late: int, window: int) -> str:
    """The table: path, first window, late window, their ratio, the median ratio, read."""
    first_title, late_title = f"first {window} (s)", f"{window} after {late} (s)"
    header = f"{'path':<14} {first_title:>15} {late_title:>20} {'ratio':>6} {'median ratio':>13} {'read (s)':>9}"
    lines = [header, "-" * len(header)]
    for path, first, later, median_ratio, read in rows:
        lines.append(
            f"{path:<14} {first:>15.3f} {later:>20.3f} {later / first:>6.2f} {median_ratio:>13.2f} {read:>9.2f}"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=1900, help="batches per stream")
    parser.add_argument("--late", type=int, default=1700, help="batches before the late window")
    parser.add_argument("--window", type=int, default=200, help="updates per timed window")
    parser.add_argument("--repeats", type=int, default=3, help="streams per path (medians are shown)")
    args = parser.parse_args(argv)
    if args.late + args.window > args.batches or min(args.late, args.window, args.repeats) < 1:
        parser.error("need 1 <= --window, 1 <= --late, --late + --window <= --batches and 1 <= --repeats")
    info = machine_info(["dask"])
    print("machine: " + ", ".join(f"{key} {value}" for key, value in info.items()), flush=True)
    batches = make_batches(args.batches)
    rows = []
    for path in PATHS:
        runs = [stream(path, batches, args.late, args.window) for _ in range(args.repeats)]
        rows.append((path, *(statistics.median(run[column] for run in runs) for column in range(4))))
    print(format_table(rows, args.late, args.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
