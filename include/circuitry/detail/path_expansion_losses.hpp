// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/path_expansion_losses.hpp
/// `PathExpansion::losses` (path_expansion.hpp): the losses of many subsets of path terms in one
/// pass over the full logits.
///
/// A subset's logits are the full logits minus the removed terms' logits, or the logit bias plus
/// the kept terms' logits; the logits of a group of terms with one writing matrix w are
/// diag(s_f) Z M_w, a product of rank r_w (Z: the sum of their Z). `plan` picks each mask's form
/// and the groups ("components") the masks share; `run` computes, per tile of kLossTileRows rows
/// and kLossTileCols columns, every component once (one product per writer, detail::gemm) and
/// then every mask's sum of exponentials from them (detail::exp_sums), both with the widest
/// vector instructions the processor has (detail/simd_dispatch.hpp). For summarize on
/// attn-only-2l (~100 masks), the products have total rank ~2800 (the 64 virtual-head terms,
/// each layer-0 head, each layer-1 head's first-order pair, the direct path): that (~47 GFLOP)
/// and the ~850 M exponentials are the cost.

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "circuitry/detail/forward_kernels.hpp"
#include "circuitry/detail/simd_exp.hpp"
#include "circuitry/detail/simd_gemm.hpp"
#include "circuitry/path_expansion.hpp"

namespace circuitry {

namespace detail {
/// Rows and columns of the tiles of logits `PathExpansion::losses` works on: one block of rows
/// per task, its columns in chunks so that the components' tiles stay in cache. Rows: a whole
/// number of the products' micro-tiles (detail/simd_gemm.hpp: 24 doubles, 48 floats with
/// AVX-512; 12 and 24 with AVX2) and of the exponentials' vectors.
template <typename Scalar>
constexpr int kLossTileRows = std::is_same<Scalar, double>::value ? 24 : 48;
constexpr Index kLossTileCols = 32;
}  // namespace detail

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
      c.Z.resize(data_[c.terms[0]].Z.rows(), data_[c.terms[0]].Z.cols());
      detail::prefault(c.Z);
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
  // Tile layout: each writer's products next to each other, then the sums, smaller first.
  p.products.resize(writers_.size());
  p.slot.resize(p.components.size());
  for (std::size_t c = 0; c < p.components.size(); ++c) {
    (p.components[c].parts.empty() ? p.products[p.components[c].writer] : p.sums).push_back(c);
  }
  std::stable_sort(p.sums.begin(), p.sums.end(), [&](std::size_t a, std::size_t b) {
    return p.components[a].terms.size() < p.components[b].terms.size();
  });
  // A sum that only one mask or one other sum refers to is not formed in the tiles: its parts
  // are added where it is used (summarize: each layer-1 head's virtual terms). The others are
  // formed once per tile from their expanded parts, after the products.
  std::vector<int> refs(p.components.size(), 0);
  for (const auto& uses : p.uses) {
    for (std::size_t c : uses) ++refs[c];
  }
  for (std::size_t c : p.sums) {
    for (std::size_t q : p.components[c].parts) ++refs[q];
  }
  const auto formed = [&](std::size_t c) { return p.components[c].parts.empty() || refs[c] > 1; };
  const std::function<void(std::size_t, std::vector<std::size_t>&)> expand =
      [&](std::size_t c, std::vector<std::size_t>& out) {
        if (formed(c)) {
          out.push_back(c);
          return;
        }
        for (std::size_t q : p.components[c].parts) expand(q, out);
      };
  p.tile_parts.resize(p.components.size());
  for (std::size_t c : p.sums) {
    if (!formed(c)) continue;
    for (std::size_t q : p.components[c].parts) expand(q, p.tile_parts[c]);
    p.tiled_sums.push_back(c);
  }
  p.tile_uses.resize(p.uses.size());
  for (std::size_t k = 0; k < p.uses.size(); ++k) {
    for (std::size_t c : p.uses[k]) expand(c, p.tile_uses[k]);
  }
  Index next = 0;
  p.slot.assign(p.components.size(), -1);
  for (const auto& list : p.products) {
    for (std::size_t c : list) p.slot[c] = next++;
  }
  for (std::size_t c : p.tiled_sums) p.slot[c] = next++;
  p.n_slots = next;
  return p;
}

/// One pass over blocks of kLossTileRows rows, in parallel, each in chunks of kLossTileCols
/// columns: per writer, one product (its products' Z rows stacked) x (M_w's chunk) gives all
/// its components' tiles, then the sums are added up, then every mask's logits are formed and
/// sum_j exp(logit - row_max_) accumulated (detail::exp_sums, vectorised over the rows). The
/// target's logits come from dot products. Every row's sums are accumulated by one thread in
/// column order and the rows are summed in order, so the losses do not depend on the number of
/// threads. A row whose sum left ExpSumRange (or met a non-finite logit) is recomputed by
/// `row_loss`.
template <typename Scalar>
std::vector<Scalar> PathExpansion<Scalar>::run(const Plan& p,
                                               const std::vector<std::vector<bool>>& keeps) const {
  constexpr int R = detail::kLossTileRows<Scalar>;
  const detail::SimdLevel level = detail::simd_level();
  const Index N = frozen_.rows(), V = full_logits_.cols(), C = std::min(detail::kLossTileCols, V);
  const std::size_t n_comp = p.components.size(), n_masks = keeps.size();
  const Index n_jobs = static_cast<Index>(n_masks), n_slots = p.n_slots;
  const std::vector<std::vector<std::size_t>>& products = p.products;
  const std::vector<Index>& slot = p.slot;
  std::vector<std::vector<Index>> sum_parts;  // per tiled sum: its parts' tile row offsets
  for (std::size_t c : p.tiled_sums) {
    sum_parts.emplace_back();
    for (std::size_t q : p.tile_parts[c]) sum_parts.back().push_back(slot[q] * R);
  }
  detail::TileMasks masks;
  for (std::size_t k = 0; k < n_masks; ++k) {
    masks.minus.push_back(p.minus[k] ? 1 : 0);
    for (std::size_t c : p.tile_uses[k]) masks.parts.push_back(slot[c] * R);
    masks.begin.push_back(static_cast<Index>(masks.parts.size()));
  }

  const Vector<Scalar>& s = frozen_.ln_final_scales();
  const RowVector<Scalar> bias = frozen_.logit_bias();
  const Eigen::Matrix<int, Eigen::Dynamic, 1> target = frozen_.next_tokens();
  const auto Z_of = [&](const Component& c) -> const Matrix<Scalar>& {
    return c.Z.size() != 0 ? c.Z : data_[c.terms.front()].Z;
  };
  Eigen::MatrixXd picked(N, n_jobs), sums(N, n_jobs);  // each mask's target logit - row_max_
  detail::prefault(picked);
  detail::prefault(sums);

  const Index blocks = (N + R - 1) / R;
  CIRCUITRY_OMP_PARALLEL {
    // This thread's buffers: per writer its products' Z rows scaled by s_f ([k R, r]), the
    // components' tiles ([n_slots R, C]), the full logits - row_max_ ([R, C]), the sums [R, masks].
    std::vector<Matrix<Scalar>> stacks(writers_.size());
    for (std::size_t wr = 0; wr < writers_.size(); ++wr) {
      stacks[wr].resize(static_cast<Index>(products[wr].size()) * R, writers_[wr].W.rows());
    }
    Matrix<Scalar> tiles(std::max<Index>(n_slots, 1) * R, C), base = Matrix<Scalar>::Zero(R, C);
    Eigen::MatrixXd acc(R, n_jobs);
    std::vector<double> at_target(n_comp);  // each component's logit at a row's target
    detail::prefault(tiles);
    for (Matrix<Scalar>& stack : stacks) detail::prefault(stack);
    CIRCUITRY_OMP_FOR
    for (Index blk = 0; blk < blocks; ++blk) {
      const Index r0 = blk * R, n = std::min<Index>(R, N - r0);
      for (std::size_t wr = 0; wr < writers_.size(); ++wr) {
        for (std::size_t k = 0; k < products[wr].size(); ++k) {
          auto rows = stacks[wr].middleRows(static_cast<Index>(k) * R, R);
          rows.topRows(n) =
              s.segment(r0, n).asDiagonal() * Z_of(p.components[products[wr][k]]).middleRows(r0, n);
          rows.bottomRows(R - n).setZero();
        }
      }
      for (Index i = 0; i < n; ++i) {  // the target logits, from the stacked rows
        const Index t = target(r0 + i);
        if (t < 0) continue;
        for (std::size_t wr = 0; wr < writers_.size(); ++wr) {
          const Matrix<Scalar>& M = writers_[wr].M;
          for (std::size_t k = 0; k < products[wr].size(); ++k) {
            at_target[products[wr][k]] = static_cast<double>(
                stacks[wr].row(static_cast<Index>(k) * R + i).dot(M.col(t).transpose()));
          }
        }
        for (std::size_t c : p.sums) {
          double v = 0;
          for (std::size_t q : p.components[c].parts) v += at_target[q];
          at_target[c] = v;
        }
        for (std::size_t k = 0; k < n_masks; ++k) {
          double v = static_cast<double>(p.minus[k] ? full_logits_(r0 + i, t) : bias(t));
          for (std::size_t c : p.uses[k]) v += (p.minus[k] ? -1 : 1) * at_target[c];
          picked(r0 + i, static_cast<Index>(k)) = v - static_cast<double>(row_max_(r0 + i));
        }
      }
      Eigen::Matrix<Scalar, R, 1> shift = Eigen::Matrix<Scalar, R, 1>::Zero();
      shift.head(n) = row_max_.segment(r0, n);
      base.setZero();
      acc.setZero();
      for (Index c0 = 0; c0 < V; c0 += C) {
        const Index cc = std::min(C, V - c0);
        for (std::size_t wr = 0; wr < writers_.size(); ++wr) {
          if (products[wr].empty()) continue;
          const Matrix<Scalar>& Zs = stacks[wr];
          const Matrix<Scalar>& M = writers_[wr].M;
          detail::gemm(level, Zs.rows(), cc, Zs.cols(), Zs.data(), Zs.rows(),
                       M.data() + c0 * M.rows(), M.rows(), tiles.data() + slot[products[wr][0]] * R,
                       tiles.rows());
        }
        for (std::size_t k = 0; k < sum_parts.size(); ++k) {
          const std::vector<Index>& parts = sum_parts[k];
          detail::sum_blocks<R>(level, cc, tiles.data(), tiles.rows(), parts.data(),
                                static_cast<Index>(parts.size()),
                                tiles.data() + slot[p.tiled_sums[k]] * R);
        }
        base.topLeftCorner(n, cc) = full_logits_.block(r0, c0, n, cc);
        base.leftCols(cc).colwise() -= shift;
        detail::exp_sums<R>(level, masks, cc, base.data(), bias.data() + c0, shift.data(),
                            tiles.data(), tiles.rows(), acc.data());
      }
      sums.middleRows(r0, n) = acc.topRows(n);
    }
  }

  std::vector<Scalar> out(n_masks);
  for (std::size_t k = 0; k < n_masks; ++k) {
    double total = 0;
    for (Index r = 0; r < N; ++r) {
      if (target(r) < 0) continue;
      const double sum = sums(r, static_cast<Index>(k));
      total += sum >= detail::ExpSumRange<Scalar>::lo && sum <= detail::ExpSumRange<Scalar>::hi
                   ? std::log(sum) - picked(r, static_cast<Index>(k))
                   : row_loss(keeps[k], r);
    }
    out[k] = static_cast<Scalar>(total / static_cast<double>(frozen_.predictions()));
  }
  return out;
}

}  // namespace circuitry
