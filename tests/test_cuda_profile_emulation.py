"""The numerics profiles' float32 CUDA kernels, launched by the CuPy backend's own code on the CPU emulation.

``qarray_quant32_<float>_<int>`` (ONNX Runtime's ``rint(float32(x) / scale)``, or with
``FLAG_RECIPROCAL`` torchao's ``rint(float32(x) * (1 / scale))``), ``qarray_dequant32_<int>_<float>``
(``float32(q - zero_point) * scale`` in float32) and their grid forms run here as
:meth:`CupyBackend.quantize` and :meth:`CupyBackend.dequantize` launch them, with NumPy standing
in for CuPy and the real kernel source compiled for the CPU (``tests/cuda_emulation``, whose
``float`` flushes subnormals as CuPy's ``-ftz=true`` does).

The reference is the generic Array API path over NumPy (:class:`ArrayAPIBackend`): integers bit
for bit wherever the cast is defined (NaN and out-of-range casts are unspecified), the problem
counts exactly, dequantized floats bit for bit. An independent NumPy reading of the rule checks
the reference too. Covered: every dtype pair, both arithmetics, per tensor and per block (blocks
whose last one is shorter, layouts with and without vectors of four), float32 ties of the
quotient and of the product and their neighbours, float64 inputs at float32 rounding ties,
values beyond the range and beyond float32, NaN and ±Inf with counts, subnormal inputs, scales,
reciprocals and results, every flag combination, grids that make the grid-stride loop turn.

What this cannot show: that the GPU's ``__fdiv_rn``, ``__fmul_rn`` and ``rintf`` under
``-ftz=true`` are IEEE float32 with flushed subnormals, as modelled (tests/test_gpu_profiles.py
checks the bits on a GPU), timings and synchronisation. Skipped, with the reason, where no C++
compiler is found or the platform has no ucontext.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy
import pytest

from qarray import QuantizedArray, primitives
from qarray.backends import NumpyBackend, cupy_kernels
from qarray.backends.spec import QuantSpec
from qarray.core.dtypes import exact_float_bounds
from qarray.core.granularity import block_extent

from bits import assert_same_bits
from cuda_emulation.backend import launched_kinds, on_device, poisoned
from cuda_emulation.build import EmulatedModule
from cuda_emulation.inputs import clip_for, defined_casts, float32_subnormals
from profile_inputs import (
    GENERIC,
    SCALES,
    block_values,
    float32_ties,
    integers,
    neighbours,
    profile_values,
    rounded32,
    spread,
)

FLOATS = tuple(cupy_kernels.FLOAT_TYPES)
INTEGERS = tuple(cupy_kernels.INTEGER_TYPES)
ARITHMETICS = ("float32_divide", "float32_reciprocal")
FULL_WAVE = 132 * (2048 // cupy_kernels.BLOCK_THREADS)
"""What ``_grid`` picks on an H100/H200 (132 multiprocessors, 8 resident blocks of 256 threads)."""


# ---- references -----------------------------------------------------------------------------------


def check_quant(
    emulation: Any, values: numpy.ndarray, spec: QuantSpec, check_finite: bool = True
) -> Tuple[numpy.ndarray, Optional[numpy.ndarray], numpy.ndarray]:
    """Quantize emulated and with the generic path: defined integers and counts the same.

    Returns ``(q, problems, expected rounded float64 values)``.
    """
    q, problems = emulation.quantize(values, spec, check_finite)
    with numpy.errstate(all="ignore"):
        expected, expected_problems = GENERIC.quantize(values, spec, check_finite=check_finite)
    rounded = rounded32(values, spec)
    defined = defined_casts(rounded, spec.out_dtype)
    assert defined.mean() > 0.1 or values.size < 8  # not vacuous
    assert_same_bits(numpy.asarray(expected)[defined], rounded[defined].astype(spec.out_dtype))
    assert_same_bits(q, numpy.asarray(expected), where=defined)
    if expected_problems is None:
        assert problems is None
    else:
        assert problems is not None
        assert problems.tolist() == numpy.asarray(expected_problems.counts).tolist()
    return q, problems, rounded


def check_dequant(emulation: Any, qvalues: numpy.ndarray, spec: QuantSpec, dtype: str) -> numpy.ndarray:
    """De-quantize emulated and with the generic path: the floats must have the same bits."""
    restored = emulation.dequantize(qvalues, spec, dtype)
    with numpy.errstate(over="ignore"):
        expected = numpy.asarray(GENERIC.dequantize(qvalues, spec, dtype=dtype))
        shape = qvalues.shape
        difference = (qvalues.astype(numpy.float64) - spread(spec.zero_point, shape, spec)).astype(numpy.float32)
        product = difference * numpy.asarray(spread(spec.scale, shape, spec), dtype=numpy.float32)
    assert_same_bits(restored, expected)
    assert_same_bits(expected, product.astype(dtype))
    return restored


# ---- inputs ---------------------------------------------------------------------------------------


def count_ties(values: numpy.ndarray, scale: float, arithmetic: str) -> int:
    """How many values the float32 arithmetic takes exactly to a tie ``k + 0.5``."""
    x, s = values.astype(numpy.float32), numpy.float32(scale)
    with numpy.errstate(all="ignore"):
        quotient = x / s if arithmetic == "float32_divide" else x * (numpy.float32(1.0) / s)
        return int(numpy.count_nonzero(quotient - numpy.floor(quotient) == 0.5))


def tensor_spec(scale: float, out_dtype: str, arithmetic: str, saturate: bool) -> QuantSpec:
    """A per-tensor spec: saturate to a range inside the dtype, or check the dtype's range."""
    low, high = clip_for(out_dtype)
    zero = 0.0 if low < 0 else 100.0
    if numpy.iinfo(out_dtype).bits == 8:
        low, high = low + 10, high - 10
    return QuantSpec.per_tensor(scale, zero, (low, high) if saturate else None, out_dtype, arithmetic)


def grid_spec(shape: Tuple[int, ...], out_dtype: str, arithmetic: str, saturate: bool, seed: int,
              **granularity: Any) -> QuantSpec:
    """A spec with a different float32 scale, zero point and (saturating) clip range per block."""
    extent, grid = block_extent(shape, **granularity)
    rng = numpy.random.default_rng(seed)
    scale = rng.choice(SCALES, size=grid)
    low, high = clip_for(out_dtype)
    zero = rng.integers(0, 4, size=grid).astype(numpy.float64) * (1 if low < 0 else 50)
    if saturate:
        offset = rng.integers(0, 12, size=grid)
        return QuantSpec(scale, zero, low + offset, high - offset, True, out_dtype, tuple(extent), arithmetic)
    low, high = exact_float_bounds(out_dtype)
    return QuantSpec(scale, zero, low, high, False, out_dtype, tuple(extent), arithmetic)


# ---- the kernels are there ------------------------------------------------------------------------


def test_every_profile_kernel_has_an_emulated_launcher(emulated: EmulatedModule) -> None:
    names = set(cupy_kernels.kernel_names())
    for float_name in FLOATS:
        for int_name in INTEGERS:
            for kind in ("quant32", "quant32_grid"):
                assert cupy_kernels.kernel_name(kind, float_name, int_name) in names & set(emulated.kernels)
            for kind in ("dequant32", "dequant32_grid"):
                assert cupy_kernels.kernel_name(kind, int_name, float_name) in names & set(emulated.kernels)
    assert cupy_kernels.FLAG_RECIPROCAL not in (
        cupy_kernels.FLAG_CLIP, cupy_kernels.FLAG_COUNT_NONFINITE, cupy_kernels.FLAG_COUNT_OUTSIDE
    )


def test_the_inputs_hold_float32_ties_of_both_arithmetics() -> None:
    for scale in SCALES:
        ties = float32_ties(scale)
        assert count_ties(ties, scale, "float32_divide") > 100
        assert count_ties(ties, scale, "float32_reciprocal") > 100


# ---- quant ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [False, True], ids=["per-tensor", "per-block"])
@pytest.mark.parametrize("arithmetic", ARITHMETICS)
@pytest.mark.parametrize("in_dtype", FLOATS)
@pytest.mark.parametrize("out_dtype", INTEGERS)
def test_quant32_matches_the_generic_path_for_every_dtype_pair(
    emulation: Any, in_dtype: str, out_dtype: str, arithmetic: str, grid: bool
) -> None:
    seed = FLOATS.index(in_dtype) * 31 + INTEGERS.index(out_dtype)
    scale = SCALES[seed % len(SCALES)]
    shape = (5, 300)  # per block: groups of 128, blocks of 128, 128 and 44 along each row
    values = block_values(shape, in_dtype, seed) if grid else profile_values(in_dtype, scale, seed)
    backend = emulation(3)
    for saturate in (True, False):
        if grid:
            spec = grid_spec(shape, out_dtype, arithmetic, saturate, seed, block_size=128)
        else:
            spec = tensor_spec(scale, out_dtype, arithmetic, saturate)
        _, problems, rounded = check_quant(backend, values, spec)
        assert problems is not None and problems[0] == numpy.count_nonzero(~numpy.isfinite(values))
        if saturate:
            assert problems[1] == 0 and (rounded == spread(spec.high, shape, spec)).any()  # some values clip
        else:
            assert problems[1] > problems[0]  # NaN, and values beyond the dtype (3e38 at least)


GRANULARITIES = {
    "axis-0": ((6, 10, 7), {"axis": 0}),
    "axis-last": ((6, 10, 7), {"axis": -1}),
    "group-12": ((5, 40), {"block_size": 12}),  # vectors of four share their block: the vector path
    "group-7": ((5, 40), {"block_size": 7}),  # they do not: one value at a time
    "blocks-4-whole-3": ((6, 10, 7), {"block_size": (4, None, 3)}),
    "blocks-2-3-whole": ((5, 7, 9), {"block_size": (2, 3, None)}),
    "group-128-1d": ((1000,), {"block_size": 128}),
}


@pytest.mark.parametrize("arithmetic", ARITHMETICS)
@pytest.mark.parametrize("granularity", list(GRANULARITIES))
def test_quant32_grid_and_dequant32_grid_for_each_granularity(emulation: Any, granularity: str,
                                                              arithmetic: str) -> None:
    shape, arguments = GRANULARITIES[granularity]
    backend = emulation(3)
    for in_dtype, out_dtype in (("float32", "int8"), ("float64", "int32")):
        values = block_values(shape, in_dtype, len(granularity))
        spec = grid_spec(shape, out_dtype, arithmetic, True, len(granularity), **arguments)
        q, _, _ = check_quant(backend, values, spec)
        dequant = QuantSpec(spec.scale, spec.zero_point, extent=spec.extent, arithmetic=arithmetic)
        for dtype in FLOATS:
            check_dequant(backend, q, dequant, dtype)


@pytest.mark.parametrize("profile", ["onnx", "torch"])
@pytest.mark.parametrize("granularity", [{}, {"axis": 0}, {"block_size": 32}, {"block_size": (2, 48)}], ids=str)
def test_the_quantizers_specs_give_the_generic_integers_and_floats(emulation: Any, profile: str,
                                                                   granularity: dict) -> None:
    """The specs a profile's quantizer builds (its float32 scales, zero points, clip ranges)."""
    rng = numpy.random.default_rng(len(profile))
    values = (rng.standard_normal((6, 100)) * numpy.logspace(-2, 2, 6)[:, None]).astype(numpy.float32)
    array = QuantizedArray(8, values, is_signed=True, profile=profile, **granularity)
    quantizer = array.quantizer
    backend = emulation(3)
    spec = quantizer._quant_spec(values, NumpyBackend(), "int8")
    assert spec.in_float32 and (spec.extent is not None) == bool(granularity)
    q, problems, _ = check_quant(backend, values, spec)
    numpy.testing.assert_array_equal(q, numpy.asarray(array.qvalues).astype(numpy.int8))
    extent = quantizer.block_extent(values.shape) if quantizer.is_per_block else None
    dequant = primitives.dequant_spec(quantizer.scale, quantizer.zero_point, like=q, backend=NumpyBackend(),
                                      extent=extent, profile=profile)
    restored = check_dequant(backend, q, dequant, "float32")
    assert_same_bits(restored, numpy.asarray(array.dequant()))


@pytest.mark.parametrize("grid", [False, True], ids=["per-tensor", "per-block"])
@pytest.mark.parametrize("saturate", [True, False], ids=["clip", "check-range"])
@pytest.mark.parametrize("check_finite", [True, False], ids=["count-nonfinite", "no-nonfinite-count"])
@pytest.mark.parametrize("bounds", [True, False], ids=["bounds", "no-bounds"])
def test_quant32_flags_as_the_backend_sets_them(
    emulation: Any, grid: bool, saturate: bool, check_finite: bool, bounds: bool
) -> None:
    """clip, count outside and count non-finite, each combination the backend can ask for."""
    if saturate and not bounds:
        pytest.skip("saturating needs bounds")
    shape = (9, 70)
    values = block_values(shape, "float32", 5)
    for arithmetic in ARITHMETICS:
        if grid:
            spec = grid_spec(shape, "int16", arithmetic, saturate, 5, block_size=(4, 32))
        else:
            spec = tensor_spec(0.1, "int16", arithmetic, saturate)
        if not saturate and bounds:  # a narrower range than the dtype's: more outside
            spec = QuantSpec(spec.scale, spec.zero_point, -90, 90, False, "int16", spec.extent, arithmetic)
        if not bounds:
            spec = QuantSpec(spec.scale, spec.zero_point, None, None, False, "int16", spec.extent, arithmetic)
        counts_outside = bounds and not saturate
        _, problems, _ = check_quant(emulation(3), values, spec, check_finite=check_finite)  # counts as NumPy's
        assert (problems is None) == (not check_finite and not counts_outside)
        if counts_outside:
            assert problems is not None and problems[1] > numpy.count_nonzero(~numpy.isfinite(values))


def test_quant32_kernel_honours_each_combination_of_flags(emulated: EmulatedModule) -> None:
    """The per-tensor kernel itself, launched with every flag word."""
    values = profile_values("float32", 0.37, 3)
    for flags in range(16):
        q = poisoned(values.shape, numpy.int16)
        problems = numpy.zeros(2, dtype=numpy.uint64)
        emulated.launch(
            cupy_kernels.kernel_name("quant32", "float32", "int16"), 3, cupy_kernels.BLOCK_THREADS, values, q,
            values.size, 0.37, 5.0, flags, -100.0, 100.0, -50.0, 50.0, problems,
        )
        arithmetic = "float32_reciprocal" if flags & cupy_kernels.FLAG_RECIPROCAL else "float32_divide"
        spec = QuantSpec(0.37, 5.0, -100.0, 100.0, bool(flags & cupy_kernels.FLAG_CLIP), "int16", None, arithmetic)
        rounded = rounded32(values, spec)
        defined = defined_casts(rounded, "int16")
        assert_same_bits(q[defined], rounded[defined].astype(numpy.int16))
        with numpy.errstate(invalid="ignore"):
            outside = int(numpy.count_nonzero(~((rounded >= -50.0) & (rounded <= 50.0))))
        assert problems.tolist() == [
            int(numpy.count_nonzero(~numpy.isfinite(values))) if flags & cupy_kernels.FLAG_COUNT_NONFINITE else 0,
            outside if flags & cupy_kernels.FLAG_COUNT_OUTSIDE else 0,
        ]


def test_the_two_arithmetics_give_different_integers_where_runtimes_do(emulation: Any) -> None:
    """Values where the float32 quotient and the reciprocal product round apart: each kernel
    follows its own runtime (the reciprocal flag reaches the kernel)."""
    scale = float(numpy.float32(0.1))
    candidates = float32_ties(scale, span=2000)
    divided = rounded32(candidates, QuantSpec.per_tensor(scale, 0.0, None, "int32", "float32_divide"))
    multiplied = rounded32(candidates, QuantSpec.per_tensor(scale, 0.0, None, "int32", "float32_reciprocal"))
    values = candidates[divided != multiplied]
    assert values.size > 20
    backend = emulation(3)
    results = []
    for arithmetic in ARITHMETICS:
        q, _, _ = check_quant(backend, values, QuantSpec.per_tensor(scale, 0.0, None, "int32", arithmetic))
        results.append(q)
    assert numpy.all(results[0] != results[1])


@pytest.mark.parametrize("capacity", [1, 3, FULL_WAVE])
@pytest.mark.parametrize("shape", [(1,), (3,), (255,), (257,), (1027,), (3, 256), (7, 330)])
def test_quant32_sizes_around_block_and_grid_boundaries(emulation: Any, shape: Tuple[int, ...],
                                                        capacity: int) -> None:
    values = block_values(shape, "float32", sum(shape))
    values.reshape(-1)[-1] = numpy.nan  # the last element is the one a wrong bound would miss
    backend = emulation(capacity)
    for arithmetic in ARITHMETICS:
        spec = tensor_spec(0.125, "int16", arithmetic, True)
        q, _, _ = check_quant(backend, values, spec)
        check_dequant(backend, q, QuantSpec(spec.scale, spec.zero_point, arithmetic=arithmetic), "float32")
        if len(shape) == 2:
            spec = grid_spec(shape, "int16", arithmetic, True, 3, block_size=128)
            q, _, _ = check_quant(backend, values, spec)
            dequant = QuantSpec(spec.scale, spec.zero_point, extent=spec.extent, arithmetic=arithmetic)
            check_dequant(backend, q, dequant, "float64")


def test_quant32_and_dequant32_take_unaligned_values(emulation: Any) -> None:
    """Arrays that do not start on a vector boundary go one value at a time."""
    emulated = emulation(3)
    backend = emulated.backend
    values = on_device(block_values((1001,), "float32", 8))[1:]
    assert values.ctypes.data % 16 != 0 and values.flags.c_contiguous
    spec = tensor_spec(0.37, "int8", "float32_reciprocal", True)
    q, _ = backend.quantize(values, spec, check_finite=False)
    rounded = rounded32(numpy.asarray(values), spec)
    defined = defined_casts(rounded, "int8")
    assert_same_bits(numpy.asarray(q)[defined], rounded[defined].astype(numpy.int8))
    qvalues = on_device(integers((1001,), "int16", 1))[1:]
    dequant = QuantSpec(0.37, 3.0, arithmetic="float32_divide")
    restored = backend.dequantize(qvalues, dequant, dtype="float32")
    assert_same_bits(numpy.asarray(restored), numpy.asarray(GENERIC.dequantize(numpy.asarray(qvalues), dequant,
                                                                               dtype="float32")))
    assert [name for name, _, _ in emulated.launches] == [
        cupy_kernels.kernel_name("quant32", "float32", "int8"), cupy_kernels.kernel_name("dequant32", "int16",
                                                                                         "float32")
    ]


def test_quant32_of_empty_values_launches_nothing(emulation: Any) -> None:
    emulated = emulation(3)
    for arithmetic in ARITHMETICS:
        spec = tensor_spec(0.5, "int8", arithmetic, True)
        q, problems = emulated.backend.quantize(on_device(numpy.zeros((0, 4), numpy.float32)), spec, check_finite=True)
        assert q.shape == (0, 4) and problems is not None and numpy.asarray(problems.counts).tolist() == [0, 0]
        restored = emulated.backend.dequantize(on_device(numpy.zeros((4, 0), numpy.int8)), spec, dtype="float32")
        assert restored.shape == (4, 0)
    assert emulated.launches == []


def test_quant32_writes_into_out(emulation: Any) -> None:
    backend = emulation(3).backend
    values = on_device(block_values((4, 50), "float32", 2))
    spec = tensor_spec(0.1, "int8", "float32_divide", True)
    expected, _ = GENERIC.quantize(numpy.asarray(values), spec, check_finite=False)
    out = on_device(poisoned((4, 50), numpy.int8))
    assert backend.quantize(values, spec, check_finite=False, out=out)[0] is out
    numpy.testing.assert_array_equal(out, expected)
    strided = on_device(poisoned((4, 100), numpy.int8))[:, ::2]
    assert backend.quantize(values, spec, check_finite=False, out=strided)[0] is strided
    numpy.testing.assert_array_equal(strided, expected)


# ---- subnormals (flushed by -ftz=true, kept by NumPy) -------------------------------------------------


def edge_floats() -> numpy.ndarray:
    """float32 operands at the edges: zeros, subnormals, FLT_MIN and its neighbours, values whose
    quotients and products underflow, overflow or land on float32 rounding ties, ±Inf, NaN."""
    tiny = numpy.finfo(numpy.float32).tiny
    powers = 2.0 ** numpy.arange(-149, 128, 9, dtype=numpy.float64)
    magnitudes = numpy.concatenate([
        [0.0, 1.0, 1.5, 3.0, 0.1, 2.0**-24, 2.0**127, 1.5 * 2.0**126, numpy.inf],
        neighbours(numpy.array([tiny, 2.0 * tiny], dtype=numpy.float32)).astype(numpy.float64),
        float32_subnormals(12, seed=9).astype(numpy.float64),
        powers, powers * 1.3,
    ]).astype(numpy.float32)
    return numpy.concatenate([magnitudes, -magnitudes, [numpy.float32(numpy.nan)]])


def test_float32_helpers_are_ieee_float32_under_ftz(emulated: EmulatedModule) -> None:
    """qarray_div32 and qarray_mul32 give NumPy's float32 quotient and product for every pair of
    edge operands: subnormal operands and results, results that round to FLT_MIN, overflow."""
    edges = edge_floats()
    a, b = (numpy.ascontiguousarray(grid.reshape(-1)) for grid in numpy.meshgrid(edges, edges))
    quotient, product = poisoned(a.shape, numpy.float32), poisoned(a.shape, numpy.float32)
    emulated.launch("qarray_emulation_probe_float32_arithmetic", 7, cupy_kernels.BLOCK_THREADS, a, b, quotient,
                    product, a.size)
    with numpy.errstate(all="ignore"):
        expected_quotient, expected_product = a / b, a * b
    for actual, expected in ((quotient, expected_quotient), (product, expected_product)):
        nan = numpy.isnan(expected)
        assert numpy.array_equal(numpy.isnan(actual), nan)  # NaN payloads are unspecified
        assert_same_bits(actual, expected, where=~nan)
    subnormal = (numpy.abs(expected_product) < numpy.finfo(numpy.float32).tiny) & (expected_product != 0)
    assert subnormal.sum() > 100 and (numpy.abs(expected_quotient) < numpy.finfo(numpy.float32).tiny).sum() > 100


@pytest.mark.parametrize("arithmetic", ARITHMETICS)
@pytest.mark.parametrize("in_dtype", FLOATS)
def test_quant32_of_subnormal_inputs_and_scales(emulation: Any, in_dtype: str, arithmetic: str) -> None:
    backend = emulation(3)
    subnormal = float32_subnormals(600, seed=3).astype(in_dtype)
    # scales at and below float32's smallest normal: quotients of subnormal inputs reach 2^23
    for scale in (2.0**-126, 2.0**-127, 3 * 2.0**-149, 2.0**-149, 1.5 * 2.0**-130):
        spec = QuantSpec.per_tensor(scale, 0.0, (-(2**31), 2**31 - 1), "int32", arithmetic)
        _, _, rounded = check_quant(backend, subnormal, spec)
        assert numpy.count_nonzero(rounded) > 250  # flushing x or the scale would give 0 or NaN
    # a normal input over a subnormal scale, and the reciprocal of a huge scale is subnormal
    normal = numpy.random.default_rng(1).uniform(-3e38, 3e38, 600).astype(in_dtype)
    for scale in (2.0**127, 1.5 * 2.0**126, 2.0**-140):
        spec = QuantSpec.per_tensor(scale, 0.0, (-(2**15), 2**15 - 1), "int16", arithmetic)
        _, _, rounded = check_quant(backend, normal, spec)
        assert numpy.count_nonzero(rounded) > 300


@pytest.mark.parametrize("arithmetic", ARITHMETICS)
def test_quant32_grid_of_subnormal_scales(emulation: Any, arithmetic: str) -> None:
    values = numpy.concatenate([float32_subnormals(300, seed=4), float32_subnormals(300, seed=5) * 2.0**30])
    values = values.astype(numpy.float32).reshape(2, 300)
    scale = numpy.array([[2.0**-126, 2.0**-127, 3 * 2.0**-149], [2.0**-100, 2.0**-120, 2.0**127]])
    spec = QuantSpec(scale, numpy.zeros_like(scale), -(2**31), 2**31 - 1, True, "int32", (1, 100), arithmetic)
    _, _, rounded = check_quant(emulation(3), values, spec)
    assert numpy.count_nonzero(rounded[0]) > 150


@pytest.mark.parametrize("arithmetic", ARITHMETICS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_dequant32_of_subnormal_scales_and_results(emulation: Any, dtype: str, arithmetic: str) -> None:
    backend = emulation(3)
    qvalues = integers((1000,), "int16", 3)
    tiny = numpy.finfo(numpy.float32).tiny
    # each scale, and how many of the 1000 results at least are subnormal
    for scale, subnormal in ((2.0**-149, 900), (3 * 2.0**-149, 900), (2.0**-140, 300), (1.5 * 2.0**-127, 0),
                             (2.0**-126, 0), (2.0**-135 * 1.25, 0)):
        restored = check_dequant(backend, qvalues, QuantSpec(scale, 3.0, arithmetic=arithmetic), dtype)
        magnitude = numpy.abs(restored)
        assert numpy.count_nonzero((magnitude > 0) & (magnitude < tiny)) >= subnormal
    huge = check_dequant(backend, qvalues, QuantSpec(2.0**120, 0.0, arithmetic=arithmetic), dtype)
    assert numpy.isinf(huge).sum() > 500  # float32 products overflow, whatever dtype is written
    grid = numpy.array([[2.0**-149, 2.0**-140], [3 * 2.0**-149, 2.0**120]])
    check_dequant(backend, qvalues.reshape(2, 500), QuantSpec(grid, numpy.zeros((2, 2)) + 1.0, extent=(1, 250),
                                                              arithmetic=arithmetic), dtype)


# ---- dequant --------------------------------------------------------------------------------------


@pytest.mark.parametrize("arithmetic", ARITHMETICS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("int_dtype", INTEGERS)
def test_dequant32_matches_the_generic_path_for_every_dtype_pair(
    emulation: Any, int_dtype: str, dtype: str, arithmetic: str
) -> None:
    backend = emulation(3)
    seed = INTEGERS.index(int_dtype)
    qvalues = integers((3, 7, 50), int_dtype, seed)  # 8-bit: the 256-entry table; wider: one by one
    zero = 0.0 if numpy.iinfo(int_dtype).min < 0 else 128.0
    check_dequant(backend, qvalues, QuantSpec(SCALES[seed % len(SCALES)], zero, arithmetic=arithmetic), dtype)
    spec = grid_spec((3, 7, 50), int_dtype, arithmetic, False, seed, block_size=(2, None, 16))
    check_dequant(backend, qvalues, QuantSpec(spec.scale, spec.zero_point, extent=spec.extent,
                                              arithmetic=arithmetic), dtype)


# ---- what the kernels do not take -----------------------------------------------------------------


def test_broadcast_zero_points_and_float16_take_the_generic_path(emulation: Any) -> None:
    emulated = emulation(3)
    backend = emulated.backend
    values = block_values((4, 30), "float32", 1)
    zero = numpy.array([[0.0], [1.0], [2.0], [3.0]])
    for arithmetic in ARITHMETICS:
        spec = QuantSpec.per_tensor(0.1, zero, (-100, 100), "int8", arithmetic)
        with numpy.errstate(all="ignore"):
            q, _ = backend.quantize(on_device(values), spec, check_finite=False)
            expected, _ = GENERIC.quantize(values, spec, check_finite=False)
        numpy.testing.assert_array_equal(numpy.asarray(q), numpy.asarray(expected))
        half = QuantSpec.per_tensor(0.1, 0.0, (-100, 100), "int8", arithmetic)
        q, _ = backend.quantize(on_device(values.astype(numpy.float16)), half, check_finite=False)
        numpy.testing.assert_array_equal(numpy.asarray(q), numpy.asarray(GENERIC.quantize(
            values.astype(numpy.float16), half, check_finite=False)[0]))
    assert emulated.launches == []
    spec = QuantSpec.per_tensor(0.1, 0.0, (-100, 100), "int8", "float32_divide")
    assert launched_kinds(spec, quant=True) == ("quant32",)
