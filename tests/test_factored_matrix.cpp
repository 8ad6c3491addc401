// Tests of circuitry/factored_matrix.hpp: every identity is checked against the dense product
// AB computed in double from the same factors, for float and double factors.
#include <doctest/doctest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <complex>
#include <cstddef>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "circuitry/factored_matrix.hpp"
#include "support/simd_levels.hpp"

namespace {

using circuitry::FactoredMatrix;
using circuitry::Index;
using Eigen::MatrixXd;
using Eigen::VectorXd;

// Standard-normal m x n matrix from a fixed seed.
template <typename T>
circuitry::Matrix<T> random_matrix(Index rows, Index cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  circuitry::Matrix<T> out(rows, cols);
  for (Index j = 0; j < cols; ++j) {
    for (Index i = 0; i < rows; ++i) out(i, j) = static_cast<T>(normal(gen));
  }
  return out;
}

// Integer entries in [-2, 2]: products are exact in float and double, so rows have exact ties.
template <typename T>
circuitry::Matrix<T> integer_matrix(Index rows, Index cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> uniform(-2, 2);
  circuitry::Matrix<T> out(rows, cols);
  for (Index j = 0; j < cols; ++j) {
    for (Index i = 0; i < rows; ++i) out(i, j) = static_cast<T>(uniform(gen));
  }
  return out;
}

// Relative tolerance for results computed in T and compared with a double reference.
template <typename T>
double tol() {
  return std::is_same<T, float>::value ? 1e-4 : 1e-10;
}

// Tolerance for eigenvalues (non-normal matrices amplify rounding).
template <typename T>
double eig_tol() {
  return std::is_same<T, float>::value ? 2e-3 : 1e-8;
}

template <typename T>
MatrixXd to_double(const circuitry::Matrix<T>& m) {
  return m.template cast<double>();
}

template <typename T>
MatrixXd dense(const FactoredMatrix<T>& f) {
  return to_double<T>(f.A()) * to_double<T>(f.B());
}

// Row i: how many entries of row i of square d are strictly greater than d(i, i) (NaN: none).
circuitry::Vector<Index> dense_ranks(const MatrixXd& d) {
  circuitry::Vector<Index> ranks = circuitry::Vector<Index>::Zero(d.rows());
  for (Index i = 0; i < d.rows(); ++i) {
    for (Index j = 0; j < d.cols(); ++j) ranks(i) += d(i, j) > d(i, i) ? 1 : 0;
  }
  return ranks;
}

// ||got - want||_max <= tol * max(1, ||want||_max).
void check_close(const MatrixXd& got, const MatrixXd& want, double tolerance) {
  REQUIRE(got.rows() == want.rows());
  REQUIRE(got.cols() == want.cols());
  if (want.size() == 0) return;
  const double scale = std::max(1.0, want.cwiseAbs().maxCoeff());
  const double err = (got - want).cwiseAbs().maxCoeff();
  CAPTURE(err);
  CAPTURE(scale);
  CHECK(err <= tolerance * scale);
}

// Greedy nearest matching of the spectra as multisets: every value of `fewer` (sorted by
// descending magnitude) is matched to the nearest unused value of `more`. Returns the largest
// match distance and the largest magnitude left unmatched in `more`.
struct SpectrumMatch {
  double max_distance = 0;
  double max_unmatched = 0;
};

SpectrumMatch match_spectra(std::vector<std::complex<double>> fewer,
                            std::vector<std::complex<double>> more) {
  REQUIRE(fewer.size() <= more.size());
  std::sort(fewer.begin(), fewer.end(), [](std::complex<double> a, std::complex<double> b) {
    return std::abs(a) > std::abs(b);
  });
  std::vector<bool> used(more.size(), false);
  SpectrumMatch out;
  for (const std::complex<double>& v : fewer) {
    std::size_t best = more.size();
    for (std::size_t j = 0; j < more.size(); ++j) {
      if (!used[j] && (best == more.size() || std::abs(more[j] - v) < std::abs(more[best] - v))) {
        best = j;
      }
    }
    used[best] = true;
    out.max_distance = std::max(out.max_distance, std::abs(more[best] - v));
  }
  for (std::size_t j = 0; j < more.size(); ++j) {
    if (!used[j]) out.max_unmatched = std::max(out.max_unmatched, std::abs(more[j]));
  }
  return out;
}

template <typename V>
std::vector<std::complex<double>> to_complex_vector(const V& v) {
  std::vector<std::complex<double>> out;
  for (Index i = 0; i < v.size(); ++i) {
    out.emplace_back(static_cast<double>(v(i).real()), static_cast<double>(v(i).imag()));
  }
  return out;
}

// The eigenvalues of the factored matrix (r of them) and of the dense product (m of them) agree
// as multisets up to zeros: the extra values on either side are ~0.
template <typename T>
void check_eigenvalues_match_dense(const FactoredMatrix<T>& f) {
  const circuitry::ComplexVector<T> got = f.eigenvalues();
  REQUIRE(got.size() == f.inner_dim());
  const MatrixXd d = dense(f);
  const Eigen::EigenSolver<MatrixXd> solver(d, false);
  REQUIRE(solver.info() == Eigen::Success);
  const std::vector<std::complex<double>> want = to_complex_vector(solver.eigenvalues());
  const std::vector<std::complex<double>> have = to_complex_vector(got);
  const double scale = std::max(1.0, d.norm());
  const SpectrumMatch match =
      have.size() <= want.size() ? match_spectra(have, want) : match_spectra(want, have);
  CAPTURE(scale);
  CHECK(match.max_distance <= eig_tol<T>() * scale);
  CHECK(match.max_unmatched <= eig_tol<T>() * scale);
  // Sorted by descending magnitude.
  for (Index i = 1; i < got.size(); ++i) CHECK(std::abs(got(i - 1)) >= std::abs(got(i)));
}

// Rank-deficient factor: an m x r matrix of rank `rank`.
template <typename T>
circuitry::Matrix<T> low_rank_matrix(Index rows, Index cols, Index rank, unsigned seed) {
  return random_matrix<T>(rows, rank, seed) * random_matrix<T>(rank, cols, seed + 1);
}

// Brute force: the column indices of row `i` of `m` sorted by descending value, ties by column.
std::vector<Index> brute_force_order(const MatrixXd& m, Index i) {
  std::vector<Index> order(static_cast<std::size_t>(m.cols()));
  std::iota(order.begin(), order.end(), Index{0});
  std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return m(i, a) > m(i, b); });
  return order;
}

}  // namespace

TEST_CASE_TEMPLATE("a factored matrix reports its factors and its shape", T, float, double) {
  const circuitry::Matrix<T> a = random_matrix<T>(7, 3, 1);
  const circuitry::Matrix<T> b = random_matrix<T>(3, 5, 2);
  const FactoredMatrix<T> f(a, b);
  CHECK(f.rows() == 7);
  CHECK(f.cols() == 5);
  CHECK(f.inner_dim() == 3);
  CHECK(f.A() == a);
  CHECK(f.B() == b);
  check_close(to_double<T>(f.AB()), dense(f), tol<T>());

  SUBCASE("the factors may be Eigen expressions") {
    const FactoredMatrix<T> g(a.topRows(4) * T(2), b.leftCols(2));
    CHECK(g.rows() == 4);
    CHECK(g.cols() == 2);
    check_close(to_double<T>(g.AB()),
                2.0 * to_double<T>(a.topRows(4)) * to_double<T>(b.leftCols(2)), tol<T>());
  }
  SUBCASE("the default factored matrix is the empty 0 x 0 product") {
    const FactoredMatrix<T> e;
    CHECK(e.rows() == 0);
    CHECK(e.cols() == 0);
    CHECK(e.inner_dim() == 0);
  }
  SUBCASE("cast converts the factors to another scalar type") {
    const FactoredMatrix<double> g = f.template cast<double>();
    CHECK(g.A() == to_double<T>(a));
    CHECK(g.B() == to_double<T>(b));
  }
}

TEST_CASE_TEMPLATE("the documented OV example holds", T, float, double) {
  const circuitry::Matrix<T> w_v = circuitry::Matrix<T>::Ones(4, 2);
  const circuitry::Matrix<T> w_o = circuitry::Matrix<T>::Ones(2, 4);
  const FactoredMatrix<T> ov(w_v, w_o);
  CHECK(ov.rows() == 4);
  CHECK(ov.inner_dim() == 2);
  CHECK(ov.trace() == doctest::Approx(8));
  CHECK(ov.frobenius_norm() == doctest::Approx(8));
  const circuitry::ComplexVector<T> ev = ov.eigenvalues();
  REQUIRE(ev.size() == 2);
  CHECK(ev(0).real() == doctest::Approx(8));
  CHECK(std::abs(ev(1)) == doctest::Approx(0).epsilon(1e-5));
}

TEST_CASE_TEMPLATE("factors whose inner dimensions differ are rejected with a shape error", T,
                   float, double) {
  const circuitry::Matrix<T> a = random_matrix<T>(4, 3, 1);
  const circuitry::Matrix<T> b = random_matrix<T>(5, 2, 2);
  CHECK_THROWS_WITH_AS(FactoredMatrix<T>(a, b),
                       "[circuitry.shape_error] FactoredMatrix: A is 4x3 but B is 5x2: A.cols() "
                       "must equal B.rows()",
                       circuitry::shape_error);
  CHECK_THROWS_AS(FactoredMatrix<T>(circuitry::Matrix<T>(a), circuitry::Matrix<T>(b)),
                  circuitry::shape_error);
}

TEST_CASE_TEMPLATE("BA is the r x r product and needs a square matrix", T, float, double) {
  const FactoredMatrix<T> f(random_matrix<T>(6, 2, 3), random_matrix<T>(2, 6, 4));
  check_close(to_double<T>(f.BA()), to_double<T>(f.B()) * to_double<T>(f.A()), tol<T>());
  CHECK(f.BA().rows() == 2);

  const FactoredMatrix<T> wide(random_matrix<T>(4, 2, 3), random_matrix<T>(2, 6, 4));
  CHECK_THROWS_WITH_AS(wide.BA(),
                       "[circuitry.shape_error] FactoredMatrix::BA: requires a square matrix "
                       "(rows() == cols()), found 4x6",
                       circuitry::shape_error);
  CHECK_THROWS_AS(wide.trace(), circuitry::shape_error);
  CHECK_THROWS_AS(wide.eigenvalues(), circuitry::shape_error);
  CHECK_THROWS_AS(wide.try_eigenvalues(), circuitry::shape_error);
  CHECK_THROWS_AS(wide.diagonal(), circuitry::shape_error);
  CHECK_THROWS_AS(wide.diagonal_rank(), circuitry::shape_error);
}

TEST_CASE_TEMPLATE("the transpose is the factored matrix (B^T, A^T)", T, float, double) {
  const FactoredMatrix<T> f(random_matrix<T>(7, 3, 5), random_matrix<T>(3, 4, 6));
  const FactoredMatrix<T> t = f.transpose();
  CHECK(t.rows() == 4);
  CHECK(t.cols() == 7);
  CHECK(t.inner_dim() == 3);
  CHECK(t.A() == f.B().transpose());
  CHECK(t.B() == f.A().transpose());
  check_close(dense(t), dense(f).transpose(), tol<T>());
}

TEST_CASE_TEMPLATE("a factored matrix times a dense matrix stays factored", T, float, double) {
  const FactoredMatrix<T> f(random_matrix<T>(7, 3, 7), random_matrix<T>(3, 5, 8));
  const circuitry::Matrix<T> x = random_matrix<T>(5, 4, 9);
  const FactoredMatrix<T> g = f * x;
  CHECK(g.rows() == 7);
  CHECK(g.cols() == 4);
  CHECK(g.inner_dim() == 3);
  CHECK(g.A() == f.A());
  check_close(dense(g), dense(f) * to_double<T>(x), tol<T>());

  const circuitry::Matrix<T> bad = random_matrix<T>(6, 2, 9);
  CHECK_THROWS_WITH_AS(f * bad,
                       "[circuitry.shape_error] FactoredMatrix * matrix: FactoredMatrix is 7x5 "
                       "but matrix is 6x2: FactoredMatrix.cols() must equal matrix.rows()",
                       circuitry::shape_error);
}

TEST_CASE_TEMPLATE("a dense matrix times a factored matrix stays factored", T, float, double) {
  const FactoredMatrix<T> f(random_matrix<T>(7, 3, 10), random_matrix<T>(3, 5, 11));
  const circuitry::Matrix<T> x = random_matrix<T>(2, 7, 12);
  const FactoredMatrix<T> g = x * f;
  CHECK(g.rows() == 2);
  CHECK(g.cols() == 5);
  CHECK(g.inner_dim() == 3);
  CHECK(g.B() == f.B());
  check_close(dense(g), to_double<T>(x) * dense(f), tol<T>());

  SUBCASE("the row-vector convention: x M = (x A) B") {
    const circuitry::RowVector<T> row = random_matrix<T>(1, 7, 13);
    const FactoredMatrix<T> h = row * f;
    check_close(dense(h), to_double<T>(row) * dense(f), tol<T>());
  }

  const circuitry::Matrix<T> bad = random_matrix<T>(2, 5, 12);
  CHECK_THROWS_WITH_AS(bad * f,
                       "[circuitry.shape_error] matrix * FactoredMatrix: matrix is 2x5 but "
                       "FactoredMatrix is 7x5: matrix.cols() must equal FactoredMatrix.rows()",
                       circuitry::shape_error);
}

TEST_CASE_TEMPLATE("a product of factored matrices keeps the smaller inner dimension", T, float,
                   double) {
  SUBCASE("r1 < r2 keeps A1 and folds B1 A2 into the right factor") {
    const FactoredMatrix<T> f(random_matrix<T>(6, 2, 14), random_matrix<T>(2, 5, 15));
    const FactoredMatrix<T> g(random_matrix<T>(5, 4, 16), random_matrix<T>(4, 3, 17));
    const FactoredMatrix<T> h = f * g;
    CHECK(h.inner_dim() == 2);
    CHECK(h.A() == f.A());
    CHECK(h.rows() == 6);
    CHECK(h.cols() == 3);
    check_close(dense(h), dense(f) * dense(g), tol<T>());
  }
  SUBCASE("r1 > r2 keeps B2 and folds B1 A2 into the left factor") {
    const FactoredMatrix<T> f(random_matrix<T>(6, 4, 18), random_matrix<T>(4, 5, 19));
    const FactoredMatrix<T> g(random_matrix<T>(5, 2, 20), random_matrix<T>(2, 3, 21));
    const FactoredMatrix<T> h = f * g;
    CHECK(h.inner_dim() == 2);
    CHECK(h.B() == g.B());
    check_close(dense(h), dense(f) * dense(g), tol<T>());
  }
  SUBCASE("r1 == r2 keeps A1") {
    const FactoredMatrix<T> f(random_matrix<T>(6, 3, 22), random_matrix<T>(3, 5, 23));
    const FactoredMatrix<T> g(random_matrix<T>(5, 3, 24), random_matrix<T>(3, 6, 25));
    const FactoredMatrix<T> h = f * g;
    CHECK(h.inner_dim() == 3);
    CHECK(h.A() == f.A());
    check_close(dense(h), dense(f) * dense(g), tol<T>());
  }
  SUBCASE("mismatched shapes are rejected with a shape error") {
    const FactoredMatrix<T> f(random_matrix<T>(6, 3, 22), random_matrix<T>(3, 5, 23));
    const FactoredMatrix<T> g(random_matrix<T>(4, 3, 24), random_matrix<T>(3, 6, 25));
    CHECK_THROWS_WITH_AS(f * g,
                         "[circuitry.shape_error] FactoredMatrix * FactoredMatrix: left is 6x5 "
                         "but right is 4x6: left.cols() must equal right.rows()",
                         circuitry::shape_error);
  }
}

TEST_CASE_TEMPLATE("scaling a factored matrix scales one factor", T, float, double) {
  const FactoredMatrix<T> f(random_matrix<T>(5, 2, 26), random_matrix<T>(2, 4, 27));
  check_close(dense(f * T(3)), 3.0 * dense(f), tol<T>());
  check_close(dense(T(-2) * f), -2.0 * dense(f), tol<T>());
  CHECK((f * T(3)).inner_dim() == 2);
}

TEST_CASE_TEMPLATE("eigenvalues of BA are the nonzero eigenvalues of the dense product", T, float,
                   double) {
  SUBCASE("r < m: the dense product has m - r extra zero eigenvalues") {
    check_eigenvalues_match_dense(
        FactoredMatrix<T>(random_matrix<T>(9, 3, 28), random_matrix<T>(3, 9, 29)));
  }
  SUBCASE("r > m: BA has r - m extra zero eigenvalues") {
    const FactoredMatrix<T> f(random_matrix<T>(3, 5, 30), random_matrix<T>(5, 3, 31));
    CHECK(f.eigenvalues().size() == 5);
    check_eigenvalues_match_dense(f);
  }
  SUBCASE("rank-deficient factors give zero eigenvalues") {
    const FactoredMatrix<T> f(low_rank_matrix<T>(8, 4, 2, 32), random_matrix<T>(4, 8, 34));
    check_eigenvalues_match_dense(f);
    const circuitry::ComplexVector<T> ev = f.eigenvalues();
    const double scale = dense(f).norm();
    CHECK(std::abs(ev(2)) <= eig_tol<T>() * scale);
    CHECK(std::abs(ev(3)) <= eig_tol<T>() * scale);
  }
  SUBCASE("a larger square product") {
    check_eigenvalues_match_dense(
        FactoredMatrix<T>(random_matrix<T>(40, 8, 35), random_matrix<T>(8, 40, 36)));
  }
  SUBCASE("try_eigenvalues returns the same values with a success status") {
    const FactoredMatrix<T> f(random_matrix<T>(9, 3, 28), random_matrix<T>(3, 9, 29));
    const circuitry::EigenvaluesResult<T> result = f.try_eigenvalues();
    CHECK(result.info == Eigen::Success);
    CHECK(result.values == f.eigenvalues());
  }
  SUBCASE("an inner dimension of zero has no eigenvalues") {
    const FactoredMatrix<T> f(circuitry::Matrix<T>(4, 0), circuitry::Matrix<T>(0, 4));
    CHECK(f.eigenvalues().size() == 0);
    CHECK(f.try_eigenvalues().info == Eigen::Success);
  }
}

TEST_CASE_TEMPLATE(
    "a failed eigensolver is a status for try_eigenvalues and an error for "
    "eigenvalues",
    T, float, double) {
  circuitry::Matrix<T> a = random_matrix<T>(5, 3, 37);
  a(1, 1) = std::numeric_limits<T>::quiet_NaN();
  const FactoredMatrix<T> f(a, random_matrix<T>(3, 5, 38));
  CHECK(f.try_eigenvalues().info != Eigen::Success);
  CHECK_THROWS_WITH_AS(f.eigenvalues(),
                       "[circuitry.numerical_error] FactoredMatrix::eigenvalues: the 3x3 matrix "
                       "BA holds NaN or infinity, or an eigenvalue overflows",
                       circuitry::numerical_error);
  CHECK_THROWS_AS(f.singular_values(), circuitry::numerical_error);
  CHECK_THROWS_AS(f.thin_svd(), circuitry::numerical_error);
}

TEST_CASE_TEMPLATE("the trace equals the dense trace and the sum of the eigenvalues", T, float,
                   double) {
  const FactoredMatrix<T> f(random_matrix<T>(9, 4, 39), random_matrix<T>(4, 9, 40));
  const double want = dense(f).trace();
  CHECK(static_cast<double>(f.trace()) == doctest::Approx(want).epsilon(tol<T>()));
  const std::complex<T> sum = f.eigenvalues().sum();
  CHECK(static_cast<double>(sum.real()) == doctest::Approx(want).epsilon(eig_tol<T>()));
  CHECK(std::abs(static_cast<double>(sum.imag())) <= eig_tol<T>() * dense(f).norm());

  SUBCASE("also when r > m") {
    const FactoredMatrix<T> g(random_matrix<T>(3, 5, 41), random_matrix<T>(5, 3, 42));
    CHECK(static_cast<double>(g.trace()) == doctest::Approx(dense(g).trace()).epsilon(tol<T>()));
  }
}

TEST_CASE_TEMPLATE("the Frobenius norm from Gram matrices matches the dense norm", T, float,
                   double) {
  SUBCASE("r < m, n") {
    const FactoredMatrix<T> f(random_matrix<T>(11, 3, 43), random_matrix<T>(3, 7, 44));
    CHECK(static_cast<double>(f.frobenius_norm()) ==
          doctest::Approx(dense(f).norm()).epsilon(tol<T>()));
    CHECK(static_cast<double>(f.squared_frobenius_norm()) ==
          doctest::Approx(dense(f).squaredNorm()).epsilon(tol<T>()));
  }
  SUBCASE("r > m, n and rank-deficient factors") {
    const FactoredMatrix<T> f(low_rank_matrix<T>(3, 6, 2, 45), random_matrix<T>(6, 4, 47));
    CHECK(static_cast<double>(f.frobenius_norm()) ==
          doctest::Approx(dense(f).norm()).epsilon(tol<T>()));
  }
  SUBCASE("the zero product has norm zero") {
    const FactoredMatrix<T> f(circuitry::Matrix<T>::Zero(4, 2), random_matrix<T>(2, 4, 48));
    CHECK(f.frobenius_norm() == T(0));
  }
}

TEST_CASE_TEMPLATE("singular values match the SVD of the dense product", T, float, double) {
  struct Shape {
    Index m, r, n, rank;
  };
  const std::vector<Shape> shapes = {
      {9, 3, 7, 3},  // r < m, n
      {3, 5, 4, 5},  // r > m, n: min(m, n, r) = 3
      {6, 5, 3, 5},  // r > n
      {8, 4, 8, 2},  // rank-deficient A
      {5, 0, 4, 0},  // empty inner dimension
  };
  for (const Shape& s : shapes) {
    CAPTURE(s.m);
    CAPTURE(s.r);
    CAPTURE(s.n);
    CAPTURE(s.rank);
    const circuitry::Matrix<T> a =
        s.rank < s.r ? low_rank_matrix<T>(s.m, s.r, s.rank, 49) : random_matrix<T>(s.m, s.r, 49);
    const FactoredMatrix<T> f(a, random_matrix<T>(s.r, s.n, 51));
    const Index k = std::min({s.m, s.n, s.r});
    const circuitry::Vector<T> got = f.singular_values();
    REQUIRE(got.size() == k);
    const MatrixXd d = dense(f);
    const Eigen::JacobiSVD<MatrixXd> svd(d);
    const VectorXd want = svd.singularValues();
    const double scale = std::max(1.0, want.size() > 0 ? want(0) : 0.0);
    for (Index i = 0; i < k; ++i) {
      CAPTURE(i);
      CHECK(std::abs(static_cast<double>(got(i)) - want(i)) <= tol<T>() * scale);
      if (i > 0) CHECK(got(i - 1) >= got(i));
    }
    for (Index i = k; i < want.size(); ++i) CHECK(want(i) <= tol<T>() * scale);

    // The thin SVD reconstructs the product, with orthonormal U and V.
    const circuitry::ThinSvd<T> usv = f.thin_svd();
    REQUIRE(usv.U.rows() == s.m);
    REQUIRE(usv.U.cols() == k);
    REQUIRE(usv.S.size() == k);
    REQUIRE(usv.V.rows() == s.n);
    REQUIRE(usv.V.cols() == k);
    const MatrixXd u = to_double<T>(usv.U);
    const MatrixXd v = to_double<T>(usv.V);
    const VectorXd sv = usv.S.template cast<double>();
    check_close(u * sv.asDiagonal() * v.transpose(), d, tol<T>());
    if (k > 0) {
      check_close(u.transpose() * u, MatrixXd::Identity(k, k), tol<T>());
      check_close(v.transpose() * v, MatrixXd::Identity(k, k), tol<T>());
      check_close(sv, got.template cast<double>(), tol<T>());
    }
  }
}

TEST_CASE_TEMPLATE("entries materialise only what is asked for and match the dense product", T,
                   float, double) {
  const FactoredMatrix<T> f(random_matrix<T>(10, 3, 52), random_matrix<T>(3, 10, 53));
  const MatrixXd d = dense(f);
  SUBCASE("coefficient") {
    CHECK(static_cast<double>(f.coefficient(4, 7)) == doctest::Approx(d(4, 7)).epsilon(tol<T>()));
    CHECK_THROWS_WITH_AS(f.coefficient(10, 0),
                         "[circuitry.argument_error] FactoredMatrix::coefficient: row index 10 "
                         "out of range [0, 10)",
                         circuitry::argument_error);
    CHECK_THROWS_AS(f.coefficient(0, -1), circuitry::argument_error);
  }
  SUBCASE("row") {
    check_close(to_double<T>(circuitry::Matrix<T>(f.row(3))), d.row(3), tol<T>());
    CHECK_THROWS_WITH_AS(f.row(-1),
                         "[circuitry.argument_error] FactoredMatrix::row: row index -1 out of "
                         "range [0, 10)",
                         circuitry::argument_error);
  }
  SUBCASE("rows") {
    check_close(to_double<T>(f.rows(2, 5)), d.middleRows(2, 5), tol<T>());
    CHECK(f.rows(10, 0).rows() == 0);
    CHECK_THROWS_AS(f.rows(8, 3), circuitry::argument_error);
  }
  SUBCASE("block") {
    check_close(to_double<T>(f.block(1, 2, 4, 3)), d.block(1, 2, 4, 3), tol<T>());
    CHECK_THROWS_WITH_AS(f.block(8, 0, 3, 2),
                         "[circuitry.argument_error] FactoredMatrix::block: block at (8, 0) of "
                         "size 3x2 does not fit in a 10x10 matrix",
                         circuitry::argument_error);
  }
  SUBCASE("corner") {
    check_close(to_double<T>(f.corner()), d.topLeftCorner(3, 3), tol<T>());
    check_close(to_double<T>(f.corner(5)), d.topLeftCorner(5, 5), tol<T>());
    check_close(to_double<T>(f.corner(50)), d, tol<T>());
    const FactoredMatrix<T> wide(random_matrix<T>(2, 3, 54), random_matrix<T>(3, 6, 55));
    CHECK(wide.corner(4).rows() == 2);
    CHECK(wide.corner(4).cols() == 4);
  }
  SUBCASE("diagonal") {
    const VectorXd want = d.diagonal();
    check_close(f.diagonal().template cast<double>(), want, tol<T>());
  }
}

TEST_CASE_TEMPLATE("for_each_row_block streams every row once, in order, reusing one buffer", T,
                   float, double) {
  const FactoredMatrix<T> f(random_matrix<T>(10, 3, 56), random_matrix<T>(3, 6, 57));
  const MatrixXd d = dense(f);
  for (const Index block_rows : {Index{1}, Index{3}, Index{5}, Index{10}, Index{64}}) {
    CAPTURE(block_rows);
    Index next = 0;
    std::vector<const T*> full_block_data;
    f.for_each_row_block(block_rows, [&](Index first, const circuitry::Matrix<T>& block) {
      CHECK(first == next);
      CHECK(block.cols() == 6);
      CHECK(block.rows() == std::min(block_rows, Index{10} - first));
      check_close(to_double<T>(block), d.middleRows(first, block.rows()), tol<T>());
      if (block.rows() == std::min(block_rows, Index{10})) full_block_data.push_back(block.data());
      next = first + block.rows();
    });
    CHECK(next == 10);
    for (const T* p : full_block_data) CHECK(p == full_block_data.front());
  }
  CHECK_THROWS_WITH_AS(f.for_each_row_block(0, [](Index, const circuitry::Matrix<T>&) {}),
                       "[circuitry.argument_error] FactoredMatrix::for_each_row_block: "
                       "block_rows = 0 must be positive",
                       circuitry::argument_error);
}

TEST_CASE_TEMPLATE("top_k_rows matches a brute-force sort of the dense rows", T, float, double) {
  SUBCASE("integer factors: exact values, ties broken by the smaller column") {
    const FactoredMatrix<T> f(integer_matrix<T>(13, 2, 58), integer_matrix<T>(2, 9, 59));
    const MatrixXd d = dense(f);
    for (const Index k : {Index{1}, Index{4}, Index{9}}) {
      for (const Index block_rows : {Index{1}, Index{4}, Index{13}, Index{256}}) {
        CAPTURE(k);
        CAPTURE(block_rows);
        const circuitry::TopK<T> top = f.top_k_rows(k, block_rows);
        REQUIRE(top.indices.rows() == 13);
        REQUIRE(top.indices.cols() == k);
        REQUIRE(top.values.rows() == 13);
        REQUIRE(top.values.cols() == k);
        for (Index i = 0; i < 13; ++i) {
          const std::vector<Index> order = brute_force_order(d, i);
          for (Index c = 0; c < k; ++c) {
            CAPTURE(i);
            CAPTURE(c);
            CHECK(top.indices(i, c) == order[static_cast<std::size_t>(c)]);
            CHECK(static_cast<double>(top.values(i, c)) ==
                  d(i, order[static_cast<std::size_t>(c)]));
          }
        }
      }
    }
  }
  SUBCASE("random factors: the values are the sorted row and the indices point at them") {
    const FactoredMatrix<T> f(random_matrix<T>(23, 4, 60), random_matrix<T>(4, 17, 61));
    const MatrixXd d = dense(f);
    const double scale = std::max(1.0, d.cwiseAbs().maxCoeff());
    for (const Index block_rows : {Index{1}, Index{5}, Index{7}, Index{256}}) {
      const Index k = 5;
      CAPTURE(block_rows);
      const circuitry::TopK<T> top = f.top_k_rows(k, block_rows);
      for (Index i = 0; i < 23; ++i) {
        std::vector<double> sorted;
        for (Index j = 0; j < 17; ++j) sorted.push_back(d(i, j));
        std::sort(sorted.begin(), sorted.end(), std::greater<double>());
        std::vector<Index> seen;
        for (Index c = 0; c < k; ++c) {
          CAPTURE(i);
          CAPTURE(c);
          const double v = static_cast<double>(top.values(i, c));
          CHECK(std::abs(v - sorted[static_cast<std::size_t>(c)]) <= tol<T>() * scale);
          CHECK(std::abs(v - d(i, top.indices(i, c))) <= tol<T>() * scale);
          if (c > 0) CHECK(top.values(i, c - 1) >= top.values(i, c));
          seen.push_back(top.indices(i, c));
        }
        std::sort(seen.begin(), seen.end());
        CHECK(std::adjacent_find(seen.begin(), seen.end()) == seen.end());
      }
    }
  }
  SUBCASE("k = n sorts every row completely and k = 0 is empty") {
    const FactoredMatrix<T> f(integer_matrix<T>(5, 3, 62), integer_matrix<T>(3, 4, 63));
    const MatrixXd d = dense(f);
    const circuitry::TopK<T> top = f.top_k_rows(4, 2);
    for (Index i = 0; i < 5; ++i) {
      const std::vector<Index> order = brute_force_order(d, i);
      for (Index c = 0; c < 4; ++c) CHECK(top.indices(i, c) == order[static_cast<std::size_t>(c)]);
    }
    CHECK(f.top_k_rows(0).indices.cols() == 0);
  }
  SUBCASE("k larger than the number of columns is an argument error") {
    const FactoredMatrix<T> f(random_matrix<T>(4, 2, 64), random_matrix<T>(2, 5, 65));
    CHECK_THROWS_WITH_AS(f.top_k_rows(6),
                         "[circuitry.argument_error] FactoredMatrix::top_k_rows: k = 6 exceeds "
                         "cols() = 5",
                         circuitry::argument_error);
    CHECK_THROWS_WITH_AS(f.top_k_rows(-1),
                         "[circuitry.argument_error] FactoredMatrix::top_k_rows: k = -1 must be "
                         "non-negative",
                         circuitry::argument_error);
    CHECK_THROWS_AS(f.top_k_rows(std::vector<Index>{0}, 6), circuitry::argument_error);
    CHECK_THROWS_AS(f.top_k_rows(2, 0), circuitry::argument_error);
  }
}

TEST_CASE_TEMPLATE("top_k_rows over a list of rows ranks those rows in the given order", T, float,
                   double) {
  const FactoredMatrix<T> f(integer_matrix<T>(12, 3, 66), integer_matrix<T>(3, 8, 67));
  const circuitry::TopK<T> all = f.top_k_rows(3);
  const std::vector<Index> rows = {11, 0, 5, 5, 7, 2, 9};
  for (const Index block_rows : {Index{1}, Index{3}, Index{256}}) {
    CAPTURE(block_rows);
    const circuitry::TopK<T> some = f.top_k_rows(rows, 3, block_rows);
    REQUIRE(some.indices.rows() == static_cast<Index>(rows.size()));
    for (std::size_t t = 0; t < rows.size(); ++t) {
      const Index ti = static_cast<Index>(t);
      CHECK(some.indices.row(ti) == all.indices.row(rows[t]));
      CHECK(some.values.row(ti) == all.values.row(rows[t]));
    }
  }
  CHECK(f.top_k_rows(std::vector<Index>{}, 3).indices.rows() == 0);
  CHECK_THROWS_WITH_AS(f.top_k_rows(std::vector<Index>{3, 12}, 2),
                       "[circuitry.argument_error] FactoredMatrix::top_k_rows: row index 12 out "
                       "of range [0, 12)",
                       circuitry::argument_error);
}

TEST_CASE_TEMPLATE("diagonal_rank counts the entries of each row strictly above the diagonal", T,
                   float, double) {
  SUBCASE("integer factors, with ties that do not count") {
    const FactoredMatrix<T> f(integer_matrix<T>(11, 2, 68), integer_matrix<T>(2, 11, 69));
    const MatrixXd d = dense(f);
    for (const Index block_rows : {Index{1}, Index{4}, Index{11}, Index{256}}) {
      CAPTURE(block_rows);
      const circuitry::Vector<Index> rank = f.diagonal_rank(block_rows);
      REQUIRE(rank.size() == 11);
      const circuitry::Vector<Index> want = dense_ranks(d);
      for (Index i = 0; i < 11; ++i) {
        CAPTURE(i);
        CHECK(rank(i) == want(i));
      }
    }
  }
  SUBCASE("an identity-like product has every diagonal at rank 0") {
    const circuitry::Matrix<T> e = circuitry::Matrix<T>::Identity(6, 6);
    const FactoredMatrix<T> f(e, e);
    CHECK(f.diagonal_rank(4) == circuitry::Vector<Index>::Zero(6));
  }
  SUBCASE("random factors agree with the dense ranks") {
    const FactoredMatrix<double> f =
        FactoredMatrix<T>(random_matrix<T>(15, 3, 70), random_matrix<T>(3, 15, 71))
            .template cast<double>();
    const MatrixXd d = dense(f);
    const circuitry::Vector<Index> rank = f.diagonal_rank(4);
    const circuitry::Vector<Index> want = dense_ranks(d);
    for (Index i = 0; i < 15; ++i) CHECK(rank(i) == want(i));
  }
}

TEST_CASE_TEMPLATE("diagonal_rank gives the same ranks at every SIMD level, past whole panels", T,
                   float, double) {
  // 1100 rows: 11 panels of 96 rows and 3 chunks of 512 columns, the last of each partial.
  const Index m = 1100;
  SUBCASE("integer factors (exact products, many ties) match the dense count") {
    const FactoredMatrix<T> f(integer_matrix<T>(m, 3, 72), integer_matrix<T>(3, m, 73));
    const circuitry::Vector<Index> want = dense_ranks(dense(f));
    for (const auto level : circuitry::test::simd_levels()) {
      CAPTURE(std::string(circuitry::detail::simd_level_name(level)));
      const circuitry::test::ForcedSimdLevel forced(level);
      const circuitry::Vector<Index> rank = f.diagonal_rank(64);
      Index wrong = 0;
      for (Index i = 0; i < m; ++i) wrong += rank(i) == want(i) ? 0 : 1;
      CHECK(wrong == 0);
    }
  }
  SUBCASE("random factors: every level agrees with the portable path") {
    const FactoredMatrix<T> f(random_matrix<T>(m, 7, 74), random_matrix<T>(7, m, 75));
    std::vector<circuitry::Vector<Index>> ranks;
    for (const auto level : circuitry::test::simd_levels()) {
      const circuitry::test::ForcedSimdLevel forced(level);
      ranks.push_back(f.diagonal_rank());
    }
    for (std::size_t l = 1; l < ranks.size(); ++l) CHECK(ranks[l] == ranks[0]);
  }
  SUBCASE("NaN compares false: a NaN entry never counts, a NaN diagonal has rank 0") {
    circuitry::Matrix<T> a = random_matrix<T>(m, 7, 79), b = random_matrix<T>(7, m, 80);
    a(5, 0) = std::numeric_limits<T>::quiet_NaN();    // row 5 of a b: all NaN
    b(2, 700) = std::numeric_limits<T>::quiet_NaN();  // column 700: all NaN
    const FactoredMatrix<T> f(a, b);
    const circuitry::Vector<Index> want = dense_ranks(dense(f));
    for (const auto level : circuitry::test::simd_levels()) {
      CAPTURE(std::string(circuitry::detail::simd_level_name(level)));
      const circuitry::test::ForcedSimdLevel forced(level);
      for (const Index cap : {Index{5}, m}) {
        CAPTURE(cap);
        const circuitry::Vector<Index> rank = f.diagonal_rank_capped(cap, 64);
        CHECK(rank(5) == 0);
        CHECK(rank(700) == 0);
        Index wrong = 0;
        for (Index i = 0; i < m; ++i) wrong += rank(i) == std::min(want(i), cap) ? 0 : 1;
        CHECK(wrong == 0);
      }
    }
  }
}

TEST_CASE_TEMPLATE("diagonal_rank_capped is min(diagonal_rank, cap) at every SIMD level", T, float,
                   double) {
  // 1100 rows (11 panels, the last partial). A Gram matrix A A^T puts the diagonal of rows with
  // large norms at or near the top and the others anywhere, so rows leave their panels after
  // different chunks; integer factors add exact ties, which do not count.
  const Index m = 1100;
  const circuitry::Matrix<T> a = random_matrix<T>(m, 7, 76);
  const std::vector<FactoredMatrix<T>> cases = {
      FactoredMatrix<T>(a, a.transpose()),
      FactoredMatrix<T>(integer_matrix<T>(m, 3, 77), integer_matrix<T>(3, m, 78))};
  for (const FactoredMatrix<T>& f : cases) {
    const circuitry::Vector<Index> want = dense_ranks(dense(f));
    CHECK(want.minCoeff() == 0);  // some rows copy, some are far from it
    CHECK(want.maxCoeff() > 64);
    for (const auto level : circuitry::test::simd_levels()) {
      CAPTURE(std::string(circuitry::detail::simd_level_name(level)));
      const circuitry::test::ForcedSimdLevel forced(level);
      for (const Index cap : {Index{1}, Index{5}, Index{100}, Index{700}, m, 2 * m}) {
        CAPTURE(cap);
        CHECK(f.diagonal_rank_capped(cap, 64) == want.cwiseMin(cap));
      }
    }
  }
  const FactoredMatrix<T> f(a, a.transpose());
  CHECK_THROWS_WITH_AS(f.diagonal_rank_capped(0),
                       "[circuitry.argument_error] FactoredMatrix::diagonal_rank_capped: cap must "
                       "be >= 1, got 0",
                       circuitry::argument_error);
  CHECK_THROWS_AS(FactoredMatrix<T>(a, a.transpose().leftCols(5)).diagonal_rank_capped(5),
                  circuitry::shape_error);
}

TEST_CASE("the top-k order ranks larger values first, ties by column, and NaN last") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(circuitry::detail::factored::ranks_before(2.0, 5, 1.0, 0));
  CHECK_FALSE(circuitry::detail::factored::ranks_before(1.0, 0, 2.0, 5));
  CHECK(circuitry::detail::factored::ranks_before(1.0, 0, 1.0, 3));
  CHECK_FALSE(circuitry::detail::factored::ranks_before(1.0, 3, 1.0, 0));
  CHECK(circuitry::detail::factored::ranks_before(-1e300, 9, nan, 0));
  CHECK_FALSE(circuitry::detail::factored::ranks_before(nan, 0, -1e300, 9));
  CHECK(circuitry::detail::factored::ranks_before(nan, 0, nan, 1));

  circuitry::Matrix<double> a = circuitry::Matrix<double>::Ones(2, 1);
  circuitry::Matrix<double> b(1, 4);
  b << 1.0, nan, 3.0, 3.0;
  const circuitry::TopK<double> top = FactoredMatrix<double>(a, b).top_k_rows(4);
  CHECK(top.indices(0, 0) == 2);
  CHECK(top.indices(0, 1) == 3);
  CHECK(top.indices(0, 2) == 0);
  CHECK(top.indices(0, 3) == 1);

  // k < n with NaN among the best kept so far: later numbers still displace them.
  circuitry::Matrix<double> c(1, 5);
  c << nan, nan, 1.0, 2.0, 1.0;
  const FactoredMatrix<double> g(circuitry::Matrix<double>::Ones(1, 1), c);
  const circuitry::TopK<double> two = g.top_k_rows(2);
  CHECK(two.indices(0, 0) == 3);
  CHECK(two.indices(0, 1) == 2);
  const circuitry::TopK<double> four = g.top_k_rows(4);
  CHECK(four.indices(0, 2) == 4);
  CHECK(four.indices(0, 3) == 0);
}
