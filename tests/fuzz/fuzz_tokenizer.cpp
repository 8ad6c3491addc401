// libFuzzer fuzzer of the tokenizer.json reader (tokenizer.hpp) (README, "Robustness"). Any
// input must either load or throw a circuitry::error. A tokenizer that loads encodes a fixed
// text and the input itself; when decode(encode(s)) == s must hold (below), it is checked.
//
//     build/asan/tests/fuzz/circuitry_fuzz_tokenizer CORPUS_DIR tests/fuzz/corpus/tokenizer
#include <circuitry/tokenizer.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace {

/// Whether decode(encode(s)) == s must hold for the tokenizer `tok` read from `j`: every
/// byte's character is a token (nothing is dropped or replaced by unk_token), no added token
/// (lstrip / rstrip swallow spaces), and no prefix space added.
bool round_trips(const circuitry::Tokenizer& tok, const nlohmann::json& j) {
  static const circuitry::detail::ByteLevelAlphabet alphabet;
  for (unsigned b = 0; b < 256; ++b) {
    if (!tok.token_id(alphabet.encoded(static_cast<unsigned char>(b)))) return false;
  }
  const auto added = j.find("added_tokens");
  if (added != j.end() && !added->empty()) return false;
  const auto& pre = j.at("pre_tokenizer");
  const auto prefix = pre.find("add_prefix_space");
  return prefix != pre.end() && *prefix == false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const circuitry::Tokenizer tok = circuitry::Tokenizer::from_json_text(text, "fuzz.json");
    // It loaded, so it is valid, shallow JSON: parsing it again is safe.
    const bool check = round_trips(tok, nlohmann::json::parse(text.begin(), text.end()));
    const std::string_view sample = "<|endoftext|>def f(x):\n    return x's  \xff\xfe 42 \n\n";
    for (const std::string_view s : {sample, text}) {
      const std::vector<int> ids = tok.encode(s);
      if (check && tok.decode(ids) != s) std::abort();
    }
  } catch (const circuitry::error&) {
    // Rejected with a typed error: the expected outcome for most inputs.
  }
  return 0;
}
