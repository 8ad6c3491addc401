// circuits.hpp: full circuits, their spectra and norms from the shared Gram matrices, copying
// scores and copying accuracy — each against a dense double computation on random weights.
#include <doctest/doctest.h>

#include <Eigen/Eigenvalues>
#include <circuitry/circuits.hpp>
#include <circuitry/composition.hpp>

#include "support/random_model.hpp"
#include "support/reference.hpp"
#include "support/simd_levels.hpp"

using namespace circuitry;

namespace {

test::RandomModelSpec small_spec() {
  test::RandomModelSpec s;
  s.n_layers = 2;
  s.n_heads = 3;
  s.d_model = 12;
  s.d_head = 3;
  s.d_vocab = 30;
  s.seed = 7;
  return s;
}

/// The nonzero part of a dense spectrum: the `keep` eigenvalues of largest magnitude.
std::vector<std::complex<double>> largest_eigenvalues(const Matrix<double>& dense, Index keep) {
  Eigen::EigenSolver<Matrix<double>> solver(dense, false);
  REQUIRE(solver.info() == Eigen::Success);
  std::vector<std::complex<double>> all(solver.eigenvalues().data(),
                                        solver.eigenvalues().data() + solver.eigenvalues().size());
  std::sort(all.begin(), all.end(), [](auto a, auto b) { return std::abs(a) > std::abs(b); });
  all.resize(static_cast<std::size_t>(keep));
  return all;
}

double tolerance_for(double) { return 1e-9; }
double tolerance_for(float) { return 2e-4; }

}  // namespace

TEST_CASE_TEMPLATE("full circuits are the dense products W_E OV W_U and W_E QK W_E^T", Scalar,
                   float, double) {
  const auto model = test::random_model<double>(small_spec());
  const auto model_s = model.template cast<Scalar>();
  for (const HeadId id : model.head_ids()) {
    CAPTURE(id.name());
    const auto& h = model.head(id);
    const Matrix<double> ov = model.W_E * h.W_V * h.W_O * model.W_U;
    const Matrix<double> qk = model.W_E * h.W_Q * h.W_K.transpose() * model.W_E.transpose();
    const double tol = tolerance_for(Scalar());
    CHECK((full_ov_circuit(model_s, id).AB().template cast<double>() - ov).norm() <=
          tol * ov.norm());
    CHECK((full_qk_circuit(model_s, id).AB().template cast<double>() - qk).norm() <=
          tol * qk.norm());
  }
  const Matrix<double> bigram = model.W_E * model.W_U;
  CHECK((direct_path(model_s).AB().template cast<double>() - bigram).norm() <=
        tolerance_for(Scalar()) * bigram.norm());
}

TEST_CASE_TEMPLATE("spectra and norms from the embedding Grams equal the dense ones", Scalar, float,
                   double) {
  const auto model = test::random_model<double>(small_spec());
  const auto model_s = model.template cast<Scalar>();
  const EmbeddingGrams<Scalar> grams(model_s);
  const double tol = std::is_same<Scalar, double>::value ? 1e-9 : 1e-4;
  for (const HeadId id : model.head_ids()) {
    CAPTURE(id.name());
    const auto& h = model.head(id);
    const Matrix<double> ov = h.W_V * h.W_O, qk = h.W_Q * h.W_K.transpose();
    const Matrix<double> full_ov = model.W_E * ov * model.W_U;
    const Matrix<double> full_qk = model.W_E * qk * model.W_E.transpose();
    const Index d = h.d_qk();
    CHECK(test::multiset_relative_distance(ov_eigenvalues(model_s, id),
                                           largest_eigenvalues(ov, d)) <= tol);
    CHECK(test::multiset_relative_distance(qk_eigenvalues(model_s, id),
                                           largest_eigenvalues(qk, d)) <= tol);
    CHECK(test::multiset_relative_distance(full_ov_eigenvalues(model_s, grams, id),
                                           largest_eigenvalues(full_ov, d)) <= tol);
    CHECK(test::multiset_relative_distance(full_qk_eigenvalues(model_s, grams, id),
                                           largest_eigenvalues(full_qk, d)) <= tol);
    CHECK(static_cast<double>(full_ov_frobenius(model_s, grams, id)) ==
          doctest::Approx(full_ov.norm()).epsilon(tol));
    CHECK(static_cast<double>(full_qk_frobenius(model_s, grams, id)) ==
          doctest::Approx(full_qk.norm()).epsilon(tol));
    // trace = sum of eigenvalues
    const auto spectrum = full_ov_eigenvalues(model_s, grams, id);
    CHECK(static_cast<double>(spectrum.sum().real()) ==
          doctest::Approx(full_ov.trace()).epsilon(tol).scale(full_ov.norm()));
  }
}

TEST_CASE_TEMPLATE(
    "the copying score is +1 for copying, -1 for anti-copying and cos θ for a rotation", Scalar,
    float, double) {
  using C = std::complex<Scalar>;
  ComplexVector<Scalar> positive(3), negative(3), rotation(2),
      zero = ComplexVector<Scalar>::Zero(4);
  positive << C(1), C(2), C(0.5);
  negative << C(-1), C(-3), C(-0.25);
  const Scalar theta = Scalar(0.7);
  rotation << std::polar(Scalar(2), theta), std::polar(Scalar(2), -theta);
  CHECK(copying_score(positive) == doctest::Approx(1.0));
  CHECK(copying_score(negative) == doctest::Approx(-1.0));
  CHECK(copying_score(rotation) == doctest::Approx(std::cos(0.7)).epsilon(1e-6));
  SUBCASE("a head that writes nothing has copying score 0, not NaN") {
    CHECK(copying_score(zero) == Scalar(0));
  }
}

TEST_CASE_TEMPLATE(
    "copying accuracy counts the rows whose diagonal entry ranks first or in the top five", Scalar,
    float, double) {
  auto spec = small_spec();
  spec.d_vocab = 50;
  const auto model = test::random_model<double>(spec);
  const auto model_s = model.template cast<Scalar>();
  const std::vector<CopyingAccuracy> all = full_ov_copying_accuracies(model_s);
  REQUIRE(all.size() == model.head_ids().size());
  for (const HeadId id : model.head_ids()) {
    CAPTURE(id.name());
    const auto& h = model.head(id);
    const Matrix<double> full = model.W_E * h.W_V * h.W_O * model.W_U;
    int top1 = 0, top5 = 0;
    for (Index i = 0; i < full.rows(); ++i) {
      int above = 0;
      for (Index j = 0; j < full.cols(); ++j) above += full(i, j) > full(i, i) ? 1 : 0;
      top1 += above == 0;
      top5 += above < 5;
    }
    const CopyingAccuracy acc = full_ov_copying_accuracy(model_s, id);
    CHECK(acc.top1 == doctest::Approx(top1 / 50.0));
    CHECK(acc.top5 == doctest::Approx(top5 / 50.0));
    // All heads at once (one product per layer and factor): the same counts.
    const CopyingAccuracy& batched =
        all[static_cast<std::size_t>(id.layer * model.n_heads() + id.head)];
    CHECK(batched.top1 == doctest::Approx(top1 / 50.0));
    CHECK(batched.top5 == doctest::Approx(top5 / 50.0));
  }
}

TEST_CASE("an identity OV circuit through an orthogonal embedding copies every token") {
  auto spec = small_spec();
  spec.d_vocab = spec.d_model;  // W_E square orthogonal, W_U = W_E^T: the direct path is I
  auto model = test::random_model<double>(spec);
  Eigen::HouseholderQR<Matrix<double>> qr(model.W_E);
  model.W_E = qr.householderQ() * Matrix<double>::Identity(spec.d_model, spec.d_model);
  model.W_U = model.W_E.transpose();
  auto& h = model.layers[0].heads[0];
  h.W_V = Matrix<double>::Identity(spec.d_model, spec.d_head);
  h.W_O = Matrix<double>::Identity(spec.d_head, spec.d_model);
  const EmbeddingGrams<double> grams(model);
  const auto spectrum = full_ov_eigenvalues(model, grams, {0, 0});
  for (Index i = 0; i < spectrum.size(); ++i) CHECK(spectrum(i).real() == doctest::Approx(1.0));
  CHECK(copying_score(spectrum) == doctest::Approx(1.0));
  CHECK(full_ov_frobenius(model, grams, {0, 0}) == doctest::Approx(std::sqrt(double(spec.d_head))));
}

TEST_CASE("asking for a head the model does not have names it") {
  const auto model = test::random_model<double>(small_spec());
  CHECK_THROWS_WITH_AS(full_ov_circuit(model, {2, 0}),
                       "[circuitry.argument_error] no head L2H0 in a model of 2 layers x 3 heads",
                       argument_error);
}

// ---- Numerical edge cases (README, "Robustness") -------------------------------------------

TEST_CASE_TEMPLATE("copying_score is defined for every finite spectrum", Scalar, float, double) {
  using C = std::complex<Scalar>;
  auto score = [](std::vector<C> v) {
    return copying_score<Scalar>(Eigen::Map<ComplexVector<Scalar>>(v.data(), Index(v.size())));
  };
  CHECK(score({}) == 0);                    // no eigenvalue
  CHECK(score({C(0), C(0), C(0)}) == 0);    // a head that writes nothing
  CHECK(score({C(2), C(0.5), C(0)}) == 1);  // positive reals: copying
  CHECK(score({C(-2), C(-1)}) == -1);       // negative reals
  CHECK(score({C(0, 1), C(0, -1)}) == 0);   // a rotation: no sign
  CHECK(score({C(3), C(-1)}) == doctest::Approx(0.5));
  // Near the largest float, the sums would overflow to inf / inf: they are taken scaled.
  const Scalar big = std::numeric_limits<Scalar>::max() / 2;
  CHECK(score({C(big), C(big), C(-big)}) == doctest::Approx(1.0 / 3));
  // Subnormal eigenvalues keep their score.
  const Scalar tiny = std::numeric_limits<Scalar>::denorm_min();
  CHECK(score({C(2 * tiny), C(tiny), C(-tiny)}) == doctest::Approx(0.5));
  // Not finite: NaN, never a number that looks like an answer.
  CHECK(std::isnan(score({C(1), C(std::numeric_limits<Scalar>::infinity())})));
  CHECK(std::isnan(score({C(std::numeric_limits<Scalar>::quiet_NaN())})));
}

TEST_CASE_TEMPLATE("an all-zero head has zero spectra, norms and composition, and score 0", Scalar,
                   float, double) {
  auto model = test::random_model<Scalar>(small_spec());
  auto& zero = model.layers[0].heads[1];
  zero.W_O.setZero();  // OV = 0
  zero.W_K.setZero();  // QK = 0
  const HeadId id{0, 1};
  const EmbeddingGrams<Scalar> grams(model);
  for (const auto& spectrum :
       {ov_eigenvalues(model, id), qk_eigenvalues(model, id), full_ov_eigenvalues(model, grams, id),
        full_qk_eigenvalues(model, grams, id)}) {
    CHECK(spectrum == ComplexVector<Scalar>::Zero(small_spec().d_head));
    CHECK(copying_score(spectrum) == 0);
  }
  CHECK(full_ov_frobenius(model, grams, id) == 0);
  CHECK(full_qk_frobenius(model, grams, id) == 0);
  CHECK(full_ov_circuit(model, id).singular_values() == Vector<Scalar>::Zero(small_spec().d_head));
  for (const auto type : {CompositionType::Q, CompositionType::K, CompositionType::V}) {
    const auto scores = composition_scores(model, type);
    for (int h = 0; h < 3; ++h) CHECK(scores(id, {1, h}) == 0);
  }
  // Every entry of its full OV circuit ties with the diagonal: top-1 by the documented rule.
  CHECK(full_ov_copying_accuracy(model, id).top1 == 1.0);
  CHECK(full_ov_copying_accuracies(model).at(1).top1 == 1.0);  // L0H1
}

TEST_CASE("float weights whose circuit overflows float are a numerical_error; double copes") {
  auto model = test::random_model<double>(small_spec());
  auto& h = model.layers[0].heads[0];
  h.W_V *= 1e20;  // OV = W_V W_O: entries near 1e40, past float's 3.4e38
  h.W_O *= 1e20;
  const AttentionOnlyModel<float> narrow = model.cast<float>();
  CHECK_THROWS_WITH_AS(ov_eigenvalues(narrow, {0, 0}),
                       "[circuitry.numerical_error] eigenvalues of the OV circuit of L0H0: the "
                       "matrix holds NaN or infinity, or an eigenvalue overflows",
                       numerical_error);
  const auto wide = ov_eigenvalues(model, {0, 0});
  CHECK(wide.allFinite());
  // Scaled down by 1e40 the same head is ordinary, and its score does not depend on scale.
  h.W_V /= 1e20;
  h.W_O /= 1e20;
  const double score = copying_score(ov_eigenvalues(model, {0, 0}));
  CHECK(copying_score(wide) == doctest::Approx(score).epsilon(1e-9));
  // Large but representable in float (entries near 1e36): the same score.
  h.W_V *= 1e18;
  h.W_O *= 1e18;
  CHECK(copying_score(ov_eigenvalues(model.cast<float>(), {0, 0})) ==
        doctest::Approx(score).epsilon(1e-3));
}

TEST_CASE_TEMPLATE(
    "the embedding Gram matrices are W_E^T W_E, W_U W_U^T and W_U W_E at every SIMD level", Scalar,
    float, double) {
  test::RandomModelSpec spec;
  spec.d_model = 37;    // not a whole number of vectors
  spec.d_vocab = 1000;  // several chunks of multiply_long's inner dimension, the last partial
  spec.seed = 4;
  const auto model = test::random_model<double>(spec);
  const auto model_s = model.template cast<Scalar>();
  const Matrix<double> E = model.W_E.transpose() * model.W_E;
  const Matrix<double> U = model.W_U * model.W_U.transpose();
  const Matrix<double> UE = model.W_U * model.W_E;
  const double tol = std::is_same<Scalar, float>::value ? 1e-5 : 1e-12;
  for (const auto level : test::simd_levels()) {
    CAPTURE(std::string(detail::simd_level_name(level)));
    const test::ForcedSimdLevel forced(level);
    const EmbeddingGrams<Scalar> grams(model_s);
    CHECK((grams.E.template cast<double>() - E).norm() <= tol * E.norm());
    CHECK((grams.U.template cast<double>() - U).norm() <= tol * U.norm());
    CHECK((grams.UE.template cast<double>() - UE).norm() <= tol * UE.norm());
    CHECK(grams.E == grams.E.transpose());  // exactly symmetric
    CHECK(grams.U == grams.U.transpose());
  }
}
