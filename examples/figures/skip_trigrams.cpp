// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT

// Figure "skip-trigrams" (paper §"One-Layer Attention-Only Transformers": a one-layer model is a
// sum of bigram and skip-trigram terms "source … destination → output"). For each layer-0 head,
// read off the full QK circuit which source tokens a destination token attends to, and off the
// full OV circuit which output tokens the attended source raises:
//   qk(d, s) = (LN(W_E[d]) W_Q + b_Q)(LN(W_E[s]) W_K + b_K)^T / sqrt(d_head), minus its mean
//              over the sources (softmax ignores a shift), sources and destinations restricted
//              to the 1000 most common tokens of the held-out text;
//   ov(s, o) = (LN(W_E[s]) W_V + b_V) W_O W_U[:, o]   (before the final LayerNorm's scale).
// The triples are the largest qk(d, s) (at most two per destination), each with the output o
// that s raises most. Python patterns a reader would look for are checked as probes.

#include <cmath>

#include "common.hpp"

namespace figures {
namespace skip_trigrams_figure {

using circuitry::Index;
using circuitry::Matrix;
constexpr Index kCommon = 1000;
constexpr std::size_t kTriples = 10;

struct Probe {
  const char* source;
  const char* destination;
  const char* output;
};
// "def f(self", "import numpy as np", "for x in range"
constexpr Probe kProbes[] = {
    {" def", "(", "self"}, {" numpy", " as", " np"}, {" for", " in", " range"}};

nlohmann::json compute(const Args& a) {
  const Model model = load_processed(a.model);
  const TokenText text(a.tokenizer);
  std::vector<int> common;
  for (const auto& [id, count] : common_tokens(a, static_cast<std::size_t>(kCommon)))
    common.push_back(id);
  const Index C = static_cast<Index>(common.size());
  const Matrix<double> X = model.layers[0].ln1(model.W_E(common, Eigen::all));  // [C, d_model]
  const double scale = 1.0 / std::sqrt(static_cast<double>(model.config.d_head));
  nlohmann::json heads = nlohmann::json::array();
  nlohmann::json probes = nlohmann::json::array();
  for (int h = 0; h < model.n_heads(); ++h) {
    const circuitry::HeadId id{0, h};
    const auto& head = model.head(id);
    const Matrix<double> q = (X * head.W_Q).rowwise() + head.b_Q.transpose();
    const Matrix<double> k = (X * head.W_K).rowwise() + head.b_K.transpose();
    Matrix<double> qk = q * k.transpose() * scale;  // [destination, source]
    const circuitry::Vector<double> row_mean = qk.rowwise().mean();
    qk.colwise() -= row_mean;
    const Matrix<double> ov_in = ((X * head.W_V).rowwise() + head.b_V.transpose()) * head.W_O;
    const Matrix<double> ov = ov_in * model.W_U;                    // [C sources, d_vocab]
    std::vector<std::pair<double, std::pair<Index, Index>>> pairs;  // (qk, (d, s))
    for (Index d = 0; d < C; ++d) {
      Index best = 0, second = -1;
      for (Index s = 1; s < C; ++s) {
        if (qk(d, s) > qk(d, best)) {
          second = best, best = s;
        } else if (second < 0 || qk(d, s) > qk(d, second)) {
          second = s;
        }
      }
      pairs.push_back({qk(d, best), {d, best}});
      if (second >= 0) pairs.push_back({qk(d, second), {d, second}});
    }
    std::sort(pairs.begin(), pairs.end(), [](const auto& x, const auto& y) {
      return x.first > y.first || (x.first == y.first && x.second < y.second);
    });
    nlohmann::json triples = nlohmann::json::array();
    for (std::size_t t = 0; t < std::min(kTriples, pairs.size()); ++t) {
      const auto [d, s] = pairs[t].second;
      Index o = 0;
      ov.row(s).maxCoeff(&o);
      triples.push_back({{"source", text(common[static_cast<std::size_t>(s)])},
                         {"destination", text(common[static_cast<std::size_t>(d)])},
                         {"output", text(static_cast<int>(o))},
                         {"qk", pairs[t].first},
                         {"ov", ov(s, o)}});
    }
    heads.push_back({{"head", id.name()}, {"triples", triples}});
    for (const Probe& p : kProbes) {
      const auto s_id = text.id(p.source), d_id = text.id(p.destination), o_id = text.id(p.output);
      if (!s_id || !d_id || !o_id) continue;
      const auto pos = [&](int tok) {
        return std::find(common.begin(), common.end(), tok) - common.begin();
      };
      const Index s = pos(*s_id), d = pos(*d_id);
      if (s >= C || d >= C) continue;
      const Index qk_rank = 1 + (qk.row(d).array() > qk(d, s)).count();
      const Index ov_rank = 1 + (ov.row(s).array() > ov(s, *o_id)).count();
      probes.push_back({{"head", id.name()},
                        {"pattern", text(*s_id) + " … " + text(*d_id) + " → " + text(*o_id)},
                        {"qk", qk(d, s)},
                        {"qk_rank", qk_rank},
                        {"ov", ov(s, *o_id)},
                        {"ov_rank", ov_rank}});
    }
  }
  return {{"figure", "skip-trigrams"},
          {"model", model_stem(a.model)},
          {"definition",
           "qk(d, s) = (LN(W_E[d]) W_Q + b_Q)(LN(W_E[s]) W_K + b_K)^T / sqrt(d_head) minus its "
           "mean over sources, d and s among the 1000 most common held-out tokens; ov(s, o) = "
           "(LN(W_E[s]) W_V + b_V) W_O W_U[:, o]; triples: largest qk (<= 2 per destination) with "
           "the output s raises most; probes: qk_rank among the 1000 sources (1 = most "
           "attended), ov_rank among all outputs (1 = most raised)"},
          {"heads", heads},
          {"probes", probes}};
}

std::string draw(const nlohmann::json& d) {
  namespace svg = circuitry::svg;
  const auto& heads = d.at("heads");
  const double row_h = 16, block = row_h * (kTriples + 1) + 34;
  const std::size_t half = (heads.size() + 1) / 2;
  const auto& probes = d.at("probes");
  svg::Canvas c(1220, 80 + block * static_cast<double>(half) + 60 +
                          row_h * static_cast<double>(probes.size() + 1));
  c.heading(
      "Skip-trigrams read off the full QK and OV circuits: " + d.at("model").get<std::string>(),
      "source … destination → output: the destination attends to the source (qk, centred "
      "attention logit), which raises the output's logit (ov); · = space, ↵ = newline");
  svg::TextStyle t;
  t.size = 13;
  t.bold = true;
  for (std::size_t k = 0; k < heads.size(); ++k) {
    const double x = k < half ? 20 : 620, y = 70 + block * static_cast<double>(k % half);
    c.text(x, y + 12, heads[k].at("head").get<std::string>(), t);
    std::vector<std::vector<std::string>> rows;
    for (const auto& tr : heads[k].at("triples")) {
      rows.push_back({tr.at("source"), tr.at("destination"), tr.at("output"), fixed(tr.at("qk"), 2),
                      fixed(tr.at("ov"), 2)});
    }
    svg::table(c, x, y + 18, {"source", "… destination", "→ output", "qk", "ov"}, rows,
               {150, 150, 150, 60, 60}, row_h);
  }
  const double y = 70 + block * static_cast<double>(half) + 10;
  c.text(20, y + 12, "Python patterns (probes): what each head does with them", t);
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : probes) {
    rows.push_back({p.at("head"), p.at("pattern"), fixed(p.at("qk"), 2),
                    std::to_string(p.at("qk_rank").get<long>()), fixed(p.at("ov"), 2),
                    std::to_string(p.at("ov_rank").get<long>())});
  }
  svg::table(c, 20, y + 18,
             {"head", "source … destination → output", "qk", "qk rank /1000", "ov",
              "ov rank /" + std::string("d_vocab")},
             rows, {70, 420, 80, 130, 80, 130}, row_h);
  return c.str();
}

}  // namespace skip_trigrams_figure

Figure skip_trigrams() {
  return {"skip-trigrams", skip_trigrams_figure::compute, skip_trigrams_figure::draw};
}

}  // namespace figures
