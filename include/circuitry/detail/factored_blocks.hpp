// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/factored_blocks.hpp
/// Internals of `FactoredMatrix`'s blockwise row statistics (`for_each_row_block`,
/// `top_k_rows`, `diagonal_rank`): streaming A B by row blocks through one reused buffer, the
/// ranking order, and per-row selection over one materialised block. Not part of the public
/// API; include `circuitry/factored_matrix.hpp` instead.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <vector>

#include "circuitry/error.hpp"
#include "circuitry/types.hpp"

namespace circuitry {
namespace detail {
namespace factored {

/// Calls `f(first, block)` for first = 0, block_rows, ... with block = a.middleRows(first,
/// count) * b written into a reused buffer: one allocation for the full blocks and one for a
/// final partial block. b is a matrix or any Eigen expression of one (e.g. W_E.transpose(),
/// without a copy). `block_rows` > 0 is checked by the caller.
template <typename Scalar, typename B, typename F>
void for_each_row_block(const Matrix<Scalar>& a, const Eigen::MatrixBase<B>& b, Index block_rows,
                        F&& f) {
  CIRCUITRY_ASSERT(block_rows > 0);
  const Index m = a.rows();
  const Index full = std::min(block_rows, m);
  Matrix<Scalar> buffer(full, b.cols());
  Matrix<Scalar> tail;
  for (Index first = 0; first < m; first += full) {
    const Index count = std::min(full, m - first);
    Matrix<Scalar>& out = (count == full) ? buffer : tail;
    if (count != full) out.resize(count, b.cols());
    out.noalias() = a.middleRows(first, count) * b;
    const Matrix<Scalar>& view = out;
    f(first, view);
  }
}

/// As `for_each_row_block`, over the listed rows of a (in order, duplicates allowed): block t
/// holds rows rows[first .. first + count) of a b, gathered through reused buffers (reallocated
/// once, for a final partial block). Row indices are checked by the caller.
template <typename Scalar, typename F>
void for_each_listed_row_block(const Matrix<Scalar>& a, const Matrix<Scalar>& b,
                               const std::vector<Index>& rows, Index block_rows, F&& f) {
  CIRCUITRY_ASSERT(block_rows > 0);
  const Index total = static_cast<Index>(rows.size());
  const Index full = std::min(block_rows, total);
  Matrix<Scalar> gathered(full, a.cols());
  Matrix<Scalar> buffer(full, b.cols());
  for (Index first = 0; first < total; first += full) {
    const Index count = std::min(full, total - first);
    if (count != full) {
      gathered.resize(count, a.cols());
      buffer.resize(count, b.cols());
    }
    for (Index t = 0; t < count; ++t) {
      gathered.row(t) = a.row(rows[static_cast<std::size_t>(first + t)]);
    }
    buffer.noalias() = gathered * b;
    const Matrix<Scalar>& view = buffer;
    f(first, view);
  }
}

/// The order used by `top_k_rows`: value `a` at column `ia` ranks before value `b` at column
/// `ib` when it is larger; equal values rank by the smaller column index; NaN ranks after every
/// number (and NaNs among themselves by column). A strict weak ordering even with NaN, so it is
/// safe to hand to the standard algorithms.
template <typename Scalar>
inline bool ranks_before(Scalar a, Index ia, Scalar b, Index ib) {
  const bool a_nan = std::isnan(a);
  const bool b_nan = std::isnan(b);
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && a != b) return a > b;
  return ia < ib;
}

/// Selects the k best entries of one row of a materialised block, reusing its scratch buffers
/// across rows (no allocation after construction).
template <typename Scalar>
class RowTopKSelector {
 public:
  RowTopKSelector(Index cols, Index k)
      : k_(k), values_(static_cast<std::size_t>(cols)), order_(static_cast<std::size_t>(cols)) {}

  /// Writes the top k of `block.row(row)` into row `out_row` of `indices` / `values`, sorted by
  /// `ranks_before`. O(n log k) for a row of n entries.
  template <typename IndexOut, typename ValueOut>
  void select(const Matrix<Scalar>& block, Index row, IndexOut& indices, ValueOut& values,
              Index out_row) {
    const Index n = block.cols();
    CIRCUITRY_ASSERT(static_cast<std::size_t>(n) == values_.size());
    CIRCUITRY_ASSERT(k_ <= n);
    for (Index j = 0; j < n; ++j) values_[static_cast<std::size_t>(j)] = block(row, j);
    std::iota(order_.begin(), order_.end(), Index{0});
    const std::vector<Scalar>& v = values_;
    std::partial_sort(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(k_),
                      order_.end(), [&v](Index i, Index j) {
                        return ranks_before(v[static_cast<std::size_t>(i)], i,
                                            v[static_cast<std::size_t>(j)], j);
                      });
    for (Index c = 0; c < k_; ++c) {
      const Index j = order_[static_cast<std::size_t>(c)];
      indices(out_row, c) = j;
      values(out_row, c) = values_[static_cast<std::size_t>(j)];
    }
  }

 private:
  Index k_;
  std::vector<Scalar> values_;
  std::vector<Index> order_;
};

/// Number of entries of `block.row(row)` strictly greater than `block(row, diag_col)`.
template <typename Scalar>
inline Index count_greater_than(const Matrix<Scalar>& block, Index row, Index diag_col) {
  const Scalar d = block(row, diag_col);
  Index count = 0;
  for (Index j = 0; j < block.cols(); ++j) count += (block(row, j) > d) ? 1 : 0;
  return count;
}

}  // namespace factored
}  // namespace detail
}  // namespace circuitry
