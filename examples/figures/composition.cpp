// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT

// Figure "composition" (paper §"Two-Layer Attention Only Transformers", composition scores):
// for each layer-0 head A and layer-1 head B, ||W_A W_B||_F / (||W_A||_F ||W_B||_F) with
// W_A = OV_A and W_B = QK_B (Q-composition: A's output feeds B's queries), QK_B^T (K: B's keys)
// or OV_B (V: B's values), as TransformerLens's all_composition_scores. The random baseline is
// the mean score of Gaussian heads of the same shapes.

#include "common.hpp"

namespace figures {
namespace composition_figure {

nlohmann::json compute(const Args& a) {
  const Model model = load_processed(a.model, "composition", 2);
  const int H = model.n_heads();
  const circuitry::CompositionBaseline base =
      circuitry::composition_baseline(model.config.d_model, model.config.d_head, 50);
  nlohmann::json out = {
      {"figure", "composition"},
      {"model", model_stem(a.model)},
      {"definition",
       "composition score ||W_A W_B||_F / (||W_A||_F ||W_B||_F), W_A = OV of the "
       "layer-0 head (row), W_B = QK (Q: its query side, K: its key side) or OV "
       "(V) of the layer-1 head (column), as TransformerLens's "
       "all_composition_scores; baseline: Gaussian heads of the same shapes"},
      {"baseline", {{"mean", base.mean}, {"stddev", base.stddev}, {"samples", base.samples}}}};
  for (const auto type : {circuitry::CompositionType::Q, circuitry::CompositionType::K,
                          circuitry::CompositionType::V}) {
    const circuitry::CompositionScores<double> s = circuitry::composition_scores(model, type);
    circuitry::Matrix<double> m(H, H);
    for (int i = 0; i < H; ++i) {
      for (int j = 0; j < H; ++j) m(i, j) = s({0, i}, {1, j});
    }
    out[std::string(circuitry::to_string(type))] = json_rows(m);
  }
  return out;
}

std::string draw(const nlohmann::json& d) {
  namespace svg = circuitry::svg;
  const double mean = d.at("baseline").at("mean");
  double hi = mean;
  for (const char* k : {"Q", "K", "V"}) {
    for (const auto& row : rows_of(d.at(k))) {
      for (double v : row) hi = std::max(hi, v);
    }
  }
  const int H = static_cast<int>(d.at("Q").size());
  svg::Canvas c(1080, 470);
  c.heading("Composition scores, layer 0 → layer 1: " + d.at("model").get<std::string>(),
            "random baseline (Gaussian heads of these shapes): " + svg::label(mean, 3) + " ± " +
                svg::label(d.at("baseline").at("stddev").get<double>(), 2) +
                ", marked on each colour bar");
  const char* titles[] = {"Q-composition", "K-composition", "V-composition"};
  int k = 0;
  for (const char* key : {"Q", "K", "V"}) {
    svg::HeatmapOptions o;
    o.title = titles[k];
    o.vmin = 0;
    o.vmax = hi;
    o.x_label = "layer-1 head";
    o.y_label = k == 0 ? "layer-0 head" : "";
    o.marks = {{mean, "baseline", "#d00"}};
    o.digits = 2;
    svg::heatmap(c, {80.0 + 340 * k, 90, 320, 300}, rows_of(d.at(key)), head_names(0, H),
                 head_names(1, H), o);
    ++k;
  }
  return c.str();
}

}  // namespace composition_figure

Figure composition() {
  return {"composition", composition_figure::compute, composition_figure::draw};
}

}  // namespace figures
