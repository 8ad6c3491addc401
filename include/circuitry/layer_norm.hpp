// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file layer_norm.hpp
/// LayerNorm as TransformerLens computes it, row-wise on a [n_tokens, d_model] matrix:
///
///     LN(r) = (r - mean(r)) / sqrt(mean((r - mean r)^2) + eps) * w + b      (LN)
///     LN(r) = (r - mean(r)) / sqrt(mean((r - mean r)^2) + eps)              (LNPre: w, b folded)
///
/// The scale 1 / sqrt(var + eps) of each row is what the paper's analysis freezes: with it
/// fixed, LayerNorm is an affine map and path terms add up.

#include "circuitry/config.hpp"
#include "circuitry/types.hpp"

namespace circuitry {

/// LayerNorm parameters. `type == LNPre` or `none` ignore `w` and `b` (kept empty).
template <typename Scalar>
struct LayerNorm {
  CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);
  NormalizationType type = NormalizationType::none;
  Vector<Scalar> w;  ///< [d_model], only for LN
  Vector<Scalar> b;  ///< [d_model], only for LN
  Scalar eps = Scalar(1e-5);

  /// Per-row scales s_i = 1 / sqrt(var(r_i) + eps); all ones for `none`.
  Vector<Scalar> scales(const Matrix<Scalar>& resid) const {
    if (type == NormalizationType::none) return Vector<Scalar>::Ones(resid.rows());
    const Vector<Scalar> mean = resid.rowwise().mean();
    Vector<Scalar> s(resid.rows());
    for (Index i = 0; i < resid.rows(); ++i) {
      const Scalar var = (resid.row(i).array() - mean(i)).square().mean();
      s(i) = Scalar(1) / std::sqrt(var + eps);
    }
    return s;
  }

  /// Applies LayerNorm with the given per-row scales (frozen or freshly computed):
  /// (r - mean r) * s [* w + b]. For `none`, returns `resid` unchanged.
  Matrix<Scalar> apply_with_scales(const Matrix<Scalar>& resid, const Vector<Scalar>& s) const {
    if (type == NormalizationType::none) return resid;
    Matrix<Scalar> x = resid.colwise() - resid.rowwise().mean();
    x.array().colwise() *= s.array();
    if (type == NormalizationType::LN) {
      x.array().rowwise() *= w.transpose().array();
      x.rowwise() += b.transpose();
    }
    return x;
  }

  /// LN(resid), row by row.
  Matrix<Scalar> operator()(const Matrix<Scalar>& resid) const {
    return apply_with_scales(resid, scales(resid));
  }
};

}  // namespace circuitry
