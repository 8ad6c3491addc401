// head_detectors.hpp: previous-token, induction and duplicate-token scores against
// TransformerLens's reference figures and against identities on repeated sequences.
#include <doctest/doctest.h>

#include <circuitry/head_detectors.hpp>
#include <numeric>
#include <set>

#include "support/random_model.hpp"
#include "support/reference.hpp"
#include "support/tokens.hpp"

using namespace circuitry;

TEST_CASE("previous-token and induction scores agree with TransformerLens on every shared model") {
  for (const std::string& name : test::shared_models()) {
    CAPTURE(name);
    const auto& ref = test::reference(name);
    const auto& model = test::processed_model<double>(name);

    const auto eval =
        run_with_cache(model, test::tokens_from_json(ref.at("eval_batch").at("tokens")));
    const auto prev = previous_token_scores(eval);
    const auto repeated = run_with_cache(model, test::tokens_from_json(ref.at("repeated_tokens")));
    const Index n = (repeated.seq_len - 1) / 2;
    const auto induction = induction_scores(repeated, n);
    for (int l = 0; l < model.n_layers(); ++l) {
      for (int h = 0; h < model.n_heads(); ++h) {
        const std::string head = HeadId{l, h}.name();
        CAPTURE(head);
        CHECK(std::abs(prev[l][h] - ref.at("prev_token_score")[l][h].get<double>()) <= 1e-4);
        CHECK(std::abs(induction[l][h] - ref.at("induction_score")[l][h].get<double>()) <= 1e-4);
      }
    }
    const auto [first, second] = repeated_halves_loss(repeated);
    CHECK(std::abs(first - ref.at("repeated_loss_first_half").get<double>()) <= 1e-4);
    CHECK(std::abs(second - ref.at("repeated_loss_second_half").get<double>()) <= 1e-4);
  }
}

TEST_CASE("attn-only-2l's induction heads are L1H4 and L1H5, fed by the previous-token head L0H1") {
  const auto& model = test::processed_model<double>("attn-only-2l");
  const auto repeated = run_with_cache(model, repeated_random_tokens(4, 40, 4096, 123));
  const auto induction = induction_scores(repeated, 40);
  std::vector<double> layer1 = induction[1];
  std::vector<int> order(layer1.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return layer1[a] > layer1[b]; });
  CHECK(std::set<int>{order[0], order[1]} == std::set<int>{4, 5});
  const auto prev = previous_token_scores(repeated);
  CHECK(std::max_element(prev[0].begin(), prev[0].end()) - prev[0].begin() == 1);
}

TEST_CASE("repeated random tokens are [BOS] r r and deterministic in the seed") {
  const Tokens t = repeated_random_tokens(3, 5, 100, 9);
  CHECK(t.rows() == 3);
  CHECK(t.cols() == 11);
  for (Index b = 0; b < 3; ++b) {
    CHECK(t(b, 0) == 0);
    for (Index i = 0; i < 5; ++i) {
      CHECK(t(b, 1 + i) == t(b, 6 + i));
      CHECK(t(b, 1 + i) >= 1);
      CHECK(t(b, 1 + i) < 100);
    }
  }
  CHECK(repeated_random_tokens(3, 5, 100, 9) == t);
  CHECK(repeated_random_tokens(3, 5, 100, 10) != t);
}

TEST_CASE_TEMPLATE(
    "on [BOS] r r with distinct tokens the duplicate-token score is the mean attention n back",
    Scalar, float, double) {
  test::RandomModelSpec spec;
  spec.d_vocab = 64;
  spec.n_ctx = 32;
  const auto model = test::random_model<Scalar>(spec);
  Tokens t(2, 13);
  for (Index b = 0; b < 2; ++b) {
    t(b, 0) = 0;
    for (Index i = 0; i < 6; ++i) t(b, 1 + i) = t(b, 7 + i) = static_cast<int>(1 + 10 * b + i);
  }
  const auto run = run_with_cache(model, t);
  const auto dup = duplicate_token_scores(run, t);
  for (const HeadId id : model.head_ids()) {
    double sum = 0;
    for (Index b = 0; b < 2; ++b)
      for (Index p = 7; p < 13; ++p)
        sum += static_cast<double>(run.cache->pattern(id, b)(p, p - 6));
    CHECK(static_cast<double>(dup[id.layer][id.head]) == doctest::Approx(sum / 12).epsilon(1e-5));
  }
}

TEST_CASE("detectors reject runs without a cache and sequences of the wrong form") {
  test::RandomModelSpec spec;
  const auto model = test::random_model<double>(spec);
  const Tokens t = repeated_random_tokens(1, 4, spec.d_vocab, 1);
  CHECK_THROWS_WITH_AS(previous_token_scores(forward(model, t)),
                       "[circuitry.argument_error] head detectors need a forward pass run with "
                       "ForwardOptions::cache",
                       argument_error);
  CHECK_THROWS_WITH_AS(induction_scores(run_with_cache(model, t), 5),
                       "[circuitry.argument_error] induction_scores: sequences of 9 tokens are not "
                       "[BOS] r r with |r| = 5",
                       argument_error);
  const Tokens once = repeated_random_tokens(1, 1, spec.d_vocab, 1);  // [BOS] r r, |r| = 1
  CHECK_THROWS_WITH_AS(induction_scores(run_with_cache(model, once), 1),
                       "[circuitry.argument_error] induction_scores: |r| = 1, expected |r| >= 2 "
                       "(the diagonal at offset 1 - |r| below the main one)",
                       argument_error);
  Tokens distinct(1, 4);
  distinct << 0, 1, 2, 3;
  CHECK_THROWS_WITH_AS(
      duplicate_token_scores(run_with_cache(model, distinct), distinct),
      "[circuitry.argument_error] duplicate_token_scores: no token repeats in the batch",
      argument_error);
}
