// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file report.hpp
/// The weight-based circuit report: every weight-based figure of TransformerLens's reference
/// JSON, under the same key with the same shape and meaning (see README, "circuitry-report"):
///
/// | group         | keys                                                                      |
/// |---------------|---------------------------------------------------------------------------|
/// | `spectra`     | ov_eigenvalues, qk_eigenvalues, full_ov_eigenvalues, full_qk_eigenvalues   |
/// |               | [L][H][d] as {"re", "im"}; ov_copying_score, qk_positivity,                |
/// |               | full_ov_copying_score, full_qk_positivity [L][H]; ov_singular_values
/// [L][H][d]| | `norms`       | ov_frobenius, qk_frobenius, full_ov_frobenius, full_qk_frobenius
/// [L][H]    | | `composition` | composition_Q, composition_K, composition_V [L][H][L][H] | |
/// `copying`     | full_ov_top1_copying_acc, full_ov_top5_copying_acc [L][H]                  | |
/// `top`         | probe_tokens; full_circuit_top5 {"L{l}H{h}": [P][5],                       | |
/// | "L{l}H{h}_qk_top_keys_for_query": [P][5]}; direct_path_top5_next [P][5]    |
///
/// plus `config`. The model must already be processed as TransformerLens processes it
/// (`process_weights`), as the references are.

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "circuitry/circuits.hpp"
#include "circuitry/composition.hpp"
#include "circuitry/detail/parallel.hpp"
#include "circuitry/model.hpp"

namespace circuitry {

/// The report's groups (see report.hpp).
inline const std::vector<std::string>& report_groups() {
  static const std::vector<std::string> groups = {"spectra", "norms", "composition", "copying",
                                                  "top"};
  return groups;
}

/// What `circuit_report` computes.
struct ReportOptions {
  std::set<std::string> groups = {"spectra", "norms", "composition", "copying", "top"};
  /// Tokens whose full-circuit rows `top` lists. Empty: 16 tokens evenly spaced over the
  /// vocabulary, 1 + i * (d_vocab / 16) (the references' 1, 257, ..., 3841 for d_vocab 4096).
  std::vector<int> probe_tokens;
  int top_k = 5;
};

/// The default probe tokens for a vocabulary of `d_vocab` tokens (see ReportOptions).
inline std::vector<int> default_probe_tokens(int d_vocab) {
  std::vector<int> tokens;
  const int step = std::max(1, d_vocab / 16);
  for (int i = 0; i < 16 && 1 + i * step < d_vocab; ++i) tokens.push_back(1 + i * step);
  return tokens;
}

/// Parses a comma list of groups ("spectra,norms"); argument_error naming an unknown group.
inline std::set<std::string> parse_report_groups(const std::string& list) {
  std::set<std::string> out;
  std::size_t start = 0;
  while (start <= list.size()) {
    const std::size_t end = std::min(list.find(',', start), list.size());
    const std::string g = list.substr(start, end - start);
    const auto& known = report_groups();
    if (std::find(known.begin(), known.end(), g) == known.end()) {
      throw argument_error(
          "--only: unknown group '" + g +
          "' (expected a comma list of spectra, norms, composition, copying, top)");
    }
    out.insert(g);
    start = end + 1;
  }
  return out;
}

namespace detail {

/// The position of head `id` in model.head_ids() (layer-major), for results kept in that order.
inline std::size_t head_slot(HeadId id, int n_heads) {
  return static_cast<std::size_t>(id.layer) * static_cast<std::size_t>(n_heads) +
         static_cast<std::size_t>(id.head);
}

/// [L][H] JSON array of f(HeadId).
template <typename F>
nlohmann::json per_head(int n_layers, int n_heads, F&& f) {
  nlohmann::json out = nlohmann::json::array();
  for (int l = 0; l < n_layers; ++l) {
    nlohmann::json row = nlohmann::json::array();
    for (int h = 0; h < n_heads; ++h) row.push_back(f(HeadId{l, h}));
    out.push_back(std::move(row));
  }
  return out;
}

template <typename Scalar>
nlohmann::json to_json_vector(const Vector<Scalar>& v) {
  nlohmann::json out = nlohmann::json::array();
  for (Index i = 0; i < v.size(); ++i) out.push_back(static_cast<double>(v(i)));
  return out;
}

/// {"re": [L][H][d], "im": [L][H][d]} from per-head spectra.
template <typename Scalar>
nlohmann::json complex_json(const std::vector<std::vector<ComplexVector<Scalar>>>& spectra) {
  nlohmann::json re = nlohmann::json::array(), im = nlohmann::json::array();
  for (const auto& layer : spectra) {
    nlohmann::json lre = nlohmann::json::array(), lim = nlohmann::json::array();
    for (const auto& s : layer) {
      lre.push_back(to_json_vector<Scalar>(s.real()));
      lim.push_back(to_json_vector<Scalar>(s.imag()));
    }
    re.push_back(std::move(lre));
    im.push_back(std::move(lim));
  }
  return {{"re", std::move(re)}, {"im", std::move(im)}};
}

/// Rows first .. first + count of `top.indices`, as a JSON array of arrays.
template <typename Scalar>
nlohmann::json top_k_json(const TopK<Scalar>& top, Index first, Index count) {
  nlohmann::json out = nlohmann::json::array();
  for (Index r = first; r < first + count; ++r) {
    nlohmann::json row = nlohmann::json::array();
    for (Index c = 0; c < top.indices.cols(); ++c) row.push_back(top.indices(r, c));
    out.push_back(std::move(row));
  }
  return out;
}

template <typename Scalar>
Matrix<Scalar> embedding_rows(const AttentionOnlyModel<Scalar>& model,
                              const std::vector<int>& tokens) {
  Matrix<Scalar> rows(static_cast<Index>(tokens.size()), model.W_E.cols());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= model.W_E.rows()) {
      throw argument_error("probe token " + std::to_string(tokens[i]) +
                           " is outside the vocabulary [0, " + std::to_string(model.W_E.rows()) +
                           ")");
    }
    rows.row(static_cast<Index>(i)) = model.W_E.row(tokens[i]);
  }
  return rows;
}

}  // namespace detail

/// The spectra group: eigenvalues of OV, QK, full OV and full QK, their copying scores /
/// positivity, and OV singular values.
template <typename Scalar>
void report_spectra(const AttentionOnlyModel<Scalar>& model, const EmbeddingGrams<Scalar>& grams,
                    nlohmann::json& out) {
  const int L = model.n_layers(), H = model.n_heads();
  using Spectra = std::vector<std::vector<ComplexVector<Scalar>>>;
  Spectra ov(static_cast<std::size_t>(L),
             std::vector<ComplexVector<Scalar>>(static_cast<std::size_t>(H)));
  Spectra qk = ov, full_ov = ov, full_qk = ov;
  const auto at = [](auto& spectra, HeadId id) -> auto& {
    return spectra[static_cast<std::size_t>(id.layer)][static_cast<std::size_t>(id.head)];
  };
  // In parallel over heads: each head's products and eigensolvers are small and serial, so
  // parallel products inside them mostly made the other threads wait.
  const std::vector<HeadId> ids = model.head_ids();
  const Index n = static_cast<Index>(ids.size());
  detail::parallel_for(n, [&](Index i) {
    const HeadId id = ids[static_cast<std::size_t>(i)];
    at(ov, id) = ov_eigenvalues(model, id);
    at(qk, id) = qk_eigenvalues(model, id);
    at(full_ov, id) = full_ov_eigenvalues(model, grams, id);
    at(full_qk, id) = full_qk_eigenvalues(model, grams, id);
  });
  std::vector<Vector<Scalar>> singular(ids.size());
  detail::parallel_for(n, [&](Index i) {
    singular[static_cast<std::size_t>(i)] =
        model.head(ids[static_cast<std::size_t>(i)]).ov().singular_values();
  });
  out["ov_eigenvalues"] = detail::complex_json<Scalar>(ov);
  out["qk_eigenvalues"] = detail::complex_json<Scalar>(qk);
  out["full_ov_eigenvalues"] = detail::complex_json<Scalar>(full_ov);
  out["full_qk_eigenvalues"] = detail::complex_json<Scalar>(full_qk);
  auto score = [&at](const Spectra& s) {
    return [&s, &at](HeadId id) { return static_cast<double>(copying_score(at(s, id))); };
  };
  out["ov_copying_score"] = detail::per_head(L, H, score(ov));
  out["qk_positivity"] = detail::per_head(L, H, score(qk));
  out["full_ov_copying_score"] = detail::per_head(L, H, score(full_ov));
  out["full_qk_positivity"] = detail::per_head(L, H, score(full_qk));
  out["ov_singular_values"] = detail::per_head(L, H, [&](HeadId id) {
    return detail::to_json_vector<Scalar>(singular[detail::head_slot(id, H)]);
  });
}

/// The norms group: Frobenius norms of OV, QK (from d_head x d_head Grams) and of the full
/// circuits (from the shared EmbeddingGrams).
template <typename Scalar>
void report_norms(const AttentionOnlyModel<Scalar>& model, const EmbeddingGrams<Scalar>& grams,
                  nlohmann::json& out) {
  const int L = model.n_layers(), H = model.n_heads();
  const std::vector<HeadId> ids = model.head_ids();
  std::vector<std::array<double, 4>> norms(ids.size());                // OV, QK, full OV, full QK
  detail::parallel_for(static_cast<Index>(ids.size()), [&](Index i) {  // as report_spectra
    const HeadId id = ids[static_cast<std::size_t>(i)];
    norms[static_cast<std::size_t>(i)] = {static_cast<double>(model.head(id).ov().frobenius_norm()),
                                          static_cast<double>(model.head(id).qk().frobenius_norm()),
                                          static_cast<double>(full_ov_frobenius(model, grams, id)),
                                          static_cast<double>(full_qk_frobenius(model, grams, id))};
  });
  const auto column = [&](std::size_t k) {
    return detail::per_head(
        L, H, [&norms, H, k](HeadId id) { return norms[detail::head_slot(id, H)][k]; });
  };
  out["ov_frobenius"] = column(0);
  out["qk_frobenius"] = column(1);
  out["full_ov_frobenius"] = column(2);
  out["full_qk_frobenius"] = column(3);
}

/// The composition group: composition_Q, composition_K, composition_V as [L][H][L][H].
template <typename Scalar>
void report_composition(const AttentionOnlyModel<Scalar>& model, nlohmann::json& out) {
  const int L = model.n_layers(), H = model.n_heads();
  const std::array<CompositionScores<Scalar>, 3> all = all_composition_scores(model);
  const CompositionType types[3] = {CompositionType::Q, CompositionType::K, CompositionType::V};
  for (std::size_t t = 0; t < 3; ++t) {
    const CompositionScores<Scalar>& s = all[t];
    out[std::string("composition_") + to_string(types[t])] = detail::per_head(L, H, [&](HeadId a) {
      return detail::per_head(L, H, [&](HeadId b) { return static_cast<double>(s(a, b)); });
    });
  }
}

/// The copying group: top-1 and top-5 copying accuracy of every head's full OV circuit.
template <typename Scalar>
void report_copying(const AttentionOnlyModel<Scalar>& model, nlohmann::json& out) {
  const int L = model.n_layers(), H = model.n_heads();
  const std::vector<CopyingAccuracy> acc = full_ov_copying_accuracies(model);
  auto at = [&](HeadId id) { return acc[detail::head_slot(id, H)]; };
  out["full_ov_top1_copying_acc"] = detail::per_head(L, H, [&](HeadId id) { return at(id).top1; });
  out["full_ov_top5_copying_acc"] = detail::per_head(L, H, [&](HeadId id) { return at(id).top5; });
}

/// The top group: for each probe token, the top-k rows of each head's full OV circuit (output
/// tokens), full QK circuit (key tokens, the probe as query) and of the direct path W_E W_U.
///
/// The probe rows of every head are stacked first, e_p W_V^h W_O^h and e_p W_Q^h W_K^h^T
/// ([heads x probes, d_model]), then multiplied by W_U and by W_E^T in blocks: one product of
/// (heads x probes) d_model d_vocab multiply-adds per circuit, and no [d_vocab, d_head] or
/// [d_head, d_vocab] factor per head (W_E W_K^h for every head was ~90% of this group's time on
/// GPT-2 small's shapes).
template <typename Scalar>
void report_top(const AttentionOnlyModel<Scalar>& model, std::vector<int> probe, Index k,
                nlohmann::json& out) {
  if (probe.empty()) probe = default_probe_tokens(model.config.d_vocab);
  const Matrix<Scalar> E = detail::embedding_rows(model, probe);
  out["probe_tokens"] = probe;
  const std::vector<HeadId> ids = model.head_ids();
  const Index P = E.rows(), n = static_cast<Index>(ids.size()), d_model = model.W_E.cols();
  constexpr Index kBlockRows = 64;  // rows of the products with W_U and W_E^T at a time
  Matrix<Scalar> ov(n * P, d_model), qk(n * P, d_model);
  for (Index i = 0; i < n; ++i) {
    const auto& h = model.head(ids[static_cast<std::size_t>(i)]);
    ov.middleRows(i * P, P).noalias() = (E * h.W_V) * h.W_O;
    qk.middleRows(i * P, P).noalias() = (E * h.W_Q) * h.W_K.transpose();
  }
  const TopK<Scalar> ov_top = detail::factored::top_k_of_product(ov, model.W_U, k, kBlockRows);
  const TopK<Scalar> qk_top =
      detail::factored::top_k_of_product(qk, model.W_E.transpose(), k, kBlockRows);
  nlohmann::json tops = nlohmann::json::object();
  for (Index i = 0; i < n; ++i) {
    const std::string name = ids[static_cast<std::size_t>(i)].name();
    tops[name] = detail::top_k_json(ov_top, i * P, P);
    tops[name + "_qk_top_keys_for_query"] = detail::top_k_json(qk_top, i * P, P);
  }
  out["full_circuit_top5"] = std::move(tops);
  out["direct_path_top5_next"] =
      detail::top_k_json(detail::factored::top_k_of_product(E, model.W_U, k, kBlockRows), 0, P);
}

/// The report of `model` (processed as TransformerLens processes weights) for the chosen groups.
template <typename Scalar>
nlohmann::json circuit_report(const AttentionOnlyModel<Scalar>& model,
                              const ReportOptions& options = {}) {
  nlohmann::json out = nlohmann::json::object();
  auto want = [&](const char* g) { return options.groups.count(g) > 0; };
  if (want("spectra") || want("norms")) {
    const EmbeddingGrams<Scalar> grams(model);
    if (want("spectra")) report_spectra(model, grams, out);
    if (want("norms")) report_norms(model, grams, out);
  }
  if (want("composition")) report_composition(model, out);
  if (want("copying")) report_copying(model, out);
  if (want("top")) report_top(model, options.probe_tokens, options.top_k, out);
  return out;
}

}  // namespace circuitry
