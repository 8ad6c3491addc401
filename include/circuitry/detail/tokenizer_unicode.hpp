// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file tokenizer_unicode.hpp
/// The little Unicode the tokenizer needs: a strict UTF-8 decoder, the general-category classes
/// of tokenizer_unicode_table.hpp (for the regex classes `\p{L}`, `\p{N}` and `\w`), and the
/// White_Space property (`\s`).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>

#include "circuitry/detail/tokenizer_unicode_table.hpp"

namespace circuitry {
namespace detail {

/// One decoded character: its code point and its length in bytes. A byte that does not start
/// a well-formed UTF-8 sequence (a stray continuation byte, a truncated sequence, an overlong
/// form, a surrogate, a value past U+10FFFF) decodes as a one-byte character with `valid`
/// false; the tokenizer treats it as punctuation ("other"), so that any byte string, even
/// invalid UTF-8, is encoded and decodes back to itself.
struct Utf8Char {
  char32_t code_point;
  std::size_t length;
  bool valid;
};

/// Decodes the character starting at byte `i` of `s` (`i < s.size()`).
inline Utf8Char decode_utf8(std::string_view s, std::size_t i) noexcept {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return {b0, 1, true};
  std::size_t length = 0;
  char32_t cp = 0;
  char32_t min = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2, cp = b0 & 0x1Fu, min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3, cp = b0 & 0x0Fu, min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4, cp = b0 & 0x07u, min = 0x10000;
  } else {
    return {b0, 1, false};  // continuation byte, 0xC0/0xC1 (always overlong) or 0xF5..0xFF
  }
  if (i + length > s.size()) return {b0, 1, false};
  for (std::size_t k = 1; k < length; ++k) {
    const unsigned char b = byte(i + k);
    if ((b & 0xC0u) != 0x80u) return {b0, 1, false};
    cp = (cp << 6) | (b & 0x3Fu);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {b0, 1, false};
  return {cp, length, true};
}

/// Appends the UTF-8 encoding of `cp` (a Unicode scalar value) to `out`.
inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// The general-category class of `cp` (kOther for code points in no table range).
inline UnicodeClass unicode_class(char32_t cp) noexcept {
  if (cp < 0x80) {  // fast path, and the bulk of source code
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return UnicodeClass::kLetter;
    if (cp >= '0' && cp <= '9') return UnicodeClass::kDigit;
    if (cp == '_') return UnicodeClass::kConnector;
    return UnicodeClass::kOther;
  }
  const auto* first = std::begin(unicode_table::kRanges);
  const auto* last = std::end(unicode_table::kRanges);
  // The first range whose last code point is >= cp; cp is in it if it also starts <= cp.
  const auto* it = std::lower_bound(first, last, cp,
                                    [](const UnicodeRange& r, char32_t c) { return r.last < c; });
  if (it != last && it->first <= cp) return it->cls;
  return UnicodeClass::kOther;
}

/// `\p{L}`: general category L (Lu, Ll, Lt, Lm, Lo).
inline bool is_letter(char32_t cp) noexcept { return unicode_class(cp) == UnicodeClass::kLetter; }

/// `\p{N}`: general category N (Nd, Nl, No).
inline bool is_number(char32_t cp) noexcept {
  const UnicodeClass c = unicode_class(cp);
  return c == UnicodeClass::kDigit || c == UnicodeClass::kOtherNumber;
}

/// `\s` of Oniguruma (the Hugging Face pre-tokenizer regex) and of Rust's `regex` (added-token
/// stripping): the Unicode White_Space property. Note that U+001C..U+001F, which Python's
/// `str.isspace` accepts, are not White_Space.
inline bool is_white_space(char32_t cp) noexcept {
  if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/// `\w` of Rust's `regex` (used by added tokens' `single_word`), which is Alphabetic, M, Nd,
/// Pc and Join_Control. Approximated here by L, Nd, Nl, M, Pc, U+200C and U+200D: the few
/// Alphabetic code points outside L and Nl (e.g. U+0345, U+24B6..U+24E9) are not included.
inline bool is_word_char(char32_t cp) noexcept {
  const UnicodeClass c = unicode_class(cp);
  return c == UnicodeClass::kLetter || c == UnicodeClass::kDigit || c == UnicodeClass::kMark ||
         c == UnicodeClass::kConnector || cp == 0x200C || cp == 0x200D;
}

/// The character that ends at byte `end` of `s` (`end > 0`): the one-byte invalid character
/// `s[end - 1]` unless a well-formed sequence ends exactly there.
inline Utf8Char decode_utf8_before(std::string_view s, std::size_t end) noexcept {
  const auto last = static_cast<unsigned char>(s[end - 1]);
  if (last < 0x80) return {last, 1, true};
  for (std::size_t length = 2; length <= 4 && length <= end; ++length) {
    const Utf8Char c = decode_utf8(s, end - length);
    if (c.valid && c.length == length) return c;
  }
  return {last, 1, false};
}

}  // namespace detail
}  // namespace circuitry
