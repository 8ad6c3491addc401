// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT

// The body of every figure program: figures::run_figure (figure.hpp), compiled once into the
// circuitry_figures library. Each program figure-NAME is figure_program.cpp, a two-line main
// that names its figure, so nlohmann's templates are compiled once rather than once per program.
// See figure.hpp for the command line.

#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include "figure.hpp"

namespace {

const char* const kUsage =
    "usage: %s --model MODEL.safetensors [--tokenizer TOKENIZER.json] [--data DIR]\n"
    "          [--tokens DIR] (--out DIR | --check DIR)\n";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read '" + path + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The figure whose function (figure.hpp) is called `function`, e.g. "ov_eigenvalues".
figures::Figure figure_named(const std::string& function) {
  using Make = figures::Figure (*)();
  static const std::map<std::string, Make> table = {
      {"bigrams", figures::bigrams},
      {"skip_trigrams", figures::skip_trigrams},
      {"ov_eigenvalues", figures::ov_eigenvalues},
      {"composition", figures::composition},
      {"term_importance", figures::term_importance},
      {"induction_heads", figures::induction_heads},
      {"induction_signature", figures::induction_signature},
      {"subspaces", figures::subspaces}};
  const auto it = table.find(function);
  if (it == table.end()) throw std::logic_error("no figure function '" + function + "'");
  return it->second();
}

int run(const std::string& function, int argc, char** argv) {
  figures::Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf(kUsage, argv[0]);
      return 0;
    }
    if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
    const std::string value = argv[++i];
    if (arg == "--model") {
      a.model = value;
    } else if (arg == "--tokenizer") {
      a.tokenizer = value;
    } else if (arg == "--data") {
      a.data = value;
    } else if (arg == "--tokens") {
      a.tokens = value;
    } else if (arg == "--out") {
      a.out = value;
    } else if (arg == "--check") {
      a.check = value;
    } else {
      throw std::invalid_argument("unknown argument '" + arg + "'");
    }
  }
  if (a.model.empty()) throw std::invalid_argument("--model is required");
  const figures::Figure fig = figure_named(function);
  const std::string name = fig.name + "-" + std::filesystem::path(a.model).stem().string();
  const nlohmann::json data = fig.compute(a);
  if (!a.check.empty()) {
    const std::string base = a.check + "/" + name;
    const nlohmann::json expected = nlohmann::json::parse(read_file(base + ".json"));
    const std::vector<std::string> diffs = figures::compare_json(expected, data);
    for (const std::string& d : diffs) std::cerr << name << ".json: " << d << "\n";
    const bool svg_ok = fig.draw(expected) == read_file(base + ".svg");
    if (!svg_ok) std::cerr << name << ".svg: differs from drawing " << name << ".json\n";
    if (!diffs.empty() || !svg_ok) return 1;
    std::cout << name << ": matches " << base << ".{json,svg}\n";
    return 0;
  }
  std::filesystem::create_directories(a.out);
  const std::string base = a.out + "/" + name;
  std::ofstream(base + ".json", std::ios::binary) << data.dump(1) << "\n";
  std::ofstream(base + ".svg", std::ios::binary) << fig.draw(data);
  std::cout << "wrote " << base << ".json and " << base << ".svg\n";
  return 0;
}

}  // namespace

int figures::run_figure(const char* function, int argc, char** argv) {
  try {
    return run(function, argc, argv);
  } catch (const std::invalid_argument& e) {
    std::cerr << argv[0] << ": " << e.what() << "\n";
    std::fprintf(stderr, kUsage, argv[0]);
    return 2;
  } catch (const std::exception& e) {
    std::cerr << argv[0] << ": " << e.what() << "\n";
    return 1;
  }
}
