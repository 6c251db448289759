"""Properties of quantization that hold for any input, checked with hypothesis on every backend.

* qvalues lie in the clipping range;
* ``|dequant(quant(x)) - x| <= |scale| / 2`` for ``x`` inside ``[rmin, rmax]``;
* ``quant`` is monotone non-decreasing in ``x`` (for a positive scale);
* ``quant(dequant(q)) == q`` for every ``q`` of the range;
* every backend gives the same bits as NumPy, and NumPy's blocked kernels the
  same bits as the generic Array API backend;
* the NaN policy behaves alike on every backend;
* serialization round trips give equal objects;
* a QuantizedArray never shares memory with the caller's arrays.

The ``xb`` fixture runs each test on every array library available here.
"""

from __future__ import annotations

import functools
from typing import Any, Tuple

import numpy
import pytest
from array_api_compat import numpy as compat_numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qarray
from qarray import QuantizationOptions, QuantizedArray, UniformQuantizer
from qarray.backends import ArrayAPIBackend, NumpyBackend
from qarray.core.namespace import to_numpy

from bits import assert_same_bits
from kernel_calls import dequantize, quantize

EPS = float(numpy.finfo(numpy.float64).eps)

PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
"""The xb fixture only hands out a library: reusing it across examples is safe."""


@st.composite
def options(draw: st.DrawFn, max_bits: int = 32, qat: bool = True, narrow: bool = True) -> QuantizationOptions:
    """Any valid combination of options."""
    n_bits = draw(st.integers(1, max_bits))
    is_signed = draw(st.booleans())
    is_symmetric = is_signed and n_bits >= 2 and draw(st.booleans())
    is_qat = qat and not is_symmetric and draw(st.booleans())
    result = QuantizationOptions(n_bits, is_signed=is_signed, is_symmetric=is_symmetric, is_qat=is_qat)
    result.is_narrow = narrow and draw(st.booleans())
    return result


def float_arrays(
    min_side: int = 1, max_side: int = 40, bound: float = 1e6, dtype: Any = None
) -> st.SearchStrategy[numpy.ndarray]:
    """Finite float arrays of 1 to 3 dimensions."""
    dtypes = st.sampled_from([numpy.float64, numpy.float32]) if dtype is None else st.just(dtype)
    return hnp.arrays(
        dtypes,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=min_side, max_side=max_side),
        elements=st.floats(-bound, bound, allow_nan=False, width=32),
    )


def clip_bounds(quantizer: UniformQuantizer) -> Tuple[float, float]:
    clip = quantizer.clip_range()
    return (-numpy.inf, numpy.inf) if clip is None else clip


def host(array: Any) -> numpy.ndarray:
    return to_numpy(array)


# -- ranges and errors ---------------------------------------------------------------------


@PROPERTY
@given(values=float_arrays(), opts=options(), outside=st.floats(1.0, 1e6))
def test_qvalues_lie_in_the_clipping_range(
    xb: Any, values: numpy.ndarray, opts: QuantizationOptions, outside: float
) -> None:
    array = QuantizedArray(opts.n_bits, xb.asarray(values), options=opts)
    low, high = clip_bounds(array.quantizer)
    qvalues = host(array.qvalues)
    assert qvalues.dtype == numpy.int64 and qvalues.shape == values.shape
    assert numpy.all((qvalues >= low) & (qvalues <= high))
    if array.quantizer.clip_range() is not None:  # values far outside the calibration range clip too
        wide = numpy.concatenate([values.reshape(-1) * 4 - outside, values.reshape(-1) * 4 + outside])
        clipped = host(array.quantizer.quant(xb.asarray(wide)))
        assert numpy.all((clipped >= low) & (clipped <= high))


@PROPERTY
@given(
    values=float_arrays(),
    opts=options(max_bits=53, narrow=False),
    where=st.lists(st.floats(0, 1), min_size=1, max_size=20),
)
def test_round_trip_error_is_at_most_half_a_step(
    xb: Any, values: numpy.ndarray, opts: QuantizationOptions, where: list
) -> None:
    array = QuantizedArray(opts.n_bits, xb.asarray(values), options=opts)
    quantizer = array.quantizer
    rmin, rmax = float(quantizer.rmin), float(quantizer.rmax)
    inside = numpy.clip(rmin + numpy.array(where) * (rmax - rmin), rmin, rmax)
    points = numpy.concatenate([values.reshape(-1).astype(numpy.float64), inside, [rmin, rmax]])
    back = host(quantizer.dequant(quantizer.quant(xb.asarray(points))))
    magnitude = max(abs(rmin), abs(rmax), 1e-300)
    bound = abs(float(quantizer.scale)) / 2 * (1 + 1e-9) + 16 * EPS * magnitude
    assert numpy.max(numpy.abs(back - points)) <= bound, (float(quantizer.scale), quantizer.zero_point)


@PROPERTY
@given(
    values=float_arrays(),
    opts=options(),
    probes=hnp.arrays(numpy.float64, st.integers(2, 60), elements=st.floats(-2e6, 2e6)),
)
def test_quant_is_monotone(xb: Any, values: numpy.ndarray, opts: QuantizationOptions, probes: numpy.ndarray) -> None:
    quantizer = QuantizedArray(opts.n_bits, xb.asarray(values), options=opts).quantizer
    ordered = numpy.sort(numpy.concatenate([probes, values.reshape(-1).astype(numpy.float64)]))
    qvalues = host(quantizer.quant(xb.asarray(ordered), check_finite=True))
    steps = numpy.diff(qvalues)
    if float(quantizer.scale) > 0:
        assert numpy.all(steps >= 0)
    else:  # a single negative calibration value: the spec's rule gives a negative scale
        assert numpy.all(steps <= 0)


@PROPERTY
@given(values=float_arrays(), opts=options(max_bits=32, qat=False), data=st.data())
def test_quant_of_dequant_gives_back_every_qvalue(
    xb: Any, values: numpy.ndarray, opts: QuantizationOptions, data: st.DataObject
) -> None:
    quantizer = QuantizedArray(opts.n_bits, xb.asarray(values), options=opts).quantizer
    low, high = quantizer.clip_range()
    qvalues = numpy.array(data.draw(st.lists(st.integers(low, high), min_size=1, max_size=50)) + [low, high])
    again = host(quantizer.quant(quantizer.dequant(xb.asarray(qvalues))))
    assert numpy.array_equal(again, qvalues)


# -- the same bits everywhere -----------------------------------------------------------------


@PROPERTY
@given(values=float_arrays(), opts=options(), dtype=st.sampled_from(["int64", "int32", "uint64"]))
def test_every_backend_gives_numpys_bits(xb: Any, values: numpy.ndarray, opts: QuantizationOptions, dtype: str) -> None:
    reference = QuantizedArray(opts.n_bits, values, options=opts)
    array = QuantizedArray(opts.n_bits, xb.asarray(values), options=opts)
    assert array.quantizer == reference.quantizer
    assert_same_bits(host(array.qvalues), host(reference.qvalues))
    assert_same_bits(host(array.dequant()), host(reference.dequant()))
    low, high = clip_bounds(reference.quantizer)
    fits = numpy.iinfo(dtype).min <= low and high <= numpy.iinfo(dtype).max
    if fits:
        mine = host(array.quantizer.quant(xb.asarray(values), dtype=dtype))
        theirs = host(reference.quantizer.quant(values, dtype=dtype))
        assert_same_bits(mine, theirs)


GENERIC_NUMPY = ArrayAPIBackend(compat_numpy, name="generic-numpy")
BLOCKED_NUMPY = NumpyBackend()


@settings(max_examples=40, deadline=None)
@given(
    values=float_arrays(max_side=60, bound=1e9),
    scale=st.floats(1e-6, 1e6).flatmap(lambda s: st.sampled_from([s, -s])),
    zero_point=st.integers(-(2**40), 2**40),
    clip=st.sampled_from([None, (0, 255), (-128, 127), (-(2**52), 2**52)]),
    check_finite=st.booleans(),
)
def test_blocked_numpy_kernels_match_the_generic_backend(
    values: numpy.ndarray, scale: float, zero_point: int, clip: Any, check_finite: bool
) -> None:
    fit = (-(2.0**63), 2.0**63 - 1024) if clip is None else None
    mine, my_problems = quantize(BLOCKED_NUMPY, values, scale, float(zero_point), clip, "int64", check_finite, fit)
    theirs, their_problems = quantize(GENERIC_NUMPY, values, scale, float(zero_point), clip, "int64", check_finite, fit)
    assert_same_bits(host(mine), host(theirs))
    assert (my_problems is None) == (their_problems is None)
    if my_problems is not None:
        assert host(my_problems).tolist() == host(their_problems).tolist()
    back = dequantize(BLOCKED_NUMPY, mine, scale, float(zero_point), "float64")
    assert_same_bits(back, host(dequantize(GENERIC_NUMPY, mine, scale, float(zero_point), "float64")))


@pytest.mark.parametrize("size", [1, (1 << 16) - 1, (1 << 16) + 1, 3 * (1 << 16) + 7, (1 << 15) + 3])
def test_blocked_kernels_match_across_block_boundaries(size: int) -> None:
    rng = numpy.random.default_rng(size)
    values = rng.standard_normal(size) * 100
    transposed = values.reshape(-1, 1)[: size // 2 * 2].reshape(-1, 2).T
    for kernel_input in (values, values.astype(numpy.float32), values[::-1], transposed):
        mine, my_problems = quantize(BLOCKED_NUMPY, kernel_input, 0.37, 11.0, (-128, 127), "int8", True)
        theirs, their_problems = quantize(GENERIC_NUMPY, kernel_input, 0.37, 11.0, (-128, 127), "int8", True)
        assert_same_bits(mine, host(theirs))
        assert host(my_problems).tolist() == host(their_problems).tolist() == [0, 0]


# -- the NaN policy, alike everywhere --------------------------------------------------------

WITH_NON_FINITE = numpy.array([numpy.nan, -1.0, numpy.inf, 0.25, -numpy.inf, 1.0, numpy.nan, 0.5])
FINITE = numpy.isfinite(WITH_NON_FINITE)


def test_calibration_refuses_non_finite_values_alike(xb: Any) -> None:
    with pytest.raises(ValueError, match=r"values hold 4 non-finite value\(s\).*out of 8.*nan_policy='omit'"):
        QuantizedArray(8, xb.asarray(WITH_NON_FINITE))
    with pytest.raises(ValueError, match=r"4 non-finite.*nan_policy"):
        qarray.MinMaxQuantizationStats().compute_quantization_stats(xb.asarray(WITH_NON_FINITE))


def test_omitting_non_finite_values_calibrates_on_the_rest_alike(xb: Any) -> None:
    omitted = QuantizedArray(8, xb.asarray(WITH_NON_FINITE), nan_policy="omit")
    clean = QuantizedArray(8, WITH_NON_FINITE[FINITE])
    assert (omitted.quantizer.rmin, omitted.quantizer.rmax) == (-1.0, 1.0)
    assert omitted.quantizer == clean.quantizer
    qvalues = host(omitted.qvalues)
    assert numpy.array_equal(qvalues[FINITE], host(clean.qvalues))
    assert qvalues[2] == 255 and qvalues[4] == 0  # ±Inf saturate to the range's ends
    stats = qarray.MinMaxQuantizationStats()
    stats.compute_quantization_stats(xb.asarray(WITH_NON_FINITE), nan_policy="omit")
    assert (stats.rmin, stats.rmax) == (-1.0, 1.0)
    assert host(stats.uvalues).tolist() == [-1.0, 0.25, 0.5, 1.0]


def test_omitted_values_without_clipping_are_refused_alike(xb: Any) -> None:
    """QAT does not clip, so ±Inf cannot saturate: they are reported instead."""
    with pytest.raises(ValueError, match="do not fit"):  # lazy arrays report when computed
        host(QuantizedArray(8, xb.asarray(WITH_NON_FINITE), nan_policy="omit", is_qat=True).qvalues)


def test_quant_refuses_non_finite_values_alike(xb: Any) -> None:
    quantizer = QuantizedArray(8, WITH_NON_FINITE[FINITE]).quantizer
    # lazy arrays report when computed, and count block by block (Dask: the first bad block)
    count = r"\d+" if xb.name == "dask" else "4"
    with pytest.raises(ValueError, match=rf"values hold {count} non-finite value\(s\) .*check_finite=False"):
        host(quantizer.quant(xb.asarray(WITH_NON_FINITE)))
    unchecked = host(quantizer.quant(xb.asarray(WITH_NON_FINITE), check_finite=False))
    assert numpy.array_equal(unchecked[FINITE], host(quantizer.quant(WITH_NON_FINITE[FINITE])))
    assert unchecked[2] == 255 and unchecked[4] == 0


@pytest.mark.parametrize("size", [100, (1 << 15) + 5, 3 * (1 << 16) + 11])
def test_the_numpy_kernel_counts_non_finite_values_in_its_own_pass(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """quant counts NaN/±Inf inside the quantization kernel, block by block: no extra pass."""

    def extra_pass(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("quant made a separate pass to count non-finite values")

    monkeypatch.setattr(NumpyBackend, "count_nonfinite", extra_pass)
    values = numpy.linspace(-1.0, 1.0, size)
    bad = numpy.random.default_rng(size).choice(size, 37, replace=False)  # spread over the blocks
    values[bad[:20]] = numpy.nan
    values[bad[20:]] = numpy.inf
    quantizer = QuantizedArray(8, numpy.array([-1.0, 1.0])).quantizer
    with pytest.raises(ValueError, match=rf"values hold 37 non-finite value\(s\) .*out of {size};"):
        quantizer.quant(values)
    with pytest.raises(ValueError, match=r"values hold 37 non-finite"):
        quantizer.quant(values.reshape(-1, 1)[::-1])  # a strided view takes the blocked path


# -- serialization and ownership ---------------------------------------------------------------


@PROPERTY
@given(values=float_arrays(max_side=20), opts=options(max_bits=53))
def test_serialization_round_trips_give_equal_objects(
    xb: Any, values: numpy.ndarray, opts: QuantizationOptions
) -> None:
    array = QuantizedArray(opts.n_bits, xb.asarray(values), options=opts)
    for obj in (array, array.quantizer, array.quantizer.stats, array.quantizer.params, array.quantizer.options):
        loaded = qarray.loads(obj.dumps())
        assert loaded == obj
        assert loaded.dumps() == obj.dumps()
    placed = qarray.loads(array.dumps(), backend=xb.name)
    assert placed == array
    assert type(placed.qvalues) is type(array.qvalues)


@functools.cache
def _available_backends() -> Tuple[str, ...]:
    return tuple(qarray.backends.available_backends())


@PROPERTY
@given(values=float_arrays(max_side=10), target=st.sampled_from([None, "numpy", "torch", "array_api_strict"]))
def test_a_quantized_array_never_aliases_the_callers_arrays(xb: Any, values: numpy.ndarray, target: Any) -> None:
    if target is not None and target not in _available_backends():
        target = None
    values = values.copy()  # some libraries wrap a NumPy array without copying it
    given_values = xb.asarray(values.copy())
    array = QuantizedArray(8, given_values, backend=target)
    kept_values, kept_qvalues = host(array.values).copy(), host(array.qvalues).copy()
    given_values[...] = 1e6  # mutating the input changes nothing in the array
    assert numpy.array_equal(host(array.values), kept_values)
    assert numpy.array_equal(host(array.qvalues), kept_qvalues)
    array.values[...] = -7.0  # and mutating the array changes nothing in the input
    assert numpy.all(host(given_values) == numpy.float32(1e6))

    given_qvalues = xb.asarray(numpy.arange(values.size).reshape(values.shape).copy())
    integer = QuantizedArray(8, given_qvalues, value_is_float=False, scale=0.5, zero_point=0, offset=0, backend=target)
    given_qvalues[...] = 99
    assert numpy.array_equal(host(integer.qvalues), numpy.arange(values.size).reshape(values.shape))
    integer.qvalues[...] = -1
    assert numpy.all(host(given_qvalues) == 99)

    replacement = xb.asarray(values.copy())
    array.update_values(replacement)
    replacement[...] = 0.0
    assert numpy.array_equal(host(array.values), values.astype(host(array.values).dtype))


def test_quant_and_dequant_return_new_arrays(xb: Any) -> None:
    values = xb.asarray(numpy.linspace(-1.0, 1.0, 9))
    quantizer = QuantizedArray(8, values).quantizer
    qvalues = quantizer.quant(values)
    back = quantizer.dequant(qvalues)
    values[...] = 0.0
    qvalues[...] = 0
    again = quantizer.dequant(quantizer.quant(xb.asarray(numpy.linspace(-1.0, 1.0, 9))))
    assert host(back).tolist() == host(again).tolist()
