"""UniformQuantizer: options, statistics and parameters composed, with quant and dequant.

The quantizer reads its parameters as host numbers and hands them to the
backend of each array it is given, so a quantizer calibrated on one library
(or device) applies to arrays of any other. ``quant`` and ``dequant`` read
nothing back from the device except the one problem count of the checks that
are asked for (non-finite input; rounded values outside the output dtype when
no clipping applies).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy

from . import primitives
from .backends import backend_for
from .backends.spec import QuantSpec
from .core.checks import (
    check_bool,
    check_instance,
)
from .core.dtypes import (
    OUTPUT_FLOAT_DTYPES,
    clip_range,
    dtype_name,
    integer_dtype_name,
)
from .core.fields import CheckedAttribute, Forwarded
from .core.granularity import check_parameter_grids, is_grid
from .core.messages import raise_on_problems
from .core.namespace import as_array
from .core.rich import render_html
from .io.codec import Serializable, check_fields
from .io.consistency import check_consistent
from .options import QuantizationOptions
from .params import UniformQuantizationParameters, ZeroPoint
from .stats import MinMaxQuantizationStats, place

__all__ = ["UniformQuantizer"]



class UniformQuantizer(Serializable):
    """Uniform quantizer.

    Contains all information necessary for uniform quantization and provides
    quantization/de-quantization on arrays of any Array API library (NumPy,
    CuPy, PyTorch, ...). The fields of its three parts are readable (and
    settable) on the quantizer itself: ``n_bits``, ``is_signed``, ...,
    ``rmin``, ``rmax``, ``uvalues``, ``scale``, ``zero_point``, ``offset``.

    Args:
        options (QuantizationOptions): Quantization options set
        stats (Optional[MinMaxQuantizationStats]): Quantization batch statistics set
        params (Optional[UniformQuantizationParameters]): Quantization parameters set
            (scale, zero-point)
        no_clipping (bool): never clip the quantized values to the n_bits range.

    Raises:
        TypeError: if a part is not of its class, or ``no_clipping`` is not a bool.

    Example:
        >>> import numpy
        >>> from qarray import QuantizationOptions, UniformQuantizationParameters
        >>> quantizer = UniformQuantizer(
        ...     QuantizationOptions(8), params=UniformQuantizationParameters(0.1, 128, 0))
        >>> quantizer.quant(numpy.array([-1.0, 0.0, 0.26]))
        array([118, 128, 131])
    """

    _type_tag = "UniformQuantizer"

    options = CheckedAttribute[Optional[QuantizationOptions]](
        lambda value, argument: check_instance(value, argument, QuantizationOptions, optional=True),
        "The quantization options (QuantizationOptions), or None before they are given.",
    )
    stats = CheckedAttribute[MinMaxQuantizationStats](
        lambda value, argument: check_instance(value, argument, MinMaxQuantizationStats),
        "The calibration statistics (MinMaxQuantizationStats).",
    )
    params = CheckedAttribute[UniformQuantizationParameters](
        lambda value, argument: check_instance(value, argument, UniformQuantizationParameters),
        "The quantization parameters (UniformQuantizationParameters).",
    )
    no_clipping = CheckedAttribute[bool](check_bool, "Never clip the quantized values.")

    def __init__(
        self,
        options: Optional[QuantizationOptions] = None,
        stats: Optional[MinMaxQuantizationStats] = None,
        params: Optional[UniformQuantizationParameters] = None,
        no_clipping: bool = False,
    ) -> None:
        self.options = None
        self.stats = MinMaxQuantizationStats()
        self.params = UniformQuantizationParameters()
        if options is not None:
            self.copy_opts(options)
        if stats is not None:
            self.copy_stats(stats)
        if params is not None:
            self.copy_params(params)
        self.no_clipping = check_bool(no_clipping, "no_clipping")

    # -- the parts -------------------------------------------------------------------------

    def copy_opts(self, opts: QuantizationOptions) -> None:
        """Copy the options from a different structure.

        Args:
            opts: the options to copy (the quantizer keeps a copy of its own).

        Raises:
            TypeError: if ``opts`` is not a :class:`QuantizationOptions`.
        """
        if not isinstance(opts, QuantizationOptions):
            raise TypeError(f"options must be QuantizationOptions, got {type(opts).__name__}")
        self.options = opts.quant_options

    def copy_stats(self, stats: MinMaxQuantizationStats) -> None:
        """Copy the statistics from a different structure.

        Args:
            stats: the statistics to copy (see :meth:`MinMaxQuantizationStats.copy_stats`).

        Raises:
            TypeError: if ``stats`` is not a :class:`MinMaxQuantizationStats`.
        """
        self.stats.copy_stats(stats)

    def copy_params(self, params: UniformQuantizationParameters) -> None:
        """Copy the parameters from a different structure.

        Args:
            params: the parameters to copy (see :meth:`UniformQuantizationParameters.copy_params`).

        Raises:
            TypeError: if ``params`` is not a :class:`UniformQuantizationParameters`.
        """
        self.params.copy_params(params)

    @property
    def quant_options(self) -> QuantizationOptions:
        """A fresh copy of the options."""
        return self._require_options().quant_options

    @property
    def quant_stats(self) -> MinMaxQuantizationStats:
        """A fresh copy of the calibration statistics."""
        return self.stats.quant_stats

    @property
    def quant_params(self) -> UniformQuantizationParameters:
        """A fresh copy of the quantization parameters."""
        return self.params.quant_params

    # -- the fields of the parts, read and set on the quantizer ------------------------------

    n_bits = Forwarded[int]("options", "The ``n_bits`` field of the quantizer's options.")
    is_signed = Forwarded[bool]("options", "The ``is_signed`` field of the quantizer's options.")
    is_symmetric = Forwarded[bool]("options", "The ``is_symmetric`` field of the quantizer's options.")
    is_qat = Forwarded[bool]("options", "The ``is_qat`` field of the quantizer's options.")
    is_narrow = Forwarded[bool]("options", "The ``is_narrow`` field of the quantizer's options.")
    is_precomputed_qat = Forwarded[bool]("options", "The ``is_precomputed_qat`` field of the quantizer's options.")
    profile = Forwarded[str]("options", "The ``profile`` field of the quantizer's options.")
    rmax = Forwarded[Any]("stats", "The ``rmax`` field of the quantizer's stats.")
    rmin = Forwarded[Any]("stats", "The ``rmin`` field of the quantizer's stats.")
    uvalues = Forwarded[Any]("stats", "The ``uvalues`` field of the quantizer's stats.")
    scale = Forwarded[Any]("params", "The ``scale`` field of the quantizer's params.")
    zero_point = Forwarded[ZeroPoint]("params", "The ``zero_point`` field of the quantizer's params.")
    offset = Forwarded[Any]("params", "The ``offset`` field of the quantizer's params.")

    @property
    def is_per_block(self) -> bool:
        """True when the quantizer's parameters are grids (per channel or per group)."""
        return self.params.is_per_block

    def is_equal(self, opts: QuantizationOptions, ignore_sign_qat: bool = False) -> bool:
        """Compare the options with ``opts`` (see :meth:`QuantizationOptions.is_equal`).

        Args:
            opts: the options to compare with.
            ignore_sign_qat: ignore the sign when ``opts`` are QAT options.

        Returns:
            Whether the options are equivalent.

        Raises:
            TypeError: if ``opts`` is not a :class:`QuantizationOptions`.
            ValueError: if this quantizer has no options.
        """
        return self._require_options().is_equal(opts, ignore_sign_qat)

    def compute_quantization_stats(
        self,
        values: Any,
        nan_policy: str = "raise",
        with_uvalues: bool = True,
        *,
        axis: Any = None,
        block_size: Any = None,
    ) -> None:
        """Calibrate on ``values`` (see :meth:`MinMaxQuantizationStats.compute_quantization_stats`).

        Args:
            values: floating-point calibration data of any array library.
            nan_policy: ``"raise"`` refuses NaN and ±Inf; ``"omit"`` leaves them out.
            with_uvalues: compute ``uvalues`` too (only QAT uses them).
            axis: the axis of per-channel ranges, or None.
            block_size: the block size of per-group or per-block ranges, or None; see
                :meth:`MinMaxQuantizationStats.compute_quantization_stats` for all five.

        Raises:
            TypeError: if ``values`` is not a floating-point array.
            ValueError: if it is empty, holds NaN/±Inf under ``"raise"``, or holds no
                finite value under ``"omit"``; for a bad granularity.
        """
        self.stats.compute_quantization_stats(
            values, nan_policy=nan_policy, with_uvalues=with_uvalues, axis=axis, block_size=block_size
        )

    def check_is_uniform_quantized(self, options: QuantizationOptions) -> bool:
        """Check whether the statistics look uniformly quantized (QAT scale inference).

        Args:
            options: the options whose ``n_bits`` bounds the number of unique values
                (see :meth:`MinMaxQuantizationStats.check_is_uniform_quantized`).

        Returns:
            Whether the unique calibration values lie on one uniform grid.

        Raises:
            TypeError: if ``options`` is not a :class:`QuantizationOptions`.
            ValueError: if the statistics have no ``uvalues``.
        """
        return self.stats.check_is_uniform_quantized(options)

    def compute_quantization_parameters(
        self, options: QuantizationOptions, stats: MinMaxQuantizationStats
    ) -> None:
        """Compute scale, zero point and offset from ``options`` and ``stats``.

        Args:
            options: the quantization options.
            stats: calibrated statistics (see
                :meth:`UniformQuantizationParameters.compute_quantization_parameters`).

        Raises:
            TypeError: if ``options`` or ``stats`` is of the wrong class.
            ValueError: if the statistics are not calibrated or the options invalid.
        """
        self.params.compute_quantization_parameters(options, stats)

    # -- quantization ----------------------------------------------------------------------

    def clip_range(self) -> Optional[Tuple[Any, Any]]:
        """Return the inclusive integer range quant clips to, or None when it does not clip.

        No clipping with ``no_clipping``, nor for QAT with inferred parameters (its
        signedness cannot be known); otherwise ``[-offset (+1 if narrow), 2**n - 1 - offset]``.
        With per-block parameters the bounds are arrays of the grid (each block clips
        with its own offset).

        Returns:
            ``(low, high)``, or None when quant does not clip.

        Raises:
            ValueError: if the quantizer has no options, or (when it clips) no parameters.
        """
        options = self._require_options()
        if self.no_clipping or (options.is_qat and not options.is_precomputed_qat):
            return None
        offset = self._require_params()[2]
        return clip_range(options.n_bits, offset, options.is_narrow)

    def quant(
        self, values: Any, dtype: Any = numpy.int64, check_finite: bool = True, out: Any = None
    ) -> Any:
        """Quantize values: ``rint(values / scale + zero_point)`` in float64, clipped.

        Args:
            values: real floating-point values of any Array API library (or a list).
            dtype: the integer dtype of the result (default int64). It must hold the
                clipped range; without clipping, every rounded value must fit it.
            check_finite: refuse NaN and ±Inf (the default). ``False`` skips the check
                and its read-back; non-finite values then give unspecified integers, and
                per-block parameters computed on a GPU are not checked either (blocks
                whose calibration range was not finite give unspecified integers; see
                ``UniformQuantizationParameters.settle``).
            out: an array of ``dtype`` and ``values``' shape to write the result into.
                Arguments are checked before anything is written; when the data is
                refused (non-finite values, integers that do not fit ``dtype``), ``out``
                is filled with zeros before the ValueError is raised.

        Returns:
            The quantized integers, in ``values``' library and on its device.

        Raises:
            TypeError: if ``values`` is not floating point or ``dtype`` not an integer dtype.
            ValueError: if the quantizer has no parameters, ``dtype`` cannot hold the
                range, or ``values`` holds NaN/±Inf (with ``check_finite``).
        """
        values = as_array(values, "values", kind="float")
        backend = backend_for(values)
        if not backend.is_floating(values):
            raise TypeError(
                f"values must be a real floating-point array to quantize, got dtype {values.dtype}"
            )
        check_finite = check_bool(check_finite, "check_finite")
        name = integer_dtype_name(dtype, backend.xp)
        if self.is_per_block:  # the blocks follow from the shape
            values = backend.with_known_shape(values)
        spec = self._quant_spec(values, backend, name)
        # NaN, ±Inf and overflowing quotients are counted and reported below (or, with
        # check_finite=False, accepted as documented): NumPy's own warnings about them
        # would only repeat that.
        with numpy.errstate(invalid="ignore", over="ignore"):
            qvalues, problems = primitives.quantize(values, spec, check_finite=check_finite, out=out, backend=backend)
        if problems is not None and spec.is_grid:  # a checked quantization reads back: parameters on a GPU too
            self._settle_before_problems(out)
        return self._raise_on_problems(problems, out, name, backend, values, qvalues)

    def _quant_spec(self, values: Any, backend: Any, name: str) -> QuantSpec:
        """The kernel spec quantizing ``values`` into dtype ``name`` (see :func:`qarray.primitives.quant_spec`)."""
        scale, zero_point, offset = self._require_params()
        params = self.params

        def read_offsets() -> Any:
            params.settle()
            return params._offsets_present

        return primitives.quant_spec(
            scale,
            zero_point,
            offset,
            self._require_options(),
            name,
            like=values,
            backend=backend,
            no_clipping=self.no_clipping,
            extent=tuple(self.block_extent(tuple(values.shape))) if self.is_per_block else None,
            offsets=params._offsets_present,
            read_offsets=read_offsets,
        )

    def _settle_before_problems(self, out: Any) -> None:
        """Check per-block parameters computed on a GPU (see ``settle``) before a checked
        quantization's problems are read; a refused call leaves zeros in ``out``."""
        try:
            self.params.settle()
        except ValueError:
            if out is not None:
                out[...] = 0
            raise

    def _raise_on_problems(self, problems: Any, out: Any, name: str, backend: Any, values: Any, qvalues: Any) -> Any:
        """Read a quantization's problem counts (the one read-back) and raise on any; else return qvalues."""
        if problems is not None:
            counts = problems.read()
            if out is not None and sum(counts):
                # What the kernels wrote for refused values differs between paths and CPUs:
                # a buffer the call refused holds zeros everywhere, on every path.
                out[...] = 0
            raise_on_problems(counts, name, f"out of {backend.size(values)}")
        return qvalues

    def block_extent(self, shape: Tuple[int, ...], argument: str = "values") -> Tuple[int, ...]:
        """Return the block extent for values of ``shape`` under per-block parameters.

        ``argument`` names the array in the error message (``"qvalues"`` for dequant).

        Args:
            shape: the shape of the values.
            argument: the name of the values in the error message.

        Returns:
            The block extent along each axis of ``shape``.

        Raises:
            ValueError: if the quantizer has no options or parameters.
            ValueError: if the options have no granularity, or ``shape`` does not give
                the grid of every parameter array (a quantizer fitted per block applies
                only to arrays whose shape gives the same grid; a zero point or offset
                may also be one number for every block).
        """
        options = self._require_options()
        scale, zero_point, offset = self._require_params()
        if not options.is_granular:
            raise ValueError(
                "scale, zero_point and offset are arrays (one per block) but the options have no "
                "granularity: set options.axis or options.block_size (or give scalar parameters)"
            )
        extent, grid = options.granularity.extent(tuple(shape))
        check_parameter_grids(
            grid,
            f"{argument} of shape {tuple(shape)} with {options.granularity}",
            scale=scale,
            zero_point=zero_point,
            offset=offset,
        )
        return extent

    def dequant(self, qvalues: Any, dtype: Any = None, out: Any = None) -> Any:
        """De-quantize: ``scale * (qvalues - zero_point)``, computed in float64.

        With a runtime profile (``"onnx"``, ``"torch"``) it is computed as the runtime
        does, ``float32(qvalues - zero_point) * scale`` in float32.

        Args:
            qvalues: integers of any Array API library (or a list of ints).
            dtype: float64 or float32 for the result; by default float64, and float32 with
                a runtime profile.
            out: an array of ``dtype`` and ``qvalues``' shape to write the result into.

        Returns:
            The real values, in ``qvalues``' library and on its device.

        Raises:
            TypeError: if ``qvalues`` is not an integer array or ``dtype`` not float32/64.
            ValueError: if the quantizer has no parameters.
        """
        scale, zero_point, _ = self._require_params()
        qvalues = as_array(qvalues, "qvalues", kind="int")
        backend = backend_for(qvalues)
        if not backend.is_integer(qvalues):
            raise TypeError(f"qvalues must be an integer array to de-quantize, got dtype {qvalues.dtype}")
        profile = self._require_options().profile
        if dtype is None:
            dtype = numpy.float64 if profile == "concrete" else numpy.float32
        name = dtype_name(dtype, backend.xp, OUTPUT_FLOAT_DTYPES)
        extent = None
        if self.is_per_block:  # the blocks follow from the shape
            qvalues = backend.with_known_shape(qvalues, "qvalues")
            extent = tuple(self.block_extent(tuple(qvalues.shape), "qvalues"))
        spec = primitives.dequant_spec(
            scale, zero_point, like=qvalues, backend=backend, extent=extent, profile=profile
        )
        return primitives.dequantize(qvalues, spec, dtype=name, out=out, backend=backend)

    # -- comparison and serialization ------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UniformQuantizer):
            return NotImplemented
        return (
            self.options == other.options
            and self.stats == other.stats
            and self.params == other.params
            and self.no_clipping == other.no_clipping
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"UniformQuantizer({self.options!r}, {self.stats!r}, {self.params!r}, "
            f"no_clipping={self.no_clipping})"
        )

    def _repr_html_(self) -> str:
        """Rich display in Jupyter (the renderer :mod:`qarray.display` registers)."""
        return render_html(self)

    def dump_dict(self) -> Dict[str, Any]:
        """Dump itself to a JSON-ready dict (its three parts nested).

        Returns:
            The dict, with a type tag and format version (see :func:`qarray.loads`).
        """
        return self._tagged(
            {
                "options": None if self.options is None else self.options.dump_dict(),
                "stats": self.stats.dump_dict(),
                "params": self.params.dump_dict(),
                "no_clipping": self.no_clipping,
            }
        )

    @classmethod
    def load_dict(cls, metadata: Dict[str, Any], backend: Optional[str] = None) -> UniformQuantizer:
        """Load a quantizer from a dict made by :meth:`dump_dict`.

        Args:
            metadata: the dict.
            backend: the name of a backend to place ``uvalues`` (and per-block ranges and
                parameters) with (default: NumPy).

        Returns:
            The quantizer.

        Raises:
            TypeError, ValueError: if the dict is malformed, or its parts are invalid or
                inconsistent (parameters without options, an offset the options cannot give).
        """
        fields = check_fields(metadata, cls._type_tag, ("options", "stats", "params", "no_clipping"))
        quantizer = cls(no_clipping=_loaded_bool(fields["no_clipping"], "no_clipping"))
        if fields["options"] is not None:
            quantizer.options = QuantizationOptions.load_dict(fields["options"])
        quantizer.stats = MinMaxQuantizationStats.load_dict(fields["stats"], backend=backend)
        quantizer.params = UniformQuantizationParameters.load_dict(fields["params"])
        if quantizer.params.scale is not None and quantizer.options is None:
            raise ValueError("UniformQuantizer: parameters without options cannot be used")

        check_consistent(quantizer)  # refuse what dumps() refuses to write (an offset n_bits cannot give)
        params = quantizer.params
        if backend is not None and params.is_per_block:  # per-block parameters live with the data

            params._scale, params._zero_point, params._offset = (
                place(value, backend) for value in (params.scale, params.zero_point, params.offset)
            )
        return quantizer

    # -- helpers ---------------------------------------------------------------------------

    def _set_forwarded(self, part: str, name: str, value: Any) -> None:
        """Set a forwarded field: setting ``n_bits`` without options creates them."""
        if part == "options" and self.options is None:
            if name != "n_bits":
                raise ValueError(f"set n_bits (or give options) before {name}")
            self.options = QuantizationOptions(value)
            return
        setattr(getattr(self, part), name, value)

    def _require_options(self) -> QuantizationOptions:
        if self.options is None:
            raise ValueError("this quantizer has no options; give QuantizationOptions first")
        return self.options

    def _require_params(self) -> Tuple[numpy.float64, Any, int]:
        self._require_options().validate()
        params = self.params
        if params.scale is None or params.zero_point is None or params.offset is None:
            raise ValueError(
                "this quantizer has no quantization parameters yet (scale, zero_point, offset); "
                "calibrate it or give UniformQuantizationParameters"
            )
        offset: Any = params.offset
        if is_grid(offset) and not params.is_per_block:
            raise ValueError(
                f"offset is an array of shape {tuple(offset.shape)} (one per block) but scale is "
                "one number: give scale as an array of the same grid, or one offset for the tensor"
            )
        return params.scale, params.zero_point, params.offset


def _loaded_bool(value: Any, argument: str) -> bool:
    if type(value) is not bool:
        raise TypeError(f"{argument} must be a JSON boolean, got {value!r}")
    return value
