// Test support: run a computation at every SIMD level this processor has (detail/simd_*.hpp).
#pragma once

#include <circuitry/detail/simd_dispatch.hpp>
#include <vector>

namespace circuitry::test {

/// The SIMD levels this processor runs, lowest first (none always).
inline std::vector<circuitry::detail::SimdLevel> simd_levels() {
  using circuitry::detail::SimdLevel;
  std::vector<SimdLevel> levels;
  for (SimdLevel l : {SimdLevel::none, SimdLevel::avx2, SimdLevel::avx512}) {
    if (static_cast<int>(l) <= static_cast<int>(circuitry::detail::supported_simd_level())) {
      levels.push_back(l);
    }
  }
  return levels;
}

/// Forces a SIMD level for its lifetime.
struct ForcedSimdLevel {
  explicit ForcedSimdLevel(circuitry::detail::SimdLevel l) {
    circuitry::detail::force_simd_level(l);
  }
  ~ForcedSimdLevel() { circuitry::detail::reset_simd_level(); }
  ForcedSimdLevel(const ForcedSimdLevel&) = delete;
  ForcedSimdLevel& operator=(const ForcedSimdLevel&) = delete;
};

}  // namespace circuitry::test
