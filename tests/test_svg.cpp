// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT

#include <doctest/doctest.h>

#include <circuitry/svg.hpp>
#include <string>

namespace svg = circuitry::svg;

namespace {
std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}
}  // namespace

TEST_CASE("axis ticks are multiples of 1, 2 or 5 times a power of ten inside the range") {
  const svg::Scale s{0, 0.37, 0, 100};
  const std::vector<double> t = s.ticks(4);
  REQUIRE(t.size() == 4);
  CHECK(t[0] == 0);
  CHECK(t[1] == doctest::Approx(0.1));
  CHECK(t[3] == doctest::Approx(0.3));
  CHECK(s(0.37) == doctest::Approx(100));
  CHECK(svg::Scale{5, 5, 0, 1}.ticks().size() == 1);  // an empty range gives one tick
}

TEST_CASE("a heatmap draws one cell per value with its labels in a tooltip, and a colour bar") {
  svg::Canvas c(400, 300);
  svg::HeatmapOptions o;
  o.title = "T & U";
  o.marks = {{0.5, "baseline"}};
  svg::heatmap(c, {50, 40, 300, 200}, {{0.0, 1.0, 0.5}, {0.25, 0.75, std::nan("")}}, {"a", "b"},
               {"x", "y", "z"}, o);
  const std::string s = c.str();
  CHECK(count(s, "<title>") == 6);
  CHECK(s.find("<title>b / y: 0.75</title>") != std::string::npos);
  CHECK(s.find("<title>b / z: NaN</title>") != std::string::npos);
  CHECK(s.find("T &amp; U") != std::string::npos);
  CHECK(s.find(">baseline</text>") != std::string::npos);
  CHECK(s.rfind("</svg>\n") == s.size() - 7);
}

TEST_CASE("bars and scatter plots label what they draw") {
  svg::Canvas c(400, 300);
  svg::BarOptions b;
  b.lines = {{0.5, "half"}};
  svg::bars(c, {50, 40, 300, 150}, {"L0H0", "L0H1"}, {0.25, -0.5}, b);
  std::string s = c.str();
  CHECK(s.find("<title>L0H1: -0.5</title>") != std::string::npos);
  CHECK(s.find(">half</text>") != std::string::npos);
  svg::Canvas d(400, 300);
  svg::scatter(d, {50, 40, 300, 200}, {{0.1, 0.2, "p"}, {0.1, 0.2, "q"}, {std::nan(""), 0, "r"}});
  s = d.str();
  CHECK(count(s, "<circle") == 2);  // the NaN point is not drawn
  CHECK(s.find(">p</text>") != std::string::npos);
  CHECK(s.find(">q</text>") != std::string::npos);
}

TEST_CASE("a table returns the y below it") {
  svg::Canvas c(400, 300);
  const double bottom = svg::table(c, 10, 20, {"a", "b"}, {{"1", "2"}, {"3", "4"}}, {50, 50}, 10);
  CHECK(bottom == doctest::Approx(50));
}
