// composition.hpp: Q-, K-, V-composition scores from packed Gram matrices against the dense
// definition ||W_A W_B||_F / (||W_A||_F ||W_B||_F), and the random baseline.
#include <doctest/doctest.h>

#include <circuitry/composition.hpp>

#include "support/random_model.hpp"
#include "support/simd_levels.hpp"

using namespace circuitry;

namespace {
double dense_score(const Matrix<double>& a, const Matrix<double>& b) {
  return (a * b).norm() / (a.norm() * b.norm());
}
}  // namespace

TEST_CASE_TEMPLATE("composition scores equal the dense definition for every earlier-later pair",
                   Scalar, float, double) {
  test::RandomModelSpec spec;
  spec.n_layers = 3;
  spec.n_heads = 2;
  spec.d_model = 10;
  spec.d_head = 3;
  spec.seed = 11;
  const auto model = test::random_model<double>(spec);
  const auto model_s = model.template cast<Scalar>();
  const double tol = std::is_same<Scalar, double>::value ? 1e-10 : 1e-4;
  for (CompositionType type : {CompositionType::Q, CompositionType::K, CompositionType::V}) {
    CAPTURE(to_string(type));
    const CompositionScores<Scalar> scores = composition_scores(model_s, type);
    for (const HeadId a : model.head_ids()) {
      for (const HeadId b : model.head_ids()) {
        CAPTURE(a.name());
        CAPTURE(b.name());
        const double got = static_cast<double>(scores(a, b));
        if (a.layer >= b.layer) {
          CHECK(got == 0.0);
          continue;
        }
        const auto& ha = model.head(a);
        const auto& hb = model.head(b);
        const Matrix<double> W_A = ha.W_V * ha.W_O;
        const Matrix<double> W_B =
            type == CompositionType::Q   ? Matrix<double>(hb.W_Q * hb.W_K.transpose())
            : type == CompositionType::K ? Matrix<double>(hb.W_K * hb.W_Q.transpose())
                                         : Matrix<double>(hb.W_V * hb.W_O);
        CHECK(got == doctest::Approx(dense_score(W_A, W_B)).epsilon(tol));
        // The generic factored score agrees too.
        const FactoredMatrix<Scalar> fb =
            type == CompositionType::Q   ? hb.template cast<Scalar>().qk()
            : type == CompositionType::K ? hb.template cast<Scalar>().qk().transpose()
                                         : hb.template cast<Scalar>().ov();
        CHECK(static_cast<double>(composition_score(ha.template cast<Scalar>().ov(), fb)) ==
              doctest::Approx(dense_score(W_A, W_B)).epsilon(tol));
      }
    }
  }
}

TEST_CASE("all_composition_scores gives the Q, K and V scores of composition_scores at once") {
  test::RandomModelSpec spec;
  spec.n_layers = 4;
  spec.n_heads = 3;
  spec.d_model = 12;
  spec.d_head = 4;
  spec.seed = 5;
  const auto model = test::random_model<double>(spec);
  const auto all = all_composition_scores(model);
  const CompositionType types[3] = {CompositionType::Q, CompositionType::K, CompositionType::V};
  for (std::size_t t = 0; t < 3; ++t) {
    CAPTURE(to_string(types[t]));
    const auto one = composition_scores(model, types[t]);
    REQUIRE(all[t].data.size() == one.data.size());
    for (std::size_t i = 0; i < one.data.size(); ++i) CHECK(all[t].data[i] == one.data[i]);
  }
  // The later layers' scores are not all zero (the causal-pair indexing reaches layer 3).
  CHECK(all[2]({2, 1}, {3, 2}) > 0.0);
  CHECK(all[0]({0, 0}, {3, 0}) > 0.0);
}

TEST_CASE_TEMPLATE("composition scores are the same at every SIMD level", Scalar, float, double) {
  test::RandomModelSpec spec;
  spec.n_layers = 3;
  spec.n_heads = 3;
  spec.d_model = 45;  // a packed Gram of 1035 entries: several chunks, the last partial
  spec.d_head = 5;
  spec.seed = 8;
  const auto model = test::random_model<double>(spec).template cast<Scalar>();
  const double tol = std::is_same<Scalar, float>::value ? 1e-5 : 1e-12;
  std::vector<std::array<CompositionScores<Scalar>, 3>> by_level;
  for (const auto level : test::simd_levels()) {
    const test::ForcedSimdLevel forced(level);
    by_level.push_back(all_composition_scores(model));
  }
  for (std::size_t l = 1; l < by_level.size(); ++l) {
    CAPTURE(l);
    for (std::size_t t = 0; t < 3; ++t) {
      for (std::size_t i = 0; i < by_level[0][t].data.size(); ++i) {
        CHECK(static_cast<double>(by_level[l][t].data[i]) ==
              doctest::Approx(static_cast<double>(by_level[0][t].data[i])).epsilon(tol));
      }
    }
  }
}

TEST_CASE("a one-layer model has no composition") {
  test::RandomModelSpec spec;
  spec.n_layers = 1;
  const auto scores = composition_scores(test::random_model<double>(spec), CompositionType::K);
  for (double s : scores.data) CHECK(s == 0.0);
}

TEST_CASE("a head that writes nothing composes with nothing") {
  test::RandomModelSpec spec;
  auto model = test::random_model<double>(spec);
  model.layers[0].heads[1].W_O.setZero();
  const auto scores = composition_scores(model, CompositionType::V);
  for (int h = 0; h < spec.n_heads; ++h) CHECK(scores({0, 1}, {1, h}) == 0.0);
}

TEST_CASE("the random baseline is near 1/sqrt(d_model) and deterministic in its seed") {
  // For i.i.d. Gaussian factors E[W_A^T W_A] = d_model d_head I, so
  // E||W_A W_B||^2 / (E||W_A||^2 E||W_B||^2) = 1 / d_model: scores concentrate near
  // 1/sqrt(d_model).
  for (Index d_model : {32, 64}) {
    const CompositionBaseline b = composition_baseline<double>(d_model, 8, 200, 3);
    CAPTURE(d_model);
    CHECK(b.mean == doctest::Approx(1.0 / std::sqrt(double(d_model))).epsilon(0.1));
    CHECK(b.stddev > 0.0);
    CHECK(b.stddev < 0.5 * b.mean);
    CHECK(composition_baseline<double>(d_model, 8, 200, 3).mean == b.mean);
    CHECK(composition_baseline<double>(d_model, 8, 200, 4).mean != b.mean);
  }
  CHECK_THROWS_AS(composition_baseline<double>(0, 8), argument_error);
}
