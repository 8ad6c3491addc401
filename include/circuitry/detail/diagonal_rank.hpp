// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file detail/diagonal_rank.hpp
/// `FactoredMatrix::diagonal_rank` with circuitry's AVX2/AVX-512 product kernels
/// (detail/simd_gemm.hpp): for each row i of a square A B, the number of entries strictly
/// greater than (A B)(i, i), in parallel over panels of rows. Each panel (96 rows) is multiplied
/// by 512 columns of B at a time into a tile that stays in cache, and the tile is compared
/// column by column (contiguous) with the panel's diagonal. The diagonal entries come from a
/// product of their own: the kernels sum every entry in the same order (p = 0, 1, ...) whichever
/// tile computes it, so they equal the entries of the tiles exactly and ties compare exactly, as
/// in the portable path (`for_each_row_block`, which reads the diagonal from the row's block).
/// Not part of the public API.

#include <algorithm>
#include <vector>

#include "circuitry/detail/simd_gemm.hpp"
#include "circuitry/types.hpp"

namespace circuitry {
namespace detail {
namespace factored {

/// The ranks of the diagonal of square a b (a [m, r], b [r, m]) with the kernels of `level`
/// (avx2 or avx512; the caller uses the portable path for none).
template <typename Scalar>
Vector<Index> diagonal_rank_kernels(SimdLevel level, const Matrix<Scalar>& a,
                                    const Matrix<Scalar>& b) {
  const Index m = a.rows(), n = b.cols(), r = a.cols();
  Vector<Index> out(m);
  constexpr Index kPanelRows = 96, kChunkCols = 512;
  const Index panels = (m + kPanelRows - 1) / kPanelRows;
  CIRCUITRY_OMP_PARALLEL {
    Matrix<Scalar> panel, tile(kPanelRows, kChunkCols), diag_tile;
    std::vector<Scalar> diag(static_cast<std::size_t>(kPanelRows));
    std::vector<Index> count(static_cast<std::size_t>(kPanelRows));
    CIRCUITRY_OMP_FOR
    for (Index q = 0; q < panels; ++q) {
      const Index first = q * kPanelRows, rows = std::min(kPanelRows, m - first);
      panel = a.middleRows(first, rows);
      // The panel's diagonal block a[first:, :] b[:, first:], rows x rows.
      diag_tile.resize(rows, rows);
      gemm(level, rows, rows, r, panel.data(), rows, b.data() + first * r, r, diag_tile.data(),
           rows);
      for (Index t = 0; t < rows; ++t) {
        diag[static_cast<std::size_t>(t)] = diag_tile(t, t);
        count[static_cast<std::size_t>(t)] = 0;
      }
      for (Index c0 = 0; c0 < n; c0 += kChunkCols) {
        const Index cols = std::min(kChunkCols, n - c0);
        gemm(level, rows, cols, r, panel.data(), rows, b.data() + c0 * r, r, tile.data(),
             kPanelRows);
        for (Index j = 0; j < cols; ++j) {
          const Scalar* col = tile.data() + j * kPanelRows;
          for (Index t = 0; t < rows; ++t) {
            count[static_cast<std::size_t>(t)] +=
                col[t] > diag[static_cast<std::size_t>(t)] ? 1 : 0;
          }
        }
      }
      for (Index t = 0; t < rows; ++t) out(first + t) = count[static_cast<std::size_t>(t)];
    }
  }
  return out;
}

}  // namespace factored
}  // namespace detail
}  // namespace circuitry
