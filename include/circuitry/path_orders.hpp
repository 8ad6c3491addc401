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
/// head) and 2 L H + 2 L losses instead of (1 + H)^L terms. Each loss is the mean next-token loss
/// of LN_final_frozen(R) W_U + b_U, [N, d_vocab] logits in row blocks with circuitry's product
/// kernels. It agrees with `summarize(PathExpansion(frozen))` to rounding
/// (tests/test_path_orders.cpp); it has no per-term marginals (`marginal` is empty).

#include <cmath>
#include <vector>

#include "circuitry/detail/frozen_model.hpp"
#include "circuitry/detail/parallel.hpp"
#include "circuitry/path_expansion.hpp"

namespace circuitry {
namespace detail {

/// f_h(X) = A^h Lin_l(X) W_V^h W_O^h, given x = Lin_l(X) [N, d_model]: the head's output on a
/// stream without its value bias.
template <typename Scalar>
Matrix<Scalar> head_linear(const FrozenModel<Scalar>& frozen, HeadId id, const Matrix<Scalar>& x) {
  const AttentionHead<Scalar>& hd = frozen.model().head(id);
  const SimdLevel level = simd_level();
  const Index S = frozen.seq_len(), N = frozen.rows();
  Matrix<Scalar> v, z(N, hd.W_V.cols()), out;
  multiply(x, hd.W_V, v);
  for (Index b = 0; b < frozen.batch(); ++b) {
    causal_product(level, frozen.pattern(id, b), v.data() + b * S, N, v.cols(), z.data() + b * S,
                   N);
  }
  multiply(z, hd.W_O, out);
  return out;
}

/// Mean next-token loss of the frozen logits of R, LN_final_frozen(R) W_U + b_U, formed in
/// blocks of rows (one [64, d_vocab] block per thread at a time, circuitry's product kernels).
template <typename Scalar>
Scalar frozen_loss(const FrozenModel<Scalar>& frozen, const Matrix<Scalar>& R) {
  const AttentionOnlyModel<Scalar>& model = frozen.model();
  const RowVector<Scalar> bias = frozen.logit_bias();
  const SimdLevel level = simd_level();
  const Index D = model.W_U.rows(), V = model.W_U.cols();
  return frozen.mean_loss([&](Index r0, Index n) {
    const Matrix<Scalar> x = FrozenModel<Scalar>::linear_ln(
        model.ln_final, frozen.ln_final_scales().segment(r0, n), R.middleRows(r0, n));
    Matrix<Scalar> logits(n, V);
    gemm(level, n, V, D, x.data(), n, model.W_U.data(), D, logits.data(), n);
    logits.rowwise() += bias;
    return logits;
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
  s.full_loss = detail::frozen_loss(frozen, resid_final);

  // The streams: S[0] direct, S[k] chains of order k; B the constants so far (order 1).
  std::vector<Matrix<Scalar>> S(static_cast<std::size_t>(L) + 1, Matrix<Scalar>::Zero(N, D));
  S[0] = frozen.resid0();
  Matrix<Scalar> B = Matrix<Scalar>::Zero(N, D);
  s.loss_by_layer.push_back(detail::frozen_loss(frozen, S[0]));
  s.heads.resize(static_cast<std::size_t>(L) * static_cast<std::size_t>(H));
  Matrix<Scalar> resid = S[0];  // the frozen stream at layer l's input
  for (int l = 0; l < L; ++l) {
    // Lin_l of each stream read at this layer: S_0 + B, then S_1 .. S_l.
    std::vector<Matrix<Scalar>> read;
    read.push_back(frozen.ln1_linear(l, Matrix<Scalar>(S[0] + B)));
    for (int k = 1; k <= l; ++k)
      read.push_back(frozen.ln1_linear(l, S[static_cast<std::size_t>(k)]));
    RowVector<Scalar> constant = model.layers[static_cast<std::size_t>(l)].b_O.transpose();
    for (int h = 0; h < H; ++h) constant += frozen.value_bias({l, h});
    // The layer's heads in parallel, each on one thread: its two losses.
    detail::parallel_for(H, [&](Index h) {
      const HeadId id{l, static_cast<int>(h)};
      HeadPathLosses<Scalar>& hl =
          s.heads[static_cast<std::size_t>(l) * static_cast<std::size_t>(H) +
                  static_cast<std::size_t>(h)];
      hl.head = id;
      Matrix<Scalar> whole = detail::head_linear(frozen, id, read[0]);  // f_h(S_0 + B)
      hl.without_first_order = detail::frozen_loss(frozen, Matrix<Scalar>(resid_final - whole));
      for (std::size_t k = 1; k < read.size(); ++k)
        whole += detail::head_linear(frozen, id, read[k]);
      whole.rowwise() += frozen.value_bias(id);  // now the head's whole output
      for (int later = l + 1; later < L; ++later) {
        const Matrix<Scalar> x = frozen.ln1_linear(later, whole);
        Matrix<Scalar> out = Matrix<Scalar>::Zero(N, D);
        for (int g = 0; g < H; ++g) out += detail::head_linear(frozen, {later, g}, x);
        whole += out;
      }
      hl.without_everywhere = detail::frozen_loss(frozen, Matrix<Scalar>(resid_final - whole));
    });
    // The streams: S_1 += sum_h f_h(S_0 + B), S_{k+1} += sum_h f_h(S_k); the frozen stream.
    Matrix<Scalar> layer_out = Matrix<Scalar>::Zero(N, D);
    for (std::size_t k = 0; k < read.size(); ++k) {
      for (int h = 0; h < H; ++h) {
        const Matrix<Scalar> out = detail::head_linear(frozen, {l, h}, read[k]);
        S[k + 1] += out;
        layer_out += out;
      }
    }
    B.rowwise() += constant;
    resid += layer_out;
    resid.rowwise() += constant;
    s.loss_by_layer.push_back(l + 1 == L ? s.full_loss : detail::frozen_loss(frozen, resid));
  }

  Matrix<Scalar> partial = S[0];
  s.loss_by_order.push_back(s.loss_by_layer.front());
  for (int k = 1; k <= L; ++k) {
    partial += S[static_cast<std::size_t>(k)];
    if (k == 1) partial += B;
    s.loss_by_order.push_back(k == L ? s.full_loss : detail::frozen_loss(frozen, partial));
  }
  return s;
}

}  // namespace circuitry
