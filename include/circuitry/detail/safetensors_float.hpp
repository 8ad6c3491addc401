// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/safetensors_float.hpp
/// Bit-exact conversions between binary16 / bfloat16 and float, and unaligned little-endian
/// loads and stores. Tensor data in a safetensors file sits at an arbitrary offset (the header
/// length is arbitrary), so every load goes through `std::memcpy`, never a cast pointer.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace circuitry {
namespace detail {

static_assert(std::numeric_limits<float>::is_iec559 && sizeof(float) == 4,
              "CIRCUITRY_FLOAT_MUST_BE_IEEE754_BINARY32");
static_assert(std::numeric_limits<double>::is_iec559 && sizeof(double) == 8,
              "CIRCUITRY_DOUBLE_MUST_BE_IEEE754_BINARY64");

#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
constexpr bool host_is_big_endian = true;
#else
constexpr bool host_is_big_endian = false;
#endif

/// Loads a little-endian `T` (an integer or float type) from `p`, which may be unaligned.
template <typename T>
inline T load_le(const std::uint8_t* p) {
  T value;
  if (!host_is_big_endian) {
    std::memcpy(&value, p, sizeof(T));
  } else {
    std::uint8_t bytes[sizeof(T)] = {};
    for (unsigned i = 0; i < sizeof(T); ++i) bytes[i] = p[sizeof(T) - 1 - i];
    std::memcpy(&value, bytes, sizeof(T));
  }
  return value;
}

/// Stores `value` little-endian at `p`, which may be unaligned.
template <typename T>
inline void store_le(std::uint8_t* p, T value) {
  std::memcpy(p, &value, sizeof(T));
  if (host_is_big_endian) {
    for (unsigned i = 0; i < sizeof(T) / 2; ++i) {
      const std::uint8_t b = p[i];
      p[i] = p[sizeof(T) - 1 - i];
      p[sizeof(T) - 1 - i] = b;
    }
  }
}

inline float float_from_bits(std::uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

/// binary16 -> binary32, exact for every input: zeros, subnormals (the smallest, 0x0001, is
/// 2^-24), normals (0x7BFF is 65504), infinities and NaN (payload kept, sign kept).
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1Fu;
  std::uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1F) return float_from_bits(sign | 0x7F800000u | (mantissa << 13));
  if (exponent != 0) return float_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  if (mantissa == 0) return float_from_bits(sign);
  // Subnormal: value = mantissa * 2^-24. Normalise so the leading 1 sits at bit 10.
  std::uint32_t e = 113;  // 127 - 15 + 1: the binary32 exponent of 2^-14
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    --e;
  }
  return float_from_bits(sign | (e << 23) | ((mantissa & 0x3FFu) << 13));
}

/// bfloat16 -> binary32, exact: bfloat16 is the top half of a binary32.
inline float bf16_to_float(std::uint16_t b) {
  return float_from_bits(static_cast<std::uint32_t>(b) << 16);
}

/// `v` rounded to the nearest integer, ties to even, whatever the FP rounding mode; for
/// 0 <= v < 2^52.
inline double round_half_even(double v) {
  const double fl = std::floor(v);
  const double diff = v - fl;
  if (diff > 0.5) return fl + 1;
  if (diff < 0.5) return fl;
  return std::fmod(fl, 2.0) == 0.0 ? fl : fl + 1;
}

/// Encodes `x` as a 16-bit float with `ExpBits` exponent and `MantBits` mantissa bits, rounding
/// to nearest, ties to even, in one step (no double rounding through float); overflow gives
/// infinity, NaN gives a quiet NaN of the same sign.
template <int ExpBits, int MantBits>
inline std::uint16_t encode_small_float(double x) {
  static_assert(1 + ExpBits + MantBits == 16, "CIRCUITRY_SMALL_FLOAT_MUST_HAVE_16_BITS");
  constexpr int bias = (1 << (ExpBits - 1)) - 1;
  constexpr int emin = 1 - bias;
  constexpr int emax = bias;
  constexpr std::uint32_t exp_mask = ((1u << ExpBits) - 1u) << MantBits;
  constexpr std::uint32_t implicit = 1u << MantBits;
  const std::uint32_t sign = std::signbit(x) ? 0x8000u : 0u;
  if (std::isnan(x)) return static_cast<std::uint16_t>(sign | exp_mask | (implicit >> 1));
  const double a = std::fabs(x);
  if (std::isinf(a)) return static_cast<std::uint16_t>(sign | exp_mask);
  if (a == 0.0) return static_cast<std::uint16_t>(sign);
  int e2 = 0;
  std::frexp(a, &e2);
  int exponent = e2 - 1;  // a is in [2^exponent, 2^(exponent+1))
  if (exponent < emin) {  // subnormal (m == implicit rounds up to the smallest normal: same bits)
    const double m = round_half_even(std::ldexp(a, MantBits - emin));
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(m));
  }
  if (exponent > emax) return static_cast<std::uint16_t>(sign | exp_mask);
  auto m = static_cast<std::uint32_t>(round_half_even(std::ldexp(a, MantBits - exponent)));
  if (m == 2 * implicit) {
    m = implicit;
    ++exponent;
  }
  if (exponent > emax) return static_cast<std::uint16_t>(sign | exp_mask);
  return static_cast<std::uint16_t>(
      sign | (static_cast<std::uint32_t>(exponent + bias) << MantBits) | (m - implicit));
}

/// binary64 (or binary32, exactly widened) -> binary16, round to nearest even.
inline std::uint16_t float_to_half(double x) { return encode_small_float<5, 10>(x); }

/// binary64 (or binary32, exactly widened) -> bfloat16, round to nearest even.
inline std::uint16_t float_to_bf16(double x) { return encode_small_float<8, 7>(x); }

}  // namespace detail
}  // namespace circuitry
