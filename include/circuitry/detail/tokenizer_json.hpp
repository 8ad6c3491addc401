// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file tokenizer_json.hpp
/// Reading and validating a Hugging Face tokenizer.json into the parts of a byte-level BPE
/// tokenizer (TokenizerModel). What is accepted, and what is refused as unsupported, is listed
/// in tokenizer.hpp.

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "circuitry/detail/json_depth.hpp"
#include "circuitry/detail/tokenizer_added.hpp"
#include "circuitry/detail/tokenizer_bpe.hpp"
#include "circuitry/error.hpp"

namespace circuitry {
namespace detail {

/// Everything a Tokenizer needs, immutable once loaded.
struct TokenizerModel {
  std::string name;  // the file name, or the name given to from_json_text
  BpeModel bpe;
  AddedTokenMatcher raw_added;         // added tokens with normalized == false, matched first
  AddedTokenMatcher normalized_added;  // ... then those with normalized == true
  std::unordered_map<std::string, int> added_ids;  // added token content -> id
  bool add_prefix_space = true;  // ByteLevel pre-tokenizer flags (Hugging Face defaults)
  bool use_regex = true;
  int vocab_size = 0;               // 1 + the largest id of model.vocab and added_tokens
  std::vector<std::string> tokens;  // id -> token as written in the file (byte-level form)
  std::vector<std::string> texts;   // id -> the bytes the token decodes to
  std::vector<char> assigned;       // id -> whether some token has this id
};

/// Ids are kept in a dense table, so they are bounded: below kMaxTokenId, and past the number of
/// tokens the file lists by at most kMaxUnusedIds (a 40-byte file cannot ask for a table of 2^24
/// tokens, a gigabyte; real vocabularies are dense).
inline constexpr long long kMaxTokenId = 1LL << 24;
inline constexpr long long kMaxUnusedIds = 1LL << 16;

/// Validation helpers: every failure is a format_error "file 'NAME': 'KEY' ...".
class TokenizerJsonReader {
 public:
  using json = nlohmann::json;

  explicit TokenizerJsonReader(std::string name) : name_(std::move(name)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& message) const {
    throw format_error("file '" + name_ + "': '" + key + "' " + message);
  }

  /// "'abc'" for a string (shortened), "null", "true", "42", "an array", "an object".
  static std::string describe(const json& v) {
    if (v.is_string()) return "'" + shorten(v.get<std::string>()) + "'";
    if (v.is_array()) return "an array";
    if (v.is_object()) return "an object";
    return shorten(v.dump());
  }

  /// `s`, cut to about 60 bytes (at a UTF-8 character boundary) with "..." when longer.
  static std::string shorten(const std::string& s) {
    if (s.size() <= 60) return s;
    std::size_t cut = 57;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0u) == 0x80u) --cut;
    return s.substr(0, cut) + "...";
  }

  static std::string join(const std::string& parent, const std::string& field) {
    return parent.empty() ? field : parent + "." + field;
  }

  /// `obj[field]`, or nullptr when it is absent or null.
  static const json* find(const json& obj, const char* field) {
    const auto it = obj.find(field);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }

  const json& require(const json& obj, const std::string& parent, const char* field,
                      const char* expected) const {
    const json* v = find(obj, field);
    if (v == nullptr) fail(join(parent, field), std::string("is missing, expected ") + expected);
    return *v;
  }

  bool read_bool(const json& obj, const std::string& parent, const char* field,
                 bool fallback) const {
    const json* v = find(obj, field);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) fail(join(parent, field), "is " + describe(*v) + ", expected a boolean");
    return v->get<bool>();
  }

  std::string read_string(const json& v, const std::string& key) const {
    if (!v.is_string()) fail(key, "is " + describe(v) + ", expected a string");
    return v.get<std::string>();
  }

  int read_id(const json& v, const std::string& key) const {
    if (!v.is_number_integer() || v.get<long long>() < 0 || v.get<long long>() >= kMaxTokenId) {
      fail(key, "is " + describe(v) + ", expected a token id (an integer in [0, " +
                    std::to_string(kMaxTokenId) + "))");
    }
    return static_cast<int>(v.get<long long>());
  }

  /// The "type" of an optional component object at `key` ("" when absent or null).
  std::string type_of(const json& root, const char* key) const {
    const json* v = find(root, key);
    if (v == nullptr) return "";
    if (!v->is_object()) fail(key, "is " + describe(*v) + ", expected an object or null");
    return read_string(require(*v, key, "type", "a string"), join(key, "type"));
  }

 private:
  std::string name_;
};

/// The pair of tokens merge `m` (at `key`) names: "a b" (tokenizers < 0.20) or ["a", "b"].
inline std::pair<std::string, std::string> parse_merge(const nlohmann::json& m,
                                                       const std::string& key,
                                                       const TokenizerJsonReader& r) {
  if (m.is_string()) {
    const std::string& s = m.get_ref<const std::string&>();
    const std::size_t space = s.find(' ');
    if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
      r.fail(key, "is " + r.describe(m) + ", expected two tokens separated by one space");
    }
    return {s.substr(0, space), s.substr(space + 1)};
  }
  if (!m.is_array() || m.size() != 2 || !m[0].is_string() || !m[1].is_string()) {
    r.fail(key, "is " + r.describe(m) + ", expected \"left right\" or [\"left\", \"right\"]");
  }
  return {m[0].get<std::string>(), m[1].get<std::string>()};
}

/// Checks the components around the model: normalizer, pre_tokenizer, decoder.
inline void parse_pipeline(const nlohmann::json& root, const TokenizerJsonReader& r,
                           TokenizerModel& t) {
  const std::string normalizer = r.type_of(root, "normalizer");
  const bool empty_sequence = normalizer == "Sequence" &&
                              root.at("normalizer").contains("normalizers") &&
                              root.at("normalizer").at("normalizers").is_array() &&
                              root.at("normalizer").at("normalizers").empty();
  if (!normalizer.empty() && !empty_sequence) {
    r.fail("normalizer.type",
           "is '" + r.shorten(normalizer) +
               "', expected no normalizer (null): normalizers are not supported");
  }
  const std::string pre = r.type_of(root, "pre_tokenizer");
  if (pre != "ByteLevel") {
    r.fail(pre.empty() ? "pre_tokenizer" : "pre_tokenizer.type",
           (pre.empty() ? std::string("is null") : "is '" + r.shorten(pre) + "'") +
               ", expected 'ByteLevel' (only byte-level BPE tokenizers are supported)");
  }
  const auto& p = root.at("pre_tokenizer");
  t.add_prefix_space = r.read_bool(p, "pre_tokenizer", "add_prefix_space", true);
  t.use_regex = r.read_bool(p, "pre_tokenizer", "use_regex", true);
  r.read_bool(p, "pre_tokenizer", "trim_offsets", true);  // offsets only: no effect on ids
  const std::string decoder = r.type_of(root, "decoder");
  if (!decoder.empty() && decoder != "ByteLevel") {
    r.fail("decoder.type", "is '" + r.shorten(decoder) + "', expected 'ByteLevel' or null");
  }
}

/// model.vocab, model.merges and the BPE options.
inline void parse_bpe(const nlohmann::json& root, const TokenizerJsonReader& r, TokenizerModel& t) {
  const auto& model = r.require(root, "", "model", "an object");
  if (!model.is_object()) r.fail("model", "is " + r.describe(model) + ", expected an object");
  if (const auto* type = r.find(model, "type")) {
    if (r.read_string(*type, "model.type") != "BPE") {
      r.fail("model.type", "is " + r.describe(*type) + ", expected 'BPE'");
    }
  }
  if (const auto* dropout = r.find(model, "dropout")) {
    if (!dropout->is_number() || dropout->get<double>() != 0.0) {
      r.fail("model.dropout",
             "is " + r.describe(*dropout) + ", expected null or 0 (BPE dropout is not supported)");
    }
  }
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const auto* v = r.find(model, field)) {
      const std::string key = std::string("model.") + field;
      if (!r.read_string(*v, key).empty()) {
        r.fail(key, "is " + r.describe(*v) + ", expected null (not supported)");
      }
    }
  }
  BpeModel& bpe = t.bpe;
  bpe.fuse_unk = r.read_bool(model, "model", "fuse_unk", false);
  bpe.ignore_merges = r.read_bool(model, "model", "ignore_merges", false);
  const bool byte_fallback = r.read_bool(model, "model", "byte_fallback", false);

  const auto& vocab = r.require(model, "model", "vocab", "an object mapping tokens to ids");
  if (!vocab.is_object() || vocab.empty()) {
    r.fail("model.vocab", "is " + (vocab.is_object() ? std::string("empty") : r.describe(vocab)) +
                              ", expected an object mapping tokens to ids");
  }
  // Every id must be below this bound: the tokens listed (vocab and added), plus the holes
  // allowed.
  const auto* added = r.find(root, "added_tokens");
  const long long id_bound =
      static_cast<long long>(vocab.size() +
                             (added != nullptr && added->is_array() ? added->size() : 0)) +
      kMaxUnusedIds;
  for (const auto& [token, value] : vocab.items()) {
    const std::string key = "model.vocab." + r.shorten(token);
    const int id = r.read_id(value, key);
    if (id >= id_bound) {
      r.fail(key, "is " + std::to_string(id) + ", but the file lists " +
                      std::to_string(id_bound - kMaxUnusedIds) + " tokens: ids may leave at most " +
                      std::to_string(kMaxUnusedIds) + " unused");
    }
    bpe.vocab.emplace(token, id);
    if (static_cast<std::size_t>(id) >= t.tokens.size()) {
      t.tokens.resize(static_cast<std::size_t>(id) + 1);
      t.assigned.resize(static_cast<std::size_t>(id) + 1, 0);
    }
    if (t.assigned[static_cast<std::size_t>(id)]) {
      r.fail("model.vocab", "gives id " + std::to_string(id) + " to both '" +
                                r.shorten(t.tokens[static_cast<std::size_t>(id)]) + "' and '" +
                                r.shorten(token) + "'");
    }
    t.tokens[static_cast<std::size_t>(id)] = token;
    t.assigned[static_cast<std::size_t>(id)] = 1;
  }

  if (const auto* unk = r.find(model, "unk_token")) {
    const std::string token = r.read_string(*unk, "model.unk_token");
    const auto it = bpe.vocab.find(token);
    if (it == bpe.vocab.end()) {
      r.fail("model.unk_token", "is " + r.describe(*unk) + ", which is not in 'model.vocab'");
    }
    bpe.unk_id = it->second;
  }
  for (unsigned b = 0; b < 256; ++b) {
    const auto it = bpe.vocab.find(bpe.alphabet.encoded(static_cast<unsigned char>(b)));
    bpe.byte_ids[b] = it == bpe.vocab.end() ? -1 : it->second;
    if (bpe.byte_ids[b] >= 0 || !byte_fallback) continue;
    std::vector<int> ids;
    for (const char c : bpe.alphabet.encoded(static_cast<unsigned char>(b))) {
      char code[8];
      std::snprintf(code, sizeof code, "<0x%02X>", static_cast<unsigned char>(c));
      const auto f = bpe.vocab.find(code);
      if (f == bpe.vocab.end()) break;
      ids.push_back(f->second);
    }
    if (ids.size() == bpe.alphabet.encoded(static_cast<unsigned char>(b)).size()) {
      bpe.fallback_ids[b] = std::move(ids);
    }
  }

  const auto& merges = r.require(model, "model", "merges", "an array of merges");
  if (!merges.is_array()) {
    r.fail("model.merges", "is " + r.describe(merges) + ", expected an array of merges");
  }
  int rank = 0;
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const std::string key = "model.merges[" + std::to_string(i) + "]";
    if (merges[i].is_string() &&
        merges[i].get_ref<const std::string&>().rfind("#version", 0) == 0) {
      continue;  // the header line of a merges.txt, skipped as Hugging Face does
    }
    const auto [left, right] = parse_merge(merges[i], key, r);
    const auto id_of = [&](const std::string& token, const char* what) {
      const auto it = bpe.vocab.find(token);
      if (it == bpe.vocab.end()) {
        const auto& m = merges[i];
        const std::string shown = m.is_string() ? r.describe(m) : r.shorten(m.dump());
        r.fail(key, "is " + shown + ": its " + what + " token '" + r.shorten(token) +
                        "' is not in 'model.vocab'");
      }
      return it->second;
    };
    const int a = id_of(left, "left");
    const int b = id_of(right, "right");
    const int merged = id_of(left + right, "merged");
    // A pair listed twice keeps its last rank, as Hugging Face's HashMap::collect does.
    bpe.merges[BpeModel::pair_key(a, b)] = BpeMerge{rank++, merged};
  }
}

/// added_tokens, with the ids Hugging Face gives them (`AddedVocabulary::add_tokens`, one
/// token at a time in file order): a token already added or in model.vocab keeps that id,
/// another gets the next id past the vocabulary. The `id` written in the file is only checked
/// to be an id: where it differs, Hugging Face merely warns, and its ids are the ones a model
/// was trained with. As there, an empty token or an exact repeat of an entry is ignored.
inline void parse_added_tokens(const nlohmann::json& root, const TokenizerJsonReader& r,
                               TokenizerModel& t) {
  const auto* added = r.find(root, "added_tokens");
  if (added == nullptr) return;
  if (!added->is_array()) {
    r.fail("added_tokens", "is " + r.describe(*added) + ", expected an array");
  }
  const auto same = [](const AddedToken& a, const AddedToken& b) {
    return a.content == b.content && a.single_word == b.single_word && a.lstrip == b.lstrip &&
           a.rstrip == b.rstrip && a.normalized == b.normalized && a.special == b.special;
  };
  const int model_size = static_cast<int>(t.bpe.vocab.size());
  std::map<int, AddedToken> by_id;   // id -> the token last given it
  std::vector<AddedToken> specials;  // in the order HF matches them: specials, then others
  std::vector<AddedToken> others;
  std::unordered_map<std::string, bool> is_special;
  int max_added = 0;  // the largest id in t.added_ids (ids there are never replaced)
  for (std::size_t i = 0; i < added->size(); ++i) {
    const std::string key = "added_tokens[" + std::to_string(i) + "]";
    const auto& entry = (*added)[i];
    if (!entry.is_object()) r.fail(key, "is " + r.describe(entry) + ", expected an object");
    AddedToken token;
    r.read_id(r.require(entry, key, "id", "a token id"), key + ".id");
    token.content = r.read_string(r.require(entry, key, "content", "a string"), key + ".content");
    token.single_word = r.read_bool(entry, key, "single_word", false);
    token.lstrip = r.read_bool(entry, key, "lstrip", false);
    token.rstrip = r.read_bool(entry, key, "rstrip", false);
    token.normalized = r.read_bool(entry, key, "normalized", true);
    token.special = r.read_bool(entry, key, "special", false);
    if (token.content.empty()) continue;
    if (token.special && is_special.emplace(token.content, true).second) {
      specials.push_back(token);
    }
    if (const auto a = t.added_ids.find(token.content); a != t.added_ids.end()) {
      // A content keeps its first id, so an identical entry could only be stored there.
      if (same(by_id.at(a->second), token)) continue;
      token.id = a->second;
    } else if (const auto v = t.bpe.vocab.find(token.content); v != t.bpe.vocab.end()) {
      token.id = v->second;
    } else if (t.added_ids.empty()) {
      token.id = model_size;
    } else {
      token.id = (max_added >= model_size || model_size == 0) ? max_added + 1 : model_size;
    }
    if (token.id >= kMaxTokenId) {
      r.fail(key, "would get id " + std::to_string(token.id) + ", past the limit of " +
                      std::to_string(kMaxTokenId));
    }
    t.added_ids[token.content] = token.id;
    max_added = std::max(max_added, token.id);
    by_id[token.id] = token;
    if (is_special.count(token.content) == 0) others.push_back(token);
  }
  std::vector<AddedToken> raw;
  std::vector<AddedToken> normalized;
  for (const auto* list : {&specials, &others}) {
    for (const AddedToken& pattern : *list) {
      // The match is reported with the id of the content and the flags of the token that id
      // was last given to, as Hugging Face looks them up.
      AddedToken m = by_id.at(t.added_ids.at(pattern.content));
      m.content = pattern.content;
      (pattern.normalized ? normalized : raw).push_back(std::move(m));
    }
  }
  for (const auto& [id, token] : by_id) {
    const auto index = static_cast<std::size_t>(id);
    if (index >= t.tokens.size()) t.tokens.resize(index + 1), t.assigned.resize(index + 1, 0);
    t.tokens[index] = token.content;  // an added token takes precedence, as in Hugging Face
    t.assigned[index] = 1;
  }
  t.raw_added = AddedTokenMatcher(std::move(raw));
  t.normalized_added = AddedTokenMatcher(std::move(normalized));
}

/// Parses and validates tokenizer.json text; `name` names it in messages.
inline std::shared_ptr<const TokenizerModel> load_tokenizer_json(std::string_view text,
                                                                 const std::string& name) {
  using json = nlohmann::json;
  const std::size_t deep = json_too_deep_at(text.data(), text.data() + text.size());
  if (deep != std::string::npos) {
    throw format_error("file '" + name + "': the JSON " + json_depth_message(deep) +
                       "), expected a tokenizer.json object");
  }
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    throw format_error("file '" + name + "': not valid JSON: " + json_parse_message(e.what()));
  }
  if (!root.is_object()) {
    throw format_error("file '" + name + "': the top level is " +
                       TokenizerJsonReader::describe(root) + ", expected a tokenizer.json object");
  }
  const TokenizerJsonReader reader(name);
  auto t = std::make_shared<TokenizerModel>();
  t->name = name;
  parse_pipeline(root, reader, *t);
  parse_bpe(root, reader, *t);
  parse_added_tokens(root, reader, *t);
  t->vocab_size = static_cast<int>(t->tokens.size());
  t->texts.resize(t->tokens.size());
  for (std::size_t id = 0; id < t->tokens.size(); ++id) {
    if (!t->bpe.alphabet.decode(t->tokens[id], t->texts[id])) t->texts[id] = t->tokens[id];
  }
  return t;
}

}  // namespace detail
}  // namespace circuitry
