// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file qk_decomposition.hpp
/// The QK side of the path expansion: where a head's queries and keys came from.
///
/// On data (`decompose_scores`): with the LayerNorm scale s_p of each position frozen at its
/// value in the forward pass, the normalised input of layer l is linear in the residual
/// components c (embed, pos_embed, each earlier head, each earlier b_O):
///
///     x_p = sum_c centre(c_p) s_p [* w] (+ b)           (LN; LNPre has no w, b)
///     q_p = sum_c x_{c,p} W_Q + b_Q [+ W_pos[p] W_Q]     (the bracket: shortformer only)
///
/// and likewise for k, so the scores q k^T / sqrt(d_head) split into one [S, S] term per
/// (query-side term, key-side term) pair, and the terms sum to the scores (before the causal
/// mask). A term such as (embed, L0H1) of an L1 head is K-composition seen on data: the query's
/// token against what the previous-token head L0H1 moved into the key position.
///
/// In weight space (`k_composition_circuit`, `q_composition_circuit`): the paper's composition
/// terms of the two-layer expansion, as d_vocab x d_vocab factored matrices (row-vector
/// convention; LayerNorm ignored, as in the full QK circuit):
///
///     K-composition  h1 -> h2:  W_E QK_h2 (W_E OV_h1)^T    rows: query token,
///                                                          cols: the token h1 moved to the key
///     Q-composition  h1 -> h2:  (W_E OV_h1) QK_h2 W_E^T    rows: the token h1 moved to the
///                                                          query, cols: key token
///
/// (the paper writes the first, in column-vector convention, as W_E^T W_QK^h2 W_OV^h1 W_E).

#include <string>
#include <vector>

#include "circuitry/factored_matrix.hpp"
#include "circuitry/forward.hpp"

namespace circuitry {

/// The attention scores of one head on one sequence, split by the sources of the query and the
/// key. `scores[i][j]` is the [S, S] contribution of query-side term i and key-side term j
/// (scaled by 1/sqrt(d_head), before the causal mask). Invariant: the terms sum to the scores.
template <typename Scalar>
struct ScoreDecomposition {
  std::vector<std::string> query_terms;
  std::vector<std::string> key_terms;
  std::vector<std::vector<Matrix<Scalar>>> scores;

  /// The sum of all terms: the head's scores q k^T / sqrt(d_head).
  Matrix<Scalar> total() const {
    Matrix<Scalar> out = Matrix<Scalar>::Zero(scores.at(0).at(0).rows(), scores.at(0).at(0).cols());
    for (const auto& row : scores)
      for (const auto& term : row) out += term;
    return out;
  }
  /// The term of query-side `query` and key-side `key` (names as in query_terms / key_terms).
  const Matrix<Scalar>& term(const std::string& query, const std::string& key) const {
    const auto qi = std::find(query_terms.begin(), query_terms.end(), query);
    const auto ki = std::find(key_terms.begin(), key_terms.end(), key);
    if (qi == query_terms.end() || ki == key_terms.end()) {
      throw argument_error("ScoreDecomposition: no term (" + query + ", " + key + ")");
    }
    return scores[static_cast<std::size_t>(qi - query_terms.begin())]
                 [static_cast<std::size_t>(ki - key_terms.begin())];
  }
};

/// Splits head `id`'s scores on sequence `b` of a cached forward pass (ForwardOptions::cache
/// with cache_residual) by query and key source (see qk_decomposition.hpp).
template <typename Scalar>
ScoreDecomposition<Scalar> decompose_scores(const AttentionOnlyModel<Scalar>& model,
                                            const ForwardResult<Scalar>& run, HeadId id, Index b) {
  if (!run.cache) {
    throw argument_error("decompose_scores needs a forward pass run with ForwardOptions::cache");
  }
  const ForwardCache<Scalar>& cache = *run.cache;
  const auto& head = model.head(id);
  const LayerCache<Scalar>& layer = cache.layers.at(static_cast<std::size_t>(id.layer));
  const auto& ln = model.layers[static_cast<std::size_t>(id.layer)].ln1;
  if (layer.resid_pre.size() == 0) {
    throw argument_error(
        "decompose_scores needs the residual stream in the cache "
        "(ForwardOptions::cache_residual)");
  }
  if (b < 0 || b >= cache.batch) {
    throw argument_error("decompose_scores: no sequence " + std::to_string(b) + " in a batch of " +
                         std::to_string(cache.batch));
  }
  const Index S = cache.seq_len, first = b * S;
  const Vector<Scalar> s = layer.ln1_scales.segment(first, S);

  // Each side's terms: [S, d_head] projections through W_Q (query) or W_K (key).
  std::vector<std::string> names;
  std::vector<Matrix<Scalar>> q_terms, k_terms;
  auto add = [&](const std::string& name, const Matrix<Scalar>& x) {
    names.push_back(name);
    q_terms.push_back(x * head.W_Q);
    k_terms.push_back(x * head.W_K);
  };
  for (const Component& c : layer.resid_pre.components()) {
    Matrix<Scalar> x = layer.resid_pre[c].middleRows(first, S);
    if (ln.type != NormalizationType::none) {
      x = x.colwise() - x.rowwise().mean();
      x.array().colwise() *= s.array();
      if (ln.type == NormalizationType::LN) x.array().rowwise() *= ln.w.transpose().array();
    }
    add(c.name(), x);
  }
  if (ln.type == NormalizationType::LN) add("ln1.b", ln.b.transpose().replicate(S, 1));
  if (model.config.positional_embedding_type == PositionalEmbeddingType::shortformer) {
    add("pos_embed (shortformer)", model.W_pos.topRows(S));
  }
  ScoreDecomposition<Scalar> out;
  out.query_terms = names;
  out.key_terms = names;
  q_terms.push_back(head.b_Q.transpose().replicate(S, 1));
  out.query_terms.push_back("b_Q");
  k_terms.push_back(head.b_K.transpose().replicate(S, 1));
  out.key_terms.push_back("b_K");
  const Scalar scale = Scalar(1) / static_cast<Scalar>(model.config.attn_scale());
  for (const auto& q : q_terms) {
    std::vector<Matrix<Scalar>> row;
    row.reserve(k_terms.size());
    for (const auto& k : k_terms) row.push_back(scale * (q * k.transpose()));
    out.scores.push_back(std::move(row));
  }
  return out;
}

/// K-composition term of `h1` -> `h2` (see qk_decomposition.hpp): W_E QK_h2 (W_E OV_h1)^T,
/// factored as (W_E W_Q^h2)(W_E W_V^h1 W_O^h1 W_K^h2)^T. argument_error unless h1 is in an
/// earlier layer.
template <typename Scalar>
FactoredMatrix<Scalar> k_composition_circuit(const AttentionOnlyModel<Scalar>& model, HeadId h1,
                                             HeadId h2) {
  if (h1.layer >= h2.layer) {
    throw argument_error("k_composition_circuit: " + h1.name() +
                         " is not in an earlier layer than " + h2.name());
  }
  const auto& a = model.head(h1);
  const auto& c = model.head(h2);
  const Matrix<Scalar> moved = model.W_E * a.W_V;  // [d_vocab, d_head]
  return FactoredMatrix<Scalar>(model.W_E * c.W_Q, (moved * (a.W_O * c.W_K)).transpose());
}

/// Q-composition term of `h1` -> `h2` (see qk_decomposition.hpp): (W_E OV_h1) QK_h2 W_E^T,
/// factored as (W_E W_V^h1 W_O^h1 W_Q^h2)(W_E W_K^h2)^T.
template <typename Scalar>
FactoredMatrix<Scalar> q_composition_circuit(const AttentionOnlyModel<Scalar>& model, HeadId h1,
                                             HeadId h2) {
  if (h1.layer >= h2.layer) {
    throw argument_error("q_composition_circuit: " + h1.name() +
                         " is not in an earlier layer than " + h2.name());
  }
  const auto& a = model.head(h1);
  const auto& c = model.head(h2);
  const Matrix<Scalar> moved = model.W_E * a.W_V;
  return FactoredMatrix<Scalar>(moved * (a.W_O * c.W_Q), (model.W_E * c.W_K).transpose());
}

}  // namespace circuitry
