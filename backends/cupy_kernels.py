"""CUDA sources of the CuPy backend's fused kernels, compiled once on first use.

This module owns the CUDA C++ text and the one compiled module built from it;
:mod:`qarray.backends.cupy_backend` owns when and how the kernels are launched.
Importing it imports nothing from CuPy: :func:`kernel` imports CuPy, compiles
the module (NVRTC, cached by CuPy on disk and here in memory, under a lock so
that concurrent first calls compile once) and returns the named kernel.

The arithmetic is the float64 sequence of the specification, one IEEE
operation at a time: ``rint((double)x / scale + zero_point)`` for quant and
``scale * ((double)q - zero_point)`` for dequant, written with the ``_rn``
intrinsics so no contraction or approximation can change a rounding, and
compiled with ``--fmad=false``. CuPy compiles every kernel with
``-ftz=true``, which flushes float32 subnormals to zero in conversions and
comparisons; float32 values therefore enter and leave float64 through exact
conversions written by hand, so subnormal float32 input and output give the
same bits as NumPy.

Example:
    >>> from qarray.backends.cupy_kernels import kernel_name
    >>> kernel_name("quant", "float32", "int8")
    'qarray_quant_float32_int8'
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple

__all__ = [
    "BLOCK_THREADS",
    "FLAG_CLIP",
    "FLAG_COUNT_NONFINITE",
    "FLAG_COUNT_OUTSIDE",
    "FLOAT_TYPES",
    "HIST_SHARED_BINS",
    "HIST_STATE_INTS",
    "INTEGER_TYPES",
    "COMPILE_OPTIONS",
    "kernel",
    "kernel_name",
    "kernel_names",
    "source",
]

BLOCK_THREADS = 256
"""Threads per block of every kernel (a multiple of the 32-thread warp, as the reductions need)."""

FLAG_CLIP = 1
"""Quant flag: clip the rounded values to ``[clip_low, clip_high]``."""

FLAG_COUNT_NONFINITE = 2
"""Quant flag: count the NaN and ±Inf inputs into ``problems[0]``."""

FLAG_COUNT_OUTSIDE = 4
"""Quant flag: count the (clipped) rounded values outside ``[fit_low, fit_high]`` into ``problems[1]``."""

HIST_SHARED_BINS = 4096
"""Histograms of at most this many bins are counted in shared memory (16 KiB of 32-bit counters per block)."""

HIST_STATE_INTS = 8
"""Length of a device histogram's int64 state: ``[has_data, k, j_lo, nonfinite_seen,
skip_batch, counted_by_scan, scan_k, scan_j_lo]`` (see the histogram kernels)."""

FLOAT_TYPES: Dict[str, str] = {"float32": "float", "float64": "double"}
"""The floating-point dtypes the kernels take or make, with their CUDA C++ types."""

INTEGER_TYPES: Dict[str, str] = {
    "int8": "signed char",
    "uint8": "unsigned char",
    "int16": "short",
    "uint16": "unsigned short",
    "int32": "int",
    "uint32": "unsigned int",
    "int64": "long long",
    "uint64": "unsigned long long",
}
"""The integer dtypes the kernels take or make, with their CUDA C++ types."""

COMPILE_OPTIONS: Tuple[str, ...] = ("--fmad=false", "--std=c++17")
"""NVRTC options: never contract a multiply and an add into one rounding (the _rn intrinsics
already pin each operation; this keeps any other arithmetic honest too), and C++17 (``if
constexpr``). No fast-math option."""

_PRELUDE = r"""
// qarray fused quantization kernels (float64 arithmetic, one IEEE rounding per operation).

#define QARRAY_FULL_MASK 0xffffffffu
#define QARRAY_FLAG_CLIP __FLAG_CLIP__
#define QARRAY_FLAG_COUNT_NONFINITE __FLAG_COUNT_NONFINITE__
#define QARRAY_FLAG_COUNT_OUTSIDE __FLAG_COUNT_OUTSIDE__

__device__ __forceinline__ double qarray_inf() {
    return __longlong_as_double(0x7ff0000000000000LL);
}

// Finite means the exponent bits are not all ones (a bit test: no library call, no flags).
__device__ __forceinline__ bool qarray_isfinite(double x) {
    return (__double_as_longlong(x) & 0x7ff0000000000000LL) != 0x7ff0000000000000LL;
}

// float -> double, exact for every float: CuPy compiles with -ftz=true, under which the
// hardware conversion would flush subnormal floats to zero, so those are converted by hand
// (mantissa * 2^-149, both exact in double).
__device__ __forceinline__ double qarray_to_double(double x) { return x; }
__device__ __forceinline__ double qarray_to_double(float x) {
    const unsigned int bits = __float_as_uint(x);
    if ((bits & 0x7f800000u) != 0u) {
        return (double)x;  // normal, infinite or NaN: the conversion is exact
    }
    const double magnitude = (double)(bits & 0x007fffffu) * __hiloint2double(0x36A00000, 0);
    return (bits & 0x80000000u) ? -magnitude : magnitude;
}

// double -> T rounded to nearest even, as NumPy's astype. For float the subnormal range is
// rounded by hand (the grid there is uniform, 2^-149), since -ftz=true would flush it.
template <typename T> __device__ __forceinline__ T qarray_from_double(double d);
template <> __device__ __forceinline__ double qarray_from_double<double>(double d) { return d; }
template <> __device__ __forceinline__ float qarray_from_double<float>(double d) {
    const double magnitude = fabs(d);
    if (!(magnitude < __hiloint2double(0x38100000, 0))) {  // >= 2^-126, infinite or NaN
        return (float)d;
    }
    // magnitude * 2^149 < 2^23 is exact; rint rounds half to even; 2^23 gives FLT_MIN's bits.
    const unsigned int units = (unsigned int)rint(magnitude * __hiloint2double(0x49400000, 0));
    const unsigned int sign = (__double2hiint(d) < 0) ? 0x80000000u : 0u;
    return __uint_as_float(sign | units);
}

__device__ __forceinline__ unsigned long long qarray_warp_sum(unsigned long long value) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        value += __shfl_down_sync(QARRAY_FULL_MASK, value, offset);
    }
    return value;
}

// NaN-propagating min and max, as numpy.min / numpy.max.
__device__ __forceinline__ double qarray_min(double a, double b) {
    return (a != a || a < b) ? a : b;
}
__device__ __forceinline__ double qarray_max(double a, double b) {
    return (a != a || a > b) ? a : b;
}

// ---- vectors of four values --------------------------------------------------------------
// One aligned load or store moves four values (16 bytes of float32, 4 bytes of int8). The
// element-wise kernels take this path when both arrays start on a vector boundary (CuPy's
// allocations do) and go one value at a time otherwise, and for the last n % 4 values.

template <typename T> struct alignas(4 * sizeof(T)) qarray_vec4 {
    T v[4];
};

template <typename A, typename B>
__device__ __forceinline__ bool qarray_vectors_aligned(const A* a, const B* b) {
    return (reinterpret_cast<unsigned long long>(a) % sizeof(qarray_vec4<A>)) == 0ull
        && (reinterpret_cast<unsigned long long>(b) % sizeof(qarray_vec4<B>)) == 0ull;
}

// y[i] = f(x[i]) for this thread's share of the indices: a grid-stride walk, in vectors of
// four (two in flight) where both arrays are aligned, then the last n % 4 one at a time.
template <typename TIN, typename TOUT, typename F>
__device__ __forceinline__ void qarray_map_values(
    const TIN* __restrict__ x, TOUT* __restrict__ y, long long n, F& f)
{
    const long long stride = (long long)blockDim.x * gridDim.x;
    const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long n_vectors = qarray_vectors_aligned(x, y) ? (n >> 2) : 0LL;
    const qarray_vec4<TIN>* __restrict__ xv = reinterpret_cast<const qarray_vec4<TIN>*>(x);
    qarray_vec4<TOUT>* __restrict__ yv = reinterpret_cast<qarray_vec4<TOUT>*>(y);
    long long v = first;
    for (; v + stride < n_vectors; v += 2 * stride) {
        const qarray_vec4<TIN> a = xv[v];
        const qarray_vec4<TIN> b = xv[v + stride];
        qarray_vec4<TOUT> ya, yb;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            ya.v[k] = f(a.v[k]);
            yb.v[k] = f(b.v[k]);
        }
        yv[v] = ya;
        yv[v + stride] = yb;
    }
    for (; v < n_vectors; v += stride) {
        const qarray_vec4<TIN> a = xv[v];
        qarray_vec4<TOUT> ya;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            ya.v[k] = f(a.v[k]);
        }
        yv[v] = ya;
    }
    for (long long i = 4 * n_vectors + first; i < n; i += stride) {
        y[i] = f(x[i]);
    }
}

// ---- the integers an output type holds ------------------------------------------------------
// Bounds for the shortcut below, whose results lie within +-2^22: wider types are "unbounded".

template <typename T> struct qarray_int_range {
    static constexpr int low = ((T)-1 < (T)0) ? -1073741824 : 0;
    static constexpr int high = 1073741824;
};
template <> struct qarray_int_range<signed char> {
    static constexpr int low = -128;
    static constexpr int high = 127;
};
template <> struct qarray_int_range<unsigned char> {
    static constexpr int low = 0;
    static constexpr int high = 255;
};
template <> struct qarray_int_range<short> {
    static constexpr int low = -32768;
    static constexpr int high = 32767;
};
template <> struct qarray_int_range<unsigned short> {
    static constexpr int low = 0;
    static constexpr int high = 65535;
};

// An integral bound within +-2^30 as an int: true and the value, or false (NaN, a fraction).
// Bounds beyond +-2^30 are clamped: they never bind on results within +-2^22.
__device__ __forceinline__ bool qarray_integral_bound(double bound, int& value) {
    const double limited = fmin(fmax(bound, -1073741824.0), 1073741824.0);
    const double shifted = __dadd_rn(limited, 6755399441055744.0);  // 1.5 * 2^52: rounds to an integer
    value = __double2loint(shifted);
    return bound == bound && __dsub_rn(shifted, 6755399441055744.0) == limited;
}

// ---- quant: the exact float64 rule -------------------------------------------------------

// Kept out of line: the kernels reach it for a few values in ten thousand (see the shortcut),
// and inlined eight times into the vector loops it would crowd their registers.
template <typename TIN, typename TOUT>
__device__ __noinline__ TOUT qarray_quant_exact(
    TIN raw, double scale, double zero_point, int flags, double clip_low, double clip_high,
    double fit_low, double fit_high, unsigned long long& n_nonfinite, unsigned long long& n_outside)
{
    const double value = qarray_to_double(raw);
    double rounded = rint(__dadd_rn(__ddiv_rn(value, scale), zero_point));
    if ((flags & QARRAY_FLAG_COUNT_NONFINITE) && !qarray_isfinite(value)) {
        ++n_nonfinite;
    }
    if (flags & QARRAY_FLAG_CLIP) {
        rounded = (rounded < clip_low) ? clip_low : ((rounded > clip_high) ? clip_high : rounded);
    }
    if ((flags & QARRAY_FLAG_COUNT_OUTSIDE) && !(rounded >= fit_low && rounded <= fit_high)) {
        ++n_outside;  // NaN counts as outside
    }
    return (TOUT)rounded;
}

// ---- quant: the shortcut -----------------------------------------------------------------
// The float64 division is the costly part of quant on a GPU. The shortcut computes the
// candidate c = x * (1/scale) + zero_point in the input's own precision and keeps
// rint(c) when c lies farther than a bound on its error from every half-integer: then the
// exact rint(x / scale + zero_point) is the same integer. Else (ties and their neighbours,
// |c| >= 2^22, NaN, +-Inf, unusual parameters) the element takes the exact rule above.
//
// Error bound, float32 input: 1/scale is rcp(fl32(scale)) (relative error <= 2^-23 + 2^-24),
// the product adds 2^-24 and the sum 2^-24 of |c|, so |c - (x/scale + z)| <= 2^-21.9 (|c| +
// |z|) for scales in [2^-100, 2^100] (subnormal x, flushed to zero, then moves c by less
// than 2^-26) and an integral z (exact in float32 below 2^22). The tolerance
// 2^-21 (|c| + |z| + 1) covers it with room for its own rounding and for the float64
// rule's rounding. float64 input: the same with 2^-52 per operation; tolerance 2^-50 (...).

template <typename C> struct qarray_shortcut {
    C inverse;
    C zero;
    C slack;  // the tolerance's part that does not grow with |c|
    bool usable;
    int clip_low, clip_high;  // the clip (the identity when not clipping)
    int keep_low, keep_high;  // results the shortcut may write: the output type's range
    int fit_low, fit_high;    // results outside are counted (FLAG_COUNT_OUTSIDE)
};

__device__ __forceinline__ void qarray_shortcut_parameters(
    qarray_shortcut<float>& s, double scale, double zero_point)
{
    const double magnitude = fabs(scale);
    int zero_integer = 0;
    s.usable = magnitude >= 0x1p-100 && magnitude <= 0x1p100
        && qarray_integral_bound(zero_point, zero_integer) && fabs(zero_point) < 4194304.0;
    s.inverse = __frcp_rn(__double2float_rn(scale));
    s.zero = __double2float_rn(zero_point);
    s.slack = __fmul_rn(__fadd_rn(fabsf(s.zero), 1.0f), 0x1p-21f);
}

__device__ __forceinline__ void qarray_shortcut_parameters(
    qarray_shortcut<double>& s, double scale, double zero_point)
{
    const double magnitude = fabs(scale);
    s.usable = magnitude >= 0x1p-1000 && magnitude <= 0x1p1000 && fabs(zero_point) < 4194304.0;
    s.inverse = __drcp_rn(scale);
    s.zero = zero_point;
    s.slack = __dmul_rn(__dadd_rn(fabs(zero_point), 1.0), 0x1p-50);
}

template <typename TOUT, typename C>
__device__ __forceinline__ void qarray_shortcut_setup(
    qarray_shortcut<C>& s, double scale, double zero_point, int flags, double clip_low,
    double clip_high, double fit_low, double fit_high)
{
    qarray_shortcut_parameters(s, scale, zero_point);
    s.keep_low = qarray_int_range<TOUT>::low;
    s.keep_high = qarray_int_range<TOUT>::high;
    s.clip_low = -1073741824;
    s.clip_high = 1073741824;
    if (flags & QARRAY_FLAG_CLIP) {
        s.usable = s.usable && qarray_integral_bound(clip_low, s.clip_low)
            && qarray_integral_bound(clip_high, s.clip_high);
    }
    s.fit_low = -1073741824;
    s.fit_high = 1073741824;
    if (flags & QARRAY_FLAG_COUNT_OUTSIDE) {
        s.usable = s.usable && qarray_integral_bound(fit_low, s.fit_low)
            && qarray_integral_bound(fit_high, s.fit_high);
    }
}

// rint(c) when it is certainly the exact rule's integer (see above), else false.
__device__ __forceinline__ bool qarray_shortcut_round(float x, const qarray_shortcut<float>& s, int& rounded) {
    const float c = __fadd_rn(__fmul_rn(x, s.inverse), s.zero);
    const float shifted = __fadd_rn(c, 12582912.0f);  // 1.5 * 2^23: rounds |c| < 2^22 to an integer
    const float distance = __fsub_rn(0.5f, fabsf(__fsub_rn(c, __fsub_rn(shifted, 12582912.0f))));
    const float tolerance = __fadd_rn(__fmul_rn(fabsf(c), 0x1p-21f), s.slack);
    rounded = __float_as_int(shifted) - 0x4B400000;
    return fabsf(c) < 4194304.0f && distance > tolerance;  // false for NaN and +-Inf
}

__device__ __forceinline__ bool qarray_shortcut_round(double x, const qarray_shortcut<double>& s, int& rounded) {
    const double c = __dadd_rn(__dmul_rn(x, s.inverse), s.zero);
    const double shifted = __dadd_rn(c, 6755399441055744.0);  // 1.5 * 2^52
    const double distance = __dsub_rn(0.5, fabs(__dsub_rn(c, __dsub_rn(shifted, 6755399441055744.0))));
    const double tolerance = __dadd_rn(__dmul_rn(fabs(c), 0x1p-50), s.slack);
    rounded = __double2loint(shifted);
    return fabs(c) < 4194304.0 && distance > tolerance;
}

// One value: the shortcut where it is certain, else the exact rule; the counts as specified.
template <typename TIN, typename TOUT>
__device__ __forceinline__ TOUT qarray_quant_value(
    TIN raw, const qarray_shortcut<TIN>& s, double scale, double zero_point, int flags,
    double clip_low, double clip_high, double fit_low, double fit_high,
    unsigned long long& n_nonfinite, unsigned long long& n_outside)
{
    int rounded = 0;
    if (s.usable && qarray_shortcut_round(raw, s, rounded)) {
        rounded = (rounded < s.clip_low) ? s.clip_low : ((rounded > s.clip_high) ? s.clip_high : rounded);
        if (rounded >= s.keep_low && rounded <= s.keep_high) {
            if ((flags & QARRAY_FLAG_COUNT_OUTSIDE) && (rounded < s.fit_low || rounded > s.fit_high)) {
                ++n_outside;
            }
            return (TOUT)rounded;  // a finite input: nothing to count as non-finite
        }
    }
    return qarray_quant_exact<TIN, TOUT>(raw, scale, zero_point, flags, clip_low, clip_high, fit_low,
                                         fit_high, n_nonfinite, n_outside);
}

// The problem counts of a block, added to problems[0] and problems[1] (every thread calls it).
__device__ __forceinline__ void qarray_add_problems(
    int flags, unsigned long long n_nonfinite, unsigned long long n_outside,
    unsigned long long* __restrict__ problems)
{
    // flags are the same for every thread, and every thread of the block gets here, so the
    // full-warp shuffles are well defined (blockDim.x is a multiple of 32).
    if (flags & (QARRAY_FLAG_COUNT_NONFINITE | QARRAY_FLAG_COUNT_OUTSIDE)) {
        n_nonfinite = qarray_warp_sum(n_nonfinite);
        n_outside = qarray_warp_sum(n_outside);
        if ((threadIdx.x & 31u) == 0u) {
            if (n_nonfinite != 0ull) atomicAdd(problems, n_nonfinite);
            if (n_outside != 0ull) atomicAdd(problems + 1, n_outside);
        }
    }
}

// ---- quant -------------------------------------------------------------------------------

template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_quant(
    const TIN* __restrict__ x, TOUT* __restrict__ q, long long n, double scale,
    double zero_point, int flags, double clip_low, double clip_high, double fit_low,
    double fit_high, unsigned long long* __restrict__ problems)
{
    qarray_shortcut<TIN> s;
    qarray_shortcut_setup<TOUT>(s, scale, zero_point, flags, clip_low, clip_high, fit_low, fit_high);
    unsigned long long n_nonfinite = 0ull;
    unsigned long long n_outside = 0ull;
    auto f = [&](TIN value) {
        return qarray_quant_value<TIN, TOUT>(value, s, scale, zero_point, flags, clip_low, clip_high,
                                             fit_low, fit_high, n_nonfinite, n_outside);
    };
    qarray_map_values(x, q, n, f);
    qarray_add_problems(flags, n_nonfinite, n_outside, problems);
}

// ---- dequant -----------------------------------------------------------------------------

template <typename TIN, typename TOUT>
__device__ __forceinline__ TOUT qarray_dequant_value(TIN q, double scale, double zero_point) {
    return qarray_from_double<TOUT>(__dmul_rn(scale, __dsub_rn((double)q, zero_point)));
}

// One-byte integers take 256 values: each block tabulates them (the same rule) in shared
// memory and looks every value up. Wider integers are computed one by one.
template <typename TIN, typename TOUT> struct qarray_dequant_rule {
    double scale;
    double zero_point;
    const TOUT* table;
    __device__ __forceinline__ TOUT operator()(TIN q) const {
        if constexpr (sizeof(TIN) == 1) {
            return table[(unsigned char)q];
        } else {
            return qarray_dequant_value<TIN, TOUT>(q, scale, zero_point);
        }
    }
};

template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_dequant(
    const TIN* __restrict__ q, TOUT* __restrict__ y, long long n, double scale,
    double zero_point)
{
    __shared__ TOUT table[256];
    qarray_dequant_rule<TIN, TOUT> rule{scale, zero_point, table};
    if constexpr (sizeof(TIN) == 1) {
        for (int t = threadIdx.x; t < 256; t += blockDim.x) {
            const int value = ((TIN)-1 < (TIN)0 && t >= 128) ? t - 256 : t;  // the byte's integer
            table[t] = qarray_dequant_value<TIN, TOUT>((TIN)value, scale, zero_point);
        }
        __syncthreads();
    }
    qarray_map_values(q, y, n, rule);
}

// ---- per-block parameters (per channel, per group) -------------------------------------------
// The values are a C-order (rows, length) matrix: row r takes grid row rows[r], and its values
// [g * group, (g + 1) * group) grid column g; parameter p = rows[r] * n_groups + g. With
// QARRAY_FLAG_CLIP the rounded value is clipped to [low[p], high[p]]; with
// QARRAY_FLAG_COUNT_OUTSIDE the ones outside it are counted.

// Unsigned 32-bit division by a divisor fixed for the whole launch, as a multiply and shifts
// (Granlund and Montgomery): exact for every 32-bit numerator.
struct qarray_divider {
    unsigned int divisor;
    unsigned int multiplier;
    unsigned int shift;
    __device__ __forceinline__ void setup(unsigned int d) {
        divisor = d;
        unsigned int bits = 0u;
        while (bits < 32u && (1ull << bits) < (unsigned long long)d) {
            ++bits;  // bits = ceil(log2(d))
        }
        shift = bits;
        multiplier = (unsigned int)((((1ull << bits) - (unsigned long long)d) << 32) / d + 1ull);
    }
    __device__ __forceinline__ unsigned int divide(unsigned int numerator) const {
        if (shift == 0u) {
            return numerator;  // divisor 1
        }
        const unsigned int high = __umulhi(numerator, multiplier);
        return (high + ((numerator - high) >> 1)) >> (shift - 1u);
    }
};

// Where element e of the (rows, length) matrix takes its parameters: 32-bit dividers when
// every index fits in 32 bits (one multiply-high per division), 64-bit division otherwise.
struct qarray_parameter_map {
    long long length;
    long long group;
    long long n_groups;
    const long long* __restrict__ rows;
    bool narrow;
    qarray_divider by_length;
    qarray_divider by_group;
    __device__ __forceinline__ void setup(long long n, long long length_, long long group_,
                                          long long n_groups_, const long long* __restrict__ rows_) {
        length = length_;
        group = group_;
        n_groups = n_groups_;
        rows = rows_;
        narrow = n <= 0xffffffffLL && length_ <= 0xffffffffLL && group_ <= 0xffffffffLL;
        if (narrow) {
            by_length.setup((unsigned int)length_);
            by_group.setup((unsigned int)group_);
        }
    }
    __device__ __forceinline__ long long operator()(long long e) const {
        if (narrow) {
            const unsigned int row = by_length.divide((unsigned int)e);
            const unsigned int column = (unsigned int)e - row * (unsigned int)length;
            return rows[row] * n_groups + (long long)by_group.divide(column);
        }
        const long long row = e / length;
        return rows[row] * n_groups + (e - row * length) / group;
    }
};

// y[i] = rule_at(p)(x[i]), p element i's parameter set: in vectors of four where both arrays
// are aligned and rows and groups are multiples of four (the four then share p, and the
// rule is prepared once for them), one value at a time otherwise and for the tail.
template <typename TIN, typename TOUT, typename A>
__device__ __forceinline__ void qarray_map_grid(
    const TIN* __restrict__ x, TOUT* __restrict__ y, long long n, long long length, long long group,
    long long n_groups, const long long* __restrict__ rows, A& rule_at)
{
    qarray_parameter_map where;
    where.setup(n, length, group, n_groups, rows);
    const long long stride = (long long)blockDim.x * gridDim.x;
    const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool by_vector = qarray_vectors_aligned(x, y) && (length & 3LL) == 0LL && (group & 3LL) == 0LL;
    const long long n_vectors = by_vector ? (n >> 2) : 0LL;
    const qarray_vec4<TIN>* __restrict__ xv = reinterpret_cast<const qarray_vec4<TIN>*>(x);
    qarray_vec4<TOUT>* __restrict__ yv = reinterpret_cast<qarray_vec4<TOUT>*>(y);
    for (long long v = first; v < n_vectors; v += stride) {
        const qarray_vec4<TIN> a = xv[v];
        const auto rule = rule_at(where(4 * v));
        qarray_vec4<TOUT> ya;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            ya.v[k] = rule(a.v[k]);
        }
        yv[v] = ya;
    }
    for (long long i = 4 * n_vectors + first; i < n; i += stride) {
        y[i] = rule_at(where(i))(x[i]);
    }
}

template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_quant_grid(
    const TIN* __restrict__ x, TOUT* __restrict__ q, long long n, long long length,
    long long group, long long n_groups, const long long* __restrict__ rows,
    const double* __restrict__ scale, const double* __restrict__ zero,
    const double* __restrict__ low, const double* __restrict__ high, int flags,
    unsigned long long* __restrict__ problems)
{
    unsigned long long n_nonfinite = 0ull;
    unsigned long long n_outside = 0ull;
    auto rule_at = [&](long long p) {
        const double s_p = scale[p], z_p = zero[p], low_p = low[p], high_p = high[p];
        qarray_shortcut<TIN> s;
        qarray_shortcut_setup<TOUT>(s, s_p, z_p, flags, low_p, high_p, low_p, high_p);
        return [=, &n_nonfinite, &n_outside](TIN value) {
            return qarray_quant_value<TIN, TOUT>(value, s, s_p, z_p, flags, low_p, high_p, low_p, high_p,
                                                 n_nonfinite, n_outside);
        };
    };
    qarray_map_grid(x, q, n, length, group, n_groups, rows, rule_at);
    qarray_add_problems(flags, n_nonfinite, n_outside, problems);
}

template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_dequant_grid(
    const TIN* __restrict__ q, TOUT* __restrict__ y, long long n, long long length,
    long long group, long long n_groups, const long long* __restrict__ rows,
    const double* __restrict__ scale, const double* __restrict__ zero)
{
    auto rule_at = [&](long long p) {
        const double s_p = scale[p], z_p = zero[p];
        return [=](TIN value) { return qarray_dequant_value<TIN, TOUT>(value, s_p, z_p); };
    };
    qarray_map_grid(q, y, n, length, group, n_groups, rows, rule_at);
}

// ---- min / max ---------------------------------------------------------------------------
// Folded as order keys, integers whose order is the floats' (negative values have their
// magnitude bits flipped): exact for subnormals under -ftz=true, no float comparisons. NaN
// is tracked apart (as its largest magnitude bits) and wins at the end, as in numpy.min.

template <typename T> struct qarray_float_bits;
template <> struct qarray_float_bits<float> {
    typedef int key;
    static constexpr int magnitude_mask = 0x7fffffff;
    static constexpr int infinity = 0x7f800000;
    __device__ static __forceinline__ int bits(float x) { return __float_as_int(x); }
    __device__ static __forceinline__ double value(int b) { return qarray_to_double(__int_as_float(b)); }
};
template <> struct qarray_float_bits<double> {
    typedef long long key;
    static constexpr long long magnitude_mask = 0x7fffffffffffffffLL;
    static constexpr long long infinity = 0x7ff0000000000000LL;
    __device__ static __forceinline__ long long bits(double x) { return __double_as_longlong(x); }
    __device__ static __forceinline__ double value(long long b) { return __longlong_as_double(b); }
};

// The order key of a float's bits, and back (the map is its own inverse).
template <typename K> __device__ __forceinline__ K qarray_order_key(K bits) {
    return bits ^ ((bits >> (8 * sizeof(K) - 1)) & (K)(~((unsigned long long)1 << (8 * sizeof(K) - 1))));
}

template <typename T> struct qarray_minmax_fold {
    typedef typename qarray_float_bits<T>::key K;
    K low;   // order key of the smallest value folded (+Inf's when none)
    K high;  // order key of the largest (-Inf's when none)
    K nan;   // largest NaN magnitude bits seen, 0 when none
    __device__ __forceinline__ void start() {
        low = qarray_order_key<K>(qarray_float_bits<T>::infinity);
        high = qarray_order_key<K>((K)(qarray_float_bits<T>::infinity | ~qarray_float_bits<T>::magnitude_mask));
        nan = 0;
    }
    __device__ __forceinline__ void add(T x, int omit_nonfinite) {
        const K bits = qarray_float_bits<T>::bits(x);
        const K magnitude = bits & qarray_float_bits<T>::magnitude_mask;
        if (magnitude >= qarray_float_bits<T>::infinity) {
            if (omit_nonfinite) {
                return;
            }
            if (magnitude > qarray_float_bits<T>::infinity) {
                nan = (magnitude > nan) ? magnitude : nan;
                return;
            }
        }
        const K key = qarray_order_key<K>(bits);
        low = (key < low) ? key : low;
        high = (key > high) ? key : high;
    }
    // Block-wide fold; the result is valid in thread 0. Every thread must call it.
    __device__ __forceinline__ void reduce_block() {
        __shared__ K shared[3][32];
        for (int offset = 16; offset > 0; offset >>= 1) {
            fold(__shfl_down_sync(QARRAY_FULL_MASK, low, offset), __shfl_down_sync(QARRAY_FULL_MASK, high, offset),
                 __shfl_down_sync(QARRAY_FULL_MASK, nan, offset));
        }
        const unsigned int lane = threadIdx.x & 31u;
        const unsigned int warp = threadIdx.x >> 5;
        if (lane == 0u) {
            shared[0][warp] = low;
            shared[1][warp] = high;
            shared[2][warp] = nan;
        }
        __syncthreads();
        if (warp == 0u) {
            const unsigned int n_warps = (blockDim.x + 31u) >> 5;
            start();
            if (lane < n_warps) {
                fold(shared[0][lane], shared[1][lane], shared[2][lane]);
            }
            for (int offset = 16; offset > 0; offset >>= 1) {
                fold(__shfl_down_sync(QARRAY_FULL_MASK, low, offset),
                     __shfl_down_sync(QARRAY_FULL_MASK, high, offset),
                     __shfl_down_sync(QARRAY_FULL_MASK, nan, offset));
            }
        }
    }
    __device__ __forceinline__ void fold(K other_low, K other_high, K other_nan) {
        low = (other_low < low) ? other_low : low;
        high = (other_high > high) ? other_high : high;
        nan = (other_nan > nan) ? other_nan : nan;
    }
    __device__ __forceinline__ double low_value() const {
        return qarray_float_bits<T>::value(nan ? nan : qarray_order_key<K>(low));
    }
    __device__ __forceinline__ double high_value() const {
        return qarray_float_bits<T>::value(nan ? nan : qarray_order_key<K>(high));
    }
};

// Calls visit(value) on each value of this thread's share of x: a grid-stride walk, in
// vectors of four (two in flight) where x is aligned, then the last n % 4 one at a time.
template <typename T, typename V>
__device__ __forceinline__ void qarray_each_value(const T* __restrict__ x, long long n, V& visit) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long n_vectors = qarray_vectors_aligned(x, x) ? (n >> 2) : 0LL;
    const qarray_vec4<T>* __restrict__ xv = reinterpret_cast<const qarray_vec4<T>*>(x);
    long long v = first;
    for (; v + stride < n_vectors; v += 2 * stride) {
        const qarray_vec4<T> a = xv[v];
        const qarray_vec4<T> b = xv[v + stride];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            visit(a.v[k]);
            visit(b.v[k]);
        }
    }
    for (; v < n_vectors; v += stride) {
        const qarray_vec4<T> a = xv[v];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            visit(a.v[k]);
        }
    }
    for (long long i = 4 * n_vectors + first; i < n; i += stride) {
        visit(x[i]);
    }
}

// Each thread folds its share of x, then the block (the result in thread 0).
template <typename T>
__device__ __forceinline__ void qarray_minmax_share(
    const T* __restrict__ x, long long n, int omit_nonfinite, qarray_minmax_fold<T>& fold)
{
    fold.start();
    auto visit = [&](T value) { fold.add(value, omit_nonfinite); };
    qarray_each_value(x, n, visit);
    fold.reduce_block();
}

// First pass: each block folds its share and writes (min, max) to partial[2 * block].
template <typename T>
__device__ __forceinline__ void qarray_minmax_partial(
    const T* __restrict__ x, long long n, int omit_nonfinite, double* __restrict__ partial)
{
    qarray_minmax_fold<T> fold;
    qarray_minmax_share<T>(x, n, omit_nonfinite, fold);
    if (threadIdx.x == 0u) {
        partial[2 * (long long)blockIdx.x] = fold.low_value();
        partial[2 * (long long)blockIdx.x + 1] = fold.high_value();
    }
}

// Block-wide min and max of doubles (NaN propagates); the result is valid in thread 0.
__device__ __forceinline__ void qarray_block_minmax(double& low, double& high) {
    __shared__ double shared_low[32];
    __shared__ double shared_high[32];
    for (int offset = 16; offset > 0; offset >>= 1) {
        low = qarray_min(low, __shfl_down_sync(QARRAY_FULL_MASK, low, offset));
        high = qarray_max(high, __shfl_down_sync(QARRAY_FULL_MASK, high, offset));
    }
    const unsigned int lane = threadIdx.x & 31u;
    const unsigned int warp = threadIdx.x >> 5;
    if (lane == 0u) {
        shared_low[warp] = low;
        shared_high[warp] = high;
    }
    __syncthreads();
    if (warp == 0u) {
        const unsigned int n_warps = (blockDim.x + 31u) >> 5;
        low = (lane < n_warps) ? shared_low[lane] : qarray_inf();
        high = (lane < n_warps) ? shared_high[lane] : -qarray_inf();
        for (int offset = 16; offset > 0; offset >>= 1) {
            low = qarray_min(low, __shfl_down_sync(QARRAY_FULL_MASK, low, offset));
            high = qarray_max(high, __shfl_down_sync(QARRAY_FULL_MASK, high, offset));
        }
    }
}

// Second pass, one block: fold the partial results into the two 0-d outputs.
template <typename T>
__device__ __forceinline__ void qarray_minmax_final(
    const double* __restrict__ partial, long long count, T* __restrict__ out_low,
    T* __restrict__ out_high)
{
    double low = qarray_inf();
    double high = -qarray_inf();
    for (long long i = threadIdx.x; i < count; i += blockDim.x) {
        low = qarray_min(low, partial[2 * i]);
        high = qarray_max(high, partial[2 * i + 1]);
    }
    qarray_block_minmax(low, high);
    if (threadIdx.x == 0u) {
        *out_low = qarray_from_double<T>(low);
        *out_high = qarray_from_double<T>(high);
    }
}
"""

_HISTOGRAM = r"""
#define QARRAY_HIST_SHARED_BINS __HIST_SHARED_BINS__

// ---- dyadic histograms (qarray.histogram) --------------------------------------------------
// State of one histogram, on the device: ints = [has_data, k, j_lo, nonfinite_seen,
// skip_batch, counted_by_scan, scan_k, scan_j_lo], bounds = [min, max], and a buffer of
// max_bins counts (two, used in turn). A batch takes four launches: the scan (min/max per
// block, and each value counted at the present k and j_lo where its bin is among the
// present ones), the min/max of the blocks, the plan, and the bin pass, which counts what
// the scan could not and returns at once when the scan counted everything.
// counted_by_scan: 0 the scan counted nothing (no histogram yet), 1 it counted the values
// whose bin at (scan_k, scan_j_lo) lies in [0, max_bins), 2 it counted every value.

// 2**k exactly, for k in [-1074, 1023] (built from its bits: no library call, subnormals too).
__device__ __forceinline__ double qarray_pow2(long long k) {
    if (k >= -1022LL) {
        return __longlong_as_double((k + 1023LL) << 52);
    }
    return __longlong_as_double(1LL << (k + 1074LL));
}

// floor(x / 2**k), exact while |x| / 2**k < 2**53; a negative x whose quotient underflows to
// -0.0 is in bin -1 (as qarray.histogram.bin_floor).
__device__ __forceinline__ long long qarray_bin_floor(double x, long long k) {
    const double quotient = __ddiv_rn(x, qarray_pow2(k));
    if (quotient == 0.0 && x < 0.0) {
        return -1LL;
    }
    return (long long)floor(quotient);
}

// The k of the specification: the binary search of qarray.histogram.choose_k, step for step.
__device__ long long qarray_choose_k(double lo, double hi, long long max_bins) {
    const double largest = fmax(fabs(lo), fabs(hi));
    long long low = -1074LL;
    if (largest > 0.0) {
        int exponent = 0;
        frexp(largest, &exponent);
        if ((long long)exponent - 53LL > low) {
            low = (long long)exponent - 53LL;
        }
    }
    long long high = 1023LL;
    while (low < high) {
        const long long middle = (low + high) >> 1;  // floor((low + high) / 2), as Python's //
        if (qarray_bin_floor(hi, middle) - qarray_bin_floor(lo, middle) + 1LL <= max_bins) {
            high = middle;
        } else {
            low = middle + 1LL;
        }
    }
    return low;
}

// The bins floor(x / 2**k) - j_lo in [0, max_bins) of one (k, j_lo). For float32 values it
// works in float32 where that is exact: 2**-k a normal float of at most 2**100 (x * 2**-k is
// then exact, or a subnormal product that -ftz=true flushes to zero, in bin 0 or -1 as it
// should be; a subnormal x moves it by less than 2**-26), and every bin of [j_lo, j_lo +
// max_bins) within +-2**22, so a product beyond that magnitude is outside them all.
struct qarray_bin_map {
    long long k;
    long long j_lo;
    long long max_bins;
    bool divide;  // 2**-k is not a double: divide by 2**k
    double factor;
    bool narrow;  // the float32 way holds
    float factor32;
    int j_lo32;
    __device__ __forceinline__ void setup(long long k_, long long j_lo_, long long max_bins_) {
        k = k_;
        j_lo = j_lo_;
        max_bins = max_bins_;
        // x * 2**-k equals x / 2**k bit for bit wherever 2**-k is a double (k >= -1023).
        divide = k < -1023LL;
        factor = divide ? qarray_pow2(k) : qarray_pow2(-k);
        narrow = k >= -100LL && k <= 126LL && j_lo > -4194304LL && j_lo + max_bins < 4194304LL;
        factor32 = __int_as_float(narrow ? (int)((127LL - k) << 23) : 0);
        j_lo32 = narrow ? (int)j_lo : 0;
    }
    // The bin of x relative to j_lo when it is in [0, max_bins); -1 otherwise, NaN and +-Inf too.
    __device__ __forceinline__ long long operator()(double x) const {
        if (!qarray_isfinite(x)) {
            return -1LL;
        }
        const double quotient = divide ? __ddiv_rn(x, factor) : __dmul_rn(x, factor);
        long long index = (quotient == 0.0 && x < 0.0) ? -1LL : (long long)floor(quotient);
        index -= j_lo;
        return (index >= 0LL && index < max_bins) ? index : -1LL;
    }
    __device__ __forceinline__ long long operator()(float x) const {
        if (!narrow) {
            return (*this)(qarray_to_double(x));
        }
        const unsigned int bits = __float_as_uint(x);
        if ((bits & 0x7f800000u) == 0x7f800000u) {
            return -1LL;
        }
        const float y = __fmul_rn(x, factor32);
        if (!(fabsf(y) < 4194304.0f)) {
            return -1LL;
        }
        const float shifted = __fadd_rn(y, 12582912.0f);  // 1.5 * 2^23: y rounded to an integer
        int bin = __float_as_int(shifted) - 0x4B400000;
        if (__fsub_rn(shifted, 12582912.0f) > y) {
            --bin;  // rounded up: floor is one less
        }
        if (y == 0.0f && (bits & 0x80000000u) != 0u && (bits & 0x7fffffffu) != 0u) {
            bin = -1;  // a negative x whose quotient underflowed
        }
        bin -= j_lo32;
        return (bin >= 0 && bin < (int)max_bins) ? (long long)bin : -1LL;
    }
};

// A block's counts: 32-bit counters in shared memory when the histogram is small enough (the
// launch keeps every block below 2**31 values), added to the global counts at the end;
// otherwise straight into the global counts. start and finish: every thread, same `active`.
struct qarray_block_counts {
    unsigned int* shared;
    unsigned long long* __restrict__ counts;
    long long max_bins;
    bool use_shared;
    __device__ __forceinline__ void start(bool active) {
        if (active && use_shared) {
            for (long long t = threadIdx.x; t < max_bins; t += blockDim.x) {
                shared[t] = 0u;
            }
            __syncthreads();
        }
    }
    __device__ __forceinline__ void add(long long bin) {
        if (use_shared) {
            atomicAdd(shared + bin, 1u);
        } else {
            atomicAdd(counts + bin, 1ull);
        }
    }
    __device__ __forceinline__ void finish(bool active) {
        if (active && use_shared) {
            __syncthreads();
            for (long long t = threadIdx.x; t < max_bins; t += blockDim.x) {
                const unsigned int count = shared[t];
                if (count != 0u) {
                    atomicAdd(counts + t, (unsigned long long)count);
                }
            }
        }
    }
};

// The scan: min/max of the batch per block (into partial[2 * block], as the min/max pass),
// and, when the histogram has data, each value counted at its present k and j_lo into counts
// where its bin is one of the present ones.
template <typename T>
__device__ __forceinline__ void qarray_hist_scan(
    const T* __restrict__ x, long long n, int omit_nonfinite, const long long* __restrict__ ints,
    long long max_bins, unsigned long long* __restrict__ counts, double* __restrict__ partial,
    int use_shared)
{
    __shared__ unsigned int qarray_hist_shared[QARRAY_HIST_SHARED_BINS];
    const bool counting = ints[0] != 0LL;  // the same for every thread
    qarray_bin_map map;
    map.setup(ints[1], ints[2], max_bins);
    qarray_block_counts block{qarray_hist_shared, counts, max_bins, use_shared != 0};
    block.start(counting);
    qarray_minmax_fold<T> fold;
    fold.start();
    auto visit = [&](T value) {
        fold.add(value, omit_nonfinite);
        if (counting) {
            const long long bin = map(value);
            if (bin >= 0LL) {
                block.add(bin);
            }
        }
    };
    qarray_each_value(x, n, visit);
    fold.reduce_block();
    if (threadIdx.x == 0u) {
        partial[2 * (long long)blockIdx.x] = fold.low_value();
        partial[2 * (long long)blockIdx.x + 1] = fold.high_value();
    }
    block.finish(counting);
}

// One block: fold the batch's (min, max) into the state, choose the new k and j_lo, and write
// the old counts (the scan's included) coarsened to the new width into new_counts (a plain
// copy when k stays); record what the scan counted for the bin pass.
template <typename T>
__device__ __forceinline__ void qarray_hist_plan(
    const T* __restrict__ batch_low, const T* __restrict__ batch_high, int omit_nonfinite,
    long long max_bins, long long* __restrict__ ints, double* __restrict__ bounds,
    const unsigned long long* __restrict__ old_counts, unsigned long long* __restrict__ new_counts)
{
    __shared__ long long plan[4];  // shift, old j_lo, new j_lo, whether there are old counts
    if (threadIdx.x == 0u) {
        const double lo = qarray_to_double(*batch_low);
        const double hi = qarray_to_double(*batch_high);
        const long long had = ints[0];
        const long long old_k = ints[1];
        const long long old_j_lo = ints[2];
        long long shift = 0LL;
        long long new_j_lo = old_j_lo;
        long long counted = 0LL;
        if (!(qarray_isfinite(lo) && qarray_isfinite(hi))) {
            // NaN/+-Inf under "raise" (remembered, raised when read); under "omit", NaN-free
            // (+Inf, -Inf) means the batch held no finite value. Either way it adds nothing.
            if (!omit_nonfinite) {
                ints[3] = 1LL;
            }
            ints[4] = 1LL;
        } else {
            double new_lo = lo;
            double new_hi = hi;
            if (had) {
                new_lo = fmin(bounds[0], lo);
                new_hi = fmax(bounds[1], hi);
                // The scan counted every value whose bin at the old k is an old bin: all of
                // them when the batch's extremes are (bins grow with the value).
                const long long lo_bin = qarray_bin_floor(lo, old_k) - old_j_lo;
                const long long hi_bin = qarray_bin_floor(hi, old_k) - old_j_lo;
                counted = (lo_bin >= 0LL && hi_bin < max_bins) ? 2LL : 1LL;
            }
            new_lo = __dadd_rn(new_lo, 0.0);  // -0.0 and 0.0 are one value: keep +0.0
            new_hi = __dadd_rn(new_hi, 0.0);
            const long long new_k = qarray_choose_k(new_lo, new_hi, max_bins);
            new_j_lo = qarray_bin_floor(new_lo, new_k);
            if (had) {
                shift = new_k - old_k;  // >= 0: k only grows with the range
                if (shift > 63LL) {
                    shift = 63LL;  // |j| < 2**53: a shift by 63 already gives 0 or -1
                }
            }
            ints[0] = 1LL;
            ints[1] = new_k;
            ints[2] = new_j_lo;
            ints[4] = 0LL;
            bounds[0] = new_lo;
            bounds[1] = new_hi;
        }
        ints[5] = counted;
        ints[6] = old_k;
        ints[7] = old_j_lo;
        plan[0] = shift;
        plan[1] = old_j_lo;
        plan[2] = new_j_lo;
        plan[3] = had;
    }
    __syncthreads();
    const long long shift = plan[0];
    const long long old_j_lo = plan[1];
    const long long new_j_lo = plan[2];
    const long long had = plan[3];
    for (long long t = threadIdx.x; t < max_bins; t += blockDim.x) {
        new_counts[t] = 0ull;
    }
    __syncthreads();  // the zeros are visible to the whole block before any addition
    if (had) {
        for (long long i = threadIdx.x; i < max_bins; i += blockDim.x) {
            const unsigned long long count = old_counts[i];
            if (count != 0ull) {
                const long long target = ((old_j_lo + i) >> shift) - new_j_lo;
                if (target >= 0LL && target < max_bins) {
                    atomicAdd(new_counts + target, count);
                }
            }
        }
    }
}

// The bin pass: count each finite value into bin floor(x / 2**k) - j_lo (k, j_lo read from
// the state), leaving out what the scan counted (counted_by_scan, at scan_k and scan_j_lo).
template <typename T>
__device__ __forceinline__ void qarray_hist_bin(
    const T* __restrict__ x, long long n, const long long* __restrict__ ints, long long max_bins,
    unsigned long long* __restrict__ counts, int use_shared)
{
    __shared__ unsigned int qarray_hist_shared[QARRAY_HIST_SHARED_BINS];
    if (ints[4] != 0LL || ints[5] == 2LL) {
        return;  // skipped or all counted: the same for every thread, so no barrier is missed
    }
    const bool scanned = ints[5] == 1LL;
    qarray_bin_map map;
    map.setup(ints[1], ints[2], max_bins);
    qarray_bin_map scan_map;
    scan_map.setup(ints[6], ints[7], max_bins);
    qarray_block_counts block{qarray_hist_shared, counts, max_bins, use_shared != 0};
    block.start(true);
    auto visit = [&](T value) {
        if (scanned && scan_map(value) >= 0LL) {
            return;
        }
        const long long bin = map(value);
        if (bin >= 0LL) {
            block.add(bin);
        }
    };
    qarray_each_value(x, n, visit);
    block.finish(true);
}
"""

_HISTOGRAM_KERNELS = r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__) __SCAN__(
    const __T__* __restrict__ x, long long n, int omit_nonfinite, const long long* __restrict__ ints,
    long long max_bins, unsigned long long* __restrict__ counts, double* __restrict__ partial,
    int use_shared)
{
    qarray_hist_scan<__T__>(x, n, omit_nonfinite, ints, max_bins, counts, partial, use_shared);
}

extern "C" __global__ void __launch_bounds__(__BLOCK__) __PLAN__(
    const __T__* __restrict__ batch_low, const __T__* __restrict__ batch_high, int omit_nonfinite,
    long long max_bins, long long* __restrict__ ints, double* __restrict__ bounds,
    const unsigned long long* __restrict__ old_counts, unsigned long long* __restrict__ new_counts)
{
    qarray_hist_plan<__T__>(batch_low, batch_high, omit_nonfinite, max_bins, ints, bounds,
                            old_counts, new_counts);
}

extern "C" __global__ void __launch_bounds__(__BLOCK__) __BIN__(
    const __T__* __restrict__ x, long long n, const long long* __restrict__ ints,
    long long max_bins, unsigned long long* __restrict__ counts, int use_shared)
{
    qarray_hist_bin<__T__>(x, n, ints, max_bins, counts, use_shared);
}
"""

_QUANT = r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__) __NAME__(
    const __TIN__* __restrict__ x, __TOUT__* __restrict__ q, long long n, double scale,
    double zero_point, int flags, double clip_low, double clip_high, double fit_low,
    double fit_high, unsigned long long* __restrict__ problems)
{
    qarray_quant<__TIN__, __TOUT__>(x, q, n, scale, zero_point, flags, clip_low, clip_high,
                                    fit_low, fit_high, problems);
}
"""

_DEQUANT = r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__) __NAME__(
    const __TIN__* __restrict__ q, __TOUT__* __restrict__ y, long long n, double scale,
    double zero_point)
{
    qarray_dequant<__TIN__, __TOUT__>(q, y, n, scale, zero_point);
}
"""

_QUANT_GRID = r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__) __NAME__(
    const __TIN__* __restrict__ x, __TOUT__* __restrict__ q, long long n, long long length,
    long long group, long long n_groups, const long long* __restrict__ rows,
    const double* __restrict__ scale, const double* __restrict__ zero,
    const double* __restrict__ low, const double* __restrict__ high, int flags,
    unsigned long long* __restrict__ problems)
{
    qarray_quant_grid<__TIN__, __TOUT__>(x, q, n, length, group, n_groups, rows, scale, zero,
                                         low, high, flags, problems);
}
"""

_DEQUANT_GRID = r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__) __NAME__(
    const __TIN__* __restrict__ q, __TOUT__* __restrict__ y, long long n, long long length,
    long long group, long long n_groups, const long long* __restrict__ rows,
    const double* __restrict__ scale, const double* __restrict__ zero)
{
    qarray_dequant_grid<__TIN__, __TOUT__>(q, y, n, length, group, n_groups, rows, scale, zero);
}
"""

_MINMAX = r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__) __PARTIAL__(
    const __T__* __restrict__ x, long long n, int omit_nonfinite, double* __restrict__ partial)
{
    qarray_minmax_partial<__T__>(x, n, omit_nonfinite, partial);
}

extern "C" __global__ void __launch_bounds__(__BLOCK__) __FINAL__(
    const double* __restrict__ partial, long long count, __T__* __restrict__ out_low,
    __T__* __restrict__ out_high)
{
    qarray_minmax_final<__T__>(partial, count, out_low, out_high);
}
"""


def kernel_name(kind: str, first: str, second: Optional[str] = None) -> str:
    """Return the CUDA name of a kernel.

    Args:
        kind: ``"quant"`` / ``"quant_grid"`` (float dtype in, integer dtype out; the grid
            kernels take one parameter set per block), ``"dequant"`` / ``"dequant_grid"``
            (integer in, float out), ``"minmax_partial"``, ``"minmax_final"``, ``"hist_scan"``,
            ``"hist_plan"`` or ``"hist_bin"`` (one float dtype).
        first: the input dtype's name.
        second: the output dtype's name (quant and dequant only).

    Raises:
        ValueError: if ``kind`` or a dtype is not one the module has a kernel for.
    """
    if kind in ("quant", "quant_grid"):
        _check(first, FLOAT_TYPES, "first")
        _check(second, INTEGER_TYPES, "second")
        return f"qarray_{kind}_{first}_{second}"
    if kind in ("dequant", "dequant_grid"):
        _check(first, INTEGER_TYPES, "first")
        _check(second, FLOAT_TYPES, "second")
        return f"qarray_{kind}_{first}_{second}"
    if kind in ("minmax_partial", "minmax_final", "hist_scan", "hist_plan", "hist_bin"):
        _check(first, FLOAT_TYPES, "first")
        if second is not None:
            raise ValueError(f"second must be None for {kind}, got {second!r}")
        return f"qarray_{kind}_{first}"
    raise ValueError(
        "kind must be 'quant', 'quant_grid', 'dequant', 'dequant_grid', 'minmax_partial', 'minmax_final', "
        f"'hist_scan', 'hist_plan' or 'hist_bin', got {kind!r}"
    )


def _check(name: Optional[str], table: Dict[str, str], argument: str) -> None:
    if name not in table:
        raise ValueError(f"{argument} must be one of {', '.join(table)}, got {name!r}")


def source() -> str:
    """Return the CUDA C++ source of the whole module (every kernel, every dtype pair)."""
    prelude = (
        _PRELUDE.replace("__FLAG_CLIP__", str(FLAG_CLIP))
        .replace("__FLAG_COUNT_NONFINITE__", str(FLAG_COUNT_NONFINITE))
        .replace("__FLAG_COUNT_OUTSIDE__", str(FLAG_COUNT_OUTSIDE))
    )
    parts = [prelude, _HISTOGRAM.replace("__HIST_SHARED_BINS__", str(HIST_SHARED_BINS))]
    block = str(BLOCK_THREADS)

    def fill(template: str, **names: str) -> str:
        for placeholder, text in {**names, "BLOCK": block}.items():
            template = template.replace(f"__{placeholder}__", text)
        return template

    for float_name, float_type in FLOAT_TYPES.items():
        for int_name, int_type in INTEGER_TYPES.items():
            quant = {"TIN": float_type, "TOUT": int_type}
            dequant = {"TIN": int_type, "TOUT": float_type}
            parts.append(fill(_QUANT, NAME=kernel_name("quant", float_name, int_name), **quant))
            parts.append(fill(_DEQUANT, NAME=kernel_name("dequant", int_name, float_name), **dequant))
            parts.append(fill(_QUANT_GRID, NAME=kernel_name("quant_grid", float_name, int_name), **quant))
            parts.append(fill(_DEQUANT_GRID, NAME=kernel_name("dequant_grid", int_name, float_name), **dequant))
        parts.append(
            fill(
                _MINMAX,
                PARTIAL=kernel_name("minmax_partial", float_name),
                FINAL=kernel_name("minmax_final", float_name),
                T=float_type,
            )
        )
        parts.append(
            fill(
                _HISTOGRAM_KERNELS,
                SCAN=kernel_name("hist_scan", float_name),
                PLAN=kernel_name("hist_plan", float_name),
                BIN=kernel_name("hist_bin", float_name),
                T=float_type,
            )
        )
    return "\n".join(parts)


def kernel_names() -> Tuple[str, ...]:
    """Return the names of every kernel in the module, in source order."""
    names = []
    for float_name in FLOAT_TYPES:
        for int_name in INTEGER_TYPES:
            names.append(kernel_name("quant", float_name, int_name))
            names.append(kernel_name("dequant", int_name, float_name))
            names.append(kernel_name("quant_grid", float_name, int_name))
            names.append(kernel_name("dequant_grid", int_name, float_name))
        names.append(kernel_name("minmax_partial", float_name))
        names.append(kernel_name("minmax_final", float_name))
        names.append(kernel_name("hist_scan", float_name))
        names.append(kernel_name("hist_plan", float_name))
        names.append(kernel_name("hist_bin", float_name))
    return tuple(names)


_lock = threading.Lock()
_module: Optional[Any] = None
_kernels: Dict[str, Any] = {}


def kernel(name: str) -> Any:
    """Return the compiled kernel called ``name`` (a ``cupy.RawKernel``), compiling on first use.

    The module is built once per process and compiled once per device (by NVRTC, on the
    first launch there; CuPy also keeps the binary in its on-disk kernel cache). Thread-safe:
    concurrent first calls compile once.

    Raises:
        ImportError: if CuPy is not installed.
        ValueError: if the module has no kernel called ``name``.
    """
    found = _kernels.get(name)
    if found is not None:
        return found
    global _module
    with _lock:
        found = _kernels.get(name)
        if found is not None:
            return found
        if name not in _KERNEL_NAMES:
            raise ValueError(f"name must name a kernel of the qarray CUDA module, got {name!r}")
        if _module is None:
            import importlib

            cupy = importlib.import_module("cupy")
            _module = cupy.RawModule(code=source(), options=COMPILE_OPTIONS)
        found = _kernels[name] = _module.get_function(name)
        return found


_KERNEL_NAMES = frozenset(kernel_names())
