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
