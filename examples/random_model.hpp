// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

// random_model: an attention-only model with random Gaussian weights in the range real models
// have (W_E entries ~0.1, W_Q ~ 1/sqrt(d_model)), LayerNorm with unit weights, no biases.
// Deterministic in the seed. Shared by make-random-model (which saves it) and circuitry-bench
// (which builds it in memory). Defaults: GPT-2 small's shapes.
#include <circuitry/circuitry.hpp>
#include <cmath>
#include <random>

namespace examples {

struct RandomModelShape {
  int layers = 12, heads = 12, d_model = 768, d_head = 64, d_vocab = 50257, n_ctx = 1024;
};

/// `m` filled with N(0, scale^2) entries.
inline void fill_gaussian(circuitry::Matrix<float>& m, std::mt19937_64& rng, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  float* p = m.data();
  for (Eigen::Index i = 0; i < m.size(); ++i) p[i] = normal(rng);
}

inline circuitry::AttentionOnlyModel<float> random_model(const RandomModelShape& s,
                                                         unsigned long long seed) {
  circuitry::AttentionOnlyModel<float> m;
  m.config = {s.layers,
              s.heads,
              s.d_model,
              s.d_head,
              s.d_vocab,
              s.n_ctx,
              circuitry::NormalizationType::LN,
              circuitry::PositionalEmbeddingType::standard};
  m.config.validate("random_model");
  std::mt19937_64 rng(seed);
  const float w_scale = 1.0f / std::sqrt(static_cast<float>(s.d_model));
  auto matrix = [&](Eigen::Index r, Eigen::Index c, float scale) {
    circuitry::Matrix<float> x(r, c);
    fill_gaussian(x, rng, scale);
    return x;
  };
  m.W_E = matrix(s.d_vocab, s.d_model, 0.1f);
  m.W_pos = matrix(s.n_ctx, s.d_model, 0.02f);
  for (int l = 0; l < s.layers; ++l) {
    circuitry::AttentionLayer<float> layer;
    layer.ln1.type = circuitry::NormalizationType::LN;
    layer.ln1.w = circuitry::Vector<float>::Ones(s.d_model);
    layer.ln1.b = circuitry::Vector<float>::Zero(s.d_model);
    for (int h = 0; h < s.heads; ++h) {
      circuitry::AttentionHead<float> head;
      head.W_Q = matrix(s.d_model, s.d_head, w_scale);
      head.W_K = matrix(s.d_model, s.d_head, w_scale);
      head.W_V = matrix(s.d_model, s.d_head, w_scale);
      head.W_O = matrix(s.d_head, s.d_model, 1.0f / std::sqrt(static_cast<float>(s.d_head)));
      head.b_Q = circuitry::Vector<float>::Zero(s.d_head);
      head.b_K = head.b_Q;
      head.b_V = head.b_Q;
      layer.heads.push_back(std::move(head));
    }
    layer.b_O = circuitry::Vector<float>::Zero(s.d_model);
    m.layers.push_back(std::move(layer));
  }
  m.ln_final = m.layers[0].ln1;
  m.W_U = matrix(s.d_model, s.d_vocab, w_scale);
  m.b_U = circuitry::Vector<float>::Zero(s.d_vocab);
  return m;
}

}  // namespace examples
