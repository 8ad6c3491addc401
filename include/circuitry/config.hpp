// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file config.hpp
/// `ModelConfig`: the hyper-parameters of an attention-only transformer, with TransformerLens's
/// names (n_layers, n_heads, d_model, d_head, d_vocab, n_ctx, normalization_type,
/// positional_embedding_type), read from and written to JSON.
///
/// Example:
///
///     circuitry::ModelConfig c = circuitry::read_config_file("config.json");
///     c.positional_embedding_type = circuitry::PositionalEmbeddingType::shortformer;

#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "circuitry/detail/json_depth.hpp"
#include "circuitry/detail/text_file.hpp"
#include "circuitry/error.hpp"

namespace circuitry {

/// Where LayerNorm sits and what it holds.
///  - `none`: no normalisation (TransformerLens `normalization_type=None`).
///  - `LN`: LayerNorm with weight w and bias b: LN(r) = (r - mean r) / sqrt(var r + eps) * w + b.
///  - `LNPre`: LayerNorm whose w and b were folded into the next matrices: centre and scale only.
enum class NormalizationType { none, LN, LNPre };

/// `standard`: W_pos is added to the residual stream. `shortformer`: W_pos is added to the query
/// and key inputs of every layer only, never to the residual stream (it cannot be read off the
/// weights: a user has to say so).
enum class PositionalEmbeddingType { standard, shortformer };

inline std::string to_string(NormalizationType t) {
  switch (t) {
    case NormalizationType::none: return "null";
    case NormalizationType::LN: return "LN";
    case NormalizationType::LNPre: return "LNPre";
  }
  return "?";
}

inline std::string to_string(PositionalEmbeddingType t) {
  return t == PositionalEmbeddingType::standard ? "standard" : "shortformer";
}

/// Hyper-parameters of an attention-only transformer (TransformerLens's HookedTransformerConfig
/// subset). Invariant after `validate()`: every dimension is positive.
struct ModelConfig {
  int n_layers = 0;
  int n_heads = 0;
  int d_model = 0;
  int d_head = 0;
  int d_vocab = 0;
  int n_ctx = 0;
  NormalizationType normalization_type = NormalizationType::LN;
  PositionalEmbeddingType positional_embedding_type = PositionalEmbeddingType::standard;
  double eps = 1e-5;  ///< LayerNorm epsilon.

  /// The attention scale: scores are q k^T / sqrt(d_head).
  double attn_scale() const { return std::sqrt(static_cast<double>(d_head)); }

  /// Throws config_error naming the first invalid field. `context` says where the config came
  /// from (a file name), for the message.
  void validate(const std::string& context = "config") const {
    auto positive = [&](const char* name, int v) {
      if (v <= 0) {
        throw config_error(context + ": '" + name + "' must be a positive integer, found " +
                           std::to_string(v));
      }
    };
    positive("n_layers", n_layers);
    positive("n_heads", n_heads);
    positive("d_model", d_model);
    positive("d_head", d_head);
    positive("d_vocab", d_vocab);
    positive("n_ctx", n_ctx);
    if (!(eps >= 0.0) || !std::isfinite(eps)) {
      throw config_error(context + ": 'eps' must be a finite non-negative number");
    }
  }

  friend bool operator==(const ModelConfig& a, const ModelConfig& b) {
    return a.n_layers == b.n_layers && a.n_heads == b.n_heads && a.d_model == b.d_model &&
           a.d_head == b.d_head && a.d_vocab == b.d_vocab && a.n_ctx == b.n_ctx &&
           a.normalization_type == b.normalization_type &&
           a.positional_embedding_type == b.positional_embedding_type && a.eps == b.eps;
  }
  friend bool operator!=(const ModelConfig& a, const ModelConfig& b) { return !(a == b); }
};

/// The config as TransformerLens writes it (normalization_type "LN", "LNPre" or null).
inline nlohmann::json to_json(const ModelConfig& c) {
  nlohmann::json j;
  j["n_layers"] = c.n_layers;
  j["n_heads"] = c.n_heads;
  j["d_model"] = c.d_model;
  j["d_head"] = c.d_head;
  j["d_vocab"] = c.d_vocab;
  j["n_ctx"] = c.n_ctx;
  if (c.normalization_type == NormalizationType::none) {
    j["normalization_type"] = nullptr;
  } else {
    j["normalization_type"] = to_string(c.normalization_type);
  }
  j["positional_embedding_type"] = to_string(c.positional_embedding_type);
  j["eps"] = c.eps;
  return j;
}

namespace detail {
/// `v` as JSON for an error message, cut to about 80 characters: a hostile value cannot make a
/// message as long as itself.
inline std::string config_value_string(const nlohmann::json& v) {
  std::string s = v.dump();
  if (s.size() > 80) {
    s.resize(77);
    s += "...";
  }
  return s;
}
}  // namespace detail

/// Applies the keys present in `j` onto `config` (keys absent keep their value; unknown keys
/// are ignored so that TransformerLens's full config dumps can be given). Throws config_error
/// naming `context` and the key for a value of the wrong type or an unknown enum value.
/// Dimensions are integers in [1, 2^30]; `eps` (or `layer_norm_eps`) a number >= 0.
inline void apply_config_json(ModelConfig& config, const nlohmann::json& j,
                              const std::string& context) {
  if (!j.is_object()) {
    throw config_error(context + ": expected a JSON object, found " + std::string(j.type_name()));
  }
  auto read_int = [&](const char* key, int& out) {
    auto it = j.find(key);
    if (it == j.end()) return;
    // An unsigned value above 2^63 - 1 reads as negative here, and is refused as such.
    if (!it->is_number_integer() || it->get<long long>() <= 0 ||
        it->get<long long>() > (1LL << 30)) {
      throw config_error(context + ": '" + key + "' must be a positive integer, found " +
                         detail::config_value_string(*it));
    }
    out = static_cast<int>(it->get<long long>());
  };
  read_int("n_layers", config.n_layers);
  read_int("n_heads", config.n_heads);
  read_int("d_model", config.d_model);
  read_int("d_head", config.d_head);
  read_int("d_vocab", config.d_vocab);
  read_int("n_ctx", config.n_ctx);
  if (auto it = j.find("normalization_type"); it != j.end()) {
    if (it->is_null()) {
      config.normalization_type = NormalizationType::none;
    } else if (it->is_string() && *it == "LN") {
      config.normalization_type = NormalizationType::LN;
    } else if (it->is_string() && *it == "LNPre") {
      config.normalization_type = NormalizationType::LNPre;
    } else {
      throw config_error(context +
                         ": 'normalization_type' must be \"LN\", \"LNPre\" or null, found " +
                         detail::config_value_string(*it));
    }
  }
  if (auto it = j.find("positional_embedding_type"); it != j.end()) {
    if (it->is_string() && *it == "standard") {
      config.positional_embedding_type = PositionalEmbeddingType::standard;
    } else if (it->is_string() && *it == "shortformer") {
      config.positional_embedding_type = PositionalEmbeddingType::shortformer;
    } else {
      throw config_error(context +
                         ": 'positional_embedding_type' must be \"standard\" or \"shortformer\" "
                         "(rotary and other kinds are not supported), found " +
                         detail::config_value_string(*it));
    }
  }
  for (const char* key : {"eps", "layer_norm_eps"}) {
    if (auto it = j.find(key); it != j.end()) {
      if (!it->is_number() || !(it->get<double>() >= 0.0)) {
        throw config_error(context + ": '" + key + "' must be a non-negative number, found " +
                           detail::config_value_string(*it));
      }
      config.eps = it->get<double>();
    }
  }
}

/// Parses JSON text; throws config_error naming `context` for text that is not JSON (with
/// nlohmann's message) or that nests more than 64 levels deep (detail/json_depth.hpp: checked
/// before parsing, so that a nesting bomb cannot overflow the stack).
inline nlohmann::json parse_config_text(const std::string& text, const std::string& context) {
  const std::size_t deep = detail::json_too_deep_at(text.data(), text.data() + text.size());
  if (deep != std::string::npos) {
    throw config_error(context + ": not a config: the JSON " + detail::json_depth_message(deep) +
                       "), expected an object of keys and values");
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw config_error(context + ": not valid JSON (" + detail::json_parse_message(e.what()) + ")");
  }
}

/// Reads a JSON config file (all keys optional; see `apply_config_json`) as overrides. Throws
/// io_error when `path` is missing, not a regular file (a directory, a FIFO: checked before
/// opening, which would block on a FIFO) or unreadable; config_error when it is not JSON.
inline nlohmann::json read_config_json_file(const std::string& path) {
  return parse_config_text(detail::read_regular_file(path, "config file", "a JSON file"),
                           "config file '" + path + "'");
}

/// Reads a complete config from a JSON file and validates it: every dimension must be present
/// (config_error "'d_vocab' is missing" otherwise).
inline ModelConfig read_config_file(const std::string& path) {
  const std::string context = "config file '" + path + "'";
  const nlohmann::json j = read_config_json_file(path);
  ModelConfig c;
  apply_config_json(c, j, context);
  for (const char* key : {"n_layers", "n_heads", "d_model", "d_head", "d_vocab", "n_ctx"}) {
    if (!j.contains(key)) {
      throw config_error(context + ": '" + key + "' is missing, expected a positive integer");
    }
  }
  c.validate(context);
  return c;
}

}  // namespace circuitry
