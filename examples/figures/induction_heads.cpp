// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT

// Figure "induction-heads" (paper §"Induction Heads"): the attention patterns of the detected
// previous-token head (layer 0, largest mean attention to position p - 1) and induction head
// (largest mean attention to the token after the previous copy of the current token) on
// repeated random tokens [0] + r + r, and of the induction head on a real snippet of held-out
// Python where a line repeats; the previous-token and induction scores of every head.

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include "common.hpp"

namespace figures {
namespace induction_heads_figure {

constexpr circuitry::Index kWindow = 24;  // rows and columns of the pattern crops

using circuitry::Index;

/// The crop pattern(rows, cols) of sequence b as rows of numbers.
nlohmann::json crop(const circuitry::ForwardResult<double>& run, circuitry::HeadId id, Index b,
                    Index row0, Index col0, Index n_rows, Index n_cols) {
  return json_rows(run.cache->pattern(id, b).block(row0, col0, n_rows, n_cols));
}

nlohmann::json texts(const TokenText& text, const circuitry::Tokens& t, Index b, Index p0,
                     Index n) {
  nlohmann::json out = nlohmann::json::array();
  for (Index p = p0; p < p0 + n; ++p) out.push_back(text(t(b, p)));
  return out;
}

/// The first line of the held-out text (>= 24 characters, >= 8 letters) that repeats within one
/// document close enough that both copies fit in `max_tokens`: the text from the start of its
/// first copy to the end of its second, and the two copies' character offsets.
struct Snippet {
  std::string text, line;
  std::size_t second = 0;  // offset of the second copy in text
};

Snippet find_repeated_line(const Args& a, const circuitry::Tokenizer& tok, Index max_tokens) {
  std::ifstream in(a.data + "/eval-text.txt", std::ios::binary);
  if (!in)
    throw circuitry::io_error("figure induction-heads: cannot read '" + a.data + "/eval-text.txt'");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string all = ss.str();
  const std::string sep = "<|endoftext|>";
  for (std::size_t start = 0; start < all.size();) {
    std::size_t end = all.find(sep, start);
    if (end == std::string::npos) end = all.size();
    const std::string doc = all.substr(start, end - start);
    start = end + sep.size();
    for (std::size_t p = 0; p < doc.size();) {
      std::size_t q = doc.find('\n', p);
      if (q == std::string::npos) break;
      const std::string line = doc.substr(p, q - p + 1);
      const auto letters = std::count_if(line.begin(), line.end(),
                                         [](unsigned char ch) { return std::isalpha(ch) != 0; });
      if (line.size() >= 24 && letters >= 8) {
        const std::size_t again = doc.find("\n" + line, q);
        if (again != std::string::npos && again - p < 4000) {
          Snippet s{doc.substr(p, again + 1 + line.size() - p), line, again + 1 - p};
          if (static_cast<Index>(tok.encode(s.text).size()) + 1 <= max_tokens) return s;
        }
      }
      p = q + 1;
    }
  }
  throw circuitry::argument_error(
      "figure induction-heads: no repeated line found in the held-out text");
}

nlohmann::json compute(const Args& a) {
  const Model model = load_processed(a.model, "induction-heads", 2);
  const TokenText text(a.tokenizer);
  circuitry::ForwardOptions fo;
  fo.cache = true;
  fo.cache_activations = false;
  fo.cache_residual = false;

  const circuitry::Tokens rep = circuitry::read_tokens_json(a.tokens + "/repeated-10x101.json");
  const circuitry::ForwardResult<double> run = circuitry::forward(model, rep, fo);
  const Index n = (run.seq_len - 1) / 2;
  const auto prev = circuitry::previous_token_scores(run);
  const auto induction = circuitry::induction_scores(run, n);
  const auto [first_half, second_half] = circuitry::repeated_halves_loss(run);
  circuitry::HeadId P{0, 0}, I{1, 0};
  for (const circuitry::HeadId id : model.head_ids()) {
    const auto l = static_cast<std::size_t>(id.layer), h = static_cast<std::size_t>(id.head);
    if (id.layer == 0 && prev[l][h] > prev[0][static_cast<std::size_t>(P.head)]) P = id;
    if (id.layer > 0 &&
        induction[l][h] >
            induction[static_cast<std::size_t>(I.layer)][static_cast<std::size_t>(I.head)]) {
      I = id;
    }
  }
  const Index w = std::min(kWindow, n - 1);
  nlohmann::json random = {{"tokens", "repeated-10x101.json, sequence 0"},
                           {"loss_first_half", first_half},
                           {"loss_second_half", second_half},
                           {"previous_token_pattern",
                            {{"rows", texts(text, rep, 0, 1, w)},
                             {"cols", texts(text, rep, 0, 0, w)},
                             {"first_row", 1},
                             {"first_col", 0},
                             {"pattern", crop(run, P, 0, 1, 0, w, w)}}},
                           {"induction_pattern",
                            {{"rows", texts(text, rep, 0, n + 1, w)},
                             {"cols", texts(text, rep, 0, 1, w)},
                             {"first_row", n + 1},
                             {"first_col", 1},
                             {"pattern", crop(run, I, 0, n + 1, 1, w, w)}}}};

  const Snippet snip = find_repeated_line(a, text.tokenizer(), model.config.n_ctx);
  std::vector<int> ids{0};
  const std::vector<int> first = text.tokenizer().encode(snip.text.substr(0, snip.second));
  const std::vector<int> line = text.tokenizer().encode(snip.line);
  ids.insert(ids.end(), first.begin(), first.end());
  const Index second_at = static_cast<Index>(ids.size());
  ids.insert(ids.end(), line.begin(), line.end());
  const circuitry::Tokens real = circuitry::make_tokens({ids});
  const circuitry::ForwardResult<double> rr = circuitry::forward(model, real, fo);
  // The snippet starts with the first copy of the line: its tokens follow token 0, up to the
  // trailing newline (which merges with the next line's indentation there).
  const Index first_at = 1;
  const Index same = std::mismatch(line.begin(), line.end(), ids.begin() + 1).first - line.begin();
  if (same + 1 < static_cast<Index>(line.size())) {
    throw circuitry::argument_error(
        "figure induction-heads: the first copy of the repeated line encodes differently");
  }
  const Index m = std::min<Index>(same, kWindow);
  const circuitry::Vector<double> lp = rr.logprob_next(0);  // lp(p): log P(token p+1 | ..p)
  double loss1 = 0, loss2 = 0;
  for (Index k = 0; k + 1 < same; ++k) {  // predictions of the line's tokens 2 .. same
    loss1 -= lp(first_at + k) / static_cast<double>(same - 1);
    loss2 -= lp(second_at + k) / static_cast<double>(same - 1);
  }
  nlohmann::json snippet = {{"line", circuitry::svg::visible_token(snip.line)},
                            {"tokens", static_cast<Index>(ids.size())},
                            {"line_tokens", static_cast<Index>(line.size())},
                            {"loss_first_copy", loss1},
                            {"loss_second_copy", loss2},
                            {"induction_pattern",
                             {{"rows", texts(text, real, 0, second_at, m)},
                              {"cols", texts(text, real, 0, first_at, m)},
                              {"first_row", second_at},
                              {"first_col", first_at},
                              {"pattern", crop(rr, I, 0, second_at, first_at, m, m)}}}};

  nlohmann::json scores = nlohmann::json::array();
  for (const circuitry::HeadId id : model.head_ids()) {
    const auto l = static_cast<std::size_t>(id.layer), h = static_cast<std::size_t>(id.head);
    scores.push_back(
        {{"head", id.name()}, {"previous_token", prev[l][h]}, {"induction", induction[l][h]}});
  }
  return {{"figure", "induction-heads"},
          {"model", model_stem(a.model)},
          {"definition",
           "previous_token score: mean attention from p to p - 1; induction score: mean attention "
           "from a token of the second copy to the token after its first copy (repeated-10x101: "
           "[0] + r + r, |r| = 50); patterns: rows are destinations (queries), columns sources"},
          {"previous_token_head", P.name()},
          {"induction_head", I.name()},
          {"random", random},
          {"snippet", snippet},
          {"scores", scores}};
}

void pattern_panel(circuitry::svg::Canvas& c, const circuitry::svg::Rect& r,
                   const nlohmann::json& p, const std::string& title, const std::string& y_label) {
  circuitry::svg::HeatmapOptions o;
  o.title = title;
  o.vmin = 0;
  o.vmax = 1;
  o.annotate = false;
  o.x_label = "source (key) token";
  o.y_label = y_label;
  o.label_size = 9;
  circuitry::svg::heatmap(c, r, rows_of(p.at("pattern")),
                          p.at("rows").get<std::vector<std::string>>(),
                          p.at("cols").get<std::vector<std::string>>(), o);
}

std::string draw(const nlohmann::json& d) {
  namespace svg = circuitry::svg;
  svg::Canvas c(1240, 1010);
  const std::string P = d.at("previous_token_head"), I = d.at("induction_head");
  const auto& rnd = d.at("random");
  const auto& snip = d.at("snippet");
  c.heading("Induction heads: " + d.at("model").get<std::string>(),
            "previous-token head " + P + ", induction head " + I +
                "; loss on repeated random tokens: " + fixed(rnd.at("loss_first_half"), 2) +
                " nats (first copy) → " + fixed(rnd.at("loss_second_half"), 2) + " (second copy)");
  pattern_panel(c, {110, 90, 360, 290}, rnd.at("previous_token_pattern"),
                P + " on random tokens (positions 1–24)", "destination (query)");
  pattern_panel(c, {520, 90, 360, 290}, rnd.at("induction_pattern"),
                I + " on the repeat: 2nd copy × 1st copy", "");
  pattern_panel(c, {930, 90, 300, 250}, snip.at("induction_pattern"), I + " on a repeated line",
                "");
  svg::TextStyle t;
  t.size = 11;
  t.fill = "#444";
  c.text(20, 470,
         "Held-out snippet: the line «" + snip.at("line").get<std::string>() + "» repeats (" +
             std::to_string(snip.at("line_tokens").get<int>()) +
             " tokens); loss on its first copy " + fixed(snip.at("loss_first_copy"), 2) +
             " nats/token, on the second " + fixed(snip.at("loss_second_copy"), 2) + ".",
         t);
  std::vector<std::string> labels;
  std::vector<double> prev, ind;
  for (const auto& s : d.at("scores")) {
    labels.push_back(s.at("head"));
    prev.push_back(s.at("previous_token"));
    ind.push_back(s.at("induction"));
  }
  svg::BarOptions o;
  o.title = "Previous-token score (mean attention to p − 1) per head";
  o.y_label = "attention";
  o.colors = {svg::category(0)};
  svg::bars(c, {90, 530, 1100, 150}, labels, prev, o);
  o.title = "Induction score (mean attention to the token after the previous copy) per head";
  o.colors = {svg::category(1)};
  svg::bars(c, {90, 790, 1100, 150}, labels, ind, o);
  return c.str();
}

}  // namespace induction_heads_figure

Figure induction_heads() {
  return {"induction-heads", induction_heads_figure::compute, induction_heads_figure::draw};
}

}  // namespace figures
