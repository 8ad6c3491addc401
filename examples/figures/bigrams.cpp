// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT

// Figure "bigrams": the direct path W_E W_U (paper §"Zero-layer transformers": the direct path
// approximates bigram statistics). For the most common tokens of the held-out text, the five
// next tokens the direct path ranks highest, with their probability under
// softmax(LN_final(W_E[t]) W_U + b_U): the model's prediction from the token alone in the
// residual stream (no heads, no positional embedding).

#include <cmath>

#include "common.hpp"

namespace figures {
namespace bigrams_figure {

constexpr std::size_t kRows = 24, kTop = 5;

nlohmann::json compute(const Args& a) {
  const Model model = load_processed(a.model);
  const TokenText text(a.tokenizer);
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& [id, count] : common_tokens(a, kRows)) {
    const circuitry::Matrix<double> embedded = model.ln_final(model.W_E.row(id));
    const circuitry::RowVector<double> logits = embedded * model.W_U + model.b_U.transpose();
    const double m = logits.maxCoeff();
    const double lse = m + std::log((logits.array() - m).exp().sum());
    std::vector<int> order(static_cast<std::size_t>(logits.size()));
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
    std::partial_sort(order.begin(), order.begin() + kTop, order.end(), [&](int u, int v) {
      return logits(u) > logits(v) || (logits(u) == logits(v) && u < v);
    });
    nlohmann::json next = nlohmann::json::array();
    for (std::size_t k = 0; k < kTop; ++k) {
      const int o = order[k];
      next.push_back({{"id", o},
                      {"text", text(o)},
                      {"logit", logits(o)},
                      {"prob", std::exp(logits(o) - lse)}});
    }
    rows.push_back({{"id", id}, {"text", text(id)}, {"count", count}, {"next", next}});
  }
  return {{"figure", "bigrams"},
          {"model", model_stem(a.model)},
          {"definition",
           "direct path: logits = LN_final(W_E[t]) W_U + b_U of the processed model; rows: the " +
               std::to_string(kRows) +
               " most frequent tokens of eval-tokens (token 0 excluded); next: the top 5 tokens "
               "of W_E[t] W_U with softmax probability"},
          {"rows", rows}};
}

std::string draw(const nlohmann::json& d) {
  namespace svg = circuitry::svg;
  const auto& rows = d.at("rows");
  const double row_h = 18;
  svg::Canvas c(1000, 110 + row_h * static_cast<double>(rows.size() + 1));
  c.heading(
      "Direct path (bigrams): " + d.at("model").get<std::string>(),
      "top next tokens of LN(W_E[t]) W_U + b_U for the most common tokens t, with probability "
      "(\u00b7 = space, \u21b5 = newline)");
  std::vector<std::vector<std::string>> cells;
  for (const auto& r : rows) {
    std::vector<std::string> row{r.at("text").get<std::string>(),
                                 std::to_string(r.at("count").get<long>())};
    for (const auto& n : r.at("next")) {
      row.push_back(n.at("text").get<std::string>() + "  " + fixed(n.at("prob").get<double>(), 2));
    }
    cells.push_back(row);
  }
  svg::table(c, 20, 60, {"token", "count", "1st", "2nd", "3rd", "4th", "5th"}, cells,
             {110, 70, 164, 164, 164, 164, 144}, row_h);
  return c.str();
}

}  // namespace bigrams_figure

Figure bigrams() { return {"bigrams", bigrams_figure::compute, bigrams_figure::draw}; }

}  // namespace figures
