// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/simd_exp.hpp
/// Vectorised exponentials and the inner kernel of PathExpansion::losses: sums of exponentials
/// of a tile of masked logits (`exp_sums`), portable (Eigen, computed in double) and with AVX2+FMA
/// and AVX-512 (detail/simd_dispatch.hpp chooses at run time).
///
/// Exponentials: 2^k e^r with k = round(y / ln 2) (the 1.5 * 2^52, or 2^23, rounding trick), r
/// = y - k ln 2 in two parts, e^r by a polynomial and 2^k written into the exponent bits. For
/// doubles kExpPoly (degree 9, relative error < 1e-13) on y clamped to [-708, 709]; for floats
/// Cephes' expf polynomial (degree 5 after 1 + r, about 1 ulp) on y clamped to [-87, 88]. NaN
/// stays NaN (max/min return their second operand, y, when it is NaN).

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "circuitry/detail/simd_dispatch.hpp"
#include "circuitry/detail/simd_gemm.hpp"
#include "circuitry/types.hpp"

namespace circuitry {
namespace detail {

/// Coefficients of 1 + r + c2 r^2 + ... + c9 r^9, a polynomial of degree 9 fitted to e^r on
/// |r| <= ln(2) / 2 with the smallest largest relative error (4e-14; Taylor's of degree 9: 7e-12).
constexpr double kExpPoly[10] = {1.0,
                                 1.0,
                                 0.49999999999883799,
                                 0.16666666668010868,
                                 0.041666666860559184,
                                 0.0083333327841125932,
                                 0.0013888825338076614,
                                 0.00019841940390442447,
                                 2.4874661486645874e-05,
                                 2.732960750164294e-06};
/// Cephes' expf: e^r = 1 + r + r^2 (c0 + c1 r + ... + c5 r^5) on |r| <= ln(2) / 2.
constexpr float kExpPolyF[6] = {5.0000001201E-1f, 1.6666665459E-1f, 4.1665795894E-2f,
                                8.3334519073E-3f, 1.3981999507E-3f, 1.9875691500E-4f};

/// y <- exp(y) for n doubles in [-708, 709] (relative error < 1e-13): the method above as a
/// fixed-length loop without branches, which compilers vectorise at -O2 (std::exp is scalar
/// and Eigen's pexp is slow on plain SSE2).
template <int n>
inline void exp_chunk(double* y) {
#ifdef _OPENMP
#pragma omp simd
#endif
  for (int j = 0; j < n; ++j) {
    const double x = y[j];
    const double shifter = 6755399441055744.0;  // 1.5 * 2^52
    const double kd = x * 1.4426950408889634 + shifter;
    const double k = kd - shifter;
    const double r = (x - k * 0.6931471803691238) - k * 1.9082149292705877e-10;
    double p = kExpPoly[9];
    for (int i = 8; i >= 0; --i) p = p * r + kExpPoly[i];
    std::uint64_t bits;
    std::memcpy(&bits, &kd, sizeof bits);
    bits = (bits + 1023) << 52;  // the low bits of kd hold k: (k + 1023) << 52 is 2^k
    double scale;
    std::memcpy(&scale, &bits, sizeof scale);
    y[j] = p * scale;
  }
}

/// The masks of a tile in PathExpansion::losses: mask k's logits are the full logits (minus[k])
/// or the logit bias, minus (minus[k]) or plus the components whose rows start at the tile row
/// offsets parts[begin[k]] .. parts[begin[k + 1] - 1].
struct TileMasks {
  std::vector<char> minus;
  std::vector<Index> begin{0};
  std::vector<Index> parts;
  Index size() const { return static_cast<Index>(minus.size()); }
};

/// Where a row's sum of exponentials must lie for log(sum) to be trusted: outside, the row is
/// recomputed exactly (a clamped exponential may matter, or a logit was not finite).
template <typename T>
struct ExpSumRange {
  static constexpr double lo = std::is_same<T, double>::value ? 1e-250 : 1e-25;
  static constexpr double hi = std::is_same<T, double>::value ? 1e250 : 1e30;
};

/// For each mask k of `m` and column j < cols, with y the mask's logits of the R rows of the
/// tile minus `shift`: base(:, j) ([R, cols]: the full logits minus shift) or bias[j] - shift,
/// -/+ the components' rows of tile(:, j) (column-major, leading dimension ld): acc(:, k) +=
/// exp(y), acc [R, m.size()] column-major. Portable: in double, y clamped to [-708, 709]; a
/// non-finite y makes acc NaN.
template <int R, typename T>
void exp_sums_portable(const TileMasks& m, Index cols, const T* base, const T* bias, const T* shift,
                       const T* tile, Index ld, double* acc) {
  using Rows = Eigen::Array<double, R, 1>;
  const Rows sh = Eigen::Map<const Eigen::Array<T, R, 1>>(shift).template cast<double>();
  for (Index k = 0; k < m.size(); ++k) {
    const std::size_t kk = static_cast<std::size_t>(k);
    const double sign = m.minus[kk] ? -1 : 1;  // y - t == y + (-1) t exactly
    Rows sum = Rows::Zero(), raw = Rows::Zero();
    for (Index j = 0; j < cols; ++j) {
      alignas(64) double y[R];
      Eigen::Map<Rows> Y(y);
      if (m.minus[kk]) {
        Y = Eigen::Map<const Eigen::Array<T, R, 1>>(base + j * R).template cast<double>();
      } else {
        Y = static_cast<double>(bias[j]) - sh;
      }
      for (Index q = m.begin[kk]; q < m.begin[kk + 1]; ++q) {
        const T* part = tile + j * ld + m.parts[static_cast<std::size_t>(q)];
        Y += sign * Eigen::Map<const Eigen::Array<T, R, 1>>(part).template cast<double>();
      }
      raw += Y;
      Y = Y.max(-708.0).min(709.0);
      exp_chunk<R>(y);
      sum += Y;
    }
    Eigen::Map<Rows> a(acc + k * R);
    for (int i = 0; i < R; ++i) a(i) += std::isfinite(raw(i)) ? sum(i) : std::nan("");
  }
}

#if CIRCUITRY_SIMD_DISPATCH
// All-lanes masks: GCC 12's unmasked AVX-512 intrinsics (max, min, shifts, conversions) start
// from _mm512_undefined_*, which -Wmaybe-uninitialized flags once inlined; the zero-masked forms
// with every lane selected are the same instructions without that warning.
constexpr __mmask8 kAll8 = 0xFF;
constexpr __mmask16 kAll16 = 0xFFFF;

/// 2^(j / 16), j = 0 .. 15 (correctly rounded): the table of exp_avx512 for doubles.
alignas(64) constexpr double kExp2Sixteenths[16] = {1.0,
                                                    1.0442737824274138,
                                                    1.0905077326652577,
                                                    1.1387886347566916,
                                                    1.189207115002721,
                                                    1.241857812073484,
                                                    1.2968395546510096,
                                                    1.3542555469368927,
                                                    1.4142135623730951,
                                                    1.4768261459394993,
                                                    1.5422108254079407,
                                                    1.6104903319492543,
                                                    1.681792830507429,
                                                    1.7562521603732995,
                                                    1.8340080864093424,
                                                    1.9152065613971474};

/// exp of 8 doubles (y clamped to [-708, 709]): 2^m 2^(j / 16) e^r with k = 16 m + j =
/// round(16 y / ln 2) (adding 1.5 * 2^48 rounds to sixteenths and leaves k in the low bits),
/// |r| <= ln(2) / 32, e^r by Taylor's polynomial of degree 6 (relative error < 5e-16),
/// 2^(j / 16) from a table of 16 (two registers) and 2^m by vscalefpd. About 3/4 of the
/// instructions of the polynomial of degree 9 over |r| <= ln(2) / 2.
CIRCUITRY_TARGET_AVX512 inline __m512d exp_avx512(__m512d y) {
  y = _mm512_maskz_min_pd(kAll8, _mm512_set1_pd(709.0),
                          _mm512_maskz_max_pd(kAll8, _mm512_set1_pd(-708.0), y));
  const __m512d shifter = _mm512_set1_pd(422212465065984.0);  // 1.5 * 2^48
  const __m512d kd = _mm512_fmadd_pd(y, _mm512_set1_pd(1.4426950408889634), shifter);
  const __m512d q = _mm512_sub_pd(kd, shifter);  // k / 16
  __m512d r = _mm512_fnmadd_pd(q, _mm512_set1_pd(0.6931471803691238), y);
  r = _mm512_fnmadd_pd(q, _mm512_set1_pd(1.9082149292705877e-10), r);
  __m512d p = _mm512_set1_pd(1.0 / 720);
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 120));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 24));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 6));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.5));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
  const __m512d t = _mm512_permutex2var_pd(_mm512_load_pd(kExp2Sixteenths), _mm512_castpd_si512(kd),
                                           _mm512_load_pd(kExp2Sixteenths + 8));
  return _mm512_maskz_scalef_pd(kAll8, _mm512_mul_pd(p, t), q);  // times 2^floor(k / 16)
}
/// 2^(j / 16), j = 0 .. 15, as floats: the table of exp_avx512 for floats.
alignas(64) constexpr float kExp2SixteenthsF[16] = {1.0f,
                                                    1.0442737340927124f,
                                                    1.0905077457427979f,
                                                    1.1387885808944702f,
                                                    1.1892070770263672f,
                                                    1.2418577671051025f,
                                                    1.2968395948410034f,
                                                    1.3542555570602417f,
                                                    1.4142135381698608f,
                                                    1.4768261909484863f,
                                                    1.5422108173370361f,
                                                    1.610490322113037f,
                                                    1.6817928552627563f,
                                                    1.7562521696090698f,
                                                    1.8340080976486206f,
                                                    1.9152065515518188f};

/// exp of 16 floats (y clamped to [-87, 88]): exp_avx512's method for doubles (1.5 * 2^19 rounds
/// to sixteenths) with Taylor's polynomial of degree 3 (relative error < 1e-8, under float's
/// rounding) and the 16 table entries in one register.
CIRCUITRY_TARGET_AVX512 inline __m512 exp_avx512(__m512 y) {
  y = _mm512_maskz_min_ps(kAll16, _mm512_set1_ps(88.0f),
                          _mm512_maskz_max_ps(kAll16, _mm512_set1_ps(-87.0f), y));
  const __m512 shifter = _mm512_set1_ps(786432.0f);  // 1.5 * 2^19
  const __m512 kd = _mm512_fmadd_ps(y, _mm512_set1_ps(1.44269504088896341f), shifter);
  const __m512 q = _mm512_sub_ps(kd, shifter);  // k / 16
  __m512 r = _mm512_fnmadd_ps(q, _mm512_set1_ps(0.693359375f), y);
  r = _mm512_fnmadd_ps(q, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 6);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512 t = _mm512_maskz_permutexvar_ps(kAll16, _mm512_castps_si512(kd),
                                               _mm512_load_ps(kExp2SixteenthsF));
  return _mm512_maskz_scalef_ps(kAll16, _mm512_mul_ps(p, t), q);  // times 2^floor(k / 16)
}
/// exp of 4 doubles (y clamped to [-708, 709]).
CIRCUITRY_TARGET_AVX2 inline __m256d exp_avx2(__m256d y) {
  y = _mm256_min_pd(_mm256_set1_pd(709.0), _mm256_max_pd(_mm256_set1_pd(-708.0), y));
  const __m256d shifter = _mm256_set1_pd(6755399441055744.0);
  const __m256d kd = _mm256_fmadd_pd(y, _mm256_set1_pd(1.4426950408889634), shifter);
  const __m256d k = _mm256_sub_pd(kd, shifter);
  __m256d r = _mm256_fnmadd_pd(k, _mm256_set1_pd(0.6931471803691238), y);
  r = _mm256_fnmadd_pd(k, _mm256_set1_pd(1.9082149292705877e-10), r);
  __m256d p = _mm256_set1_pd(kExpPoly[9]);
  for (int i = 8; i >= 0; --i) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(kExpPoly[i]));
  const __m256i e =
      _mm256_slli_epi64(_mm256_add_epi64(_mm256_castpd_si256(kd), _mm256_set1_epi64x(1023)), 52);
  return _mm256_mul_pd(p, _mm256_castsi256_pd(e));
}
/// exp of 8 floats (y clamped to [-87, 88]).
CIRCUITRY_TARGET_AVX2 inline __m256 exp_avx2(__m256 y) {
  y = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), y));
  const __m256 shifter = _mm256_set1_ps(12582912.0f);
  const __m256 kd = _mm256_fmadd_ps(y, _mm256_set1_ps(1.44269504088896341f), shifter);
  const __m256 k = _mm256_sub_ps(kd, shifter);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), y);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(kExpPolyF[5]);
  for (int i = 4; i >= 0; --i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpPolyF[i]));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_castps_si256(kd), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/// Per-level helpers of the exp_sums body: vectors of T, and the sum of their exponentials
/// added to double accumulators (floats: each vector's exponentials widened to 2 vectors).
/// load, store and add are the kernels' own (Avx512Ops, Avx2Ops: detail/simd_gemm.hpp).
struct Avx512Exp : Avx512Ops {
  CIRCUITRY_TARGET_AVX512 static __m512d set1(double v) { return _mm512_set1_pd(v); }
  CIRCUITRY_TARGET_AVX512 static __m512 set1(float v) { return _mm512_set1_ps(v); }
  CIRCUITRY_TARGET_AVX512 static __m512d sub(__m512d a, __m512d b) { return _mm512_sub_pd(a, b); }
  CIRCUITRY_TARGET_AVX512 static __m512 sub(__m512 a, __m512 b) { return _mm512_sub_ps(a, b); }
  CIRCUITRY_TARGET_AVX512 static __m512d max(__m512d a, __m512d b) {
    return _mm512_maskz_max_pd(kAll8, a, b);
  }
  CIRCUITRY_TARGET_AVX512 static __m512 max(__m512 a, __m512 b) {
    return _mm512_maskz_max_ps(kAll16, a, b);
  }
  CIRCUITRY_TARGET_AVX512 static void accumulate(__m512d y, __m512d* acc) {
    acc[0] = _mm512_add_pd(acc[0], exp_avx512(y));
  }
  CIRCUITRY_TARGET_AVX512 static void accumulate(__m512 y, __m512d* acc) {
    const __m512 e = exp_avx512(y);
    acc[0] = _mm512_add_pd(acc[0],
                           _mm512_maskz_cvtps_pd(kAll8, _mm512_maskz_extractf32x8_ps(kAll8, e, 0)));
    acc[1] = _mm512_add_pd(acc[1],
                           _mm512_maskz_cvtps_pd(kAll8, _mm512_maskz_extractf32x8_ps(kAll8, e, 1)));
  }
  CIRCUITRY_TARGET_AVX512 static __m512d zero() { return _mm512_setzero_pd(); }
  CIRCUITRY_TARGET_AVX512 static void add_to(double* p, __m512d v) {
    _mm512_storeu_pd(p, _mm512_add_pd(_mm512_loadu_pd(p), v));
  }
};
struct Avx2Exp : Avx2Ops {
  CIRCUITRY_TARGET_AVX2 static __m256d set1(double v) { return _mm256_set1_pd(v); }
  CIRCUITRY_TARGET_AVX2 static __m256 set1(float v) { return _mm256_set1_ps(v); }
  CIRCUITRY_TARGET_AVX2 static __m256d sub(__m256d a, __m256d b) { return _mm256_sub_pd(a, b); }
  CIRCUITRY_TARGET_AVX2 static __m256 sub(__m256 a, __m256 b) { return _mm256_sub_ps(a, b); }
  CIRCUITRY_TARGET_AVX2 static __m256d max(__m256d a, __m256d b) { return _mm256_max_pd(a, b); }
  CIRCUITRY_TARGET_AVX2 static __m256 max(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
  CIRCUITRY_TARGET_AVX2 static void accumulate(__m256d y, __m256d* acc) {
    acc[0] = _mm256_add_pd(acc[0], exp_avx2(y));
  }
  CIRCUITRY_TARGET_AVX2 static void accumulate(__m256 y, __m256d* acc) {
    const __m256 e = exp_avx2(y);
    acc[0] = _mm256_add_pd(acc[0], _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    acc[1] = _mm256_add_pd(acc[1], _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  CIRCUITRY_TARGET_AVX2 static __m256d zero() { return _mm256_setzero_pd(); }
  CIRCUITRY_TARGET_AVX2 static void add_to(double* p, __m256d v) {
    _mm256_storeu_pd(p, _mm256_add_pd(_mm256_loadu_pd(p), v));
  }
};

/// The number of T in a V (a vector type, or double for the double sums per float vector).
template <typename V, typename T>
constexpr Index lanes() {
  return static_cast<Index>(sizeof(V) / sizeof(T));  // NOLINT(bugprone-sizeof-expression)
}

// exp_sums_portable's computation in T (float: in float, summed in double), mask by mask with
// the mask's R sums in registers. A non-finite y gives NaN or a sum beyond ExpSumRange.
#define CIRCUITRY_EXP_SUMS_BODY(Ops)                                                              \
  using V = decltype(Ops::load(shift));                                                           \
  using D = decltype(Ops::zero());                                                                \
  constexpr Index L = lanes<V, T>(), P = R / L;                                                   \
  constexpr Index W = lanes<double, T>(); /* D per V */                                           \
  static_assert(R % L == 0, "exp_sums: R must be a multiple of the vector length");               \
  V sh[P];                                                                                        \
  for (Index p = 0; p < P; ++p) sh[p] = Ops::load(shift + p * L);                                 \
  for (Index k = 0; k < m.size(); ++k) {                                                          \
    const std::size_t kk = static_cast<std::size_t>(k);                                           \
    const Index* first = m.parts.data() + m.begin[kk];                                            \
    const Index n_parts = m.begin[kk + 1] - m.begin[kk];                                          \
    D sum[P * W];                                                                                 \
    for (Index p = 0; p < P * W; ++p) sum[p] = Ops::zero();                                       \
    for (Index j = 0; j < cols; ++j) {                                                            \
      const T* col = tile + j * ld;                                                               \
      V y[P];                                                                                     \
      if (m.minus[kk]) {                                                                          \
        for (Index p = 0; p < P; ++p) y[p] = Ops::load(base + j * R + p * L);                     \
        for (Index q = 0; q < n_parts; ++q) {                                                     \
          for (Index p = 0; p < P; ++p) y[p] = Ops::sub(y[p], Ops::load(col + first[q] + p * L)); \
        }                                                                                         \
      } else {                                                                                    \
        const V bj = Ops::set1(bias[j]);                                                          \
        for (Index p = 0; p < P; ++p) y[p] = Ops::sub(bj, sh[p]);                                 \
        for (Index q = 0; q < n_parts; ++q) {                                                     \
          for (Index p = 0; p < P; ++p) y[p] = Ops::add(y[p], Ops::load(col + first[q] + p * L)); \
        }                                                                                         \
      }                                                                                           \
      for (Index p = 0; p < P; ++p) Ops::accumulate(y[p], sum + p * W);                           \
    }                                                                                             \
    for (Index p = 0; p < P * W; ++p) Ops::add_to(acc + k * R + p * (L / W), sum[p]);             \
  }

/// exp_sums_portable with AVX-512 (R a multiple of 8 doubles or 16 floats).
template <int R, typename T>
CIRCUITRY_TARGET_AVX512 void exp_sums_avx512(const TileMasks& m, Index cols, const T* base,
                                             const T* bias, const T* shift, const T* tile, Index ld,
                                             double* acc) {
  CIRCUITRY_EXP_SUMS_BODY(Avx512Exp)
}
/// exp_sums_portable with AVX2+FMA (R a multiple of 4 doubles or 8 floats).
template <int R, typename T>
CIRCUITRY_TARGET_AVX2 void exp_sums_avx2(const TileMasks& m, Index cols, const T* base,
                                         const T* bias, const T* shift, const T* tile, Index ld,
                                         double* acc) {
  CIRCUITRY_EXP_SUMS_BODY(Avx2Exp)
}
#undef CIRCUITRY_EXP_SUMS_BODY
#endif  // CIRCUITRY_SIMD_DISPATCH

/// exp_sums_portable (its maths) with the kernels of `level`: in T, each exponential's relative
/// error < 1e-13 for doubles and ~1 ulp for floats; sums in double.
template <int R, typename T>
void exp_sums(SimdLevel level, const TileMasks& m, Index cols, const T* base, const T* bias,
              const T* shift, const T* tile, Index ld, double* acc) {
#if CIRCUITRY_SIMD_DISPATCH
  if (level == SimdLevel::avx512) {
    exp_sums_avx512<R>(m, cols, base, bias, shift, tile, ld, acc);
    return;
  }
  if (level == SimdLevel::avx2) {
    exp_sums_avx2<R>(m, cols, base, bias, shift, tile, ld, acc);
    return;
  }
#endif
  (void)level;
  exp_sums_portable<R>(m, cols, base, bias, shift, tile, ld, acc);
}

}  // namespace detail
}  // namespace circuitry
