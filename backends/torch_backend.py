"""The PyTorch backend: the generic Array API kernels, with a histogram count that never sorts.

Everything but :meth:`TorchBackend.bin_counts` and the packing of host tensors is the
generic path over array-api-compat's torch namespace. The Array API has no bincount, so the generic
histogram count sorts the bin indices of the whole input (hundreds of MiB and
seconds for ten million values). Here a tensor in host memory is handed to the
NumPy kernels through DLPack, which reads it where it lies (any strides, nothing
copied); other tensors (on an accelerator, or of a dtype NumPy lacks, such as
bfloat16) are binned a chunk at a time on their device and counted with
``torch.bincount``. Both give the counts of the generic path exactly (integer counts,
the same float64 bin indices).

PyTorch itself is never imported here: the backend is built when a tensor shows up,
and reaches torch through its tensors' methods and the namespace it is given.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Tuple

import numpy

from .array_api import ArrayAPIBackend
from .numpy_backend import NumpyBackend

__all__ = ["BIN_CHUNK_ELEMENTS", "TorchBackend"]

BIN_CHUNK_ELEMENTS = 1 << 22
"""Values binned at once on a device: the float64 temporaries of a chunk stay near 100 MiB."""

_HOST = NumpyBackend()


class TorchBackend(ArrayAPIBackend):
    """The generic kernels over PyTorch, with a sort-free histogram count.

    Args:
        xp: array-api-compat's torch namespace (``array_api_compat.torch``).

    Example:
        >>> import torch, array_api_compat.torch
        >>> backend = TorchBackend(array_api_compat.torch)
        >>> backend.bin_counts(torch.tensor([0.1, 0.6, 0.7, 1.9]), k=-1, j_lo=0, max_bins=4, omit_nan=False).tolist()
        [1, 2, 0, 1]
    """

    def __init__(self, xp: Any) -> None:
        super().__init__(xp, name="torch")

    def bin_counts(self, values: Any, *, k: int, j_lo: int, max_bins: int, omit_nan: bool) -> Any:
        """Count ``values`` into ``max_bins`` bins of width ``2**k`` from ``j_lo``, without sorting.

        A tensor in host memory whose dtype NumPy has is counted by the NumPy kernel
        (:meth:`NumpyBackend.bin_counts`) on a zero-copy DLPack view; any other is binned
        :data:`BIN_CHUNK_ELEMENTS` values at a time on its device (the generic bin indices)
        and counted with ``torch.bincount``. The counts are those of
        :meth:`ArrayAPIBackend.bin_counts`, bit for bit; NaN and ±Inf are never counted.

        Args:
            values: a real tensor.
            k: the bin width is ``2**k``.
            j_lo: the index of the first bin.
            max_bins: the number of bins counted.
            omit_nan: leave NaN and ±Inf out (never counted here either way); see
                :meth:`ArrayAPIBackend.bin_counts` for all four.

        Returns:
            An int64 tensor of ``max_bins`` counts on ``values``' device.
        """
        host = _host_view(values)
        if host is not None:
            counts = _HOST.bin_counts(host, k=k, j_lo=j_lo, max_bins=max_bins, omit_nan=omit_nan)
            return self.xp.asarray(counts)
        total = None
        for chunk in _chunks(values):
            index = self._bin_indices(chunk, k=k, j_lo=j_lo, max_bins=max_bins)
            counts = index.bincount(minlength=max_bins + 1)  # the last bin gathers what is not counted
            total = counts if total is None else total + counts
        if total is None:  # no values
            return self.xp.zeros(max_bins, dtype=self.xp.int64, device=self.device(values))
        return total[:max_bins]

    def pack_bits(self, q: Any, n_bits: int) -> Tuple[Any, Any]:
        """Pack (see :meth:`ArrayAPIBackend.pack_bits`), on the host by the NumPy kernels.

        A tensor in host memory is packed by the NumPy kernels on a zero-copy DLPack view
        (the compiled ones for large tensors; PyTorch lacks comparisons and shifts of
        uint16, uint32 and uint64 on the CPU), others by the generic path.

        Args:
            q: an integer tensor of at least one axis.
            n_bits: 1, 2 or 4 (checked by the caller).

        Returns:
            ``(packed, n_outside)``, as :meth:`ArrayAPIBackend.pack_bits` returns them, as tensors.
        """
        host = _host_view(q)
        if host is None:
            return super().pack_bits(q, n_bits)
        packed, n_outside = _HOST.pack_bits(host, n_bits)
        return self.xp.asarray(packed), self.xp.asarray(n_outside)

    def unpack_bits(self, packed: Any, n_bits: int, length: int, signed: bool) -> Any:
        """Unpack (see :meth:`ArrayAPIBackend.unpack_bits`), on the host by the NumPy kernels.

        A tensor in host memory is unpacked by the NumPy kernels on a zero-copy DLPack
        view, others by the generic path.

        Args:
            packed: a uint8 tensor of at least one axis.
            n_bits: 1, 2 or 4 (checked by the caller).
            length: the number of values in each row.
            signed: sign-extend the values to int8 (else they are uint8).

        Returns:
            A tensor of shape ``packed.shape[:-1] + (length,)``.
        """
        host = _host_view(packed)
        if host is None:
            return super().unpack_bits(packed, n_bits, length, signed)
        return self.xp.asarray(_HOST.unpack_bits(host, n_bits, length, signed))


def _host_view(values: Any) -> Optional[numpy.ndarray]:
    """``values`` as a NumPy array over the same memory, or None when it is not in host memory
    or NumPy cannot read its dtype (bfloat16)."""
    if values.device.type != "cpu":
        return None
    try:
        return numpy.from_dlpack(values.detach())  # detach: a tensor that requires grad is not exported
    except (BufferError, RuntimeError, TypeError, ValueError):
        return None


def _chunks(values: Any) -> Iterator[Any]:
    """Yield ``values`` as 1-d tensors of about :data:`BIN_CHUNK_ELEMENTS` values or fewer, cut
    along the leading axes (views where the layout allows: only a chunk is ever copied)."""
    if values.ndim <= 1 or values.is_contiguous():
        flat = values.reshape(-1)
        for start in range(0, flat.shape[0], BIN_CHUNK_ELEMENTS):
            yield flat[start : start + BIN_CHUNK_ELEMENTS]
        return
    rows = values.shape[0]
    per_row = values.numel() // rows if rows else 0
    if per_row > BIN_CHUNK_ELEMENTS:
        for row in range(rows):
            yield from _chunks(values[row])
        return
    step = max(1, BIN_CHUNK_ELEMENTS // max(1, per_row))
    for start in range(0, rows, step):
        yield values[start : start + step].reshape(-1)
