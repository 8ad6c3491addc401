// qk_decomposition.hpp: attention scores split by query and key source sum to the scores; the
// composition circuit terms are the dense products.
#include <doctest/doctest.h>

#include <circuitry/qk_decomposition.hpp>

#include "support/random_model.hpp"
#include "support/reference.hpp"

using namespace circuitry;

TEST_CASE_TEMPLATE("the score terms sum to the head's scores for every kind of model", Scalar,
                   float, double) {
  const double tol = std::is_same<Scalar, double>::value ? 1e-9 : 1e-3;
  for (auto norm : {NormalizationType::none, NormalizationType::LN, NormalizationType::LNPre}) {
    for (auto pos : {PositionalEmbeddingType::standard, PositionalEmbeddingType::shortformer}) {
      test::RandomModelSpec spec;
      spec.n_layers = 3;
      spec.normalization = norm;
      spec.positions = pos;
      const auto model = test::random_model<Scalar>(spec);
      CAPTURE(to_string(norm));
      CAPTURE(to_string(pos));
      const Tokens t = make_tokens({{0, 5, 9, 5, 2, 7}, {3, 3, 1, 8, 0, 2}});
      const auto run = run_with_cache(model, t);
      for (const HeadId id : model.head_ids()) {
        CAPTURE(id.name());
        const HeadCache<Scalar>& hc = run.cache->head(id);
        for (Index b = 0; b < 2; ++b) {
          const auto d = decompose_scores(model, run, id, b);
          const Matrix<Scalar> q = hc.q.middleRows(b * 6, 6), k = hc.k.middleRows(b * 6, 6);
          const Matrix<Scalar> scores =
              q * k.transpose() / static_cast<Scalar>(std::sqrt(double(spec.d_head)));
          CHECK((d.total() - scores).norm() <= tol * scores.norm());
          // Every earlier head appears as a source on both sides.
          CHECK(std::count(d.query_terms.begin(), d.query_terms.end(), "embed") == 1);
          CHECK(static_cast<int>(d.key_terms.size()) == static_cast<int>(d.query_terms.size()));
          // Causal attention: softmax of the masked total is the cached pattern.
          const Matrix<Scalar>& pattern = run.cache->pattern(id, b);
          for (Index p = 0; p < 6; ++p) {
            Scalar m = d.total().row(p).head(p + 1).maxCoeff(), z = 0;
            for (Index j = 0; j <= p; ++j) z += std::exp(d.total()(p, j) - m);
            CHECK(static_cast<double>(std::exp(d.total()(p, 0) - m) / z) ==
                  doctest::Approx(static_cast<double>(pattern(p, 0))).epsilon(tol * 10));
          }
        }
      }
    }
  }
}

TEST_CASE("on attn-only-2l the induction head's key side reads the previous-token head") {
  // On repeated text, L1H4's score from the current token (query: embed) to the token after its
  // previous occurrence comes through what L0H1 moved into that key position.
  const auto& model = test::processed_model<double>("attn-only-2l");
  const auto& ref = test::reference("attn-only-2l");
  const auto run =
      run_with_cache(model, make_tokens({ref.at("repeated_tokens")[0].get<std::vector<int>>()}));
  const auto d = decompose_scores(model, run, {1, 4}, 0);
  const Index n = 50;
  double via_prev = 0, via_embed = 0;
  for (Index p = n + 1; p < 2 * n + 1; ++p) {
    via_prev += d.term("embed", "L0H1")(p, p - n + 1);
    via_embed += d.term("embed", "embed")(p, p - n + 1);
  }
  CHECK(via_prev > 0);
  CHECK(via_prev > 3 * std::abs(via_embed));
}

TEST_CASE("the Q- and K-composition circuit terms are the dense products") {
  test::RandomModelSpec spec;
  const auto model = test::random_model<double>(spec);
  const HeadId h1{0, 1}, h2{1, 2};
  const auto& a = model.head(h1);
  const auto& c = model.head(h2);
  const Matrix<double> ov = a.W_V * a.W_O, qk = c.W_Q * c.W_K.transpose();
  const Matrix<double> k_term = model.W_E * qk * (model.W_E * ov).transpose();
  const Matrix<double> q_term = (model.W_E * ov) * qk * model.W_E.transpose();
  CHECK((k_composition_circuit(model, h1, h2).AB() - k_term).norm() <= 1e-10 * k_term.norm());
  CHECK((q_composition_circuit(model, h1, h2).AB() - q_term).norm() <= 1e-10 * q_term.norm());
  CHECK_THROWS_WITH_AS(
      k_composition_circuit(model, h2, h1),
      "[circuitry.argument_error] k_composition_circuit: L1H2 is not in an earlier "
      "layer than L0H1",
      argument_error);
}
