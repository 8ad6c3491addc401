// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file attention_head.hpp
/// One attention head as two independent circuits (paper, "Attention Heads are Independent and
/// Additive"), in the row-vector convention `x W`:
///
///     QK = W_Q W_K^T   [d_model x d_model]: the score of query x_q on key x_k is x_q QK x_k^T
///     OV = W_V W_O     [d_model x d_model]: a source x_k writes x_k OV to the residual stream
///
/// both kept factored (`FactoredMatrix`), rank at most d_head.
///
/// The head owns its matrices. The QK side (W_Q, W_K: d_model x d_qk) and the OV side (W_V:
/// d_model x d_ov, W_O: d_ov x d_model) may have different inner widths, so heads that share a
/// key/value projection (grouped-query attention: copy or share W_K, W_V) and Lorsa heads (rank-1
/// OV, d_ov = 1, with one QK circuit shared across a group) fit the same type.

#include <string>

#include "circuitry/factored_matrix.hpp"
#include "circuitry/types.hpp"

namespace circuitry {

/// Identifies a head by layer and index; prints as TransformerLens's "L{layer}H{head}".
struct HeadId {
  int layer = 0;
  int head = 0;
  std::string name() const { return "L" + std::to_string(layer) + "H" + std::to_string(head); }
  friend bool operator==(HeadId a, HeadId b) { return a.layer == b.layer && a.head == b.head; }
  friend bool operator!=(HeadId a, HeadId b) { return !(a == b); }
  friend bool operator<(HeadId a, HeadId b) {
    return a.layer != b.layer ? a.layer < b.layer : a.head < b.head;
  }
};

/// Weights of one attention head (TransformerLens names and shapes, row-vector convention):
/// q = x W_Q + b_Q, k = x W_K + b_K, v = x W_V + b_V, output = (pattern v) W_O.
/// Invariant: W_Q, W_K are d_model x d_qk; W_V is d_model x d_ov; W_O is d_ov x d_model;
/// b_Q, b_K have d_qk entries and b_V has d_ov.
template <typename Scalar>
struct AttentionHead {
  CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);
  Matrix<Scalar> W_Q, W_K, W_V, W_O;
  Vector<Scalar> b_Q, b_K, b_V;

  Index d_model() const { return W_Q.rows(); }
  Index d_qk() const { return W_Q.cols(); }
  Index d_ov() const { return W_V.cols(); }

  /// QK = W_Q W_K^T, factored (d_model x d_qk times d_qk x d_model).
  FactoredMatrix<Scalar> qk() const { return FactoredMatrix<Scalar>(W_Q, W_K.transpose()); }
  /// OV = W_V W_O, factored (d_model x d_ov times d_ov x d_model).
  FactoredMatrix<Scalar> ov() const { return FactoredMatrix<Scalar>(W_V, W_O); }

  /// The same head in another scalar type.
  template <typename Other>
  AttentionHead<Other> cast() const {
    return {W_Q.template cast<Other>(), W_K.template cast<Other>(), W_V.template cast<Other>(),
            W_O.template cast<Other>(), b_Q.template cast<Other>(), b_K.template cast<Other>(),
            b_V.template cast<Other>()};
  }
};

}  // namespace circuitry
