"""Shared statistics from many threads, and NumPy masked arrays.

One ``MinMaxQuantizationStats`` updated from many threads must end as if the
batches had come one after the other: no batch lost, whatever the library.
Merging must read each side whole while it is being updated, and ``a.merge(b)``
with ``b.merge(a)`` at once must not deadlock.

Masked arrays are refused (TypeError naming the argument) wherever values enter:
qarray has no notion of a mask and would otherwise use the hidden values.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, List

import numpy
import pytest

import qarray
from qarray import MinMaxQuantizationStats, QuantizedArray, UniformQuantizer

THREADS = 8
BATCHES_PER_THREAD = 12
TRIALS = 6


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads as often as the interpreter allows, so that races show every run."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def _all_at_once(work: Callable[[int], Any], count: int = THREADS) -> List[Any]:
    """Run ``work(index)`` for ``count`` threads released together; raise on a hang."""
    barrier = threading.Barrier(count)

    def start(index: int) -> Any:
        barrier.wait()
        return work(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(start, index) for index in range(count)]
        return [future.result(timeout=60) for future in futures]


def _batches(seed: int) -> List[numpy.ndarray]:
    """THREADS * BATCHES_PER_THREAD small batches, each with its own range and values."""
    rng = numpy.random.default_rng(seed)
    count = THREADS * BATCHES_PER_THREAD
    # Batch k spans about [-k-1, k+1]: the extremes sit in one batch, wherever it runs.
    return [rng.uniform(-1.0, 1.0, 16) * (k + 1) for k in rng.permutation(count)]


def _reference(batches: List[numpy.ndarray]) -> MinMaxQuantizationStats:
    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats(numpy.concatenate(batches))
    return stats


def test_updates_from_many_threads_lose_no_batch(xb: Any, frequent_thread_switches: None) -> None:
    for trial in range(TRIALS):
        batches = _batches(seed=trial)
        inputs = [xb.asarray(batch) for batch in batches]
        stats = MinMaxQuantizationStats()

        def work(index: int, inputs: List[Any] = inputs, stats: MinMaxQuantizationStats = stats) -> None:
            for batch in inputs[index::THREADS]:
                stats.update(batch, with_uvalues=True)

        _all_at_once(work)
        expected = _reference(batches)
        assert (float(stats.rmin), float(stats.rmax)) == (float(expected.rmin), float(expected.rmax))
        # Every batch adds unique values of its own: a lost update shows here.
        numpy.testing.assert_array_equal(xb.to_numpy(stats.uvalues), expected.uvalues)


def test_min_and_max_from_many_threads_are_those_of_all_batches(
    xb: Any, frequent_thread_switches: None
) -> None:
    for trial in range(TRIALS):
        batches = _batches(seed=100 + trial)
        inputs = [xb.asarray(batch) for batch in batches]
        stats = MinMaxQuantizationStats()

        def work(index: int, inputs: List[Any] = inputs, stats: MinMaxQuantizationStats = stats) -> None:
            for batch in inputs[index::THREADS]:
                stats.update(batch)

        _all_at_once(work)
        expected = _reference(batches)
        assert (float(stats.rmin), float(stats.rmax)) == (float(expected.rmin), float(expected.rmax))


@pytest.mark.parametrize("trial", range(3))
def test_merges_in_both_directions_while_both_sides_update(trial: int, frequent_thread_switches: None) -> None:
    batches = _batches(seed=7 + trial)
    first, second = MinMaxQuantizationStats(), MinMaxQuantizationStats()
    first.update(batches[0], with_uvalues=True)
    second.update(batches[1], with_uvalues=True)
    rest = batches[2:]
    merged: List[MinMaxQuantizationStats] = []

    def work(index: int) -> None:
        if index % 4 == 0:
            for _ in range(30):
                merged.append(first.merge(second))
        elif index % 4 == 1:
            for _ in range(30):
                merged.append(second.merge(first))
        else:  # the four others update both sides meanwhile, all of ``rest`` between them
            updater = (index // 4) * 2 + index % 4 - 2
            for batch in rest[updater::4]:
                (first if index % 2 else second).update(batch, with_uvalues=True)

    _all_at_once(work)  # a deadlock fails here (future timeout) instead of hanging
    for result in merged:
        # Each side was read whole: the range is that of the unique values it holds.
        low, high = float(numpy.min(result.uvalues)), float(numpy.max(result.uvalues))
        assert abs(low - float(result.rmin)) <= 0.005 and abs(high - float(result.rmax)) <= 0.005
    final = first.merge(second)
    assert final == second.merge(first)
    expected = _reference(batches)
    assert (float(final.rmin), float(final.rmax)) == (float(expected.rmin), float(expected.rmax))
    numpy.testing.assert_array_equal(final.uvalues, expected.uvalues)


@pytest.mark.parametrize("trial", range(3))
def test_copies_and_dumps_while_updating_give_whole_states(trial: int, frequent_thread_switches: None) -> None:
    batches = _batches(seed=20 + trial)
    stats = MinMaxQuantizationStats()
    stats.update(batches[0], with_uvalues=True)
    seen: List[MinMaxQuantizationStats] = []

    def work(index: int) -> None:
        if index < 2:
            for _ in range(40):
                seen.append(stats.quant_stats)
                seen.append(qarray.loads(stats.dumps()))
        else:
            for batch in batches[1:][index::THREADS]:
                stats.update(batch, with_uvalues=True)

    _all_at_once(work)
    for copy in seen:
        low, high = float(numpy.min(copy.uvalues)), float(numpy.max(copy.uvalues))
        assert abs(low - float(copy.rmin)) <= 0.005 and abs(high - float(copy.rmax)) <= 0.005


# -- masked arrays ------------------------------------------------------------------------


def _masked() -> numpy.ma.MaskedArray:
    """Visible values 0, 1, 2; the hidden one is huge."""
    return numpy.ma.masked_array([0.0, 1.0, 2.0, 1e9], mask=[False, False, False, True])


def _masked_integers() -> numpy.ma.MaskedArray:
    return numpy.ma.masked_array([0, 1, 2, 255], mask=[False, False, False, True])


def _quantizer() -> UniformQuantizer:
    return QuantizedArray(8, numpy.array([0.0, 1.0, 2.0])).quantizer


ENTRY_POINTS = {
    "QuantizedArray": lambda: QuantizedArray(8, _masked()),
    "QuantizedArray(value_is_float=False)": lambda: QuantizedArray(
        8, _masked_integers(), value_is_float=False, scale=0.5, zero_point=0, offset=0
    ),
    "update_values": lambda: QuantizedArray(8, numpy.array([0.0, 2.0])).update_values(_masked()),
    "update_quantized_values": lambda: QuantizedArray(8, numpy.array([0.0, 2.0])).update_quantized_values(
        _masked_integers()
    ),
    "quant": lambda: _quantizer().quant(_masked()),
    "dequant": lambda: _quantizer().dequant(_masked_integers()),
    "compute_quantization_stats": lambda: MinMaxQuantizationStats().compute_quantization_stats(_masked()),
    "update": lambda: MinMaxQuantizationStats().update(_masked()),
    "calibrate": lambda: qarray.calibrate([numpy.array([0.5]), _masked()], n_bits=8),
}


@pytest.mark.parametrize("call", ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())
def test_masked_arrays_are_refused_wherever_values_enter(call: Callable[[], Any]) -> None:
    with pytest.raises(TypeError, match=r"values must not be a masked array"):
        call()


def test_refusal_names_the_argument() -> None:
    with pytest.raises(TypeError, match=r"^qvalues must not be a masked array"):
        _quantizer().dequant(_masked_integers())
    with pytest.raises(TypeError, match=r"^values must not be a masked array"):
        _quantizer().quant(_masked())


def test_dask_arrays_of_masked_chunks_are_refused() -> None:
    da = pytest.importorskip("dask.array")
    lazy = da.ma.masked_array(numpy.array([0.0, 1.0, 2.0, 1e9]), mask=[False, False, False, True])
    with pytest.raises(TypeError, match=r"values must not be a masked array"):
        QuantizedArray(8, lazy)


def test_the_visible_values_calibrate_as_the_message_suggests() -> None:
    quantized = QuantizedArray(8, _masked().compressed())
    assert float(quantized.quantizer.rmax) == 2.0


def test_detecting_masked_arrays_imports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``numpy.ma`` loaded, no masked array exists and the check must not load it."""
    monkeypatch.delitem(sys.modules, "numpy.ma")
    QuantizedArray(8, numpy.array([0.0, 1.0, 2.0]))
    qarray.calibrate([numpy.array([0.5, 1.0])], n_bits=4)
    assert "numpy.ma" not in sys.modules
