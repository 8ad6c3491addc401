// data_report.hpp: the report's figures on data against TransformerLens's reference figures on
// every shared model, a deeper model's path_expansion against the enumerated one, the checks of
// the tokens it is given, and the token-file reader's errors.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <circuitry/data_report.hpp>
#include <cstdio>
#include <filesystem>
#include <map>

#include "support/random_model.hpp"
#include "support/reference.hpp"
#include "support/tokens.hpp"

using namespace circuitry;

namespace {
void check_close(const nlohmann::json& got, const nlohmann::json& want, double tol,
                 const std::string& path) {
  if (want.is_array()) {
    REQUIRE_MESSAGE(got.is_array(), path);
    REQUIRE_MESSAGE(got.size() == want.size(), path);
    for (std::size_t i = 0; i < want.size(); ++i) {
      check_close(got[i], want[i], tol, path + "[" + std::to_string(i) + "]");
    }
  } else if (want.is_string()) {
    CHECK_MESSAGE(got == want, path);
  } else {
    INFO(path, ": got ", got.get<double>(), ", reference ", want.get<double>());
    CHECK(std::abs(got.get<double>() - want.get<double>()) <= tol);
  }
}

/// The report on data of a shared model in Scalar, computed once (doctest re-enters a test case
/// for each SUBCASE).
template <typename Scalar>
const nlohmann::json& data_report(const std::string& name) {
  static std::map<std::string, nlohmann::json> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    const auto& ref = test::reference(name);
    const auto& model = test::processed_model<Scalar>(name);
    nlohmann::json got;
    report_tokens(model, test::tokens_from_json(ref.at("eval_batch").at("tokens")), got);
    report_induction(model, test::tokens_from_json(ref.at("repeated_tokens")), got);
    it = cache.emplace(name, std::move(got)).first;
  }
  return it->second;
}

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = "/tmp/circuitry_test_" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  std::fputs(text.c_str(), f);
  std::fclose(f);
  return path;
}
}  // namespace

// The tolerances in both precisions: the float report (half the time of the double one)
// is a report in its own right. Its largest deviations on the shared models: log-probs 1.8e-5,
// patterns 1.6e-6, path-expansion losses 3.7e-7.
TEST_CASE_TEMPLATE("the report's figures on data agree with TransformerLens on every shared model",
                   Scalar, float, double) {
  for (const std::string& name : test::shared_models()) {
    CAPTURE(name);
    const auto& ref = test::reference(name);
    const nlohmann::json& got = data_report<Scalar>(name);

    SUBCASE("losses, log-probs and top-5 next tokens of the eval batch") {
      const auto& e = got.at("eval_batch");
      const auto& r = ref.at("eval_batch");
      CHECK(e.at("tokens") == r.at("tokens"));
      check_close(e.at("loss_mean"), r.at("loss_mean"), 1e-4, "loss_mean");
      check_close(e.at("loss_per_seq"), r.at("loss_per_seq"), 1e-4, "loss_per_seq");
      check_close(e.at("logprob_next_seq0"), r.at("logprob_next_seq0"), 1e-4, "logprob_next_seq0");
      CHECK(e.at("top5_next_seq0_pos") == r.at("top5_next_seq0_pos"));
    }
    SUBCASE("attention patterns and head scores") {
      for (const auto& item : ref.at("pattern_seq0_corner16").items()) {
        check_close(got.at("pattern_seq0_corner16").at(item.key()), item.value(), 1e-5, item.key());
      }
      check_close(got.at("prev_token_score"), ref.at("prev_token_score"), 1e-4, "prev_token_score");
      check_close(got.at("induction_score"), ref.at("induction_score"), 1e-4, "induction_score");
      check_close(got.at("repeated_loss_first_half"), ref.at("repeated_loss_first_half"), 1e-4,
                  "first half");
      check_close(got.at("repeated_loss_second_half"), ref.at("repeated_loss_second_half"), 1e-4,
                  "second half");
    }
    SUBCASE("every path-expansion figure") {
      const auto& pe = got.at("path_expansion");
      for (const auto& item : ref.at("path_expansion").items()) {
        if (item.key() == "definition") continue;
        CAPTURE(item.key());
        REQUIRE(pe.contains(item.key()));
        check_close(pe.at(item.key()), item.value(), 1e-4, item.key());
      }
      // The generic keys hold the same numbers as the reference's named ones.
      CHECK(pe.at("loss_by_order").front() == pe.at("direct"));
      CHECK(pe.at("loss_by_order").back() == pe.at("full"));
      CHECK(pe.at("loss_by_layer").at(1) == pe.at("direct+L0"));
      check_close(pe.at("full"), pe.at("model_loss"), 1e-9, "full = model loss");
    }
  }
}

TEST_CASE("token files that are not arrays of equal-length id sequences are rejected") {
  CHECK_THROWS_WITH_AS(read_tokens_json("/nonexistent/tokens.json"),
                       "[circuitry.io_error] cannot open token file '/nonexistent/tokens.json': "
                       "No such file or directory",
                       io_error);
  const std::string not_json = write_temp("not_json.json", "[[0, 1,");
  CHECK_THROWS_WITH_AS(read_tokens_json(not_json),
                       doctest::Contains(("token file '" + not_json + "': not valid JSON").c_str()),
                       format_error);
  const std::string object = write_temp("object.json", "{\"tokens\": [[0, 1]]}");
  CHECK_THROWS_WITH_AS(read_tokens_json(object),
                       ("[circuitry.format_error] token file '" + object +
                        "': expected a JSON array of token sequences, found object")
                           .c_str(),
                       format_error);
  const std::string bad_id = write_temp("bad_id.json", "[[0, 1], [0, -3]]");
  CHECK_THROWS_WITH_AS(read_tokens_json(bad_id),
                       ("[circuitry.format_error] token file '" + bad_id +
                        "': sequence 1, position 1: -3 is not a token id (an integer in [0, 2^30])")
                           .c_str(),
                       format_error);
  const std::string huge = write_temp("huge.json", "[[0, 99999999999]]");
  CHECK_THROWS_WITH_AS(read_tokens_json(huge),
                       ("[circuitry.format_error] token file '" + huge +
                        "': sequence 0, position 1: 99999999999 is not a token id (an integer in "
                        "[0, 2^30])")
                           .c_str(),
                       format_error);
  const std::string ragged = write_temp("ragged.json", "[[0, 1, 2], [0, 1]]");
  CHECK_THROWS_WITH_AS(read_tokens_json(ragged),
                       ("[circuitry.argument_error] token file '" + ragged +
                        "': tokens: ragged batch: sequence 1 has 2 tokens but sequence 0 has 3 "
                        "(all sequences must have the same length)")
                           .c_str(),
                       argument_error);
  const std::string empty = write_temp("empty.json", "[]");
  CHECK_THROWS_WITH_AS(read_tokens_json(empty), doctest::Contains("empty batch"), argument_error);
  const std::string bomb =
      write_temp("bomb.json", std::string(100000, '[') + std::string(100000, ']'));
  CHECK_THROWS_WITH_AS(read_tokens_json(bomb),
                       ("[circuitry.format_error] token file '" + bomb +
                        "': the JSON nests more than 64 levels deep (at byte 64), expected an "
                        "array of token sequences")
                           .c_str(),
                       format_error);
  for (const auto& p : {not_json, object, bad_id, huge, ragged, empty, bomb})
    std::remove(p.c_str());
}

TEST_CASE("a directory or a FIFO given as the token file is an io_error, without blocking") {
  char name[] = "/tmp/circuitry_tokens_dir_XXXXXX";
  REQUIRE(::mkdtemp(name) != nullptr);
  const std::string dir = name;
  CHECK_THROWS_WITH_AS(read_tokens_json(dir),
                       ("[circuitry.io_error] token file '" + dir +
                        "' is a directory, expected a JSON array of token sequences")
                           .c_str(),
                       io_error);
  const std::string fifo = dir + "/tokens.json";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);  // opening it would block until a writer comes
  CHECK_THROWS_WITH_AS(read_tokens_json(fifo),
                       ("[circuitry.io_error] token file '" + fifo +
                        "' is not a regular file, expected a JSON array of token sequences")
                           .c_str(),
                       io_error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("tokens that cannot hold the report's figures are rejected before any computation") {
  test::RandomModelSpec spec;  // d_vocab 40, n_ctx 12
  const auto model = test::random_model<double>(spec);
  nlohmann::json out;
  const auto tokens = [](std::vector<std::vector<int>> s) { return make_tokens(s); };
  CHECK_THROWS_WITH_AS(report_tokens(model, tokens({{0}, {3}}), out),
                       "[circuitry.argument_error] report_tokens: sequences of 1 token have no "
                       "next token to predict (need at least 2 tokens)",
                       argument_error);
  CHECK_THROWS_WITH_AS(check_eval_tokens(tokens({{0, 1}, {2, 40}}), model.config, "file 'x'"),
                       "[circuitry.argument_error] file 'x': tokens: token 40 at sequence 1, "
                       "position 1 is out of range [0, 40)",
                       argument_error);
  CHECK_THROWS_WITH_AS(check_eval_tokens(tokens({std::vector<int>(13, 1)}), model.config),
                       "[circuitry.argument_error] report_tokens: tokens: sequences have 13 "
                       "tokens, more than n_ctx = 12",
                       argument_error);
  CHECK_NOTHROW(check_eval_tokens(tokens({{0, 1}}), model.config));

  CHECK_THROWS_WITH_AS(report_induction(model, tokens({{0, 5, 6, 7, 5, 6}}), out),
                       "[circuitry.argument_error] report_induction: sequences of 6 tokens are "
                       "not [BOS] r r with |r| >= 2 (expected an odd length >= 5)",
                       argument_error);
  CHECK_THROWS_WITH_AS(check_repeated_tokens(tokens({{0, 5, 5}}), model.config),
                       doctest::Contains("sequences of 3 tokens are not [BOS] r r with |r| >= 2"),
                       argument_error);
  CHECK_THROWS_WITH_AS(
      check_repeated_tokens(tokens({{0, 5, 6, 5, 6}, {0, 7, 8, 7, 9}}), model.config, "f"),
      "[circuitry.argument_error] f: sequence 1 is not [BOS] r r: position 4 holds 9, position 2 "
      "holds 8",
      argument_error);
  CHECK_THROWS_WITH_AS(check_repeated_tokens(tokens({{0, 5, 6, 5, 6, 1, 2}}), model.config, "f"),
                       doctest::Contains("f: sequence 0 is not [BOS] r r: position 4 holds 6"),
                       argument_error);
  CHECK_NOTHROW(check_repeated_tokens(repeated_random_tokens(3, 5, spec.d_vocab, 2), model.config));
  CHECK(out.empty());  // nothing was written before the errors
}

TEST_CASE("a deeper model's path_expansion has the enumerated expansion's keys and numbers") {
  // More than two layers: report_tokens takes summarize_by_order instead of the (1 + H)^L terms.
  test::RandomModelSpec spec;
  spec.n_layers = 3;
  spec.n_heads = 2;
  const auto model = processed(test::random_model<double>(spec));
  const Tokens tokens = test::random_tokens(3, 8, spec.d_vocab, 4);
  nlohmann::json got;
  report_tokens(model, tokens, got);
  const auto run = forward(model, tokens);
  const nlohmann::json want =
      path_expansion_json(PathExpansion<double>(model, tokens), model.n_layers(), model.n_heads(),
                          static_cast<double>(run.loss_mean));
  const nlohmann::json& pe = got.at("path_expansion");
  REQUIRE(pe.size() == want.size());
  for (const auto& [key, value] : want.items()) {
    CAPTURE(key);
    REQUIRE(pe.contains(key));
    check_close(pe.at(key), value, 1e-12, key);
  }
  CHECK(pe.at("loss_by_order").size() == 4);
  CHECK_FALSE(pe.contains("ablate_virtual_pair_top"));
}
