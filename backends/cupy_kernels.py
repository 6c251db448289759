"""CUDA sources of the CuPy backend's fused kernels, compiled once on first use.

This module owns the CUDA C++ text and the one compiled module built from it;
:mod:`qarray.backends.cupy_backend` owns when and how the kernels are launched.
Importing it imports nothing from CuPy: :func:`kernel` imports CuPy, compiles
the module (NVRTC, cached by CuPy on disk and here in memory, under a lock so
that concurrent first calls compile once) and returns the named kernel.

The arithmetic is the float64 sequence of ``docs/semantics.md``, one IEEE
operation at a time: ``rint((double)x / scale + zero_point)`` for quant and
``scale * ((double)q - zero_point)`` for dequant, written with the ``_rn``
intrinsics so no contraction or approximation can change a rounding, and
compiled with ``--fmad=false``. CuPy compiles every kernel with
``-ftz=true``, which flushes float32 subnormals to zero in conversions and
comparisons; float32 values therefore enter and leave float64 through exact
conversions written by hand, so subnormal float32 input and output give the
same bits as NumPy. The numerics profiles' float32 arithmetic (``quant32``,
``dequant32`` and their grid forms) is in :mod:`qarray.backends.cupy_profile_kernels`,
compiled into the same module.

Example:
    >>> from qarray.backends.cupy_kernels import kernel_name
    >>> kernel_name("quant", "float32", "int8")
    'qarray_quant_float32_int8'
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple

from . import cupy_profile_kernels

__all__ = [
    "BLOCK_THREADS",
    "FLAG_CLIP",
    "FLAG_COUNT_NONFINITE",
    "FLAG_COUNT_OUTSIDE",
    "FLAG_RECIPROCAL",
    "FLOAT_TYPES",
    "HIST_SHARED_BINS",
    "HIST_STATE_INTS",
    "QUANT_PENDING_MIN_CAPACITY",
    "INTEGER_TYPES",
    "KEY_TYPES",
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

FLAG_RECIPROCAL = 8
"""Float32 quant flag (``quant32`` kernels): multiply by the float32 reciprocal of the scale
(torchao) instead of dividing by the scale (ONNX Runtime)."""

HIST_SHARED_BINS = 4096
"""Histograms of at most this many bins are counted in shared memory (16 KiB of 32-bit counters per block)."""

QUANT_PENDING_MIN_CAPACITY = 1 << 16
"""Vectors of four values the fast quant pass may leave to the exact pass in a list: this
many, or one in 256 of the vectors if more (the fast pass leaves about one in 2,500 of random
data). Beyond that the exact pass re-examines every vector: correct, slower (data of ties)."""

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
#define QARRAY_FLAG_RECIPROCAL __FLAG_RECIPROCAL__

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

// visit(v, xv[v]) for this thread's share of the n_vectors vectors: a grid-stride walk with
// two vectors in flight.
template <typename T, typename V>
__device__ __forceinline__ void qarray_each_vector(
    const qarray_vec4<T>* __restrict__ xv, long long n_vectors, V& visit)
{
    const long long stride = (long long)blockDim.x * gridDim.x;
    long long v = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; v + stride < n_vectors; v += 2 * stride) {
        const qarray_vec4<T> a = xv[v];
        const qarray_vec4<T> b = xv[v + stride];
        visit(v, a);
        visit(v + stride, b);
    }
    for (; v < n_vectors; v += stride) {
        visit(v, xv[v]);
    }
}

// visit(i) for this thread's share of the indices [start, n), one at a time.
template <typename V>
__device__ __forceinline__ void qarray_each_index(long long start, long long n, V& visit) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = start + (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        visit(i);
    }
}

// f applied to each value of a vector of four.
template <typename TOUT, typename TIN, typename F>
__device__ __forceinline__ qarray_vec4<TOUT> qarray_apply4(F& f, const qarray_vec4<TIN>& a) {
    qarray_vec4<TOUT> y;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        y.v[k] = f(a.v[k]);
    }
    return y;
}

// y[i] = f(x[i]) for this thread's share: vectors of four where both arrays are aligned,
// then the last n % 4 (or all, unaligned) one at a time.
template <typename TIN, typename TOUT, typename F>
__device__ __forceinline__ void qarray_map_values(
    const TIN* __restrict__ x, TOUT* __restrict__ y, long long n, F& f)
{
    const long long n_vectors = qarray_vectors_aligned(x, y) ? (n >> 2) : 0LL;
    qarray_vec4<TOUT>* __restrict__ yv = reinterpret_cast<qarray_vec4<TOUT>*>(y);
    auto vector = [&](long long v, const qarray_vec4<TIN>& a) { yv[v] = qarray_apply4<TOUT>(f, a); };
    qarray_each_vector(reinterpret_cast<const qarray_vec4<TIN>*>(x), n_vectors, vector);
    auto one = [&](long long i) { y[i] = f(x[i]); };
    qarray_each_index(4 * n_vectors, n, one);
}

// The problem counts of a block, added to problems[0] and problems[1] (every thread calls it;
// a thread counts fewer than 2^32 values).
__device__ __forceinline__ void qarray_add_problems(
    int flags, unsigned int thread_nonfinite, unsigned int thread_outside,
    unsigned long long* __restrict__ problems)
{
    // flags are the same for every thread, and every thread of the block gets here, so the
    // full-warp shuffles are well defined (blockDim.x is a multiple of 32).
    if (flags & (QARRAY_FLAG_COUNT_NONFINITE | QARRAY_FLAG_COUNT_OUTSIDE)) {
        const unsigned long long n_nonfinite = qarray_warp_sum(thread_nonfinite);
        const unsigned long long n_outside = qarray_warp_sum(thread_outside);
        if ((threadIdx.x & 31u) == 0u) {
            if (n_nonfinite != 0ull) atomicAdd(problems, n_nonfinite);
            if (n_outside != 0ull) atomicAdd(problems + 1, n_outside);
        }
    }
}

// ---- quant: the rule ------------------------------------------------------------------------
// q = rint(x / scale + zero_point) in float64 (x converted exactly), clipped or checked. The
// float64 division is the costly part on a GPU, so quant runs in two passes:
//
// 1. The fast pass settles each vector of four by two candidates, no division: c = x *
//    (1/scale) + zero_point in float32 (float32 input), then in float64. A candidate is kept
//    when it lies farther than a bound on its error from every half-integer: then the exact
//    rint(...) is the same integer. Vectors that a candidate cannot settle (ties and their
//    closest neighbours, |c| >= 2^22, NaN, +-Inf, unusual parameters) are left to pass 2.
// 2. The exact pass computes those vectors (and the last n % 4 values) by the float64 rule.
//    It is a kernel of its own: the division's code would otherwise take registers from
//    the fast pass, which nearly every value goes through.
//
// Error bounds. float32: 1/scale is rcp(fl32(scale)) (relative error <= 2^-23 + 2^-24), the
// product adds 2^-24 and the sum 2^-24 of |c|, so |c - (x/scale + z)| <= 2^-21.9 (|c| + |z|)
// for scales in [2^-100, 2^100] (a subnormal x, flushed to zero, then moves c by less than
// 2^-26), plus |z - fl32(z)| for a zero point that float32 does not hold. The tolerance
// 2^-21 (|c| + |z| + 1) + 2 |z - fl32(z)| covers it with room for its own rounding and for the
// float64 rule's rounding. float64: the same with 2^-52 per operation and the tolerance
// 2^-50 (|c| + |z| + 1), for scales in [2^-1000, 2^1000]. A candidate beyond 2^22 is never
// kept.

// The exact rule for one value, and the problems the flags count.
template <typename TOUT> struct qarray_quantized {
    TOUT value;
    unsigned int nonfinite;
    unsigned int outside;
};

// A rounded value (the zero point added) clipped and checked as the flags say, and cast;
// finite says whether the input was.
template <typename TOUT>
__device__ __forceinline__ qarray_quantized<TOUT> qarray_quant_settle(
    bool finite, double rounded, int flags, double clip_low, double clip_high, double fit_low, double fit_high)
{
    qarray_quantized<TOUT> result;
    result.nonfinite = ((flags & QARRAY_FLAG_COUNT_NONFINITE) && !finite) ? 1u : 0u;
    if (flags & QARRAY_FLAG_CLIP) {
        rounded = (rounded < clip_low) ? clip_low : ((rounded > clip_high) ? clip_high : rounded);
    }
    const bool fits = rounded >= fit_low && rounded <= fit_high;  // false for NaN
    result.outside = ((flags & QARRAY_FLAG_COUNT_OUTSIDE) && !fits) ? 1u : 0u;
    result.value = (TOUT)rounded;
    return result;
}

template <typename TIN, typename TOUT>
__device__ __forceinline__ qarray_quantized<TOUT> qarray_quant_exact(
    TIN raw, double scale, double zero_point, int flags, double clip_low, double clip_high,
    double fit_low, double fit_high)
{
    const double value = qarray_to_double(raw);
    const double rounded = rint(__dadd_rn(__ddiv_rn(value, scale), zero_point));
    return qarray_quant_settle<TOUT>(qarray_isfinite(value), rounded, flags, clip_low, clip_high, fit_low, fit_high);
}

// The integers an output type holds, for the candidates (whose results lie within +-2^22:
// wider types are "unbounded").
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

// One candidate: c = x * inverse + zero in C's precision, kept far from every half-integer.
template <typename C> struct qarray_candidate;

template <> struct qarray_candidate<float> {
    float inverse;
    float zero;
    float slack;  // the tolerance's part that does not grow with |c|
    bool usable;
    __device__ __forceinline__ void setup(double scale, double zero_point) {
        const double magnitude = fabs(scale);
        usable = magnitude >= 0x1p-100 && magnitude <= 0x1p100 && fabs(zero_point) < 4194304.0;
        inverse = __frcp_rn(__double2float_rn(scale));
        zero = __double2float_rn(zero_point);
        // A zero point that float32 does not hold exactly (a fraction) moves c by its error;
        // twice that error joins the tolerance (the conversion back flushes as the sum does).
        const double zero_error = fabs(__dsub_rn(zero_point, (double)zero));
        slack = __double2float_rn(__dadd_rn(__dmul_rn(__dadd_rn(fabs(zero_point), 1.0), 0x1p-21),
                                            __dmul_rn(zero_error, 2.0)));
    }
    // rint(c) when it is certainly the exact rule's integer, else false.
    __device__ __forceinline__ bool round(float x, int& rounded) const {
        const float c = __fadd_rn(__fmul_rn(x, inverse), zero);
        const float shifted = __fadd_rn(c, 12582912.0f);  // 1.5 * 2^23: rounds |c| < 2^22 to an integer
        const float distance = __fsub_rn(0.5f, fabsf(__fsub_rn(c, __fsub_rn(shifted, 12582912.0f))));
        const float tolerance = __fadd_rn(__fmul_rn(fabsf(c), 0x1p-21f), slack);
        rounded = __float_as_int(shifted) - 0x4B400000;
        return fabsf(c) < 4194304.0f && distance > tolerance;  // false for NaN and +-Inf
    }
};

template <> struct qarray_candidate<double> {
    double inverse;
    double zero;
    double slack;
    bool usable;
    __device__ __forceinline__ void setup(double scale, double zero_point) {
        const double magnitude = fabs(scale);
        usable = magnitude >= 0x1p-1000 && magnitude <= 0x1p1000 && fabs(zero_point) < 4194304.0;
        inverse = __drcp_rn(scale);
        zero = zero_point;
        slack = __dmul_rn(__dadd_rn(fabs(zero_point), 1.0), 0x1p-50);
    }
    __device__ __forceinline__ bool round(double x, int& rounded) const {
        const double c = __dadd_rn(__dmul_rn(x, inverse), zero);
        const double shifted = __dadd_rn(c, 6755399441055744.0);  // 1.5 * 2^52
        const double distance = __dsub_rn(0.5, fabs(__dsub_rn(c, __dsub_rn(shifted, 6755399441055744.0))));
        const double tolerance = __dadd_rn(__dmul_rn(fabs(c), 0x1p-50), slack);
        rounded = __double2loint(shifted);
        return fabs(c) < 4194304.0 && distance > tolerance;
    }
};

// quant's rule for one parameter set: the candidates where they are certain, the integers
// clipped and checked as the flags say; the exact rule (quant_exact) for the rest.
template <typename TIN, typename TOUT> struct qarray_quant_rule {
    qarray_candidate<TIN> narrow;  // in the input's precision
    double scale, zero_point, clip_low, clip_high, fit_low, fit_high;
    int flags;
    bool usable;                  // the bounds are integers: the candidates may be used
    int clip_lo, clip_hi;         // the clip as integers (the identity when not clipping)
    int fit_lo, fit_hi;           // outside these, results are counted (FLAG_COUNT_OUTSIDE)

    __device__ __forceinline__ void setup(double scale_, double zero_point_, int flags_, double clip_low_,
                                          double clip_high_, double fit_low_, double fit_high_) {
        scale = scale_;
        zero_point = zero_point_;
        flags = flags_;
        clip_low = clip_low_;
        clip_high = clip_high_;
        fit_low = fit_low_;
        fit_high = fit_high_;
        narrow.setup(scale, zero_point);
        usable = true;
        clip_lo = -1073741824;
        clip_hi = 1073741824;
        if (flags & QARRAY_FLAG_CLIP) {
            usable = qarray_integral_bound(clip_low, clip_lo) && qarray_integral_bound(clip_high, clip_hi);
        }
        fit_lo = -1073741824;
        fit_hi = 1073741824;
        if (flags & QARRAY_FLAG_COUNT_OUTSIDE) {
            usable = usable && qarray_integral_bound(fit_low, fit_lo) && qarray_integral_bound(fit_high, fit_hi);
        }
    }

    // The rule's integer (clipped) when a candidate is certain of it and the output type
    // holds it; false otherwise. WIDE: where float32's candidate is not sure, try float64's.
    template <bool WIDE>
    __device__ __forceinline__ bool sure(TIN x, int& rounded) const {
        bool certain = narrow.usable && narrow.round(x, rounded);
        if constexpr (WIDE && sizeof(TIN) == 4) {
            if (!certain) {
                qarray_candidate<double> wide;
                wide.setup(scale, zero_point);
                certain = wide.usable && wide.round(qarray_to_double(x), rounded);
            }
        }
        rounded = (rounded < clip_lo) ? clip_lo : ((rounded > clip_hi) ? clip_hi : rounded);
        return usable && certain && rounded >= qarray_int_range<TOUT>::low
            && rounded <= qarray_int_range<TOUT>::high;
    }

    // Whether the fast pass tries float64's candidate too: for outputs wider than a byte,
    // where |c| reaches 2^15 and more and float32's tolerance leaves too many values (8-bit
    // results are within 2^8, where float32 leaves a few in ten thousand).
    static constexpr bool fast_wide = sizeof(TOUT) > 1;

    __device__ __forceinline__ unsigned int outside(int rounded) const {
        return ((flags & QARRAY_FLAG_COUNT_OUTSIDE) && (rounded < fit_lo || rounded > fit_hi)) ? 1u : 0u;
    }

    // Four values when the fast pass is sure of every one: the integers in y, the count
    // outside added.
    __device__ __forceinline__ bool sure4(const qarray_vec4<TIN>& a, qarray_vec4<TOUT>& y,
                                          unsigned int& n_outside) const {
        int rounded[4] = {0, 0, 0, 0};
        bool all = true;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            all = sure<fast_wide>(a.v[k], rounded[k]) & all;
        }
        if (!all) {
            return false;
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            n_outside += outside(rounded[k]);
            y.v[k] = (TOUT)rounded[k];
        }
        return true;
    }

    // One value, sure or by the exact rule (the exact pass only: it divides).
    __device__ __forceinline__ TOUT exact(TIN x, unsigned int& n_nonfinite, unsigned int& n_outside) const {
        int rounded = 0;
        if (sure<true>(x, rounded)) {
            n_outside += outside(rounded);
            return (TOUT)rounded;  // a finite input: nothing to count as non-finite
        }
        const qarray_quantized<TOUT> one = qarray_quant_exact<TIN, TOUT>(
            x, scale, zero_point, flags, clip_low, clip_high, fit_low, fit_high);
        n_nonfinite += one.nonfinite;
        n_outside += one.outside;
        return one.value;
    }
};

// ---- quant: what the fast pass leaves to the exact pass -----------------------------------
// pending = [count, everything, v_0, v_1, ...]: the vectors the fast pass left, at most
// capacity of them. everything = 1 when there were more (or the candidates are unusable):
// the exact pass then re-examines every vector. A block gathers its vectors in shared memory
// and appends them with one atomic at its end.

#define QARRAY_BLOCK_PENDING 256

struct qarray_pending_block {
    unsigned long long* list;  // shared, QARRAY_BLOCK_PENDING entries
    unsigned int* count;       // shared
    __device__ __forceinline__ void start() {
        if (threadIdx.x == 0u) {
            *count = 0u;
        }
        __syncthreads();
    }
    __device__ __forceinline__ void add(long long v) {
        const unsigned int slot = atomicAdd(count, 1u);
        if (slot < QARRAY_BLOCK_PENDING) {
            list[slot] = (unsigned long long)v;
        }
    }
    // Every thread calls it.
    __device__ __forceinline__ void finish(unsigned long long* __restrict__ pending, long long capacity,
                                           unsigned long long* base) {
        __syncthreads();
        const unsigned int total = *count;
        if (total == 0u) {
            return;  // the same for every thread of the block
        }
        if (threadIdx.x == 0u) {
            if (total > QARRAY_BLOCK_PENDING) {
                pending[1] = 1ull;
                *base = (unsigned long long)capacity;
            } else {
                *base = atomicAdd(pending, (unsigned long long)total);
                if (*base + total > (unsigned long long)capacity) {
                    pending[1] = 1ull;
                }
            }
        }
        __syncthreads();
        for (unsigned int t = threadIdx.x; t < total && t < QARRAY_BLOCK_PENDING; t += blockDim.x) {
            if (*base + t < (unsigned long long)capacity) {
                pending[2 + *base + t] = list[t];
            }
        }
    }
};

// The fast pass over the vectors that rule_at(v) gives the rule of: sure vectors written and
// counted, the others left in pending.
template <typename TIN, typename TOUT, typename R>
__device__ __forceinline__ void qarray_quant_fast_pass(
    const TIN* __restrict__ x, TOUT* __restrict__ q, long long n_vectors, int flags, R& rule_at,
    unsigned long long* __restrict__ problems, unsigned long long* __restrict__ pending, long long capacity)
{
    __shared__ unsigned long long list[QARRAY_BLOCK_PENDING];
    __shared__ unsigned int count;
    __shared__ unsigned long long base;
    qarray_pending_block left{list, &count};
    left.start();
    unsigned int n_outside = 0u;
    qarray_vec4<TOUT>* __restrict__ qv = reinterpret_cast<qarray_vec4<TOUT>*>(q);
    auto visit = [&](long long v, const qarray_vec4<TIN>& a) {
        qarray_vec4<TOUT> y;
        if (rule_at(v).sure4(a, y, n_outside)) {
            qv[v] = y;
        } else {
            left.add(v);
        }
    };
    qarray_each_vector(reinterpret_cast<const qarray_vec4<TIN>*>(x), n_vectors, visit);
    left.finish(pending, capacity, &base);
    qarray_add_problems(flags, 0u, n_outside, problems);
}

// The exact pass: the vectors the fast pass left (all those it could not settle, when
// pending says everything), then the values outside the vectors, from index 4 * n_vectors.
template <typename TIN, typename TOUT, typename R, typename I>
__device__ __forceinline__ void qarray_quant_exact_pass(
    const TIN* __restrict__ x, TOUT* __restrict__ q, long long n, long long n_vectors, int flags,
    R& rule_at, I& rule_of, unsigned long long* __restrict__ problems,
    const unsigned long long* __restrict__ pending, long long capacity)
{
    unsigned int n_nonfinite = 0u;
    unsigned int n_outside = 0u;
    const qarray_vec4<TIN>* __restrict__ xv = reinterpret_cast<const qarray_vec4<TIN>*>(x);
    qarray_vec4<TOUT>* __restrict__ qv = reinterpret_cast<qarray_vec4<TOUT>*>(q);
    auto settle = [&](long long v, const qarray_vec4<TIN>& a) {
        const auto rule = rule_at(v);
        qarray_vec4<TOUT> y;
#pragma unroll 1
        for (int k = 0; k < 4; ++k) {
            y.v[k] = rule.exact(a.v[k], n_nonfinite, n_outside);
        }
        qv[v] = y;
    };
    const unsigned long long count = pending[0];
    if (pending[1] != 0ull || count > (unsigned long long)capacity) {
        auto unsettled = [&](long long v, const qarray_vec4<TIN>& a) {
            qarray_vec4<TOUT> y;
            unsigned int ignored = 0u;
            if (!rule_at(v).sure4(a, y, ignored)) {  // what the fast pass left, by the same test
                settle(v, a);
            }
        };
        qarray_each_vector(xv, n_vectors, unsettled);
    } else {
        auto listed = [&](long long i) {
            const long long v = (long long)pending[2 + i];
            settle(v, xv[v]);
        };
        qarray_each_index(0, (long long)count, listed);
    }
    auto one = [&](long long i) { q[i] = rule_of(i).exact(x[i], n_nonfinite, n_outside); };
    qarray_each_index(4 * n_vectors, n, one);
    qarray_add_problems(flags, n_nonfinite, n_outside, problems);
}

// ---- quant, one parameter set -------------------------------------------------------------

template <typename TIN, typename TOUT>
__device__ __forceinline__ qarray_quant_rule<TIN, TOUT> qarray_tensor_rule(
    double scale, double zero_point, int flags, double clip_low, double clip_high, double fit_low,
    double fit_high)
{
    qarray_quant_rule<TIN, TOUT> rule;
    rule.setup(scale, zero_point, flags, clip_low, clip_high, fit_low, fit_high);
    return rule;
}

// The fast pass (REST false) or the exact pass (REST true) of quant per tensor.
template <bool REST, typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_quant(
    const TIN* __restrict__ x, TOUT* __restrict__ q, long long n, double scale,
    double zero_point, int flags, double clip_low, double clip_high, double fit_low,
    double fit_high, unsigned long long* __restrict__ problems, unsigned long long* __restrict__ pending,
    long long capacity)
{
    const qarray_quant_rule<TIN, TOUT> rule =
        qarray_tensor_rule<TIN, TOUT>(scale, zero_point, flags, clip_low, clip_high, fit_low, fit_high);
    const long long n_vectors = qarray_vectors_aligned(x, q) ? (n >> 2) : 0LL;
    auto rule_at = [&](long long) { return rule; };
    if constexpr (REST) {
        qarray_quant_exact_pass(x, q, n, n_vectors, flags, rule_at, rule_at, problems, pending, capacity);
    } else if (!rule.usable) {  // bounds that are no integers: sure() is false for every value
        if (blockIdx.x == 0u && threadIdx.x == 0u) {
            pending[1] = 1ull;  // the exact pass takes every vector
        }
    } else {
        qarray_quant_fast_pass(x, q, n_vectors, flags, rule_at, problems, pending, capacity);
    }
}

// ---- dequant -----------------------------------------------------------------------------

template <typename TIN, typename TOUT>
__device__ __forceinline__ TOUT qarray_dequant_value(TIN q, double scale, double zero_point) {
    return qarray_from_double<TOUT>(__dmul_rn(scale, __dsub_rn((double)q, zero_point)));
}

// dequant's rule for one parameter set, computed value by value.
template <typename TIN, typename TOUT> struct qarray_dequant_rule {
    double scale;
    double zero_point;
    __device__ __forceinline__ TOUT operator()(TIN q) const {
        return qarray_dequant_value<TIN, TOUT>(q, scale, zero_point);
    }
};

// One-byte integers take 256 values: each block tabulates them by the same rule in shared
// memory and looks every value up.
template <typename TIN, typename TOUT> struct qarray_dequant_table {
    const TOUT* table;
    __device__ __forceinline__ TOUT operator()(TIN q) const {
        return table[(unsigned char)q];
    }
};

// y[i] = rule(q[i]), one parameter set (a rule of one-byte integers tabulated first).
template <typename TIN, typename TOUT, typename R>
__device__ __forceinline__ void qarray_dequant_by(
    const TIN* __restrict__ q, TOUT* __restrict__ y, long long n, R& rule)
{
    if constexpr (sizeof(TIN) == 1) {
        __shared__ TOUT table[256];
        for (int t = threadIdx.x; t < 256; t += blockDim.x) {
            const int value = ((TIN)-1 < (TIN)0 && t >= 128) ? t - 256 : t;  // the byte's integer
            table[t] = rule((TIN)value);
        }
        __syncthreads();
        qarray_dequant_table<TIN, TOUT> lookup{table};
        qarray_map_values(q, y, n, lookup);
    } else {
        qarray_map_values(q, y, n, rule);
    }
}

template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_dequant(
    const TIN* __restrict__ q, TOUT* __restrict__ y, long long n, double scale,
    double zero_point)
{
    qarray_dequant_rule<TIN, TOUT> rule{scale, zero_point};
    qarray_dequant_by(q, y, n, rule);
}

// ---- per-block parameters (per channel, per group) -------------------------------------------
// The values are a C-order (rows, length) matrix: row r takes grid row rows[r], and its values
// [g * group, (g + 1) * group) grid column g; parameter p = rows[r] * n_groups + g. With
// QARRAY_FLAG_CLIP the rounded value is clipped to [low[p], high[p]]; with
// QARRAY_FLAG_COUNT_OUTSIDE the ones outside it are counted. Vectors of four share their
// parameters when rows and groups are multiples of four; otherwise the values go one by one.

// Unsigned 32-bit division by a divisor fixed for the whole launch, as a multiply and shifts
// (Granlund and Montgomery): exact for every 32-bit numerator.
struct qarray_divider {
    unsigned int multiplier;
    unsigned int shift;
    __device__ __forceinline__ void setup(unsigned int d) {
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
    // Whether vectors of four values share their parameters.
    __device__ __forceinline__ bool by_vector() const {
        return (length & 3LL) == 0LL && (group & 3LL) == 0LL;
    }
};

template <typename TIN, typename TOUT> struct qarray_grid_rules {
    qarray_parameter_map where;
    const double* __restrict__ scale;
    const double* __restrict__ zero;
    const double* __restrict__ low;
    const double* __restrict__ high;
    int flags;
    // The rule of element e.
    __device__ __forceinline__ qarray_quant_rule<TIN, TOUT> operator()(long long e) const {
        const long long p = where(e);
        const double low_p = low[p], high_p = high[p];
        return qarray_tensor_rule<TIN, TOUT>(scale[p], zero[p], flags, low_p, high_p, low_p, high_p);
    }
};

template <typename TIN, typename TOUT>
__device__ __forceinline__ qarray_grid_rules<TIN, TOUT> qarray_make_grid_rules(
    long long n, long long length, long long group, long long n_groups, const long long* __restrict__ rows,
    const double* __restrict__ scale, const double* __restrict__ zero, const double* __restrict__ low,
    const double* __restrict__ high, int flags)
{
    qarray_grid_rules<TIN, TOUT> rules;
    rules.where.setup(n, length, group, n_groups, rows);
    rules.scale = scale;
    rules.zero = zero;
    rules.low = low;
    rules.high = high;
    rules.flags = flags;
    return rules;
}

// The fast pass (REST false) or the exact pass (REST true) of quant per block.
template <bool REST, typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_quant_grid(
    const TIN* __restrict__ x, TOUT* __restrict__ q, long long n, long long length,
    long long group, long long n_groups, const long long* __restrict__ rows,
    const double* __restrict__ scale, const double* __restrict__ zero,
    const double* __restrict__ low, const double* __restrict__ high, int flags,
    unsigned long long* __restrict__ problems, unsigned long long* __restrict__ pending, long long capacity)
{
    const qarray_grid_rules<TIN, TOUT> rules =
        qarray_make_grid_rules<TIN, TOUT>(n, length, group, n_groups, rows, scale, zero, low, high, flags);
    const long long n_vectors = (qarray_vectors_aligned(x, q) && rules.where.by_vector()) ? (n >> 2) : 0LL;
    auto rule_at = [&](long long v) { return rules(4 * v); };
    if constexpr (REST) {
        qarray_quant_exact_pass(x, q, n, n_vectors, flags, rule_at, rules, problems, pending, capacity);
    } else {
        qarray_quant_fast_pass(x, q, n_vectors, flags, rule_at, problems, pending, capacity);
    }
}

// y[i] = rule_of(p)(x[i]), p element i's parameter set (see qarray_parameter_map): a vector
// of four through one rule when its values share their parameters.
template <typename TIN, typename TOUT, typename M>
__device__ __forceinline__ void qarray_map_grid(
    const TIN* __restrict__ x, TOUT* __restrict__ y, long long n, long long length,
    long long group, long long n_groups, const long long* __restrict__ rows, M& rule_of)
{
    qarray_parameter_map where;
    where.setup(n, length, group, n_groups, rows);
    const long long n_vectors = (qarray_vectors_aligned(x, y) && where.by_vector()) ? (n >> 2) : 0LL;
    qarray_vec4<TOUT>* __restrict__ yv = reinterpret_cast<qarray_vec4<TOUT>*>(y);
    auto vector = [&](long long v, const qarray_vec4<TIN>& a) {
        auto rule = rule_of(where(4 * v));
        yv[v] = qarray_apply4<TOUT>(rule, a);
    };
    qarray_each_vector(reinterpret_cast<const qarray_vec4<TIN>*>(x), n_vectors, vector);
    auto one = [&](long long i) {
        auto rule = rule_of(where(i));
        y[i] = rule(x[i]);
    };
    qarray_each_index(4 * n_vectors, n, one);
}

template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_dequant_grid(
    const TIN* __restrict__ q, TOUT* __restrict__ y, long long n, long long length,
    long long group, long long n_groups, const long long* __restrict__ rows,
    const double* __restrict__ scale, const double* __restrict__ zero)
{
    auto rule_of = [&](long long p) { return qarray_dequant_rule<TIN, TOUT>{scale[p], zero[p]}; };
    qarray_map_grid(q, y, n, length, group, n_groups, rows, rule_of);
}

// ---- min / max ---------------------------------------------------------------------------
// Folded as order keys, integers whose order is the floats' (negative values have their
// magnitude bits flipped): exact for subnormals under -ftz=true, no float comparisons. NaN
// is tracked apart (as its largest magnitude bits) and wins at the end, as in numpy.min.

template <typename T> struct qarray_float_bits;
template <> struct qarray_float_bits<float> {
    typedef int key;
    typedef unsigned int word;  // the bits as an unsigned integer
    static constexpr int magnitude_mask = 0x7fffffff;
    static constexpr int infinity = 0x7f800000;
    __device__ static __forceinline__ int bits(float x) { return __float_as_int(x); }
    __device__ static __forceinline__ double value(int b) { return qarray_to_double(__int_as_float(b)); }
};
template <> struct qarray_float_bits<double> {
    typedef long long key;
    typedef unsigned long long word;
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

// Calls visit(value) on each value of this thread's share of x: vectors of four where x is
// aligned, then the last n % 4 one at a time.
template <typename T, typename V>
__device__ __forceinline__ void qarray_each_value(const T* __restrict__ x, long long n, V& visit) {
    const long long n_vectors = qarray_vectors_aligned(x, x) ? (n >> 2) : 0LL;
    auto vector = [&](long long, const qarray_vec4<T>& a) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            visit(a.v[k]);
        }
    };
    qarray_each_vector(reinterpret_cast<const qarray_vec4<T>*>(x), n_vectors, vector);
    auto one = [&](long long i) { visit(x[i]); };
    qarray_each_index(4 * n_vectors, n, one);
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

// ---- min / max per block ----------------------------------------------------------------
// The values are the C-order (rows, length) matrix of the grid kernels (qarray_parameter_map):
// element e belongs to block where(e) of a grid of n_grid blocks. Each block's result is kept
// in keys, three rows of n_grid unsigned words (zeros at the start), every one combined with
// atomicMax: keys[p] = ~u of the smallest value, keys[n_grid + p] = u of the largest, where u
// is the value's order key with the sign bit flipped (unsigned integers ordered as the floats;
// only NaN bit patterns give u = 0 or ~u = 0, so 0 means "nothing yet"), and keys[2 n_grid + p]
// the largest NaN magnitude bits (0: no NaN). Integers only: exact for subnormals under
// -ftz=true, and the same result whatever the order of the atomics.

template <typename T> struct qarray_block_keys {
    typedef typename qarray_float_bits<T>::key K;
    typedef typename qarray_float_bits<T>::word U;
    static constexpr U sign = (U)1 << (8 * sizeof(U) - 1);
    U low;   // ~u of the smallest value folded, 0 when none
    U high;  // u of the largest, 0 when none
    U nan;   // largest NaN magnitude bits, 0 when none
    __device__ __forceinline__ void start() {
        low = 0;
        high = 0;
        nan = 0;
    }
    __device__ __forceinline__ void add(T x, int omit_nonfinite) {
        const K bits = qarray_float_bits<T>::bits(x);
        const U magnitude = (U)(bits & qarray_float_bits<T>::magnitude_mask);
        if (magnitude >= (U)qarray_float_bits<T>::infinity) {
            if (omit_nonfinite) {
                return;
            }
            if (magnitude > (U)qarray_float_bits<T>::infinity) {
                nan = (magnitude > nan) ? magnitude : nan;
                return;
            }
        }
        const U key = (U)qarray_order_key<K>(bits) ^ sign;
        low = (~key > low) ? ~key : low;
        high = (key > high) ? key : high;
    }
    __device__ __forceinline__ void fold(U other_low, U other_high, U other_nan) {
        low = (other_low > low) ? other_low : low;
        high = (other_high > high) ? other_high : high;
        nan = (other_nan > nan) ? other_nan : nan;
    }
    // Fold lane + offset's keys when the condition holds (every lane of the warp must call it).
    __device__ __forceinline__ void fold_down(unsigned int offset, bool take) {
        const U other_low = __shfl_down_sync(QARRAY_FULL_MASK, low, offset);
        const U other_high = __shfl_down_sync(QARRAY_FULL_MASK, high, offset);
        const U other_nan = __shfl_down_sync(QARRAY_FULL_MASK, nan, offset);
        if (take) {
            fold(other_low, other_high, other_nan);
        }
    }
    // Warp-wide fold; the result is valid in lane 0. Every lane must call it.
    __device__ __forceinline__ void reduce_warp() {
        for (unsigned int offset = 16u; offset > 0u; offset >>= 1) {
            fold_down(offset, true);
        }
    }
    // Combine into block p's keys (nothing to do for what is still 0).
    __device__ __forceinline__ void flush(U* __restrict__ keys, long long n_grid, long long p) const {
        if (low != 0) atomicMax(keys + p, low);
        if (high != 0) atomicMax(keys + n_grid + p, high);
        if (nan != 0) atomicMax(keys + 2 * n_grid + p, nan);
    }
};

// Each warp takes one contiguous range of whole tiles of 32 values, one value per lane and
// tile (coalesced loads), and keeps the block the range is in ("open") folded in its lanes:
// a tile wholly in the open block costs one vote. Otherwise the tile's runs of values of one
// block are folded (a segmented warp reduction: each lane folds the lanes up to its run's
// end); the first run joins the open block when it is that block, the last run becomes the
// open block, and the runs between are combined into keys at once. The open block goes to
// keys when the range leaves it: one atomic per block and warp range when blocks are large.
template <typename T>
__device__ __forceinline__ void qarray_minmax_grid(
    const T* __restrict__ x, long long n, long long length, long long group, long long n_groups,
    const long long* __restrict__ rows, int omit_nonfinite,
    typename qarray_float_bits<T>::word* __restrict__ keys, long long n_grid)
{
    qarray_parameter_map where;
    where.setup(n, length, group, n_groups, rows);
    const unsigned int lane = threadIdx.x & 31u;
    const long long n_warps = ((long long)gridDim.x * blockDim.x) >> 5;
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const long long n_tiles = (n + 31LL) >> 5;
    const long long tiles_per_warp = (n_tiles + n_warps - 1LL) / n_warps;
    const long long first = warp * tiles_per_warp * 32LL;
    const long long last = (first + tiles_per_warp * 32LL < n) ? first + tiles_per_warp * 32LL : n;
    qarray_block_keys<T> open;  // this lane's part of the open block
    open.start();
    long long open_p = -1LL;  // the same in every lane; -1: no open block
    for (long long base = first; base < last; base += 32LL) {  // the same trip count in every lane
        const long long e = base + (long long)lane;
        const bool valid = e < last;
        const long long p = valid ? where(e) : -1LL;
        qarray_block_keys<T> own;
        own.start();
        if (valid) {
            own.add(x[e], omit_nonfinite);
        }
        if (__all_sync(QARRAY_FULL_MASK, p == open_p)) {
            open.fold(own.low, own.high, own.nan);
            continue;
        }
        // Runs: a lane heads one when its block differs from the previous lane's.
        const long long previous = __shfl_up_sync(QARRAY_FULL_MASK, p, 1u);
        const bool head = lane == 0u || previous != p;
        const unsigned int heads = __ballot_sync(QARRAY_FULL_MASK, head);
        const unsigned int later = (lane == 31u) ? 0u : (heads & (0xffffffffu << (lane + 1u)));
        const unsigned int run_end = later ? (unsigned int)(__ffs((int)later) - 2) : 31u;
        for (unsigned int offset = 1u; offset < 32u; offset <<= 1) {
            own.fold_down(offset, lane + offset <= run_end);  // own: this lane's value up to its run's end
        }
        const unsigned int last_head = 31u - (unsigned int)__clz((int)heads);
        const long long first_p = __shfl_sync(QARRAY_FULL_MASK, p, 0);
        const long long last_p = __shfl_sync(QARRAY_FULL_MASK, p, 31);
        const bool joins = lane == 0u && first_p == open_p;  // the first run continues the open block
        if (joins) {
            open.fold(own.low, own.high, own.nan);
        }
        if (last_p != open_p) {  // the range leaves the open block: combine it into keys
            open.reduce_warp();
            if (lane == 0u && open_p >= 0LL) {
                open.flush(keys, n_grid, open_p);
            }
            open.start();
            open_p = last_p;
        }
        if (head && !joins) {
            if (lane == last_head) {
                open.fold(own.low, own.high, own.nan);  // the last run stays open
            } else {
                own.flush(keys, n_grid, p);
            }
        }
    }
    if (open_p >= 0LL) {
        open.reduce_warp();
        if (lane == 0u) {
            open.flush(keys, n_grid, open_p);
        }
    }
}

// The keys back to floats of T (bit patterns, no float arithmetic): +Inf / -Inf for a block
// without values (all left out), NaN for one with a NaN.
template <typename T>
__device__ __forceinline__ void qarray_minmax_grid_final(
    const typename qarray_float_bits<T>::word* __restrict__ keys, long long n_grid, T* __restrict__ out_low,
    T* __restrict__ out_high)
{
    typedef typename qarray_float_bits<T>::key K;
    typedef typename qarray_float_bits<T>::word U;
    const U sign = qarray_block_keys<T>::sign;
    const U infinity = (U)qarray_float_bits<T>::infinity;
    U* __restrict__ low_bits = reinterpret_cast<U*>(out_low);
    U* __restrict__ high_bits = reinterpret_cast<U*>(out_high);
    auto one = [&](long long p) {
        const U low = keys[p];
        const U high = keys[n_grid + p];
        const U nan = keys[2 * n_grid + p];
        if (nan != 0) {
            low_bits[p] = nan;
            high_bits[p] = nan;
            return;
        }
        low_bits[p] = low ? (U)qarray_order_key<K>((K)(~low ^ sign)) : infinity;
        high_bits[p] = high ? (U)qarray_order_key<K>((K)(high ^ sign)) : (infinity | sign);
    };
    qarray_each_index(0LL, n_grid, one);
}
"""

_HISTOGRAM = r"""
#define QARRAY_HIST_SHARED_BINS __HIST_SHARED_BINS__

// ---- dyadic histograms (qarray.calibration.histogram) --------------------------------------------------
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
// -0.0 is in bin -1 (as qarray.calibration.histogram.bin_floor).
__device__ __forceinline__ long long qarray_bin_floor(double x, long long k) {
    const double quotient = __ddiv_rn(x, qarray_pow2(k));
    if (quotient == 0.0 && x < 0.0) {
        return -1LL;
    }
    return (long long)floor(quotient);
}

// The k of docs/calibration.md: the binary search of qarray.core.dyadic.choose_k, step for step.
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

# The scan and the bin pass ask for six and eight resident blocks per multiprocessor (40 and
# 32 registers; the compiler spills nothing at these bounds for sm_90): memory-bound passes
# need the loads of many threads in flight.
_HISTOGRAM_KERNELS = r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__, 6) __SCAN__(
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

extern "C" __global__ void __launch_bounds__(__BLOCK__, 8) __BIN__(
    const __T__* __restrict__ x, long long n, const long long* __restrict__ ints,
    long long max_bins, unsigned long long* __restrict__ counts, int use_shared)
{
    qarray_hist_bin<__T__>(x, n, ints, max_bins, counts, use_shared);
}
"""

FAST_QUANT_MIN_BLOCKS: Dict[str, str] = {"float32": "8", "float64": "6"}
"""Resident blocks of 256 threads per multiprocessor that the fast quant pass per tensor asks
the compiler for (at most 32 and 40 registers; for sm_90 it spills a few bytes for 8-bit
outputs of float32, nothing for float64): many threads' loads in flight, as a memory-bound
pass needs."""

_QUANT = r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__, __MIN_BLOCKS__) __NAME__(
    const __TIN__* __restrict__ x, __TOUT__* __restrict__ q, long long n, double scale,
    double zero_point, int flags, double clip_low, double clip_high, double fit_low,
    double fit_high, unsigned long long* __restrict__ problems, unsigned long long* __restrict__ pending,
    long long capacity)
{
    qarray_quant<__REST__, __TIN__, __TOUT__>(x, q, n, scale, zero_point, flags, clip_low, clip_high,
                                              fit_low, fit_high, problems, pending, capacity);
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
    unsigned long long* __restrict__ problems, unsigned long long* __restrict__ pending, long long capacity)
{
    qarray_quant_grid<__REST__, __TIN__, __TOUT__>(x, q, n, length, group, n_groups, rows, scale, zero,
                                                   low, high, flags, problems, pending, capacity);
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


_MINMAX_GRID = r"""
extern "C" __global__ void __launch_bounds__(__BLOCK__) __GRID__(
    const __T__* __restrict__ x, long long n, long long length, long long group, long long n_groups,
    const long long* __restrict__ rows, int omit_nonfinite, __U__* __restrict__ keys, long long n_grid)
{
    qarray_minmax_grid<__T__>(x, n, length, group, n_groups, rows, omit_nonfinite, keys, n_grid);
}

extern "C" __global__ void __launch_bounds__(__BLOCK__) __GRID_FINAL__(
    const __U__* __restrict__ keys, long long n_grid, __T__* __restrict__ out_low, __T__* __restrict__ out_high)
{
    qarray_minmax_grid_final<__T__>(keys, n_grid, out_low, out_high);
}
"""

KEY_TYPES: Dict[str, str] = {"float32": "unsigned int", "float64": "unsigned long long"}
"""The unsigned integer type (CUDA C++) of the per-block min/max keys of each float dtype."""


def kernel_name(kind: str, first: str, second: Optional[str] = None) -> str:
    """Return the CUDA name of a kernel.

    Args:
        kind: ``"quant"`` / ``"quant_grid"`` (float dtype in, integer dtype out; the grid
            kernels take one parameter set per block: the fast pass) and ``"quant_rest"`` /
            ``"quant_grid_rest"`` (the exact pass over what the fast pass left), ``"dequant"`` /
            ``"dequant_grid"`` (integer in, float out), ``"quant32"`` / ``"quant32_grid"`` and
            ``"dequant32"`` / ``"dequant32_grid"`` (the same pairs: the numerics profiles' float32
            arithmetic), ``"minmax_partial"``, ``"minmax_final"``, ``"minmax_grid"`` (per-block
            min/max keys), ``"minmax_grid_final"`` (the keys to floats), ``"hist_scan"``,
            ``"hist_plan"`` or ``"hist_bin"`` (one float dtype).
        first: the input dtype's name.
        second: the output dtype's name (quant and dequant only).

    Raises:
        ValueError: if ``kind`` or a dtype is not one the module has a kernel for.
    """
    if kind in ("quant", "quant_rest", "quant_grid", "quant_grid_rest", *cupy_profile_kernels.QUANT_KINDS):
        _check(first, FLOAT_TYPES, "first")
        _check(second, INTEGER_TYPES, "second")
        return f"qarray_{kind}_{first}_{second}"
    if kind in ("dequant", "dequant_grid", *cupy_profile_kernels.DEQUANT_KINDS):
        _check(first, INTEGER_TYPES, "first")
        _check(second, FLOAT_TYPES, "second")
        return f"qarray_{kind}_{first}_{second}"
    if kind in ("minmax_partial", "minmax_final", "minmax_grid", "minmax_grid_final", "hist_scan", "hist_plan",
                "hist_bin"):
        _check(first, FLOAT_TYPES, "first")
        if second is not None:
            raise ValueError(f"second must be None for {kind}, got {second!r}")
        return f"qarray_{kind}_{first}"
    raise ValueError(
        "kind must be 'quant', 'quant_rest', 'quant_grid', 'quant_grid_rest', 'dequant', 'dequant_grid', "
        "'quant32', 'quant32_grid', 'dequant32', 'dequant32_grid', 'minmax_partial', 'minmax_final', "
        f"'minmax_grid', 'minmax_grid_final', 'hist_scan', 'hist_plan' or 'hist_bin', got {kind!r}"
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
        .replace("__FLAG_RECIPROCAL__", str(FLAG_RECIPROCAL))
    )
    parts = [
        prelude,
        cupy_profile_kernels.DEVICE_SOURCE,
        _HISTOGRAM.replace("__HIST_SHARED_BINS__", str(HIST_SHARED_BINS)),
    ]
    block = str(BLOCK_THREADS)

    def fill(template: str, **names: str) -> str:
        for placeholder, text in {**names, "BLOCK": block}.items():
            template = template.replace(f"__{placeholder}__", text)
        return template

    for float_name, float_type in FLOAT_TYPES.items():
        for int_name, int_type in INTEGER_TYPES.items():
            quant = {"TIN": float_type, "TOUT": int_type}
            dequant = {"TIN": int_type, "TOUT": float_type}
            for kind, rest, min_blocks in (
                ("quant", "false", FAST_QUANT_MIN_BLOCKS[float_name]),
                ("quant_rest", "true", "1"),
            ):
                names = {"NAME": kernel_name(kind, float_name, int_name), "REST": rest, "MIN_BLOCKS": min_blocks}
                parts.append(fill(_QUANT, **names, **quant))
            parts.append(fill(_DEQUANT, NAME=kernel_name("dequant", int_name, float_name), **dequant))
            for kind, rest in (("quant_grid", "false"), ("quant_grid_rest", "true")):
                parts.append(fill(_QUANT_GRID, NAME=kernel_name(kind, float_name, int_name), REST=rest, **quant))
            parts.append(fill(_DEQUANT_GRID, NAME=kernel_name("dequant_grid", int_name, float_name), **dequant))
            for kind in cupy_profile_kernels.QUANT_KINDS:
                parts.append(fill(cupy_profile_kernels.KERNELS[kind], NAME=kernel_name(kind, float_name, int_name),
                                  **quant))
            for kind in cupy_profile_kernels.DEQUANT_KINDS:
                parts.append(fill(cupy_profile_kernels.KERNELS[kind], NAME=kernel_name(kind, int_name, float_name),
                                  **dequant))
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
                _MINMAX_GRID,
                GRID=kernel_name("minmax_grid", float_name),
                GRID_FINAL=kernel_name("minmax_grid_final", float_name),
                T=float_type,
                U=KEY_TYPES[float_name],
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
            names.append(kernel_name("quant_rest", float_name, int_name))
            names.append(kernel_name("dequant", int_name, float_name))
            names.append(kernel_name("quant_grid", float_name, int_name))
            names.append(kernel_name("quant_grid_rest", float_name, int_name))
            names.append(kernel_name("dequant_grid", int_name, float_name))
            names.extend(kernel_name(kind, float_name, int_name) for kind in cupy_profile_kernels.QUANT_KINDS)
            names.extend(kernel_name(kind, int_name, float_name) for kind in cupy_profile_kernels.DEQUANT_KINDS)
        names.append(kernel_name("minmax_partial", float_name))
        names.append(kernel_name("minmax_final", float_name))
        names.append(kernel_name("minmax_grid", float_name))
        names.append(kernel_name("minmax_grid_final", float_name))
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
