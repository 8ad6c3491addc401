// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file path_orders.hpp
/// The path expansion's summary (path_expansion.hpp: `summarize`) without enumerating the paths:
/// for deep models.
///
/// A model of L layers of H heads has (1 + H)^L - 1 head chains (4 layers of 8 heads: 6560;
/// 6 layers: 531440), each a term of `PathExpansion` with its own [N, d_head] matrix. But every
/// loss of `summarize` except the per-term marginals is the loss of a sum that the frozen model
/// computes layer by layer (patterns and LayerNorm scales frozen, so each head is linear in the
/// stream it reads: f_h(X) = A^h Lin_l(X) W_V^h W_O^h):
///
///  - by order: the streams S_0 = resid_0 (the direct path), B (the biases b_O and the heads'
///    value biases written so far, order 1) and S_k (the chains of order k >= 1). Layer l's head
///    h turns S_0 + B into order-1 terms and S_k into order k + 1: before layer l's constants are
///    added to B, S_1 += sum_h f_h(S_0 + B) and S_{k+1} += sum_h f_h(S_k), all from the layer's
///    input. loss_by_order[k] is the loss of S_0 + [B +] S_1 + ... + S_k (B from k = 1).
///  - by layer: loss_by_layer[l + 1] is the loss of the frozen stream after layer l.
///  - without a head's first-order terms (it reading the direct path and biases): the final
///    stream minus f_h(S_0 + B) at the head's layer.
///  - without every term through a head: the final stream minus the head's whole output
///    f_h(resid_l) + its value bias, carried through the later layers (every chain that starts
///    with it): X, then X += f_{l'}(X) for each later layer l' (without constants).
///
/// So the summary costs O(L^2 H^2) head applications (each head's output through every later
/// head; a layer's heads together, FrozenModel::layer_z and layer_linear) and 2 L H + 2 L losses
/// instead of (1 + H)^L terms. Each loss is the mean next-token loss
/// of LN_final_frozen(R) W_U + b_U, [N, d_vocab] logits in row blocks with circuitry's product
/// kernels. A head's first-order terms z_1 W_O, and the whole output of a last-layer head, are
/// of rank d_head (+ 1): their losses take one pass per layer in which a block's logits of the
/// final stream are formed once and each head's are that minus diag(s_f) z_1 M, a product of
/// rank d_head instead of d_model (frozen_losses_without). It agrees with
/// `summarize(PathExpansion(frozen))` to rounding (tests/test_path_orders.cpp); it has no
/// per-term marginals (`marginal` is empty).

#include <cmath>
#include <string>
#include <vector>

#include "circuitry/detail/frozen_model.hpp"
#include "circuitry/detail/parallel.hpp"
#include "circuitry/path_expansion.hpp"

namespace circuitry {
namespace detail {

/// A low-rank part Z W of the final stream (Z [N, r], W [r, d_model]).
template <typename Scalar>
struct StreamPart {
  Matrix<Scalar> Z;
  Matrix<Scalar> W;
};

/// The mean next-token losses of LN_final_frozen(R - Z_i W_i) W_U + b_U, one per part, in one
/// pass over blocks of rows (FrozenModel::mean_losses): a block's logits of R once
/// ([64, d_model] W_U), then each part's as diag(s_f) Z_i M_i with M_i = W_i,c [diag(w_f)] W_U
/// (FrozenModel::read_through): r_i / d_model of a dense product each.
template <typename Scalar>
std::vector<Scalar> frozen_losses_without(const FrozenModel<Scalar>& frozen,
                                          const Matrix<Scalar>& R,
                                          const std::vector<StreamPart<Scalar>>& parts) {
  const AttentionOnlyModel<Scalar>& model = frozen.model();
  const Index D = model.W_U.rows(), V = model.W_U.cols();
  const Index P = static_cast<Index>(parts.size());
  std::vector<Matrix<Scalar>> M(parts.size());
  CIRCUITRY_OMP_PARALLEL_FOR
  for (Index i = 0; i < P; ++i) {
    M[static_cast<std::size_t>(i)] = FrozenModel<Scalar>::read_through(
        model.ln_final, parts[static_cast<std::size_t>(i)].W, model.W_U);
  }
  const RowVector<Scalar> bias = frozen.logit_bias();
  const Vector<Scalar>& s = frozen.ln_final_scales();
  const SimdLevel level = simd_level();
  return frozen.mean_losses(P, [&](Index r0, Index n, const auto& loss_of) {
    const Matrix<Scalar> x =
        FrozenModel<Scalar>::linear_ln(model.ln_final, s.segment(r0, n), R.middleRows(r0, n));
    Matrix<Scalar> base(n, V), logits(n, V);
    gemm(level, n, V, D, x.data(), n, model.W_U.data(), D, base.data(), n);
    base.rowwise() += bias;
    for (Index i = 0; i < P; ++i) {
      const Matrix<Scalar>& Z = parts[static_cast<std::size_t>(i)].Z;
      const Matrix<Scalar>& Mi = M[static_cast<std::size_t>(i)];
      const Matrix<Scalar> zs = s.segment(r0, n).asDiagonal() * Z.middleRows(r0, n);
      gemm(level, n, V, Mi.rows(), zs.data(), n, Mi.data(), Mi.rows(), logits.data(), n);
      logits = base - logits;
      loss_of(i, logits);
    }
  });
}

}  // namespace detail

/// The `summarize` of the full path expansion of `frozen` (every order, no truncation),
/// computed from sums of streams (see above) instead of (1 + H)^L terms: `uniform_loss`,
/// `full_loss` (the loss of the frozen model's final stream), `loss_by_order` [L + 1],
/// `loss_by_layer` [L + 1] and `heads` (in head order); `marginal` is empty. argument_error if
/// some layer's patterns were released.
template <typename Scalar>
PathExpansionSummary<Scalar> summarize_by_order(const FrozenModel<Scalar>& frozen) {
  const AttentionOnlyModel<Scalar>& model = frozen.model();
  const int L = model.n_layers(), H = model.n_heads();
  const Index N = frozen.rows(), D = model.config.d_model;
  for (int l = 0; l < L; ++l) {
    if (!frozen.has_patterns(l)) {
      throw argument_error("summarize_by_order: the frozen model's layer " + std::to_string(l) +
                           " patterns were released");
    }
  }
  PathExpansionSummary<Scalar> s;
  s.uniform_loss = static_cast<Scalar>(std::log(static_cast<double>(model.config.d_vocab)));

  const Matrix<Scalar> resid_final = frozen.resid_final(frozen.resid0(), true);
  s.full_loss = frozen.loss(resid_final);

  // The streams: S[0] direct, S[k] chains of order k; B the constants so far (order 1).
  std::vector<Matrix<Scalar>> S(static_cast<std::size_t>(L) + 1, Matrix<Scalar>::Zero(N, D));
  S[0] = frozen.resid0();
  Matrix<Scalar> B = Matrix<Scalar>::Zero(N, D);
  s.loss_by_layer.push_back(frozen.loss(S[0]));
  s.heads.resize(static_cast<std::size_t>(L) * static_cast<std::size_t>(H));
  for (int l = 0; l < L; ++l) {
    // Z[k] = [z^0 ... z^{H-1}] of the layer's heads on each stream it reads: k = 0 on S_0 + B,
    // k >= 1 on S_k (FrozenModel::layer_z); their sum is what the heads read from the whole
    // frozen stream.
    std::vector<Matrix<Scalar>> Z;
    Z.push_back(frozen.layer_z(l, Matrix<Scalar>(S[0] + B)));
    for (int k = 1; k <= l; ++k) Z.push_back(frozen.layer_z(l, S[static_cast<std::size_t>(k)]));
    Matrix<Scalar> Z_all = Z[0];
    for (std::size_t k = 1; k < Z.size(); ++k) Z_all += Z[k];
    const Index d = model.config.d_head;
    const RowVector<Scalar> constant = frozen.layer_constant(l);
    // The layer's heads in parallel, each on one thread. A head's first-order terms
    // f_h(S_0 + B) = z^h_0 W_O^h, a low-rank part (losses below); its whole output
    // z^h W_O^h + value bias, carried through the later layers: a dense one, whose loss is taken
    // here, or, in the last layer, a low-rank one ([z^h, 1] [W_O^h; value bias]).
    std::vector<detail::StreamPart<Scalar>> parts(static_cast<std::size_t>(l + 1 == L ? 2 * H : H));
    detail::parallel_for(H, [&](Index h) {
      const HeadId id{l, static_cast<int>(h)};
      const AttentionHead<Scalar>& hd = model.head(id);
      HeadPathLosses<Scalar>& hl =
          s.heads[static_cast<std::size_t>(l) * static_cast<std::size_t>(H) +
                  static_cast<std::size_t>(h)];
      hl.head = id;
      detail::StreamPart<Scalar>& first = parts[static_cast<std::size_t>(h)];
      first.Z = Z[0].middleCols(h * d, d);
      first.W = hd.W_O;
      const Matrix<Scalar> z = Z_all.middleCols(h * d, d);
      const RowVector<Scalar> vb = frozen.value_bias(id);
      if (l + 1 == L) {
        detail::StreamPart<Scalar>& all = parts[static_cast<std::size_t>(H + h)];
        all.Z.resize(N, d + 1);
        all.Z << z, Matrix<Scalar>::Ones(N, 1);
        all.W.resize(d + 1, D);
        all.W << hd.W_O, vb;
        return;
      }
      Matrix<Scalar> whole;
      detail::multiply(z, hd.W_O, whole);
      whole.rowwise() += vb;
      for (int later = l + 1; later < L; ++later) whole += frozen.layer_linear(later, whole);
      hl.without_everywhere = frozen.loss(Matrix<Scalar>(resid_final - whole));
    });
    // The streams: S_1 += sum_h f_h(S_0 + B), S_{k+1} += sum_h f_h(S_k), each one product
    // Z[k] W_O_stacked; the frozen stream after the layer is S_0 + B + S_1 + ... + S_{l+1}.
    const Matrix<Scalar> W_O = model.layers[static_cast<std::size_t>(l)].W_O_stacked();
    Matrix<Scalar> out;
    for (std::size_t k = 0; k < Z.size(); ++k) {
      detail::multiply(Z[k], W_O, out);
      S[k + 1] += out;
    }
    Z.clear();  // not needed below: freed before the losses
    Z_all.resize(0, 0);
    const std::vector<Scalar> without = detail::frozen_losses_without(frozen, resid_final, parts);
    for (int h = 0; h < H; ++h) {
      HeadPathLosses<Scalar>& hl =
          s.heads[static_cast<std::size_t>(l) * static_cast<std::size_t>(H) +
                  static_cast<std::size_t>(h)];
      hl.without_first_order = without[static_cast<std::size_t>(h)];
      if (l + 1 == L)
        hl.without_everywhere = without[static_cast<std::size_t>(H) + static_cast<std::size_t>(h)];
    }
    B.rowwise() += constant;
    if (l + 1 == L) {
      s.loss_by_layer.push_back(s.full_loss);
    } else {
      Matrix<Scalar> resid = S[0] + B;
      for (int k = 1; k <= l + 1; ++k) resid += S[static_cast<std::size_t>(k)];
      s.loss_by_layer.push_back(frozen.loss(resid));
    }
  }

  Matrix<Scalar> partial = S[0];
  s.loss_by_order.push_back(s.loss_by_layer.front());
  for (int k = 1; k <= L; ++k) {
    partial += S[static_cast<std::size_t>(k)];
    if (k == 1) partial += B;
    s.loss_by_order.push_back(k == L ? s.full_loss : frozen.loss(partial));
  }
  return s;
}

}  // namespace circuitry
