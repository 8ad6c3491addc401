// libFuzzer fuzzer of the config reader (config.hpp: parse_config_text, which
// read_config_json_file calls on a file's text, apply_config_json, validate) (README,
// "Robustness"). Any input must either give a config or throw a circuitry::error; a config
// that validates must survive to_json and back unchanged.
//
//     build/asan/tests/fuzz/circuitry_fuzz_config CORPUS_DIR tests/fuzz/corpus/config
#include <circuitry/config.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  circuitry::ModelConfig config;
  try {
    const nlohmann::json j = circuitry::parse_config_text(text, "fuzz.json");
    circuitry::apply_config_json(config, j, "fuzz.json");
    config.validate("fuzz.json");
  } catch (const circuitry::error&) {
    return 0;  // rejected with a typed error
  }
  circuitry::ModelConfig again;
  try {
    circuitry::apply_config_json(again, circuitry::to_json(config), "round trip");
  } catch (const circuitry::error&) {
    std::abort();  // a valid config must read back
  }
  if (again != config) std::abort();
  return 0;
}
