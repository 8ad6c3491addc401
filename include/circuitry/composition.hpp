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
/// Grams) are packed once as vectors of their upper triangles (in parallel over heads), and the
/// scores of all causal pairs come from one matrix product per earlier layer of the packed left and
/// right Grams. `all_composition_scores(model)` gives the three kinds and computes the left Grams
/// once.

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <vector>

#include "circuitry/detail/simd_gemm.hpp"
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

/// Packs the upper triangle of the symmetric matrix whose upper triangle `S` holds into `out`
/// (contiguous, d (d + 1) / 2 entries) with off-diagonal entries scaled by sqrt(2), so that
/// <pack(S), pack(T)> = <S, T>_F. Only S(i, j), i <= j, is read.
template <typename Scalar>
void pack_symmetric(const Matrix<Scalar>& S, Scalar* out) {
  const Scalar root2 = std::sqrt(Scalar(2));
  for (Index j = 0; j < S.cols(); ++j) {
    const Scalar* col = S.col(j).data();
    for (Index i = 0; i < j; ++i) *out++ = root2 * col[i];
    *out++ = col[j];
  }
}

/// Buffers of one thread's packed_sandwich calls, kept across heads (no allocation per head).
template <typename Scalar>
struct SandwichWorkspace {
  Matrix<Scalar> XY, Xt, G;
};

/// X Y X^T for symmetric Y (d x d) and X (D x d), the d_model x d_model Gram of a rank-d map,
/// packed (pack_symmetric) into `out`; returns its trace. Single-threaded (called in parallel
/// over heads): with circuitry's AVX2/AVX-512 kernels where the processor has them (the full
/// product, at 4-8x Eigen's SSE2 rate), else Eigen's product of the upper triangle only.
template <typename Scalar>
Scalar packed_sandwich(const Matrix<Scalar>& X, const Matrix<Scalar>& Y, Scalar* out,
                       SandwichWorkspace<Scalar>& ws) {
  const Index D = X.rows(), d = X.cols();
  ws.XY.noalias() = X * Y;
  ws.G.resize(D, D);
  const SimdLevel level = simd_level();
  if (level == SimdLevel::none || d == 0) {
    ws.G.template triangularView<Eigen::Upper>() = ws.XY * X.transpose();
  } else {
    ws.Xt = X.transpose();
    gemm(level, D, D, d, ws.XY.data(), D, ws.Xt.data(), d, ws.G.data(), D);
  }
  pack_symmetric<Scalar>(ws.G, out);
  return ws.G.diagonal().sum();
}

/// The packed Gram of the right-hand matrix W_B of each composition kind, W_B W_B^T, into
/// `out`; returns ||W_B||_F^2 (its trace).
template <typename Scalar>
Scalar packed_right_gram(const AttentionHead<Scalar>& h, CompositionType type, Scalar* out,
                         SandwichWorkspace<Scalar>& ws) {
  switch (type) {
    case CompositionType::Q:  // QK QK^T = W_Q (W_K^T W_K) W_Q^T
      return packed_sandwich<Scalar>(h.W_Q, h.W_K.transpose() * h.W_K, out, ws);
    case CompositionType::K:  // QK^T QK = W_K (W_Q^T W_Q) W_K^T
      return packed_sandwich<Scalar>(h.W_K, h.W_Q.transpose() * h.W_Q, out, ws);
    case CompositionType::V:
    default:  // OV OV^T = W_V (W_O W_O^T) W_V^T
      return packed_sandwich<Scalar>(h.W_V, h.W_O * h.W_O.transpose(), out, ws);
  }
}

/// Packed Grams, one column per head of `layers` (first, first + count): column
/// (l - first) H + h. Each column is divided by the Gram's trace (the squared norm of the
/// head's matrix), so that the dot product of a left and a right column is score^2. In
/// parallel over heads (each Gram's products single-threaded inside). Written into `packed`,
/// reused when it already has the size (the pages of a fresh buffer are faulted in first).
template <typename Scalar, typename GramOf>
void packed_grams(const AttentionOnlyModel<Scalar>& model, int first, int count, GramOf gram_of,
                  Matrix<Scalar>& packed) {
  const int H = model.n_heads();
  const Index D = model.W_E.cols();
  const Index n = static_cast<Index>(count) * H;
  if (packed.rows() != D * (D + 1) / 2 || packed.cols() != n) {
    packed.resize(D * (D + 1) / 2, n);
    prefault(packed);
  }
  CIRCUITRY_OMP_PARALLEL {
    SandwichWorkspace<Scalar> ws;
    CIRCUITRY_OMP_FOR
    for (Index c = 0; c < n; ++c) {
      const AttentionHead<Scalar>& head =
          model.head(first + static_cast<int>(c / H), static_cast<int>(c % H));
      const Scalar norm2 = gram_of(head, packed.col(c).data(), ws);
      if (norm2 > Scalar(0)) packed.col(c) /= norm2;
    }
  }
}

/// The left Grams of every head that can be composed with (layers 0 .. L-2): OV^T OV =
/// W_O^T (W_V^T W_V) W_O.
template <typename Scalar>
Matrix<Scalar> packed_left_grams(const AttentionOnlyModel<Scalar>& model) {
  Matrix<Scalar> left;
  packed_grams(
      model, 0, model.n_layers() - 1,
      [](const AttentionHead<Scalar>& h, Scalar* out, SandwichWorkspace<Scalar>& ws) {
        return packed_sandwich<Scalar>(h.W_O.transpose(), h.W_V.transpose() * h.W_V, out, ws);
      },
      left);
  return left;
}

/// Scores of one kind from the packed left Grams. With circuitry's kernels, one product of all
/// right columns with all left columns (the inner dimension d_model (d_model + 1) / 2 in
/// cache-sized chunks: detail::multiply_long), of which the causal pairs are kept; with Eigen's
/// product, one product per earlier layer with the heads of the later layers only. `right` is
/// the buffer of the packed right Grams (reused across kinds).
template <typename Scalar>
CompositionScores<Scalar> composition_scores_from(const AttentionOnlyModel<Scalar>& model,
                                                  const Matrix<Scalar>& left, CompositionType type,
                                                  Matrix<Scalar>& right) {
  const int L = model.n_layers(), H = model.n_heads();
  CompositionScores<Scalar> scores(L, H);
  packed_grams(
      model, 1, L - 1,
      [type](const AttentionHead<Scalar>& h, Scalar* out, SandwichWorkspace<Scalar>& ws) {
        return packed_right_gram<Scalar>(h, type, out, ws);
      },
      right);
  // Left column la H + ha holds head (la, ha); right column (lb - 1) H + hb holds (lb, hb).
  const auto score = [](Scalar s2) { return std::sqrt(std::max(Scalar(0), s2)); };
  if (simd_level() != SimdLevel::none) {
    Matrix<Scalar> S;  // [right columns, left columns]
    multiply_long(right.transpose(), left, S);
    for (int la = 0; la + 1 < L; ++la) {
      for (int ha = 0; ha < H; ++ha) {
        for (int lb = la + 1; lb < L; ++lb) {
          for (int hb = 0; hb < H; ++hb) {
            scores({la, ha}, {lb, hb}) =
                score(S(static_cast<Index>(lb - 1) * H + hb, static_cast<Index>(la) * H + ha));
          }
        }
      }
    }
    return scores;
  }
  Matrix<Scalar> S;
  for (int la = 0; la + 1 < L; ++la) {
    // Layers lb > la start at right column la H.
    const Index first = static_cast<Index>(la) * H;
    S.noalias() = left.middleCols(first, H).transpose() * right.rightCols(right.cols() - first);
    for (int ha = 0; ha < H; ++ha) {
      for (Index c = 0; c < S.cols(); ++c) {
        const HeadId b{la + 1 + static_cast<int>(c / H), static_cast<int>(c % H)};
        scores({la, ha}, b) = score(S(ha, c));
      }
    }
  }
  return scores;
}

}  // namespace detail

/// All composition scores of one kind (see composition.hpp), as TransformerLens's
/// `model.all_composition_scores(kind)`: entry (A, B) for A in a strictly earlier layer than B,
/// zero otherwise. Memory: a packed d_model (d_model + 1) / 2 vector per head and side.
template <typename Scalar>
CompositionScores<Scalar> composition_scores(const AttentionOnlyModel<Scalar>& model,
                                             CompositionType type) {
  if (model.n_layers() < 2) return CompositionScores<Scalar>(model.n_layers(), model.n_heads());
  Matrix<Scalar> right;
  return detail::composition_scores_from(model, detail::packed_left_grams(model), type, right);
}

/// The three kinds at once, {Q, K, V}: the left Grams (the writing heads' OV^T OV) are computed
/// once for all three.
template <typename Scalar>
std::array<CompositionScores<Scalar>, 3> all_composition_scores(
    const AttentionOnlyModel<Scalar>& model) {
  const int L = model.n_layers(), H = model.n_heads();
  std::array<CompositionScores<Scalar>, 3> out{CompositionScores<Scalar>(L, H),
                                               CompositionScores<Scalar>(L, H),
                                               CompositionScores<Scalar>(L, H)};
  if (L < 2) return out;
  const Matrix<Scalar> left = detail::packed_left_grams(model);
  Matrix<Scalar> right;
  const CompositionType types[3] = {CompositionType::Q, CompositionType::K, CompositionType::V};
  for (std::size_t t = 0; t < 3; ++t)
    out[t] = detail::composition_scores_from(model, left, types[t], right);
  return out;
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
