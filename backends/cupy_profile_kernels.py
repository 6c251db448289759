"""CUDA sources of the runtimes' float32 arithmetic (the ``onnx`` and ``torch`` numerics profiles).

:mod:`qarray.backends.cupy_kernels` compiles this text into its one module, after its
own device functions (which this source uses: the exact float conversions, the vector
and grid-stride walks, the parameter map of the grids, the problem counts); this
module holds the text and the kernel templates, nothing else.

The arithmetic is :class:`~qarray.backends.spec.QuantSpec`'s ``float32_divide`` and
``float32_reciprocal``: ``q = rint(float32(x) / scale)`` (ONNX Runtime) or ``q =
rint(float32(x) * r)`` with ``r = float32(1) / scale`` (torchao, ``FLAG_RECIPROCAL``),
in IEEE float32 rounded half to even, then ``(double)q + zero_point`` clipped or
checked as the float64 kernels do; dequant is ``float32((double)q - zero_point) *
scale`` in float32, written as float32 or widened exactly to float64.

Subnormals: CuPy compiles with ``-ftz=true``, under which the float32 division and
multiplication flush subnormal operands and results to zero, where NumPy keeps them.
The instruction's result is taken only when no operand is subnormal and it is not a
flushed zero; otherwise the operation is redone in double from the exact operands and
rounded once to float32 by hand (subnormal range included). A product of two float32
values is exact in double. A quotient is rounded to 53 bits first, and that double
rounding is harmless: it can only err when the double lands on a float32 midpoint, and
a quotient of 24-bit significands that is not a midpoint lies farther from every
midpoint than half a double ulp (for float32's normal range: 53 >= 2 * 24 + 2; for its
subnormal range the midpoints are multiples of 2^-150 and the same bound holds). So
both operations give IEEE float32's bits, subnormal inputs, scales, reciprocals and
results included.

Example:
    >>> sorted(KERNELS) == sorted(QUANT_KINDS + DEQUANT_KINDS)
    True
"""

from __future__ import annotations

from typing import Dict, Tuple

__all__ = ["DEQUANT_KINDS", "DEVICE_SOURCE", "KERNELS", "QUANT_KINDS"]

QUANT_KINDS: Tuple[str, ...] = ("quant32", "quant32_grid")
"""The float32 quant kernels (float dtype in, integer dtype out): per tensor, per block."""

DEQUANT_KINDS: Tuple[str, ...] = ("dequant32", "dequant32_grid")
"""The float32 dequant kernels (integer dtype in, float dtype out): per tensor, per block."""

DEVICE_SOURCE = r"""
// ---- the runtimes' float32 arithmetic (numerics profiles) ---------------------------------
// quant: q = rint(float32(x) / scale), or with QARRAY_FLAG_RECIPROCAL rint(float32(x) * r),
// r = float32(1) / scale, in IEEE float32 rounded half to even; then (double)q + zero_point
// clipped or checked as the float64 rule (qarray_quant_settle). dequant: float32((double)q -
// zero_point) * scale in float32. The scales are float32 values given as doubles.
// -ftz=true flushes subnormal operands and results of the float32 instructions: those cases
// are redone in double and rounded once to float32 (see the Python module's docstring).

__device__ __forceinline__ unsigned int qarray_magnitude32(float x) {
    return __float_as_uint(x) & 0x7fffffffu;
}

__device__ __forceinline__ bool qarray_subnormal32(float x) {
    const unsigned int magnitude = qarray_magnitude32(x);
    return magnitude != 0u && magnitude < 0x00800000u;
}

// The rare cases below, out of line: a / b and a * b through double, rounded once to float32.
__device__ __noinline__ float qarray_div32_through_double(float a, float b) {
    return qarray_from_double<float>(__ddiv_rn(qarray_to_double(a), qarray_to_double(b)));
}
__device__ __noinline__ float qarray_mul32_through_double(float a, float b) {
    return qarray_from_double<float>(__dmul_rn(qarray_to_double(a), qarray_to_double(b)));
}

// a / b in IEEE float32, subnormal operands and results included.
__device__ __forceinline__ float qarray_div32(float a, float b) {
    const float quotient = __fdiv_rn(a, b);
    const bool flushed = qarray_magnitude32(quotient) == 0u && qarray_magnitude32(a) != 0u
        && qarray_magnitude32(b) < 0x7f800000u;  // zero from a non-zero a and a finite b
    if (flushed || qarray_subnormal32(a) || qarray_subnormal32(b)) {
        return qarray_div32_through_double(a, b);
    }
    return quotient;
}

// a * b in IEEE float32, subnormal operands and results included (exact in double first).
__device__ __forceinline__ float qarray_mul32(float a, float b) {
    const float product = __fmul_rn(a, b);
    const bool flushed = qarray_magnitude32(product) == 0u && qarray_magnitude32(a) != 0u
        && qarray_magnitude32(b) != 0u;
    if (flushed || qarray_subnormal32(a) || qarray_subnormal32(b)) {
        return qarray_mul32_through_double(a, b);
    }
    return product;
}

// The input as float32 (a double rounded to nearest even, as NumPy's astype), and whether
// the input itself is finite (what the non-finite count counts).
__device__ __forceinline__ float qarray_to_float(float x) { return x; }
__device__ __forceinline__ float qarray_to_float(double x) { return qarray_from_double<float>(x); }
__device__ __forceinline__ bool qarray_finite_input(float x) { return qarray_magnitude32(x) < 0x7f800000u; }
__device__ __forceinline__ bool qarray_finite_input(double x) { return qarray_isfinite(x); }

// A float32 result written as T (float, or double exactly).
template <typename T> __device__ __forceinline__ T qarray_from_float(float x);
template <> __device__ __forceinline__ float qarray_from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ double qarray_from_float<double>(float x) { return qarray_to_double(x); }

struct qarray_problem_counts {
    unsigned int nonfinite;
    unsigned int outside;
};

// quant's float32 rule for one parameter set; the problems go to *counts.
template <typename TIN, typename TOUT> struct qarray_quant32_rule {
    float scale;
    float reciprocal;  // float32(1) / scale (QARRAY_FLAG_RECIPROCAL)
    double zero_point, clip_low, clip_high, fit_low, fit_high;
    int flags;
    qarray_problem_counts* counts;
    __device__ __forceinline__ TOUT operator()(TIN raw) const {
        const float x = qarray_to_float(raw);
        const float quotient = (flags & QARRAY_FLAG_RECIPROCAL) ? qarray_mul32(x, reciprocal) : qarray_div32(x, scale);
        const double rounded = __dadd_rn((double)rintf(quotient), zero_point);  // rintf: an integer, exact
        const qarray_quantized<TOUT> one = qarray_quant_settle<TOUT>(
            qarray_finite_input(raw), rounded, flags, clip_low, clip_high, fit_low, fit_high);
        counts->nonfinite += one.nonfinite;
        counts->outside += one.outside;
        return one.value;
    }
};

template <typename TIN, typename TOUT>
__device__ __forceinline__ qarray_quant32_rule<TIN, TOUT> qarray_make_quant32(
    double scale, double zero_point, int flags, double clip_low, double clip_high, double fit_low,
    double fit_high, qarray_problem_counts* counts)
{
    const float scale32 = qarray_from_double<float>(scale);
    const float reciprocal = (flags & QARRAY_FLAG_RECIPROCAL) ? qarray_div32(1.0f, scale32) : scale32;
    return qarray_quant32_rule<TIN, TOUT>{
        scale32, reciprocal, zero_point, clip_low, clip_high, fit_low, fit_high, flags, counts};
}

template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_quant32(
    const TIN* __restrict__ x, TOUT* __restrict__ q, long long n, double scale, double zero_point,
    int flags, double clip_low, double clip_high, double fit_low, double fit_high,
    unsigned long long* __restrict__ problems)
{
    qarray_problem_counts counts{0u, 0u};
    qarray_quant32_rule<TIN, TOUT> rule = qarray_make_quant32<TIN, TOUT>(
        scale, zero_point, flags, clip_low, clip_high, fit_low, fit_high, &counts);
    qarray_map_values(x, q, n, rule);
    qarray_add_problems(flags, counts.nonfinite, counts.outside, problems);
}

// Per block: the grid kernels' layout (qarray_parameter_map), [low[p], high[p]] both the clip
// and the range checked, as in qarray_quant_grid.
template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_quant32_grid(
    const TIN* __restrict__ x, TOUT* __restrict__ q, long long n, long long length,
    long long group, long long n_groups, const long long* __restrict__ rows,
    const double* __restrict__ scale, const double* __restrict__ zero,
    const double* __restrict__ low, const double* __restrict__ high, int flags,
    unsigned long long* __restrict__ problems)
{
    qarray_problem_counts counts{0u, 0u};
    auto rule_of = [&](long long p) {
        const double low_p = low[p], high_p = high[p];
        return qarray_make_quant32<TIN, TOUT>(scale[p], zero[p], flags, low_p, high_p, low_p, high_p, &counts);
    };
    qarray_map_grid(x, q, n, length, group, n_groups, rows, rule_of);
    qarray_add_problems(flags, counts.nonfinite, counts.outside, problems);
}

// dequant's float32 rule for one parameter set.
template <typename TIN, typename TOUT> struct qarray_dequant32_rule {
    float scale;
    double zero_point;
    __device__ __forceinline__ TOUT operator()(TIN q) const {
        const float difference = qarray_from_double<float>(__dsub_rn((double)q, zero_point));
        return qarray_from_float<TOUT>(qarray_mul32(difference, scale));
    }
};

template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_dequant32(
    const TIN* __restrict__ q, TOUT* __restrict__ y, long long n, double scale, double zero_point)
{
    qarray_dequant32_rule<TIN, TOUT> rule{qarray_from_double<float>(scale), zero_point};
    qarray_dequant_by(q, y, n, rule);
}

template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_dequant32_grid(
    const TIN* __restrict__ q, TOUT* __restrict__ y, long long n, long long length,
    long long group, long long n_groups, const long long* __restrict__ rows,
    const double* __restrict__ scale, const double* __restrict__ zero)
{
    auto rule_of = [&](long long p) {
        return qarray_dequant32_rule<TIN, TOUT>{qarray_from_double<float>(scale[p]), zero[p]};
    };
    qarray_map_grid(q, y, n, length, group, n_groups, rows, rule_of);
}
"""
"""The device functions of the float32 kernels (after :mod:`~qarray.backends.cupy_kernels`' own)."""

KERNELS: Dict[str, str] = {
    "quant32": r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__) __NAME__(
    const __TIN__* __restrict__ x, __TOUT__* __restrict__ q, long long n, double scale,
    double zero_point, int flags, double clip_low, double clip_high, double fit_low,
    double fit_high, unsigned long long* __restrict__ problems)
{
    qarray_quant32<__TIN__, __TOUT__>(x, q, n, scale, zero_point, flags, clip_low, clip_high, fit_low, fit_high,
                                      problems);
}
""",
    "quant32_grid": r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__) __NAME__(
    const __TIN__* __restrict__ x, __TOUT__* __restrict__ q, long long n, long long length,
    long long group, long long n_groups, const long long* __restrict__ rows,
    const double* __restrict__ scale, const double* __restrict__ zero,
    const double* __restrict__ low, const double* __restrict__ high, int flags,
    unsigned long long* __restrict__ problems)
{
    qarray_quant32_grid<__TIN__, __TOUT__>(x, q, n, length, group, n_groups, rows, scale, zero, low, high, flags,
                                           problems);
}
""",
    "dequant32": r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__) __NAME__(
    const __TIN__* __restrict__ q, __TOUT__* __restrict__ y, long long n, double scale,
    double zero_point)
{
    qarray_dequant32<__TIN__, __TOUT__>(q, y, n, scale, zero_point);
}
""",
    "dequant32_grid": r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__) __NAME__(
    const __TIN__* __restrict__ q, __TOUT__* __restrict__ y, long long n, long long length,
    long long group, long long n_groups, const long long* __restrict__ rows,
    const double* __restrict__ scale, const double* __restrict__ zero)
{
    qarray_dequant32_grid<__TIN__, __TOUT__>(q, y, n, length, group, n_groups, rows, scale, zero);
}
""",
}
"""The kernel templates by kind (``__NAME__``, ``__TIN__``, ``__TOUT__``, ``__BLOCK__`` filled in
by :func:`qarray.backends.cupy_kernels.source`, once per dtype pair)."""
