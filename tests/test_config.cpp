// Tests of circuitry/config.hpp: ModelConfig's JSON round trip, partial overrides, the enum
// values, and one test per bad value, each pinning its message.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "circuitry/config.hpp"

using circuitry::config_error;
using circuitry::ModelConfig;
using circuitry::NormalizationType;
using circuitry::PositionalEmbeddingType;
using nlohmann::json;

namespace {

/// The config of attn-only-2l as the reference JSON states it.
json reference_config_2l() {
  std::ifstream in(CIRCUITRY_TEST_DATA_DIR "/reference/attn-only-2l.json");
  REQUIRE(in);
  return json::parse(in).at("config");
}

ModelConfig from_json(const json& j, const std::string& context = "test") {
  ModelConfig c;
  circuitry::apply_config_json(c, j, context);
  return c;
}

/// A file under /tmp with a unique name, removed at scope exit.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& text) {
    char name[] = "/tmp/circuitry_config_XXXXXX";
    const int fd = ::mkstemp(name);
    REQUIRE(fd >= 0);
    ::close(fd);
    path = name;
    std::ofstream(path, std::ios::binary) << text;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

}  // namespace

TEST_CASE("A config read from the reference JSON has the reference's values") {
  const json ref = reference_config_2l();
  const ModelConfig c = from_json(ref);
  CHECK(c.n_layers == ref["n_layers"].get<int>());
  CHECK(c.n_heads == ref["n_heads"].get<int>());
  CHECK(c.d_model == ref["d_model"].get<int>());
  CHECK(c.d_head == ref["d_head"].get<int>());
  CHECK(c.d_vocab == ref["d_vocab"].get<int>());
  CHECK(c.n_ctx == ref["n_ctx"].get<int>());
  CHECK(c.normalization_type == NormalizationType::LN);
  CHECK(c.positional_embedding_type == PositionalEmbeddingType::standard);
  CHECK(c.eps == ModelConfig{}.eps);  // absent: the default, TransformerLens's 1e-5
  CHECK(c.attn_scale() == doctest::Approx(std::sqrt(ref["d_head"].get<double>())));
  CHECK_NOTHROW(c.validate());
}

TEST_CASE("to_json followed by apply_config_json gives the same config back") {
  ModelConfig c = from_json(reference_config_2l());
  SUBCASE("LN, standard") {}
  SUBCASE("LNPre, shortformer, another eps") {
    c.normalization_type = NormalizationType::LNPre;
    c.positional_embedding_type = PositionalEmbeddingType::shortformer;
    c.eps = 1e-6;
  }
  SUBCASE("no normalisation") { c.normalization_type = NormalizationType::none; }
  const json j = circuitry::to_json(c);
  CAPTURE(j.dump());
  CHECK(from_json(j) == c);
  // Through text too, as it travels in safetensors metadata.
  CHECK(from_json(json::parse(j.dump())) == c);
}

TEST_CASE("to_json writes TransformerLens's names and values") {
  ModelConfig c = from_json(reference_config_2l());
  const json ref = reference_config_2l();
  json j = circuitry::to_json(c);
  for (const auto& item : ref.items()) {
    CAPTURE(item.key());
    CHECK(j.at(item.key()) == item.value());
  }
  c.normalization_type = NormalizationType::none;
  CHECK(circuitry::to_json(c)["normalization_type"].is_null());
  c.normalization_type = NormalizationType::LNPre;
  CHECK(circuitry::to_json(c)["normalization_type"] == "LNPre");
  CHECK(circuitry::to_string(PositionalEmbeddingType::shortformer) == "shortformer");
}

TEST_CASE("apply_config_json changes only the keys it is given") {
  const ModelConfig base = from_json(reference_config_2l());
  ModelConfig c = base;
  SUBCASE("an empty object changes nothing") {
    circuitry::apply_config_json(c, json::object(), "test");
    CHECK(c == base);
  }
  SUBCASE("one key changes one field") {
    circuitry::apply_config_json(c, {{"n_ctx", 1024}}, "test");
    CHECK(c.n_ctx == 1024);
    c.n_ctx = base.n_ctx;
    CHECK(c == base);
  }
  SUBCASE("shortformer is set by an override") {
    circuitry::apply_config_json(c, {{"positional_embedding_type", "shortformer"}}, "test");
    CHECK(c.positional_embedding_type == PositionalEmbeddingType::shortformer);
    c.positional_embedding_type = PositionalEmbeddingType::standard;
    CHECK(c == base);
  }
  SUBCASE("null normalization_type means no LayerNorm") {
    circuitry::apply_config_json(c, json::parse(R"({"normalization_type": null})"), "test");
    CHECK(c.normalization_type == NormalizationType::none);
  }
  SUBCASE("TransformerLens's layer_norm_eps sets eps") {
    circuitry::apply_config_json(c, {{"layer_norm_eps", 1e-6}}, "test");
    CHECK(c.eps == 1e-6);
  }
  SUBCASE("unknown keys of a full TransformerLens config are ignored") {
    circuitry::apply_config_json(
        c, json::parse(R"({"act_fn": null, "d_mlp": null, "attn_only": true, "seed": 13})"),
        "test");
    CHECK(c == base);
  }
}

TEST_CASE("Bad config values throw config_error naming the context and the key") {
  ModelConfig c;
  SUBCASE("a negative dimension") {
    CHECK_THROWS_WITH_AS(circuitry::apply_config_json(c, {{"d_model", -5}}, "ctx"),
                         "[circuitry.config_error] ctx: 'd_model' must be a positive integer, "
                         "found -5",
                         config_error);
  }
  SUBCASE("zero") {
    CHECK_THROWS_WITH_AS(circuitry::apply_config_json(c, {{"n_layers", 0}}, "ctx"),
                         doctest::Contains("'n_layers' must be a positive integer, found 0"),
                         config_error);
  }
  SUBCASE("a string where an integer is expected") {
    CHECK_THROWS_WITH_AS(circuitry::apply_config_json(c, {{"n_heads", "8"}}, "ctx"),
                         "[circuitry.config_error] ctx: 'n_heads' must be a positive integer, "
                         "found \"8\"",
                         config_error);
  }
  SUBCASE("a fraction where an integer is expected") {
    CHECK_THROWS_WITH_AS(circuitry::apply_config_json(c, {{"d_head", 32.5}}, "ctx"),
                         doctest::Contains("'d_head' must be a positive integer, found 32.5"),
                         config_error);
  }
  SUBCASE("a dimension too large for an int") {
    CHECK_THROWS_WITH_AS(circuitry::apply_config_json(
                             c, {{"d_vocab", std::numeric_limits<long long>::max()}}, "ctx"),
                         doctest::Contains("'d_vocab' must be a positive integer"), config_error);
  }
  SUBCASE("rotary positions are not supported") {
    CHECK_THROWS_WITH_AS(
        circuitry::apply_config_json(c, {{"positional_embedding_type", "rotary"}}, "ctx"),
        "[circuitry.config_error] ctx: 'positional_embedding_type' must be \"standard\" or "
        "\"shortformer\" (rotary and other kinds are not supported), found \"rotary\"",
        config_error);
  }
  SUBCASE("an unknown normalization type") {
    CHECK_THROWS_WITH_AS(circuitry::apply_config_json(c, {{"normalization_type", "RMS"}}, "ctx"),
                         "[circuitry.config_error] ctx: 'normalization_type' must be \"LN\", "
                         "\"LNPre\" or null, found \"RMS\"",
                         config_error);
  }
  SUBCASE("a negative eps") {
    CHECK_THROWS_WITH_AS(circuitry::apply_config_json(c, {{"eps", -1e-5}}, "ctx"),
                         doctest::Contains("ctx: 'eps' must be a non-negative number"),
                         config_error);
  }
  SUBCASE("not an object") {
    CHECK_THROWS_WITH_AS(circuitry::apply_config_json(c, json::array({1, 2}), "ctx"),
                         "[circuitry.config_error] ctx: expected a JSON object, found array",
                         config_error);
  }
  SUBCASE("invalid JSON text") {
    CHECK_THROWS_WITH_AS(circuitry::parse_config_text("{\"n_layers\": ", "ctx"),
                         doctest::Contains("[circuitry.config_error] ctx: not valid JSON ("),
                         config_error);
  }
}

TEST_CASE("validate names the first field that is not positive") {
  ModelConfig c = from_json(reference_config_2l());
  CHECK_NOTHROW(c.validate());
  SUBCASE("a default config has no dimensions") {
    CHECK_THROWS_WITH_AS(ModelConfig{}.validate("where"),
                         "[circuitry.config_error] where: 'n_layers' must be a positive "
                         "integer, found 0",
                         config_error);
  }
  SUBCASE("a negative n_ctx") {
    c.n_ctx = -1;
    CHECK_THROWS_WITH_AS(c.validate(),
                         doctest::Contains("'n_ctx' must be a positive integer, found -1"),
                         config_error);
  }
  SUBCASE("an infinite eps") {
    c.eps = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH_AS(c.validate(),
                         doctest::Contains("'eps' must be a finite non-negative number"),
                         config_error);
  }
}

TEST_CASE("read_config_file reads a complete config from a JSON file") {
  SUBCASE("the reference config") {
    const TempFile file(reference_config_2l().dump(2));
    CHECK(circuitry::read_config_file(file.path) == from_json(reference_config_2l()));
  }
  SUBCASE("an incomplete config names the file and the missing field") {
    const TempFile file(R"({"n_layers": 2, "n_heads": 8, "d_model": 256, "d_head": 32})");
    CHECK_THROWS_WITH_AS(circuitry::read_config_file(file.path),
                         ("[circuitry.config_error] config file '" + file.path +
                          "': 'd_vocab' is missing, expected a positive integer")
                             .c_str(),
                         config_error);
  }
  SUBCASE("a file that is not JSON names the file") {
    const TempFile file("n_layers = 2\n");
    CHECK_THROWS_WITH_AS(
        circuitry::read_config_file(file.path),
        doctest::Contains(("config file '" + file.path + "': not valid JSON").c_str()),
        config_error);
  }
  SUBCASE("read_config_json_file keeps the keys as overrides") {
    const TempFile file(R"({"positional_embedding_type": "shortformer"})");
    CHECK(circuitry::read_config_json_file(file.path) ==
          json{{"positional_embedding_type", "shortformer"}});
  }
}

TEST_CASE("read_config_file of a missing file throws io_error naming it") {
  const std::string path = "/tmp/circuitry_config_no_such_file_" + std::to_string(::getpid());
  CHECK_THROWS_WITH_AS(
      circuitry::read_config_file(path),
      ("[circuitry.io_error] cannot open config file '" + path + "': No such file or directory")
          .c_str(),
      circuitry::io_error);
}

// ---- Hostile files (README, "Robustness") ---------------------------------------------------

TEST_CASE("A directory or a FIFO given as the config file is an io_error, without blocking") {
  char name[] = "/tmp/circuitry_config_dir_XXXXXX";
  REQUIRE(::mkdtemp(name) != nullptr);
  const std::string dir = name;
  CHECK_THROWS_WITH_AS(
      circuitry::read_config_json_file(dir),
      ("[circuitry.io_error] config file '" + dir + "' is a directory, expected a JSON file")
          .c_str(),
      circuitry::io_error);
  const std::string fifo = dir + "/config.json";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);  // opening it would block until a writer comes
  CHECK_THROWS_WITH_AS(circuitry::read_config_file(fifo),
                       ("[circuitry.io_error] config file '" + fifo +
                        "' is not a regular file, expected a JSON file")
                           .c_str(),
                       circuitry::io_error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("An empty config file, or one of whitespace, is not valid JSON") {
  for (const char* text : {"", " \n"}) {
    const TempFile file(text);
    CHECK_THROWS_WITH_AS(
        circuitry::read_config_file(file.path),
        doctest::Contains(("config file '" + file.path + "': not valid JSON").c_str()),
        config_error);
  }
}

TEST_CASE("A JSON nesting bomb is refused before it is parsed") {
  // Quoting the value in the message recurses once per level (nlohmann's dump): before the depth
  // check, a million levels overflowed the stack (a segmentation fault, not an error).
  const std::string bomb =
      "{\"n_layers\": " + std::string(1000000, '[') + std::string(1000000, ']') + "}";
  CHECK_THROWS_WITH_AS(circuitry::parse_config_text(bomb, "ctx"),
                       "[circuitry.config_error] ctx: not a config: the JSON nests more than 64 "
                       "levels deep (at byte 76), expected an object of keys and values",
                       config_error);
  // 64 levels are parsed; the value is then refused for its type.
  const std::string deep = "{\"n_layers\": " + std::string(63, '[') + std::string(63, ']') + "}";
  ModelConfig c;
  CHECK_THROWS_WITH_AS(
      circuitry::apply_config_json(c, circuitry::parse_config_text(deep, "ctx"), "ctx"),
      doctest::Contains("ctx: 'n_layers' must be a positive integer, found "
                        "[[[[[[[["),
      config_error);
}

TEST_CASE("Huge numbers and wrong types are config_errors quoting a shortened value") {
  ModelConfig c;
  const auto error_of = [&](const std::string& text) -> std::string {
    try {
      circuitry::apply_config_json(c, circuitry::parse_config_text(text, "ctx"), "ctx");
    } catch (const config_error& e) {
      return e.what();
    }
    return "no config_error";
  };
  const std::string ctx = "[circuitry.config_error] ctx: ";
  CHECK(error_of(R"({"n_heads": 1073741825})") ==
        ctx + "'n_heads' must be a positive integer, found 1073741825");
  CHECK(error_of(R"({"n_heads": 1073741824})") == "no config_error");  // 2^30 is the limit
  CHECK(error_of(R"({"d_model": 18446744073709551615})") ==
        ctx + "'d_model' must be a positive integer, found 18446744073709551615");
  CHECK(error_of(R"({"d_model": 1e30})") ==
        ctx + "'d_model' must be a positive integer, found 1e+30");
  CHECK(error_of(R"({"n_ctx": true})") == ctx + "'n_ctx' must be a positive integer, found true");
  CHECK(error_of(R"({"n_ctx": null})") == ctx + "'n_ctx' must be a positive integer, found null");
  CHECK(error_of(R"({"n_ctx": {}})") == ctx + "'n_ctx' must be a positive integer, found {}");
  CHECK(error_of(R"({"eps": "1e-5"})") ==
        ctx + "'eps' must be a non-negative number, found \"1e-5\"");
  CHECK(error_of(R"({"layer_norm_eps": []})") ==
        ctx + "'layer_norm_eps' must be a non-negative number, found []");
  CHECK_THROWS_WITH_AS(circuitry::parse_config_text(R"({"eps": 1e999})", "ctx"),
                       doctest::Contains("ctx: not valid JSON (number overflow parsing '1e999')"),
                       config_error);
  // nlohmann's message quotes the whole token: a number of a million digits is cut to ~200.
  try {
    circuitry::parse_config_text("{\"eps\": " + std::string(1000000, '9') + "}", "ctx");
    FAIL("a million-digit number parsed");
  } catch (const config_error& e) {
    CHECK(std::string(e.what()).size() < 300);
    CHECK(std::string(e.what()).find("number overflow parsing '999") != std::string::npos);
  }
  // 1e308 is a finite, non-negative number: a valid eps, as far as the config goes.
  CHECK(error_of(R"({"eps": 1e308})") == "no config_error");
  // A value of a megabyte is quoted in 80 characters.
  const std::string long_value = "{\"normalization_type\": \"" + std::string(1000000, 'x') + "\"}";
  const std::string message = error_of(long_value);
  CHECK(message.size() < 200);
  CHECK(message.find("found \"xxxxxxxx") != std::string::npos);
  CHECK(message.substr(message.size() - 3) == "...");
}
