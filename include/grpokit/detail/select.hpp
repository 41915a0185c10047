#pragma once
// Exact order statistics of per-token keys over the whole batch (every rank), without sorting or
// gathering the keys: a most-significant-digit radix select over the keys' order-preserving bits,
// 8 rounds of 8-bit digits (8 more over the position when ties are broken). Each round counts, into
// 256 bins, the candidates whose leading digits equal those found so far; the bins are summed over
// the ranks (integers: exact in any order) and the next digit is the bin where the wanted rank falls. The host and the device run
// the same rounds; the result is a key of the batch, so it depends neither on the schedule nor on
// how the batch is split. Two order statistics per run (a quantile interpolates between two).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "macros.hpp"

namespace grpokit::detail {

constexpr int select_bins = 256;
constexpr int select_value_rounds = 8;                        // 64-bit keys
constexpr int select_max_rounds = 2 * select_value_rounds;  // then a 64-bit position (ties broken)
constexpr int select_slots = 2;
constexpr int select_hist_size = select_slots * select_bins;

// Order-preserving bits of a double (no NaN): a < b exactly when ordered_bits(a) < ordered_bits(b);
// -0 is +0.
GRPOKIT_HD inline std::uint64_t ordered_bits(double x) {
  x = x + 0.0;  // -0 -> +0
  std::uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return (b >> 63) != 0 ? ~b : b | (std::uint64_t{1} << 63);
}
GRPOKIT_HD inline double from_ordered_bits(std::uint64_t b) {
  b = (b >> 63) != 0 ? b & ~(std::uint64_t{1} << 63) : ~b;
  double x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

// A candidate: its key's ordered bits and its position in the batch (select_position), which
// orders equal keys when the run breaks ties (a top-k of exactly k).
struct select_key {
  std::uint64_t value = 0, position = 0;
};
// A token's position in the whole batch: its sequence's index in the batch, then its index in the
// sequence. Ranks hold whole sequences, contiguous and in rank order, so the position orders the
// tokens as the batch does and does not depend on the split (the rank's first sequence is gathered).
GRPOKIT_HD inline std::uint64_t select_position(std::int64_t seq, std::int64_t j) {
  return (static_cast<std::uint64_t>(seq) << 32) | static_cast<std::uint64_t>(j);
}

// The state of one run: for each slot the 0-based ascending rank still wanted among the candidates
// that share the digits found so far (`prefix`: value then position, the leading `round` digits).
// `rounds`: select_value_rounds (the k-th key) or select_max_rounds (the k-th candidate, ties
// broken by position).
struct select_run {
  std::int64_t n = 0;  // candidates in the whole batch
  std::int64_t rank[select_slots] = {0, 0};
  select_key prefix[select_slots] = {};
  int round = 0;
  int rounds = select_value_rounds;
  // >= 0: the run takes the `want` largest candidates, n counted by the first round (n unknown
  // before: the candidates depend on statistics of the batch)
  std::int64_t want = -1;
};

GRPOKIT_HD inline int select_byte(std::uint64_t bits, int r) {
  return static_cast<int>((bits >> (8 * (select_value_rounds - 1 - r))) & 0xff);
}
GRPOKIT_HD inline bool leading_equal(std::uint64_t a, std::uint64_t b, int digits) {
  if (digits <= 0) return true;
  if (digits >= select_value_rounds) return a == b;
  const int shift = 8 * (select_value_rounds - digits);
  return (a >> shift) == (b >> shift);
}
GRPOKIT_HD inline bool select_matches(const select_key& k, const select_key& prefix, int round) {
  if (round <= select_value_rounds) return leading_equal(k.value, prefix.value, round);
  return k.value == prefix.value && leading_equal(k.position, prefix.position, round - select_value_rounds);
}
GRPOKIT_HD inline int select_digit(const select_key& k, int round) {
  return round < select_value_rounds ? select_byte(k.value, round) : select_byte(k.position, round - select_value_rounds);
}

// Counts one candidate into the histogram of the current round: add(index in [0, hist_size)).
template <class Add>
GRPOKIT_HD void select_count(const select_run& r, const select_key& key, Add&& add) {
  for (int k = 0; k < select_slots; ++k)
    if (select_matches(key, r.prefix[k], r.round)) add(k * select_bins + select_digit(key, r.round));
}

// The next digit of each slot from the round's histogram summed over the ranks.
GRPOKIT_HD inline void select_step(select_run& r, const long long* hist) {
  if (r.round == 0 && r.want >= 0) {  // every candidate falls in some bin of the first round
    std::int64_t n = 0;
    for (int d = 0; d < select_bins; ++d) n += hist[d];
    const std::int64_t k = r.want < n ? r.want : n;
    r.n = k > 0 ? n : 0;
    r.rank[0] = r.rank[1] = n - k;
  }
  for (int k = 0; k < select_slots; ++k) {
    std::int64_t below = 0;
    int d = 0;
    for (; d < select_bins - 1; ++d) {
      const long long c = hist[k * select_bins + d];
      if (r.rank[k] < below + c) break;
      below += c;
    }
    r.rank[k] -= below;
    const bool value = r.round < select_value_rounds;
    std::uint64_t& bits = value ? r.prefix[k].value : r.prefix[k].position;
    const int at = value ? r.round : r.round - select_value_rounds;
    bits |= static_cast<std::uint64_t>(d) << (8 * (select_value_rounds - 1 - at));
  }
  ++r.round;
}

// The key of rank r.rank[k] once every round is done.
GRPOKIT_HD inline double select_value(const select_run& r, int k) { return from_ordered_bits(r.prefix[k].value); }

// A counter-based random key of a position (SplitMix64 of the seed and the position): Clip-Cov's
// uniform random subset, the same on every schedule and split of the batch.
GRPOKIT_HD inline std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
GRPOKIT_HD inline std::uint64_t random_key(std::uint64_t seed, std::uint64_t position) {
  return mix64(seed ^ mix64(position));
}

// Whether a candidate is at or above the selected one (value, then position).
GRPOKIT_HD inline bool at_or_above(const select_key& key, const select_key& selected) {
  return key.value > selected.value || (key.value == selected.value && key.position >= selected.position);
}

// ---- the top-entropy token mask (TRL top_entropy_quantile) ----------------------------------

// A run for quantile(keys, q) with linear interpolation (torch.quantile's default) over n keys:
// position q (n - 1), slots floor and floor + 1 (clamped to n - 1).
GRPOKIT_HD inline select_run quantile_run(std::int64_t n, double q) {
  select_run r;
  r.n = n;
  if (n == 0) return r;
  const double pos = q * static_cast<double>(n - 1);
  const std::int64_t lo = static_cast<std::int64_t>(std::floor(pos));
  r.rank[0] = lo < n - 1 ? lo : n - 1;
  r.rank[1] = lo + 1 < n - 1 ? lo + 1 : n - 1;
  return r;
}

// The quantile once the rounds are done; -inf without keys (nothing to mask).
GRPOKIT_HD inline double quantile_value(const select_run& r, double q) {
  if (r.n == 0) return -std::numeric_limits<double>::infinity();
  const double pos = q * static_cast<double>(r.n - 1);
  const double w = pos - std::floor(pos);
  const double a = select_value(r, 0), b = select_value(r, 1);
  return w < 0.5 ? a + w * (b - a) : b - (b - a) * (1 - w);  // torch.lerp's two forms
}

}  // namespace grpokit::detail
