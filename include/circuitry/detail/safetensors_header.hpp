// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/safetensors_header.hpp
/// `TensorInfo` (public) and the validating parser of a safetensors header (detail). Every check
/// happens here, before any tensor data is read; see `SafetensorsFile` for the list.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "circuitry/detail/json_depth.hpp"
#include "circuitry/detail/safetensors_dtype.hpp"
#include "circuitry/detail/safetensors_float.hpp"
#include "circuitry/error.hpp"

namespace circuitry {

/// One tensor's entry in a safetensors header. `begin` and `end` are byte offsets relative to
/// the start of the data section (the byte right after the header), `[begin, end)`; the
/// elements are stored row-major (C order), little-endian.
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> shape;  ///< e.g. {4096, 64}; {} for a scalar
  std::uint64_t begin = 0;          ///< first byte, relative to the data section
  std::uint64_t end = 0;            ///< one past the last byte

  /// Number of elements: the product of `shape` (1 for a scalar, shape []).
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    return n;
  }
  /// Size of the data in bytes, `end - begin` (== numel() * dtype_size(dtype) once validated).
  std::uint64_t nbytes() const { return end - begin; }
};

namespace detail {

/// Largest header accepted, in bytes: the limit of the reference (Rust) implementation.
constexpr std::uint64_t max_header_size = 100000000;
/// Deepest JSON nesting accepted in a header; a valid header nests 3 deep (object, entry, shape).
constexpr int max_header_depth = max_json_depth;

/// "[4096, 64]"
template <typename Int>
inline std::string shape_string(const std::vector<Int>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    s += (i == 0 ? "" : ", ") + std::to_string(shape[i]);
  }
  return s + "]";
}

/// "[0, 16)": a byte range.
inline std::string range_string(std::uint64_t begin, std::uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

/// `a * b` into `out`; false when the product overflows 64 bits.
inline bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}

/// The header, validated: metadata, and the tensors sorted by `begin` (then `end`, then name).
struct ParsedHeader {
  std::map<std::string, std::string> metadata;
  std::vector<TensorInfo> tensors;
  std::uint64_t data_start = 0;  ///< offset of the data section in the file: 8 + header length
  std::uint64_t data_size = 0;   ///< bytes from data_start to the end of the file
};

/// Throws format_error when the JSON text `[first, last)` nests deeper than max_header_depth,
/// so that no parser ever recurses on a nesting bomb. Brackets inside strings do not count.
inline void check_json_depth(const std::uint8_t* first, const std::uint8_t* last,
                             const std::string& where) {
  const std::size_t at = json_too_deep_at(first, last, max_header_depth);
  if (at != std::string::npos) {
    throw format_error(where + "header " + json_depth_message(at) +
                       " of the header), expected 3 levels");
  }
}

/// Parses JSON `[first, last)`, rejecting a key that appears twice in the same object (nlohmann
/// would silently keep the last one) and rethrowing every parse error as format_error.
inline nlohmann::json parse_json_unique_keys(const std::uint8_t* first, const std::uint8_t* last,
                                             const std::string& where) {
  using json = nlohmann::json;
  std::vector<std::set<std::string>> keys;  // one set per object being parsed
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (event == json::parse_event_t::key && !keys.empty()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(key).second) {
        const bool tensor = keys.size() == 1 && key != "__metadata__";
        throw format_error(where + "duplicate " + (tensor ? "tensor '" : "key '") + shorten(key) +
                           "' in the header");
      }
    }
    return true;
  };
  try {
    return json::parse(first, last, callback);
  } catch (const json::exception& e) {
    throw format_error(where + "header is not valid JSON: " + json_parse_message(e.what()));
  }
}

/// A JSON value that must be a non-negative integer (`what` names it, e.g. "shape[1]").
inline std::uint64_t json_to_u64(const nlohmann::json& v, const std::string& where,
                                 const std::string& what) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  throw format_error(where + what + " is " + shorten(v.dump()) +
                     ", expected a non-negative integer");
}

/// Validates one tensor entry `entry` named `name`, whose data must lie in `data_size` bytes.
inline TensorInfo parse_tensor_entry(const std::string& name, const nlohmann::json& entry,
                                     std::uint64_t data_size, const std::string& file) {
  const std::string where = file + "tensor '" + shorten(name) + "': ";
  if (!entry.is_object()) {
    throw format_error(where + "entry is " + entry.type_name() +
                       ", expected an object with dtype, shape and data_offsets");
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field)) {
      throw format_error(where + "entry has no '" + field +
                         "', expected an object with dtype, shape and data_offsets");
    }
  }
  TensorInfo info;
  info.name = name;
  const auto& dtype = entry.at("dtype");
  if (!dtype.is_string()) {
    throw format_error(where + "dtype is " + dtype.type_name() + ", expected a string");
  }
  info.dtype = parse_dtype(dtype.get<std::string>(), where.substr(0, where.size() - 2));

  const auto& shape = entry.at("shape");
  if (!shape.is_array()) {
    throw format_error(where + "shape is " + shape.type_name() +
                       ", expected an array of non-negative integers");
  }
  std::uint64_t numel = 1;
  bool overflow = false;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    const std::uint64_t d = json_to_u64(shape[i], where, "shape[" + std::to_string(i) + "]");
    if (d > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      throw format_error(where + "shape[" + std::to_string(i) + "] is " + std::to_string(d) +
                         ", larger than 2^63 - 1");
    }
    info.shape.push_back(static_cast<std::int64_t>(d));
    overflow = overflow || !checked_mul(numel, d, numel);
  }
  if (std::find(info.shape.begin(), info.shape.end(), 0) != info.shape.end()) {
    numel = 0;  // a zero dimension empties the tensor, however large the others
    overflow = false;
  }
  if (overflow) {
    throw format_error(where + "shape " + shape_string(info.shape) +
                       " has more elements than 64 bits can count");
  }

  const auto& offsets = entry.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2) {
    throw format_error(where + "data_offsets is " + shorten(offsets.dump()) +
                       ", expected [begin, end], two non-negative integers");
  }
  info.begin = json_to_u64(offsets[0], where, "data_offsets[0]");
  info.end = json_to_u64(offsets[1], where, "data_offsets[1]");
  const std::string range = "data_offsets " + range_string(info.begin, info.end);
  if (info.begin > info.end) throw format_error(where + range + " begin after end");
  if (info.end > data_size) {
    throw format_error(where + range + " end past the " + std::to_string(data_size) +
                       "-byte data section");
  }
  std::uint64_t needed = 0;
  const bool fits = checked_mul(numel, dtype_size(info.dtype), needed);
  if (!fits || needed != info.nbytes()) {
    throw format_error(where + range + " hold " + std::to_string(info.nbytes()) +
                       " bytes, but shape " + shape_string(info.shape) + " of " +
                       to_string(info.dtype) + " needs " +
                       (fits ? std::to_string(needed) : "more than 2^64"));
  }
  return info;
}

/// Validates the whole file `[bytes, bytes + size)` named `path` and returns its header.
inline ParsedHeader parse_header(const std::uint8_t* bytes, std::size_t size,
                                 const std::string& path) {
  const std::string file = "file '" + path + "': ";
  if (size == 0) {
    throw io_error(file + "is empty, expected a safetensors file (an 8-byte header length, " +
                   "a JSON header, then the tensor data)");
  }
  if (size < 8) {
    throw format_error(file + "is " + std::to_string(size) +
                       " bytes long, shorter than the 8-byte header length");
  }
  const auto n = load_le<std::uint64_t>(bytes);
  if (n > max_header_size) {
    throw format_error(file + "header length " + std::to_string(n) + " exceeds the limit of " +
                       std::to_string(max_header_size) + " bytes");
  }
  if (n > size - 8) {
    throw format_error(file + "header length " + std::to_string(n) + " exceeds the " +
                       std::to_string(size - 8) + " bytes after the 8-byte length");
  }
  const std::uint8_t* first = bytes + 8;
  const std::uint8_t* last = first + n;
  check_json_depth(first, last, file);
  const nlohmann::json header = parse_json_unique_keys(first, last, file);
  if (!header.is_object()) {
    throw format_error(file + "header is " + std::string(header.type_name()) +
                       ", expected an object mapping tensor names to entries");
  }

  ParsedHeader parsed;
  parsed.data_start = 8 + n;
  parsed.data_size = size - 8 - n;
  for (const auto& item : header.items()) {
    if (item.key() == "__metadata__") {
      const auto& meta = item.value();
      if (!meta.is_object()) {
        throw format_error(file + "__metadata__ is " + meta.type_name() +
                           ", expected an object of strings");
      }
      for (const auto& kv : meta.items()) {
        if (!kv.value().is_string()) {
          throw format_error(file + "__metadata__ key '" + shorten(kv.key()) + "' holds " +
                             kv.value().type_name() + ", expected a string");
        }
        parsed.metadata.emplace(kv.key(), kv.value().get<std::string>());
      }
      continue;
    }
    parsed.tensors.push_back(parse_tensor_entry(item.key(), item.value(), parsed.data_size, file));
  }

  std::sort(parsed.tensors.begin(), parsed.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              if (a.begin != b.begin) return a.begin < b.begin;
              if (a.end != b.end) return a.end < b.end;
              return a.name < b.name;
            });
  const TensorInfo* previous = nullptr;  // the non-empty tensor ending last so far
  for (const TensorInfo& t : parsed.tensors) {
    if (t.begin == t.end) continue;  // an empty range overlaps nothing
    if (previous != nullptr && t.begin < previous->end) {
      throw format_error(file + "tensors '" + shorten(previous->name) + "' at " +
                         range_string(previous->begin, previous->end) + " and '" + shorten(t.name) +
                         "' at " + range_string(t.begin, t.end) + " overlap");
    }
    previous = &t;
  }
  return parsed;
}

}  // namespace detail
}  // namespace circuitry
