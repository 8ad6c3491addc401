// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file circuits.hpp
/// The paper's weight-based circuits of each head (row-vector convention, TransformerLens
/// names), all kept factored:
///
///     OV       = W_V W_O                    [d_model x d_model]   (AttentionHead::ov)
///     QK       = W_Q W_K^T                  [d_model x d_model]   (AttentionHead::qk)
///     full OV  = W_E W_V W_O W_U            [d_vocab x d_vocab]   (full_ov_circuit)
///     full QK  = W_E W_Q W_K^T W_E^T        [d_vocab x d_vocab]   (full_qk_circuit)
///     direct   = W_E W_U                    [d_vocab x d_vocab]   (direct_path, the bigrams)
///
/// Scores: `copying_score(λ) = Re(sum λ) / sum |λ|` of an eigenvalue spectrum (the paper's
/// "positive eigenvalues mean copying"; for QK spectra it is the positivity). It is 1 for a
/// head whose eigenvalues are all positive reals, -1 for all negative reals.
///
/// Low rank first: the spectra and Frobenius norms of the d_vocab x d_vocab full circuits come
/// from three d_model x d_model matrices shared by all heads (`EmbeddingGrams`):
///
///     eig(full OV) = eig(W_O (W_U W_E) W_V)                    (d_head x d_head, plus zeros)
///     eig(full QK) = eig(W_K^T (W_E^T W_E) W_Q)
///     ||full OV||_F^2 = < W_V^T (W_E^T W_E) W_V , W_O (W_U W_U^T) W_O^T >_F
///     ||full QK||_F^2 = < W_Q^T (W_E^T W_E) W_Q , W_K^T (W_E^T W_E) W_K >_F
///
/// so no d_vocab x d_vocab matrix is ever formed for them.

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <complex>
#include <limits>
#include <string>
#include <vector>

#include "circuitry/detail/simd_gemm.hpp"
#include "circuitry/factored_matrix.hpp"
#include "circuitry/model.hpp"

namespace circuitry {

/// Full OV circuit W_E OV W_U of head `id`, factored as (W_E W_V)(W_O W_U): d_vocab x d_head
/// times d_head x d_vocab. Entry (i, j): how much attending to token i raises the logit of j.
template <typename Scalar>
FactoredMatrix<Scalar> full_ov_circuit(const AttentionOnlyModel<Scalar>& model, HeadId id) {
  const auto& h = model.head(id);
  return FactoredMatrix<Scalar>(model.W_E * h.W_V, h.W_O * model.W_U);
}

/// Full QK circuit W_E QK W_E^T of head `id`, factored as (W_E W_Q)(W_K^T W_E^T). Entry
/// (i, j): the attention score (before 1/sqrt(d_head)) of query token i on key token j,
/// through the token embeddings alone.
template <typename Scalar>
FactoredMatrix<Scalar> full_qk_circuit(const AttentionOnlyModel<Scalar>& model, HeadId id) {
  const auto& h = model.head(id);
  return FactoredMatrix<Scalar>(model.W_E * h.W_Q, (model.W_E * h.W_K).transpose());
}

/// The direct path W_E W_U (the zero-layer "bigram" term), factored.
template <typename Scalar>
FactoredMatrix<Scalar> direct_path(const AttentionOnlyModel<Scalar>& model) {
  return FactoredMatrix<Scalar>(model.W_E, model.W_U);
}

/// Re(sum λ) / sum |λ|, in [-1, 1]. Defined for every finite spectrum:
///  - an all-zero (or empty) spectrum, a head that writes nothing, has no sign: its score is 0;
///  - the sums are taken on λ / max|λ| (a power of two, exact), so a float spectrum near 1e38
///    does not overflow to inf / inf, nor one of subnormals lose its digits;
///  - a spectrum holding NaN or infinity gives NaN (the eigenvalue functions never return one:
///    they throw numerical_error instead).
template <typename Scalar>
Scalar copying_score(const ComplexVector<Scalar>& eigenvalues) {
  Scalar largest = 0;
  for (Index i = 0; i < eigenvalues.size(); ++i) {
    const std::complex<Scalar> v = eigenvalues(i);
    if (!std::isfinite(v.real()) || !std::isfinite(v.imag())) {
      return std::numeric_limits<Scalar>::quiet_NaN();
    }
    largest = std::max({largest, std::abs(v.real()), std::abs(v.imag())});
  }
  if (largest == Scalar(0)) return Scalar(0);
  int exponent = 0;
  std::frexp(largest, &exponent);
  Scalar total_real = 0;
  Scalar total_abs = 0;
  for (Index i = 0; i < eigenvalues.size(); ++i) {
    const std::complex<Scalar> v(std::ldexp(eigenvalues(i).real(), -exponent),
                                 std::ldexp(eigenvalues(i).imag(), -exponent));
    total_real += v.real();
    total_abs += std::abs(v);
  }
  // |sum Re λ| <= sum |λ| in exact arithmetic; clamp the rounding so the score stays in [-1, 1].
  return std::max(Scalar(-1), std::min(Scalar(1), total_real / total_abs));
}

namespace detail {
/// Eigenvalues of a small dense square matrix (detail/eigenvalues.hpp); numerical_error naming
/// `what` if every eigensolver fails, the matrix holds NaN or infinity (e.g. a float product of
/// weights that overflowed), or an eigenvalue overflows.
/// (`max_iterations`: detail/eigenvalues.hpp; 0, Eigen's default, except in tests.)
template <typename Scalar>
ComplexVector<Scalar> small_eigenvalues(const Matrix<Scalar>& m, const std::string& what,
                                        Index max_iterations = 0) {
  ComplexVector<Scalar> values;
  const Eigen::ComputationInfo info = general_eigenvalues<Scalar>(m, values, max_iterations);
  if (info == Eigen::NumericalIssue) {
    throw numerical_error("eigenvalues of " + what +
                          ": the matrix holds NaN or infinity, or an eigenvalue overflows");
  }
  if (info != Eigen::Success) {
    throw numerical_error("eigenvalues of " + what + ": the eigensolver did not converge");
  }
  return values;
}

/// G W for a d_model x d_model matrix G of EmbeddingGrams and a d_model x d_head W: the
/// product every full-circuit quantity of a head starts from, with circuitry's AVX2/AVX-512
/// kernels where the processor has them (detail::multiply; Eigen's product otherwise).
template <typename Scalar>
Matrix<Scalar> gram_times(const Matrix<Scalar>& G, const Matrix<Scalar>& W) {
  Matrix<Scalar> out;
  multiply(G, W, out);
  return out;
}

/// <X, Y>_F = sum_ij X_ij Y_ij.
template <typename Scalar>
Scalar frobenius_inner(const Matrix<Scalar>& x, const Matrix<Scalar>& y) {
  return x.cwiseProduct(y).sum();
}
}  // namespace detail

/// The three d_model x d_model matrices all full-circuit spectra and norms are computed from
/// (see circuits.hpp). Computing them costs O(d_vocab d_model^2) once, for all heads.
template <typename Scalar>
struct EmbeddingGrams {
  Matrix<Scalar> E;   ///< W_E^T W_E          (symmetric)
  Matrix<Scalar> U;   ///< W_U W_U^T          (symmetric)
  Matrix<Scalar> UE;  ///< W_U W_E            (the direct path's "BA")

  /// Where the processor has AVX2 or AVX-512, full products with circuitry's kernels
  /// (detail::multiply_long, 4-8x Eigen's SSE2 rate: more than the half a symmetric rank update
  /// saves), then the lower triangles mirrored (E and U exactly symmetric); otherwise Eigen's
  /// symmetric rank updates.
  explicit EmbeddingGrams(const AttentionOnlyModel<Scalar>& model) {
    const Index D = model.W_E.cols();
    if (detail::simd_level() == detail::SimdLevel::none) {
      E = Matrix<Scalar>::Zero(D, D);
      E.template selfadjointView<Eigen::Lower>().rankUpdate(model.W_E.transpose());
      U = Matrix<Scalar>::Zero(D, D);
      U.template selfadjointView<Eigen::Lower>().rankUpdate(model.W_U);
    } else {
      detail::multiply_long(model.W_E.transpose(), model.W_E, E);
      detail::multiply_long(model.W_U, model.W_U.transpose(), U);
    }
    E.template triangularView<Eigen::StrictlyUpper>() = E.transpose();
    U.template triangularView<Eigen::StrictlyUpper>() = U.transpose();
    detail::multiply_long(model.W_U, model.W_E, UE);
  }
};

/// Eigenvalues of head `id`'s OV circuit W_V W_O: the d_head eigenvalues of W_O W_V.
template <typename Scalar>
ComplexVector<Scalar> ov_eigenvalues(const AttentionOnlyModel<Scalar>& model, HeadId id) {
  const auto& h = model.head(id);
  return detail::small_eigenvalues<Scalar>(h.W_O * h.W_V, "the OV circuit of " + id.name());
}

/// Eigenvalues of head `id`'s QK circuit W_Q W_K^T: the d_head eigenvalues of W_K^T W_Q.
template <typename Scalar>
ComplexVector<Scalar> qk_eigenvalues(const AttentionOnlyModel<Scalar>& model, HeadId id) {
  const auto& h = model.head(id);
  return detail::small_eigenvalues<Scalar>(h.W_K.transpose() * h.W_Q,
                                           "the QK circuit of " + id.name());
}

/// Eigenvalues of the full OV circuit W_E W_V W_O W_U: the d_head eigenvalues of
/// W_O (W_U W_E) W_V (the rest of its d_vocab eigenvalues are zero).
template <typename Scalar>
ComplexVector<Scalar> full_ov_eigenvalues(const AttentionOnlyModel<Scalar>& model,
                                          const EmbeddingGrams<Scalar>& grams, HeadId id) {
  const auto& h = model.head(id);
  return detail::small_eigenvalues<Scalar>(h.W_O * detail::gram_times(grams.UE, h.W_V),
                                           "the full OV circuit of " + id.name());
}

/// Eigenvalues of the full QK circuit W_E W_Q W_K^T W_E^T: those of W_K^T (W_E^T W_E) W_Q.
template <typename Scalar>
ComplexVector<Scalar> full_qk_eigenvalues(const AttentionOnlyModel<Scalar>& model,
                                          const EmbeddingGrams<Scalar>& grams, HeadId id) {
  const auto& h = model.head(id);
  return detail::small_eigenvalues<Scalar>(h.W_K.transpose() * detail::gram_times(grams.E, h.W_Q),
                                           "the full QK circuit of " + id.name());
}

/// ||W_E W_V W_O W_U||_F from d_head x d_head Gram matrices (see circuits.hpp).
template <typename Scalar>
Scalar full_ov_frobenius(const AttentionOnlyModel<Scalar>& model,
                         const EmbeddingGrams<Scalar>& grams, HeadId id) {
  const auto& h = model.head(id);
  const Matrix<Scalar> left = h.W_V.transpose() * detail::gram_times(grams.E, h.W_V);
  const Matrix<Scalar> W_O_t = h.W_O.transpose();
  const Matrix<Scalar> right = h.W_O * detail::gram_times(grams.U, W_O_t);
  return std::sqrt(std::max(Scalar(0), detail::frobenius_inner(left, right)));
}

/// ||W_E W_Q W_K^T W_E^T||_F from d_head x d_head Gram matrices (see circuits.hpp).
template <typename Scalar>
Scalar full_qk_frobenius(const AttentionOnlyModel<Scalar>& model,
                         const EmbeddingGrams<Scalar>& grams, HeadId id) {
  const auto& h = model.head(id);
  const Matrix<Scalar> left = h.W_Q.transpose() * detail::gram_times(grams.E, h.W_Q);
  const Matrix<Scalar> right = h.W_K.transpose() * detail::gram_times(grams.E, h.W_K);
  return std::sqrt(std::max(Scalar(0), detail::frobenius_inner(left, right)));
}

/// Fractions of tokens i whose row of the full OV circuit has its largest entry (top-1), or one
/// of its k largest (top-k), at column i: how often the head, attending to token i, most
/// raises the logit of i itself. Entries tied with the diagonal count in the diagonal's favour,
/// so a head that writes nothing (an all-zero circuit, every entry tied) scores 1: read it with
/// its copying score (0) and its norm (0). Computed in row blocks of the d_vocab x d_vocab
/// product, never all at once.
struct CopyingAccuracy {
  double top1 = 0;
  double top5 = 0;
};

namespace detail {
/// Top-1 and top-5 fractions of a square circuit's diagonal ranks (capped at 5: all they need).
template <typename Scalar>
CopyingAccuracy copying_accuracy(const FactoredMatrix<Scalar>& circuit) {
  const auto ranks = circuit.diagonal_rank_capped(5);
  CopyingAccuracy acc;
  for (Index i = 0; i < ranks.size(); ++i) {
    acc.top1 += ranks(i) < 1 ? 1.0 : 0.0;
    acc.top5 += ranks(i) < 5 ? 1.0 : 0.0;
  }
  acc.top1 /= static_cast<double>(ranks.size());
  acc.top5 /= static_cast<double>(ranks.size());
  return acc;
}
}  // namespace detail

template <typename Scalar>
CopyingAccuracy full_ov_copying_accuracy(const AttentionOnlyModel<Scalar>& model, HeadId id) {
  return detail::copying_accuracy(full_ov_circuit(model, id));
}

/// full_ov_copying_accuracy of every head, in `model.head_ids()` order. The factors of a
/// layer's circuits come from two products for all its heads, W_E [W_V^0 ... W_V^{H-1}] and
/// [W_O^0; ...; W_O^{H-1}] W_U (circuitry's product kernels, detail::multiply), rather than two
/// narrow products per head: the same ranks up to rounding of the factors (a near-tie may
/// differ by one token in float).
template <typename Scalar>
std::vector<CopyingAccuracy> full_ov_copying_accuracies(const AttentionOnlyModel<Scalar>& model) {
  std::vector<CopyingAccuracy> out;
  for (const auto& layer : model.layers) {
    Index width = 0;  // the layer's sum of d_head
    for (const auto& hd : layer.heads) width += hd.W_V.cols();
    Matrix<Scalar> W_V(model.W_E.cols(), width), W_O(width, model.W_U.rows()), left, right;
    for (Index h = 0, at = 0; h < static_cast<Index>(layer.heads.size()); ++h) {
      const auto& hd = layer.heads[static_cast<std::size_t>(h)];
      W_V.middleCols(at, hd.W_V.cols()) = hd.W_V;
      W_O.middleRows(at, hd.W_O.rows()) = hd.W_O;
      at += hd.W_V.cols();
    }
    detail::multiply(model.W_E, W_V, left);
    detail::multiply(W_O, model.W_U, right);
    for (Index h = 0, at = 0; h < static_cast<Index>(layer.heads.size()); ++h) {
      const Index dh = layer.heads[static_cast<std::size_t>(h)].W_V.cols();
      out.push_back(detail::copying_accuracy(
          FactoredMatrix<Scalar>(left.middleCols(at, dh), right.middleRows(at, dh))));
      at += dh;
    }
  }
  return out;
}

}  // namespace circuitry
