"""MinMaxQuantizationStats: calibration statistics (range and, for QAT, unique values).

Statistics are computed by the backend of the calibration array, on its device.
``rmin`` and ``rmax`` are read back to the host once, when they are computed or
(for streaming updates) first read; ``uvalues`` stay in the calibration array's
library and on its device.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy

from .backends import backend_for, get_backend
from .core.checks import check_bool, check_optional_real
from .core.dtypes import FLOAT_DTYPES
from .core.granularity import Axis, BlockSize, Granularity, is_grid
from .core.messages import (
    NAN_POLICIES,
    check_calibration_values,
    check_nan_policy,
    no_finite_value,
    nonfinite_values,
)
from .core.namespace import array_namespace, as_array, is_array, is_bfloat16, is_lazy, library_name, to_numpy
from .core.pending import PendingFold
from .core.rich import render_html
from .core.rule import ranges_ordered
from .io.codec import Serializable, check_fields, decode_array, decode_float, encode_array, encoded_dtype
from .primitives import block_minmax, count_nonfinite, minmax, unique_rounded

__all__ = ["MinMaxQuantizationStats", "NAN_POLICIES"]


"""What calibration does with NaN and ±Inf: refuse them (default) or leave them out."""


class MinMaxQuantizationStats(Serializable):
    """Calibration set statistics.

    Stores the minimum and maximum of the calibration data, which determine the
    quantization range, and optionally the sorted unique values rounded to two
    decimals (``uvalues``), which QAT scale inference uses.

    Statistics can also be built batch by batch: :meth:`update` folds one more batch
    in and :meth:`merge` combines two sets; both give exactly what one
    :meth:`compute_quantization_stats` call on the concatenated data gives. On
    device backends the running min/max stay on the device until ``rmin`` or
    ``rmax`` is first read.

    One set of statistics may be updated, merged, read and copied from many threads
    at once: each call holds the set's own lock while it changes or reads the fields
    (never while it computes a batch's statistics), and :meth:`merge` and
    :meth:`copy_stats` read the other set under that set's lock, one lock at a time,
    so ``a.merge(b)`` and ``b.merge(a)`` running together cannot deadlock. The lock
    is not pickled: a pickled or deep-copied set gets a fresh one.

    Args:
        rmax: the largest calibration value.
        rmin: the smallest calibration value.
        uvalues: the sorted unique calibration values rounded to 2 decimals.

    Example:
        >>> import numpy
        >>> stats = MinMaxQuantizationStats()
        >>> stats.compute_quantization_stats(numpy.array([0.5, -1.0, 2.0]))
        >>> float(stats.rmin), float(stats.rmax)
        (-1.0, 2.0)
        >>> stats.update(numpy.array([3.0, 0.0]))
        >>> float(stats.rmin), float(stats.rmax)
        (-1.0, 3.0)
    """

    # The fields fill_from_kwargs fills, in order (the properties below declare them).
    _fields = ("rmax", "rmin", "uvalues")
    _type_tag = "MinMaxQuantizationStats"
    _required_fields = ("rmax", "rmin")
    # Streaming batches not read back yet: None, or a PendingFold of (min, max) pairs: 0-d
    # device arrays (host float64 numbers for host-resident backends), or per block the
    # lazy (Dask) grids of batches after the first, folded into rmin/rmax (lazily, nothing
    # is read back) when they are read. Not annotated: not a field.
    _pending = None
    # The granularity of per-block statistics, ``(axis, block_size, shape or None)``; None
    # per tensor (or for ranges set by hand). Not a field.
    _granularity: Optional[Tuple[Any, Any, Any]] = None

    def __init__(
        self,
        rmax: Optional[float] = None,
        rmin: Optional[float] = None,
        uvalues: Optional[Any] = None,
    ) -> None:
        self._lock = threading.RLock()
        self._rmax: Optional[numpy.float64] = None
        self._rmin: Optional[numpy.float64] = None
        self._uvalues: Optional[Any] = None
        self.rmax = rmax
        self.rmin = rmin
        self.uvalues = uvalues

    # -- fields ----------------------------------------------------------------------------

    @property
    def rmax(self) -> Optional[numpy.float64]:
        """The largest calibration value (a host float64), or None before calibration.

        With a granularity (``axis`` / ``block_size``), one value per block: a float64
        array of the parameter grid in the calibration data's library and on its device.

        Reading it reads pending streaming batches back first (see :meth:`update`), and
        raises ``ValueError`` if they held NaN or ±Inf.
        """
        with self._guard():
            self._resolve_pending()
            return self._rmax

    @rmax.setter
    def rmax(self, value: Optional[float]) -> None:
        checked = _range_value(value, "rmax")
        with self._guard():
            self._resolve_pending()
            self._rmax = checked

    @property
    def rmin(self) -> Optional[numpy.float64]:
        """The smallest calibration value (a host float64), or None before calibration.

        With a granularity, one value per block (see :attr:`rmax`).

        Reading it reads pending streaming batches back first (see :meth:`update`), and
        raises ``ValueError`` if they held NaN or ±Inf.
        """
        with self._guard():
            self._resolve_pending()
            return self._rmin

    @rmin.setter
    def rmin(self, value: Optional[float]) -> None:
        checked = _range_value(value, "rmin")
        with self._guard():
            self._resolve_pending()
            self._rmin = checked

    @property
    def uvalues(self) -> Optional[Any]:
        """Sorted unique calibration values rounded to 2 decimals, or None if not computed."""
        return self._uvalues

    @uvalues.setter
    def uvalues(self, value: Optional[Any]) -> None:
        if value is not None:
            value = as_array(value, "uvalues", kind="float")
            xp = array_namespace(value)
            if not xp.isdtype(value.dtype, "real floating") or value.ndim != 1:
                raise TypeError(
                    f"uvalues must be a 1-d float array, got {value.ndim}-d {value.dtype}"
                )
            # QAT infers the scale from consecutive differences: they must be positive.
            # (A set value is read back once here, a documented boundary.)
            if not is_lazy(value) and value.shape[0] > 1 and not bool(xp.all(value[1:] > value[:-1])):
                raise ValueError("uvalues must be sorted, unique and free of NaN")
        with self._guard():
            self._uvalues = value

    # -- threads and copies ----------------------------------------------------------------

    def _guard(self) -> Any:
        """Return this set's lock (made here for objects built without ``__init__``)."""
        lock = self.__dict__.get("_lock")
        if lock is None:
            with _LOCK_CREATION:
                lock = self.__dict__.setdefault("_lock", threading.RLock())
        return lock

    def _state(self) -> Tuple[Any, Any, Any, Any]:
        """Return ``(rmin, rmax, pending, uvalues)`` read together under the lock.

        Pending per-block grids are folded into ``rmin``/``rmax`` first (lazily).
        """
        with self._guard():
            self._settle_blocks()
            return self._rmin, self._rmax, self._pending, self._uvalues

    def __getstate__(self) -> Dict[str, Any]:
        """Return the fields for pickling and deep copies, read together; the lock is left out."""
        with self._guard():
            state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Restore pickled fields and give the copy a lock of its own."""
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # -- calibration -----------------------------------------------------------------------

    @property
    def is_per_block(self) -> bool:
        """True when the ranges are grids (calibrated per channel or per group)."""
        return is_grid(self._rmin) or is_grid(self._rmax)

    def compute_quantization_stats(
        self,
        values: Any,
        nan_policy: str = "raise",
        with_uvalues: bool = True,
        *,
        axis: Axis = None,
        block_size: BlockSize = None,
    ) -> None:
        """Compute the calibration set quantization statistics.

        Sets ``rmin``/``rmax`` to the min and max of ``values`` (read back to the host
        once) and, when ``with_uvalues``, ``uvalues`` to the sorted unique values rounded
        to 2 decimals in float64 (on ``values``' device).

        Args:
            values: floating-point calibration data of any array library.
            nan_policy: ``"raise"`` refuses NaN and ±Inf; ``"omit"`` leaves them out.
            with_uvalues: compute ``uvalues`` too (it costs a sort; only QAT uses it).
            axis, block_size: a granularity (see :class:`QuantizationOptions`): ``rmin``
                and ``rmax`` become one value per block, arrays of the parameter grid
                left on the device (nothing is read back; NaN/±Inf under ``"raise"``
                are then refused when parameters are computed, or at once for NumPy).
                ``uvalues`` is None with a granularity.

        Raises:
            TypeError: if ``values`` is not a floating-point array.
            ValueError: if it is empty, holds NaN/±Inf under ``"raise"``, or holds no
                finite value under ``"omit"``; for a bad granularity.
        """
        omit = check_nan_policy(nan_policy)
        with_uvalues = check_bool(with_uvalues, "with_uvalues")
        values = as_array(values, "values", kind="float")
        backend = backend_for(values)
        check_calibration_values(values, backend)
        if axis is not None or block_size is not None:
            key, rmin, rmax = _block_ranges(values, backend, omit, axis, block_size)
            with self._guard():
                self._rmin, self._rmax, self._pending, self._uvalues = rmin, rmax, None, None
                self._granularity = key
            return
        rmin, rmax = _read_range(values, backend, omit)
        uvalues = unique_rounded(values, omit_nonfinite=omit, backend=backend) if with_uvalues else None
        with self._guard():
            self._rmin, self._rmax, self._pending, self._uvalues = rmin, rmax, None, uvalues
            self._granularity = None

    def update(
        self,
        values: Any,
        nan_policy: str = "raise",
        with_uvalues: bool = False,
        *,
        axis: Axis = None,
        block_size: BlockSize = None,
    ) -> None:
        """Fold one more batch of calibration data into the statistics.

        After any sequence of updates (starting from empty statistics), ``rmin`` and
        ``rmax`` are exactly those of one :meth:`compute_quantization_stats` call on the
        concatenated batches, and so are ``uvalues`` when every update asked for them
        (otherwise they are None). Batches may come from any array library.

        Per-batch work stays on the batch's device: on device backends (CuPy, Dask,
        ...) the running min and max are kept as 0-d device arrays, combined with
        ``minimum``/``maximum``, and read back once, when ``rmin`` or ``rmax`` is first
        read; NaN/±Inf in a batch then raise ``ValueError`` at that read. On
        host-resident backends (NumPy) each batch is checked at once. Empty batches
        add nothing.

        Args:
            values: floating-point calibration data of any array library.
            nan_policy: ``"raise"`` refuses NaN and ±Inf; ``"omit"`` leaves them out.
            with_uvalues: also merge this batch's unique values into ``uvalues`` (a sort;
                only QAT scale inference uses them).
            axis, block_size: a granularity: every batch is reduced per block and folded
                elementwise, on the device. With ``axis``, batches must agree on the kept
                axes' lengths; with ``block_size``, batches must have the same shape.
                Under ``"omit"``, a block with no finite value yet stays open (on every
                backend) for a later batch to fill; computing parameters refuses it if
                none does.

        Raises:
            TypeError: if ``values`` is not a floating-point array.
            ValueError: if ``nan_policy`` is unknown, or (host-resident backends) the
                batch holds NaN/±Inf under ``"raise"``.

        Example:
            >>> import numpy
            >>> stats = MinMaxQuantizationStats()
            >>> for batch in (numpy.array([0.5, 1.0]), numpy.array([-2.0, 0.25])):
            ...     stats.update(batch)
            >>> float(stats.rmin), float(stats.rmax)
            (-2.0, 1.0)
        """
        omit = check_nan_policy(nan_policy)
        with_uvalues = check_bool(with_uvalues, "with_uvalues")
        values = as_array(values, "values", kind="float")
        backend = backend_for(values)
        has_values = check_calibration_values(values, backend, allow_empty=True)
        if axis is not None or block_size is not None:
            if not has_values:
                return
            key, low, high = _block_ranges(values, backend, omit, axis, block_size, streaming=True)
            with self._guard():
                if self._has_data():
                    _check_same_blocks(self._granularity, key, self._rmin)
                    if is_lazy(low) and is_lazy(self._rmin):
                        _check_same_grid(self._rmin, low)
                        self._add_pending(low, high, low)
                        return
                    self._settle_blocks()
                    low, high = _fold_blocks(self._rmin, self._rmax, low, high)
                self._rmin, self._rmax, self._pending, self._uvalues = low, high, None, None
                self._granularity = key
            return
        if self._granularity is not None or self.is_per_block:  # (a loaded document has no key)
            blocks = str(self._granularity[0]) if self._granularity is not None else "a parameter grid"
            raise ValueError(
                "these statistics are per block (axis/block_size): give update() the same "
                f"granularity, got axis=None, block_size=None for statistics of {blocks}"
            )
        if not has_values:
            return
        low, high = minmax(values, omit_nonfinite=omit, backend=backend)
        if backend.host_resident:
            low, high = _read_pair(low, high, backend)
            if not omit and not (math.isfinite(low) and math.isfinite(high)):
                raise _nonfinite_error(values, backend)
        # The batch's own work (min, max, the sort) runs outside the lock; only folding
        # it into the fields is serialised. Whether uvalues are still kept is a hint
        # here and decided again under the lock.
        batch_uvalues = None
        if with_uvalues and (not self._has_data() or self._uvalues is not None):
            batch_uvalues = unique_rounded(values, omit_nonfinite=omit, backend=backend)
        with self._guard():
            had_data = self._has_data()
            uvalues = None
            if with_uvalues and (not had_data or self._uvalues is not None):
                if batch_uvalues is None:  # another thread filled the statistics meanwhile
                    batch_uvalues = unique_rounded(values, omit_nonfinite=omit, backend=backend)
                uvalues = batch_uvalues if not had_data else _merge_unique(self._uvalues, batch_uvalues)
            self._fold(low, high)
            self._uvalues = uvalues

    def merge(self, other: MinMaxQuantizationStats) -> MinMaxQuantizationStats:
        """Return new statistics that combine these with ``other`` (neither is changed).

        The result is what one :meth:`compute_quantization_stats` call on both data sets
        together gives: the smaller ``rmin``, the larger ``rmax``, and the merged
        ``uvalues`` when both sides have them (else None). Pending device values of the
        same library stay pending (nothing is read back).

        Args:
            other: the statistics to combine with these.

        Returns:
            The combined statistics, a new object.

        Raises:
            TypeError: if ``other`` is not a MinMaxQuantizationStats.

        Example:
            >>> import numpy
            >>> first, second = MinMaxQuantizationStats(), MinMaxQuantizationStats()
            >>> first.update(numpy.array([0.0, 1.0]))
            >>> second.update(numpy.array([-1.0, 0.5]))
            >>> merged = first.merge(second)
            >>> float(merged.rmin), float(merged.rmax)
            (-1.0, 1.0)
        """
        if not isinstance(other, MinMaxQuantizationStats):
            raise TypeError(f"other must be MinMaxQuantizationStats, got {type(other).__name__}")
        # Each side is read under its own lock in turn, never both at once: a.merge(b)
        # and b.merge(a) in two threads cannot deadlock, and neither sees half an update.
        rmin, rmax, pending, uvalues = self._state()
        other_rmin, other_rmax, other_pending, other_uvalues = other._state()
        merged = MinMaxQuantizationStats()
        if is_grid(rmin) or is_grid(other_rmin):
            return _merge_blocks(self, other)
        if not _holds_data(other_rmin, other_rmax, other_pending):
            merged._rmin, merged._rmax, merged._pending = rmin, rmax, pending
            merged._uvalues = _copied_uvalues(uvalues)
            return merged
        if not _holds_data(rmin, rmax, pending):
            merged._rmin, merged._rmax, merged._pending = other_rmin, other_rmax, other_pending
            merged._uvalues = _copied_uvalues(other_uvalues)
            return merged
        # ``merged`` is not shared yet: its fields are set without its lock.
        merged._rmin = _host_min(rmin, other_rmin)
        merged._rmax = _host_max(rmax, other_rmax)
        merged._pending = pending
        if other_pending is not None:
            merged._fold(*other_pending.result(_combine_pairs))
        both = uvalues is not None and other_uvalues is not None
        merged._uvalues = _merge_unique(uvalues, other_uvalues) if both else None
        return merged

    def _has_data(self) -> bool:
        """Whether any calibration data (or a hand-set range) is in these statistics."""
        return _holds_data(self._rmin, self._rmax, self._pending)

    def _fold(self, low: Any, high: Any) -> None:
        """Fold a batch's (min, max) into the pending pairs, on the batch's device."""
        pending = self._pending
        if pending is not None and _library_of(pending.newest[0]) != _library_of(low):
            self._resolve_pending()  # a batch from another library: settle the old ones first
        self._add_pending(low, high, low)

    def _add_pending(self, low: Any, high: Any, like: Any) -> None:
        """Add a batch's (min, max) to the pending pairs: a tree for lazy ones (the cost of
        an update stays constant however many came before), combined at once otherwise."""
        pair, pending = (low, high), self._pending
        if pending is None:
            self._pending = PendingFold.of(pair)
        else:
            self._pending = pending.add(pair, _combine_pairs, at_once=not is_lazy(like))

    def _settle_blocks(self) -> None:
        """Fold pending per-block grids into ``rmin``/``rmax``, lazily (nothing is computed)."""
        pending = self._pending
        if pending is not None and is_grid(self._rmin):
            self._rmin, self._rmax = _combine_pairs([(self._rmin, self._rmax), pending.result(_combine_pairs)])
            self._pending = None

    def _resolve_pending(self) -> None:
        """Read pending batches back to the host (once) and fold them into rmin/rmax.

        Raises:
            ValueError: if the pending batches held NaN/±Inf, or no finite value at all
                (under ``nan_policy="omit"``); the statistics then keep raising on read.
        """
        self._settle_blocks()
        pending = self._pending
        if pending is None:
            return
        low, high = _read_pair(*pending.result(_combine_pairs))
        if self._rmin is not None:
            low = numpy.minimum(low, self._rmin)
        if self._rmax is not None:
            high = numpy.maximum(high, self._rmax)
        if not (math.isfinite(low) and math.isfinite(high)):
            if low > high:
                raise no_finite_value(where="values given to update()")
            raise nonfinite_values(where="values given to update()")
        self._rmin, self._rmax, self._pending = numpy.float64(low), numpy.float64(high), None

    @property
    def quant_stats(self) -> MinMaxQuantizationStats:
        """A fresh copy of these statistics (``uvalues`` is shared, never modified in place)."""
        copy = MinMaxQuantizationStats()
        copy.copy_stats(self)
        return copy

    def copy_stats(self, stats: MinMaxQuantizationStats) -> None:
        """Copy the statistics from a different structure.

        Args:
            stats (MinMaxQuantizationStats): structure to copy statistics from.

        Raises:
            TypeError: if ``stats`` is not a MinMaxQuantizationStats.
        """
        if not isinstance(stats, MinMaxQuantizationStats):
            raise TypeError(f"stats must be MinMaxQuantizationStats, got {type(stats).__name__}")
        # Pending device values are shared, not read back (they are never changed in place);
        # uvalues are copied, so changing one structure's array never changes the other's.
        # The source is read under its lock, then these fields set under this one (one
        # lock at a time, so two structures copying each other cannot deadlock).
        rmin, rmax, pending, uvalues = stats._state()
        granularity = stats._granularity
        uvalues = _copied_uvalues(uvalues)
        with self._guard():
            self._rmax, self._rmin, self._uvalues, self._pending = rmax, rmin, uvalues, pending
            self._granularity = granularity

    def check_is_uniform_quantized(self, options: Any) -> bool:
        """Check if these statistics correspond to uniformly quantized values.

        False if there are more than ``2**n_bits`` unique values or just one; otherwise
        True iff every difference between consecutive unique values is (within
        ``rtol=1e-5, atol=0.02``) an integer multiple of the smallest one.

        Args:
            options (QuantizationOptions): used to quantize the values

        Returns:
            bool: check result.

        Raises:
            ValueError: if ``uvalues`` were not computed.
        """
        if self.uvalues is None:
            raise ValueError(
                "check_is_uniform_quantized needs uvalues; compute the statistics with "
                "with_uvalues=True"
            )
        uvalues = self.uvalues
        if is_lazy(uvalues):  # a few values, already computed: check them on the host
            uvalues = to_numpy(uvalues)
        n_bits = getattr(options, "n_bits", None)
        if isinstance(n_bits, bool) or not isinstance(n_bits, int):
            raise TypeError(f"options must be QuantizationOptions, got {type(options).__name__}")
        xp = array_namespace(uvalues)
        count = int(uvalues.shape[0])
        if count > 2**n_bits or count < 2:  # none (set by hand) or one value: not uniform
            return False
        steps = xp.sort(xp.unique_values(uvalues[1:] - uvalues[:-1]))
        smallest = steps[0]
        requantized = xp.round(steps / smallest) * smallest
        close = xp.abs(steps - requantized) <= 0.02 + 1e-5 * xp.abs(requantized)
        return bool(xp.all(close))

    def smallest_step(self) -> numpy.float64:
        """Return the smallest difference between consecutive unique values (QAT scale).

        Returns:
            The smallest step, as a host float64.

        Raises:
            ValueError: if there are no ``uvalues``, or fewer than two.
        """
        if self.uvalues is None or int(self.uvalues.shape[0]) < 2:
            raise ValueError("the QAT scale needs at least two unique calibration values")
        uvalues = to_numpy(self.uvalues) if is_lazy(self.uvalues) else self.uvalues
        xp = array_namespace(uvalues)
        return numpy.float64(to_numpy(xp.min(uvalues[1:] - uvalues[:-1])))

    # -- comparison and serialization ------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MinMaxQuantizationStats):
            return NotImplemented
        return (
            _range_equal(self.rmax, other.rmax)
            and _range_equal(self.rmin, other.rmin)
            and arrays_equal(self.uvalues, other.uvalues)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        count = None if self.uvalues is None else int(self.uvalues.shape[0])
        try:
            shown = f"rmin={_fmt(self.rmin)}, rmax={_fmt(self.rmax)}"
        except ValueError:  # pending batches held NaN/±Inf: reading raises, repr must not
            shown = "rmin=<non-finite>, rmax=<non-finite>"
        return f"MinMaxQuantizationStats({shown}, uvalues={'None' if count is None else f'<{count} values>'})"

    def _repr_html_(self) -> str:
        """Rich display in Jupyter (the renderer :mod:`qarray.display` registers)."""
        return render_html(self)

    def dump_dict(self) -> Dict[str, Any]:
        """Dump itself to a JSON-ready dict (uvalues copied to the host).

        Returns:
            The dict, with a type tag and format version (see :func:`qarray.loads`).
        """
        with self._guard():  # the three fields of one moment, even while others update
            rmax, rmin, uvalues = self.rmax, self.rmin, self.uvalues
        return self._tagged(
            {
                "rmax": encode_array(rmax) if is_grid(rmax) else _json_float(rmax),
                "rmin": encode_array(rmin) if is_grid(rmin) else _json_float(rmin),
                "uvalues": encode_array(uvalues),
            }
        )

    @classmethod
    def load_dict(cls, metadata: Dict[str, Any], backend: Optional[str] = None) -> MinMaxQuantizationStats:
        """Load statistics from a dict made by :meth:`dump_dict`.

        Args:
            metadata: the dict.
            backend: the name of a backend to place ``uvalues`` with (default: NumPy).

        Returns:
            The statistics.

        Raises:
            TypeError, ValueError: for a malformed or inconsistent document (``rmin``
                above ``rmax``, ``uvalues`` not sorted, unique and finite, ...).
        """
        fields = check_fields(metadata, cls._type_tag, ("rmax", "rmin", "uvalues"))
        rmax, rmin = (_decode_range(fields[name], name) for name in ("rmax", "rmin"))
        if (rmax is None) != (rmin is None) or (
            rmax is not None and not ranges_ordered(rmin, rmax)
        ):
            raise ValueError(f"{cls._type_tag}: rmin ({rmin}) and rmax ({rmax}) are inconsistent")
        uvalues = decode_array(fields["uvalues"], "uvalues", FLOAT_DTYPES)
        if uvalues is not None and uvalues.ndim != 1:
            raise ValueError(f"uvalues must be 1-d, got shape {uvalues.shape}")
        if uvalues is not None and (
            not bool(numpy.all(numpy.isfinite(uvalues))) or not bool(numpy.all(uvalues[1:] > uvalues[:-1]))
        ):
            # sorted unique values: NaN, ±Inf, repeats and disorder cannot come from calibration
            raise ValueError("uvalues must be sorted, unique and finite")
        if is_grid(rmin) and uvalues is not None:
            raise ValueError(f"{cls._type_tag}: per-block statistics have no uvalues")
        stats = cls(
            rmax=place(rmax, backend) if is_grid(rmax) else rmax,
            rmin=place(rmin, backend) if is_grid(rmin) else rmin,
        )
        stats._uvalues = place(uvalues, backend, encoded_dtype(fields["uvalues"]))
        return stats


_LOCK_CREATION = threading.Lock()
"""Serialises making the lock of statistics built without ``__init__``."""


def _holds_data(rmin: Any, rmax: Any, pending: Any) -> bool:
    """Whether fields read together hold calibration data (or a hand-set range)."""
    return rmin is not None or rmax is not None or pending is not None


def _copied_uvalues(uvalues: Optional[Any]) -> Optional[Any]:
    """Return a copy of ``uvalues`` in its own library (None stays None)."""
    if uvalues is None:
        return None

    return backend_for(uvalues).copy(uvalues)


# -- helpers shared with the other classes ------------------------------------------------


def place(array: Any, backend: Optional[str], dtype: Optional[str] = None) -> Any:
    """Return a loaded host array placed with the named backend (NumPy when None).

    ``dtype`` is the name the document gave the array: a bfloat16 array (float32 on
    the host, every value exact) is bfloat16 again where the backend's library has
    that dtype (torch).
    """
    if array is None or backend is None:
        return array
    target = get_backend(backend)
    placed = target.asarray(array)
    bfloat16 = getattr(target.xp, "bfloat16", None) if dtype == "bfloat16" else None
    return placed if bfloat16 is None else target.xp.astype(placed, bfloat16)


def arrays_equal(first: Any, second: Any) -> bool:
    """Return True if both are None, or both are arrays of equal shape, dtype and values.

    NaN equals NaN here, so that an array holding NaN equals its own copy. A bfloat16
    array never equals a float32 one (their host copies are both float32).
    """
    if first is None or second is None:
        return first is None and second is None
    if is_bfloat16(first) != is_bfloat16(second):
        return False
    left, right = to_numpy(first), to_numpy(second)
    return left.shape == right.shape and left.dtype == right.dtype and bool(
        numpy.array_equal(left, right, equal_nan=left.dtype.kind in "fc")
    )


def _host_scalar(value: Any) -> Any:
    """Return a 0-d array of any library as a host scalar (a documented read-back)."""
    if is_array(value) and not isinstance(value, numpy.generic):
        host = to_numpy(value)
        if host.ndim != 0:
            raise TypeError(f"expected a scalar, got an array of shape {host.shape}")
        return host[()]
    return value


def _fmt(value: Any) -> str:  # a number, None, or an array of blocks
    if is_grid(value):
        return f"<{'x'.join(map(str, value.shape))} blocks>"
    return "None" if value is None else repr(float(value))


def _json_float(value: Optional[numpy.float64]) -> Optional[float]:
    return None if value is None else float(value)


def _read_range(values: Any, backend: Any, omit: bool) -> Tuple[numpy.float64, numpy.float64]:
    """Compute min/max on the device and read them back once, checking finiteness."""
    low, high = minmax(values, omit_nonfinite=omit, backend=backend)
    rmin, rmax = _read_pair(low, high, backend)
    if math.isfinite(rmin) and math.isfinite(rmax):
        return rmin, rmax
    if omit:
        raise no_finite_value()
    raise _nonfinite_error(values, backend)


def _nonfinite_error(values: Any, backend: Any) -> ValueError:
    """The error for calibration data with NaN/±Inf, counting them (an error path only)."""
    return nonfinite_values(count_nonfinite(values, backend=backend), backend.size(values))


_HOST = "host"


def _library_of(value: Any) -> str:
    """The library a pending value lives in; host NumPy numbers are ``"host"``."""
    if isinstance(value, (numpy.ndarray, numpy.generic, float, int)):
        return _HOST
    return library_name(array_namespace(value))


def _combine_pairs(pairs: Sequence[Tuple[Any, Any]]) -> Tuple[Any, Any]:
    """The elementwise min of the lows and max of the highs of ``(low, high)`` pairs of one
    library, in order (the combination of :class:`PendingFold`)."""
    low, high = pairs[0]
    xp = numpy if _library_of(low) == _HOST else array_namespace(low)
    for other_low, other_high in pairs[1:]:
        low, high = xp.minimum(low, other_low), xp.maximum(high, other_high)
    if is_lazy(low):
        # A stack, then two picks: graph layers Dask does not fuse. Left out, Dask's
        # optimiser fuses all the elementwise steps of a stream into one task, at a cost
        # quadratic in the number of batches when the result is computed.
        both = xp.stack([low, high])
        low, high = both[0], both[1]
    return low, high


def _read_pair(low: Any, high: Any, backend: Any = None) -> Tuple[numpy.float64, numpy.float64]:
    """Read two 0-d values back to the host together: one synchronisation (one compute).

    Host numbers are converted directly; device (or lazy) arrays are stacked on their
    device and read back as one array.
    """
    if _library_of(low) == _HOST and _library_of(high) == _HOST:
        return numpy.float64(low), numpy.float64(high)
    xp = array_namespace(low, high)
    both = xp.astype(xp.stack([low, high]), xp.float64)  # exact; also for dtypes NumPy lacks
    host = backend.to_numpy(both) if backend is not None else to_numpy(both)
    return numpy.float64(host[0]), numpy.float64(host[1])


def _host_min(first: Optional[numpy.float64], second: Optional[numpy.float64]) -> Optional[numpy.float64]:
    if first is None or second is None:
        return second if first is None else first
    return numpy.minimum(first, second)


def _host_max(first: Optional[numpy.float64], second: Optional[numpy.float64]) -> Optional[numpy.float64]:
    if first is None or second is None:
        return second if first is None else first
    return numpy.maximum(first, second)


def _merge_unique(first: Any, second: Any) -> Any:
    """Return the sorted unique values of two sorted unique arrays (no rounding again).

    The result is in ``second``'s library and on its device (the newer batch's);
    ``first`` is moved there if it lives elsewhere. Lazy (Dask) unique values are
    small and already computed, so they are merged on the host.
    """
    if is_lazy(first) or is_lazy(second):
        host = _merge_unique(to_numpy(first), to_numpy(second))
        return backend_for(second if is_lazy(second) else first).asarray(host)
    if library_name(array_namespace(first)) != library_name(array_namespace(second)):
        backend = backend_for(second)
        first = backend.asarray(first, device=backend.device(second))
    xp = array_namespace(first, second)
    return xp.sort(xp.unique_values(xp.concat([first, second])))


# -- per-block statistics ---------------------------------------------------------------------


def _range_value(value: Any, argument: str) -> Any:
    """Check an ``rmin``/``rmax`` being set: a real number, None, or a real array of blocks."""
    if is_grid(value):
        xp = array_namespace(value)
        if not (xp.isdtype(value.dtype, "real floating") or xp.isdtype(value.dtype, "integral")):
            raise TypeError(f"{argument} must be a real number or a real array, got dtype {value.dtype}")
        return xp.astype(value, xp.float64)
    return check_optional_real(_host_scalar(value), argument)


def _range_equal(first: Any, second: Any) -> bool:
    if is_grid(first) or is_grid(second):
        return is_grid(first) and is_grid(second) and arrays_equal(first, second)
    return bool(first == second)


def _block_ranges(
    values: Any, backend: Any, omit: bool, axis: Any, block_size: Any, *, streaming: bool = False
) -> Tuple[Any, Any, Any]:
    """Min and max of every block of one batch, float64 on its device, with the granularity key.

    Host-resident backends check for non-finite data at once (the read is free there);
    device backends leave it to the parameters, which refuse non-finite ranges. A batch
    of a stream (``streaming``) under ``"omit"`` is not checked on any backend: a block
    without a finite value yet is ``(+Inf, -Inf)``, which a later batch may fill, and
    which the parameters refuse if none does.
    """
    granularity = Granularity(axis, block_size)
    values = backend.with_known_shape(values)  # the blocks follow from the shape
    extent, _ = granularity.extent(tuple(values.shape))
    low, high = block_minmax(values, extent, omit_nonfinite=omit)
    xp = array_namespace(low)
    low, high = xp.astype(low, xp.float64), xp.astype(high, xp.float64)
    if backend.host_resident and not (omit and streaming):
        host_low, host_high = to_numpy(low), to_numpy(high)
        if not (numpy.all(numpy.isfinite(host_low)) and numpy.all(numpy.isfinite(host_high))):
            if omit:
                raise no_finite_value(block=True)
            raise _nonfinite_error(values, backend)
    return granularity.blocks_key(tuple(values.shape)), low, high


def _check_same_blocks(stored: Any, key: Any, rmin: Any) -> None:
    """Refuse folding a batch whose blocks are not those of the statistics."""
    if stored is None and not is_grid(rmin):
        raise ValueError(f"these statistics are per tensor: update() them without axis/block_size, got {key[0]}")
    if stored is not None and stored != key:
        raise ValueError(
            "update() batches must have the statistics' blocks: with axis, the kept axes' "
            "lengths must agree; with block_size, the shape must be the same. Got "
            f"{key[0]}, shape={key[1]!r} for statistics of {stored[0]}, shape={stored[1]!r}"
        )


def _check_same_grid(rmin: Any, low: Any) -> None:
    """Refuse folding a batch's grid of ranges into statistics of another grid."""
    if tuple(rmin.shape) != tuple(low.shape):
        raise ValueError(
            f"update() batches must give the same parameter grid, got {tuple(low.shape)} for "
            f"statistics of grid {tuple(rmin.shape)}"
        )


def _fold_blocks(rmin: Any, rmax: Any, low: Any, high: Any) -> Tuple[Any, Any]:
    """Elementwise min/max of two grids of ranges, in the newer batch's library."""
    _check_same_grid(rmin, low)
    xp = array_namespace(low)
    if library_name(array_namespace(rmin)) != library_name(xp):

        backend = backend_for(low)
        device = backend.device(low)  # the newer batch's device, where the result lives
        rmin, rmax = backend.asarray(to_numpy(rmin), device=device), backend.asarray(to_numpy(rmax), device=device)
    return xp.minimum(rmin, low), xp.maximum(rmax, high)


def _merge_blocks(first: MinMaxQuantizationStats, second: MinMaxQuantizationStats) -> MinMaxQuantizationStats:
    """:meth:`MinMaxQuantizationStats.merge` for per-block statistics."""
    rmin, rmax, pending, _ = first._state()
    other_rmin, other_rmax, other_pending, _ = second._state()
    merged = MinMaxQuantizationStats()
    # Pending (not yet read) min/max come from update() per tensor: they are data too.
    if not _holds_data(other_rmin, other_rmax, other_pending) or not _holds_data(rmin, rmax, pending):
        source = first if _holds_data(rmin, rmax, pending) else second
        merged.copy_stats(source)
        merged._granularity = source._granularity
        return merged
    if not (is_grid(rmin) and is_grid(other_rmin)):
        raise ValueError("cannot merge per-block statistics with per-tensor ones")
    if first._granularity is not None and second._granularity is not None:
        _check_same_blocks(first._granularity, second._granularity, rmin)
    merged._rmin, merged._rmax = _fold_blocks(rmin, rmax, other_rmin, other_rmax)
    merged._granularity = first._granularity or second._granularity
    return merged


def _decode_range(value: Any, argument: str) -> Any:
    """An ``rmin``/``rmax`` from a document: a number, null, or a finite float64 array (per block)."""
    if isinstance(value, dict):
        array = decode_array(value, argument, ("float64",), optional=False)
        if array.ndim == 0 or not numpy.all(numpy.isfinite(array)):
            raise ValueError(f"{argument}: a per-block range must be a finite array with at least one axis")
        return array
    return decode_float(value, argument)


