// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT

// figures::compare_json (figure.hpp): the golden-figure comparison.

#include <cmath>
#include <string>
#include <vector>

#include "figure.hpp"

namespace figures {
namespace {

void compare(const nlohmann::json& e, const nlohmann::json& a, const std::string& path, double rtol,
             double atol, std::vector<std::string>& out) {
  if (e.is_number() && a.is_number()) {
    const double x = e.get<double>(), y = a.get<double>();
    const bool both_nan = std::isnan(x) && std::isnan(y);
    if (!both_nan && !(std::abs(x - y) <= atol + rtol * std::max(std::abs(x), std::abs(y)))) {
      out.push_back(path + ": expected " + e.dump() + ", got " + a.dump());
    }
    return;
  }
  if (e.type() != a.type()) {
    out.push_back(path + ": expected " + e.type_name() + ", got " + a.type_name());
    return;
  }
  if (e.is_object()) {
    for (auto it = e.begin(); it != e.end(); ++it) {
      if (!a.contains(it.key())) {
        out.push_back(path + "/" + it.key() + ": missing");
      } else {
        compare(it.value(), a.at(it.key()), path + "/" + it.key(), rtol, atol, out);
      }
    }
    for (auto it = a.begin(); it != a.end(); ++it) {
      if (!e.contains(it.key())) out.push_back(path + "/" + it.key() + ": not expected");
    }
  } else if (e.is_array()) {
    if (e.size() != a.size()) {
      out.push_back(path + ": expected " + std::to_string(e.size()) + " elements, got " +
                    std::to_string(a.size()));
      return;
    }
    for (std::size_t i = 0; i < e.size(); ++i) {
      compare(e[i], a[i], path + "/" + std::to_string(i), rtol, atol, out);
    }
  } else if (e != a) {
    out.push_back(path + ": expected " + e.dump() + ", got " + a.dump());
  }
}

}  // namespace

std::vector<std::string> compare_json(const nlohmann::json& expected, const nlohmann::json& actual,
                                      double rtol, double atol) {
  std::vector<std::string> out;
  compare(expected, actual, "", rtol, atol, out);
  return out;
}

}  // namespace figures
