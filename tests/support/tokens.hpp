// Test support: token batches from the reference JSON.
#pragma once

#include <circuitry/forward.hpp>
#include <nlohmann/json.hpp>

namespace circuitry::test {

/// A [batch][seq] JSON array of token ids as `Tokens`.
inline Tokens tokens_from_json(const nlohmann::json& j) {
  return make_tokens(j.get<std::vector<std::vector<int>>>());
}

}  // namespace circuitry::test
