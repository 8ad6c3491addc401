// forward.hpp: the forward pass with cache, against TransformerLens's figures on the shared
// models and against a naive position-by-position implementation on random models.
#include <doctest/doctest.h>

#include <array>
#include <circuitry/forward.hpp>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "support/random_model.hpp"
#include "support/reference.hpp"
#include "support/simd_levels.hpp"

using namespace circuitry;

namespace {

// Straight from the formulas of forward.hpp, one sequence, one position at a time, with no
// shared code: the logits [S, d_vocab] of `seq`.
Matrix<double> naive_logits(const AttentionOnlyModel<double>& m, const std::vector<int>& seq) {
  const Index S = static_cast<Index>(seq.size());
  const bool shortformer =
      m.config.positional_embedding_type == PositionalEmbeddingType::shortformer;
  auto ln = [](const LayerNorm<double>& n, RowVector<double> r) {
    if (n.type == NormalizationType::none) return r;
    const double mean = r.mean();
    double var = 0;
    for (Index i = 0; i < r.size(); ++i) var += (r(i) - mean) * (r(i) - mean);
    var /= static_cast<double>(r.size());
    for (Index i = 0; i < r.size(); ++i) r(i) = (r(i) - mean) / std::sqrt(var + n.eps);
    if (n.type == NormalizationType::LN) r = r.cwiseProduct(n.w.transpose()) + n.b.transpose();
    return r;
  };
  std::vector<RowVector<double>> resid;
  for (Index p = 0; p < S; ++p) {
    RowVector<double> r = m.W_E.row(seq[static_cast<std::size_t>(p)]);
    if (!shortformer) r += m.W_pos.row(p);
    resid.push_back(r);
  }
  for (const auto& layer : m.layers) {
    std::vector<RowVector<double>> next = resid;
    for (const auto& hd : layer.heads) {
      for (Index i = 0; i < S; ++i) {
        RowVector<double> xi = ln(layer.ln1, resid[static_cast<std::size_t>(i)]);
        if (shortformer) xi += m.W_pos.row(i);
        const RowVector<double> q = xi * hd.W_Q + hd.b_Q.transpose();
        std::vector<double> score;
        for (Index j = 0; j <= i; ++j) {
          RowVector<double> xj = ln(layer.ln1, resid[static_cast<std::size_t>(j)]);
          if (shortformer) xj += m.W_pos.row(j);
          const RowVector<double> k = xj * hd.W_K + hd.b_K.transpose();
          score.push_back(q.dot(k) / std::sqrt(static_cast<double>(hd.d_qk())));
        }
        const double mx = *std::max_element(score.begin(), score.end());
        double total = 0;
        for (double& s : score) total += (s = std::exp(s - mx));
        RowVector<double> z = RowVector<double>::Zero(hd.d_ov());
        for (Index j = 0; j <= i; ++j) {
          const RowVector<double> v =
              ln(layer.ln1, resid[static_cast<std::size_t>(j)]) * hd.W_V + hd.b_V.transpose();
          z += score[static_cast<std::size_t>(j)] / total * v;
        }
        next[static_cast<std::size_t>(i)] += z * hd.W_O;
      }
    }
    for (auto& r : next) r += layer.b_O.transpose();
    resid = next;
  }
  Matrix<double> logits(S, m.config.d_vocab);
  for (Index p = 0; p < S; ++p) {
    logits.row(p) = ln(m.ln_final, resid[static_cast<std::size_t>(p)]) * m.W_U + m.b_U.transpose();
  }
  return logits;
}

std::vector<std::vector<int>> random_sequences(int batch, int len, int d_vocab, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> token(0, d_vocab - 1);
  std::vector<std::vector<int>> out(static_cast<std::size_t>(batch));
  for (auto& s : out) {
    for (int p = 0; p < len; ++p) s.push_back(token(gen));
  }
  return out;
}

// Logits minus their row mean: what is left after center_unembed's per-row shift.
Matrix<double> centred(const Matrix<double>& logits) {
  return logits.colwise() - logits.rowwise().mean();
}

}  // namespace

TEST_CASE("the forward pass reproduces TransformerLens's losses, log-probs and patterns") {
  for (const std::string& name : test::shared_models()) {
    CAPTURE(name);
    const nlohmann::json& ref = test::reference(name);
    const nlohmann::json& eval = ref.at("eval_batch");
    const AttentionOnlyModel<double>& model = test::processed_model<double>(name);
    ForwardOptions options;
    options.cache = true;
    options.cache_activations = false;
    options.cache_residual = false;
    const auto run =
        forward(model, eval.at("tokens").get<std::vector<std::vector<int>>>(), options);

    CHECK(std::abs(run.loss_mean - eval.at("loss_mean").get<double>()) < 1e-4);
    for (std::size_t b = 0; b < 8; ++b) {
      CHECK(std::abs(run.loss_per_seq(static_cast<Index>(b)) -
                     eval.at("loss_per_seq").at(b).get<double>()) < 1e-4);
    }
    const Vector<double> lp = run.logprob_next(0);
    REQUIRE(lp.size() == 255);
    double worst = 0;
    for (std::size_t p = 0; p < 255; ++p) {
      worst = std::max(worst, std::abs(lp(static_cast<Index>(p)) -
                                       eval.at("logprob_next_seq0").at(p).get<double>()));
    }
    CHECK(worst < 1e-4);
    for (const auto& item : eval.at("top5_next_seq0_pos").items()) {
      const std::string pos = item.key();
      CAPTURE(pos);
      CHECK(run.top_k(0, std::stoi(pos), 5) == item.value().get<std::vector<int>>());
    }
    worst = 0;
    for (const auto& item : ref.at("pattern_seq0_corner16").items()) {
      const std::string& head = item.key();
      const HeadId id{head[1] - '0', head[3] - '0'};
      const Matrix<double>& pattern = run.cache->pattern(id, 0);
      for (std::size_t i = 0; i < 16; ++i) {
        for (std::size_t j = 0; j < 16; ++j) {
          worst = std::max(worst, std::abs(pattern(static_cast<Index>(i), static_cast<Index>(j)) -
                                           item.value().at(i).at(j).get<double>()));
        }
      }
    }
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("raw and processed weights give the same log-probabilities") {
  SUBCASE("on the shared models") {
    for (const std::string& name : test::shared_models()) {
      CAPTURE(name);
      const auto tokens = random_sequences(2, 64, 4096, 3);
      const auto raw = forward(load_model<double>(test::model_path(name)), tokens);
      const auto proc = forward(test::processed_model<double>(name), tokens);
      // center_unembed shifts each row of logits by a constant; log_softmax does not see it.
      CHECK((centred(raw.logits) - centred(proc.logits)).cwiseAbs().maxCoeff() < 1e-9);
      CHECK((raw.log_probs(1) - proc.log_probs(1)).cwiseAbs().maxCoeff() < 1e-9);
      CHECK(std::abs(raw.loss_mean - proc.loss_mean) < 1e-9);
    }
  }
  SUBCASE("on random models with LayerNorm and standard positions") {
    for (unsigned seed : {1u, 2u, 3u}) {
      test::RandomModelSpec spec;
      spec.seed = seed;
      spec.n_layers = static_cast<int>(seed);
      const auto raw = test::random_model<double>(spec);
      const auto tokens = random_sequences(3, spec.n_ctx, spec.d_vocab, seed);
      const auto a = forward(raw, tokens), b = forward(processed(raw), tokens);
      CHECK((centred(a.logits) - centred(b.logits)).cwiseAbs().maxCoeff() < 1e-9);
    }
  }
}

TEST_CASE_TEMPLATE("the forward pass agrees with a naive position-by-position implementation",
                   Scalar, float, double) {
  const double tol = std::is_same<Scalar, float>::value ? 1e-3 : 1e-10;
  for (NormalizationType norm :
       {NormalizationType::none, NormalizationType::LN, NormalizationType::LNPre}) {
    for (PositionalEmbeddingType pos :
         {PositionalEmbeddingType::standard, PositionalEmbeddingType::shortformer}) {
      test::RandomModelSpec spec;
      spec.normalization = norm;
      spec.positions = pos;
      spec.seed = 7;
      CAPTURE(to_string(norm));
      CAPTURE(to_string(pos));
      const auto model = test::random_model<double>(spec);
      const auto tokens = random_sequences(3, 10, spec.d_vocab, 11);
      const auto run = forward(model.template cast<Scalar>(), tokens);
      for (Index b = 0; b < 3; ++b) {
        const Matrix<double> expected = naive_logits(model, tokens[static_cast<std::size_t>(b)]);
        const Matrix<double> got = run.logits.middleRows(b * 10, 10).template cast<double>();
        CHECK((got - expected).cwiseAbs().maxCoeff() < tol * (1 + expected.cwiseAbs().maxCoeff()));
      }
    }
  }
}

TEST_CASE_TEMPLATE("float and double forward passes agree on attn-only-2l", Scalar, float, double) {
  const auto tokens = random_sequences(2, 128, 4096, 5);
  const auto d = forward(test::processed_model<double>("attn-only-2l"), tokens);
  const auto s = forward(test::processed_model<Scalar>("attn-only-2l"), tokens);
  const double tol = std::is_same<Scalar, float>::value ? 1e-3 : 1e-12;
  CHECK(std::abs(static_cast<double>(s.loss_mean) - d.loss_mean) < tol);
  CHECK((s.log_probs(0).template cast<double>() - d.log_probs(0)).cwiseAbs().maxCoeff() < 10 * tol);
}

TEST_CASE(
    "the cache holds the residual stream by component, the LayerNorm scales and every "
    "head's activations") {
  for (PositionalEmbeddingType pos :
       {PositionalEmbeddingType::standard, PositionalEmbeddingType::shortformer}) {
    CAPTURE(to_string(pos));
    test::RandomModelSpec spec;
    spec.positions = pos;
    const auto model = test::random_model<double>(spec);
    const Tokens tokens = make_tokens(random_sequences(2, 9, spec.d_vocab, 4));
    const auto run = run_with_cache(model, tokens);
    REQUIRE(run.cache.has_value());
    const ForwardCache<double>& c = *run.cache;
    const Index S = 9, N = 18;
    Matrix<double> pos_rows(N, spec.d_model);
    pos_rows << model.W_pos.topRows(S), model.W_pos.topRows(S);
    for (int l = 0; l < spec.n_layers; ++l) {
      CAPTURE(l);
      const LayerCache<double>& lc = c.layers[static_cast<std::size_t>(l)];
      // Components: embed [, pos_embed], then each earlier head and b_O in order.
      CHECK(lc.resid_pre.contains(Component::pos_embed()) ==
            (pos == PositionalEmbeddingType::standard));
      CHECK(lc.resid_pre.size() ==
            static_cast<std::size_t>(1 + (pos == PositionalEmbeddingType::standard) +
                                     l * (spec.n_heads + 1)));
      const Matrix<double> resid = lc.resid_pre.total();
      const LayerNorm<double>& ln1 = model.layers[static_cast<std::size_t>(l)].ln1;
      CHECK((lc.ln1_scales - ln1.scales(resid)).cwiseAbs().maxCoeff() < 1e-12);
      Matrix<double> x = ln1(resid);
      Matrix<double> x_qk = x;
      if (pos == PositionalEmbeddingType::shortformer) x_qk += pos_rows;
      Matrix<double> sum_out = Matrix<double>::Zero(N, spec.d_model);
      for (int h = 0; h < spec.n_heads; ++h) {
        CAPTURE(h);
        const HeadCache<double>& hc = lc.heads[static_cast<std::size_t>(h)];
        const AttentionHead<double>& hd = model.head(l, h);
        CHECK(hc.q.isApprox((x_qk * hd.W_Q).rowwise() + hd.b_Q.transpose(), 1e-12));
        CHECK(hc.k.isApprox((x_qk * hd.W_K).rowwise() + hd.b_K.transpose(), 1e-12));
        CHECK(hc.v.isApprox((x * hd.W_V).rowwise() + hd.b_V.transpose(), 1e-12));
        for (Index b = 0; b < 2; ++b) {
          const Matrix<double>& A = c.pattern({l, h}, b);
          CHECK((A.rowwise().sum().array() - 1).abs().maxCoeff() < 1e-12);
          CHECK(A.isLowerTriangular());
          CHECK(hc.z.middleRows(b * S, S).isApprox(A * hc.v.middleRows(b * S, S), 1e-12));
        }
        CHECK(hc.output.isApprox(hc.z * hd.W_O, 1e-12));
        if (l + 1 < spec.n_layers) {
          CHECK(
              c.layers[static_cast<std::size_t>(l) + 1].resid_pre[Component::head_output({l, h})] ==
              hc.output);
        }
        sum_out += hc.output;
      }
      const Matrix<double> next = l + 1 < spec.n_layers
                                      ? c.layers[static_cast<std::size_t>(l) + 1].resid_pre.total()
                                      : c.resid_final.total();
      CHECK(next.isApprox(
          (resid + sum_out).rowwise() + model.layers[static_cast<std::size_t>(l)].b_O.transpose(),
          1e-12));
    }
    const Matrix<double> final_resid = c.resid_final.total();
    CHECK((c.ln_final_scales - model.ln_final.scales(final_resid)).cwiseAbs().maxCoeff() < 1e-12);
    const Matrix<double> logits =
        (model.ln_final(final_resid) * model.W_U).rowwise() + model.b_U.transpose();
    CHECK((logits - run.logits).cwiseAbs().maxCoeff() < 1e-10);
  }
}

TEST_CASE("what the cache keeps follows the options, and no cache is the default") {
  const auto model = test::random_model<double>({});
  const Tokens tokens = make_tokens(random_sequences(2, 5, 40, 1));
  CHECK_FALSE(forward(model, tokens).cache.has_value());
  ForwardOptions options;
  options.cache = true;
  options.cache_activations = false;
  options.cache_residual = false;
  const auto run = forward(model, tokens, options);
  REQUIRE(run.cache.has_value());
  CHECK(run.cache->layers[1].resid_pre.size() == 0);
  CHECK(run.cache->layers[1].heads[2].q.size() == 0);
  CHECK(run.cache->layers[1].heads[2].output.size() == 0);
  CHECK(run.cache->pattern({1, 2}, 1).rows() == 5);
  CHECK(run.cache->ln_final_scales.size() == 10);
  CHECK(run.logits == forward(model, tokens).logits);
}

TEST_CASE("sequences are independent and attention is causal") {
  const auto model = test::random_model<double>({});
  auto seqs = random_sequences(3, 8, 40, 9);
  const auto batch = forward(model, seqs);
  for (Index b = 0; b < 3; ++b) {
    const auto alone =
        forward(model, std::vector<std::vector<int>>{seqs[static_cast<std::size_t>(b)]});
    CHECK((alone.logits - batch.logits.middleRows(b * 8, 8)).cwiseAbs().maxCoeff() < 1e-12);
  }
  // A row-major buffer, through Eigen::Map.
  std::vector<int> buffer;
  for (const auto& s : seqs) buffer.insert(buffer.end(), s.begin(), s.end());
  CHECK(forward(model, Eigen::Map<const Tokens>(buffer.data(), 3, 8)).logits == batch.logits);
  seqs[0][5] = (seqs[0][5] + 1) % 40;  // changes positions 5.. only
  const auto changed = forward(model, seqs);
  CHECK((changed.logits.topRows(5) - batch.logits.topRows(5)).cwiseAbs().maxCoeff() < 1e-12);
  CHECK((changed.logits.row(5) - batch.logits.row(5)).cwiseAbs().maxCoeff() > 1e-6);
}

TEST_CASE("losses are the mean negative log-probability of each next token") {
  const auto model = test::random_model<double>({});
  const auto seqs = random_sequences(2, 6, 40, 2);
  const auto run = forward(model, seqs);
  double total = 0;
  for (Index b = 0; b < 2; ++b) {
    const Matrix<double> lp = run.log_probs(b);
    CHECK((lp.array().exp().rowwise().sum() - 1).abs().maxCoeff() < 1e-12);
    double seq_total = 0;
    for (Index p = 0; p < 5; ++p) {
      const double expected =
          -lp(p, seqs[static_cast<std::size_t>(b)][static_cast<std::size_t>(p) + 1]);
      CHECK(run.loss_per_token(b, p) == doctest::Approx(expected).epsilon(1e-12));
      seq_total += expected;
    }
    CHECK(run.loss_per_seq(b) == doctest::Approx(seq_total / 5).epsilon(1e-12));
    total += seq_total;
  }
  CHECK(run.loss_mean == doctest::Approx(total / 10).epsilon(1e-12));
  const auto top = run.top_k(1, 3, 40);
  CHECK(std::is_sorted(top.begin(), top.end(),
                       [&](int i, int j) { return run.logits(9, i) > run.logits(9, j); }));
  SUBCASE("a single token predicts nothing: the loss is NaN, the logits are there") {
    const auto one = forward(model, std::vector<std::vector<int>>{{3}, {4}});
    CHECK(one.logits.rows() == 2);
    CHECK(one.loss_per_token.cols() == 0);
    CHECK(std::isnan(one.loss_mean));
  }
}

TEST_CASE("bad token batches are rejected with messages that say where") {
  const auto model = test::random_model<double>({});  // d_vocab 40, n_ctx 12
  using V = std::vector<std::vector<int>>;
  CHECK_THROWS_WITH_AS(forward(model, V{{0, 1, 2}, {3, 40, 5}}),
                       "[circuitry.argument_error] tokens: token 40 at sequence 1, position 1 is "
                       "out of range [0, 40)",
                       argument_error);
  CHECK_THROWS_WITH_AS(forward(model, V{{0, -1}}),
                       "[circuitry.argument_error] tokens: token -1 at sequence 0, position 1 is "
                       "out of range [0, 40)",
                       argument_error);
  CHECK_THROWS_WITH_AS(forward(model, V{std::vector<int>(13, 1)}),
                       "[circuitry.argument_error] tokens: sequences have 13 tokens, more than "
                       "n_ctx = 12",
                       argument_error);
  CHECK_THROWS_WITH_AS(forward(model, V{}),
                       "[circuitry.argument_error] tokens: empty batch (no sequences)",
                       argument_error);
  CHECK_THROWS_WITH_AS(forward(model, V{{1, 2}, {3}}),
                       "[circuitry.argument_error] tokens: ragged batch: sequence 1 has 1 tokens "
                       "but sequence 0 has 2 (all sequences must have the same length)",
                       argument_error);
  CHECK_THROWS_WITH_AS(forward(model, V{{}, {}}),
                       "[circuitry.argument_error] tokens: sequences are empty (0 tokens)",
                       argument_error);
  const auto run = forward(model, V{{1, 2}});
  CHECK_THROWS_WITH_AS(run.top_k(0, 2, 1),
                       "[circuitry.argument_error] top_k: position 2 out of range [0, 2)",
                       argument_error);
  CHECK_THROWS_WITH_AS(run.log_probs(1),
                       "[circuitry.argument_error] ForwardResult: no sequence 1 in a batch of 1",
                       argument_error);
}

// --- The run-time dispatched kernels (detail/simd_*.hpp) ------------------------------------

using test::ForcedSimdLevel;
using test::simd_levels;

TEST_CASE("the SIMD level can be lowered by CIRCUITRY_SIMD's values and forced by tests") {
  using detail::SimdLevel;
  CHECK(detail::parse_simd_level("none") == SimdLevel::none);
  CHECK(detail::parse_simd_level("avx2") == SimdLevel::avx2);
  CHECK(detail::parse_simd_level("avx512") == SimdLevel::avx512);
  CHECK(detail::parse_simd_level(nullptr) == SimdLevel::avx512);
  CHECK(detail::parse_simd_level("sse9") == SimdLevel::avx512);
  for (SimdLevel l : simd_levels()) {
    const ForcedSimdLevel forced(l);
    CHECK(detail::simd_level() == l);
  }
  {
    const ForcedSimdLevel forced(SimdLevel::avx512);
    CHECK(detail::simd_level() == detail::supported_simd_level());  // never above the processor
  }
  MESSAGE("this processor runs the ",
          std::string(detail::simd_level_name(detail::supported_simd_level())), " kernels");
}

TEST_CASE_TEMPLATE("every product kernel equals Eigen's product on odd shapes and strides", Scalar,
                   float, double) {
  const double tol = std::is_same<Scalar, float>::value ? 1e-5 : 1e-13;
  // Shapes around the micro-tiles (24 x 8 doubles, 48 x 8 floats with AVX-512; 12 x 4, 24 x 4
  // with AVX2): one row or column, tails of every size, depth 1, empty.
  const std::vector<std::array<Index, 3>> shapes = {
      {1, 1, 1},    {7, 3, 5},     {23, 9, 31}, {25, 17, 33}, {49, 13, 7}, {97, 70, 1},
      {48, 8, 256}, {130, 11, 40}, {5, 0, 3},   {0, 4, 3},    {6, 5, 0}};
  for (detail::SimdLevel level : simd_levels()) {
    CAPTURE(detail::simd_level_name(level));
    for (const auto& [m, n, k] : shapes) {
      CAPTURE(m);
      CAPTURE(n);
      CAPTURE(k);
      const Matrix<Scalar> A = Matrix<Scalar>::Random(m + 3, k),
                           B = Matrix<Scalar>::Random(k + 2, n);
      Matrix<Scalar> C = Matrix<Scalar>::Constant(m + 5, n, Scalar(7));  // ldc > m
      detail::gemm(level, m, n, k, A.data(), A.rows(), B.data(), B.rows(), C.data(), C.rows());
      const Matrix<Scalar> expected = A.topRows(m) * B.topRows(k);
      if (expected.size() > 0) {
        CHECK((C.topRows(m) - expected).cwiseAbs().maxCoeff() <=
              tol * (1 + expected.cwiseAbs().maxCoeff()));
      }
      CHECK((C.bottomRows(5).array() == Scalar(7)).all());  // nothing written past row m
    }
    // The parallel product (panels of rows and columns) and the causal product.
    const ForcedSimdLevel forced(level);
    const Matrix<Scalar> a = Matrix<Scalar>::Random(203, 37), b = Matrix<Scalar>::Random(37, 1031);
    Matrix<Scalar> out;
    detail::multiply(a, b, out);
    const Matrix<Scalar> ab = a * b;
    CHECK((out - ab).cwiseAbs().maxCoeff() <= tol * (1 + ab.cwiseAbs().maxCoeff()));
    const Matrix<Scalar> pattern =
        Matrix<Scalar>::Random(101, 101).template triangularView<Eigen::Lower>();
    const Matrix<Scalar> Y = Matrix<Scalar>::Random(101, 9);
    Matrix<Scalar> Z = Matrix<Scalar>::Constant(103, 9, Scalar(7));
    detail::causal_product(level, pattern, Y.data(), Y.rows(), Y.cols(), Z.data(), Z.rows());
    const Matrix<Scalar> tril = pattern.template triangularView<Eigen::Lower>() * Y;
    CHECK((Z.topRows(101) - tril).cwiseAbs().maxCoeff() <= tol * (1 + tril.cwiseAbs().maxCoeff()));
    CHECK((Z.bottomRows(2).array() == Scalar(7)).all());
  }
}

TEST_CASE_TEMPLATE("the sums of exponentials of masked logits are exact at every SIMD level",
                   Scalar, float, double) {
  // exp_sums: for each mask, sum_j exp(base(:, j) - parts or bias[j] - shift + parts), added to
  // acc; against long double, on rows of a whole number of vectors and an odd number of columns.
  constexpr int R = std::is_same<Scalar, double>::value ? 24 : 48;  // PathExpansion's tiles
  const Index cols = 13, slots = 5, ld = slots * R + 3;
  const Matrix<Scalar> tile = Matrix<Scalar>::Random(ld, cols) * Scalar(3);
  const Matrix<Scalar> base = Matrix<Scalar>::Random(R, cols) * Scalar(4);
  const Vector<Scalar> bias = Vector<Scalar>::Random(cols), shift = Vector<Scalar>::Random(R);
  detail::TileMasks masks;
  const std::vector<std::vector<Index>> parts = {{0}, {1, 2}, {}, {4, 0, 3}};
  for (int k = 0; k < 8; ++k) {
    masks.minus.push_back(k % 2 == 0 ? 1 : 0);
    for (Index p : parts[static_cast<std::size_t>(k % 4)]) masks.parts.push_back(p * R);
    masks.begin.push_back(static_cast<Index>(masks.parts.size()));
  }
  Eigen::MatrixXd expected = Eigen::MatrixXd::Constant(R, masks.size(), 0.5);
  for (Index k = 0; k < masks.size(); ++k) {
    const std::size_t kk = static_cast<std::size_t>(k);
    for (Index i = 0; i < R; ++i) {
      long double sum = 0;
      for (Index j = 0; j < cols; ++j) {
        long double y = masks.minus[kk] ? static_cast<long double>(base(i, j))
                                        : static_cast<long double>(bias(j)) - shift(i);
        for (Index q = masks.begin[kk]; q < masks.begin[kk + 1]; ++q) {
          const long double t = tile(masks.parts[static_cast<std::size_t>(q)] + i, j);
          y += masks.minus[kk] ? -t : t;
        }
        sum += std::exp(y);
      }
      expected(i, k) += static_cast<double>(sum);
    }
  }
  const double tol = std::is_same<Scalar, float>::value ? 2e-6 : 1e-13;
  for (detail::SimdLevel level : simd_levels()) {
    CAPTURE(detail::simd_level_name(level));
    Eigen::MatrixXd acc = Eigen::MatrixXd::Constant(R, masks.size(), 0.5);
    detail::exp_sums<R>(level, masks, cols, base.data(), bias.data(), shift.data(), tile.data(), ld,
                        acc.data());
    CHECK(((acc - expected).array() / expected.array()).abs().maxCoeff() < tol);
    // A non-finite logit leaves its row's sum outside the range a caller trusts.
    Matrix<Scalar> bad = base;
    bad(3, 5) = std::numeric_limits<Scalar>::quiet_NaN();
    bad(4, 6) = std::numeric_limits<Scalar>::infinity();
    acc.setZero();
    detail::exp_sums<R>(level, masks, cols, bad.data(), bias.data(), shift.data(), tile.data(), ld,
                        acc.data());
    for (int row : {3, 4}) {
      const double s = acc(row, 0);  // mask 0: minus, reads base
      CHECK(!(s >= detail::ExpSumRange<Scalar>::lo && s <= detail::ExpSumRange<Scalar>::hi));
    }
  }
}

TEST_CASE_TEMPLATE("row maxima and log-sum-exps are exact at every SIMD level", Scalar, float,
                   double) {
  // 37 rows: whole vectors for the vector kernels and a remainder; against long double.
  const Index rows = 37, cols = 19;
  Matrix<Scalar> x = Matrix<Scalar>::Random(rows, cols) * Scalar(30);
  x(5, 7) = -std::numeric_limits<Scalar>::infinity();  // a zero probability
  Vector<double> expected_lse(rows), expected_max(rows);
  for (Index i = 0; i < rows; ++i) {
    long double mx = x(i, 0), sum = 0;
    for (Index j = 1; j < cols; ++j) mx = std::max<long double>(mx, x(i, j));
    for (Index j = 0; j < cols; ++j) sum += std::exp(static_cast<long double>(x(i, j)) - mx);
    expected_max(i) = static_cast<double>(mx);
    expected_lse(i) = static_cast<double>(mx + std::log(sum));
  }
  const double tol = std::is_same<Scalar, float>::value ? 1e-6 : 1e-14;
  Matrix<Scalar> bad = x;
  bad(2, 3) = std::numeric_limits<Scalar>::quiet_NaN();
  bad(33, 4) = std::numeric_limits<Scalar>::infinity();
  for (detail::SimdLevel level : simd_levels()) {
    CAPTURE(detail::simd_level_name(level));
    const ForcedSimdLevel forced(level);
    CHECK((detail::row_max(x).template cast<double>() - expected_max).cwiseAbs().maxCoeff() == 0);
    const Vector<double> lse = detail::row_logsumexp(x).template cast<double>();
    CHECK(((lse - expected_lse).array() / expected_lse.array()).abs().maxCoeff() < tol);
    // A block of rows (an outer stride that is not its height) gives the same values.
    const Vector<double> block = detail::row_logsumexp(x.middleRows(3, 30)).template cast<double>();
    CHECK((block - lse.segment(3, 30)).cwiseAbs().maxCoeff() < tol);
    // A NaN or +inf makes the row's value NaN; the other rows keep theirs.
    const Vector<Scalar> with_bad = detail::row_logsumexp(bad);
    CHECK(std::isnan(with_bad(2)));
    CHECK(std::isnan(with_bad(33)));
    CHECK(std::abs(static_cast<double>(with_bad(0)) - expected_lse(0)) < tol * 100);
  }
}

TEST_CASE_TEMPLATE("the forward pass is the same at every SIMD level", Scalar, float, double) {
  test::RandomModelSpec spec;
  spec.seed = 3;
  spec.n_ctx = 32;
  spec.d_model = 40;
  spec.d_head = 9;
  const auto model = test::random_model<double>(spec).template cast<Scalar>();
  const auto tokens = random_sequences(3, 29, spec.d_vocab, 2);  // 29: not whole panels
  ForwardOptions options;
  options.cache = true;
  const double tol = std::is_same<Scalar, float>::value ? 1e-5 : 1e-13;
  std::optional<ForwardResult<Scalar>> first;
  for (detail::SimdLevel level : simd_levels()) {
    CAPTURE(detail::simd_level_name(level));
    const ForcedSimdLevel forced(level);
    ForwardResult<Scalar> run = forward(model, tokens, options);
    if (!first) {
      first = std::move(run);
      continue;
    }
    CHECK(std::abs(static_cast<double>(run.loss_mean - first->loss_mean)) < tol);
    CHECK((run.logits - first->logits).cwiseAbs().maxCoeff() < 10 * tol);
    CHECK((run.cache->pattern({1, 2}, 1) - first->cache->pattern({1, 2}, 1)).cwiseAbs().maxCoeff() <
          tol);
  }
}
