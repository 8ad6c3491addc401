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
#include <type_traits>
#include <vector>

#include "circuitry/detail/simd_gemm.hpp"
#include "circuitry/error.hpp"
#include "circuitry/types.hpp"

namespace circuitry {
namespace detail {
namespace factored {

/// out = rows (a block of rows of some a) times b. With b a matrix or the transpose of one
/// (W_U; W_E.transpose()) this is detail::multiply: circuitry's AVX-512/AVX2 kernels, in
/// parallel, 3-5x Eigen's SSE2 product (the report's top lists: [256, 256] x [256, 4096] took
/// 23 ms each with Eigen's); for a transpose, (b^T rows^T)^T, whose extra copy is cheap next to
/// the product. Any other expression: Eigen's product. Rows that are already a matrix (the
/// gathered rows of for_each_listed_row_block) are used in place; a block of rows is copied.
template <typename Scalar, typename Rows, typename B>
void block_product(const Rows& rows, const Eigen::MatrixBase<B>& b, Matrix<Scalar>& out) {
  if constexpr (std::is_same<B, Matrix<Scalar>>::value) {
    if constexpr (std::is_same<Rows, Matrix<Scalar>>::value) {
      multiply(rows, b.derived(), out);
    } else {
      const Matrix<Scalar> a = rows;
      multiply(a, b.derived(), out);
    }
  } else if constexpr (std::is_same<B, Eigen::Transpose<const Matrix<Scalar>>>::value) {
    const Matrix<Scalar> at = rows.transpose();
    Matrix<Scalar> t;
    multiply(b.derived().nestedExpression(), at, t);
    out = t.transpose();
  } else {
    out.noalias() = rows * b;
  }
}

/// Calls `f(first, block)` for first = 0, block_rows, ... with block = a.middleRows(first,
/// count) * b (block_product) written into a reused buffer: one allocation for the full blocks
/// and one for a final partial block. b is a matrix or any Eigen expression of one (e.g.
/// W_E.transpose(), without a copy). `block_rows` > 0 is checked by the caller.
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
    block_product(a.middleRows(first, count), b, out);
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
    block_product(gathered, b, buffer);
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
  explicit RowTopKSelector(Index k)
      : k_(k), top_v_(static_cast<std::size_t>(k)), top_j_(static_cast<std::size_t>(k)) {}

  /// Writes the top k of `block.row(row)` into row `out_row` of `indices` / `values`, sorted by
  /// `ranks_before`. One pass over the row keeping the best k so far in order (insertion): the
  /// columns come in increasing order, so an entry that is not above the k-th kept one (equal:
  /// it has the larger column) ranks after it, and most entries cost that one comparison. The
  /// top k under the total order `ranks_before` is unique: the same as a partial sort's.
  template <typename IndexOut, typename ValueOut>
  void select(const Matrix<Scalar>& block, Index row, IndexOut& indices, ValueOut& values,
              Index out_row) {
    CIRCUITRY_ASSERT(k_ <= block.cols());
    if (k_ == 0) return;
    const std::size_t k = static_cast<std::size_t>(k_);
    std::size_t count = 0;
    for (Index j = 0; j < block.cols(); ++j) {
      const Scalar v = block(row, j);
      if (count == k) {
        if (v <= top_v_[k - 1]) continue;  // false when either is NaN: then the full order
        if (!ranks_before(v, j, top_v_[k - 1], top_j_[k - 1])) continue;
      }
      std::size_t pos = count < k ? count++ : k - 1;
      for (; pos > 0 && ranks_before(v, j, top_v_[pos - 1], top_j_[pos - 1]); --pos) {
        top_v_[pos] = top_v_[pos - 1];
        top_j_[pos] = top_j_[pos - 1];
      }
      top_v_[pos] = v;
      top_j_[pos] = j;
    }
    for (std::size_t c = 0; c < k; ++c) {
      indices(out_row, static_cast<Index>(c)) = top_j_[c];
      values(out_row, static_cast<Index>(c)) = top_v_[c];
    }
  }

 private:
  Index k_;
  std::vector<Scalar> top_v_;
  std::vector<Index> top_j_;
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
