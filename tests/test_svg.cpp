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

TEST_CASE("text is escaped for XML, and bytes that are not UTF-8 are written as \\xNN") {
  CHECK(svg::escape("a<b & \"c\" 'd'>") == "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;");
  CHECK(svg::escape("caf\xC3\xA9") == "caf\xC3\xA9");                // valid UTF-8 kept
  CHECK(svg::escape("\xE2\x94") == "\\xE2\\x94");                    // a character cut short
  CHECK(svg::escape("\xC0\xAF") == "\\xC0\\xAF");                    // overlong form
  CHECK(svg::escape("\xED\xA0\x80") == "\\xED\\xA0\\x80");           // a surrogate
  CHECK(svg::escape(std::string("a\0b\x1b", 4)) == "a\\x00b\\x1B");  // control characters
}

TEST_CASE("token text shows its whitespace") {
  CHECK(svg::visible_token(" def") ==
        "\xC2\xB7"
        "def");
  CHECK(svg::visible_token("\n\t\r") == "\xE2\x86\xB5\xE2\x86\x92\xE2\x90\x8D");
  CHECK(svg::visible_token("\xE2\x94") == "\\xE2\\x94");
  CHECK(svg::escape(svg::visible_token("<|endoftext|>")) == "&lt;|endoftext|&gt;");
}

TEST_CASE("numbers are written the same way on every platform") {
  CHECK(svg::label(0.123456) == "0.123");
  CHECK(svg::label(1.5e-5, 2) == "1.5e-05");
  CHECK(svg::label(-0.0) == "0");
  CHECK(svg::label(std::nan("")) == "NaN");
  svg::Canvas c(10.005, 3);
  CHECK(c.str().find("width=\"10.01\"") != std::string::npos);
}

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

TEST_CASE("colour maps run from their first to their last stop, and NaN is grey") {
  CHECK(svg::sequential(0).hex() == "#ffffff");
  CHECK(svg::sequential(1).hex() == "#08306b");
  CHECK(svg::sequential(7).hex() == "#08306b");  // clamped
  CHECK(svg::diverging(0).hex() == "#f7f7f7");
  CHECK(svg::diverging(-1).hex() == "#2166ac");
  CHECK(svg::sequential(std::nan("")).hex() == "#c8c8c8");
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
