// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/prefault.hpp
/// `prefault`: asks the operating system to back a freshly allocated buffer now, in one call,
/// rather than one page fault per 4 KB page on first touch. The forward pass and the path
/// expansion write a few hundred MB of new matrices (logits, patterns, path terms); in virtual
/// machines a page fault can cost 10-20 us, which made them a tenth of the report's time.
///
/// On Linux: madvise(MADV_HUGEPAGE) on the buffer's whole 2 MB pages (transparent huge pages in
/// "madvise" mode, the common default) and madvise(MADV_POPULATE_WRITE, Linux 5.14) on its whole
/// 4 KB pages. Both are hints: errors are ignored, contents are unchanged (call it before writing,
/// to save the faults), and elsewhere it does nothing.

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "circuitry/detail/simd_dispatch.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace circuitry {
namespace detail {

/// See the file comment. Buffers under 64 KB are left alone.
inline void prefault_range(void* data, std::size_t bytes) {
#if defined(__linux__)
  constexpr std::size_t kMin = std::size_t(64) << 10, kHuge = std::size_t(2) << 20;
  if (data == nullptr || bytes < kMin) return;
  static const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(data), end = begin + bytes;
  const auto advise = [&](std::size_t unit, int advice) {
    const std::uintptr_t b = (begin + unit - 1) / unit * unit, e = end / unit * unit;
    // The aligned address as an offset into `data` (no integer-to-pointer cast).
    if (e > b) (void)madvise(static_cast<char*>(data) + (b - begin), e - b, advice);
  };
#ifdef MADV_HUGEPAGE
  advise(kHuge, MADV_HUGEPAGE);
#endif
#ifdef MADV_POPULATE_WRITE
  advise(page, MADV_POPULATE_WRITE);
#else
  advise(page, 23);  // MADV_POPULATE_WRITE, for C libraries older than the kernel
#endif
#else
  (void)data;
  (void)bytes;
#endif
}

/// prefault_range, split over the threads for buffers over 16 MB (the kernel zeroes the pages:
/// ~10 ms per 100 MB and thread).
inline void prefault(void* data, std::size_t bytes) {
  constexpr std::size_t kPiece = std::size_t(8) << 20;  // a whole number of huge pages
  if (bytes <= 2 * kPiece || max_threads() == 1) {
    prefault_range(data, bytes);
    return;
  }
  const auto begin = reinterpret_cast<std::uintptr_t>(data);
  const std::uintptr_t first = (begin + kPiece - 1) / kPiece * kPiece, end = begin + bytes;
  const long pieces = static_cast<long>((end - first + kPiece - 1) / kPiece);
  prefault_range(data, first - begin);
  CIRCUITRY_OMP_PARALLEL_FOR
  for (long i = 0; i < pieces; ++i) {
    const std::uintptr_t b = first + static_cast<std::uintptr_t>(i) * kPiece;
    prefault_range(static_cast<char*>(data) + (b - begin),
                   std::min<std::uintptr_t>(kPiece, end - b));
  }
}

/// prefault of a matrix's storage.
template <typename Derived>
void prefault(Eigen::PlainObjectBase<Derived>& m) {
  prefault(m.data(), static_cast<std::size_t>(m.size()) * sizeof(typename Derived::Scalar));
}

}  // namespace detail
}  // namespace circuitry
