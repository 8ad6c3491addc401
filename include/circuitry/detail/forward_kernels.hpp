// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/forward_kernels.hpp
/// Small numerical kernels shared by forward.hpp and path_expansion.hpp: the causal softmax of
/// attention scores, vectorised exponentials, row-wise log-sum-exp and next-token cross-entropy,
/// the two inner kernels of PathExpansion::losses (a product with a short inner dimension and
/// the sums of exponentials of a tile of masked logits), and the OpenMP pragma macro and thread
/// queries (no-ops when OpenMP is not enabled, so the headers compile with and without it).
///
/// The library sets no compiler flags, so on x86-64 these compile to SSE2. With GCC or Clang the
/// losses' kernels also have AVX2+FMA versions (function target attributes), chosen at run time
/// when the processor has them: about 3x faster. Define CIRCUITRY_NO_SIMD_DISPATCH to compile
/// the portable versions only.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "circuitry/error.hpp"
#include "circuitry/types.hpp"

#ifdef _OPENMP
/// `#pragma omp parallel for` with dynamic scheduling, when OpenMP is enabled.
#define CIRCUITRY_OMP_PARALLEL_FOR _Pragma("omp parallel for schedule(dynamic)")
#include <omp.h>
#else
#define CIRCUITRY_OMP_PARALLEL_FOR
#endif

#if !defined(CIRCUITRY_NO_SIMD_DISPATCH) && (defined(__GNUC__) || defined(__clang__)) && \
    defined(__x86_64__)
#define CIRCUITRY_SIMD_DISPATCH 1
#include <immintrin.h>
#define CIRCUITRY_TARGET_AVX2 __attribute__((target("avx2,fma")))
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

/// Whether the AVX2+FMA kernels are compiled in and the processor runs them.
inline bool has_avx2_fma() {
#if CIRCUITRY_SIMD_DISPATCH
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

/// Turns a square matrix of attention scores (row = query position, column = key position) into
/// the causal attention pattern, in place: row i becomes softmax(scores(i, 0..i)) on columns
/// 0..i and exactly 0 on columns i+1.. (TransformerLens masks future keys with -inf before the
/// softmax, which gives the same zeros).
template <typename Scalar>
void causal_softmax_inplace(Matrix<Scalar>& scores) {
  const Index n = scores.rows();
  CIRCUITRY_ASSERT(scores.cols() == n);
  for (Index i = 0; i < n; ++i) {
    Scalar mx = scores(i, 0);
    for (Index j = 1; j <= i; ++j) mx = std::max(mx, scores(i, j));
    Scalar sum = 0;
    for (Index j = 0; j <= i; ++j) {
      const Scalar e = std::exp(scores(i, j) - mx);
      scores(i, j) = e;
      sum += e;
    }
    const Scalar inv = Scalar(1) / sum;
    for (Index j = 0; j <= i; ++j) scores(i, j) *= inv;
    for (Index j = i + 1; j < n; ++j) scores(i, j) = Scalar(0);
  }
}

/// Values per call of `exp_chunk` in sum_exp and row_logsumexp.
constexpr int kExpChunk = 64;

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

/// y <- exp(y) for n doubles in [-708, 709]: 2^k e^r with k = round(y / ln 2) (the
/// 1.5 * 2^52 rounding trick), r = y - k ln 2 in two parts (|r| <= ln(2) / 2), e^r by kExpPoly
/// (relative error < 1e-13) and 2^k written into the exponent bits. A fixed-length loop without
/// branches, so that compilers vectorise it at -O2: std::exp is scalar and Eigen's pexp is slow
/// on plain SSE2 (no -march), and the losses of PathExpansion take about a billion exponentials.
template <int n = kExpChunk>
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

/// sum_j exp(x[j] - shift) over n values, accumulated in double; exact to a few ulps per term
/// where x[j] - shift lies in [-708, 709] and clamped there otherwise (a term below e^-708 is
/// counted as e^-708). NaN when a value is not finite, so that callers can take a slower path.
template <typename Scalar>
double sum_exp(const Scalar* x, Index n, double shift) {
  using Chunk = Eigen::Array<double, kExpChunk, 1>;
  Chunk acc = Chunk::Zero(), raw = Chunk::Zero(), buf;
  Index j = 0;
  for (; j + kExpChunk <= n; j += kExpChunk) {
    buf =
        Eigen::Map<const Eigen::Array<Scalar, kExpChunk, 1>>(x + j).template cast<double>() - shift;
    raw += buf;
    buf = buf.max(-708.0).min(709.0);
    exp_chunk(buf.data());
    acc += buf;
  }
  double s = acc.sum(), check = raw.sum();
  for (; j < n; ++j) {
    const double v = static_cast<double>(x[j]) - shift;
    check += v;
    s += std::exp(std::min(709.0, std::max(-708.0, v)));
  }
  return std::isfinite(check) ? s : std::numeric_limits<double>::quiet_NaN();
}

/// Row-wise log-sum-exp of a block of logits: lse(i) = log sum_j exp(logits(i, j)), computed
/// stably as m_i + log sum_j exp(logits(i, j) - m_i) with m_i the row maximum. Column-major
/// blocks are read a column at a time (kExpChunk rows at once), so that a block of a tall
/// [tokens, d_vocab] matrix is read in order; rows with a non-finite value take std::exp.
template <typename Derived>
Vector<typename Derived::Scalar> row_logsumexp(const Eigen::MatrixBase<Derived>& logits) {
  using Scalar = typename Derived::Scalar;
  using Chunk = Eigen::Array<double, kExpChunk, 1>;
  const Index n = logits.rows(), V = logits.cols();
  const Vector<Scalar> mx = logits.rowwise().maxCoeff();
  Vector<Scalar> out(n);
  Eigen::Matrix<Scalar, 1, Eigen::Dynamic> row(V);
  const auto slow = [&](Index i) {
    row = logits.row(i);
    return static_cast<double>((row.array() - mx(i)).exp().sum());
  };
  if (Derived::IsRowMajor || n < kExpChunk / 4) {
    for (Index i = 0; i < n; ++i) {
      row = logits.row(i);
      double s = sum_exp(row.data(), V, static_cast<double>(mx(i)));
      out(i) = mx(i) + static_cast<Scalar>(std::log(std::isfinite(s) ? s : slow(i)));
    }
    return out;
  }
  for (Index i0 = 0; i0 < n; i0 += kExpChunk) {
    const Index m = std::min<Index>(kExpChunk, n - i0);
    Chunk shift = Chunk::Zero(), acc = Chunk::Zero(), raw = Chunk::Zero(), buf = Chunk::Zero();
    shift.head(m) = mx.segment(i0, m).template cast<double>();
    for (Index j = 0; j < V; ++j) {
      buf.head(m) = logits.col(j).segment(i0, m).template cast<double>();
      buf -= shift;
      raw += buf;
      buf = buf.max(-708.0).min(709.0);
      exp_chunk(buf.data());
      acc += buf;
    }
    for (Index i = 0; i < m; ++i) {
      const double s = std::isfinite(raw(i)) ? acc(i) : slow(i0 + i);
      out(i0 + i) = mx(i0 + i) + static_cast<Scalar>(std::log(s));
    }
  }
  return out;
}

/// Next-token cross-entropy of a block of rows: out(i) = lse(i) - logits(i, target(i)) for each
/// row with a target >= 0 (-log_softmax(logits)(i, target)); rows with target < 0 (the last
/// position of a sequence has no next token) get NaN. `target` has one entry per row.
template <typename Derived, typename TargetVector>
Vector<typename Derived::Scalar> next_token_losses(const Eigen::MatrixBase<Derived>& logits,
                                                   const TargetVector& target) {
  using Scalar = typename Derived::Scalar;
  const Vector<Scalar> lse = row_logsumexp(logits);
  Vector<Scalar> out(logits.rows());
  for (Index i = 0; i < logits.rows(); ++i) {
    out(i) =
        target(i) >= 0 ? lse(i) - logits(i, target(i)) : std::numeric_limits<Scalar>::quiet_NaN();
  }
  return out;
}

/// Rows per block when a [tokens x d_vocab] computation is split over threads.
constexpr Index kRowBlock = 64;

/// The masks of a tile in PathExpansion::losses: mask k's logits are the full logits (minus[k])
/// or the logit bias, minus (minus[k]) or plus the components whose rows start at the tile row
/// offsets parts[begin[k]] .. parts[begin[k + 1] - 1].
struct TileMasks {
  std::vector<char> minus;
  std::vector<Index> begin{0};
  std::vector<Index> parts;
  Index size() const { return static_cast<Index>(minus.size()); }
};

/// For each mask k of `m` and column j < cols, with y the mask's logits of the R rows of the
/// tile minus `shift`: base(:, j) ([R, cols]: the full logits minus shift) or bias[j] - shift,
/// -/+ the components' rows of tile(:, j) (column-major, leading dimension ld):
/// acc(:, k) += exp(y), y clamped to [-708, 709], and raw(:, k) += y (to find non-finite logits).
/// acc and raw: [R, m.size()], column-major. Vectorised over the R rows.
template <int R, typename T>
void exp_sums(const TileMasks& m, Index cols, const double* base, const T* bias,
              const double* shift, const T* tile, Index ld, double* acc, double* raw) {
  using Rows = Eigen::Array<double, R, 1>;
  const Eigen::Map<const Rows> sh(shift);
  for (Index j = 0; j < cols; ++j) {
    const Eigen::Map<const Rows> b(base + j * R);
    const Rows c = static_cast<double>(bias[j]) - sh;
    const T* col = tile + j * ld;
    for (Index k = 0; k < m.size(); ++k) {
      const bool minus = m.minus[static_cast<std::size_t>(k)] != 0;
      alignas(64) double y[R];
      Eigen::Map<Rows> Y(y);
      if (minus) {
        Y = b;
      } else {
        Y = c;
      }
      for (Index q = m.begin[static_cast<std::size_t>(k)];
           q < m.begin[static_cast<std::size_t>(k) + 1]; ++q) {
        const Eigen::Map<const Eigen::Array<T, R, 1>> part(col +
                                                           m.parts[static_cast<std::size_t>(q)]);
        if (minus) {
          Y -= part.template cast<double>();
        } else {
          Y += part.template cast<double>();
        }
      }
      Eigen::Map<Rows>(raw + k * R) += Y;
      Y = Y.max(-708.0).min(709.0);
      exp_chunk<R>(y);
      Eigen::Map<Rows>(acc + k * R) += Y;
    }
  }
}

#if CIRCUITRY_SIMD_DISPATCH
/// exp of 4 doubles in [-708, 709] (NaN stays NaN): exp_chunk's method, with FMA.
CIRCUITRY_TARGET_AVX2 inline __m256d exp4_avx2(__m256d x) {
  const __m256d shifter = _mm256_set1_pd(6755399441055744.0);
  const __m256d kd = _mm256_fmadd_pd(x, _mm256_set1_pd(1.4426950408889634), shifter);
  const __m256d k = _mm256_sub_pd(kd, shifter);
  __m256d r = _mm256_fnmadd_pd(k, _mm256_set1_pd(0.6931471803691238), x);
  r = _mm256_fnmadd_pd(k, _mm256_set1_pd(1.9082149292705877e-10), r);
  __m256d p = _mm256_set1_pd(kExpPoly[9]);
  for (int i = 8; i >= 0; --i) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(kExpPoly[i]));
  const __m256i e =
      _mm256_slli_epi64(_mm256_add_epi64(_mm256_castpd_si256(kd), _mm256_set1_epi64x(1023)), 52);
  return _mm256_mul_pd(p, _mm256_castsi256_pd(e));
}

/// exp_sums for doubles with AVX2+FMA (raw is not used: NaN propagates to acc, and a +inf logit
/// gives a sum beyond any threshold a caller can check).
template <int R>
CIRCUITRY_TARGET_AVX2 void exp_sums_avx2(const TileMasks& m, Index cols, const double* base,
                                         const double* bias, const double* shift,
                                         const double* tile, Index ld, double* acc) {
  static_assert(R % 4 == 0, "exp_sums_avx2: R must be a multiple of 4");
  constexpr int P = R / 4;
  const __m256d lo = _mm256_set1_pd(-708.0), hi = _mm256_set1_pd(709.0);
  __m256d sh[P];
  for (int p = 0; p < P; ++p) sh[p] = _mm256_loadu_pd(shift + 4 * p);
  for (Index j = 0; j < cols; ++j) {
    __m256d b[P], c[P];
    const __m256d bj = _mm256_set1_pd(bias[j]);
    for (int p = 0; p < P; ++p) {
      b[p] = _mm256_loadu_pd(base + j * R + 4 * p);
      c[p] = _mm256_sub_pd(bj, sh[p]);
    }
    const double* col = tile + j * ld;
    for (Index k = 0; k < m.size(); ++k) {
      const std::size_t kk = static_cast<std::size_t>(k);
      const bool minus = m.minus[kk] != 0;
      __m256d y[P];
      for (int p = 0; p < P; ++p) y[p] = minus ? b[p] : c[p];
      for (Index q = m.begin[kk]; q < m.begin[kk + 1]; ++q) {
        const double* t = col + m.parts[static_cast<std::size_t>(q)];
        for (int p = 0; p < P; ++p) {
          const __m256d v = _mm256_loadu_pd(t + 4 * p);
          y[p] = minus ? _mm256_sub_pd(y[p], v) : _mm256_add_pd(y[p], v);
        }
      }
      double* a = acc + k * R;
      for (int p = 0; p < P; ++p) {
        // max(lo, y), min(hi, y): the second operand (y) is returned when it is NaN.
        const __m256d e = exp4_avx2(_mm256_min_pd(hi, _mm256_max_pd(lo, y[p])));
        _mm256_storeu_pd(a + 4 * p, _mm256_add_pd(_mm256_loadu_pd(a + 4 * p), e));
      }
    }
  }
}

/// out = a b with AVX2+FMA, all column-major: a [rows, depth] (leading dimension lda), b [depth,
/// cols] (ldb), out [rows, cols] (ldo); rows a multiple of 8. A 8 x 4 block of out per step.
CIRCUITRY_TARGET_AVX2 inline void product_avx2(const double* a, Index lda, Index rows, Index depth,
                                               const double* b, Index ldb, Index cols, double* out,
                                               Index ldo) {
  Index j = 0;
  for (; j + 4 <= cols; j += 4) {
    const double* b0 = b + j * ldb;
    for (Index i = 0; i < rows; i += 8) {
      __m256d s[8];
      for (int q = 0; q < 8; ++q) s[q] = _mm256_setzero_pd();
      const double* z = a + i;
      for (Index k = 0; k < depth; ++k, z += lda) {
        const __m256d z0 = _mm256_loadu_pd(z), z1 = _mm256_loadu_pd(z + 4);
        for (int q = 0; q < 4; ++q) {
          const __m256d w = _mm256_broadcast_sd(b0 + q * ldb + k);
          s[2 * q] = _mm256_fmadd_pd(z0, w, s[2 * q]);
          s[2 * q + 1] = _mm256_fmadd_pd(z1, w, s[2 * q + 1]);
        }
      }
      for (int q = 0; q < 4; ++q) {
        _mm256_storeu_pd(out + (j + q) * ldo + i, s[2 * q]);
        _mm256_storeu_pd(out + (j + q) * ldo + i + 4, s[2 * q + 1]);
      }
    }
  }
  for (; j < cols; ++j) {
    for (Index i = 0; i < rows; i += 8) {
      __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
      const double* z = a + i;
      for (Index k = 0; k < depth; ++k, z += lda) {
        const __m256d w = _mm256_broadcast_sd(b + j * ldb + k);
        s0 = _mm256_fmadd_pd(_mm256_loadu_pd(z), w, s0);
        s1 = _mm256_fmadd_pd(_mm256_loadu_pd(z + 4), w, s1);
      }
      _mm256_storeu_pd(out + j * ldo + i, s0);
      _mm256_storeu_pd(out + j * ldo + i + 4, s1);
    }
  }
}
#endif  // CIRCUITRY_SIMD_DISPATCH

/// out = a b (out is resized; it must not alias a or b). With the AVX2+FMA kernel (doubles, when
/// the processor has it) in parallel panels of 64 rows, each read from cache while all of b
/// streams past it; with Eigen's product otherwise. For the logits, [tokens, d_model] W_U.
template <typename Scalar>
void multiply(const Matrix<Scalar>& a, const Matrix<Scalar>& b, Matrix<Scalar>& out) {
  out.resize(a.rows(), b.cols());
#if CIRCUITRY_SIMD_DISPATCH
  if constexpr (std::is_same<Scalar, double>::value) {
    if (has_avx2_fma() && a.cols() > 0) {
      const Index rows8 = a.rows() / 8 * 8, panel = 64, panels = (rows8 + panel - 1) / panel;
      CIRCUITRY_OMP_PARALLEL_FOR
      for (Index q = 0; q < panels; ++q) {
        const Index r0 = q * panel;
        product_avx2(a.data() + r0, a.rows(), std::min(panel, rows8 - r0), a.cols(), b.data(),
                     b.rows(), b.cols(), out.data() + r0, out.rows());
      }
      if (rows8 < a.rows())
        out.bottomRows(a.rows() - rows8).noalias() = a.bottomRows(a.rows() - rows8) * b;
      return;
    }
  }
#endif
  out.noalias() = a * b;
}

}  // namespace detail
}  // namespace circuitry
