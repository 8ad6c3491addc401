// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/simd_gemm.hpp
/// Matrix products C = A B (column-major) with AVX-512 and AVX2+FMA register-blocked kernels,
/// chosen at run time (detail/simd_dispatch.hpp), and Eigen's product otherwise. Eigen compiles
/// to SSE2 here (the library sets no -march flags); these kernels are 4-8x faster where the
/// processor has wider vectors. For PathExpansion::losses (many products [R rows, r <= d_model]
/// x [r, a chunk of d_vocab]), the logits of the forward pass and PathExpansion's readouts.
///
/// A micro-tile of C, MV vectors of rows x NR columns, stays in registers while the inner
/// dimension streams past: per step MV loads of A, NR broadcasts of B and MV NR FMAs. Rows that
/// do not fill the last vector are loaded and stored with masks, and columns left over after
/// the last whole NR are done one at a time, so any shape works; the sums are in a fixed order
/// (p = 0, 1, ...), so every entry is the same whichever tile computes it.

#include <Eigen/Core>
#include <algorithm>
#include <type_traits>
#include <vector>

#include "circuitry/detail/prefault.hpp"
#include "circuitry/detail/simd_dispatch.hpp"
#include "circuitry/types.hpp"

namespace circuitry {
namespace detail {

#if CIRCUITRY_SIMD_DISPATCH
/// Overloads over the vector type for the AVX-512 kernels: 8 doubles or 16 floats per vector.
struct Avx512Ops {
  CIRCUITRY_TARGET_AVX512 static __m512d zero(const double*) { return _mm512_setzero_pd(); }
  CIRCUITRY_TARGET_AVX512 static __m512 zero(const float*) { return _mm512_setzero_ps(); }
  CIRCUITRY_TARGET_AVX512 static __m512d load(const double* p) { return _mm512_loadu_pd(p); }
  CIRCUITRY_TARGET_AVX512 static __m512 load(const float* p) { return _mm512_loadu_ps(p); }
  CIRCUITRY_TARGET_AVX512 static __m512d load(const double* p, int n) {  // first n, zeros
    return _mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1), p);
  }
  CIRCUITRY_TARGET_AVX512 static __m512 load(const float* p, int n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
  }
  CIRCUITRY_TARGET_AVX512 static void store(double* p, __m512d v) { _mm512_storeu_pd(p, v); }
  CIRCUITRY_TARGET_AVX512 static void store(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
  CIRCUITRY_TARGET_AVX512 static void store(double* p, __m512d v, int n) {
    _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1), v);
  }
  CIRCUITRY_TARGET_AVX512 static void store(float* p, __m512 v, int n) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
  }
  CIRCUITRY_TARGET_AVX512 static __m512d set1(const double* p) { return _mm512_set1_pd(*p); }
  CIRCUITRY_TARGET_AVX512 static __m512 set1(const float* p) { return _mm512_set1_ps(*p); }
  CIRCUITRY_TARGET_AVX512 static __m512d add(__m512d a, __m512d b) { return _mm512_add_pd(a, b); }
  CIRCUITRY_TARGET_AVX512 static __m512 add(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
  CIRCUITRY_TARGET_AVX512 static __m512d fma(__m512d a, __m512d b, __m512d c) {
    return _mm512_fmadd_pd(a, b, c);
  }
  CIRCUITRY_TARGET_AVX512 static __m512 fma(__m512 a, __m512 b, __m512 c) {
    return _mm512_fmadd_ps(a, b, c);
  }
};

/// The same for the AVX2 kernels: 4 doubles or 8 floats per vector.
struct Avx2Ops {
  CIRCUITRY_TARGET_AVX2 static __m256d zero(const double*) { return _mm256_setzero_pd(); }
  CIRCUITRY_TARGET_AVX2 static __m256 zero(const float*) { return _mm256_setzero_ps(); }
  CIRCUITRY_TARGET_AVX2 static __m256d load(const double* p) { return _mm256_loadu_pd(p); }
  CIRCUITRY_TARGET_AVX2 static __m256 load(const float* p) { return _mm256_loadu_ps(p); }
  CIRCUITRY_TARGET_AVX2 static __m256i mask64(int n) {  // lanes < n all ones
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  CIRCUITRY_TARGET_AVX2 static __m256i mask32(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  CIRCUITRY_TARGET_AVX2 static __m256d load(const double* p, int n) {
    return _mm256_maskload_pd(p, mask64(n));
  }
  CIRCUITRY_TARGET_AVX2 static __m256 load(const float* p, int n) {
    return _mm256_maskload_ps(p, mask32(n));
  }
  CIRCUITRY_TARGET_AVX2 static void store(double* p, __m256d v) { _mm256_storeu_pd(p, v); }
  CIRCUITRY_TARGET_AVX2 static void store(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
  CIRCUITRY_TARGET_AVX2 static void store(double* p, __m256d v, int n) {
    _mm256_maskstore_pd(p, mask64(n), v);
  }
  CIRCUITRY_TARGET_AVX2 static void store(float* p, __m256 v, int n) {
    _mm256_maskstore_ps(p, mask32(n), v);
  }
  CIRCUITRY_TARGET_AVX2 static __m256d set1(const double* p) { return _mm256_broadcast_sd(p); }
  CIRCUITRY_TARGET_AVX2 static __m256 set1(const float* p) { return _mm256_broadcast_ss(p); }
  CIRCUITRY_TARGET_AVX2 static __m256d add(__m256d a, __m256d b) { return _mm256_add_pd(a, b); }
  CIRCUITRY_TARGET_AVX2 static __m256 add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
  CIRCUITRY_TARGET_AVX2 static __m256d fma(__m256d a, __m256d b, __m256d c) {
    return _mm256_fmadd_pd(a, b, c);
  }
  CIRCUITRY_TARGET_AVX2 static __m256 fma(__m256 a, __m256 b, __m256 c) {
    return _mm256_fmadd_ps(a, b, c);
  }
};

// One micro-tile: C[0 : rows, 0 : NR] = A[0 : rows, 0 : depth] B[0 : depth, 0 : NR], rows in
// (MV - 1) L + 1 .. MV L (L values per vector); the last vector is masked when Tail. The same
// body for both instruction sets (Ops and the target attribute differ).
#define CIRCUITRY_GEMM_TILE_BODY(Ops)                                                      \
  using V = decltype(Ops::zero(a));                                                        \
  constexpr int L = static_cast<int>(sizeof(V) / sizeof(T));                               \
  const int last = Tail ? rows - (MV - 1) * L : L;                                         \
  V acc[MV][NR];                                                                           \
  _Pragma("GCC unroll 32") for (int j = 0; j < NR; ++j) {                                  \
    _Pragma("GCC unroll 8") for (int i = 0; i < MV; ++i) acc[i][j] = Ops::zero(a);         \
  }                                                                                        \
  for (Index p = 0; p < depth; ++p) {                                                      \
    const T* ap = a + p * lda;                                                             \
    V av[MV];                                                                              \
    _Pragma("GCC unroll 8") for (int i = 0; i < MV; ++i) {                                 \
      av[i] = (Tail && i == MV - 1) ? Ops::load(ap + i * L, last) : Ops::load(ap + i * L); \
    }                                                                                      \
    _Pragma("GCC unroll 32") for (int j = 0; j < NR; ++j) {                                \
      const V bj = Ops::set1(b + j * ldb + p);                                             \
      _Pragma("GCC unroll 8") for (int i = 0; i < MV; ++i) {                               \
        acc[i][j] = Ops::fma(av[i], bj, acc[i][j]);                                        \
      }                                                                                    \
    }                                                                                      \
  }                                                                                        \
  _Pragma("GCC unroll 32") for (int j = 0; j < NR; ++j) {                                  \
    _Pragma("GCC unroll 8") for (int i = 0; i < MV; ++i) {                                 \
      if (Tail && i == MV - 1) {                                                           \
        Ops::store(c + j * ldc + i * L, acc[i][j], last);                                  \
      } else {                                                                             \
        Ops::store(c + j * ldc + i * L, acc[i][j]);                                        \
      }                                                                                    \
    }                                                                                      \
  }

/// C [rows, NR] (ldc) = A [rows, depth] (lda) B [depth, NR] (ldb) with AVX-512, rows <= MV L.
template <typename T, int MV, int NR, bool Tail>
CIRCUITRY_TARGET_AVX512 void gemm_tile_avx512(int rows, Index depth, const T* a, Index lda,
                                              const T* b, Index ldb, T* c, Index ldc) {
  CIRCUITRY_GEMM_TILE_BODY(Avx512Ops)
}
/// The same with AVX2+FMA.
template <typename T, int MV, int NR, bool Tail>
CIRCUITRY_TARGET_AVX2 void gemm_tile_avx2(int rows, Index depth, const T* a, Index lda, const T* b,
                                          Index ldb, T* c, Index ldc) {
  CIRCUITRY_GEMM_TILE_BODY(Avx2Ops)
}
#undef CIRCUITRY_GEMM_TILE_BODY

/// The micro-tiles at each level: kVectors vectors of rows (24 doubles or 48 floats with
/// AVX-512, 12 or 24 with AVX2) by kCols columns: 24 or 12 accumulators, the inner dimension's
/// loads (kVectors of A, kCols broadcasts of B) well within two per FMA.
template <SimdLevel level>
struct GemmShape {
  static constexpr int kVectors = 3;
  static constexpr int kCols = level == SimdLevel::avx512 ? 8 : 4;
  template <typename T>
  static constexpr int rows() {
    return kVectors * (level == SimdLevel::avx512 ? 64 : 32) / static_cast<int>(sizeof(T));
  }
};

/// The micro-tiles of C = A B at one level: whole MV L x NR tiles, then the last columns one at
/// a time; the last rows (fewer than MV L) with as many vectors as they need, the last masked.
template <SimdLevel level, typename T>
void gemm_tiles(Index m, Index n, Index k, const T* a, Index lda, const T* b, Index ldb, T* c,
                Index ldc) {
  constexpr int MV = GemmShape<level>::kVectors, NR = GemmShape<level>::kCols;
  constexpr int L = GemmShape<level>::template rows<T>() / MV;
  const auto tile = [&](auto mv, auto nr, auto tail, Index i, Index j, int rows) {
    constexpr int kMV = decltype(mv)::value, kNR = decltype(nr)::value;
    constexpr bool kTail = decltype(tail)::value;
    if constexpr (level == SimdLevel::avx512) {
      gemm_tile_avx512<T, kMV, kNR, kTail>(rows, k, a + i, lda, b + j * ldb, ldb, c + i + j * ldc,
                                           ldc);
    } else {
      gemm_tile_avx2<T, kMV, kNR, kTail>(rows, k, a + i, lda, b + j * ldb, ldb, c + i + j * ldc,
                                         ldc);
    }
  };
  using Full = std::integral_constant<int, NR>;
  using One = std::integral_constant<int, 1>;
  using No = std::false_type;
  using Yes = std::true_type;
  constexpr Index kTileRows = Index(MV) * Index(L);
  const Index n_full = n / NR * NR, m_full = m / kTileRows * kTileRows;
  for (Index i = 0; i < m_full; i += kTileRows) {
    for (Index j = 0; j < n_full; j += NR)
      tile(std::integral_constant<int, MV>(), Full(), No(), i, j, 0);
    for (Index j = n_full; j < n; ++j)
      tile(std::integral_constant<int, MV>(), One(), No(), i, j, 0);
  }
  if (m_full == m) return;
  const int rows = static_cast<int>(m - m_full), vectors = (rows + L - 1) / L;
  const auto tail_tiles = [&](auto mv) {
    for (Index j = 0; j < n_full; j += NR) tile(mv, Full(), Yes(), m_full, j, rows);
    for (Index j = n_full; j < n; ++j) tile(mv, One(), Yes(), m_full, j, rows);
  };
  static_assert(MV == 3, "gemm_tiles: the row tails below are written for 3 vectors");
  if (vectors == 1) tail_tiles(std::integral_constant<int, 1>());
  if (vectors == 2) tail_tiles(std::integral_constant<int, 2>());
  if (vectors == 3) tail_tiles(std::integral_constant<int, 3>());
}

// sum_blocks's loop: each column's R rows as R / L vectors, the parts added in order.
#define CIRCUITRY_SUM_BLOCKS_BODY(Ops)                                          \
  using V = decltype(Ops::zero(tile));                                          \
  constexpr int L = static_cast<int>(sizeof(V) / sizeof(T)), P = R / L;         \
  static_assert(R % L == 0, "sum_blocks: R must be a whole number of vectors"); \
  for (Index j = 0; j < cols; ++j) {                                            \
    const T* col = tile + j * ld;                                               \
    V acc[P];                                                                   \
    for (int p = 0; p < P; ++p) acc[p] = Ops::load(col + parts[0] + p * L);     \
    for (Index q = 1; q < n_parts; ++q) {                                       \
      for (int p = 0; p < P; ++p) {                                             \
        acc[p] = Ops::add(acc[p], Ops::load(col + parts[q] + p * L));           \
      }                                                                         \
    }                                                                           \
    for (int p = 0; p < P; ++p) Ops::store(dst + j * ld + p * L, acc[p]);       \
  }

template <int R, typename T>
CIRCUITRY_TARGET_AVX512 void sum_blocks_avx512(Index cols, const T* tile, Index ld,
                                               const Index* parts, Index n_parts, T* dst) {
  CIRCUITRY_SUM_BLOCKS_BODY(Avx512Ops)
}
template <int R, typename T>
CIRCUITRY_TARGET_AVX2 void sum_blocks_avx2(Index cols, const T* tile, Index ld, const Index* parts,
                                           Index n_parts, T* dst) {
  CIRCUITRY_SUM_BLOCKS_BODY(Avx2Ops)
}
#undef CIRCUITRY_SUM_BLOCKS_BODY
#endif  // CIRCUITRY_SIMD_DISPATCH

/// C = A B, all column-major: A [m, k] (leading dimension lda), B [k, n] (ldb), C [m, n] (ldc),
/// overwritten (C must not overlap A or B). Single-threaded; with the kernels of `level` (at
/// most simd_level()), with Eigen's product for SimdLevel::none.
template <typename T>
void gemm(SimdLevel level, Index m, Index n, Index k, const T* a, Index lda, const T* b, Index ldb,
          T* c, Index ldc) {
  if (m <= 0 || n <= 0) return;
#if CIRCUITRY_SIMD_DISPATCH
  if (k > 0 && level == SimdLevel::avx512) {
    gemm_tiles<SimdLevel::avx512>(m, n, k, a, lda, b, ldb, c, ldc);
    return;
  }
  if (k > 0 && level == SimdLevel::avx2) {
    gemm_tiles<SimdLevel::avx2>(m, n, k, a, lda, b, ldb, c, ldc);
    return;
  }
#endif
  (void)level;
  using Strided = Eigen::OuterStride<>;
  using Map = Eigen::Map<Matrix<T>, Eigen::Unaligned, Strided>;
  using ConstMap = Eigen::Map<const Matrix<T>, Eigen::Unaligned, Strided>;
  Map C(c, m, n, Strided(ldc));
  if (k <= 0) {
    C.setZero();
    return;
  }
  C.noalias() = ConstMap(a, m, k, Strided(lda)) * ConstMap(b, k, n, Strided(ldb));
}

/// dst(0 : R, j) = sum over q of tile(parts[q] + (0 : R), j), for j < cols, parts added in
/// order: tile and dst column-major with leading dimension ld (dst may lie in tile, apart from
/// the parts). n_parts >= 1. For the components of PathExpansion::losses that are sums of others.
template <int R, typename T>
void sum_blocks(SimdLevel level, Index cols, const T* tile, Index ld, const Index* parts,
                Index n_parts, T* dst) {
#if CIRCUITRY_SIMD_DISPATCH
  if (level == SimdLevel::avx512) {
    sum_blocks_avx512<R>(cols, tile, ld, parts, n_parts, dst);
    return;
  }
  if (level == SimdLevel::avx2) {
    sum_blocks_avx2<R>(cols, tile, ld, parts, n_parts, dst);
    return;
  }
#endif
  (void)level;
  using Block =
      Eigen::Map<Eigen::Array<T, R, Eigen::Dynamic>, Eigen::Unaligned, Eigen::OuterStride<>>;
  using ConstBlock =
      Eigen::Map<const Eigen::Array<T, R, Eigen::Dynamic>, Eigen::Unaligned, Eigen::OuterStride<>>;
  Block out(dst, R, cols, Eigen::OuterStride<>(ld));
  out = ConstBlock(tile + parts[0], R, cols, Eigen::OuterStride<>(ld));
  for (Index q = 1; q < n_parts; ++q) {
    out += ConstBlock(tile + parts[q], R, cols, Eigen::OuterStride<>(ld));
  }
}

/// out = a b (out is resized; it must not alias a or b), in parallel over panels of rows of a
/// (each copied to a contiguous block that stays in cache while b streams past) and of columns
/// of b, with the kernels of simd_level(); Eigen's (possibly parallel) product at level none.
/// For the logits, [tokens, d_model] W_U, and PathExpansion's [r, d_model] W_U.
template <typename Scalar>
void multiply(const Matrix<Scalar>& a, const Matrix<Scalar>& b, Matrix<Scalar>& out) {
  out.resize(a.rows(), b.cols());
  prefault(out);
  const SimdLevel level = simd_level();
  const Index m = a.rows(), n = b.cols(), k = a.cols();
  if (level == SimdLevel::none || k == 0 || m == 0 || n == 0) {
    out.noalias() = a * b;
    return;
  }
  constexpr Index kPanelRows = 96, kPanelCols = 512;  // 96: a whole number of micro-tiles
  const Index row_panels = (m + kPanelRows - 1) / kPanelRows;
  const Index col_panels = (n + kPanelCols - 1) / kPanelCols;
  const Index tasks = row_panels * col_panels;
  CIRCUITRY_OMP_PARALLEL {
    Matrix<Scalar> panel;  // this thread's copy of its rows of a
    CIRCUITRY_OMP_FOR
    for (Index t = 0; t < tasks; ++t) {
      const Index r0 = (t % row_panels) * kPanelRows, c0 = (t / row_panels) * kPanelCols;
      const Index rows = std::min(kPanelRows, m - r0), cols = std::min(kPanelCols, n - c0);
      panel = a.middleRows(r0, rows);
      gemm(level, rows, cols, k, panel.data(), rows, b.data() + c0 * b.rows(), b.rows(),
           out.data() + r0 + c0 * m, m);
    }
  }
}

/// out = a b for a long inner dimension k (d_vocab: the embedding Gram matrices W_E^T W_E,
/// W_U W_U^T, W_U W_E), with the kernels of simd_level(): k is cut into chunks of 256 whose
/// slices of a and b are copied to contiguous blocks that stay in cache, each chunk's product
/// added into a [m, n] accumulator. The threads take contiguous ranges of chunks and their
/// accumulators are summed in thread order, so the result depends only on the number of threads.
/// `a` and `b` may be any Eigen expressions (transposes, blocks); `out` must not alias them.
/// Eigen's (possibly parallel) product at level none.
template <typename Scalar, typename A, typename B>
void multiply_long(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b,
                   Matrix<Scalar>& out) {
  const SimdLevel level = simd_level();
  const Index m = a.rows(), n = b.cols(), k = a.cols();
  if (level == SimdLevel::none || k == 0 || m == 0 || n == 0) {
    out.noalias() = a * b;
    return;
  }
  constexpr Index kChunk = 256;
  const Index chunks = (k + kChunk - 1) / kChunk;
  std::vector<Matrix<Scalar>> partial;
  CIRCUITRY_OMP_PARALLEL {
    int thread = 0, threads = 1;
#ifdef _OPENMP
    thread = omp_get_thread_num();
    threads = omp_get_num_threads();
#endif
#ifdef _OPENMP
#pragma omp single
#endif
    partial.resize(static_cast<std::size_t>(threads));
    // (the implicit barrier of `single` publishes `partial`)
    Matrix<Scalar>& acc = partial[static_cast<std::size_t>(thread)];
    acc.setZero(m, n);
    Matrix<Scalar> ac, bc, c(m, n);
    const Index first = chunks * thread / threads, last = chunks * (thread + 1) / threads;
    for (Index q = first; q < last; ++q) {
      const Index k0 = q * kChunk, kc = std::min(kChunk, k - k0);
      ac = a.middleCols(k0, kc);
      bc = b.middleRows(k0, kc);
      gemm(level, m, n, kc, ac.data(), m, bc.data(), kc, c.data(), m);
      acc += c;
    }
  }
  out = partial[0];
  for (std::size_t t = 1; t < partial.size(); ++t) out += partial[t];
}

}  // namespace detail
}  // namespace circuitry
