// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file tokenizer_bpe.hpp
/// The BPE model of a byte-level tokenizer (Hugging Face `models::bpe::BPE` without dropout)
/// and the cache of the words it has already split.

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "circuitry/detail/tokenizer_pretokenize.hpp"

namespace circuitry {
namespace detail {

/// A merge rule: the pair (left, right) of token ids becomes `new_id`, with priority `rank`
/// (lower first: the rule's index in `model.merges`).
struct BpeMerge {
  int rank;
  int new_id;
};

/// The BPE model over the byte-level alphabet: a word (the raw bytes of one pre-token) starts
/// as one symbol per byte, the token of that byte's character; merges then apply in rank order.
struct BpeModel {
  std::unordered_map<std::string, int> vocab;          // token (byte-level form) -> id
  std::unordered_map<std::uint64_t, BpeMerge> merges;  // pair_key(left, right) -> rule
  std::array<int, 256> byte_ids{};                     // id of each byte's character, or -1
  std::array<std::vector<int>, 256> fallback_ids;      // byte_fallback tokens of the character
  int unk_id = -1;                                     // -1: no unk_token
  bool fuse_unk = false;
  bool ignore_merges = false;
  ByteLevelAlphabet alphabet;

  static std::uint64_t pair_key(int left, int right) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
           static_cast<std::uint32_t>(right);
  }

  const BpeMerge* find_merge(int left, int right) const {
    const auto it = merges.find(pair_key(left, right));
    return it == merges.end() ? nullptr : &it->second;
  }

  /// Appends the ids of raw word `word` (non-empty) to `out`.
  void tokenize(std::string_view word, std::vector<int>& out) const {
    if (ignore_merges) {  // a word that is itself a token is not split (Llama 3 style)
      const auto it = vocab.find(alphabet.encode(word));
      if (it != vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    std::vector<int> ids = initial_symbols(word);
    merge_all(ids);
    out.insert(out.end(), ids.begin(), ids.end());
  }

 private:
  /// One symbol per byte; a byte whose character is not in the vocabulary becomes its
  /// byte_fallback tokens "<0xNN>" (of the character's UTF-8 bytes, as Hugging Face does), else
  /// unk_token (consecutive ones fused into one with fuse_unk), else nothing.
  std::vector<int> initial_symbols(std::string_view word) const {
    std::vector<int> ids;
    ids.reserve(word.size());
    bool pending_unk = false;
    for (const char ch : word) {
      const auto b = static_cast<unsigned char>(ch);
      if (byte_ids[b] >= 0) {
        if (pending_unk) ids.push_back(unk_id), pending_unk = false;
        ids.push_back(byte_ids[b]);
      } else if (!fallback_ids[b].empty()) {
        // Hugging Face does not flush a pending unk here either, so it lands after these.
        ids.insert(ids.end(), fallback_ids[b].begin(), fallback_ids[b].end());
      } else if (unk_id >= 0) {
        if (pending_unk && !fuse_unk) ids.push_back(unk_id);
        pending_unk = true;
      }
    }
    if (pending_unk) ids.push_back(unk_id);
    return ids;
  }

  /// Hugging Face's `Word::merge_all` without dropout: a min-heap of candidate merges ordered
  /// by (rank, position); a popped candidate whose pair has changed since it was pushed is
  /// skipped; each merge pushes the new pairs it forms with its neighbours. `ids` becomes the
  /// merged symbols.
  void merge_all(std::vector<int>& ids) const {
    const std::size_t n = ids.size();
    if (n < 2) return;
    constexpr std::size_t none = static_cast<std::size_t>(-1);  // no neighbour
    struct Candidate {
      int rank;
      std::size_t pos;
      int new_id;
    };
    const auto later = [](const Candidate& a, const Candidate& b) {
      return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> queue(later);
    std::vector<std::size_t> prev(n), next(n);
    std::vector<char> alive(n, 1);
    for (std::size_t i = 0; i < n; ++i)
      prev[i] = i == 0 ? none : i - 1, next[i] = i + 1 < n ? i + 1 : none;
    for (std::size_t i = 0; i + 1 < n; ++i) {
      if (const BpeMerge* m = find_merge(ids[i], ids[i + 1])) queue.push({m->rank, i, m->new_id});
    }
    while (!queue.empty()) {
      const Candidate top = queue.top();
      queue.pop();
      const std::size_t pos = top.pos;
      if (!alive[pos] || next[pos] == none) continue;
      const std::size_t right = next[pos];
      const BpeMerge* m = find_merge(ids[pos], ids[right]);
      if (m == nullptr || m->new_id != top.new_id) continue;  // stale candidate
      ids[pos] = top.new_id;
      alive[right] = 0;
      next[pos] = next[right];
      if (next[pos] != none) prev[next[pos]] = pos;
      if (prev[pos] != none) {
        if (const BpeMerge* l = find_merge(ids[prev[pos]], ids[pos])) {
          queue.push({l->rank, prev[pos], l->new_id});
        }
      }
      if (next[pos] != none) {
        if (const BpeMerge* r = find_merge(ids[pos], ids[next[pos]])) {
          queue.push({r->rank, pos, r->new_id});
        }
      }
    }
    std::size_t out = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (alive[i]) ids[out++] = ids[i];
    }
    ids.resize(out);
  }
};

/// Words already split by the BPE model, shared by copies of a Tokenizer and safe to use from
/// several threads. Like Hugging Face's cache it stops growing when full, and words of
/// kMaxWordBytes or more bytes are not kept.
class BpeCache {
 public:
  static constexpr std::size_t kCapacity = 100000;
  static constexpr std::size_t kMaxWordBytes = 256;

  /// Appends the cached ids of `word` to `out` and returns true, or returns false.
  bool lookup(std::string_view word, std::vector<int>& out) const {
    if (word.size() >= kMaxWordBytes) return false;
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto it = map_.find(std::string(word));
    if (it == map_.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }

  void insert(std::string_view word, const int* ids, std::size_t count) {
    if (word.size() >= kMaxWordBytes) return;
    const std::lock_guard<std::mutex> lock(mutex_);
    if (map_.size() >= kCapacity) return;
    map_.emplace(std::string(word), std::vector<int>(ids, ids + count));
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::vector<int>> map_;
};

}  // namespace detail
}  // namespace circuitry
