"""The numerics profiles on an NVIDIA GPU: NumPy's integers and float32 bits, fused, without a hidden sync.

``QuantizedArray(..., profile="onnx"/"torch")`` on CuPy arrays must give the NumPy integers
and dequantized float32 bits, per tensor, per axis and per block, through the fused float32
kernels (``quant32``, ``dequant32`` and their grid forms), not the generic path; the kernels
themselves must give the generic path's integers, counts and floats for every dtype pair,
at float32 ties, NaN/±Inf and subnormal inputs, scales, reciprocals and results (the GPU's
own float32 instructions under CuPy's ``-ftz=true``, which the CPU emulation only models:
tests/test_cuda_profile_emulation.py); quant with ``check_finite=False`` and dequant must
return while the GPU is still busy. Skipped, with the reason, where CuPy or a CUDA GPU is missing.
"""

from __future__ import annotations

import time
import zlib
from typing import Any, Dict, Tuple

import numpy
import pytest
from gpu_sync import assert_returned_while_busy, require_gpu

import qarray
from qarray import QuantizedArray
from qarray.backends import cupy_kernels
from qarray.backends.spec import QuantSpec
from qarray.core.dtypes import exact_float_bounds
from qarray.core.granularity import block_extent
from qarray.core.namespace import to_numpy

from bits import assert_same_bits
from cuda_emulation.inputs import clip_for, defined_casts, float32_subnormals
from profile_inputs import GENERIC, SCALES, float32_ties, integers, profile_values, rounded32

cupy, _N_DEVICES = require_gpu()  # skips the module where no GPU is usable

pytestmark = pytest.mark.gpu

INTEGER_DTYPES = tuple(cupy_kernels.INTEGER_TYPES)
FLOAT_DTYPES = tuple(cupy_kernels.FLOAT_TYPES)
ARITHMETICS = ("float32_divide", "float32_reciprocal")
PROFILES = ("onnx", "torch")


def _seed(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode())


def _values(shape: Tuple[int, ...], seed: int) -> numpy.ndarray:
    """float32 rows of three spreads, with a few NaN-free specials (zeros, a subnormal)."""
    rng = numpy.random.default_rng(seed)
    spreads = rng.choice([0.01, 1.0, 30.0], size=shape[:1] + (1,) * (len(shape) - 1))
    values = (rng.standard_normal(shape) * spreads).astype(numpy.float32)
    values.reshape(-1)[:3] = [0.0, -0.0, 1e-40]
    return values


def _host(array: Any) -> numpy.ndarray:
    """A host copy of a CuPy array; host values as NumPy arrays."""
    return numpy.asarray(to_numpy(array)) if isinstance(array, cupy.ndarray) else numpy.asarray(array)


# -- QuantizedArray with a profile ------------------------------------------------------------------

GRANULARITIES: Dict[str, Tuple[Tuple[int, ...], Dict[str, Any]]] = {
    "per-tensor": ((64, 1000), {}),
    "axis-0": ((64, 1000), {"axis": 0}),
    "axis-last": ((300, 70), {"axis": -1}),
    "group-128": ((257, 1000), {"block_size": 128}),  # rows of 7 groups of 128 and one of 104
    "group-128-1d": (((1 << 20) + 5,), {"block_size": 128}),  # over several waves of blocks
    "blocks-2-48": ((30, 200), {"block_size": (2, 48)}),
}

OPTION_SETS: Dict[str, Dict[str, Any]] = {
    "unsigned-8": {"n_bits": 8},
    "signed-8": {"n_bits": 8, "is_signed": True},
    "symmetric-8": {"n_bits": 8, "is_signed": True, "is_symmetric": True},
    "unsigned-4": {"n_bits": 4},
}


@pytest.mark.parametrize("options", list(OPTION_SETS))
@pytest.mark.parametrize("granularity", list(GRANULARITIES))
@pytest.mark.parametrize("profile", PROFILES)
def test_quantized_array_with_a_profile_on_gpu_matches_numpy(launched, profile, granularity, options):
    shape, arguments = GRANULARITIES[granularity]
    settings = dict(OPTION_SETS[options])
    n_bits = settings.pop("n_bits")
    values = _values(shape, _seed(profile, granularity, options))
    on_host = QuantizedArray(n_bits, values, profile=profile, **arguments, **settings)
    on_device = QuantizedArray(n_bits, cupy.asarray(values), profile=profile, **arguments, **settings)
    assert on_device.backend.name == "cupy" and isinstance(on_device.qvalues, cupy.ndarray)
    numpy.testing.assert_array_equal(_host(on_device.qvalues), on_host.qvalues, strict=True)
    for name in ("scale", "zero_point"):
        numpy.testing.assert_array_equal(_host(getattr(on_device.quantizer, name)),
                                         numpy.asarray(getattr(on_host.quantizer, name)))
    restored = on_device.dequant()
    assert isinstance(restored, cupy.ndarray) and str(restored.dtype) == "float32"
    assert_same_bits(_host(restored), on_host.dequant())
    assert_same_bits(_host(on_device.quantizer.dequant(on_device.qvalues, dtype=cupy.float64)),
                     on_host.quantizer.dequant(on_host.qvalues, dtype=numpy.float64))
    # values at and next to the float32 ties of the first block's scale, and beyond the range
    scale = float(numpy.asarray(on_host.quantizer.scale, dtype=numpy.float64).reshape(-1)[0])
    ties = numpy.resize(float32_ties(scale), values.size).reshape(shape)
    ties.reshape(-1)[::7] *= 1000.0
    for dtype in ("int16", "int64"):
        q = on_device.quantizer.quant(cupy.asarray(ties), dtype=dtype)
        numpy.testing.assert_array_equal(_host(q), on_host.quantizer.quant(ties, dtype=dtype), strict=True)
    # the fused float32 kernels ran, not the generic path nor the float64 kernels
    suffix = "_grid" if arguments else ""
    assert any(name.startswith(f"qarray_quant32{suffix}_float32_") for name in launched), launched
    assert any(name.startswith(f"qarray_dequant32{suffix}_") for name in launched), launched
    assert not any(name.startswith(("qarray_quant_", "qarray_dequant_")) for name in launched), launched


def test_calibrate_with_a_profile_on_gpu_matches_numpy(launched):
    host = _values((64, 4096), 3)
    for profile in PROFILES:
        for granularity in ({}, {"block_size": 128}):
            on_device = qarray.calibrate([cupy.asarray(host)], 8, is_signed=True, profile=profile, **granularity)
            on_host = qarray.calibrate([host], 8, is_signed=True, profile=profile, **granularity)
            q = on_device.quant(cupy.asarray(host), dtype=cupy.int8)
            numpy.testing.assert_array_equal(_host(q), on_host.quant(host, dtype=numpy.int8), strict=True)
            assert_same_bits(_host(on_device.dequant(q)), on_host.dequant(on_host.quant(host, dtype=numpy.int8)))


# -- the kernels against the generic path -----------------------------------------------------------


def _spec(shape: Tuple[int, ...], out_dtype: str, arithmetic: str, saturate: bool, grid: bool, seed: int,
          xp: Any) -> QuantSpec:
    """Per tensor (``SCALES[0]``), or per block of 128 with its own scale, zero point and clip, in ``xp``."""
    low, high = clip_for(out_dtype)
    zero_step = 1 if low < 0 else 50
    if not grid:
        clip = (low, high) if saturate else None
        return QuantSpec.per_tensor(SCALES[seed % len(SCALES)], 2.0 * zero_step, clip, out_dtype, arithmetic)
    extent, grid_shape = block_extent(shape, block_size=128)
    rng = numpy.random.default_rng(seed)
    scale = xp.asarray(rng.choice(SCALES, size=grid_shape))
    zero = xp.asarray(rng.integers(0, 4, size=grid_shape).astype(numpy.float64) * zero_step)
    if saturate:
        offset = rng.integers(0, 3, size=grid_shape)
        return QuantSpec(scale, zero, xp.asarray(low + offset), xp.asarray(high - offset), True, out_dtype,
                         tuple(extent), arithmetic)
    low, high = exact_float_bounds(out_dtype)
    return QuantSpec(scale, zero, low, high, False, out_dtype, tuple(extent), arithmetic)


@pytest.mark.parametrize("grid", [False, True], ids=["per-tensor", "per-block"])
@pytest.mark.parametrize("arithmetic", ARITHMETICS)
@pytest.mark.parametrize("out_dtype", INTEGER_DTYPES)
@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
def test_fused_quant32_and_dequant32_match_the_generic_path(fused, launched, in_dtype, out_dtype, arithmetic,
                                                             grid):
    shape = (37, 40_000)  # about 1.5 M values: more than five waves of blocks on an H100/H200
    seed = _seed(in_dtype, out_dtype, arithmetic, grid)
    values = numpy.resize(profile_values(in_dtype, SCALES[seed % len(SCALES)], seed), shape)
    for saturate in (True, False):
        device_spec = _spec(shape, out_dtype, arithmetic, saturate, grid, seed, cupy)
        host_spec = _spec(shape, out_dtype, arithmetic, saturate, grid, seed, numpy)
        q, problems = fused.quantize(cupy.asarray(values), device_spec, check_finite=True)
        with numpy.errstate(all="ignore"):
            expected, expected_problems = GENERIC.quantize(values, host_spec, check_finite=True)
        assert isinstance(q, cupy.ndarray) and str(q.dtype) == out_dtype
        assert launched[-1] == cupy_kernels.kernel_name("quant32_grid" if grid else "quant32", in_dtype, out_dtype)
        defined = defined_casts(rounded32(values, host_spec), out_dtype)
        assert defined.mean() > 0.1
        assert_same_bits(_host(q), numpy.asarray(expected), where=defined)
        assert problems.read() == expected_problems.read()
        host_q = numpy.where(defined, numpy.asarray(expected), 0).astype(out_dtype)
        for dtype in FLOAT_DTYPES:
            restored = fused.dequantize(cupy.asarray(host_q), device_spec, dtype=dtype)
            assert launched[-1] == cupy_kernels.kernel_name("dequant32_grid" if grid else "dequant32", out_dtype,
                                                            dtype)
            assert_same_bits(_host(restored), numpy.asarray(GENERIC.dequantize(host_q, host_spec, dtype=dtype)))


@pytest.mark.parametrize("arithmetic", ARITHMETICS)
@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
def test_fused_quant32_of_subnormal_inputs_scales_and_reciprocals(fused, in_dtype, arithmetic):
    """The GPU's float32 instructions flush these under -ftz=true; the kernels must not."""
    subnormal = float32_subnormals(100_000, seed=3).astype(in_dtype)
    normal = numpy.random.default_rng(1).uniform(-3e38, 3e38, 100_000).astype(in_dtype)
    cases = [(subnormal, scale) for scale in (2.0**-126, 2.0**-127, 3 * 2.0**-149, 2.0**-149)]
    cases += [(normal, scale) for scale in (2.0**127, 1.5 * 2.0**126, 2.0**-140)]
    for values, scale in cases:
        spec = QuantSpec.per_tensor(scale, 0.0, (-(2**31), 2**31 - 1), "int32", arithmetic)
        q, problems = fused.quantize(cupy.asarray(values), spec, check_finite=True)
        with numpy.errstate(all="ignore"):
            expected, expected_problems = GENERIC.quantize(values, spec, check_finite=True)
        rounded = rounded32(values, spec)
        defined = defined_casts(rounded, "int32")
        assert numpy.count_nonzero(rounded[defined]) > values.size // 3, scale  # flushing would give 0
        assert_same_bits(_host(q), numpy.asarray(expected), where=defined)
        assert problems.read() == expected_problems.read()


@pytest.mark.parametrize("arithmetic", ARITHMETICS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_fused_dequant32_of_subnormal_scales_and_results(fused, dtype, arithmetic):
    qvalues = integers((200_000,), "int16", 5)
    tiny = numpy.finfo(numpy.float32).tiny
    # each scale, and how many results at least are subnormal float32 (a flushed scale gives 0)
    for scale, n_subnormal in ((2.0**-149, 190_000), (3 * 2.0**-149, 190_000), (2.0**-140, 90_000),
                               (1.5 * 2.0**-127, 0), (2.0**120, 0)):
        spec = QuantSpec(scale, 3.0, arithmetic=arithmetic)
        restored = fused.dequantize(cupy.asarray(qvalues), spec, dtype=dtype)
        with numpy.errstate(over="ignore"):
            expected = numpy.asarray(GENERIC.dequantize(qvalues, spec, dtype=dtype))
        assert_same_bits(_host(restored), expected)
        magnitude = numpy.abs(expected)
        assert numpy.count_nonzero((magnitude > 0) & (magnitude < tiny)) >= n_subnormal, scale


# -- synchronisation -------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", [{}, {"axis": 0}, {"block_size": 128}], ids=str)
@pytest.mark.parametrize("profile", PROFILES)
def test_profile_quant_and_dequant_return_before_the_gpu_is_done(busy, profile, granularity):
    # int16 output: per block, int8 would have quant read the offset grid back to check the blocks'
    # clip ranges against the dtype
    host = numpy.random.default_rng(0).standard_normal((256, 4096)).astype(numpy.float32)
    values = cupy.asarray(host)
    quantizer = QuantizedArray(8, values, is_signed=True, profile=profile, **granularity).quantizer
    with cupy.cuda.Stream(non_blocking=True) as stream:
        # Warm up on this stream: compile, load, leave the memory pool blocks cached.
        for _ in range(2):
            warm = quantizer.quant(values, dtype=cupy.int16, check_finite=False)
            warm_restored = quantizer.dequant(warm)
            del warm, warm_restored
        stream.synchronize()

        started = time.perf_counter()
        busy(0.5)
        q = quantizer.quant(values, dtype=cupy.int16, check_finite=False)
        restored = quantizer.dequant(q)
        returned = time.perf_counter() - started
        still_busy = not stream.done
        stream.synchronize()
        finished = time.perf_counter() - started

    assert_returned_while_busy(returned, still_busy, finished)
    on_host = QuantizedArray(8, host, is_signed=True, profile=profile, **granularity).quantizer
    expected = on_host.quant(host, dtype=numpy.int16)
    numpy.testing.assert_array_equal(_host(q), expected)
    assert_same_bits(_host(restored), on_host.dequant(expected))


@pytest.mark.skipif(_N_DEVICES < 2, reason="needs two GPUs")
def test_profile_kernels_run_on_the_values_device(fused):
    host = _values((64, 1000), 9)
    with cupy.cuda.Device(1):
        values = cupy.asarray(host)
    spec = QuantSpec.per_tensor(SCALES[0], 3.0, (-128, 127), "int8", "float32_reciprocal")
    q, _ = fused.quantize(values, spec, check_finite=False)
    assert q.device.id == 1
    numpy.testing.assert_array_equal(_host(q), numpy.asarray(GENERIC.quantize(host, spec, check_finite=False)[0]))
    restored = fused.dequantize(q, spec, dtype="float32")
    assert restored.device.id == 1
    assert_same_bits(_host(restored), numpy.asarray(GENERIC.dequantize(_host(q), spec, dtype="float32")))
