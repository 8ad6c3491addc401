// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/svg_text.hpp
/// Text for svg_canvas.hpp: XML escaping that survives invalid UTF-8, visible whitespace for token
/// text, and numbers written the same way on every platform.

#include <cmath>
#include <cstdio>
#include <string>
#include <string_view>

namespace circuitry::detail {

/// Length of the valid UTF-8 sequence starting at s[i] (1 to 4), or 0 when it is not valid
/// (overlong forms, surrogates and code points past U+10FFFF are not valid).
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b = byte(i);
  if (b < 0x80) return 1;
  std::size_t n = 0;
  unsigned int cp = 0;
  if ((b & 0xE0) == 0xC0) {
    n = 2, cp = b & 0x1Fu;
  } else if ((b & 0xF0) == 0xE0) {
    n = 3, cp = b & 0x0Fu;
  } else if ((b & 0xF8) == 0xF0) {
    n = 4, cp = b & 0x07u;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3Fu);
  }
  const unsigned int min[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

inline std::string hex_byte(unsigned char b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\x%02X", static_cast<unsigned int>(b));
  return buf;
}

/// `s` escaped for XML text and attribute values; invalid UTF-8 bytes and control characters
/// (which XML 1.0 forbids) become "\xNN".
inline std::string svg_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence_length(s, i);
    const unsigned char b = static_cast<unsigned char>(s[i]);
    if (n == 0 || (n == 1 && b < 0x20 && b != '\t' && b != '\n') || b == 0x7F) {
      out += hex_byte(b);
      ++i;
      continue;
    }
    switch (b) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out.append(s.substr(i, n));
    }
    i += n;
  }
  return out;
}

/// Token text with its whitespace made visible: ' ' -> "·", '\n' -> "↵", '\t' -> "→",
/// '\r' -> "␍"; other control bytes and invalid UTF-8 -> "\xNN". Not yet XML-escaped.
inline std::string svg_visible(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    const std::size_t n = utf8_sequence_length(s, i);
    if (b == ' ') {
      out += "\xC2\xB7";
    } else if (b == '\n') {
      out += "\xE2\x86\xB5";
    } else if (b == '\t') {
      out += "\xE2\x86\x92";
    } else if (b == '\r') {
      out += "\xE2\x90\x8D";
    } else if (n == 0 || b < 0x20 || b == 0x7F) {
      out += hex_byte(b);
    } else {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    ++i;
  }
  return out;
}

/// A coordinate: fixed point with 2 decimals, no trailing zeros ("12.5", "-3", "0").
inline std::string svg_number(double v) {
  if (!std::isfinite(v)) return "0";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  std::string s = buf;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  if (s == "-0") s = "0";
  return s;
}

/// A value for a label: `digits` significant digits, %g style ("0.25", "1.2e-05", "NaN").
inline std::string svg_label(double v, int digits = 3) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v == 0 ? 0.0 : v);
  return buf;
}

}  // namespace circuitry::detail
