// Test support: token batches from the reference JSON, and random ones.
#pragma once

#include <circuitry/forward.hpp>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

namespace circuitry::test {

/// A [batch][seq] JSON array of token ids as `Tokens`.
inline Tokens tokens_from_json(const nlohmann::json& j) {
  return make_tokens(j.get<std::vector<std::vector<int>>>());
}

/// A [batch, len] batch of ids drawn uniformly from [0, d_vocab), deterministic in `seed`.
inline Tokens random_tokens(Index batch, Index len, int d_vocab, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> token(0, d_vocab - 1);
  Tokens t(batch, len);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = token(gen);
  return t;
}

}  // namespace circuitry::test
