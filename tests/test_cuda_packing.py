"""The CUDA packing kernels' logic, run on the CPU emulation and compared with NumPy bit for bit.

The real source (:func:`qarray.backends.cupy_packing.source`) is compiled for the CPU
against ``tests/cuda_emulation`` and launched by the CuPy backend's own code
(:class:`cuda_emulation.backend.Emulation`: NumPy plays CuPy, outputs start poisoned),
on a device that fits only a few blocks, so the grid-stride loops turn. Every integer
dtype and width, rows that fill whole bytes (one long row) or not, byte counts around
the block size, strided input and values outside the range are checked against the
generic path. The NVRTC compilation is checked in ``tests/test_cuda_compile.py``.
"""

from __future__ import annotations

from typing import Any, Tuple

import array_api_compat
import numpy
import pytest

from qarray.backends import ArrayAPIBackend, cupy_kernels, cupy_packing

from bits import assert_same_bits
from cuda_emulation.backend import BLOCK, Emulation, on_device

GENERIC = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))
WIDTHS = (1, 2, 4)
CAPACITY = 2


@pytest.fixture
def device(emulated_packing: Any, monkeypatch: pytest.MonkeyPatch) -> Emulation:
    """The emulated CuPy backend whose packing launches run the packing module."""
    return Emulation(emulated_packing, CAPACITY, monkeypatch)


def values_with_outsiders(shape: Tuple[int, ...], dtype: str, n_bits: int, seed: int) -> numpy.ndarray:
    """Values of ``dtype`` in the packable range of ``n_bits`` bits, with some far outside it."""
    rng = numpy.random.default_rng(seed)
    info = numpy.iinfo(dtype)
    low = max(-(1 << (n_bits - 1)), int(info.min))
    values = rng.integers(low, (1 << n_bits), shape).astype(dtype)
    flat = values.reshape(-1)
    flat[::97] = info.max
    flat[1::89] = info.min
    return values


def check_launches(device: Any, kind: str, n_bits: int, n_bytes: int) -> None:
    """One launch of the ``kind`` kernel of ``n_bits`` on at most a wave of blocks (none when empty)."""
    launched, device.launches[:] = list(device.launches), []
    if n_bytes == 0:
        assert launched == []
        return
    (name, grid, block), = launched
    assert name.startswith(f"qarray_{kind}{n_bits}_")
    assert (grid, block) == (max(1, min(-(-n_bytes // BLOCK), CAPACITY)), BLOCK)


@pytest.mark.parametrize("dtype", tuple(cupy_kernels.INTEGER_TYPES))
@pytest.mark.parametrize("n_bits", WIDTHS)
@pytest.mark.parametrize(
    "shape",
    [(1,), (8,), (2 * BLOCK * 8 + 8,), (3, 5), (4, 2 * BLOCK + 3), (5 * BLOCK + 1, 2), (2, 3, 0), (0, 4)],
    ids=str,
)
def test_pack_matches_numpy(device: Any, dtype: str, n_bits: int, shape: Tuple[int, ...]) -> None:
    host = values_with_outsiders(shape, dtype, n_bits, seed=n_bits + len(shape))
    packed, n_outside = device.backend.pack_bits(on_device(host), n_bits)
    expected, expected_outside = GENERIC.pack_bits(host, n_bits)
    assert_same_bits(numpy.asarray(packed), expected)
    assert int(n_outside) == int(expected_outside)
    check_launches(device, "pack", n_bits, expected.size)


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("n_bits", WIDTHS)
@pytest.mark.parametrize("shape", [(1,), (3,), (2 * BLOCK + 1,), (7, 9), (3, 4 * BLOCK), (2, 0), (0, 3)], ids=str)
def test_unpack_matches_numpy(device: Any, signed: bool, n_bits: int, shape: Tuple[int, ...]) -> None:
    rng = numpy.random.default_rng(len(shape) + n_bits)
    length = shape[-1]
    packed = rng.integers(0, 256, shape[:-1] + (-(-length * n_bits // 8),), dtype=numpy.uint8)
    values = device.backend.unpack_bits(on_device(packed), n_bits, length, signed)
    assert_same_bits(numpy.asarray(values), GENERIC.unpack_bits(packed, n_bits, length, signed))
    check_launches(device, "unpack", n_bits, packed.size if length else 0)


@pytest.mark.parametrize("n_bits", WIDTHS)
def test_strided_input_is_read_as_its_values(device: Any, n_bits: int) -> None:
    host = values_with_outsiders((6, 3 * BLOCK + 5), "int16", n_bits, seed=3)
    view = on_device(host)[1::2, ::3]
    packed, n_outside = device.backend.pack_bits(view, n_bits)
    expected, expected_outside = GENERIC.pack_bits(host[1::2, ::3], n_bits)
    assert_same_bits(numpy.asarray(packed), expected)
    assert int(n_outside) == int(expected_outside) > 0
    length = host[1::2, ::3].shape[-1]
    strided = on_device(numpy.repeat(expected, 2, axis=0))[::2, ...]
    values = device.backend.unpack_bits(strided, n_bits, length, True)
    assert_same_bits(numpy.asarray(values), GENERIC.unpack_bits(expected, n_bits, length, True))


def test_every_kernel_has_its_name_and_nothing_else_does() -> None:
    names = cupy_packing.kernel_names()
    assert len(names) == len(set(names)) == len(WIDTHS) * (len(cupy_kernels.INTEGER_TYPES) + 2)
    for kind, n_bits, dtype in [("pack", 3, "int8"), ("unpack", 4, "int16"), ("quant", 4, "int8"), ("pack", 4, "bool")]:
        with pytest.raises(ValueError):
            cupy_packing.kernel_name(kind, n_bits, dtype)
    with pytest.raises(ValueError, match="name must name a kernel"):
        cupy_packing.kernel("qarray_quant_float32_int8")
