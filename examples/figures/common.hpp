// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file examples/figures/common.hpp
/// Helpers the figures' `compute` functions share: the processed model, token text, the most
/// common tokens of the held-out text, and JSON conversions.

#include <circuitry/circuitry.hpp>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "figure.hpp"

namespace figures {

using Model = circuitry::AttentionOnlyModel<double>;

/// The model at `path` with TransformerLens's weight processing (fold LN, centre), as the
/// reference figures are computed.
inline Model load_processed(const std::string& path) {
  Model m = circuitry::load_model<double>(path);
  circuitry::process_weights(m);
  return m;
}

/// The processed model at `path`, or argument_error naming the figure unless it has a number of
/// layers in [min_layers, max_layers].
inline Model load_processed(const std::string& path, const std::string& figure, int min_layers,
                            int max_layers = 1 << 20) {
  Model m = load_processed(path);
  if (m.n_layers() < min_layers || m.n_layers() > max_layers) {
    throw circuitry::argument_error("figure " + figure + ": needs a model with " +
                                    std::to_string(min_layers) +
                                    (max_layers == min_layers ? "" : " or more") + " layers, '" +
                                    path + "' has " + std::to_string(m.n_layers()));
  }
  return m;
}

/// "attn-only-2l" for "examples/models/attn-only-2l.safetensors".
inline std::string model_stem(const std::string& path) {
  return std::filesystem::path(path).stem().string();
}

/// Token id -> its text with visible whitespace ("·def" for " def") and invalid UTF-8 as "\\xNN"
/// (figure JSON holds this form: it is valid UTF-8).
class TokenText {
 public:
  explicit TokenText(const std::string& tokenizer_path)
      : tok_(circuitry::Tokenizer::from_file(tokenizer_path)) {}
  std::string operator()(int id) const {
    return circuitry::svg::visible_token(tok_.token_text(id));
  }
  std::string raw(int id) const { return tok_.token_text(id); }
  const circuitry::Tokenizer& tokenizer() const { return tok_; }
  /// The id of the token whose text is exactly `text`, if there is one.
  std::optional<int> id(const std::string& text) const {
    for (int i = 0; i < tok_.vocab_size(); ++i) {
      if (tok_.token_text(i) == text) return i;
    }
    return std::nullopt;
  }

 private:
  circuitry::Tokenizer tok_;
};

/// The held-out tokens (eval-tokens.safetensors: documents, each after token 0).
inline std::vector<std::int64_t> eval_tokens(const Args& a) {
  return circuitry::SafetensorsFile::open(a.data + "/eval-tokens.safetensors").integers("tokens");
}

/// The `n` most frequent token ids of the held-out tokens (not token 0), most frequent first,
/// ties by id; with their counts.
inline std::vector<std::pair<int, std::int64_t>> common_tokens(const Args& a, std::size_t n) {
  std::map<std::int64_t, std::int64_t> counts;
  for (std::int64_t t : eval_tokens(a)) {
    if (t != 0) ++counts[t];
  }
  std::vector<std::pair<int, std::int64_t>> by;
  for (const auto& [t, c] : counts) by.emplace_back(static_cast<int>(t), c);
  std::stable_sort(by.begin(), by.end(),
                   [](const auto& x, const auto& y) { return x.second > y.second; });
  if (by.size() > n) by.resize(n);
  return by;
}

inline nlohmann::json json_vector(const circuitry::Vector<double>& v) {
  return std::vector<double>(v.data(), v.data() + v.size());
}

/// A matrix as rows of numbers.
inline nlohmann::json json_rows(const circuitry::Matrix<double>& m) {
  nlohmann::json rows = nlohmann::json::array();
  for (circuitry::Index i = 0; i < m.rows(); ++i) {
    std::vector<double> r(static_cast<std::size_t>(m.cols()));
    for (circuitry::Index j = 0; j < m.cols(); ++j) r[static_cast<std::size_t>(j)] = m(i, j);
    rows.push_back(r);
  }
  return rows;
}

/// Rows of a JSON matrix as vectors, for svg::heatmap.
inline std::vector<std::vector<double>> rows_of(const nlohmann::json& j) {
  return j.get<std::vector<std::vector<double>>>();
}

/// Head names "L<l>H<h>" of one layer.
inline std::vector<std::string> head_names(int layer, int n_heads) {
  std::vector<std::string> out;
  for (int h = 0; h < n_heads; ++h) out.push_back(circuitry::HeadId{layer, h}.name());
  return out;
}

/// A fixed-point number for a table cell ("2.31", "-0.047").
inline std::string fixed(double v, int decimals = 2) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

}  // namespace figures
