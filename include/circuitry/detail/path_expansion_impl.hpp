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
#include <string>
#include <utility>
#include <vector>

#include "circuitry/path_expansion.hpp"

namespace circuitry {

template <typename Scalar>
PathExpansion<Scalar>::PathExpansion(FrozenModel<Scalar> frozen,
                                     const PathExpansionOptions& options)
    : frozen_(std::move(frozen)) {
  const AttentionOnlyModel<Scalar>& model = frozen_.model();
  const int L = model.n_layers(), H = model.n_heads();
  const int max_order = options.max_order < 0 ? L : options.max_order;
  const Index N = frozen_.rows(), D = model.config.d_model;

  const std::size_t identity = add_writer(Matrix<Scalar>::Identity(D, D));
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
    const LayerNorm<Scalar>& ln1 = model.layers[static_cast<std::size_t>(l)].ln1;
    const Index n_jobs = static_cast<Index>(jobs.size());
    CIRCUITRY_OMP_PARALLEL_FOR
    for (Index j = 0; j < n_jobs; ++j) {
      const auto [t, h] = jobs[static_cast<std::size_t>(j)];
      const Data& in = data_[t];
      const Matrix<Scalar> P =
          FrozenModel<Scalar>::read_through(ln1, writers_[in.writer].W, model.head(l, h).W_V);
      Matrix<Scalar> Y = in.Z * P;
      Y.array().colwise() *= frozen_.ln1_scales(l).array();
      out[static_cast<std::size_t>(j)] = {frozen_.attend({l, h}, Y),
                                          head_writer[static_cast<std::size_t>(l * H + h)]};
    }
    for (Data& d : out) data_.push_back(std::move(d));

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
  }

  full_logits_ = frozen_.logits(resid_final(std::vector<bool>(terms_.size(), true)));
  full_loss_ = frozen_.mean_loss(
      [&](Index r0, Index n) { return Matrix<Scalar>(full_logits_.middleRows(r0, n)); });
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
Scalar PathExpansion<Scalar>::loss(const std::vector<bool>& keep) const {
  check_mask(keep);
  std::vector<bool> removed(keep.size());
  for (std::size_t i = 0; i < keep.size(); ++i) removed[i] = !keep[i];
  // Cost (inner dimension of the d_vocab-wide products) of three equivalent ways: the frozen
  // readout of the dense sum (d_model), the full logits minus the removed terms' logits, or the
  // constant plus the kept terms' logits (sum of r over the writing matrices involved).
  auto rank = [&](const std::vector<bool>& sel) {
    std::vector<bool> used(writers_.size(), false);
    Index r = 0;
    for (std::size_t i = 0; i < sel.size(); ++i) {
      const std::size_t w = data_[i].writer;
      if (sel[i] && !used[w]) {
        used[w] = true;
        r += writers_[w].W.rows();
      }
    }
    return r;
  };
  const Index dense = frozen_.model().config.d_model;
  const Index minus = rank(removed), plus = rank(keep);
  const Vector<Scalar>& s = frozen_.ln_final_scales();
  if (minus <= plus && minus < dense) {
    const auto g = detail::group_by_writer<Scalar>(data_, writers_.size(), removed);
    return frozen_.mean_loss([&](Index r0, Index n) {
      Matrix<Scalar> delta = Matrix<Scalar>::Zero(n, full_logits_.cols());
      for (std::size_t w = 0; w < g.size(); ++w) {
        if (g[w].size() != 0) delta.noalias() += g[w].middleRows(r0, n) * writers_[w].M;
      }
      return Matrix<Scalar>(full_logits_.middleRows(r0, n) -
                            s.segment(r0, n).asDiagonal() * delta);
    });
  }
  if (plus < dense) {
    const auto g = detail::group_by_writer<Scalar>(data_, writers_.size(), keep);
    const RowVector<Scalar> bias = frozen_.logit_bias();
    return frozen_.mean_loss([&](Index r0, Index n) {
      Matrix<Scalar> sum = Matrix<Scalar>::Zero(n, full_logits_.cols());
      for (std::size_t w = 0; w < g.size(); ++w) {
        if (g[w].size() != 0) sum.noalias() += g[w].middleRows(r0, n) * writers_[w].M;
      }
      Matrix<Scalar> L = s.segment(r0, n).asDiagonal() * sum;
      L.rowwise() += bias;
      return L;
    });
  }
  return frozen_.loss(resid_final(keep));
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
      throw argument_error("PathExpansion::circuit: the remainder term 'higher_order' is a sum "
                           "of paths and has no single circuit");
  }
  if (t.chain.empty()) return FactoredMatrix<Scalar>(source, model.W_U);
  FactoredMatrix<Scalar> F = source * model.head(t.chain[0]).ov();
  for (std::size_t k = 1; k < t.chain.size(); ++k) F = F * model.head(t.chain[k]).ov();
  return F * model.W_U;
}

template <typename Scalar>
PathExpansionSummary<Scalar> summarize(const PathExpansion<Scalar>& pe) {
  const AttentionOnlyModel<Scalar>& model = pe.frozen().model();
  PathExpansionSummary<Scalar> s;
  s.uniform_loss = static_cast<Scalar>(std::log(static_cast<double>(model.config.d_vocab)));
  s.full_loss = pe.full_loss();
  int max_order = 0;
  for (const PathTerm& t : pe.terms()) max_order = std::max(max_order, t.order());
  for (int k = 0; k <= max_order; ++k) {
    s.loss_by_order.push_back(pe.loss_if([k](const PathTerm& t) { return t.order() <= k; }));
  }
  for (int l = -1; l < model.n_layers(); ++l) {
    s.loss_by_layer.push_back(pe.loss_if([l](const PathTerm& t) { return t.last_layer() <= l; }));
  }
  for (const HeadId& id : model.head_ids()) {
    HeadPathLosses<Scalar> h;
    h.head = id;
    h.without_everywhere = pe.loss_if([id](const PathTerm& t) { return !t.involves(id); });
    h.without_first_order = pe.loss_if([id](const PathTerm& t) {
      return !(t.order() == 1 && t.chain.size() == 1 && t.chain[0] == id);
    });
    s.heads.push_back(h);
  }
  return s;
}

}  // namespace circuitry
