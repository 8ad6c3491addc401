// path_expansion_bench: times the stages of the report's path expansion (forward pass with the
// pattern cache, PathExpansion, summarize with the 64 virtual-head marginals) and the products
// and sums of exponentials of PathExpansion::losses on their own, at the SIMD level that
// CIRCUITRY_SIMD selects (avx512, avx2, none).
//
//     path_expansion_bench MODEL.safetensors TOKENS.json [double|float] [repeats]
//
// With BENCH_KERNELS set, it also times the kernels alone; with BENCH_NO_SUMMARY, it skips
// summarize.
//
// Built with the examples (target path-expansion-bench), e.g.
//     build/release/examples/path-expansion-bench
//         examples/models/attn-only-2l.safetensors examples/tokens/eval-batch-8x256.json double 5
#include <algorithm>
#include <chrono>
#include <circuitry/circuitry.hpp>
#include <circuitry/data_report.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

template <typename Scalar>
void bench(const std::string& model_path, const std::string& tokens_path, int repeats) {
  using circuitry::Index;
  using Clock = std::chrono::steady_clock;
  auto model = circuitry::processed(circuitry::load_model<Scalar>(model_path));
  const circuitry::Tokens tokens = circuitry::read_tokens_json(tokens_path);
  const circuitry::detail::SimdLevel level = circuitry::detail::simd_level();
  std::printf("level %s, %d threads, %s\n", circuitry::detail::simd_level_name(level),
              circuitry::detail::max_threads(), sizeof(Scalar) == 8 ? "double" : "float");
  for (int rep = 0; rep < repeats; ++rep) {
    circuitry::ForwardOptions options;
    options.cache = true;
    options.cache_activations = false;
    options.cache_residual = false;
    auto t0 = Clock::now();
    circuitry::ForwardResult<Scalar> run = circuitry::forward(model, tokens, options);
    const double t_forward = seconds_since(t0);
    t0 = Clock::now();
    circuitry::PathExpansionOptions expand;
    expand.keep_patterns = false;  // as the report does
    const circuitry::PathExpansion<Scalar> pe(model, tokens, std::move(run), expand);
    const double t_expand = seconds_since(t0);
    std::vector<std::size_t> virtual_terms;
    for (std::size_t i = 0; i < pe.size(); ++i) {
      const circuitry::PathTerm& t = pe.term(i);
      if (t.source == circuitry::PathSource::direct && t.chain.size() == 2) {
        virtual_terms.push_back(i);
      }
    }
    if (std::getenv("BENCH_NO_SUMMARY") != nullptr) {
      std::printf("forward %.3f s  expansion %.3f s\n", t_forward, t_expand);
      continue;
    }
    t0 = Clock::now();
    const auto s = circuitry::summarize(pe, virtual_terms);
    const double t_summary = seconds_since(t0);
    std::printf("forward %.3f s  expansion %.3f s  summarize %.3f s  (full loss %.12f)\n",
                t_forward, t_expand, t_summary, static_cast<double>(s.full_loss));
  }

  if (std::getenv("BENCH_KERNELS") == nullptr) return;
  // The kernels alone, one thread: products [k R, 32] x [32, 64] and the sums of exponentials.
  constexpr int R = circuitry::detail::kLossTileRows<Scalar>;
  const Index C = 64, rank = 32, stacked = 10 * R, reps = 2000;
  const circuitry::Matrix<Scalar> A = circuitry::Matrix<Scalar>::Random(stacked, rank);
  const circuitry::Matrix<Scalar> B = circuitry::Matrix<Scalar>::Random(rank, C);
  circuitry::Matrix<Scalar> T(stacked, C);
  auto t0 = Clock::now();
  for (Index r = 0; r < reps; ++r) {
    circuitry::detail::gemm(level, stacked, C, rank, A.data(), stacked, B.data(), rank, T.data(),
                            stacked);
  }
  const double t_gemm = seconds_since(t0);
  std::printf("gemm %.2f GFLOP/s\n", 2.0 * stacked * C * rank * reps / t_gemm * 1e-9);
  {  // The logits' product, [2048, 256] x [256, 4096], in parallel; q = x W_Q for one sequence.
    const circuitry::Matrix<Scalar> x = circuitry::Matrix<Scalar>::Random(2048, 256);
    const circuitry::Matrix<Scalar> W = circuitry::Matrix<Scalar>::Random(256, 4096);
    circuitry::Matrix<Scalar> out;
    circuitry::detail::multiply(x, W, out);
    t0 = Clock::now();
    for (int r = 0; r < 5; ++r) circuitry::detail::multiply(x, W, out);
    std::printf("multiply [2048, 256] x [256, 4096]: %.2f GFLOP/s\n",
                2.0 * 2048 * 256 * 4096 * 5 / seconds_since(t0) * 1e-9);
    circuitry::Matrix<Scalar> q(256, 32);
    t0 = Clock::now();
    for (int r = 0; r < 200; ++r) {
      circuitry::detail::gemm(level, 256, 32, 256, x.data() + (r % 8) * 256, 2048, W.data(), 256,
                              q.data(), 256);
    }
    std::printf("q = x W_Q [256, 256] x [256, 32]: %.2f GFLOP/s\n",
                2.0 * 256 * 256 * 32 * 200 / seconds_since(t0) * 1e-9);
  }
  circuitry::detail::TileMasks masks;
  for (Index k = 0; k < 10; ++k) {
    masks.minus.push_back(1);
    masks.parts.push_back(k * R);
    masks.begin.push_back(static_cast<Index>(masks.parts.size()));
  }
  const circuitry::Matrix<Scalar> base = circuitry::Matrix<Scalar>::Random(R, C);
  const circuitry::Vector<Scalar> bias = circuitry::Vector<Scalar>::Random(C);
  const circuitry::Vector<Scalar> shift = circuitry::Vector<Scalar>::Zero(R);
  Eigen::MatrixXd acc = Eigen::MatrixXd::Zero(R, 10);
  t0 = Clock::now();
  for (Index r = 0; r < reps; ++r) {
    circuitry::detail::exp_sums<R>(level, masks, C, base.data(), bias.data(), shift.data(),
                                   T.data(), stacked, acc.data());
  }
  const double t_exp = seconds_since(t0);
  std::printf("exp_sums %.3f G exp/s (checksum %g)\n", 10.0 * R * C * reps / t_exp * 1e-9,
              acc.sum());
  {  // The forward pass's per-token losses: row-wise log-sum-exp of [2048, 4096] logits.
    const circuitry::Matrix<Scalar> logits =
        circuitry::Matrix<Scalar>::Random(2048, 4096) * Scalar(10);
    double best = 1e9, checksum = 0;
    for (int r = 0; r < 5; ++r) {
      t0 = Clock::now();
      checksum += static_cast<double>(circuitry::detail::row_logsumexp(logits).sum());
      best = std::min(best, seconds_since(t0));
    }
    std::printf("row_logsumexp [2048, 4096]: %.4f s (best of 5, checksum %g)\n", best, checksum);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.safetensors TOKENS.json [double|float] [repeats]\n",
                 argv[0]);
    return 2;
  }
  const std::string precision = argc > 3 ? argv[3] : "double";
  const int repeats = argc > 4 ? std::stoi(argv[4]) : 3;
  if (precision == "float") {
    bench<float>(argv[1], argv[2], repeats);
  } else {
    bench<double>(argv[1], argv[2], repeats);
  }
  return 0;
}
