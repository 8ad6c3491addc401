// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/diagonal_rank.hpp
/// `FactoredMatrix::diagonal_rank` and `diagonal_rank_capped` with circuitry's AVX2/AVX-512
/// product kernels (detail/simd_gemm.hpp): for each row i of a square A B, the number of entries
/// strictly greater than (A B)(i, i) (capped: at most `cap`), in parallel over panels of rows. Each
/// panel (96 rows) is multiplied by 512 columns of B at a time into a tile that stays in cache, and
/// the tile is compared column by column (contiguous) with the panel's diagonal. The diagonal
/// entries come from a product of their own: the kernels sum every entry in the same order (p = 0,
/// 1, ...) whichever tile computes it, so they equal the entries of the tiles exactly and ties
/// compare exactly, as in the portable path (`for_each_row_block`, which reads the diagonal from
/// the row's block). The comparisons are vectorised too (`count_above`). Not part of the public
/// API.

#include <algorithm>
#include <vector>

#include "circuitry/detail/simd_gemm.hpp"
#include "circuitry/types.hpp"

namespace circuitry {
namespace detail {
namespace factored {

#if CIRCUITRY_SIMD_DISPATCH
/// count[t] += #{j < cols : tile[j ld + t] > diag[t]} for t < rows (tile column-major), 8
/// doubles or 16 floats of a column at a time; `>` is false for NaN (_CMP_GT_OQ), as in C++.
/// Lanes past `rows` load zeros and are masked out.
CIRCUITRY_TARGET_AVX512 inline void count_above_avx512(Index rows, Index cols, const double* tile,
                                                       Index ld, const double* diag, Index* count) {
  for (Index t0 = 0; t0 < rows; t0 += 8) {
    const __mmask8 live = static_cast<__mmask8>((1u << std::min<Index>(8, rows - t0)) - 1);
    const __m512d d = _mm512_maskz_loadu_pd(live, diag + t0);
    const __m512i one = _mm512_set1_epi64(1);
    __m512i c = _mm512_setzero_si512();
    for (Index j = 0; j < cols; ++j) {
      const __m512d v = _mm512_maskz_loadu_pd(live, tile + j * ld + t0);
      c = _mm512_mask_add_epi64(c, _mm512_mask_cmp_pd_mask(live, v, d, _CMP_GT_OQ), c, one);
    }
    alignas(64) long long n[8];
    _mm512_store_si512(n, c);
    for (Index i = 0; i < 8 && t0 + i < rows; ++i) count[t0 + i] += static_cast<Index>(n[i]);
  }
}
CIRCUITRY_TARGET_AVX512 inline void count_above_avx512(Index rows, Index cols, const float* tile,
                                                       Index ld, const float* diag, Index* count) {
  for (Index t0 = 0; t0 < rows; t0 += 16) {
    const __mmask16 live = static_cast<__mmask16>((1u << std::min<Index>(16, rows - t0)) - 1);
    const __m512 d = _mm512_maskz_loadu_ps(live, diag + t0);
    const __m512i one = _mm512_set1_epi32(1);
    __m512i c = _mm512_setzero_si512();  // 32-bit counts: cols < 2^31
    for (Index j = 0; j < cols; ++j) {
      const __m512 v = _mm512_maskz_loadu_ps(live, tile + j * ld + t0);
      c = _mm512_mask_add_epi32(c, _mm512_mask_cmp_ps_mask(live, v, d, _CMP_GT_OQ), c, one);
    }
    alignas(64) int n[16];
    _mm512_store_si512(n, c);
    for (Index i = 0; i < 16 && t0 + i < rows; ++i) count[t0 + i] += n[i];
  }
}
/// count_above_avx512 with AVX2: 4 doubles or 8 floats at a time; a true comparison is all
/// ones (-1), subtracted from the counts.
CIRCUITRY_TARGET_AVX2 inline void count_above_avx2(Index rows, Index cols, const double* tile,
                                                   Index ld, const double* diag, Index* count) {
  for (Index t0 = 0; t0 < rows; t0 += 4) {
    const __m256i live = _mm256_cmpgt_epi64(_mm256_set1_epi64x(std::min<Index>(4, rows - t0)),
                                            _mm256_set_epi64x(3, 2, 1, 0));
    const __m256d d = _mm256_maskload_pd(diag + t0, live);
    __m256i c = _mm256_setzero_si256();
    for (Index j = 0; j < cols; ++j) {
      const __m256d v = _mm256_maskload_pd(tile + j * ld + t0, live);  // 0 > 0 past rows
      c = _mm256_sub_epi64(c, _mm256_castpd_si256(_mm256_cmp_pd(v, d, _CMP_GT_OQ)));
    }
    alignas(32) long long n[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(n), c);
    for (Index i = 0; i < 4 && t0 + i < rows; ++i) count[t0 + i] += static_cast<Index>(n[i]);
  }
}
CIRCUITRY_TARGET_AVX2 inline void count_above_avx2(Index rows, Index cols, const float* tile,
                                                   Index ld, const float* diag, Index* count) {
  for (Index t0 = 0; t0 < rows; t0 += 8) {
    const __m256i live =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<Index>(8, rows - t0))),
                           _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0));
    const __m256 d = _mm256_maskload_ps(diag + t0, live);
    __m256i c = _mm256_setzero_si256();  // 32-bit counts: cols < 2^31
    for (Index j = 0; j < cols; ++j) {
      const __m256 v = _mm256_maskload_ps(tile + j * ld + t0, live);
      c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(v, d, _CMP_GT_OQ)));
    }
    alignas(32) int n[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(n), c);
    for (Index i = 0; i < 8 && t0 + i < rows; ++i) count[t0 + i] += n[i];
  }
}
#endif

/// count[t] += #{j < cols : tile[j ld + t] > diag[t]} for t < rows, with the vector instructions
/// of `level` (plain C++ for none).
template <typename Scalar>
void count_above(SimdLevel level, Index rows, Index cols, const Scalar* tile, Index ld,
                 const Scalar* diag, Index* count) {
#if CIRCUITRY_SIMD_DISPATCH
  if (level == SimdLevel::avx512) {
    count_above_avx512(rows, cols, tile, ld, diag, count);
    return;
  }
  if (level == SimdLevel::avx2) {
    count_above_avx2(rows, cols, tile, ld, diag, count);
    return;
  }
#endif
  (void)level;
  for (Index j = 0; j < cols; ++j) {
    for (Index t = 0; t < rows; ++t) count[t] += tile[j * ld + t] > diag[t] ? 1 : 0;
  }
}

/// The ranks of the diagonal of square a b (a [m, r], b [r, m]) with the kernels of `level`
/// (avx2 or avx512; the caller uses the portable path for none), each capped at `cap`
/// (min(rank, cap)). A row leaves its panel as soon as `cap` of its entries exceed its
/// diagonal, and the panel's remaining rows are packed again, so a small cap (top-k copying:
/// cap = k) costs little on rows whose diagonal is far from the top. Capped panels start with
/// chunks of kFirstChunkCols columns, doubling up to kChunkCols; with cap >= m (no row can reach
/// it) every chunk has kChunkCols columns and no row leaves early.
template <typename Scalar>
Vector<Index> diagonal_rank_kernels(SimdLevel level, const Matrix<Scalar>& a,
                                    const Matrix<Scalar>& b, Index cap) {
  const Index m = a.rows(), n = b.cols(), r = a.cols();
  Vector<Index> out(m);
  constexpr Index kPanelRows = 96, kChunkCols = 512, kFirstChunkCols = 64;
  const Index panels = (m + kPanelRows - 1) / kPanelRows;
  const bool capped = cap < n;
  CIRCUITRY_OMP_PARALLEL {
    // The panel's live rows of a (packed: leading dimension `live`), and per live row its
    // diagonal, its count so far and its row of a b.
    Matrix<Scalar> panel, packed, tile(kPanelRows, kChunkCols), diag_tile;
    std::vector<Scalar> diag(static_cast<std::size_t>(kPanelRows));
    std::vector<Index> count(static_cast<std::size_t>(kPanelRows));
    std::vector<Index> row(static_cast<std::size_t>(kPanelRows));
    std::vector<Index> from(static_cast<std::size_t>(kPanelRows));
    CIRCUITRY_OMP_FOR
    for (Index q = 0; q < panels; ++q) {
      const Index first = q * kPanelRows, rows = std::min(kPanelRows, m - first);
      panel = a.middleRows(first, rows);
      // The panel's diagonal block a[first:, :] b[:, first:], rows x rows.
      diag_tile.resize(rows, rows);
      gemm(level, rows, rows, r, panel.data(), rows, b.data() + first * r, r, diag_tile.data(),
           rows);
      for (Index t = 0; t < rows; ++t) {
        const auto ts = static_cast<std::size_t>(t);
        diag[ts] = diag_tile(t, t);
        count[ts] = 0;
        row[ts] = first + t;
      }
      Index live = rows, chunk = capped ? kFirstChunkCols : kChunkCols;
      for (Index c0 = 0; c0 < n && live > 0; c0 += chunk, chunk = std::min(2 * chunk, kChunkCols)) {
        const Index cols = std::min(chunk, n - c0);
        gemm(level, live, cols, r, panel.data(), live, b.data() + c0 * r, r, tile.data(),
             kPanelRows);
        count_above(level, live, cols, tile.data(), kPanelRows, diag.data(), count.data());
        if (!capped) continue;
        Index kept = 0;
        for (Index t = 0; t < live; ++t) {
          const auto ts = static_cast<std::size_t>(t);
          if (count[ts] >= cap) {
            out(row[ts]) = cap;
            continue;
          }
          const auto ks = static_cast<std::size_t>(kept++);
          diag[ks] = diag[ts];
          count[ks] = count[ts];
          row[ks] = row[ts];
          from[ks] = t;
        }
        if (kept == live) continue;
        packed = panel(Eigen::Map<const Vector<Index>>(from.data(), kept), Eigen::all);
        panel.swap(packed);
        live = kept;
      }
      for (Index t = 0; t < live; ++t) {
        const auto ts = static_cast<std::size_t>(t);
        out(row[ts]) = std::min(count[ts], cap);
      }
    }
  }
  return out;
}

}  // namespace factored
}  // namespace detail
}  // namespace circuitry
