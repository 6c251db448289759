"""Per-block statistics keep being per block: copies, documents and merges never mix granularities.

Merging per-block statistics with per-tensor ones is refused the same way whether the
per-tensor side was filled by ``compute_quantization_stats`` or by ``update()`` (whose
min and max may still be pending on the device); copies (``quant_stats``,
``copy_stats``, a quantizer's statistics, a loaded document) remember that they are per
block, so a per-tensor ``update()`` is refused on them as on the original.
"""

from __future__ import annotations

from typing import Any

import numpy
import pytest

import qarray
from qarray import MinMaxQuantizationStats, QuantizationOptions, UniformQuantizer


def per_block(xb: Any) -> MinMaxQuantizationStats:
    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats(
        xb.asarray(numpy.random.default_rng(0).normal(size=(4, 8))), with_uvalues=False, block_size=4
    )
    return stats


def per_tensor_by_update(xb: Any) -> MinMaxQuantizationStats:
    stats = MinMaxQuantizationStats()
    stats.update(xb.asarray(numpy.array([1.0, 2.0])))
    return stats


def per_tensor_by_compute(xb: Any) -> MinMaxQuantizationStats:
    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats(xb.asarray(numpy.array([1.0, 2.0])), with_uvalues=False)
    return stats


@pytest.mark.parametrize("make", [per_tensor_by_update, per_tensor_by_compute], ids=["update", "compute"])
def test_merging_per_block_with_per_tensor_statistics_is_refused_both_ways(xb: Any, make: Any) -> None:
    blocks, tensor = per_block(xb), make(xb)
    with pytest.raises(ValueError, match="per-block statistics with per-tensor ones"):
        blocks.merge(tensor)
    with pytest.raises(ValueError, match="per-block statistics with per-tensor ones"):
        tensor.merge(blocks)


def copies(stats: MinMaxQuantizationStats) -> Any:
    yield "quant_stats", stats.quant_stats
    copied = MinMaxQuantizationStats()
    copied.copy_stats(stats)
    yield "copy_stats", copied
    quantizer = UniformQuantizer(QuantizationOptions(8, block_size=4), stats)
    yield "quantizer.stats", quantizer.stats
    yield "document", qarray.loads(stats.dumps())


def test_copies_of_per_block_statistics_refuse_a_per_tensor_update(xb: Any) -> None:
    original = per_block(xb)
    for name, copy in copies(original):
        assert copy.is_per_block, name
        with pytest.raises(ValueError, match="per block"):
            copy.update(xb.asarray(numpy.zeros((4, 8))))
        assert copy.rmin.shape == (4, 2), name  # still the grid: nothing was folded in
        copy.update(xb.asarray(numpy.full((4, 8), 9.0)), block_size=4)  # the same blocks: folded
        numpy.testing.assert_array_equal(numpy.asarray(qarray.core.namespace.to_numpy(copy.rmax)), 9.0)


def test_the_same_axis_written_three_ways_is_one_granularity(xb: Any) -> None:
    """On 2-D data, axis=0, axis=-2 and axis=(0,) keep the same axis: batches fold, stats merge."""
    rng = numpy.random.default_rng(4)
    batches = [xb.asarray(rng.normal(size=(3, 5))) for _ in range(3)]
    stats = MinMaxQuantizationStats()
    for batch, axis in zip(batches, (0, -2, (0,))):
        stats.update(batch, axis=axis)
    whole = numpy.concatenate([qarray.core.namespace.to_numpy(b) for b in batches], axis=1)
    numpy.testing.assert_array_equal(qarray.core.namespace.to_numpy(stats.rmin)[:, 0], whole.min(axis=1))
    first, second = MinMaxQuantizationStats(), MinMaxQuantizationStats()
    first.update(batches[0], axis=0)
    second.update(batches[1], axis=(-2,))
    merged = first.merge(second)
    assert merged.rmin.shape == (3, 1)


def test_a_dequant_grid_error_names_qvalues(xb: Any) -> None:
    options = QuantizationOptions(8, block_size=4)
    stats = per_block(xb)
    quantizer = UniformQuantizer(options, stats)
    quantizer.compute_quantization_parameters(options, stats)
    with pytest.raises(ValueError, match="^qvalues of shape"):
        quantizer.dequant(xb.asarray(numpy.zeros((2, 3), dtype=numpy.int64)))
    with pytest.raises(ValueError, match="^values of shape"):
        quantizer.quant(xb.asarray(numpy.zeros((2, 3))))



@pytest.mark.parametrize("rows", [4, 1 << 14], ids=["small", "compiled-kernel-size"])
@pytest.mark.parametrize("granularity", [{"axis": 1}, {"block_size": (None, 2)}], ids=["axis", "block_size"])
def test_omit_streaming_waits_for_a_later_batch_to_fill_an_empty_block(xb: Any, rows: int, granularity: Any) -> None:
    """Under nan_policy='omit', a block with no finite value yet stays open; the result is the one-call one."""
    rng = numpy.random.default_rng(5)
    first, second = rng.normal(size=(rows, 4)), rng.normal(size=(rows, 4))
    first[:, :2] = numpy.nan  # the first block has nothing finite in the first batch
    first[0, 0] = numpy.inf
    stats = MinMaxQuantizationStats()
    stats.update(xb.asarray(first), nan_policy="omit", **granularity)
    stats.update(xb.asarray(second), nan_policy="omit", **granularity)
    one_call = MinMaxQuantizationStats()
    whole = xb.asarray(numpy.concatenate([first, second]))
    one_call.compute_quantization_stats(whole, nan_policy="omit", **granularity)
    numpy.testing.assert_array_equal(xb.to_numpy(stats.rmin), xb.to_numpy(one_call.rmin))
    numpy.testing.assert_array_equal(xb.to_numpy(stats.rmax), xb.to_numpy(one_call.rmax))


def test_omit_streaming_refuses_a_block_no_batch_filled_when_parameters_are_computed(xb: Any) -> None:
    batch = numpy.array([[numpy.nan, 1.0], [numpy.nan, 2.0]])
    stats = MinMaxQuantizationStats()
    stats.update(xb.asarray(batch), nan_policy="omit", axis=1)
    stats.update(xb.asarray(batch), nan_policy="omit", axis=1)
    params = qarray.UniformQuantizationParameters()
    with pytest.raises(ValueError, match="1 of 2 block range"):
        params.compute_quantization_parameters(QuantizationOptions(8, axis=1), stats)
        params.settle()
