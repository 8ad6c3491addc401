// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file model.hpp
/// An attention-only transformer (paper: "Transformers with no MLP layers"), TransformerLens
/// names and row-vector convention:
///
///     resid_0 = W_E[t] + W_pos[p]                  (shortformer: W_E[t] only)
///     x_l     = LN1_l(resid_l)
///     resid_{l+1} = resid_l + sum_h softmax(causal(q k^T / sqrt(d_head))) v W_O^h + b_O^l
///     logits  = LN_final(resid_L) W_U + b_U
///
/// Load one with `load_model` (model_io.hpp); analyse it with circuits.hpp.

#include <string>
#include <utility>
#include <vector>

#include "circuitry/attention_head.hpp"
#include "circuitry/config.hpp"
#include "circuitry/error.hpp"
#include "circuitry/layer_norm.hpp"

namespace circuitry {

/// Which of TransformerLens's weight-processing steps have been applied (processing.hpp).
struct WeightProcessing {
  bool fold_ln = false;
  bool center_writing_weights = false;
  bool center_unembed = false;
  bool fold_value_biases = false;
  friend bool operator==(const WeightProcessing& a, const WeightProcessing& b) {
    return a.fold_ln == b.fold_ln && a.center_writing_weights == b.center_writing_weights &&
           a.center_unembed == b.center_unembed && a.fold_value_biases == b.fold_value_biases;
  }
};

/// One attention layer: its pre-LayerNorm, its heads, and the output bias b_O shared by them.
template <typename Scalar>
struct AttentionLayer {
  CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);
  LayerNorm<Scalar> ln1;
  std::vector<AttentionHead<Scalar>> heads;
  Vector<Scalar> b_O;  ///< [d_model]

  /// [W_V^0 ... W_V^{H-1}]: the heads' value matrices side by side, [d_model, sum_h d_ov^h]
  /// (TransformerLens's W_V[l] as "n_heads d_model d_head -> d_model (n_heads d_head)"): head
  /// h's d_ov^h columns follow head h - 1's. Heads may differ in width (rank-1 OV heads next to
  /// wider ones); a layer without heads gives an empty matrix.
  Matrix<Scalar> W_V_stacked() const {
    Index width = 0;
    for (const AttentionHead<Scalar>& hd : heads) width += hd.d_ov();
    Matrix<Scalar> out(heads.empty() ? 0 : heads.front().W_V.rows(), width);
    Index c = 0;
    for (const AttentionHead<Scalar>& hd : heads) {
      out.middleCols(c, hd.d_ov()) = hd.W_V;
      c += hd.d_ov();
    }
    return out;
  }
  /// [W_O^0; ...; W_O^{H-1}]: the heads' output matrices stacked, [sum_h d_ov^h, d_model]
  /// (TransformerLens's W_O[l] as "(n_heads d_head) d_model"), so that the layer writes
  /// [z^0 ... z^{H-1}] W_O_stacked(), z^h = A^h x W_V^h.
  Matrix<Scalar> W_O_stacked() const {
    Index height = 0;
    for (const AttentionHead<Scalar>& hd : heads) height += hd.d_ov();
    Matrix<Scalar> out(height, heads.empty() ? 0 : heads.front().W_O.cols());
    Index r = 0;
    for (const AttentionHead<Scalar>& hd : heads) {
      out.middleRows(r, hd.d_ov()) = hd.W_O;
      r += hd.d_ov();
    }
    return out;
  }
};

/// An attention-only transformer. Invariant (checked by `check_shapes`): every matrix has the
/// shape its config says.
template <typename Scalar>
struct AttentionOnlyModel {
  CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);
  ModelConfig config;
  Matrix<Scalar> W_E;    ///< [d_vocab, d_model]
  Matrix<Scalar> W_pos;  ///< [n_ctx, d_model]
  std::vector<AttentionLayer<Scalar>> layers;
  LayerNorm<Scalar> ln_final;
  Matrix<Scalar> W_U;  ///< [d_model, d_vocab]
  Vector<Scalar> b_U;  ///< [d_vocab]
  WeightProcessing processing;

  int n_layers() const { return static_cast<int>(layers.size()); }
  int n_heads() const { return layers.empty() ? 0 : static_cast<int>(layers[0].heads.size()); }
  /// All heads in order L0H0, L0H1, ..., L1H0, ...
  std::vector<HeadId> head_ids() const {
    std::vector<HeadId> ids;
    for (int l = 0; l < n_layers(); ++l) {
      for (int h = 0; h < static_cast<int>(layers[static_cast<std::size_t>(l)].heads.size()); ++h) {
        ids.push_back({l, h});
      }
    }
    return ids;
  }

  /// The head `id`; argument_error if there is no such head.
  const AttentionHead<Scalar>& head(HeadId id) const {
    if (id.layer < 0 || id.layer >= n_layers() || id.head < 0 ||
        id.head >= static_cast<int>(layers[static_cast<std::size_t>(id.layer)].heads.size())) {
      throw argument_error("no head " + id.name() + " in a model of " + std::to_string(n_layers()) +
                           " layers x " + std::to_string(n_heads()) + " heads");
    }
    return layers[static_cast<std::size_t>(id.layer)].heads[static_cast<std::size_t>(id.head)];
  }
  AttentionHead<Scalar>& head(HeadId id) {
    return const_cast<AttentionHead<Scalar>&>(std::as_const(*this).head(id));
  }
  const AttentionHead<Scalar>& head(int layer, int h) const { return head(HeadId{layer, h}); }

  /// Throws shape_error naming the first matrix whose shape disagrees with `config`.
  void check_shapes() const;

  /// The same model in another scalar type.
  template <typename Other>
  AttentionOnlyModel<Other> cast() const;
};

namespace detail {
template <typename Derived>
void expect_shape(const Eigen::EigenBase<Derived>& m, Index rows, Index cols,
                  const std::string& name) {
  if (m.rows() != rows || m.cols() != cols) {
    throw shape_error("'" + name + "' has shape [" + std::to_string(m.rows()) + ", " +
                      std::to_string(m.cols()) + "], expected [" + std::to_string(rows) + ", " +
                      std::to_string(cols) + "] from the config");
  }
}

template <typename Scalar>
void expect_layer_norm(const LayerNorm<Scalar>& ln, Index d_model, const std::string& name) {
  if (ln.type == NormalizationType::LN) {
    expect_shape(ln.w, d_model, 1, name + ".w");
    expect_shape(ln.b, d_model, 1, name + ".b");
  }
}
}  // namespace detail

template <typename Scalar>
void AttentionOnlyModel<Scalar>::check_shapes() const {
  const ModelConfig& c = config;
  c.validate();
  if (n_layers() != c.n_layers) {
    throw shape_error("model has " + std::to_string(n_layers()) + " layers, expected " +
                      std::to_string(c.n_layers) + " from the config");
  }
  detail::expect_shape(W_E, c.d_vocab, c.d_model, "embed.W_E");
  detail::expect_shape(W_pos, c.n_ctx, c.d_model, "pos_embed.W_pos");
  detail::expect_shape(W_U, c.d_model, c.d_vocab, "unembed.W_U");
  detail::expect_shape(b_U, c.d_vocab, 1, "unembed.b_U");
  detail::expect_layer_norm(ln_final, c.d_model, "ln_final");
  for (int l = 0; l < n_layers(); ++l) {
    const auto& layer = layers[static_cast<std::size_t>(l)];
    const std::string p = "blocks." + std::to_string(l);
    if (static_cast<int>(layer.heads.size()) != c.n_heads) {
      throw shape_error(p + " has " + std::to_string(layer.heads.size()) + " heads, expected " +
                        std::to_string(c.n_heads) + " from the config");
    }
    detail::expect_layer_norm(layer.ln1, c.d_model, p + ".ln1");
    detail::expect_shape(layer.b_O, c.d_model, 1, p + ".attn.b_O");
    for (int h = 0; h < c.n_heads; ++h) {
      const auto& hd = layer.heads[static_cast<std::size_t>(h)];
      const std::string q = p + ".attn[head " + std::to_string(h) + "].";
      detail::expect_shape(hd.W_Q, c.d_model, c.d_head, q + "W_Q");
      detail::expect_shape(hd.W_K, c.d_model, c.d_head, q + "W_K");
      detail::expect_shape(hd.W_V, c.d_model, c.d_head, q + "W_V");
      detail::expect_shape(hd.W_O, c.d_head, c.d_model, q + "W_O");
      detail::expect_shape(hd.b_Q, c.d_head, 1, q + "b_Q");
      detail::expect_shape(hd.b_K, c.d_head, 1, q + "b_K");
      detail::expect_shape(hd.b_V, c.d_head, 1, q + "b_V");
    }
  }
}

template <typename Scalar>
template <typename Other>
AttentionOnlyModel<Other> AttentionOnlyModel<Scalar>::cast() const {
  auto cast_ln = [](const LayerNorm<Scalar>& ln) {
    LayerNorm<Other> out;
    out.type = ln.type;
    out.w = ln.w.template cast<Other>();
    out.b = ln.b.template cast<Other>();
    out.eps = static_cast<Other>(ln.eps);
    return out;
  };
  AttentionOnlyModel<Other> m;
  m.config = config;
  m.W_E = W_E.template cast<Other>();
  m.W_pos = W_pos.template cast<Other>();
  m.W_U = W_U.template cast<Other>();
  m.b_U = b_U.template cast<Other>();
  m.ln_final = cast_ln(ln_final);
  m.processing = processing;
  for (const auto& layer : layers) {
    AttentionLayer<Other> out;
    out.ln1 = cast_ln(layer.ln1);
    out.b_O = layer.b_O.template cast<Other>();
    for (const auto& hd : layer.heads) out.heads.push_back(hd.template cast<Other>());
    m.layers.push_back(std::move(out));
  }
  return m;
}

}  // namespace circuitry
