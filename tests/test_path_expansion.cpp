// path_expansion.hpp: the terms sum to the model (the identity), and the reference's
// path-expansion losses of attn-only-{tiny,1l,2l} are reproduced.
#include <doctest/doctest.h>

#include <algorithm>
#include <circuitry/path_expansion.hpp>
#include <cmath>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "support/random_model.hpp"
#include "support/reference.hpp"
#include "support/tokens.hpp"

using namespace circuitry;
using circuitry::test::random_tokens;

namespace {

int power(int base, int exp) {
  int r = 1;
  while (exp-- > 0) r *= base;
  return r;
}

}  // namespace

TEST_CASE("the path terms sum to the model's residual stream and logits") {
  for (int n_layers : {1, 2, 3}) {
    for (NormalizationType norm :
         {NormalizationType::none, NormalizationType::LN, NormalizationType::LNPre}) {
      for (PositionalEmbeddingType pos :
           {PositionalEmbeddingType::standard, PositionalEmbeddingType::shortformer}) {
        CAPTURE(n_layers);
        CAPTURE(to_string(norm));
        CAPTURE(to_string(pos));
        test::RandomModelSpec spec;
        spec.n_layers = n_layers;
        spec.n_heads = 2;
        spec.normalization = norm;
        spec.positions = pos;
        spec.seed = static_cast<unsigned>(10 * n_layers + static_cast<int>(norm));
        const auto model = test::random_model<double>(spec);
        const Tokens tokens = random_tokens(3, 7, spec.d_vocab, 5);
        const auto run = run_with_cache(model, tokens);
        const PathExpansion<double> pe(model, tokens, *run.cache);

        // (1 + H)^L paths from the direct term, (1 + H)^(L - 1 - l) from b_O[l], and as many
        // from each head's value bias (b_V and the LN bias are not folded in these models).
        const int H = spec.n_heads;
        int expected = power(1 + H, n_layers);
        for (int l = 0; l < n_layers; ++l) expected += (1 + H) * power(1 + H, n_layers - 1 - l);
        CHECK(static_cast<int>(pe.size()) == expected);

        const std::vector<bool> all(pe.size(), true);
        const Matrix<double> resid = run.cache->resid_final.total();
        CHECK((pe.resid_final(all) - resid).cwiseAbs().maxCoeff() < 1e-9);
        Matrix<double> summed = Matrix<double>::Zero(resid.rows(), resid.cols());
        for (std::size_t i = 0; i < pe.size(); ++i) summed += pe.contribution(i);
        CHECK((summed - resid).cwiseAbs().maxCoeff() < 1e-9);
        CHECK((pe.logits(all) - run.logits).cwiseAbs().maxCoeff() < 1e-9);
        CHECK(std::abs(pe.full_loss() - run.loss_mean) < 1e-9);
      }
    }
  }
}

TEST_CASE_TEMPLATE("the identity holds in float and double on a processed model", Scalar, float,
                   double) {
  test::RandomModelSpec spec;
  spec.n_layers = 2;
  const auto model = processed(test::random_model<double>(spec)).template cast<Scalar>();
  const Tokens tokens = random_tokens(2, 9, spec.d_vocab, 8);
  const auto run = forward(model, tokens);
  const PathExpansion<Scalar> pe(model, tokens);
  // Value biases are folded into b_O: direct, 2 x 3 first order, 9 virtual, b_O[0] x 4, b_O[1].
  CHECK(pe.size() == 16 + 4 + 1);
  const double tol = std::is_same<Scalar, float>::value ? 1e-4 : 1e-10;
  const Matrix<Scalar> logits = pe.logits(std::vector<bool>(pe.size(), true));
  CHECK((logits - run.logits).cwiseAbs().maxCoeff() < tol * (1 + run.logits.cwiseAbs().maxCoeff()));
  CHECK(std::abs(static_cast<double>(pe.full_loss() - run.loss_mean)) < tol);
}

TEST_CASE("terms are named by their path, ordered by layer, and know their order") {
  test::RandomModelSpec spec;
  spec.n_layers = 2;
  spec.n_heads = 2;
  const auto model = processed(test::random_model<double>(spec));
  const PathExpansion<double> pe(model, random_tokens(1, 5, spec.d_vocab, 1));
  std::vector<std::string> names;
  for (const PathTerm& t : pe.terms()) names.push_back(t.name());
  CHECK(names == std::vector<std::string>{"direct", "L0H0", "L0H1", "b_O[0]", "L1H0", "L0H0->L1H0",
                                          "L0H1->L1H0", "b_O[0]->L1H0", "L1H1", "L0H0->L1H1",
                                          "L0H1->L1H1", "b_O[0]->L1H1", "b_O[1]"});
  const PathTerm& virt = pe.term(pe.index_of("L0H1->L1H0"));
  CHECK(virt.order() == 2);
  CHECK(virt.last_layer() == 1);
  CHECK(virt.involves({0, 1}));
  CHECK_FALSE(virt.involves({0, 0}));
  CHECK(pe.term(pe.index_of("b_O[0]")).order() == 1);
  CHECK(pe.term(pe.index_of("b_O[0]->L1H1")).order() == 1);
  CHECK(pe.term(pe.index_of("b_O[0]")).last_layer() == 0);
  CHECK(pe.term(0).order() == 0);
  CHECK(pe.term(0).last_layer() == -1);

  SUBCASE("an unprocessed model has value-bias terms, named after their head") {
    const PathExpansion<double> raw(test::random_model<double>(spec),
                                    random_tokens(1, 5, spec.d_vocab, 1));
    const PathTerm& vb = raw.term(raw.index_of("L0H1.b_V->L1H0"));
    CHECK(vb.source == PathSource::value_bias);
    CHECK(vb.involves({0, 1}));
    CHECK(vb.order() == 1);
  }
}

TEST_CASE("truncating the expansion keeps the identity through a remainder term") {
  test::RandomModelSpec spec;
  spec.n_layers = 3;
  spec.n_heads = 2;
  const auto model = processed(test::random_model<double>(spec));
  const Tokens tokens = random_tokens(2, 6, spec.d_vocab, 2);
  const PathExpansion<double> full(model, tokens);
  PathExpansionOptions options;
  options.max_order = 1;
  const PathExpansion<double> cut(model, tokens, options);
  const PathTerm& rest = cut.terms().back();
  CHECK(rest.name() == "higher_order");
  CHECK(rest.order() == 2);
  Matrix<double> higher = Matrix<double>::Zero(12, spec.d_model);
  for (std::size_t i = 0; i < full.size(); ++i) {
    if (full.term(i).order() >= 2) higher += full.contribution(i);
  }
  CHECK((cut.contribution(cut.size() - 1) - higher).cwiseAbs().maxCoeff() < 1e-9);
  CHECK(std::abs(cut.full_loss() - full.full_loss()) < 1e-9);
  CHECK(cut.loss_if([](const PathTerm& t) { return t.order() <= 1; }) ==
        doctest::Approx(full.loss_if([](const PathTerm& t) { return t.order() <= 1; })));
  CHECK_THROWS_WITH_AS(cut.circuit(cut.size() - 1),
                       "[circuitry.argument_error] PathExpansion::circuit: the remainder term "
                       "'higher_order' is a sum of paths and has no single circuit",
                       argument_error);
}

TEST_CASE("the loss of any subset does not depend on how it is computed") {
  // loss() picks the cheapest of: dense readout, full logits minus removed terms, constant plus
  // kept terms. All three must agree with the dense frozen readout of the kept sum.
  // d_model 8: small and large subsets are low-rank updates (rank 4 per head), middling ones are
  // not; d_model 64: the low-rank ways always win.
  for (int d_model : {8, 64}) {
    CAPTURE(d_model);
    test::RandomModelSpec spec;
    spec.n_layers = 2;
    spec.d_model = d_model;
    const auto model = test::random_model<double>(spec);
    const Tokens tokens = random_tokens(3, 8, spec.d_vocab, 6);
    const PathExpansion<double> pe(model, tokens);
    std::mt19937 gen(3);
    for (double p_keep : {0.0, 0.05, 0.5, 0.95, 1.0}) {
      for (int trial = 0; trial < 3; ++trial) {
        std::bernoulli_distribution keep_it(p_keep);
        std::vector<bool> keep(pe.size());
        for (std::size_t i = 0; i < keep.size(); ++i) keep[i] = keep_it(gen);
        CAPTURE(p_keep);
        CHECK(pe.loss(keep) ==
              doctest::Approx(pe.frozen().loss(pe.resid_final(keep))).epsilon(1e-11));
      }
    }
  }
  test::RandomModelSpec spec;
  spec.n_layers = 2;
  const PathExpansion<double> pe(test::random_model<double>(spec),
                                 random_tokens(3, 8, spec.d_vocab, 6));
  const std::size_t i = pe.index_of("L0H2->L1H1");
  std::vector<bool> keep(pe.size(), true);
  keep[i] = false;
  CHECK(pe.marginal_loss(i) == doctest::Approx(pe.loss(keep) - pe.full_loss()).epsilon(1e-12));
  CHECK(pe.marginal_losses().size() == pe.size());
}

TEST_CASE_TEMPLATE("losses evaluates many masks in one pass, as loss does one at a time", Scalar,
                   float, double) {
  // Masks that share terms (the summary's and every marginal), repeated masks, all and none.
  test::RandomModelSpec spec;
  spec.n_layers = 2;
  spec.d_vocab = 70;  // not a multiple of the tiles' 64 columns
  const auto model = processed(test::random_model<double>(spec)).template cast<Scalar>();
  const Tokens tokens = random_tokens(3, 7, spec.d_vocab, 4);  // 21 rows: not whole tiles
  const PathExpansion<Scalar> pe(model, tokens);
  std::vector<std::vector<bool>> masks = {std::vector<bool>(pe.size(), true),
                                          std::vector<bool>(pe.size(), false)};
  std::mt19937 gen(7);
  std::bernoulli_distribution keep_it(0.7);
  for (int trial = 0; trial < 4; ++trial) {
    masks.emplace_back(pe.size());
    for (std::size_t i = 0; i < pe.size(); ++i) masks.back()[i] = keep_it(gen);
  }
  for (std::size_t i = 0; i < pe.size(); ++i) {
    masks.emplace_back(pe.size(), true);
    masks.back()[i] = false;
  }
  masks.push_back(masks[2]);
  const std::vector<Scalar> batch = pe.losses(masks);
  REQUIRE(batch.size() == masks.size());
  const double eps = std::is_same<Scalar, float>::value ? 1e-5 : 1e-12;
  for (std::size_t k = 0; k < masks.size(); ++k) {
    CAPTURE(k);
    CHECK(batch[k] == doctest::Approx(pe.loss(masks[k])).epsilon(eps));
    CHECK(batch[k] == doctest::Approx(pe.frozen().loss(pe.resid_final(masks[k])))
                          .epsilon(std::is_same<Scalar, float>::value ? 1e-4 : 1e-11));
  }
  CHECK(batch.front() == doctest::Approx(pe.full_loss()).epsilon(eps));
  CHECK(batch.back() == batch[2]);
  const std::vector<Scalar> marginal = pe.marginal_losses();
  for (std::size_t i = 0; i < pe.size(); ++i) {
    CHECK(marginal[i] == doctest::Approx(batch[6 + i] - pe.full_loss()).epsilon(eps));
  }
  CHECK(pe.losses({}).empty());
}

TEST_CASE_TEMPLATE("the losses are the same with every SIMD level's kernels", Scalar, float,
                   double) {
  // The summary's masks and every marginal, with each level the processor has (products,
  // sums of tiles and exponentials: detail/simd_*.hpp), against the portable kernels; 100 x 61
  // tokens: not whole tiles of rows (24 or 48) nor of columns (64).
  test::RandomModelSpec spec;
  spec.n_layers = 2;
  spec.n_heads = 4;
  spec.d_model = 24;
  spec.d_head = 6;
  spec.d_vocab = 150;
  spec.n_ctx = 64;
  const auto model = processed(test::random_model<double>(spec)).template cast<Scalar>();
  const Tokens tokens = random_tokens(5, 61, spec.d_vocab, 9);
  std::vector<std::size_t> all(0);
  std::vector<std::vector<Scalar>> by_level;
  for (int level = 0; level <= static_cast<int>(detail::supported_simd_level()); ++level) {
    CAPTURE(level);
    detail::force_simd_level(static_cast<detail::SimdLevel>(level));
    const PathExpansion<Scalar> pe(model, tokens);
    if (all.empty()) {
      for (std::size_t i = 0; i < pe.size(); ++i) all.push_back(i);
    }
    const PathExpansionSummary<Scalar> s = summarize(pe, all);
    by_level.push_back(s.marginal);
    by_level.back().push_back(s.full_loss);
    by_level.back().insert(by_level.back().end(), s.loss_by_order.begin(), s.loss_by_order.end());
    for (const HeadPathLosses<Scalar>& h : s.heads) {
      by_level.back().push_back(h.without_everywhere);
      by_level.back().push_back(h.without_first_order);
    }
    detail::reset_simd_level();
  }
  const double eps = std::is_same<Scalar, float>::value ? 1e-5 : 1e-12;
  for (std::size_t level = 1; level < by_level.size(); ++level) {
    CAPTURE(level);
    REQUIRE(by_level[level].size() == by_level[0].size());
    for (std::size_t k = 0; k < by_level[0].size(); ++k) {
      CAPTURE(k);
      CHECK(by_level[level][k] == doctest::Approx(by_level[0][k]).epsilon(eps));
    }
  }
}

TEST_CASE("a path expansion can take the forward pass's cache and logits instead of copying") {
  test::RandomModelSpec spec;
  spec.n_layers = 2;
  const auto model = processed(test::random_model<double>(spec));
  const Tokens tokens = random_tokens(2, 9, spec.d_vocab, 3);
  const PathExpansion<double> copied(model, tokens);
  ForwardOptions options;
  options.cache = true;
  ForwardResult<double> run = forward(model, tokens, options);
  const double model_loss = run.loss_mean;
  const PathExpansion<double> moved(model, tokens, std::move(run));
  CHECK(moved.full_loss() == doctest::Approx(model_loss).epsilon(1e-12));
  CHECK(moved.full_loss() == doctest::Approx(copied.full_loss()).epsilon(1e-12));
  const std::size_t i = moved.index_of("L0H2->L1H1");
  CHECK(moved.marginal_loss(i) == doctest::Approx(copied.marginal_loss(i)).epsilon(1e-9));
  // Shared instead of copied: the same model object, the same figures.
  const auto shared = std::make_shared<const AttentionOnlyModel<double>>(model);
  const PathExpansion<double> sharing(shared, tokens, forward(model, tokens, options));
  CHECK(&sharing.frozen().model() == shared.get());
  CHECK(&moved.frozen().model() != &model);  // the other constructors copy
  CHECK(sharing.full_loss() == moved.full_loss());
  CHECK(sharing.marginal_loss(i) == moved.marginal_loss(i));
  CHECK_THROWS_WITH_AS(PathExpansion<double>(std::shared_ptr<const AttentionOnlyModel<double>>(),
                                             tokens, forward(model, tokens, options)),
                       "[circuitry.argument_error] FrozenModel: no model (a null shared_ptr)",
                       argument_error);
  ForwardResult<double> no_cache = forward(model, tokens);
  CHECK_THROWS_WITH_AS(PathExpansion<double>(model, tokens, std::move(no_cache)),
                       "[circuitry.argument_error] PathExpansion: the forward result has no cache "
                       "(run forward with options.cache = true)",
                       argument_error);
}

TEST_CASE("a path expansion that lets its patterns go gives the same terms and losses") {
  test::RandomModelSpec spec;
  spec.n_layers = 3;
  spec.n_heads = 2;
  const auto model = processed(test::random_model<double>(spec));
  const Tokens tokens = random_tokens(2, 7, spec.d_vocab, 4);
  for (const int max_order : {-1, 1}) {  // 1: the remainder reads every layer's patterns last
    CAPTURE(max_order);
    PathExpansionOptions keep, drop;
    keep.max_order = drop.max_order = max_order;
    drop.keep_patterns = false;
    const PathExpansion<double> kept(model, tokens, keep);
    const PathExpansion<double> dropped(model, tokens, drop);
    REQUIRE(dropped.size() == kept.size());
    for (std::size_t i = 0; i < kept.size(); ++i) {
      CAPTURE(kept.term(i).name());
      CHECK(dropped.term(i).name() == kept.term(i).name());
      CHECK(dropped.contribution(i) == kept.contribution(i));  // the same operations
    }
    CHECK(dropped.full_loss() == kept.full_loss());
    CHECK(dropped.marginal_losses() == kept.marginal_losses());
    for (int l = 0; l < spec.n_layers; ++l) {
      CHECK(kept.frozen().has_patterns(l));
      CHECK_FALSE(dropped.frozen().has_patterns(l));
    }
    CHECK(kept.frozen().pattern({1, 0}, 1).rows() == 7);
    CHECK_THROWS_WITH_AS(dropped.frozen().pattern({1, 0}, 1),
                         "[circuitry.argument_error] FrozenModel: the patterns of layer 1 were "
                         "released (PathExpansionOptions::keep_patterns = false)",
                         argument_error);
    CHECK_THROWS_AS(dropped.frozen().resid_final(dropped.frozen().resid0()), argument_error);
  }
  CHECK_THROWS_WITH_AS(PathExpansion<double>(model, tokens).frozen().pattern({3, 0}, 0),
                       "[circuitry.argument_error] FrozenModel: no pattern of head L3H0 on "
                       "sequence 0 (3 layers, 2 heads, 2 sequences)",
                       argument_error);
}

TEST_CASE("the summary gives partial sums by order and by layer, and per-head ablations") {
  test::RandomModelSpec spec;
  spec.n_layers = 3;
  spec.n_heads = 2;
  const auto model = processed(test::random_model<double>(spec));
  const PathExpansion<double> pe(model, random_tokens(2, 6, spec.d_vocab, 9));
  const PathExpansionSummary<double> s = summarize(pe);
  CHECK(s.uniform_loss == doctest::Approx(std::log(40.0)));
  REQUIRE(s.loss_by_order.size() == 4);  // direct, + first, + second, + third order
  REQUIRE(s.loss_by_layer.size() == 4);  // direct, + L0, + L1, + L2
  CHECK(s.loss_by_order.back() == doctest::Approx(s.full_loss).epsilon(1e-12));
  CHECK(s.loss_by_layer.back() == doctest::Approx(s.full_loss).epsilon(1e-12));
  CHECK(s.loss_by_order.front() == doctest::Approx(s.loss_by_layer.front()).epsilon(1e-12));
  CHECK(s.loss_by_order[1] == doctest::Approx(pe.loss_if([](const PathTerm& t) {
                                return t.order() <= 1;
                              })).epsilon(1e-12));
  REQUIRE(s.heads.size() == 6);
  CHECK(s.heads[3].head == HeadId{1, 1});
  CHECK(s.heads[3].without_everywhere == doctest::Approx(pe.loss_if([](const PathTerm& t) {
                                           return !t.involves({1, 1});
                                         })).epsilon(1e-12));
  // L2H1's first-order terms: it reading the direct path and each earlier b_O.
  CHECK(s.heads[5].without_first_order ==
        doctest::Approx(pe.loss_if([](const PathTerm& t) {
          return t.name() != "L2H1" && t.name() != "b_O[0]->L2H1" && t.name() != "b_O[1]->L2H1";
        })).epsilon(1e-12));
  CHECK(s.marginal.empty());

  SUBCASE("with the marginal losses of some terms, from the same pass") {
    const std::vector<std::size_t> some = {pe.index_of("L0H1->L1H0"), 0, pe.index_of("L2H1")};
    const PathExpansionSummary<double> t = summarize(pe, some);
    REQUIRE(t.marginal.size() == some.size());
    for (std::size_t k = 0; k < some.size(); ++k) {
      CHECK(t.marginal[k] == doctest::Approx(pe.marginal_loss(some[k])).epsilon(1e-12));
    }
    CHECK(t.loss_by_order[1] == doctest::Approx(s.loss_by_order[1]).epsilon(1e-12));
    CHECK_THROWS_WITH_AS(
        summarize(pe, {pe.size()}),
        ("[circuitry.argument_error] summarize: marginal term " + std::to_string(pe.size()) +
         " out of range [0, " + std::to_string(pe.size()) + ")")
            .c_str(),
        argument_error);
  }
}

TEST_CASE("a head chain's circuit is W_E OV ... OV W_U, kept factored") {
  test::RandomModelSpec spec;
  spec.n_layers = 2;
  const auto model = processed(test::random_model<double>(spec));
  const PathExpansion<double> pe(model, random_tokens(1, 4, spec.d_vocab, 1));
  auto ov = [&](int l, int h) {
    return Matrix<double>(model.head(l, h).W_V * model.head(l, h).W_O);
  };
  const FactoredMatrix<double> c = pe.circuit(pe.index_of("L0H2->L1H1"));
  CHECK(c.inner_dim() == spec.d_head);
  CHECK(c.AB().isApprox(model.W_E * ov(0, 2) * ov(1, 1) * model.W_U, 1e-12));
  CHECK(pe.circuit(0).AB().isApprox(model.W_E * model.W_U, 1e-12));
  const FactoredMatrix<double> b = pe.circuit(pe.index_of("b_O[0]->L1H0"));
  CHECK(b.rows() == 1);
  CHECK(b.AB().isApprox(model.layers[0].b_O.transpose() * ov(1, 0) * model.W_U, 1e-12));
}

TEST_CASE("misuse of a path expansion is a clear error") {
  const auto model = test::random_model<double>({});
  const Tokens tokens = random_tokens(2, 5, 40, 1);
  const PathExpansion<double> pe(model, tokens);
  CHECK_THROWS_WITH_AS(pe.index_of("L7H0"),
                       "[circuitry.argument_error] PathExpansion: no term 'L7H0' (terms are named "
                       "like 'direct', 'L0H3', 'L0H1->L1H5', 'b_O[0]', 'b_O[0]->L1H2')",
                       argument_error);
  const std::string mask_message =
      "[circuitry.argument_error] PathExpansion: mask of 2 entries "
      "for " +
      std::to_string(pe.size()) + " terms";
  CHECK_THROWS_WITH_AS(pe.loss({true, false}), mask_message.c_str(), argument_error);
  const auto other = run_with_cache(model, random_tokens(2, 4, 40, 1));
  CHECK_THROWS_WITH_AS(PathExpansion<double>(model, tokens, *other.cache),
                       "[circuitry.argument_error] FrozenModel: the cache does not fit the model "
                       "and tokens: cache of 2 x 4 tokens, tokens are 2 x 5",
                       argument_error);
}

namespace {

// Checks every figure of the reference's `path_expansion` for one shared model (see
// path_expansion.hpp for how the reference's names map onto terms).
void check_reference_path_expansion(const std::string& name) {
  const nlohmann::json& ref = test::reference(name).at("path_expansion");
  const AttentionOnlyModel<double>& model = test::processed_model<double>(name);
  const Tokens tokens = make_tokens(
      test::reference(name).at("eval_batch").at("tokens").get<std::vector<std::vector<int>>>());
  const PathExpansion<double> pe(model, tokens);
  auto near = [](double got, const nlohmann::json& expected) {
    return std::abs(got - expected.get<double>()) < 1e-4;
  };
  std::vector<std::size_t> virtual_terms;  // L0Ha->L1Hb: their marginal losses, same pass
  for (std::size_t i = 0; i < pe.size(); ++i) {
    const PathTerm& t = pe.term(i);
    if (t.source == PathSource::direct && t.chain.size() == 2) virtual_terms.push_back(i);
  }
  const PathExpansionSummary<double> s = summarize(pe, virtual_terms);
  CHECK(near(s.uniform_loss, ref.at("uniform")));
  CHECK(near(s.full_loss, ref.at("full")));
  CHECK(near(s.full_loss, ref.at("model_loss")));
  CHECK(near(s.loss_by_order.front(), ref.at("direct")));
  CHECK(near(s.loss_by_layer.at(1), ref.at("direct+L0")));
  CHECK(near(s.loss_by_order.back(), ref.at("full")));
  if (model.n_layers() < 2) {
    CHECK_FALSE(ref.contains("ablate_virtual_pair_top"));
    return;
  }
  CHECK(near(s.loss_by_order.at(1), ref.at("direct+L0+L1_first_order")));
  const int H = model.n_heads();
  for (std::size_t h = 0; h < static_cast<std::size_t>(H); ++h) {
    CAPTURE(h);
    // Without L1Hh's first-order terms: it reading direct and b_O[0].
    CHECK(near(s.heads.at(static_cast<std::size_t>(H) + h).without_first_order,
               ref.at("ablate_L1_first_order_head").at(h)));
    // Without L0Hh everywhere: L0Hh and every L0Hh->L1Hk.
    CHECK(near(s.heads.at(h).without_everywhere, ref.at("ablate_L0_head_everywhere").at(h)));
  }
  std::vector<std::pair<double, std::string>> virt;
  for (std::size_t k = 0; k < virtual_terms.size(); ++k) {
    virt.emplace_back(s.marginal.at(k), pe.term(virtual_terms[k]).name());
  }
  CHECK(static_cast<int>(virt.size()) == H * H);
  std::sort(virt.begin(), virt.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  const nlohmann::json& top = ref.at("ablate_virtual_pair_top");
  for (std::size_t k = 0; k < top.size(); ++k) {
    CAPTURE(k);
    CHECK(virt[k].second == top.at(k).at(1).get<std::string>());
    CHECK(near(virt[k].first, top.at(k).at(0)));
  }
}

}  // namespace

TEST_CASE("the path expansion reproduces the reference's losses on attn-only-tiny") {
  check_reference_path_expansion("attn-only-tiny");
}

TEST_CASE("the path expansion reproduces the reference's losses on attn-only-1l") {
  check_reference_path_expansion("attn-only-1l");
}

TEST_CASE("the path expansion reproduces the reference's losses on attn-only-2l") {
  check_reference_path_expansion("attn-only-2l");
}
