// CPU emulation of the CUDA C++ that qarray's kernels use, so the real kernel source
// (qarray.backends.cupy_kernels.source()) compiles with a host C++ compiler and runs on
// the CPU, where tests compare it with NumPy bit for bit.
//
// Execution model. A launch runs the blocks one at a time, in reverse order (a kernel
// that relied on block 0 running first would show it). Inside a block every CUDA thread
// is a fiber (ucontext) on one OS thread, so the kernel runs as written: a thread runs
// until it reaches a synchronisation point (__syncthreads, a warp shuffle or vote), where
// it waits until every participant has arrived. Waiting forever (a barrier or a full-mask
// warp operation that some thread never reaches, e.g. after an early return) is reported
// as a deadlock instead of hanging. Warp operations check their mask: every lane must be
// in it, every lane of a call must pass the same mask, and a shuffle may only read a lane
// in the mask. Atomics are plain read-modify-writes (one OS thread runs everything).
// __shared__ variables live in one linker section that is filled with 0xff bytes (NaN for
// floating point) before each block, so a read before any write is not hidden by a value
// left by the previous block.
//
// Arithmetic. double is the host's IEEE binary64 (compile without fast-math and with
// -ffp-contract=off, so nothing is contracted or reassociated); the __d*_rn intrinsics
// are the plain operators. float is replaced by a class that mirrors CuPy's -ftz=true:
// every float operation, comparison and float<->double conversion treats subnormal
// operands as zero and flushes subnormal results to zero, as the .ftz PTX instructions
// do; bit casts (__float_as_uint, __uint_as_float) move bits unchanged, as on the GPU.
// Kernels that convert subnormal floats must therefore do it by hand, exactly as on the
// GPU. Not emulated: out-of-range float->integer casts (undefined in C++; the GPU
// saturates), which the tests avoid; whether a double->float conversion that rounds up to
// FLT_MIN is flushed (tininess before or after rounding), a case the kernels never reach.

#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace qarray_cuda_emulation {

typedef float native_float;

// ---- float with -ftz=true semantics -------------------------------------------------------

inline native_float flush(native_float value) {
    return std::fpclassify(value) == FP_SUBNORMAL ? std::copysign(0.0f, value) : value;
}

struct ftz_float {
    native_float value;

    ftz_float() = default;
    ftz_float(native_float v) : value(v) {}  // a literal or a bit cast: no flush
    // cvt.rn.ftz.f32.f64: round to nearest even, then flush a subnormal result.
    ftz_float(double v) : value(flush(static_cast<native_float>(v))) {}
    template <typename I, typename std::enable_if<std::is_integral<I>::value, int>::type = 0>
    ftz_float(I v) : value(static_cast<native_float>(v)) {}  // never subnormal

    // cvt.ftz.f64.f32: a subnormal float becomes a (signed) zero double.
    operator double() const { return static_cast<double>(flush(value)); }

    ftz_float& operator+=(ftz_float other);
    ftz_float& operator-=(ftz_float other);
    ftz_float& operator*=(ftz_float other);
    ftz_float& operator/=(ftz_float other);
    ftz_float operator-() const { return ftz_float(-value); }  // neg.f32 keeps the bits
};

static_assert(sizeof(ftz_float) == 4, "ftz_float must have the layout of float");

// The result type CUDA gives a float combined with T, and the two operands converted to it.
template <typename T>
struct mixed {
    static constexpr bool is_double = std::is_same<T, double>::value || std::is_same<T, long double>::value;
};

#define QARRAY_EMULATION_FLOAT_OPERATOR(OP)                                                   \
    inline ftz_float operator OP(ftz_float a, ftz_float b) {                                 \
        return ftz_float(flush(flush(a.value) OP flush(b.value)));                           \
    }                                                                                         \
    template <typename T, typename std::enable_if<std::is_arithmetic<T>::value, int>::type = 0> \
    inline auto operator OP(ftz_float a, T b) {                                               \
        if constexpr (mixed<T>::is_double) return static_cast<double>(a) OP static_cast<double>(b); \
        else return a OP ftz_float(static_cast<native_float>(b));                             \
    }                                                                                         \
    template <typename T, typename std::enable_if<std::is_arithmetic<T>::value, int>::type = 0> \
    inline auto operator OP(T a, ftz_float b) {                                               \
        if constexpr (mixed<T>::is_double) return static_cast<double>(a) OP static_cast<double>(b); \
        else return ftz_float(static_cast<native_float>(a)) OP b;                             \
    }
QARRAY_EMULATION_FLOAT_OPERATOR(+)
QARRAY_EMULATION_FLOAT_OPERATOR(-)
QARRAY_EMULATION_FLOAT_OPERATOR(*)
QARRAY_EMULATION_FLOAT_OPERATOR(/)
#undef QARRAY_EMULATION_FLOAT_OPERATOR

#define QARRAY_EMULATION_FLOAT_COMPARISON(OP)                                                 \
    inline bool operator OP(ftz_float a, ftz_float b) { return flush(a.value) OP flush(b.value); } \
    template <typename T, typename std::enable_if<std::is_arithmetic<T>::value, int>::type = 0> \
    inline bool operator OP(ftz_float a, T b) {                                               \
        if constexpr (mixed<T>::is_double) return static_cast<double>(a) OP static_cast<double>(b); \
        else return a OP ftz_float(static_cast<native_float>(b));                             \
    }                                                                                         \
    template <typename T, typename std::enable_if<std::is_arithmetic<T>::value, int>::type = 0> \
    inline bool operator OP(T a, ftz_float b) {                                               \
        if constexpr (mixed<T>::is_double) return static_cast<double>(a) OP static_cast<double>(b); \
        else return ftz_float(static_cast<native_float>(a)) OP b;                             \
    }
QARRAY_EMULATION_FLOAT_COMPARISON(<)
QARRAY_EMULATION_FLOAT_COMPARISON(<=)
QARRAY_EMULATION_FLOAT_COMPARISON(>)
QARRAY_EMULATION_FLOAT_COMPARISON(>=)
QARRAY_EMULATION_FLOAT_COMPARISON(==)
QARRAY_EMULATION_FLOAT_COMPARISON(!=)
#undef QARRAY_EMULATION_FLOAT_COMPARISON

inline ftz_float& ftz_float::operator+=(ftz_float other) { return *this = *this + other; }
inline ftz_float& ftz_float::operator-=(ftz_float other) { return *this = *this - other; }
inline ftz_float& ftz_float::operator*=(ftz_float other) { return *this = *this * other; }
inline ftz_float& ftz_float::operator/=(ftz_float other) { return *this = *this / other; }

// ---- fibers, barriers, warps ----------------------------------------------------------------

constexpr unsigned int kWarpSize = 32;
constexpr std::size_t kStackBytes = 64 * 1024;

struct Barrier {
    unsigned long long generation = 0;
    unsigned int arrived = 0;
    unsigned int expected = 0;
    unsigned int mask = 0;
};

struct Warp {
    Barrier barrier;
    unsigned long long slots[2][kWarpSize];
};

struct Fiber {
    ucontext_t context;
    std::vector<char> stack;
    uint3 index;
    unsigned int linear = 0;
    bool finished = false;
    bool progressed = false;
    const char* waiting_at = nullptr;
};

struct Launch {
    const char* kernel = "";
    dim3 grid, block;
    uint3 block_index = {0, 0, 0};
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    Barrier block_barrier;
    ucontext_t scheduler;
    Fiber* current = nullptr;
    const std::function<void()>* body = nullptr;
    bool failed = false;
    std::string error;
};

inline Launch& state() {
    static Launch launch;
    return launch;
}

inline std::string& last_error() {
    static std::string message;
    return message;
}

inline void yield() {
    Launch& s = state();
    swapcontext(&s.current->context, &s.scheduler);
}

// Report a broken CUDA rule from inside a fiber: the launch stops and returns the message.
[[noreturn]] inline void fail(const std::string& message) {
    Launch& s = state();
    if (!s.failed) {
        s.failed = true;
        char where[160];
        std::snprintf(where, sizeof where, " (kernel %s, block %u, thread %u)", s.kernel,
                      s.block_index.x, s.current ? s.current->linear : 0u);
        s.error = message + where;
    }
    for (;;) yield();  // the scheduler abandons this fiber
}

inline void wait_at(Barrier& barrier, unsigned int expected, unsigned int mask, const char* what) {
    Launch& s = state();
    if (barrier.arrived == 0) {
        barrier.expected = expected;
        barrier.mask = mask;
    } else if (barrier.mask != mask) {
        fail(std::string(what) + ": threads of one warp passed different masks");
    }
    const unsigned long long generation = barrier.generation;
    s.current->progressed = true;
    if (++barrier.arrived == barrier.expected) {
        barrier.arrived = 0;
        ++barrier.generation;
        return;
    }
    s.current->waiting_at = what;
    while (barrier.generation == generation) yield();
    s.current->waiting_at = nullptr;
    s.current->progressed = true;
}

inline void fiber_main() {
    Launch& s = state();
    (*s.body)();
    s.current->finished = true;
    s.current->progressed = true;
}  // returns to the scheduler through uc_link

// Warp-wide exchange: every lane of `mask` posts `bits`; returns the slots of this round.
inline const unsigned long long* exchange(unsigned int mask, unsigned long long bits,
                                          const char* what) {
    Launch& s = state();
    const unsigned int lane = s.current->linear % kWarpSize;
    const unsigned int warp = s.current->linear / kWarpSize;
    const unsigned int warp_threads =
        std::min(kWarpSize, s.block.x * s.block.y * s.block.z - warp * kWarpSize);
    const unsigned int existing = warp_threads == 32 ? 0xffffffffu : ((1u << warp_threads) - 1u);
    if (!(mask & (1u << lane))) fail(std::string(what) + ": the calling lane is not in the mask");
    if (mask & ~existing) fail(std::string(what) + ": the mask names lanes the warp does not have");
    Warp& w = s.warps[warp];
    unsigned long long* slots = w.slots[w.barrier.generation & 1u];
    slots[lane] = bits;
    wait_at(w.barrier, static_cast<unsigned int>(__builtin_popcount(mask)), mask, what);
    return slots;
}

template <typename T>
inline unsigned long long to_bits(T value) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a wide type");
    unsigned long long bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    return bits;
}

template <typename T>
inline T from_bits(unsigned long long bits) {
    T value;
    std::memcpy(&value, &bits, sizeof(T));
    return value;
}

template <typename T>
inline T shuffle(unsigned int mask, T value, unsigned int source, const char* what) {
    const unsigned long long* slots = exchange(mask, to_bits(value), what);
    if (!(mask & (1u << source))) fail(std::string(what) + ": reads a lane outside the mask");
    return from_bits<T>(slots[source]);
}

inline unsigned int lane_id() { return state().current->linear % kWarpSize; }

inline unsigned int vote(unsigned int mask, bool predicate, const char* what) {
    const unsigned long long* slots = exchange(mask, predicate ? 1ull : 0ull, what);
    unsigned int ballot = 0;
    for (unsigned int lane = 0; lane < kWarpSize; ++lane) {
        if ((mask & (1u << lane)) && slots[lane]) ballot |= 1u << lane;
    }
    return ballot;
}

// Bounds of the __shared__ section, made by the linker; hidden, so each library sees its own.
extern "C" char __start_qarray_cuda_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_qarray_cuda_shared[] __attribute__((weak, visibility("hidden")));

inline bool subnormals_supported() {
    volatile double tiny_double = 4.9406564584124654e-324;
    volatile native_float tiny_float = 1.4e-45f;
    return tiny_double * 1.0 != 0.0 && tiny_float * 1.0f != 0.0f;
}

// Run `body` as kernel `name` on a grid of `grid` blocks of `block` threads. Returns 0, or
// -1 with the reason in last_error().
inline int launch(const char* name, dim3 grid, dim3 block, unsigned int max_threads,
                  const std::function<void()>& body) {
    Launch& s = state();
    last_error().clear();
    const unsigned long long threads = 1ull * block.x * block.y * block.z;
    const unsigned long long blocks = 1ull * grid.x * grid.y * grid.z;
    char message[256];
    if (!subnormals_supported()) {
        last_error() = "the host flushes subnormals (FTZ/DAZ set in this process): results would be wrong";
        return -1;
    }
    if (threads == 0 || blocks == 0 || threads > 1024 || (max_threads && threads > max_threads)) {
        std::snprintf(message, sizeof message,
                      "kernel %s: invalid launch of %llu blocks of %llu threads (bound %u)", name,
                      blocks, threads, max_threads);
        last_error() = message;
        return -1;
    }
    s.kernel = name;
    s.grid = grid;
    s.block = block;
    s.body = &body;
    s.failed = false;
    s.error.clear();
    s.fibers.resize(threads);
    s.warps.assign((threads + kWarpSize - 1) / kWarpSize, Warp());
    for (unsigned long long b = blocks; b-- > 0;) {  // reverse order on purpose
        s.block_index = {static_cast<unsigned int>(b % grid.x),
                         static_cast<unsigned int>((b / grid.x) % grid.y),
                         static_cast<unsigned int>(b / (1ull * grid.x * grid.y))};
        s.block_barrier = Barrier();
        for (Warp& w : s.warps) w.barrier = Barrier();
        if (__start_qarray_cuda_shared && __stop_qarray_cuda_shared) {
            std::memset(__start_qarray_cuda_shared, 0xff,
                        static_cast<std::size_t>(__stop_qarray_cuda_shared - __start_qarray_cuda_shared));
        }
        for (unsigned long long t = 0; t < threads; ++t) {
            Fiber& f = s.fibers[t];
            f.linear = static_cast<unsigned int>(t);
            f.index = {static_cast<unsigned int>(t % block.x),
                       static_cast<unsigned int>((t / block.x) % block.y),
                       static_cast<unsigned int>(t / (1ull * block.x * block.y))};
            f.finished = false;
            f.waiting_at = nullptr;
            f.stack.resize(kStackBytes);
            getcontext(&f.context);
            f.context.uc_stack.ss_sp = f.stack.data();
            f.context.uc_stack.ss_size = f.stack.size();
            f.context.uc_link = &s.scheduler;
            makecontext(&f.context, fiber_main, 0);
        }
        for (;;) {
            bool all_finished = true;
            bool progress = false;
            for (Fiber& f : s.fibers) {
                if (f.finished) continue;
                f.progressed = false;
                s.current = &f;
                swapcontext(&s.scheduler, &f.context);
                s.current = nullptr;
                if (s.failed) {
                    last_error() = s.error;
                    return -1;
                }
                progress = progress || f.progressed;
                all_finished = all_finished && f.finished;
            }
            if (all_finished) break;
            if (!progress) {
                unsigned int waiting = 0, done = 0;
                const char* at = "";
                for (const Fiber& f : s.fibers) {
                    if (f.finished) ++done;
                    else if (f.waiting_at) { ++waiting; at = f.waiting_at; }
                }
                std::snprintf(message, sizeof message,
                              "kernel %s, block %u: deadlock, %u threads wait at %s while %u "
                              "have returned",
                              name, static_cast<unsigned int>(b), waiting, at, done);
                last_error() = message;
                return -1;
            }
        }
    }
    return 0;
}

inline const uint3& thread_index() { return state().current->index; }
inline const uint3& block_index() { return state().block_index; }
inline uint3 block_dim() { return {state().block.x, state().block.y, state().block.z}; }
inline uint3 grid_dim() { return {state().grid.x, state().grid.y, state().grid.z}; }

}  // namespace qarray_cuda_emulation

#define QARRAY_EMULATION_EXPORT extern "C" __attribute__((visibility("default")))

// ---- the CUDA names -----------------------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __constant__ static
#define __shared__ static __attribute__((section("qarray_cuda_shared"), aligned(16)))
#define threadIdx (::qarray_cuda_emulation::thread_index())
#define blockIdx (::qarray_cuda_emulation::block_index())
#define blockDim (::qarray_cuda_emulation::block_dim())
#define gridDim (::qarray_cuda_emulation::grid_dim())
#define warpSize 32

inline void __syncthreads() {
    namespace e = ::qarray_cuda_emulation;
    e::Launch& s = e::state();
    const unsigned int threads = s.block.x * s.block.y * s.block.z;
    e::wait_at(s.block_barrier, threads, 0xffffffffu, "__syncthreads");
}
inline void __syncwarp(unsigned int mask = 0xffffffffu) {
    ::qarray_cuda_emulation::exchange(mask, 0, "__syncwarp");
}
inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T>
inline T __shfl_sync(unsigned int mask, T var, int src_lane, int width = 32) {
    const unsigned int lane = ::qarray_cuda_emulation::lane_id();
    const unsigned int base = lane & ~static_cast<unsigned int>(width - 1);
    return ::qarray_cuda_emulation::shuffle(mask, var, base + (src_lane & (width - 1)), "__shfl_sync");
}
template <typename T>
inline T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = 32) {
    const unsigned int lane = ::qarray_cuda_emulation::lane_id();
    const unsigned int in_segment = lane & static_cast<unsigned int>(width - 1);
    const unsigned int source = in_segment + delta < static_cast<unsigned int>(width) ? lane + delta : lane;
    return ::qarray_cuda_emulation::shuffle(mask, var, source, "__shfl_down_sync");
}
template <typename T>
inline T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = 32) {
    const unsigned int lane = ::qarray_cuda_emulation::lane_id();
    const unsigned int in_segment = lane & static_cast<unsigned int>(width - 1);
    const unsigned int source = in_segment >= delta ? lane - delta : lane;
    return ::qarray_cuda_emulation::shuffle(mask, var, source, "__shfl_up_sync");
}
template <typename T>
inline T __shfl_xor_sync(unsigned int mask, T var, int lane_mask, int width = 32) {
    const unsigned int lane = ::qarray_cuda_emulation::lane_id();
    const unsigned int base = lane & ~static_cast<unsigned int>(width - 1);
    unsigned int source = lane ^ static_cast<unsigned int>(lane_mask);
    if (source < base || source >= base + static_cast<unsigned int>(width)) source = lane;
    return ::qarray_cuda_emulation::shuffle(mask, var, source, "__shfl_xor_sync");
}
inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
    return ::qarray_cuda_emulation::vote(mask, predicate != 0, "__ballot_sync");
}
inline int __any_sync(unsigned int mask, int predicate) {
    return ::qarray_cuda_emulation::vote(mask, predicate != 0, "__any_sync") != 0;
}
inline int __all_sync(unsigned int mask, int predicate) {
    return ::qarray_cuda_emulation::vote(mask, predicate != 0, "__all_sync") == mask;
}

// Atomics: the emulation runs every thread on one OS thread, so a plain update is atomic.
template <typename T>
inline T __qarray_atomic_update(T* address, T value, int op) {
    const T old = *address;
    switch (op) {
        case 0: *address = old + value; break;
        case 1: *address = old - value; break;
        case 2: *address = value < old ? value : old; break;
        case 3: *address = value > old ? value : old; break;
        case 4: *address = value; break;
    }
    return old;
}
template <typename T> inline T atomicAdd(T* address, T value) { return __qarray_atomic_update(address, value, 0); }
template <typename T> inline T atomicSub(T* address, T value) { return __qarray_atomic_update(address, value, 1); }
template <typename T> inline T atomicMin(T* address, T value) { return __qarray_atomic_update(address, value, 2); }
template <typename T> inline T atomicMax(T* address, T value) { return __qarray_atomic_update(address, value, 3); }
template <typename T> inline T atomicExch(T* address, T value) { return __qarray_atomic_update(address, value, 4); }
template <typename T> inline T atomicCAS(T* address, T compare, T value) {
    const T old = *address;
    if (old == compare) *address = value;
    return old;
}
template <typename T> inline T atomicOr(T* address, T value) { const T old = *address; *address = old | value; return old; }
template <typename T> inline T atomicAnd(T* address, T value) { const T old = *address; *address = old & value; return old; }

// Bit casts and the double intrinsics (IEEE, one rounding each).
typedef ::qarray_cuda_emulation::ftz_float __qarray_float;
inline long long __double_as_longlong(double x) { return ::qarray_cuda_emulation::from_bits<long long>(::qarray_cuda_emulation::to_bits(x)); }
inline double __longlong_as_double(long long x) { return ::qarray_cuda_emulation::from_bits<double>(::qarray_cuda_emulation::to_bits(x)); }
inline int __double2hiint(double x) { return static_cast<int>(static_cast<unsigned long long>(__double_as_longlong(x)) >> 32); }
inline int __double2loint(double x) { return static_cast<int>(static_cast<unsigned int>(__double_as_longlong(x))); }
inline double __hiloint2double(int hi, int lo) {
    return __longlong_as_double(static_cast<long long>((static_cast<unsigned long long>(static_cast<unsigned int>(hi)) << 32) | static_cast<unsigned int>(lo)));
}
inline unsigned int __float_as_uint(__qarray_float x) { return ::qarray_cuda_emulation::from_bits<unsigned int>(::qarray_cuda_emulation::to_bits(x.value)); }
inline int __float_as_int(__qarray_float x) { return static_cast<int>(__float_as_uint(x)); }
inline __qarray_float __uint_as_float(unsigned int x) { return __qarray_float(::qarray_cuda_emulation::from_bits<float>(x)); }
inline __qarray_float __int_as_float(int x) { return __uint_as_float(static_cast<unsigned int>(x)); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __drcp_rn(double a) { return 1.0 / a; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline __qarray_float __fadd_rn(__qarray_float a, __qarray_float b) { return a + b; }
inline __qarray_float __fsub_rn(__qarray_float a, __qarray_float b) { return a - b; }
inline __qarray_float __fmul_rn(__qarray_float a, __qarray_float b) { return a * b; }
inline __qarray_float __fdiv_rn(__qarray_float a, __qarray_float b) { return a / b; }
inline __qarray_float __frcp_rn(__qarray_float a) { return __qarray_float(1.0f) / a; }
inline __qarray_float __double2float_rn(double x) { return __qarray_float(x); }
inline double __ll2double_rn(long long x) { return static_cast<double>(x); }
inline double __ull2double_rn(unsigned long long x) { return static_cast<double>(x); }
inline double __int2double_rn(int x) { return static_cast<double>(x); }
inline double __uint2double_rn(unsigned int x) { return static_cast<double>(x); }
inline long long __double2ll_rn(double x) { return static_cast<long long>(std::nearbyint(x)); }
inline long long __double2ll_rz(double x) { return static_cast<long long>(x); }
inline long long __double2ll_rd(double x) { return static_cast<long long>(std::floor(x)); }
inline long long __double2ll_ru(double x) { return static_cast<long long>(std::ceil(x)); }
inline int __double2int_rn(double x) { return static_cast<int>(std::nearbyint(x)); }
inline int __double2int_rz(double x) { return static_cast<int>(x); }
inline int __double2int_rd(double x) { return static_cast<int>(std::floor(x)); }
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return static_cast<unsigned int>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned int>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
template <typename T> inline T __ldg(const T* address) { return *address; }

// Math functions: the double ones are the host's (correctly rounded for these); float
// overloads go through the ftz float.
using std::ceil;
using std::fabs;
using std::floor;
using std::fmax;
using std::fmin;
using std::isfinite;
using std::isinf;
using std::isnan;
using std::nearbyint;
using std::rint;
using std::trunc;
inline __qarray_float rint(__qarray_float x) { return __qarray_float(std::rint(x.value)); }
inline __qarray_float rintf(__qarray_float x) { return rint(x); }
inline __qarray_float fabs(__qarray_float x) { return __qarray_float(std::fabs(x.value)); }
inline __qarray_float fabsf(__qarray_float x) { return fabs(x); }
inline __qarray_float floorf(__qarray_float x) { return __qarray_float(std::floor(::qarray_cuda_emulation::flush(x.value))); }
inline __qarray_float ceilf(__qarray_float x) { return __qarray_float(std::ceil(::qarray_cuda_emulation::flush(x.value))); }
inline bool isnan(__qarray_float x) { return std::isnan(x.value); }
inline bool isinf(__qarray_float x) { return std::isinf(x.value); }
inline bool isfinite(__qarray_float x) { return std::isfinite(x.value); }
template <typename T, typename std::enable_if<std::is_integral<T>::value, int>::type = 0>
inline T min(T a, T b) { return b < a ? b : a; }
template <typename T, typename std::enable_if<std::is_integral<T>::value, int>::type = 0>
inline T max(T a, T b) { return a < b ? b : a; }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// From here on, `float` in kernel source means the GPU's float under -ftz=true.
#define float __qarray_float
