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
#include <type_traits>
#include <utility>
#include <vector>

#include "circuitry/path_expansion.hpp"

namespace circuitry {

template <typename Scalar>
PathExpansion<Scalar>::PathExpansion(const AttentionOnlyModel<Scalar>& model, const Tokens& tokens,
                                     ForwardResult<Scalar>&& run,
                                     const PathExpansionOptions& options)
    : PathExpansion(FrozenModel<Scalar>(model, tokens, cache_of(run)), options,
                    std::move(run.logits)) {}

template <typename Scalar>
PathExpansion<Scalar>::PathExpansion(FrozenModel<Scalar> frozen,
                                     const PathExpansionOptions& options,
                                     Matrix<Scalar> full_logits)
    : frozen_(std::move(frozen)), full_logits_(std::move(full_logits)) {
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
    const Vector<Scalar>& s1 = frozen_.ln1_scales(l);
    const Index n_jobs = static_cast<Index>(jobs.size()), S = frozen_.seq_len();
    CIRCUITRY_OMP_PARALLEL_FOR
    for (Index j = 0; j < n_jobs; ++j) {
      const auto [t, h] = jobs[static_cast<std::size_t>(j)];
      const Data& in = data_[t];
      const Matrix<Scalar> P =
          FrozenModel<Scalar>::read_through(ln1, writers_[in.writer].W, model.head(l, h).W_V);
      Data& d = out[static_cast<std::size_t>(j)];
      d.writer = head_writer[static_cast<std::size_t>(l * H + h)];
      d.Z.resize(N, P.cols());
      for (Index b = 0; b < frozen_.batch(); ++b) {  // A^h diag(s_l) Z P, one sequence at a time
        const Matrix<Scalar> Y =
            s1.segment(b * S, S).asDiagonal() * (in.Z.middleRows(b * S, S) * P);
        d.Z.middleRows(b * S, S).noalias() =
            frozen_.pattern({l, h}, b).template triangularView<Eigen::Lower>() * Y;  // causal
      }
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

  const std::vector<bool> all(terms_.size(), true);
  if (full_logits_.size() == 0) {
    full_logits_ = frozen_.logits(resid_final(all));
  } else if (full_logits_.rows() != N || full_logits_.cols() != model.config.d_vocab) {
    throw argument_error("PathExpansion: the forward result's logits are " +
                         std::to_string(full_logits_.rows()) + " x " +
                         std::to_string(full_logits_.cols()) + ", expected " + std::to_string(N) +
                         " x " + std::to_string(model.config.d_vocab));
  }
  row_max_ = full_logits_.rowwise().maxCoeff();
  full_loss_ = loss(all);
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

namespace detail {
/// Rows and columns of the tiles of logits `PathExpansion::losses` works on: one block of rows
/// per task, its columns in chunks so that the components' tiles stay in cache.
#ifndef PEX_R
#define PEX_R 16
#define PEX_C 64
#endif
constexpr int kLossTileRows = PEX_R;
constexpr Index kLossTileCols = PEX_C;
}  // namespace detail

template <typename Scalar>
std::vector<Scalar> PathExpansion<Scalar>::losses(
    const std::vector<std::vector<bool>>& keeps) const {
  std::vector<std::vector<bool>> unique;  // each distinct mask once (summarize: direct and full
  std::vector<std::size_t> which;         // are both a loss_by_order and a loss_by_layer)
  std::map<std::vector<bool>, std::size_t> seen;
  for (const std::vector<bool>& keep : keeps) {
    const auto it = seen.emplace(check_mask(keep), unique.size()).first;
    if (it->second == unique.size()) unique.push_back(keep);
    which.push_back(it->second);
  }
  const std::vector<Scalar> loss = run(plan(unique), unique);
  std::vector<Scalar> out;
  for (std::size_t k : which) out.push_back(loss[k]);
  return out;
}

/// Each mask becomes the full logits minus the removed terms' logits or the logit bias plus the
/// kept terms' logits, whichever takes the smaller products; the terms of one writing matrix w
/// are summed first (in Z) so that they cost one product of rank r_w. A group of terms that an
/// earlier mask already needed is reused, and one that is the disjoint union of at most r_w / 2
/// known groups becomes their sum (additions instead of a product): masks are taken cheapest
/// first, so marginal_losses-like masks create the single terms that larger ones reuse. A mask
/// whose cheapest form still takes products of total rank > d_model becomes one product of
/// its dense sum resid_final(keep) with the identity writer.
template <typename Scalar>
typename PathExpansion<Scalar>::Plan PathExpansion<Scalar>::plan(
    const std::vector<std::vector<bool>>& keeps) const {
  using Group = std::pair<std::size_t, std::vector<std::size_t>>;  // (writer, sorted terms)
  const Index dense = frozen_.model().config.d_model;
  const auto rank = [&](std::size_t w) { return writers_[w].W.rows(); };
  const auto groups = [&](const std::vector<bool>& keep, bool kept) {
    std::vector<std::vector<std::size_t>> by(writers_.size());
    for (std::size_t t = 0; t < keep.size(); ++t) {
      if (keep[t] == kept) by[data_[t].writer].push_back(t);
    }
    std::vector<Group> g;
    for (std::size_t w = 0; w < by.size(); ++w) {
      if (!by[w].empty()) g.emplace_back(w, std::move(by[w]));
    }
    return g;
  };
  Plan p;
  std::map<Group, std::size_t> known;
  const auto cover = [&](const Group& g) {
    std::vector<std::pair<std::size_t, std::size_t>> candidates;  // (size, component)
    for (const auto& [key, c] : known) {
      if (key.first == g.first && key.second.size() < g.second.size() &&
          std::includes(g.second.begin(), g.second.end(), key.second.begin(), key.second.end())) {
        candidates.emplace_back(key.second.size(), c);
      }
    }
    std::sort(candidates.rbegin(), candidates.rend());
    std::vector<bool> taken(terms_.size(), false);
    std::vector<std::size_t> parts;
    std::size_t covered = 0;
    for (const auto& [size, c] : candidates) {
      const std::vector<std::size_t>& ts = p.components[c].terms;
      if (std::any_of(ts.begin(), ts.end(), [&](std::size_t t) { return taken[t]; })) continue;
      for (std::size_t t : ts) taken[t] = true;
      parts.push_back(c);
      covered += size;
    }
    if (covered != g.second.size() || 2 * static_cast<Index>(parts.size()) > rank(g.first)) {
      parts.clear();
    }
    return parts;
  };
  const auto cost = [&](const std::vector<Group>& gs, bool shared) {
    Index c = 0;
    for (const Group& g : gs) {
      if (!shared) {
        c += rank(g.first);
      } else if (known.count(g) == 0) {
        const std::size_t parts = cover(g).size();
        c += parts > 0 ? static_cast<Index>(parts) : rank(g.first);
      }
    }
    return c;
  };
  const auto component = [&](const Group& g) {
    const auto it = known.find(g);
    if (it != known.end()) return it->second;
    Component c;
    c.writer = g.first;
    c.terms = g.second;
    c.parts = cover(g);
    if (c.parts.empty() && c.terms.size() > 1) {
      c.Z = data_[c.terms[0]].Z;
      for (std::size_t k = 1; k < c.terms.size(); ++k) c.Z += data_[c.terms[k]].Z;
    }
    p.components.push_back(std::move(c));
    known.emplace(g, p.components.size() - 1);
    return p.components.size() - 1;
  };

  const std::size_t n = keeps.size();
  std::vector<std::vector<Group>> removed(n), kept(n);
  std::vector<std::pair<Index, std::size_t>> order;  // (cost on its own, mask)
  for (std::size_t k = 0; k < n; ++k) {
    removed[k] = groups(keeps[k], false);
    kept[k] = groups(keeps[k], true);
    order.emplace_back(std::min({dense, cost(removed[k], false), cost(kept[k], false)}), k);
  }
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  p.minus.resize(n);
  p.uses.resize(n);
  for (const auto& entry : order) {
    const std::size_t k = entry.second;
    const Index minus = cost(removed[k], true), plus = cost(kept[k], true);
    if (std::min(minus, plus) > dense) {
      Component c;
      c.writer = kIdentityWriter;
      c.Z = resid_final(keeps[k]);
      p.components.push_back(std::move(c));
      p.minus[k] = false;
      p.uses[k] = {p.components.size() - 1};
      continue;
    }
    p.minus[k] = minus <= plus;
    for (const Group& g : p.minus[k] ? removed[k] : kept[k]) p.uses[k].push_back(component(g));
  }
  // Groups that later masks' groups now cover (summarize: the layer-1 heads' groups, once the
  // virtual terms exist on their own) become sums too; parts have fewer terms than the whole.
  for (const auto& [key, c] : known) {
    Component& comp = p.components[c];
    if (!comp.parts.empty() || comp.terms.size() < 2) continue;
    comp.parts = cover(key);
    if (!comp.parts.empty()) comp.Z.resize(0, 0);
  }
  return p;
}

/// One pass over blocks of kLossTileRows rows, in parallel, each in chunks of kLossTileCols
/// columns: per writer, one product (its products' Z rows stacked) x (M_w's chunk) gives all
/// its components' tiles, then the sums are added up, then every mask's logits are formed a
/// column at a time and sum_j exp(logit - row_max_) accumulated (detail::exp_sums, vectorised
/// over the rows). The target's logits come from dot products. Every row's sums are accumulated
/// by one thread in column order and the rows are summed in order, so the losses do not depend
/// on the number of threads. A row whose sum left [1e-250, 1e250] (or met a non-finite logit)
/// is recomputed by `row_loss`.
template <typename Scalar>
std::vector<Scalar> PathExpansion<Scalar>::run(const Plan& p,
                                               const std::vector<std::vector<bool>>& keeps) const {
  constexpr int R = detail::kLossTileRows;
  const Index N = frozen_.rows(), V = full_logits_.cols(), C = std::min(detail::kLossTileCols, V);
  const std::size_t n_comp = p.components.size(), n_masks = keeps.size();
  const Index n_jobs = static_cast<Index>(n_masks);
  std::vector<std::vector<std::size_t>> products(writers_.size());
  std::vector<Index> slot(n_comp);  // tile rows slot * R ..: products grouped by writer, then sums
  Index n_slots = 0;
  for (std::size_t c = 0; c < n_comp; ++c) {
    if (p.components[c].parts.empty()) products[p.components[c].writer].push_back(c);
  }
  for (const auto& list : products) {
    for (std::size_t c : list) slot[c] = n_slots++;
  }
  std::vector<std::size_t> sums_order;  // sums after their parts: by number of terms
  for (std::size_t c = 0; c < n_comp; ++c) {
    if (!p.components[c].parts.empty()) sums_order.push_back(c);
  }
  std::stable_sort(sums_order.begin(), sums_order.end(), [&](std::size_t a, std::size_t b) {
    return p.components[a].terms.size() < p.components[b].terms.size();
  });
  for (std::size_t c : sums_order) slot[c] = n_slots++;
  detail::TileMasks masks;
  for (std::size_t k = 0; k < n_masks; ++k) {
    masks.minus.push_back(p.minus[k] ? 1 : 0);
    for (std::size_t c : p.uses[k]) masks.parts.push_back(slot[c] * R);
    masks.begin.push_back(static_cast<Index>(masks.parts.size()));
  }

  const Vector<Scalar>& s = frozen_.ln_final_scales();
  const RowVector<Scalar> bias = frozen_.logit_bias();
  const Eigen::Matrix<int, Eigen::Dynamic, 1> target = frozen_.next_tokens();
  const auto Z_of = [&](const Component& c) -> const Matrix<Scalar>& {
    return c.Z.size() != 0 ? c.Z : data_[c.terms.front()].Z;
  };
  // Each component's logit at each row's target, and each mask's target logit - row_max_.
  Eigen::MatrixXd at_target = Eigen::MatrixXd::Zero(N, static_cast<Index>(n_comp));
  Eigen::Matrix<Index, Eigen::Dynamic, 1> column(N);  // the target, 0 for rows without one
  for (Index r = 0; r < N; ++r) column(r) = std::max(target(r), 0);
  for (std::size_t wr = 0; wr < writers_.size(); ++wr) {
    if (products[wr].empty()) continue;
    const Matrix<Scalar> G = writers_[wr].M(Eigen::all, column).transpose();  // [N, r]
    for (std::size_t c : products[wr]) {
      at_target.col(static_cast<Index>(c)) =
          (s.array() * (Z_of(p.components[c]).array() * G.array()).rowwise().sum())
              .template cast<double>();
    }
  }
  for (std::size_t c : sums_order) {
    for (std::size_t q : p.components[c].parts) {
      at_target.col(static_cast<Index>(c)) += at_target.col(static_cast<Index>(q));
    }
  }
  Eigen::MatrixXd picked(N, n_jobs), sums(N, n_jobs);
  for (Index r = 0; r < N; ++r) {
    if (target(r) < 0) continue;
    for (std::size_t k = 0; k < n_masks; ++k) {
      double v = static_cast<double>(p.minus[k] ? full_logits_(r, target(r)) : bias(target(r)));
      for (std::size_t c : p.uses[k]) {
        v += (p.minus[k] ? -1 : 1) * at_target(r, static_cast<Index>(c));
      }
      picked(r, static_cast<Index>(k)) = v - static_cast<double>(row_max_(r));
    }
  }

  const bool avx2 = std::is_same<Scalar, double>::value && detail::has_avx2_fma();
  struct Work {                          // per thread
    std::vector<Matrix<Scalar>> stacks;  // per writer: its products' Z rows, scaled by s_f
    Matrix<Scalar> tiles;                // [n_slots R, C]
    Eigen::MatrixXd base;                // [R, C]: full logits - row_max_
    Eigen::MatrixXd acc, raw;            // [R, masks]: sums of exp(logit - row_max_), of logits
  };
  std::vector<Work> work(static_cast<std::size_t>(detail::max_threads()));
  const Index blocks = (N + R - 1) / R;
  CIRCUITRY_OMP_PARALLEL_FOR
  for (Index blk = 0; blk < blocks; ++blk) {
    Work& w = work[static_cast<std::size_t>(detail::thread_index())];
    if (w.base.size() == 0) {
      w.stacks.resize(writers_.size());
      for (std::size_t wr = 0; wr < writers_.size(); ++wr) {
        w.stacks[wr].resize(static_cast<Index>(products[wr].size()) * R, writers_[wr].W.rows());
      }
      w.tiles.resize(std::max<Index>(n_slots, 1) * R, C);
      w.base.resize(R, C);
    }
    const Index r0 = blk * R, n = std::min<Index>(R, N - r0);
    for (std::size_t wr = 0; wr < writers_.size(); ++wr) {
      for (std::size_t k = 0; k < products[wr].size(); ++k) {
        auto rows = w.stacks[wr].middleRows(static_cast<Index>(k) * R, R);
        rows.topRows(n) =
            s.segment(r0, n).asDiagonal() * Z_of(p.components[products[wr][k]]).middleRows(r0, n);
        rows.bottomRows(R - n).setZero();
      }
    }
    Eigen::Matrix<double, R, 1> shift = Eigen::Matrix<double, R, 1>::Zero();
    shift.head(n) = row_max_.segment(r0, n).template cast<double>();
    w.base.setZero();
    w.acc.setZero(R, n_jobs);
    w.raw.setZero(R, n_jobs);
    for (Index c0 = 0; c0 < V; c0 += C) {
      const Index cc = std::min(C, V - c0);
      for (std::size_t wr = 0; wr < writers_.size(); ++wr) {
        if (products[wr].empty()) continue;
        const Matrix<Scalar>& Zs = w.stacks[wr];
        const Index row0 = slot[products[wr][0]] * R;
#if CIRCUITRY_SIMD_DISPATCH
        if constexpr (std::is_same<Scalar, double>::value) {
          if (avx2) {
            detail::product_avx2(Zs.data(), Zs.rows(), Zs.rows(), Zs.cols(),
                                 writers_[wr].M.col(c0).data(), writers_[wr].M.rows(), cc,
                                 w.tiles.data() + row0, w.tiles.rows());
            continue;
          }
        }
#endif
        w.tiles.block(row0, 0, Zs.rows(), cc).noalias() = Zs * writers_[wr].M.middleCols(c0, cc);
      }
      for (std::size_t c : sums_order) {
        const std::vector<std::size_t>& parts = p.components[c].parts;
        auto dst = w.tiles.block(slot[c] * R, 0, R, cc);
        dst = w.tiles.block(slot[parts[0]] * R, 0, R, cc);
        for (std::size_t q = 1; q < parts.size(); ++q) {
          dst += w.tiles.block(slot[parts[q]] * R, 0, R, cc);
        }
      }
      w.base.topLeftCorner(n, cc) = full_logits_.block(r0, c0, n, cc).template cast<double>();
      w.base.leftCols(cc).colwise() -= shift;
      const Scalar* bias_c = bias.data() + c0;
#if CIRCUITRY_SIMD_DISPATCH
      if constexpr (std::is_same<Scalar, double>::value) {
        if (avx2) {
          detail::exp_sums_avx2<R>(masks, cc, w.base.data(), bias_c, shift.data(), w.tiles.data(),
                                   w.tiles.rows(), w.acc.data());
          continue;
        }
      }
#endif
      detail::exp_sums<R>(masks, cc, w.base.data(), bias_c, shift.data(), w.tiles.data(),
                          w.tiles.rows(), w.acc.data(), w.raw.data());
    }
    for (Index k = 0; k < n_jobs; ++k) {
      for (Index i = 0; i < n; ++i) {
        sums(r0 + i, k) = std::isfinite(w.raw(i, k)) ? w.acc(i, k) : std::nan("");
      }
    }
  }

  std::vector<Scalar> out(n_masks);
  for (std::size_t k = 0; k < n_masks; ++k) {
    double total = 0;
    for (Index r = 0; r < N; ++r) {
      if (target(r) < 0) continue;
      const double sum = sums(r, static_cast<Index>(k));
      total += sum >= 1e-250 && sum <= 1e250 ? std::log(sum) - picked(r, static_cast<Index>(k))
                                             : row_loss(keeps[k], r);
    }
    out[k] = static_cast<Scalar>(total / static_cast<double>(frozen_.predictions()));
  }
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
