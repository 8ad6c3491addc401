// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file safetensors.hpp
/// Reading and writing safetensors files (https://github.com/huggingface/safetensors): the
/// format the model weights come in.
///
/// Layout: an 8-byte little-endian `u64` N, N bytes of UTF-8 JSON (the header), then the data
/// section. The header maps each tensor name to `{"dtype": "F32", "shape": [4096, 64],
/// "data_offsets": [begin, end]}` (byte offsets relative to the start of the data section), plus
/// an optional `"__metadata__": {string: string}`. Elements are row-major (C order) and
/// little-endian.
///
/// Conventions:
///  - A tensor of shape `[rows, cols]` becomes an Eigen `Matrix<Scalar>` (column-major) with
///    the same `(r, c)` entries: `matrix(name, rows, cols)(r, c)` is element `r * cols + c` of
///    `values(name)`. A `[n, rows, cols]` tensor is `n` such matrices (`matrices`), e.g. the
///    per-head `W_Q` of shape `[n_heads, d_model, d_head]`; in the paper's row-vector
///    convention a query is `x W_Q[h]`.
///  - Floating dtypes (F64, F32, F16, BF16) convert to float or double: exactly, except F64
///    read as float, which rounds to nearest. Integer dtypes read as `std::int64_t`.
///  - Every reader checks the shape exactly and throws shape_error naming file, tensor, the
///    shape found and the shape expected.
///
///     auto file = circuitry::SafetensorsFile::open("attn-only-1l.safetensors");
///     circuitry::Matrix<float> W_E = file.matrix<float>("embed.W_E", 4096, 256);
///     std::vector<circuitry::Matrix<float>> W_Q =
///         file.matrices<float>("blocks.0.attn.W_Q", 8, 256, 32);
///
/// `SafetensorsWriter` (in detail/safetensors_writer.hpp, included here) writes such files.

#include <Eigen/Core>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "circuitry/detail/safetensors_convert.hpp"
#include "circuitry/detail/safetensors_dtype.hpp"
#include "circuitry/detail/safetensors_header.hpp"
#include "circuitry/detail/safetensors_mmap.hpp"
#include "circuitry/detail/safetensors_writer.hpp"
#include "circuitry/error.hpp"
#include "circuitry/types.hpp"

namespace circuitry {

/// A validated, read-only safetensors file: memory-mapped (`open`) or held in memory
/// (`from_bytes`). Moveable, not copyable.
///
/// Everything is checked when the file is opened, before any tensor data is read; a bad file
/// throws a typed exception whose message names the file (and tensor), what was found and what
/// was expected:
///  - io_error: missing, unreadable, a directory, FIFO, socket or device, empty;
///  - format_error: shorter than 8 bytes; header length over 100 MB (the reference
///    implementation's limit) or past the end of the file; header not valid JSON, nested more
///    than 64 deep, not an object, or with a key twice in one object (a duplicate tensor);
///    an entry that is not `{dtype, shape, data_offsets}`; an unknown dtype; a shape entry or
///    offset that is not a non-negative integer; a shape whose element count overflows 64 bits;
///    `begin > end`; `end` past the data section; `end - begin != numel * dtype_size`; two
///    tensors whose byte ranges overlap; `__metadata__` not an object of strings.
/// Gaps between tensors and bytes after the last one are allowed and ignored (the reference
/// implementation rejects them; nothing here depends on their absence).
///
/// All member functions are const after construction and safe to call from several threads.
class SafetensorsFile {
 public:
  /// Memory-maps `path` read-only and validates it.
  static SafetensorsFile open(const std::string& path) {
    detail::MappedFile mapped = detail::MappedFile::open(path);
    detail::ParsedHeader header = detail::parse_header(mapped.data(), mapped.size(), path);
    return SafetensorsFile(path, std::move(mapped), {}, std::move(header));
  }

  /// Validates and keeps `bytes`, a whole file in memory; `name` stands for the path in error
  /// messages. For tests, fuzzing, and data that never touched a disk.
  static SafetensorsFile from_bytes(std::vector<std::uint8_t> bytes,
                                    std::string name = "<memory>") {
    detail::ParsedHeader header = detail::parse_header(bytes.data(), bytes.size(), name);
    return SafetensorsFile(std::move(name), {}, std::move(bytes), std::move(header));
  }

  /// The path given to `open`, or the name given to `from_bytes`.
  const std::string& path() const noexcept { return path_; }
  /// The `__metadata__` object (empty when the header has none).
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  /// Every tensor, in data-offset order (the order of their bytes in the file).
  const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }
  /// Every tensor name, in data-offset order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const TensorInfo& t : tensors_) out.push_back(t.name);
    return out;
  }
  /// Number of tensors.
  std::size_t size() const noexcept { return tensors_.size(); }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }

  /// The entry of tensor `name`; throws format_error "file 'P': tensor 'X' not found".
  const TensorInfo& info(const std::string& name) const {
    const auto it = index_.find(name);
    if (it == index_.end()) throw format_error(where(name) + " not found");
    return tensors_[it->second];
  }

  /// Throws shape_error unless tensor `name` has exactly the shape `expected`:
  /// "file 'm.safetensors': tensor 'embed.W_E' has shape [4096, 64], expected [4096, 256]".
  void check_shape(const std::string& name, const std::vector<std::int64_t>& expected) const {
    const TensorInfo& t = info(name);
    if (t.shape != expected) {
      throw shape_error(where(name) + " has shape " + detail::shape_string(t.shape) +
                        ", expected " + detail::shape_string(expected));
    }
  }

  /// The `[rows, cols]` floating tensor `name` as a `rows` x `cols` matrix, entry (r, c) being
  /// element r * cols + c of the row-major data.
  template <typename Scalar>
  Matrix<Scalar> matrix(const std::string& name, Index rows, Index cols) const {
    CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);
    const TensorInfo& t = floating(name);
    check_shape(name, {rows, cols});
    Matrix<Scalar> m(rows, cols);
    detail::convert_transposed(t.dtype, data(t), rows, cols, m.data());
    return m;
  }

  /// The `[n]` floating tensor `name` as a vector.
  template <typename Scalar>
  Vector<Scalar> vector(const std::string& name, Index n) const {
    CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);
    const TensorInfo& t = floating(name);
    check_shape(name, {n});
    Vector<Scalar> v(n);
    detail::convert_flat(t.dtype, data(t), static_cast<std::size_t>(n), v.data());
    return v;
  }

  /// The `[n, rows, cols]` floating tensor `name` as `n` matrices: `result[i](r, c)` is
  /// element `(i * rows + r) * cols + c` of the row-major data.
  template <typename Scalar>
  std::vector<Matrix<Scalar>> matrices(const std::string& name, Index n, Index rows,
                                       Index cols) const {
    CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);
    const TensorInfo& t = floating(name);
    check_shape(name, {n, rows, cols});
    const std::size_t slice_bytes =
        static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols) * dtype_size(t.dtype);
    std::vector<Matrix<Scalar>> out;
    out.reserve(static_cast<std::size_t>(n));
    for (Index i = 0; i < n; ++i) {
      out.emplace_back(rows, cols);
      detail::convert_transposed(t.dtype, data(t) + static_cast<std::size_t>(i) * slice_bytes, rows,
                                 cols, out.back().data());
    }
    return out;
  }

  /// All elements of the floating tensor `name`, of any shape, flat in row-major order.
  template <typename Scalar>
  std::vector<Scalar> values(const std::string& name) const {
    CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);
    const TensorInfo& t = floating(name);
    std::vector<Scalar> out(count(t));
    detail::convert_flat(t.dtype, data(t), out.size(), out.data());
    return out;
  }

  /// All elements of the integer (I8..I64, U8..U64) or BOOL (0 or 1) tensor `name`, flat in
  /// row-major order. Throws format_error for a floating tensor or a U64 above 2^63 - 1.
  std::vector<std::int64_t> integers(const std::string& name) const {
    const TensorInfo& t = info(name);
    if (!is_integer(t.dtype)) {
      throw format_error(where(name) + " has dtype " + to_string(t.dtype) +
                         ", expected an integer dtype (I64, I32, I16, I8, U64, U32, U16, U8, "
                         "BOOL)");
    }
    std::vector<std::int64_t> out(count(t));
    detail::convert_integers(t.dtype, data(t), out.size(), out.data(), where(name) + ": ");
    return out;
  }

  /// Throws numerical_error if the floating tensor `name` holds a NaN or an infinity, naming
  /// the first one and its index: "file 'P': tensor 'X' holds nan at index [0, 5] (flat 5)".
  void check_finite(const std::string& name) const {
    const TensorInfo& t = floating(name);
    const std::size_t n = count(t);
    const std::size_t i = detail::find_non_finite(t.dtype, data(t), n);
    if (i == n) return;
    double bad = 0;
    detail::convert_flat(t.dtype, data(t) + i * dtype_size(t.dtype), 1, &bad);
    std::vector<std::uint64_t> index(t.shape.size());
    std::uint64_t rest = i;
    for (std::size_t k = index.size(); k-- > 0;) {
      const auto d = static_cast<std::uint64_t>(t.shape[k]);
      index[k] = rest % d;
      rest /= d;
    }
    throw numerical_error(where(name) + " holds " +
                          (std::isnan(bad) ? "nan" : (bad > 0 ? "inf" : "-inf")) + " at index " +
                          detail::shape_string(index) + " (flat " + std::to_string(i) + ")");
  }

  /// The raw little-endian bytes of tensor `t` (`t.nbytes()` of them, not necessarily aligned).
  const std::uint8_t* data(const TensorInfo& t) const {
    const std::uint8_t* base = mapping_.data() != nullptr ? mapping_.data() : buffer_.data();
    return base + data_start_ + t.begin;
  }

 private:
  SafetensorsFile(std::string path, detail::MappedFile mapping, std::vector<std::uint8_t> buffer,
                  detail::ParsedHeader&& header)
      : path_(std::move(path)),
        mapping_(std::move(mapping)),
        buffer_(std::move(buffer)),
        metadata_(std::move(header.metadata)),
        tensors_(std::move(header.tensors)),
        data_start_(header.data_start) {
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  }

  std::string where(const std::string& name) const {
    return "file '" + path_ + "': tensor '" + detail::shorten(name) + "'";
  }

  /// The entry of `name`, which must have a floating dtype (else format_error).
  const TensorInfo& floating(const std::string& name) const {
    const TensorInfo& t = info(name);
    if (!is_floating(t.dtype)) {
      throw format_error(where(name) + " has dtype " + to_string(t.dtype) +
                         ", expected a floating dtype (F64, F32, F16, BF16)");
    }
    return t;
  }

  static std::size_t count(const TensorInfo& t) {
    return static_cast<std::size_t>(t.nbytes() / dtype_size(t.dtype));
  }

  std::string path_;
  detail::MappedFile mapping_;
  std::vector<std::uint8_t> buffer_;  // from_bytes only; a moved vector keeps its storage
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::uint64_t data_start_ = 0;
};

}  // namespace circuitry
