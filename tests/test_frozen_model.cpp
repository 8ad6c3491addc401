// detail/frozen_model.hpp (part of path_expansion.hpp): with patterns and LayerNorm scales
// frozen the model is linear in its input and is the forward pass on its own input; its losses,
// one or several sets in one pass, are the next-token losses of the logits they are given.
#include <doctest/doctest.h>

#include <circuitry/path_expansion.hpp>
#include <cmath>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "support/random_model.hpp"
#include "support/tokens.hpp"

using namespace circuitry;
using circuitry::test::random_tokens;

namespace {

// The mean next-token loss of `logits` [B S, d_vocab] (row b S + p predicts tokens(b, p + 1)),
// each row's log-sum-exp taken in long double from its maximum.
double brute_force_loss(const Matrix<double>& logits, const Tokens& tokens) {
  const Index B = tokens.rows(), S = tokens.cols();
  long double total = 0;
  for (Index b = 0; b < B; ++b) {
    for (Index p = 0; p + 1 < S; ++p) {
      const Index r = b * S + p;
      const long double m = logits.row(r).maxCoeff();
      long double sum = 0;
      for (Index v = 0; v < logits.cols(); ++v) sum += std::exp(logits(r, v) - m);
      total += m + std::log(sum) - logits(r, tokens(b, p + 1));
    }
  }
  return static_cast<double>(total / static_cast<long double>(B * (S - 1)));
}

}  // namespace

TEST_CASE("with patterns and LayerNorm scales frozen the model is linear in its input") {
  for (NormalizationType norm :
       {NormalizationType::none, NormalizationType::LN, NormalizationType::LNPre}) {
    CAPTURE(to_string(norm));
    test::RandomModelSpec spec;
    spec.n_layers = 3;
    spec.normalization = norm;
    const auto model = test::random_model<double>(spec);
    const Tokens tokens = random_tokens(2, 6, spec.d_vocab, 3);
    const FrozenModel<double> f(model, tokens);
    std::mt19937_64 rng(4);
    const Matrix<double> E1 = test::random_matrix<double>(rng, 12, spec.d_model);
    const Matrix<double> E2 = test::random_matrix<double>(rng, 12, spec.d_model);
    const double a = 1.7, b = -0.6;
    auto map = [&](const Matrix<double>& X) { return f.readout_linear(f.resid_final(X, false)); };
    const Matrix<double> lhs = map(a * E1 + b * E2), rhs = a * map(E1) + b * map(E2);
    CHECK((lhs - rhs).cwiseAbs().maxCoeff() < 1e-9 * (1 + rhs.cwiseAbs().maxCoeff()));
    // With its constants, the frozen map on the real input is the forward pass.
    const auto run = forward(model, tokens);
    CHECK((f.logits(f.resid_final(f.resid0(), true)) - run.logits).cwiseAbs().maxCoeff() < 1e-9);
  }
}

TEST_CASE("a frozen layer's output is the sum of its heads' outputs, and needs a whole stream") {
  test::RandomModelSpec spec;
  spec.n_layers = 2;
  spec.n_heads = 3;
  const auto model = test::random_model<double>(spec);
  const Tokens tokens = random_tokens(3, 9, spec.d_vocab, 21);
  const FrozenModel<double> f(model, tokens);
  std::mt19937_64 rng(5);
  const Matrix<double> X = test::random_matrix<double>(rng, 27, spec.d_model);
  for (int l = 0; l < spec.n_layers; ++l) {
    CAPTURE(l);
    // Each head on its own, with Eigen's dense products and the whole [S, S] pattern.
    const Matrix<double> x = f.ln1_linear(l, X);
    const Matrix<double> z = f.layer_z(l, X);
    REQUIRE(z.cols() == spec.n_heads * spec.d_head);
    Matrix<double> want = Matrix<double>::Zero(X.rows(), X.cols());
    for (int h = 0; h < spec.n_heads; ++h) {
      CAPTURE(h);
      const AttentionHead<double>& hd = model.head(l, h);
      const Matrix<double> zh = f.attend({l, h}, x * hd.W_V);
      CHECK((z.middleCols(h * spec.d_head, spec.d_head) - zh).cwiseAbs().maxCoeff() <
            1e-12 * (1 + zh.cwiseAbs().maxCoeff()));
      want += zh * hd.W_O;
    }
    CHECK((f.layer_linear(l, X) - want).cwiseAbs().maxCoeff() <
          1e-12 * (1 + want.cwiseAbs().maxCoeff()));
  }
  const std::string message =
      "[circuitry.argument_error] FrozenModel: the stream is 26 x 16, expected 27 x 16 (tokens x "
      "d_model)";
  CHECK_THROWS_WITH_AS(f.layer_linear(0, X.topRows(26)), message.c_str(), argument_error);
  CHECK_THROWS_WITH_AS(f.layer_z(1, X.topRows(26)), message.c_str(), argument_error);
}

TEST_CASE_TEMPLATE(
    "a frozen model's losses, one set or several in one pass, are their logits' losses", Scalar,
    float, double) {
  test::RandomModelSpec spec;
  spec.n_layers = 2;
  spec.normalization = NormalizationType::LN;
  const auto model = test::random_model<double>(spec);
  // 14 x 11 = 154 rows: two whole blocks of 64 rows and a part of one.
  const Tokens tokens = random_tokens(14, 11, spec.d_vocab, 12);
  const FrozenModel<Scalar> f(model.template cast<Scalar>(), tokens);
  const FrozenModel<double> f64(model, tokens);
  const double tol = std::is_same<Scalar, float>::value ? 2e-5 : 1e-12;

  // Three streams: the final one, it halved, and it with a random low-rank part added.
  std::mt19937_64 rng(9);
  const Matrix<double> R = f64.resid_final(f64.resid0(), true);
  const Matrix<double> U = test::random_matrix<double>(rng, R.rows(), 3);
  const Matrix<double> W = test::random_matrix<double>(rng, 3, R.cols());
  const std::vector<Matrix<double>> streams{R, 0.5 * R, R + U * W};
  std::vector<double> want;
  for (const Matrix<double>& X : streams) want.push_back(brute_force_loss(f64.logits(X), tokens));
  // The final stream's loss is the forward pass's.
  CHECK(std::abs(want[0] - forward(model, tokens).loss_mean) < 1e-10);

  std::vector<Matrix<Scalar>> cast;
  for (const Matrix<double>& X : streams) cast.push_back(X.cast<Scalar>());
  for (std::size_t i = 0; i < cast.size(); ++i) {
    CAPTURE(i);
    CHECK(std::abs(static_cast<double>(f.loss(cast[i])) - want[i]) < tol * (1 + want[i]));
  }
  std::vector<Matrix<Scalar>> logits;
  for (const Matrix<Scalar>& X : cast) logits.push_back(f.logits(X));
  const std::vector<Scalar> got = f.mean_losses(3, [&](Index r0, Index n, const auto& loss_of) {
    for (Index i = 2; i >= 0; --i) {  // in any order
      loss_of(i, Matrix<Scalar>(logits[static_cast<std::size_t>(i)].middleRows(r0, n)));
    }
  });
  REQUIRE(got.size() == 3);
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(std::abs(static_cast<double>(got[i]) - want[i]) < tol * (1 + want[i]));
  }
}
