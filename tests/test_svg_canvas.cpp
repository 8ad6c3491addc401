// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT

#include <doctest/doctest.h>

#include <circuitry/svg_canvas.hpp>
#include <cmath>
#include <string>

namespace svg = circuitry::svg;

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

TEST_CASE("colour maps run from their first to their last stop, and NaN is grey") {
  CHECK(svg::sequential(0).hex() == "#ffffff");
  CHECK(svg::sequential(1).hex() == "#08306b");
  CHECK(svg::sequential(7).hex() == "#08306b");  // clamped
  CHECK(svg::diverging(0).hex() == "#f7f7f7");
  CHECK(svg::diverging(-1).hex() == "#2166ac");
  CHECK(svg::sequential(std::nan("")).hex() == "#c8c8c8");
}
