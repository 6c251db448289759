"""Per-block parameters and device histograms on an NVIDIA GPU: bit for bit, placement, no hidden syncs.

``QuantizedArray`` with ``axis=`` or ``block_size=`` on CuPy arrays must give the NumPy
integers and floats bit for bit (docs/granularity.md), through the fused grid kernels (not the
generic path), with every parameter a CuPy array on the values' device; per-block quant
with ``check_finite=False`` and dequant must return while the GPU is still busy.
``HistogramQuantizationStats.update`` on CuPy must give the NumPy histogram and read
nothing back until the histogram is asked for.

The CPU emulation (tests/test_cuda_grid_emulation.py) checks the kernels' arithmetic
without a GPU; this module checks what only a GPU shows. Skipped, with the reason, where
CuPy or a CUDA GPU is missing.
"""

from __future__ import annotations

import time
import zlib
from typing import Any, Dict, Tuple

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

from gpu_sync import assert_returned_while_busy  # noqa: E402

from qarray import (  # noqa: E402  # noqa: E402
    HistogramQuantizationStats,
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizationParameters,
    UniformQuantizer,
)
from qarray.backends import NumpyBackend, cupy_kernels  # noqa: E402
from qarray.backends.spec import QuantSpec  # noqa: E402
from qarray.core.dtypes import exact_float_bounds  # noqa: E402
from qarray.core.granularity import block_extent  # noqa: E402
from qarray.core.namespace import to_numpy  # noqa: E402

pytestmark = pytest.mark.gpu

INTEGER_DTYPES = tuple(cupy_kernels.INTEGER_TYPES)
FLOAT_DTYPES = tuple(cupy_kernels.FLOAT_TYPES)


def _seed(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode())


def _bits(array: Any) -> numpy.ndarray:
    """The raw bits of a float array (host copy), so comparisons see -0.0 and NaN payloads."""
    array = numpy.ascontiguousarray(to_numpy(array))
    return array.view({4: numpy.uint32, 8: numpy.uint64}[array.dtype.itemsize])


# -- QuantizedArray with a granularity -------------------------------------------------------------

GRANULARITIES: Dict[str, Tuple[Tuple[int, ...], Dict[str, Any]]] = {
    "axis-0": ((64, 1000), {"axis": 0}),
    "axis-last": ((300, 70), {"axis": -1}),
    "axes-0-2": ((6, 10, 7), {"axis": (0, 2)}),
    "group-128": ((257, 1000), {"block_size": 128}),  # rows of 7 groups of 128 and one of 104
    "group-128-1d": (((1 << 20) + 5,), {"block_size": 128}),  # over several waves of blocks
    "blocks-4-whole-3": ((30, 40, 50), {"block_size": (4, None, 3)}),
}

OPTION_SETS: Dict[str, Dict[str, Any]] = {
    "unsigned-8": {"n_bits": 8},
    "signed-8": {"n_bits": 8, "is_signed": True},
    "symmetric-8": {"n_bits": 8, "is_signed": True, "is_symmetric": True},
    "unsigned-4": {"n_bits": 4},
    "signed-16": {"n_bits": 16, "is_signed": True},
}


def _values(shape: Tuple[int, ...], dtype: str, seed: int) -> numpy.ndarray:
    """Normal values at three magnitudes along the first axis, with exact ties and a constant slab."""
    rng = numpy.random.default_rng(seed)
    values = rng.standard_normal(shape) * rng.choice([0.01, 1.0, 30.0], size=shape[:1] + (1,) * (len(shape) - 1))
    values.reshape(-1)[::5] = (numpy.arange(values.size)[::5] % 17 - 8 + 0.5) * 0.25
    values[0] = 0.75  # blocks inside it hold one single value
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("options", list(OPTION_SETS))
@pytest.mark.parametrize("granularity", list(GRANULARITIES))
def test_quantized_array_with_a_granularity_on_gpu_matches_numpy(launched, granularity, options, dtype):
    shape, arguments = GRANULARITIES[granularity]
    settings = dict(OPTION_SETS[options])
    n_bits = settings.pop("n_bits")
    values = _values(shape, dtype, _seed(granularity, options, dtype))
    on_host = QuantizedArray(n_bits, values, **arguments, **settings)
    on_device = QuantizedArray(n_bits, cupy.asarray(values), **arguments, **settings)
    assert on_device.backend.name == "cupy"
    assert isinstance(on_device.qvalues, cupy.ndarray)
    numpy.testing.assert_array_equal(to_numpy(on_device.qvalues), on_host.qvalues, strict=True)
    numpy.testing.assert_array_equal(_bits(on_device.dequant()), _bits(on_host.dequant()))
    numpy.testing.assert_array_equal(
        _bits(on_device.quantizer.dequant(on_device.qvalues, dtype=cupy.float32)),
        _bits(on_host.quantizer.dequant(on_host.qvalues, dtype=numpy.float32)),
    )
    grid = block_extent(shape, **arguments)[1]
    for name in ("rmin", "rmax", "scale", "zero_point", "offset"):
        parameter = getattr(on_device.quantizer, name)
        assert isinstance(parameter, cupy.ndarray), name
        assert parameter.device.id == on_device.qvalues.device.id, name
        assert tuple(parameter.shape) == tuple(grid), name
        numpy.testing.assert_array_equal(to_numpy(parameter), getattr(on_host.quantizer, name))
    assert str(on_device.quantizer.scale.dtype) == "float64"
    assert str(on_device.quantizer.zero_point.dtype) == "int64"
    # the fused grid kernels ran, not the generic path
    assert any(name.startswith("qarray_quant_grid_") for name in launched), launched
    assert any(name.startswith("qarray_dequant_grid_") for name in launched), launched


def _grid_spec(
    shape: Tuple[int, ...], out_dtype: str, seed: int, saturate: bool, xp: Any, **granularity: Any
) -> QuantSpec:
    """A spec with its own scale, zero point and (saturating) clip range per block, in ``xp``."""
    extent, grid = block_extent(shape, **granularity)
    rng = numpy.random.default_rng(seed)
    info = numpy.iinfo(out_dtype)
    bits = min(info.bits, 53)
    clip = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if info.min < 0 else (0, 2**bits - 1)
    scale = rng.choice([0.25, 0.5, 2.0, 0.1, 0.37], size=grid)
    zero = rng.integers(0, 4, size=grid).astype(numpy.float64) * (1 if info.min < 0 else 50)
    if saturate:
        offset = rng.integers(0, 3, size=grid)
        low, high = xp.asarray(clip[0] + offset), xp.asarray(clip[1] - offset)
        return QuantSpec(xp.asarray(scale), xp.asarray(zero), low, high, True, out_dtype, tuple(extent))
    low, high = exact_float_bounds(out_dtype)
    return QuantSpec(xp.asarray(scale), xp.asarray(zero), low, high, False, out_dtype, tuple(extent))


@pytest.mark.parametrize("out_dtype", INTEGER_DTYPES)
@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("saturate", [True, False], ids=["clip", "check-range"])
def test_fused_grid_quant_matches_numpy_for_every_dtype_pair(fused, launched, in_dtype, out_dtype, saturate):
    shape = (37, 40_000)  # about 1.5 M values: more than five waves of blocks on an H100/H200
    rng = numpy.random.default_rng(_seed(in_dtype, out_dtype, saturate))
    span = 30.0 if numpy.iinfo(out_dtype).bits == 8 and not saturate else 300.0
    values = rng.uniform(-span, span, shape)
    values.reshape(-1)[::4] = numpy.rint(values.reshape(-1)[::4] * 8) / 8 + 0.0625  # ties
    values.reshape(-1)[::997] = numpy.nan
    values.reshape(-1)[1::1999] = numpy.inf
    values = values.astype(in_dtype)
    seed = _seed(out_dtype, saturate)
    device_spec = _grid_spec(shape, out_dtype, seed, saturate, cupy, block_size=128)
    host_spec = _grid_spec(shape, out_dtype, seed, saturate, numpy, block_size=128)
    q, problems = fused.quantize(cupy.asarray(values), device_spec, check_finite=True)
    with numpy.errstate(invalid="ignore", over="ignore"):
        expected, expected_problems = NumpyBackend().quantize(values, host_spec, check_finite=True)
    assert isinstance(q, cupy.ndarray) and str(q.dtype) == out_dtype
    assert launched[-2:] == [  # the fast pass, then the exact pass over what it left
        cupy_kernels.kernel_name("quant_grid", in_dtype, out_dtype),
        cupy_kernels.kernel_name("quant_grid_rest", in_dtype, out_dtype),
    ]
    # where the integer is specified: finite inputs, clipped or (unclipped) inside the dtype
    defined = numpy.isfinite(values)
    if not saturate:
        defined &= fused_rounded_inside(values, host_spec, out_dtype)
    assert defined.mean() > 0.3
    host_q = to_numpy(q)
    numpy.testing.assert_array_equal(host_q[defined], expected[defined])
    assert to_numpy(problems.counts).tolist() == to_numpy(expected_problems.counts).tolist()
    device_dequant = QuantSpec(device_spec.scale, device_spec.zero_point, extent=device_spec.extent)
    restored = fused.dequantize(q, device_dequant, dtype=in_dtype)
    assert launched[-1] == cupy_kernels.kernel_name("dequant_grid", out_dtype, in_dtype)
    host_dequant = QuantSpec(host_spec.scale, host_spec.zero_point, extent=host_spec.extent)
    want = NumpyBackend().dequantize(host_q, host_dequant, dtype=in_dtype)
    numpy.testing.assert_array_equal(_bits(restored), _bits(want))


def fused_rounded_inside(values: numpy.ndarray, spec: QuantSpec, out_dtype: str) -> numpy.ndarray:
    """Where ``rint(x / scale + zero_point)`` (per block) lies inside ``out_dtype`` (a defined cast)."""
    extent = spec.extent
    scale, zero = (numpy.asarray(p, dtype=numpy.float64) for p in (spec.scale, spec.zero_point))
    for axis, (n, e) in enumerate(zip(values.shape, extent)):
        scale = numpy.repeat(scale, e, axis=axis).take(numpy.arange(n), axis=axis)
        zero = numpy.repeat(zero, e, axis=axis).take(numpy.arange(n), axis=axis)
    info = numpy.iinfo(out_dtype)
    with numpy.errstate(invalid="ignore", over="ignore"):
        rounded = numpy.rint(values.astype(numpy.float64) / scale + zero)
        return (rounded >= float(info.min)) & (rounded < float(info.max) + 1.0)


@pytest.mark.skipif(_N_DEVICES < 2, reason="needs two CUDA GPUs")
def test_per_block_parameters_and_results_on_a_second_gpu_stay_there():
    values = _values((40, 1000), "float32", 3)
    with cupy.cuda.Device(1):
        on_device = cupy.asarray(values)
    with cupy.cuda.Device(0):
        array = QuantizedArray(8, on_device, block_size=128, is_signed=True)
        restored = array.dequant()
    for result in (array.qvalues, restored, array.quantizer.scale, array.quantizer.zero_point, array.quantizer.offset):
        assert isinstance(result, cupy.ndarray) and result.device.id == 1
    expected = QuantizedArray(8, values, block_size=128, is_signed=True).qvalues
    numpy.testing.assert_array_equal(to_numpy(array.qvalues), expected)


# -- synchronisation -------------------------------------------------------------------------------


def test_per_block_quant_and_dequant_return_before_the_gpu_is_done(busy):
    # int16 output: with int8, quant reads the offset grid back to check that the union of the
    # blocks' clip ranges fits the dtype (n_bits=8 signed blocks of one value clip to [0, 255])
    host = numpy.random.default_rng(0).standard_normal((256, 4096)).astype(numpy.float32)
    values = cupy.asarray(host)
    quantizer = QuantizedArray(8, values, block_size=128, is_signed=True).quantizer
    with cupy.cuda.Stream(non_blocking=True) as stream:
        # Warm up on this stream: compile, load, leave the memory pool blocks cached.
        for _ in range(2):
            warm = quantizer.quant(values, dtype=cupy.int16, check_finite=False)
            warm_restored = quantizer.dequant(warm, dtype=cupy.float32)
            del warm, warm_restored
        stream.synchronize()

        started = time.perf_counter()
        busy(0.5)
        q = quantizer.quant(values, dtype=cupy.int16, check_finite=False)
        restored = quantizer.dequant(q, dtype=cupy.float32)
        returned = time.perf_counter() - started
        still_busy = not stream.done
        stream.synchronize()
        finished = time.perf_counter() - started

    assert_returned_while_busy(returned, still_busy, finished)
    on_host = QuantizedArray(8, host, block_size=128, is_signed=True).quantizer
    expected = on_host.quant(host, dtype=numpy.int16)
    numpy.testing.assert_array_equal(to_numpy(q), expected)
    numpy.testing.assert_array_equal(_bits(restored), _bits(on_host.dequant(expected, dtype=numpy.float32)))


def test_per_block_calibration_parameters_and_quant_return_before_the_gpu_is_done(busy):
    """docs/granularity.md: calibration, parameters and quant read nothing back until a value is read."""
    host = numpy.random.default_rng(1).standard_normal((256, 4096)).astype(numpy.float32)
    values = cupy.asarray(host)
    options = QuantizationOptions(8, is_signed=True, block_size=128)

    def pipeline() -> Any:
        stats = MinMaxQuantizationStats()
        stats.compute_quantization_stats(values, nan_policy="omit", with_uvalues=False, block_size=128)
        params = UniformQuantizationParameters()
        params.compute_quantization_parameters(options, stats)
        return UniformQuantizer(options, stats, params).quant(values, dtype=cupy.int16, check_finite=False)

    with cupy.cuda.Stream(non_blocking=True) as stream:
        for _ in range(2):
            warm = pipeline()
            del warm
        stream.synchronize()
        started = time.perf_counter()
        busy(0.5)
        q = pipeline()
        returned = time.perf_counter() - started
        still_busy = not stream.done
        stream.synchronize()
        finished = time.perf_counter() - started

    assert_returned_while_busy(returned, still_busy, finished)
    expected = QuantizedArray(8, host, block_size=128, is_signed=True).quantizer.quant(host, dtype=numpy.int16)
    numpy.testing.assert_array_equal(to_numpy(q), expected)


def test_per_block_parameters_on_gpu_are_checked_at_the_first_read():
    """Computing them reads nothing back; a checked quant (or a document) refuses a bad block."""
    host = numpy.random.default_rng(7).standard_normal((4, 256)).astype(numpy.float32)
    host[1, :128] = numpy.nan  # a block with nothing finite under nan_policy="omit"
    values = cupy.asarray(host)
    options = QuantizationOptions(8, is_signed=True, block_size=128)
    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats(values, nan_policy="omit", with_uvalues=False, block_size=128)
    params = UniformQuantizationParameters()
    params.compute_quantization_parameters(options, stats)  # not refused yet: nothing read back
    quantizer = UniformQuantizer(options, stats, params)
    clean = cupy.asarray(numpy.nan_to_num(host))
    with pytest.raises(ValueError, match="1 of 8 block range"):
        quantizer.quant(clean, dtype=cupy.int16)
    with pytest.raises(ValueError, match="1 of 8 block range"):
        params.dump_dict()


# -- histograms on the GPU -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("max_bins", [64, 4096, 2 * cupy_kernels.HIST_SHARED_BINS])
def test_histogram_update_on_gpu_matches_numpy(dtype, max_bins):
    rng = numpy.random.default_rng(_seed("histogram", dtype, max_bins))
    batches = [
        rng.standard_normal(100_003) * 0.01,  # a narrow range first
        rng.standard_normal(1 << 20),  # then wider (the counts are re-binned on the device)
        numpy.concatenate([rng.standard_normal(5000) * 50.0, [0.0, -0.0, 1e-300]]),
        numpy.clip(rng.standard_normal(1 << 20), -3.0, 3.0),  # within the range: the scan counts it all
    ]
    on_device, on_host = HistogramQuantizationStats(max_bins), HistogramQuantizationStats(max_bins)
    for batch in batches:
        on_device.update(cupy.asarray(batch.astype(dtype)))
        on_host.update(batch.astype(dtype))
    assert on_device == on_host
    assert on_device.histogram.total == sum(b.size for b in batches)


def test_histogram_update_on_gpu_handles_nan_like_numpy():
    values = numpy.random.default_rng(5).standard_normal(70_000).astype(numpy.float32)
    values[::1000] = numpy.nan
    values[7] = numpy.inf
    omitted, expected = HistogramQuantizationStats(), HistogramQuantizationStats()
    omitted.update(cupy.asarray(values), nan_policy="omit")
    expected.update(values, nan_policy="omit")
    assert omitted == expected
    refused = HistogramQuantizationStats()
    refused.update(cupy.asarray(values))  # nothing read back yet: refused when read
    with pytest.raises(ValueError, match="non-finite"):
        _ = refused.histogram


def test_histogram_update_returns_before_the_gpu_is_done(busy):
    host = numpy.random.default_rng(2).standard_normal(1 << 22).astype(numpy.float32)
    values = cupy.asarray(host)
    with cupy.cuda.Stream(non_blocking=True) as stream:
        warm = HistogramQuantizationStats()
        warm.update(values)
        warm.update(values * 2)
        _ = warm.histogram  # the one read-back
        stream.synchronize()
        stats = HistogramQuantizationStats()
        started = time.perf_counter()
        busy(0.5)
        stats.update(values)
        stats.update(values)
        returned = time.perf_counter() - started
        still_busy = not stream.done
        stream.synchronize()
        finished = time.perf_counter() - started

    assert_returned_while_busy(returned, still_busy, finished)
    expected = HistogramQuantizationStats()
    expected.update(host)
    expected.update(host)
    assert stats == expected
