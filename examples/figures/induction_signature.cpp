// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT

// Figure "induction-signature" (paper §"How Induction Heads Work", the scatter of copying against
// K-composition): for each layer-1 head B, the copying score of its full OV circuit (does it
// copy the token it attends to?) against the positivity of its K-composition term with the
// previous-token head A, W_E QK_B (W_E OV_A)^T (does it attend to tokens whose previous token
// matches the current one?). Induction heads sit in the top right. A is the layer-0 head with
// the largest previous-token score on the repeated random sequences.

#include "common.hpp"

namespace figures {
namespace induction_signature_figure {

nlohmann::json compute(const Args& a) {
  const Model model = load_processed(a.model, "induction-signature", 2);
  const circuitry::Tokens tokens = circuitry::read_tokens_json(a.tokens + "/repeated-10x101.json");
  circuitry::ForwardOptions fo;
  fo.cache = true;
  fo.cache_activations = false;
  fo.cache_residual = false;
  const circuitry::ForwardResult<double> run = circuitry::forward(model, tokens, fo);
  const auto prev = circuitry::previous_token_scores(run);
  const auto induction = circuitry::induction_scores(run, (run.seq_len - 1) / 2);
  const int H = model.n_heads();
  int A = 0;
  for (int h = 1; h < H; ++h) {
    if (prev[0][static_cast<std::size_t>(h)] > prev[0][static_cast<std::size_t>(A)]) A = h;
  }
  const circuitry::EmbeddingGrams<double> grams(model);
  nlohmann::json heads = nlohmann::json::array();
  for (int b = 0; b < H; ++b) {
    const circuitry::HeadId B{1, b};
    const double copying =
        circuitry::copying_score(circuitry::full_ov_eigenvalues(model, grams, B));
    const double positivity = circuitry::copying_score(
        circuitry::k_composition_circuit(model, circuitry::HeadId{0, A}, B).eigenvalues());
    heads.push_back({{"head", B.name()},
                     {"full_ov_copying", copying},
                     {"k_composition_positivity", positivity},
                     {"induction_score", induction[1][static_cast<std::size_t>(b)]}});
  }
  return {{"figure", "induction-signature"},
          {"model", model_stem(a.model)},
          {"definition",
           "x: copying score Re(sum λ)/sum|λ| of the layer-1 head's full OV circuit W_E OV W_U; "
           "y: the same of its K-composition term W_E QK (W_E OV_prev)^T with the previous-token "
           "head; induction_score on repeated-10x101 (attention to the token after the previous "
           "copy of the current token)"},
          {"previous_token_head", circuitry::HeadId{0, A}.name()},
          {"previous_token_score", prev[0][static_cast<std::size_t>(A)]},
          {"heads", heads}};
}

std::string draw(const nlohmann::json& d) {
  namespace svg = circuitry::svg;
  svg::Canvas c(760, 600);
  c.heading("Induction signature: " + d.at("model").get<std::string>(),
            "layer-1 heads; K-composition with the previous-token head " +
                d.at("previous_token_head").get<std::string>() +
                "; colour: induction score on repeated random tokens");
  std::vector<svg::Point> pts;
  double best = 0;
  for (const auto& h : d.at("heads")) best = std::max(best, h.at("induction_score").get<double>());
  for (const auto& h : d.at("heads")) {
    const double s = h.at("induction_score");
    svg::Point p;
    p.x = h.at("full_ov_copying");
    p.y = h.at("k_composition_positivity");
    p.label = h.at("head").get<std::string>() + " (" + fixed(s, 2) + ")";
    p.color =
        svg::interpolate({{0.0, {170, 170, 170}}, {1.0, {200, 30, 30}}}, best > 0 ? s / best : 0.0);
    pts.push_back(p);
  }
  svg::ScatterOptions o;
  o.x_label = "full OV circuit copying score (copies the attended token →)";
  o.y_label = "K-composition QK positivity (attends to 'previous token matches' →)";
  o.x_lines = {0};
  o.y_lines = {0};
  o.x_range = {-1.05, 1.05};
  o.y_range = {-1.05, 1.05};
  o.radius = 6;
  svg::scatter(c, {90, 70, 600, 460}, pts, o);
  svg::legend(c, 100, 88, {{{200, 30, 30}, "high induction score"}, {{170, 170, 170}, "low"}});
  return c.str();
}

}  // namespace induction_signature_figure

Figure induction_signature() {
  return {"induction-signature", induction_signature_figure::compute,
          induction_signature_figure::draw};
}

}  // namespace figures
