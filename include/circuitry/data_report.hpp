// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file data_report.hpp
/// The report's figures on data (`circuitry-report --tokens`, `--induction-tokens`), with the
/// keys, shapes and definitions of TransformerLens's reference figures:
///
/// `--tokens` (a batch of equal-length sequences):
///  - `eval_batch`: `tokens`, `loss_mean`, `loss_per_seq` [B], `logprob_next_seq0` [S-1] (log p
///    of each next token of sequence 0), `top5_next_seq0_pos` {"p": [5]} for p in 0, 1, 50, 200,
///    255 when p < S;
///  - `pattern_seq0_corner16` {"L{l}H{h}": [16][16]}: the top-left corner of each head's pattern
///    on sequence 0 (min(16, S) square);
///  - `prev_token_score` [L][H] (head_detectors.hpp);
///  - `path_expansion`: losses of partial sums of path terms with patterns and LayerNorm scales
///    frozen (path_expansion.hpp): `uniform` (ln d_vocab), `direct`, `full`, `model_loss`;
///    for one layer `direct+L0`; for two layers also `direct+L0+L1_first_order`,
///    `ablate_L1_first_order_head` [H], `ablate_L0_head_everywhere` [H] and
///    `ablate_virtual_pair_top` (the 8 virtual-head terms whose removal raises the loss most, as
///    [increase, "L0Ha->L1Hb"]); for every depth `loss_by_order` (direct; + first-order terms;
///    + second-order; ...; full), `loss_by_layer` (direct; + terms written by layer 0; ...),
///    `ablate_head_everywhere` and `ablate_head_first_order` [L][H] (loss without every term
///    through the head / without the head reading the direct path and biases), and `definition`;
///    for more than two layers from `summarize_by_order` (path_orders.hpp), which does not
///    enumerate the (1 + H)^L head chains.
///
/// `--induction-tokens` (sequences `[0] + r + r`):
///  - `repeated_tokens`, `induction_score` [L][H], `repeated_loss_first_half`,
///    `repeated_loss_second_half` (head_detectors.hpp).

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "circuitry/detail/json_depth.hpp"
#include "circuitry/detail/text_file.hpp"
#include "circuitry/forward.hpp"
#include "circuitry/head_detectors.hpp"
#include "circuitry/path_expansion.hpp"
#include "circuitry/path_orders.hpp"
#include "circuitry/report.hpp"

namespace circuitry {

/// Reads a JSON array of token sequences (`[[0, 12, 99], [0, 5, 7]]`). io_error when the file
/// is missing, unreadable, a directory or a FIFO (detail::read_regular_file); format_error naming
/// the file for anything but such an array; argument_error (make_tokens) for an empty batch or
/// ragged sequences.
inline Tokens read_tokens_json(const std::string& path) {
  const std::string str =
      detail::read_regular_file(path, "token file", "a JSON array of token sequences");
  const std::size_t deep = detail::json_too_deep_at(str.data(), str.data() + str.size());
  if (deep != std::string::npos) {
    throw format_error("token file '" + path + "': the JSON " + detail::json_depth_message(deep) +
                       "), expected an array of token sequences");
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(str);
  } catch (const nlohmann::json::exception& e) {
    throw format_error("token file '" + path + "': not valid JSON (" +
                       detail::json_parse_message(e.what()) + ")");
  }
  if (!j.is_array()) {
    throw format_error("token file '" + path +
                       "': expected a JSON array of token sequences, found " +
                       std::string(j.type_name()));
  }
  std::vector<std::vector<int>> sequences;
  for (std::size_t b = 0; b < j.size(); ++b) {
    if (!j[b].is_array()) {
      throw format_error("token file '" + path + "': sequence " + std::to_string(b) +
                         " is not an array of token ids");
    }
    std::vector<int> seq;
    for (std::size_t p = 0; p < j[b].size(); ++p) {
      const auto& t = j[b][p];
      if (!t.is_number_integer() || t.get<long long>() < 0 || t.get<long long>() > (1LL << 30)) {
        throw format_error("token file '" + path + "': sequence " + std::to_string(b) +
                           ", position " + std::to_string(p) + ": " + t.dump() +
                           " is not a token id (an integer in [0, 2^30])");
      }
      seq.push_back(static_cast<int>(t.get<long long>()));
    }
    sequences.push_back(std::move(seq));
  }
  try {
    return make_tokens(sequences);
  } catch (const argument_error& e) {
    throw argument_error("token file '" + path + "': " + e.message());
  }
}

/// argument_error unless `tokens` can hold the `--tokens` figures of a model of `config`: they
/// fit it (check_tokens) and every sequence has at least 2 tokens (a next token to predict, a
/// previous token to attend to). The message starts with `source` (e.g. "token file 'x.json'").
inline void check_eval_tokens(const Tokens& tokens, const ModelConfig& config,
                              const std::string& source = "report_tokens") {
  try {
    check_tokens(tokens, config);
  } catch (const argument_error& e) {
    throw argument_error(source + ": " + e.message());
  }
  if (tokens.cols() < 2) {
    throw argument_error(source + ": sequences of " + std::to_string(tokens.cols()) +
                         " token have no next token to predict (need at least 2 tokens)");
  }
}

/// argument_error unless `tokens` are `[BOS] r r` sequences for the `--induction-tokens`
/// figures of a model of `config`: they fit it (check_eval_tokens), have 2n + 1 tokens, n >= 2
/// (the induction diagonal 1 - n is below the main one), and tokens n + 1 .. 2n repeat tokens
/// 1 .. n. The message starts with `source` and names the first sequence and position that
/// do not repeat.
inline void check_repeated_tokens(const Tokens& tokens, const ModelConfig& config,
                                  const std::string& source = "report_induction") {
  check_eval_tokens(tokens, config, source);
  const Index n = (tokens.cols() - 1) / 2;
  if (n < 2 || 2 * n + 1 != tokens.cols()) {
    throw argument_error(source + ": sequences of " + std::to_string(tokens.cols()) +
                         " tokens are not [BOS] r r with |r| >= 2 (expected an odd length >= 5)");
  }
  for (Index b = 0; b < tokens.rows(); ++b) {
    for (Index i = 1; i <= n; ++i) {
      if (tokens(b, n + i) != tokens(b, i)) {
        throw argument_error(source + ": sequence " + std::to_string(b) +
                             " is not [BOS] r r: position " + std::to_string(n + i) + " holds " +
                             std::to_string(tokens(b, n + i)) + ", position " + std::to_string(i) +
                             " holds " + std::to_string(tokens(b, i)));
      }
    }
  }
}

namespace detail {
inline nlohmann::json tokens_json(const Tokens& t) {
  nlohmann::json out = nlohmann::json::array();
  for (Index b = 0; b < t.rows(); ++b) {
    std::vector<int> row(t.row(b).data(), t.row(b).data() + t.cols());
    out.push_back(row);
  }
  return out;
}

template <typename Scalar>
nlohmann::json head_scores_json(const HeadScores<Scalar>& s) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& layer : s) {
    nlohmann::json row = nlohmann::json::array();
    for (Scalar v : layer) row.push_back(static_cast<double>(v));
    out.push_back(std::move(row));
  }
  return out;
}
}  // namespace detail

/// `path_expansion` of the report (see data_report.hpp) from a summary of the path expansion
/// (`summarize` or `summarize_by_order`) and the model's own loss from the forward pass; for two
/// layers, `virtual_pairs` holds (marginal loss, "L0Ha->L1Hb") of every virtual-head term.
template <typename Scalar>
nlohmann::json path_expansion_json(
    const PathExpansionSummary<Scalar>& s, int n_layers, int n_heads, double model_loss,
    const std::vector<std::pair<double, std::string>>& virtual_pairs = {}) {
  nlohmann::json out;
  out["definition"] =
      "resid_final = sum of kept terms; logits = LN_final_frozen(resid_final) W_U + b_U. direct = "
      "embedding (+ positional for standard); L0 = layer-0 head outputs on the direct input + "
      "b_O[0]; L1_first_order = layer-1 heads reading (direct + b_O[0]) + b_O[1]; virtual = "
      "layer-1 heads reading layer-0 head outputs. Patterns and LN scales frozen. "
      "loss_by_order[k]: "
      "terms of order <= k (a bias alone counts 1); loss_by_layer[l + 1]: terms written by layers "
      "<= l; ablate_head_everywhere: without every term through the head; "
      "ablate_head_first_order: without the head reading the direct path and biases.";
  out["uniform"] = static_cast<double>(s.uniform_loss);
  out["direct"] = static_cast<double>(s.loss_by_layer.front());
  if (n_layers >= 1) out["direct+L0"] = static_cast<double>(s.loss_by_layer.at(1));
  out["full"] = static_cast<double>(s.full_loss);
  out["model_loss"] = model_loss;
  auto per_head = [&](auto member) {
    nlohmann::json arr = nlohmann::json::array();
    for (int l = 0; l < n_layers; ++l) {
      nlohmann::json row = nlohmann::json::array();
      for (int h = 0; h < n_heads; ++h) {
        const std::size_t i = static_cast<std::size_t>(l) * static_cast<std::size_t>(n_heads) +
                              static_cast<std::size_t>(h);
        row.push_back(static_cast<double>(s.heads[i].*member));
      }
      arr.push_back(std::move(row));
    }
    return arr;
  };
  const nlohmann::json everywhere = per_head(&HeadPathLosses<Scalar>::without_everywhere);
  const nlohmann::json first_order = per_head(&HeadPathLosses<Scalar>::without_first_order);
  if (n_layers == 2) {
    out["direct+L0+L1_first_order"] = static_cast<double>(s.loss_by_order.at(1));
    out["ablate_L1_first_order_head"] = first_order[1];
    out["ablate_L0_head_everywhere"] = everywhere[0];
    std::vector<std::pair<double, std::string>> by_loss = virtual_pairs;
    std::sort(by_loss.begin(), by_loss.end(),
              [](const auto& a, const auto& b) { return a.first > b.first; });
    nlohmann::json top = nlohmann::json::array();
    for (std::size_t i = 0; i < std::min<std::size_t>(8, by_loss.size()); ++i) {
      top.push_back({by_loss[i].first, by_loss[i].second});
    }
    out["ablate_virtual_pair_top"] = std::move(top);
  }
  nlohmann::json by_order = nlohmann::json::array(), by_layer = nlohmann::json::array();
  for (Scalar v : s.loss_by_order) by_order.push_back(static_cast<double>(v));
  for (Scalar v : s.loss_by_layer) by_layer.push_back(static_cast<double>(v));
  out["loss_by_order"] = std::move(by_order);
  out["loss_by_layer"] = std::move(by_layer);
  out["ablate_head_everywhere"] = everywhere;
  out["ablate_head_first_order"] = first_order;
  return out;
}

/// `path_expansion` of the report from an expansion of the model on the batch: one pass of
/// `summarize` with the marginal losses of the virtual-head terms (two layers).
template <typename Scalar>
nlohmann::json path_expansion_json(const PathExpansion<Scalar>& pe, int n_layers, int n_heads,
                                   double model_loss) {
  std::vector<std::size_t> virtual_terms;  // "L0Ha->L1Hb": their marginal losses, same pass
  for (std::size_t i = 0; i < pe.size(); ++i) {
    const PathTerm& t = pe.term(i);
    if (n_layers == 2 && t.source == PathSource::direct && t.chain.size() == 2)
      virtual_terms.push_back(i);
  }
  const PathExpansionSummary<Scalar> s = summarize(pe, virtual_terms);
  std::vector<std::pair<double, std::string>> virtual_pairs;
  for (std::size_t k = 0; k < virtual_terms.size(); ++k) {
    virtual_pairs.emplace_back(static_cast<double>(s.marginal[k]),
                               pe.term(virtual_terms[k]).name());
  }
  return path_expansion_json(s, n_layers, n_heads, model_loss, virtual_pairs);
}

/// The `--tokens` figures (see data_report.hpp) of a processed model on `tokens`.
/// argument_error (check_eval_tokens) for tokens that cannot hold them.
template <typename Scalar>
void report_tokens(const AttentionOnlyModel<Scalar>& model, const Tokens& tokens,
                   nlohmann::json& out) {
  check_eval_tokens(tokens, model.config);
  ForwardOptions options;
  options.cache = true;
  options.cache_activations = false;
  options.cache_residual = false;
  ForwardResult<Scalar> run = forward(model, tokens, options);
  nlohmann::json eval;
  eval["tokens"] = detail::tokens_json(tokens);
  eval["loss_mean"] = static_cast<double>(run.loss_mean);
  eval["loss_per_seq"] = detail::to_json_vector<Scalar>(run.loss_per_seq);
  eval["logprob_next_seq0"] = detail::to_json_vector<Scalar>(run.logprob_next(0));
  nlohmann::json top = nlohmann::json::object();
  for (Index p : {0, 1, 50, 200, 255}) {
    if (p < run.seq_len) top[std::to_string(p)] = run.top_k(0, p, 5);
  }
  eval["top5_next_seq0_pos"] = std::move(top);
  out["eval_batch"] = std::move(eval);

  nlohmann::json corners = nlohmann::json::object();
  const Index c = std::min<Index>(16, run.seq_len);
  for (const HeadId id : model.head_ids()) {
    const Matrix<Scalar> corner = run.cache->pattern(id, 0).topLeftCorner(c, c);
    nlohmann::json rows = nlohmann::json::array();
    for (Index i = 0; i < c; ++i)
      rows.push_back(detail::to_json_vector<Scalar>(corner.row(i).transpose()));
    corners[id.name()] = std::move(rows);
  }
  out["pattern_seq0_corner16"] = std::move(corners);
  out["prev_token_score"] = detail::head_scores_json(previous_token_scores(run));

  const double model_loss = static_cast<double>(run.loss_mean);
  // The model outlives pe and frozen: borrowed (a no-op deleter) rather than copied.
  const std::shared_ptr<const AttentionOnlyModel<Scalar>> borrowed(
      &model, [](const AttentionOnlyModel<Scalar>*) {});
  if (model.n_layers() > 2) {
    // (1 + H)^L head chains: the summary from sums of streams instead (path_orders.hpp).
    const FrozenModel<Scalar> frozen(borrowed, tokens, std::move(*run.cache));
    out["path_expansion"] = path_expansion_json(summarize_by_order(frozen), model.n_layers(),
                                                model.n_heads(), model_loss);
    return;
  }
  PathExpansionOptions expand;
  expand.keep_patterns = false;  // read above for the last time: freed as the terms are built
  const PathExpansion<Scalar> pe(borrowed, tokens, std::move(run), expand);  // takes logits, cache
  out["path_expansion"] = path_expansion_json(pe, model.n_layers(), model.n_heads(), model_loss);
}

/// The `--induction-tokens` figures (see data_report.hpp) on `[0] + r + r` sequences.
/// argument_error (check_repeated_tokens) for sequences of another form.
template <typename Scalar>
void report_induction(const AttentionOnlyModel<Scalar>& model, const Tokens& tokens,
                      nlohmann::json& out) {
  check_repeated_tokens(tokens, model.config);
  ForwardOptions options;
  options.cache = true;
  options.cache_activations = false;
  options.cache_residual = false;
  const ForwardResult<Scalar> run = forward(model, tokens, options);
  const Index n = (run.seq_len - 1) / 2;
  out["repeated_tokens"] = detail::tokens_json(tokens);
  out["induction_score"] = detail::head_scores_json(induction_scores(run, n));
  const auto [first, second] = repeated_halves_loss(run);
  out["repeated_loss_first_half"] = static_cast<double>(first);
  out["repeated_loss_second_half"] = static_cast<double>(second);
}

}  // namespace circuitry
