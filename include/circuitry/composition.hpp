// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file composition.hpp
/// Composition scores (paper, "Virtual Weights and Composition"): how much a later head B reads
/// what an earlier head A writes,
///
///     score(W_A, W_B) = ||W_A W_B||_F / (||W_A||_F ||W_B||_F)
///
/// with W_A = OV_A = W_V^A W_O^A and, for the three kinds,
///
///     Q-composition: W_B = QK_B   = W_Q^B W_K^B^T   (A's output feeds B's queries)
///     K-composition: W_B = QK_B^T = W_K^B W_Q^B^T   (A's output feeds B's keys)
///     V-composition: W_B = OV_B   = W_V^B W_O^B     (A's output feeds B's values)
///
/// as TransformerLens's `all_composition_scores`. `composition_scores(model, kind)` computes all
/// pairs with A in a strictly earlier layer (other entries are zero) without forming any
/// d_model x d_model product per pair:
///
///     ||W_A W_B||_F^2 = < W_A^T W_A , W_B W_B^T >_F
///
/// Each head's two d_model x d_model Gram matrices (rank <= d_head, built from d_head x d_head
/// Grams) are packed once as vectors of their upper triangles, and all pair scores come from one
/// matrix product of the packed left and right Grams.

#include <cmath>
#include <random>
#include <vector>

#include "circuitry/factored_matrix.hpp"
#include "circuitry/model.hpp"

namespace circuitry {

enum class CompositionType { Q, K, V };

inline const char* to_string(CompositionType t) {
  return t == CompositionType::Q ? "Q" : t == CompositionType::K ? "K" : "V";
}

/// The composition score of two factored d_model x d_model matrices (any shapes that multiply).
template <typename Scalar>
Scalar composition_score(const FactoredMatrix<Scalar>& W_A, const FactoredMatrix<Scalar>& W_B) {
  const Scalar denom = W_A.frobenius_norm() * W_B.frobenius_norm();
  if (denom == Scalar(0)) return Scalar(0);
  return (W_A * W_B).frobenius_norm() / denom;
}

/// Scores [layer_A][head_A][layer_B][head_B], zero unless layer_A < layer_B.
template <typename Scalar>
struct CompositionScores {
  int n_layers = 0;
  int n_heads = 0;
  std::vector<Scalar> data;  ///< row-major [L][H][L][H]

  CompositionScores() = default;
  CompositionScores(int layers, int heads)
      : n_layers(layers),
        n_heads(heads),
        data(static_cast<std::size_t>(layers) * static_cast<std::size_t>(heads) *
                 static_cast<std::size_t>(layers) * static_cast<std::size_t>(heads),
             Scalar(0)) {}

  Scalar& operator()(HeadId a, HeadId b) { return data[index(a, b)]; }
  Scalar operator()(HeadId a, HeadId b) const { return data[index(a, b)]; }

 private:
  std::size_t index(HeadId a, HeadId b) const {
    CIRCUITRY_ASSERT(a.layer >= 0 && a.layer < n_layers && b.layer >= 0 && b.layer < n_layers);
    const auto flat = [&](HeadId x) {
      return static_cast<std::size_t>(x.layer) * static_cast<std::size_t>(n_heads) +
             static_cast<std::size_t>(x.head);
    };
    return flat(a) * static_cast<std::size_t>(n_layers) * static_cast<std::size_t>(n_heads) +
           flat(b);
  }
};

namespace detail {

/// Packs the upper triangle of a symmetric matrix S into `out` with off-diagonal entries scaled
/// by sqrt(2), so that <pack(S), pack(T)> = <S, T>_F.
template <typename Scalar, typename Out>
void pack_symmetric(const Matrix<Scalar>& S, Out&& out) {
  const Scalar root2 = std::sqrt(Scalar(2));
  Index k = 0;
  for (Index j = 0; j < S.cols(); ++j) {
    for (Index i = 0; i < j; ++i) out(k++) = root2 * S(i, j);
    out(k++) = S(j, j);
  }
}

/// X Y X^T for symmetric Y (d x d) and X (D x d): the d_model x d_model Gram of a rank-d map.
template <typename Scalar>
Matrix<Scalar> sandwich(const Matrix<Scalar>& X, const Matrix<Scalar>& Y) {
  Matrix<Scalar> XY = X * Y;
  Matrix<Scalar> out(X.rows(), X.rows());
  out.noalias() = XY * X.transpose();
  return out;
}

/// W_B W_B^T for the right-hand matrix of each composition kind, and ||W_B||_F^2.
template <typename Scalar>
Matrix<Scalar> right_gram(const AttentionHead<Scalar>& h, CompositionType type) {
  switch (type) {
    case CompositionType::Q: {  // QK QK^T = W_Q (W_K^T W_K) W_Q^T
      const Matrix<Scalar> g = h.W_K.transpose() * h.W_K;
      return sandwich<Scalar>(h.W_Q, g);
    }
    case CompositionType::K: {  // QK^T QK = W_K (W_Q^T W_Q) W_K^T
      const Matrix<Scalar> g = h.W_Q.transpose() * h.W_Q;
      return sandwich<Scalar>(h.W_K, g);
    }
    case CompositionType::V:
    default: {  // OV OV^T = W_V (W_O W_O^T) W_V^T
      const Matrix<Scalar> g = h.W_O * h.W_O.transpose();
      return sandwich<Scalar>(h.W_V, g);
    }
  }
}

}  // namespace detail

/// All composition scores of one kind (see composition.hpp), as TransformerLens's
/// `model.all_composition_scores(kind)`: entry (A, B) for A in a strictly earlier layer than B,
/// zero otherwise. Memory: two packed d_model (d_model + 1) / 2 vectors per head.
template <typename Scalar>
CompositionScores<Scalar> composition_scores(const AttentionOnlyModel<Scalar>& model,
                                             CompositionType type) {
  const int L = model.n_layers(), H = model.n_heads();
  CompositionScores<Scalar> scores(L, H);
  if (L < 2) return scores;
  const Index D = model.W_E.cols();
  const Index P = D * (D + 1) / 2;
  const Index n_left = static_cast<Index>(L - 1) * H;   // heads of layers 0 .. L-2
  const Index n_right = static_cast<Index>(L - 1) * H;  // heads of layers 1 .. L-1
  // Rows: packed Grams divided by the squared norm, so that X Y^T holds score^2.
  Matrix<Scalar> X(n_left, P), Y(n_right, P);
  for (int l = 0; l + 1 < L; ++l) {
    for (int h = 0; h < H; ++h) {
      const auto& hd = model.head(l, h);
      const Matrix<Scalar> g = hd.W_V.transpose() * hd.W_V;  // OV^T OV = W_O^T (W_V^T W_V) W_O
      const Matrix<Scalar> left = detail::sandwich<Scalar>(hd.W_O.transpose(), g);
      const Scalar norm2 = left.trace();
      const Index row = static_cast<Index>(l) * H + h;
      detail::pack_symmetric<Scalar>(left, X.row(row));
      if (norm2 > Scalar(0)) X.row(row) /= norm2;
    }
  }
  for (int l = 1; l < L; ++l) {
    for (int h = 0; h < H; ++h) {
      const Matrix<Scalar> right = detail::right_gram(model.head(l, h), type);
      const Scalar norm2 = right.trace();
      const Index row = static_cast<Index>(l - 1) * H + h;
      detail::pack_symmetric<Scalar>(right, Y.row(row));
      if (norm2 > Scalar(0)) Y.row(row) /= norm2;
    }
  }
  Matrix<Scalar> S(n_left, n_right);
  S.noalias() = X * Y.transpose();
  for (int la = 0; la + 1 < L; ++la) {
    for (int ha = 0; ha < H; ++ha) {
      for (int lb = la + 1; lb < L; ++lb) {
        for (int hb = 0; hb < H; ++hb) {
          const Scalar s2 = S(static_cast<Index>(la) * H + ha, static_cast<Index>(lb - 1) * H + hb);
          scores({la, ha}, {lb, hb}) = std::sqrt(std::max(Scalar(0), s2));
        }
      }
    }
  }
  return scores;
}

/// Mean and standard deviation of the composition score of independent random heads with
/// Gaussian W_Q, W_K, W_V, W_O of the given shapes (d_model x d_head): the baseline the paper
/// compares composition scores with. For i.i.d. Gaussian weights, Q-, K- and V-composition
/// scores have the same distribution, so one baseline serves all three. Deterministic in `seed`.
struct CompositionBaseline {
  double mean = 0;
  double stddev = 0;
  int samples = 0;
};

template <typename Scalar = double>
CompositionBaseline composition_baseline(Index d_model, Index d_head, int samples = 200,
                                         unsigned seed = 0) {
  if (d_model <= 0 || d_head <= 0 || samples <= 0) {
    throw argument_error("composition_baseline: d_model, d_head and samples must be positive");
  }
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto gaussian = [&](Index r, Index c) {
    Matrix<Scalar> m(r, c);
    for (Index j = 0; j < c; ++j)
      for (Index i = 0; i < r; ++i) m(i, j) = static_cast<Scalar>(normal(rng));
    return m;
  };
  double sum = 0, sum2 = 0;
  for (int s = 0; s < samples; ++s) {
    const FactoredMatrix<Scalar> W_A(gaussian(d_model, d_head), gaussian(d_head, d_model));
    const FactoredMatrix<Scalar> W_B(gaussian(d_model, d_head), gaussian(d_head, d_model));
    const double score = static_cast<double>(composition_score(W_A, W_B));
    sum += score;
    sum2 += score * score;
  }
  CompositionBaseline b;
  b.samples = samples;
  b.mean = sum / samples;
  b.stddev = std::sqrt(std::max(0.0, sum2 / samples - b.mean * b.mean));
  return b;
}

}  // namespace circuitry
