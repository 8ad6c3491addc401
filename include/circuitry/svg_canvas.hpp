// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file svg_canvas.hpp
/// The drawing surface of circuitry's figures (svg.hpp draws its panels on it): a `Canvas` of
/// absolute-positioned shapes and text whose `str()` is a self-contained SVG 1.1 document,
/// colours and colour maps, and the text helpers (escape, label, visible_token). No dependencies
/// beyond the standard library.
///
///     circuitry::svg::Canvas c(320, 120);
///     c.rect((10, 10, 100, 50), circuitry::svg::sequential(0.7).hex());
///     c.text(10, 90, "L1H4 " + circuitry::svg::label(0.613));
///     std::ofstream("box.svg") << c.str();
///
/// Text is escaped for XML; bytes that are not valid UTF-8 (a BPE token can end inside a
/// character) are written as "\xNN". Numbers are written with at most 6 significant digits, so
/// the output is the same on every platform for the same input.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "circuitry/detail/svg_text.hpp"

namespace circuitry::svg {

/// An RGB colour.
struct Color {
  int r = 0, g = 0, b = 0;
  std::string hex() const {
    char buf[8];
    std::snprintf(buf, sizeof buf, "#%02x%02x%02x", r & 255, g & 255, b & 255);
    return buf;
  }
};

/// Linear interpolation between colours at stops `t` in [0, 1] (clamped); NaN gives grey.
inline Color interpolate(const std::vector<std::pair<double, Color>>& stops, double t) {
  if (std::isnan(t)) return {200, 200, 200};
  t = std::clamp(t, 0.0, 1.0);
  for (std::size_t i = 1; i < stops.size(); ++i) {
    if (t <= stops[i].first) {
      const auto& [t0, a] = stops[i - 1];
      const auto& [t1, b] = stops[i];
      const double u = t1 > t0 ? (t - t0) / (t1 - t0) : 0.0;
      auto mix = [u](int x, int y) { return static_cast<int>(std::lround(x + u * (y - x))); };
      return {mix(a.r, b.r), mix(a.g, b.g), mix(a.b, b.b)};
    }
  }
  return stops.back().second;
}

/// Sequential colour map (white → blue → dark blue) for t in [0, 1].
inline Color sequential(double t) {
  return interpolate({{0.0, {255, 255, 255}}, {0.5, {107, 174, 214}}, {1.0, {8, 48, 107}}}, t);
}

/// Diverging colour map for t in [-1, 1]: blue (negative), white (0), red (positive).
inline Color diverging(double t) {
  return interpolate({{0.0, {33, 102, 172}}, {0.5, {247, 247, 247}}, {1.0, {178, 24, 43}}},
                     0.5 * (t + 1.0));
}

/// A categorical palette (colour-blind friendly, Okabe–Ito) indexed modulo its size.
inline Color category(std::size_t i) {
  static const Color palette[] = {{0, 114, 178}, {213, 94, 0},   {0, 158, 115},  {204, 121, 167},
                                  {230, 159, 0}, {86, 180, 233}, {240, 228, 66}, {0, 0, 0}};
  return palette[i % (sizeof palette / sizeof palette[0])];
}

/// A rectangle of the canvas: top-left corner (x, y), width w, height h, in pixels.
struct Rect {
  double x = 0, y = 0, w = 0, h = 0;
};

/// How a piece of text is drawn.
struct TextStyle {
  double size = 12;
  std::string anchor = "start";  ///< start, middle or end
  bool bold = false;
  bool monospace = false;
  double rotate = 0;  ///< degrees, about the anchor point
  std::string fill = "#222";
};

/// An SVG document built from absolute-positioned shapes and text. `str()` gives the document.
class Canvas {
 public:
  Canvas(double width, double height) : width_(width), height_(height) {}
  double width() const { return width_; }
  double height() const { return height_; }
  /// Grows the canvas (e.g. when a table turns out longer than planned).
  void resize(double width, double height) {
    width_ = width;
    height_ = height;
  }

  /// A rectangle; `tooltip` becomes a <title> a browser shows on hover.
  void rect(const Rect& r, const std::string& fill, const std::string& stroke = "none",
            const std::string& tooltip = "") {
    body_ += "<rect x=\"" + detail::svg_number(r.x) + "\" y=\"" + detail::svg_number(r.y) +
             "\" width=\"" + detail::svg_number(std::max(0.0, r.w)) + "\" height=\"" +
             detail::svg_number(std::max(0.0, r.h)) + "\" fill=\"" + fill + "\"";
    if (stroke != "none") body_ += " stroke=\"" + stroke + "\" stroke-width=\"1\"";
    close("rect", tooltip);
  }
  void line(double x1, double y1, double x2, double y2, const std::string& stroke, double width = 1,
            const std::string& dash = "") {
    body_ += "<line x1=\"" + detail::svg_number(x1) + "\" y1=\"" + detail::svg_number(y1) +
             "\" x2=\"" + detail::svg_number(x2) + "\" y2=\"" + detail::svg_number(y2) +
             "\" stroke=\"" + stroke + "\" stroke-width=\"" + detail::svg_number(width) + "\"";
    if (!dash.empty()) body_ += " stroke-dasharray=\"" + dash + "\"";
    body_ += "/>\n";
  }
  void circle(double cx, double cy, double r, const std::string& fill,
              const std::string& stroke = "none", const std::string& tooltip = "",
              double opacity = 1) {
    body_ += "<circle cx=\"" + detail::svg_number(cx) + "\" cy=\"" + detail::svg_number(cy) +
             "\" r=\"" + detail::svg_number(r) + "\" fill=\"" + fill + "\"";
    if (stroke != "none") body_ += " stroke=\"" + stroke + "\"";
    if (opacity < 1) body_ += " fill-opacity=\"" + detail::svg_number(opacity) + "\"";
    close("circle", tooltip);
  }
  /// Text at (x, y) (the baseline); `s` is escaped here.
  void text(double x, double y, std::string_view s, const TextStyle& style = {}) {
    body_ += "<text x=\"" + detail::svg_number(x) + "\" y=\"" + detail::svg_number(y) +
             "\" font-size=\"" + detail::svg_number(style.size) + "\" text-anchor=\"" +
             style.anchor + "\" fill=\"" + style.fill + "\"";
    if (style.bold) body_ += " font-weight=\"bold\"";
    if (style.monospace) body_ += " font-family=\"DejaVu Sans Mono, monospace\"";
    if (style.rotate != 0) {
      body_ += " transform=\"rotate(" + detail::svg_number(style.rotate) + " " +
               detail::svg_number(x) + " " + detail::svg_number(y) + ")\"";
    }
    body_ += " xml:space=\"preserve\">" + detail::svg_escape(s) + "</text>\n";
  }
  /// The figure's title, centred at the top, and an optional subtitle under it.
  void heading(std::string_view title, std::string_view subtitle = "") {
    TextStyle t;
    t.size = 17;
    t.bold = true;
    t.anchor = "middle";
    text(width_ / 2, 24, title, t);
    if (!subtitle.empty()) {
      t.size = 12;
      t.bold = false;
      t.fill = "#555";
      text(width_ / 2, 42, subtitle, t);
    }
  }
  /// The SVG document.
  std::string str() const {
    return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
           "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" +
           detail::svg_number(width_) + "\" height=\"" + detail::svg_number(height_) +
           "\" viewBox=\"0 0 " + detail::svg_number(width_) + " " + detail::svg_number(height_) +
           "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
           "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n" +
           body_ + "</svg>\n";
  }

 private:
  void close(const char* tag, const std::string& tooltip) {
    if (tooltip.empty()) {
      body_ += "/>\n";
    } else {
      body_ += "><title>" + detail::svg_escape(tooltip) + "</title></" + tag + ">\n";
    }
  }
  double width_, height_;
  std::string body_;
};

/// Token text made visible for a figure: a space as "·", newline "↵", tab "→", carriage return
/// "␍"; other control bytes as "\xNN" (escape() does the rest).
inline std::string visible_token(std::string_view s) { return detail::svg_visible(s); }

/// A number for a label: `digits` significant digits ("0.25", "1.2e-05", "NaN").
inline std::string label(double v, int digits = 3) { return detail::svg_label(v, digits); }

/// XML-escaped text (see the file comment for invalid UTF-8).
inline std::string escape(std::string_view s) { return detail::svg_escape(s); }

}  // namespace circuitry::svg
