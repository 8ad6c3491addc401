// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/json_depth.hpp
/// The nesting depth of JSON text, measured before it is parsed. nlohmann's parser itself is
/// iterative, but serialising, copying and comparing a parsed value recurse once per level: a
/// file of a million `[` would overflow the stack the first time an error message quoted it.
/// Every JSON reader of circuitry (safetensors header, config, tokenizer.json) refuses text
/// nested deeper than `max_json_depth` before parsing it.

#include <cstddef>
#include <string>

namespace circuitry {
namespace detail {

/// Deepest JSON nesting accepted by circuitry's readers. Real files nest far less: a safetensors
/// header 3 levels, a config 1 (a TransformerLens dump 2), a tokenizer.json about 6.
constexpr int max_json_depth = 64;

/// The byte offset, in `[first, last)`, of the first `[` or `{` that opens level `max_depth + 1`,
/// or `std::string::npos` when the text nests no deeper than `max_depth`. Brackets inside strings
/// (escapes included) do not count; the text need not be valid JSON. `Byte` is a character or
/// byte type. O(size), no allocation.
template <typename Byte>
std::size_t json_too_deep_at(const Byte* first, const Byte* last, int max_depth = max_json_depth) {
  int depth = 0;
  bool in_string = false;
  for (const Byte* p = first; p != last; ++p) {
    const auto c = static_cast<unsigned char>(*p);
    if (in_string) {
      if (c == '\\') {
        if (p + 1 != last) ++p;  // skip the escaped character
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) return static_cast<std::size_t>(p - first);
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    }
  }
  return std::string::npos;
}

/// nlohmann's parse-error text `what` for circuitry's messages: without its "[json.exception.
/// parse_error.101] " prefix, and cut to about 200 characters (it quotes the offending token,
/// which in a hostile file can be megabytes long: a number of a million digits).
inline std::string json_parse_message(std::string what) {
  const auto bracket = what.find("] ");
  if (what.rfind("[json.", 0) == 0 && bracket != std::string::npos) what.erase(0, bracket + 2);
  if (what.size() > 200) {
    what.resize(197);
    what += "...";
  }
  return what;
}

/// "nests more than 64 levels deep (at byte 68": the middle of the readers' messages, which
/// close the parenthesis themselves.
inline std::string json_depth_message(std::size_t at) {
  return "nests more than " + std::to_string(max_json_depth) + " levels deep (at byte " +
         std::to_string(at);
}

}  // namespace detail
}  // namespace circuitry
