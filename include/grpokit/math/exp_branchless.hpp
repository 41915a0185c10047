#pragma once
// e^x for float with no branch and no floating-point comparison, for the host's vectorised row
// loops (host/rows.hpp, the `fast` and `deterministic` orders). Under GCC's default
// -ftrapping-math a float comparison or a float operation under a condition blocks the
// if-conversion that vectorisation needs, so every select here is an integer bit mask and ordering
// tests compare integer keys. Accuracy: at most 2 ulp for normal results (tests/test_math.cpp);
// subnormal results to within one subnormal step; +-inf and NaN as std::exp.
#include <cstdint>

#include "../detail/macros.hpp"
#include "storage.hpp"

namespace grpokit::math {

// An integer that orders like the float: a < b <=> order_key(a) < order_key(b) (not NaN; -0 < +0).
GRPOKIT_HD inline std::int32_t order_key(float x) {
  const std::int32_t i = detail::bit_cast<std::int32_t>(x);
  return i ^ ((i >> 31) & 0x7fffffff);
}
GRPOKIT_HD inline float from_order_key(std::int32_t k) {
  return detail::bit_cast<float>(k ^ ((k >> 31) & 0x7fffffff));
}
// All ones when c, else zero: select(m, a, b) = m ? a : b on bit patterns.
GRPOKIT_HD inline std::uint32_t bit_mask(bool c) { return 0u - static_cast<std::uint32_t>(c); }
GRPOKIT_HD inline float select_bits(std::uint32_t mask, float a, float b) {
  return detail::bit_cast<float>((detail::bit_cast<std::uint32_t>(a) & mask) |
                                 (detail::bit_cast<std::uint32_t>(b) & ~mask));
}
GRPOKIT_HD inline bool is_nan_bits(float x) { return (detail::bit_cast<std::uint32_t>(x) & 0x7fffffffu) > 0x7f800000u; }
GRPOKIT_HD inline bool is_finite_bits(float x) {
  return (detail::bit_cast<std::uint32_t>(x) & 0x7fffffffu) < 0x7f800000u;
}

GRPOKIT_HD inline float exp_branchless(float x) {
  // Clamp to [-104, 89]: below, e^x rounds to 0; above, it overflows to inf (both through the
  // final products). NaN is clamped too (the arithmetic stays defined) and restored at the end.
  constexpr float lo = -104.f, hi = 89.f;
  const std::int32_t key = order_key(x);
  const std::uint32_t nan = bit_mask(is_nan_bits(x));
  const float xc = select_bits(bit_mask(key < order_key(lo)) | nan, lo, select_bits(bit_mask(key > order_key(hi)), hi, x));
  // k = round(x / ln2) = floor(y + 1/2) computed as a truncation of a positive number (y > -151).
  const float y = xc * 1.44269504088896341f;
  const std::int32_t k = static_cast<std::int32_t>(y + 256.5f) - 256;
  const float kf = static_cast<float>(k);
  const float r = (xc - kf * 0.693145751953125f) - kf * 1.428606765330187045e-06f;  // Cody-Waite, |r| <= ln2/2
  // Taylor polynomial of degree 7 (as exp_bi)
  float p = 1.f / 5040;
  p = 1.f / 720 + r * p;
  p = 1.f / 120 + r * p;
  p = 1.f / 24 + r * p;
  p = 1.f / 6 + r * p;
  p = 0.5f + r * p;
  p = 1.f + r * p;
  p = 1.f + r * p;
  // 2^k in two normal factors (k in [-150, 129]), so that subnormal and overflowing results round once at the end
  const std::int32_t k1 = k >> 1, k2 = k - k1;
  const float s1 = detail::bit_cast<float>(static_cast<std::uint32_t>(k1 + 127) << 23);
  const float s2 = detail::bit_cast<float>(static_cast<std::uint32_t>(k2 + 127) << 23);
  return select_bits(nan, x, (p * s1) * s2);
}

}  // namespace grpokit::math
