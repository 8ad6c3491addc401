// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/forward_kernels.hpp
/// Small numerical kernels shared by forward.hpp and path_expansion.hpp: the causal softmax of
/// attention scores, row-wise log-sum-exp and next-token cross-entropy, and the OpenMP pragma
/// macro (a no-op when OpenMP is not enabled, so the headers compile with and without it).

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>

#include "circuitry/error.hpp"
#include "circuitry/types.hpp"

#ifdef _OPENMP
/// `#pragma omp parallel for` with dynamic scheduling, when OpenMP is enabled.
#define CIRCUITRY_OMP_PARALLEL_FOR _Pragma("omp parallel for schedule(dynamic)")
#else
#define CIRCUITRY_OMP_PARALLEL_FOR
#endif

namespace circuitry {
namespace detail {

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

/// Row-wise log-sum-exp of a block of logits: lse(i) = log sum_j exp(logits(i, j)), computed
/// stably as m_i + log sum_j exp(logits(i, j) - m_i) with m_i the row maximum.
template <typename Derived>
Vector<typename Derived::Scalar> row_logsumexp(const Eigen::MatrixBase<Derived>& logits) {
  using Scalar = typename Derived::Scalar;
  const Vector<Scalar> mx = logits.rowwise().maxCoeff();
  const Vector<Scalar> se = (logits.colwise() - mx).array().exp().rowwise().sum().matrix();
  return (mx.array() + se.array().log()).matrix();
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
