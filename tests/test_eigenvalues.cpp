// detail/eigenvalues.hpp: the eigenvalues every circuit spectrum comes from — balanced, with
// fallbacks when Eigen's real Schur iteration stalls.
#include <doctest/doctest.h>

#include <circuitry/factored_matrix.hpp>
#include <circuitry/safetensors.hpp>

#include "support/random_model.hpp"
#include "support/reference.hpp"

using namespace circuitry;

TEST_CASE("a matrix on which Eigen's real Schur iteration stalls still gets its eigenvalues") {
  // W_O (W_U W_E) W_V of a random GPT-2-small-shaped model's head: Eigen 3.4's EigenSolver
  // reports NoConvergence on it, whatever its iteration limit.
  const auto file = SafetensorsFile::open(std::string(CIRCUITRY_TEST_DATA_DIR) +
                                          "/stalling-real-schur-64.safetensors");
  const Matrix<double> M = file.matrix<double>("M", 64, 64);
  ComplexVector<double> values;
  REQUIRE(detail::general_eigenvalues<double>(M, values) == Eigen::Success);
  REQUIRE(values.size() == 64);
  // Independent checks: trace = sum, and the complex Schur form of the unbalanced matrix.
  CHECK(values.sum().real() == doctest::Approx(M.trace()).epsilon(1e-10).scale(M.norm()));
  CHECK(std::abs(values.sum().imag()) <= 1e-10 * M.norm());
  const Eigen::ComplexEigenSolver<Eigen::MatrixXcd> complex(M.cast<std::complex<double>>(), false);
  REQUIRE(complex.info() == Eigen::Success);
  const ComplexVector<double> expected = complex.eigenvalues();
  std::vector<std::complex<double>> want(expected.data(), expected.data() + expected.size());
  CHECK(test::multiset_relative_distance<double>(values, want) <= 1e-9);
  // And through FactoredMatrix, as the report computes it.
  CHECK(FactoredMatrix<double>(M, Matrix<double>::Identity(64, 64)).eigenvalues().size() == 64);
}

TEST_CASE_TEMPLATE("balancing leaves the eigenvalues of a badly scaled matrix unchanged", Scalar,
                   float, double) {
  std::mt19937_64 rng(3);
  const Matrix<double> A = test::random_matrix<double>(rng, 12, 12);
  Vector<double> d(12);
  for (Index i = 0; i < 12; ++i) d(i) = std::pow(10.0, -3.0 + 0.5 * static_cast<double>(i));
  // D^-1 A D has A's eigenvalues; its entries span twelve orders of magnitude.
  const Matrix<double> scaled = d.cwiseInverse().asDiagonal() * A * d.asDiagonal();
  Matrix<Scalar> balanced = scaled.cast<Scalar>();
  detail::balance(balanced);
  CHECK(balanced.cwiseAbs().maxCoeff() < scaled.cwiseAbs().maxCoeff());
  ComplexVector<Scalar> values;
  REQUIRE(detail::general_eigenvalues<Scalar>(scaled.cast<Scalar>(), values) == Eigen::Success);
  const Eigen::EigenSolver<Matrix<double>> solver(A, false);
  const ComplexVector<double> expected = solver.eigenvalues();
  std::vector<std::complex<double>> want(expected.data(), expected.data() + expected.size());
  CHECK(test::multiset_relative_distance<Scalar>(values, want) <=
        (std::is_same<Scalar, double>::value ? 1e-10 : 1e-4));
}

TEST_CASE("a matrix holding NaN has no eigenvalues: the status says why") {
  Matrix<double> m = Matrix<double>::Identity(3, 3);
  m(0, 2) = std::numeric_limits<double>::quiet_NaN();
  ComplexVector<double> values;
  CHECK(detail::general_eigenvalues<double>(m, values) == Eigen::NumericalIssue);
}
