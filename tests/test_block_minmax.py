"""Per-block min/max: ``backend.minmax(values, omit_nonfinite, extent=...)`` on every backend.

With an ``extent`` (one int per axis: how many consecutive indices one block spans), a
backend returns ``(low, high)``: arrays of the parameter grid's shape
(``ceil(shape[d] / extent[d])`` per axis), of the input's library, dtype and device, one
min and max per block. NaN in a block makes both of its results NaN, unless
``omit_nonfinite``; then NaN and ±Inf are left out, and a block with nothing left gets
``(+Inf, -Inf)``. Which of ``-0.0`` and ``0.0`` is returned when both occur is unspecified.

Every library of the suite's ``xb`` fixture is checked against an independent NumPy
reference (a loop over the blocks), for axis-style and group extents with a shorter last
block, 1-d to 3-d, NaN and ±Inf with and without omitting them, subnormal float32, float16
(the generic path), empty input and argument errors. The NumPy backend's compiled kernel
is checked on every layout (C, Fortran, strided, reversed, broadcast, read-only views),
on each way it splits the work over threads, and for memory; the Dask backend for
laziness and chunk alignment; the CuPy backend's CUDA kernels on the CPU emulation
(``tests/cuda_emulation``), launched by :meth:`CupyBackend.minmax` itself.
"""

from __future__ import annotations

import importlib.util
import itertools
import tracemalloc
from typing import Any, Callable, List, Optional, Tuple

import array_api_compat
import numpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qarray.backends import ArrayAPIBackend, NumpyBackend, _parallel, backend_for, cupy_kernels, numba_kernels
from qarray.core.granularity import block_extent
from qarray.core.namespace import device_of, library_name, to_numpy

from cuda_emulation.backend import BLOCK, Emulation, on_device
from cuda_emulation.inputs import float32_subnormals

HAS_NUMBA = importlib.util.find_spec("numba") is not None
GENERIC = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))
NUMPY = NumpyBackend()

# (shape, extent): axis-style, group-style with a shorter last block, block tuples, size-1 extents
CASES: List[Tuple[Tuple[int, ...], Tuple[int, ...]]] = [
    ((10,), (1,)),
    ((10,), (4,)),
    ((10,), (10,)),
    ((6, 10), block_extent((6, 10), axis=0)[0]),
    ((6, 10), block_extent((6, 10), axis=1)[0]),
    ((6, 10), block_extent((6, 10), block_size=4)[0]),
    ((6, 10), (4, 3)),
    ((6, 10), (1, 1)),
    ((6, 10), (6, 10)),
    ((4, 5, 7), block_extent((4, 5, 7), axis=(0, 2))[0]),
    ((4, 5, 7), block_extent((4, 5, 7), block_size=3)[0]),
    ((4, 5, 7), (3, 2, 4)),
    ((4, 5, 7), (1, 5, 1)),
]


# ---- the reference ------------------------------------------------------------------------


def reference(values: numpy.ndarray, extent: Tuple[int, ...], omit: bool) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Per-block min and max by a plain loop over the blocks (independent of the backends)."""
    grid = tuple(-(-n // e) for n, e in zip(values.shape, extent))
    low = numpy.empty(grid, dtype=values.dtype)
    high = numpy.empty(grid, dtype=values.dtype)
    for index in numpy.ndindex(*grid):
        block = values[tuple(slice(g * e, (g + 1) * e) for g, e in zip(index, extent))].reshape(-1)
        if omit:
            block = block[numpy.isfinite(block)]
            low[index] = block.min() if block.size else numpy.inf
            high[index] = block.max() if block.size else -numpy.inf
        elif numpy.isnan(block).any():
            low[index] = high[index] = numpy.nan
        else:
            low[index], high[index] = block.min(), block.max()
    return low, high


def assert_matches(result: Any, expected: numpy.ndarray) -> None:
    """Same dtype, shape and values: NaN where NaN, and the same bits elsewhere except that a
    zero's sign is unspecified (``-0.0 == 0.0``)."""
    actual = to_numpy(result)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    nan = numpy.isnan(expected)
    numpy.testing.assert_array_equal(numpy.isnan(actual), nan)
    numpy.testing.assert_array_equal(actual[~nan], expected[~nan], strict=True)


def data(shape: Tuple[int, ...], dtype: str, seed: int, specials: bool = True) -> numpy.ndarray:
    """Normal values with a few NaN, +Inf and -Inf (``specials``) at random places."""
    rng = numpy.random.default_rng(seed)
    values = rng.standard_normal(shape).astype(dtype)
    if specials and values.size:
        flat = values.reshape(-1)
        for special in (numpy.nan, numpy.inf, -numpy.inf):
            flat[rng.integers(0, flat.size, max(1, flat.size // 40))] = special
    return values


def check(backend: Any, array: Any, host: numpy.ndarray, extent: Tuple[int, ...], omit: bool) -> None:
    """``backend.minmax`` with ``extent`` gives the reference's numbers, in ``array``'s library and device."""
    low, high = backend.minmax(array, omit, extent=extent)
    expected_low, expected_high = reference(host, extent, omit)
    for result, expected in ((low, expected_low), (high, expected_high)):
        assert library_name(array_api_compat.array_namespace(result)) == library_name(
            array_api_compat.array_namespace(array)
        )
        assert str(device_of(result)) == str(device_of(array))
        assert_matches(result, expected)


# ---- every backend ------------------------------------------------------------------------------


@pytest.mark.parametrize("omit", [False, True], ids=["propagate", "omit"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, extent", CASES, ids=[f"{s}-{e}" for s, e in CASES])
def test_every_backend_matches_the_reference(xb, shape, extent, dtype, omit):
    host = data(shape, dtype, seed=len(shape) + sum(extent))
    array = xb.asarray(host)
    check(backend_for(array), array, host, extent, omit)


@pytest.mark.parametrize("omit", [False, True], ids=["propagate", "omit"])
def test_every_backend_without_non_finite_values(xb, omit):
    host = data((5, 9), "float64", seed=1, specials=False)
    array = xb.asarray(host)
    for extent in itertools.product((1, 2, 5), (1, 4, 9)):
        check(backend_for(array), array, host, extent, omit)


def test_a_block_without_finite_values_gives_inf_and_minus_inf(xb):
    host = numpy.array([[numpy.nan, numpy.inf, 1.0, 2.0], [-numpy.inf, numpy.nan, -3.0, 0.5]])
    array = xb.asarray(host)
    low, high = backend_for(array).minmax(array, omit_nonfinite=True, extent=(2, 2))
    assert to_numpy(low).tolist() == [[numpy.inf, -3.0]]
    assert to_numpy(high).tolist() == [[-numpy.inf, 2.0]]
    low, high = backend_for(array).minmax(array, extent=(2, 2))
    assert numpy.isnan(to_numpy(low)[0, 0]) and numpy.isnan(to_numpy(high)[0, 0])
    assert to_numpy(low)[0, 1] == -3.0 and to_numpy(high)[0, 1] == 2.0


def test_infinities_are_values_when_not_omitted(xb):
    host = numpy.array([numpy.inf, 1.0, -numpy.inf, 2.0, numpy.inf, numpy.inf])
    array = xb.asarray(host)
    low, high = backend_for(array).minmax(array, extent=(2,))
    assert to_numpy(low).tolist() == [1.0, -numpy.inf, numpy.inf]
    assert to_numpy(high).tolist() == [numpy.inf, 2.0, numpy.inf]


def test_subnormal_float32_keep_their_bits(xb):
    host = float32_subnormals(60, seed=5).reshape(6, 10)
    host[0, 0], host[1, 1] = numpy.float32(1.2e-38), numpy.float32(-1.1754944e-38)  # normal, the smallest
    array = xb.asarray(host)
    low, high = backend_for(array).minmax(array, extent=(2, 3))
    expected_low, expected_high = reference(host, (2, 3), False)
    assert to_numpy(low).view(numpy.uint32).tolist() == expected_low.view(numpy.uint32).tolist()
    assert to_numpy(high).view(numpy.uint32).tolist() == expected_high.view(numpy.uint32).tolist()


def test_float16_takes_the_generic_path(xb):
    if xb.name == "array_api_strict":
        pytest.skip("array-api-strict has no float16")
    host = data((6, 10), "float16", seed=2)
    array = xb.asarray(host)
    for omit in (False, True):
        check(backend_for(array), array, host, (4, 3), omit)


def test_signed_zeros_compare_equal_to_either(xb):
    host = numpy.array([[-0.0, 0.0, 1.0], [0.0, -0.0, -1.0]])
    array = xb.asarray(host)
    low, high = backend_for(array).minmax(array, extent=(1, 2))
    assert to_numpy(low).tolist() == [[0.0, 1.0], [0.0, -1.0]]
    assert to_numpy(high).tolist() == [[0.0, 1.0], [0.0, -1.0]]


def test_without_extent_the_results_stay_0_d(xb):
    host = data((6, 10), "float64", seed=3)
    array = xb.asarray(host)
    for omit in (False, True):
        low, high = backend_for(array).minmax(array, omit_nonfinite=omit)
        assert tuple(low.shape) == tuple(high.shape) == ()
        expected_low, expected_high = reference(host.reshape(1, -1), (1, host.size), omit)
        assert_matches(low, expected_low.reshape(()))
        assert_matches(high, expected_high.reshape(()))


def test_a_0_d_array_has_one_block(xb):
    array = xb.asarray(numpy.array(2.5))
    low, high = backend_for(array).minmax(array, extent=())
    assert tuple(low.shape) == () and float(to_numpy(low)) == float(to_numpy(high)) == 2.5


def test_empty_input_gives_empty_grids(xb):
    host = numpy.zeros((0, 10), dtype=numpy.float32)
    array = xb.asarray(host)
    low, high = backend_for(array).minmax(array, extent=(1, 4))
    assert to_numpy(low).shape == to_numpy(high).shape == (0, 3)
    assert to_numpy(low).dtype == numpy.float32


@pytest.mark.parametrize(
    "extent, error",
    [
        ((1,), ValueError),  # one entry for a 2-d array
        ((1, 2, 3), ValueError),
        ((0, 2), ValueError),
        ((1, -2), ValueError),
        ((1.0, 2), TypeError),
        ((True, 2), TypeError),
        (3, TypeError),
        ("ab", TypeError),
        ((1, None), TypeError),
    ],
)
def test_a_bad_extent_is_refused_naming_it(xb, extent, error):
    array = xb.asarray(numpy.zeros((4, 6)))
    with pytest.raises(error, match="extent"):
        backend_for(array).minmax(array, extent=extent)


def test_an_extent_of_numpy_integers_or_a_list_is_taken(xb):
    host = data((4, 6), "float64", seed=4)
    array = xb.asarray(host)
    for extent in ((numpy.int64(2), numpy.int32(4)), [2, 4]):
        low, _ = backend_for(array).minmax(array, extent=extent)
        assert_matches(low, reference(host, (2, 4), False)[0])


def test_extents_longer_than_their_axis_make_one_block_along_it(xb):
    host = data((4, 6), "float64", seed=6)
    array = xb.asarray(host)
    low, high = backend_for(array).minmax(array, extent=(100, 4))
    assert_matches(low, reference(host, (4, 4), False)[0])
    assert_matches(high, reference(host, (4, 4), False)[1])


# ---- the NumPy backend: the compiled kernel ------------------------------------------------------


def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small thread chunks on three threads, so that modest arrays are split (even on one core)."""
    monkeypatch.setattr(_parallel, "MIN_CHUNK", 64)
    monkeypatch.setattr(_parallel, "CHUNK_ALIGN", 8)
    monkeypatch.setattr(_parallel, "thread_count", lambda: 3)


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The NumPy backend with its compiled kernel for every size, on small thread chunks."""
    if not HAS_NUMBA:
        pytest.skip("numba is not installed (pip install 'qarray[fast]')")
    _small_chunks(monkeypatch)
    monkeypatch.delenv(numba_kernels.DISABLE_ENV, raising=False)
    monkeypatch.setattr(numba_kernels, "MIN_ELEMENTS", 0)


@pytest.fixture(params=["generic", "numba"])
def numpy_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The NumPy backend with Numba off (the generic path), then with its compiled kernel."""
    if request.param == "numba":
        request.getfixturevalue("compiled")
        return "numba"
    _small_chunks(monkeypatch)
    monkeypatch.setenv(numba_kernels.DISABLE_ENV, "1")
    return "generic"


def layouts(values: numpy.ndarray) -> List[Tuple[str, numpy.ndarray]]:
    """``values`` in many memory layouts (views where possible)."""
    found = [
        ("C", values),
        ("F", numpy.asfortranarray(values)),
        ("reversed", values[::-1]),
        ("every-other-last", values[..., ::2]),
        ("read-only", _read_only(values)),
        ("moved-axis", numpy.moveaxis(values, 0, -1)),
    ]
    if values.ndim >= 2:
        found.append(("transposed", values.T))
        found.append(("broadcast", numpy.broadcast_to(values[:1], values.shape)))
        found.append(("column-window", values[:, 1:-1]))
    if values.ndim >= 3:
        found.append(("not-collapsible", values[:, 1:, ::2]))
        found.append(("not-collapsible-moved", numpy.moveaxis(values, 1, -1)[..., ::2]))
    return found


def _read_only(values: numpy.ndarray) -> numpy.ndarray:
    view = values.view()
    view.flags.writeable = False
    return view


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(50,), (9, 31), (6, 5, 13)])
def test_numpy_backend_on_every_layout(numpy_path, shape, dtype):
    values = data(shape, dtype, seed=7)
    for name, view in layouts(values):
        extents = set(itertools.product(*[sorted({1, 2, 3, 5, n}) for n in view.shape]))
        for extent in sorted(extents):
            for omit in (False, True):
                low, high = NUMPY.minmax(view, omit, extent=extent)
                expected_low, expected_high = reference(view, extent, omit)
                assert isinstance(low, numpy.ndarray), name
                assert_matches(low, expected_low)
                assert_matches(high, expected_high)


@st.composite
def _views_and_extents(draw: Any) -> Tuple[numpy.ndarray, Tuple[int, ...], bool]:
    """A random 1-d to 3-d array, seen through random steps and an axis order, and an extent."""
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    steps = tuple(draw(st.sampled_from([1, 1, 2, -1, -3])) for _ in range(ndim))
    order = draw(st.permutations(range(ndim)))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    base = data(tuple(length * abs(step) for length, step in zip(shape, steps)), dtype, seed=draw(st.integers(0, 99)))
    view = base[tuple(slice(None, None, step) for step in steps)].transpose(order)
    extent = tuple(draw(st.integers(1, length + 1)) for length in view.shape)
    return view, extent, draw(st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_views_and_extents())
def test_numpy_kernel_on_random_views_and_extents(compiled, case):
    view, extent, omit = case
    low, high = NUMPY.minmax(view, omit, extent=extent)
    expected_low, expected_high = reference(view, extent, omit)
    assert_matches(low, expected_low)
    assert_matches(high, expected_high)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_backend_compiled_and_generic_give_the_same_bits(compiled, dtype):
    values = data((40, 33), dtype, seed=8, specials=False)
    values[3, :5] = -0.0
    for extent in [(1, 33), (40, 1), (3, 4), (1, 1), (40, 33)]:
        compiled = NUMPY.minmax(values, extent=extent)
        generic = GENERIC.minmax(values, extent=extent)
        for got, want in zip(compiled, generic):
            assert_matches(got, to_numpy(want))


def test_large_input_takes_the_compiled_kernel(monkeypatch):
    if not HAS_NUMBA:
        pytest.skip("numba is not installed")
    monkeypatch.delenv(numba_kernels.DISABLE_ENV, raising=False)
    calls: List[int] = []
    original = numba_kernels.minmax_grid

    def spy(parts: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(parts))
        return original(parts, *args, **kwargs)

    monkeypatch.setattr(numba_kernels, "minmax_grid", spy)
    values = data((512, 512), "float32", seed=9)
    assert values[::3].size >= numba_kernels.MIN_ELEMENTS
    for view in (values, values.T, values[:, ::2], values[::3]):
        NUMPY.minmax(view, extent=(1, 32) if view.shape[1] >= 32 else (1, 1))
    NUMPY.minmax(values[:8, :8], extent=(1, 4))  # small: the generic path
    NUMPY.minmax(values.astype(numpy.float16), extent=(1, 4))  # float16: the generic path
    NUMPY.minmax(values.astype(">f4"), extent=(1, 4))  # byte-swapped: the generic path
    assert calls == [1, 1, 1, 1]


def test_views_that_do_not_collapse_go_to_the_kernel_in_parts(compiled, monkeypatch):
    calls: List[int] = []
    original = numba_kernels.minmax_grid

    def spy(parts: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(parts))
        return original(parts, *args, **kwargs)

    monkeypatch.setattr(numba_kernels, "minmax_grid", spy)
    values = data((6, 8, 10), "float64", seed=10)
    view = values[:, 1:7, ::2]  # rows of axis 1 do not follow on from those of axis 0
    low, high = NUMPY.minmax(view, extent=(4, 1, 2))
    assert calls == [6]
    assert_matches(low, reference(view, (4, 1, 2), False)[0])
    assert_matches(high, reference(view, (4, 1, 2), False)[1])


class _KernelLog:
    """Records the compiled kernel's calls: rows, group range and the grids written."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: List[Tuple[int, int, int, int]] = []
        kernels = numba_kernels._kernels()
        log = self

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                return getattr(kernels, name)

            @staticmethod
            def minmax_grid(bits: Any, rows: Any, first_row: int, group: int, first_group: int, last_group: int,
                            low: Any, *rest: Any) -> None:
                log.calls.append((int(bits.shape[0]), int(first_group), int(last_group), id(low)))
                kernels.minmax_grid(bits, rows, first_row, group, first_group, last_group, low, *rest)

        monkeypatch.setattr(numba_kernels, "_kernels", lambda: Proxy())


@pytest.mark.parametrize(
    "shape, extent, split",
    [
        ((64, 40), (1, 8), "rows"),  # 64 row slabs, each its own grid row
        ((16, 8, 40), (2, 4, 8), "rows"),  # slabs of 2 indices of axis 0 (grid rows shared inside)
        ((64, 40), (64, 1), "groups"),  # one grid row, 40 grid columns
        ((2, 8, 400), (2, 1, 400), "private"),  # one grid column, grid rows shared by both halves
        ((64, 40), (64, 40), "private"),  # one block
        ((2, 400, 1), (2, 1, 1), "one-thread"),  # a grid too large to copy per thread
    ],
)
def test_numpy_kernel_splits_the_work_over_threads(compiled, monkeypatch, shape, extent, split):
    log = _KernelLog(monkeypatch)
    values = data(shape, "float32", seed=11)
    low, high = NUMPY.minmax(values, extent=extent)
    expected_low, expected_high = reference(values, extent, False)
    assert_matches(low, expected_low)
    assert_matches(high, expected_high)
    rows, first_groups, last_groups, grids = zip(*log.calls)
    n_rows = values.size // shape[-1]
    if split == "rows":
        assert len(log.calls) > 1 and sum(rows) == n_rows and len(set(grids)) == 1
        assert set(first_groups) == {0}
    elif split == "groups":
        assert len(log.calls) > 1 and set(rows) == {n_rows} and len(set(grids)) == 1
        assert sorted(zip(first_groups, last_groups))[0][0] == 0 and max(last_groups) == low.shape[-1]
    elif split == "private":
        assert len(log.calls) > 1 and len(set(grids)) == len(log.calls) and sum(rows) == n_rows
    else:
        assert log.calls == [(n_rows, 0, low.shape[-1], grids[0])]


def test_numpy_kernel_results_do_not_depend_on_the_thread_count(monkeypatch):
    if not HAS_NUMBA:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(numba_kernels, "MIN_ELEMENTS", 0)
    monkeypatch.setattr(_parallel, "MIN_CHUNK", 64)
    monkeypatch.setattr(_parallel, "CHUNK_ALIGN", 8)
    values = data((30, 7, 20), "float64", seed=12)
    results = []
    for threads in (1, 2, 5, 16):
        monkeypatch.setattr(_parallel, "thread_count", lambda threads=threads: threads)
        results.append([to_numpy(a).tobytes() for a in NUMPY.minmax(values, True, extent=(4, 7, 3))])
    assert all(result == results[0] for result in results)


@pytest.mark.parametrize("make", [lambda v: v, numpy.asfortranarray, lambda v: v[:, ::2], lambda v: v.T[::-1]],
                         ids=["C", "F", "strided", "transposed-reversed"])
@pytest.mark.parametrize("extent", [(1, 1024), (512, 1), (1, 32), (512, 512)])
def test_numpy_kernel_allocates_no_full_size_temporary(make, extent):
    if not HAS_NUMBA:
        pytest.skip("numba is not installed")
    values = make(data((512, 1024), "float64", seed=13))
    extent = tuple(min(e, n) for e, n in zip(extent, values.shape))
    NUMPY.minmax(values, True, extent=extent)  # compiled, threads started
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        low, high = NUMPY.minmax(values, True, extent=extent)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert peak <= low.nbytes + high.nbytes + values.nbytes // 16, (peak, values.nbytes)


def test_numba_kernel_refuses_what_it_cannot_take():
    if not HAS_NUMBA:
        pytest.skip("numba is not installed")
    with pytest.raises(ValueError, match="parts"):
        numba_kernels.minmax_grid([], (4,), (2,))
    with pytest.raises(TypeError, match="parts"):
        numba_kernels.minmax_grid([(0, numpy.zeros((1, 4), dtype=numpy.float16))], (4,), (2,))
    with pytest.raises(TypeError, match="parts"):
        numba_kernels.minmax_grid([(0, numpy.zeros(4))], (4,), (2,))
    with pytest.raises(TypeError, match="byte order"):
        numba_kernels.minmax_grid([(0, numpy.zeros((1, 4), dtype=">f8"))], (4,), (2,))


# ---- the Dask backend -----------------------------------------------------------------------------


def _dask() -> Any:
    return pytest.importorskip("dask.array", reason="dask is not installed")


def test_dask_results_are_lazy_and_computed_in_one_go(monkeypatch):
    da = _dask()
    import dask

    values = data((13, 17), "float64", seed=14)
    array = da.from_array(values, chunks=(4, 5))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("minmax computed something")

    backend = backend_for(array)
    with dask.config.set(scheduler=refuse):
        low, high = backend.minmax(array, True, extent=(3, 7))
    assert isinstance(low, da.Array) and isinstance(high, da.Array)
    assert low.shape == high.shape == (5, 3)
    computed_low, computed_high = dask.compute(low, high)
    expected_low, expected_high = reference(values, (3, 7), True)
    assert_matches(computed_low, expected_low)
    assert_matches(computed_high, expected_high)


@pytest.mark.parametrize("chunks", [7, 50, (4, 5), (13, 3), ((1, 5, 7), (3, 3, 10, 1))], ids=str)
def test_dask_any_chunks_any_extent(chunks):
    da = _dask()
    values = data((13, 17), "float32", seed=15)
    array = da.from_array(values, chunks=chunks)
    backend = backend_for(array)
    for extent in itertools.product((1, 2, 5, 8, 13), (1, 3, 4, 17)):
        for omit in (False, True):
            low, high = backend.minmax(array, omit, extent=extent)
            expected_low, expected_high = reference(values, extent, omit)
            assert_matches(low.compute(), expected_low)
            assert_matches(high.compute(), expected_high)


def test_dask_chunks_take_their_library_kernel(monkeypatch):
    da = _dask()
    seen: List[Tuple[Tuple[int, ...], Tuple[int, ...]]] = []
    original = NumpyBackend.minmax

    def spy(self: Any, values: Any, omit_nonfinite: bool = False, *, extent: Optional[Tuple[int, ...]] = None) -> Any:
        if extent is not None:
            seen.append((tuple(values.shape), tuple(extent)))
        return original(self, values, omit_nonfinite, extent=extent)

    monkeypatch.setattr(NumpyBackend, "minmax", spy)
    array = da.from_array(data((12, 8), "float64", seed=16), chunks=(5, 8))
    backend_for(array).minmax(array, extent=(3, 4))[0].compute()
    # chunk ends 5 and 10 moved to the nearest multiples of 3 (6 and 9): whole blocks in each chunk
    assert sorted(seen) == [((3, 8), (3, 4)), ((3, 8), (3, 4)), ((6, 8), (3, 4))]


def test_dask_with_unknown_chunk_sizes_is_refused():
    da = _dask()
    array = da.from_array(numpy.arange(10.0), chunks=3)
    unknown = array[array > 2.0]
    with pytest.raises(ValueError, match="known shape"):
        backend_for(unknown).minmax(unknown, extent=(2,))


# ---- the CuPy backend's CUDA kernels, on the CPU emulation --------------------------------------


def emulated_minmax(
    emulation: Callable[..., Emulation], values: numpy.ndarray, extent: Tuple[int, ...], omit: bool, capacity: int = 3
) -> Tuple[numpy.ndarray, numpy.ndarray, List[Tuple[str, int, int]]]:
    """:meth:`CupyBackend.minmax` with ``extent`` on the emulation: results and the launches."""
    emulated = emulation(capacity)
    low, high = emulated.backend.minmax(on_device(values), omit, extent=extent)
    return numpy.asarray(low), numpy.asarray(high), list(emulated.launches)


def check_emulated(
    emulation: Callable[..., Emulation], values: numpy.ndarray, extent: Tuple[int, ...], omit: bool, capacity: int = 3
) -> None:
    low, high, launches = emulated_minmax(emulation, values, extent, omit, capacity)
    expected_low, expected_high = reference(values, extent, omit)
    assert_matches(low, expected_low)
    assert_matches(high, expected_high)
    dtype = values.dtype.name
    grid_size = expected_low.size
    assert [name for name, _, _ in launches] == [
        cupy_kernels.kernel_name("minmax_grid", dtype),
        cupy_kernels.kernel_name("minmax_grid_final", dtype),
    ]
    assert launches[0][1:] == (max(1, min(-(-values.size // BLOCK), capacity)), BLOCK)
    assert launches[1][1:] == (max(1, min(-(-grid_size // BLOCK), capacity)), BLOCK)


@pytest.mark.parametrize("omit", [False, True], ids=["propagate", "omit"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, extent", CASES, ids=[f"{s}-{e}" for s, e in CASES])
def test_cuda_kernels_match_the_reference(emulation, shape, extent, dtype, omit):
    check_emulated(emulation, data(shape, dtype, seed=17), extent, omit)


@pytest.mark.parametrize("capacity", [1, 2, 7])
@pytest.mark.parametrize(
    "shape, extent",
    [
        ((3000,), (3000,)),  # one block over many warps' ranges
        ((3000,), (45,)),  # blocks across tile and range ends
        ((3000,), (1,)),  # a block per value
        ((61, 50), (61, 1)),  # per column: every lane of a tile in another block
        ((50, 2), (2, 1)),  # blocks alternate 0, 1, 0, 1 ... within tiles
        ((7, 9, 50), (2, 3, 16)),  # the row map with leading extents
        ((1, 4099), (1, 33)),  # runs of 33 against tiles of 32
    ],
)
def test_cuda_kernels_across_tiles_runs_and_grid_sizes(emulation, shape, extent, capacity):
    for omit in (False, True):
        check_emulated(emulation, data(shape, "float32", seed=18), extent, omit, capacity)


def test_cuda_kernels_keep_subnormal_float32_bits(emulation):
    values = float32_subnormals(2000, seed=19).reshape(40, 50)
    values[::7, 3] = numpy.float32(1.5e-38)  # normal neighbours
    low, high, _ = emulated_minmax(emulation, values, (3, 8), False)
    expected_low, expected_high = reference(values, (3, 8), False)
    assert low.view(numpy.uint32).tolist() == expected_low.view(numpy.uint32).tolist()
    assert high.view(numpy.uint32).tolist() == expected_high.view(numpy.uint32).tolist()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_kernels_with_non_finite_blocks(emulation, dtype):
    values = numpy.array(
        [[numpy.nan, 1.0, numpy.inf, numpy.inf], [-numpy.inf, numpy.nan, -numpy.inf, 2.0]] * 40, dtype=dtype
    )
    values[5, 2] = -numpy.nan  # a NaN with the sign bit
    for omit in (False, True):
        for extent in [(1, 1), (1, 2), (2, 1), (2, 2), (80, 4), (3, 3)]:
            check_emulated(emulation, values, extent, omit)


def test_cuda_kernels_on_other_layouts(emulation):
    values = data((33, 41), "float64", seed=20)
    for view in (numpy.asfortranarray(values), values[:, ::3], values[::-1]):
        low, high, _ = emulated_minmax(emulation, view, (4, 5), True)
        expected_low, expected_high = reference(view, (4, 5), True)
        assert_matches(low, expected_low)
        assert_matches(high, expected_high)


def test_cuda_float16_and_empty_input_take_the_generic_path(emulation):
    values = data((6, 10), "float16", seed=21)
    low, high, launches = emulated_minmax(emulation, values, (4, 3), False)
    assert launches == []
    assert_matches(low, reference(values, (4, 3), False)[0])
    assert_matches(high, reference(values, (4, 3), False)[1])
    low, high, launches = emulated_minmax(emulation, numpy.zeros((0, 5), dtype=numpy.float32), (1, 2), False)
    assert launches == [] and low.shape == high.shape == (0, 3)


def test_cuda_extent_errors_come_before_any_launch(emulation):
    emulated = emulation(3)
    with pytest.raises(ValueError, match="extent"):
        emulated.backend.minmax(on_device(numpy.zeros((4, 4), dtype=numpy.float32)), extent=(1,))
    assert emulated.launches == []


def test_the_module_has_the_grid_min_max_kernels():
    names = cupy_kernels.kernel_names()
    for dtype in cupy_kernels.FLOAT_TYPES:
        assert f"qarray_minmax_grid_{dtype}" in names
        assert f"qarray_minmax_grid_final_{dtype}" in names
    with pytest.raises(ValueError, match="second"):
        cupy_kernels.kernel_name("minmax_grid", "float32", "int8")
    with pytest.raises(ValueError, match="first"):
        cupy_kernels.kernel_name("minmax_grid", "float16")
