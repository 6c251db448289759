"""Quantization primitives: plain functions under the classes, in the shape of torchao's.

- :func:`block_extent`, :func:`block_minmax`: the blocks of a granularity and their ranges;
- :func:`choose_parameters`: scale, zero point and offset from ranges, per tensor
  (host numbers) or per block (arrays of the parameter grid, computed on the
  values' device with the same float64 operations, so the numbers are equal);
- :func:`quantize`, :func:`dequantize`: apply a :class:`QuantSpec` with the
  backend's fused kernels.

Each function resolves the backend once, at its top, and the classes
(:class:`~qarray.UniformQuantizer`, :class:`~qarray.QuantizedArray`) are thin
façades over them.

Example:
    >>> import numpy
    >>> from qarray import QuantizationOptions
    >>> w = numpy.array([[0.0, 1.0, 2.0, 3.0], [-4.0, 0.0, 4.0, 8.0]])
    >>> extent, grid = block_extent(w.shape, axis=0)
    >>> rmin, rmax = block_minmax(w, extent)
    >>> scale, zero_point, offset = choose_parameters(rmin, rmax, QuantizationOptions(8))
    >>> scale.ravel().tolist(), zero_point.ravel().tolist()
    ([0.011764705882352941, 0.047058823529411764], [0, 85])
"""

from __future__ import annotations

import math
from typing import Any, Callable, FrozenSet, Optional, Tuple

import numpy

from .backends import backend_for
from .backends.spec import QuantSpec, check_extent
from .core.checks import check_bool, check_broadcastable, check_finite_real, check_int, describe
from .core.dtypes import INTEGER_RANGES, clip_range, exact_float_bounds, integer_dtype_range
from .core.granularity import block_extent, check_parameter_grids, expand_to_values, grid_shape, is_grid
from .core.namespace import array_namespace, as_array, is_array, to_numpy
from .core.profiles import ARITHMETIC, check_profile
from .core.rule import (
    ZERO_POINT_LIMIT,
    BlockCheck,
    check_combination,
    check_option_fields,
    check_scale,
    check_zero_point,
    parameter_rule,
    tensor_parameters,
)

__all__ = [
    "BlockCheck",
    "block_extent",
    "block_minmax",
    "minmax",
    "choose_block_parameters",
    "choose_parameters",
    "count_nonfinite",
    "dequant_spec",
    "dequantize",
    "quant_spec",
    "quantize",
    "unique_rounded",
]

def minmax(values: Any, *, omit_nonfinite: bool = False, backend: Any = None) -> Tuple[Any, Any]:
    """Return ``(min, max)`` of ``values`` as 0-d arrays of its library and device (nothing read back).

    NaN propagates unless ``omit_nonfinite``; with it NaN and ±Inf are left out (and
    nothing left gives +Inf, -Inf). One fused pass on NumPy/Numba and CuPy. A zero
    bound is ``+0.0``, whatever the signs of the zeros in ``values`` (see
    :func:`block_minmax`).

    Args:
        values: a non-empty real array of any Array API library.
        omit_nonfinite: leave NaN and ±Inf out.
        backend: the backend to use (the one of ``values`` by default).

    Returns:
        ``(min, max)`` as two 0-d arrays of ``values``' library, dtype and device.

    Raises:
        TypeError: if ``values`` is not an array of real numbers, or ``omit_nonfinite``
            is not a bool.
        ValueError: if ``values`` is empty.

    Example:
        >>> import numpy
        >>> [float(bound) for bound in minmax(numpy.array([2.0, -1.0, 5.0]))]
        [-1.0, 5.0]
    """
    values = _real_array(values, "values", allow_empty=False)
    backend = backend or backend_for(values)
    return _plus_zero(*backend.minmax(values, check_bool(omit_nonfinite, "omit_nonfinite")))


def unique_rounded(values: Any, *, omit_nonfinite: bool = False, backend: Any = None) -> Any:
    """Return the sorted unique values of ``values`` rounded to 2 decimals (QAT scale inference).

    Args:
        values: a real array of any Array API library.
        omit_nonfinite: leave NaN and ±Inf out.
        backend: the backend to use (the one of ``values`` by default).

    Returns:
        A 1-d float64 array of ``values``' library (see :meth:`ArrayAPIBackend.unique_rounded
        <qarray.backends.ArrayAPIBackend.unique_rounded>` for the rounding).

    Raises:
        TypeError: if ``values`` is not an array of real numbers, or ``omit_nonfinite``
            is not a bool.

    Example:
        >>> import numpy
        >>> unique_rounded(numpy.array([0.504, 0.5, 0.25])).tolist()
        [0.25, 0.5]
    """
    values = _real_array(values, "values")
    backend = backend or backend_for(values)
    return backend.unique_rounded(values, omit_nonfinite=check_bool(omit_nonfinite, "omit_nonfinite"))


def count_nonfinite(values: Any, *, backend: Any = None) -> int:
    """Return how many NaN and ±Inf ``values`` holds (one read-back: an error path).

    Args:
        values: a real array of any Array API library.
        backend: the backend to use (the one of ``values`` by default).

    Returns:
        The count, read back to the host.

    Raises:
        TypeError: if ``values`` is not an array of an Array API library (and no
            ``backend`` is given).
    """
    backend = backend or backend_for(values)
    return int(backend.to_numpy(backend.count_nonfinite(values)))


def block_minmax(
    values: Any, extent: Tuple[int, ...], *, omit_nonfinite: bool = False, backend: Any = None
) -> Tuple[Any, Any]:
    """Return the min and max of every block of ``values`` (arrays of the parameter grid).

    One pass of the backend's kernel (fused on NumPy/Numba and CuPy; the generic Array API
    path is the reference); nothing is read back.

    Args:
        values: a real array of any Array API library.
        extent: the block extent per axis (:func:`block_extent`).
        omit_nonfinite: leave NaN and ±Inf out (a block without finite values then
            has min +Inf and max -Inf); by default they propagate into their block.
        backend: the backend to use (the one of ``values`` by default).

    A zero min or max is ``+0.0``: the kernels may return either zero when ``-0.0``
    and ``0.0`` occur (they compare equal), and statistics, hence documents, must
    not depend on which library computed them.

    Returns:
        ``(min, max)`` as two arrays of the parameter grid's shape, of ``values``' library,
        dtype and device.

    Raises:
        TypeError: if ``values`` is not an array of real numbers, or ``omit_nonfinite``
            is not a bool.
        TypeError, ValueError: if ``extent`` is not one int >= 1 per axis of ``values``.

    Example:
        >>> import numpy
        >>> block_minmax(numpy.array([[1.0, 5.0], [2.0, -3.0]]), (1, 2))[0].tolist()
        [[1.0], [-3.0]]
    """
    values = _real_array(values, "values")
    extent = check_extent(extent, tuple(values.shape))
    backend = backend or backend_for(values)
    return _plus_zero(*backend.minmax(values, check_bool(omit_nonfinite, "omit_nonfinite"), extent=extent))


def _plus_zero(low: Any, high: Any) -> Tuple[Any, Any]:
    """``(low, high)`` with every ``-0.0`` made ``+0.0``, elementwise on their device.

    The one place where the sign of a zero range is decided, for every backend: IEEE
    addition gives ``-0.0 + 0.0 == +0.0`` and leaves every other value (NaN and ±Inf
    included) as it is, in its dtype.
    """
    return low + 0.0, high + 0.0


def choose_parameters(
    rmin: Any, rmax: Any, options: Any, *, previous_scale: Any = None
) -> Tuple[Any, Any, Any]:
    """Return ``(scale, zero_point, offset)`` for ranges ``[rmin, rmax]`` under ``options``.

    With host numbers, this is :func:`qarray.params.choose_parameters`' rule. With
    arrays (one range per block), every entry gets exactly what that rule gives for
    its block alone (the single-value rule included, so ``offset`` is per block),
    computed elementwise on the arrays' device with the same float64 operations:
    ``scale`` float64, ``zero_point`` and ``offset`` int64, all of the ranges' shape.

    Args:
        rmin, rmax: numbers, or real arrays of one shape (float64 is used throughout).
        options: the :class:`~qarray.QuantizationOptions`.
        previous_scale: with ``options.is_precomputed_qat``, the scale(s) to keep.

    Returns:
        ``(scale, zero_point, offset)`` as host numbers for host-number ranges, else as arrays
        of the ranges' shape on their device.

    Raises:
        TypeError: if ``rmin`` or ``rmax`` is not a real number or array.
        ValueError: if a range is not finite, has rmin > rmax, is wider than float64
            holds (asymmetric), or gives a zero point beyond int64; and for QAT scale
            inference from unique values, which needs one tensor's values (not supported
            per block). Checking arrays reads one count back from their device (this
            function always checks at once; see :func:`choose_block_parameters`).
    """
    if not is_array(rmin) and not is_array(rmax):
        check_combination(options)
        kept = previous_scale if options.is_precomputed_qat else None
        low, high = check_finite_real(rmin, "rmin"), check_finite_real(rmax, "rmax")
        return tensor_parameters(low, high, options, previous_scale=kept)
    scale, zero_point, offset, check = choose_block_parameters(rmin, rmax, options, previous_scale=previous_scale)
    check.read()
    return scale, zero_point, offset


def choose_block_parameters(
    rmin: Any, rmax: Any, options: Any, *, previous_scale: Any = None
) -> Tuple[Any, Any, Any, BlockCheck]:
    """:func:`choose_parameters` for arrays of ranges, with the check of the blocks.

    Returns ``(scale, zero_point, offset, check)``. Where reading back is free (host
    arrays) the check is read at once, so a bad block raises here; on a device whose
    reads synchronise (a GPU), nothing is read back: ``check.read()`` raises later, when
    first called (see :class:`BlockCheck`).

    Args:
        rmin, rmax: real arrays of one shape, the blocks' ranges.
        options: the :class:`~qarray.QuantizationOptions`.
        previous_scale: with ``options.is_precomputed_qat``, the scale grid to keep
            (of the ranges' shape).

    Returns:
        ``(scale, zero_point, offset, check)``, the first three arrays of the ranges' shape
        on their device, and the :class:`BlockCheck` of the blocks.

    Raises:
        TypeError: if ``rmin`` or ``rmax`` is not an array.
        ValueError: as :func:`choose_parameters` (at once on the host), and if ``rmin``,
            ``rmax`` (and a ``previous_scale`` array) differ in shape.
    """
    check_combination(options)
    rmin, rmax = as_array(rmin, "rmin"), as_array(rmax, "rmax")
    _check_range_grids(rmin, rmax, previous_scale)
    scale, zero_point, offset, check = parameter_rule(rmin, rmax, options, previous_scale=previous_scale)
    if not backend_for(scale).defers_reads:
        check.read()
    return scale, zero_point, offset, check


def quant_spec(
    scale: Any,
    zero_point: Any,
    offset: Any,
    options: Any,
    out_dtype: str,
    *,
    like: Any,
    backend: Any = None,
    no_clipping: bool = False,
    extent: Optional[Tuple[int, ...]] = None,
    offsets: Optional[FrozenSet[int]] = None,
    read_offsets: Optional[Callable[[], FrozenSet[int]]] = None,
) -> QuantSpec:
    """Return the :class:`~qarray.backends.spec.QuantSpec` quantizing ``like`` into ``out_dtype``.

    The one place a quantization spec is built from parameters and options. Clipping
    follows the options (none with ``no_clipping``, nor for QAT with inferred
    parameters: then the results must fit ``out_dtype``); the clipping range is
    ``[-offset + narrow, 2**n_bits - 1 - offset]``, per block with per-block parameters
    (``extent`` given), whose grids are placed in ``like``'s library and on its device.

    Args:
        scale, zero_point, offset: the parameters (host numbers, or grids with ``extent``).
        options: the option fields (``n_bits``, ``is_narrow``, ``is_signed``, ``is_qat``,
            ``is_precomputed_qat``).
        out_dtype: the name of the integer dtype to write.
        like: the values to quantize (their library, device and shape).
        backend: their backend (found from ``like`` by default).
        no_clipping: never clip.
        extent: the block extent of per-block parameters; None per tensor.
        offsets: per block, the offsets that occur when known without reading anything
            back (one offset for all blocks gives host bounds).
        read_offsets: per block, how to learn them when they are needed (the widest
            union of the blocks' ranges does not fit ``out_dtype``); by default the
            offset grid is read back.

    Returns:
        The spec, ready for :func:`quantize`.

    Raises:
        TypeError: if ``out_dtype`` is not the name of an integer dtype, or an option
            field, ``no_clipping`` or a parameter has the wrong type.
        ValueError: if ``out_dtype`` cannot hold the clipped range, or a per-tensor zero
            point array does not broadcast to ``like``, or per-block parameters do not
            match the grid ``extent`` gives.

    Example:
        >>> import numpy
        >>> from qarray import QuantizationOptions
        >>> spec = quant_spec(0.5, 3, 0, QuantizationOptions(8), "uint8", like=numpy.zeros(2))
        >>> spec.low, spec.high, spec.saturate
        (0, 255, True)
    """
    check_option_fields(options, ("n_bits", "is_signed", "is_narrow", "is_qat", "is_precomputed_qat"))
    if not isinstance(out_dtype, str) or out_dtype not in INTEGER_RANGES:
        names = ", ".join(INTEGER_RANGES)
        raise TypeError(f"out_dtype must be the name of an integer dtype ({names}), got {describe(out_dtype)}")
    backend = backend or backend_for(like)
    arithmetic = ARITHMETIC[check_profile(getattr(options, "profile", "concrete"), "options.profile")]
    clips = not (check_bool(no_clipping, "no_clipping") or (options.is_qat and not options.is_precomputed_qat))
    low, high = integer_dtype_range(out_dtype)
    n_bits, narrow = options.n_bits, bool(options.is_narrow)
    if extent is None:
        scale, zero_point = _tensor_parameters(scale, zero_point, offset=offset)
        offset = check_int(offset, "offset")
        clip = clip_range(n_bits, offset, narrow) if clips else None
        if clip is not None and (clip[0] < low or clip[1] > high):
            raise ValueError(
                f"dtype {out_dtype} cannot hold the clipped range [{clip[0]}, {clip[1]}] of "
                f"n_bits={n_bits}; use a wider integer dtype"
            )
        zero = backend.parameter(check_broadcastable(zero_point, like), like)
        return QuantSpec.per_tensor(scale, zero, clip, out_dtype, arithmetic)
    extent, grid = _blocks(extent, like, "values", scale=scale, zero_point=zero_point, offset=offset)
    place = _placer(backend, like, grid)
    if not is_grid(offset):  # one offset shared by every block
        offsets = frozenset({int(offset)})
    if not clips:
        bounds: Tuple[Any, Any] = exact_float_bounds(out_dtype)
        return QuantSpec(place(scale), place(zero_point), bounds[0], bounds[1], False, out_dtype, extent, arithmetic)
    # Offsets are 0 (unsigned, or a single-value block) or 2**(n - 1) (signed): the blocks'
    # ranges lie in the widest union below. When that does not fit the dtype, the actual
    # union comes from the offsets that occur.
    widest = clip_range(n_bits, 2 ** (n_bits - 1) if options.is_signed else 0, narrow)
    widest = (widest[0], 2**n_bits - 1)
    present = offsets
    if widest[0] < low or widest[1] > high:
        if present is None and read_offsets is not None:
            present = read_offsets()
        if present is None:  # set by hand without a record: read the grid (small)
            present = frozenset(int(entry) for entry in numpy.unique(to_numpy(offset)))
        union = (clip_range(n_bits, max(present), narrow)[0], clip_range(n_bits, min(present), narrow)[1])
        if union[0] < low or union[1] > high:
            raise ValueError(
                f"dtype {out_dtype} cannot hold the clipped range [{union[0]}, {union[1]}] of "
                f"the blocks at n_bits={n_bits}; use a wider integer dtype"
            )
    if present is not None and len(present) == 1:  # one offset for every block: host bounds
        bounds = clip_range(n_bits, next(iter(present)), narrow)
    else:
        bounds = clip_range(n_bits, place(offset), narrow)
    return QuantSpec(place(scale), place(zero_point), bounds[0], bounds[1], True, out_dtype, extent, arithmetic)


def dequant_spec(
    scale: Any,
    zero_point: Any,
    *,
    like: Any,
    backend: Any = None,
    extent: Optional[Tuple[int, ...]] = None,
    profile: str = "concrete",
) -> QuantSpec:
    """Return the :class:`~qarray.backends.spec.QuantSpec` de-quantizing ``like``.

    Per-block grids (``extent`` given) are placed in ``like``'s library and on its device.
    With a runtime ``profile`` (``"onnx"``, ``"torch"``) the kernels compute in float32.

    Args:
        scale: the scale (a host number, or a grid with ``extent``).
        zero_point: the zero point (a host number or array, or a grid with ``extent``).
        like: the integers to de-quantize (their library, device and shape).
        backend: their backend (found from ``like`` by default).
        extent: the block extent of per-block parameters; None per tensor.
        profile: ``"concrete"`` (float64 arithmetic) or a runtime's, ``"onnx"`` or ``"torch"``.

    Returns:
        The spec, ready for :func:`dequantize`.

    Raises:
        TypeError: if ``profile`` is not a string, or a parameter has the wrong type.
        ValueError: if a per-tensor zero point array does not broadcast to ``like``, or
            ``profile`` is unknown, or per-block parameters do not match the grid
            ``extent`` gives.
    """
    backend = backend or backend_for(like)
    arithmetic = ARITHMETIC[check_profile(profile)]
    if extent is None:
        scale, zero_point = _tensor_parameters(scale, zero_point)
        zero = backend.parameter(check_broadcastable(zero_point, like), like)
        return QuantSpec(float(scale), zero, arithmetic=arithmetic)
    extent, grid = _blocks(extent, like, "qvalues", scale=scale, zero_point=zero_point)
    place = _placer(backend, like, grid)
    return QuantSpec(place(scale), place(zero_point), extent=extent, arithmetic=arithmetic)


def _tensor_parameters(scale: Any, zero_point: Any, **others: Any) -> Tuple[Any, Any]:
    """Check the parameters of a per-tensor spec (no ``extent``): a finite non-zero scale, an
    integral zero point (a number, or an array that broadcasts to the values), no grid."""
    if _plain_parameters(scale, zero_point, *others.values()):
        return scale, zero_point
    for argument, parameter in {"scale": scale, **others}.items():
        if is_grid(parameter):
            raise ValueError(
                f"{argument} is an array of shape {tuple(parameter.shape)} (one per block): give the "
                "block extent (extent=) with per-block parameters"
            )
    if not is_array(zero_point) or isinstance(zero_point, numpy.generic):
        zero_point = check_zero_point(zero_point)
    return check_scale(scale), zero_point


def _plain_parameters(scale: Any, zero_point: Any, *offsets: Any) -> bool:
    """The fast path of the checks, for the host numbers a quantizer holds: a finite
    non-zero float scale, an integral zero point and int offsets within int64."""
    return (
        type(scale) in (float, numpy.float64)
        and math.isfinite(scale)
        and scale != 0
        and type(zero_point) in (int, numpy.float64, numpy.int64)
        and abs(zero_point) < ZERO_POINT_LIMIT
        and zero_point == math.floor(zero_point)
        and all(type(offset) is int for offset in offsets)
    )


def _real_array(values: Any, argument: str, allow_empty: bool = True) -> Any:
    """``values`` as an array of real numbers (integers or floats; not bool or complex)."""
    values = as_array(values, argument)
    if not array_namespace(values).isdtype(values.dtype, ("integral", "real floating")):
        raise TypeError(f"{argument} must hold real numbers, got an array of dtype {values.dtype}")
    if not allow_empty and any(length == 0 for length in values.shape):  # (NaN: a lazy unknown length)
        raise ValueError(f"{argument} must not be empty (there is no min or max of nothing)")
    return values


def _check_range_grids(rmin: Any, rmax: Any, previous_scale: Any) -> None:
    """Per-block ranges are two arrays of one shape (and a kept scale grid has it too)."""
    shapes = {"rmin": tuple(rmin.shape), "rmax": tuple(rmax.shape)}
    if is_grid(previous_scale):
        shapes["previous_scale"] = tuple(previous_scale.shape)
    if len(set(shapes.values())) > 1:
        raise ValueError(
            "per-block ranges (one per block of a granularity: axis or block_size) must be rmin and rmax "
            "arrays of one shape, as must a previous_scale array: got shapes "
            f"{', '.join(f'{name} {shape}' for name, shape in shapes.items())}"
        )


def _blocks(extent: Any, like: Any, argument: str, **parameters: Any) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Check a block ``extent`` for ``like`` (named ``argument``) and every parameter against
    the grid it gives; return ``(extent, grid)``. The same checks, and messages, on every backend."""
    shape = tuple(like.shape)
    extent = check_extent(extent, shape, argument)
    grid = grid_shape(shape, extent)
    check_parameter_grids(grid, f"{argument} of shape {shape} in blocks of {extent}", **parameters)
    return extent, grid


def _placer(backend: Any, like: Any, grid: Tuple[int, ...]) -> Callable[[Any], Any]:
    """A function giving grid parameters as float64 arrays of ``like``'s library and device.

    Parameters computed from the same library are used as they are (no copy, no
    read-back); others (set by hand on the host) are copied there once per call; a
    number (a zero point or offset shared by every block) becomes a grid of it.
    """
    def place(parameter: Any) -> Any:
        if backend.owns(parameter):
            xp = backend.xp
            return xp.astype(parameter, xp.float64, copy=False) if backend.name != "dask" else parameter
        if not is_grid(parameter):
            return backend.parameter(numpy.full(grid, float(parameter)), like)
        return backend.parameter(to_numpy(parameter), like)

    return place


def quantize(
    values: Any, spec: Any, *, check_finite: bool = True, out: Any = None, backend: Any = None
) -> Tuple[Any, Any]:
    """Quantize ``values`` as ``spec`` says, with the backend's kernels: ``(qvalues, problems)``.

    ``problems`` is None when nothing was checked, else a :class:`~qarray.backends.spec.Problems`
    of 0-d arrays left on the device (read them to raise, as :meth:`UniformQuantizer.quant
    <qarray.UniformQuantizer.quant>` does).
    A grid spec's parameter arrays must be in ``values``' library and on its device.

    Args:
        values: a real floating-point array of any Array API library.
        spec: the spec from :func:`quant_spec`.
        check_finite: also count the non-finite values.
        out: an array of ``spec.out_dtype`` and ``values``' shape to write into (checked
            before anything is written), or None.
        backend: the backend to use (the one of ``values`` by default).

    Returns:
        ``(qvalues, problems)``, the integers (a new array, or ``out``) and the counts.

    Raises:
        TypeError: if ``values`` is not a floating-point array, ``spec`` is not a
            :class:`~qarray.backends.spec.QuantSpec`, ``check_finite`` is not a bool, or
            ``out`` is not an array of ``values``' library.
        ValueError: if a per-block ``spec`` was made for another parameter grid, or
            ``out`` has the wrong shape, dtype or device, or is read-only.
    """
    backend = backend or backend_for(values)
    if not backend.is_floating(values):
        raise TypeError(f"values must be a floating-point array, got dtype {values.dtype}")
    _check_spec(spec, values, "values")
    return backend.quantize(values, spec, check_finite=check_bool(check_finite, "check_finite"), out=out)


def dequantize(qvalues: Any, spec: Any, *, dtype: str = "float64", out: Any = None, backend: Any = None) -> Any:
    """De-quantize: ``scale * (qvalues - zero_point)`` in float64, written as ``dtype``.

    With a runtime profile's spec the arithmetic is in float32.

    Args:
        qvalues: an integer array of any Array API library.
        spec: the spec from :func:`dequant_spec`.
        dtype: ``"float32"`` or ``"float64"``.
        out: an array of ``dtype`` and ``qvalues``' shape to write into (checked before
            anything is written), or None.
        backend: the backend to use (the one of ``qvalues`` by default).

    Returns:
        The floats, in a new array of ``qvalues``' library or in ``out``.

    Raises:
        TypeError: if ``qvalues`` is not an integer array, ``dtype`` is neither float32
            nor float64, ``spec`` is not a :class:`~qarray.backends.spec.QuantSpec`, or
            ``out`` is not an array of ``qvalues``' library.
        ValueError: if a per-block ``spec`` was made for another parameter grid, or
            ``out`` has the wrong shape, dtype or device, or is read-only.
    """
    backend = backend or backend_for(qvalues)
    if not backend.xp.isdtype(qvalues.dtype, "integral"):
        raise TypeError(f"qvalues must be an integer array, got dtype {qvalues.dtype}")
    if dtype not in ("float32", "float64"):
        raise TypeError(f"dtype must be 'float32' or 'float64', got {describe(dtype)}")
    _check_spec(spec, qvalues, "qvalues")
    return backend.dequantize(qvalues, spec, dtype=dtype, out=out)


def _check_spec(spec: Any, like: Any, argument: str) -> None:
    """``spec`` is a QuantSpec, and a per-block one was made for arrays of ``like``'s grid."""
    if not isinstance(spec, QuantSpec):
        raise TypeError(f"spec must be a QuantSpec (from quant_spec or dequant_spec), got {describe(spec)}")
    if spec.extent is None:
        return
    shape = tuple(like.shape)
    grid = grid_shape(shape, check_extent(spec.extent, shape, argument))
    scale: Any = spec.scale
    if is_grid(scale) and tuple(scale.shape) != grid:
        raise ValueError(
            f"{argument} of shape {shape} in blocks of {tuple(spec.extent)} give the parameter grid {grid}, "
            f"but the spec's parameters have the grid {tuple(scale.shape)}: make the spec for these {argument}"
        )


def spread(parameter: Any, shape: Tuple[int, ...], extent: Optional[Tuple[int, ...]]) -> Any:
    """Give every value of ``shape`` its block's entry of ``parameter`` (per tensor: as is)."""
    if extent is None or not is_array(parameter):
        return parameter
    return expand_to_values(parameter, shape, extent, xp=array_namespace(parameter))
