// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/simd_dispatch.hpp
/// Which vector instructions the hot kernels (detail/simd_gemm.hpp, detail/simd_exp.hpp) use,
/// chosen at run time: the library sets no compiler flags, so on x86-64 its code compiles to
/// SSE2, and the kernels that matter also come as AVX2+FMA and AVX-512 (F, DQ, VL) functions
/// (GCC/Clang target attributes) that run only when the processor has those instructions.
///
///     SimdLevel::none    Eigen / plain C++ (any processor, any compiler)
///     SimdLevel::avx2    AVX2 + FMA, 256-bit vectors
///     SimdLevel::avx512  AVX-512 F/DQ/VL, 512-bit vectors (Zen 4/5, Skylake-X and later)
///
/// `simd_level()` is the best level the processor supports, lowered by the environment variable
/// CIRCUITRY_SIMD=avx512|avx2|none (read once) or by `force_simd_level` (tests use it to run
/// every kernel at every level the machine has). Define CIRCUITRY_NO_SIMD_DISPATCH to compile
/// the portable kernels only.

#include <atomic>
#include <cstdlib>
#include <cstring>

#ifdef _OPENMP
/// `#pragma omp parallel for` with dynamic scheduling, when OpenMP is enabled; and its two
/// halves, for loops whose threads keep buffers of their own (declared inside the parallel
/// block: right also when the loop runs nested in another parallel region).
#define CIRCUITRY_OMP_PARALLEL_FOR _Pragma("omp parallel for schedule(dynamic)")
#define CIRCUITRY_OMP_PARALLEL _Pragma("omp parallel")
#define CIRCUITRY_OMP_FOR _Pragma("omp for schedule(dynamic)")
#include <omp.h>
#else
#define CIRCUITRY_OMP_PARALLEL_FOR
#define CIRCUITRY_OMP_PARALLEL
#define CIRCUITRY_OMP_FOR
#endif

#if !defined(CIRCUITRY_NO_SIMD_DISPATCH) && (defined(__GNUC__) || defined(__clang__)) && \
    defined(__x86_64__)
#define CIRCUITRY_SIMD_DISPATCH 1
#include <immintrin.h>
#define CIRCUITRY_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define CIRCUITRY_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma")))
#else
#define CIRCUITRY_SIMD_DISPATCH 0
#endif

namespace circuitry {
namespace detail {

/// The number of threads a parallel loop may use, and the calling thread's index in it (1 and 0
/// without OpenMP): for per-thread work buffers.
inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
inline int thread_index() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/// Vector instruction sets of the kernels, in increasing order.
enum class SimdLevel { none = 0, avx2 = 1, avx512 = 2 };

/// "none", "avx2", "avx512".
inline const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::none: return "none";
    case SimdLevel::avx2: return "avx2";
    case SimdLevel::avx512: return "avx512";
  }
  return "none";
}

/// The best level compiled in and supported by this processor.
inline SimdLevel supported_simd_level() {
#if CIRCUITRY_SIMD_DISPATCH
  static const SimdLevel level = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return SimdLevel::none;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl")) {
      return SimdLevel::avx512;
    }
    return SimdLevel::avx2;
  }();
  return level;
#else
  return SimdLevel::none;
#endif
}

/// The level a value of CIRCUITRY_SIMD asks for: "none", "avx2", or avx512 for anything else
/// (unset included).
inline SimdLevel parse_simd_level(const char* value) {
  if (value == nullptr) return SimdLevel::avx512;
  if (std::strcmp(value, "none") == 0) return SimdLevel::none;
  if (std::strcmp(value, "avx2") == 0) return SimdLevel::avx2;
  return SimdLevel::avx512;
}

/// The level CIRCUITRY_SIMD asks for, read once.
inline SimdLevel environment_simd_level() {
  static const SimdLevel level = parse_simd_level(std::getenv("CIRCUITRY_SIMD"));
  return level;
}

/// The level forced by force_simd_level, -1 for none.
inline std::atomic<int>& forced_simd_level() {
  static std::atomic<int> level{-1};
  return level;
}

/// Makes simd_level() return min(level, supported_simd_level()) until reset_simd_level(), for
/// tests and benchmarks; the environment variable is ignored meanwhile.
inline void force_simd_level(SimdLevel level) {
  forced_simd_level().store(static_cast<int>(level));
}
inline void reset_simd_level() { forced_simd_level().store(-1); }

/// The level the kernels use now (see the file comment).
inline SimdLevel simd_level() {
  const int forced = forced_simd_level().load(std::memory_order_relaxed);
  const SimdLevel want = forced >= 0 ? static_cast<SimdLevel>(forced) : environment_simd_level();
  const SimdLevel have = supported_simd_level();
  return static_cast<int>(want) < static_cast<int>(have) ? want : have;
}

}  // namespace detail
}  // namespace circuitry
