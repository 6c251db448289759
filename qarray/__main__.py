"""The main job: ``python -m qarray`` quantizes a real array and prints what it did.

It draws a few million normally distributed float32 values on the best
available backend (CuPy when a CUDA GPU is visible, else NumPy), quantizes them
at several bit widths, and prints the scale, the zero point, the largest
round-trip error against its bound (scale / 2) and the throughput.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, List, NoReturn, Optional, Sequence

import numpy

from . import MAX_N_BITS, QuantizedArray, __version__
from .backends import available_backends, get_backend

__all__ = ["main"]


def _best_backend(requested: Optional[str]) -> Any:
    if requested:
        return get_backend(requested)
    return get_backend("cupy" if "cupy" in available_backends() else "numpy")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _size(text: str) -> int:
    """Parse a number of values: an integer, also written as ``4e6`` or ``4_000_000``."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of values such as 4e6, got {text!r}") from None
    if not number.is_integer() or not 1 <= number <= 2**62:
        raise argparse.ArgumentTypeError(f"must be a whole number of values >= 1, got {text!r}")
    return int(number)


def _bits(text: str) -> int:
    """Parse a bit width between 1 and MAX_N_BITS."""
    try:
        n_bits = int(text)
    except ValueError:
        n_bits = 0
    if not 1 <= n_bits <= MAX_N_BITS:
        raise argparse.ArgumentTypeError(f"bit widths must be integers between 1 and {MAX_N_BITS}, got {text!r}")
    return n_bits


def _seed(text: str) -> int:
    """Parse a random seed: a non-negative integer."""
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return seed


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; return the process exit status.

    Wrong arguments (an unknown or unusable backend included) print one line to
    stderr and exit with status 2 (``SystemExit``).
    """
    parser = _Parser(prog="python -m qarray", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=_size, default=4_000_000, help="number of values, e.g. 1e5 (default 4e6)")
    parser.add_argument("--bits", type=_bits, nargs="+", default=[2, 4, 8, 16], help="bit widths (default 2 4 8 16)")
    parser.add_argument("--backend", default=None, help="backend name (default: cupy if a GPU is visible, else numpy)")
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)

    try:
        backend = _best_backend(args.backend)
    except (ImportError, ValueError, RuntimeError) as error:
        parser.error(f"argument --backend: {error}")
    host = numpy.random.default_rng(args.seed).standard_normal(args.size, dtype=numpy.float32)
    values = backend.asarray(host)
    print(f"qarray {__version__}: {args.size:,} float32 values from N(0, 1) on backend '{backend.name}'")
    print(
        f"{'bits':>4} {'scale':>12} {'zero_point':>10} {'max |error|':>12} {'scale/2':>12} {'ok':>3} "
        f"{'quantize':>10} {'Mvalues/s':>10}"
    )
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
        xp = backend.xp
        max_error = float(backend.to_numpy(xp.max(xp.abs(restored - xp.astype(values, xp.float64)))))
        scale, zero_point, _ = quantizer._require_params()
        bound = float(scale) / 2
        ok = max_error <= bound * (1 + 1e-12)
        rows.append(ok)
        print(
            f"{n_bits:>4} {float(scale):>12.6g} {int(zero_point):>10} {max_error:>12.6g} "
            f"{bound:>12.6g} {'yes' if ok else 'NO':>3} {elapsed * 1e3:>8.1f}ms {args.size / elapsed / 1e6:>10.1f}"
        )
    print("quantize = calibration (min/max) + parameters + quantization to int64, copy of the input included")
    return 0 if all(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
