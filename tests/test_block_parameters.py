"""Per-block parameters set by hand: a scale per channel with one zero point and offset for all.

Imported per-channel weights (symmetric int8: zero point 0, offset 128) give a scale per
channel and scalars for the rest. A number broadcasts against the grid: quant, dequant,
documents and the consistency checks accept it and give what each channel's own
per-tensor parameters give.
"""

from __future__ import annotations

from typing import Any

import numpy
import pytest

import qarray
from qarray import QuantizationOptions, QuantizedArray, UniformQuantizationParameters, UniformQuantizer
from qarray.core.namespace import to_numpy

SCALES = numpy.array([[0.1], [0.25], [0.03]])


def test_dequant_with_a_scalar_zero_point_and_offset(xb: Any) -> None:
    q = numpy.array([[-3, 5, 127], [0, -128, 7], [1, 2, 3]], dtype=numpy.int8)
    qa = QuantizedArray(
        8, xb.asarray(q), value_is_float=False, scale=SCALES, zero_point=0, offset=128, is_signed=True, axis=0
    )
    numpy.testing.assert_array_equal(to_numpy(qa.values), SCALES * q.astype(numpy.float64))
    loaded = qarray.loads(qa.dumps())
    numpy.testing.assert_array_equal(to_numpy(loaded.values), to_numpy(qa.values))


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_quant_with_a_scalar_zero_point_equals_each_channels_own_quant(xb: Any, dtype: str) -> None:
    values = numpy.random.default_rng(2).normal(size=(3, 40)) * numpy.array([[3.0], [20.0], [1.0]])
    options = QuantizationOptions(8, is_signed=True, is_symmetric=True, axis=0)
    per_channel = UniformQuantizer(options, params=UniformQuantizationParameters(SCALES, 0, 128))
    got = to_numpy(per_channel.quant(xb.asarray(values), dtype=dtype))
    for row, scale in enumerate(SCALES[:, 0]):
        own = UniformQuantizer(
            QuantizationOptions(8, is_signed=True, is_symmetric=True),
            params=UniformQuantizationParameters(float(scale), 0, 128),
        )
        numpy.testing.assert_array_equal(got[row], own.quant(values[row], dtype=dtype))


def _refusal(call: Any) -> str:
    with pytest.raises(ValueError) as error:
        call()
    return str(error.value)


@pytest.mark.parametrize("operation", ["quant", "dequant"])
@pytest.mark.parametrize(
    "argument, shape",
    [("zero_point", (2, 1)), ("zero_point", (1, 3)), ("zero_point", (3,)), ("offset", (2, 1)), ("offset", (1, 3))],
)
def test_a_parameter_grid_of_another_shape_is_refused_alike_on_every_backend(
    xb: Any, operation: str, argument: str, shape: tuple
) -> None:
    """Every parameter array must have the values' grid (3, 1), as the scale must: a zero point
    or offset of another shape is refused with one message naming it, never broadcast, cut to
    its first entry or left to the library's own broadcasting error."""
    fields = {"scale": SCALES, "zero_point": 0, "offset": 0}
    fields[argument] = numpy.full(shape, 1 if argument == "zero_point" else 0, dtype=numpy.int64)
    quantizer = UniformQuantizer(QuantizationOptions(8, axis=0), params=UniformQuantizationParameters(**fields))
    host = numpy.linspace(-1.0, 1.0, 12).reshape(3, 4)
    if operation == "dequant":
        host = numpy.arange(12, dtype=numpy.int64).reshape(3, 4)
    message = _refusal(lambda: getattr(quantizer, operation)(xb.asarray(host)))
    named = "values" if operation == "quant" else "qvalues"
    assert message.startswith(f"{named} of shape (3, 4) with axis=0, block_size=None give the parameter grid (3, 1)")
    assert f"but {argument} is an array of shape {shape}: it must be one number or an array of that grid" in message
    assert message == _refusal(lambda: getattr(quantizer, operation)(host))  # NumPy's own message


@pytest.mark.parametrize("operation", ["quant", "dequant"])
def test_an_offset_grid_with_one_scale_is_refused(operation: str) -> None:
    params = UniformQuantizationParameters(0.1, 0, numpy.zeros((3, 1), dtype=numpy.int64))
    quantizer = UniformQuantizer(QuantizationOptions(8, axis=0), params=params)
    host = numpy.zeros((3, 4)) if operation == "quant" else numpy.zeros((3, 4), dtype=numpy.int64)
    with pytest.raises(ValueError, match=r"offset is an array of shape \(3, 1\) .* but scale is one number"):
        getattr(quantizer, operation)(host)
