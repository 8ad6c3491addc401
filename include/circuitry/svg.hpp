// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file svg.hpp
/// A small SVG plotting layer for circuitry's figures: panels drawn into a rectangle of a
/// `Canvas` (svg_canvas.hpp: the document, colours, text helpers) — axes with "nice" ticks,
/// bars, heatmaps with labels and a colour bar, scatter plots, tables, legends. No dependencies
/// beyond the standard library; the output is a self-contained SVG 1.1 document that browsers
/// render as is.
///
///     circuitry::svg::Canvas c(640, 360);
///     c.heading("Composition scores");
///     circuitry::svg::HeatmapOptions h;
///     h.title = "K-composition";
///     circuitry::svg::heatmap(c, {60, 60, 240, 240}, values, rows, cols, h);
///     std::ofstream("k.svg") << c.str();
///
/// Text is escaped for XML; bytes that are not valid UTF-8 (a BPE token can end inside a
/// character) are written as "\xNN". Numbers are written with at most 6 significant digits, so
/// the output is the same on every platform for the same input.

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "circuitry/svg_canvas.hpp"

namespace circuitry::svg {

/// A linear map from data [d0, d1] to pixels [p0, p1], with "nice" ticks.
struct Scale {
  double d0 = 0, d1 = 1, p0 = 0, p1 = 1;
  double operator()(double v) const { return p0 + (v - d0) / (d1 - d0) * (p1 - p0); }
  /// About `n` ticks at multiples of 1, 2 or 5 times a power of ten, inside [d0, d1].
  std::vector<double> ticks(int n = 5) const {
    const double lo = std::min(d0, d1), hi = std::max(d0, d1);
    const double raw = (hi - lo) / std::max(1, n);
    if (!(raw > 0) || !std::isfinite(raw)) return {lo};
    const double p = std::pow(10.0, std::floor(std::log10(raw))), f = raw / p;
    const double step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
    std::vector<double> out;
    for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + 1e-9 * step; t += step) {
      out.push_back(std::abs(t) < 1e-12 * step ? 0.0 : t);
    }
    return out;
  }
};

/// [min, max] of `values` (ignoring NaN), widened by `pad` of the span, and to include `also`.
inline std::pair<double, double> data_range(const std::vector<double>& values, double pad = 0.05,
                                            const std::vector<double>& also = {}) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : values) {
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  for (double v : also) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!(lo <= hi)) return {0, 1};
  if (lo == hi) return {lo - 0.5, hi + 0.5};
  const double span = hi - lo;
  return {lo - pad * span, hi + pad * span};
}

/// Axis frame, ticks, grid lines and labels of a plot area `r` for the scales `x` and `y`.
inline void axes(Canvas& c, const Rect& r, const Scale& x, const Scale& y,
                 const std::string& x_label, const std::string& y_label, bool x_ticks = true) {
  TextStyle small;
  small.size = 10;
  small.fill = "#444";
  for (double t : y.ticks()) {
    c.line(r.x, y(t), r.x + r.w, y(t), "#e5e5e5");
    small.anchor = "end";
    c.text(r.x - 4, y(t) + 3.5, detail::svg_label(t), small);
  }
  if (x_ticks) {
    for (double t : x.ticks()) {
      c.line(x(t), r.y, x(t), r.y + r.h, "#e5e5e5");
      small.anchor = "middle";
      c.text(x(t), r.y + r.h + 13, detail::svg_label(t), small);
    }
  }
  c.rect(r, "none", "#888");
  TextStyle label;
  label.size = 11.5;
  label.anchor = "middle";
  if (!x_label.empty()) c.text(r.x + r.w / 2, r.y + r.h + (x_ticks ? 30 : 16), x_label, label);
  if (!y_label.empty()) {
    label.rotate = -90;
    c.text(r.x - 42, r.y + r.h / 2, y_label, label);
  }
}

/// A panel title above the rectangle r.
inline void panel_title(Canvas& c, const Rect& r, const std::string& title) {
  TextStyle t;
  t.size = 13;
  t.bold = true;
  t.anchor = "middle";
  c.text(r.x + r.w / 2, r.y - 8, title, t);
}

/// A horizontal reference line at value v (dashed, labelled at its right end).
struct ReferenceLine {
  double value = 0;
  std::string label;
  std::string color = "#c00";
};

struct BarOptions {
  std::string title, y_label, x_label;
  std::vector<ReferenceLine> lines;
  std::vector<Color> colors;  ///< per bar; category(0) when empty
  bool value_labels = true;   ///< the value above (or below) each bar
  double label_rotate = -45;  ///< of the category labels under the bars
  bool zero_based = true;     ///< the y axis includes 0
};

/// Vertical bars of `values`, one per label, in the plot area r (the labels go below it).
inline void bars(Canvas& c, const Rect& r, const std::vector<std::string>& labels,
                 const std::vector<double>& values, const BarOptions& o = {}) {
  std::vector<double> also;
  if (o.zero_based) also.push_back(0);
  for (const ReferenceLine& l : o.lines) also.push_back(l.value);
  auto [lo, hi] = data_range(values, 0.08, also);
  if (o.zero_based && lo > 0) lo = 0;
  const Scale y{lo, hi, r.y + r.h, r.y};
  const Scale x{0, static_cast<double>(values.size()), r.x, r.x + r.w};
  axes(c, r, x, y, "", o.y_label, false);
  if (!o.title.empty()) panel_title(c, r, o.title);
  const double slot = r.w / static_cast<double>(std::max<std::size_t>(1, values.size())),
               base = y(std::max(lo, 0.0));
  TextStyle vl;
  vl.size = 9;
  vl.anchor = "middle";
  vl.fill = "#333";
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double v = values[i], x0 = r.x + slot * static_cast<double>(i) + 0.15 * slot;
    const Color col = o.colors.empty() ? category(0) : o.colors[i % o.colors.size()];
    const std::string label = i < labels.size() ? labels[i] : "";
    if (std::isfinite(v)) {
      c.rect({x0, std::min(base, y(v)), 0.7 * slot, std::abs(y(v) - base)}, col.hex(), "none",
             label + ": " + detail::svg_label(v, 6));
      if (o.value_labels) {
        c.text(x0 + 0.35 * slot, v >= 0 ? y(v) - 3 : y(v) + 11, detail::svg_label(v, 3), vl);
      }
    }
    TextStyle lt;
    lt.size = 10;
    lt.rotate = o.label_rotate;
    lt.anchor = o.label_rotate != 0 ? "end" : "middle";
    lt.monospace = true;
    c.text(x0 + 0.35 * slot, r.y + r.h + 13, label, lt);
  }
  if (lo < 0 && hi > 0) c.line(r.x, y(0), r.x + r.w, y(0), "#444");
  TextStyle ll;
  ll.size = 10;
  for (const ReferenceLine& l : o.lines) {
    c.line(r.x, y(l.value), r.x + r.w, y(l.value), l.color, 1.5, "6,4");
    ll.fill = l.color;
    c.text(r.x + 3, y(l.value) - 4, l.label, ll);
  }
  if (!o.x_label.empty()) {
    TextStyle xl;
    xl.size = 11.5;
    xl.anchor = "middle";
    c.text(r.x + r.w / 2, r.y + r.h + 70, o.x_label, xl);
  }
}

struct HeatmapOptions {
  std::string title, x_label, y_label, colorbar_label;
  bool diverging = false;            ///< symmetric range about 0 with the diverging map
  double vmin = NAN, vmax = NAN;     ///< the colour range; the data's when NaN
  bool annotate = true;              ///< write each cell's value (when cells are large enough)
  int digits = 2;                    ///< significant digits of the annotations
  std::vector<ReferenceLine> marks;  ///< values marked on the colour bar (e.g. a baseline)
  double label_size = 10;
};

/// A heatmap of values[i][j] (rows top to bottom), row and column labels, and a colour bar at
/// the right of r (r.w includes 70 px for it).
inline void heatmap(Canvas& c, const Rect& r, const std::vector<std::vector<double>>& values,
                    const std::vector<std::string>& row_labels,
                    const std::vector<std::string>& col_labels, const HeatmapOptions& o = {}) {
  const std::size_t n_rows = values.size(), n_cols = n_rows ? values[0].size() : 0;
  std::vector<double> all;
  for (const auto& row : values) all.insert(all.end(), row.begin(), row.end());
  // Not a structured binding: C++17 lambdas cannot capture one (color below).
  const std::pair<double, double> range = data_range(all, 0.0);
  double lo = range.first, hi = range.second;
  if (!std::isnan(o.vmin)) lo = o.vmin;
  if (!std::isnan(o.vmax)) hi = o.vmax;
  if (o.diverging) hi = std::max(std::abs(lo), std::abs(hi)), lo = -hi;
  if (!(hi > lo)) hi = lo + 1;
  const auto color = [&](double v) {
    const double t = (v - lo) / (hi - lo);
    return o.diverging ? diverging(2 * t - 1) : sequential(t);
  };
  const Rect grid{r.x, r.y, r.w - 70, r.h};
  const double cw = grid.w / static_cast<double>(std::max<std::size_t>(1, n_cols));
  const double ch = grid.h / static_cast<double>(std::max<std::size_t>(1, n_rows));
  TextStyle ann;
  ann.anchor = "middle";
  ann.size = std::min(11.0, std::min(cw / 4.0, ch * 0.45));
  for (std::size_t i = 0; i < n_rows; ++i) {
    for (std::size_t j = 0; j < n_cols; ++j) {
      const double v = values[i][j];
      const std::string tip = (i < row_labels.size() ? row_labels[i] : "") + " / " +
                              (j < col_labels.size() ? col_labels[j] : "") + ": " +
                              detail::svg_label(v, 6);
      const double x0 = grid.x + cw * static_cast<double>(j),
                   y0 = grid.y + ch * static_cast<double>(i);
      c.rect({x0, y0, cw + 0.3, ch + 0.3}, color(v).hex(), "none", tip);
      if (o.annotate && ann.size >= 6.5 && std::isfinite(v)) {
        const double t = std::abs((v - lo) / (hi - lo) - (o.diverging ? 0.5 : 0.0));
        ann.fill = t > (o.diverging ? 0.3 : 0.6) ? "#fff" : "#222";
        c.text(x0 + cw / 2, y0 + ch / 2 + ann.size / 3, detail::svg_label(v, o.digits), ann);
      }
    }
  }
  c.rect(grid, "none", "#888");
  TextStyle lab;
  lab.size = std::min(o.label_size, std::max(6.0, ch * 0.8));
  lab.anchor = "end";
  lab.monospace = true;
  for (std::size_t i = 0; i < n_rows && i < row_labels.size(); ++i) {
    c.text(grid.x - 4, grid.y + ch * (static_cast<double>(i) + 0.5) + lab.size / 3, row_labels[i],
           lab);
  }
  lab.size = std::min(o.label_size, std::max(6.0, cw * 0.8));
  lab.rotate = -60;
  for (std::size_t j = 0; j < n_cols && j < col_labels.size(); ++j) {
    const double x = grid.x + cw * (static_cast<double>(j) + 0.5) + lab.size / 3;
    c.text(x, grid.y + grid.h + 6, col_labels[j], lab);
  }
  if (!o.title.empty()) panel_title(c, grid, o.title);
  TextStyle axis;
  axis.size = 11.5;
  axis.anchor = "middle";
  if (!o.x_label.empty()) c.text(grid.x + grid.w / 2, grid.y + grid.h + 72, o.x_label, axis);
  if (!o.y_label.empty()) {
    axis.rotate = -90;
    c.text(grid.x - 58, grid.y + grid.h / 2, o.y_label, axis);
  }
  // Colour bar.
  const Rect bar{r.x + r.w - 56, r.y, 14, r.h};
  const int steps = 60;
  for (int k = 0; k < steps; ++k) {
    const double t1 = static_cast<double>(k) / steps;
    c.rect({bar.x, bar.y + bar.h * (1 - t1 - 1.0 / steps), bar.w, bar.h / steps + 0.3},
           color(lo + (t1 + 0.5 / steps) * (hi - lo)).hex());
  }
  c.rect(bar, "none", "#888");
  const Scale s{lo, hi, bar.y + bar.h, bar.y};
  TextStyle small;
  small.size = 9;
  for (double t : s.ticks(4)) {
    c.line(bar.x + bar.w, s(t), bar.x + bar.w + 3, s(t), "#444");
    c.text(bar.x + bar.w + 5, s(t) + 3, detail::svg_label(t), small);
  }
  for (const ReferenceLine& m : o.marks) {
    if (m.value < lo || m.value > hi) continue;
    c.line(bar.x - 4, s(m.value), bar.x + bar.w + 4, s(m.value), m.color, 2);
    TextStyle ml = small;
    ml.fill = m.color;
    ml.bold = true;
    c.text(bar.x + bar.w + 5, s(m.value) + 3, m.label, ml);
  }
  if (!o.colorbar_label.empty()) {
    TextStyle cl;
    cl.size = 10;
    cl.anchor = "middle";
    cl.rotate = 90;
    c.text(bar.x + bar.w + 38, bar.y + bar.h / 2, o.colorbar_label, cl);
  }
}

/// One point of a scatter plot; `label` is written next to it (and in its tooltip).
struct Point {
  double x = 0, y = 0;
  std::string label;
  Color color = category(0);
};

struct ScatterOptions {
  std::string title, x_label, y_label;
  std::vector<double> x_lines, y_lines;  ///< dashed reference lines (e.g. 0)
  bool labels = true;
  double radius = 4.5;
  std::pair<double, double> x_range{NAN, NAN}, y_range{NAN, NAN};  ///< the data's when NaN
};

/// A scatter plot of `points` in the plot area r.
inline void scatter(Canvas& c, const Rect& r, const std::vector<Point>& points,
                    const ScatterOptions& o = {}) {
  std::vector<double> xs, ys;
  for (const Point& p : points) xs.push_back(p.x), ys.push_back(p.y);
  auto xr = data_range(xs, 0.08, o.x_lines), yr = data_range(ys, 0.08, o.y_lines);
  if (!std::isnan(o.x_range.first)) xr = o.x_range;
  if (!std::isnan(o.y_range.first)) yr = o.y_range;
  const Scale x{xr.first, xr.second, r.x, r.x + r.w}, y{yr.first, yr.second, r.y + r.h, r.y};
  axes(c, r, x, y, o.x_label, o.y_label);
  if (!o.title.empty()) panel_title(c, r, o.title);
  for (double v : o.x_lines) c.line(x(v), r.y, x(v), r.y + r.h, "#999", 1, "4,3");
  for (double v : o.y_lines) c.line(r.x, y(v), r.x + r.w, y(v), "#999", 1, "4,3");
  TextStyle lt;
  lt.size = 10;
  std::vector<std::pair<double, double>> placed;  // label positions, to stack close labels
  for (const Point& p : points) {
    if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
    c.circle(x(p.x), y(p.y), o.radius, p.color.hex(), "#fff",
             p.label + " (" + detail::svg_label(p.x, 4) + ", " + detail::svg_label(p.y, 4) + ")",
             0.85);
    if (!o.labels || p.label.empty()) continue;
    double lx = x(p.x) + o.radius + 2, ly = y(p.y) - 3;
    const bool right_edge = lx + 7.0 * static_cast<double>(p.label.size()) > r.x + r.w;
    lt.anchor = right_edge ? "end" : "start";
    if (right_edge) lx = x(p.x) - o.radius - 2;
    for (bool moved = true; moved;) {
      moved = false;
      for (const auto& [px, py] : placed) {
        if (std::abs(px - lx) < 70 && std::abs(py - ly) < 11) ly = py + 12, moved = true;
      }
    }
    placed.emplace_back(lx, ly);
    c.text(lx, ly, p.label, lt);
  }
}

/// A table at (x, y): a header row and rows of cells, columns `widths` pixels wide; returns the
/// y below it. Cells are escaped; numbers are the caller's to format.
inline double table(Canvas& c, double x, double y, const std::vector<std::string>& header,
                    const std::vector<std::vector<std::string>>& rows,
                    const std::vector<double>& widths, double row_height = 17) {
  double w = 0;
  for (double v : widths) w += v;
  c.rect({x, y, w, row_height}, "#eef2f7");
  TextStyle t;
  t.size = 11;
  t.bold = true;
  double cx = x;
  for (std::size_t j = 0; j < header.size() && j < widths.size(); ++j) {
    c.text(cx + 4, y + row_height - 5, header[j], t);
    cx += widths[j];
  }
  t.bold = false;
  t.monospace = true;
  t.size = 10.5;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const double ry = y + row_height * static_cast<double>(i + 1);
    if (i % 2 == 1) c.rect({x, ry, w, row_height}, "#f7f7f7");
    cx = x;
    for (std::size_t j = 0; j < rows[i].size() && j < widths.size(); ++j) {
      c.text(cx + 4, ry + row_height - 5, rows[i][j], t);
      cx += widths[j];
    }
  }
  const double bottom = y + row_height * static_cast<double>(rows.size() + 1);
  c.line(x, y + row_height, x + w, y + row_height, "#888");
  c.line(x, bottom, x + w, bottom, "#888");
  return bottom;
}

/// A legend entry list at (x, y), one swatch and label per line.
inline void legend(Canvas& c, double x, double y,
                   const std::vector<std::pair<Color, std::string>>& entries) {
  TextStyle t;
  t.size = 10.5;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const double ry = y + 16 * static_cast<double>(i);
    c.rect({x, ry - 9, 10, 10}, entries[i].first.hex());
    c.text(x + 15, ry, entries[i].second, t);
  }
}

}  // namespace circuitry::svg
