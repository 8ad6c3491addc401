// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file error.hpp
/// Typed exceptions for everything a user can get wrong.
///
/// Three tiers of errors (see README, "Conventions"):
///  - `static_assert` for what the types can catch;
///  - `CIRCUITRY_ASSERT` (a debug assert) for internal invariants;
///  - the exceptions below for bad files, shapes, configs and arguments.
///
/// Every message starts with a stable id in brackets, then says what was found and what was
/// expected, naming the file and tensor where there is one:
///
///     [circuitry.format_error] file 'm.safetensors': tensor 'embed.W_E': data_offsets [0, 64)
///     end past the 32-byte data section
///
/// Catch `circuitry::error` for all of them, or a subclass for one kind.

#include <cassert>
#include <stdexcept>
#include <string>

#ifndef CIRCUITRY_ASSERT
/// Internal invariant check; compiled out with NDEBUG, like `assert`.
#define CIRCUITRY_ASSERT(cond) assert(cond)
#endif

namespace circuitry {

/// Base class of every exception circuitry throws. `id()` is the stable bracketed id, e.g.
/// "circuitry.format_error"; `what()` is "[id] message"; `message()` is the message alone, for
/// a caller that adds context and throws again (`token file 'x.json': ` + e.message()).
class error : public std::runtime_error {
 public:
  const std::string& id() const noexcept { return id_; }
  const std::string& message() const noexcept { return message_; }

 protected:
  error(std::string id, const std::string& message)
      : std::runtime_error("[" + id + "] " + message), id_(std::move(id)), message_(message) {}

 private:
  std::string id_;
  std::string message_;
};

/// A file could not be opened or read: missing, a directory, a FIFO, unreadable, empty.
class io_error : public error {
 public:
  explicit io_error(const std::string& message) : error("circuitry.io_error", message) {}
};

/// A file's content is malformed: bad safetensors header, bad JSON, bad offsets, unknown dtype,
/// duplicate or missing tensor, malformed token file.
class format_error : public error {
 public:
  explicit format_error(const std::string& message) : error("circuitry.format_error", message) {}
};

/// A tensor or matrix has a shape other than the one required.
class shape_error : public error {
 public:
  explicit shape_error(const std::string& message) : error("circuitry.shape_error", message) {}
};

/// A model configuration is invalid, or contradicts the weights it is used with.
class config_error : public error {
 public:
  explicit config_error(const std::string& message) : error("circuitry.config_error", message) {}
};

/// A function argument is out of its domain (token id past d_vocab, empty batch, k > n, ...).
class argument_error : public error {
 public:
  explicit argument_error(const std::string& message)
      : error("circuitry.argument_error", message) {}
};

/// A numerical procedure failed: an eigensolver or SVD did not converge, or weights hold NaN or
/// infinity.
class numerical_error : public error {
 public:
  explicit numerical_error(const std::string& message)
      : error("circuitry.numerical_error", message) {}
};

}  // namespace circuitry
