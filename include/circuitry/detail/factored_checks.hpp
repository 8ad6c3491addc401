// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/factored_checks.hpp
/// Argument checks of `FactoredMatrix`, with the messages its tests pin. Not part of the public
/// API; include `circuitry/factored_matrix.hpp` instead.

#include <Eigen/Core>
#include <string>

#include "circuitry/error.hpp"
#include "circuitry/types.hpp"

namespace circuitry {
namespace detail {
namespace factored {

/// "4x3".
inline std::string shape(Index rows, Index cols) {
  return std::to_string(rows) + "x" + std::to_string(cols);
}

/// The class invariant A.cols() == B.rows().
inline void check_inner(Index a_rows, Index a_cols, Index b_rows, Index b_cols) {
  if (a_cols != b_rows) {
    throw shape_error("FactoredMatrix: A is " + shape(a_rows, a_cols) + " but B is " +
                      shape(b_rows, b_cols) + ": A.cols() must equal B.rows()");
  }
}

/// A product left * right needs left.cols() == right.rows(); `op` names the product and
/// `left` / `right` its operands in the message.
inline void check_product(const char* op, const char* left, Index left_rows, Index left_cols,
                          const char* right, Index right_rows, Index right_cols) {
  if (left_cols != right_rows) {
    throw shape_error(std::string(op) + ": " + left + " is " + shape(left_rows, left_cols) +
                      " but " + right + " is " + shape(right_rows, right_cols) + ": " + left +
                      ".cols() must equal " + right + ".rows()");
  }
}

inline void require_square(const char* what, Index rows, Index cols) {
  if (rows != cols) {
    throw shape_error(std::string("FactoredMatrix::") + what +
                      ": requires a square matrix (rows() == cols()), found " + shape(rows, cols));
  }
}

/// 0 <= i < extent; `kind` is "row" or "column".
inline void check_index(const char* what, const char* kind, Index i, Index extent) {
  if (i < 0 || i >= extent) {
    throw argument_error(std::string("FactoredMatrix::") + what + ": " + kind + " index " +
                         std::to_string(i) + " out of range [0, " + std::to_string(extent) + ")");
  }
}

inline void check_block(Index i, Index j, Index p, Index q, Index rows, Index cols) {
  if (i < 0 || j < 0 || p < 0 || q < 0 || i + p > rows || j + q > cols) {
    throw argument_error("FactoredMatrix::block: block at (" + std::to_string(i) + ", " +
                         std::to_string(j) + ") of size " + shape(p, q) + " does not fit in a " +
                         shape(rows, cols) + " matrix");
  }
}

inline void check_block_rows(const char* what, Index block_rows) {
  if (block_rows <= 0) {
    throw argument_error(std::string("FactoredMatrix::") + what +
                         ": block_rows = " + std::to_string(block_rows) + " must be positive");
  }
}

/// 0 <= k <= cols.
inline void check_k(Index k, Index cols) {
  if (k < 0) {
    throw argument_error("FactoredMatrix::top_k_rows: k = " + std::to_string(k) +
                         " must be non-negative");
  }
  if (k > cols) {
    throw argument_error("FactoredMatrix::top_k_rows: k = " + std::to_string(k) +
                         " exceeds cols() = " + std::to_string(cols));
  }
}

inline std::string info_name(Eigen::ComputationInfo info) {
  switch (info) {
    case Eigen::Success: return "Success";
    case Eigen::NumericalIssue: return "NumericalIssue";
    case Eigen::NoConvergence: return "NoConvergence";
    case Eigen::InvalidInput: return "InvalidInput";
  }
  return "unknown";
}

inline void check_svd(Eigen::ComputationInfo info, const char* what) {
  if (info != Eigen::Success) {
    throw numerical_error(std::string("FactoredMatrix::") + what +
                          ": the SVD of the core Ra Rb^T failed (Eigen::ComputationInfo " +
                          info_name(info) + "); are the factors finite?");
  }
}

}  // namespace factored
}  // namespace detail
}  // namespace circuitry
