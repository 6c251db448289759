"""The dyadic histogram primitives against an independent reading of docs/calibration.md.

The reference computes every bin index with exact rational arithmetic
(``fractions.Fraction``) and finds ``k`` by walking up from -1074, so it shares
nothing with the binary search and float64 floors of ``qarray.calibration.histogram``.
Kernels of every backend are compared with the generic Array API one, bit for bit.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy
import pytest
from array_api_compat import numpy as compat_numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qarray
from qarray.backends import ArrayAPIBackend, NumpyBackend, _parallel, numba_kernels, numpy_backend
from qarray.calibration import histogram as H

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

GENERIC = ArrayAPIBackend(compat_numpy)


# -- the independent reference -------------------------------------------------------------------


def exact_floor(value: float, k: int) -> int:
    return math.floor(Fraction(value) / Fraction(2) ** k)


def reference_k(vmin: float, vmax: float, max_bins: int) -> int:
    largest = max(abs(Fraction(vmin)), abs(Fraction(vmax)))
    k = -1074
    # jump close to the answer first (each condition is monotone in k), then walk
    while k + 64 <= 1023 and not fits(vmin, vmax, max_bins, largest, k + 64):
        k += 64
    while not fits(vmin, vmax, max_bins, largest, k):
        k += 1
    return k


def fits(vmin: float, vmax: float, max_bins: int, largest: Fraction, k: int) -> bool:
    width = Fraction(2) ** k
    return exact_floor(vmax, k) - exact_floor(vmin, k) + 1 <= max_bins and largest / width < 2**53


def reference_histogram(values: numpy.ndarray, max_bins: int) -> H.Histogram:
    flat = numpy.asarray(values, dtype=numpy.float64).reshape(-1)
    vmin, vmax = float(flat.min()) + 0.0, float(flat.max()) + 0.0
    k = reference_k(vmin, vmax, max_bins)
    j_lo, j_hi = exact_floor(vmin, k), exact_floor(vmax, k)
    counts = numpy.zeros(j_hi - j_lo + 1, dtype=numpy.int64)
    for value in flat:
        counts[exact_floor(float(value), k) - j_lo] += 1
    return H.Histogram(k, j_lo, counts, numpy.float64(vmin), numpy.float64(vmax), max_bins)


finite = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True)
value_arrays = hnp.arrays(numpy.float64, st.integers(1, 60), elements=finite)
spread_values = hnp.arrays(
    numpy.float64,
    st.integers(1, 200),
    elements=st.one_of(st.floats(-1e3, 1e3), st.floats(-1e-300, 1e-300), st.sampled_from([0.0, -0.0, 1e300, -1e300])),
)


# -- k and bin indices ----------------------------------------------------------------------------


@PROPERTY
@given(first=finite, second=finite, max_bins=st.sampled_from([4, 5, 7, 16, 4096]))
def test_choose_k_is_the_smallest_k_of_the_specification(first, second, max_bins):
    vmin, vmax = min(first, second), max(first, second)
    assert H.choose_k(vmin, vmax, max_bins) == reference_k(vmin, vmax, max_bins)


@PROPERTY
@given(value=finite, k=st.integers(-1074, 1023))
def test_bin_floor_is_the_exact_floor_where_indices_are_exact(value, k):
    if abs(Fraction(value)) / Fraction(2) ** k >= 2**53:
        return  # outside the histogram's domain
    assert H.bin_floor(value, k) == exact_floor(value, k)


def test_a_negative_value_whose_quotient_underflows_is_in_bin_minus_one():
    assert H.bin_floor(-1e-300, 1000) == -1
    assert H.bin_floor(1e-300, 1000) == 0
    assert H.bin_floor(-0.0, 1000) == 0


def test_constant_and_zero_data_have_a_well_defined_histogram():
    zeros = H.histogram(numpy.zeros(5))
    assert (zeros.k, zeros.j_lo, zeros.counts.tolist()) == (-1074, 0, [5])
    constant = H.histogram(numpy.full(3, -2.5))
    assert constant.counts.tolist() == [3]
    assert constant.k == reference_k(-2.5, -2.5, 4096)


# -- histograms and the invariant ---------------------------------------------------------------


@PROPERTY
@given(values=value_arrays, max_bins=st.sampled_from([4, 9, 64, 4096]))
def test_histogram_matches_the_reference(values, max_bins):
    assert H.histogram(values, max_bins) == reference_histogram(values, max_bins)


@PROPERTY
@given(values=spread_values, data=st.data(), max_bins=st.sampled_from([4, 13, 256]))
def test_any_batching_and_merge_order_give_the_histogram_of_all_the_data(values, data, max_bins):
    cuts = sorted(data.draw(st.lists(st.integers(0, values.size), max_size=6)))
    pieces = [piece for piece in numpy.split(values, cuts) if piece.size]
    parts = [H.histogram(piece, max_bins) for piece in pieces]
    order = data.draw(st.permutations(range(len(parts))))
    folded = None
    for index in order:  # left fold in a random order
        folded = H.merge(folded, parts[index])
    while len(parts) > 1:  # and a balanced tree
        parts = [H.merge(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    whole = H.histogram(values, max_bins)
    assert folded == whole
    assert parts[0] == whole
    for method in ("percentile", "mse", "entropy"):
        assert H.range_for(folded, method, n_bits=3) == H.range_for(whole, method, n_bits=3)


def test_coarsen_adds_counts_and_keeps_min_and_max():
    hist = H.histogram(numpy.array([-3.0, -1.0, 0.0, 1.0, 2.0, 3.0]), max_bins=16)
    coarse = H.coarsen(hist, hist.k + 2)
    assert coarse.total == hist.total
    assert (coarse.vmin, coarse.vmax) == (hist.vmin, hist.vmax)
    assert coarse.j_lo == exact_floor(-3.0, coarse.k) and coarse.j_hi == exact_floor(3.0, coarse.k)


def test_nan_policy():
    values = numpy.array([1.0, numpy.nan, 2.0, numpy.inf])
    with pytest.raises(ValueError, match="2 non-finite"):
        H.histogram(values)
    assert H.histogram(values, nan_policy="omit") == H.histogram(numpy.array([1.0, 2.0]))
    assert H.histogram(numpy.array([numpy.nan]), nan_policy="omit") is None
    assert H.histogram(numpy.zeros(0)) is None


@pytest.mark.parametrize("bad, error", [(3, ValueError), (2**25, ValueError), (4.0, TypeError), (True, TypeError)])
def test_max_bins_is_checked(bad, error):
    with pytest.raises(error, match="max_bins"):
        H.histogram(numpy.ones(3), max_bins=bad)


def test_merging_histograms_of_different_max_bins_is_refused():
    with pytest.raises(ValueError, match="max_bins"):
        H.merge(H.histogram(numpy.ones(3), 8), H.histogram(numpy.ones(3), 16))


# -- kernels: every backend against the generic reference, bit for bit ---------------------------


def _kernel_cases():
    rng = numpy.random.default_rng(7)
    heavy = rng.standard_t(2, size=50_000)
    return {
        "heavy float64": heavy,
        "heavy float32": heavy.astype(numpy.float32),
        "tiny against wide bins": (
            numpy.concatenate([heavy, [-1e-300, 1e-300, -0.0, 5e-324, -5e-324]]) * numpy.array(1e295)
        ),
        "subnormal float32": (rng.normal(size=40_000) * 1e-40).astype(numpy.float32),
        "with NaN and Inf": numpy.concatenate([heavy, [numpy.nan, numpy.inf, -numpy.inf]]),
    }


@pytest.mark.parametrize("name", sorted(_kernel_cases()))
@pytest.mark.parametrize("offset", [0, 7, -9])
def test_numpy_kernels_equal_the_generic_reference(name, offset):
    values = _kernel_cases()[name]
    finite_values = values[numpy.isfinite(values)]
    hist = H.histogram(finite_values)
    j_lo = hist.j_lo + offset  # bins beyond either end are not counted, by every kernel
    arguments = dict(k=hist.k, j_lo=j_lo, max_bins=4096, omit_nan=True)
    expected = GENERIC.bin_counts(values, **arguments)
    numpy.testing.assert_array_equal(NumpyBackend().bin_counts(values, **arguments), expected)
    numpy.testing.assert_array_equal(numpy_backend._bin_counts_range(values, hist.k, j_lo, 4096), expected)
    if numba_kernels.available() and numba_kernels.supported_float(values):
        numpy.testing.assert_array_equal(numba_kernels.bin_counts(values, hist.k, j_lo, 4096), expected)


def test_numba_kernel_divides_where_two_to_the_minus_k_is_not_a_float():
    if not numba_kernels.available():
        pytest.skip("numba is not installed")
    values = numpy.array([5e-324, 1e-323, 3e-323, -5e-324, 0.0])
    for k in (-1074, -1073, -1024, -1023):
        expected = GENERIC.bin_counts(values, k=k, j_lo=-8, max_bins=64, omit_nan=False)
        numpy.testing.assert_array_equal(numba_kernels.bin_counts(values, k, -8, 64), expected)
        assert int(expected.sum()) == 5


def _small_chunks(monkeypatch, threads):
    """Many chunks on ``threads`` threads, and blocks of the compiled kernel that end inside them."""
    monkeypatch.setattr(_parallel, "MIN_CHUNK", 64)
    monkeypatch.setattr(_parallel, "CHUNK_ALIGN", 8)
    monkeypatch.setattr(_parallel, "thread_count", lambda: threads)


@pytest.mark.parametrize("name", sorted(_kernel_cases()))
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("lanes", [1, 4, 8])
def test_numba_window_counts_equal_the_generic_reference(monkeypatch, name, threads, lanes):
    """Counts, non-finite count, min, max and the values outside the bins, with any number of
    chunks, threads and rows of counters, for windows on and beside the data."""
    if not numba_kernels.available():
        pytest.skip("numba is not installed")
    _small_chunks(monkeypatch, threads)
    monkeypatch.setattr(numba_kernels, "_LANES", lanes)
    monkeypatch.setattr(numba_kernels, "OUTLIER_CAPACITY", 60_000)  # room for every value: nothing stops early
    values = _kernel_cases()[name]
    finite_values = values[numpy.isfinite(values)]
    hist = H.histogram(finite_values)
    for j_lo, n_bins in ((hist.j_lo, 4096), (hist.j_lo + 7, 64), (hist.j_lo - 9, 100)):
        found = numba_kernels.window_counts(values, hist.k, j_lo, n_bins)
        expected = GENERIC.bin_counts(values, k=hist.k, j_lo=j_lo, max_bins=n_bins, omit_nan=True)
        numpy.testing.assert_array_equal(found.counts, expected)
        assert found.nonfinite == values.size - finite_values.size
        assert (found.low, found.high) == (float(finite_values.min()), float(finite_values.max()))
        bins = numpy.asarray([H.bin_floor(float(value), hist.k) - j_lo for value in finite_values])
        outside = numpy.sort(finite_values[(bins < 0) | (bins >= n_bins)].astype(numpy.float64))
        numpy.testing.assert_array_equal(numpy.sort(found.outliers), outside)
        numpy.testing.assert_array_equal(numba_kernels.bin_counts(values, hist.k, j_lo, n_bins), expected)
        for edges in ((5, 20), (-3, n_bins + 3), (n_bins // 2, n_bins // 2)):
            # min and max from the blocks reaching the edge bins: exact where the extreme is there
            edged = numba_kernels.window_counts(values, hist.k, j_lo, n_bins, edges)
            numpy.testing.assert_array_equal(edged.counts, expected)
            low, high = float(finite_values.min()), float(finite_values.max())
            if bins.min() <= edges[0]:
                assert edged.low == low
            if bins.max() >= edges[1]:
                assert edged.high == high
            assert edged.low is None or edged.low >= low
            assert edged.high is None or edged.high <= high


def test_numba_counts_of_many_bins_take_one_row_of_counters():
    """Beyond 2**24 counters in all the kernel counts into one row (its row offsets are float32)."""
    if not numba_kernels.available():
        pytest.skip("numba is not installed")
    values = _kernel_cases()["heavy float32"]
    hist = H.histogram(values)
    for n_bins in (2**22 - 2, 2**22):
        j_lo = hist.j_lo - n_bins // 2
        expected = GENERIC.bin_counts(values, k=hist.k - 8, j_lo=j_lo, max_bins=n_bins, omit_nan=True)
        numpy.testing.assert_array_equal(numba_kernels.bin_counts(values, hist.k - 8, j_lo, n_bins), expected)


def test_numba_window_counts_report_too_many_outliers_and_no_finite_value(monkeypatch):
    if not numba_kernels.available():
        pytest.skip("numba is not installed")
    monkeypatch.setattr(numba_kernels, "OUTLIER_CAPACITY", 5)
    values = numpy.arange(100, dtype=numpy.float32)
    found = numba_kernels.window_counts(values, 0, 0, 90)
    assert found.outliers is None  # the pass stopped there: the other fields are partial
    found = numba_kernels.window_counts(values, 0, 0, 95)
    assert sorted(found.outliers.tolist()) == [95.0, 96.0, 97.0, 98.0, 99.0]
    empty = numba_kernels.window_counts(numpy.array([numpy.nan, numpy.inf, -numpy.inf]), 0, 0, 4)
    assert empty.nonfinite == 3 and empty.low is None and empty.high is None and empty.outliers.size == 0


def test_numba_float32_arithmetic_equals_the_float64_one():
    """float32 input is binned in float32 where 2**-k and the bin indices are float32 numbers;
    the edges of that domain (k = -127 and 126, |j_lo| = 2**24, underflow, overflow) count as in
    float64."""
    if not numba_kernels.available():
        pytest.skip("numba is not installed")
    rng = numpy.random.default_rng(5)
    tiny = (rng.standard_normal(5000) * 1e-38).astype(numpy.float32)
    huge = rng.uniform(-3e38, 3e38, 5000).astype(numpy.float32)
    values = numpy.concatenate([tiny, huge, [-0.0, 0.0, 1e-45, -1e-45], rng.standard_t(2, 5000)]).astype(numpy.float32)
    for k in (-150, -128, -127, -126, -20, 0, 20, 125, 126, 127, 128):
        for j_lo in (-(2**24) - 1, -(2**24), -2048, -1, 0, 2**24 - 64, 2**24):
            expected = GENERIC.bin_counts(values, k=k, j_lo=j_lo, max_bins=4096, omit_nan=True)
            numpy.testing.assert_array_equal(numba_kernels.bin_counts(values, k, j_lo, 4096), expected, f"{k} {j_lo}")


def test_every_library_counts_like_numpy(xb):
    values = numpy.random.default_rng(3).standard_t(3, size=5000)
    expected = H.histogram(values, 512)
    if xb.name == "dask":
        pytest.skip("Dask arrays are counted per chunk by HistogramQuantizationStats (tested there)")
    assert H.histogram(xb.asarray(values), 512) == expected
    counts = H.bin_counts(xb.asarray(values), expected.k, expected.j_lo, 512)
    numpy.testing.assert_array_equal(xb.to_numpy(counts)[: expected.counts.size], expected.counts)


def _torch_backend():
    pytest.importorskip("torch")
    from qarray.backends import get_backend

    return get_backend("torch")


def _torch_layouts(torch):
    """Tensors of several layouts and dtypes, with the float64 values they hold."""
    rng = numpy.random.default_rng(11)
    host = rng.standard_t(2, size=(60, 50))
    host[3, 4], host[7, 1] = -0.0, -1e-300
    contiguous = torch.asarray(host.copy())
    return {
        "contiguous": contiguous,
        "transposed": contiguous.T,
        "strided": contiguous[::2, 1::3],
        "0-d": torch.asarray(1.5, dtype=torch.float64),
        "float32, requires grad": torch.asarray(host.astype(numpy.float32), requires_grad=True),
        "float16": torch.asarray(host.astype(numpy.float16)),
        "bfloat16": torch.asarray(host.astype(numpy.float32)).to(torch.bfloat16),
    }


def _as_float64(tensor):
    import torch

    return tensor.detach().to(torch.float64).numpy()


def test_torch_histograms_never_sort_and_count_like_numpy(monkeypatch):
    """The histogram of a tensor of any layout or dtype equals NumPy's, and no sort runs."""
    backend = _torch_backend()
    import torch

    def no_sort(*args, **kwargs):
        raise AssertionError("the histogram of a tensor sorted its values")

    monkeypatch.setattr(backend.xp, "sort", no_sort)
    monkeypatch.setattr(torch, "sort", no_sort)
    for name, tensor in _torch_layouts(torch).items():
        expected = H.histogram(_as_float64(tensor), 64)
        assert H.histogram(tensor, 64) == expected, name


def test_torch_host_tensors_are_counted_where_they_lie(monkeypatch):
    """A tensor in host memory reaches the NumPy kernel as a view of its own memory (no copy)."""
    backend = _torch_backend()
    import torch

    from qarray.backends import torch_backend

    seen = []
    count = torch_backend._HOST.bin_counts

    def spy(values, **kwargs):
        seen.append(values)
        return count(values, **kwargs)

    monkeypatch.setattr(torch_backend._HOST, "bin_counts", spy)
    tensor = torch.asarray(numpy.random.default_rng(12).standard_normal((40, 30))).T
    backend.bin_counts(tensor, k=-4, j_lo=-64, max_bins=128, omit_nan=False)
    own = tensor.detach().numpy()
    assert len(seen) == 1 and numpy.shares_memory(seen[0], own)


def test_torch_device_count_equals_the_generic_reference_chunk_by_chunk(monkeypatch):
    """The bincount path of tensors NumPy cannot read (on an accelerator, bfloat16), cut into
    chunks smaller than a row, gives the generic path's counts exactly."""
    backend = _torch_backend()
    import torch

    from qarray.backends import torch_backend

    monkeypatch.setattr(torch_backend, "_host_view", lambda values: None)
    monkeypatch.setattr(torch_backend, "BIN_CHUNK_ELEMENTS", 7)
    for name, tensor in _torch_layouts(torch).items():
        hist = H.histogram(_as_float64(tensor), 64)
        for j_lo in (hist.j_lo, hist.j_lo + 5):
            arguments = dict(k=hist.k, j_lo=j_lo, max_bins=64, omit_nan=True)
            counts = backend.bin_counts(tensor, **arguments)
            assert counts.dtype == torch.int64 and counts.device == tensor.device, name
            expected = GENERIC.bin_counts(_as_float64(tensor), **arguments)
            numpy.testing.assert_array_equal(counts.numpy(), expected, err_msg=name)
    empty = backend.bin_counts(torch.zeros((0, 3), dtype=torch.float64), k=0, j_lo=0, max_bins=4, omit_nan=False)
    numpy.testing.assert_array_equal(empty.numpy(), [0, 0, 0, 0])


# -- ranges ----------------------------------------------------------------------------------------


@PROPERTY
@given(values=spread_values, p=st.floats(50.0, 100.0, exclude_min=True))
def test_percentile_bounds_are_within_one_bin_of_the_exact_order_statistics(values, p):
    hist = H.histogram(values)
    lower, upper = H.percentile_range(hist, p)
    ordered = numpy.sort(values)
    n = ordered.size
    high_value = ordered[min(max(math.ceil(p / 100 * n), 1), n) - 1]
    low_value = ordered[min(max(math.floor((1 - p / 100) * n) + 1, 1), n) - 1]
    width = hist.width
    assert high_value <= upper <= high_value + width
    assert low_value - width <= lower <= low_value
    assert hist.vmin <= lower <= upper <= hist.vmax


def test_percentile_100_is_min_max():
    values = numpy.array([-7.25, 0.0, 3.5, 1e-9])
    assert H.percentile_range(H.histogram(values), 100.0) == (-7.25, 3.5)


def test_percentile_clips_an_outlier():
    values = numpy.concatenate([numpy.linspace(0.0, 1.0, 10_000), [1e6]])
    lower, upper = H.percentile_range(H.histogram(values), 99.9)
    assert lower == 0.0
    assert 0.99 <= upper < 2e3  # within one bin (of width 2**k for the range up to 1e6) of the order statistic


@pytest.mark.parametrize(
    "bad, error", [(50.0, ValueError), (100.5, ValueError), (float("nan"), ValueError), ("99", TypeError)]
)
def test_percentile_is_checked(bad, error):
    with pytest.raises(error, match="percentile"):
        H.percentile_range(H.histogram(numpy.ones(3)), bad)


@PROPERTY
@given(values=spread_values, n_bits=st.integers(2, 10), symmetric=st.booleans())
def test_mse_range_is_never_worse_than_min_max_on_the_histogram(values, n_bits, symmetric):
    hist = H.histogram(values)
    lower, upper = H.mse_range(hist, n_bits, is_signed=symmetric, is_symmetric=symmetric)
    chosen = H.quantization_mse(hist, lower, upper, n_bits, is_signed=symmetric, is_symmetric=symmetric)
    minmax = H.quantization_mse(hist, hist.vmin, hist.vmax, n_bits, is_signed=symmetric, is_symmetric=symmetric)
    assert chosen <= minmax
    assert hist.vmin <= lower <= upper <= hist.vmax


# Every valid option combination a histogram range can be for (QAT scale inference needs
# the exact unique values, so only precomputed QAT).
OPTION_COMBINATIONS = [
    dict(is_signed=signed, is_symmetric=symmetric, is_narrow=narrow, is_qat=qat, is_precomputed_qat=qat)
    for signed in (False, True)
    for symmetric in (False, True)
    for narrow in (False, True)
    for qat in (False, True)
    if signed or not symmetric
    if not (qat and symmetric)
]


def on_bin_centres(values: numpy.ndarray, max_bins: int) -> numpy.ndarray:
    """``values`` moved to the centres of their histogram's bins (the points the estimate scores)."""
    while True:
        width = H.histogram(values, max_bins).width
        snapped = (numpy.floor(values / width) + 0.5) * width
        if H.histogram(snapped, max_bins).width == width:
            return snapped
        values = snapped


def test_mse_range_is_never_worse_than_min_max_for_the_quantizer_the_options_give():
    """The estimate scores every candidate with exactly the quantizer the options give: on data
    at the bin centres it is that quantizer's error, so "never worse" holds on the data too."""
    rng = numpy.random.default_rng(18)
    for trial in range(120):
        options = OPTION_COMBINATIONS[trial % len(OPTION_COMBINATIONS)]
        n_bits = int(rng.integers(2, 7))
        spread = rng.standard_t(int(rng.integers(1, 5)), size=1500) * rng.uniform(0.01, 100.0)
        values = on_bin_centres(spread + rng.uniform(-3.0, 3.0) * spread.std(), 256)
        hist = H.histogram(values, 256)
        lower, upper = H.mse_range(hist, n_bits, **options)
        estimate = H.quantization_mse(hist, lower, upper, n_bits, **options)
        assert estimate <= H.quantization_mse(hist, hist.vmin, hist.vmax, n_bits, **options)
        errors = {}
        for method in ("mse", "minmax"):
            quantizer = qarray.calibrate([values], n_bits, method=method, max_bins=256, **options)
            errors[method] = float(numpy.mean((quantizer.dequant(quantizer.quant(values)) - values) ** 2))
        numpy.testing.assert_allclose(errors["mse"], estimate, rtol=1e-9, atol=1e-300, err_msg=str(options))
        assert errors["mse"] <= errors["minmax"] * (1 + 1e-12), (trial, n_bits, options)


def test_mse_range_lowers_the_real_error_on_heavy_tailed_data():
    values = numpy.random.default_rng(0).standard_t(2, size=200_000)
    hist = H.histogram(values)
    lower, upper = H.mse_range(hist, 4)
    assert upper - lower < hist.vmax - hist.vmin

    def real_mse(rmin, rmax):
        scale = (rmax - rmin) / 15
        zero = round(-rmin / scale)
        q = numpy.clip(numpy.rint(values / scale + zero), 0, 15)
        return float(numpy.mean((scale * (q - zero) - values) ** 2))

    assert real_mse(lower, upper) < 0.8 * real_mse(hist.vmin, hist.vmax)


def test_entropy_range_clips_outliers_and_stays_inside_the_data():
    rng = numpy.random.default_rng(1)
    values = numpy.concatenate([rng.normal(size=100_000), [-500.0, 800.0]])
    hist = H.histogram(values)
    lower, upper = H.entropy_range(hist, 8)
    assert -500.0 < lower < -2.0 and 2.0 < upper < 800.0
    low_s, high_s = H.entropy_range(hist, 8, is_symmetric=True)
    assert low_s == -high_s and 2.0 < high_s < 500.0


def test_entropy_range_of_one_sided_data_keeps_the_edge_nearest_zero():
    rng = numpy.random.default_rng(2)
    positive = numpy.concatenate([rng.exponential(size=50_000) + 3.0, [400.0]])
    lower, upper = H.entropy_range(H.histogram(positive), 4)
    assert lower == float(positive.min()) and upper < 400.0
    lower, upper = H.entropy_range(H.histogram(-positive), 4)
    assert upper == float(-positive.min()) and lower > -400.0


def test_entropy_with_fewer_bins_than_levels_is_min_max():
    values = numpy.array([0.0, 1.0, 2.0, 3.0])
    assert H.entropy_range(H.histogram(values, max_bins=8), 8) == (0.0, 3.0)


def test_method_is_checked():
    with pytest.raises(ValueError, match="method must be one of minmax, percentile, mse, entropy"):
        H.range_for(H.histogram(numpy.ones(3)), "kl")
