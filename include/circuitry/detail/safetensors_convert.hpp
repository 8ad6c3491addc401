// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/safetensors_convert.hpp
/// Conversion of raw little-endian tensor bytes to `Scalar` (float/double) and `std::int64_t`.
/// The dtype switch sits outside the element loops: each loop is instantiated once per dtype
/// with an inlined, memcpy-based (alignment-free) load.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "circuitry/detail/safetensors_dtype.hpp"
#include "circuitry/detail/safetensors_float.hpp"
#include "circuitry/error.hpp"

namespace circuitry {
namespace detail {

struct LoadF64 {
  static constexpr std::size_t size = 8;
  static double load(const std::uint8_t* p) { return load_le<double>(p); }
};
struct LoadF32 {
  static constexpr std::size_t size = 4;
  static float load(const std::uint8_t* p) { return load_le<float>(p); }
};
struct LoadF16 {
  static constexpr std::size_t size = 2;
  static float load(const std::uint8_t* p) { return half_to_float(load_le<std::uint16_t>(p)); }
};
struct LoadBF16 {
  static constexpr std::size_t size = 2;
  static float load(const std::uint8_t* p) { return bf16_to_float(load_le<std::uint16_t>(p)); }
};

/// Calls `f(Loader{})` with the loader of the floating dtype `dtype` (the caller has checked
/// `is_floating(dtype)`).
template <typename F>
inline void with_float_loader(Dtype dtype, F&& f) {
  switch (dtype) {
    case Dtype::F64: f(LoadF64{}); return;
    case Dtype::F32: f(LoadF32{}); return;
    case Dtype::F16: f(LoadF16{}); return;
    case Dtype::BF16: f(LoadBF16{}); return;
    default: CIRCUITRY_ASSERT(false && "with_float_loader: not a floating dtype"); return;
  }
}

/// dst[i] = element i of the `n` elements of dtype `dtype` at `src`.
template <typename Scalar>
inline void convert_flat(Dtype dtype, const std::uint8_t* src, std::size_t n, Scalar* dst) {
  with_float_loader(dtype, [&](auto loader) {
    using L = decltype(loader);
    for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Scalar>(L::load(src + i * L::size));
  });
}

/// Fills the column-major `rows` x `cols` array `dst` from the row-major one at `src`:
/// dst[c * rows + r] = src[r * cols + c]. Rows are taken in tiles so that the strided side of
/// the transpose (the reads) stays in cache while the writes run contiguously.
template <typename Scalar>
inline void convert_transposed(Dtype dtype, const std::uint8_t* src, Eigen::Index rows,
                               Eigen::Index cols, Scalar* dst) {
  constexpr Eigen::Index tile = 16;
  with_float_loader(dtype, [&](auto loader) {
    using L = decltype(loader);
    const auto row_bytes = static_cast<std::size_t>(cols) * L::size;
    for (Eigen::Index r0 = 0; r0 < rows; r0 += tile) {
      const Eigen::Index r1 = std::min(rows, r0 + tile);
      for (Eigen::Index c = 0; c < cols; ++c) {
        const std::uint8_t* in = src + static_cast<std::size_t>(c) * L::size;
        Scalar* out = dst + c * rows;
        for (Eigen::Index r = r0; r < r1; ++r) {
          out[r] = static_cast<Scalar>(L::load(in + static_cast<std::size_t>(r) * row_bytes));
        }
      }
    }
  });
}

/// Index of the first NaN or infinity among the `n` floating elements at `src`, or `n`.
inline std::size_t find_non_finite(Dtype dtype, const std::uint8_t* src, std::size_t n) {
  std::size_t found = n;
  with_float_loader(dtype, [&](auto loader) {
    using L = decltype(loader);
    for (std::size_t i = 0; i < n; ++i) {
      if (!std::isfinite(L::load(src + i * L::size))) {
        found = i;
        return;
      }
    }
  });
  return found;
}

/// dst[i] = element i of the `n` integer (or BOOL: 0 or 1) elements of dtype `dtype` at `src`.
/// Throws format_error (prefixed by `where`) for a U64 value above 2^63 - 1.
inline void convert_integers(Dtype dtype, const std::uint8_t* src, std::size_t n, std::int64_t* dst,
                             const std::string& where) {
  auto loop = [&](auto tag) {
    using T = decltype(tag);
    for (std::size_t i = 0; i < n; ++i) {
      const T v = load_le<T>(src + i * sizeof(T));
      // Sign-extending I8 (a signed char) is the point here, not a misuse.
      dst[i] = static_cast<std::int64_t>(v);  // NOLINT(bugprone-signed-char-misuse)
    }
  };
  switch (dtype) {
    case Dtype::I64: loop(std::int64_t{}); return;
    case Dtype::I32: loop(std::int32_t{}); return;
    case Dtype::I16: loop(std::int16_t{}); return;
    case Dtype::I8: loop(std::int8_t{}); return;
    case Dtype::U32: loop(std::uint32_t{}); return;
    case Dtype::U16: loop(std::uint16_t{}); return;
    case Dtype::U8: loop(std::uint8_t{}); return;
    case Dtype::BOOL:
      for (std::size_t i = 0; i < n; ++i) dst[i] = src[i] != 0 ? 1 : 0;
      return;
    case Dtype::U64:
      for (std::size_t i = 0; i < n; ++i) {
        const auto v = load_le<std::uint64_t>(src + i * 8);
        if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
          throw format_error(where + "U64 element " + std::to_string(i) + " is " +
                             std::to_string(v) + ", more than std::int64_t holds");
        }
        dst[i] = static_cast<std::int64_t>(v);
      }
      return;
    default: CIRCUITRY_ASSERT(false && "convert_integers: not an integer dtype"); return;
  }
}

}  // namespace detail
}  // namespace circuitry
