// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file tokenizer.hpp
/// A reader of Hugging Face `tokenizer.json` files for byte-level BPE models (GPT-2 and the
/// shipped examples/models/tokenizer.json), turning text into token ids and back.
///
///     auto tok = circuitry::Tokenizer::from_file("examples/models/tokenizer.json");
///     std::vector<int> ids = tok.encode("<|endoftext|>def f(x):\n    return x");
///     // ids[0] == 0 (the special token), and tok.decode(ids) is the text again
///     std::string label = tok.token_text(ids[1]);  // "def"
///
/// Encoding follows the Hugging Face `tokenizers` library step by step, and gives the same ids
/// as its `Tokenizer.encode(text, add_special_tokens=False).ids`:
///  1. Added tokens (`added_tokens`, e.g. "<|endoftext|>") are found first, leftmost-longest,
///     and become single tokens; their `single_word`, `lstrip` and `rstrip` flags are honoured
///     (for `single_word`, Rust's `\w` is approximated by L, Nd, Nl, M, Pc and ZWJ/ZWNJ).
///     Tokens with `normalized: false` are split out before those with `normalized: true`.
///  2. Each remaining piece goes through the ByteLevel pre-tokenizer: a space is prepended if
///     `add_prefix_space` and the piece does not start with one; with `use_regex` the piece is
///     split by GPT-2's regex
///     `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
///     (implemented by hand; `\p{L}`, `\p{N}` from Unicode 14 tables, `\s` = White_Space);
///     each byte becomes a printable character by GPT-2's `bytes_to_unicode`.
///  3. The BPE model splits each word into bytes and applies `model.merges` by rank (merges
///     written as "a b" strings or as ["a", "b"] pairs), exactly as Hugging Face's priority
///     queue does; `ignore_merges` (a word that is a token stays whole), `unk_token`,
///     `fuse_unk` and `byte_fallback` are honoured. Split words are cached.
///
/// Decoding is the ByteLevel decoder: each token's characters map back to bytes (a token with
/// a character outside the byte alphabet is kept as written), special tokens included (as
/// `transformers`' default `skip_special_tokens=False`). Unlike Hugging Face, which replaces
/// invalid UTF-8 with U+FFFD, the bytes are returned as they are, so `decode(encode(s)) == s`
/// for every byte string `s`. Invalid UTF-8 in the input to `encode` (which Hugging Face
/// cannot receive) is encoded byte by byte, each invalid byte a punctuation-like character.
///
/// Not supported, refused with format_error when the file asks for it: a model other than
/// BPE, normalizers (other than null or an empty Sequence), pre-tokenizers other than a single
/// ByteLevel (so not the Split + ByteLevel pipelines of GPT-4-style tokenizers), decoders other
/// than ByteLevel or null, BPE dropout, `continuing_subword_prefix` and `end_of_word_suffix`.
/// Ignored: `post_processor` (encode is Hugging Face's with add_special_tokens=False, so it
/// adds no BOS/EOS; for a null or ByteLevel post-processor, as in GPT-2, that changes nothing),
/// `truncation` and `padding` (encode neither truncates nor pads), `trim_offsets` (offsets).
/// Token ids are bounded by 2^24; two entries of `model.vocab` sharing an id are refused. Added
/// tokens get the ids Hugging Face gives them (the vocabulary's id for one in `model.vocab`,
/// else the next id past the vocabulary), whatever `id` the file writes: Hugging Face only
/// warns when they differ, and files it writes always agree.
///
/// Errors: io_error when the file cannot be read (missing, a directory, empty); format_error,
/// naming the file and the key, for invalid JSON or structure, e.g.
/// "[circuitry.format_error] file 'x.json': 'model.type' is 'WordPiece', expected 'BPE'", and
/// for a merge naming a token not in the vocabulary; argument_error for an id out of range.

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "circuitry/detail/tokenizer_json.hpp"
#include "circuitry/error.hpp"

namespace circuitry {

/// A byte-level BPE tokenizer read from a Hugging Face tokenizer.json (see the file comment
/// for what is implemented). Immutable after loading; copies are cheap and share the model
/// and the word cache; every member function may be called from several threads at once.
class Tokenizer {
 public:
  /// Reads tokenizer.json at `path`. Throws io_error (missing, not a regular file, unreadable,
  /// empty) or format_error (see the file comment), naming the file.
  static Tokenizer from_file(const std::string& path) {
    const std::string where = "file '" + path + "': ";
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (ec) throw io_error(where + "cannot open: " + ec.message());
    if (status.type() != std::filesystem::file_type::regular) {
      const bool dir = status.type() == std::filesystem::file_type::directory;
      throw io_error(where + "is " + (dir ? "a directory" : "not a regular file") +
                     ", expected a tokenizer.json file");
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) throw io_error(where + "cannot open: " + std::strerror(errno));
    std::ostringstream buffer;
    buffer << in.rdbuf();
    if (in.bad()) throw io_error(where + "cannot read: " + std::strerror(errno));
    const std::string text = buffer.str();
    if (text.empty()) throw io_error(where + "is empty, expected a tokenizer.json file");
    return from_json_text(text, path);
  }

  /// Parses tokenizer.json text; `name` stands for the file name in error messages.
  static Tokenizer from_json_text(std::string_view text, const std::string& name = "<memory>") {
    return Tokenizer(detail::load_tokenizer_json(text, name));
  }

  /// The token ids of `text` (any bytes; see the file comment for the steps).
  std::vector<int> encode(std::string_view text) const {
    std::vector<int> ids;
    ids.reserve(text.size() / 3 + 1);
    std::vector<detail::TextPiece> pieces;
    model_->raw_added.split(text, 0, pieces);
    if (!model_->normalized_added.empty()) {
      std::vector<detail::TextPiece> finer;
      for (const auto& p : pieces) {
        if (p.id >= 0) {
          finer.push_back(p);
        } else {
          model_->normalized_added.split(text.substr(p.begin, p.end - p.begin), p.begin, finer);
        }
      }
      pieces.swap(finer);
    }
    for (const auto& p : pieces) {
      if (p.id >= 0) {
        ids.push_back(p.id);
      } else {
        encode_ordinary(text.substr(p.begin, p.end - p.begin), ids);
      }
    }
    return ids;
  }

  /// The text of `ids`: the bytes of each token's characters, concatenated (invalid UTF-8 is
  /// left as it is). Throws argument_error for an id outside [0, vocab_size()) or one no token
  /// has.
  std::string decode(const std::vector<int>& ids) const {
    std::string out;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      out += model_->texts[checked(ids[i], "decode", " (at index " + std::to_string(i) + ")")];
    }
    return out;
  }

  /// The text of one token, as `decode({id})` (for labels: "Ġthe" gives " the"). It may be
  /// part of a UTF-8 sequence only, when a token holds some bytes of a character.
  std::string token_text(int id) const { return model_->texts[checked(id, "token_text", "")]; }

  /// The token of `id` as written in tokenizer.json (byte-level form, e.g. "Ġthe").
  std::string token(int id) const { return model_->tokens[checked(id, "token", "")]; }

  /// The id of `token`, given in byte-level form as in tokenizer.json ("Ġthe", not " the");
  /// added tokens first, as Hugging Face's `token_to_id`.
  std::optional<int> token_id(std::string_view token) const {
    const std::string key(token);
    if (const auto it = model_->added_ids.find(key); it != model_->added_ids.end()) {
      return it->second;
    }
    if (const auto it = model_->bpe.vocab.find(key); it != model_->bpe.vocab.end()) {
      return it->second;
    }
    return std::nullopt;
  }

  /// One past the largest token id (of `model.vocab` and `added_tokens`): 4096 for the shipped
  /// tokenizer, 50257 for GPT-2.
  int vocab_size() const { return model_->vocab_size; }

  /// The path given to from_file, or the name given to from_json_text.
  const std::string& name() const { return model_->name; }

 private:
  explicit Tokenizer(std::shared_ptr<const detail::TokenizerModel> model)
      : model_(std::move(model)), cache_(std::make_shared<detail::BpeCache>()) {}

  /// Pre-tokenizes and BPE-encodes text with no added token in it.
  void encode_ordinary(std::string_view text, std::vector<int>& ids) const {
    if (text.empty()) return;
    std::string prefixed;
    if (model_->add_prefix_space && text.front() != ' ') {
      prefixed.reserve(text.size() + 1);
      prefixed += ' ';
      prefixed += text;
      text = prefixed;
    }
    if (!model_->use_regex) {
      encode_word(text, ids);
      return;
    }
    detail::gpt2_split(text, [&](std::string_view word) { encode_word(word, ids); });
  }

  void encode_word(std::string_view word, std::vector<int>& ids) const {
    if (cache_->lookup(word, ids)) return;
    const std::size_t first = ids.size();
    model_->bpe.tokenize(word, ids);
    cache_->insert(word, ids.data() + first, ids.size() - first);
  }

  std::size_t checked(int id, const char* function, const std::string& at) const {
    if (id < 0 || id >= model_->vocab_size) {
      throw argument_error("Tokenizer::" + std::string(function) + ": token id " +
                           std::to_string(id) + at + " is out of range for vocabulary size " +
                           std::to_string(model_->vocab_size) + " of '" + model_->name + "'");
    }
    if (!model_->assigned[static_cast<std::size_t>(id)]) {
      throw argument_error("Tokenizer::" + std::string(function) + ": token id " +
                           std::to_string(id) + at + " has no token in '" + model_->name + "'");
    }
    return static_cast<std::size_t>(id);
  }

  std::shared_ptr<const detail::TokenizerModel> model_;
  std::shared_ptr<detail::BpeCache> cache_;
};

}  // namespace circuitry
