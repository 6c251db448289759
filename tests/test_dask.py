"""Dask arrays: lazy block-wise quantization, on threads and on a real distributed cluster.

Results must stay Dask arrays until computed, give NumPy's integers bit for bit,
raise the non-finite / dtype checks when computed, and calibrate with one
compute of the min/max reduction. The cluster test quantizes an array larger
than a worker's memory limit, generated lazily, and checks it against NumPy run
over the same chunks one at a time.
"""

from __future__ import annotations

import time

import numpy
import pytest

import qarray
from qarray import QuantizationOptions, QuantizedArray, UniformQuantizationParameters, UniformQuantizer

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
dask_callbacks = pytest.importorskip("dask.callbacks")

# The largest array the suite sends through Dask (the distributed test below).
CLUSTER_ARRAY_ELEMENTS = 128 * 2**20  # float32: 512 MiB, generated lazily, never whole in memory
CLUSTER_CHUNK_ELEMENTS = 4 * 2**20  # 16 MiB float32 chunks (32 MiB int64 results): 32 blocks
CLUSTER_WORKERS = 2
CLUSTER_WORKER_MEMORY_LIMIT = "200MB"  # per worker: the array is ~2.7x one worker's limit
CLUSTER_TIME_BUDGET_S = 60.0
# Numba's compiler alone takes ~130 MB per process; the workers use the NumPy kernels so that
# the memory limit bounds the data (the Numba kernels give the same integers).
CLUSTER_WORKER_ENV = {"QARRAY_DISABLE_NUMBA": "1"}


def _host_values(shape=(50, 6), seed=0, dtype=numpy.float32) -> numpy.ndarray:
    return numpy.random.default_rng(seed).standard_normal(shape).astype(dtype)


class _ComputeCounter(dask_callbacks.Callback):
    """Counts the computes run by the local schedulers."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def _start(self, dsk) -> None:
        self.count += 1


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


OPTION_SETS = [
    {},
    {"is_signed": True},
    {"is_signed": True, "is_symmetric": True},
    {"is_qat": True},
]


@pytest.mark.parametrize("kwargs", OPTION_SETS, ids=lambda k: ",".join(k) or "unsigned")
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_quantized_array_matches_numpy_bit_for_bit(kwargs, dtype):
    host = _host_values(dtype=dtype)
    if kwargs.get("is_qat"):
        host = numpy.round(host * 4) / 4  # values on a uniform grid, as QAT produces
    lazy = da.from_array(host, chunks=(7, 4))
    qa = QuantizedArray(6, lazy, **kwargs)
    reference = QuantizedArray(6, host, **kwargs)
    assert isinstance(qa.qvalues, da.Array)
    assert qa.quantizer == reference.quantizer
    numpy.testing.assert_array_equal(qa.qvalues.compute(), reference.qvalues)
    restored = qa.dequant()
    assert isinstance(restored, da.Array)
    numpy.testing.assert_array_equal(restored.compute(), reference.dequant())


def test_quant_and_dequant_stay_lazy_and_keep_chunks():
    lazy = da.from_array(_host_values(), chunks=(10, 3))
    quantizer = QuantizedArray(8, lazy).quantizer
    counter = _ComputeCounter()
    with counter:
        qvalues = quantizer.quant(lazy, dtype=numpy.uint8)
        values = quantizer.dequant(qvalues, dtype=numpy.float32)
    assert counter.count == 0
    assert qvalues.chunks == lazy.chunks and qvalues.dtype == numpy.uint8
    assert values.dtype == numpy.float32 and isinstance(values, da.Array)


def test_calibration_reads_min_and_max_in_one_compute():
    lazy = da.from_array(_host_values(), chunks=(5, 6))
    counter = _ComputeCounter()
    with counter:
        stats = qarray.MinMaxQuantizationStats()
        stats.compute_quantization_stats(lazy, with_uvalues=False)
    assert counter.count == 1
    host = _host_values()
    assert (stats.rmin, stats.rmax) == (host.min(), host.max())


def test_non_finite_values_raise_when_the_result_is_computed():
    host = _host_values()
    quantizer = QuantizedArray(8, host).quantizer
    host[17, 2] = numpy.nan
    qvalues = quantizer.quant(da.from_array(host, chunks=(10, 6)))  # nothing computed yet
    with pytest.raises(ValueError, match="non-finite"):
        qvalues.compute()


def test_values_that_do_not_fit_the_dtype_raise_when_computed():
    quantizer = UniformQuantizer(QuantizationOptions(8), params=UniformQuantizationParameters(0.01, 0, 0))
    quantizer.no_clipping = True
    qvalues = quantizer.quant(da.from_array(numpy.array([0.5, 5.0]), chunks=1), dtype=numpy.int8)
    with pytest.raises(ValueError, match="do not fit dtype int8"):
        qvalues.compute()


def test_check_finite_false_computes_without_checking():
    quantizer = UniformQuantizer(QuantizationOptions(4), params=UniformQuantizationParameters(0.1, 0, 0))
    qvalues = quantizer.quant(da.from_array(numpy.array([0.5, numpy.inf, 1.0]), chunks=1), check_finite=False)
    numpy.testing.assert_array_equal(qvalues.compute()[[0, 2]], [5, 10])


def test_out_is_refused_for_dask_arrays():
    quantizer = QuantizedArray(8, _host_values()).quantizer
    lazy = da.from_array(_host_values(), chunks=10)
    with pytest.raises(TypeError, match="out"):
        quantizer.quant(lazy, out=numpy.empty(lazy.shape, numpy.int64))


def test_per_channel_zero_points_line_up_with_blocks():
    host = _host_values(shape=(20, 9))
    for zero_point in (numpy.arange(9) - 4, (numpy.arange(20) - 10).reshape(20, 1)):
        quantizer = UniformQuantizer(
            QuantizationOptions(8, is_signed=True), params=UniformQuantizationParameters(0.02, zero_point, 128)
        )
        lazy = da.from_array(host, chunks=(6, 4))
        numpy.testing.assert_array_equal(quantizer.quant(lazy).compute(), quantizer.quant(host))
        q = quantizer.quant(host)
        numpy.testing.assert_array_equal(
            quantizer.dequant(da.from_array(q, chunks=(6, 4))).compute(), quantizer.dequant(q)
        )


def test_unknown_chunk_sizes_are_quantized():
    host = _host_values(shape=(200,))
    lazy = da.from_array(host, chunks=30)
    positive = lazy[lazy > 0]  # unknown chunk sizes
    qa = QuantizedArray(8, positive)
    reference = QuantizedArray(8, host[host > 0])
    assert qa.quantizer == reference.quantizer
    numpy.testing.assert_array_equal(qa.qvalues.compute(), reference.qvalues)


def test_qat_unique_values_are_merged_across_blocks():
    host = numpy.round(_host_values(shape=(300,), dtype=numpy.float64) * 3) / 3
    qa = QuantizedArray(5, da.from_array(host, chunks=40), is_qat=True)
    reference = QuantizedArray(5, host, is_qat=True)
    assert isinstance(qa.quantizer.uvalues, da.Array)
    numpy.testing.assert_array_equal(qa.quantizer.uvalues.compute(), reference.quantizer.uvalues)
    assert qa.quantizer.scale == reference.quantizer.scale


def test_values_given_as_numpy_can_be_placed_on_dask():
    host = _host_values()
    qa = QuantizedArray(8, host, backend="dask")
    assert isinstance(qa.values, da.Array) and qa.backend.name == "dask"
    host[:] = 0  # the array holds its own copy
    numpy.testing.assert_array_equal(qa.qvalues.compute(), QuantizedArray(8, _host_values()).qvalues)


def test_dump_computes_and_loads_as_numpy():
    qa = QuantizedArray(8, da.from_array(_host_values(), chunks=10))
    loaded = qarray.loads(qa.dumps())
    assert loaded == qa
    assert isinstance(loaded.qvalues, numpy.ndarray)


def test_streaming_update_over_dask_batches_computes_once():
    batches = [da.from_array(_host_values(seed=seed), chunks=10) for seed in range(4)]
    counter = _ComputeCounter()
    with counter:
        quantizer = qarray.calibrate(batches, n_bits=8)
    assert counter.count == 1
    reference = QuantizedArray(8, numpy.concatenate([_host_values(seed=seed) for seed in range(4)]))
    assert quantizer == reference.quantizer


# Streams long enough for three levels of the pending tree at a fan-in of 4 (4**3 < 150).
LONG_STREAM_BATCHES = 150
LONG_STREAM_FAN_IN = 4
# path: (statistics, update keywords, the axis along which one call sees the batches together)
STREAMS = {
    "minmax": (qarray.MinMaxQuantizationStats, {}, 0),
    "minmax axis=0": (qarray.MinMaxQuantizationStats, {"axis": 0}, 1),
    "histogram": (qarray.HistogramQuantizationStats, {}, 0),
}


def _long_stream(count=LONG_STREAM_BATCHES):
    """Seeded host batches (wide ranges, and a row of zeros of both signs), and as Dask batches."""
    rng = numpy.random.default_rng(5)
    host = [rng.standard_t(2, size=(6, 4)) for _ in range(count)]
    for index, batch in enumerate(host):
        batch[5] = -0.0 if index % 3 == 1 else 0.0  # a row of zeros: its range depends on the order
    return host, [da.from_array(batch, chunks=(3, 4)) for batch in host]


def _pending_fold(stats):
    pending = stats._pending
    return pending[1] if isinstance(pending, tuple) else pending


def _assert_same_statistics(stats, reference):
    if isinstance(reference, qarray.HistogramQuantizationStats):
        assert stats.histogram == reference.histogram
        return
    for name in ("rmin", "rmax"):
        got, expected = numpy.asarray(getattr(stats, name)), numpy.asarray(getattr(reference, name))
        numpy.testing.assert_array_equal(got, expected, err_msg=name)
        numpy.testing.assert_array_equal(numpy.signbit(got), numpy.signbit(expected), err_msg=name)


@pytest.mark.parametrize("path", STREAMS)
def test_a_long_dask_stream_holds_a_bounded_pending_tree(path, monkeypatch):
    """However long a stream of Dask batches, an update builds on a bounded number of pending
    nodes (a tree, not one chain over every batch so far: the cost of an update stays
    constant), the read computes once, and the statistics are those of one call on all."""
    from qarray.core import pending

    monkeypatch.setattr(pending, "FAN_IN", LONG_STREAM_FAN_IN)
    make, keywords, together = STREAMS[path]
    host, batches = _long_stream()
    stats, most_held = make(), 0
    stats.update(batches[0], **keywords)
    for batch in batches[1:]:
        stats.update(batch, **keywords)
        most_held = max(most_held, _pending_fold(stats).held)
    levels = 4  # ceil(log(150) / log(4))
    assert most_held <= (LONG_STREAM_FAN_IN - 1) * levels
    counter = _ComputeCounter()
    with counter:
        _ = stats.histogram if path == "histogram" else numpy.asarray(stats.rmin)
    assert counter.count == 1
    reference = make()
    reference.update(numpy.concatenate(host, axis=together), **keywords)
    _assert_same_statistics(stats, reference)


@pytest.mark.parametrize("path", ["minmax", "minmax axis=0"])
def test_copies_of_a_dask_stream_keep_their_own_batches(path, monkeypatch):
    """A copy taken mid-stream shares the pending tree, but batches given to either side
    afterwards stay on that side; a host batch after Dask ones is folded in too."""
    from qarray.core import pending

    monkeypatch.setattr(pending, "FAN_IN", LONG_STREAM_FAN_IN)
    make, keywords, together = STREAMS[path]
    host, batches = _long_stream(40)
    stats = make()
    for batch in batches[:30]:
        stats.update(batch, **keywords)
    copy = stats.quant_stats
    for batch in batches[30:]:
        stats.update(batch, **keywords)
    copy.update(host[35] * 100.0, **keywords)
    expected_copy, expected = make(), make()
    expected_copy.update(numpy.concatenate([*host[:30], host[35] * 100.0], axis=together), **keywords)
    expected.update(numpy.concatenate(host, axis=together), **keywords)
    _assert_same_statistics(copy, expected_copy)
    _assert_same_statistics(stats, expected)


def test_cupy_chunks_stay_on_the_gpu():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA GPU is visible")
    except Exception as error:  # CUDA runtime missing
        pytest.skip(f"no CUDA GPU is visible: {error}")
    host = _host_values()
    lazy = da.from_array(cupy.asarray(host), chunks=(10, 6))
    qa = QuantizedArray(8, lazy)
    computed = qa.qvalues.compute()
    assert isinstance(computed, cupy.ndarray)
    numpy.testing.assert_array_equal(cupy.asnumpy(computed), QuantizedArray(8, host).qvalues)


# -- a real cluster ------------------------------------------------------------------------


def _peak_rss_bytes():
    """This process's peak resident memory in bytes (Linux's VmHWM), or None elsewhere.

    VmHWM belongs to the process's own address space, unlike ``ru_maxrss``, which a
    spawned worker inherits from the process it was forked from.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None


def _blockwise_bincount(block, n_levels):
    return numpy.bincount(block.reshape(-1), minlength=n_levels).reshape(1, n_levels)


def test_distributed_cluster_quantizes_an_array_larger_than_a_worker_memory():
    distributed = pytest.importorskip("distributed")
    start = time.perf_counter()
    with distributed.LocalCluster(
        n_workers=CLUSTER_WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit=CLUSTER_WORKER_MEMORY_LIMIT,
        env=CLUSTER_WORKER_ENV,
    ) as cluster, distributed.Client(cluster) as client:
        limit = min(worker["memory_limit"] for worker in client.scheduler_info()["workers"].values())
        x = da.random.default_rng(20240601).standard_normal(
            CLUSTER_ARRAY_ELEMENTS, dtype=numpy.float32, chunks=CLUSTER_CHUNK_ELEMENTS
        )
        assert x.nbytes > 2 * limit

        qa = QuantizedArray(8, x)  # calibration: one distributed min/max reduction
        assert isinstance(qa.qvalues, da.Array)
        n_levels = 256
        histogram = (
            qa.qvalues.map_blocks(_blockwise_bincount, n_levels, chunks=(1, n_levels), new_axis=1, dtype=numpy.int64)
            .sum(axis=0)
            .compute()
        )
        # The round trip with small dtypes, the way one would run it at scale.
        restored = qa.quantizer.dequant(qa.quantizer.quant(x, dtype=numpy.uint8), dtype=numpy.float32)
        restored_range = numpy.array(dask.compute(restored.min(), restored.max()))

        bad = da.from_array(numpy.array([0.0, numpy.nan, 1.0], dtype=numpy.float32), chunks=1)
        with pytest.raises(ValueError, match="non-finite"):
            qa.quantizer.quant(bad).compute()
        peak_rss = client.run(_peak_rss_bytes)  # each worker's high-water mark

    if None not in peak_rss.values():
        assert max(peak_rss.values()) < limit < x.nbytes

    # NumPy over the same chunks, one chunk in memory at a time.
    rmin, rmax = numpy.inf, -numpy.inf
    reference = numpy.zeros(n_levels, dtype=numpy.int64)
    reference_range = numpy.array([numpy.inf, -numpy.inf], dtype=numpy.float32)
    for index in range(x.numblocks[0]):
        block = x.blocks[index].compute(scheduler="sync")
        rmin, rmax = min(rmin, float(block.min())), max(rmax, float(block.max()))
        qvalues = qa.quantizer.quant(block)
        reference += numpy.bincount(qvalues, minlength=n_levels)
        back = qa.quantizer.dequant(qvalues, dtype=numpy.float32)
        reference_range = numpy.array([min(reference_range[0], back.min()), max(reference_range[1], back.max())])

    assert (float(qa.quantizer.rmin), float(qa.quantizer.rmax)) == (rmin, rmax)
    numpy.testing.assert_array_equal(histogram, reference)
    assert int(histogram.sum()) == CLUSTER_ARRAY_ELEMENTS
    numpy.testing.assert_array_equal(restored_range, reference_range)
    half_step = float(qa.quantizer.scale) / 2
    assert rmin - half_step <= restored_range[0] and restored_range[1] <= rmax + half_step
    assert time.perf_counter() - start < CLUSTER_TIME_BUDGET_S


def _positive(shape=(200,), chunks=30):
    """A Dask array of unknown chunk sizes (``x[x > 0]``) and its host values."""
    host = _host_values(shape=shape, dtype=numpy.float64)
    lazy = da.from_array(host, chunks=chunks)
    return lazy[lazy > 0], host[host > 0]


@pytest.mark.parametrize("kwargs", [{}, {"block_size": 8}], ids=["per-tensor", "per-block"])
def test_unknown_chunk_sizes_dump_and_load_back(kwargs, tmp_path):
    positive, host = _positive()
    qa = QuantizedArray(8, positive, **kwargs)
    reference = QuantizedArray(8, host, **kwargs)
    assert qa.quantizer == reference.quantizer
    numpy.testing.assert_array_equal(qa.qvalues.compute(), reference.qvalues)
    assert qarray.loads(qa.dumps()) == reference
    qa.dump(tmp_path / "qa.json")
    assert qarray.load(tmp_path / "qa.json") == reference


def test_unknown_chunk_sizes_work_per_block_without_a_quantized_array():
    positive, host = _positive()
    stats = qarray.MinMaxQuantizationStats()
    stats.update(positive, block_size=8)
    reference = QuantizedArray(8, host, block_size=8).quantizer
    numpy.testing.assert_array_equal(stats.rmin.compute(), reference.rmin)
    quantizer = UniformQuantizer(QuantizationOptions(8, block_size=8), stats)
    quantizer.compute_quantization_parameters(quantizer.options, stats)
    qvalues = quantizer.quant(positive)
    numpy.testing.assert_array_equal(qvalues.compute(), reference.quant(host))
    kept = qvalues[qvalues >= 0]  # unknown chunk sizes again
    numpy.testing.assert_array_equal(quantizer.dequant(kept).compute(), reference.dequant(reference.quant(host)))
