// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT

// Figure "subspaces" (paper §"Residual stream" subspaces and §"Two-Layer Attention Only
// Transformers", where positional and token information occupy different subspaces): PCA spectra
// of the token embedding W_E and the positional embedding W_pos (rows centred), and how much of
// each layer-0 head's QK and OV circuit lives in their principal subspaces:
//   QK score X·Y = ||U_X^T QK U_Y||_F / ||QK||_F (queries read X, keys read Y),
//   OV score X   = ||U_X^T OV||_F / ||OV||_F        (values read X),
// U_X: the top principal directions of X holding 80% of its variance. A random subspace of k
// directions scores about sqrt(k / d_model) per side. As a check, the same scores against a
// randomly rotated positional subspace (R U_pos, R a fixed random rotation) must fall to that
// baseline: the heads' positional structure is aligned with W_pos, not an artefact of its rank.

#include <cmath>
#include <random>

#include "common.hpp"

namespace figures {
namespace subspaces_figure {

using circuitry::Index;
using circuitry::Matrix;
constexpr double kVariance = 0.8;

struct Pca {
  std::vector<double> cumulative;  // cumulative fraction of variance, per component
  Matrix<double> U;                // [d_model, k]: the components reaching kVariance
};

Pca pca(const Matrix<double>& W) {
  const Matrix<double> centred = W.rowwise() - W.colwise().mean();
  Eigen::JacobiSVD<Matrix<double>> svd(centred, Eigen::ComputeThinV);
  const circuitry::Vector<double> var = svd.singularValues().array().square();
  Pca p;
  double total = var.sum(), acc = 0;
  Index k = 0;
  for (Index i = 0; i < var.size(); ++i) {
    acc += var(i);
    p.cumulative.push_back(total > 0 ? acc / total : 0.0);
    if (k == 0 && p.cumulative.back() >= kVariance) k = i + 1;
  }
  p.U = svd.matrixV().leftCols(std::max<Index>(k, 1));
  return p;
}

double ratio(const Matrix<double>& part, const Matrix<double>& whole) {
  const double n = whole.norm();
  return n > 0 ? part.norm() / n : 0.0;
}

nlohmann::json compute(const Args& a) {
  const Model model = load_processed(a.model);
  const Index D = model.config.d_model;
  const Pca E = pca(model.W_E), P = pca(model.W_pos);
  std::mt19937_64 rng(2021);
  std::normal_distribution<double> normal;
  Matrix<double> G(D, D);
  for (Index j = 0; j < D; ++j) {
    for (Index i = 0; i < D; ++i) G(i, j) = normal(rng);
  }
  const Matrix<double> R = Eigen::HouseholderQR<Matrix<double>>(G).householderQ();
  const Matrix<double> Pr = R * P.U;  // the rotated positional subspace, orthonormal
  nlohmann::json heads = nlohmann::json::array();
  int lowered = 0;
  for (int h = 0; h < model.n_heads(); ++h) {
    const auto& head = model.head({0, h});
    const Matrix<double> QK = head.W_Q * head.W_K.transpose(), OV = head.W_V * head.W_O;
    const double pp = ratio(P.U.transpose() * QK * P.U, QK);
    const double pp_rot = ratio(Pr.transpose() * QK * Pr, QK);
    lowered += pp_rot < pp ? 1 : 0;
    heads.push_back({{"head", circuitry::HeadId{0, h}.name()},
                     {"qk_EE", ratio(E.U.transpose() * QK * E.U, QK)},
                     {"qk_EP", ratio(E.U.transpose() * QK * P.U, QK)},
                     {"qk_PE", ratio(P.U.transpose() * QK * E.U, QK)},
                     {"qk_PP", pp},
                     {"qk_PP_rotated", pp_rot},
                     {"ov_E", ratio(E.U.transpose() * OV, OV)},
                     {"ov_P", ratio(P.U.transpose() * OV, OV)},
                     {"ov_P_rotated", ratio(Pr.transpose() * OV, OV)}});
  }
  const auto k = [&](const Pca& p) { return static_cast<double>(p.U.cols()); };
  return {{"figure", "subspaces"},
          {"model", model_stem(a.model)},
          {"definition",
           "PCA of the row-centred W_E and W_pos; U_X: top principal directions holding 80% of the "
           "variance; qk_XY = ||U_X^T W_Q W_K^T U_Y||_F / ||W_Q W_K^T||_F, ov_X = ||U_X^T W_V "
           "W_O||_F / ||W_V W_O||_F for each layer-0 head; *_rotated: against R U_pos, R a random "
           "rotation (seed 2021); baseline: expected score of random subspaces"},
          {"W_E_cumulative_variance", E.cumulative},
          {"W_pos_cumulative_variance", P.cumulative},
          {"k_E", E.U.cols()},
          {"k_pos", P.U.cols()},
          {"baseline",
           {{"qk_PP", k(P) / static_cast<double>(D)},
            {"qk_EE", k(E) / static_cast<double>(D)},
            {"ov_P", std::sqrt(k(P) / static_cast<double>(D))},
            {"ov_E", std::sqrt(k(E) / static_cast<double>(D))}}},
          {"heads", heads},
          {"rotation_lowers_qk_PP", {{"heads", lowered}, {"of", model.n_heads()}}}};
}

std::string draw(const nlohmann::json& d) {
  namespace svg = circuitry::svg;
  svg::Canvas c(1200, 590);
  const auto& base = d.at("baseline");
  c.heading("Residual-stream subspaces: " + d.at("model").get<std::string>(),
            "token (E) and positional (P) principal subspaces holding 80% of the variance: k_E = " +
                std::to_string(d.at("k_E").get<int>()) +
                ", k_pos = " + std::to_string(d.at("k_pos").get<int>()) +
                " of d_model; rotating P lowers the "
                "QK P·P score for " +
                std::to_string(d.at("rotation_lowers_qk_PP").at("heads").get<int>()) + " of " +
                std::to_string(d.at("rotation_lowers_qk_PP").at("of").get<int>()) + " heads");
  // Cumulative variance curves.
  const svg::Rect r{80, 80, 380, 380};
  const auto e = d.at("W_E_cumulative_variance").get<std::vector<double>>();
  const auto p = d.at("W_pos_cumulative_variance").get<std::vector<double>>();
  const double n = static_cast<double>(std::max(e.size(), p.size()));
  const svg::Scale x{0, n, r.x, r.x + r.w}, y{0, 1, r.y + r.h, r.y};
  svg::axes(c, r, x, y, "principal components", "cumulative fraction of variance");
  svg::panel_title(c, r, "PCA spectra of W_E and W_pos");
  std::size_t series = 0;
  for (const auto* v : {&e, &p}) {
    const std::string col = svg::category(series++).hex();
    for (std::size_t i = 1; i < v->size(); ++i) {
      c.line(x(static_cast<double>(i)), y((*v)[i - 1]), x(static_cast<double>(i + 1)), y((*v)[i]),
             col, 2);
    }
  }
  c.line(r.x, y(0.8), r.x + r.w, y(0.8), "#999", 1, "4,3");
  svg::legend(c, r.x + r.w - 120, r.y + r.h - 40,
              {{svg::category(0), "W_E"}, {svg::category(1), "W_pos"}});
  // Scores per head.
  std::vector<std::vector<double>> values;
  std::vector<std::string> rows;
  const std::vector<std::string> keys = {"qk_EE",         "qk_EP", "qk_PE", "qk_PP",
                                         "qk_PP_rotated", "ov_E",  "ov_P",  "ov_P_rotated"};
  for (const auto& h : d.at("heads")) {
    rows.push_back(h.at("head"));
    std::vector<double> row;
    for (const auto& k : keys) row.push_back(h.at(k));
    values.push_back(row);
  }
  svg::HeatmapOptions o;
  o.title = "Fraction of each layer-0 circuit in the subspaces (Frobenius)";
  o.vmin = 0;
  o.vmax = 1;
  o.x_label = "QK query·key subspaces, OV value subspace";
  svg::heatmap(c, {620, 80, 560, 380}, values, rows,
               {"QK E·E", "QK E·P", "QK P·E", "QK P·P", "QK P·P rot.", "OV E", "OV P", "OV P rot."},
               o);
  svg::TextStyle t;
  t.size = 10.5;
  t.fill = "#444";
  c.text(620, 580,
         "random-subspace baseline: QK P·P " + svg::label(base.at("qk_PP").get<double>(), 2) +
             ", QK E·E " + svg::label(base.at("qk_EE").get<double>(), 2) + ", OV P " +
             svg::label(base.at("ov_P").get<double>(), 2) + ", OV E " +
             svg::label(base.at("ov_E").get<double>(), 2),
         t);
  return c.str();
}

}  // namespace subspaces_figure

Figure subspaces() { return {"subspaces", subspaces_figure::compute, subspaces_figure::draw}; }

}  // namespace figures
