"""What an ``out=`` buffer holds after ``quant`` refused the data, on every backend.

The integers a kernel writes for values it then refuses (NaN, or rounded values
outside the output dtype when nothing clips) differ between paths and CPUs (one
saturates, another wraps). The contract is the same everywhere: the refused call
leaves zeros in ``out``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import numpy
import pytest

from qarray import QuantizedArray, UniformQuantizer
from qarray.core.namespace import to_numpy


def _unclipped_quantizer() -> UniformQuantizer:
    quantizer = QuantizedArray(8, numpy.linspace(-1.0, 1.0, 11)).quantizer
    quantizer.no_clipping = True
    return quantizer


def _buffer(xb: Any, size: int, dtype: Any) -> Any:
    if xb.name == "dask":
        pytest.skip("Dask arrays are immutable: quant refuses out= there")
    return xb.asarray(numpy.full(size, 7, dtype=dtype))


def test_out_holds_zeros_after_integers_that_do_not_fit(xb: Any) -> None:
    quantizer = _unclipped_quantizer()
    values = numpy.linspace(-400.0, 400.0, 1000)  # far beyond int8 once divided by the scale
    out = _buffer(xb, values.size, numpy.int8)
    with pytest.raises(ValueError, match="do not fit dtype int8"):
        quantizer.quant(xb.asarray(values), dtype=numpy.int8, out=out)
    numpy.testing.assert_array_equal(to_numpy(out), numpy.zeros(values.size, dtype=numpy.int8))


def test_out_holds_zeros_after_non_finite_values(xb: Any) -> None:
    quantizer = QuantizedArray(8, numpy.linspace(-1.0, 1.0, 11)).quantizer
    values = numpy.linspace(-1.0, 1.0, 1000)
    values[[3, 500]] = [numpy.nan, numpy.inf]
    out = _buffer(xb, values.size, numpy.uint8)
    with pytest.raises(ValueError, match="non-finite"):
        quantizer.quant(xb.asarray(values), dtype=numpy.uint8, out=out)
    numpy.testing.assert_array_equal(to_numpy(out), numpy.zeros(values.size, dtype=numpy.uint8))


def test_out_is_untouched_when_an_argument_is_refused() -> None:
    quantizer = QuantizedArray(8, numpy.linspace(-1.0, 1.0, 11)).quantizer
    out = numpy.full(5, 7, dtype=numpy.int8)
    with pytest.raises(ValueError, match="cannot hold the clipped range"):
        quantizer.quant(numpy.zeros(5), dtype=numpy.int8, out=out)
    numpy.testing.assert_array_equal(out, numpy.full(5, 7, dtype=numpy.int8))


_KERNELS_ON_A_GENERIC_CPU = textwrap.dedent(
    """
    import numpy
    from qarray.backends import ArrayAPIBackend, NumpyBackend, numba_kernels
    from qarray.backends.spec import QuantSpec
    import array_api_compat

    assert numba_kernels.available()
    generic = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))
    fused = NumpyBackend()
    rng = numpy.random.default_rng(5)
    for dtype in ("float32", "float64"):
        values = (rng.standard_normal(300_003) * 50.0).astype(dtype)
        values[::7] = (numpy.arange(values[::7].size) % 97 - 48 + 0.5).astype(dtype)  # ties
        for clip, out_dtype, fit in (((0, 255), "uint8", None), ((-128, 127), "int8", None),
                                     (None, "int16", (-32768.0, 32767.0)), (None, "int64", None)):
            for scale, zero_point in ((0.37, 3.0), (0.01, 0.0), (0.5, -7.0)):
                bounds = clip or fit or (None, None)
                spec = QuantSpec(scale, zero_point, bounds[0], bounds[1], clip is not None, out_dtype)
                mine, my_problems = fused.quantize(values, spec)
                theirs, their_problems = generic.quantize(values, spec)
                rounded = numpy.rint(values.astype(numpy.float64) / scale + zero_point)
                inside = numpy.ones(values.shape, bool) if fit is None else (rounded >= fit[0]) & (rounded <= fit[1])
                numpy.testing.assert_array_equal(mine[inside], theirs[inside], strict=True)
                numpy.testing.assert_array_equal(my_problems.counts, their_problems.counts)
        back = fused.dequantize(numpy.rint(values).astype(numpy.int64), QuantSpec(0.37, 3.0), dtype=dtype)
        want = generic.dequantize(numpy.rint(values).astype(numpy.int64), QuantSpec(0.37, 3.0), dtype=dtype)
        numpy.testing.assert_array_equal(back.view(f"u{back.itemsize}"), want.view(f"u{want.itemsize}"))
    print("kernels agree")
    """
)


def test_numba_kernels_agree_with_generic_on_a_cpu_without_avx512() -> None:
    """The fused kernels compiled for a baseline x86-64 CPU (no AVX2, no AVX-512) give the
    specified integers too; CI machines differ in their vector extensions."""
    pytest.importorskip("numba")
    environment = dict(os.environ, NUMBA_CPU_NAME="generic", NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", ""))
    if not environment["NUMBA_CACHE_DIR"]:
        environment.pop("NUMBA_CACHE_DIR")
    result = subprocess.run(
        [sys.executable, "-c", _KERNELS_ON_A_GENERIC_CPU],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kernels agree" in result.stdout
