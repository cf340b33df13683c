// Host-side planner of RePro scoring (SPEC §1, §3, §4) in C++17, without Python types.
//
// The rules are defined on decoded text. For byte-level tokenizers the Python side builds,
// once per tokenizer, the bytes each token contributes to a decoded sequence
// (`repro_fast/segments.py::TokenizerTables`, validated against `tokenizer.decode` there); a
// suffix or marker then occurs in the text exactly where its UTF-8 bytes occur in the
// concatenated token bytes. This file works on those bytes only and never materializes a
// response's byte string: one pass per response carries the last 8 bytes of the text so far
// in a 64-bit window (per-token tables say how each token moves it), so a boundary test is
// one compare per suffix and a 4M-token batch costs a few nanoseconds per token.
//
// Errors (bad tables, ids outside the vocabulary, malformed offsets) throw
// std::invalid_argument, which pybind11 turns into ValueError.

#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace repro {

// The bytes of every token of one vocabulary: token t is bytes[offsets[t], offsets[t + 1]).
class TokenTable {
 public:
  TokenTable(std::vector<uint8_t> bytes, std::vector<int64_t> offsets, std::vector<uint8_t> blank);

  int64_t vocab_size() const { return static_cast<int64_t>(blank_.size()); }
  const uint8_t* data(int64_t t) const { return bytes_.data() + offsets_[t]; }
  int64_t size(int64_t t) const { return offsets_[t + 1] - offsets_[t]; }
  // SPEC §3: the text of the token alone is whitespace-only (an empty token counts as blank).
  bool blank(int64_t t) const { return blank_[t] != 0; }

 private:
  std::vector<uint8_t> bytes_;
  std::vector<int64_t> offsets_;
  std::vector<uint8_t> blank_;
};

// Which rule each bound uses. Text rules are SPEC §1/§3; token-id rules reproduce the
// authors' code (SPEC §8, RePROConfig.authors_code()).
struct PlannerConfig {
  enum class Marker { kNone, kText, kTokenId };
  Marker marker_mode = Marker::kNone;
  std::string marker;         // kText: UTF-8 bytes of think_end, non-empty
  int64_t marker_id = -1;     // kTokenId: the single token id of think_end
  bool boundary_by_id = false;
  std::vector<std::string> suffixes;  // !boundary_by_id: UTF-8 bytes of boundary_suffixes
  std::vector<int64_t> boundary_ids;  // boundary_by_id: first ids of the encoded suffixes
};

// One response: ids[0, n). A batch is a list of them (views; nothing is copied).
struct Span {
  const int64_t* ids;
  int64_t n;
};

// Spans of a packed batch: response b is ids[cu[b], cu[b + 1]). Validates cu.
std::vector<Span> spans_of_packed(const int64_t* ids, int64_t num_ids, const int64_t* cu, int64_t batch);

class Planner {
 public:
  Planner(std::shared_ptr<const TokenTable> table, PlannerConfig config);

  // Writes E (think_begin) and F (think_end) of every response, appends the candidates of
  // response b (ascending, relative to the response) to `candidates`, and sets
  // candidates_cu[b + 1] to the running count (candidates_cu[0] = 0). Validates the ids.
  void plan_batch(const std::vector<Span>& batch, int64_t* think_begin, int64_t* think_end,
                  std::vector<int64_t>& candidates, int64_t* candidates_cu) const;

 private:
  // What the scan needs of each token, in one place (one cache line holds four tokens).
  struct TokenInfo {
    uint64_t tail = 0;        // its last min(len, 8) bytes; the last byte is the lowest
    uint8_t half_shift = 0;   // 4 * min(len, 8): the byte window moves by twice this
    uint8_t tail_len = 0;     // min(len, 8)
    bool blank = false;       // SPEC §3: its text alone is whitespace-only
    bool holds_marker_first = false;  // its bytes contain marker[0]
    bool ends_segment = false;        // boundary_by_id: a segment starts after it
  };
  // A suffix of at most 8 bytes, tested against the byte window in one compare.
  struct ShortSuffix {
    uint64_t value;
    uint64_t mask;
    int len;
  };

  std::pair<int64_t, int64_t> plan_one(const int64_t* y, int64_t n, std::vector<int64_t>& out) const;
  bool marker_begins_in(const int64_t* y, int64_t n, int64_t i, int64_t* last) const;
  bool marker_starts_at(const int64_t* y, int64_t n, int64_t i, int64_t p, int64_t* last) const;
  bool text_before_ends_with(const int64_t* y, int64_t i, const std::string& suffix) const;

  std::shared_ptr<const TokenTable> table_;
  PlannerConfig config_;
  std::vector<TokenInfo> info_;
  std::vector<ShortSuffix> short_suffixes_;
  std::vector<std::string> long_suffixes_;  // > 8 bytes: tested by walking back over tokens
};

}  // namespace repro
