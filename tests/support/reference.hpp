// Test support: TransformerLens's reference figures (tests/data/reference/<model>.json) and
// comparisons of what circuitry computes against them.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <circuitry/model_io.hpp>
#include <circuitry/processing.hpp>
#include <complex>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace circuitry::test {

inline const std::vector<std::string>& shared_models() {
  static const std::vector<std::string> names = {"attn-only-tiny", "attn-only-1l", "attn-only-2l"};
  return names;
}

inline std::string model_path(const std::string& name) {
  return std::string(CIRCUITRY_MODELS_DIR) + "/" + name + ".safetensors";
}

/// The reference JSON of a shared model (read once per model and cached).
inline const nlohmann::json& reference(const std::string& name) {
  static std::map<std::string, nlohmann::json> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    std::ifstream in(std::string(CIRCUITRY_TEST_DATA_DIR) + "/reference/" + name + ".json");
    REQUIRE_MESSAGE(in.good(), "missing reference file for ", name);
    it = cache.emplace(name, nlohmann::json::parse(in)).first;
  }
  return it->second;
}

/// A shared model, loaded and processed as TransformerLens processes it (cached per scalar type).
template <typename Scalar>
const AttentionOnlyModel<Scalar>& processed_model(const std::string& name) {
  static std::map<std::string, AttentionOnlyModel<Scalar>> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    it = cache.emplace(name, processed(load_model<Scalar>(model_path(name)))).first;
  }
  return it->second;
}

/// Relative tolerance of the reference checks: 1e-6 in double, 1e-3 in float (issue 2).
template <typename Scalar>
constexpr double reference_tolerance() {
  return std::is_same<Scalar, double>::value ? 1e-6 : 1e-3;
}

/// Reference spectrum [l][h] of `key` ({"re": [L][H][d], "im": ...}) as complex numbers.
inline std::vector<std::complex<double>> reference_spectrum(const nlohmann::json& ref,
                                                            const std::string& key, int l, int h) {
  const auto layer = static_cast<std::size_t>(l), head = static_cast<std::size_t>(h);
  const auto& re = ref.at(key).at("re").at(layer).at(head);
  const auto& im = ref.at(key).at("im").at(layer).at(head);
  std::vector<std::complex<double>> out;
  for (std::size_t i = 0; i < re.size(); ++i)
    out.emplace_back(re[i].get<double>(), im[i].get<double>());
  return out;
}

/// Largest distance between two spectra compared as multisets (greedy nearest matching of each
/// expected eigenvalue to an unmatched computed one), relative to the largest expected |λ|.
/// Returns +inf when the sizes differ.
template <typename Scalar>
double multiset_relative_distance(const ComplexVector<Scalar>& computed,
                                  const std::vector<std::complex<double>>& expected) {
  if (static_cast<std::size_t>(computed.size()) != expected.size()) {
    return std::numeric_limits<double>::infinity();
  }
  std::vector<std::complex<double>> left;
  for (Index i = 0; i < computed.size(); ++i) {
    left.emplace_back(static_cast<double>(computed(i).real()),
                      static_cast<double>(computed(i).imag()));
  }
  double scale = 0;
  for (const auto& e : expected) scale = std::max(scale, std::abs(e));
  if (scale == 0) scale = 1;
  // Largest expected eigenvalues first, so that clusters are matched greedily but stably.
  std::vector<std::complex<double>> order = expected;
  std::sort(order.begin(), order.end(), [](auto a, auto b) { return std::abs(a) > std::abs(b); });
  double worst = 0;
  for (const auto& e : order) {
    auto best = std::min_element(left.begin(), left.end(),
                                 [&](auto a, auto b) { return std::abs(a - e) < std::abs(b - e); });
    worst = std::max(worst, std::abs(*best - e) / scale);
    left.erase(best);
  }
  return worst;
}

/// |a - b| / max(|b|, floor): relative error with an absolute floor for reference values near 0.
inline double relative_error(double a, double b, double floor = 1e-12) {
  return std::abs(a - b) / std::max(std::abs(b), floor);
}

}  // namespace circuitry::test
