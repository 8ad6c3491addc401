// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file tokenizer_pretokenize.hpp
/// The byte-level pre-tokenizer of GPT-2 (Hugging Face `ByteLevel`): the split of text into
/// words by GPT-2's regex, and the reversible map of bytes to printable characters.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "circuitry/detail/tokenizer_unicode.hpp"

namespace circuitry {
namespace detail {

/// GPT-2's `bytes_to_unicode`: byte b maps to code point b for the printable bytes '!'..'~',
/// U+00A1..U+00AC and U+00AE..U+00FF, and the other 68 bytes, in increasing order, to
/// U+0100, U+0101, ... (so ' ' is 'Ġ' U+0120 and '\n' is 'Ċ' U+010A). Every code point is below
/// 0x144.
inline std::array<char32_t, 256> bytes_to_unicode() {
  std::array<char32_t, 256> map{};
  char32_t next = 256;
  for (unsigned b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    map[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return map;
}

/// The byte-level alphabet both ways: `encoded[b]` is the UTF-8 of byte b's character;
/// `byte_of(cp)` is the byte whose character is cp, or -1.
class ByteLevelAlphabet {
 public:
  ByteLevelAlphabet() {
    const std::array<char32_t, 256> map = bytes_to_unicode();
    inverse_.fill(-1);
    for (unsigned b = 0; b < 256; ++b) {
      append_utf8(encoded_[b], map[b]);
      inverse_[map[b]] = static_cast<std::int16_t>(b);
    }
  }

  /// The byte-level form of raw bytes `s`: each byte replaced by its character.
  std::string encode(std::string_view s) const {
    std::string out;
    out.reserve(2 * s.size());
    for (const char c : s) out += encoded_[static_cast<unsigned char>(c)];
    return out;
  }

  /// The UTF-8 of byte `b`'s character.
  const std::string& encoded(unsigned char b) const { return encoded_[b]; }

  /// Appends to `out` the bytes that byte-level text `s` stands for, and returns true; returns
  /// false (leaving `out` as it was) if `s` holds a character outside the alphabet. This is the
  /// Hugging Face ByteLevel decoder's rule, applied per token: a token with a foreign character
  /// (an added token such as "<unk>" written with other characters) is kept as its own bytes.
  bool decode(std::string_view s, std::string& out) const {
    const std::size_t size = out.size();
    for (std::size_t i = 0; i < s.size();) {
      const Utf8Char c = decode_utf8(s, i);
      if (!c.valid || c.code_point >= inverse_.size() || inverse_[c.code_point] < 0) {
        out.resize(size);
        return false;
      }
      out += static_cast<char>(inverse_[c.code_point]);
      i += c.length;
    }
    return true;
  }

 private:
  std::array<std::string, 256> encoded_;
  std::array<std::int16_t, 0x144> inverse_{};
};

/// The class of a character for the GPT-2 regex.
enum class Gpt2Class : std::uint8_t { kLetter, kNumber, kSpace, kOther };

inline Gpt2Class gpt2_class(const Utf8Char& c) noexcept {
  if (!c.valid) return Gpt2Class::kOther;  // an invalid byte: neither \s, \p{L} nor \p{N}
  if (is_white_space(c.code_point)) return Gpt2Class::kSpace;
  switch (unicode_class(c.code_point)) {
    case UnicodeClass::kLetter: return Gpt2Class::kLetter;
    case UnicodeClass::kDigit:
    case UnicodeClass::kOtherNumber: return Gpt2Class::kNumber;
    default: return Gpt2Class::kOther;
  }
}

/// The length in bytes of the match of GPT-2's pre-tokenizer regex
///
///     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
///
/// at byte `i` of `s` (`i < s.size()`), with the regex engine's semantics (leftmost
/// alternative first, greedy quantifiers, backtracking); " ?" is an ASCII space only. Every
/// character is in exactly one of \s, \p{L}, \p{N} and their complement, so there is always a
/// match of at least one character.
inline std::size_t gpt2_match_length(std::string_view s, std::size_t i) {
  const std::size_t n = s.size();
  // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, as in GPT-2)
  if (s[i] == '\'' && i + 1 < n) {
    const char a = s[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 < n) {
      const char b = s[i + 2];
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
  }
  // ` ?X+` for X = \p{L}, \p{N}, [^\s\p{L}\p{N}]: the optional space is taken when a character
  // of class X follows it; without the space, s[i] itself would be \s and match none of them.
  const std::size_t start = (s[i] == ' ' && i + 1 < n) ? i + 1 : i;
  const Utf8Char first = decode_utf8(s, start);
  const Gpt2Class cls = gpt2_class(first);
  if (cls != Gpt2Class::kSpace) {
    std::size_t end = start + first.length;
    while (end < n) {
      const Utf8Char c = decode_utf8(s, end);
      if (gpt2_class(c) != cls) break;
      end += c.length;
    }
    return end - i;
  }
  // \s+(?!\S) then \s+: the whitespace run [i, end). At the end of the text the whole run
  // matches; before a non-space character the first alternative backtracks by one character
  // (which must leave at least one), else the second takes the single character.
  std::size_t end = i;
  std::size_t last_start = i;  // where the run's last character starts
  while (end < n) {
    const Utf8Char c = decode_utf8(s, end);
    if (gpt2_class(c) != Gpt2Class::kSpace) break;
    last_start = end;
    end += c.length;
  }
  if (end == n || last_start == i) return end - i;
  return last_start - i;
}

/// Calls `emit(std::string_view word)` for each match of GPT-2's regex in `s`, in order; the
/// words concatenate to `s`.
template <typename Emit>
void gpt2_split(std::string_view s, Emit&& emit) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t length = gpt2_match_length(s, i);
    emit(s.substr(i, length));
    i += length;
  }
}

}  // namespace detail
}  // namespace circuitry
