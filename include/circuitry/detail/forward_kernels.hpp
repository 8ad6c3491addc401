// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/forward_kernels.hpp
/// Small numerical kernels shared by forward.hpp and path_expansion.hpp: the causal softmax of
/// attention scores, a vectorised sum of exponentials, row-wise log-sum-exp and next-token
/// cross-entropy, and the OpenMP pragma macro and thread queries (no-ops when OpenMP is not
/// enabled, so the headers compile with and without it).

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "circuitry/error.hpp"
#include "circuitry/types.hpp"

#ifdef _OPENMP
/// `#pragma omp parallel for` with dynamic scheduling, when OpenMP is enabled.
#define CIRCUITRY_OMP_PARALLEL_FOR _Pragma("omp parallel for schedule(dynamic)")
#include <omp.h>
#else
#define CIRCUITRY_OMP_PARALLEL_FOR
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

/// Values per call of `exp_chunk`.
constexpr int kExpChunk = 64;

/// y <- exp(y) for kExpChunk doubles in [-708, 709]: 2^k e^r with k = round(y / ln 2) (the
/// 1.5 * 2^52 rounding trick), r = y - k ln 2 in two parts (|r| <= ln(2) / 2), e^r by its Taylor
/// polynomial of degree 11 in Estrin's scheme (relative error < 1e-14) and 2^k written into the
/// exponent bits. A fixed-length loop without branches, so that compilers vectorise it at -O2:
/// std::exp is scalar and Eigen's pexp is slow on plain SSE2 (no -march), and the losses of
/// PathExpansion take about a billion exponentials.
inline void exp_chunk(double* y) {
#ifdef _OPENMP
#pragma omp simd
#endif
  for (int j = 0; j < kExpChunk; ++j) {
    const double x = y[j];
    const double shifter = 6755399441055744.0;  // 1.5 * 2^52
    const double kd = x * 1.4426950408889634 + shifter;
    const double k = kd - shifter;
    const double r = (x - k * 0.6931471803691238) - k * 1.9082149292705877e-10;
    const double r2 = r * r, r4 = r2 * r2;
    const double a01 = 1.0 + r, a23 = 0.5 + r * (1.0 / 6), a45 = 1.0 / 24 + r * (1.0 / 120),
                 a67 = 1.0 / 720 + r * (1.0 / 5040), a89 = 1.0 / 40320 + r * (1.0 / 362880),
                 a1011 = 1.0 / 3628800 + r * (1.0 / 39916800);
    const double p = (a01 + r2 * a23) + r4 * ((a45 + r2 * a67) + r4 * (a89 + r2 * a1011));
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
    buf = Eigen::Map<const Eigen::Array<Scalar, kExpChunk, 1>>(x + j).template cast<double>() - shift;
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
/// stably as m_i + log sum_j exp(logits(i, j) - m_i) with m_i the row maximum.
template <typename Derived>
Vector<typename Derived::Scalar> row_logsumexp(const Eigen::MatrixBase<Derived>& logits) {
  using Scalar = typename Derived::Scalar;
  Vector<Scalar> out(logits.rows());
  Eigen::Matrix<Scalar, 1, Eigen::Dynamic> row(logits.cols());
  for (Index i = 0; i < logits.rows(); ++i) {
    row = logits.row(i);
    const Scalar mx = row.maxCoeff();
    double s = sum_exp(row.data(), row.size(), static_cast<double>(mx));
    if (!std::isfinite(s)) s = static_cast<double>((row.array() - mx).exp().sum());  // inf, NaN
    out(i) = mx + static_cast<Scalar>(std::log(s));
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
    out(i) = target(i) >= 0 ? lse(i) - logits(i, target(i))
                            : std::numeric_limits<Scalar>::quiet_NaN();
  }
  return out;
}

/// Rows per block when a [tokens x d_vocab] computation is split over threads.
constexpr Index kRowBlock = 64;

}  // namespace detail
}  // namespace circuitry
