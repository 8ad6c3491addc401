// path_orders.hpp: the summary from sums of streams equals the summary of the enumerated path
// terms, reproduces the reference's losses, and stays cheap where the enumeration does not.
#include <doctest/doctest.h>

#include <algorithm>
#include <circuitry/path_orders.hpp>
#include <cmath>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "support/random_model.hpp"
#include "support/reference.hpp"
#include "support/tokens.hpp"

using namespace circuitry;
using circuitry::test::random_tokens;

namespace {

template <typename Scalar>
void check_same_summary(const PathExpansionSummary<Scalar>& got,
                        const PathExpansionSummary<Scalar>& want, double tolerance) {
  auto same = [&](Scalar a, Scalar b) {
    return std::abs(static_cast<double>(a) - static_cast<double>(b)) <=
           tolerance * std::max(1.0, std::abs(static_cast<double>(b)));
  };
  CHECK(same(got.uniform_loss, want.uniform_loss));
  CHECK(same(got.full_loss, want.full_loss));
  REQUIRE(got.loss_by_order.size() == want.loss_by_order.size());
  for (std::size_t k = 0; k < want.loss_by_order.size(); ++k) {
    CAPTURE(k);
    CHECK(same(got.loss_by_order[k], want.loss_by_order[k]));
  }
  REQUIRE(got.loss_by_layer.size() == want.loss_by_layer.size());
  for (std::size_t l = 0; l < want.loss_by_layer.size(); ++l) {
    CAPTURE(l);
    CHECK(same(got.loss_by_layer[l], want.loss_by_layer[l]));
  }
  REQUIRE(got.heads.size() == want.heads.size());
  for (std::size_t i = 0; i < want.heads.size(); ++i) {
    CAPTURE(want.heads[i].head.name());
    CHECK(got.heads[i].head == want.heads[i].head);
    CHECK(same(got.heads[i].without_everywhere, want.heads[i].without_everywhere));
    CHECK(same(got.heads[i].without_first_order, want.heads[i].without_first_order));
  }
  CHECK(got.marginal.empty());
}

// The frozen model run layer by layer with head `id` writing nothing (neither A Lin(x) W_V W_O
// nor its value bias), later heads reading the stream without it.
double loss_without_head(const FrozenModel<double>& frozen, HeadId id) {
  const AttentionOnlyModel<double>& model = frozen.model();
  Matrix<double> R = frozen.resid0();
  for (int l = 0; l < model.n_layers(); ++l) {
    const Matrix<double> x = frozen.ln1_linear(l, R);
    Matrix<double> out = Matrix<double>::Zero(R.rows(), R.cols());
    out.rowwise() += model.layers[static_cast<std::size_t>(l)].b_O.transpose();
    for (int h = 0; h < model.n_heads(); ++h) {
      if (HeadId{l, h} == id) continue;
      const AttentionHead<double>& hd = model.head(l, h);
      out += frozen.attend({l, h}, x * hd.W_V) * hd.W_O;
      out.rowwise() += frozen.value_bias({l, h});
    }
    R += out;
  }
  return frozen.loss(R);
}

}  // namespace

TEST_CASE_TEMPLATE("the summary by order equals the summary of every enumerated path term", Scalar,
                   float, double) {
  const double tolerance = std::is_same<Scalar, double>::value ? 1e-10 : 2e-4;
  for (int layers : {1, 2, 3, 4}) {
    for (NormalizationType norm :
         {NormalizationType::LN, NormalizationType::LNPre, NormalizationType::none}) {
      for (PositionalEmbeddingType positions :
           {PositionalEmbeddingType::standard, PositionalEmbeddingType::shortformer}) {
        for (bool process : {false, true}) {
          test::RandomModelSpec spec;
          spec.n_layers = layers;
          spec.n_heads = layers == 4 ? 2 : 3;
          spec.normalization = norm;
          spec.positions = positions;
          spec.seed = static_cast<unsigned>(7 * layers + 3);
          CAPTURE(layers);
          CAPTURE(static_cast<int>(norm));
          CAPTURE(static_cast<int>(positions));
          CAPTURE(process);
          AttentionOnlyModel<Scalar> model = test::random_model<Scalar>(spec);
          if (process) process_weights(model);  // unprocessed: non-zero value biases
          const Tokens tokens = random_tokens(3, 7, spec.d_vocab, 11);
          const FrozenModel<Scalar> frozen(model, tokens);
          const PathExpansion<Scalar> pe(frozen);
          check_same_summary(summarize_by_order(frozen), summarize(pe), tolerance);
        }
      }
    }
  }
}

TEST_CASE("the summary by order reproduces the reference's losses on the shared models") {
  for (const std::string name : {"attn-only-1l", "attn-only-2l"}) {
    CAPTURE(name);
    const nlohmann::json& ref = test::reference(name).at("path_expansion");
    const AttentionOnlyModel<double>& model = test::processed_model<double>(name);
    const Tokens tokens = make_tokens(
        test::reference(name).at("eval_batch").at("tokens").get<std::vector<std::vector<int>>>());
    const PathExpansionSummary<double> s = summarize_by_order(FrozenModel<double>(model, tokens));
    auto near = [](double got, const nlohmann::json& expected) {
      return std::abs(got - expected.get<double>()) < 1e-4;
    };
    CHECK(near(s.uniform_loss, ref.at("uniform")));
    CHECK(near(s.full_loss, ref.at("full")));
    CHECK(near(s.full_loss, ref.at("model_loss")));
    CHECK(near(s.loss_by_order.front(), ref.at("direct")));
    CHECK(near(s.loss_by_layer.at(1), ref.at("direct+L0")));
    if (model.n_layers() < 2) continue;
    CHECK(near(s.loss_by_order.at(1), ref.at("direct+L0+L1_first_order")));
    const std::size_t H = static_cast<std::size_t>(model.n_heads());
    for (std::size_t h = 0; h < H; ++h) {
      CAPTURE(h);
      CHECK(
          near(s.heads.at(H + h).without_first_order, ref.at("ablate_L1_first_order_head").at(h)));
      CHECK(near(s.heads.at(h).without_everywhere, ref.at("ablate_L0_head_everywhere").at(h)));
    }
  }
}

TEST_CASE("a deep model's summary by order needs no enumeration of its paths") {
  // 6 layers of 4 heads: (1 + 4)^6 - 1 = 15624 head chains, which the summary never forms.
  test::RandomModelSpec spec;
  spec.n_layers = 6;
  spec.n_heads = 4;
  spec.scale = 0.3;
  const auto model = processed(test::random_model<double>(spec));
  const Tokens tokens = random_tokens(2, 9, spec.d_vocab, 5);
  ForwardOptions options;
  options.cache = true;
  ForwardResult<double> run = forward(model, tokens, options);
  const FrozenModel<double> frozen(model, tokens, *run.cache);
  const PathExpansionSummary<double> s = summarize_by_order(frozen);
  CHECK(s.full_loss == doctest::Approx(run.loss_mean).epsilon(1e-12));
  REQUIRE(s.loss_by_order.size() == 7);
  REQUIRE(s.loss_by_layer.size() == 7);
  CHECK(s.loss_by_order.back() == s.full_loss);
  CHECK(s.loss_by_layer.back() == s.full_loss);
  CHECK(s.loss_by_order.front() == s.loss_by_layer.front());
  // Every head of the last layer: without it everywhere is without its whole output.
  const PathExpansionSummary<double> truncated =
      summarize(PathExpansion<double>(frozen, PathExpansionOptions{1, true}));
  for (int k = 0; k <= 1; ++k) {
    CAPTURE(k);
    CHECK(s.loss_by_order[static_cast<std::size_t>(k)] ==
          doctest::Approx(truncated.loss_by_order[static_cast<std::size_t>(k)]).epsilon(1e-10));
  }
  for (std::size_t i = 0; i < s.heads.size(); ++i) {
    CAPTURE(s.heads[i].head.name());
    CHECK(s.heads[i].without_first_order ==
          doctest::Approx(truncated.heads[i].without_first_order).epsilon(1e-10));
    CHECK(std::isfinite(s.heads[i].without_everywhere));
  }
  for (const HeadId id : {HeadId{1, 3}, HeadId{5, 2}}) {
    CAPTURE(id.name());
    CHECK(s.heads[static_cast<std::size_t>(id.layer * 4 + id.head)].without_everywhere ==
          doctest::Approx(loss_without_head(frozen, id)).epsilon(1e-10));
  }
}

TEST_CASE("a frozen model whose patterns were released cannot be summarized") {
  test::RandomModelSpec spec;
  const auto model = processed(test::random_model<double>(spec));
  FrozenModel<double> frozen(model, random_tokens(2, 5, spec.d_vocab, 3));
  frozen.release_patterns(1);
  CHECK_THROWS_WITH_AS(summarize_by_order(frozen),
                       "[circuitry.argument_error] summarize_by_order: the frozen model's layer 1 "
                       "patterns were released",
                       argument_error);
}
