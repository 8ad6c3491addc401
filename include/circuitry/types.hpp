// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file types.hpp
/// Eigen aliases used throughout circuitry. Every type is templated on `Scalar` (float or double).
/// Matrices are Eigen's default column-major; the *maths* follows TransformerLens's row-vector
/// convention: a residual-stream vector is a row `x` and a layer maps it as `x W`.

#include <Eigen/Core>
#include <complex>
#include <cstdint>
#include <type_traits>

namespace circuitry {

using Index = Eigen::Index;

template <typename Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
template <typename Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
template <typename Scalar>
using RowVector = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;
template <typename Scalar>
using ComplexVector = Eigen::Matrix<std::complex<Scalar>, Eigen::Dynamic, 1>;

namespace detail {
template <typename Scalar>
struct is_supported_scalar : std::integral_constant<bool, std::is_same<Scalar, float>::value ||
                                                              std::is_same<Scalar, double>::value> {
};
}  // namespace detail

#define CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar)                                   \
  static_assert(::circuitry::detail::is_supported_scalar<Scalar>::value,         \
                "CIRCUITRY_SCALAR_MUST_BE_FLOAT_OR_DOUBLE: circuitry types are " \
                "templated on float or double")

}  // namespace circuitry
