// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/safetensors_writer.hpp
/// `SafetensorsWriter` (public API, included by `circuitry/safetensors.hpp`): builds a valid
/// safetensors file in memory and writes it out.

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "circuitry/detail/safetensors_dtype.hpp"
#include "circuitry/detail/safetensors_float.hpp"
#include "circuitry/detail/safetensors_header.hpp"
#include "circuitry/error.hpp"
#include "circuitry/types.hpp"

namespace circuitry {
namespace detail {

/// Appends the entries of `m` to `out` in row-major order, encoded as the floating `dtype`
/// (F16 and BF16 rounded to nearest, ties to even; F32 from double rounded likewise).
template <typename Derived>
inline void encode_row_major(const Eigen::MatrixBase<Derived>& m, Dtype dtype,
                             std::vector<std::uint8_t>& out) {
  const std::size_t start = out.size();
  const auto rows = m.rows();
  const auto cols = m.cols();
  out.resize(start + static_cast<std::size_t>(rows * cols) * dtype_size(dtype));
  std::uint8_t* p = out.data() + start;
  auto loop = [&](auto store) {
    for (Index r = 0; r < rows; ++r) {
      for (Index c = 0; c < cols; ++c) p = store(p, static_cast<double>(m.coeff(r, c)));
    }
  };
  switch (dtype) {
    case Dtype::F64:
      loop([](std::uint8_t* q, double v) {
        store_le(q, v);
        return q + 8;
      });
      return;
    case Dtype::F32:
      loop([](std::uint8_t* q, double v) {
        store_le(q, static_cast<float>(v));
        return q + 4;
      });
      return;
    case Dtype::F16:
      loop([](std::uint8_t* q, double v) {
        store_le(q, float_to_half(v));
        return q + 2;
      });
      return;
    case Dtype::BF16:
      loop([](std::uint8_t* q, double v) {
        store_le(q, float_to_bf16(v));
        return q + 2;
      });
      return;
    default: CIRCUITRY_ASSERT(false && "encode_row_major: not a floating dtype"); return;
  }
}

}  // namespace detail

/// Builds a safetensors file: tensors are laid out in the order they are added, the header's
/// keys are sorted (nlohmann's default), and the header is padded with spaces to a multiple of
/// 8 bytes so the data section is 8-byte aligned, as the reference implementation does. The
/// same calls always give the same bytes.
///
///     circuitry::SafetensorsWriter w;
///     w.set_metadata("config", R"({"n_layers": 1})");
///     w.add("embed.W_E", W_E);                     // shape [d_vocab, d_model], F32
///     w.add("unembed.b_U", b_U, circuitry::Dtype::F16);  // a vector: shape [d_vocab]
///     w.write("model.safetensors");
class SafetensorsWriter {
 public:
  /// Sets (or replaces) `__metadata__[key]`.
  void set_metadata(std::string key, std::string value) {
    metadata_[std::move(key)] = std::move(value);
  }

  /// Adds `m` (float or double) as a floating `dtype` tensor: shape `[rows, cols]`, written
  /// row-major; a compile-time column vector (`Vector<Scalar>`) gets shape `[n]`.
  template <typename Derived>
  void add(const std::string& name, const Eigen::MatrixBase<Derived>& m, Dtype dtype = Dtype::F32) {
    CIRCUITRY_STATIC_ASSERT_SCALAR(typename Derived::Scalar);
    require_floating(name, dtype);
    std::vector<std::int64_t> shape{static_cast<std::int64_t>(m.rows())};
    if (Derived::ColsAtCompileTime != 1) shape.push_back(static_cast<std::int64_t>(m.cols()));
    std::vector<std::uint8_t> bytes;
    detail::encode_row_major(m.derived().eval(), dtype, bytes);
    push(name, dtype, std::move(shape), std::move(bytes));
  }

  /// Adds `n` equally shaped matrices as one `[n, rows, cols]` tensor (slice i is `ms[i]`).
  /// Throws argument_error for an empty list, shape_error when the shapes differ.
  template <typename Scalar>
  void add_stack(const std::string& name, const std::vector<Matrix<Scalar>>& ms,
                 Dtype dtype = Dtype::F32) {
    CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);
    require_floating(name, dtype);
    if (ms.empty()) throw argument_error(where(name) + "add_stack needs at least one matrix");
    std::vector<std::uint8_t> bytes;
    for (std::size_t i = 0; i < ms.size(); ++i) {
      if (ms[i].rows() != ms[0].rows() || ms[i].cols() != ms[0].cols()) {
        throw shape_error(where(name) + "matrix " + std::to_string(i) + " is " +
                          std::to_string(ms[i].rows()) + " x " + std::to_string(ms[i].cols()) +
                          ", expected " + std::to_string(ms[0].rows()) + " x " +
                          std::to_string(ms[0].cols()) + " like matrix 0");
      }
      detail::encode_row_major(ms[i], dtype, bytes);
    }
    push(name, dtype,
         {static_cast<std::int64_t>(ms.size()), static_cast<std::int64_t>(ms[0].rows()),
          static_cast<std::int64_t>(ms[0].cols())},
         std::move(bytes));
  }

  /// Adds integers (row-major, `shape`) as the integer or BOOL `dtype`. Throws argument_error
  /// when the count differs from the shape's or a value does not fit the dtype.
  void add_integers(const std::string& name, std::vector<std::int64_t> shape,
                    const std::vector<std::int64_t>& values, Dtype dtype = Dtype::I64) {
    if (!is_integer(dtype)) {
      throw argument_error(where(name) + "add_integers writes integer dtypes, not " +
                           to_string(dtype));
    }
    const std::size_t size = dtype_size(dtype);
    std::vector<std::uint8_t> bytes(values.size() * size);
    for (std::size_t i = 0; i < values.size(); ++i) {
      const std::int64_t v = values[i];
      if (!fits(v, dtype)) {
        throw argument_error(where(name) + "value " + std::to_string(v) + " at index " +
                             std::to_string(i) + " does not fit in " + to_string(dtype));
      }
      for (std::size_t b = 0; b < size; ++b) {  // two's complement, little-endian
        bytes[i * size + b] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(v) >> (8 * b));
      }
    }
    add_raw(name, dtype, std::move(shape), std::move(bytes));
  }

  /// Adds a tensor given as raw little-endian bytes. Throws argument_error for a negative
  /// shape entry or `bytes.size() != numel * dtype_size(dtype)`.
  void add_raw(const std::string& name, Dtype dtype, std::vector<std::int64_t> shape,
               std::vector<std::uint8_t> bytes) {
    std::uint64_t numel = 1;
    bool overflow = false;
    for (std::int64_t d : shape) {
      if (d < 0) {
        throw argument_error(where(name) + "shape " + detail::shape_string(shape) +
                             " has a negative entry");
      }
      overflow = overflow || !detail::checked_mul(numel, static_cast<std::uint64_t>(d), numel);
    }
    std::uint64_t needed = 0;
    if (overflow || !detail::checked_mul(numel, dtype_size(dtype), needed) ||
        needed != bytes.size()) {
      throw argument_error(where(name) + std::to_string(bytes.size()) + " bytes given, but " +
                           to_string(dtype) + " shape " + detail::shape_string(shape) + " needs " +
                           (overflow ? "too many" : std::to_string(needed)));
    }
    push(name, dtype, std::move(shape), std::move(bytes));
  }

  /// The whole file. Throws argument_error when a name or metadata string is not valid UTF-8.
  std::vector<std::uint8_t> bytes() const {
    nlohmann::json header = nlohmann::json::object();
    std::uint64_t offset = 0;
    for (const Entry& e : entries_) {
      header[e.name] = {{"dtype", to_string(e.dtype)},
                        {"shape", e.shape},
                        {"data_offsets", {offset, offset + e.bytes.size()}}};
      offset += e.bytes.size();
    }
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::string text;
    try {
      text = header.dump();
    } catch (const nlohmann::json::exception& e) {
      throw argument_error(std::string("SafetensorsWriter: cannot encode the header: ") + e.what());
    }
    text.append((8 - text.size() % 8) % 8, ' ');
    std::vector<std::uint8_t> out(8 + text.size());
    out.reserve(8 + text.size() + offset);
    detail::store_le(out.data(), static_cast<std::uint64_t>(text.size()));
    std::memcpy(out.data() + 8, text.data(), text.size());
    for (const Entry& e : entries_) out.insert(out.end(), e.bytes.begin(), e.bytes.end());
    return out;
  }

  /// Writes `bytes()` to `path` (replacing it); throws io_error when that fails.
  void write(const std::string& path) const {
    const std::vector<std::uint8_t> data = bytes();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) throw io_error("file '" + path + "': cannot open for writing");
    out.write(reinterpret_cast<const char*>(data.data()),
              static_cast<std::streamsize>(data.size()));
    out.close();
    if (!out) throw io_error("file '" + path + "': write failed");
  }

 private:
  struct Entry {
    std::string name;
    Dtype dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::uint8_t> bytes;
  };

  static std::string where(const std::string& name) {
    return "SafetensorsWriter: tensor '" + detail::shorten(name) + "': ";
  }

  static void require_floating(const std::string& name, Dtype dtype) {
    if (!is_floating(dtype)) {
      throw argument_error(where(name) + "add writes floating dtypes, not " + to_string(dtype) +
                           " (use add_integers or add_raw)");
    }
  }

  static bool fits(std::int64_t v, Dtype dtype) {
    switch (dtype) {
      case Dtype::I32: return v >= INT32_MIN && v <= INT32_MAX;
      case Dtype::I16: return v >= INT16_MIN && v <= INT16_MAX;
      case Dtype::I8: return v >= INT8_MIN && v <= INT8_MAX;
      case Dtype::U64: return v >= 0;
      case Dtype::U32: return v >= 0 && v <= static_cast<std::int64_t>(UINT32_MAX);
      case Dtype::U16: return v >= 0 && v <= UINT16_MAX;
      case Dtype::U8: return v >= 0 && v <= UINT8_MAX;
      case Dtype::BOOL: return v == 0 || v == 1;
      default: return true;  // I64
    }
  }

  void push(const std::string& name, Dtype dtype, std::vector<std::int64_t> shape,
            std::vector<std::uint8_t> bytes) {
    if (name == "__metadata__") {
      throw argument_error(where(name) + "the name is reserved for the metadata");
    }
    if (!names_.insert(name).second) throw argument_error(where(name) + "added twice");
    entries_.push_back(Entry{name, dtype, std::move(shape), std::move(bytes)});
  }

  std::vector<Entry> entries_;
  std::set<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace circuitry
