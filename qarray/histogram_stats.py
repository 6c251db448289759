"""HistogramQuantizationStats: calibration statistics as an exact, mergeable histogram.

The class is thin: it holds one :class:`~qarray.calibration.histogram.Histogram` (on the
host) and, between reads, the work still on a device: on CuPy the counts,
``k`` and ``j_lo`` of a fixed ``max_bins`` buffer that each update re-bins and
adds to on the GPU; on Dask the lazy tree reduction of per-chunk histograms.
That work is read back once, when the histogram (a range, a document, a
display, a copy) is asked for. Every other backend counts each batch with its
kernel and merges it into the host histogram at once. The ranges themselves
are the functions of :mod:`qarray.calibration.histogram`.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple

import numpy

from .backends import backend_for
from .calibration.dask_histogram import compute_histogram, lazy_histogram, lazy_merge
from .calibration.histogram import (
    DEFAULT_MAX_BINS,
    DEFAULT_PERCENTILE,
    MAX_K,
    MIN_K,
    Histogram,
    bin_floor,
    check_max_bins,
    choose_k,
    device_histogram,
    histogram,
    merge,
    range_for,
    update,
)
from .core.messages import check_calibration_values, check_nan_policy
from .core.namespace import as_array, is_lazy
from .core.pending import PendingFold
from .core.rich import render_html
from .io.codec import Serializable, check_fields, decode_array, decode_float, decode_int, encode_array
from .stats import MinMaxQuantizationStats

__all__ = ["HistogramQuantizationStats"]

_FIELDS = ("max_bins", "k", "j_lo", "counts", "vmin", "vmax")


class HistogramQuantizationStats(Serializable):
    """Calibration statistics kept as an exact dyadic histogram (see ``docs/calibration.md``).

    Bins have width ``2**k``; the histogram covers the data's exact ``[min, max]``
    with at most ``max_bins`` bins and keeps min and max. After any sequence of
    :meth:`update` and :meth:`merge`, in any order and batching, the histogram is
    exactly that of one update on all the data, on every backend. :meth:`range`
    turns it into a quantization range (``minmax``, ``percentile``, ``mse``,
    ``entropy``) and :meth:`to_minmax` into :class:`~qarray.MinMaxQuantizationStats`
    for the quantizer. Updates and merges are thread-safe.

    Args:
        max_bins: the most bins the histogram may use (4 to 2**24; default 4096).

    Raises:
        TypeError, ValueError: for a ``max_bins`` that is not an int in range.

    Example:
        >>> import numpy
        >>> stats = HistogramQuantizationStats()
        >>> stats.update(numpy.concatenate([numpy.linspace(-1.0, 1.0, 9999), [50.0]]))
        >>> stats.range("minmax")
        (-1.0, 50.0)
        >>> stats.range("percentile", percentile=99.9)
        (-1.0, 1.0)
        >>> float(stats.to_minmax("percentile", percentile=99.9).rmax)
        1.0
    """

    _type_tag = "HistogramQuantizationStats"

    def __init__(self, max_bins: int = DEFAULT_MAX_BINS) -> None:
        self._max_bins = check_max_bins(max_bins)
        self._hist: Optional[Histogram] = None
        # Work not read back yet: None, ("dask", PendingFold of delayed Histograms: a tree, so
        # an update costs the same however many came before) or ("device", counter).
        self._pending: Optional[Tuple[Any, ...]] = None
        self._lock = threading.RLock()

    # -- fields ----------------------------------------------------------------------------

    @property
    def max_bins(self) -> int:
        """The most bins the histogram may use."""
        return self._max_bins

    @property
    def histogram(self) -> Optional[Histogram]:
        """The histogram on the host (reading pending device or lazy work back once), or None.

        Raises:
            ValueError: if batches given to :meth:`update` on a device held NaN/±Inf
                under ``nan_policy="raise"``.
        """
        with self._lock:
            self._resolve()
            return self._hist

    @property
    def rmin(self) -> Optional[numpy.float64]:
        """The exact smallest calibration value, or None before any data."""
        hist = self.histogram
        return None if hist is None else hist.vmin

    @property
    def rmax(self) -> Optional[numpy.float64]:
        """The exact largest calibration value, or None before any data."""
        hist = self.histogram
        return None if hist is None else hist.vmax

    @property
    def count(self) -> int:
        """The number of values counted so far."""
        hist = self.histogram
        return 0 if hist is None else hist.total

    # -- calibration -----------------------------------------------------------------------

    def update(self, values: Any, nan_policy: str = "raise") -> None:
        """Count one more batch into the histogram.

        On CuPy the batch is binned on its GPU into the device histogram (re-binned on
        the device when the range grows) and nothing is read back; NaN/±Inf under
        ``"raise"`` then raise ``ValueError`` when the histogram is next read. On Dask
        each chunk gets its own histogram and they merge in a lazy tree reduction,
        computed when the histogram is next read. Other backends count the batch at
        once and merge it in: NumPy with Numba in one pass once there is a histogram (the
        bins around its range, min and max found on the way; see
        :func:`~qarray.calibration.histogram.update`; that pass holds the lock), else in
        two (min/max, then the fused bin-and-count).
        Empty batches add nothing.

        Args:
            values: floating-point calibration data of any array library.
            nan_policy: ``"raise"`` refuses NaN and ±Inf; ``"omit"`` leaves them out.

        Raises:
            TypeError: if ``values`` is not a floating-point array.
            ValueError: for an unknown ``nan_policy``, or (host backends) NaN/±Inf
                under ``"raise"``.

        Example:
            >>> import numpy
            >>> stats = HistogramQuantizationStats(max_bins=16)
            >>> stats.update(numpy.array([0.0, 1.0]))
            >>> stats.update(numpy.array([3.0]))
            >>> stats.histogram.counts.tolist()
            [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
        """
        omit = check_nan_policy(nan_policy)
        values = as_array(values, "values", kind="float")
        backend = backend_for(values)
        if not check_calibration_values(values, backend, allow_empty=True):
            return
        if is_lazy(values):

            batch = lazy_histogram(values, self._max_bins, omit)
            with self._lock:
                pending = self._pending
                if pending is not None and pending[0] == "dask":
                    self._pending = ("dask", pending[1].add(batch, lazy_merge))
                    return
                self._resolve()
                self._pending = ("dask", PendingFold.of(batch))
            return
        with self._lock:
            pending = self._pending
            if pending is not None and pending[0] == "device" and pending[1].accepts(values):
                pending[1].update(values, omit_nan=omit)
                return
            counter = device_histogram(values, self._max_bins, backend=backend)
            if counter is not None:
                self._resolve()
                self._pending = ("device", counter)
                counter.update(values, omit_nan=omit)
                return
            if pending is None and self._hist is not None:
                # counted around the histogram so far, in one pass where the backend can
                self._hist = update(self._hist, values, self._max_bins, nan_policy=nan_policy, backend=backend)
                return
        batch_hist = histogram(values, self._max_bins, nan_policy=nan_policy, backend=backend)
        with self._lock:
            self._hist = merge(self._hist, batch_hist)

    def merge(self, other: HistogramQuantizationStats) -> HistogramQuantizationStats:
        """Return new statistics holding the histogram of both data sets (neither is changed).

        Exact: the result equals one update on all the data. Pending device or lazy
        work of either side is read back first (a histogram of ``max_bins`` counts).

        Args:
            other: the statistics to combine with these.

        Returns:
            The combined statistics, a new object.

        Raises:
            TypeError: if ``other`` is not a HistogramQuantizationStats.
            ValueError: if the two have different ``max_bins``.

        Example:
            >>> import numpy
            >>> first, second = HistogramQuantizationStats(), HistogramQuantizationStats()
            >>> first.update(numpy.array([0.0, 1.0]))
            >>> second.update(numpy.array([-1.0, 0.5]))
            >>> first.merge(second).range("minmax")
            (-1.0, 1.0)
        """
        if not isinstance(other, HistogramQuantizationStats):
            raise TypeError(f"other must be HistogramQuantizationStats, got {type(other).__name__}")
        if other._max_bins != self._max_bins:
            raise ValueError(
                f"other must have the same max_bins ({self._max_bins}), got {other._max_bins}"
            )
        theirs = other.histogram  # each side's lock in turn, never both at once
        mine = self.histogram
        merged = HistogramQuantizationStats(self._max_bins)
        merged._hist = merge(mine, theirs)
        return merged

    def range(
        self,
        method: str = "percentile",
        *,
        percentile: float = DEFAULT_PERCENTILE,
        n_bits: int = 8,
        is_signed: bool = False,
        is_symmetric: bool = False,
        is_narrow: bool = False,
        is_qat: bool = False,
        is_precomputed_qat: bool = False,
    ) -> Tuple[float, float]:
        """Return the ``(rmin, rmax)`` range that ``method`` chooses from the histogram.

        The options are the fields of the quantizer's ``QuantizationOptions``, checked as
        it checks them (whatever the method).

        Args:
            method: ``"minmax"`` (the exact range), ``"percentile"``, ``"mse"`` or
                ``"entropy"`` (see :mod:`qarray.calibration.histogram` and ``docs/calibration.md``).
            percentile: for ``"percentile"``, in ``(50, 100]``.
            n_bits: the quantizer's width, for ``"mse"`` and ``"entropy"``.
            is_signed: the quantizer is signed (``"mse"``).
            is_symmetric: the quantizer is symmetric (requires ``is_signed``; ``"mse"``,
                and ``"entropy"`` then works on ``|x|``).
            is_narrow: the quantizer clips to the narrow range (``"mse"``).
            is_qat, is_precomputed_qat: QAT with precomputed parameters, zero point 0
                (``"mse"``); QAT scale inference (``is_qat`` alone) is refused.

        Returns:
            ``(rmin, rmax)`` as Python floats.

        Raises:
            TypeError: for a non-bool flag, a non-int ``n_bits`` or a non-number percentile.
            ValueError: if there is no data yet, or for a bad method, percentile, ``n_bits``
                or combination of options.

        Example:
            >>> import numpy
            >>> stats = HistogramQuantizationStats()
            >>> stats.update(numpy.array([-2.0, 0.0, 1.0]))
            >>> stats.range("minmax")
            (-2.0, 1.0)
        """
        hist = self.histogram
        if hist is None:
            raise ValueError("the statistics hold no data yet: update() them with values first")
        return range_for(
            hist,
            method,
            percentile=percentile,
            n_bits=n_bits,
            is_signed=is_signed,
            is_symmetric=is_symmetric,
            is_narrow=is_narrow,
            is_qat=is_qat,
            is_precomputed_qat=is_precomputed_qat,
        )

    def to_minmax(self, method: str = "percentile", **options: Any) -> Any:
        """Return :class:`~qarray.MinMaxQuantizationStats` with ``rmin``/``rmax`` from :meth:`range`.

        Args:
            method: as for :meth:`range`.
            options: the keyword options of :meth:`range`.

        Returns:
            New :class:`~qarray.MinMaxQuantizationStats` (without ``uvalues``).

        Raises:
            TypeError, ValueError: as :meth:`range`.

        Example:
            >>> import numpy
            >>> stats = HistogramQuantizationStats()
            >>> stats.update(numpy.array([0.0, 3.0]))
            >>> minmax = stats.to_minmax("minmax")
            >>> float(minmax.rmin), float(minmax.rmax)
            (0.0, 3.0)
        """
        lower, upper = self.range(method, **options)
        return MinMaxQuantizationStats(rmax=upper, rmin=lower)

    # -- pending work --------------------------------------------------------------------

    def _resolve(self) -> None:
        """Read pending device or lazy work back and merge it into the host histogram (lock held)."""
        pending = self._pending
        if pending is None:
            return
        if pending[0] == "dask":
            batch = compute_histogram(pending[1].result(lazy_merge))
        else:
            batch = pending[1].read()  # refused when a batch held NaN/±Inf: the state stays, every read refuses
        self._hist = merge(self._hist, batch)
        self._pending = None

    # -- copies, comparison, display ---------------------------------------------------------

    def __getstate__(self) -> Dict[str, Any]:
        # The lock and any device state stay behind: a copy holds the host histogram.
        return {"max_bins": self._max_bins, "hist": self.histogram}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self._max_bins = state["max_bins"]
        self._hist = state["hist"]
        self._pending = None
        self._lock = threading.RLock()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HistogramQuantizationStats):
            return NotImplemented
        if self._max_bins != other._max_bins:
            return False
        mine, theirs = self.histogram, other.histogram
        if mine is None or theirs is None:
            return mine is None and theirs is None
        return mine == theirs

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        try:
            hist = self.histogram
        except ValueError:  # pending batches held NaN/±Inf: reading raises, repr must not
            return f"HistogramQuantizationStats(max_bins={self._max_bins}, <non-finite data>)"
        if hist is None:
            return f"HistogramQuantizationStats(max_bins={self._max_bins}, empty)"
        return (
            f"HistogramQuantizationStats(max_bins={self._max_bins}, count={hist.total}, "
            f"rmin={float(hist.vmin)!r}, rmax={float(hist.vmax)!r}, k={hist.k}, "
            f"bins={hist.j_hi - hist.j_lo + 1})"
        )

    def _repr_html_(self) -> str:
        """Rich display in Jupyter (the renderer :mod:`qarray.display` registers)."""
        return render_html(self)

    # -- documents -----------------------------------------------------------------------------

    def dump_dict(self) -> Dict[str, Any]:
        """Dump itself to a JSON-ready dict (the exact histogram: k, j_lo, int64 counts, min, max).

        Returns:
            The dict, with a type tag and format version (see :func:`qarray.loads`).
        """
        hist = self.histogram
        if hist is None:
            return self._tagged(
                {"max_bins": self._max_bins, "k": None, "j_lo": None, "counts": None, "vmin": None, "vmax": None}
            )
        return self._tagged(
            {
                "max_bins": self._max_bins,
                "k": hist.k,
                "j_lo": hist.j_lo,
                "counts": encode_array(hist.counts),
                "vmin": float(hist.vmin),
                "vmax": float(hist.vmax),
            }
        )

    @classmethod
    def load_dict(cls, metadata: Dict[str, Any], backend: Optional[str] = None) -> HistogramQuantizationStats:
        """Load statistics from a dict made by :meth:`dump_dict`.

        It is checked to be a histogram that calibration can produce (``backend`` is
        accepted for symmetry; the histogram lives on the host).

        Args:
            metadata: the dict.
            backend: accepted for symmetry with the other classes, and not used.

        Returns:
            The statistics.

        Raises:
            TypeError, ValueError: for a malformed or inconsistent document.
        """
        fields = check_fields(metadata, cls._type_tag, _FIELDS)
        max_bins = check_max_bins(decode_int(fields["max_bins"], "max_bins", optional=False))
        stats = cls(max_bins)
        parts = [fields[name] for name in _FIELDS[1:]]
        if all(part is None for part in parts):
            return stats
        if any(part is None for part in parts):
            raise ValueError(f"{cls._type_tag}: k, j_lo, counts, vmin and vmax must all be null or all be set")
        k = decode_int(fields["k"], "k", optional=False)
        j_lo = decode_int(fields["j_lo"], "j_lo", optional=False)
        if not MIN_K <= k <= MAX_K:
            raise ValueError(f"{cls._type_tag}: k must be between {MIN_K} and {MAX_K}, got {k}")
        counts = decode_array(fields["counts"], "counts", ("int64",), optional=False)
        vmin = decode_float(fields["vmin"], "vmin", optional=False) + 0.0
        vmax = decode_float(fields["vmax"], "vmax", optional=False) + 0.0
        if counts.ndim != 1 or not 1 <= counts.shape[0] <= max_bins:
            raise ValueError(
                f"{cls._type_tag}: counts must be 1-d with 1 to {max_bins} entries, got shape {counts.shape}"
            )
        if bool(numpy.any(counts < 0)) or counts[0] == 0 or counts[-1] == 0:
            raise ValueError(f"{cls._type_tag}: counts must be >= 0, with the bins of min and max non-empty")
        if sum(int(count) for count in counts) >= 2**63:
            raise ValueError(f"{cls._type_tag}: the counts add up to more than int64 holds")
        if vmin > vmax:
            raise ValueError(f"{cls._type_tag}: vmin ({vmin}) must not exceed vmax ({vmax})")
        expected_k = choose_k(vmin, vmax, max_bins)
        if k != expected_k or bin_floor(vmin, k) != j_lo or bin_floor(vmax, k) != j_lo + counts.shape[0] - 1:
            raise ValueError(
                f"{cls._type_tag}: k ({k}), j_lo ({j_lo}) and {counts.shape[0]} counts do not fit "
                f"[vmin, vmax] = [{vmin}, {vmax}] with max_bins {max_bins} (expected k {expected_k})"
            )
        stats._hist = Histogram(k, j_lo, counts, numpy.float64(vmin), numpy.float64(vmax), max_bins)
        return stats
