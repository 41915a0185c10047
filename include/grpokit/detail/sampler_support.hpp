#pragma once
// The inference sampler's support of one logits row (vLLM 0.10 / NeMo-RL apply_top_k_top_p, on the
// temperature-scaled logits z): top-k keeps the values at or above the k-th largest (ties kept),
// then top-p keeps, among those, the values v whose probability mass strictly above them (softmax
// over the top-k set) is below p (the largest always stays; equal values stay together). Both are
// one threshold on z: a column is in the support when z >= threshold.
//
// Both stages are one "weighted select" over the values' order-preserving bits: the largest value v
// at which the cumulative weight from the top (values > v, then v's own) first reaches a target.
// Top-k: weight 1, target k. Top-p: weight e^(z - M) in fixed point (2^-40, M the row's max),
// target p * (the top-k set's total weight). Weights are integers, so their sums are exact in any
// order: the host's loops, a block's shared-memory histogram and a sum over vocabulary-parallel
// ranks give the same threshold, bit for bit, wherever exp gives the same bits. A most-significant
// digit radix select finds v in 4 rounds of 8-bit digits for float z, 8 for double: each round sums
// the weights of the candidates sharing the digits found so far into 256 bins (support_bin), and
// support_step picks the bin where the target is reached.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "macros.hpp"

namespace grpokit::detail {

constexpr int support_bins = 256;
constexpr double support_weight_scale = 1099511627776.0;  // 2^40: a mass of 1 is 2^40 units

// Rounds of 8-bit digits for a z of type Acc (float: 4, double: 8).
template <class Acc>
constexpr int support_rounds = sizeof(Acc) == 4 ? 4 : 8;

// Whether each stage narrows a row of n columns: top-k below n, top-p below 1.
GRPOKIT_HD inline bool top_k_narrows(std::int64_t top_k, std::int64_t n) { return top_k > 0 && top_k < n; }
GRPOKIT_HD inline bool top_p_narrows(double top_p, std::int64_t n) { return top_p < 1 && n > 0; }

// Order-preserving bits of z in the top of a 64-bit word (-0 is +0, no NaN): a < b exactly when
// support_key(a) < support_key(b).
GRPOKIT_HD inline std::uint64_t support_key(float z) {
  z = z + 0.0f;
  std::uint32_t b;
  std::memcpy(&b, &z, sizeof b);
  b = (b >> 31) != 0 ? ~b : b | 0x80000000u;
  return static_cast<std::uint64_t>(b) << 32;
}
GRPOKIT_HD inline std::uint64_t support_key(double z) {
  z = z + 0.0;
  std::uint64_t b;
  std::memcpy(&b, &z, sizeof b);
  return (b >> 63) != 0 ? ~b : b | (std::uint64_t{1} << 63);
}
template <class Acc>
GRPOKIT_HD inline Acc from_support_key(std::uint64_t k) {
  if constexpr (sizeof(Acc) == 4) {
    std::uint32_t b = static_cast<std::uint32_t>(k >> 32);
    b = (b >> 31) != 0 ? b & 0x7fffffffu : ~b;
    float z;
    std::memcpy(&z, &b, sizeof z);
    return z;
  } else {
    k = (k >> 63) != 0 ? k & ~(std::uint64_t{1} << 63) : ~k;
    double z;
    std::memcpy(&z, &k, sizeof z);
    return z;
  }
}

// Top-p's weight of a value z of a row whose max is M (z <= M): e^(z - M) in units of 2^-40. A
// non-finite row (an error under check_finite) gives NaN there: weight 0, as a defined conversion.
template <class Ops, class Acc>
GRPOKIT_HD inline std::uint64_t support_mass(Acc z, Acc row_max) {
  double e = static_cast<double>(Ops::exp(Ops::sub(z, row_max)));
  e = e == e ? (e < 1.0 ? e : 1.0) : 0.0;
  return static_cast<std::uint64_t>(e * support_weight_scale + 0.5);
}

// One weighted select: the digits found so far (`prefix`, the leading `round` digits), the weight
// of the candidates known to lie above them, and the target.
struct support_search {
  std::uint64_t prefix = 0;
  std::uint64_t above = 0;
  double target = 0;  // > 0
  int round = 0;
};

// Whether a candidate's key shares the digits found so far, and its digit of this round.
GRPOKIT_HD inline bool support_in_prefix(std::uint64_t key, const support_search& s) {
  if (s.round == 0) return true;
  const int shift = 64 - 8 * s.round;
  return (key >> shift) == (s.prefix >> shift);
}
GRPOKIT_HD inline int support_bin(std::uint64_t key, const support_search& s) {
  return static_cast<int>((key >> (56 - 8 * s.round)) & 0xff);
}

// The round's step from its histogram (the weights of the candidates in the prefix, by digit): the
// highest bin where the weight from the top reaches the target, the bins above it added to
// `above`. A target past the total (p * Z rounded up) takes the lowest non-empty bin: every
// candidate stays.
GRPOKIT_HD inline void support_step(support_search& s, const std::uint64_t* hist) {
  std::uint64_t above = s.above, lowest_above = s.above;
  int chosen = -1, lowest = -1;
  for (int b = support_bins - 1; b >= 0; --b) {
    if (hist[b] == 0) continue;
    if (static_cast<double>(above + hist[b]) >= s.target) {
      chosen = b;
      break;
    }
    lowest = b, lowest_above = above;
    above += hist[b];
  }
  if (chosen < 0) chosen = lowest, above = lowest_above;  // the target is past the total
  if (chosen >= 0) s.prefix |= static_cast<std::uint64_t>(chosen) << (56 - 8 * s.round);
  s.above = above;
  ++s.round;
}

}  // namespace grpokit::detail
