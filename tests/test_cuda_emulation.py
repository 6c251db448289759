"""The CUDA kernels' logic, run on the CPU and compared with NumPy bit for bit.

The real kernel source (:func:`qarray.backends.cupy_kernels.source`) is compiled by the
host C++ compiler against ``tests/cuda_emulation/cuda_emulation.h``, which runs every
CUDA thread of a block as a fiber (barriers, warp shuffles and shared memory behave as
on the GPU, and a barrier some thread never reaches is reported) and gives ``float`` the
flush-to-zero semantics of CuPy's ``-ftz=true``. Kernels are launched as the CuPy
backend launches them: blocks of ``BLOCK_THREADS`` threads, a grid of at most one wave
(here a small "device capacity" so the grid-stride and four-way unrolled loops turn),
the same argument list. Every dtype pair, sizes around block, unroll and grid
boundaries, ties, subnormal float32, NaN and ±Inf are checked against NumPy.

What this cannot show: timings, that nothing synchronises with the host, the occupancy
query, multi-GPU placement; those need a GPU (tests/test_gpu.py). Skipped, with the
reason, where no C++ compiler is found or the platform has no ucontext (Windows).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy
import pytest

from qarray.backends import cupy_kernels

from cuda_emulation.build import EmulatedModule, kernel_signatures
from cuda_emulation.inputs import float32_subnormals

BLOCK = cupy_kernels.BLOCK_THREADS
UNROLL = 4  # the kernels' grid-stride loops take four elements per thread per turn
COUNTS = cupy_kernels.FLAG_COUNT_NONFINITE | cupy_kernels.FLAG_COUNT_OUTSIDE
ALL_FLAGS = cupy_kernels.FLAG_CLIP | COUNTS
FLOATS = tuple(cupy_kernels.FLOAT_TYPES)
INTEGERS = tuple(cupy_kernels.INTEGER_TYPES)


def grid_for(count: int, capacity: int) -> int:
    """The grid the CuPy backend launches: enough blocks for ``count``, at most ``capacity``."""
    return max(1, min(-(-count // BLOCK), capacity))


def poisoned(count: int, dtype: str) -> numpy.ndarray:
    """An output buffer full of 0xa5 bytes, so an element the kernel never writes shows."""
    buffer = numpy.empty(count, dtype=dtype)
    buffer.view(numpy.uint8)[...] = 0xA5
    return buffer


def representable(rounded: numpy.ndarray, dtype: str) -> numpy.ndarray:
    """Where the float64 ``rounded`` casts to ``dtype`` without overflow (a defined cast in C++)."""
    info = numpy.iinfo(dtype)
    high = float(info.max) + 1.0  # exact: a power of two
    return numpy.isfinite(rounded) & (rounded >= float(info.min)) & (rounded < high)


# ---- quant ------------------------------------------------------------------------------


def run_quant(
    module: EmulatedModule,
    x: numpy.ndarray,
    dtype: str,
    scale: float,
    zero_point: float,
    flags: int,
    clip: Tuple[float, float] = (0.0, 0.0),
    fit: Tuple[float, float] = (0.0, 0.0),
    capacity: int = 3,
    pending_capacity: Optional[int] = None,
) -> Tuple[numpy.ndarray, Optional[numpy.ndarray]]:
    """Launch the two quant passes as the CuPy backend does; return ``(q, problems or None)``.

    The fast pass settles what it can and lists the rest in ``pending`` (at most
    ``pending_capacity`` vectors; more, and the exact pass re-examines every vector).
    """
    q = poisoned(x.size, dtype)
    problems = numpy.zeros(2, dtype=numpy.uint64) if flags & COUNTS else None
    if pending_capacity is None:
        pending_capacity = max(cupy_kernels.QUANT_PENDING_MIN_CAPACITY, x.size // 4 // 256)
    pending = poisoned(2 + pending_capacity, "uint64")
    pending[:2] = 0
    for kind in ("quant", "quant_rest"):
        module.launch(
            cupy_kernels.kernel_name(kind, x.dtype.name, dtype), grid_for(x.size, capacity), BLOCK, x, q, x.size,
            scale, zero_point, flags, clip[0], clip[1], fit[0], fit[1], problems, pending, pending_capacity,
        )
    return q, problems


def check_quant(
    module: EmulatedModule,
    x: numpy.ndarray,
    dtype: str,
    scale: float,
    zero_point: float,
    flags: int,
    clip: Tuple[float, float] = (0.0, 0.0),
    fit: Tuple[float, float] = (0.0, 0.0),
    capacity: int = 3,
    pending_capacity: Optional[int] = None,
) -> None:
    """Quantize on the emulated GPU and with NumPy; the values and counts must agree."""
    q, problems = run_quant(module, x, dtype, scale, zero_point, flags, clip, fit, capacity, pending_capacity)
    rounded = numpy.rint(x.astype(numpy.float64) / scale + zero_point)
    if flags & cupy_kernels.FLAG_CLIP:
        rounded = numpy.where(rounded < clip[0], clip[0], numpy.where(rounded > clip[1], clip[1], rounded))
    defined = representable(rounded, dtype)
    assert defined.any()
    mismatch = numpy.flatnonzero(q[defined] != rounded[defined].astype(dtype))
    assert mismatch.size == 0, (
        f"{mismatch.size} of {x.size} differ, first at input {x[defined][mismatch[0]]!r}: "
        f"kernel {q[defined][mismatch[0]]}, NumPy {rounded[defined][mismatch[0]]}"
    )
    if problems is None:
        return
    with numpy.errstate(invalid="ignore"):
        outside = ~((rounded >= fit[0]) & (rounded <= fit[1]))
    expected = [
        int(numpy.count_nonzero(~numpy.isfinite(x))) if flags & cupy_kernels.FLAG_COUNT_NONFINITE else 0,
        int(numpy.count_nonzero(outside)) if flags & cupy_kernels.FLAG_COUNT_OUTSIDE else 0,
    ]
    assert problems.tolist() == expected


def mixed_values(dtype: str, count: int, scale: float, seed: int) -> numpy.ndarray:
    """Values whose quantization spans an integer range, with ties, signed zeros, NaN and ±Inf."""
    rng = numpy.random.default_rng(seed)
    values = rng.uniform(-300.0, 300.0, count) * scale
    values[: count // 4] = (rng.integers(-260, 260, count // 4) + 0.5) * scale  # ties
    signed = numpy.array([0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5]) * scale
    values[count // 4 : count // 4 + 8] = signed[: len(values[count // 4 : count // 4 + 8])]
    special = rng.choice(count, size=count // 200, replace=False)
    values[special] = rng.choice([numpy.nan, numpy.inf, -numpy.inf], size=special.size)
    return values.astype(dtype)


@pytest.mark.parametrize("in_dtype", FLOATS)
@pytest.mark.parametrize("out_dtype", INTEGERS)
def test_quant_matches_numpy_for_every_dtype_pair(emulated: EmulatedModule, in_dtype: str, out_dtype: str) -> None:
    count = 2 * UNROLL * BLOCK * 3 + 37  # two unrolled turns of a 3-block grid, then a tail
    scale = 0.25  # a power of two: the ties of the float32 data stay ties after division
    x = mixed_values(in_dtype, count, scale, seed=len(in_dtype) * 31 + len(out_dtype))
    info = numpy.iinfo(out_dtype)
    low, high = max(float(info.min), -(2.0**31)), min(float(info.max), 2.0**31 - 1)
    zero_point = 0.0 if info.min < 0 else 200.0
    flags = cupy_kernels.FLAG_CLIP | cupy_kernels.FLAG_COUNT_NONFINITE
    check_quant(emulated, x, out_dtype, scale, zero_point, flags, clip=(low, high))
    check_quant(emulated, x, out_dtype, scale, zero_point, COUNTS, fit=(low, high))


@pytest.mark.parametrize("flags", range(8))
def test_quant_honours_each_combination_of_flags(emulated: EmulatedModule, flags: int) -> None:
    x = mixed_values("float32", 3000, 1.0, seed=flags)
    check_quant(emulated, x, "int8", 1.0, 0.0, flags, clip=(-128.0, 127.0), fit=(-100.0, 100.0))


@pytest.mark.parametrize("capacity", [1, 3, 1000])
@pytest.mark.parametrize(
    "count",
    [1, 31, 32, 33, 255, 256, 257, UNROLL * BLOCK - 1, UNROLL * BLOCK, UNROLL * BLOCK + 1,
     3 * UNROLL * BLOCK - 1, 3 * UNROLL * BLOCK, 3 * UNROLL * BLOCK + 1, 2 * 3 * UNROLL * BLOCK + 5],
)
def test_quant_sizes_around_block_unroll_and_grid_boundaries(
    emulated: EmulatedModule, count: int, capacity: int
) -> None:
    x = mixed_values("float64", count, 0.5, seed=count)
    if count > 1:
        x[-1] = numpy.nan  # the last element is the one a wrong bound would miss
    check_quant(emulated, x, "int16", 0.5, 3.0, ALL_FLAGS, clip=(-100.0, 100.0), fit=(-50.0, 50.0), capacity=capacity)


@pytest.mark.parametrize("in_dtype", FLOATS)
def test_quant_rounds_ties_to_even(emulated: EmulatedModule, in_dtype: str) -> None:
    k = numpy.arange(-130, 131, dtype=numpy.float64)
    q, _ = run_quant(emulated, (k + 0.5).astype(in_dtype), "int16", 1.0, 0.0, 0)
    assert q.tolist() == numpy.rint(k + 0.5).astype(numpy.int16).tolist()
    assert q[numpy.flatnonzero(k == 0)[0]] == 0 and q[numpy.flatnonzero(k == 1)[0]] == 2
    q, _ = run_quant(emulated, ((2 * k + 1) * 0.25).astype(in_dtype), "int16", 0.5, 0.0, 0)  # tie by division
    assert q.tolist() == numpy.rint(k + 0.5).astype(numpy.int16).tolist()
    q, _ = run_quant(emulated, k.astype(in_dtype), "int16", 1.0, 0.5, 0)  # tie by the zero point
    assert q.tolist() == numpy.rint(k + 0.5).astype(numpy.int16).tolist()


def neighbours(values: numpy.ndarray, steps: int) -> List[numpy.ndarray]:
    """``values`` moved ``steps`` representable values up and down (in their own dtype)."""
    up, down = values.copy(), values.copy()
    for _ in range(steps):
        up = numpy.nextafter(up, numpy.inf, dtype=values.dtype)
        down = numpy.nextafter(down, -numpy.inf, dtype=values.dtype)
    return [up, down]


@pytest.mark.parametrize("in_dtype", FLOATS)
@pytest.mark.parametrize("seed", range(3))
def test_quant_at_and_next_to_ties_with_any_scale(emulated: EmulatedModule, in_dtype: str, seed: int) -> None:
    """The kernels round a candidate in the input's precision and keep it only where it is
    farther than its error bound from a tie: every tie, its neighbours and values a little
    farther out, for scales that are no power of two, give the float64 rule's integers."""
    rng = numpy.random.default_rng(seed)
    scales = rng.uniform(0.5, 2.0, 3) * 10.0 ** rng.integers(-25, 25, 3)
    for scale in scales:
        for zero_point in (float(rng.integers(-200, 200)), 0.5, 17.25):  # integral or not
            k = numpy.arange(-300.0, 300.0)
            ties = ((k + 0.5 - zero_point) * scale).astype(in_dtype)
            parts = [ties]
            for steps in (1, 2, 3, 40, 2000):
                parts += neighbours(ties, steps)
            x = numpy.concatenate(parts)
            check_quant(emulated, x, "int16", float(scale), zero_point, ALL_FLAGS, clip=(-250.0, 250.0),
                        fit=(-200.0, 200.0))
            check_quant(emulated, x, "int16", float(scale), zero_point, COUNTS, fit=(-200.0, 200.0))


@pytest.mark.parametrize("in_dtype", FLOATS)
@pytest.mark.parametrize("pending_capacity", [0, 1, 7, 10_000])
def test_quant_when_the_fast_pass_leaves_more_than_its_list_holds(
    emulated: EmulatedModule, in_dtype: str, pending_capacity: int
) -> None:
    """Data of ties: every vector is left to the exact pass. A list too short (or a block
    leaving more than its share) makes the exact pass re-examine every vector; the integers
    and the counts stay those of the float64 rule, each value counted once."""
    k = numpy.arange(-3000.0, 3000.0)
    x = ((k + 0.5) * 0.37).astype(in_dtype)
    x[::7] = (k[::7] * 0.37).astype(in_dtype)  # some vectors sure, some not
    x[5] = numpy.nan
    for flags in (ALL_FLAGS, COUNTS):
        check_quant(emulated, x, "int16", 0.37, 3.0, flags, clip=(-2000.0, 2000.0), fit=(-1500.0, 1500.0),
                    capacity=2, pending_capacity=pending_capacity)


@pytest.mark.parametrize("in_dtype", FLOATS)
def test_quant_far_from_the_shortcuts_range(emulated: EmulatedModule, in_dtype: str) -> None:
    """Results near 2**22 and beyond, scales outside [2**-100, 2**100] (float32's shortcut),
    and clip bounds that are no integers: all take the float64 rule."""
    k = numpy.arange(2.0**22 - 40, 2.0**22 + 40, 0.25)
    big = numpy.concatenate([k, -k]).astype(in_dtype)
    check_quant(emulated, big, "int32", 1.0, 0.0, ALL_FLAGS, clip=(-(2.0**31), 2.0**31 - 1), fit=(-(2.0**22), 2.0**22))
    check_quant(emulated, big * 3, "int32", 3.0, 7.0, 0)
    rng = numpy.random.default_rng(7)
    for scale in (2.0**-110 * 1.37, 2.0**105 * 1.37, 1e-300 if in_dtype == "float64" else 1e-38):
        x = (rng.uniform(-200, 200, 3000) * scale).astype(in_dtype)
        check_quant(emulated, x, "int16", scale, 3.0, ALL_FLAGS, clip=(-300.0, 300.0), fit=(-100.0, 100.0))
    x = (rng.uniform(-20, 20, 3000) * 0.37).astype(in_dtype)
    check_quant(emulated, x, "int8", 0.37, 0.0, ALL_FLAGS, clip=(-10.5, 9.5), fit=(-5.0, 5.0))


@pytest.mark.parametrize("in_dtype", FLOATS)
def test_quant_and_dequant_of_arrays_off_the_vector_boundary(emulated: EmulatedModule, in_dtype: str) -> None:
    """Views that start one element past an aligned address take the one-value-at-a-time path."""
    x = mixed_values(in_dtype, 3 * UNROLL * BLOCK + 9, 0.37, seed=4)
    count = x.size - 1
    for x_offset, q_offset in [(1, 0), (0, 1), (1, 1)]:
        source = x[x_offset : x_offset + count]
        q = poisoned(count + 1, "int8")[q_offset : q_offset + count]
        module_args = (source, q, count, 0.37, 0.0, ALL_FLAGS, -128.0, 127.0, -100.0, 100.0)
        problems = numpy.zeros(2, dtype=numpy.uint64)
        pending = numpy.zeros(2 + 64, dtype=numpy.uint64)
        for kind in ("quant", "quant_rest"):
            name = cupy_kernels.kernel_name(kind, in_dtype, "int8")
            emulated.launch(name, grid_for(count, 3), BLOCK, *module_args, problems, pending, 64)
        rounded = numpy.clip(numpy.rint(source.astype(numpy.float64) / 0.37), -128.0, 127.0)
        defined = numpy.isfinite(rounded)
        numpy.testing.assert_array_equal(q[defined], rounded[defined].astype(numpy.int8))
        y = poisoned(count + 1, in_dtype)[x_offset : x_offset + count]
        emulated.launch(cupy_kernels.kernel_name("dequant", "int8", in_dtype), grid_for(count, 3), BLOCK,
                        q, y, count, 0.37, 1.0)
        numpy.testing.assert_array_equal(y, (0.37 * (q.astype(numpy.float64) - 1.0)).astype(in_dtype))


def test_quant_reads_subnormal_float32_exactly(emulated: EmulatedModule) -> None:
    # -ftz=true would read these as zero; the kernel converts them by hand.
    x = float32_subnormals(2000, seed=1)
    mantissa = (x.view(numpy.uint32) & 0x7FFFFF).astype(numpy.int64)
    expected = numpy.where(x < 0, -mantissa, mantissa)
    q, _ = run_quant(emulated, x, "int32", 2.0**-149, 0.0, 0)
    assert q.tolist() == expected.tolist()
    check_quant(emulated, x, "int32", 2.0**-148, 0.0, ALL_FLAGS, clip=(-(2.0**22), 2.0**22), fit=(-10.0, 10.0))


def test_quant_handles_subnormal_float64_input(emulated: EmulatedModule) -> None:
    x = numpy.array([5e-324, -5e-324, 2.2e-308, -1e-310, 0.0], dtype=numpy.float64)
    check_quant(emulated, x, "int64", 2.0**-1074, 0.0, 0)


# ---- dequant ----------------------------------------------------------------------------


def run_dequant(
    module: EmulatedModule, q: numpy.ndarray, dtype: str, scale: float, zero_point: float, capacity: int = 3
) -> numpy.ndarray:
    """Launch the dequant kernel as the CuPy backend does; return the result."""
    y = poisoned(q.size, dtype)
    name = cupy_kernels.kernel_name("dequant", q.dtype.name, dtype)
    module.launch(name, grid_for(q.size, capacity), BLOCK, q, y, q.size, scale, zero_point)
    return y


def check_dequant(
    module: EmulatedModule, q: numpy.ndarray, dtype: str, scale: float, zero_point: float, capacity: int = 3
) -> None:
    """De-quantize on the emulated GPU and with NumPy; the bits must agree."""
    y = run_dequant(module, q, dtype, scale, zero_point, capacity)
    expected = (scale * (q.astype(numpy.float64) - zero_point)).astype(dtype)
    bits = "uint32" if dtype == "float32" else "uint64"
    mismatch = numpy.flatnonzero(y.view(bits) != expected.view(bits))
    assert mismatch.size == 0, (
        f"{mismatch.size} of {q.size} differ, first q={q[mismatch[0]]}: kernel {y[mismatch[0]]!r}, "
        f"NumPy {expected[mismatch[0]]!r}"
    )


def integer_values(dtype: str, count: int, seed: int) -> numpy.ndarray:
    """Integers over the dtype's whole range, its extremes and small values included."""
    info = numpy.iinfo(dtype)
    rng = numpy.random.default_rng(seed)
    values = rng.integers(info.min, info.max, count, dtype=dtype, endpoint=True)
    values[: count // 3] = rng.integers(max(info.min, -300), 300, count // 3).astype(dtype)
    if count >= 4:
        values[-4:] = [info.min, info.max, 0, 1]
    return values


@pytest.mark.parametrize("in_dtype", INTEGERS)
@pytest.mark.parametrize("out_dtype", FLOATS)
def test_dequant_matches_numpy_for_every_dtype_pair(emulated: EmulatedModule, in_dtype: str, out_dtype: str) -> None:
    q = integer_values(in_dtype, 2 * UNROLL * BLOCK * 3 + 37, seed=len(in_dtype))
    # Plain scales, then scales whose float32 results are subnormal (ties in the 2^-149 grid
    # included) or straddle the smallest normal float32, 2^-126.
    for scale, zero_point in [(0.0173, 3.0), (0.1, -2.5), (2.0**-152, 0.0), (2.0**-140 * 1.3, 1.0),
                              (2.0**-126 / 127.3, 0.0), (2.0**-133, 0.5)]:
        check_dequant(emulated, q, out_dtype, scale, zero_point)


def test_dequant_of_every_byte_value(emulated: EmulatedModule) -> None:
    """One-byte integers are looked up in a table each block fills: all 256 values, both signs."""
    for in_dtype in ("int8", "uint8"):
        q = numpy.arange(256).astype(numpy.uint8).view(in_dtype)
        q = numpy.concatenate([q, q[::-1], q[3:]])
        for out_dtype in FLOATS:
            for scale, zero_point in [(0.0173, 3.0), (2.0**-140 * 1.3, 1.0), (1e30, -0.5)]:
                check_dequant(emulated, q, out_dtype, scale, zero_point, capacity=2)


@pytest.mark.parametrize("capacity", [1, 3, 1000])
@pytest.mark.parametrize(
    "count",
    [1, 31, 33, 256, 257, UNROLL * BLOCK - 1, UNROLL * BLOCK + 1, 3 * UNROLL * BLOCK, 3 * UNROLL * BLOCK + 1,
     2 * 3 * UNROLL * BLOCK + 5],
)
def test_dequant_sizes_around_block_unroll_and_grid_boundaries(
    emulated: EmulatedModule, count: int, capacity: int
) -> None:
    check_dequant(emulated, integer_values("int8", count, seed=count), "float32", 0.37, 1.0, capacity)


# ---- min / max --------------------------------------------------------------------------


def run_minmax(
    module: EmulatedModule, x: numpy.ndarray, omit_nonfinite: bool, capacity: int = 3
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """The two launches of the CuPy backend's minmax; return ``(low, high)`` as 0-d arrays."""
    grid = grid_for(x.size, capacity)
    partial = poisoned(2 * grid, "float64")
    low, high = poisoned(1, x.dtype.name), poisoned(1, x.dtype.name)
    name = x.dtype.name
    partial_kernel = cupy_kernels.kernel_name("minmax_partial", name)
    module.launch(partial_kernel, grid, BLOCK, x, x.size, int(omit_nonfinite), partial)
    module.launch(cupy_kernels.kernel_name("minmax_final", name), 1, BLOCK, partial, grid, low, high)
    return low[0], high[0]


def same(actual: numpy.ndarray, expected: numpy.ndarray) -> bool:
    """Equal bits, or both NaN (a NaN's payload is not part of the contract)."""
    if numpy.isnan(expected):
        return bool(numpy.isnan(actual))
    expected = numpy.asarray(expected, dtype=actual.dtype)
    return bool(actual == expected and numpy.signbit(actual) == numpy.signbit(expected))  # -0.0 is not 0.0


def check_minmax(module: EmulatedModule, x: numpy.ndarray, omit_nonfinite: bool, capacity: int = 3) -> None:
    """Min and max on the emulated GPU and with NumPy must agree."""
    low, high = run_minmax(module, x, omit_nonfinite, capacity)
    kept = x[numpy.isfinite(x)] if omit_nonfinite else x
    expected_low = kept.min() if kept.size else x.dtype.type(numpy.inf)
    expected_high = kept.max() if kept.size else x.dtype.type(-numpy.inf)
    assert same(low, expected_low) and same(high, expected_high), (
        f"kernel ({low!r}, {high!r}), NumPy ({expected_low!r}, {expected_high!r})"
    )


def spread(dtype: str, count: int, seed: int) -> numpy.ndarray:
    """Distinct-magnitude values without zeros (so a signed zero never decides a result)."""
    rng = numpy.random.default_rng(seed)
    magnitudes = 10.0 ** rng.integers(-30, 30, count)
    return (rng.uniform(1.0, 2.0, count) * rng.choice([-1.0, 1.0], count) * magnitudes).astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("omit_nonfinite", [False, True])
@pytest.mark.parametrize("special", ["none", "nan_first", "nan_last", "nan_middle", "inf", "-inf", "all_nonfinite"])
def test_minmax_matches_numpy(emulated: EmulatedModule, dtype: str, omit_nonfinite: bool, special: str) -> None:
    x = spread(dtype, 2 * UNROLL * BLOCK * 3 + 37, seed=len(special))
    positions = {"nan_first": 0, "nan_last": x.size - 1, "nan_middle": x.size // 2 + 3}
    if special in positions:
        x[positions[special]] = numpy.nan
    elif special in ("inf", "-inf"):
        x[[5, x.size - 2]] = float(special)
    elif special == "all_nonfinite":
        x[...] = numpy.nan
        x[::3] = numpy.inf
        x[1::3] = -numpy.inf
    check_minmax(emulated, x, omit_nonfinite)


@pytest.mark.parametrize("capacity", [1, 3, 1000])
@pytest.mark.parametrize(
    "count",
    [1, 2, 31, 32, 33, 255, 256, 257, UNROLL * BLOCK + 1, 3 * UNROLL * BLOCK - 1, 3 * UNROLL * BLOCK + 1,
     300 * BLOCK + 7],
)
def test_minmax_sizes_around_block_unroll_and_grid_boundaries(
    emulated: EmulatedModule, count: int, capacity: int
) -> None:
    x = spread("float32", count, seed=count)
    check_minmax(emulated, x, False, capacity)
    x[-1] = numpy.nan  # found only if the last element is read
    check_minmax(emulated, x, False, capacity)
    check_minmax(emulated, x, True, capacity)


def test_minmax_partial_finds_the_extremes_whichever_thread_holds_them(emulated: EmulatedModule) -> None:
    base = numpy.random.default_rng(3).uniform(1.0, 2.0, BLOCK)
    name = cupy_kernels.kernel_name("minmax_partial", "float64")
    wrong = []
    for position in [*range(32), *range(BLOCK - 32, BLOCK), 100, 130]:  # every lane, first and last warp
        x = base.copy()
        x[position], x[BLOCK - 1 - position] = -5.0, 7.0
        partial = poisoned(2, "float64")
        emulated.launch(name, 1, BLOCK, x, x.size, 0, partial)
        if partial.tolist() != [-5.0, 7.0]:
            wrong.append(position)
    assert wrong == []


def test_minmax_final_finds_the_extremes_whichever_partial_holds_them(emulated: EmulatedModule) -> None:
    count = BLOCK + 3  # more partial results than threads: thread 0 to 2 fold two each
    base = numpy.random.default_rng(4).uniform(1.0, 2.0, (count, 2))
    name = cupy_kernels.kernel_name("minmax_final", "float64")
    wrong = []
    for position in [*range(32), *range(BLOCK - 32, count), 100, 130]:
        partial = base.copy()
        partial[position, 0], partial[count - 1 - position, 1] = -5.0, 7.0
        low, high = poisoned(1, "float64"), poisoned(1, "float64")
        emulated.launch(name, 1, BLOCK, partial.reshape(-1), count, low, high)
        if (low[0], high[0]) != (-5.0, 7.0):
            wrong.append(position)
    assert wrong == []


def test_minmax_keeps_subnormal_float32_exact(emulated: EmulatedModule) -> None:
    x = numpy.abs(float32_subnormals(3000, seed=2))
    x[1000:] = numpy.float32(3.5)
    check_minmax(emulated, x, False)  # min is the smallest subnormal, 2^-149
    check_minmax(emulated, -x, True)  # max is -2^-149


# ---- the emulation itself ---------------------------------------------------------------


def test_every_kernel_of_the_module_is_emulated(emulated: EmulatedModule) -> None:
    in_source = [k.name for k in kernel_signatures(cupy_kernels.source())]
    assert in_source == list(cupy_kernels.kernel_names())
    assert set(in_source) <= set(emulated.kernels)


def test_emulated_float_conversions_flush_subnormals_as_ftz_does(emulated: EmulatedModule) -> None:
    # What makes the subnormal tests above meaningful: a plain conversion in kernel code
    # loses subnormal floats here exactly as it does on the GPU under -ftz=true.
    assert emulated.widen(0x00000001) == 0
    assert emulated.widen(0x807FFFFF) == 0x8000000000000000
    assert emulated.widen(0x00800000) == numpy.float64(2.0**-126).view(numpy.uint64)
    assert emulated.narrow(2.0**-140) == 0
    assert emulated.narrow(2.0**-126) == 0x00800000


def test_emulation_reports_a_barrier_that_a_thread_never_reaches(emulated: EmulatedModule) -> None:
    with pytest.raises(RuntimeError, match="deadlock"):
        emulated.launch("qarray_emulation_probe_early_return", 1, 64, numpy.zeros(64, dtype=numpy.int32))


def test_emulation_refuses_a_launch_above_the_launch_bound(emulated: EmulatedModule) -> None:
    x = numpy.ones(10, dtype=numpy.float32)
    with pytest.raises(RuntimeError, match="bound"):
        name = cupy_kernels.kernel_name("minmax_partial", "float32")
        emulated.launch(name, 1, 2 * BLOCK, x, x.size, 0, numpy.empty(2))
