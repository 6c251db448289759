"""The main job: ``python -m qarray`` quantizes a real array and prints what it did.

It draws a few million normally distributed float32 values on the best
available backend (CuPy when a CUDA GPU is visible, else NumPy), quantizes them
at several bit widths, and prints the scale, the zero point, the largest
round-trip error against its bound (scale / 2) and the throughput.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, List, Optional, Sequence

import numpy

from . import QuantizedArray, __version__
from .backends import available_backends, get_backend

__all__ = ["main"]


def _best_backend(requested: Optional[str]) -> Any:
    if requested:
        return get_backend(requested)
    return get_backend("cupy" if "cupy" in available_backends() else "numpy")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; return the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m qarray", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4_000_000, help="number of values (default 4e6)")
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 4, 8, 16], help="bit widths")
    parser.add_argument("--backend", default=None, help="backend name (default: cupy if a GPU is visible, else numpy)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error("--size must be >= 1")

    backend = _best_backend(args.backend)
    host = numpy.random.default_rng(args.seed).standard_normal(args.size, dtype=numpy.float32)
    values = backend.asarray(host)
    print(f"qarray {__version__}: {args.size:,} float32 values from N(0, 1) on backend '{backend.name}'")
    print(f"{'bits':>4} {'scale':>12} {'zero_point':>10} {'max |error|':>12} {'scale/2':>12} {'ok':>3} {'quantize':>10} {'Mvalues/s':>10}")
    QuantizedArray(8, values)  # warm-up: kernels compile (or load from cache), threads start
    backend.synchronize()
    rows: List[bool] = []
    for n_bits in args.bits:
        start = time.perf_counter()
        qa = QuantizedArray(n_bits, values)
        backend.synchronize()
        elapsed = time.perf_counter() - start
        quantizer = qa.quantizer
        restored = quantizer.dequant(qa.qvalues)
        error = float(backend.to_numpy(backend.xp.max(backend.xp.abs(restored - backend.xp.astype(values, backend.xp.float64)))))
        bound = float(quantizer.scale) / 2
        ok = error <= bound * (1 + 1e-12)
        rows.append(ok)
        print(
            f"{n_bits:>4} {float(quantizer.scale):>12.6g} {int(quantizer.zero_point):>10} {error:>12.6g} "
            f"{bound:>12.6g} {'yes' if ok else 'NO':>3} {elapsed * 1e3:>8.1f}ms {args.size / elapsed / 1e6:>10.1f}"
        )
    print("quantize = calibration (min/max) + parameters + quantization to int64, copy of the input included")
    return 0 if all(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
