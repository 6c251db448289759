"""The main job: ``python -m qarray`` quantizes a real array and prints what it did.

It draws a few million normally distributed float32 values on the best
available backend (CuPy when a CUDA GPU is visible, else NumPy), quantizes them
at several bit widths, and prints the scale, the zero point, the largest
round-trip error against its bound (scale / 2) and the throughput. The error and
its verdict are :func:`qarray.display.error_summary`'s, the rule every display uses.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, List, NoReturn, Optional, Sequence

import numpy

from . import MAX_N_BITS, QuantizedArray, __version__
from .backends import available_backends, get_backend
from .display import error_summary

__all__ = ["main"]


def _best_backend(requested: Optional[str]) -> Any:
    if requested:
        return get_backend(requested)
    return get_backend("cupy" if "cupy" in available_backends() else "numpy")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


BYTES_PER_VALUE = 80
"""Host memory the demo needs per value, at its peak: the float32 draw and its copies, the
int64 quantized values and the float64 arrays of the error summary (64 bytes measured
with NumPy, with a margin)."""

MAX_BYTES = 2**40
"""The most memory the demo asks for (1 TiB), also when the machine's is unknown."""


def _available_memory() -> Optional[int]:
    """Bytes of host memory available now (Linux ``MemAvailable``), else the physical
    memory, or None where neither can be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def _size(text: str) -> int:
    """Parse a number of values: an integer, also written as ``4e6`` or ``4_000_000``,
    that the machine's memory holds (see :data:`BYTES_PER_VALUE`)."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of values such as 4e6, got {text!r}") from None
    if not number.is_integer() or not 1 <= number <= 2**62:
        raise argparse.ArgumentTypeError(f"must be a whole number of values >= 1, got {text!r}")
    size = int(number)
    available = _available_memory()
    limit = MAX_BYTES if available is None else min(available, MAX_BYTES)
    if size * BYTES_PER_VALUE > limit:
        raise argparse.ArgumentTypeError(
            f"{text} values need about {_gib(size * BYTES_PER_VALUE)} of memory, more than the "
            f"{_gib(limit)} this machine has available; at most {limit // BYTES_PER_VALUE:,} values"
        )
    return size


def _gib(count: int) -> str:
    """A number of bytes in GiB, for messages."""
    return f"{count / 2**30:,.1f} GiB"


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
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["quantize-onnx"]:
        from .cli_onnx import main as quantize_onnx

        return quantize_onnx(arguments[1:])
    parser = _Parser(
        prog="python -m qarray",
        description=__doc__.splitlines()[0],
        epilog="python -m qarray quantize-onnx --help: quantize the weights of an ONNX model",
    )
    parser.add_argument("--size", type=_size, default=4_000_000, help="number of values, e.g. 1e5 (default 4e6)")
    parser.add_argument("--bits", type=_bits, nargs="+", default=[2, 4, 8, 16], help="bit widths (default 2 4 8 16)")
    parser.add_argument("--backend", default=None, help="backend name (default: cupy if a GPU is visible, else numpy)")
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    args = parser.parse_args(arguments)

    try:
        backend = _best_backend(args.backend)
    except (ImportError, ValueError, RuntimeError) as error:
        parser.error(f"argument --backend: {error}")
    try:
        return _run(args, backend)
    except MemoryError:  # the device's memory, or the host's taken meanwhile
        parser.error(f"argument --size: {args.size:,} values do not fit in the memory of backend '{backend.name}'")


def _run(args: argparse.Namespace, backend: Any) -> int:
    """Quantize the values at every width and print a row each; 0 if every error is within bound."""
    host = numpy.random.default_rng(args.seed).standard_normal(args.size, dtype=numpy.float32)
    values = backend.asarray(host)
    del host
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
        error = error_summary(qa)
        rows.append(bool(error["within_bound"]))
        scale, zero_point, _ = qa.quantizer._require_params()
        print(
            f"{n_bits:>4} {float(scale):>12.6g} {int(zero_point):>10} "
            f"{error['max_abs_error']:>12.6g} {error['bound']:>12.6g} {'yes' if rows[-1] else 'NO':>3} "
            f"{elapsed * 1e3:>8.1f}ms {args.size / elapsed / 1e6:>10.1f}"
        )
        del qa, error
    print("quantize = calibration (min/max) + parameters + quantization to int64, copy of the input included")
    return 0 if all(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
