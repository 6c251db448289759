"""``python -m qarray quantize-onnx in.onnx out.onnx``: quantize the weights of an ONNX model.

Every large enough float weight of a MatMul, Gemm or Conv becomes integers, a scale and a
zero point, and a ``DequantizeLinear`` node (:func:`qarray.onnx.quantize_weights`, the
``"onnx"`` profile); the command draws a progress bar while it works, then prints the
model's size before and after and one row per weight: its shape, granularity, bytes
before and after, and its largest round-trip error against the bound (half a scale).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, List, NoReturn, Optional, Sequence

__all__ = ["main"]

EXTERNAL_DATA_BYTES = 1 << 30
"""Models whose quantized initializers exceed this are written with external data (a
protocol buffer cannot exceed 2 GiB)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive(text: str) -> int:
    """Parse an integer >= 1."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return number


def _parser() -> _Parser:
    parser = _Parser(prog="python -m qarray quantize-onnx", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("input", help="the ONNX model to read (its external data, if any, beside it)")
    parser.add_argument("output", help="the ONNX model to write")
    parser.add_argument("--bits", type=int, default=8, choices=[4, 8, 16], help="bit width (default 8)")
    granularity = parser.add_mutually_exclusive_group()
    granularity.add_argument("--block-size", type=_positive, default=None,
                             help="one scale per this many weights along the blocked axis (default: per tensor)")
    granularity.add_argument("--axis", type=int, default=None, help="one scale per slice along this axis")
    parser.add_argument("--unsigned", action="store_true", help="unsigned integers (default signed)")
    parser.add_argument("--asymmetric", action="store_true", help="asymmetric range (default symmetric)")
    parser.add_argument("--min-size", type=_positive, default=1024,
                        help="quantize weights of at least this many values (default 1024)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; return the process exit status (2 with one line on stderr for bad arguments)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not os.path.isfile(args.input):
        parser.error(f"argument input: no such file: {args.input!r}")
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        parser.error("argument output: must differ from the input (the input is never changed)")
    try:
        from . import onnx as qonnx
    except ImportError as error:
        parser.error(str(error))
    progress, close = _progress(args.no_progress)
    try:
        model, reports = qonnx.quantize_weights_report(
            args.input, n_bits=args.bits, axis=args.axis, block_size=args.block_size,
            is_signed=not args.unsigned, is_symmetric=not args.asymmetric, min_size=args.min_size,
            progress=progress,
        )
    except (ValueError, TypeError) as error:
        close()
        parser.error(str(error))
    close()
    _save(model, args.output)
    before = _model_bytes(args.input)
    after = _model_bytes(args.output)
    print(_table(reports))
    weights = "1 weight" if len(reports) == 1 else f"{len(reports)} weights"
    print(f"{weights} quantized to {args.bits} bits; model {_mib(before)} -> {_mib(after)} "
          f"({after / max(1, before):.1%} of its size)")
    return 0 if all(report.max_abs_error <= report.error_bound for report in reports) else 1


def _progress(disabled: bool) -> Any:
    """A ``progress(done, total, name)`` callback drawing a bar on stderr, and its closer."""
    if disabled:
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:  # no bar without tqdm: one line per weight instead
        def line(done: int, total: int, name: str) -> None:
            print(f"[{done}/{total}] {name}", file=sys.stderr, flush=True)
        return line, lambda: None
    bar: List[Any] = []

    def update(done: int, total: int, name: str) -> None:
        if not bar:
            bar.append(tqdm(total=total, unit="weight", file=sys.stderr))
        bar[0].set_postfix_str(name[-40:], refresh=False)
        bar[0].update(done - bar[0].n)

    def close() -> None:
        if bar:
            bar[0].close()

    return update, close


def _save(model: Any, path: str) -> None:
    """Write ``model``; beyond :data:`EXTERNAL_DATA_BYTES` of initializers, with external data beside it."""
    import onnx

    size = sum(len(tensor.raw_data) for tensor in model.graph.initializer)
    if size > EXTERNAL_DATA_BYTES:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data")
    else:
        onnx.save_model(model, path)


def _model_bytes(path: str) -> int:
    """The bytes of a model file and of the external data files it names."""
    import onnx

    total = os.path.getsize(path)
    model = onnx.load_model(path, load_external_data=False)
    folder = os.path.dirname(os.path.abspath(path))
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return total + sum(os.path.getsize(os.path.join(folder, location)) for location in locations)


def _mib(count: int) -> str:
    return f"{count / 2**20:,.2f} MiB"


def _table(reports: Sequence[Any]) -> str:
    """One row per quantized weight."""
    header = (f"{'weight':<32} {'shape':<16} {'granularity':<24} {'float KiB':>10} {'quantized KiB':>13} "
              f"{'max |error|':>12} {'bound':>10} {'ok':>3}")
    rows: List[str] = [header]
    fmt: Callable[[float], str] = lambda value: f"{value:.4g}"  # noqa: E731
    for report in reports:
        ok = report.max_abs_error <= report.error_bound
        rows.append(
            f"{report.name[-32:]:<32} {'x'.join(map(str, report.shape)):<16} {report.granularity:<24} "
            f"{report.float_bytes / 1024:>10.1f} {report.quantized_bytes / 1024:>13.1f} "
            f"{fmt(report.max_abs_error):>12} {fmt(report.error_bound):>10} {'yes' if ok else 'NO':>3}"
        )
    return "\n".join(rows)
