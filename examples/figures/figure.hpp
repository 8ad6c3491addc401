// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file examples/figures/figure.hpp
/// What every figure program shares: its arguments, the figure it makes (the data as JSON and
/// the SVG drawn from that JSON alone), and the common body of their `main`s (`run_figure`,
/// figure_main.cpp; each program's main, figure_program.cpp, only names its figure):
///
///     figure-NAME --model M.safetensors [--tokenizer T.json] [--data DIR] --out DIR
///     figure-NAME --model M.safetensors ... --check DIR
///
/// writes DIR/NAME-<model>.json and DIR/NAME-<model>.svg, or with --check compares what it
/// computes with the JSON in DIR (numbers within a relative 1e-6, see compare_json) and checks
/// that drawing that JSON gives the SVG in DIR byte for byte, so committed figures never go stale.

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace figures {

struct Args {
  std::string model;                                         ///< a TransformerLens safetensors
  std::string tokenizer = "examples/models/tokenizer.json";  ///< for token text
  std::string data = "tests/data";         ///< eval-text.txt and eval-tokens.safetensors
  std::string tokens = "examples/tokens";  ///< eval-batch-8x256.json, repeated-10x101.json
  std::string out = "docs/figures";
  std::string check;  ///< when set: compare with the figure in this folder instead of writing
};

/// A figure: `compute` reads the model and data and returns the figure's JSON; `draw` makes the
/// SVG from that JSON only.
struct Figure {
  std::string name;  ///< e.g. "ov-eigenvalues"; files are NAME-<model stem>.{json,svg}
  std::function<nlohmann::json(const Args&)> compute;
  std::function<std::string(const nlohmann::json&)> draw;
};

/// Each figure's definition, one per source file.
Figure bigrams();
Figure skip_trigrams();
Figure ov_eigenvalues();
Figure composition();
Figure term_importance();
Figure induction_heads();
Figure induction_signature();
Figure subspaces();

/// The whole figure program for figure function `function` (e.g. "ov_eigenvalues"): parses the
/// command line above, computes, writes or checks; returns the exit status (2: bad usage).
int run_figure(const char* function, int argc, char** argv);

/// Differences between `expected` and `actual` (same structure, strings equal, numbers within
/// rtol relative or atol absolute), one line each, with the JSON path; empty when they agree.
std::vector<std::string> compare_json(const nlohmann::json& expected, const nlohmann::json& actual,
                                      double rtol = 1e-6, double atol = 1e-9);

}  // namespace figures
