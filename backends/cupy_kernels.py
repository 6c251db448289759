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

COMPILE_OPTIONS: Tuple[str, ...] = ("--fmad=false",)
"""NVRTC options: never contract a multiply and an add into one rounding (the _rn intrinsics
already pin each operation; this keeps any other arithmetic honest too). No fast-math option."""

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

// ---- quant -------------------------------------------------------------------------------

template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_quant_one(
    TIN raw, long long i, TOUT* __restrict__ q, double scale, double zero_point, int flags,
    double clip_low, double clip_high, double fit_low, double fit_high,
    unsigned long long& n_nonfinite, unsigned long long& n_outside)
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
    q[i] = (TOUT)rounded;
}

template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_quant(
    const TIN* __restrict__ x, TOUT* __restrict__ q, long long n, double scale,
    double zero_point, int flags, double clip_low, double clip_high, double fit_low,
    double fit_high, unsigned long long* __restrict__ problems)
{
    unsigned long long n_nonfinite = 0ull;
    unsigned long long n_outside = 0ull;
    const long long stride = (long long)blockDim.x * gridDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    // Four independent loads in flight per thread, then the tail one at a time.
    for (; i + 3 * stride < n; i += 4 * stride) {
        const TIN a = x[i];
        const TIN b = x[i + stride];
        const TIN c = x[i + 2 * stride];
        const TIN d = x[i + 3 * stride];
        qarray_quant_one(a, i, q, scale, zero_point, flags, clip_low, clip_high, fit_low,
                         fit_high, n_nonfinite, n_outside);
        qarray_quant_one(b, i + stride, q, scale, zero_point, flags, clip_low, clip_high,
                         fit_low, fit_high, n_nonfinite, n_outside);
        qarray_quant_one(c, i + 2 * stride, q, scale, zero_point, flags, clip_low, clip_high,
                         fit_low, fit_high, n_nonfinite, n_outside);
        qarray_quant_one(d, i + 3 * stride, q, scale, zero_point, flags, clip_low, clip_high,
                         fit_low, fit_high, n_nonfinite, n_outside);
    }
    for (; i < n; i += stride) {
        qarray_quant_one(x[i], i, q, scale, zero_point, flags, clip_low, clip_high, fit_low,
                         fit_high, n_nonfinite, n_outside);
    }
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

// ---- dequant -----------------------------------------------------------------------------

template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_dequant(
    const TIN* __restrict__ q, TOUT* __restrict__ y, long long n, double scale,
    double zero_point)
{
    const long long stride = (long long)blockDim.x * gridDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        const TIN a = q[i];
        const TIN b = q[i + stride];
        const TIN c = q[i + 2 * stride];
        const TIN d = q[i + 3 * stride];
        y[i] = qarray_from_double<TOUT>(__dmul_rn(scale, __dsub_rn((double)a, zero_point)));
        y[i + stride] =
            qarray_from_double<TOUT>(__dmul_rn(scale, __dsub_rn((double)b, zero_point)));
        y[i + 2 * stride] =
            qarray_from_double<TOUT>(__dmul_rn(scale, __dsub_rn((double)c, zero_point)));
        y[i + 3 * stride] =
            qarray_from_double<TOUT>(__dmul_rn(scale, __dsub_rn((double)d, zero_point)));
    }
    for (; i < n; i += stride) {
        y[i] = qarray_from_double<TOUT>(__dmul_rn(scale, __dsub_rn((double)q[i], zero_point)));
    }
}

// ---- per-block parameters (per channel, per group) -------------------------------------------
// The values are a C-order (rows, length) matrix: row r takes grid row rows[r], and its values
// [g * group, (g + 1) * group) grid column g; parameter p = rows[r] * n_groups + g. With
// QARRAY_FLAG_CLIP the rounded value is clipped to [low[p], high[p]]; with
// QARRAY_FLAG_COUNT_OUTSIDE the ones outside it are counted.

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
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const long long r = i / length;
        const long long p = rows[r] * n_groups + (i - r * length) / group;
        qarray_quant_one(x[i], i, q, scale[p], zero[p], flags, low[p], high[p], low[p], high[p],
                         n_nonfinite, n_outside);
    }
    if (flags & (QARRAY_FLAG_COUNT_NONFINITE | QARRAY_FLAG_COUNT_OUTSIDE)) {
        n_nonfinite = qarray_warp_sum(n_nonfinite);
        n_outside = qarray_warp_sum(n_outside);
        if ((threadIdx.x & 31u) == 0u) {
            if (n_nonfinite != 0ull) atomicAdd(problems, n_nonfinite);
            if (n_outside != 0ull) atomicAdd(problems + 1, n_outside);
        }
    }
}

template <typename TIN, typename TOUT>
__device__ __forceinline__ void qarray_dequant_grid(
    const TIN* __restrict__ q, TOUT* __restrict__ y, long long n, long long length,
    long long group, long long n_groups, const long long* __restrict__ rows,
    const double* __restrict__ scale, const double* __restrict__ zero)
{
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const long long r = i / length;
        const long long p = rows[r] * n_groups + (i - r * length) / group;
        y[i] = qarray_from_double<TOUT>(__dmul_rn(scale[p], __dsub_rn((double)q[i], zero[p])));
    }
}

// ---- min / max ---------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ void qarray_fold(T raw, int omit_nonfinite, double& low, double& high) {
    const double value = qarray_to_double(raw);
    if (omit_nonfinite && !qarray_isfinite(value)) {
        return;
    }
    low = qarray_min(low, value);
    high = qarray_max(high, value);
}

// Block-wide min and max; the result is valid in thread 0. Every thread must call it.
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

// First pass: each block folds its share and writes (min, max) to partial[2 * block].
template <typename T>
__device__ __forceinline__ void qarray_minmax_partial(
    const T* __restrict__ x, long long n, int omit_nonfinite, double* __restrict__ partial)
{
    double low = qarray_inf();
    double high = -qarray_inf();
    const long long stride = (long long)blockDim.x * gridDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        const T a = x[i];
        const T b = x[i + stride];
        const T c = x[i + 2 * stride];
        const T d = x[i + 3 * stride];
        qarray_fold(a, omit_nonfinite, low, high);
        qarray_fold(b, omit_nonfinite, low, high);
        qarray_fold(c, omit_nonfinite, low, high);
        qarray_fold(d, omit_nonfinite, low, high);
    }
    for (; i < n; i += stride) {
        qarray_fold(x[i], omit_nonfinite, low, high);
    }
    qarray_block_minmax(low, high);
    if (threadIdx.x == 0u) {
        partial[2 * (long long)blockIdx.x] = low;
        partial[2 * (long long)blockIdx.x + 1] = high;
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
// State of one histogram, on the device: ints = [has_data, k, j_lo, nonfinite_seen, skip_batch],
// bounds = [min, max], and a buffer of max_bins counts (two, used in turn).

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

// One block: fold the batch's (min, max) into the state, choose the new k and j_lo, and write
// the old counts coarsened to the new width into new_counts (a plain copy when k stays).
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

// Grid-stride: count each finite value into bin floor(x / 2**k) - j_lo (k, j_lo read from the
// state). With use_shared (max_bins <= QARRAY_HIST_SHARED_BINS), each block counts into 32-bit
// counters in shared memory (the launch keeps every block below 2**31 values) and adds them to
// the counts at the end; otherwise it adds straight to the counts.
template <typename T>
__device__ __forceinline__ void qarray_hist_bin(
    const T* __restrict__ x, long long n, const long long* __restrict__ ints, long long max_bins,
    unsigned long long* __restrict__ counts, int use_shared)
{
    __shared__ unsigned int qarray_hist_shared[QARRAY_HIST_SHARED_BINS];
    if (ints[4] != 0LL) {
        return;  // the plan skipped this batch; the same for every thread, so no barrier is missed
    }
    const long long k = ints[1];
    const long long j_lo = ints[2];
    // x * 2**-k equals x / 2**k bit for bit wherever 2**-k is a double (k >= -1023).
    const bool divide = k < -1023LL;
    const double factor = divide ? qarray_pow2(k) : qarray_pow2(-k);
    if (use_shared) {
        for (long long t = threadIdx.x; t < max_bins; t += blockDim.x) {
            qarray_hist_shared[t] = 0u;
        }
        __syncthreads();
    }
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const double value = qarray_to_double(x[i]);
        if (!qarray_isfinite(value)) {
            continue;
        }
        const double quotient = divide ? __ddiv_rn(value, factor) : __dmul_rn(value, factor);
        long long index = (quotient == 0.0 && value < 0.0) ? -1LL : (long long)floor(quotient);
        index -= j_lo;
        if (index >= 0LL && index < max_bins) {
            if (use_shared) {
                atomicAdd(qarray_hist_shared + index, 1u);
            } else {
                atomicAdd(counts + index, 1ull);
            }
        }
    }
    if (use_shared) {
        __syncthreads();
        for (long long t = threadIdx.x; t < max_bins; t += blockDim.x) {
            const unsigned int count = qarray_hist_shared[t];
            if (count != 0u) {
                atomicAdd(counts + t, (unsigned long long)count);
            }
        }
    }
}
"""

_HISTOGRAM_KERNELS = r"""
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
            (integer in, float out), ``"minmax_partial"``, ``"minmax_final"``, ``"hist_plan"`` or
            ``"hist_bin"`` (one float dtype).
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
    if kind in ("minmax_partial", "minmax_final", "hist_plan", "hist_bin"):
        _check(first, FLOAT_TYPES, "first")
        if second is not None:
            raise ValueError(f"second must be None for {kind}, got {second!r}")
        return f"qarray_{kind}_{first}"
    raise ValueError(
        "kind must be 'quant', 'quant_grid', 'dequant', 'dequant_grid', 'minmax_partial', 'minmax_final', "
        f"'hist_plan' or 'hist_bin', got {kind!r}"
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
