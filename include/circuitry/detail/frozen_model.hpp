// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/frozen_model.hpp
/// `FrozenModel`: an attention-only transformer with its attention patterns and LayerNorm scales
/// frozen at their values on one batch (a forward-pass cache). Part of path_expansion.hpp (include
/// that); kept here to keep the headers short.
///
/// With the patterns A^h and the scales s fixed, LayerNorm is affine,
///
///     LN_frozen(R) = Lin(R) + b,     Lin(R) = diag(s) (R - mean_cols(R)) [diag(w)]
///
/// (no centring and s = 1 for `none`; w = 1, b = 0 for `LNPre`), and each layer is affine in its
/// input (paper, "Path Expansion of Logits"):
///
///     resid_{l+1} = resid_l + sum_h A^h Lin_l(resid_l) W_V^h W_O^h + c_l,
///     c_l = b_O^l + sum_h (b_{ln1,l} W_V^h + b_V^h) W_O^h          (rows of A^h sum to one)
///     logits = Lin_f(resid_L) W_U + (b_{ln_final} W_U + b_U)
///
/// so the logits are an affine function of the embedding, and resid_L splits into path terms.
/// A^h is block-diagonal: one [S, S] pattern per sequence (rows: token b S + p).

#include <algorithm>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "circuitry/detail/parallel.hpp"
#include "circuitry/detail/simd_dispatch.hpp"
#include "circuitry/detail/simd_gemm.hpp"
#include "circuitry/forward.hpp"

namespace circuitry {

/// A model with patterns and LayerNorm scales frozen from a forward-pass cache (see
/// detail/frozen_model.hpp for the maths). Owns copies of the weights (or shares them, given a
/// shared_ptr), the tokens and the frozen quantities; the arguments it was built from may go
/// away.
template <typename Scalar>
class FrozenModel {
 public:
  CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);

  /// Freezes `model` at the patterns and scales of `cache`, a cache of `forward(model, tokens)`.
  /// argument_error when the cache does not fit the model and tokens (batch, length, layers,
  /// heads, missing patterns or scales).
  FrozenModel(const AttentionOnlyModel<Scalar>& model, const Tokens& tokens,
              const ForwardCache<Scalar>& cache)
      : model_(copy_model(model)), tokens_(tokens) {
    check_tokens(tokens, model.config);
    check_cache(cache);
    freeze(cache);
  }
  /// Same, taking the patterns and scales out of `cache` instead of copying them (for
  /// attn-only-2l on 8 x 256 tokens, 64 MB of patterns).
  FrozenModel(const AttentionOnlyModel<Scalar>& model, const Tokens& tokens,
              ForwardCache<Scalar>&& cache)
      : FrozenModel(copy_model(model), tokens, std::move(cache)) {}

  /// Same, sharing `model` instead of copying it (a GPT-2-sized model is hundreds of MB; a
  /// shared_ptr with a no-op deleter borrows one whose owner outlives this). The model must not
  /// change while this lives. argument_error for a null model.
  FrozenModel(std::shared_ptr<const AttentionOnlyModel<Scalar>> model, const Tokens& tokens,
              ForwardCache<Scalar>&& cache)
      : model_(std::move(model)), tokens_(tokens) {
    if (!model_) throw argument_error("FrozenModel: no model (a null shared_ptr)");
    check_tokens(tokens, model_->config);
    check_cache(cache);
    freeze(std::move(cache));
  }

  /// Runs the forward pass (patterns and scales only) and freezes it.
  FrozenModel(const AttentionOnlyModel<Scalar>& model, const Tokens& tokens)
      : FrozenModel(model, tokens, pattern_cache(model, tokens)) {}

  const AttentionOnlyModel<Scalar>& model() const { return *model_; }
  const Tokens& tokens() const { return tokens_; }
  Index batch() const { return tokens_.rows(); }
  Index seq_len() const { return tokens_.cols(); }
  Index rows() const { return tokens_.size(); }  ///< N = batch * seq_len
  const Vector<Scalar>& ln1_scales(int layer) const {
    return ln1_scales_.at(static_cast<std::size_t>(layer));
  }
  const Vector<Scalar>& ln_final_scales() const { return ln_final_scales_; }
  /// The frozen [S, S] pattern of head `id` on sequence `b` (zero above the diagonal).
  /// argument_error for a head or sequence that does not exist, or a layer whose patterns were
  /// released.
  const Matrix<Scalar>& pattern(HeadId id, Index b) const {
    if (id.layer < 0 || id.layer >= model_->n_layers() || id.head < 0 ||
        id.head >= model_->n_heads() || b < 0 || b >= batch()) {
      throw argument_error("FrozenModel: no pattern of head " + id.name() + " on sequence " +
                           std::to_string(b) + " (" + std::to_string(model_->n_layers()) +
                           " layers, " + std::to_string(model_->n_heads()) + " heads, " +
                           std::to_string(batch()) + " sequences)");
    }
    if (!has_patterns(id.layer)) {
      throw argument_error("FrozenModel: the patterns of layer " + std::to_string(id.layer) +
                           " were released (PathExpansionOptions::keep_patterns = false)");
    }
    return patterns_[static_cast<std::size_t>(id.layer)][static_cast<std::size_t>(id.head)]
                    [static_cast<std::size_t>(b)];
  }
  /// Whether layer `layer`'s patterns are still held (see release_patterns).
  bool has_patterns(int layer) const {
    return !patterns_.at(static_cast<std::size_t>(layer)).empty();
  }
  /// Frees layer `layer`'s patterns ([B, S, S] per head): what reads them (pattern, attend,
  /// layer_linear, resid_final) throws argument_error from then on. For a caller done with
  /// them (PathExpansion once its terms are built), so that later allocations reuse the memory.
  void release_patterns(int layer) {
    std::vector<std::vector<Matrix<Scalar>>>().swap(patterns_.at(static_cast<std::size_t>(layer)));
  }

  /// resid_0 = W_E[t] (+ W_pos[p] for standard positions), [N, d_model]: the direct path.
  Matrix<Scalar> resid0() const {
    Matrix<Scalar> embed, pos;
    detail::embed_tokens(*model_, tokens_, embed, pos);
    if (model_->config.positional_embedding_type == PositionalEmbeddingType::standard) embed += pos;
    return embed;
  }

  /// W_c [diag(w)] W_read: what a stream term Z W (W: r x d_model, the term's writing matrix)
  /// becomes through `ln`'s linear part and the reading matrix W_read (d_model x k), up to the
  /// row scales: Lin(Z W) W_read = diag(s) Z (W_c [diag(w)] W_read). W_c is W with each row
  /// centred over d_model (unless `ln` is `none`).
  static Matrix<Scalar> read_through(const LayerNorm<Scalar>& ln, const Matrix<Scalar>& W,
                                     const Matrix<Scalar>& W_read) {
    Matrix<Scalar> Wc = W, out;
    if (ln.type != NormalizationType::none) Wc = W.colwise() - W.rowwise().mean();
    if (ln.type == NormalizationType::LN) Wc.array().rowwise() *= ln.w.transpose().array();
    detail::multiply(Wc, W_read, out);
    return out;
  }
  /// read_through(ln, I, W_read) without the product: X = [diag(w)] W_read minus the mean of
  /// its rows (I_c = I - 1 1^T / d_model), or W_read for `none`.
  static Matrix<Scalar> read_through_identity(const LayerNorm<Scalar>& ln,
                                              const Matrix<Scalar>& W_read) {
    if (ln.type == NormalizationType::none) return W_read;
    Matrix<Scalar> X(W_read.rows(), W_read.cols());
    detail::prefault(X);
    if (ln.type == NormalizationType::LN) {
      X = ln.w.asDiagonal() * W_read;
    } else {
      X = W_read;
    }
    const RowVector<Scalar> mean = X.colwise().mean();
    X.rowwise() -= mean;
    return X;
  }

  /// Lin_l(X): layer l's LN1 with frozen scales and without its bias b, [N, d_model].
  Matrix<Scalar> ln1_linear(int layer, const Matrix<Scalar>& X) const {
    return linear_ln(model_->layers.at(static_cast<std::size_t>(layer)).ln1, ln1_scales(layer), X);
  }

  /// A^h Y with the frozen pattern, sequence by sequence (Y: [N, k]).
  Matrix<Scalar> attend(HeadId id, const Matrix<Scalar>& Y) const {
    const Index S = seq_len();
    Matrix<Scalar> out(Y.rows(), Y.cols());
    for (Index b = 0; b < batch(); ++b) {
      out.middleRows(b * S, S).noalias() = pattern(id, b) * Y.middleRows(b * S, S);
    }
    return out;
  }

  /// The constant head `id` writes besides A^h Lin(x) W_V W_O: (b_ln1 W_V + b_V) W_O (rows of
  /// a pattern sum to one); zero after `fold_value_biases` on LNPre / none models.
  RowVector<Scalar> value_bias(HeadId id) const {
    const AttentionHead<Scalar>& hd = model_->head(id);
    const LayerNorm<Scalar>& ln = model_->layers[static_cast<std::size_t>(id.layer)].ln1;
    RowVector<Scalar> v = hd.b_V.transpose();
    if (ln.type == NormalizationType::LN) v += ln.b.transpose() * hd.W_V;
    return v * hd.W_O;
  }

  /// [z^0 ... z^{H-1}], z^h = A^h Lin_l(X) W_V^h: what each head of layer l writes through its
  /// W_O (TransformerLens's hook_z, without the value bias), side by side: [N, H d_head], head
  /// h's columns from h d_head. Taken as Lin_l(X) W_V_stacked() in one product and each head's
  /// pattern applied to its columns (the lower triangle only), with circuitry's kernels
  /// (detail/simd_gemm.hpp); heads and sequences in parallel. argument_error unless X is
  /// [N, d_model], or if the layer's patterns were released.
  Matrix<Scalar> layer_z(int layer, const Matrix<Scalar>& X) const {
    if (X.rows() != rows() || X.cols() != model_->config.d_model) {
      throw argument_error("FrozenModel: the stream is " + std::to_string(X.rows()) + " x " +
                           std::to_string(X.cols()) + ", expected " + std::to_string(rows()) +
                           " x " + std::to_string(model_->config.d_model) + " (tokens x d_model)");
    }
    const Matrix<Scalar> W_V = model_->layers.at(static_cast<std::size_t>(layer)).W_V_stacked();
    const detail::SimdLevel level = detail::simd_level();
    const Index N = X.rows(), S = seq_len(), B = batch(), d = model_->config.d_head;
    Matrix<Scalar> v, z(N, W_V.cols());
    detail::multiply(ln1_linear(layer, X), W_V, v);
    detail::parallel_for(model_->n_heads() * B, [&](Index i) {
      const Index h = i / B, b = i % B, offset = h * d * N + b * S;
      detail::causal_product(level, pattern({layer, static_cast<int>(h)}, b), v.data() + offset, N,
                             d, z.data() + offset, N);
    });
    return z;
  }

  /// sum_h A^h Lin_l(X) W_V^h W_O^h = layer_z(l, X) W_O_stacked(): layer l's output on X
  /// without constants, [N, d_model]. argument_error as layer_z.
  Matrix<Scalar> layer_linear(int layer, const Matrix<Scalar>& X) const {
    Matrix<Scalar> out;
    detail::multiply(layer_z(layer, X),
                     model_->layers.at(static_cast<std::size_t>(layer)).W_O_stacked(), out);
    return out;
  }

  /// c_l = b_O^l + sum_h value_bias(l, h): layer l's constant output.
  RowVector<Scalar> layer_constant(int layer) const {
    RowVector<Scalar> c = model_->layers.at(static_cast<std::size_t>(layer)).b_O.transpose();
    for (int h = 0; h < model_->n_heads(); ++h) c += value_bias({layer, h});
    return c;
  }

  /// The frozen map from a layer-0 input X0 [N, d_model] to resid_L; linear in X0 when
  /// `with_constants` is false, and equal to the forward pass's resid_L on resid0() when true.
  Matrix<Scalar> resid_final(const Matrix<Scalar>& X0, bool with_constants = true) const {
    Matrix<Scalar> R = X0;
    for (int l = 0; l < model_->n_layers(); ++l) {
      Matrix<Scalar> out = layer_linear(l, R);
      if (with_constants) out.rowwise() += layer_constant(l);
      R += out;
    }
    return R;
  }

  /// Lin_f(R) W_U: the linear part of the frozen unembedding, [N, d_vocab].
  Matrix<Scalar> readout_linear(const Matrix<Scalar>& R) const {
    return linear_ln(model_->ln_final, ln_final_scales_, R) * model_->W_U;
  }
  /// b_{ln_final} W_U + b_U: the constant part of the frozen unembedding, [1, d_vocab].
  RowVector<Scalar> logit_bias() const {
    RowVector<Scalar> c = model_->b_U.transpose();
    if (model_->ln_final.type == NormalizationType::LN)
      c += model_->ln_final.b.transpose() * model_->W_U;
    return c;
  }
  /// LN_final_frozen(R) W_U + b_U.
  Matrix<Scalar> logits(const Matrix<Scalar>& R) const {
    Matrix<Scalar> L = readout_linear(R);
    L.rowwise() += logit_bias();
    return L;
  }

  /// The next token of each row (row b S + p: tokens(b, p + 1)), -1 for the last position of a
  /// sequence, which predicts nothing. [N]
  Eigen::Matrix<int, Eigen::Dynamic, 1> next_tokens() const {
    const Index S = seq_len();
    Eigen::Matrix<int, Eigen::Dynamic, 1> target(rows());
    for (Index r = 0; r < rows(); ++r) {
      const Index p = r % S;
      target(r) = p + 1 < S ? tokens_(r / S, p + 1) : -1;
    }
    return target;
  }
  /// The number of predicted tokens, B (S - 1): what losses are averaged over.
  Index predictions() const { return batch() * (seq_len() - 1); }

  /// Mean next-token losses over the batch of `count` sets of logits, in one pass over blocks of
  /// rows: `block(r0, n, loss_of)` is called once for rows r0 .. r0 + n - 1 and calls
  /// `loss_of(i, L)` with set i's [n, d_vocab] logits, once for each i < count. Blocks are
  /// evaluated in parallel, so `block` must be safe to call concurrently; the sums are in
  /// double, rows and blocks in order, so the result does not depend on the number of threads.
  template <typename Block>
  std::vector<Scalar> mean_losses(Index count, Block block) const {
    const Index N = rows();
    const Index blocks = (N + detail::kRowBlock - 1) / detail::kRowBlock;
    const Eigen::Matrix<int, Eigen::Dynamic, 1> targets = next_tokens();
    Eigen::MatrixXd sums = Eigen::MatrixXd::Zero(blocks, count);
    CIRCUITRY_OMP_PARALLEL_FOR
    for (Index blk = 0; blk < blocks; ++blk) {
      const Index r0 = blk * detail::kRowBlock, n = std::min(detail::kRowBlock, N - r0);
      const auto target = targets.segment(r0, n);
      block(r0, n, [&](Index set, const Matrix<Scalar>& L) {
        const Vector<Scalar> loss = detail::next_token_losses(L, target);
        double s = 0;
        for (Index i = 0; i < n; ++i) {
          if (target(i) >= 0) s += static_cast<double>(loss(i));
        }
        sums(blk, set) = s;
      });
    }
    std::vector<Scalar> out(static_cast<std::size_t>(count));
    for (Index set = 0; set < count; ++set) {
      double total = 0;
      for (Index blk = 0; blk < blocks; ++blk) total += sums(blk, set);
      out[static_cast<std::size_t>(set)] =
          static_cast<Scalar>(total / static_cast<double>(predictions()));
    }
    return out;
  }

  /// Mean next-token loss over the batch of the logits that `block_logits(r0, n)` returns for
  /// rows r0 .. r0 + n - 1 (an [n, d_vocab] matrix); as mean_losses, for one set.
  template <typename BlockLogits>
  Scalar mean_loss(BlockLogits block_logits) const {
    return mean_losses(
               1, [&](Index r0, Index n, const auto& loss_of) { loss_of(0, block_logits(r0, n)); })
        .front();
  }

  /// Mean next-token loss of LN_final_frozen(R) W_U + b_U, its logits formed one [64, d_vocab]
  /// block of rows per thread at a time (circuitry's product kernels, detail/simd_gemm.hpp).
  Scalar loss(const Matrix<Scalar>& R) const {
    const RowVector<Scalar> bias = logit_bias();
    const detail::SimdLevel level = detail::simd_level();
    const Index D = model_->W_U.rows(), V = model_->W_U.cols();
    return mean_loss([&](Index r0, Index n) {
      const Matrix<Scalar> x =
          linear_ln(model_->ln_final, ln_final_scales_.segment(r0, n), R.middleRows(r0, n));
      Matrix<Scalar> L(n, V);
      detail::gemm(level, n, V, D, x.data(), n, model_->W_U.data(), D, L.data(), n);
      L.rowwise() += bias;
      return L;
    });
  }

  /// Lin(X) = diag(s) (X - mean_cols X) [diag(w)] for LayerNorm `ln` with frozen scales `s`.
  static Matrix<Scalar> linear_ln(const LayerNorm<Scalar>& ln, const Vector<Scalar>& s,
                                  const Matrix<Scalar>& X) {
    if (ln.type == NormalizationType::none) return X;
    Matrix<Scalar> x = X.colwise() - X.rowwise().mean();
    x.array().colwise() *= s.array();
    if (ln.type == NormalizationType::LN) x.array().rowwise() *= ln.w.transpose().array();
    return x;
  }

 private:
  static ForwardCache<Scalar> pattern_cache(const AttentionOnlyModel<Scalar>& model,
                                            const Tokens& tokens) {
    ForwardOptions options;
    options.cache = true;
    options.cache_activations = false;
    options.cache_residual = false;
    return std::move(*forward(model, tokens, options).cache);
  }

  /// A copy of `model` whose large matrices (W_E, W_U, W_pos) are prefaulted before they are
  /// copied into (detail/prefault.hpp).
  static std::shared_ptr<const AttentionOnlyModel<Scalar>> copy_model(
      const AttentionOnlyModel<Scalar>& model) {
    auto copy = std::make_shared<AttentionOnlyModel<Scalar>>();
    AttentionOnlyModel<Scalar>& m = *copy;
    for (auto [to, from] : {std::pair<Matrix<Scalar>*, const Matrix<Scalar>*>{&m.W_E, &model.W_E},
                            {&m.W_U, &model.W_U},
                            {&m.W_pos, &model.W_pos}}) {
      to->resize(from->rows(), from->cols());
      detail::prefault(*to);
    }
    m = model;  // the same sizes: copied into the prefaulted storage
    return copy;
  }

  template <typename Cache>  // const ForwardCache& (copied) or ForwardCache&& (moved from)
  void freeze(Cache&& cache) {
    const auto take = [](auto& x) -> decltype(auto) {  // x: a member of `cache`
      if constexpr (std::is_rvalue_reference<Cache&&>::value) {
        return std::move(x);
      } else {
        return x;  // const&: copied by push_back
      }
    };
    for (auto& layer : cache.layers) {
      ln1_scales_.push_back(take(layer.ln1_scales));
      std::vector<std::vector<Matrix<Scalar>>> heads;
      for (auto& h : layer.heads) heads.push_back(take(h.pattern));
      patterns_.push_back(std::move(heads));
    }
    ln_final_scales_ = take(cache.ln_final_scales);
    // Patterns are causal: what lies above the diagonal (zeros in forward's) is set to zero, so
    // that products with them may skip or include that part alike (PathExpansion, `attend`).
    std::vector<Matrix<Scalar>*> all;
    for (auto& layer : patterns_) {
      for (auto& head : layer) {
        for (Matrix<Scalar>& pattern : head) all.push_back(&pattern);
      }
    }
    const Index n = static_cast<Index>(all.size());
    CIRCUITRY_OMP_PARALLEL_FOR
    for (Index i = 0; i < n; ++i) {
      Matrix<Scalar>& pattern = *all[static_cast<std::size_t>(i)];
      for (Index j = 1; j < pattern.cols(); ++j) {
        auto above = pattern.col(j).head(std::min(j, pattern.rows()));
        if (!(above.array() == Scalar(0)).all()) above.setZero();
      }
    }
  }

  void check_cache(const ForwardCache<Scalar>& cache) const {
    const auto fail = [](const std::string& what) {
      throw argument_error("FrozenModel: the cache does not fit the model and tokens: " + what);
    };
    const Index N = rows();
    if (cache.batch != batch() || cache.seq_len != seq_len()) {
      fail("cache of " + std::to_string(cache.batch) + " x " + std::to_string(cache.seq_len) +
           " tokens, tokens are " + std::to_string(batch()) + " x " + std::to_string(seq_len()));
    }
    if (static_cast<int>(cache.layers.size()) != model_->n_layers()) {
      fail(std::to_string(cache.layers.size()) + " layers cached, model has " +
           std::to_string(model_->n_layers()));
    }
    if (cache.ln_final_scales.size() != N) fail("ln_final scales missing");
    for (int l = 0; l < model_->n_layers(); ++l) {
      const auto& lc = cache.layers[static_cast<std::size_t>(l)];
      if (lc.ln1_scales.size() != N) fail("layer " + std::to_string(l) + " ln1 scales missing");
      if (static_cast<int>(lc.heads.size()) != model_->n_heads()) {
        fail("layer " + std::to_string(l) + " has " + std::to_string(lc.heads.size()) +
             " heads cached, model has " + std::to_string(model_->n_heads()));
      }
      for (const auto& h : lc.heads) {
        if (static_cast<Index>(h.pattern.size()) != batch()) fail("patterns missing");
        for (const auto& p : h.pattern) {
          if (p.rows() != seq_len() || p.cols() != seq_len()) fail("pattern of the wrong shape");
        }
      }
    }
  }

  std::shared_ptr<const AttentionOnlyModel<Scalar>> model_;  ///< a copy, or shared (never null)
  Tokens tokens_;
  std::vector<Vector<Scalar>> ln1_scales_;
  std::vector<std::vector<std::vector<Matrix<Scalar>>>> patterns_;  ///< [layer][head][seq]
  Vector<Scalar> ln_final_scales_;
};

}  // namespace circuitry
