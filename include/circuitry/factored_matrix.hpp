// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file factored_matrix.hpp
/// `FactoredMatrix`: the lazy low-rank product M = A B, kept as its two factors.
///
/// Conventions (Elhage et al., "A Mathematical Framework for Transformer Circuits", 2021; the
/// same as TransformerLens): residual-stream vectors are rows and a layer maps them as `x W`.
/// A head's OV circuit is `OV = W_V W_O` (d_model × d_head times d_head × d_model), its QK
/// circuit `QK = W_Q W_K^T`, and the full circuits `W_E OV W_U` and `W_E QK W_E^T` are
/// d_vocab × d_vocab matrices of rank at most d_head. Storing them factored costs
/// O((d_vocab + d_model) d_head) memory instead of O(d_vocab^2), and their norms, traces and
/// spectra come from r × r matrices (r = d_head) instead of the full product.

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "circuitry/detail/diagonal_rank.hpp"
#include "circuitry/detail/eigenvalues.hpp"
#include "circuitry/detail/factored_blocks.hpp"
#include "circuitry/detail/factored_checks.hpp"
#include "circuitry/detail/factored_spectral.hpp"
#include "circuitry/error.hpp"
#include "circuitry/types.hpp"

namespace circuitry {

/// Eigenvalues with the eigensolver's status, Eigen style: `info == Eigen::Success` or the
/// values are not meaningful. Returned by `FactoredMatrix::try_eigenvalues()`.
template <typename Scalar>
struct EigenvaluesResult {
  ComplexVector<Scalar> values;  ///< r eigenvalues of BA, by descending magnitude.
  Eigen::ComputationInfo info = Eigen::Success;
};

/// Thin SVD M = U diag(S) V^T with k = min(m, n, r). Returned by `FactoredMatrix::thin_svd()`.
template <typename Scalar>
struct ThinSvd {
  Matrix<Scalar> U;  ///< m × k, orthonormal columns.
  Vector<Scalar> S;  ///< k singular values, descending, >= 0.
  Matrix<Scalar> V;  ///< n × k, orthonormal columns.
};

/// The k largest entries of each selected row. Returned by `FactoredMatrix::top_k_rows()`.
/// Row t of `indices` / `values` describes the t-th selected row: `values(t, c)` is the c-th
/// largest entry and `indices(t, c)` its column. Entries are sorted descending; equal values are
/// ordered by the smaller column index; NaN ranks below every number.
template <typename Scalar>
struct TopK {
  using IndexMatrix = Eigen::Matrix<Index, Eigen::Dynamic, Eigen::Dynamic>;
  IndexMatrix indices;    ///< rows × k column indices.
  Matrix<Scalar> values;  ///< rows × k values, `values(t, c) == M(row_t, indices(t, c))`.
};

namespace detail::factored {
/// The k largest entries of every row of a b, ordered as `TopK` says, computed `block_rows`
/// rows at a time (a b is never formed whole): FactoredMatrix::top_k_rows, and the report's top
/// lists, whose b is an expression such as W_E.transpose().
/// \throws argument_error when k < 0, k > b.cols() or block_rows <= 0.
template <typename Scalar, typename B>
TopK<Scalar> top_k_of_product(const Matrix<Scalar>& a, const Eigen::MatrixBase<B>& b, Index k,
                              Index block_rows) {
  check_k(k, b.cols());
  check_block_rows("for_each_row_block", block_rows);
  TopK<Scalar> out;
  out.indices.resize(a.rows(), k);
  out.values.resize(a.rows(), k);
  RowTopKSelector<Scalar> selector(k);
  for_each_row_block(a, b, block_rows, [&](Index first, const Matrix<Scalar>& blk) {
    for (Index t = 0; t < blk.rows(); ++t) {
      selector.select(blk, t, out.indices, out.values, first + t);
    }
  });
  return out;
}
}  // namespace detail::factored

/// The product M = A B of an m × r matrix A and an r × n matrix B, stored as its factors.
///
/// Invariant: `A().cols() == B().rows()` (= `inner_dim()`, r). Nothing forms the m × n product
/// unless a caller asks for entries (`AB()`, `row()`, `block()`, ...) or streams it in bounded
/// blocks (`for_each_row_block()`, `top_k_rows()`, `diagonal_rank()`). Everything else works on
/// the factors and on r × r matrices:
///
///  - products keep the cheap association: (A B) X = A (B X), X (A B) = (X A) B, and
///    (A1 B1)(A2 B2) keeps inner dimension min(r1, r2);
///  - eigenvalues: AB (m × m) and BA (r × r) have the same nonzero eigenvalues with
///    multiplicity (Sylvester's determinant identity, det(I - t AB) = det(I - t BA)), so the
///    spectrum of BA is the nonzero spectrum of AB plus zeros;
///  - trace(AB) = trace(BA) = sum_i A.row(i) · B.col(i);
///  - ||AB||_F^2 = trace(B^T A^T A B) = <A^T A, B B^T>_F;
///  - singular values: with A = Qa Ra and B^T = Qb Rb (thin QR), AB = Qa (Ra Rb^T) Qb^T, so AB
///    has the singular values of the small core Ra Rb^T.
///
/// Row-vector convention: `x * M` for a 1 × m row x is `(x A) B`, the way a residual-stream
/// vector passes through a head's OV circuit.
///
/// Example (the OV circuit of a head with d_model = 4, d_head = 2):
///
///     Eigen::MatrixXd W_V = Eigen::MatrixXd::Ones(4, 2), W_O = Eigen::MatrixXd::Ones(2, 4);
///     circuitry::FactoredMatrixd OV(W_V, W_O);
///     OV.rows();            // 4
///     OV.inner_dim();       // 2
///     OV.trace();           // 8
///     OV.frobenius_norm();  // 8 (every entry of OV is 2)
///     OV.eigenvalues();     // (8,0) (0,0): BA = [[4,4],[4,4]]
///
/// (tests/test_factored_matrix.cpp, "the documented OV example holds", checks these values.)
///
/// All members are const and the class holds no caches, so a `const FactoredMatrix` may be
/// shared between threads.
template <typename Scalar>
class FactoredMatrix {
  CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);

 public:
  using value_type = Scalar;
  using MatrixType = Matrix<Scalar>;

  /// The empty 0 × 0 product (r = 0).
  FactoredMatrix() = default;

  /// M = a b, copying the factors (any Eigen expressions of the same scalar type).
  /// \throws shape_error when `a.cols() != b.rows()`.
  template <typename DerivedA, typename DerivedB>
  FactoredMatrix(const Eigen::MatrixBase<DerivedA>& a, const Eigen::MatrixBase<DerivedB>& b) {
    static_assert(std::is_same<typename DerivedA::Scalar, Scalar>::value &&
                      std::is_same<typename DerivedB::Scalar, Scalar>::value,
                  "CIRCUITRY_FACTOR_SCALAR_MISMATCH: the factors of a FactoredMatrix<Scalar> must "
                  "have scalar type Scalar; use .template cast<Scalar>()");
    detail::factored::check_inner(a.rows(), a.cols(), b.rows(), b.cols());
    A_ = a;
    B_ = b;
  }

  // ---------------------------------------------------------------------------------------
  // Factors and shape
  // ---------------------------------------------------------------------------------------

  const MatrixType& A() const noexcept { return A_; }     ///< m × r left factor.
  const MatrixType& B() const noexcept { return B_; }     ///< r × n right factor.
  Index rows() const noexcept { return A_.rows(); }       ///< m.
  Index cols() const noexcept { return B_.cols(); }       ///< n.
  Index inner_dim() const noexcept { return A_.cols(); }  ///< r; an upper bound on rank(M).

  /// M^T = B^T A^T, as the factored matrix (B^T, A^T). O((m + n) r).
  FactoredMatrix transpose() const {
    return FactoredMatrix(adopt_tag{}, MatrixType(B_.transpose()), MatrixType(A_.transpose()));
  }

  /// The same product with factors converted to `NewScalar`.
  template <typename NewScalar>
  FactoredMatrix<NewScalar> cast() const {
    return FactoredMatrix<NewScalar>(A_.template cast<NewScalar>(), B_.template cast<NewScalar>());
  }

  // ---------------------------------------------------------------------------------------
  // Dense products
  // ---------------------------------------------------------------------------------------

  /// The dense m × n product A B. Costs O(m n r) time and m n scalars of memory: for the full
  /// circuits of a d_vocab = 50k model that is 10 GB in float; prefer the factored members.
  MatrixType AB() const { return A_ * B_; }

  /// The r × r product B A (requires a square M, m == n). O(r^2 m).
  /// \throws shape_error when m != n.
  MatrixType BA() const {
    require_square("BA");
    return B_ * A_;
  }

  // ---------------------------------------------------------------------------------------
  // Products that stay factored
  // ---------------------------------------------------------------------------------------

  /// (A B) X = A (B X): O(r n p) for an n × p matrix X.
  /// \throws shape_error when `x.rows() != cols()`.
  template <typename Derived>
  FactoredMatrix operator*(const Eigen::MatrixBase<Derived>& x) const {
    static_assert(std::is_same<typename Derived::Scalar, Scalar>::value,
                  "CIRCUITRY_FACTOR_SCALAR_MISMATCH: FactoredMatrix<Scalar> * matrix needs a "
                  "matrix of scalar type Scalar; use .template cast<Scalar>()");
    detail::factored::check_product("FactoredMatrix * matrix", "FactoredMatrix", rows(), cols(),
                                    "matrix", x.rows(), x.cols());
    return FactoredMatrix(adopt_tag{}, MatrixType(A_), MatrixType(B_ * x));
  }

  /// (A1 B1)(A2 B2): the inner dimension of the result is min(r1, r2), as in TransformerLens:
  /// (A1, (B1 A2) B2) when r1 <= r2, else (A1 (B1 A2), B2).
  /// \throws shape_error when `other.rows() != cols()`.
  FactoredMatrix operator*(const FactoredMatrix& other) const {
    detail::factored::check_product("FactoredMatrix * FactoredMatrix", "left", rows(), cols(),
                                    "right", other.rows(), other.cols());
    const MatrixType core = B_ * other.A_;  // r1 × r2
    if (inner_dim() <= other.inner_dim()) {
      return FactoredMatrix(adopt_tag{}, MatrixType(A_), MatrixType(core * other.B_));
    }
    return FactoredMatrix(adopt_tag{}, MatrixType(A_ * core), MatrixType(other.B_));
  }

  /// s M = A (s B).
  FactoredMatrix operator*(Scalar s) const {
    return FactoredMatrix(adopt_tag{}, MatrixType(A_), MatrixType(B_ * s));
  }

  // ---------------------------------------------------------------------------------------
  // Spectra, norms, trace (all from r × r matrices)
  // ---------------------------------------------------------------------------------------

  /// The r eigenvalues of BA (balanced, then real Schur with fallbacks: detail/eigenvalues.hpp),
  /// by descending magnitude (ties: descending real part, then
  /// descending imaginary part), with the eigensolver's status instead of an exception.
  /// AB and BA share their nonzero eigenvalues with multiplicity, so these are the nonzero
  /// eigenvalues of M padded with zeros when r > rank(M); M's other m - r eigenvalues are zero
  /// (when r > m, BA's extra r - m eigenvalues are the zeros). O(r^2 m + 10 r^3).
  /// \throws shape_error when M is not square (a usage error, not a numerical one).
  EigenvaluesResult<Scalar> try_eigenvalues() const {
    require_square("try_eigenvalues");
    EigenvaluesResult<Scalar> out;
    if (inner_dim() == 0) return out;
    out.info = detail::general_eigenvalues<Scalar>(B_ * A_, out.values);
    if (out.info != Eigen::Success) return out;
    detail::factored::sort_eigenvalues(out.values);
    return out;
  }

  /// `try_eigenvalues().values`, throwing when the eigensolver fails.
  /// Example: for OV circuits, positive real eigenvalues indicate copying.
  /// \throws shape_error when M is not square; numerical_error when the solver fails.
  ComplexVector<Scalar> eigenvalues() const {
    EigenvaluesResult<Scalar> result = try_eigenvalues();
    if (result.info == Eigen::NumericalIssue) {
      throw numerical_error("FactoredMatrix::eigenvalues: the " +
                            detail::factored::shape(inner_dim(), inner_dim()) +
                            " matrix BA holds NaN or infinity, or an eigenvalue overflows");
    }
    if (result.info != Eigen::Success) {
      throw numerical_error("FactoredMatrix::eigenvalues: the eigensolver for the " +
                            detail::factored::shape(inner_dim(), inner_dim()) +
                            " matrix BA did not converge (Eigen::ComputationInfo " +
                            detail::factored::info_name(result.info) + ")");
    }
    return std::move(result.values);
  }

  /// min(m, n, r) singular values of M, descending: those of the core Ra Rb^T where A = Qa Ra
  /// and B^T = Qb Rb. O((m + n) r^2 + r^3); no m × n matrix is formed.
  /// \throws numerical_error when the SVD reports failure (NaN or infinite factors).
  Vector<Scalar> singular_values() const {
    const MatrixType core = detail::factored::svd_core<Scalar>(A_, B_, nullptr, nullptr);
    if (core.size() == 0) return Vector<Scalar>::Zero(0);
    const typename detail::factored::SmallSvd<Scalar>::ValuesOnly svd =
        detail::factored::SmallSvd<Scalar>::values_only(core);
    detail::factored::check_svd(svd.info(), "singular_values");
    return svd.singularValues();
  }

  /// Thin SVD M = U diag(S) V^T with k = min(m, n, r): U = Qa Uc, V = Qb Vc where
  /// Ra Rb^T = Uc diag(S) Vc^T. U and V have orthonormal columns even when M is rank-deficient.
  /// O((m + n) r^2 + r^3).
  /// \throws numerical_error when the SVD reports failure (NaN or infinite factors).
  ThinSvd<Scalar> thin_svd() const {
    MatrixType qa, qb;
    const MatrixType core = detail::factored::svd_core<Scalar>(A_, B_, &qa, &qb);
    ThinSvd<Scalar> out;
    if (core.size() == 0) {
      const Index k = std::min({rows(), cols(), inner_dim()});
      out.U = MatrixType::Zero(rows(), k);
      out.S = Vector<Scalar>::Zero(k);
      out.V = MatrixType::Zero(cols(), k);
      return out;
    }
    const typename detail::factored::SmallSvd<Scalar>::WithVectors svd =
        detail::factored::SmallSvd<Scalar>::with_vectors(core);
    detail::factored::check_svd(svd.info(), "thin_svd");
    out.U = qa * svd.matrixU();
    out.S = svd.singularValues();
    out.V = qb * svd.matrixV();
    return out;
  }

  /// ||M||_F^2 = <A^T A, B B^T>_F = sum((A^T A) .* (B B^T)), from two r × r Gram matrices:
  /// O((m + n) r^2), no SVD. The sum can cancel when ||AB||_F << ||A||_F ||B||_F (relative
  /// error about eps ||A||_F^2 ||B||_F^2 / ||AB||_F^2); a tiny negative result is clamped to 0.
  /// Use `singular_values().norm()` when that matters.
  Scalar squared_frobenius_norm() const {
    const MatrixType gram_a = A_.transpose() * A_;
    const MatrixType gram_b = B_ * B_.transpose();
    return std::max(Scalar(0), gram_a.cwiseProduct(gram_b).sum());
  }

  /// ||M||_F = sqrt(squared_frobenius_norm()).
  Scalar frobenius_norm() const { return std::sqrt(squared_frobenius_norm()); }

  /// trace(M) = trace(BA) = sum_i A.row(i) · B.col(i). O(m r).
  /// \throws shape_error when M is not square.
  Scalar trace() const {
    require_square("trace");
    return A_.cwiseProduct(B_.transpose()).sum();
  }

  // ---------------------------------------------------------------------------------------
  // Entries (materialise only what is asked for)
  // ---------------------------------------------------------------------------------------

  /// M(i, j) = A.row(i) · B.col(j). O(r).
  Scalar coefficient(Index i, Index j) const {
    detail::factored::check_index("coefficient", "row", i, rows());
    detail::factored::check_index("coefficient", "column", j, cols());
    return A_.row(i).dot(B_.col(j));
  }

  /// Row i of M, A.row(i) B: 1 × n, O(r n).
  RowVector<Scalar> row(Index i) const {
    detail::factored::check_index("row", "row", i, rows());
    return A_.row(i) * B_;
  }

  /// Rows [first, first + count) of M: count × n, O(count r n).
  MatrixType rows(Index first, Index count) const { return block(first, 0, count, cols()); }

  /// The p × q block of M at (i, j): A.block(i, 0, p, r) B.block(0, j, r, q). O(p q r).
  /// \throws argument_error when the block does not fit in M.
  MatrixType block(Index i, Index j, Index p, Index q) const {
    detail::factored::check_block(i, j, p, q, rows(), cols());
    return A_.middleRows(i, p) * B_.middleCols(j, q);
  }

  /// The top-left min(k, m) × min(k, n) corner of M (TransformerLens's `corner`).
  MatrixType corner(Index k = 3) const {
    if (k < 0) {
      throw argument_error("FactoredMatrix::corner: k = " + std::to_string(k) +
                           " must be non-negative");
    }
    return block(0, 0, std::min(k, rows()), std::min(k, cols()));
  }

  /// diag(M)_i = A.row(i) · B.col(i) for square M: m entries, O(m r).
  /// \throws shape_error when M is not square.
  Vector<Scalar> diagonal() const {
    require_square("diagonal");
    return A_.cwiseProduct(B_.transpose()).rowwise().sum();
  }

  // ---------------------------------------------------------------------------------------
  // Blockwise row statistics (bounded memory)
  // ---------------------------------------------------------------------------------------

  /// Streams M by row blocks: calls `f(first_row, block)` for first_row = 0, block_rows, ...
  /// with `block` = A.middleRows(first_row, count) B (count × n, count = block_rows except
  /// possibly the last). The block is a `const MatrixType&` to a buffer that is reused: valid
  /// only during the call, and at most two allocations happen (full blocks, final partial
  /// block). Peak memory O(block_rows n).
  /// \throws argument_error when block_rows <= 0.
  ///
  ///     double best = -1e300;
  ///     M.for_each_row_block(256, [&](Index, const Eigen::MatrixXd& b) {
  ///       best = std::max(best, b.maxCoeff()); });
  template <typename F>
  void for_each_row_block(Index block_rows, F&& f) const {
    detail::factored::check_block_rows("for_each_row_block", block_rows);
    detail::factored::for_each_row_block<Scalar>(A_, B_, block_rows, std::forward<F>(f));
  }

  /// The k largest entries of every row of M, sorted descending, ties by smaller column index,
  /// NaN last. Computed in blocks of `block_rows` rows: memory O(block_rows n + m k), time
  /// O(m n r + m n log k).
  /// \throws argument_error when k < 0, k > cols() or block_rows <= 0.
  TopK<Scalar> top_k_rows(Index k, Index block_rows = 256) const {
    return detail::factored::top_k_of_product(A_, B_, k, block_rows);
  }

  /// As `top_k_rows(k, block_rows)`, for the listed rows only (in the given order, duplicates
  /// allowed): row t of the result describes row `rows[t]` of M. Pass a `std::vector` — a
  /// braced list of one element, `top_k_rows({3}, 2)`, would pick the other overload.
  /// \throws argument_error when a row index is out of range, k < 0, k > cols() or
  /// block_rows <= 0.
  TopK<Scalar> top_k_rows(const std::vector<Index>& rows_to_rank, Index k,
                          Index block_rows = 256) const {
    detail::factored::check_k(k, cols());
    detail::factored::check_block_rows("top_k_rows", block_rows);
    for (const Index i : rows_to_rank) {
      detail::factored::check_index("top_k_rows", "row", i, rows());
    }
    TopK<Scalar> out;
    out.indices.resize(static_cast<Index>(rows_to_rank.size()), k);
    out.values.resize(static_cast<Index>(rows_to_rank.size()), k);
    detail::factored::RowTopKSelector<Scalar> selector(k);
    detail::factored::for_each_listed_row_block<Scalar>(
        A_, B_, rows_to_rank, block_rows, [&](Index first, const MatrixType& blk) {
          for (Index t = 0; t < blk.rows(); ++t) {
            selector.select(blk, t, out.indices, out.values, first + t);
          }
        });
    return out;
  }

  /// For square M, entry i is the number of entries of row i strictly greater than M(i, i):
  /// rank 0 means the diagonal is the row's maximum ("top-1 copying"), rank < 5 "top-5". The
  /// diagonal is read from the same materialised block as the row, so ties compare exactly.
  /// Blockwise: memory O(block_rows n), time O(m n r). Where the processor has AVX2 or
  /// AVX-512, with circuitry's product kernels in parallel over panels of 96 rows by 512 columns
  /// (detail/diagonal_rank.hpp; memory O(threads 96 512), `block_rows` only checked): the same
  /// ranks, 5-10x faster.
  /// \throws shape_error when M is not square; argument_error when block_rows <= 0.
  Vector<Index> diagonal_rank(Index block_rows = 256) const {
    require_square("diagonal_rank");
    const detail::SimdLevel level = detail::simd_level();
    if (level != detail::SimdLevel::none && rows() > 0 && inner_dim() > 0) {
      detail::factored::check_block_rows("diagonal_rank", block_rows);
      return detail::factored::diagonal_rank_kernels<Scalar>(level, A_, B_, cols());
    }
    Vector<Index> out(rows());
    for_each_row_block(block_rows, [&](Index first, const MatrixType& blk) {
      for (Index t = 0; t < blk.rows(); ++t) {
        out(first + t) = detail::factored::count_greater_than(blk, t, first + t);
      }
    });
    return out;
  }

  /// min(diagonal_rank(), cap), entry by entry: all that top-k questions need (rank < k for
  /// every k <= cap). With the AVX2/AVX-512 kernels a row stops being computed once `cap` of its
  /// entries exceed its diagonal, so for a small cap the cost follows the rows whose diagonal
  /// is near the top (copying accuracy, cap 5, of a GPT-2-sized random head: 0.40 s against
  /// 1.51 s for diagonal_rank(); README "Performance"). The entries are computed as in
  /// diagonal_rank(), so the capped ranks agree with it exactly.
  /// \throws shape_error when M is not square; argument_error when cap < 1 or block_rows <= 0.
  Vector<Index> diagonal_rank_capped(Index cap, Index block_rows = 256) const {
    require_square("diagonal_rank_capped");
    if (cap < 1) {
      throw argument_error("FactoredMatrix::diagonal_rank_capped: cap must be >= 1, got " +
                           std::to_string(cap));
    }
    detail::factored::check_block_rows("diagonal_rank_capped", block_rows);
    const detail::SimdLevel level = detail::simd_level();
    if (level != detail::SimdLevel::none && rows() > 0 && inner_dim() > 0) {
      return detail::factored::diagonal_rank_kernels<Scalar>(level, A_, B_, cap);
    }
    return diagonal_rank(block_rows).cwiseMin(cap);
  }

 private:
  template <typename>
  friend class FactoredMatrix;
  template <typename Derived, typename S>
  friend FactoredMatrix<S> operator*(const Eigen::MatrixBase<Derived>&, const FactoredMatrix<S>&);

  // Takes ownership of already-checked factors (products build their results with it). Not
  // public: next to the template constructor, a public (Matrix&&, Matrix&&) overload is
  // ambiguous for an (expression, Matrix rvalue) pair.
  struct adopt_tag {};
  FactoredMatrix(adopt_tag, MatrixType&& a, MatrixType&& b) : A_(std::move(a)), B_(std::move(b)) {
    CIRCUITRY_ASSERT(A_.cols() == B_.rows());
  }

  void require_square(const char* what) const {
    detail::factored::require_square(what, rows(), cols());
  }

  MatrixType A_;
  MatrixType B_;
};

/// X (A B) = (X A) B: O(p m r) for a p × m matrix X.
/// \throws shape_error when `x.cols() != f.rows()`.
template <typename Derived, typename Scalar>
FactoredMatrix<Scalar> operator*(const Eigen::MatrixBase<Derived>& x,
                                 const FactoredMatrix<Scalar>& f) {
  static_assert(std::is_same<typename Derived::Scalar, Scalar>::value,
                "CIRCUITRY_FACTOR_SCALAR_MISMATCH: matrix * FactoredMatrix<Scalar> needs a matrix "
                "of scalar type Scalar; use .template cast<Scalar>()");
  detail::factored::check_product("matrix * FactoredMatrix", "matrix", x.rows(), x.cols(),
                                  "FactoredMatrix", f.rows(), f.cols());
  return FactoredMatrix<Scalar>(typename FactoredMatrix<Scalar>::adopt_tag{},
                                Matrix<Scalar>(x * f.A()), Matrix<Scalar>(f.B()));
}

/// s M = A (s B).
template <typename Scalar>
FactoredMatrix<Scalar> operator*(Scalar s, const FactoredMatrix<Scalar>& f) {
  return f * s;
}

using FactoredMatrixf = FactoredMatrix<float>;
using FactoredMatrixd = FactoredMatrix<double>;

}  // namespace circuitry
