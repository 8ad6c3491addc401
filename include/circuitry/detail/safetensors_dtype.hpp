// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/safetensors_dtype.hpp
/// The element types of a safetensors file (`Dtype`), their names and sizes. Included by
/// `circuitry/safetensors.hpp`; `Dtype` and its functions are public API in namespace circuitry.

#include <cstddef>
#include <cstdint>
#include <string>

#include "circuitry/error.hpp"

namespace circuitry {
namespace detail {
/// `text` for an error message, cut to `max` characters with "..." so that a hostile header
/// cannot make a message as long as itself.
inline std::string shorten(const std::string& text, std::size_t max = 80) {
  return text.size() <= max ? text : text.substr(0, max) + "...";
}
}  // namespace detail

/// Element type of a tensor, spelled in the file as the enumerator's name ("F32", "BF16", ...).
/// All multi-byte types are little-endian in the file.
enum class Dtype {
  F64,   ///< IEEE 754 binary64
  F32,   ///< IEEE 754 binary32
  F16,   ///< IEEE 754 binary16 (half): 1 sign, 5 exponent, 10 mantissa bits
  BF16,  ///< bfloat16: the top 16 bits of a binary32
  I64,
  I32,
  I16,
  I8,
  U64,
  U32,
  U16,
  U8,
  BOOL  ///< one byte, 0 is false, anything else true
};

/// The name of `dtype` as the file spells it, e.g. `to_string(Dtype::BF16) == "BF16"`.
inline std::string to_string(Dtype dtype) {
  switch (dtype) {
    case Dtype::F64: return "F64";
    case Dtype::F32: return "F32";
    case Dtype::F16: return "F16";
    case Dtype::BF16: return "BF16";
    case Dtype::I64: return "I64";
    case Dtype::I32: return "I32";
    case Dtype::I16: return "I16";
    case Dtype::I8: return "I8";
    case Dtype::U64: return "U64";
    case Dtype::U32: return "U32";
    case Dtype::U16: return "U16";
    case Dtype::U8: return "U8";
    case Dtype::BOOL: return "BOOL";
  }
  return "?";  // unreachable for valid enumerators
}

/// Size of one element in bytes, e.g. `dtype_size(Dtype::F16) == 2`.
inline std::size_t dtype_size(Dtype dtype) {
  switch (dtype) {
    case Dtype::F64:
    case Dtype::I64:
    case Dtype::U64: return 8;
    case Dtype::F32:
    case Dtype::I32:
    case Dtype::U32: return 4;
    case Dtype::F16:
    case Dtype::BF16:
    case Dtype::I16:
    case Dtype::U16: return 2;
    case Dtype::I8:
    case Dtype::U8:
    case Dtype::BOOL: return 1;
  }
  return 0;  // unreachable for valid enumerators
}

/// True for F64, F32, F16 and BF16: the dtypes `SafetensorsFile::values()` and friends convert.
inline bool is_floating(Dtype dtype) {
  return dtype == Dtype::F64 || dtype == Dtype::F32 || dtype == Dtype::F16 || dtype == Dtype::BF16;
}

/// True for the integer dtypes and BOOL: the dtypes `SafetensorsFile::integers()` reads.
inline bool is_integer(Dtype dtype) { return !is_floating(dtype); }

/// The dtype spelled `name` ("F32", "BF16", ...; case-sensitive, as the format defines).
/// `context` (e.g. "file 'm.safetensors': tensor 'embed.W_E'") prefixes the error message.
///
///     parse_dtype("F16") == Dtype::F16
///     parse_dtype("Q7", "file 'm.safetensors': tensor 'x'")  // throws format_error:
///     // "file 'm.safetensors': tensor 'x': unknown dtype 'Q7' (expected one of F64, F32, ...)"
inline Dtype parse_dtype(const std::string& name, const std::string& context = "") {
  static constexpr Dtype all[] = {Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::I64,
                                  Dtype::I32, Dtype::I16, Dtype::I8,  Dtype::U64,  Dtype::U32,
                                  Dtype::U16, Dtype::U8,  Dtype::BOOL};
  std::string expected;
  for (Dtype d : all) {
    if (name == to_string(d)) return d;
    expected += (expected.empty() ? "" : ", ") + to_string(d);
  }
  throw format_error((context.empty() ? "" : context + ": ") + "unknown dtype '" +
                     detail::shorten(name) + "' (expected one of " + expected + ")");
}

}  // namespace circuitry
