"""The primitives, on every backend, against an independent NumPy reading of the contract.

``qarray.primitives`` is the layer the classes stand on: ``block_minmax``,
``choose_parameters``, ``quant_spec`` / ``dequant_spec`` and ``quantize`` /
``dequantize``. Each is checked here without the classes, against
``tests/reference.py`` (written from the contract alone, per tensor): per block,
every block must get what the reference gives for that block as a tensor of its own.
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, List, Tuple

import numpy
import pytest

from qarray import QuantizationOptions, primitives
from qarray.core.granularity import block_extent
from qarray.core.namespace import to_numpy

import reference

OPTION_SETS: Dict[str, Dict[str, bool]] = {
    "unsigned": {},
    "signed": {"is_signed": True},
    "symmetric": {"is_signed": True, "is_symmetric": True},
    "narrow": {"is_signed": True, "is_narrow": True},
    "qat-precomputed": {"is_qat": True, "is_precomputed_qat": True},
}


def options_for(n_bits: int, name: str, **granularity: Any) -> Tuple[QuantizationOptions, reference.Options]:
    flags = OPTION_SETS[name]
    ours = QuantizationOptions(
        n_bits,
        is_signed=flags.get("is_signed", False),
        is_symmetric=flags.get("is_symmetric", False),
        is_qat=flags.get("is_qat", False),
        **granularity,
    )
    ours.is_narrow = flags.get("is_narrow", False)
    ours.is_precomputed_qat = flags.get("is_precomputed_qat", False)
    return ours, reference.Options(n_bits, **flags)


def ranges(seed: int) -> List[Tuple[float, float]]:
    """Ordinary ranges, single values, ranges near 0 and far from it."""
    rng = numpy.random.default_rng(seed)
    found = [(-1.0, 1.0), (0.0, 0.0), (3.5, 3.5), (1e-9, 2e-9), (-5.0, -5.0 + 1e-7), (1e6, 1e6 + 3.0)]
    for _ in range(20):
        low, high = sorted(rng.normal(size=2) * 10.0 ** rng.integers(-3, 4))
        found.append((float(low), float(high)))
    return found


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
@pytest.mark.parametrize("n_bits", [2, 4, 8, 16])
def test_choose_parameters_per_tensor_is_the_reference_rule(name: str, n_bits: int) -> None:
    options, ref_options = options_for(n_bits, name)
    for low, high in ranges(n_bits):
        stats = reference.Stats(numpy.float64(low), numpy.float64(high), None)
        expected = reference.choose_parameters(ref_options, stats, previous_scale=0.125)
        scale, zero_point, offset = primitives.choose_parameters(low, high, options, previous_scale=0.125)
        numpy.testing.assert_array_equal(numpy.float64(scale), numpy.float64(expected.scale))
        assert (int(zero_point), int(offset)) == (int(expected.zero_point), int(expected.offset)), (low, high)


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_choose_parameters_per_block_gives_each_block_the_per_tensor_rule(xb: Any, name: str) -> None:
    options, ref_options = options_for(8, name)
    pairs = ranges(7)
    rmin = xb.asarray(numpy.array([low for low, _ in pairs]).reshape(2, -1))
    rmax = xb.asarray(numpy.array([high for _, high in pairs]).reshape(2, -1))
    previous = xb.asarray(numpy.full((2, len(pairs) // 2), 0.125))
    scale, zero_point, offset = primitives.choose_parameters(rmin, rmax, options, previous_scale=previous)
    for index, (low, high) in enumerate(pairs):
        stats = reference.Stats(numpy.float64(low), numpy.float64(high), None)
        expected = reference.choose_parameters(ref_options, stats, previous_scale=0.125)
        position = numpy.unravel_index(index, (2, len(pairs) // 2))
        numpy.testing.assert_array_equal(to_numpy(scale)[position], numpy.float64(expected.scale))
        assert int(to_numpy(zero_point)[position]) == int(expected.zero_point)
        assert int(to_numpy(offset)[position]) == int(expected.offset)


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
@pytest.mark.parametrize("out_dtype", ["int16", "int64"])
def test_quantize_and_dequantize_per_tensor_are_the_reference(xb: Any, name: str, out_dtype: str) -> None:
    options, ref_options = options_for(8, name)
    host = numpy.random.default_rng(3).normal(size=(6, 50)) * 3.0
    host[0, :8] = (numpy.arange(8) - 3.5) * 0.1  # ties for some scales
    scale, zero_point, offset = primitives.choose_parameters(float(host.min()), float(host.max()), options)
    values = xb.asarray(host)
    spec = primitives.quant_spec(scale, zero_point, offset, options, out_dtype, like=values)
    qvalues, problems = primitives.quantize(values, spec, check_finite=True)
    clip = reference.clip_range(ref_options, offset)
    expected = reference.quant(host, scale, zero_point, clip)
    numpy.testing.assert_array_equal(to_numpy(qvalues), expected)
    # Dask checks each chunk when it is computed (and reports no counts); the others count
    assert (problems is None) == (xb.name == "dask")
    assert problems is None or tuple(problems.read()) == (0, 0)
    dequant_spec = primitives.dequant_spec(scale, zero_point, like=qvalues)
    restored = primitives.dequantize(qvalues, dequant_spec, dtype="float64")
    numpy.testing.assert_array_equal(to_numpy(restored), reference.dequant(expected, scale, zero_point))


@pytest.mark.parametrize(
    "granularity", [{"axis": 0}, {"axis": -1}, {"block_size": 16}, {"block_size": (2, 7)}], ids=str
)
def test_the_per_block_path_gives_each_block_the_reference_of_the_block(xb: Any, granularity: Dict[str, Any]) -> None:
    options, ref_options = options_for(8, "signed", **granularity)
    host = numpy.random.default_rng(5).normal(size=(6, 50)) * numpy.arange(1, 7)[:, None]
    host[2, :16] = 0.75  # single-value blocks for some granularities
    values = xb.asarray(host)
    extent, grid = block_extent(host.shape, **granularity)
    rmin, rmax = primitives.block_minmax(values, extent)
    assert tuple(rmin.shape) == tuple(grid)
    scale, zero_point, offset = primitives.choose_parameters(rmin, rmax, options)
    spec = primitives.quant_spec(scale, zero_point, offset, options, "int16", like=values, extent=extent)
    qvalues, _ = primitives.quantize(values, spec, check_finite=False)
    restored = primitives.dequantize(
        qvalues, primitives.dequant_spec(scale, zero_point, like=qvalues, extent=extent), dtype="float32"
    )
    q_host, restored_host = to_numpy(qvalues), to_numpy(restored)
    for index in itertools.product(*(range(n) for n in grid)):
        block = tuple(slice(i * e, (i + 1) * e) for i, e in zip(index, extent))
        expected = reference.quantize(host[block], ref_options)
        numpy.testing.assert_array_equal(q_host[block], expected.qvalues, err_msg=str(index))
        parameters = expected.params
        restored_block = reference.dequant(expected.qvalues, parameters.scale, parameters.zero_point, numpy.float32)
        numpy.testing.assert_array_equal(restored_host[block], restored_block)


def test_block_minmax_is_a_loop_over_blocks(xb: Any) -> None:
    host = numpy.random.default_rng(9).normal(size=(5, 7, 9))
    host[1, 2, 3] = numpy.nan
    for extent in [(1, 7, 9), (2, 3, 4), (5, 1, 9), (1, 1, 1)]:
        for omit in (False, True):
            low, high = primitives.block_minmax(xb.asarray(host), extent, omit_nonfinite=omit)
            grid = tuple(-(-n // e) for n, e in zip(host.shape, extent))
            expected_low, expected_high = numpy.empty(grid), numpy.empty(grid)
            for index in itertools.product(*(range(n) for n in grid)):
                block = host[tuple(slice(i * e, (i + 1) * e) for i, e in zip(index, extent))]
                if omit:
                    block = block[numpy.isfinite(block)]
                if block.size == 0:  # a block of NaN alone, left out: (+Inf, -Inf)
                    expected_low[index], expected_high[index] = numpy.inf, -numpy.inf
                else:
                    expected_low[index], expected_high[index] = block.min(), block.max()
            numpy.testing.assert_array_equal(to_numpy(low), expected_low)
            numpy.testing.assert_array_equal(to_numpy(high), expected_high)


def test_the_primitives_check_their_arguments() -> None:
    values = numpy.zeros((4, 6))
    with pytest.raises(ValueError, match="extent"):
        primitives.block_minmax(values, (1,))
    with pytest.raises(TypeError, match="extent"):
        primitives.block_minmax(values, (1, 2.5))
    with pytest.raises(ValueError, match="requires is_signed"):
        options = QuantizationOptions(8)
        options.is_symmetric = True
        primitives.choose_parameters(0.0, 1.0, options)
    with pytest.raises(ValueError, match="must not exceed"):
        primitives.choose_parameters(2.0, 1.0, QuantizationOptions(8))
    with pytest.raises(ValueError, match="cannot hold the clipped range"):
        primitives.quant_spec(0.1, 0, 0, QuantizationOptions(8), "int8", like=values)
    with pytest.raises(ValueError, match="does not broadcast"):
        primitives.quant_spec(0.1, numpy.zeros(5), 0, QuantizationOptions(8), "uint8", like=values)
    with pytest.raises(TypeError, match="rmin"):
        primitives.choose_parameters("low", 1.0, QuantizationOptions(8))
