// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file processing.hpp
/// TransformerLens's weight processing (`HookedTransformer.load_and_process_state_dict` with
/// its defaults), as four separate functions applied in this order by `process_weights`. Each
/// leaves the model's function (its logits) unchanged up to rounding, and each records itself in
/// `model.processing`. The reference figures of TransformerLens are computed after all four.
///
/// 1. `fold_layer_norm`: LN(r) W + b_W = ((r - mean r) s) (diag(w) W) + (b W + b_W). Fold w into
///    the rows of the matrices that read the normalised stream (W_Q, W_K, W_V; W_U), b into their
///    biases (b_Q, b_K, b_V; b_U), then centre those matrices' reading weights (subtract each
///    column's mean over d_model: harmless because LN's output is centred). LayerNorm becomes
///    `LNPre` (centre and scale only). Shortformer models (q = (LN(r) + W_pos) W_Q) are an
///    exception, as in TransformerLens: folding w into W_Q also scales the W_pos W_Q term, so
///    the fold changes their function; analyse shortformer models unprocessed.
/// 2. `center_writing_weights`: subtract from every vector written to the residual stream its
///    mean over d_model (rows of W_E, W_pos, W_O; b_O): LayerNorm centres the stream anyway.
/// 3. `center_unembed`: subtract from each row of W_U its mean over d_vocab, and from b_U its
///    mean: softmax is invariant to a constant added to all logits.
/// 4. `fold_value_biases`: since each attention pattern row sums to one, the value bias b_V of
///    head h contributes the constant b_V W_O^h; add sum_h b_V^h W_O^h to b_O and zero b_V.

#include "circuitry/model.hpp"

namespace circuitry {

namespace detail {
template <typename Scalar>
void fold_into_reader(const LayerNorm<Scalar>& ln, Matrix<Scalar>& W, Vector<Scalar>& bias,
                      bool center) {
  // b_W += b W (before scaling W), W = diag(w) W, then W -= column means.
  bias.noalias() += (ln.b.transpose() * W).transpose();
  W = ln.w.asDiagonal() * W;
  if (center) W.rowwise() -= W.colwise().mean();
}
}  // namespace detail

/// Step 1 (see processing.hpp). Requires normalization_type LN (otherwise nothing to fold: a
/// model with no LayerNorm, or already folded, is returned unchanged). `center_weights` also
/// centres the reading weights, as TransformerLens does by default.
template <typename Scalar>
void fold_layer_norm(AttentionOnlyModel<Scalar>& model, bool center_weights = true) {
  if (model.config.normalization_type != NormalizationType::LN) return;
  for (auto& layer : model.layers) {
    for (auto& head : layer.heads) {
      detail::fold_into_reader(layer.ln1, head.W_Q, head.b_Q, center_weights);
      detail::fold_into_reader(layer.ln1, head.W_K, head.b_K, center_weights);
      detail::fold_into_reader(layer.ln1, head.W_V, head.b_V, center_weights);
    }
    layer.ln1.type = NormalizationType::LNPre;
    layer.ln1.w.resize(0);
    layer.ln1.b.resize(0);
  }
  detail::fold_into_reader(model.ln_final, model.W_U, model.b_U, center_weights);
  model.ln_final.type = NormalizationType::LNPre;
  model.ln_final.w.resize(0);
  model.ln_final.b.resize(0);
  model.config.normalization_type = NormalizationType::LNPre;
  model.processing.fold_ln = true;
}

/// Step 2 (see processing.hpp): centre W_E, W_pos, every W_O and b_O over d_model.
template <typename Scalar>
void center_writing_weights(AttentionOnlyModel<Scalar>& model) {
  model.W_E.colwise() -= model.W_E.rowwise().mean();
  model.W_pos.colwise() -= model.W_pos.rowwise().mean();
  for (auto& layer : model.layers) {
    for (auto& head : layer.heads) head.W_O.colwise() -= head.W_O.rowwise().mean();
    layer.b_O.array() -= layer.b_O.mean();
  }
  model.processing.center_writing_weights = true;
}

/// Step 3 (see processing.hpp): centre W_U's rows and b_U over d_vocab.
template <typename Scalar>
void center_unembed(AttentionOnlyModel<Scalar>& model) {
  model.W_U.colwise() -= model.W_U.rowwise().mean();
  model.b_U.array() -= model.b_U.mean();
  model.processing.center_unembed = true;
}

/// Step 4 (see processing.hpp): b_O += sum_h b_V^h W_O^h; b_V = 0.
template <typename Scalar>
void fold_value_biases(AttentionOnlyModel<Scalar>& model) {
  for (auto& layer : model.layers) {
    for (auto& head : layer.heads) {
      layer.b_O.noalias() += (head.b_V.transpose() * head.W_O).transpose();
      head.b_V.setZero();
    }
  }
  model.processing.fold_value_biases = true;
}

/// All four steps in TransformerLens's order (fold_ln, center_writing_weights, center_unembed,
/// fold_value_biases). Centring writing weights is only function-preserving when a LayerNorm
/// follows, so, as TransformerLens does, it is skipped for models without LayerNorm.
template <typename Scalar>
void process_weights(AttentionOnlyModel<Scalar>& model) {
  const bool has_ln = model.config.normalization_type != NormalizationType::none;
  fold_layer_norm(model);
  if (has_ln) center_writing_weights(model);
  center_unembed(model);
  fold_value_biases(model);
}

/// A processed copy of `model`.
template <typename Scalar>
AttentionOnlyModel<Scalar> processed(AttentionOnlyModel<Scalar> model) {
  process_weights(model);
  return model;
}

}  // namespace circuitry
