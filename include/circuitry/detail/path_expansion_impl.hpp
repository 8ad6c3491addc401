// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/path_expansion_impl.hpp
/// Out-of-class members of `PathExpansion` and `summarize` (path_expansion.hpp).
///
/// Terms are propagated factored. A term Z W (Z [N, r], W [r, d_model]) read by head h of layer
/// l gives A^h diag(s_l) Z (W_c [diag(w_l)] W_V^h) W_O^h: a new term Z' W_O^h with
/// Z' = A^h diag(s_l) Z P, P = W_c [diag(w_l)] W_V^h [r, d_head] (FrozenModel::read_through).
/// Its logits are diag(s_f) Z M with M = W_c [diag(w_f)] W_U, so the logits of a subset are the
/// full logits minus a low-rank update when only a few writing matrices are involved.

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "circuitry/path_expansion.hpp"

namespace circuitry {

template <typename Scalar>
PathExpansion<Scalar>::PathExpansion(const AttentionOnlyModel<Scalar>& model, const Tokens& tokens,
                                     ForwardResult<Scalar>&& run,
                                     const PathExpansionOptions& options)
    : PathExpansion(FrozenModel<Scalar>(model, tokens, cache_of(run)), options,
                    std::move(run.logits), run.loss_mean) {}

template <typename Scalar>
PathExpansion<Scalar>::PathExpansion(std::shared_ptr<const AttentionOnlyModel<Scalar>> model,
                                     const Tokens& tokens, ForwardResult<Scalar>&& run,
                                     const PathExpansionOptions& options)
    : PathExpansion(FrozenModel<Scalar>(std::move(model), tokens, cache_of(run)), options,
                    std::move(run.logits), run.loss_mean) {}

template <typename Scalar>
PathExpansion<Scalar>::PathExpansion(FrozenModel<Scalar> frozen,
                                     const PathExpansionOptions& options,
                                     Matrix<Scalar> full_logits, std::optional<Scalar> full_loss)
    : frozen_(std::move(frozen)), full_logits_(std::move(full_logits)) {
  const AttentionOnlyModel<Scalar>& model = frozen_.model();
  const int L = model.n_layers(), H = model.n_heads();
  const int max_order = options.max_order < 0 ? L : options.max_order;
  const Index N = frozen_.rows(), D = model.config.d_model;
  const detail::SimdLevel level = detail::simd_level();

  const std::size_t identity = add_writer(Matrix<Scalar>::Identity(D, D), true);
  std::vector<std::size_t> head_writer;
  for (const HeadId& id : model.head_ids()) head_writer.push_back(add_writer(model.head(id).W_O));

  terms_.push_back(PathTerm{});
  data_.push_back({frozen_.resid0(), identity});
  bool truncated = false;
  for (int l = 0; l < L; ++l) {
    // Every term so far is part of layer l's input: each head of layer l reads each of them.
    const std::size_t n_in = terms_.size();
    std::vector<std::pair<std::size_t, int>> jobs;  // (input term, head)
    for (int h = 0; h < H; ++h) {
      for (std::size_t t = 0; t < n_in; ++t) {
        PathTerm next = terms_[t];
        next.chain.push_back({l, h});
        if (next.order() > max_order) {
          truncated = true;
          continue;
        }
        jobs.emplace_back(t, h);
        terms_.push_back(std::move(next));
      }
    }
    std::vector<Data> out(jobs.size());
    std::vector<Matrix<Scalar>> P(jobs.size());  // each job's read_through
    std::vector<std::vector<Index>> by_head(static_cast<std::size_t>(H));
    for (std::size_t j = 0; j < jobs.size(); ++j) {
      by_head[static_cast<std::size_t>(jobs[j].second)].push_back(static_cast<Index>(j));
    }
    const LayerNorm<Scalar>& ln1 = model.layers[static_cast<std::size_t>(l)].ln1;
    const Vector<Scalar>& s1 = frozen_.ln1_scales(l);
    const Index n_jobs = static_cast<Index>(jobs.size()), S = frozen_.seq_len();
    const Index B = frozen_.batch(), n_tasks = B * H;
    CIRCUITRY_OMP_PARALLEL {
      CIRCUITRY_OMP_FOR
      for (Index j = 0; j < n_jobs; ++j) {
        const auto [t, h] = jobs[static_cast<std::size_t>(j)];
        Matrix<Scalar>& Pj = P[static_cast<std::size_t>(j)];
        Pj = FrozenModel<Scalar>::read_through(ln1, writers_[data_[t].writer].W,
                                               model.head(l, h).W_V);
        Data& d = out[static_cast<std::size_t>(j)];
        d.writer = head_writer[static_cast<std::size_t>(l) * static_cast<std::size_t>(H) +
                               static_cast<std::size_t>(h)];
        d.Z.resize(N, Pj.cols());
        detail::prefault(d.Z);
      }
      // (the loop's barrier publishes P and the outputs.) Then A^h diag(s_l) Z P one head and
      // one sequence at a time, for all the head's inputs in a row: its pattern [S, S] stays in
      // cache for all of them instead of being read again for each (10 inputs per layer-1 head
      // of attn-only-2l).
      Matrix<Scalar> Y;  // this thread's buffer
      CIRCUITRY_OMP_FOR
      for (Index task = 0; task < n_tasks; ++task) {
        const int h = static_cast<int>(task / B);
        const Index b = task % B;
        const Matrix<Scalar>& A = frozen_.pattern({l, h}, b);
        for (const Index j : by_head[static_cast<std::size_t>(h)]) {
          const Matrix<Scalar>& in = data_[jobs[static_cast<std::size_t>(j)].first].Z;
          const Matrix<Scalar>& Pj = P[static_cast<std::size_t>(j)];
          Y.resize(S, Pj.cols());
          detail::gemm(level, S, Pj.cols(), Pj.rows(), in.data() + b * S, N, Pj.data(), Pj.rows(),
                       Y.data(), S);
          Y.array().colwise() *= s1.segment(b * S, S).array();
          detail::causal_product(level, A, Y.data(), S, Y.cols(),
                                 out[static_cast<std::size_t>(j)].Z.data() + b * S, N);
        }
      }
    }
    for (Data& d : out) data_.push_back(std::move(d));
    // The remainder (below) reads every layer's patterns again; otherwise layer l's are done.
    if (!options.keep_patterns && max_order >= L) frozen_.release_patterns(l);

    // Layer l's constants: b_O, and each head's value bias when it is not zero.
    auto add_constant = [&](PathTerm term, const RowVector<Scalar>& c) {
      if (term.order() > max_order) {
        truncated = true;
        return;
      }
      terms_.push_back(std::move(term));
      data_.push_back({Matrix<Scalar>::Ones(N, 1), add_writer(c)});
    };
    PathTerm bias;
    bias.source = PathSource::attn_bias;
    bias.source_layer = l;
    add_constant(bias, model.layers[static_cast<std::size_t>(l)].b_O.transpose());
    for (int h = 0; h < H; ++h) {
      const RowVector<Scalar> c = frozen_.value_bias({l, h});
      if ((c.array() == Scalar(0)).all()) continue;
      PathTerm vb;
      vb.source = PathSource::value_bias;
      vb.source_layer = l;
      vb.source_head = {l, h};
      add_constant(vb, c);
    }
  }

  if (truncated) {
    // Everything the enumeration left out: the frozen model's resid_L minus the terms.
    Matrix<Scalar> rest = frozen_.resid_final(frozen_.resid0(), true) -
                          resid_final(std::vector<bool>(terms_.size(), true));
    PathTerm r;
    r.source = PathSource::remainder;
    r.source_layer = L - 1;
    r.remainder_order = max_order + 1;
    terms_.push_back(r);
    data_.push_back({std::move(rest), identity});
    if (!options.keep_patterns) {
      for (int l = 0; l < L; ++l) frozen_.release_patterns(l);
    }
  }

  add_readouts();
  const std::vector<bool> all(terms_.size(), true);
  if (full_logits_.size() == 0) {
    full_logits_ = frozen_.logits(resid_final(all));
  } else if (full_logits_.rows() != N || full_logits_.cols() != model.config.d_vocab) {
    throw argument_error("PathExpansion: the forward result's logits are " +
                         std::to_string(full_logits_.rows()) + " x " +
                         std::to_string(full_logits_.cols()) + ", expected " + std::to_string(N) +
                         " x " + std::to_string(model.config.d_vocab));
  }
  row_max_ = detail::row_max(full_logits_);
  // The forward pass's loss is the mean next-token loss of these same logits: no second pass.
  full_loss_ = full_loss && frozen_.predictions() > 0 ? *full_loss : loss(all);
  has_full_loss_ = true;
}

template <typename Scalar>
std::size_t PathExpansion<Scalar>::index_of(const std::string& name) const {
  for (std::size_t i = 0; i < terms_.size(); ++i) {
    if (terms_[i].name() == name) return i;
  }
  throw argument_error("PathExpansion: no term '" + name + "' (terms are named like 'direct', " +
                       "'L0H3', 'L0H1->L1H5', 'b_O[0]', 'b_O[0]->L1H2')");
}

namespace detail {
/// Per writing matrix, the sum of the Z of the selected terms (empty where none is selected).
template <typename Scalar, typename DataVector>
std::vector<Matrix<Scalar>> group_by_writer(const DataVector& data, std::size_t n_writers,
                                            const std::vector<bool>& selected) {
  std::vector<Matrix<Scalar>> g(n_writers);
  for (std::size_t i = 0; i < data.size(); ++i) {
    if (!selected[i]) continue;
    Matrix<Scalar>& G = g[data[i].writer];
    if (G.size() == 0) {
      G = data[i].Z;
    } else {
      G += data[i].Z;
    }
  }
  return g;
}
}  // namespace detail

template <typename Scalar>
Matrix<Scalar> PathExpansion<Scalar>::resid_final(const std::vector<bool>& keep) const {
  check_mask(keep);
  const auto g = detail::group_by_writer<Scalar>(data_, writers_.size(), keep);
  Matrix<Scalar> R = Matrix<Scalar>::Zero(frozen_.rows(), frozen_.model().config.d_model);
  for (std::size_t w = 0; w < g.size(); ++w) {
    if (g[w].size() != 0) R.noalias() += g[w] * writers_[w].W;
  }
  return R;
}

template <typename Scalar>
std::vector<Scalar> PathExpansion<Scalar>::losses(
    const std::vector<std::vector<bool>>& keeps) const {
  std::vector<std::vector<bool>> unique;  // each distinct mask once (summarize: direct and full
  std::vector<std::size_t> which;         // are both a loss_by_order and a loss_by_layer)
  std::map<std::vector<bool>, std::size_t> seen;
  constexpr std::size_t kFull = static_cast<std::size_t>(-1);  // every term: full_loss_
  for (const std::vector<bool>& keep : keeps) {
    if (has_full_loss_ &&
        std::all_of(check_mask(keep).begin(), keep.end(), [](bool k) { return k; })) {
      which.push_back(kFull);
      continue;
    }
    const auto it = seen.emplace(check_mask(keep), unique.size()).first;
    if (it->second == unique.size()) unique.push_back(keep);
    which.push_back(it->second);
  }
  const std::vector<Scalar> loss =
      unique.empty() ? std::vector<Scalar>() : run(plan(unique), unique);
  std::vector<Scalar> out;
  out.reserve(which.size());
  for (std::size_t k : which) out.push_back(k == kFull ? full_loss_ : loss[k]);
  return out;
}

/// The next-token loss of one row of logits(keep), from the dense sum of the kept terms.
template <typename Scalar>
double PathExpansion<Scalar>::row_loss(const std::vector<bool>& keep, Index row) const {
  Matrix<Scalar> resid = Matrix<Scalar>::Zero(1, frozen_.model().config.d_model);
  for (std::size_t t = 0; t < keep.size(); ++t) {
    if (keep[t]) resid.noalias() += data_[t].Z.row(row) * writers_[data_[t].writer].W;
  }
  const Vector<Scalar> s = frozen_.ln_final_scales().segment(row, 1);
  Matrix<Scalar> logits =
      FrozenModel<Scalar>::linear_ln(frozen_.model().ln_final, s, resid) * frozen_.model().W_U;
  logits.row(0) += frozen_.logit_bias();
  const Index t = frozen_.next_tokens()(row);
  return static_cast<double>(detail::row_logsumexp(logits)(0) - logits(0, t));
}

template <typename Scalar>
FactoredMatrix<Scalar> PathExpansion<Scalar>::circuit(std::size_t i) const {
  const PathTerm& t = term(i);
  const AttentionOnlyModel<Scalar>& model = frozen_.model();
  Matrix<Scalar> source;
  switch (t.source) {
    case PathSource::direct: source = model.W_E; break;
    case PathSource::attn_bias:
      source = model.layers[static_cast<std::size_t>(t.source_layer)].b_O.transpose();
      break;
    case PathSource::value_bias: source = frozen_.value_bias(t.source_head); break;
    case PathSource::remainder:
      throw argument_error(
          "PathExpansion::circuit: the remainder term 'higher_order' is a sum "
          "of paths and has no single circuit");
  }
  if (t.chain.empty()) return FactoredMatrix<Scalar>(source, model.W_U);
  FactoredMatrix<Scalar> F = source * model.head(t.chain[0]).ov();
  for (std::size_t k = 1; k < t.chain.size(); ++k) F = F * model.head(t.chain[k]).ov();
  return F * model.W_U;
}

template <typename Scalar>
PathExpansionSummary<Scalar> summarize(const PathExpansion<Scalar>& pe,
                                       const std::vector<std::size_t>& marginal_terms) {
  const AttentionOnlyModel<Scalar>& model = pe.frozen().model();
  PathExpansionSummary<Scalar> s;
  s.uniform_loss = static_cast<Scalar>(std::log(static_cast<double>(model.config.d_vocab)));
  s.full_loss = pe.full_loss();
  int max_order = 0;
  for (const PathTerm& t : pe.terms()) max_order = std::max(max_order, t.order());
  // Every mask first, then one pass (PathExpansion::losses).
  std::vector<std::vector<bool>> masks;
  for (int k = 0; k <= max_order; ++k) {
    masks.push_back(pe.select([k](const PathTerm& t) { return t.order() <= k; }));
  }
  for (int l = -1; l < model.n_layers(); ++l) {
    masks.push_back(pe.select([l](const PathTerm& t) { return t.last_layer() <= l; }));
  }
  for (const HeadId& id : model.head_ids()) {
    masks.push_back(pe.select([id](const PathTerm& t) { return !t.involves(id); }));
    masks.push_back(pe.select([id](const PathTerm& t) {
      return !(t.order() == 1 && t.chain.size() == 1 && t.chain[0] == id);
    }));
  }
  for (std::size_t i : marginal_terms) {
    if (i >= pe.size()) {
      throw argument_error("summarize: marginal term " + std::to_string(i) + " out of range [0, " +
                           std::to_string(pe.size()) + ")");
    }
    masks.emplace_back(pe.size(), true);
    masks.back().at(i) = false;
  }
  const std::vector<Scalar> loss = pe.losses(masks);
  std::size_t next = 0;
  for (int k = 0; k <= max_order; ++k) s.loss_by_order.push_back(loss[next++]);
  for (int l = -1; l < model.n_layers(); ++l) s.loss_by_layer.push_back(loss[next++]);
  for (const HeadId& id : model.head_ids()) {
    HeadPathLosses<Scalar> h;
    h.head = id;
    h.without_everywhere = loss[next++];
    h.without_first_order = loss[next++];
    s.heads.push_back(h);
  }
  for (std::size_t k = 0; k < marginal_terms.size(); ++k)
    s.marginal.push_back(loss[next++] - s.full_loss);
  return s;
}

}  // namespace circuitry
