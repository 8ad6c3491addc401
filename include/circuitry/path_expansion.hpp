// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file path_expansion.hpp
/// The paper's path expansion of the logits ("Path Expansion of Logits", "Virtual Attention
/// Heads"), on data, with the attention patterns and LayerNorm scales frozen at their values on
/// the full forward pass (`FrozenModel`, detail/frozen_model.hpp).
///
/// With patterns and scales frozen every layer is affine in its input, so the final residual
/// stream is a sum of path terms, each a [N, d_model] contribution (rows: token b S + p):
///
///     resid_L = direct + sum_h "L0Hh" + b_O[0] + sum_h "L1Hh" + sum_{a,b} "L0Ha->L1Hb"
///                      + sum_h "b_O[0]->L1Hh" + b_O[1] + ...
///
///  - "direct": resid_0 = W_E[t] (+ W_pos[p] for standard positions; shortformer positions only
///    act through the frozen patterns);
///  - a head chain "L0Ha->L1Hb->..." (layers strictly increasing): the direct term read by the
///    first head, whose output is read by the next, ...: A^b Lin_1(A^a Lin_0(resid_0) OV^a) OV^b;
///    one head is a first-order term, two a virtual head (second order), ...;
///  - "b_O[l]": layer l's output bias, and "b_O[0]->L1Hh->...": the bias read by later heads;
///  - "L0H3.b_V" (only when not zero, i.e. for models whose value biases were not folded into
///    b_O): the constant (b_ln1 W_V + b_V) W_O head L0H3 writes, and its chains, like b_O.
///
/// Identity: the terms sum to resid_L of the forward pass, and the frozen unembedding
/// LN_final_frozen(sum of terms) W_U + b_U gives the model's logits. The logits of a subset of
/// terms are that map applied to their sum (LN's centring is linear, so this is well defined).
///
/// Order of a term (`PathTerm::order`): the number of heads in its chain; a bias term counts as
/// order 1 on its own and as the order of its chain otherwise (b_O[0] is written by layer 0, and
/// "b_O[0]->L1H2" is L1H2 reading a constant: first order). So "order <= 1" is the direct path,
/// every head reading the direct path (and biases), and every bias: the reference's
/// "direct+L0+L1_first_order".
///
/// TransformerLens reference figures (`path_expansion` of tests/data/reference/*.json, processed
/// weights) in these terms: direct = summary.loss_by_order[0]; direct+L0 = loss_by_layer[1];
/// direct+L0+L1_first_order = loss_by_order[1]; full = full_loss(); ablate_L1_first_order_head[h]
/// = heads[L1Hh].without_first_order (L1Hh reading direct and b_O[0]);
/// ablate_L0_head_everywhere[h] = heads[L0Hh].without_everywhere (L0Hh and every L0Hh->L1Hk);
/// ablate_virtual_pair_top = the largest marginal_loss of the "L0Ha->L1Hb" terms.
///
/// Example (the induction head's virtual-head terms of attn-only-2l):
///
///     auto model =
///     circuitry::processed(circuitry::load_model<double>("attn-only-2l.safetensors"));
///     circuitry::PathExpansion<double> pe(model, tokens);
///     double full = pe.full_loss();
///     std::vector<bool> without = pe.select([](const circuitry::PathTerm& t) {
///       return t.name() != "L0H1->L1H5";
///     });
///     double loss = pe.loss(without);
///     // Several subsets in one pass over the logits (what summarize does):
///     std::vector<double> both = pe.losses({without, std::vector<bool>(pe.size(), true)});
///     circuitry::FactoredMatrix<double> c = pe.circuit(pe.index_of("L0H1->L1H5"));
///     // c = W_E OV^{L0H1} OV^{L1H5} W_U, [d_vocab, d_vocab], kept factored

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "circuitry/detail/frozen_model.hpp"
#include "circuitry/factored_matrix.hpp"
#include "circuitry/forward.hpp"

namespace circuitry {

/// Where a path term starts.
enum class PathSource {
  direct,      ///< the embedding (+ positions): resid_0
  attn_bias,   ///< b_O of `PathTerm::source_layer`
  value_bias,  ///< the constant (b_ln1 W_V + b_V) W_O of head `PathTerm::source_head`
  remainder,   ///< every path longer than PathExpansionOptions::max_order, summed
};

/// One term of the path expansion: a source followed by a chain of heads with strictly
/// increasing layers.
struct PathTerm {
  PathSource source = PathSource::direct;
  int source_layer = -1;  ///< attn_bias: the layer of b_O; value_bias: the head's layer;
                          ///< remainder: the last layer
  HeadId source_head{};   ///< value_bias only
  std::vector<HeadId> chain;
  int remainder_order = 0;  ///< remainder only: max_order + 1

  /// "direct", "L0H3", "L0H1->L1H5", "b_O[0]", "b_O[0]->L1H2", "L0H3.b_V->L1H2", "higher_order".
  std::string name() const {
    std::string s;
    switch (source) {
      case PathSource::direct: break;
      case PathSource::attn_bias: s = "b_O[" + std::to_string(source_layer) + "]"; break;
      case PathSource::value_bias: s = source_head.name() + ".b_V"; break;
      case PathSource::remainder: return "higher_order";
    }
    for (const HeadId& h : chain) s += (s.empty() ? "" : "->") + h.name();
    return s.empty() ? "direct" : s;
  }
  /// See path_expansion.hpp: heads in the chain; a bias alone counts 1.
  int order() const {
    const int n = static_cast<int>(chain.size());
    if (source == PathSource::remainder) return remainder_order;
    return source == PathSource::direct ? n : std::max(1, n);
  }
  /// The layer that wrote the term into the stream: the last head's, the bias's layer, -1 for
  /// the direct path, the last layer for the remainder.
  int last_layer() const {
    if (source == PathSource::remainder) return source_layer;
    if (!chain.empty()) return chain.back().layer;
    return source == PathSource::direct ? -1 : source_layer;
  }
  /// Whether head `id` is on the path (in the chain, or as the source of a value bias).
  bool involves(HeadId id) const {
    if (source == PathSource::value_bias && source_head == id) return true;
    for (const HeadId& h : chain) {
      if (h == id) return true;
    }
    return false;
  }
};

/// How far to expand.
struct PathExpansionOptions {
  /// Longest head chain enumerated; negative: all (n_layers). Longer paths are summed into one
  /// "higher_order" term, so the terms still sum to the model's residual stream.
  int max_order = -1;
  /// Whether frozen() keeps its attention patterns once the terms are built. The terms, their
  /// losses and circuits never read them again; without them (false) each layer's patterns are
  /// freed as soon as that layer's terms exist (all at the end when max_order truncates: the
  /// remainder reads them), so that the next layer's terms and the writers' readouts M reuse
  /// the memory (`circuitry-report --tokens` on attn-only-2l, 8 x 256 tokens in double: peak
  /// resident memory 270 -> 209 MB). frozen().pattern, attend, layer_linear and resid_final
  /// then throw argument_error.
  bool keep_patterns = true;
};

/// The path expansion of a model on a batch (see path_expansion.hpp). Each term is stored
/// factored as Z W: Z [N, r] per token, W [r, d_model] its writing matrix (W_O of its last head,
/// a bias row, or the identity for the direct and remainder terms), so that losses of subsets
/// that differ from the full model by a few terms cost a rank-r update of the full logits.
///
/// Cost: (1 + H)^L terms from the direct path (91 in all for attn-only-2l); memory N (d_model +
/// n_terms d_head) for the terms plus N d_vocab for the full logits (~100 MB in double for
/// attn-only-2l on 8 x 256 tokens). A loss takes N x d_vocab exponentials and, for a subset
/// that differs from the full model (or from nothing) by terms of a few writing matrices, a
/// rank-r update of the logits; `losses` evaluates many subsets in one pass and shares the
/// updates they have in common (summarize with the 64 virtual-head marginals: ~100 losses of
/// attn-only-2l for the cost of ~90 rank-32 updates, ~2 s on one core with AVX2, see
/// detail/path_expansion_losses.hpp).
template <typename Scalar>
class PathExpansion {
 public:
  CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);

  /// Runs the model on `tokens` (patterns and scales only) and expands.
  PathExpansion(const AttentionOnlyModel<Scalar>& model, const Tokens& tokens,
                const PathExpansionOptions& options = {})
      : PathExpansion(FrozenModel<Scalar>(model, tokens), options) {}
  /// Expands with the patterns and scales of `cache`, a cache of forward(model, tokens).
  PathExpansion(const AttentionOnlyModel<Scalar>& model, const Tokens& tokens,
                const ForwardCache<Scalar>& cache, const PathExpansionOptions& options = {})
      : PathExpansion(FrozenModel<Scalar>(model, tokens, cache), options) {}
  /// Same, taking the patterns and scales out of `run` (forward(model, tokens) with
  /// options.cache) and its logits as the logits of all terms (equal up to rounding), so that
  /// neither is copied nor recomputed. argument_error when `run` has no cache or does not fit.
  PathExpansion(const AttentionOnlyModel<Scalar>& model, const Tokens& tokens,
                ForwardResult<Scalar>&& run, const PathExpansionOptions& options = {});
  /// Same, sharing `model` instead of copying it (FrozenModel's shared_ptr constructor; the
  /// report borrows its model this way: 17 MB less for attn-only-2l in double).
  PathExpansion(std::shared_ptr<const AttentionOnlyModel<Scalar>> model, const Tokens& tokens,
                ForwardResult<Scalar>&& run, const PathExpansionOptions& options = {});
  PathExpansion(FrozenModel<Scalar> frozen, const PathExpansionOptions& options = {})
      : PathExpansion(std::move(frozen), options, Matrix<Scalar>()) {}

  const FrozenModel<Scalar>& frozen() const { return frozen_; }
  std::size_t size() const { return terms_.size(); }
  const std::vector<PathTerm>& terms() const { return terms_; }
  const PathTerm& term(std::size_t i) const { return terms_.at(i); }
  /// The index of the term called `name`; argument_error if there is none.
  std::size_t index_of(const std::string& name) const;

  /// Term i's contribution to resid_L on the batch, [N, d_model].
  Matrix<Scalar> contribution(std::size_t i) const {
    const Data& d = data_.at(i);
    return d.Z * writers_[d.writer].W;
  }
  /// The mask of the terms for which `keep(term)` is true.
  template <typename Predicate>
  std::vector<bool> select(Predicate keep) const {
    std::vector<bool> m(terms_.size());
    for (std::size_t i = 0; i < terms_.size(); ++i) m[i] = keep(terms_[i]);
    return m;
  }
  /// Sum of the kept terms (`keep[i]` for term i), [N, d_model].
  Matrix<Scalar> resid_final(const std::vector<bool>& keep) const;
  /// LN_final_frozen(sum of kept terms) W_U + b_U, [N, d_vocab].
  Matrix<Scalar> logits(const std::vector<bool>& keep) const {
    return frozen_.logits(resid_final(check_mask(keep)));
  }
  /// Mean next-token loss of logits(keep) over the batch.
  Scalar loss(const std::vector<bool>& keep) const { return losses({keep}).front(); }
  /// loss(keeps[k]) for every mask, in one pass over the full logits: each block of rows is
  /// read once for all masks, and the logits of a group of terms that several masks add or
  /// remove (one term's, or the sum of one writing matrix's terms) are computed once per block.
  std::vector<Scalar> losses(const std::vector<std::vector<bool>>& keeps) const;
  template <typename Predicate>
  Scalar loss_if(Predicate keep) const {
    return loss(select(keep));
  }
  /// The loss with every term: the model's loss (up to rounding).
  Scalar full_loss() const { return full_loss_; }
  /// loss(all terms but i) - full_loss(): how much the model needs term i.
  Scalar marginal_loss(std::size_t i) const {
    std::vector<bool> keep(terms_.size(), true);
    keep.at(i) = false;
    return loss(keep) - full_loss_;
  }
  /// marginal_loss of every term, in term order (one pass: `losses`).
  std::vector<Scalar> marginal_losses() const {
    std::vector<std::vector<bool>> keeps(terms_.size(), std::vector<bool>(terms_.size(), true));
    for (std::size_t i = 0; i < terms_.size(); ++i) keeps[i][i] = false;
    std::vector<Scalar> out = losses(keeps);
    for (Scalar& l : out) l -= full_loss_;
    return out;
  }

  /// The term's weight-space circuit from tokens to logits, kept factored:
  /// W_E OV^{h1} ... OV^{hk} W_U [d_vocab, d_vocab] for the direct path and head chains, and
  /// b OV^{h1} ... OV^{hk} W_U [1, d_vocab] for a bias b. It leaves out what the data term has
  /// and weights do not: the attention patterns, the positional embedding, LayerNorm's centring
  /// and per-position frozen scales, and the LN weights of an unprocessed model (use
  /// `processed` weights, where they are folded into the reading matrices). argument_error for
  /// the remainder term.
  FactoredMatrix<Scalar> circuit(std::size_t i) const;

 private:
  struct Writer {
    Matrix<Scalar> W;       ///< [r, d_model]
    Matrix<Scalar> M;       ///< W_c [diag(w_f)] W_U, [r, d_vocab]: Lin_f(Z W) W_U = diag(s_f) Z M
    bool identity = false;  ///< W is the identity (M without the product)
  };
  struct Data {
    Matrix<Scalar> Z;  ///< [N, r]
    std::size_t writer = 0;
  };
  /// How `losses` evaluates a batch of masks (detail/path_expansion_impl.hpp): mask k's logits
  /// are a base (the full logits, `minus`, or the logit bias) -/+ the sum of some components; a
  /// component is the logits diag(s_f) Z M_w of a group of terms of one writer w (Z: the sum of
  /// their Z), computed as a product, or the sum of earlier components.
  struct Component {
    std::size_t writer = 0;
    std::vector<std::size_t> terms;  ///< sorted
    std::vector<std::size_t> parts;  ///< non-empty: the sum of these components
    Matrix<Scalar> Z;                ///< the product's Z when not one term's (data_[terms[0]].Z)
  };
  struct Plan {
    std::vector<Component> components;
    std::vector<bool> minus;                         ///< per mask
    std::vector<std::vector<std::size_t>> uses;      ///< per mask: its components
    std::vector<std::vector<std::size_t>> products;  ///< per writer: its product components
    std::vector<std::size_t> sums;                   ///< the sums, each after its parts
    std::vector<std::size_t> tiled_sums;  ///< the sums formed in the tiles, each after its parts
    std::vector<std::vector<std::size_t>> tile_parts;  ///< per tiled sum: its formed parts
    std::vector<std::vector<std::size_t>> tile_uses;   ///< per mask: its formed components
    std::vector<Index> slot;  ///< per formed component: its rows of a tile start at slot * R
    Index n_slots = 0;
  };
  static constexpr std::size_t kIdentityWriter = 0;  ///< the direct and remainder terms' writer

  /// full_logits: the logits of all terms, or empty to compute them; full_loss: their mean
  /// next-token loss when the caller has it (the forward pass's, from the same logits).
  PathExpansion(FrozenModel<Scalar> frozen, const PathExpansionOptions& options,
                Matrix<Scalar> full_logits, std::optional<Scalar> full_loss = std::nullopt);
  static ForwardCache<Scalar>&& cache_of(ForwardResult<Scalar>& run) {
    if (!run.cache) {
      throw argument_error(
          "PathExpansion: the forward result has no cache (run forward with "
          "options.cache = true)");
    }
    return std::move(*run.cache);
  }

  /// Adds a writing matrix; its M comes later (add_readouts), once the patterns may be gone.
  std::size_t add_writer(Matrix<Scalar> W, bool identity = false) {
    Writer w;
    w.W = std::move(W);
    w.identity = identity;
    writers_.push_back(std::move(w));
    return writers_.size() - 1;
  }
  /// Each writer's M = W_c [diag(w_f)] W_U (~25 MB for attn-only-2l in double): after the terms,
  /// so that without keep_patterns they reuse the memory of the freed patterns.
  void add_readouts() {
    const LayerNorm<Scalar>& ln = frozen_.model().ln_final;
    const Index n = static_cast<Index>(writers_.size());
    CIRCUITRY_OMP_PARALLEL_FOR
    for (Index i = 0; i < n; ++i) {
      Writer& w = writers_[static_cast<std::size_t>(i)];
      w.M = w.identity ? FrozenModel<Scalar>::read_through_identity(ln, frozen_.model().W_U)
                       : FrozenModel<Scalar>::read_through(ln, w.W, frozen_.model().W_U);
    }
  }
  const std::vector<bool>& check_mask(const std::vector<bool>& keep) const {
    if (keep.size() != terms_.size()) {
      throw argument_error("PathExpansion: mask of " + std::to_string(keep.size()) +
                           " entries for " + std::to_string(terms_.size()) + " terms");
    }
    return keep;
  }

  Plan plan(const std::vector<std::vector<bool>>& keeps) const;
  std::vector<Scalar> run(const Plan& plan, const std::vector<std::vector<bool>>& keeps) const;
  double row_loss(const std::vector<bool>& keep, Index row) const;

  FrozenModel<Scalar> frozen_;
  std::vector<PathTerm> terms_;
  std::vector<Data> data_;
  std::vector<Writer> writers_;
  Matrix<Scalar> full_logits_;  ///< logits of all terms, [N, d_vocab]
  Vector<Scalar> row_max_;      ///< max of each row of full_logits_: the shift of every exponential
  Scalar full_loss_ = 0;
  bool has_full_loss_ = false;  ///< full_loss_ is known: losses() returns it for all terms
};

/// One head's importance in the path expansion.
template <typename Scalar>
struct HeadPathLosses {
  HeadId head;
  Scalar without_everywhere = 0;   ///< loss without every term that involves the head
  Scalar without_first_order = 0;  ///< loss without its order-1 terms (it reading direct/biases)
};

/// Partial sums of the path expansion by order and by layer, and per-head ablations.
template <typename Scalar>
struct PathExpansionSummary {
  Scalar uniform_loss = 0;  ///< ln d_vocab
  Scalar full_loss = 0;     ///< every term: the model's loss
  /// [k]: loss of the terms of order <= k, k = 0 (direct) .. the highest order (= full_loss).
  std::vector<Scalar> loss_by_order;
  /// [0]: direct only; [l + 1]: the terms last written by layers <= l; the last is full_loss.
  std::vector<Scalar> loss_by_layer;
  std::vector<HeadPathLosses<Scalar>> heads;  ///< in head order L0H0, L0H1, ...
  /// marginal_loss of each term summarize was asked for (`marginal_terms`), in that order.
  std::vector<Scalar> marginal;
};

/// The summary of `pe` (loss_by_order, loss_by_layer, head ablations) and the marginal losses of
/// the terms `marginal_terms` (indices into pe.terms()), all in one pass (`losses`): ablating a
/// layer-0 head everywhere removes the same virtual-head terms whose marginal losses are asked
/// for, so asking here rather than calling marginal_loss costs little. For a two-layer model
/// loss_by_order = {direct, direct+L0+L1_first_order, full} and loss_by_layer = {direct,
/// direct+L0, full} in the reference's names.
template <typename Scalar>
PathExpansionSummary<Scalar> summarize(const PathExpansion<Scalar>& pe,
                                       const std::vector<std::size_t>& marginal_terms = {});

}  // namespace circuitry

#include "circuitry/detail/path_expansion_impl.hpp"
#include "circuitry/detail/path_expansion_losses.hpp"
