// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/parallel.hpp
/// `parallel_for`: a parallel loop over independent pieces of work that may throw (a head's
/// eigenvalues: numerical_error), for the report's per-head groups.

#include <cstddef>
#include <exception>
#include <vector>

#include "circuitry/detail/simd_dispatch.hpp"
#include "circuitry/types.hpp"

namespace circuitry {
namespace detail {

/// Calls f(i) for i = 0 .. n - 1, in parallel over the OpenMP threads (dynamic schedule;
/// serially without OpenMP, and on one thread inside another parallel region). An exception
/// must not leave a parallel region (that terminates the program), so each is kept and, after
/// the loop, the one of the smallest i is rethrown: the error a serial loop would have stopped
/// at, whatever the number of threads. Unlike a serial loop, the other i still run.
template <typename F>
void parallel_for(Index n, F&& f) {
  if (n <= 0) return;
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  CIRCUITRY_OMP_PARALLEL_FOR
  for (Index i = 0; i < n; ++i) {
    try {
      f(i);
    } catch (...) {
      errors[static_cast<std::size_t>(i)] = std::current_exception();
    }
  }
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace detail
}  // namespace circuitry
