"""One backend fixture for the whole suite.

``xb`` is parametrized over every array library the tests can reach here:
NumPy; array-api-strict on its non-default device; PyTorch (CPU) and Dask when
installed; CuPy only when a CUDA GPU is visible. Libraries that are missing are
skipped with the reason, so the same tests run everywhere.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, List

import numpy
import pytest

from qarray.core.namespace import to_numpy


class ArrayLibrary:
    """How a test makes arrays of one library and reads them back."""

    def __init__(self, name: str, xp: Any, make: Callable[[numpy.ndarray], Any]) -> None:
        self.name = name
        self.xp = xp
        self._make = make

    def asarray(self, host: Any) -> Any:
        """Return ``host`` (a NumPy array or list) as an array of this library."""
        return self._make(numpy.asarray(host))

    @staticmethod
    def to_numpy(array: Any) -> numpy.ndarray:
        """Return a host copy of ``array``."""
        return to_numpy(array)

    def __repr__(self) -> str:
        return self.name


def _numpy() -> ArrayLibrary:
    return ArrayLibrary("numpy", numpy, lambda host: host.copy())


def _array_api_strict() -> ArrayLibrary:
    strict = importlib.import_module("array_api_strict")
    device = strict.Device("device1")
    return ArrayLibrary("array_api_strict", strict, lambda host: strict.asarray(host, device=device))


def _torch() -> ArrayLibrary:
    torch = importlib.import_module("torch")
    return ArrayLibrary("torch", torch, lambda host: torch.asarray(host.copy()))


def _dask() -> ArrayLibrary:
    dask_array = importlib.import_module("dask.array")

    def make(host: numpy.ndarray) -> Any:
        # About three blocks along the first axis, so block-wise code is exercised; a
        # private copy, so that later changes to ``host`` do not show (as for torch).
        chunks = ((max(1, -(-host.shape[0] // 3)),) + host.shape[1:]) if host.ndim else ()
        return dask_array.from_array(host.copy(), chunks=chunks)

    return ArrayLibrary("dask", dask_array, make)


def _cupy() -> ArrayLibrary:
    cupy = importlib.import_module("cupy")
    if cupy.cuda.runtime.getDeviceCount() < 1:
        raise ImportError("no CUDA GPU is visible")
    return ArrayLibrary("cupy", cupy, lambda host: cupy.asarray(host))


LIBRARIES = {
    "numpy": _numpy,
    "array_api_strict": _array_api_strict,
    "torch": _torch,
    "dask": _dask,
    "cupy": _cupy,
}


def library(name: str) -> ArrayLibrary:
    """Return the named library, skipping the test when it is not available here."""
    try:
        return LIBRARIES[name]()
    except Exception as error:  # ImportError, or CUDA errors from CuPy without a GPU
        pytest.skip(f"{name} is not available here: {error}")


@pytest.fixture(params=sorted(LIBRARIES), ids=str)
def xb(request: pytest.FixtureRequest) -> ArrayLibrary:
    """Each available array library in turn (missing ones skip with the reason)."""
    return library(request.param)


def _emulated_module(source: str, factory: pytest.TempPathFactory) -> Any:
    """``source`` compiled for the CPU against ``tests/cuda_emulation``; skips, with the reason,
    where it cannot be built."""
    import sys

    from cuda_emulation.build import EmulatedModule, find_compiler

    if sys.platform == "win32":
        pytest.skip("the CUDA emulation needs POSIX ucontext, which Windows lacks")
    compiler = find_compiler()
    if compiler is None:
        pytest.skip("no C++ compiler ($CXX, g++, clang++ or c++): the kernels' logic is not emulated")
    return EmulatedModule.build(source, factory.mktemp("cuda_emulation"), compiler)


@pytest.fixture(scope="session")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The CUDA kernel module compiled for the CPU against ``tests/cuda_emulation``, once per
    test session; skipped, with the reason, where it cannot be built."""
    from qarray.backends import cupy_kernels

    return _emulated_module(cupy_kernels.source(), tmp_path_factory)


@pytest.fixture(scope="session")
def emulated_packing(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The CUDA packing module (:mod:`qarray.backends.cupy_packing`) compiled for the CPU, as
    :func:`emulated` compiles the quantization kernels."""
    from qarray.backends import cupy_packing

    return _emulated_module(cupy_packing.source(), tmp_path_factory)


@pytest.fixture
def emulation(emulated: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``emulation(capacity)``: a fresh CuPy backend whose CuPy is NumPy and whose kernels run on
    the CPU emulation (``tests/cuda_emulation/backend.py``), on a device that fits ``capacity``
    blocks."""
    from cuda_emulation.backend import Emulation

    return lambda capacity=3: Emulation(emulated, capacity, monkeypatch)


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """The names of the CUDA kernels fetched for launching during the test (on a GPU, or on
    the emulation when the ``emulation`` fixture came first)."""
    from qarray.backends import cupy_kernels

    names: List[str] = []
    original = cupy_kernels.kernel

    def recording(name: str) -> Any:
        names.append(name)
        return original(name)

    monkeypatch.setattr(cupy_kernels, "kernel", recording)
    return names


@pytest.fixture(scope="module")
def fused() -> Any:
    """The CuPy backend, whose fused kernels the GPU tests check (GPU test modules only: they
    have skipped where CuPy finds no GPU)."""
    from qarray.backends import get_backend
    from qarray.backends.cupy_backend import CupyBackend

    backend = get_backend("cupy")
    assert isinstance(backend, CupyBackend)
    return backend


@pytest.fixture(scope="module")
def busy() -> Callable[[float], None]:
    """``busy(seconds)``: enqueue a one-thread kernel that spins for about ``seconds`` on the
    current stream (GPU test modules only, see ``gpu_sync.busy_launcher``)."""
    from gpu_sync import busy_launcher

    return busy_launcher()
