// make-random-model: writes an attention-only model with random Gaussian weights, in
// TransformerLens's safetensors naming, for benchmarks and memory checks at real scale.
// Deterministic in --seed. Defaults give GPT-2 small's shapes (12 layers x 12 heads, d_model
// 768, d_head 64, d_vocab 50257, n_ctx 1024): a 600 MB file in F32.
//
//   make-random-model OUT.safetensors [--layers 12] [--heads 12] [--d-model 768] [--d-head 64]
//                     [--d-vocab 50257] [--n-ctx 1024] [--seed 0]
#include <circuitry/circuitry.hpp>
#include <iostream>
#include <random>
#include <string>

namespace {

/// Fills `m` with N(0, scale^2) entries from a fast generator (weights in the range real models
/// have: W_E entries ~0.1, W_Q ~ 1/sqrt(d_model)).
void fill(circuitry::Matrix<float>& m, std::mt19937_64& rng, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  float* p = m.data();
  for (Eigen::Index i = 0; i < m.size(); ++i) p[i] = normal(rng);
}

}  // namespace

int main(int argc, char** argv) {
  std::string out;
  int layers = 12, heads = 12, d_model = 768, d_head = 64, d_vocab = 50257, n_ctx = 1024;
  unsigned long long seed = 0;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> long long {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return std::stoll(argv[++i]);
      };
      if (a == "--layers")
        layers = static_cast<int>(next());
      else if (a == "--heads")
        heads = static_cast<int>(next());
      else if (a == "--d-model")
        d_model = static_cast<int>(next());
      else if (a == "--d-head")
        d_head = static_cast<int>(next());
      else if (a == "--d-vocab")
        d_vocab = static_cast<int>(next());
      else if (a == "--n-ctx")
        n_ctx = static_cast<int>(next());
      else if (a == "--seed")
        seed = static_cast<unsigned long long>(next());
      else if (!a.empty() && a[0] != '-' && out.empty())
        out = a;
      else
        throw std::invalid_argument("unknown argument '" + a + "'");
    }
    if (out.empty()) throw std::invalid_argument("no output file given");
    circuitry::AttentionOnlyModel<float> m;
    m.config = {layers,
                heads,
                d_model,
                d_head,
                d_vocab,
                n_ctx,
                circuitry::NormalizationType::LN,
                circuitry::PositionalEmbeddingType::standard};
    m.config.validate("make-random-model");
    std::mt19937_64 rng(seed);
    const float w_scale = 1.0f / std::sqrt(static_cast<float>(d_model));
    auto matrix = [&](Eigen::Index r, Eigen::Index c, float scale) {
      circuitry::Matrix<float> x(r, c);
      fill(x, rng, scale);
      return x;
    };
    m.W_E = matrix(d_vocab, d_model, 0.1f);
    m.W_pos = matrix(n_ctx, d_model, 0.02f);
    for (int l = 0; l < layers; ++l) {
      circuitry::AttentionLayer<float> layer;
      layer.ln1.type = circuitry::NormalizationType::LN;
      layer.ln1.w = circuitry::Vector<float>::Ones(d_model);
      layer.ln1.b = circuitry::Vector<float>::Zero(d_model);
      for (int h = 0; h < heads; ++h) {
        circuitry::AttentionHead<float> head;
        head.W_Q = matrix(d_model, d_head, w_scale);
        head.W_K = matrix(d_model, d_head, w_scale);
        head.W_V = matrix(d_model, d_head, w_scale);
        head.W_O = matrix(d_head, d_model, 1.0f / std::sqrt(static_cast<float>(d_head)));
        head.b_Q = circuitry::Vector<float>::Zero(d_head);
        head.b_K = head.b_Q;
        head.b_V = head.b_Q;
        layer.heads.push_back(std::move(head));
      }
      layer.b_O = circuitry::Vector<float>::Zero(d_model);
      m.layers.push_back(std::move(layer));
    }
    m.ln_final = m.layers[0].ln1;
    m.W_U = matrix(d_model, d_vocab, w_scale);
    m.b_U = circuitry::Vector<float>::Zero(d_vocab);
    circuitry::save_model(m, out);
  } catch (const std::exception& e) {
    std::cerr << "make-random-model: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
