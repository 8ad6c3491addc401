// circuitry-report: the weight-based circuit report of an attention-only transformer, as JSON
// with the keys, shapes and meanings of TransformerLens's reference figures (see README).
//
//   circuitry-report MODEL.safetensors [--config CONFIG.json] [--probe-tokens 1,257,...]
//                    [--precision double|float] [--only GROUPS] [--out REPORT.json]
//                    [--tokens TOKENS.json] [--induction-tokens TOKENS.json]
//
// --tokens adds the figures on data (eval_batch, pattern_seq0_corner16, prev_token_score,
// path_expansion); --induction-tokens, on sequences [0] + r + r, adds induction_score and the
// repeated-sequence losses (see data_report.hpp).
//
// The model is processed as TransformerLens's from_pretrained processes it (fold LayerNorm,
// centre writing weights, centre the unembedding, fold value biases) before any figure is
// computed. Errors go to stderr with exit code 1 (2 for a usage error).
#include <circuitry/circuitry.hpp>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "huge_pages.hpp"

namespace {

constexpr const char* kUsage =
    "usage: circuitry-report MODEL.safetensors [--config CONFIG.json] [--probe-tokens 1,257,...]\n"
    "                        [--precision double|float] [--only GROUPS] [--out REPORT.json]\n"
    "                        [--tokens TOKENS.json] [--induction-tokens TOKENS.json]\n"
    "  GROUPS: comma list of spectra, norms, composition, copying, top (default: all)\n";

struct Args {
  std::string model;
  std::string config;
  std::string out;
  std::string precision = "double";
  std::string tokens;
  std::string induction_tokens;
  circuitry::ReportOptions report;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::vector<int> parse_int_list(const std::string& flag, const std::string& text) {
  std::vector<int> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, end - start);
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < 0 || v > 1LL << 30) {
      throw UsageError(flag + ": '" + item +
                       "' is not a non-negative integer (expected e.g. 1,257,513)");
    }
    out.push_back(static_cast<int>(v));
    start = end + 1;
  }
  return out;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--config") {
      a.config = value();
    } else if (arg == "--probe-tokens") {
      a.report.probe_tokens = parse_int_list(arg, value());
    } else if (arg == "--precision") {
      a.precision = value();
      if (a.precision != "double" && a.precision != "float") {
        throw UsageError("--precision must be 'double' or 'float', found '" + a.precision + "'");
      }
    } else if (arg == "--only") {
      try {
        a.report.groups = circuitry::parse_report_groups(value());
      } catch (const circuitry::argument_error& e) {
        throw UsageError(e.message());
      }
    } else if (arg == "--tokens") {
      a.tokens = value();
    } else if (arg == "--induction-tokens") {
      a.induction_tokens = value();
    } else if (arg == "--out") {
      a.out = value();
    } else if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (!arg.empty() && arg[0] == '-') {
      throw UsageError("unknown option '" + arg + "'");
    } else if (a.model.empty()) {
      a.model = arg;
    } else {
      throw UsageError("more than one model given ('" + a.model + "', '" + arg + "')");
    }
  }
  if (a.model.empty()) throw UsageError("no model given");
  return a;
}

template <typename Scalar>
nlohmann::json run(const Args& args) {
  circuitry::LoadOptions load;
  if (!args.config.empty()) load.config_overrides = circuitry::read_config_json_file(args.config);
  // Token files are read first: a bad one is reported before any long computation.
  const bool has_tokens = !args.tokens.empty(), has_induction = !args.induction_tokens.empty();
  const circuitry::Tokens tokens =
      has_tokens ? circuitry::read_tokens_json(args.tokens) : circuitry::Tokens();
  const circuitry::Tokens induction =
      has_induction ? circuitry::read_tokens_json(args.induction_tokens) : circuitry::Tokens();
  auto model = circuitry::load_model<Scalar>(args.model, load);
  // ... and checked against the model before any computation, naming the file and flag.
  if (has_tokens) {
    circuitry::check_eval_tokens(tokens, model.config,
                                 "token file '" + args.tokens + "' (--tokens)");
  }
  if (has_induction) {
    circuitry::check_repeated_tokens(
        induction, model.config, "token file '" + args.induction_tokens + "' (--induction-tokens)");
  }
  nlohmann::json out;
  out["model"] = args.model;
  out["config"] = circuitry::to_json(model.config);
  circuitry::process_weights(model);
  out["processing"] = {{"fold_ln", model.processing.fold_ln},
                       {"center_writing_weights", model.processing.center_writing_weights},
                       {"center_unembed", model.processing.center_unembed},
                       {"fold_value_biases", model.processing.fold_value_biases}};
  out["precision"] = args.precision;
  out.update(circuitry::circuit_report(model, args.report));
  if (has_tokens) circuitry::report_tokens(model, tokens, out);
  if (has_induction) circuitry::report_induction(model, induction, out);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  circuitry_examples::use_huge_pages(argv);  // see huge_pages.hpp: ~20% of a --tokens report
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "circuitry-report: " << e.what() << "\n" << kUsage;
    return 2;
  }
  try {
    const nlohmann::json report = args.precision == "float" ? run<float>(args) : run<double>(args);
    if (args.out.empty()) {
      std::cout << report.dump() << "\n";
    } else {
      std::ofstream f(args.out);
      if (!f) throw circuitry::io_error("cannot write report file '" + args.out + "'");
      f << report.dump() << "\n";
      if (!f) throw circuitry::io_error("error writing report file '" + args.out + "'");
    }
  } catch (const std::exception& e) {
    std::cerr << "circuitry-report: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
