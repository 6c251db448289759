"""Per-channel and per-group quantization: every block is a small tensor, on every backend.

``QuantizedArray(n, x, axis=...)`` or ``block_size=...`` restricted to a block
``B`` must be ``QuantizedArray(n, x[B])``, integer for integer and float for
float (docs/granularity.md). The tests check exactly that, and what users rely on
around it: streaming, documents, refusals and the fused kernels.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, Tuple

import numpy
import pytest

import qarray
from qarray import MinMaxQuantizationStats, QuantizationOptions, QuantizedArray
from qarray.core.granularity import block_extent
from qarray.core.namespace import to_numpy

from bits import assert_same_bits

SHAPE = (6, 10, 7)

GRANULARITIES: Dict[str, Dict[str, Any]] = {
    "axis-0": {"axis": 0},
    "axis-last": {"axis": -1},
    "axes-0-2": {"axis": (0, 2)},
    "group-4": {"block_size": 4},
    "blocks-4-whole-3": {"block_size": (4, None, 3)},
}

OPTIONS: Dict[str, Dict[str, Any]] = {
    "unsigned": {},
    "signed": {"is_signed": True},
    "symmetric": {"is_signed": True, "is_symmetric": True},
}


def _values(shape: Tuple[int, ...] = SHAPE, dtype: str = "float64", seed: int = 0) -> numpy.ndarray:
    """Normal values with exact ties and one constant block (the single-value rule)."""
    rng = numpy.random.default_rng(seed)
    values = rng.standard_normal(shape) * rng.choice([0.01, 1.0, 30.0], size=shape[:1] + (1,) * (len(shape) - 1))
    values.reshape(-1)[::5] = (numpy.arange(values.size)[::5] % 17 - 8 + 0.5) * 0.25
    values[0] = 0.75  # a constant slab: blocks inside it hold one single value
    return values.astype(dtype)


def _blocks(shape: Tuple[int, ...], granularity: Dict[str, Any]) -> Iterator[Tuple[Tuple[int, ...], Tuple[slice, ...]]]:
    extent, grid = block_extent(shape, **granularity)
    for index in numpy.ndindex(*grid):
        yield index, tuple(slice(i * e, min((i + 1) * e, n)) for i, e, n in zip(index, extent, shape))


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("granularity", list(GRANULARITIES))
def test_every_block_is_a_small_tensor(xb: Any, granularity: str, options: str) -> None:
    values = _values()
    array = QuantizedArray(8, xb.asarray(values), **GRANULARITIES[granularity], **OPTIONS[options])
    qvalues, restored = to_numpy(array.qvalues), to_numpy(array.dequant())
    scale, zero_point, offset = (to_numpy(getattr(array.quantizer, name)) for name in ("scale", "zero_point", "offset"))
    for index, block in _blocks(SHAPE, GRANULARITIES[granularity]):
        alone = QuantizedArray(8, values[block], **OPTIONS[options])
        numpy.testing.assert_array_equal(qvalues[block], alone.qvalues, strict=True)
        assert_same_bits(restored[block], alone.dequant())
        assert_same_bits(scale[index], numpy.float64(alone.quantizer.scale))
        assert int(zero_point[index]) == int(alone.quantizer.zero_point)
        assert int(offset[index]) == int(alone.quantizer.offset)


def test_parameters_stay_in_the_values_library(xb: Any) -> None:
    """Ranges and parameters live with the values (Dask: lazy ranges, parameters computed once
    on the host, which every chunk takes its part of)."""
    array = QuantizedArray(4, xb.asarray(_values()), block_size=4)
    library = type(xb.asarray(numpy.zeros(1))).__module__.split(".")[0]
    for name in ("rmin", "rmax", "scale", "zero_point", "offset"):
        parameter = getattr(array.quantizer, name)
        expected = "numpy" if xb.name == "dask" and name not in ("rmin", "rmax") else library
        assert type(parameter).__module__.split(".")[0] == expected, name
        assert tuple(parameter.shape) == (6, 10, 2)
    assert str(to_numpy(array.quantizer.scale).dtype) == "float64"
    assert str(to_numpy(array.quantizer.zero_point).dtype) == "int64"


def test_float32_values_and_low_bits_match_per_block() -> None:
    values = _values(dtype="float32")
    for n_bits in (2, 4):
        array = QuantizedArray(n_bits, values, block_size=3, is_signed=True)
        for _, block in _blocks(SHAPE, {"block_size": 3}):
            alone = QuantizedArray(n_bits, values[block], is_signed=True)
            numpy.testing.assert_array_equal(array.qvalues[block], alone.qvalues)


def test_narrow_range_clips_each_block_with_its_own_offset() -> None:
    values = _values()
    options = QuantizationOptions(8, is_signed=True)
    options.is_narrow = True
    array = QuantizedArray(8, values, options=options, axis=0)
    for _, block in _blocks(SHAPE, {"axis": 0}):
        alone = QuantizedArray(8, values[block], options=options)
        numpy.testing.assert_array_equal(array.qvalues[block], alone.qvalues)


def test_output_dtype_check_uses_the_union_of_the_blocks_ranges() -> None:
    varied = _values()[1:]  # no constant block: every block is signed, [-128, 127]
    quantizer = QuantizedArray(8, varied, axis=0, is_signed=True).quantizer
    numpy.testing.assert_array_equal(quantizer.quant(varied, dtype=numpy.int8), quantizer.quant(varied))
    with_constant = QuantizedArray(8, _values(), axis=0, is_signed=True).quantizer  # one block: [0, 255]
    with pytest.raises(ValueError, match="dtype int8 cannot hold the clipped range"):
        with_constant.quant(_values(), dtype=numpy.int8)
    numpy.testing.assert_array_equal(with_constant.quant(_values(), dtype=numpy.int16), with_constant.quant(_values()))


def test_a_quantizer_applies_only_to_arrays_with_the_same_grid() -> None:
    quantizer = QuantizedArray(8, _values(), axis=0).quantizer
    quantizer.quant(_values(seed=3))  # another array of the same shape: fine
    quantizer.quant(_values((6, 3, 2)))  # per channel along axis 0: any other lengths work
    with pytest.raises(ValueError, match="parameter grid"):
        quantizer.quant(_values((5, 10, 7)))
    with pytest.raises(ValueError, match="parameter grid"):
        quantizer.dequant(numpy.zeros((5, 10, 7), dtype=numpy.int64))


def test_nan_under_omit_maps_to_each_blocks_integer_of_zero(xb: Any) -> None:
    values = _values()
    values[2, 3, 4] = values[5, 0, 0] = numpy.nan
    array = QuantizedArray(8, xb.asarray(values), axis=0, nan_policy="omit", is_signed=True)
    qvalues = to_numpy(array.qvalues)
    for _, block in _blocks(SHAPE, {"axis": 0}):
        finite = values[block][numpy.isfinite(values[block])]
        alone = QuantizedArray(8, finite, is_signed=True).quantizer
        expected = alone.quant(numpy.where(numpy.isnan(values[block]), 0.0, values[block]))
        numpy.testing.assert_array_equal(qvalues[block], expected)


def test_non_finite_values_are_refused_per_block(xb: Any) -> None:
    values = _values()
    values[3, 1, 1] = numpy.inf
    with pytest.raises(ValueError, match="non-finite|NaN"):
        QuantizedArray(8, xb.asarray(values), block_size=4)


def test_streaming_per_channel_equals_one_call(xb: Any) -> None:
    rng = numpy.random.default_rng(5)
    batches = [rng.standard_normal((n, 5, 3)) * (1 + n) for n in (4, 1, 7)]
    stats = MinMaxQuantizationStats()
    for batch in batches:
        stats.update(xb.asarray(batch), axis=(1, 2))
    whole = MinMaxQuantizationStats()
    whole.compute_quantization_stats(numpy.concatenate(batches), axis=(1, 2), with_uvalues=False)
    assert_same_bits(to_numpy(stats.rmin), to_numpy(whole.rmin))
    assert_same_bits(to_numpy(stats.rmax), to_numpy(whole.rmax))
    quantizer = qarray.calibrate((xb.asarray(batch) for batch in batches), n_bits=8, axis=(1, 2))
    reference = QuantizedArray(8, numpy.concatenate(batches), axis=(1, 2)).quantizer
    assert_same_bits(to_numpy(quantizer.scale), to_numpy(reference.scale))
    numpy.testing.assert_array_equal(to_numpy(quantizer.zero_point), to_numpy(reference.zero_point))


def test_merging_per_block_statistics_is_elementwise() -> None:
    first, second = MinMaxQuantizationStats(), MinMaxQuantizationStats()
    a, b = _values(seed=1), _values(seed=2)
    first.update(a, block_size=4)
    second.update(b, block_size=4)
    whole = MinMaxQuantizationStats()
    whole.update(a, block_size=4)
    whole.update(b, block_size=4)
    merged = first.merge(second)
    assert merged == whole
    assert second.merge(first) == whole


def test_batches_with_other_blocks_are_refused() -> None:
    stats = MinMaxQuantizationStats()
    stats.update(_values(), block_size=4)
    with pytest.raises(ValueError, match="same shape|blocks"):
        stats.update(_values((6, 10, 8)), block_size=4)
    with pytest.raises(ValueError, match="granularity|per block"):
        stats.update(_values())
    per_channel = MinMaxQuantizationStats()
    per_channel.update(_values(), axis=1)
    with pytest.raises(ValueError, match="parameter grid"):
        per_channel.update(_values((6, 9, 7)), axis=1)
    with pytest.raises(ValueError, match="per tensor"):
        tensor = MinMaxQuantizationStats()
        tensor.update(_values())
        tensor.update(_values(), axis=0)


@pytest.mark.parametrize("granularity", list(GRANULARITIES))
def test_documents_keep_per_block_parameters_exactly(granularity: str) -> None:
    array = QuantizedArray(8, _values(), **GRANULARITIES[granularity], is_signed=True)
    document = json.loads(array.dumps())
    assert document["format_version"] == qarray.FORMAT_VERSION
    loaded = qarray.loads(array.dumps())
    assert loaded == array
    assert loaded.quantizer.options.axis == array.quantizer.options.axis
    assert loaded.quantizer.options.block_size == array.quantizer.options.block_size
    numpy.testing.assert_array_equal(loaded.quantizer.quant(_values()), array.qvalues)


def test_documents_place_per_block_parameters_with_the_backend(xb: Any) -> None:
    if xb.name in ("array_api_strict", "dask"):
        pytest.skip("documents are placed with registered backends by name (numpy, torch, cupy)")
    array = QuantizedArray(8, _values(), axis=0)
    loaded = qarray.loads(array.dumps(), backend=xb.name)
    assert type(loaded.quantizer.scale) is type(loaded.qvalues)
    numpy.testing.assert_array_equal(to_numpy(loaded.dequant()), array.dequant())


def test_version_1_documents_still_load() -> None:
    document = {
        "type": "QuantizationOptions",
        "format_version": 1,
        "n_bits": 8,
        "is_signed": True,
        "is_symmetric": False,
        "is_qat": False,
        "is_narrow": False,
        "is_precomputed_qat": False,
    }
    options = qarray.loads(json.dumps(document))
    assert options == QuantizationOptions(8, is_signed=True)
    assert options.axis is None and options.block_size is None
    with pytest.raises(ValueError, match="unexpected field"):
        qarray.loads(json.dumps({**document, "axis": 0}))  # version 1 had no granularity


def test_qat_scale_inference_per_block_is_refused_and_precomputed_qat_works() -> None:
    with pytest.raises(ValueError, match="not supported"):
        QuantizedArray(4, _values(), axis=0, is_qat=True)
    options = QuantizationOptions(4, is_qat=True)
    options.is_precomputed_qat = True
    scale = numpy.full((6, 1, 1), 0.25)
    zeros = numpy.zeros((6, 1, 1), dtype=numpy.int64)
    array = QuantizedArray(4, _values(), options=options, axis=0, scale=scale, zero_point=zeros, offset=zeros.copy())
    numpy.testing.assert_array_equal(array.qvalues, numpy.clip(numpy.rint(_values() / 0.25), 0, 15).astype(numpy.int64))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"axis": 3}, "axis 3 is out of range"),
        ({"axis": 0, "block_size": 4}, "exclusive"),
        ({"block_size": 0}, "block_size must be >= 1"),
        ({"block_size": (2, 2)}, "one entry per axis"),
    ],
)
def test_bad_granularity_is_refused_naming_the_argument(kwargs: Dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        QuantizedArray(8, _values(), **kwargs)


def test_zero_d_values_with_a_granularity_are_refused() -> None:
    with pytest.raises(ValueError, match="0-d"):
        QuantizedArray(8, numpy.array(1.5), axis=0)


def test_histogram_methods_per_block_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="per tensor only"):
        QuantizedArray(8, _values(), axis=0, method="percentile")
    with pytest.raises(ValueError, match="per tensor only"):
        qarray.calibrate([_values()], n_bits=8, block_size=4, method="mse")


def test_pickled_per_block_arrays_come_back_equal(xb: Any) -> None:
    import pickle

    array = QuantizedArray(8, xb.asarray(_values()), block_size=4)
    again = pickle.loads(pickle.dumps(array))
    assert again == array
    numpy.testing.assert_array_equal(to_numpy(again.dequant()), to_numpy(array.dequant()))


# -- the fused kernels against the generic path ----------------------------------------------

FUSED_GRANULARITIES = {
    "group-128": (256, 1000),
    "group-37": (300, 111),
    "axis-0": (700, 97),
    "axis-1": (97, 700),
}


def _generic_numpy() -> Any:
    import array_api_compat

    from qarray.backends import ArrayAPIBackend

    return ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("in_dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(FUSED_GRANULARITIES))
def test_fused_grid_kernels_match_the_generic_path(monkeypatch: Any, case: str, in_dtype: str, fast_path: bool) -> None:
    """Large arrays take the compiled grid kernel (and the NumPy tiles without Numba): both give
    the generic path's integers and counts, with and without the float32 candidate."""
    from qarray.backends import backend_for, numba_kernels

    shape = FUSED_GRANULARITIES[case]
    granularity = {"block_size": int(case.split("-")[1])} if case.startswith("group") else {"axis": int(case[-1])}
    values = _values(shape, dtype=in_dtype, seed=7)
    quantizer = QuantizedArray(4, values, is_signed=True, **granularity).quantizer
    monkeypatch.setattr(numba_kernels, "FAST_PATH", fast_path)
    generic = _generic_numpy()
    for dtype, no_clipping in (("int8", False), ("int64", False), ("int16", True)):
        quantizer.no_clipping = no_clipping
        spec = quantizer._quant_spec(values, backend_for(values), dtype)
        with numpy.errstate(invalid="ignore"):  # the generic path casts out-of-range values
            expected, expected_problems = generic.quantize(values, spec)
        fused = quantizer.quant(values, dtype=dtype)
        numpy.testing.assert_array_equal(fused, expected, strict=True)
        monkeypatch.setenv("QARRAY_DISABLE_NUMBA", "1")
        numpy.testing.assert_array_equal(quantizer.quant(values, dtype=dtype), expected, strict=True)
        monkeypatch.delenv("QARRAY_DISABLE_NUMBA")
        back = quantizer.dequant(fused, dtype=numpy.float32)
        assert_same_bits(back, generic.dequantize(fused, spec, dtype="float32"))
        assert expected_problems is not None
        _, problems = backend_for(values).quantize(values, spec)
        assert problems is not None
        assert problems.read() == expected_problems.read()
    quantizer.no_clipping = False


def test_fused_grid_kernel_counts_non_finite_and_outside_values() -> None:
    from qarray.backends import backend_for
    from qarray.backends.spec import QuantSpec

    values = _values((256, 1000), seed=9)
    quantizer = QuantizedArray(8, values, block_size=128).quantizer
    values[[3, 100, 200], [5, 500, 999]] = [numpy.nan, numpy.inf, -numpy.inf]
    spec = quantizer._quant_spec(values, backend_for(values), "int64")
    generic = _generic_numpy()
    for check in (spec, QuantSpec(spec.scale, spec.zero_point, -5.0, 5.0, False, "int64", spec.extent)):
        _, problems = backend_for(values).quantize(values, check)
        _, expected = generic.quantize(values, check)
        assert problems is not None and expected is not None
        assert problems.read() == expected.read()
        assert problems.read()[0] == 3
