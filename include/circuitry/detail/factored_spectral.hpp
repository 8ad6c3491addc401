// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/factored_spectral.hpp
/// Internals of `FactoredMatrix`'s spectra: thin QR of a factor, the SVD of the small core
/// `Ra Rb^T`, and the order in which eigenvalues are reported. Not part of the public API;
/// include `circuitry/factored_matrix.hpp` instead.

#include <Eigen/Dense>
#include <algorithm>
#include <complex>
#include <utility>

#include "circuitry/error.hpp"
#include "circuitry/types.hpp"

namespace circuitry {
namespace detail {
namespace factored {

/// X = Q R with Q (rows × k) having orthonormal columns and R (k × cols) upper trapezoidal,
/// k = min(rows, cols). Householder QR without pivoting: exact for rank-deficient X too.
template <typename Scalar>
struct ThinQr {
  Matrix<Scalar> Q;  ///< rows × k, Q^T Q = I_k; left empty (0 × 0) when not requested.
  Matrix<Scalar> R;  ///< k × cols, upper trapezoidal.
};

template <typename Scalar>
ThinQr<Scalar> thin_qr(const Matrix<Scalar>& x, bool want_q) {
  const Index k = std::min(x.rows(), x.cols());
  ThinQr<Scalar> out;
  if (k == 0) {
    out.R = Matrix<Scalar>::Zero(0, x.cols());
    if (want_q) out.Q = Matrix<Scalar>::Zero(x.rows(), 0);
    return out;
  }
  const Eigen::HouseholderQR<Matrix<Scalar>> qr(x);
  out.R = qr.matrixQR().topRows(k).template triangularView<Eigen::Upper>();
  if (want_q) out.Q = qr.householderQ() * Matrix<Scalar>::Identity(x.rows(), k);
  return out;
}

/// Thin SVD of a small dense matrix with Jacobi rotations (accurate to high relative precision;
/// the matrix is at most r × r here). Spelled for both Eigen 3.4 (runtime options) and Eigen
/// 3.4.90+/5 (options as a template argument; the runtime form is deprecated there).
template <typename Scalar>
struct SmallSvd {
#if EIGEN_VERSION_AT_LEAST(3, 4, 90)
  using WithVectors = Eigen::JacobiSVD<Matrix<Scalar>, Eigen::ComputeThinU | Eigen::ComputeThinV>;
  static WithVectors with_vectors(const Matrix<Scalar>& c) { return WithVectors(c); }
#else
  using WithVectors = Eigen::JacobiSVD<Matrix<Scalar>>;
  static WithVectors with_vectors(const Matrix<Scalar>& c) {
    return WithVectors(c, Eigen::ComputeThinU | Eigen::ComputeThinV);
  }
#endif
  using ValuesOnly = Eigen::JacobiSVD<Matrix<Scalar>>;
  static ValuesOnly values_only(const Matrix<Scalar>& c) { return ValuesOnly(c); }
};

/// The core C = Ra Rb^T (min(m, r) × min(n, r)) of M = A B, where A = Qa Ra and B^T = Qb Rb:
/// M = Qa C Qb^T, so M has the singular values of C. Fills Qa (m × min(m, r)) and Qb
/// (n × min(n, r)) when asked. O((m + n) r^2).
template <typename Scalar>
Matrix<Scalar> svd_core(const Matrix<Scalar>& a, const Matrix<Scalar>& b, Matrix<Scalar>* qa,
                        Matrix<Scalar>* qb) {
  CIRCUITRY_ASSERT(a.cols() == b.rows());
  ThinQr<Scalar> qr_a = thin_qr<Scalar>(a, qa != nullptr);
  ThinQr<Scalar> qr_b = thin_qr<Scalar>(Matrix<Scalar>(b.transpose()), qb != nullptr);
  if (qa != nullptr) *qa = std::move(qr_a.Q);
  if (qb != nullptr) *qb = std::move(qr_b.Q);
  return qr_a.R * qr_b.R.transpose();
}

/// Sorts eigenvalues by descending magnitude; equal magnitudes by descending real part, then
/// descending imaginary part (so a conjugate pair lists +i first). Deterministic for a given
/// input.
template <typename Scalar>
void sort_eigenvalues(ComplexVector<Scalar>& values) {
  std::stable_sort(values.data(), values.data() + values.size(),
                   [](const std::complex<Scalar>& a, const std::complex<Scalar>& b) {
                     const Scalar ma = std::abs(a);
                     const Scalar mb = std::abs(b);
                     if (ma != mb) return ma > mb;
                     if (a.real() != b.real()) return a.real() > b.real();
                     return a.imag() > b.imag();
                   });
}

}  // namespace factored
}  // namespace detail
}  // namespace circuitry
