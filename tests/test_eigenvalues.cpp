// detail/eigenvalues.hpp: the eigenvalues every circuit spectrum comes from — balanced, with
// fallbacks when Eigen's real Schur iteration stalls.
#include <doctest/doctest.h>

#include <circuitry/circuits.hpp>
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

// ---- Numerical edge cases (README, "Robustness"): each with its documented behaviour --------

TEST_CASE_TEMPLATE("an all-zero matrix has exactly zero eigenvalues", Scalar, float, double) {
  ComplexVector<Scalar> values;
  REQUIRE(detail::general_eigenvalues<Scalar>(Matrix<Scalar>::Zero(4, 4), values) ==
          Eigen::Success);
  CHECK(values == ComplexVector<Scalar>::Zero(4));
  REQUIRE(detail::general_eigenvalues<Scalar>(Matrix<Scalar>(0, 0), values) == Eigen::Success);
  CHECK(values.size() == 0);
}

TEST_CASE_TEMPLATE("a rank-deficient matrix has its nonzero eigenvalues and zeros", Scalar, float,
                   double) {
  // M = u v^T: rank 1, eigenvalues v.u = 10 (u is its eigenvector) and n - 1 zeros.
  Vector<Scalar> u(5), v(5);
  u << 1, 2, 3, 4, 5;
  v << 1, -1, 2, 0, 1;
  const Matrix<Scalar> M = u * v.transpose();
  ComplexVector<Scalar> values;
  REQUIRE(detail::general_eigenvalues<Scalar>(M, values) == Eigen::Success);
  const double tolerance = std::is_same<Scalar, float>::value ? 1e-5 : 1e-12;
  CHECK(test::multiset_relative_distance<Scalar>(
            values, {{10, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}}) <= tolerance);
}

TEST_CASE_TEMPLATE("exactly degenerate spectra: repeated and defective eigenvalues", Scalar, float,
                   double) {
  ComplexVector<Scalar> values;
  SUBCASE("a multiple of the identity gives its eigenvalue exactly, n times") {
    REQUIRE(detail::general_eigenvalues<Scalar>(Matrix<Scalar>::Identity(6, 6) * Scalar(3),
                                                values) == Eigen::Success);
    CHECK(values == ComplexVector<Scalar>::Constant(6, Scalar(3)));
  }
  SUBCASE("a Jordan block gives its eigenvalue to about sqrt(eps)") {
    Matrix<Scalar> J(2, 2);
    J << 2, 1, 0, 2;
    REQUIRE(detail::general_eigenvalues<Scalar>(J, values) == Eigen::Success);
    const double tolerance = std::sqrt(std::numeric_limits<Scalar>::epsilon()) * 4;
    CHECK(test::multiset_relative_distance<Scalar>(values, {{2, 0}, {2, 0}}) <= tolerance);
  }
  SUBCASE("a rotation gives a conjugate pair of equal magnitude") {
    Matrix<Scalar> R(2, 2);
    R << 0, -1, 1, 0;
    REQUIRE(detail::general_eigenvalues<Scalar>(R, values) == Eigen::Success);
    CHECK(test::multiset_relative_distance<Scalar>(values, {{0, 1}, {0, -1}}) <= 1e-6);
  }
}

TEST_CASE("very large and very small magnitudes in float keep their eigenvalues") {
  // Near 1e38 the QR iteration would overflow, and near 1e-40 (subnormal) Eigen takes the
  // entries for zero: the matrix is scaled by a power of two first (exact).
  std::mt19937_64 rng(11);
  const Matrix<double> base = test::random_matrix<double>(rng, 6, 6);
  const Eigen::EigenSolver<Matrix<double>> solver(base, false);
  const ComplexVector<double> expected = solver.eigenvalues();
  for (const double scale : {1e-40, 1e-30, 1.0, 1e30, 1e37}) {
    CAPTURE(scale);
    const Matrix<float> M = (base * scale).cast<float>();
    ComplexVector<float> values;
    REQUIRE(detail::general_eigenvalues<float>(M, values) == Eigen::Success);
    std::vector<std::complex<double>> want;
    for (Index i = 0; i < expected.size(); ++i) want.push_back(expected(i) * scale);
    // Subnormal entries (1e-40) keep only a few digits of their own.
    CHECK(test::multiset_relative_distance<float>(values, want) <= (scale < 1e-38 ? 1e-2 : 1e-4));
  }
}

TEST_CASE("eigenvalues that overflow float are reported, not returned as inf") {
  // [[a, a], [a, a]] has eigenvalues 0 and 2a: 6e38 is past float's 3.4e38.
  const Matrix<float> M = Matrix<float>::Constant(2, 2, 3e38F);
  ComplexVector<float> values;
  CHECK(detail::general_eigenvalues<float>(M, values) == Eigen::NumericalIssue);
  CHECK_THROWS_WITH_AS(detail::small_eigenvalues<float>(M, "the test matrix"),
                       "[circuitry.numerical_error] eigenvalues of the test matrix: the matrix "
                       "holds NaN or infinity, or an eigenvalue overflows",
                       numerical_error);
  // In double the same matrix is fine.
  ComplexVector<double> wide;
  REQUIRE(detail::general_eigenvalues<double>(M.cast<double>(), wide) == Eigen::Success);
  const double a = static_cast<double>(3e38F);  // 3e38 rounded to float
  CHECK(test::multiset_relative_distance<double>(wide, {{2 * a, 0}, {0, 0}}) <= 1e-12);
}

TEST_CASE("an eigensolver that does not converge is reported as numerical_error") {
  // Three QR iterations in each of the three solvers cannot finish a random 12 x 12 matrix.
  std::mt19937_64 rng(5);
  const Matrix<double> M = test::random_matrix<double>(rng, 12, 12);
  ComplexVector<double> values;
  CHECK(detail::general_eigenvalues<double>(M, values, 3) == Eigen::NoConvergence);
  CHECK_THROWS_WITH_AS(detail::small_eigenvalues<double>(M, "the test matrix", 3),
                       "[circuitry.numerical_error] eigenvalues of the test matrix: the "
                       "eigensolver did not converge",
                       numerical_error);
  // With Eigen's default limit it converges.
  CHECK(detail::general_eigenvalues<double>(M, values) == Eigen::Success);
}
