"""The per-block (grid) CUDA kernels, launched by the CuPy backend's own code on the CPU emulation.

``qarray_quant_grid_<float>_<int>`` and ``qarray_dequant_grid_<int>_<float>`` take one
parameter set per block: the values are a C-order ``(rows, length)`` matrix, row ``r``
reads grid row ``rows[r]`` and parameter ``rows[r] * n_groups + col // group``. Here
:meth:`CupyBackend.quantize` and :meth:`CupyBackend.dequantize` run as they are (the grid
branches, ``_grid_arguments``, ``_grid``, ``_output``), with NumPy standing in for CuPy
and every kernel launch going to the real kernel source compiled for the CPU
(``tests/cuda_emulation``). The launcher checks each argument as the kernel declares it
(a pointer gets a C-contiguous array of the pointee's dtype, a scalar a NumPy scalar of
the exact C type, as CuPy passes them), so a wrong argument order or type fails here.

Results are compared with :class:`qarray.backends.NumpyBackend` given the same
:class:`QuantSpec`: integers bit for bit wherever the cast is defined (out-of-range and
NaN casts are unspecified), dequantized floats bit for bit, the problem counts exactly.
Covered: every float/integer dtype pair, per-channel (``axis``), per-group (``block_size``
with a shorter last block) and block tuples, each combination of flags, grid capacities
that make the grid-stride loop turn, ties, subnormal float32 in and out, NaN and ±Inf.
Skipped, with the reason, where no C++ compiler is found or the platform has no ucontext.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import numpy
import pytest

from qarray import QuantizedArray
from qarray.backends import NumpyBackend, cupy_kernels
from qarray.backends.spec import QuantSpec
from qarray.core.dtypes import exact_float_bounds
from qarray.core.granularity import block_extent

from cuda_emulation.backend import EmulatedKernel, Emulation, on_device, poisoned
from cuda_emulation.build import EmulatedModule
from cuda_emulation.inputs import clip_for, defined_casts, float32_subnormals

BLOCK = cupy_kernels.BLOCK_THREADS
FLOATS = tuple(cupy_kernels.FLOAT_TYPES)
INTEGERS = tuple(cupy_kernels.INTEGER_TYPES)
FULL_WAVE = 132 * (2048 // BLOCK)
"""What ``_grid`` picks on an H100/H200 (132 multiprocessors, 8 resident blocks of 256 threads)."""

# ---- references ----------------------------------------------------------------------------------


def spread(parameter: Any, shape: Tuple[int, ...], extent: Tuple[int, ...]) -> numpy.ndarray:
    """A grid parameter repeated over the values' shape (independent of the kernels' row map)."""
    full = numpy.asarray(parameter, dtype=numpy.float64)
    grid = tuple(-(-n // e) for n, e in zip(shape, extent))
    full = numpy.broadcast_to(full, grid)
    for axis, (n, e) in enumerate(zip(shape, extent)):
        full = numpy.repeat(full, e, axis=axis).take(numpy.arange(n), axis=axis)
    return full


def rounded_values(values: numpy.ndarray, spec: QuantSpec) -> numpy.ndarray:
    """``rint(x / scale + zero_point)``, clipped per block when ``spec.saturate`` (float64)."""
    assert spec.extent is not None
    scale, zero = (spread(p, values.shape, spec.extent) for p in (spec.scale, spec.zero_point))
    with numpy.errstate(invalid="ignore", over="ignore", divide="ignore"):
        rounded = numpy.rint(values.astype(numpy.float64) / scale + zero)
    if spec.saturate:
        low, high = (spread(p, values.shape, spec.extent) for p in (spec.low, spec.high))
        rounded = numpy.where(rounded < low, low, numpy.where(rounded > high, high, rounded))
    return rounded


def check_quant(
    emulation: Emulation, values: numpy.ndarray, spec: QuantSpec, check_finite: bool = True
) -> Tuple[numpy.ndarray, Any]:
    """Quantize emulated and with NumPy: the defined integers and the counts must be the same."""
    q, problems = emulation.quantize(values, spec, check_finite)
    with numpy.errstate(invalid="ignore", over="ignore"):
        expected, expected_problems = NumpyBackend().quantize(values, spec, check_finite=check_finite)
    assert q.dtype == expected.dtype == numpy.dtype(spec.out_dtype) and q.shape == values.shape
    defined = defined_casts(rounded_values(values, spec), spec.out_dtype)
    assert defined.mean() > 0.5
    mismatch = numpy.argwhere(defined & (q != expected))
    assert mismatch.size == 0, (
        f"{len(mismatch)} of {values.size} differ, first at {tuple(mismatch[0])}: input "
        f"{values[tuple(mismatch[0])]!r}, kernel {q[tuple(mismatch[0])]}, NumPy {expected[tuple(mismatch[0])]}"
    )
    if expected_problems is None:
        assert problems is None
    else:
        assert problems is not None
        assert problems.tolist() == numpy.asarray(expected_problems.counts).tolist()
    return q, problems


def check_dequant(emulation: Emulation, qvalues: numpy.ndarray, spec: QuantSpec, dtype: str) -> numpy.ndarray:
    """De-quantize emulated and with NumPy: the floats must have the same bits."""
    restored = emulation.dequantize(qvalues, spec, dtype)
    expected = NumpyBackend().dequantize(qvalues, spec, dtype=dtype)
    assert restored.dtype == expected.dtype == numpy.dtype(dtype) and restored.shape == qvalues.shape
    bits = {"float32": numpy.uint32, "float64": numpy.uint64}[dtype]
    mismatch = numpy.argwhere(restored.view(bits) != expected.view(bits))
    assert mismatch.size == 0, (
        f"{len(mismatch)} of {qvalues.size} differ, first at {tuple(mismatch[0])}: q "
        f"{qvalues[tuple(mismatch[0])]}, kernel {restored[tuple(mismatch[0])]!r}, "
        f"NumPy {expected[tuple(mismatch[0])]!r}"
    )
    return restored


def grid_spec(
    shape: Tuple[int, ...],
    out_dtype: str,
    seed: int,
    saturate: bool,
    clip: Tuple[int, int],
    **granularity: Any,
) -> QuantSpec:
    """A spec with a different scale, zero point and (when saturating) clip range per block."""
    extent, grid = block_extent(shape, **granularity)
    rng = numpy.random.default_rng(seed)
    # powers of two keep the ties of float32 inputs ties after the division; the others not
    scale = rng.choice([0.25, 0.5, 2.0, 0.1, 0.37, 3.0], size=grid)
    zero = rng.integers(0, 4, size=grid).astype(numpy.float64) * (1 if clip[0] < 0 else 50)
    if saturate:
        offset = rng.integers(0, 3, size=grid)
        return QuantSpec(scale, zero, clip[0] + offset, clip[1] - offset, True, out_dtype, tuple(extent))
    low, high = exact_float_bounds(out_dtype)
    return QuantSpec(scale, zero, low, high, False, out_dtype, tuple(extent))


def mixed_values(shape: Tuple[int, ...], dtype: str, seed: int, span: float = 300.0) -> numpy.ndarray:
    """Values over ``[-span, span]`` with ties, signed zeros, NaN and ±Inf."""
    rng = numpy.random.default_rng(seed)
    count = int(numpy.prod(shape))
    values = rng.uniform(-span, span, count)
    values[: count // 4] = rng.integers(-int(span), int(span), count // 4) * 0.125 + 0.0625  # ties
    values[count // 4 : count // 4 + 2] = [0.0, -0.0][: count - count // 4]
    special = rng.choice(count, size=min(count // 2, max(3, count // 100)), replace=False)
    values[special] = numpy.resize([numpy.nan, numpy.inf, -numpy.inf], special.size)
    return values.astype(dtype).reshape(shape)


# ---- the kernels are there ------------------------------------------------------------------


def test_every_grid_kernel_has_an_emulated_launcher(emulated: EmulatedModule) -> None:
    names = cupy_kernels.kernel_names()
    # per dtype pair: quant (its fast and exact passes), dequant, and their grid forms, and the
    # profiles' float32 quant and dequant and their grid forms; per float dtype: the min/max pair,
    # the per-block min/max pair, and the histogram's scan, plan and bin
    assert len(names) == len(set(names)) == 10 * len(FLOATS) * len(INTEGERS) + 7 * len(FLOATS) == 174
    for float_name in FLOATS:
        for int_name in INTEGERS:
            for name in (
                cupy_kernels.kernel_name("quant_grid", float_name, int_name),
                cupy_kernels.kernel_name("quant_grid_rest", float_name, int_name),
                cupy_kernels.kernel_name("dequant_grid", int_name, float_name),
            ):
                assert name in names and name in emulated.kernels
    assert set(names) <= set(emulated.kernels)


# ---- quant ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_dtype", FLOATS)
@pytest.mark.parametrize("out_dtype", INTEGERS)
def test_quant_grid_matches_numpy_for_every_dtype_pair(emulation: Any, in_dtype: str, out_dtype: str) -> None:
    shape = (5, 300)  # group 128: blocks of 128, 128 and 44 along each row
    seed = len(in_dtype) * 31 + INTEGERS.index(out_dtype)
    values = mixed_values(shape, in_dtype, seed)
    backend = emulation(3)
    clip = clip_for(out_dtype)
    if numpy.iinfo(out_dtype).bits == 8:
        clip = (clip[0] + 20, clip[1] - 20)  # some values clip, per block at its own bounds
    check_quant(backend, values, grid_spec(shape, out_dtype, seed, True, clip, block_size=128), check_finite=True)
    if numpy.iinfo(out_dtype).bits == 8:
        values = mixed_values(shape, in_dtype, seed, span=30.0)  # mostly inside the dtype
    check_quant(backend, values, grid_spec(shape, out_dtype, seed + 1, False, clip, block_size=128), check_finite=True)


@pytest.mark.parametrize("in_dtype", FLOATS)
@pytest.mark.parametrize("out_dtype", INTEGERS)
def test_dequant_grid_matches_numpy_for_every_dtype_pair(emulation: Any, in_dtype: str, out_dtype: str) -> None:
    # in_dtype here is the float dtype written; out_dtype the integers read
    shape = (3, 7, 50)
    rng = numpy.random.default_rng(INTEGERS.index(out_dtype))
    low, high = clip_for(out_dtype)
    info = numpy.iinfo(out_dtype)
    qvalues = rng.integers(low, high, size=shape, endpoint=True, dtype=numpy.int64).astype(out_dtype)
    qvalues.reshape(-1)[:4] = [low, high, info.min, info.max if info.bits < 64 else high]
    spec = grid_spec(shape, out_dtype, 7, False, (low, high), block_size=(2, None, 16))
    check_dequant(emulation(3), qvalues, QuantSpec(spec.scale, spec.zero_point, extent=spec.extent), in_dtype)


GRANULARITIES: Dict[str, Tuple[Tuple[int, ...], Dict[str, Any]]] = {
    "axis-0": ((6, 10, 7), {"axis": 0}),
    "axis-last": ((6, 10, 7), {"axis": -1}),
    "axes-0-2": ((6, 10, 7), {"axis": (0, 2)}),
    "group-128": ((4, 300), {"block_size": 128}),
    "group-128-1d": ((1000,), {"block_size": 128}),
    "blocks-4-whole-3": ((6, 10, 7), {"block_size": (4, None, 3)}),
    "blocks-2-3-whole": ((5, 7, 9), {"block_size": (2, 3, None)}),
}

OPTIONS: Dict[str, Tuple[Dict[str, Any], str]] = {
    "unsigned": ({}, "uint8"),
    "signed-int32": ({"is_signed": True}, "int32"),
    # int16: a block holding one value has offset 0 (the single-value rule), so its clip range
    # [-offset + 1, 255 - offset] needs more than int8
    "symmetric-narrow-int16": ({"is_signed": True, "is_symmetric": True, "is_narrow": True}, "int16"),
    "unsigned-4-bits-uint64": ({"n_bits": 4}, "uint64"),
}


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("granularity", list(GRANULARITIES))
def test_quantizer_specs_give_numpy_integers_and_floats(emulation: Any, granularity: str, options: str) -> None:
    """The specs the quantizer builds (its per-block parameters and clip ranges) on both paths."""
    shape, arguments = GRANULARITIES[granularity]
    settings, out_dtype = OPTIONS[options]
    rng = numpy.random.default_rng(len(granularity) * 7 + len(options))
    values = rng.standard_normal(shape) * rng.choice([0.01, 1.0, 30.0], size=shape[:1] + (1,) * (len(shape) - 1))
    values.reshape(-1)[::5] = (numpy.arange(values.size)[::5] % 17 - 8 + 0.5) * 0.25  # exact ties
    values[0] = 0.75  # a constant slab: the single-value rule in its blocks
    flags = {name: value for name, value in settings.items() if name != "n_bits"}
    array = QuantizedArray(settings.get("n_bits", 8), values, **arguments, **flags)
    quantizer = array.quantizer
    backend = emulation(3)
    for dtype in ("float32", "float64"):
        typed = values.astype(dtype)
        spec = quantizer._quant_spec(typed, NumpyBackend(), out_dtype)
        assert spec.extent is not None and numpy.shape(spec.scale) == block_extent(shape, **arguments)[1]
        q, problems = check_quant(backend, typed, spec, check_finite=True)
        assert problems is not None and problems.tolist() == [0, 0]
        if dtype == "float64":
            numpy.testing.assert_array_equal(q, numpy.asarray(array.qvalues).astype(out_dtype))
        dequant_spec = QuantSpec(spec.scale, spec.zero_point, extent=spec.extent)
        for out in ("float32", "float64"):
            restored = check_dequant(backend, q, dequant_spec, out)
            if dtype == "float64" and out == "float64":
                whole = numpy.asarray(array.dequant())
                numpy.testing.assert_array_equal(restored.view(numpy.uint64), whole.view(numpy.uint64))


@pytest.mark.parametrize("saturate", [True, False], ids=["clip", "check-range"])
@pytest.mark.parametrize("check_finite", [True, False], ids=["count-nonfinite", "no-nonfinite-count"])
@pytest.mark.parametrize("bounds", [True, False], ids=["bounds", "no-bounds"])
def test_quant_grid_flags_as_the_backend_sets_them(
    emulation: Any, saturate: bool, check_finite: bool, bounds: bool
) -> None:
    """clip, count outside and count non-finite, each combination the backend can ask for."""
    if saturate and not bounds:
        pytest.skip("saturating needs bounds")
    shape = (9, 70)
    values = mixed_values(shape, "float32", seed=11, span=200.0)
    spec = grid_spec(shape, "int8", 5, saturate, (-100, 100), block_size=(4, 32))
    if not saturate and bounds:
        low = numpy.full(numpy.shape(spec.scale), -90.0)
        spec = QuantSpec(spec.scale, spec.zero_point, low, -low, False, "int8", spec.extent)
    if not bounds:
        spec = QuantSpec(spec.scale, spec.zero_point, None, None, False, "int16", spec.extent)
    q, problems = check_quant(emulation(3), values, spec, check_finite=check_finite)
    if not check_finite and not (bounds and not saturate):
        assert problems is None
    else:
        assert problems is not None
        n_nonfinite = int(numpy.count_nonzero(~numpy.isfinite(values)))
        assert problems[0] == (n_nonfinite if check_finite else 0)
        if bounds and not saturate:
            assert problems[1] > n_nonfinite  # values outside [-90, 90], NaN among them


@pytest.mark.parametrize("flags", range(8))
def test_quant_grid_kernel_honours_each_combination_of_flags(
    emulation: Any, emulated: EmulatedModule, flags: int
) -> None:
    """The kernel itself, launched with ``_grid_arguments``' arguments and every flag word."""
    shape = (6, 200)
    values = mixed_values(shape, "float64", seed=flags, span=150.0)
    spec = grid_spec(shape, "int16", flags, True, (-100, 100), block_size=64)
    backend = emulation(2).backend
    source = on_device(values)
    layout = backend._grid_arguments(source, spec, ("scale", "zero_point", "low", "high"))
    q = poisoned(shape, numpy.int16)
    problems = numpy.zeros(2, dtype=numpy.uint64)
    pending = numpy.zeros(2 + 16, dtype=numpy.uint64)  # 16: the fast pass leaves more (ties)
    for kind in ("quant_grid", "quant_grid_rest"):
        name = cupy_kernels.kernel_name(kind, "float64", "int16")
        EmulatedKernel(emulated, name, [])(
            (backend._grid(None, name, values.size, 0),), (BLOCK,),
            (numpy.ascontiguousarray(values), q, numpy.int64(values.size), *layout, numpy.int32(flags), problems,
             pending, numpy.int64(16)),
        )
    rounded = rounded_values(values, dataclasses.replace(spec, saturate=bool(flags & cupy_kernels.FLAG_CLIP)))
    defined = defined_casts(rounded, "int16")
    assert numpy.array_equal(q[defined], rounded[defined].astype(numpy.int16))
    low, high = (spread(p, shape, spec.extent) for p in (spec.low, spec.high))
    with numpy.errstate(invalid="ignore"):
        outside = int(numpy.count_nonzero(~((rounded >= low) & (rounded <= high))))
    expected = [
        int(numpy.count_nonzero(~numpy.isfinite(values))) if flags & cupy_kernels.FLAG_COUNT_NONFINITE else 0,
        outside if flags & cupy_kernels.FLAG_COUNT_OUTSIDE else 0,
    ]
    assert problems.tolist() == expected


@pytest.mark.parametrize("capacity", [1, 3, FULL_WAVE])
@pytest.mark.parametrize("shape", [(1, 1), (1, 31), (2, 128), (1, 257), (3, 256), (3, 257), (7, 330), (2, 3, 1000)])
def test_quant_grid_sizes_around_block_and_grid_boundaries(
    emulation: Any, shape: Tuple[int, ...], capacity: int
) -> None:
    values = mixed_values(shape, "float64", seed=sum(shape), span=100.0)
    if values.size > 1:
        values.reshape(-1)[-1] = numpy.nan  # the last element is the one a wrong bound would miss
    spec = grid_spec(shape, "int16", 3, True, (-60, 60), block_size=(None,) * (len(shape) - 1) + (128,))
    backend = emulation(capacity)
    q, _ = check_quant(backend, values, spec)
    check_dequant(backend, q, QuantSpec(spec.scale, spec.zero_point, extent=spec.extent), "float64")


def test_quant_grid_of_empty_values_launches_nothing(emulation: Any) -> None:
    backend = emulation(3)
    for shape, extent in (((0, 5), (1, 5)), ((4, 0), (1, 1))):
        grid = tuple(-(-n // e) for n, e in zip(shape, extent))
        spec = QuantSpec(numpy.ones(grid), numpy.zeros(grid), -5, 5, True, "int8", extent)
        q, problems = backend.quantize(numpy.zeros(shape), spec, check_finite=True)
        assert q.shape == shape and q.dtype == numpy.int8
        assert problems is not None and problems.tolist() == [0, 0]
        assert backend.dequantize(q, QuantSpec(spec.scale, spec.zero_point, extent=extent), "float32").shape == shape


@pytest.mark.parametrize("in_dtype", FLOATS)
def test_quant_grid_rounds_ties_to_even_with_each_blocks_parameters(emulation: Any, in_dtype: str) -> None:
    k = numpy.arange(-130, 130, dtype=numpy.float64)
    # row 0: ties in the input; row 1: ties made by the division; row 2: by the zero point
    values = numpy.stack([k + 0.5, (2 * k + 1) * 0.25, k]).astype(in_dtype)
    scale = numpy.array([[1.0], [0.5], [1.0]])
    zero = numpy.array([[0.0], [0.0], [0.5]])
    spec = QuantSpec(scale, zero, -(2**15), 2**15 - 1, True, "int16", (1, values.shape[1]))
    q, _ = check_quant(emulation(3), values, spec)
    for row in q:
        assert row.tolist() == numpy.rint(k + 0.5).astype(numpy.int16).tolist()
    assert q[0, 130] == 0 and q[0, 131] == 2  # 0.5 -> 0, 1.5 -> 2


def test_quant_grid_reads_subnormal_float32_exactly(emulation: Any) -> None:
    # -ftz=true would read these as zero; the kernel converts them by hand.
    values = float32_subnormals(2 * 600, seed=1).reshape(2, 600)
    scale = numpy.array([[2.0**-149] * 5, [2.0**-148, 2.0**-147, 2.0**-149, 3 * 2.0**-149, 2.0**-130]])
    spec = QuantSpec(scale, numpy.zeros_like(scale), -(2**31), 2**31 - 1, True, "int32", (1, 128))
    q, _ = check_quant(emulation(3), values, spec)
    mantissa = (values[0].view(numpy.uint32) & 0x7FFFFF).astype(numpy.int64)
    assert q[0].tolist() == numpy.where(values[0] < 0, -mantissa, mantissa).tolist()


def test_dequant_grid_rounds_subnormal_float32_like_numpy(emulation: Any) -> None:
    rng = numpy.random.default_rng(2)
    qvalues = rng.integers(-(2**24), 2**24, size=(4, 256)).astype(numpy.int32)
    qvalues[:, :3] = [0, 1, -1]
    # results in the float32 subnormal range, rounded (half to even) from float64
    scale = numpy.array([[2.0**-149, 2.0**-150], [2.0**-170, 0.3 * 2.0**-149], [2.0**-126, 2.0**-160], [1e-45, 7e-46]])
    zero = numpy.array([[0.0, 0.5], [3.0, -2.0], [0.0, 1.0], [0.0, 0.0]])
    restored = check_dequant(emulation(3), qvalues, QuantSpec(scale, zero, extent=(1, 128)), "float32")
    magnitude = numpy.abs(restored)
    assert numpy.count_nonzero((magnitude > 0) & (magnitude < numpy.finfo(numpy.float32).tiny)) > 500


def test_quant_grid_counts_nan_and_infinities_exactly(emulation: Any) -> None:
    shape = (8, 150)
    values = numpy.random.default_rng(4).uniform(-10, 10, shape)
    values[0, :10] = numpy.nan
    values[3, 140:] = numpy.inf
    values[7, 149] = -numpy.inf
    values[5, 64] = numpy.nan  # the first value of a block
    spec = grid_spec(shape, "int8", 9, False, (-128, 127), block_size=(3, 64))
    _, problems = check_quant(emulation(3), values, spec, check_finite=True)
    assert problems is not None and problems.tolist() == [22, 22]  # NaN/±Inf are outside too
    low = numpy.full(numpy.shape(spec.scale), -2.0)
    narrow = QuantSpec(spec.scale, spec.zero_point, low, -low, False, "int8", spec.extent)
    _, problems = check_quant(emulation(3), values, narrow, check_finite=False)
    assert problems is not None and problems[0] == 0 and problems[1] > 22


def test_quant_grid_takes_strided_input(emulation: Any) -> None:
    base = mixed_values((300, 6), "float32", seed=21)
    values = base.T  # not C-contiguous: the backend makes a C-ordered copy first
    spec = grid_spec(values.shape, "uint8", 2, True, (0, 255), block_size=128)
    check_quant(emulation(3), values, spec)
