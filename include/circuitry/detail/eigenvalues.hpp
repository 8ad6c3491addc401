// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/eigenvalues.hpp
/// Eigenvalues of a small dense general (non-symmetric) matrix, robustly: every spectrum in
/// circuitry (BA of a FactoredMatrix: OV, QK and the full circuits) goes through here.
///
/// 1. Balance, as LAPACK's geev does (TransformerLens's torch.linalg.eig): a diagonal similarity
///    D^-1 M D with D a power of two per row, chosen so that each row and column have similar
///    norms (Parlett and Reinsch). Exact in floating point: it changes no eigenvalue, and it makes
///    the QR iteration converge and its result accurate on badly scaled matrices.
/// 2. Real Schur (Eigen::EigenSolver). Eigen 3.4's shift strategy occasionally stalls on a matrix
///    that is nothing special (seen on a random GPT-2-sized full OV circuit), so, should it fail:
/// 3. the transpose (same eigenvalues, a different QR iteration), then
/// 4. complex Schur (Eigen::ComplexEigenSolver).
/// Only if all fail is the status NoConvergence: callers report it, never hide it.

#include <Eigen/Eigenvalues>
#include <cmath>

#include "circuitry/types.hpp"

namespace circuitry {
namespace detail {

/// Balances `m` in place by a diagonal similarity with powers of two (see above).
template <typename Scalar>
void balance(Matrix<Scalar>& m) {
  const Index n = m.rows();
  const Scalar radix = 2, radix2 = 4;
  for (int sweep = 0; sweep < 100; ++sweep) {
    bool done = true;
    for (Index i = 0; i < n; ++i) {
      Scalar c = m.col(i).cwiseAbs().sum() - std::abs(m(i, i));
      Scalar r = m.row(i).cwiseAbs().sum() - std::abs(m(i, i));
      if (!(c > 0) || !(r > 0) || !std::isfinite(c) || !std::isfinite(r)) continue;
      const Scalar s = c + r;
      Scalar f = 1, g = r / radix;
      while (c < g && f < Scalar(1e30)) {
        f *= radix;
        c *= radix2;
      }
      g = r * radix;
      while (c > g && f > Scalar(1e-30)) {
        f /= radix;
        c /= radix2;
      }
      if ((c + r) / f < Scalar(0.95) * s) {
        done = false;
        m.row(i) /= f;
        m.col(i) *= f;
      }
    }
    if (done) return;
  }
}

/// The eigenvalues of the square matrix `m` into `values`; the returned status is Success unless
/// every method above failed (NoConvergence) or `m` holds NaN or infinity (NumericalIssue).
template <typename Scalar>
Eigen::ComputationInfo general_eigenvalues(Matrix<Scalar> m, ComplexVector<Scalar>& values) {
  if (!m.allFinite()) return Eigen::NumericalIssue;
  if (m.size() == 0) {
    values.resize(0);
    return Eigen::Success;
  }
  balance(m);
  {
    const Eigen::EigenSolver<Matrix<Scalar>> solver(m, /*computeEigenvectors=*/false);
    if (solver.info() == Eigen::Success) {
      values = solver.eigenvalues();
      return Eigen::Success;
    }
  }
  {
    const Eigen::EigenSolver<Matrix<Scalar>> solver(m.transpose(), false);
    if (solver.info() == Eigen::Success) {
      values = solver.eigenvalues();
      return Eigen::Success;
    }
  }
  using Complex = std::complex<Scalar>;
  const Eigen::ComplexEigenSolver<Eigen::Matrix<Complex, Eigen::Dynamic, Eigen::Dynamic>> solver(
      m.template cast<Complex>(), false);
  if (solver.info() == Eigen::Success) {
    values = solver.eigenvalues();
    return Eigen::Success;
  }
  return Eigen::NoConvergence;
}

}  // namespace detail
}  // namespace circuitry
