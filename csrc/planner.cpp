// See planner.hpp. Every rule here must give the same result as the Python planner
// (repro_fast/segments.py), bit for bit; tests/test_segments.py checks it.

#include "planner.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace repro {
namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// cu must be a valid offsets array over `total` elements: cu[0] = 0, non-decreasing,
// cu[batch] = total. Checked before any element is read through it.
void check_cu(const int64_t* cu, int64_t batch, int64_t total, const char* what) {
  if (batch < 0) fail(std::string(what) + ": negative batch size");
  if (cu[0] != 0) fail(std::string(what) + ": must start at 0, got " + std::to_string(cu[0]));
  for (int64_t b = 0; b < batch; ++b) {
    if (cu[b + 1] < cu[b]) {
      fail(std::string(what) + ": must be non-decreasing, but entry " + std::to_string(b + 1) +
           " (" + std::to_string(cu[b + 1]) + ") < entry " + std::to_string(b) + " (" +
           std::to_string(cu[b]) + ")");
    }
  }
  if (cu[batch] != total) {
    fail(std::string(what) + ": must end at " + std::to_string(total) + " (the packed length), got " +
         std::to_string(cu[batch]));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// TokenTable
// ---------------------------------------------------------------------------------------------

TokenTable::TokenTable(std::vector<uint8_t> bytes, std::vector<int64_t> offsets,
                       std::vector<uint8_t> blank)
    : bytes_(std::move(bytes)), offsets_(std::move(offsets)), blank_(std::move(blank)) {
  const int64_t vocab = static_cast<int64_t>(blank_.size());
  if (static_cast<int64_t>(offsets_.size()) != vocab + 1) {
    fail("TokenTable: offsets must have vocab_size + 1 = " + std::to_string(vocab + 1) +
         " entries (blank has " + std::to_string(vocab) + "), got " + std::to_string(offsets_.size()));
  }
  check_cu(offsets_.data(), vocab, static_cast<int64_t>(bytes_.size()), "TokenTable offsets");
}

// ---------------------------------------------------------------------------------------------
// Planner
// ---------------------------------------------------------------------------------------------

std::vector<Span> spans_of_packed(const int64_t* ids, int64_t num_ids, const int64_t* cu, int64_t batch) {
  check_cu(cu, batch, num_ids, "cu_seqlens");
  std::vector<Span> spans(batch);
  for (int64_t b = 0; b < batch; ++b) spans[b] = Span{ids + cu[b], cu[b + 1] - cu[b]};
  return spans;
}

Planner::Planner(std::shared_ptr<const TokenTable> table, PlannerConfig config)
    : table_(std::move(table)), config_(std::move(config)) {
  if (!table_) fail("Planner: table is None");
  const int64_t vocab = table_->vocab_size();
  using Marker = PlannerConfig::Marker;
  if (config_.marker_mode == Marker::kText && config_.marker.empty()) {
    fail("Planner: the think-end marker must be non-empty");
  }
  if (config_.marker_mode == Marker::kTokenId &&
      (config_.marker_id < 0 || config_.marker_id >= vocab)) {
    fail("Planner: marker_id " + std::to_string(config_.marker_id) + " is outside the vocabulary [0, " +
         std::to_string(vocab) + ")");
  }
  for (const std::string& s : config_.suffixes) {
    if (s.empty()) fail("Planner: boundary suffixes must be non-empty");
    if (s.size() > 8) {
      long_suffixes_.push_back(s);
      continue;
    }
    ShortSuffix w{0, 0, static_cast<int>(s.size())};
    for (size_t k = 0; k < s.size(); ++k) {
      w.value |= uint64_t{static_cast<uint8_t>(s[s.size() - 1 - k])} << (8 * k);
      w.mask |= uint64_t{0xff} << (8 * k);
    }
    short_suffixes_.push_back(w);
  }

  info_.resize(vocab);
  for (int64_t t = 0; t < vocab; ++t) {
    TokenInfo& info = info_[t];
    const uint8_t* bytes = table_->data(t);
    const int64_t len = table_->size(t);
    info.tail_len = static_cast<uint8_t>(std::min<int64_t>(len, 8));
    info.half_shift = static_cast<uint8_t>(4 * info.tail_len);
    for (int k = 0; k < info.tail_len; ++k) info.tail |= uint64_t{bytes[len - 1 - k]} << (8 * k);
    info.blank = table_->blank(t);
    info.holds_marker_first = config_.marker_mode == Marker::kText && len > 0 &&
                              std::memchr(bytes, static_cast<uint8_t>(config_.marker[0]), len) != nullptr;
  }
  if (config_.boundary_by_id) {
    // An id outside the vocabulary can never equal a (validated) response token, so skipping
    // it is the same rule as the Python planner's np.isin.
    for (int64_t id : config_.boundary_ids) {
      if (id >= 0 && id < vocab) info_[id].ends_segment = true;
    }
  }
}

// Does the marker start at byte p of token y[i]? If so, *last is the token that holds its last
// byte. The marker may run over any number of following tokens, zero-length ones included.
bool Planner::marker_starts_at(const int64_t* y, int64_t n, int64_t i, int64_t p,
                               int64_t* last) const {
  const std::string& m = config_.marker;
  size_t matched = 0;
  for (int64_t j = i; j < n; ++j, p = 0) {
    const uint8_t* b = table_->data(y[j]);
    const int64_t len = table_->size(y[j]);
    for (; p < len && matched < m.size(); ++p, ++matched) {
      if (b[p] != static_cast<uint8_t>(m[matched])) return false;
    }
    if (matched == m.size()) {
      *last = j;
      return true;
    }
  }
  return false;  // the response ends inside a partial marker
}

// Does an occurrence of the think-end marker begin in token y[i]? (*last: see above.)
bool Planner::marker_begins_in(const int64_t* y, int64_t n, int64_t i, int64_t* last) const {
  switch (config_.marker_mode) {
    case PlannerConfig::Marker::kNone:
      return false;
    case PlannerConfig::Marker::kTokenId:
      *last = i;
      return y[i] == config_.marker_id;
    case PlannerConfig::Marker::kText:
      break;
  }
  if (!info_[y[i]].holds_marker_first) return false;  // most tokens stop here
  const uint8_t first = static_cast<uint8_t>(config_.marker[0]);
  const uint8_t* b = table_->data(y[i]);
  const int64_t len = table_->size(y[i]);
  for (int64_t p = 0; p < len; ++p) {
    if (b[p] == first && marker_starts_at(y, n, i, p, last)) return true;
  }
  return false;
}

// Do the bytes of y[0..i) end with `suffix`? Walks back over as many tokens as the suffix
// needs. Only for suffixes longer than the 8-byte window.
bool Planner::text_before_ends_with(const int64_t* y, int64_t i, const std::string& suffix) const {
  int64_t need = static_cast<int64_t>(suffix.size());  // bytes of the suffix still unmatched
  for (int64_t j = i - 1; need > 0; --j) {
    if (j < 0) return false;  // the prefix is shorter than the suffix
    const int64_t len = table_->size(y[j]);
    const int64_t take = std::min(len, need);
    if (std::memcmp(table_->data(y[j]) + (len - take), suffix.data() + (need - take), take) != 0) {
      return false;
    }
    need -= take;
  }
  return true;
}

// One response, one pass over its tokens. Returns (E, F) and appends the candidates.
//   SPEC §1: E = the token in which the first occurrence of the marker begins, F = the smallest
//   j whose prefix y[0..j) holds the whole occurrence = 1 + the token holding its last byte; no
//   occurrence: E = F = n. Tokens and their bytes are visited in order, so the first hit is the
//   first occurrence.
//   SPEC §3: token i in [1, E) starts a segment iff the text of y[0..i) ends with a suffix and
//   the text of y[i] alone is not blank (token-id mode: iff y[i - 1] is a boundary id). The
//   pass stops at E, so every candidate it appended is < E.
std::pair<int64_t, int64_t> Planner::plan_one(const int64_t* y, int64_t n, std::vector<int64_t>& out) const {
  const bool by_text = !config_.boundary_by_id && !config_.suffixes.empty();
  // The last (up to) 8 bytes of the text of y[0..i), the last byte lowest, and how many of
  // them are real (a shorter prefix must not match a suffix against the zero fill).
  uint64_t window = 0;
  int filled = 0;
  for (int64_t i = 0; i < n; ++i) {
    const TokenInfo& info = info_[y[i]];
    int64_t last = 0;
    if (marker_begins_in(y, n, i, &last)) return {i, last + 1};
    if (i >= 1) {
      bool starts = false;
      if (config_.boundary_by_id) {
        starts = info_[y[i - 1]].ends_segment;
      } else if (by_text && !info.blank) {
        for (const ShortSuffix& s : short_suffixes_) {
          starts = starts || (filled >= s.len && (window & s.mask) == s.value);
        }
        for (size_t k = 0; k < long_suffixes_.size() && !starts; ++k) {
          starts = text_before_ends_with(y, i, long_suffixes_[k]);
        }
      }
      if (starts) out.push_back(i);
    }
    // Append the token's bytes to the window: shift by 8 * min(len, 8) bits, as two shifts of
    // at most 32 so that a full 64-bit shift (a token of 8+ bytes) is defined and clears it.
    window = ((window << info.half_shift) << info.half_shift) | info.tail;
    filled = std::min(filled + info.tail_len, 8);
  }
  return {n, n};
}

void Planner::plan_batch(const std::vector<Span>& batch, int64_t* think_begin, int64_t* think_end,
                         std::vector<int64_t>& candidates, int64_t* candidates_cu) const {
  const uint64_t vocab = static_cast<uint64_t>(table_->vocab_size());
  candidates_cu[0] = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    const int64_t* y = batch[b].ids;
    const int64_t n = batch[b].n;
    // Every table lookup indexes by a token id, and the marker test reads ahead: validate the
    // whole response first (a branch-free loop; a negative id wraps to a huge unsigned one).
    // The arrays are read with the GIL released; as with numpy, mutating them from another
    // thread meanwhile is the caller's bug.
    bool in_range = true;
    for (int64_t i = 0; i < n; ++i) in_range &= static_cast<uint64_t>(y[i]) < vocab;
    if (!in_range) {
      int64_t i = 0;
      while (static_cast<uint64_t>(y[i]) < vocab) ++i;
      fail("token id " + std::to_string(y[i]) + " at position " + std::to_string(i) + " of response " +
           std::to_string(b) + " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    }
    const auto bounds = plan_one(y, n, candidates);
    think_begin[b] = bounds.first;
    think_end[b] = bounds.second;
    candidates_cu[b + 1] = static_cast<int64_t>(candidates.size());
  }
}

}  // namespace repro
