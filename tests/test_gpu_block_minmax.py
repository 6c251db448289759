"""Per-block min/max on an NVIDIA GPU: the CuPy backend's grid kernels against NumPy, bit for bit.

``CupyBackend.minmax(values, omit_nonfinite, extent=...)`` runs two kernels (the values'
order keys combined per block with atomics, then the keys back to floats). Here it is
compared with the generic NumPy backend on a host copy, on sizes far beyond what the CPU
emulation (tests/test_block_minmax.py) can run, on every float dtype, layout and a few
extents; the results must stay on the input's device, and the call must return while the
GPU is still busy (nothing read back).

The whole module is skipped, with the reason, where CuPy or a CUDA GPU is missing.
"""

from __future__ import annotations

import time
from typing import Any, Tuple

import numpy
import pytest

cupy = pytest.importorskip(
    "cupy", reason="CuPy is not installed: the GPU tests need CuPy and an NVIDIA GPU"
)
try:
    _N_DEVICES = int(cupy.cuda.runtime.getDeviceCount())
except Exception as error:  # CuPy raises CUDA errors when there is no driver or GPU
    pytest.skip(f"CuPy found no usable CUDA GPU: {error}", allow_module_level=True)
if _N_DEVICES < 1:
    pytest.skip("CuPy found no CUDA GPU", allow_module_level=True)

import array_api_compat  # noqa: E402  (after the skip on purpose)
from gpu_sync import assert_returned_while_busy, busy_launcher  # noqa: E402

from qarray.backends import ArrayAPIBackend, get_backend  # noqa: E402

pytestmark = pytest.mark.gpu

GENERIC = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))


@pytest.fixture(scope="module")
def fused() -> Any:
    return get_backend("cupy")


def _data(shape: Tuple[int, ...], dtype: str, seed: int) -> numpy.ndarray:
    rng = numpy.random.default_rng(seed)
    values = rng.standard_normal(shape).astype(dtype)
    flat = values.reshape(-1)
    for special in (numpy.nan, numpy.inf, -numpy.inf):
        flat[rng.integers(0, flat.size, max(1, flat.size // 10_000))] = special
    return values


def _assert_matches(result: Any, expected: numpy.ndarray) -> None:
    """NaN where NaN; the same bits elsewhere, except that a zero's sign is unspecified."""
    assert isinstance(result, cupy.ndarray)
    actual = cupy.asnumpy(result)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    nan = numpy.isnan(expected)
    numpy.testing.assert_array_equal(numpy.isnan(actual), nan)
    numpy.testing.assert_array_equal(actual[~nan], expected[~nan], strict=True)


@pytest.mark.parametrize("omit", [False, True], ids=["propagate", "omit"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "shape, extent",
    [
        ((1 << 22,), (1 << 22,)),
        ((1 << 22,), (32,)),
        ((1 << 22,), (1000,)),
        ((2048, 2048), (1, 2048)),
        ((2048, 2048), (2048, 1)),
        ((2048, 2048), (1, 128)),
        ((2048, 2048), (64, 64)),
        ((2048, 2048), (1, 1)),
        ((64, 257, 129), (3, 1, 33)),
    ],
)
def test_grid_kernels_match_numpy(fused, shape, extent, dtype, omit):
    values = _data(shape, dtype, seed=len(shape))
    low, high = fused.minmax(cupy.asarray(values), omit, extent=extent)
    expected_low, expected_high = GENERIC.minmax(values, omit, extent=extent)
    _assert_matches(low, expected_low)
    _assert_matches(high, expected_high)


@pytest.mark.parametrize("layout", ["F", "strided", "reversed"])
def test_grid_kernels_on_other_layouts(fused, layout):
    values = _data((1024, 1536), "float32", seed=3)
    device = cupy.asarray(values)
    view = {"F": cupy.asfortranarray(device), "strided": device[:, ::3], "reversed": device[::-1]}[layout]
    host = cupy.asnumpy(view)
    low, high = fused.minmax(view, True, extent=(5, 16))
    expected_low, expected_high = GENERIC.minmax(host, True, extent=(5, 16))
    _assert_matches(low, expected_low)
    _assert_matches(high, expected_high)


def test_grid_kernels_keep_subnormal_float32_bits(fused):
    rng = numpy.random.default_rng(4)
    bits = rng.integers(1, 0x800000, 1 << 20, dtype=numpy.uint32)
    bits[::2] |= numpy.uint32(0x80000000)
    values = bits.view(numpy.float32).reshape(1024, 1024)
    low, high = fused.minmax(cupy.asarray(values), extent=(4, 32))
    expected_low, expected_high = GENERIC.minmax(values, extent=(4, 32))
    assert cupy.asnumpy(low).view(numpy.uint32).tolist() == expected_low.view(numpy.uint32).tolist()
    assert cupy.asnumpy(high).view(numpy.uint32).tolist() == expected_high.view(numpy.uint32).tolist()


def test_results_stay_on_the_input_device(fused):
    device_id = _N_DEVICES - 1
    values = _data((300, 500), "float64", seed=5)
    with cupy.cuda.Device(device_id):
        on_device = cupy.asarray(values)
    low, high = fused.minmax(on_device, extent=(7, 9))
    assert low.device.id == high.device.id == device_id
    _assert_matches(low, GENERIC.minmax(values, extent=(7, 9))[0])


def test_grid_minmax_returns_while_the_gpu_is_busy(fused):
    busy = busy_launcher()
    values = cupy.asarray(_data((2048, 2048), "float32", seed=6))
    with cupy.cuda.Stream(non_blocking=True) as stream:
        for _ in range(2):  # compile, load, copy the row map, cache the pool's blocks
            warm = fused.minmax(values, True, extent=(1, 128))
            del warm
        stream.synchronize()
        started = time.perf_counter()
        busy(0.5)
        low, high = fused.minmax(values, True, extent=(1, 128))
        returned = time.perf_counter() - started
        still_busy = not stream.done
        stream.synchronize()
        finished = time.perf_counter() - started
    assert_returned_while_busy(returned, still_busy, finished)
    assert low.shape == high.shape == (2048, 16)
