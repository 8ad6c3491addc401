// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file tokenizer_added.hpp
/// Added tokens (`added_tokens` of tokenizer.json: special tokens such as "<|endoftext|>"):
/// found in the text before pre-tokenization and split out as single tokens, as Hugging Face's
/// `AddedVocabulary::extract_and_normalize` does.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "circuitry/detail/tokenizer_unicode.hpp"

namespace circuitry {
namespace detail {

/// One entry of `added_tokens`, with Hugging Face's meaning of the flags.
struct AddedToken {
  std::string content;  // the text matched, exactly (no normalizer is supported)
  int id = 0;
  bool single_word = false;  // match only where not inside a word (no \w on either side)
  bool lstrip = false;       // the match swallows the whitespace before it
  bool rstrip = false;       // ... and after it
  bool normalized = true;    // matched after the normalizer (none here: only the order differs)
  bool special = false;
};

/// A piece of the text: [begin, end) bytes, and the added token it is (`id`), or -1 for text
/// that goes through the pre-tokenizer and the model.
struct TextPiece {
  std::size_t begin;
  std::size_t end;
  int id;
};

/// Finds added tokens in text: leftmost-longest matches, non-overlapping, as the Aho-Corasick
/// automaton Hugging Face builds (MatchKind::LeftmostLongest). The tokens are kept in a trie of
/// their bytes, so finding the longest token at a position costs the length of the match, not
/// the number of tokens (a hostile tokenizer.json with 10^5 added tokens starting with '<' would
/// otherwise make every '<' of the text cost 10^5 comparisons).
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
    nodes_.emplace_back();  // the root: the empty prefix
    for (std::size_t t = 0; t < tokens_.size(); ++t) {
      std::size_t node = 0;
      for (const char c : tokens_[t].content) {
        const std::uint64_t key = edge(node, c);
        auto it = edges_.find(key);
        if (it == edges_.end()) {
          it = edges_.emplace(key, nodes_.size()).first;
          nodes_.emplace_back();
        }
        node = it->second;
      }
      // Of two entries with the same content, the first is the one matched.
      if (nodes_[node].token == kNone) nodes_[node].token = t;
    }
  }

  bool empty() const { return tokens_.empty(); }

  /// Splits `text` (bytes [begin, end) of the whole input, `offset` = begin) into pieces,
  /// appended to `out`: Hugging Face's `AddedVocabulary::find_matches`, with `single_word`,
  /// `lstrip` and `rstrip` applied within this piece. Empty text gives no piece.
  void split(std::string_view text, std::size_t offset, std::vector<TextPiece>& out) const {
    std::size_t done = 0;  // end of the last piece emitted, relative to text
    std::size_t pos = 0;   // where the automaton resumes: the end of the last match
    while (pos < text.size()) {
      std::size_t length = 0;
      const AddedToken* token = longest_match_at(text, pos, length);
      if (token == nullptr) {
        ++pos;
        continue;
      }
      std::size_t start = pos;
      std::size_t stop = pos + length;
      pos = stop;
      if (token->single_word) {
        const bool word_before = start > 0 && ends_with_word(text.substr(0, start));
        const bool word_after = stop < text.size() && starts_with_word(text.substr(stop));
        if (word_before || word_after) continue;
      }
      if (token->lstrip) start = std::max(leftmost_space_at_end(text.substr(0, start)), done);
      if (token->rstrip) stop += rightmost_space_at_start(text.substr(stop));
      // Hugging Face would emit overlapping pieces when an rstrip swallowed the start of the
      // next match; here the next match starts no earlier than the end of the last one.
      start = std::max(start, done);
      if (done < start) out.push_back({offset + done, offset + start, -1});
      out.push_back({offset + start, offset + stop, token->id});
      done = stop;
    }
    if (done < text.size()) out.push_back({offset + done, offset + text.size(), -1});
  }

 private:
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  struct Node {
    std::size_t token = kNone;  // the token whose content ends here, if any
  };
  static std::uint64_t edge(std::size_t node, char c) {
    return (static_cast<std::uint64_t>(node) << 8) | static_cast<unsigned char>(c);
  }

  /// The longest token that `text` continues with at `pos`, or nullptr: a walk down the trie.
  const AddedToken* longest_match_at(std::string_view text, std::size_t pos,
                                     std::size_t& length) const {
    const AddedToken* best = nullptr;
    std::size_t node = 0;
    for (std::size_t i = pos; i < text.size(); ++i) {
      const auto it = edges_.find(edge(node, text[i]));
      if (it == edges_.end()) break;
      node = it->second;
      if (nodes_[node].token != kNone) {
        best = &tokens_[nodes_[node].token];
        length = i + 1 - pos;
      }
    }
    return best;
  }

  static bool ends_with_word(std::string_view s) {
    const Utf8Char c = decode_utf8_before(s, s.size());
    return c.valid && is_word_char(c.code_point);
  }
  static bool starts_with_word(std::string_view s) {
    const Utf8Char c = decode_utf8(s, 0);
    return c.valid && is_word_char(c.code_point);
  }
  /// Where the trailing whitespace of `s` starts (`\s*$`).
  static std::size_t leftmost_space_at_end(std::string_view s) {
    std::size_t end = s.size();
    while (end > 0) {
      const Utf8Char c = decode_utf8_before(s, end);
      if (!c.valid || !is_white_space(c.code_point)) break;
      end -= c.length;
    }
    return end;
  }
  /// The length of the leading whitespace of `s` (`^\s*`).
  static std::size_t rightmost_space_at_start(std::string_view s) {
    std::size_t end = 0;
    while (end < s.size()) {
      const Utf8Char c = decode_utf8(s, end);
      if (!c.valid || !is_white_space(c.code_point)) break;
      end += c.length;
    }
    return end;
  }

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_;                               // nodes_[0] is the root (when built)
  std::unordered_map<std::uint64_t, std::size_t> edges_;  // edge(node, byte) -> child node
};

}  // namespace detail
}  // namespace circuitry
