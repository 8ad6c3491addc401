// circuitry-bench: times every weight-based circuit quantity, the whole weight report and the
// forward pass on a model of GPT-2 small's shapes (12 layers x 12 heads, d_model 768, d_head 64,
// d_vocab 50257; random Gaussian weights, seed 0, processed as TransformerLens processes them),
// in float, best of --repeats runs each. Beside each time: the flops the algorithm performs,
// the GFLOP/s achieved, and that rate as a fraction of this machine's measured GEMM rate for
// the same shape of product (Eigen's float GEMM, with the threads the build uses).
//
//   circuitry-bench [--model M.safetensors] [--repeats 3] [--no-forward] [--out BENCH.json]
//
// The README's "Performance" section gives the command and the figures on the project machine.
#include <algorithm>
#include <chrono>
#include <circuitry/circuitry.hpp>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <string>

#include "random_model.hpp"

namespace {

using circuitry::HeadId;
using circuitry::Index;
using Model = circuitry::AttentionOnlyModel<float>;
using Clock = std::chrono::steady_clock;

/// Best wall time of `repeats` calls of `f`, in seconds.
double best_of(int repeats, const std::function<void()>& f) {
  double best = 1e300;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

/// The rate of a float product [m, k] x [k, n], in GFLOP/s (best of `repeats`): Eigen's
/// (kernels = false) or circuitry's AVX2/AVX-512 kernels at simd_level() (multiply_long for a
/// long inner dimension, multiply otherwise; both with the build's threads).
double gemm_rate(Index m, Index k, Index n, int repeats, bool kernels = false) {
  const circuitry::Matrix<float> a = circuitry::Matrix<float>::Random(m, k);
  const circuitry::Matrix<float> b = circuitry::Matrix<float>::Random(k, n);
  circuitry::Matrix<float> c(m, n);
  const double t = best_of(repeats, [&] {
    if (!kernels) {
      c.noalias() = a * b;
    } else if (k > 4 * std::max(m, n)) {
      circuitry::detail::multiply_long(a, b, c);
    } else {
      circuitry::detail::multiply(a, b, c);
    }
  });
  return 2.0 * static_cast<double>(m) * static_cast<double>(k) * static_cast<double>(n) / t / 1e9;
}

struct Row {
  std::string what;
  double seconds;
  double gflop;      // the flops the algorithm performs, in 1e9
  double peak_rate;  // the measured GEMM rate for its shape, GFLOP/s (0: none given)
};

void print(const Row& r) {
  std::printf("%-62s %8.3f s", r.what.c_str(), r.seconds);
  if (r.gflop > 0) {
    const double rate = r.gflop / r.seconds;
    std::printf(" %8.1f GFLOP %7.1f GFLOP/s", r.gflop, rate);
    if (r.peak_rate > 0) std::printf("  %4.0f%% of GEMM", 100.0 * rate / r.peak_rate);
  }
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, out_path;
  int repeats = 3;
  bool forward = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model" && i + 1 < argc) {
      model_path = argv[++i];
    } else if (a == "--repeats" && i + 1 < argc) {
      repeats = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--out" && i + 1 < argc) {
      out_path = argv[++i];
    } else if (a == "--no-forward") {
      forward = false;
    } else {
      std::cerr << "usage: circuitry-bench [--model M.safetensors] [--repeats N] [--no-forward] "
                   "[--out BENCH.json]\n";
      return 2;
    }
  }
  try {
    auto t0 = Clock::now();
    Model model = model_path.empty() ? examples::random_model({}, 0)
                                     : circuitry::load_model<float>(model_path);
    circuitry::process_weights(model);
    const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
    const double L = model.n_layers(), H = model.n_heads(),
                 D = static_cast<double>(model.W_E.cols()),
                 dh = static_cast<double>(model.head(0, 0).W_Q.cols()),
                 V = static_cast<double>(model.W_E.rows());
    const double heads = L * H;
    std::printf("model: %s, %g layers x %g heads, d_model %g, d_head %g, d_vocab %g (%s %.2f s)\n",
                model_path.empty() ? "random, GPT-2 small's shapes, seed 0" : model_path.c_str(), L,
                H, D, dh, V, model_path.empty() ? "made and processed in" : "loaded in", load_s);
#ifdef _OPENMP
    std::printf("threads: %d (OpenMP)\n", omp_get_max_threads());
#else
    std::printf("threads: 1 (no OpenMP)\n");
#endif
    // The GEMM rates of the shapes the quantities reduce to: Eigen's and circuitry's kernels';
    // each row's fraction is of the faster of the two.
    const Index iD = static_cast<Index>(D), iV = static_cast<Index>(V),
                idh = static_cast<Index>(dh);
    const double eigen_gram = gemm_rate(iD, iV, iD, repeats);
    const double eigen_head = gemm_rate(iD, iD, idh, repeats);
    const double eigen_vocab = gemm_rate(1024, idh, iV, repeats);
    const circuitry::detail::SimdLevel level = circuitry::detail::simd_level();
    const bool kernels = level != circuitry::detail::SimdLevel::none;
    const double kernel_gram = kernels ? gemm_rate(iD, iV, iD, repeats, true) : 0;
    const double kernel_head = kernels ? gemm_rate(iD, iD, idh, repeats, true) : 0;
    const double kernel_vocab = kernels ? gemm_rate(1024, idh, iV, repeats, true) : 0;
    const double rate_gram = std::max(eigen_gram, kernel_gram);
    const double rate_head = std::max(eigen_head, kernel_head);
    const double rate_vocab = std::max(eigen_vocab, kernel_vocab);
    const double P = D * (D + 1) / 2;              // packed symmetric d_model x d_model
    const double pairs = H * H * L * (L - 1) / 2;  // causal head pairs
    // Circuitry's AVX2/AVX-512 kernels form whole symmetric products; Eigen's, half of them.
    const double gram_x = kernels ? 2 : 1;
    // Dots of packed Grams: all (L-1)H x (L-1)H pairs in one product with the kernels, the
    // causal pairs only with Eigen's per-layer products.
    const double dots = kernels ? ((L - 1) * H) * ((L - 1) * H) : pairs;
    std::printf(
        "float GEMM, GFLOP/s: [d_model, d_vocab] x [d_vocab, d_model], [d_model, d_model] x "
        "[d_model, d_head], [1024, d_head] x [d_head, d_vocab]\n"
        "  %-28s %7.1f %7.1f %7.1f\n",
        "Eigen:", eigen_gram, eigen_head, eigen_vocab);
    if (kernels) {
      std::printf("  %-28s %7.1f %7.1f %7.1f\n",
                  level == circuitry::detail::SimdLevel::avx512 ? "circuitry kernels (avx512):"
                                                                : "circuitry kernels (avx2):",
                  kernel_gram, kernel_head, kernel_vocab);
    }
    std::printf("\n");

    std::vector<Row> rows;
    auto run = [&](const std::string& what, double gflop, double peak,
                   const std::function<void()>& f) {
      rows.push_back({what, best_of(repeats, f), gflop, peak});
      print(rows.back());
    };
    run("OV eigenvalues, all heads", heads * (2 * dh * dh * D + 10 * dh * dh * dh) / 1e9, 0, [&] {
      for (const HeadId id : model.head_ids()) (void)circuitry::ov_eigenvalues(model, id);
    });
    for (const auto type : {circuitry::CompositionType::Q, circuitry::CompositionType::K,
                            circuitry::CompositionType::V}) {
      // Two packed Grams per head (X Y X^T: 2 d_model^2 d_head, half with Eigen's triangular
      // product) and one dot per pair.
      const double gflop =
          (2 * (L - 1) * H * (gram_x * D * D * dh + 2 * D * dh * dh) + 2 * P * dots) / 1e9;
      run(std::string("composition scores ") + circuitry::to_string(type) + ", all pairs", gflop,
          rate_gram, [&] { (void)circuitry::composition_scores(model, type); });
    }
    // The three kinds at once share the left Grams: four packed Grams per head, three dots.
    run("composition scores Q, K and V at once (all_composition_scores)",
        (4 * (L - 1) * H * (gram_x * D * D * dh + 2 * D * dh * dh) + 6 * P * dots) / 1e9, rate_gram,
        [&] { (void)circuitry::all_composition_scores(model); });
    // W_E^T W_E, W_U W_U^T, W_U W_E: full products with circuitry's kernels, the first two
    // halved (symmetric rank updates) with Eigen's.
    const double gram_gflop = (gram_x + gram_x + 2) * D * D * V / 1e9;
    std::unique_ptr<circuitry::EmbeddingGrams<float>> grams;
    run("embedding Gram matrices (shared by all heads)", gram_gflop, rate_gram,
        [&] { grams = std::make_unique<circuitry::EmbeddingGrams<float>>(model); });
    run("full OV circuit eigenvalues, all heads (given Grams)",
        heads * (2 * D * D * dh + 2 * dh * dh * D + 10 * dh * dh * dh) / 1e9, rate_head, [&] {
          for (const HeadId id : model.head_ids())
            (void)circuitry::full_ov_eigenvalues(model, *grams, id);
        });
    run("full QK circuit eigenvalues, all heads (given Grams)",
        heads * (2 * D * D * dh + 2 * dh * dh * D + 10 * dh * dh * dh) / 1e9, rate_head, [&] {
          for (const HeadId id : model.head_ids())
            (void)circuitry::full_qk_eigenvalues(model, *grams, id);
        });
    run("full QK circuit Frobenius norms, all heads (given Grams)",
        heads * (4 * D * D * dh + 4 * dh * dh * D) / 1e9, rate_head, [&] {
          for (const HeadId id : model.head_ids())
            (void)circuitry::full_qk_frobenius(model, *grams, id);
        });
    run("full-OV diagonal ranks, one head", (2 * V * V * dh) / 1e9, rate_vocab, [&] {
      (void)circuitry::full_ov_circuit(model, HeadId{0, 0}).diagonal_rank();
    });
    // Ranks capped at 5: the work depends on how far each diagonal is from the top of its row.
    run("full-OV top-1/top-5 copying accuracy, one head", 0, 0, [&] {
      (void)circuitry::full_ov_copying_accuracy(model, HeadId{0, 0});
    });
    run("full-OV top-1/top-5 copying accuracy, all heads", 0, 0,
        [&] { (void)circuitry::full_ov_copying_accuracies(model); });
    circuitry::ReportOptions report;
    report.groups = {"spectra", "norms", "composition"};
    run("report --only spectra,norms,composition", 0, 0,
        [&] { (void)circuitry::circuit_report(model, report); });
    if (forward) {
      const Index B = 8, S = 1024;
      circuitry::Tokens tokens(B, S);
      for (Index i = 0; i < tokens.size(); ++i)
        tokens.data()[i] = static_cast<int>((i * 7919) % static_cast<Index>(V));
      const double N = static_cast<double>(B * S);
      const double gflop =
          (heads * (8 * N * D * dh + 2 * static_cast<double>(B) * S * S * dh) + 2 * N * D * V) /
          1e9;
      run("forward pass, 8 x 1024 tokens (logits, loss)", gflop, rate_vocab,
          [&] { (void)circuitry::forward(model, tokens); });
    }
    if (!out_path.empty()) {
      nlohmann::json j;
      j["gemm_gflops"] = {{"eigen", {eigen_gram, eigen_head, eigen_vocab}},
                          {"kernels", {kernel_gram, kernel_head, kernel_vocab}}};
      for (const Row& r : rows)
        j["rows"].push_back({{"what", r.what}, {"seconds", r.seconds}, {"gflop", r.gflop}});
      std::ofstream(out_path) << j.dump(2) << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "circuitry-bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
