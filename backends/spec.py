"""The kernel contract: one frozen description of a quantization, and the rules every backend shares.

A backend's ``quantize(values, spec, *, check_finite, out)`` and
``dequantize(qvalues, spec, *, dtype, out)`` take a :class:`QuantSpec`: the
scale and zero point (host numbers per tensor, or arrays of the parameter grid
with the block ``extent``), the bounds, whether to saturate to them or count
what falls outside, and the output dtype. This module also owns the check of an
``out=`` buffer, the check of a block extent (per-block min/max) and the row map of the
grid kernels; the dtype tables and the clipping range come from :mod:`qarray.core.dtypes`.

Example:
    >>> spec = QuantSpec.per_tensor(0.5, 128, (0, 255), "uint8")
    >>> spec.low, spec.high, spec.saturate
    (0, 255, True)
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy

from qarray.core.dtypes import INTEGER_RANGES, Parameter, exact_float_bounds
from qarray.core.namespace import check_output, to_numpy
from qarray.core.profiles import ARITHMETIC

ARITHMETICS = tuple(ARITHMETIC.values())
"""The arithmetics a :class:`QuantSpec` may ask for."""

__all__ = [
    "DeviceHistograms",
    "Kernels",
    "Problems",
    "QuantSpec",
    "WindowCounting",
    "check_extent",
    "check_out",
    "grid_layout",
]


@dataclasses.dataclass(frozen=True)
class Problems:
    """What a checked quantization counted, left on the values' device until read.

    Attributes:
        counts: a length-2 int64 array of the values' library and device:
            ``[non-finite inputs, rounded values outside [low, high]]`` (NaN counts as
            outside; each is 0 when not checked).
    """

    counts: Any

    def read(self) -> Tuple[int, int]:
        """Return ``(nonfinite, outside)`` as host ints: the one read-back of a quantization."""
        nonfinite, outside = (int(count) for count in to_numpy(self.counts))
        return nonfinite, outside


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """Everything a kernel needs to quantize or de-quantize, and nothing else.

    Attributes:
        scale: float64; a host float per tensor, else an array of the parameter grid.
        zero_point: integral; a host number per tensor, else a float64 array of the grid.
        low, high: inclusive bounds (host ints, or arrays of the grid): the clipping
            range when ``saturate``, else the range the rounded values must lie in.
        saturate: clip to ``[low, high]``; else count the rounded values outside it
            (None bounds: nothing to count). ``dequantize`` uses only the scale, the
            zero point and the extent.
        out_dtype: the integer dtype ``quantize`` writes.
        extent: the block extent along each axis when the parameters are a grid
            (see :func:`qarray.core.granularity.block_extent`), None per tensor.
        arithmetic: how the values are rounded (see :data:`qarray.core.profiles.ARITHMETIC`):
            ``"float64"`` ``rint(x / scale + zero_point)`` in float64 (the concrete
            profile); ``"float32_divide"`` ``rint(float32(x) / float32(scale)) +
            zero_point`` (ONNX Runtime); ``"float32_reciprocal"`` ``rint(float32(x) *
            (float32(1) / float32(scale))) + zero_point`` (torchao). With the two float32
            ones, ``scale`` holds float32 values and ``dequantize`` computes
            ``float32(q - zero_point) * float32(scale)`` in float32.
    """

    scale: Parameter
    zero_point: Parameter
    low: Parameter = None
    high: Parameter = None
    saturate: bool = False
    out_dtype: str = "int64"
    extent: Optional[Tuple[int, ...]] = None
    arithmetic: str = "float64"

    def __post_init__(self) -> None:
        if self.out_dtype not in INTEGER_RANGES:
            raise ValueError(f"out_dtype must be one of {sorted(INTEGER_RANGES)}, got {self.out_dtype!r}")
        if self.arithmetic not in ARITHMETICS:
            raise ValueError(f"arithmetic must be one of {', '.join(ARITHMETICS)}, got {self.arithmetic!r}")

    @classmethod
    def per_tensor(
        cls,
        scale: float,
        zero_point: float,
        clip: Optional[Tuple[Parameter, Parameter]],
        out_dtype: str,
        arithmetic: str = "float64",
    ) -> QuantSpec:
        """A per-tensor spec: saturate to ``clip``, or (``clip=None``) check the dtype's range.

        ``zero_point`` is a number, or an array that broadcasts against the values.
        """
        zero = float(zero_point) if numpy.ndim(zero_point) == 0 and not hasattr(zero_point, "device") else zero_point
        if clip is None:
            low, high = exact_float_bounds(out_dtype)
            return cls(float(scale), zero, low, high, False, out_dtype, arithmetic=arithmetic)
        return cls(float(scale), zero, clip[0], clip[1], True, out_dtype, arithmetic=arithmetic)

    @property
    def in_float32(self) -> bool:
        """True when the arithmetic is a runtime's float32 one (dequantization in float32 too)."""
        return self.arithmetic != "float64"

    @property
    def is_grid(self) -> bool:
        """True when the parameters are arrays of a parameter grid (per channel or per block)."""
        return self.extent is not None


def check_out(out: Any, *, shape: Tuple[int, ...], dtype: Any, library: str, owns: bool, device: Any = None,
              out_device: Any = None) -> None:
    """Check that ``out`` can take a result of ``shape`` and ``dtype``: the one ``out=`` check.

    Args:
        out: the caller's buffer.
        shape, dtype: the result's (``dtype`` as the library's dtype object).
        library: the input's library name, for the message.
        owns: whether ``out`` belongs to that library.
        device, out_device: the input's and the buffer's devices (compared when given).

    Raises:
        TypeError: if ``out`` is not an array of the input's library (or is of a kind no
            backend writes into, see :func:`qarray.core.namespace.check_output`).
        ValueError: if its shape, dtype or device differ, it is read-only, overlaps itself
            or requires grad.
    """
    check_output(out)
    if not owns:
        raise TypeError(f"out must be a {library} array like the input, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(
            f"out must have shape {tuple(shape)} and dtype {dtype}, "
            f"got shape {tuple(out.shape)} and dtype {out.dtype}"
        )
    if device is not None and out_device is not None and device != out_device:
        raise ValueError(f"out must be on the input's device {device}, got {out_device}")
    flags = getattr(out, "flags", None)
    if flags is not None and getattr(flags, "writeable", True) is False:
        raise ValueError("out must be a writeable array, got a read-only one")


def grid_layout(shape: Tuple[int, ...], extent: Optional[Tuple[int, ...]]) -> Tuple[numpy.ndarray, int, int, int]:
    """How the grid kernels see values of ``shape`` with blocks of ``extent``.

    The values are read as a C-order ``(n_rows, length)`` matrix (``length`` is the
    last axis): row ``r`` takes the parameters of grid row ``rows[r]`` (its leading
    indices divided by the block extent, raveled over the grid), and every run of
    ``group`` values along the last axis one grid column.

    Returns:
        ``(rows, n_rows, length, group)``, ``rows`` an int64 host array of ``n_rows``.

    Raises:
        ValueError: if ``extent`` is None (per-tensor parameters have no grid).

    Example:
        >>> rows, n_rows, length, group = grid_layout((4, 10), (2, 5))
        >>> rows.tolist(), n_rows, length, group
        ([0, 0, 1, 1], 4, 10, 5)
    """
    if extent is None:
        raise ValueError("extent must be the block extent of a parameter grid, got None (per-tensor parameters)")
    leading, leading_extent = tuple(shape[:-1]), tuple(extent[:-1])
    grid = tuple(-(-n // e) for n, e in zip(leading, leading_extent))
    if leading:
        indices = numpy.meshgrid(*(numpy.arange(n) // e for n, e in zip(leading, leading_extent)), indexing="ij")
        rows = numpy.ravel_multi_index(tuple(indices), grid).reshape(-1).astype(numpy.int64)
    else:
        rows = numpy.zeros(1, dtype=numpy.int64)
    return rows, int(rows.size), int(shape[-1]), int(extent[-1])


def check_extent(extent: Any, shape: Sequence[Any], argument: str = "values") -> Tuple[int, ...]:
    """Check a block ``extent`` for values of ``shape``; return it as a tuple of ints, each cut
    to its axis' length (at least 1), which gives the same blocks.

    ``extent[d]`` is how many consecutive indices along axis ``d`` one block spans (see
    :func:`qarray.core.granularity.block_extent`); the parameter grid has
    ``ceil(shape[d] / extent[d])`` entries along that axis. ``argument`` names the
    array of ``shape`` in the messages.

    Raises:
        TypeError: if ``extent`` is not a tuple (or list) of ints.
        ValueError: if it has not one entry per axis, an entry is < 1, or ``shape`` has
            unknown lengths (a Dask array with unknown chunk sizes).

    Example:
        >>> check_extent((2, 100), (4, 10))
        (2, 10)
    """
    if not isinstance(extent, (tuple, list)) or not all(
        isinstance(entry, numbers.Integral) and not isinstance(entry, (bool, numpy.bool_)) for entry in extent
    ):
        raise TypeError(f"extent must be a tuple of ints, one per axis of {argument}, got {extent!r}")
    entries = tuple(int(entry) for entry in extent)
    if len(entries) != len(shape):
        raise ValueError(
            f"extent must have one entry per axis of {argument} ({len(shape)}), got {len(entries)}: {extent!r}"
        )
    if any(entry < 1 for entry in entries):
        raise ValueError(f"extent entries must be ints >= 1, got {extent!r}")
    lengths = []
    for length in shape:
        if length is None or length != length:  # None or NaN: a lazy array's unknown length
            raise ValueError(
                f"{argument} must have a known shape to be cut into blocks, got shape {tuple(shape)} "
                "(compute the chunk sizes first)"
            )
        lengths.append(int(length))
    return tuple(min(entry, max(length, 1)) for entry, length in zip(entries, lengths))


class Kernels(Protocol):
    """The whole kernel contract: what every backend implements, keyword-only over a frozen spec.

    :class:`qarray.backends.ArrayAPIBackend` implements it for any Array API library and
    is the reference; NumPy/Numba, CuPy and Dask override what they fuse, with the same
    numbers bit for bit. The primitives call nothing else. Kernels report problems as
    counts (:class:`Problems`); the messages are the callers' (``qarray.core.messages``).
    A new backend is one module with a class that satisfies this protocol, and one
    ``register_backend`` line.
    """

    name: str
    xp: Any
    host_resident: bool
    defers_reads: bool

    def owns(self, array: Any) -> bool:
        """Whether ``array`` belongs to this backend's library."""

    def asarray(self, values: Any, device: Any = None) -> Any:
        """``values`` as an array of this library (copied only when needed)."""

    def to_numpy(self, array: Any) -> numpy.ndarray:
        """A host copy of ``array`` (the one named place data leaves a device)."""

    def copy(self, array: Any) -> Any:
        """A copy sharing no memory, on the same device."""

    def device(self, array: Any) -> Any:
        """The device ``array`` lives on."""

    def parameter(self, host_value: Any, like: Any) -> Any:
        """A host parameter (number or small array) ready for the kernels next to ``like``."""

    def is_floating(self, array: Any) -> bool:
        """Whether ``array`` is real floating point."""

    def is_integer(self, array: Any) -> bool:
        """Whether ``array`` holds integers."""

    def size(self, array: Any) -> Optional[int]:
        """The number of elements (None when a lazy array's size is unknown)."""

    def with_known_shape(self, array: Any, argument: str = "values") -> Any:
        """``array`` with every extent of its shape known (a lazy array's computed once)."""

    def minmax(self, values: Any, omit_nonfinite: bool = False, *, extent: Optional[Tuple[int, ...]] = None) -> Any:
        """``(min, max)``: 0-d arrays, or arrays of the parameter grid with a block ``extent``."""

    def count_nonfinite(self, values: Any) -> Any:
        """The number of NaN and ±Inf (a 0-d array, not read back)."""

    def unique_rounded(self, values: Any, omit_nonfinite: bool = False) -> Any:
        """The sorted unique values rounded to 2 decimals (QAT scale inference)."""

    def bin_counts(self, values: Any, *, k: int, j_lo: int, max_bins: int, omit_nan: bool) -> Any:
        """Counts of ``values`` in ``max_bins`` bins of width ``2**k`` from bin ``j_lo``."""

    def quantize(self, values: Any, spec: QuantSpec, *, check_finite: bool = True, out: Any = None) -> Any:
        """``(qvalues, problems or None)``: ``rint(x / scale + zero_point)`` as ``spec`` says."""

    def dequantize(self, qvalues: Any, spec: QuantSpec, *, dtype: str = "float64", out: Any = None) -> Any:
        """``scale * (qvalues - zero_point)`` in float64, written as ``dtype``."""

    def pack_bits(self, q: Any, n_bits: int) -> Tuple[Any, Optional[Any]]:
        """``(packed, n_outside)``: the low ``n_bits`` bits of each integer packed along the last
        axis into uint8 (:mod:`qarray.core.packing`), and the 0-d int64 count of values outside
        the packable range (None where the backend checks lazily and raises when computed)."""

    def unpack_bits(self, packed: Any, n_bits: int, length: int, signed: bool) -> Any:
        """``length`` values of ``n_bits`` bits from each row of uint8 ``packed``: int8 sign-extended
        when ``signed``, else uint8."""


@runtime_checkable
class DeviceHistograms(Protocol):
    """An optional capability: dyadic histograms kept on the device across batches.

    A backend with it (CuPy) counts batch after batch without reading anything back;
    :meth:`histogram_read` is the one read-back. Others count each batch with
    :meth:`Kernels.bin_counts` and merge on the host.
    """

    def histogram_state(self, values: Any, max_bins: int) -> Any:
        """An empty device histogram next to ``values``."""

    def histogram_accepts(self, state: Any, values: Any) -> bool:
        """Whether ``values`` can be counted into ``state`` (same library and device)."""

    def histogram_update(self, state: Any, values: Any, omit_nan: bool = False) -> None:
        """Count ``values`` into ``state``; nothing is read back."""

    def histogram_read(self, state: Any) -> Tuple[Any, bool]:
        """``(host Histogram or None, whether non-finite values were counted under "raise")``."""


@runtime_checkable
class WindowCounting(Protocol):
    """An optional capability: one pass that counts a batch into given bins and also finds its
    min, max and non-finite count, keeping the few values outside those bins (NumPy with Numba).

    With the bins of the histogram the batch is merged into, a batch whose values mostly
    fall inside them needs no min/max pass first (see :func:`qarray.calibration.histogram.update`).
    """

    def window_counts(
        self, values: Any, *, k: int, j_lo: int, n_bins: int, edges: Optional[Tuple[int, int]] = None
    ) -> Optional[Any]:
        """``(counts, nonfinite, low, high, outliers)`` as ``numba_kernels.WindowCounts``: int64
        counts of the ``n_bins`` bins of width ``2**k`` from ``j_lo``, the number of NaN/±Inf, the
        finite min and max (None without a finite value; with ``edges``, over the blocks that
        reach those two bins only) and the float64 finite values outside the bins (None when
        there were too many to keep); None when this input takes another path."""
