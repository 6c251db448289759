"""QuantizedArray: float values and their quantized integers, kept in sync.

A QuantizedArray owns a :class:`~qarray.UniformQuantizer` and copies of the
values it was given; both sides live in the library and on the device of the
chosen backend (the values' own, unless ``backend=`` names another).
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Dict, Optional

import numpy

from .backends import backend_for, get_backend
from .backends.registry import registered_name
from .calibration.histogram import check_method, check_percentile
from .core.checks import check_bool, check_broadcastable, check_instance, check_n_bits
from .core.dtypes import FLOAT_DTYPES, INTEGER_DTYPES
from .core.fields import CheckedAttribute, Forwarded
from .core.granularity import expand_to_values
from .core.messages import check_nan_policy, no_finite_value
from .core.namespace import array_namespace, as_array, device_of, is_array, library_name, to_numpy
from .core.rich import mode_name, render_html
from .histogram_stats import HistogramQuantizationStats
from .io.codec import Serializable, check_fields, decode_array, decode_int, encode_array, encoded_dtype
from .io.consistency import check_consistent
from .kwargs import fill_from_kwargs
from .options import QuantizationOptions
from .params import UniformQuantizationParameters
from .quantizer import UniformQuantizer
from .stats import MinMaxQuantizationStats, arrays_equal, place

__all__ = ["QuantizedArray"]


class QuantizedArray(Serializable):
    """Abstraction of quantized array.

    Contains float values and their quantized integer counter-parts. Quantization
    is performed by the quantizer member object. Float and int values are kept in
    sync. See https://arxiv.org/abs/1712.05877.

    Args:
        n_bits (int): The number of bits to use for quantization.
        values: Values to be quantized (any Array API library, or a list), or None.
        value_is_float (bool, optional): Whether the passed values are real (float) values
            or not. If False, the values are integers that are de-quantized with the
            given parameters (which are then required). Defaults to True.
        options (QuantizationOptions): Quantization options set
        stats (Optional[MinMaxQuantizationStats]): Quantization batch statistics set
        params (Optional[UniformQuantizationParameters]): Quantization parameters set
            (scale, zero-point)
        backend: None to use the values' own library, or a backend name (``"cupy"``)
            to move the values there once.
        nan_policy: what to do with NaN and ±Inf in float ``values`` (keyword only).
            ``"raise"`` (the default) refuses them with a ValueError that counts them.
            ``"omit"`` calibrates on the finite values only and quantizes without the
            finiteness check: finite values get the same integers as without the
            non-finite ones, ±Inf saturate to the ends of the clipping range, and NaN
            become the integer that represents 0.0 (the clipped zero point); when no
            clipping applies (QAT), non-finite values raise ValueError. The policy also
            applies to :meth:`quant` and :meth:`update_values` later on; a loaded array
            uses ``"raise"``.
        method: how float ``values`` choose the range when ``stats`` are not given
            (keyword only): ``"minmax"`` (default), or ``"percentile"``, ``"mse"`` or
            ``"entropy"`` from the exact histogram of the values (see
            :class:`~qarray.HistogramQuantizationStats`).
        percentile: the percentile of ``method="percentile"``, in ``(50, 100]``.
        kwargs: Any member of the options, stats, params sets as a key-value pair. The
            parameter sets need to be completely parametrized if their members appear
            in kwargs.

    Raises:
        TypeError: for values of the wrong kind, unknown keyword arguments or incomplete
            parameter sets.
        ValueError: for invalid options, empty or (with ``nan_policy="raise"``) non-finite
            values, or an unknown ``nan_policy``.

    Example:
        >>> import numpy
        >>> qa = QuantizedArray(2, numpy.array([0.0, 0.5, 1.0, 1.5]))
        >>> qa.qvalues
        array([0, 1, 2, 3])
        >>> qa.backend.name
        'numpy'
    """

    n_bits = Forwarded[int]("quantizer", "The number of bits: the quantizer's (its options' ``n_bits``).")
    quantizer = CheckedAttribute[UniformQuantizer](
        lambda value, argument: check_instance(value, argument, UniformQuantizer),
        "The quantizer (UniformQuantizer) that maps values to qvalues and back.",
    )
    values = CheckedAttribute[Any](
        lambda value, argument: None if value is None else as_array(value, "values", kind="float"),
        "The real values: an array (a list is converted to a NumPy float64 array), or None.",
    )
    qvalues = CheckedAttribute[Any](
        lambda value, argument: None if value is None else as_array(value, "qvalues", kind="int"),
        "The quantized integers: an array (a list is converted to NumPy int64), or None.",
    )

    _type_tag = "QuantizedArray"

    def __init__(
        self,
        n_bits: int,
        values: Optional[Any],
        value_is_float: bool = True,
        options: Optional[QuantizationOptions] = None,
        stats: Optional[MinMaxQuantizationStats] = None,
        params: Optional[UniformQuantizationParameters] = None,
        backend: Optional[Any] = None,
        *,
        nan_policy: str = "raise",
        method: str = "minmax",
        percentile: float = 99.99,
        **kwargs: Any,
    ) -> None:
        n_bits = check_n_bits(n_bits)
        self._calibration = (check_method(method), check_percentile(percentile))
        check_nan_policy(nan_policy)
        self._nan_policy = nan_policy
        value_is_float = check_bool(value_is_float, "value_is_float")
        options = _copied(options, QuantizationOptions, "options")
        if options is None:
            options = QuantizationOptions(n_bits)
        else:
            options.n_bits = n_bits
        stats = _copied(stats, MinMaxQuantizationStats, "stats")
        params = _copied(params, UniformQuantizationParameters, "params")
        filled, kwargs = fill_from_kwargs(options, QuantizationOptions, **kwargs)
        stats, kwargs = fill_from_kwargs(stats, MinMaxQuantizationStats, **kwargs)
        params, kwargs = fill_from_kwargs(params, UniformQuantizationParameters, **kwargs)
        if kwargs:
            raise TypeError(
                f"unexpected keyword argument(s) {', '.join(sorted(kwargs))}: keyword arguments "
                "must name fields of QuantizationOptions, MinMaxQuantizationStats or "
                "UniformQuantizationParameters"
            )
        filled.validate()
        self.quantizer = UniformQuantizer(filled, stats, params)
        self.values = None
        self.qvalues = None
        self._backend = _resolve_backend(backend)
        if values is not None:
            self._values_setup(values, value_is_float, filled, stats, params)

    @property
    def backend(self) -> Any:
        """The backend holding the values (has ``.name``), or None before any values."""
        return self._backend

    def __getstate__(self) -> Dict[str, Any]:
        """Return the fields for pickling and deep copies, the backend by its registry name.

        A backend holds its library's module, which cannot be pickled; its name is
        looked up again when the copy is made (see :meth:`__setstate__`). The arrays
        pickle themselves: CuPy arrays come back on the GPU, Dask arrays stay lazy.
        """
        state = dict(self.__dict__)
        backend = state.get("_backend")
        if backend is not None:

            state["_backend"] = registered_name(backend) or backend.name
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Restore pickled fields, finding the backend again by name in this process."""
        self.__dict__.update(state)
        name = state.get("_backend")
        if isinstance(name, str):
            self._backend = _backend_named(name, self.values if self.values is not None else self.qvalues)

    def _values_setup(
        self,
        values: Any,
        value_is_float: bool,
        options: QuantizationOptions,
        stats: Optional[MinMaxQuantizationStats],
        params: Optional[UniformQuantizationParameters],
    ) -> None:
        if value_is_float:
            self.values = self._own_copy(values, "values", "float")
            if stats is None and self._calibration[0] != "minmax":
                if options.is_granular:
                    raise ValueError(
                        f"method={self._calibration[0]!r} is per tensor only: histogram calibration "
                        "per channel or per group is not built; use method='minmax' with axis/block_size"
                    )
                self.quantizer.copy_stats(self._histogram_range(options))
            elif stats is None:
                needs_uvalues = options.is_qat and not options.is_precomputed_qat and not options.is_granular
                self.quantizer.compute_quantization_stats(
                    self.values,
                    nan_policy=self._nan_policy,
                    with_uvalues=needs_uvalues,
                    axis=options.axis,
                    block_size=options.block_size,
                )
            if params is None:
                self.quantizer.compute_quantization_parameters(options, self.quantizer.stats)
            self.quant()
        else:
            if params is None:
                raise ValueError(
                    "value_is_float=False needs the quantization parameters: pass params= or "
                    "the scale, zero_point and offset keyword arguments"
                )
            self.qvalues = self._own_copy(values, "values", "int")
            self.dequant()

    def _histogram_range(self, options: QuantizationOptions) -> MinMaxQuantizationStats:
        """The statistics of the range ``method=`` chooses from the histogram of the values."""
        method, percentile = self._calibration
        if options.is_qat and not options.is_precomputed_qat:
            raise ValueError(
                f"method={method!r} chooses a clipped range, which QAT scale inference cannot use; "
                "use method='minmax' (or is_precomputed_qat=True)"
            )
        histogram_stats = HistogramQuantizationStats()
        histogram_stats.update(self.values, nan_policy=self._nan_policy)
        if histogram_stats.histogram is None:
            raise no_finite_value()
        return histogram_stats.to_minmax(
            method,
            percentile=percentile,
            n_bits=options.n_bits,
            is_signed=options.is_signed,
            is_symmetric=options.is_symmetric,
            is_narrow=options.is_narrow,
            is_qat=options.is_qat,
            is_precomputed_qat=options.is_precomputed_qat,
        )

    def _own_copy(self, values: Any, argument: str, kind: str) -> Any:
        """Return a copy of ``values`` placed with this array's backend (checked for ``kind``)."""
        values = as_array(values, argument, kind=kind)
        backend = self._backend or backend_for(values)
        placed = backend.asarray(values)
        owned = backend.copy(placed) if placed is values else placed
        checker = backend.is_floating if kind == "float" else backend.is_integer
        if not checker(owned):
            wanted = "floating-point" if kind == "float" else "integer"
            hint = " (use value_is_float=False for integers)" if kind == "float" else ""
            article = "a" if kind == "float" else "an"
            raise TypeError(f"{argument} must be {article} {wanted} array, got dtype {owned.dtype}{hint}")
        self._backend = backend
        options = self.quantizer.options
        if options is not None and options.is_granular:  # the blocks follow from the shape
            owned = backend.with_known_shape(owned, argument)
        return owned

    def __call__(self) -> Optional[Any]:
        """Return the quantized values."""
        return self.qvalues

    def quant(self) -> Optional[Any]:
        """Quantize self.values (into self.qvalues, int64) and return them.

        Under ``nan_policy="omit"`` NaN values become the integer that represents 0.0
        (the clipped zero point), so the result is the same on every backend.

        Returns:
            The quantized values (also set as ``self.qvalues``).

        Raises:
            TypeError, ValueError: as :meth:`UniformQuantizer.quant`, e.g. values holding
                NaN/±Inf under ``nan_policy="raise"``.
        """
        if self._nan_policy == "raise":
            self.qvalues = self.quantizer.quant(self.values)
            return self.qvalues

        qvalues = self.quantizer.quant(self.values, check_finite=False)
        if is_array(self.quantizer.scale) and getattr(self.quantizer.scale, "ndim", 0) > 0:
            self.qvalues = _fill_nan_per_block(self.quantizer, self.values, qvalues)
            return self.qvalues
        # No integer stands for NaN, so write the one of 0.0 where values are NaN rather
        # than whatever a cast of NaN gives on this platform. That integer is computed on
        # the host from the parameters (no full-size array of zeros is quantized), and the
        # backend writes it in place where it can.
        self.qvalues = backend_for(self.values).fill_nan(
            qvalues, self.values, _integer_of_zero(self.quantizer, qvalues.dtype)
        )
        return self.qvalues

    def dequant(self) -> Any:
        """De-quantize self.qvalues (into self.values, float64) and return them.

        Returns:
            The de-quantized values (also set as ``self.values``).

        Raises:
            TypeError, ValueError: as :meth:`UniformQuantizer.dequant`.
        """
        self.values = self.quantizer.dequant(self.qvalues)
        return self.values

    def update_values(self, values: Any) -> Any:
        """Replace the values (copied) and return the corresponding qvalues.

        Args:
            values: Values to replace self.values

        Returns:
            qvalues: Corresponding qvalues
        """
        self.values = self._own_copy(values, "values", "float")
        return self.quant()

    def update_quantized_values(self, qvalues: Any) -> Any:
        """Replace the qvalues (copied) and return the corresponding values.

        Args:
            qvalues: Values to replace self.qvalues

        Returns:
            values: Corresponding values
        """
        self.qvalues = self._own_copy(qvalues, "qvalues", "int")
        return self.dequant()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantizedArray):
            return NotImplemented
        return (
            self.n_bits == other.n_bits
            and self.quantizer == other.quantizer
            and arrays_equal(self.values, other.values)
            and arrays_equal(self.qvalues, other.qvalues)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:

        shape = None if self.qvalues is None else tuple(self.qvalues.shape)
        backend = None if self._backend is None else self._backend.name
        dtype = None if self.values is None else str(self.values.dtype)
        scale: Any = self.quantizer.scale
        zero_point: Any = self.quantizer.zero_point
        if is_array(scale) and getattr(scale, "ndim", 0) > 0:
            scale = _Shown(f"<array {tuple(scale.shape)}>")
        elif scale is not None:
            scale = float(scale)
        if is_array(zero_point) and getattr(zero_point, "ndim", 0) > 0:
            zero_point = f"<array {tuple(zero_point.shape)}>"
        elif zero_point is not None:
            zero_point = int(zero_point)
        try:
            clip: Any = self.quantizer.clip_range() if self.quantizer.offset is not None else None
        except ValueError:  # options made invalid by hand: still show the rest
            clip = "<invalid options>"
        if clip is not None and not isinstance(clip, str) and is_array(clip[0]):
            clip = "<per block>"
        return (
            f"QuantizedArray(n_bits={self.n_bits}, shape={shape}, backend={backend!r}, "
            f"scale={scale!r}, zero_point={zero_point!s}, "
            f"mode={mode_name(self.quantizer.options)!r}, dtype={dtype!r}, clip={clip})"
        )

    def _repr_html_(self) -> str:
        """Rich display in Jupyter (the renderer :mod:`qarray.display` registers)."""
        return render_html(self)

    def _deferred_document(self) -> Dict[str, Any]:
        """Learn the arrays' shapes, then check and lay out the document (see :class:`Serializable`).

        A document states every shape: Dask arrays of unknown chunk sizes (``x[x > 0]``)
        have them computed first, once, and kept for later documents.
        """
        for name in ("values", "qvalues"):
            array = getattr(self, name)
            if array is not None:
                setattr(self, name, backend_for(array).with_known_shape(array, name))
        return super()._deferred_document()

    def dump_dict(self) -> Dict[str, Any]:
        """Dump itself to a JSON-ready dict (values and qvalues copied to the host).

        Returns:
            The dict, with a type tag and format version (see :func:`qarray.loads`).
        """
        return self._tagged(
            {
                "n_bits": self.n_bits,
                "quantizer": self.quantizer.dump_dict(),
                "values": encode_array(self.values),
                "qvalues": encode_array(self.qvalues),
            }
        )

    @classmethod
    def load_dict(cls, metadata: Dict[str, Any], backend: Optional[str] = None) -> QuantizedArray:
        """Load a QuantizedArray from a dict made by :meth:`dump_dict`, as it was (no recomputation).

        Args:
            metadata: the dict.
            backend: the name of a backend to place the arrays with (default: NumPy).

        Returns:
            The QuantizedArray.

        Raises:
            ValueError, TypeError: if the document is malformed or inconsistent.
        """
        fields = check_fields(metadata, cls._type_tag, ("n_bits", "quantizer", "values", "qvalues"))
        n_bits = check_n_bits(decode_int(fields["n_bits"], "n_bits", optional=False))
        quantizer = UniformQuantizer.load_dict(fields["quantizer"], backend=backend)
        if quantizer.n_bits != n_bits:
            raise ValueError(f"QuantizedArray: n_bits {n_bits} differs from the quantizer's {quantizer.n_bits}")
        values = decode_array(fields["values"], "values", FLOAT_DTYPES)
        qvalues = decode_array(
            fields["qvalues"], "qvalues", INTEGER_DTYPES
        )
        if (values is None) != (qvalues is None):
            raise ValueError("QuantizedArray: values and qvalues must both be present or both null")
        if values is not None and qvalues is not None and values.shape != qvalues.shape:
            raise ValueError(
                f"QuantizedArray: values shape {values.shape} differs from qvalues shape {qvalues.shape}"
            )
        zero_point = quantizer.zero_point
        per_block = quantizer.is_per_block
        if values is not None and isinstance(zero_point, numpy.ndarray) and not per_block:
            check_broadcastable(zero_point, values)
        array = cls.__new__(cls)
        array._nan_policy = "raise"
        array.quantizer = quantizer
        array.values, array.qvalues = values, qvalues

        check_consistent(array)  # on the host arrays, before placing them: what dumps() refuses
        array.values = place(values, backend, encoded_dtype(fields["values"]))
        array.qvalues = place(qvalues, backend)
        array._backend = None
        if values is not None:

            array._backend = get_backend(backend) if backend else backend_for(array.values)
        return array


def _integer_of_zero(quantizer: UniformQuantizer, dtype: Any) -> numpy.ndarray:
    """Return what ``quantizer.quant`` gives for 0.0, computed on the host from the parameters.

    The same float64 operation sequence as every backend's quantization
    (``rint(0.0 / scale + zero_point)``, clipped, cast), so the integer is identical to
    quantizing 0.0 on any backend: a 0-d array, or one the shape of a per-channel zero
    point.
    """
    scale, zero_point, _ = quantizer._require_params()
    clip = quantizer.clip_range()
    with numpy.errstate(invalid="ignore", over="ignore"):
        rounded = numpy.rint(
            numpy.float64(0.0) / numpy.float64(scale) + numpy.asarray(zero_point, dtype=numpy.float64)
        )
        if clip is not None:
            rounded = numpy.clip(rounded, float(clip[0]), float(clip[1]))
        return numpy.asarray(rounded).astype(_numpy_dtype(dtype))


class _Shown(str):
    """Text shown as it is in a repr (no quotes)."""

    def __repr__(self) -> str:
        return str(self)


def _fill_nan_per_block(quantizer: UniformQuantizer, values: Any, qvalues: Any) -> Any:
    """``qvalues`` with each block's integer of 0.0 where ``values`` is NaN (per-block parameters).

    The integer of 0.0 is computed per block on the parameters' grid, by the same float64
    sequence as quantization, then spread over the values (nothing is read back).
    """
    xp = array_namespace(values)
    scale, zero_point, _ = quantizer._require_params()
    place = functools.partial(_in_library_of, values)
    scale, zero_point = place(scale), place(zero_point)
    rounded = xp.round(0.0 / xp.astype(scale, xp.float64) + xp.astype(zero_point, xp.float64))
    clip = quantizer.clip_range()
    if clip is not None:
        low, high = (xp.astype(place(bound), xp.float64) for bound in clip)
        rounded = xp.minimum(xp.maximum(rounded, low), high)
    extent = quantizer.block_extent(tuple(values.shape))
    fill = expand_to_values(xp.astype(rounded, qvalues.dtype), tuple(values.shape), extent, xp=xp)
    return xp.where(xp.isnan(values), fill, qvalues)


def _in_library_of(values: Any, parameter: Any) -> Any:
    """``parameter`` as an array of ``values``' library and device (copied there if it is not)."""
    if library_name(array_namespace(parameter)) == library_name(array_namespace(values)):
        return parameter

    return backend_for(values).asarray(to_numpy(parameter), device=device_of(values))


def _numpy_dtype(dtype: Any) -> numpy.dtype:
    """The NumPy dtype of the same name as an integer dtype of any array library."""
    return numpy.dtype(str(dtype).rsplit(".", 1)[-1])


def _copied(obj: Any, klass: type, argument: str) -> Any:
    """Return a deep copy of a user's parameter structure, so filling it never mutates theirs."""
    if obj is None:
        return None
    if not isinstance(obj, klass):
        raise TypeError(f"{argument} must be a {klass.__name__} or None, got {type(obj).__name__}")
    return copy.deepcopy(obj)


def _backend_named(name: str, like: Any) -> Any:
    """Return the registered backend ``name``, or (for an unregistered library) ``like``'s."""
    try:
        return get_backend(name)
    except ValueError:  # a library served by the generic backend, never registered by name
        if like is None:
            raise
        return backend_for(like)


def _resolve_backend(backend: Any) -> Any:
    if backend is None:
        return None

    return get_backend(backend)
