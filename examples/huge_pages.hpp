// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file examples/huge_pages.hpp
/// `use_huge_pages(argv)`: a program's first call in main, so that all of its heap is backed by
/// transparent huge pages (2 MB) rather than 4 KB pages.
///
/// Why: a report on data allocates a few hundred MB of fresh matrices (logits, patterns, path
/// terms, Eigen's temporaries). Each 4 KB page faults on first touch, and in a virtual machine a
/// fault costs 10-20 us: on this project's machine that was a fifth of `circuitry-report
/// --only top --tokens` on attn-only-2l (1.08-1.13 s median without huge pages against 0.86 s
/// with them, farm-bench; README "Performance"). circuitry's own large buffers are advised
/// already (detail/prefault.hpp), but Eigen's temporaries come from malloc.
///
/// How: glibc (2.35 and later) advises every region malloc maps (madvise MADV_HUGEPAGE) when the
/// tunable glibc.malloc.hugetlb=1 is set, and it reads tunables only at start-up. So when
/// GLIBC_TUNABLES does not mention glibc.malloc.hugetlb, this adds it and re-executes the program
/// (/proc/self/exe, same arguments); the second start finds it set and returns at once. With it,
/// unless the user set them, glibc.malloc.mmap_max=0 and glibc.malloc.trim_threshold=1 GiB: large
/// blocks then come from the heap and freed ones stay there for the next allocation instead of
/// going back to the kernel (and faulting in again): another ~4% of an attn-only-2l report with
/// --tokens (median paired wall ratio 0.956, 20 runs), at the same peak memory. A user who sets
/// glibc.malloc.hugetlb themselves (=0 to turn this off) is left alone. If the exec fails the
/// program simply goes on as it is; on systems other than Linux with glibc, or with transparent
/// huge pages disabled ("never"), it changes nothing. Results do not depend on it: only where
/// the memory comes from.

#if defined(__linux__) && defined(__GLIBC__)
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#endif

namespace circuitry_examples {

inline void use_huge_pages([[maybe_unused]] char** argv) {
#if defined(__linux__) && defined(__GLIBC__)
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.hugetlb") != nullptr) return;
  std::string value = tunables != nullptr ? tunables : "";
  for (const char* tunable : {"glibc.malloc.hugetlb=1", "glibc.malloc.mmap_max=0",
                              "glibc.malloc.trim_threshold=1073741824"}) {
    const std::string name(tunable, std::strchr(tunable, '=') + 1);
    if (value.find(name) != std::string::npos) continue;
    value += (value.empty() ? "" : ":") + std::string(tunable);
  }
  if (setenv("GLIBC_TUNABLES", value.c_str(), 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Only reached when the exec failed: go on as we are, without the marker in the environment
  // of programs we might start.
  if (tunables != nullptr) {
    setenv("GLIBC_TUNABLES", tunables, 1);
  } else {
    unsetenv("GLIBC_TUNABLES");
  }
#endif
}

}  // namespace circuitry_examples
