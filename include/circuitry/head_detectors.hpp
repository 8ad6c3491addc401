// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file head_detectors.hpp
/// Scores that find heads by what their attention patterns do on data (TransformerLens's
/// definitions, as in the reference figures):
///
///  - previous-token score: mean attention on the sub-diagonal, pattern[p][p-1], over every
///    sequence and every position p >= 1;
///  - duplicate-token score: mean, over every position p whose token occurred before, of the
///    attention p pays to the earlier occurrences of its own token;
///  - induction score: on sequences `[BOS] r r` (r of length n), the mean attention on the
///    diagonal at offset 1 - n, pattern[p][p - n + 1], over all its entries: the token after the
///    previous occurrence of the current token (the paper's "induction heads").
///
/// `repeated_random_tokens` makes the `[BOS] r r` sequences from a seed.

#include <random>
#include <vector>

#include "circuitry/forward.hpp"

namespace circuitry {

/// Per-head scores, [layer][head].
template <typename Scalar>
using HeadScores = std::vector<std::vector<Scalar>>;

namespace detail {
/// Mean over sequences of mean_{p} pattern(p, p + offset) for the rows p where p + offset is a
/// valid column (offset <= 0), for every head.
template <typename Scalar>
HeadScores<Scalar> mean_diagonal(const ForwardCache<Scalar>& cache, Index offset) {
  HeadScores<Scalar> out;
  for (std::size_t l = 0; l < cache.layers.size(); ++l) {
    std::vector<Scalar> row;
    for (std::size_t h = 0; h < cache.layers[l].heads.size(); ++h) {
      const HeadId id{static_cast<int>(l), static_cast<int>(h)};
      double sum = 0;
      Index count = 0;
      for (Index b = 0; b < cache.batch; ++b) {
        const Matrix<Scalar>& a = cache.pattern(id, b);
        for (Index p = -offset; p < a.rows(); ++p) {
          sum += static_cast<double>(a(p, p + offset));
          ++count;
        }
      }
      if (count == 0) {
        throw argument_error("head detector: sequences of " + std::to_string(cache.seq_len) +
                             " tokens have no diagonal at offset " + std::to_string(offset));
      }
      row.push_back(static_cast<Scalar>(sum / static_cast<double>(count)));
    }
    out.push_back(std::move(row));
  }
  return out;
}

template <typename Scalar>
const ForwardCache<Scalar>& require_cache(const ForwardResult<Scalar>& run) {
  if (!run.cache) {
    throw argument_error("head detectors need a forward pass run with ForwardOptions::cache");
  }
  return *run.cache;
}
}  // namespace detail

/// Previous-token score of every head (see head_detectors.hpp).
template <typename Scalar>
HeadScores<Scalar> previous_token_scores(const ForwardResult<Scalar>& run) {
  return detail::mean_diagonal(detail::require_cache(run), -1);
}

/// Induction score of every head on `[BOS] r r` sequences with |r| = `repeat_length` (see
/// head_detectors.hpp): the mean of the diagonal at offset 1 - repeat_length.
template <typename Scalar>
HeadScores<Scalar> induction_scores(const ForwardResult<Scalar>& run, Index repeat_length) {
  if (repeat_length < 2) {
    throw argument_error("induction_scores: |r| = " + std::to_string(repeat_length) +
                         ", expected |r| >= 2 (the diagonal at offset 1 - |r| below the main one)");
  }
  if (2 * repeat_length + 1 != run.seq_len) {
    throw argument_error("induction_scores: sequences of " + std::to_string(run.seq_len) +
                         " tokens are not [BOS] r r with |r| = " + std::to_string(repeat_length));
  }
  return detail::mean_diagonal(detail::require_cache(run), 1 - repeat_length);
}

/// Duplicate-token score of every head on the batch `tokens` the forward pass ran on (see
/// head_detectors.hpp). argument_error if no token repeats anywhere.
template <typename Scalar>
HeadScores<Scalar> duplicate_token_scores(const ForwardResult<Scalar>& run, const Tokens& tokens) {
  const ForwardCache<Scalar>& cache = detail::require_cache(run);
  if (tokens.rows() != cache.batch || tokens.cols() != cache.seq_len) {
    throw argument_error("duplicate_token_scores: tokens are " + std::to_string(tokens.rows()) +
                         " x " + std::to_string(tokens.cols()) + ", the forward pass ran on " +
                         std::to_string(cache.batch) + " x " + std::to_string(cache.seq_len));
  }
  HeadScores<Scalar> out;
  for (std::size_t l = 0; l < cache.layers.size(); ++l) {
    std::vector<Scalar> row;
    for (std::size_t h = 0; h < cache.layers[l].heads.size(); ++h) {
      const HeadId id{static_cast<int>(l), static_cast<int>(h)};
      double sum = 0;
      Index count = 0;
      for (Index b = 0; b < cache.batch; ++b) {
        const Matrix<Scalar>& a = cache.pattern(id, b);
        for (Index p = 1; p < cache.seq_len; ++p) {
          double on_duplicates = 0;
          bool seen = false;
          for (Index j = 0; j < p; ++j) {
            if (tokens(b, j) == tokens(b, p)) {
              on_duplicates += static_cast<double>(a(p, j));
              seen = true;
            }
          }
          if (seen) {
            sum += on_duplicates;
            ++count;
          }
        }
      }
      if (count == 0) {
        throw argument_error("duplicate_token_scores: no token repeats in the batch");
      }
      row.push_back(static_cast<Scalar>(sum / static_cast<double>(count)));
    }
    out.push_back(std::move(row));
  }
  return out;
}

/// `n_sequences` sequences `[bos] r r`, r of `repeat_length` tokens drawn uniformly from
/// [first_token, d_vocab) with a 64-bit Mersenne twister seeded with `seed` (deterministic).
inline Tokens repeated_random_tokens(Index n_sequences, Index repeat_length, int d_vocab,
                                     unsigned long long seed, int bos = 0, int first_token = 1) {
  if (n_sequences <= 0 || repeat_length <= 0 || first_token < 0 || first_token >= d_vocab) {
    throw argument_error(
        "repeated_random_tokens: need n_sequences > 0, repeat_length > 0 and "
        "0 <= first_token < d_vocab");
  }
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> token(first_token, d_vocab - 1);
  Tokens t(n_sequences, 2 * repeat_length + 1);
  for (Index b = 0; b < n_sequences; ++b) {
    t(b, 0) = bos;
    for (Index i = 0; i < repeat_length; ++i) {
      t(b, 1 + i) = t(b, 1 + repeat_length + i) = token(rng);
    }
  }
  return t;
}

/// Mean next-token loss on `[BOS] r r` sequences (|r| = n), as the reference figures define it:
/// `first` over the predictions of the first copy of r (tokens 1 .. n), `second` over the
/// predictions of the second copy from its second token on (tokens n + 2 .. 2n; the second
/// copy's first token cannot be predicted from the context). An induction head makes the second
/// much lower than the first.
template <typename Scalar>
std::pair<Scalar, Scalar> repeated_halves_loss(const ForwardResult<Scalar>& run) {
  const Index n = (run.seq_len - 1) / 2;
  if (n < 2 || 2 * n + 1 != run.seq_len) {
    throw argument_error("repeated_halves_loss: sequences of " + std::to_string(run.seq_len) +
                         " tokens are not [BOS] r r with |r| >= 2");
  }
  const auto& loss = run.loss_per_token;  // [B, 2n]: column p predicts token p + 1
  const Scalar first = loss.leftCols(n).mean();
  const Scalar second = loss.rightCols(n - 1).mean();
  return {first, second};
}

}  // namespace circuitry
