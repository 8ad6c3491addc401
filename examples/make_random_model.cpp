// make-random-model: writes an attention-only model with random Gaussian weights, in
// TransformerLens's safetensors naming, for benchmarks and memory checks at real scale.
// Deterministic in --seed. Defaults give GPT-2 small's shapes (12 layers x 12 heads, d_model
// 768, d_head 64, d_vocab 50257, n_ctx 1024): a 425 MB file in F32.
//
//   make-random-model OUT.safetensors [--layers 12] [--heads 12] [--d-model 768] [--d-head 64]
//                     [--d-vocab 50257] [--n-ctx 1024] [--seed 0]
#include <circuitry/circuitry.hpp>
#include <iostream>
#include <string>

#include "random_model.hpp"

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
    examples::RandomModelShape shape;
    shape.layers = layers;
    shape.heads = heads;
    shape.d_model = d_model;
    shape.d_head = d_head;
    shape.d_vocab = d_vocab;
    shape.n_ctx = n_ctx;
    const circuitry::AttentionOnlyModel<float> m = examples::random_model(shape, seed);
    circuitry::save_model(m, out);
  } catch (const std::exception& e) {
    std::cerr << "make-random-model: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
