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
/// the row's block). Not part of the public API.

#include <algorithm>
#include <vector>

#include "circuitry/detail/simd_gemm.hpp"
#include "circuitry/types.hpp"

namespace circuitry {
namespace detail {
namespace factored {

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
        for (Index j = 0; j < cols; ++j) {
          const Scalar* col = tile.data() + j * kPanelRows;
          for (Index t = 0; t < live; ++t) {
            count[static_cast<std::size_t>(t)] +=
                col[t] > diag[static_cast<std::size_t>(t)] ? 1 : 0;
          }
        }
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
