"""qarray's CuPy backend on the CPU: NumPy plays CuPy, the kernels run on the emulation.

:class:`Emulation` is a :class:`CupyBackend` whose CuPy is NumPy and whose every kernel
launch goes to the real kernel source compiled for the CPU (``cuda_emulation.h``), so the
backend's own launch code (grids, argument lists, buffers, the order of launches) runs as
it is. The launcher checks each argument as the kernel declares it (a pointer gets a
C-contiguous array of the pointee's dtype, a scalar a NumPy scalar of the exact C type, as
CuPy passes them), so a wrong argument order or type fails.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Dict, List, Tuple

import numpy
import pytest

from qarray.backends import cupy_backend, cupy_kernels, cupy_packing
from qarray.backends.cupy_backend import CupyBackend
from qarray.backends.spec import QuantSpec

from .build import EmulatedModule

__all__ = [
    "BLOCK", "DeviceArray", "EmulatedKernel", "Emulation", "FakeCupy", "launched_kinds", "on_device", "poisoned",
]

BLOCK = cupy_kernels.BLOCK_THREADS

_C_TYPES: Dict[str, Any] = {
    "signed char": numpy.int8,
    "unsigned char": numpy.uint8,
    "short": numpy.int16,
    "unsigned short": numpy.uint16,
    "int": numpy.int32,
    "unsigned int": numpy.uint32,
    "long long": numpy.int64,
    "unsigned long long": numpy.uint64,
    "float": numpy.float32,
    "double": numpy.float64,
}


# ---- CuPy, played by NumPy ---------------------------------------------------------------------


class _Device:
    """Device 0 as a CuPy array names it: an id and a context manager."""

    id = 0

    def __enter__(self) -> _Device:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


_DEVICE = _Device()


class DeviceArray(numpy.ndarray):
    """A NumPy array that answers ``.device`` as a CuPy array does."""

    @property
    def device(self) -> _Device:  # type: ignore[override]
        return _DEVICE


def on_device(host: numpy.ndarray) -> DeviceArray:
    return numpy.array(host).view(DeviceArray)


def poisoned(shape: Any, dtype: Any) -> numpy.ndarray:
    """A buffer full of 0xa5 bytes, so an element the kernel never writes shows."""
    buffer = numpy.empty(shape, dtype=dtype)
    buffer.reshape(-1).view(numpy.uint8)[...] = 0xA5
    return buffer


def launched_kinds(spec: QuantSpec, quant: bool) -> Tuple[str, ...]:
    """The kernel kinds the backend launches for ``spec``, in order: float64 quant's fast and
    exact passes, or one float32 (``spec.in_float32``) quant; one dequant; grid forms for a grid."""
    if quant:
        kinds: Tuple[str, ...] = ("quant32",) if spec.in_float32 else ("quant", "quant_rest")
    else:
        kinds = ("dequant32",) if spec.in_float32 else ("dequant",)
    if spec.extent is None:
        return kinds
    return tuple(kind.replace("quant_rest", "quant_grid_rest") if kind.endswith("_rest") else f"{kind}_grid"
                 for kind in kinds)


class FakeCupy:
    """The part of CuPy the kernel branches use; ``empty`` gives poisoned memory, as a GPU may."""

    ndarray = numpy.ndarray
    float64 = numpy.float64
    int64 = numpy.int64
    uint64 = numpy.uint64
    zeros = staticmethod(numpy.zeros)
    asarray = staticmethod(numpy.asarray)
    broadcast_to = staticmethod(numpy.broadcast_to)

    @staticmethod
    def ascontiguousarray(array: Any) -> numpy.ndarray:
        """A C-contiguous array that keeps answering ``.device`` (as CuPy's does)."""
        contiguous = numpy.ascontiguousarray(array)
        return contiguous.view(DeviceArray) if isinstance(array, DeviceArray) else contiguous

    @staticmethod
    def empty(shape: Any, dtype: Any = numpy.float64) -> numpy.ndarray:
        return poisoned(shape, dtype)


class EmulatedKernel:
    """A kernel called as a ``cupy.RawKernel``: ``kernel((grid,), (block,), arguments)``."""

    def __init__(self, module: EmulatedModule, name: str, launches: List[Tuple[str, int, int]]) -> None:
        self.module = module
        self.name = name
        self.launches = launches
        self.signature = module.kernels[name]

    def __call__(self, grid: Tuple[int, ...], block: Tuple[int, ...], arguments: Tuple[Any, ...]) -> None:
        assert len(grid) == 1 and len(block) == 1
        parameters = self.signature.parameters
        assert len(arguments) == len(parameters), f"{self.name}: {len(arguments)} arguments for {parameters}"
        converted = []
        for argument, parameter in zip(arguments, parameters):
            words = [w for w in parameter.replace("*", " * ").split() if w not in ("const", "__restrict__")]
            base = " ".join(w for w in words[:-1] if w != "*")
            expected = numpy.dtype(_C_TYPES[base])
            if "*" in words:
                if isinstance(argument, numpy.generic) and not isinstance(argument, numpy.ndarray):
                    # CuPy passes a scalar's bytes: an 8-byte zero is the null pointer
                    assert argument.dtype.itemsize == 8 and int(argument) == 0, (self.name, parameter, argument)
                    converted.append(None)
                    continue
                assert isinstance(argument, numpy.ndarray), (self.name, parameter, type(argument))
                assert argument.flags.c_contiguous, (self.name, parameter)
                same = argument.dtype == expected or (
                    # the problem counts: int64 counters read as unsigned long long
                    expected.kind == "u" and argument.dtype.kind == "i" and argument.dtype.itemsize == expected.itemsize
                )
                assert same, f"{self.name}: {parameter} given a {argument.dtype} array"
                converted.append(argument)
            else:
                assert isinstance(argument, numpy.generic) and argument.dtype == expected, (
                    f"{self.name}: {parameter} given {argument!r} ({type(argument).__name__}); "
                    "CuPy would pass it with a different C type"
                )
                converted.append(argument.item())
        self.launches.append((self.name, int(grid[0]), int(block[0])))
        self.module.launch(self.name, int(grid[0]), int(block[0]), *converted)


class Emulation:
    """A :class:`CupyBackend` whose CuPy is NumPy and whose kernels run on the emulation.

    ``module`` is the emulated build of :func:`cupy_kernels.source` or of
    :func:`cupy_packing.source`: the launches of either module go to it.
    """

    def __init__(self, module: EmulatedModule, capacity: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.launches: List[Tuple[str, int, int]] = []
        backend = CupyBackend.__new__(CupyBackend)
        backend.xp = numpy
        backend.name = "cupy"
        backend._cupy = FakeCupy
        backend._lock = threading.Lock()
        backend._parameters = OrderedDict()
        backend._grids = {}
        backend._row_maps = OrderedDict()
        self.backend = backend
        self.capacity = capacity

        def launch(name: str) -> EmulatedKernel:
            return EmulatedKernel(module, name, self.launches)

        monkeypatch.setattr(cupy_kernels, "kernel", launch)
        monkeypatch.setattr(cupy_packing, "kernel", launch)  # each kernel is found in ``module``
        monkeypatch.setattr(cupy_backend, "_device_capacity", lambda cupy, function, device_id: capacity)

    def histogram(self, batches: List[numpy.ndarray], max_bins: int, omit: bool) -> Any:
        """Count the batches with :meth:`CupyBackend.histogram_update` as it is, then read
        the state with :meth:`CupyBackend.histogram_read`: ``(host Histogram or None,
        whether non-finite values were counted under "raise")``."""
        state = self.backend.histogram_state(on_device(batches[0]), max_bins)
        state.buffers[1][...] = 0xA5A5A5A5  # garbage: the plan must zero what it writes
        for batch in batches:
            self.backend.histogram_update(state, on_device(batch), omit_nan=omit)
        return self.backend.histogram_read(state)

    def quantize(self, values: numpy.ndarray, spec: QuantSpec, check_finite: bool) -> Tuple[numpy.ndarray, Any]:
        before = len(self.launches)
        q, problems = self.backend.quantize(on_device(values), spec, check_finite=check_finite)
        self._check_launch(before, launched_kinds(spec, quant=True), values.size)
        return numpy.asarray(q), None if problems is None else numpy.asarray(problems.counts)

    def dequantize(self, qvalues: numpy.ndarray, spec: QuantSpec, dtype: str) -> numpy.ndarray:
        before = len(self.launches)
        restored = self.backend.dequantize(on_device(qvalues), spec, dtype=dtype)
        self._check_launch(before, launched_kinds(spec, quant=False), qvalues.size)
        return numpy.asarray(restored)

    def _check_launch(self, before: int, kinds: Tuple[str, ...], count: int) -> None:
        """The launches since ``before`` were one of each kernel kind, in order, on the expected grid."""
        launched = self.launches[before:]
        if count == 0:
            assert launched == []
            return
        assert len(launched) == len(kinds), launched
        for (name, grid, block), kind in zip(launched, kinds):
            assert name.startswith(f"qarray_{kind}_") and name[len(f"qarray_{kind}_"):].count("_") == 1, launched
            assert grid == max(1, min(-(-count // BLOCK), self.capacity))
            assert block == BLOCK
