// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/forward_kernels.hpp
/// Small numerical kernels of forward.hpp and path_expansion.hpp: the causal softmax of
/// attention scores, row-wise log-sum-exp and next-token cross-entropy. They include the
/// run-time dispatched kernels (detail/simd_dispatch.hpp: the OpenMP macro and thread queries,
/// the instruction-set levels; detail/simd_gemm.hpp: products; detail/simd_exp.hpp:
/// exponentials and the sums of exponentials of PathExpansion::losses).

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "circuitry/attention_head.hpp"
#include "circuitry/detail/prefault.hpp"
#include "circuitry/detail/simd_dispatch.hpp"
#include "circuitry/detail/simd_exp.hpp"
#include "circuitry/detail/simd_gemm.hpp"
#include "circuitry/error.hpp"
#include "circuitry/types.hpp"

namespace circuitry {
namespace detail {

#if CIRCUITRY_SIMD_DISPATCH
/// y[i] <- exp(y[i]) for i < n with AVX-512 (the last vector masked).
template <typename T>
CIRCUITRY_TARGET_AVX512 void exp_inplace_avx512(T* y, Index n) {
  constexpr Index L = 64 / sizeof(T);
  Index i = 0;
  for (; i + L <= n; i += L) Avx512Ops::store(y + i, exp_avx512(Avx512Ops::load(y + i)));
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    Avx512Ops::store(y + i, exp_avx512(Avx512Ops::load(y + i, rest)), rest);
  }
}
/// The same with AVX2 (the last values through a padded copy).
template <typename T>
CIRCUITRY_TARGET_AVX2 void exp_inplace_avx2(T* y, Index n) {
  constexpr Index L = 32 / sizeof(T);
  Index i = 0;
  for (; i + L <= n; i += L) Avx2Ops::store(y + i, exp_avx2(Avx2Ops::load(y + i)));
  if (i < n) {
    alignas(32) T pad[L] = {};
    std::copy(y + i, y + n, pad);
    Avx2Ops::store(pad, exp_avx2(Avx2Ops::load(pad)));
    std::copy(pad, pad + (n - i), y + i);
  }
}

// P vectors of rows of a column-major block x (leading dimension ld, cols >= 1 columns): the
// rows' maxima mx, sum_j exp(x(:, j) - mx) added to sum (doubles) and raw = sum_j (x(:, j) - mx),
// which is not finite where a value is not. Each column's P vectors are contiguous.
#define CIRCUITRY_ROW_SUMEXP_BODY(Exp)                                                \
  using V = decltype(Exp::load(x));                                                   \
  using D = decltype(Exp::zero());                                                    \
  constexpr Index L = lanes<V, T>(), W = lanes<double, T>();                          \
  V m[P], check[P];                                                                   \
  D acc[P * W];                                                                       \
  for (int p = 0; p < P; ++p) m[p] = Exp::load(x + p * L);                            \
  for (Index j = 1; j < cols; ++j) {                                                  \
    for (int p = 0; p < P; ++p) m[p] = Exp::max(m[p], Exp::load(x + j * ld + p * L)); \
  }                                                                                   \
  for (int p = 0; p < P; ++p) check[p] = Exp::sub(m[p], m[p]);                        \
  for (Index q = 0; q < P * W; ++q) acc[q] = Exp::zero();                             \
  for (Index j = 0; j < cols; ++j) {                                                  \
    for (int p = 0; p < P; ++p) {                                                     \
      const V y = Exp::sub(Exp::load(x + j * ld + p * L), m[p]);                      \
      check[p] = Exp::add(check[p], y);                                               \
      Exp::accumulate(y, acc + p * W);                                                \
    }                                                                                 \
  }                                                                                   \
  for (int p = 0; p < P; ++p) {                                                       \
    Exp::store(mx + p * L, m[p]);                                                     \
    Exp::store(raw + p * L, check[p]);                                                \
  }                                                                                   \
  for (Index q = 0; q < P * W; ++q) Exp::add_to(sum + q * (L / W), acc[q]);

template <int P, typename T>
CIRCUITRY_TARGET_AVX512 void row_sumexp_avx512(const T* x, Index ld, Index cols, T* mx, double* sum,
                                               T* raw) {
  CIRCUITRY_ROW_SUMEXP_BODY(Avx512Exp)
}
template <int P, typename T>
CIRCUITRY_TARGET_AVX2 void row_sumexp_avx2(const T* x, Index ld, Index cols, T* mx, double* sum,
                                           T* raw) {
  CIRCUITRY_ROW_SUMEXP_BODY(Avx2Exp)
}
#undef CIRCUITRY_ROW_SUMEXP_BODY
#endif  // CIRCUITRY_SIMD_DISPATCH

/// The rows of a column-major block x ([rows, cols], leading dimension ld) that the vector
/// kernels of `level` take, a whole number of vectors from the first (panels of 4 vectors, then
/// single vectors, so that each column is read in whole cache lines): their maxima mx,
/// sum_j exp(x(i, j) - mx(i)) added to sum(i) (in double, each exponential as exact as
/// exp_inplace's) and raw(i) = sum_j (x(i, j) - mx(i)), not finite where a value of the row is
/// not. Returns how many rows that is: 0 at SimdLevel::none or without columns.
template <typename T>
Index row_sumexp(SimdLevel level, const T* x, Index ld, Index rows, Index cols, T* mx, double* sum,
                 T* raw) {
#if CIRCUITRY_SIMD_DISPATCH
  if ((level == SimdLevel::avx512 || level == SimdLevel::avx2) && cols > 0) {
    constexpr int P = 4;
    const bool wide = level == SimdLevel::avx512;
    const Index L = (wide ? 64 : 32) / static_cast<Index>(sizeof(T));
    Index i = 0;
    for (; i + P * L <= rows; i += P * L) {
      if (wide) {
        row_sumexp_avx512<P>(x + i, ld, cols, mx + i, sum + i, raw + i);
      } else {
        row_sumexp_avx2<P>(x + i, ld, cols, mx + i, sum + i, raw + i);
      }
    }
    for (; i + L <= rows; i += L) {
      if (wide) {
        row_sumexp_avx512<1>(x + i, ld, cols, mx + i, sum + i, raw + i);
      } else {
        row_sumexp_avx2<1>(x + i, ld, cols, mx + i, sum + i, raw + i);
      }
    }
    return i;
  }
#endif
  (void)level;
  (void)x;
  (void)ld;
  (void)rows;
  (void)cols;
  (void)mx;
  (void)sum;
  (void)raw;
  return 0;
}

/// y[i] <- exp(y[i]) for i < n: with the vector exponentials of `level` (y clamped as in the
/// file comment: a value below -708, or -87 for floats, gives e^-708 or e^-87 instead of about
/// 0), std::exp at SimdLevel::none.
template <typename T>
void exp_inplace(SimdLevel level, T* y, Index n) {
#if CIRCUITRY_SIMD_DISPATCH
  if (level == SimdLevel::avx512) {
    exp_inplace_avx512(y, n);
    return;
  }
  if (level == SimdLevel::avx2) {
    exp_inplace_avx2(y, n);
    return;
  }
#endif
  (void)level;
  for (Index i = 0; i < n; ++i) y[i] = std::exp(y[i]);
}

/// Turns a square matrix of attention scores (row = query position, column = key position) into
/// the causal attention pattern, in place: row i becomes softmax(scores(i, 0..i)) on columns
/// 0..i and exactly 0 on columns i+1.. (TransformerLens masks future keys with -inf before the
/// softmax, which gives the same zeros).
template <typename Scalar>
void causal_softmax_inplace(Matrix<Scalar>& scores, SimdLevel level = simd_level()) {
  const Index n = scores.rows();
  CIRCUITRY_ASSERT(scores.cols() == n);
  if (level != SimdLevel::none) {
    // Column by column (contiguous), each row's max, exponentials and sum in the order of the
    // row loop below, the exponentials vectorised.
    Vector<Scalar> mx = scores.col(0), sum = Vector<Scalar>::Zero(n);
    for (Index j = 1; j < n; ++j)
      mx.tail(n - j) = mx.tail(n - j).cwiseMax(scores.col(j).tail(n - j));
    for (Index j = 0; j < n; ++j) {
      auto c = scores.col(j).tail(n - j);
      c -= mx.tail(n - j);
      exp_inplace(level, c.data(), n - j);
      sum.tail(n - j) += c;
      scores.col(j).head(j).setZero();
    }
    const Vector<Scalar> inv = sum.cwiseInverse();
    for (Index j = 0; j < n; ++j) scores.col(j).tail(n - j).array() *= inv.tail(n - j).array();
    return;
  }
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

/// The maximum of each row of `m`, reading a column-major matrix a column at a time.
template <typename Derived>
Vector<typename Derived::Scalar> row_max(const Eigen::MatrixBase<Derived>& m) {
  if (Derived::IsRowMajor || m.cols() == 0) return m.rowwise().maxCoeff();
  Vector<typename Derived::Scalar> mx = m.col(0);
  for (Index j = 1; j < m.cols(); ++j) mx = mx.cwiseMax(m.col(j));
  return mx;
}

/// Whether row_sumexp can read `m` in place: column-major with direct access to its storage.
template <typename Derived>
constexpr bool kColumnMajorStorage =
    !Derived::IsRowMajor && (Derived::Flags & Eigen::DirectAccessBit) != 0;

/// Values per call of `exp_chunk` in sum_exp and row_logsumexp.
constexpr int kExpChunk = 64;

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
    exp_chunk<kExpChunk>(buf.data());
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
/// blocks are read a column at a time (a vector of rows at once with the vector kernels,
/// row_sumexp; kExpChunk rows otherwise), so that a block of a tall [tokens, d_vocab] matrix is
/// read in order; rows with a non-finite value take std::exp.
template <typename Derived>
Vector<typename Derived::Scalar> row_logsumexp(const Eigen::MatrixBase<Derived>& logits) {
  using Scalar = typename Derived::Scalar;
  using Chunk = Eigen::Array<double, kExpChunk, 1>;
  const Index n = logits.rows(), V = logits.cols();
  const SimdLevel level = simd_level();
  Vector<Scalar> out(n), mx(n);
  Eigen::Matrix<Scalar, 1, Eigen::Dynamic> row;  // sized by its first assignment
  const auto slow = [&](Index i) {
    row = logits.row(i);
    return static_cast<double>((row.array() - mx(i)).exp().sum());
  };
  Index done = 0;  // the rows of whole vectors, with the vector kernels
  if constexpr (kColumnMajorStorage<Derived>) {
    Eigen::VectorXd sum = Eigen::VectorXd::Zero(n);
    Vector<Scalar> raw(n);
    done = row_sumexp<Scalar>(level, logits.derived().data(), logits.derived().outerStride(), n, V,
                              mx.data(), sum.data(), raw.data());
    for (Index i = 0; i < done; ++i) {
      const double s = std::isfinite(raw(i)) ? sum(i) : slow(i);
      out(i) = mx(i) + static_cast<Scalar>(std::log(s));
    }
  }
  if (done == n) return out;
  mx.tail(n - done) = row_max(logits.bottomRows(n - done));
  if (Derived::IsRowMajor || n - done < kExpChunk / 4) {
    for (Index i = done; i < n; ++i) {
      row = logits.row(i);
      double s = sum_exp(row.data(), V, static_cast<double>(mx(i)));
      out(i) = mx(i) + static_cast<Scalar>(std::log(std::isfinite(s) ? s : slow(i)));
    }
    return out;
  }
  for (Index i0 = done; i0 < n; i0 += kExpChunk) {
    const Index m = std::min<Index>(kExpChunk, n - i0);
    Chunk shift = Chunk::Zero(), acc = Chunk::Zero(), raw = Chunk::Zero(), buf = Chunk::Zero();
    shift.head(m) = mx.segment(i0, m).template cast<double>();
    for (Index j = 0; j < V; ++j) {
      buf.head(m) = logits.col(j).segment(i0, m).template cast<double>();
      buf -= shift;
      raw += buf;
      buf = buf.max(-708.0).min(709.0);
      if (level == SimdLevel::none) {
        exp_chunk<kExpChunk>(buf.data());
      } else {
        exp_inplace(level, buf.data(), kExpChunk);
      }
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

/// out = A Y for a causal [S, S] attention pattern A (zero above the diagonal) and Y [S, n]
/// (leading dimension ldy); out [S, n] (ldo). With the kernels of `level`, in panels of 48 rows,
/// each multiplied by only the rows of Y it reaches (about half the products of A Y), the
/// zeros of the diagonal block included; with Eigen's triangular product at none (which reads
/// nothing above the diagonal).
template <typename Scalar>
void causal_product(SimdLevel level, const Matrix<Scalar>& A, const Scalar* Y, Index ldy, Index n,
                    Scalar* out, Index ldo) {
  using Strided = Eigen::OuterStride<>;
  const Index S = A.rows();
  if (level == SimdLevel::none) {
    Eigen::Map<Matrix<Scalar>, Eigen::Unaligned, Strided>(out, S, n, Strided(ldo)).noalias() =
        A.template triangularView<Eigen::Lower>() *
        Eigen::Map<const Matrix<Scalar>, Eigen::Unaligned, Strided>(Y, S, n, Strided(ldy));
    return;
  }
  constexpr Index kRows = 48;
  for (Index r0 = 0; r0 < S; r0 += kRows) {
    const Index rows = std::min(kRows, S - r0);
    gemm(level, rows, n, r0 + rows, A.data() + r0, S, Y, ldy, out + r0, ldo);
  }
}

/// One thread's buffers for attention_head.
template <typename Scalar>
struct HeadBuffers {
  Matrix<Scalar> q, k, kt, v;
};

/// Head `hd` on the S tokens of one sequence, rows row0 .. row0 + S - 1 of the layer's input
/// (qk_in for queries and keys, x for values; [N, d_model]): buf.q, buf.k, buf.v = those rows
/// times W_Q, W_K, W_V plus the biases; returns the causal pattern softmax(q k^T inv_scale)
/// (zero above the diagonal) and writes z = pattern v into the same rows of z ([N, d_ov]).
/// Only the scores on and below the diagonal are computed, in panels of 48 rows.
template <typename Scalar>
Matrix<Scalar> attention_head(SimdLevel level, const AttentionHead<Scalar>& hd,
                              const Matrix<Scalar>& qk_in, const Matrix<Scalar>& x, Index row0,
                              Index S, Scalar inv_scale, Matrix<Scalar>& z,
                              HeadBuffers<Scalar>& buf) {
  const auto project = [&](const Matrix<Scalar>& in, const Matrix<Scalar>& W,
                           const Vector<Scalar>& bias, Matrix<Scalar>& out) {
    out.resize(S, W.cols());
    gemm(level, S, W.cols(), W.rows(), in.data() + row0, in.rows(), W.data(), W.rows(), out.data(),
         S);
    out.rowwise() += bias.transpose();
  };
  project(qk_in, hd.W_Q, hd.b_Q, buf.q);
  project(qk_in, hd.W_K, hd.b_K, buf.k);
  project(x, hd.W_V, hd.b_V, buf.v);
  buf.kt = buf.k.transpose();
  Matrix<Scalar> pattern(S, S);
  prefault(pattern);
  constexpr Index kRows = 48;
  for (Index r0 = 0; r0 < S; r0 += kRows) {
    const Index rows = std::min(kRows, S - r0), cols = r0 + rows;
    gemm(level, rows, cols, buf.q.cols(), buf.q.data() + r0, S, buf.kt.data(), buf.kt.rows(),
         pattern.data() + r0, S);
    pattern.block(r0, 0, rows, cols) *= inv_scale;
  }
  causal_softmax_inplace(pattern, level);  // writes the zeros above the diagonal
  causal_product(level, pattern, buf.v.data(), S, buf.v.cols(), z.data() + row0, z.rows());
  return pattern;
}

/// Rows per block when a [tokens x d_vocab] computation is split over threads.
constexpr Index kRowBlock = 64;

}  // namespace detail
}  // namespace circuitry
