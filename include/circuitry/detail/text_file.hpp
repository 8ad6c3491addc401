// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/text_file.hpp
/// Reading a small text file (a JSON config, a token file) whole, with the io_errors of
/// README's "Robustness": a path that is missing, unreadable, a directory or a FIFO is named
/// in the message, and a FIFO is refused before it is opened (opening it would block until a
/// writer came).

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "circuitry/error.hpp"

namespace circuitry::detail {

/// The content of the regular file `path`, called `kind` in messages ("config file", "token
/// file"). io_error:
///  - "cannot open {kind} '{path}': {reason}" when it is missing or cannot be opened;
///  - "{kind} '{path}' is a directory" (or "is not a regular file") ", expected {expected}";
///  - "cannot read {kind} '{path}'" when reading fails part-way.
inline std::string read_regular_file(const std::string& path, const std::string& kind,
                                     const std::string& expected) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    throw io_error("cannot open " + kind + " '" + path + "': " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    throw io_error(kind + " '" + path + "' is " +
                   (S_ISDIR(st.st_mode) ? "a directory" : "not a regular file") + ", expected " +
                   expected);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    throw io_error("cannot open " + kind + " '" + path + "': " + std::strerror(err));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw io_error("cannot read " + kind + " '" + path + "'");
  return text.str();
}

}  // namespace circuitry::detail
