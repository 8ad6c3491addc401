// Test support: attention-only models with random weights, of any shape, deterministic in a seed.
#pragma once

#include <circuitry/model.hpp>
#include <random>

namespace circuitry::test {

/// The shape and kind of a random model.
struct RandomModelSpec {
  int n_layers = 2;
  int n_heads = 3;
  int d_model = 16;
  int d_head = 4;
  int d_vocab = 40;
  int n_ctx = 12;
  NormalizationType normalization = NormalizationType::LN;
  PositionalEmbeddingType positions = PositionalEmbeddingType::standard;
  unsigned seed = 1;
  double scale = 0.5;  ///< standard deviation of the weights
};

/// A matrix of i.i.d. normal entries (mean 0, standard deviation `scale`).
template <typename Scalar>
Matrix<Scalar> random_matrix(std::mt19937_64& rng, Index rows, Index cols, double scale = 1.0) {
  std::normal_distribution<double> normal(0.0, scale);
  Matrix<Scalar> m(rows, cols);
  for (Index j = 0; j < cols; ++j)
    for (Index i = 0; i < rows; ++i) m(i, j) = static_cast<Scalar>(normal(rng));
  return m;
}

/// A model of the given spec with Gaussian weights and biases, LayerNorm weights near one.
template <typename Scalar>
AttentionOnlyModel<Scalar> random_model(const RandomModelSpec& s) {
  std::mt19937_64 rng(s.seed);
  auto mat = [&](Index r, Index c) { return random_matrix<Scalar>(rng, r, c, s.scale); };
  auto vec = [&](Index n) { return Vector<Scalar>(random_matrix<Scalar>(rng, n, 1, s.scale)); };
  auto layer_norm = [&]() {
    LayerNorm<Scalar> ln;
    ln.type = s.normalization;
    ln.eps = Scalar(1e-5);
    if (s.normalization == NormalizationType::LN) {
      ln.w = Vector<Scalar>::Ones(s.d_model) +
             Vector<Scalar>(random_matrix<Scalar>(rng, s.d_model, 1, 0.2));
      ln.b = vec(s.d_model);
    }
    return ln;
  };
  AttentionOnlyModel<Scalar> m;
  m.config.n_layers = s.n_layers;
  m.config.n_heads = s.n_heads;
  m.config.d_model = s.d_model;
  m.config.d_head = s.d_head;
  m.config.d_vocab = s.d_vocab;
  m.config.n_ctx = s.n_ctx;
  m.config.normalization_type = s.normalization;
  m.config.positional_embedding_type = s.positions;
  m.W_E = mat(s.d_vocab, s.d_model);
  m.W_pos = mat(s.n_ctx, s.d_model);
  for (int l = 0; l < s.n_layers; ++l) {
    AttentionLayer<Scalar> layer;
    layer.ln1 = layer_norm();
    for (int h = 0; h < s.n_heads; ++h) {
      layer.heads.push_back({mat(s.d_model, s.d_head), mat(s.d_model, s.d_head),
                             mat(s.d_model, s.d_head), mat(s.d_head, s.d_model), vec(s.d_head),
                             vec(s.d_head), vec(s.d_head)});
    }
    layer.b_O = vec(s.d_model);
    m.layers.push_back(std::move(layer));
  }
  m.ln_final = layer_norm();
  m.W_U = mat(s.d_model, s.d_vocab);
  m.b_U = vec(s.d_vocab);
  m.check_shapes();
  return m;
}

}  // namespace circuitry::test
