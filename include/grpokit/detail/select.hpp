#pragma once
// Exact order statistics of per-token keys over the whole batch (every rank), without sorting or
// gathering the keys: a most-significant-digit radix select over the keys' order-preserving bits,
// 8 rounds of 8-bit digits (8 more over the position when ties are broken). Each round counts, into
// 256 bins, the candidates whose leading digits equal those found so far; the bins are summed over
// the ranks (integers: exact in any order) and the next digit is the bin where the wanted rank falls. The host and the device run
// the same rounds; the result is a key of the batch, so it depends neither on the schedule nor on
// how the batch is split. Two order statistics per run (a quantile interpolates between two), or
// the mean rule (M2PO: the bins also sum the keys in fixed point, exact in integers).
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
// A round's histogram: 256 bins per slot, or for the mean rule (M2PO) the counts and the sums of
// the high and the low words of the keys' fixed-point values.
constexpr int select_hist_size = 3 * select_bins;

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
  // >= 0: the mean rule (M2PO, below): the smallest key whose candidates at or below it have a
  // mean of at least `mean_below`; `below`: the count and the fixed-point sums (high, low words) of
  // the candidates known to lie under the prefix
  double mean_below = -1;
  long long below[3] = {0, 0, 0};
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

// The fixed-point value of a non-negative key of the mean rule: round(min(x, 2^31) 2^32), exact
// in integers whatever the order of the sums (a resolution of 2^-32).
GRPOKIT_HD inline std::uint64_t mean_rule_quanta(double x) {
  const double capped = x < 2147483648.0 ? x : 2147483648.0;
  return static_cast<std::uint64_t>(capped * 4294967296.0 + 0.5);  // the product is exact: no FMA question
}

// Counts one candidate into the histogram of the current round: add(index in [0, hist_size), amount).
template <class Add>
GRPOKIT_HD void select_count(const select_run& r, const select_key& key, Add&& add) {
  if (r.mean_below >= 0) {
    if (!select_matches(key, r.prefix[0], r.round)) return;
    const int d = select_digit(key, r.round);
    const std::uint64_t q = mean_rule_quanta(from_ordered_bits(key.value));
    add(d, 1ull);
    add(select_bins + d, q >> 32);
    add(2 * select_bins + d, q & 0xffffffffull);
    return;
  }
  for (int k = 0; k < select_slots; ++k)
    if (select_matches(key, r.prefix[k], r.round)) add(k * select_bins + select_digit(key, r.round), 1ull);
}

GRPOKIT_HD inline void set_digit(select_run& r, int k, int d) {
  const bool value = r.round < select_value_rounds;
  std::uint64_t& bits = value ? r.prefix[k].value : r.prefix[k].position;
  const int at = value ? r.round : r.round - select_value_rounds;
  bits |= static_cast<std::uint64_t>(d) << (8 * (select_value_rounds - 1 - at));
}

// Whether n candidates whose fixed-point values sum to hi 2^32 + lo have a mean below `tau`
// (in double from the exact integers: the same on every schedule and split).
GRPOKIT_HD inline bool mean_is_below(long long n, long long hi, long long lo, double tau) {
  const double sum = static_cast<double>(hi) * 4294967296.0 + static_cast<double>(lo);
  return n > 0 && sum < tau * 4294967296.0 * static_cast<double>(n);
}

// The mean rule's next digit. It looks for the smallest key f whose candidates at or below it have
// a mean of at least tau (with the candidates under the prefix): the bins are taken in ascending
// order and f lies in the first whose inclusion brings the mean to tau. None in the first round:
// every candidate is kept (n = 0 then: nothing to mask).
GRPOKIT_HD inline void mean_rule_step(select_run& r, const long long* hist) {
  const long long* count = hist;
  const long long* hi = hist + select_bins;
  const long long* lo = hist + 2 * select_bins;
  if (r.round == 0) {
    r.n = 0;
    for (int d = 0; d < select_bins; ++d) r.n += count[d];
  }
  if (r.n == 0) {
    ++r.round;
    return;
  }
  long long n = r.below[0], h = r.below[1], l = r.below[2];
  int pick = -1;
  for (int d = 0; d < select_bins && pick < 0; ++d) {
    if (count[d] == 0) continue;
    if (!mean_is_below(n + count[d], h + hi[d], l + lo[d], r.mean_below)) {
      pick = d;
    } else {
      n += count[d], h += hi[d], l += lo[d];
    }
  }
  if (pick < 0) {
    r.n = 0;
  } else {
    r.below[0] = n, r.below[1] = h, r.below[2] = l;
    set_digit(r, 0, pick);
  }
  ++r.round;
}

// The next digit of each slot from the round's histogram summed over the ranks.
GRPOKIT_HD inline void select_step(select_run& r, const long long* hist) {
  if (r.mean_below >= 0) {
    mean_rule_step(r, hist);
    return;
  }
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
    set_digit(r, k, d);
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

// ---- M2PO (AReaL m2_threshold): the second-moment token mask -------------------------------

// A run of the mean rule over the candidates' second moments: it finds f, the smallest value that
// fails the rule (m2po_limit turns it into the largest value kept).
GRPOKIT_HD inline select_run m2po_run(double tau) {
  select_run r;
  r.mean_below = tau;
  return r;
}
// The largest second moment M2PO keeps once the rounds are done: the one below f, or f itself when
// nothing is below it (AReaL keeps a token); +inf when it keeps every candidate.
GRPOKIT_HD inline double m2po_limit(const select_run& r) {
  if (r.n == 0) return std::numeric_limits<double>::infinity();
  const std::uint64_t f = r.prefix[0].value;
  return from_ordered_bits(r.below[0] == 0 ? f : f - 1);
}

}  // namespace grpokit::detail
