// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file forward.hpp
/// The forward pass of an attention-only transformer over a batch of token sequences, with
/// TransformerLens's semantics, and an optional cache of everything the paper's analysis reads.
///
/// Row-vector convention (`x W`); a batch of B sequences of S tokens is flattened row-major into
/// N = B S rows, sequence b position p being row b S + p. With t the tokens:
///
///     resid_0[p]  = W_E[t_p] + W_pos[p]                    (shortformer: W_E[t_p] only)
///     x           = LN1_l(resid_l)                          (none / LN / LNPre, layer_norm.hpp)
///     q = (x [+ W_pos]) W_Q + b_Q,  k = (x [+ W_pos]) W_K + b_K,  v = x W_V + b_V
///                                                           ([+ W_pos]: shortformer only)
///     A^h         = softmax(causal(q k^T / sqrt(d_head)))   (future keys masked to -inf)
///     z^h = A^h v,  out^h = z^h W_O
///     resid_{l+1} = resid_l + sum_h out^h + b_O^l
///     logits      = LN_final(resid_L) W_U + b_U
///     loss_p      = -log_softmax(logits_p)[t_{p+1}]         (p = 0 .. S-2)
///
/// The mean loss is over all B (S - 1) predicted tokens. Sequences are independent: attention
/// never crosses from one sequence to another.
///
/// Example:
///
///     auto model = circuitry::load_model<double>("attn-only-2l.safetensors");
///     circuitry::ForwardOptions opts;
///     opts.cache = true;
///     auto run = circuitry::forward(model, circuitry::make_tokens({{0, 12, 99}, {0, 5, 7}}),
///     opts); run.loss_mean;                                   // nats per predicted token
///     run.cache->pattern({1, 4}, 0);                   // L1H4's 3 x 3 pattern on sequence 0
///     run.cache->layers[1].resid_pre[circuitry::Component::head_output({0, 1})];  // L0H1 wrote
///
/// Sequences and heads are processed in parallel with OpenMP when it is enabled (`-fopenmp`);
/// the results do not depend on the number of threads.

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "circuitry/detail/forward_kernels.hpp"
#include "circuitry/error.hpp"
#include "circuitry/model.hpp"
#include "circuitry/residual_stream.hpp"

namespace circuitry {

/// Token ids of a batch, [batch, seq_len], row-major: row b is sequence b. A row-major buffer
/// can be passed as `Eigen::Map<const Tokens>(data, batch, seq_len)`.
using Tokens = Eigen::Matrix<int, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Packs equal-length sequences into `Tokens`. argument_error for an empty batch or sequences of
/// different lengths (token ids are checked against a model by `forward`).
inline Tokens make_tokens(const std::vector<std::vector<int>>& sequences) {
  if (sequences.empty()) throw argument_error("tokens: empty batch (no sequences)");
  const std::size_t len = sequences[0].size();
  for (std::size_t b = 1; b < sequences.size(); ++b) {
    if (sequences[b].size() != len) {
      throw argument_error("tokens: ragged batch: sequence " + std::to_string(b) + " has " +
                           std::to_string(sequences[b].size()) + " tokens but sequence 0 has " +
                           std::to_string(len) + " (all sequences must have the same length)");
    }
  }
  Tokens t(static_cast<Index>(sequences.size()), static_cast<Index>(len));
  for (std::size_t b = 0; b < sequences.size(); ++b) {
    for (std::size_t p = 0; p < len; ++p) {
      t(static_cast<Index>(b), static_cast<Index>(p)) = sequences[b][p];
    }
  }
  return t;
}

/// argument_error unless `tokens` is a non-empty batch of non-empty sequences of at most n_ctx
/// tokens, every id in [0, d_vocab). The message names the offending sequence, position and id.
inline void check_tokens(const Tokens& tokens, const ModelConfig& config) {
  if (tokens.rows() == 0) throw argument_error("tokens: empty batch (no sequences)");
  if (tokens.cols() == 0) throw argument_error("tokens: sequences are empty (0 tokens)");
  if (tokens.cols() > config.n_ctx) {
    throw argument_error("tokens: sequences have " + std::to_string(tokens.cols()) +
                         " tokens, more than n_ctx = " + std::to_string(config.n_ctx));
  }
  for (Index b = 0; b < tokens.rows(); ++b) {
    for (Index p = 0; p < tokens.cols(); ++p) {
      const int t = tokens(b, p);
      if (t < 0 || t >= config.d_vocab) {
        throw argument_error("tokens: token " + std::to_string(t) + " at sequence " +
                             std::to_string(b) + ", position " + std::to_string(p) +
                             " is out of range [0, " + std::to_string(config.d_vocab) + ")");
      }
    }
  }
}

/// What `forward` keeps besides the logits and losses.
struct ForwardOptions {
  bool cache = false;             ///< keep a ForwardCache: patterns and LayerNorm scales, and:
  bool cache_activations = true;  ///<   with `cache`: also q, k, v, z and each head's output
  bool cache_residual = true;     ///<   with `cache`: also the residual stream by component
};

/// What one head computed on the batch (rows: token b S + p).
template <typename Scalar>
struct HeadCache {
  std::vector<Matrix<Scalar>> pattern;  ///< per sequence: [S, S], row = query, col = key
  Matrix<Scalar> q, k, v, z;            ///< [N, d_head] (empty unless cache_activations)
  Matrix<Scalar> output;                ///< z W_O, [N, d_model] (empty unless cache_activations)
};

/// One layer's input and activations.
template <typename Scalar>
struct LayerCache {
  /// The layer's input resid_l as a sum of components: embed, pos_embed (standard positions),
  /// every earlier head's output and every earlier layer's b_O (empty unless cache_residual).
  ResidualStream<Scalar> resid_pre;
  Vector<Scalar> ln1_scales;  ///< [N]: 1 / sqrt(var(resid_l) + eps) (ones when no LayerNorm)
  std::vector<HeadCache<Scalar>> heads;
};

/// The cache of a forward pass (TransformerLens's `run_with_cache`, the parts the paper uses).
template <typename Scalar>
struct ForwardCache {
  Index batch = 0;
  Index seq_len = 0;
  std::vector<LayerCache<Scalar>> layers;
  ResidualStream<Scalar> resid_final;  ///< resid_L by component (empty unless cache_residual)
  Vector<Scalar> ln_final_scales;      ///< [N]: the scales of LN_final

  /// The cache of head `id`; argument_error if there is no such head.
  const HeadCache<Scalar>& head(HeadId id) const {
    if (id.layer < 0 || id.layer >= static_cast<int>(layers.size()) || id.head < 0 ||
        id.head >= static_cast<int>(layers[static_cast<std::size_t>(id.layer)].heads.size())) {
      throw argument_error("ForwardCache: no head " + id.name());
    }
    return layers[static_cast<std::size_t>(id.layer)].heads[static_cast<std::size_t>(id.head)];
  }
  /// The [S, S] attention pattern of head `id` on sequence `b`.
  const Matrix<Scalar>& pattern(HeadId id, Index b) const {
    const HeadCache<Scalar>& h = head(id);
    if (b < 0 || b >= static_cast<Index>(h.pattern.size())) {
      throw argument_error("ForwardCache: no sequence " + std::to_string(b) + " in a batch of " +
                           std::to_string(h.pattern.size()));
    }
    return h.pattern[static_cast<std::size_t>(b)];
  }
};

/// Logits, losses and (optionally) the cache of a forward pass.
template <typename Scalar>
struct ForwardResult {
  Index batch = 0;
  Index seq_len = 0;
  Matrix<Scalar> logits;          ///< [N, d_vocab], row b S + p
  Matrix<Scalar> loss_per_token;  ///< [B, S - 1]: -log p(t_{p+1} | t_0..t_p)
  Vector<Scalar> loss_per_seq;    ///< [B]: mean over positions (NaN when S == 1)
  Scalar loss_mean = 0;           ///< mean over all B (S - 1) predictions (NaN when S == 1)
  std::optional<ForwardCache<Scalar>> cache;

  /// log_softmax of sequence b's logits, [S, d_vocab].
  Matrix<Scalar> log_probs(Index b) const {
    check_sequence(b);
    const auto block = logits.middleRows(b * seq_len, seq_len);
    return block.colwise() - detail::row_logsumexp(block);
  }
  /// log p(t_{p+1}) for p = 0 .. S-2 of sequence b.
  Vector<Scalar> logprob_next(Index b) const {
    check_sequence(b);
    return -loss_per_token.row(b).transpose();
  }
  /// The k most likely next tokens after position p of sequence b, most likely first (ties: the
  /// smaller id first).
  std::vector<int> top_k(Index b, Index p, Index k) const {
    check_sequence(b);
    if (p < 0 || p >= seq_len) {
      throw argument_error("top_k: position " + std::to_string(p) + " out of range [0, " +
                           std::to_string(seq_len) + ")");
    }
    if (k < 0 || k > logits.cols()) {
      throw argument_error("top_k: k = " + std::to_string(k) + " out of range [0, " +
                           std::to_string(logits.cols()) + "]");
    }
    const Index r = b * seq_len + p;
    std::vector<int> ids(static_cast<std::size_t>(logits.cols()));
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int i, int j) {
      const Scalar a = logits(r, i), c = logits(r, j);
      return a > c || (a == c && i < j);
    });
    ids.resize(static_cast<std::size_t>(k));
    return ids;
  }

 private:
  void check_sequence(Index b) const {
    if (b < 0 || b >= batch) {
      throw argument_error("ForwardResult: no sequence " + std::to_string(b) + " in a batch of " +
                           std::to_string(batch));
    }
  }
};

namespace detail {

/// resid_0's two parts: rows W_E[t] and W_pos[p], both [N, d_model].
template <typename Scalar>
void embed_tokens(const AttentionOnlyModel<Scalar>& model, const Tokens& tokens,
                  Matrix<Scalar>& embed, Matrix<Scalar>& pos) {
  const Index B = tokens.rows(), S = tokens.cols(), D = model.W_E.cols();
  const Eigen::Map<const Eigen::Matrix<int, Eigen::Dynamic, 1>> ids(tokens.data(), B * S);
  embed.resize(B * S, D);
  prefault(embed);
  embed = model.W_E(ids, Eigen::all);  // column by column: each a gather from a column of W_E
  pos.resize(B * S, D);
  prefault(pos);
  for (Index b = 0; b < B; ++b) pos.middleRows(b * S, S) = model.W_pos.topRows(S);
}

/// Mean next-token loss of a [N, d_vocab] logits matrix over sequences of length S; fills the
/// per-token and per-sequence losses of `result`.
template <typename Scalar>
void fill_losses(const Tokens& tokens, ForwardResult<Scalar>& result) {
  const Index B = tokens.rows(), S = tokens.cols(), N = B * S;
  Vector<Scalar> per_row(N);
  const Index blocks = (N + kRowBlock - 1) / kRowBlock;
  CIRCUITRY_OMP_PARALLEL_FOR
  for (Index blk = 0; blk < blocks; ++blk) {
    const Index r0 = blk * kRowBlock, n = std::min(kRowBlock, N - r0);
    Eigen::Matrix<int, Eigen::Dynamic, 1> target(n);
    for (Index i = 0; i < n; ++i) {
      const Index b = (r0 + i) / S, p = (r0 + i) % S;
      target(i) = p + 1 < S ? tokens(b, p + 1) : -1;
    }
    per_row.segment(r0, n) = next_token_losses(result.logits.middleRows(r0, n), target);
  }
  result.loss_per_token.resize(B, S - 1);
  result.loss_per_seq.resize(B);
  double total = 0;
  for (Index b = 0; b < B; ++b) {
    double seq_total = 0;
    for (Index p = 0; p + 1 < S; ++p) {
      result.loss_per_token(b, p) = per_row(b * S + p);
      seq_total += static_cast<double>(per_row(b * S + p));
    }
    total += seq_total;
    result.loss_per_seq(b) = static_cast<Scalar>(seq_total / static_cast<double>(S - 1));
  }
  result.loss_mean = static_cast<Scalar>(total / static_cast<double>(B * (S - 1)));
}

}  // namespace detail

/// Runs `model` on `tokens` (see forward.hpp for the maths). Throws argument_error for bad
/// tokens (check_tokens) and shape_error for a model whose shapes disagree with its config.
template <typename Scalar>
ForwardResult<Scalar> forward(const AttentionOnlyModel<Scalar>& model, const Tokens& tokens,
                              const ForwardOptions& options = {}) {
  model.check_shapes();
  check_tokens(tokens, model.config);
  const ModelConfig& c = model.config;
  const Index B = tokens.rows(), S = tokens.cols(), N = B * S, D = c.d_model;
  const bool shortformer = c.positional_embedding_type == PositionalEmbeddingType::shortformer;
  const bool keep_acts = options.cache && options.cache_activations;
  const bool keep_resid = options.cache && options.cache_residual;
  const detail::SimdLevel level = detail::simd_level();

  ForwardResult<Scalar> result;
  result.batch = B;
  result.seq_len = S;
  ForwardCache<Scalar>* cache = nullptr;
  if (options.cache) {
    cache = &result.cache.emplace();
    cache->batch = B;
    cache->seq_len = S;
    cache->layers.resize(model.layers.size());
  }

  Matrix<Scalar> embed, pos;
  detail::embed_tokens(model, tokens, embed, pos);
  Matrix<Scalar> resid(N, D);
  detail::prefault(resid);
  if (shortformer) {
    resid = embed;
  } else {
    resid = embed + pos;
  }
  ResidualStream<Scalar> stream(keep_resid ? N : 0, keep_resid ? D : 0);
  if (keep_resid) {
    stream.add(Component::embed(), embed);
    if (!shortformer) stream.add(Component::pos_embed(), pos);
  }

  for (int l = 0; l < model.n_layers(); ++l) {
    const AttentionLayer<Scalar>& layer = model.layers[static_cast<std::size_t>(l)];
    const Vector<Scalar> scales = layer.ln1.scales(resid);
    const Matrix<Scalar> x = layer.ln1.apply_with_scales(resid, scales);
    const Matrix<Scalar> x_qk = shortformer ? Matrix<Scalar>(x + pos) : Matrix<Scalar>();
    const Matrix<Scalar>& qk_in = shortformer ? x_qk : x;
    const int H = static_cast<int>(layer.heads.size());
    // Each head's z = A v, [N, d_head]; its output z W_O is formed after the parallel loop (one
    // parallel product per head, detail::multiply).
    std::vector<Matrix<Scalar>> zs(static_cast<std::size_t>(H));
    for (int h = 0; h < H; ++h) {
      zs[static_cast<std::size_t>(h)].resize(N, layer.heads[static_cast<std::size_t>(h)].d_ov());
      detail::prefault(zs[static_cast<std::size_t>(h)]);
    }
    LayerCache<Scalar>* lc = cache ? &cache->layers[static_cast<std::size_t>(l)] : nullptr;
    if (lc) {
      lc->ln1_scales = scales;
      lc->heads.resize(static_cast<std::size_t>(H));
      for (int h = 0; h < H; ++h) {
        HeadCache<Scalar>& hc = lc->heads[static_cast<std::size_t>(h)];
        hc.pattern.resize(static_cast<std::size_t>(B));
        if (keep_acts) {
          const auto& hd = layer.heads[static_cast<std::size_t>(h)];
          hc.q.resize(N, hd.d_qk());
          hc.k.resize(N, hd.d_qk());
          hc.v.resize(N, hd.d_ov());
        }
      }
    }
    const Scalar inv_scale = Scalar(1) / static_cast<Scalar>(c.attn_scale());
    const Index jobs = B * H;
    CIRCUITRY_OMP_PARALLEL {
      detail::HeadBuffers<Scalar> buf;  // this thread's
      CIRCUITRY_OMP_FOR
      for (Index job = 0; job < jobs; ++job) {
        const Index b = job / H;
        const int h = static_cast<int>(job % H);
        Matrix<Scalar> pattern =
            detail::attention_head(level, layer.heads[static_cast<std::size_t>(h)], qk_in, x, b * S,
                                   S, inv_scale, zs[static_cast<std::size_t>(h)], buf);
        if (lc) {
          HeadCache<Scalar>& hc = lc->heads[static_cast<std::size_t>(h)];
          if (keep_acts) {
            hc.q.middleRows(b * S, S) = buf.q;
            hc.k.middleRows(b * S, S) = buf.k;
            hc.v.middleRows(b * S, S) = buf.v;
          }
          hc.pattern[static_cast<std::size_t>(b)] = std::move(pattern);
        }
      }
    }
    if (keep_resid) lc->resid_pre = stream;
    Matrix<Scalar> out;
    for (int h = 0; h < H; ++h) {
      Matrix<Scalar>& z = zs[static_cast<std::size_t>(h)];
      detail::multiply(z, layer.heads[static_cast<std::size_t>(h)].W_O, out);
      resid += out;
      if (keep_resid) stream.add(Component::head_output({l, h}), out);
      if (keep_acts) {
        lc->heads[static_cast<std::size_t>(h)].output = std::move(out);
        lc->heads[static_cast<std::size_t>(h)].z = std::move(z);
      }
    }
    resid.rowwise() += layer.b_O.transpose();
    if (keep_resid) stream.add(Component::attn_bias(l), layer.b_O.transpose());
  }

  const Vector<Scalar> final_scales = model.ln_final.scales(resid);
  detail::multiply(model.ln_final.apply_with_scales(resid, final_scales), model.W_U, result.logits);
  result.logits.rowwise() += model.b_U.transpose();
  if (cache) {
    cache->ln_final_scales = final_scales;
    if (keep_resid) cache->resid_final = std::move(stream);
  }
  detail::fill_losses(tokens, result);
  return result;
}

/// `forward` on equal-length sequences (make_tokens: argument_error if empty or ragged).
template <typename Scalar>
ForwardResult<Scalar> forward(const AttentionOnlyModel<Scalar>& model,
                              const std::vector<std::vector<int>>& sequences,
                              const ForwardOptions& options = {}) {
  return forward(model, make_tokens(sequences), options);
}

/// `forward` with the full cache (TransformerLens's `run_with_cache`).
template <typename Scalar>
ForwardResult<Scalar> run_with_cache(const AttentionOnlyModel<Scalar>& model,
                                     const Tokens& tokens) {
  ForwardOptions options;
  options.cache = true;
  return forward(model, tokens, options);
}

}  // namespace circuitry
