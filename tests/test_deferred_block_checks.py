"""Per-block parameters on a device whose reads synchronise: checked when first read, not when computed.

docs/granularity.md asks that calibration, parameters and quantization with a granularity read
nothing back from a GPU until a value is read. The parameter rule's check of the blocks (a
non-finite range, a range that gives no valid parameters, which offsets occur) is therefore
left on the device there and read by the first operation that reads back anyway: a checked
quantization, a document, a dtype that needs the blocks' offsets. Here array-api-strict
plays the GPU: its backend is told that reads synchronise, and every read of the check
goes through a counter. On the host (NumPy) the check is read at once, as before.
"""

from __future__ import annotations

from typing import Any, List

import numpy
import pytest

array_api_strict = pytest.importorskip("array_api_strict")

from qarray import (  # noqa: E402  (after the skip on purpose)
    MinMaxQuantizationStats,
    QuantizationOptions,
    UniformQuantizationParameters,
    UniformQuantizer,
)
from qarray.backends import ArrayAPIBackend  # noqa: E402
from qarray.core import rule  # noqa: E402
from qarray.core.namespace import to_numpy  # noqa: E402

OPTIONS = QuantizationOptions(8, is_signed=True, block_size=4)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    """array-api-strict arrays as a GPU's: the check's reads are recorded."""
    monkeypatch.setattr(ArrayAPIBackend, "defers_reads", True)
    recorded: List[Any] = []
    real = rule.to_numpy

    def counting(array: Any) -> numpy.ndarray:
        if not isinstance(array, numpy.ndarray):  # a read from the "device"
            recorded.append(array)
        return real(array)

    monkeypatch.setattr(rule, "to_numpy", counting)
    return recorded


def on_device(host: numpy.ndarray) -> Any:
    return array_api_strict.asarray(host, device=array_api_strict.Device("device1"))


def fitted(values: Any) -> UniformQuantizer:
    stats = MinMaxQuantizationStats()
    stats.compute_quantization_stats(values, nan_policy="omit", with_uvalues=False, block_size=4)
    params = UniformQuantizationParameters()
    params.compute_quantization_parameters(OPTIONS, stats)
    return UniformQuantizer(OPTIONS, stats, params)


def test_parameters_and_an_unchecked_quant_read_nothing_back(reads: List[Any]) -> None:
    host = numpy.random.default_rng(0).standard_normal((3, 16))
    quantizer = fitted(on_device(host))
    q = quantizer.quant(on_device(host), dtype=array_api_strict.int16, check_finite=False)
    assert reads == []
    expected = fitted(host).quant(host, dtype=numpy.int16)  # NumPy: checked at once
    numpy.testing.assert_array_equal(to_numpy(q), expected)
    assert quantizer.params._pending_check is not None
    quantizer.params.settle()  # the one read-back
    assert len(reads) == 1 and quantizer.params._offsets_present == frozenset({128})
    quantizer.params.settle()
    assert len(reads) == 1


def test_a_block_without_finite_values_is_refused_at_the_first_read(reads: List[Any]) -> None:
    host = numpy.random.default_rng(1).standard_normal((2, 8))
    host[1, 4:] = numpy.nan  # the last block: nothing finite under nan_policy="omit"
    quantizer = fitted(on_device(host))  # computed on the "GPU": not refused yet
    assert reads == []
    with pytest.raises(ValueError, match="a block with no finite value"):
        fitted(host)  # on the host: refused at once (by the statistics), as before
    clean = numpy.nan_to_num(host)
    out = on_device(numpy.full(host.shape, 7, dtype=numpy.int16))
    with pytest.raises(ValueError, match="1 of 4 block range"):
        quantizer.quant(on_device(clean), dtype=array_api_strict.int16, out=out)
    numpy.testing.assert_array_equal(to_numpy(out), numpy.zeros(host.shape, dtype=numpy.int16))
    with pytest.raises(ValueError, match="1 of 4 block range"):  # still refused: never settled
        quantizer.params.dump_dict()


def test_a_dtype_that_needs_the_offsets_reads_the_check(reads: List[Any]) -> None:
    host = numpy.random.default_rng(2).standard_normal((2, 8))
    host[0, :4] = 1.5  # a single-value block: offset 0, clip range [0, 255]
    quantizer = fitted(on_device(host))
    assert reads == []
    with pytest.raises(ValueError, match="cannot hold the clipped range"):
        quantizer.quant(on_device(host), dtype=array_api_strict.int8, check_finite=False)
    assert len(reads) == 1
    q = quantizer.quant(on_device(host), dtype=array_api_strict.int16, check_finite=False)
    numpy.testing.assert_array_equal(to_numpy(q), fitted(host).quant(host, dtype=numpy.int16))


def test_copies_share_the_pending_check(reads: List[Any]) -> None:
    host = numpy.random.default_rng(3).standard_normal((2, 8))
    host[0, :4] = numpy.nan
    params = fitted(on_device(host)).params
    copy = params.quant_params
    with pytest.raises(ValueError, match="not finite"):
        copy.settle()
    with pytest.raises(ValueError, match="not finite"):
        params.settle()
