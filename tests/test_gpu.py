"""The CuPy backend on an NVIDIA GPU: fused kernels bit for bit, placement, and no hidden syncs.

Each fused kernel (quant, dequant, min/max) is compared with two references on
the same data: the NumPy backend on a host copy, and the generic Array API
backend over ``array_api_compat.cupy`` on the device. Sizes straddle the
block, unroll and grid boundaries of the kernels. Results must stay on the
input's device; quant (without checks), dequant and min/max must return while
the GPU is still busy with earlier work on the stream, and quant with a check
must wait for its one read-back.

The whole module is skipped, with the reason, where CuPy or a CUDA GPU is missing.
"""

from __future__ import annotations

import threading
import time
import zlib
from typing import Any, Callable, List, Optional, Tuple

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

import array_api_compat.cupy as compat_cupy  # noqa: E402  (after the skip on purpose)
from gpu_sync import assert_returned_while_busy, busy_launcher  # noqa: E402

import qarray  # noqa: E402
from qarray import (  # noqa: E402
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizationParameters,
    UniformQuantizer,  # noqa: E402
)
from qarray.backends import (  # noqa: E402
    ArrayAPIBackend,
    NumpyBackend,
    backend_for,
    cupy_kernels,  # noqa: E402
    get_backend,
)
from qarray.backends.cupy_backend import CupyBackend  # noqa: E402
from qarray.core.dtypes import exact_float_bounds  # noqa: E402
from qarray.core.namespace import to_numpy  # noqa: E402

from kernel_calls import dequantize, quantize  # noqa: E402

pytestmark = pytest.mark.gpu

INTEGER_DTYPES = tuple(cupy_kernels.INTEGER_TYPES)
FLOAT_DTYPES = tuple(cupy_kernels.FLOAT_TYPES)


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def fused() -> CupyBackend:
    backend = get_backend("cupy")
    assert isinstance(backend, CupyBackend)
    return backend


@pytest.fixture(scope="module")
def generic() -> ArrayAPIBackend:
    return ArrayAPIBackend(compat_cupy, name="cupy-generic")


@pytest.fixture(scope="module")
def host() -> NumpyBackend:
    return NumpyBackend()


def _host(array: Any) -> numpy.ndarray:
    """A host copy of an array (the one way these tests read the device)."""
    return to_numpy(array)


def _seed(*parts: Any) -> int:
    """A seed that is the same in every process (``hash`` of a str is not)."""
    return zlib.crc32(repr(parts).encode())


def _capacity(fused: CupyBackend, kind: str, in_dtype: str, out_dtype: Optional[str]) -> int:
    """The grid the backend uses for a very large array (one full wave of blocks)."""
    name = cupy_kernels.kernel_name(kind, in_dtype, out_dtype)
    with cupy.cuda.Device(0):
        return fused._grid(cupy_kernels.kernel(name), name, 1 << 40, 0)


def _boundary_sizes(fused: CupyBackend, kind: str, in_dtype: str, out_dtype: Optional[str] = None) -> List[int]:
    """Sizes around the block, the one-wave and the 4x-unrolled boundaries of one kernel."""
    block = cupy_kernels.BLOCK_THREADS
    wave = _capacity(fused, kind, in_dtype, out_dtype) * block
    sizes = {1, 2, 31, 33, block - 1, block, block + 1, 3 * block + 7}
    for edge in (wave, 4 * wave, 5 * wave, 8 * wave, 12 * wave):  # 8: a turn of two vectors of four
        sizes.update({edge - 1, edge, edge + 1})
    sizes.add(4 * wave + 3 * (wave // 2) + 17)
    return sorted(sizes)


def _host_quantize(host: NumpyBackend, values: numpy.ndarray, *args: Any) -> Tuple[Any, Any]:
    """The NumPy reference, quiet about the casts of NaN and out-of-range values."""
    with numpy.errstate(invalid="ignore", over="ignore"):
        return quantize(host, values, *args)


def _clip_for(dtype: str, narrow: bool = False) -> Tuple[int, int]:
    """A clipping range that fits ``dtype`` (at most 53 bits, as qarray supports)."""
    info = numpy.iinfo(dtype)
    bits = min(info.bits, 53)
    if info.min < 0:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2**bits - 1
    return (low + 1 if narrow else low), high


def _float_values(
    rng: numpy.random.Generator,
    size: int,
    dtype: str,
    low: float,
    high: float,
    scale: float,
    zero_point: float,
    with_nonfinite: bool = False,
) -> numpy.ndarray:
    """Values whose quotients cover ``[low - 3, high + 3]``, a quarter of them exact ties."""
    margin = max(3.0, (high - low) * 0.01)
    units = rng.uniform(low - margin, high + margin, size)
    ties = rng.random(size) < 0.25
    units[ties] = numpy.floor(units[ties]) + 0.5
    values = ((units - zero_point) * scale).astype(dtype)
    if with_nonfinite and size >= 4:
        positions = rng.choice(size, size=max(1, size // 50), replace=False)
        values[positions[0::3]] = numpy.nan
        values[positions[1::3]] = numpy.inf
        values[positions[2::3]] = -numpy.inf
        values[0] = numpy.nan
        values[-1] = numpy.inf
    return values


def _bits(array: numpy.ndarray) -> numpy.ndarray:
    """The raw bits of a float array, so that comparisons see -0.0 and NaN payloads."""
    array = numpy.ascontiguousarray(array)
    return array.view({4: numpy.uint32, 8: numpy.uint64}[array.dtype.itemsize])


def _valid_quant_positions(values: numpy.ndarray, scale: float, zero_point: float, clip, fit) -> numpy.ndarray:
    """Where the contract specifies the integer: finite inputs that are clipped or fit."""
    with numpy.errstate(invalid="ignore", over="ignore"):
        rounded = numpy.rint(values.astype(numpy.float64) / scale + zero_point)
    if clip is not None:
        return ~numpy.isnan(values)
    return numpy.isfinite(values) & (rounded >= fit[0]) & (rounded <= fit[1])


# -- quant -----------------------------------------------------------------------------------


@pytest.mark.parametrize("out_dtype", INTEGER_DTYPES)
@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mode", ["clip", "narrow", "fit"])
@pytest.mark.parametrize("scale", [0.5, 0.37])
def test_fused_quant_matches_numpy_and_generic(fused, generic, host, in_dtype, out_dtype, mode, scale):
    rng = numpy.random.default_rng(_seed(in_dtype, out_dtype, mode, scale))
    clip = _clip_for(out_dtype, narrow=(mode == "narrow")) if mode != "fit" else None
    info = numpy.iinfo(out_dtype)
    fit = exact_float_bounds(out_dtype) if mode == "fit" else None
    low, high = clip if clip is not None else (float(max(info.min, -(2**60))), float(min(info.max, 2**60)))
    zero_point = float(numpy.rint((low + high) / 2)) if info.bits <= 32 else 0.0
    for size in (1, 257, 10_007):
        values = _float_values(rng, size, in_dtype, low, high, scale, zero_point)
        device_values = cupy.asarray(values)
        expected, expected_problems = _host_quantize(host, values, scale, zero_point, clip, out_dtype, True, fit)
        got, problems = quantize(fused, device_values, scale, zero_point, clip, out_dtype, True, fit)
        reference, reference_problems = quantize(generic,
            device_values, scale, zero_point, clip, out_dtype, True, fit
        )
        valid = _valid_quant_positions(values, scale, zero_point, clip, fit)
        assert isinstance(got, cupy.ndarray) and got.dtype == numpy.dtype(out_dtype)
        assert got.shape == values.shape
        numpy.testing.assert_array_equal(_host(got)[valid], expected[valid])
        numpy.testing.assert_array_equal(_host(got)[valid], _host(reference)[valid])
        numpy.testing.assert_array_equal(_host(problems), expected_problems)
        numpy.testing.assert_array_equal(_host(problems), _host(reference_problems))


@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
def test_fused_quant_at_and_next_to_ties_with_any_scale(fused, host, in_dtype):
    """The kernels round a candidate in the input's precision and keep it only far from a
    tie: ties, their neighbours and values a little farther out, for scales that are no
    power of two and zero points integral or not, give NumPy's float64 integers."""
    rng = numpy.random.default_rng(_seed("near ties", in_dtype))
    for scale in rng.uniform(0.5, 2.0, 4) * 10.0 ** rng.integers(-25, 25, 4):
        for zero_point in (float(rng.integers(-200, 200)), 0.5):
            ties = ((numpy.arange(-300.0, 300.0) + 0.5 - zero_point) * scale).astype(in_dtype)
            parts, up, down = [ties], ties, ties
            for _ in range(3):
                up = numpy.nextafter(up, numpy.inf, dtype=ties.dtype)
                down = numpy.nextafter(down, -numpy.inf, dtype=ties.dtype)
                parts += [up, down]
            parts.append((rng.uniform(-300.0, 300.0, 200_000) * scale).astype(in_dtype))
            values = numpy.concatenate(parts)
            for clip in ((-250, 250), None):
                fit = (-200.0, 200.0) if clip is None else None
                expected, expected_problems = _host_quantize(
                    host, values, float(scale), zero_point, clip, "int16", True, fit
                )
                got, problems = quantize(
                    fused, cupy.asarray(values), float(scale), zero_point, clip, "int16", True, fit
                )
                valid = _valid_quant_positions(values, float(scale), zero_point, clip, fit)
                numpy.testing.assert_array_equal(_host(got)[valid], expected[valid])
                numpy.testing.assert_array_equal(_host(problems), expected_problems)


@pytest.mark.parametrize("offset", [1, 2, 3])
def test_fused_kernels_on_views_off_the_vector_boundary(fused, host, offset):
    """Arrays that do not start on a 4-value boundary take the one-value-at-a-time path."""
    values = (numpy.random.default_rng(offset).standard_normal(40_011) * 40.0).astype(numpy.float32)
    device = cupy.asarray(values)
    got, _ = quantize(fused, device[offset:], 0.37, 3.0, (-128, 127), "int8", False)
    expected, _ = _host_quantize(host, values[offset:], 0.37, 3.0, (-128, 127), "int8", False)
    numpy.testing.assert_array_equal(_host(got), expected)
    restored = dequantize(fused, got[offset:], 0.37, 3.0, "float32")
    expected_restored = dequantize(host, expected[offset:], 0.37, 3.0, "float32")
    numpy.testing.assert_array_equal(_bits(_host(restored)), _bits(expected_restored))
    low, high = fused.minmax(device[offset:])
    assert float(_host(low)) == float(values[offset:].min()) and float(_host(high)) == float(values[offset:].max())


@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
def test_fused_quant_matches_numpy_across_kernel_boundaries(fused, host, in_dtype):
    rng = numpy.random.default_rng(7)
    for size in _boundary_sizes(fused, "quant", in_dtype, "int8"):
        values = _float_values(rng, size, in_dtype, -128, 127, 0.05, 3.0, with_nonfinite=True)
        expected, expected_problems = _host_quantize(host, values, 0.05, 3.0, (-128, 127), "int8", True, None)
        got, problems = quantize(fused, cupy.asarray(values), 0.05, 3.0, (-128, 127), "int8", True, None)
        valid = ~numpy.isnan(values)
        numpy.testing.assert_array_equal(_host(got)[valid], expected[valid], err_msg=f"size {size}")
        numpy.testing.assert_array_equal(_host(problems), expected_problems, err_msg=f"size {size}")


def test_fused_quant_counts_values_outside_the_dtype_and_nan_as_outside(fused, host, generic):
    values = numpy.array([0.0, 127.4, 127.6, -128.6, -128.4, numpy.nan, numpy.inf, 1e300], dtype=numpy.float64)
    fit = exact_float_bounds("int8")
    expected, expected_problems = _host_quantize(host, values, 1.0, 0.0, None, "int8", True, fit)
    got, problems = quantize(fused, cupy.asarray(values), 1.0, 0.0, None, "int8", True, fit)
    reference, reference_problems = quantize(generic, cupy.asarray(values), 1.0, 0.0, None, "int8", True, fit)
    assert _host(problems).tolist() == expected_problems.tolist() == [2, 5]
    assert _host(reference_problems).tolist() == [2, 5]
    inside = [0, 1, 4]
    assert _host(got)[inside].tolist() == expected[inside].tolist() == [0, 127, -128]
    _, only_fit = quantize(fused, cupy.asarray(values), 1.0, 0.0, None, "int8", False, fit)
    assert _host(only_fit).tolist() == [0, 5]


def test_fused_quant_without_checks_returns_no_problems(fused):
    got, problems = quantize(fused, cupy.asarray([0.4, 2.6, -9.0]), 1.0, 0.0, (0, 3), "uint8", False, None)
    assert problems is None
    assert _host(got).tolist() == [0, 3, 0]


def test_fused_quant_rounds_ties_to_even(fused):
    values = cupy.asarray([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5], dtype=cupy.float32)
    got, _ = quantize(fused, values, 1.0, 0.0, (-128, 127), "int8", True, None)
    assert _host(got).tolist() == [-2, -2, 0, 0, 2, 2, 4]


def test_fused_quant_of_float32_subnormals_matches_numpy(fused, host):
    # CuPy compiles with -ftz=true; the kernel must still read float32 subnormals exactly.
    tiny = numpy.float32(numpy.finfo(numpy.float32).smallest_subnormal)
    values = (numpy.arange(-300, 301, dtype=numpy.float32) * tiny).astype(numpy.float32)
    scale = float(tiny) / 4.0
    expected, _ = quantize(host, values, scale, 0.0, (-(2**31), 2**31 - 1), "int32", True, None)
    got, problems = quantize(fused, cupy.asarray(values), scale, 0.0, (-(2**31), 2**31 - 1), "int32", True, None)
    numpy.testing.assert_array_equal(_host(got), expected)
    assert _host(problems).tolist() == [0, 0]
    assert int(numpy.abs(expected).max()) == 1200


@pytest.mark.parametrize("layout", ["strided", "fortran", "zero-d", "empty"])
def test_fused_quant_takes_any_layout(fused, host, layout):
    rng = numpy.random.default_rng(3)
    base = rng.standard_normal((37, 29)).astype(numpy.float32)
    if layout == "strided":
        values = base[::2, 1::3]
    elif layout == "fortran":
        values = numpy.asfortranarray(base)
    elif layout == "zero-d":
        values = numpy.asarray(base[3, 4])
    else:
        values = base[:0]
    device_values = cupy.asarray(values) if layout != "strided" else cupy.asarray(base)[::2, 1::3]
    expected, expected_problems = quantize(host, values, 0.02, 1.0, (-128, 127), "int8", True, None)
    got, problems = quantize(fused, device_values, 0.02, 1.0, (-128, 127), "int8", True, None)
    assert got.shape == values.shape
    numpy.testing.assert_array_equal(_host(got), expected)
    numpy.testing.assert_array_equal(_host(problems), expected_problems)


def test_fused_quant_writes_into_out(fused, host):
    values = numpy.linspace(-3, 3, 1001)
    expected, _ = quantize(host, values, 0.03, 0.0, (-128, 127), "int16", False, None)
    out = cupy.empty(values.shape, dtype=cupy.int16)
    got, _ = quantize(fused, cupy.asarray(values), 0.03, 0.0, (-128, 127), "int16", False, None, out)
    assert got is out
    numpy.testing.assert_array_equal(_host(out), expected)
    big = cupy.zeros(2 * values.size, dtype=cupy.int16)
    strided = big[::2]
    got, _ = quantize(fused, cupy.asarray(values), 0.03, 0.0, (-128, 127), "int16", False, None, strided)
    assert got is strided
    numpy.testing.assert_array_equal(_host(strided), expected)
    assert not big[1::2].any()


def test_fused_quant_refuses_a_wrong_out(fused):
    values = cupy.zeros(4)
    with pytest.raises(ValueError, match="out must have shape"):
        quantize(fused, values, 1.0, 0.0, (0, 3), "int8", False, None, cupy.empty(5, dtype=cupy.int8))
    with pytest.raises(TypeError, match="out must be a CuPy array"):
        quantize(fused, values, 1.0, 0.0, (0, 3), "int8", False, None, numpy.empty(4, dtype=numpy.int8))


# -- dequant ---------------------------------------------------------------------------------


def _integer_values(rng: numpy.random.Generator, dtype: str, size: int) -> numpy.ndarray:
    info = numpy.iinfo(dtype)
    values = rng.integers(info.min, info.max, size=size, dtype=dtype, endpoint=True)
    values[: min(size, 4)] = numpy.array([info.min, info.max, 0, 1], dtype=dtype)[: min(size, 4)]
    return values


@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("in_dtype", INTEGER_DTYPES)
@pytest.mark.parametrize("zero_point", [0.0, 3.0, -129.0])
def test_fused_dequant_matches_numpy_and_generic(fused, generic, host, in_dtype, out_dtype, zero_point):
    rng = numpy.random.default_rng(_seed(in_dtype, out_dtype, zero_point))
    for size in (1, 255, 10_007):
        qvalues = _integer_values(rng, in_dtype, size)
        expected = dequantize(host, qvalues, 0.37, zero_point, out_dtype)
        got = dequantize(fused, cupy.asarray(qvalues), 0.37, zero_point, out_dtype)
        reference = dequantize(generic, cupy.asarray(qvalues), 0.37, zero_point, out_dtype)
        assert isinstance(got, cupy.ndarray) and got.dtype == numpy.dtype(out_dtype)
        numpy.testing.assert_array_equal(_bits(_host(got)), _bits(expected))
        numpy.testing.assert_array_equal(_bits(_host(got)), _bits(_host(reference)))


def test_fused_dequant_matches_numpy_across_kernel_boundaries(fused, host):
    rng = numpy.random.default_rng(11)
    for size in _boundary_sizes(fused, "dequant", "int8", "float32"):
        qvalues = _integer_values(rng, "int8", size)
        expected = dequantize(host, qvalues, 0.01, 7.0, "float32")
        got = dequantize(fused, cupy.asarray(qvalues), 0.01, 7.0, "float32")
        numpy.testing.assert_array_equal(_bits(_host(got)), _bits(expected), err_msg=f"size {size}")


def test_fused_dequant_to_float32_rounds_subnormals_like_numpy(fused, host):
    # -ftz=true would flush these results to zero; NumPy rounds them to nearest even.
    scale = float(numpy.finfo(numpy.float32).smallest_subnormal) * 0.75
    qvalues = numpy.arange(-5000, 5001, dtype=numpy.int32)
    expected = dequantize(host, qvalues, scale, 0.0, "float32")
    got = dequantize(fused, cupy.asarray(qvalues), scale, 0.0, "float32")
    numpy.testing.assert_array_equal(_bits(_host(got)), _bits(expected))
    assert numpy.count_nonzero(expected) > 0


def test_fused_dequant_writes_into_out(fused, host):
    qvalues = numpy.arange(-50, 50, dtype=numpy.int16)
    expected = dequantize(host, qvalues, 0.25, 1.0, "float64")
    out = cupy.empty(qvalues.shape, dtype=cupy.float64)
    got = dequantize(fused, cupy.asarray(qvalues), 0.25, 1.0, "float64", out)
    assert got is out
    numpy.testing.assert_array_equal(_host(out), expected)


# -- min / max -------------------------------------------------------------------------------


def _expected_minmax(values: numpy.ndarray, omit: bool) -> Tuple[float, float]:
    if omit:
        finite = values[numpy.isfinite(values)]
        if finite.size == 0:
            return numpy.inf, -numpy.inf
        return finite.min(), finite.max()
    return values.min(), values.max()


def _assert_same_number(got: Any, expected: Any) -> None:
    got, expected = float(got), float(expected)
    if numpy.isnan(expected):
        assert numpy.isnan(got)
    else:
        assert got == expected


@pytest.mark.parametrize("omit", [False, True])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_fused_minmax_matches_numpy_and_generic(fused, generic, dtype, omit):
    rng = numpy.random.default_rng(5)
    for size in _boundary_sizes(fused, "minmax_partial", dtype):
        values = rng.standard_normal(size).astype(dtype)
        low, high = fused.minmax(cupy.asarray(values), omit_nonfinite=omit)
        assert low.shape == () and high.shape == ()
        assert low.dtype == values.dtype and high.dtype == values.dtype
        expected = _expected_minmax(values, omit)
        reference = generic.minmax(cupy.asarray(values), omit_nonfinite=omit)
        for got, want, generic_value in zip((low, high), expected, reference):
            _assert_same_number(_host(got), want)
            _assert_same_number(_host(got), _host(generic_value))


@pytest.mark.parametrize("omit", [False, True])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("where", ["first", "last", "middle", "block-edge", "all"])
@pytest.mark.parametrize("bad", [numpy.nan, numpy.inf, -numpy.inf])
def test_fused_minmax_handles_non_finite_values_like_numpy(fused, dtype, omit, where, bad):
    size = 3 * cupy_kernels.BLOCK_THREADS * 5 + 11
    values = numpy.random.default_rng(1).uniform(-2, 2, size).astype(dtype)
    block = cupy_kernels.BLOCK_THREADS
    edges = [block - 1, block, size - block - 1]
    index = {"first": [0], "last": [size - 1], "middle": [size // 2], "block-edge": edges}
    if where == "all":
        values[:] = bad
    else:
        values[index[where]] = bad
    low, high = fused.minmax(cupy.asarray(values), omit_nonfinite=omit)
    expected = _expected_minmax(values, omit)
    _assert_same_number(_host(low), expected[0])
    _assert_same_number(_host(high), expected[1])


def test_fused_minmax_of_float32_subnormals_is_exact(fused):
    tiny = numpy.finfo(numpy.float32).smallest_subnormal
    values = (numpy.array([5, -3, 7, 2, -1], dtype=numpy.float32) * tiny).astype(numpy.float32)
    low, high = fused.minmax(cupy.asarray(values))
    assert _host(low) == values.min() and _host(high) == values.max()
    assert _host(low) != 0 and _host(high) != 0


def test_fused_minmax_of_empty_values_raises_like_numpy(fused):
    with pytest.raises(ValueError):
        fused.minmax(cupy.zeros(0, dtype=cupy.float32))


# -- per-channel zero points, QAT, the public API ---------------------------------------------


def test_per_channel_zero_point_falls_back_and_matches_numpy(host, fused):
    rng = numpy.random.default_rng(2)
    values = rng.standard_normal((64, 3)).astype(numpy.float32)
    zero_point = numpy.array([-3.0, 0.0, 12.0])
    expected, _ = quantize(host, values, 0.05, zero_point, (-128, 127), "int8", True, None)
    device_values = cupy.asarray(values)
    got, problems = quantize(fused,
        device_values, 0.05, fused.parameter(zero_point, device_values), (-128, 127), "int8", True, None
    )
    numpy.testing.assert_array_equal(_host(got), expected)
    assert _host(problems).tolist() == [0, 0]


def test_parameter_copies_an_array_zero_point_to_the_device_once(fused):
    like = cupy.zeros((4, 3))
    zero_point = numpy.array([1.0, 2.0, 3.0])
    first = fused.parameter(zero_point, like)
    assert isinstance(first, cupy.ndarray) and first.device.id == like.device.id
    assert fused.parameter(zero_point, like) is first
    zero_point[1] = 5.0  # changed in place: the cached copy must not be reused
    second = fused.parameter(zero_point, like)
    assert second is not first
    assert _host(second).tolist() == [1.0, 5.0, 3.0]
    assert fused.parameter(2, like) == 2.0


def test_unique_rounded_on_device_matches_numpy(fused, host):
    values = numpy.random.default_rng(4).standard_normal(100_003).astype(numpy.float32)
    values[::97] = -0.0
    got = fused.unique_rounded(cupy.asarray(values))
    expected = host.unique_rounded(values)
    assert isinstance(got, cupy.ndarray)
    numpy.testing.assert_array_equal(_bits(_host(got)), _bits(expected))


OPTION_SETS = [
    dict(n_bits=2),
    dict(n_bits=8),
    dict(n_bits=8, is_signed=True),
    dict(n_bits=8, is_signed=True, is_symmetric=True),
    dict(n_bits=16, is_signed=True),
    dict(n_bits=7, is_qat=True),
    dict(n_bits=31),
]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("settings", OPTION_SETS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_quantized_array_on_gpu_matches_numpy(dtype, settings):
    n_bits = settings["n_bits"]
    rng = numpy.random.default_rng(n_bits)
    values = rng.standard_normal(50_001).astype(dtype)
    if settings.get("is_qat"):
        values = (numpy.rint(values * 10) / 10).astype(dtype)
    options = QuantizationOptions(**settings)
    on_host = QuantizedArray(n_bits, values, options=options)
    on_device = QuantizedArray(n_bits, cupy.asarray(values), options=options)
    assert on_device.backend.name == "cupy"
    assert isinstance(on_device.qvalues, cupy.ndarray)
    assert on_device.quantizer.scale == on_host.quantizer.scale
    assert on_device.quantizer.zero_point == on_host.quantizer.zero_point
    numpy.testing.assert_array_equal(_host(on_device.qvalues), on_host.qvalues)
    numpy.testing.assert_array_equal(_bits(_host(on_device.dequant())), _bits(on_host.dequant()))


def test_host_values_with_the_cupy_backend_are_moved_once():
    values = numpy.linspace(-1, 1, 1001)
    qa = QuantizedArray(8, values, backend="cupy")
    assert isinstance(qa.values, cupy.ndarray) and isinstance(qa.qvalues, cupy.ndarray)
    numpy.testing.assert_array_equal(_host(qa.qvalues), QuantizedArray(8, values).qvalues)


def test_quant_refuses_nan_on_gpu():
    quantizer = UniformQuantizer(QuantizationOptions(8), params=UniformQuantizationParameters(0.1, 128, 0))
    with pytest.raises(ValueError, match="non-finite"):
        quantizer.quant(cupy.asarray([0.0, numpy.nan, 1.0]))


# -- placement -------------------------------------------------------------------------------


def test_results_stay_on_the_input_device(fused):
    values = cupy.asarray(numpy.linspace(-1, 1, 999, dtype=numpy.float32))
    q, problems = quantize(fused, values, 0.01, 0.0, (-128, 127), "int8", True, None)
    restored = dequantize(fused, q, 0.01, 0.0, "float32")
    low, high = fused.minmax(values)
    for array in (q, problems, restored, low, high, fused.copy(values), fused.unique_rounded(values)):
        assert isinstance(array, cupy.ndarray)
        assert array.device.id == values.device.id


@pytest.mark.skipif(_N_DEVICES < 2, reason="needs two CUDA GPUs")
def test_arrays_on_a_second_gpu_stay_there(fused, host):
    with cupy.cuda.Device(1):
        values = cupy.asarray(numpy.linspace(-1, 1, 4097))
    with cupy.cuda.Device(0):
        q, problems = quantize(fused, values, 0.01, 3.0, (-128, 127), "int8", True, None)
        restored = dequantize(fused, q, 0.01, 3.0, "float64")
        low, high = fused.minmax(values)
        copied = fused.copy(values)
        zero = fused.parameter(numpy.array([1.0]), values)
    for array in (q, problems, restored, low, high, copied, zero):
        assert array.device.id == 1
    expected, _ = quantize(host, _host(values), 0.01, 3.0, (-128, 127), "int8", True, None)
    numpy.testing.assert_array_equal(_host(q), expected)


# -- synchronisation -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def busy() -> Callable[[float], None]:
    """Enqueue a one-thread kernel that spins for about ``seconds`` on the current stream."""
    return busy_launcher()


def _quantizer() -> UniformQuantizer:
    options = QuantizationOptions(8, is_signed=True)
    return UniformQuantizer(options, params=UniformQuantizationParameters(0.02, 3, 128))


def test_quant_dequant_and_minmax_return_before_the_gpu_is_done(fused, busy):
    values = cupy.asarray(numpy.random.default_rng(0).standard_normal(1 << 20).astype(numpy.float32))
    quantizer = _quantizer()
    with cupy.cuda.Stream(non_blocking=True) as stream:
        # Warm up on this stream: compile, load, and leave the memory pool blocks cached.
        for _ in range(2):
            warm = quantizer.quant(values, dtype=cupy.int8, check_finite=False)
            warm_restored = quantizer.dequant(warm, dtype=cupy.float32)
            warm_range = fused.minmax(values)
            del warm, warm_restored, warm_range
        stream.synchronize()

        started = time.perf_counter()
        busy(0.5)
        q = quantizer.quant(values, dtype=cupy.int8, check_finite=False)
        restored = quantizer.dequant(q, dtype=cupy.float32)
        low, high = fused.minmax(values)
        returned = time.perf_counter() - started
        still_busy = not stream.done
        stream.synchronize()
        finished = time.perf_counter() - started

    assert_returned_while_busy(returned, still_busy, finished)
    host_values = _host(values)
    expected = _quantizer().quant(host_values, dtype=numpy.int8)
    numpy.testing.assert_array_equal(_host(q), expected)
    numpy.testing.assert_array_equal(_bits(_host(restored)), _bits(_quantizer().dequant(expected, dtype=numpy.float32)))
    assert float(_host(low)) == host_values.min() and float(_host(high)) == host_values.max()


def test_quant_with_check_finite_reads_the_problems_back(busy):
    values = cupy.asarray(numpy.linspace(-1, 1, 1 << 16, dtype=numpy.float32))
    quantizer = _quantizer()
    with cupy.cuda.Stream(non_blocking=True) as stream:
        quantizer.quant(values, dtype=cupy.int8)
        stream.synchronize()
        busy(0.2)
        q = quantizer.quant(values, dtype=cupy.int8)
        assert stream.done, "quant with check_finite=True returned before its read-back"
    numpy.testing.assert_array_equal(_host(q), _quantizer().quant(_host(values), dtype=numpy.int8))
    with pytest.raises(ValueError, match="non-finite"):
        quantizer.quant(cupy.asarray([0.0, numpy.inf]), dtype=cupy.int8)


def test_kernels_run_on_the_current_stream(fused):
    values = cupy.asarray(numpy.linspace(-1, 1, 1 << 18))
    with cupy.cuda.Stream(non_blocking=True) as stream:
        q, _ = quantize(fused, values, 0.01, 0.0, (-128, 127), "int8", False, None)
        low, high = fused.minmax(values)
        stream.synchronize()
    assert float(_host(low)) == -1.0 and float(_host(high)) == 1.0
    assert int(_host(q)[0]) == -100


def test_kernels_compile_once_under_concurrent_first_use():
    names = cupy_kernels.kernel_names()
    found: List[Any] = []

    def fetch() -> None:
        found.append(tuple(cupy_kernels.kernel(name) for name in names))

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8
    assert all(all(a is b for a, b in zip(found[0], other)) for other in found)


def test_backend_for_cupy_arrays_is_the_fused_backend():
    assert isinstance(backend_for(cupy.zeros(3)), CupyBackend)
    assert qarray.backends.get_backend("cupy") is backend_for(cupy.zeros(3))
