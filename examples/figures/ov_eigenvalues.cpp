// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT

// Figure "ov-eigenvalues" (paper §"Detecting copying behavior" / "Summarizing OV/QK matrices"):
// each head's full OV circuit W_E W_V W_O W_U has at most d_head non-zero eigenvalues, those of
// the d_head x d_head matrix (W_O W_U)(W_E W_V). Positive real eigenvalues mean the head copies:
// a token it attends to raises that token's own logit. Copying score = Re(sum λ) / sum |λ|.

#include <algorithm>
#include <cmath>
#include <complex>

#include "common.hpp"

namespace figures {
namespace ov_eigenvalues_figure {

nlohmann::json compute(const Args& a) {
  const Model model = load_processed(a.model);
  const circuitry::EmbeddingGrams<double> grams(model);
  nlohmann::json heads = nlohmann::json::array();
  int copying = 0, positive = 0;
  for (const circuitry::HeadId id : model.head_ids()) {
    const circuitry::ComplexVector<double> ev = circuitry::full_ov_eigenvalues(model, grams, id);
    // A canonical order (|λ| descending, then real part, then imaginary part): the solver's own
    // order moves with the last bits of the product that feeds it.
    std::vector<std::complex<double>> sorted(ev.data(), ev.data() + ev.size());
    std::sort(sorted.begin(), sorted.end(),
              [](const std::complex<double>& x, const std::complex<double>& y) {
                if (std::abs(x) != std::abs(y)) return std::abs(x) > std::abs(y);
                if (x.real() != y.real()) return x.real() > y.real();
                return x.imag() > y.imag();
              });
    std::vector<double> re, im;
    for (const std::complex<double>& z : sorted) re.push_back(z.real()), im.push_back(z.imag());
    const double score = circuitry::copying_score(ev);
    copying += score > 0.5 ? 1 : 0;
    positive += score > 0 ? 1 : 0;
    heads.push_back({{"head", id.name()}, {"re", re}, {"im", im}, {"copying_score", score}});
  }
  const int n = static_cast<int>(heads.size());
  return {{"figure", "ov-eigenvalues"},
          {"model", model_stem(a.model)},
          {"definition",
           "eigenvalues of each head's full OV circuit W_E W_V W_O W_U (processed weights), from "
           "the d_head x d_head matrix (W_O W_U)(W_E W_V); copying_score = Re(sum) / sum |.|"},
          {"heads", heads},
          {"finding",
           {{"heads", n},
            {"copying_score_above_0.5", copying},
            {"copying_score_positive", positive},
            {"most_heads_copy", 2 * positive > n}}}};
}

std::string draw(const nlohmann::json& d) {
  namespace svg = circuitry::svg;
  const auto& heads = d.at("heads");
  const int n = static_cast<int>(heads.size()), cols = 4, rows = (n + cols - 1) / cols;
  const double cell = 190, top = 70, bars_h = 260;
  svg::Canvas c(cols * cell + 40, top + rows * (cell + 10) + bars_h + 40);
  const auto& f = d.at("finding");
  c.heading("Full OV circuit eigenvalues: " + d.at("model").get<std::string>(),
            std::to_string(f.at("copying_score_positive").get<int>()) + " of " + std::to_string(n) +
                " heads have a positive copying score, " +
                std::to_string(f.at("copying_score_above_0.5").get<int>()) +
                " above 0.5 (positive eigenvalues: the head copies what it attends to)");
  // Radius: log10 |λ| mapped from [lo, hi] (over all heads) to [0, R]; the angle is arg λ.
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& h : heads) {
    for (std::size_t i = 0; i < h.at("re").size(); ++i) {
      const double m = std::hypot(h.at("re")[i].get<double>(), h.at("im")[i].get<double>());
      if (m > 0) lo = std::min(lo, std::log10(m)), hi = std::max(hi, std::log10(m));
    }
  }
  lo = std::floor(lo), hi = std::ceil(hi);
  if (!(hi > lo)) hi = lo + 1;
  svg::TextStyle small;
  small.size = 9;
  small.fill = "#666";
  for (int k = 0; k < n; ++k) {
    const auto& h = heads[static_cast<std::size_t>(k)];
    const double cx = 20 + (k % cols) * cell + cell / 2,
                 cy = top + (k / cols) * (cell + 10) + cell / 2 + 6;
    const double R = cell / 2 - 18;
    for (double e = lo; e <= hi; e += 1) {
      const double r = R * (e - lo) / (hi - lo);
      c.circle(cx, cy, r, "none", "#ddd");
      if (e > lo) c.text(cx + r * 0.707 + 1, cy - r * 0.707 - 1, "1e" + svg::label(e), small);
    }
    c.line(cx - R, cy, cx + R, cy, "#bbb");
    c.line(cx, cy - R, cx, cy + R, "#bbb");
    for (std::size_t i = 0; i < h.at("re").size(); ++i) {
      const double re = h.at("re")[i], im = h.at("im")[i], m = std::hypot(re, im);
      if (!(m > 0)) continue;
      const double r = R * (std::log10(m) - lo) / (hi - lo), t = std::atan2(im, re);
      c.circle(cx + r * std::cos(t), cy - r * std::sin(t), 3,
               re >= 0 ? svg::category(0).hex() : svg::category(1).hex(), "none",
               "λ = " + svg::label(re) + (im >= 0 ? " + " : " - ") + svg::label(std::abs(im)) + "i",
               0.75);
    }
    svg::TextStyle t;
    t.size = 12;
    t.bold = true;
    t.anchor = "middle";
    c.text(cx, cy - R - 6,
           h.at("head").get<std::string>() + "  (copying " +
               fixed(h.at("copying_score").get<double>(), 2) + ")",
           t);
  }
  svg::legend(c, 24, top + rows * (cell + 10) - 4,
              {{svg::category(0), "Re λ ≥ 0"},
               {svg::category(1), "Re λ < 0  (radius: log10 |λ|, angle: arg λ)"}});
  std::vector<std::string> labels;
  std::vector<double> scores;
  std::vector<svg::Color> colors;
  for (const auto& h : heads) {
    labels.push_back(h.at("head"));
    scores.push_back(h.at("copying_score"));
    colors.push_back(scores.back() >= 0 ? svg::category(0) : svg::category(1));
  }
  svg::BarOptions o;
  o.title = "Copying score Re(Σλ) / Σ|λ| per head";
  o.y_label = "copying score";
  o.colors = colors;
  o.lines = {{0.5, "0.5", "#999"}};
  svg::bars(c, {70, top + rows * (cell + 10) + 50, cols * cell - 60, bars_h - 110}, labels, scores,
            o);
  return c.str();
}

}  // namespace ov_eigenvalues_figure

Figure ov_eigenvalues() {
  return {"ov-eigenvalues", ov_eigenvalues_figure::compute, ov_eigenvalues_figure::draw};
}

}  // namespace figures
