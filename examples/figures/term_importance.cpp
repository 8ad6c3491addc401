// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT

// Figure "term-importance" (paper §"Path Expansion of Logits" and the ablation figures of the
// two-layer model): the loss on the 8 x 256 held-out batch when the residual stream keeps only
// some terms of the path expansion (patterns and LayerNorm scales frozen): the direct path,
// + the layer-0 heads, + the layer-1 heads reading the direct path (first order), the full
// model; the marginal loss of each head; and the virtual heads (layer-1 heads reading a layer-0
// head's output) whose removal costs the most.

#include "common.hpp"

namespace figures {
namespace term_importance_figure {

nlohmann::json compute(const Args& a) {
  const Model model = load_processed(a.model, "term-importance", 2, 2);
  const circuitry::Tokens tokens = circuitry::read_tokens_json(a.tokens + "/eval-batch-8x256.json");
  nlohmann::json report;
  circuitry::report_tokens(model, tokens, report);
  nlohmann::json pe = report.at("path_expansion");
  return {{"figure", "term-importance"},
          {"model", model_stem(a.model)},
          {"tokens", "eval-batch-8x256.json"},
          {"definition", pe.at("definition")},
          {"uniform", pe.at("uniform")},
          {"direct", pe.at("direct")},
          {"direct+L0", pe.at("direct+L0")},
          {"direct+L0+L1_first_order", pe.at("direct+L0+L1_first_order")},
          {"full", pe.at("full")},
          {"ablate_L0_head_everywhere", pe.at("ablate_L0_head_everywhere")},
          {"ablate_L1_first_order_head", pe.at("ablate_L1_first_order_head")},
          {"ablate_virtual_pair_top", pe.at("ablate_virtual_pair_top")}};
}

std::string draw(const nlohmann::json& d) {
  namespace svg = circuitry::svg;
  svg::Canvas c(1100, 900);
  const double full = d.at("full");
  c.heading("Term importance in the path expansion: " + d.at("model").get<std::string>(),
            "mean next-token loss (nats) on the 8 × 256 held-out batch; patterns and LayerNorm "
            "scales frozen at the full model's");
  svg::BarOptions o;
  o.title = "Loss keeping terms up to …";
  o.y_label = "loss (nats)";
  o.label_rotate = 0;
  o.colors = {svg::Color{150, 150, 150}, svg::category(0), svg::category(0), svg::category(0),
              svg::category(2)};
  o.lines = {{full, "full model " + fixed(full, 3), "#2a7"}};
  svg::bars(
      c, {90, 90, 960, 230}, {"uniform", "direct", "+ L0 heads", "+ L1 first order", "full"},
      {d.at("uniform"), d.at("direct"), d.at("direct+L0"), d.at("direct+L0+L1_first_order"), full},
      o);
  std::vector<std::string> labels;
  std::vector<double> values;
  std::vector<svg::Color> colors;
  const auto& l0 = d.at("ablate_L0_head_everywhere");
  const auto& l1 = d.at("ablate_L1_first_order_head");
  for (std::size_t h = 0; h < l0.size(); ++h) {
    labels.push_back("L0H" + std::to_string(h));
    values.push_back(l0[h].get<double>() - full);
    colors.push_back(svg::category(0));
  }
  for (std::size_t h = 0; h < l1.size(); ++h) {
    labels.push_back("L1H" + std::to_string(h));
    values.push_back(l1[h].get<double>() - full);
    colors.push_back(svg::category(1));
  }
  svg::BarOptions m;
  m.title =
      "Marginal loss per head: L0 head removed everywhere, L1 head's first-order terms removed";
  m.y_label = "loss increase (nats)";
  m.colors = colors;
  svg::bars(c, {90, 390, 960, 200}, labels, values, m);
  svg::legend(c, 100, 405,
              {{svg::category(0), "layer 0: every term through the head"},
               {svg::category(1), "layer 1: the head reading direct path + biases"}});
  labels.clear();
  values.clear();
  for (const auto& t : d.at("ablate_virtual_pair_top")) {
    labels.push_back(t[1].get<std::string>());
    values.push_back(t[0].get<double>());
  }
  svg::BarOptions v;
  v.title = "Largest virtual-head terms: loss increase when one L0 → L1 term is removed";
  v.y_label = "loss increase (nats)";
  v.colors = {svg::category(3)};
  v.label_rotate = 0;
  svg::bars(c, {90, 670, 960, 180}, labels, values, v);
  return c.str();
}

}  // namespace term_importance_figure

Figure term_importance() {
  return {"term-importance", term_importance_figure::compute, term_importance_figure::draw};
}

}  // namespace figures
