// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/safetensors_mmap.hpp
/// `MappedFile`: a read-only memory mapping of a whole regular file (POSIX `mmap`), owned RAII
/// style: moveable, not copyable, unmapped by the destructor.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <system_error>
#include <utility>

#include "circuitry/error.hpp"

namespace circuitry {
namespace detail {

/// What `mode` is, in words, for an error message ("a directory", "a FIFO", ...).
inline std::string file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

/// The message of the error number `err`, e.g. "No such file or directory".
inline std::string errno_message(int err) { return std::system_category().message(err); }

/// A read-only, private mapping of a whole regular file. The mapping stays valid until the
/// object is destroyed, whatever happens to the file descriptor (closed right after `mmap`).
/// If another process truncates the file while it is mapped, reading the lost pages raises
/// SIGBUS: that is the price of mapping, as with every mmap-based reader.
class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      unmap();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~MappedFile() { unmap(); }

  /// Maps `path`. Throws io_error, naming the file, when it does not exist, cannot be opened,
  /// is not a regular file (directory, FIFO, socket, device: checked with `stat` *before*
  /// opening, since opening a FIFO blocks until a writer appears), is empty, or cannot be
  /// mapped.
  static MappedFile open(const std::string& path) {
    const std::string where = "file '" + path + "': ";
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      const int err = errno;
      throw io_error(where + "cannot open: " + errno_message(err));
    }
    if (!S_ISREG(st.st_mode)) {
      throw io_error(where + "is " + file_kind(st.st_mode) + ", expected a regular file");
    }
    // O_NONBLOCK: should the path have become a FIFO since the stat, open must not block.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      const int err = errno;
      throw io_error(where + "cannot open: " + errno_message(err));
    }
    struct FdGuard {
      int fd;
      ~FdGuard() { ::close(fd); }
    } guard{fd};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      throw io_error(where + "cannot stat: " + errno_message(err));
    }
    if (!S_ISREG(st.st_mode)) {
      throw io_error(where + "is " + file_kind(st.st_mode) + ", expected a regular file");
    }
    if (st.st_size <= 0) {
      throw io_error(where + "is empty, expected a safetensors file (an 8-byte header length, " +
                     "a JSON header, then the tensor data)");
    }
    if (static_cast<std::uint64_t>(st.st_size) > std::numeric_limits<std::size_t>::max()) {
      throw io_error(where + "is too large to map on this platform");
    }
    const auto size = static_cast<std::size_t>(st.st_size);
    void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      throw io_error(where + "cannot memory-map: " + errno_message(err));
    }
    MappedFile mapped;
    mapped.data_ = static_cast<const std::uint8_t*>(addr);
    mapped.size_ = size;
    return mapped;
  }

  const std::uint8_t* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

 private:
  void unmap() noexcept {
    if (data_ != nullptr) {
      // const_cast: munmap takes void*; the mapping itself is read-only and never written.
      ::munmap(const_cast<std::uint8_t*>(data_), size_);
      data_ = nullptr;
      size_ = 0;
    }
  }

  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace detail
}  // namespace circuitry
