"""Thread safety: the same objects used from many threads at once give the sequential results.

A quantizer holds host numbers only and every call allocates its own buffers, so
one quantizer serves any number of threads; QuantizedArray construction,
serialization and the backend registry's first use must be safe too.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List

import numpy
import pytest

import qarray
from qarray import MinMaxQuantizationStats, QuantizationOptions, QuantizedArray
from qarray.backends import NumpyBackend, backend_for, get_backend, register_backend
from qarray.core.namespace import to_numpy

from bits import assert_same_bits

THREADS = 8
CALLS = 40


def _arrays(count: int, seed: int = 0) -> List[numpy.ndarray]:
    """Different arrays: small ones, and some large enough for compiled or multi-block kernels."""
    rng = numpy.random.default_rng(seed)
    sizes = [int(rng.integers(1, 2000)) for _ in range(count)]
    sizes[::7] = [(1 << 16) * 2 + 17] * len(sizes[::7])
    return [rng.standard_normal(size) * float(rng.uniform(0.1, 10)) for size in sizes]


def _in_threads(work: Callable[[Any], Any], items: List[Any]) -> List[Any]:
    """Run ``work`` on every item from THREADS threads that all start at once."""
    barrier = threading.Barrier(THREADS)

    def start(item: Any) -> Any:
        return work(item)

    def first(item: Any) -> Any:
        barrier.wait()
        return work(item)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(first if index < THREADS else start, item) for index, item in enumerate(items)]
        return [future.result() for future in futures]


@pytest.fixture(scope="module")
def shared() -> qarray.UniformQuantizer:
    return QuantizedArray(8, numpy.linspace(-3.0, 3.0, 101), is_signed=True).quantizer


def test_one_quantizer_from_many_threads(shared: qarray.UniformQuantizer) -> None:
    arrays = _arrays(THREADS * CALLS)
    expected = [(shared.quant(a), shared.dequant(shared.quant(a))) for a in arrays]

    def work(values: numpy.ndarray) -> Any:
        qvalues = shared.quant(values)
        return qvalues, shared.dequant(qvalues)

    for (qvalues, back), (want_q, want_back) in zip(_in_threads(work, arrays), expected, strict=True):
        assert_same_bits(qvalues, want_q)
        assert_same_bits(back, want_back)


def test_one_quantizer_from_many_threads_on_every_library(xb: Any, shared: qarray.UniformQuantizer) -> None:
    arrays = [a[:500] for a in _arrays(THREADS * 8, seed=1)]
    expected = [shared.quant(a).tolist() for a in arrays]
    inputs = [xb.asarray(a) for a in arrays]

    def work(values: Any) -> Any:
        return to_numpy(shared.quant(values)).tolist()

    assert _in_threads(work, inputs) == expected


def test_refusals_from_many_threads_do_not_disturb_each_other(shared: qarray.UniformQuantizer) -> None:
    """Half the threads send NaN (refused, or accepted unchecked); the others get exact results."""
    clean = _arrays(THREADS * 10, seed=2)
    expected = [shared.quant(a) for a in clean]
    dirty = numpy.array([1.0, numpy.nan, numpy.inf])

    def work(index_values: Any) -> Any:
        index, values = index_values
        if index % 2:
            with pytest.raises(ValueError, match="non-finite"):
                shared.quant(dirty)
            shared.quant(dirty, check_finite=False)
        return shared.quant(values)

    for got, want in zip(_in_threads(work, list(enumerate(clean))), expected, strict=True):
        assert_same_bits(got, want)


def test_quantized_arrays_built_in_many_threads(xb: Any) -> None:
    arrays = [a[:300] for a in _arrays(THREADS * 6, seed=3)]
    options = [QuantizationOptions(n, is_signed=n % 2 == 0, is_qat=n % 3 == 0) for n in range(2, 2 + len(arrays))]
    options = [QuantizationOptions(o.n_bits % 30 + 2, is_signed=o.is_signed, is_qat=o.is_qat) for o in options]

    def build(item: Any) -> Any:
        values, opts = item
        array = QuantizedArray(opts.n_bits, xb.asarray(values), options=opts)
        return array.dumps()

    items = list(zip(arrays, options))
    expected = [QuantizedArray(o.n_bits, v, options=o).dumps() for v, o in items]
    assert _in_threads(build, items) == expected


def test_statistics_and_serialization_from_many_threads() -> None:
    arrays = _arrays(THREADS * 10, seed=4)

    def work(values: numpy.ndarray) -> Any:
        stats = MinMaxQuantizationStats()
        stats.compute_quantization_stats(values, with_uvalues=values.size < 5000)
        loaded = qarray.loads(stats.dumps())
        return loaded.dumps(), float(stats.rmin), float(stats.rmax)

    expected = [work(a) for a in arrays]
    assert _in_threads(work, arrays) == expected


def test_a_backend_is_built_once_when_many_threads_ask_first() -> None:
    built: List[int] = []

    class SlowBackend(NumpyBackend):
        def __init__(self) -> None:
            built.append(threading.get_ident())
            time.sleep(0.05)  # a slow import: every thread arrives while it is being built
            super().__init__()

    name = "concurrency-slow-backend"
    register_backend(name, SlowBackend, replace=True)
    backends = _in_threads(lambda _: get_backend(name), list(range(THREADS * 2)))
    assert len(built) == 1
    assert all(backend is backends[0] for backend in backends)


def test_backend_lookup_from_many_threads_gives_one_backend_per_library(xb: Any) -> None:
    arrays = [xb.asarray(numpy.arange(3.0)) for _ in range(THREADS * 4)]
    backends = _in_threads(backend_for, arrays)
    assert len({id(backend) for backend in backends}) == 1
