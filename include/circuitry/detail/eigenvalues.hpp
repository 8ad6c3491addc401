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
///
/// Before all of this the matrix is scaled by a power of two (exact) so that its largest entry
/// lies in [0.5, 1), and the eigenvalues are scaled back after: as LAPACK's geev scales a matrix
/// whose norm is outside [sqrt(min), sqrt(max)]. Without it a float matrix with entries near
/// 1e38 overflows inside the QR iteration, and one with entries near 1e-40 (subnormal) is taken
/// for zero. Edge cases, each tested (test_eigenvalues.cpp):
///  - an all-zero matrix has all-zero eigenvalues (Success), exactly;
///  - a matrix holding NaN or infinity, or whose eigenvalues overflow `Scalar` when scaled back
///    (|λ| > max, possible only for entries near max), gives NumericalIssue;
///  - a defective or rank-deficient matrix (a Jordan block, repeated or zero eigenvalues) gives
///    its eigenvalues to the usual backward-stable accuracy (a Jordan block of size k perturbs its
///    eigenvalue by about eps^(1/k) ||M||).

#include <Eigen/Eigenvalues>
#include <cmath>
#include <complex>

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

/// The eigenvalues of the square matrix `m` into `values`, for `m` already scaled and finite.
/// `max_iterations` > 0 caps each solver's QR iterations (for tests of the failure path); 0 keeps
/// Eigen's default, 40 per row.
template <typename Scalar>
Eigen::ComputationInfo scaled_eigenvalues(Matrix<Scalar>& m, ComplexVector<Scalar>& values,
                                          Index max_iterations) {
  balance(m);
  for (const bool transposed : {false, true}) {
    Eigen::EigenSolver<Matrix<Scalar>> solver;
    if (max_iterations > 0) solver.setMaxIterations(max_iterations);
    if (transposed) {
      solver.compute(m.transpose(), /*computeEigenvectors=*/false);
    } else {
      solver.compute(m, /*computeEigenvectors=*/false);
    }
    if (solver.info() == Eigen::Success) {
      values = solver.eigenvalues();
      return Eigen::Success;
    }
  }
  using ComplexMatrix = Eigen::Matrix<std::complex<Scalar>, Eigen::Dynamic, Eigen::Dynamic>;
  Eigen::ComplexEigenSolver<ComplexMatrix> solver;
  if (max_iterations > 0) solver.setMaxIterations(max_iterations);
  solver.compute(m.template cast<std::complex<Scalar>>(), /*computeEigenvectors=*/false);
  if (solver.info() == Eigen::Success) {
    values = solver.eigenvalues();
    return Eigen::Success;
  }
  return Eigen::NoConvergence;
}

/// The eigenvalues of the square matrix `m` into `values`; the returned status is Success unless
/// every method above failed (NoConvergence), or `m` holds NaN or infinity, or an eigenvalue
/// overflows `Scalar` (NumericalIssue). `max_iterations`: see scaled_eigenvalues (0: default).
template <typename Scalar>
Eigen::ComputationInfo general_eigenvalues(Matrix<Scalar> m, ComplexVector<Scalar>& values,
                                           Index max_iterations = 0) {
  if (!m.allFinite()) return Eigen::NumericalIssue;
  const Scalar largest = m.size() == 0 ? Scalar(0) : m.cwiseAbs().maxCoeff();
  if (largest == Scalar(0)) {  // empty or all zero: exactly zero eigenvalues
    values = ComplexVector<Scalar>::Zero(m.rows());
    return Eigen::Success;
  }
  int exponent = 0;
  std::frexp(largest, &exponent);  // largest = f 2^exponent, f in [0.5, 1)
  // Entry by entry: 2^-exponent itself overflows when the largest entry is subnormal. Exact,
  // save for entries that become subnormal (below 2^-126 times the largest, in float).
  m = m.unaryExpr([exponent](Scalar x) { return std::ldexp(x, -exponent); });
  const Eigen::ComputationInfo info = scaled_eigenvalues(m, values, max_iterations);
  if (info != Eigen::Success) return info;
  for (Index i = 0; i < values.size(); ++i) {
    values(i) = {std::ldexp(values(i).real(), exponent), std::ldexp(values(i).imag(), exponent)};
  }
  return values.allFinite() ? Eigen::Success : Eigen::NumericalIssue;
}

}  // namespace detail
}  // namespace circuitry
