// Tests of tokenizer.hpp: the byte-level BPE tokenizer against the token file made by Hugging
// Face's tokenizers, hand-checked cases, and the messages for bad input.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "circuitry/safetensors.hpp"
#include "circuitry/tokenizer.hpp"

namespace {

using circuitry::Tokenizer;
using nlohmann::json;

const std::string kTokenizerPath = std::string(CIRCUITRY_MODELS_DIR) + "/tokenizer.json";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in, "cannot open " << path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

const Tokenizer& shipped() {
  static const Tokenizer tokenizer = Tokenizer::from_file(kTokenizerPath);
  return tokenizer;
}

/// The held-out documents: eval-text.txt split on the literal "<|endoftext|>".
const std::vector<std::string>& documents() {
  static const std::vector<std::string> docs = [] {
    const std::string text = read_text(std::string(CIRCUITRY_TEST_DATA_DIR) + "/eval-text.txt");
    const std::string separator = "<|endoftext|>";
    std::vector<std::string> out;
    std::size_t begin = 0;
    for (;;) {
      const std::size_t end = text.find(separator, begin);
      out.push_back(text.substr(begin, end - begin));
      if (end == std::string::npos) break;
      begin = end + separator.size();
    }
    return out;
  }();
  return docs;
}

/// The tokens of `text` as written in tokenizer.json ("Ġthe").
std::vector<std::string> tokens_of(const Tokenizer& tok, const std::string& text) {
  std::vector<std::string> out;
  for (const int id : tok.encode(text)) out.push_back(tok.token(id));
  return out;
}

/// GPT-2's pre-tokenization of `text`.
std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> out;
  circuitry::detail::gpt2_split(text, [&](std::string_view w) { out.emplace_back(w); });
  return out;
}

/// The shipped tokenizer.json as JSON, to derive variants from.
const json& shipped_json() {
  static const json j = json::parse(read_text(kTokenizerPath));
  return j;
}

/// A small byte-level BPE tokenizer.json: the 256 byte characters (ids 0..255 in byte order),
/// then `extra` tokens, then `merges`.
json tiny_tokenizer(const std::vector<std::string>& extra, const json& merges) {
  json vocab = json::object();
  const auto map = circuitry::detail::bytes_to_unicode();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    circuitry::detail::append_utf8(s, map[static_cast<std::size_t>(b)]);
    vocab[s] = b;
  }
  int id = 256;
  for (const auto& token : extra) vocab[token] = id++;
  return json{{"version", "1.0"},
              {"added_tokens", json::array()},
              {"normalizer", nullptr},
              {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
              {"decoder", {{"type", "ByteLevel"}}},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

}  // namespace

TEST_CASE("The shipped tokenizer has 4096 tokens and token 0 is <|endoftext|>") {
  const Tokenizer& tok = shipped();
  CHECK(tok.vocab_size() == 4096);
  CHECK(tok.name() == kTokenizerPath);
  CHECK(tok.token(0) == "<|endoftext|>");
  CHECK(tok.token_id("<|endoftext|>") == 0);
  CHECK(tok.token_id("Ġreturn") == 358);
  CHECK_FALSE(tok.token_id(" return").has_value());  // ids are looked up in byte-level form
}

TEST_CASE("Encoding every held-out document reproduces eval-tokens.safetensors token for token") {
  const auto file = circuitry::SafetensorsFile::open(std::string(CIRCUITRY_TEST_DATA_DIR) +
                                                     "/eval-tokens.safetensors");
  const std::vector<std::int64_t> expected = file.integers("tokens");
  REQUIRE(expected.size() == 806518);
  const Tokenizer& tok = shipped();
  const auto& docs = documents();

  const auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<int>> encoded;
  encoded.reserve(docs.size());
  for (const auto& doc : docs) encoded.push_back(tok.encode(doc));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::size_t bytes = 0;
  for (const auto& doc : docs) bytes += doc.size();
  MESSAGE("encoded " << docs.size() << " documents (" << bytes << " bytes) in " << seconds << " s");

  std::size_t at = 0;  // position in `expected`
  for (std::size_t d = 0; d < docs.size(); ++d) {
    CAPTURE(d);
    REQUIRE(at < expected.size());
    REQUIRE(expected[at] == 0);
    ++at;
    const std::vector<int>& ids = encoded[d];
    REQUIRE(at + ids.size() <= expected.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] == expected[at + i]) continue;
      // Show where: the decoded text up to the mismatch, and the tokens on both sides.
      const std::size_t from = i < 8 ? 0 : i - 8;
      const std::vector<int> before(ids.begin() + static_cast<std::ptrdiff_t>(from),
                                    ids.begin() + static_cast<std::ptrdiff_t>(i));
      std::ostringstream ours, theirs;
      for (std::size_t k = i; k < std::min(ids.size(), i + 8); ++k) ours << ids[k] << ' ';
      for (std::size_t k = at + i; k < std::min(expected.size(), at + i + 8); ++k) {
        theirs << expected[k] << ' ';
      }
      INFO("document " << d << ", token " << i << ": after \"" << tok.decode(before)
                       << "\" we give [" << ours.str() << "], the file has [" << theirs.str()
                       << "]");
      FAIL("first mismatch");
    }
    at += ids.size();
  }
  CHECK(at == expected.size());
}

TEST_CASE("Decoding the encoding of every document gives the document back") {
  const Tokenizer& tok = shipped();
  const auto& docs = documents();
  for (std::size_t d = 0; d < docs.size(); ++d) {
    CAPTURE(d);
    CHECK(tok.decode(tok.encode(docs[d])) == docs[d]);
  }
  const std::string whole = read_text(std::string(CIRCUITRY_TEST_DATA_DIR) + "/eval-text.txt");
  CHECK(tok.decode(tok.encode(whole)) == whole);
}

TEST_CASE("The special token is split out wherever it appears") {
  const Tokenizer& tok = shipped();
  CHECK(tok.encode("<|endoftext|>") == std::vector<int>{0});
  CHECK(tok.encode("<|endoftext|><|endoftext|>") == std::vector<int>{0, 0});
  CHECK(tok.encode("a<|endoftext|>b") == std::vector<int>{65, 0, 66});
  // No space is added after it (add_prefix_space is false), and a partial one is plain text.
  CHECK(tokens_of(tok, "<|endoftext|> x") == std::vector<std::string>{"<|endoftext|>", "Ġx"});
  CHECK(tokens_of(tok, "<|endoftext") == std::vector<std::string>{"<", "|", "end", "of", "text"});
  // The whole file in one call is the documents' encodings joined by token 0.
  const auto& docs = documents();
  std::vector<int> joined;
  for (std::size_t d = 0; d < docs.size(); ++d) {
    if (d > 0) joined.push_back(0);
    const auto ids = tok.encode(docs[d]);
    joined.insert(joined.end(), ids.begin(), ids.end());
  }
  CHECK(tok.encode(read_text(std::string(CIRCUITRY_TEST_DATA_DIR) + "/eval-text.txt")) == joined);
}

TEST_CASE("Text is split into words by GPT-2's pre-tokenizer regex") {
  using V = std::vector<std::string>;
  SUBCASE("a run of whitespace leaves its last character to the word after it") {
    CHECK(words_of("a  \n  b") == V{"a", "  \n ", " b"});
    CHECK(words_of("\t\tx") == V{"\t", "\t", "x"});  // only ' ' joins the next word
    CHECK(words_of("x  ") == V{"x", "  "});          // at the end the whole run is one word
    CHECK(words_of("    return") == V{"   ", " return"});
    CHECK(words_of("\n\n\n") == V{"\n\n\n"});
  }
  SUBCASE("letters, numbers and other characters form separate words") {
    CHECK(words_of("x123 4567") == V{"x", "123", " 4567"});
    CHECK(words_of("f(x):") == V{"f", "(", "x", "):"});
    CHECK(words_of("self.x_1") == V{"self", ".", "x", "_", "1"});
  }
  SUBCASE("contractions are lower-case only") {
    CHECK(words_of("don't") == V{"don", "'t"});
    CHECK(words_of("we'll they've I'd") == V{"we", "'ll", " they", "'ve", " I", "'d"});
    CHECK(words_of("I'M") == V{"I", "'", "M"});
  }
  SUBCASE("non-ASCII letters and numbers are \\p{L} and \\p{N}") {
    CHECK(words_of("héllo wörld") == V{"héllo", " wörld"});
    CHECK(words_of("Ωmega жук 中文") == V{"Ωmega", " жук", " 中文"});
    CHECK(words_of("x² ٣Ⅻ") == V{"x", "²", " ٣Ⅻ"});      // No, Nd, Nl
    CHECK(words_of("e\xCC\x81") == V{"e", "\xCC\x81"});  // a combining mark is not \p{L}
    CHECK(words_of("👍🏽 ok") == V{"👍🏽", " ok"});
  }
  SUBCASE("\\s is Unicode White_Space") {
    CHECK(words_of("a\xC2\xA0"
                   "b") == V{"a", "\xC2\xA0", "b"});  // U+00A0 is a space
    CHECK(words_of("a\x1C"
                   "b") == V{"a", "\x1C", "b"});  // U+001C is not
    CHECK(words_of("a\xE3\x80\x80\xE3\x80\x80"
                   "b") ==  // U+3000, which joins no word
          V{"a", "\xE3\x80\x80", "\xE3\x80\x80", "b"});
  }
}

TEST_CASE("Hand-checked encodings match Hugging Face's") {
  // Expected tokens from Hugging Face tokenizers 0.22.2 on the shipped tokenizer.json.
  const Tokenizer& tok = shipped();
  using V = std::vector<std::string>;
  CHECK(tok.encode("") == std::vector<int>{});
  CHECK(tok.encode("a  \n  b") == std::vector<int>{65, 257, 1199, 317});
  CHECK(tokens_of(tok, "a  \n  b") == V{"a", "ĠĠ", "ĊĠ", "Ġb"});
  CHECK(tokens_of(tok, "def f(x):\n    return x") ==
        V{"def", "Ġf", "(", "x", "):", "ĊĠĠĠ", "Ġreturn", "Ġx"});
  CHECK(tokens_of(tok, "x123 4567") == V{"x", "123", "Ġ4", "5", "67"});
  CHECK(tokens_of(tok, "don't") == V{"d", "on", "'t"});
  CHECK(tokens_of(tok, "héllo wörld") == V{"h", "Ã", "©", "l", "lo", "Ġw", "Ã", "¶", "r", "ld"});
  CHECK(tok.encode("👍🏽 ok") == std::vector<int>{1626, 240, 236, 1626, 238, 122, 324, 75});
  CHECK(tokens_of(tok, "\n\n\n") == V{"ĊĊ", "Ċ"});
  CHECK(tokens_of(tok, "    return self.x") == V{"ĠĠĠ", "Ġreturn", "Ġself", ".", "x"});
  CHECK(tok.encode(" ²٣ Ⅻ") == std::vector<int>{221, 127, 111, 150, 97, 3108, 228, 105});
}

TEST_CASE("Any bytes, even invalid UTF-8, encode and decode back to themselves") {
  const Tokenizer& tok = shipped();
  const std::string samples[] = {std::string("\xFF\xFE abc \xC3", 8), std::string("\0x\0", 3),
                                 "\xE2\x82", "caf\xC3\xA9\xED\xA0\x80!", "\xF0\x9F\x98\x80"};
  for (const std::string& s : samples) {
    CAPTURE(s);
    CHECK(tok.decode(tok.encode(s)) == s);
  }
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes += static_cast<char>(b);
  CHECK(tok.decode(tok.encode(all_bytes)) == all_bytes);
}

TEST_CASE("token_text gives the decoded text of one token, for labels") {
  const Tokenizer& tok = shipped();
  CHECK(tok.token_text(0) == "<|endoftext|>");
  CHECK(tok.token_text(358) == " return");
  CHECK(tok.token_text(*tok.token_id("ĊĠĠĠ")) == "\n   ");
  CHECK(tok.token_text(*tok.token_id("Ã")) == "\xC3");  // one byte of a two-byte character
  const std::vector<int> ids = tok.encode("def f(x):\n    return x");
  std::string joined;
  for (const int id : ids) joined += tok.token_text(id);
  CHECK(joined == tok.decode(ids));
}

TEST_CASE("Merges apply by rank, written as strings or as pairs") {
  SUBCASE("the lower-ranked merge wins where two overlap") {
    const auto bc_first = Tokenizer::from_json_text(
        tiny_tokenizer({"bc", "ab"},
                       json::array({json::array({"b", "c"}), json::array({"a", "b"})}))
            .dump());
    CHECK(tokens_of(bc_first, "abc") == std::vector<std::string>{"a", "bc"});
    const auto ab_first = Tokenizer::from_json_text(
        tiny_tokenizer({"bc", "ab"},
                       json::array({json::array({"a", "b"}), json::array({"b", "c"})}))
            .dump());
    CHECK(tokens_of(ab_first, "abc") == std::vector<std::string>{"ab", "c"});
  }
  SUBCASE("equal pairs merge from the left") {
    const auto tok =
        Tokenizer::from_json_text(tiny_tokenizer({"aa", "aaaa"}, json::array({"a a", "aa aa"}))
                                      .dump());  // legacy "a b" strings
    CHECK(tokens_of(tok, "aaa") == std::vector<std::string>{"aa", "a"});
    CHECK(tokens_of(tok, "aaaaa") == std::vector<std::string>{"aaaa", "a"});
  }
  SUBCASE("ignore_merges keeps a word that is a token whole") {
    json j = tiny_tokenizer({"ab", "abc"}, json::array({json::array({"a", "b"})}));
    CHECK(tokens_of(Tokenizer::from_json_text(j.dump()), "abc") ==
          std::vector<std::string>{"ab", "c"});
    j["model"]["ignore_merges"] = true;
    CHECK(tokens_of(Tokenizer::from_json_text(j.dump()), "abc") == std::vector<std::string>{"abc"});
  }
  SUBCASE("the shipped merges as legacy strings give the same encodings") {
    json j = shipped_json();
    for (auto& m : j["model"]["merges"])
      m = m[0].get<std::string>() + " " + m[1].get<std::string>();
    const auto legacy = Tokenizer::from_json_text(j.dump(), "legacy.json");
    const auto& docs = documents();
    for (std::size_t d = 0; d < docs.size(); d += 10) {
      CAPTURE(d);
      CHECK(legacy.encode(docs[d]) == shipped().encode(docs[d]));
    }
  }
}

TEST_CASE("Pre-tokenizer flags add_prefix_space and use_regex are honoured") {
  json j = shipped_json();
  j["pre_tokenizer"]["add_prefix_space"] = true;
  const auto prefixed = Tokenizer::from_json_text(j.dump());
  CHECK(tokens_of(prefixed, "return x") == std::vector<std::string>{"Ġreturn", "Ġx"});
  CHECK(tokens_of(prefixed, " x") == std::vector<std::string>{"Ġx"});  // already has one
  CHECK(tokens_of(prefixed, "a<|endoftext|>b") ==  // each piece gets its own space
        std::vector<std::string>{"Ġa", "<|endoftext|>", "Ġb"});
  j["pre_tokenizer"]["add_prefix_space"] = false;
  j["pre_tokenizer"]["use_regex"] = false;  // the whole text is one word: merges cross spaces
  const auto whole = Tokenizer::from_json_text(j.dump());
  CHECK(tokens_of(shipped(), "    return") == std::vector<std::string>{"ĠĠĠ", "Ġreturn"});
  CHECK(tokens_of(whole, "    return") == std::vector<std::string>{"ĠĠĠĠ", "return"});
}

TEST_CASE("Added tokens honour lstrip, rstrip and single_word") {
  // Expected ids checked against Hugging Face tokenizers 0.22.2.
  json j = shipped_json();
  j["added_tokens"].push_back({{"id", 4096},
                               {"content", "<pad>"},
                               {"single_word", false},
                               {"lstrip", true},
                               {"rstrip", true},
                               {"normalized", false},
                               {"special", true}});
  j["added_tokens"].push_back({{"id", 4097},
                               {"content", "hello world"},
                               {"single_word", true},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"normalized", true},
                               {"special", false}});
  const auto tok = Tokenizer::from_json_text(j.dump(), "added.json");
  CHECK(tok.vocab_size() == 4098);
  CHECK(tok.token_id("<pad>") == 4096);
  CHECK(tok.encode("a <pad> b") == std::vector<int>{65, 4096, 66});  // both spaces swallowed
  CHECK(tok.encode("  <pad>  x") == std::vector<int>{4096, 88});
  CHECK(tok.encode("<pad><pad>") == std::vector<int>{4096, 4096});
  CHECK(tok.encode("hello world!") == std::vector<int>{4097, 1});
  CHECK(tok.encode("say hello world") == std::vector<int>{83, 1504, 221, 4097});
  // Not a single word: a word character (letter, digit, '_') touches it.
  CHECK(tok.encode("hello worlds") == std::vector<int>{1342, 332, 336, 269, 76, 886});
  CHECK(tok.encode("xhello world") == std::vector<int>{88, 1342, 332, 336, 269, 1739});
  CHECK(tok.encode("hello world_") == std::vector<int>{1342, 332, 336, 269, 1739, 63});
  CHECK(tok.decode({4096}) == "<pad>");
}

TEST_CASE("Added tokens get Hugging Face's ids, not necessarily those written in the file") {
  // Hugging Face gives a token already in model.vocab the vocabulary's id, and a new token the
  // next id past the vocabulary; it only warns when the file says otherwise.
  json j = shipped_json();
  j["added_tokens"].push_back({{"id", 5000},
                               {"content", "é"},
                               {"special", true},
                               {"normalized", false}});  // "é" is token 166 of the vocabulary
  j["added_tokens"].push_back(
      {{"id", 5001}, {"content", "<pad>"}, {"special", true}, {"normalized", false}});
  const auto tok = Tokenizer::from_json_text(j.dump());
  CHECK(tok.token_id("é") == 166);
  CHECK(tok.token_id("<pad>") == 4096);
  CHECK(tok.vocab_size() == 4097);
}

TEST_CASE("Tokenizers are cheap to copy and safe to share between threads") {
  // A copy on purpose: it shares the model and the word cache with the original.
  const Tokenizer copy = shipped();  // NOLINT(performance-unnecessary-copy-initialization)
  const auto& docs = documents();
  std::vector<std::vector<int>> results(4);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t d = t; d < docs.size(); d += results.size()) {
        const auto ids = copy.encode(docs[d]);
        results[t].insert(results[t].end(), ids.begin(), ids.end());
      }
    });
  }
  for (auto& th : threads) th.join();
  for (std::size_t t = 0; t < results.size(); ++t) {
    std::vector<int> expected;
    for (std::size_t d = t; d < docs.size(); d += results.size()) {
      const auto ids = shipped().encode(docs[d]);
      expected.insert(expected.end(), ids.begin(), ids.end());
    }
    CHECK(results[t] == expected);
  }
}

TEST_CASE("Unreadable files are refused with io_error naming the file") {
  CHECK_THROWS_WITH_AS(Tokenizer::from_file("no/such/tokenizer.json"),
                       "[circuitry.io_error] file 'no/such/tokenizer.json': cannot open: No such "
                       "file or directory",
                       circuitry::io_error);
  CHECK_THROWS_WITH_AS(Tokenizer::from_file(CIRCUITRY_TEST_DATA_DIR),
                       ("[circuitry.io_error] file '" + std::string(CIRCUITRY_TEST_DATA_DIR) +
                        "': is a directory, expected a tokenizer.json file")
                           .c_str(),
                       circuitry::io_error);
  const std::string empty =
      (std::filesystem::temp_directory_path() / "circuitry_test_empty_tokenizer.json").string();
  { std::ofstream out(empty); }
  CHECK_THROWS_WITH_AS(
      Tokenizer::from_file(empty),
      ("[circuitry.io_error] file '" + empty + "': is empty, expected a tokenizer.json file")
          .c_str(),
      circuitry::io_error);
  std::remove(empty.c_str());
}

TEST_CASE("Malformed tokenizer.json is refused with format_error naming the file and the key") {
  const json good = tiny_tokenizer({"ab"}, json::array({"a b"}));
  REQUIRE_NOTHROW(Tokenizer::from_json_text(good.dump(), "x.json"));
  const auto error_of = [](const json& j) -> std::string {
    try {
      Tokenizer::from_json_text(j.dump(), "x.json");
    } catch (const circuitry::format_error& e) {
      return e.what();
    }
    return "no format_error";
  };
  const std::string file = "[circuitry.format_error] file 'x.json': ";
  json j = good;

  SUBCASE("not JSON, or not an object") {
    CHECK_THROWS_WITH_AS(Tokenizer::from_json_text("{\"model\": ", "x.json"),
                         (file + "not valid JSON: parse error at line 1, column 11: syntax error "
                                 "while parsing value - unexpected end of input; expected '[', "
                                 "'{', or a literal")
                             .c_str(),
                         circuitry::format_error);
    CHECK(error_of(json::array()) == file +
                                         "the top level is an array, expected a tokenizer.json "
                                         "object");
  }
  SUBCASE("a model other than BPE") {
    j["model"]["type"] = "WordPiece";
    CHECK(error_of(j) == file + "'model.type' is 'WordPiece', expected 'BPE'");
  }
  SUBCASE("a missing or mistyped vocabulary") {
    j["model"].erase("vocab");
    CHECK(error_of(j) ==
          file + "'model.vocab' is missing, expected an object mapping tokens to ids");
    j["model"]["vocab"] = json::array();
    CHECK(error_of(j) == file +
                             "'model.vocab' is an array, expected an object mapping tokens "
                             "to ids");
    j["model"]["vocab"] = {{"a", -1}};
    CHECK(error_of(j) == file +
                             "'model.vocab.a' is -1, expected a token id (an integer in [0, "
                             "16777216))");
    j["model"]["vocab"] = {{"a", 0}, {"b", 0}};
    CHECK(error_of(j) == file + "'model.vocab' gives id 0 to both 'a' and 'b'");
  }
  SUBCASE("a merge naming a token not in the vocabulary") {
    j["model"]["merges"] = json::array({"a b", "a xy"});
    CHECK(error_of(j) == file +
                             "'model.merges[1]' is 'a xy': its right token 'xy' is not in "
                             "'model.vocab'");
    j["model"]["merges"] = json::array({json::array({"b", "a"})});
    CHECK(error_of(j) == file +
                             "'model.merges[0]' is [\"b\",\"a\"]: its merged token 'ba' is not in "
                             "'model.vocab'");
    j["model"]["merges"] = json::array({"a b c"});
    CHECK(error_of(j) == file +
                             "'model.merges[0]' is 'a b c', expected two tokens separated by "
                             "one space");
    j["model"]["merges"] = json::array({json::array({"a"})});
    CHECK(error_of(j) == file +
                             "'model.merges[0]' is an array, expected \"left right\" or "
                             "[\"left\", \"right\"]");
  }
  SUBCASE("unsupported components") {
    j["normalizer"] = {{"type", "NFC"}};
    CHECK(error_of(j) == file +
                             "'normalizer.type' is 'NFC', expected no normalizer (null): "
                             "normalizers are not supported");
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "Metaspace"}};
    CHECK(error_of(j) == file +
                             "'pre_tokenizer.type' is 'Metaspace', expected 'ByteLevel' "
                             "(only byte-level BPE tokenizers are supported)");
    j["pre_tokenizer"] = nullptr;
    CHECK(error_of(j) == file +
                             "'pre_tokenizer' is null, expected 'ByteLevel' (only byte-level "
                             "BPE tokenizers are supported)");
    j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", "yes"}};
    CHECK(error_of(j) == file + "'pre_tokenizer.add_prefix_space' is 'yes', expected a boolean");
    j["pre_tokenizer"] = {{"type", "ByteLevel"}};
    j["model"]["dropout"] = 0.1;
    CHECK(error_of(j) == file +
                             "'model.dropout' is 0.1, expected null or 0 (BPE dropout is not "
                             "supported)");
    j["model"]["dropout"] = nullptr;
    j["model"]["continuing_subword_prefix"] = "##";
    CHECK(error_of(j) == file +
                             "'model.continuing_subword_prefix' is '##', expected null (not "
                             "supported)");
  }
  SUBCASE("malformed added tokens") {
    j["added_tokens"] = {{{"id", 0}, {"content", 7}}};
    CHECK(error_of(j) == file + "'added_tokens[0].content' is 7, expected a string");
    j["added_tokens"] = {{{"content", "<s>"}}};
    CHECK(error_of(j) == file + "'added_tokens[0].id' is missing, expected a token id");
  }
}

TEST_CASE("Ids out of range are refused with argument_error naming the id and vocabulary size") {
  const Tokenizer& tok = shipped();
  CHECK_THROWS_WITH_AS(tok.decode({0, 4096}),
                       ("[circuitry.argument_error] Tokenizer::decode: token id 4096 (at index 1) "
                        "is out of range for vocabulary size 4096 of '" +
                        kTokenizerPath + "'")
                           .c_str(),
                       circuitry::argument_error);
  CHECK_THROWS_WITH_AS(tok.token_text(-1),
                       ("[circuitry.argument_error] Tokenizer::token_text: token id -1 is out of "
                        "range for vocabulary size 4096 of '" +
                        kTokenizerPath + "'")
                           .c_str(),
                       circuitry::argument_error);
  // An id below the vocabulary size that no token has (a hole in model.vocab).
  const auto holes = Tokenizer::from_json_text(
      json{{"pre_tokenizer", {{"type", "ByteLevel"}}},
           {"model", {{"vocab", {{"a", 0}, {"b", 2}}}, {"merges", json::array()}}}}
          .dump(),
      "holes.json");
  CHECK(holes.vocab_size() == 3);
  CHECK_THROWS_WITH_AS(holes.token(1),
                       "[circuitry.argument_error] Tokenizer::token: token id 1 has no token in "
                       "'holes.json'",
                       circuitry::argument_error);
}

// ---- Hostile files (README, "Robustness") ---------------------------------------------------

TEST_CASE("A FIFO given as tokenizer.json is refused without blocking") {
  const std::string fifo = (std::filesystem::temp_directory_path() /
                            ("circuitry_test_fifo_" + std::to_string(::getpid())))
                               .string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH_AS(Tokenizer::from_file(fifo),
                       ("[circuitry.io_error] file '" + fifo +
                        "': is not a regular file, expected a tokenizer.json file")
                           .c_str(),
                       circuitry::io_error);
  std::remove(fifo.c_str());
}

TEST_CASE("A JSON nesting bomb is refused before it is parsed") {
  const std::string bomb = "{\"model\": " + std::string(1000000, '[') + "}";
  CHECK_THROWS_WITH_AS(Tokenizer::from_json_text(bomb, "x.json"),
                       "[circuitry.format_error] file 'x.json': the JSON nests more than 64 levels "
                       "deep (at byte 73), expected a tokenizer.json object",
                       circuitry::format_error);
  // The shipped file nests 4 levels.
  CHECK_NOTHROW(shipped());
}

TEST_CASE("Ids far past the number of tokens are refused: the tables would not fit the file") {
  const auto load = [](const json& j) { return Tokenizer::from_json_text(j.dump(), "x.json"); };
  json j{{"pre_tokenizer", {{"type", "ByteLevel"}}},
         {"model", {{"vocab", {{"a", 0}, {"b", 16777215}}}, {"merges", json::array()}}}};
  // 2 tokens, 2^24 ids: a gigabyte of tables for a 70-byte file.
  CHECK_THROWS_WITH_AS(load(j),
                       "[circuitry.format_error] file 'x.json': 'model.vocab.b' is 16777215, but "
                       "the file lists 2 tokens: ids may leave at most 65536 unused",
                       circuitry::format_error);
  j["model"]["vocab"]["b"] = 65537;  // 2 + 65536 - 1: the largest id allowed
  CHECK(load(j).vocab_size() == 65538);
  j["model"]["vocab"]["b"] = 16777216;
  CHECK_THROWS_WITH_AS(load(j),
                       "[circuitry.format_error] file 'x.json': 'model.vocab.b' is 16777216, "
                       "expected a token id (an integer in [0, 16777216))",
                       circuitry::format_error);
  j["model"]["vocab"]["b"] = 18446744073709551615ULL;
  CHECK_THROWS_WITH_AS(load(j),
                       "[circuitry.format_error] file 'x.json': 'model.vocab.b' is "
                       "18446744073709551615, expected a token id (an integer in [0, 16777216))",
                       circuitry::format_error);
  j["model"]["vocab"]["b"] = 1e30;
  CHECK_THROWS_WITH_AS(load(j),
                       "[circuitry.format_error] file 'x.json': 'model.vocab.b' is 1e+30, expected "
                       "a token id (an integer in [0, 16777216))",
                       circuitry::format_error);
}

TEST_CASE("Wrong types and missing fields name the key") {
  const auto error_of = [](const json& j) -> std::string {
    try {
      Tokenizer::from_json_text(j.dump(), "x.json");
    } catch (const circuitry::format_error& e) {
      return e.what();
    }
    return "no format_error";
  };
  const std::string file = "[circuitry.format_error] file 'x.json': ";
  json j = tiny_tokenizer({}, json::array());
  REQUIRE(error_of(j) == "no format_error");
  json k = j;
  k.erase("model");
  CHECK(error_of(k) == file + "'model' is missing, expected an object");
  k = j;
  k["model"]["merges"] = nullptr;
  CHECK(error_of(k) == file + "'model.merges' is missing, expected an array of merges");
  k["model"]["merges"] = "a b";
  CHECK(error_of(k) == file + "'model.merges' is 'a b', expected an array of merges");
  k = j;
  k["model"]["vocab"]["a"] = "97";
  CHECK(error_of(k) ==
        file + "'model.vocab.a' is '97', expected a token id (an integer in [0, 16777216))");
  k = j;
  k["added_tokens"] = {{{"id", 5}, {"content", "<s>"}, {"special", "yes"}}};
  CHECK(error_of(k) == file + "'added_tokens[0].special' is 'yes', expected a boolean");
  k["added_tokens"] = json::object();
  CHECK(error_of(k) == file + "'added_tokens' is an object, expected an array");
  k = j;
  k["decoder"] = {{"type", 7}};
  CHECK(error_of(k) == file + "'decoder.type' is 7, expected a string");
}

TEST_CASE("Many added tokens load in linear time") {
  // Each new added token took the maximum over all earlier ones: quadratic, minutes for a
  // (hostile) file of a few hundred thousand added tokens.
  json j = tiny_tokenizer({}, json::array());
  json added = json::array();
  for (int i = 0; i < 50000; ++i) {
    added.push_back({{"id", 256 + i}, {"content", "<t" + std::to_string(i) + ">"}});
  }
  j["added_tokens"] = added;
  const Tokenizer tok = Tokenizer::from_json_text(j.dump(), "many.json");
  CHECK(tok.vocab_size() == 256 + 50000);
  CHECK(tok.encode("<t49999><t7>") == std::vector<int>{256 + 49999, 256 + 7});
  // Finding them is a walk down a trie, not a scan of the 50000 tokens at every '<'.
  CHECK(tok.encode(std::string(200000, '<')).size() == 200000);
}
