#pragma once
// grpokit's own exp and log, written only with correctly rounded +, -, *, / (no FMA, no libm),
// so that a host loop and a CUDA kernel compute bitwise identical values. Used by the
// batch_invariant reduction order; the other orders call the platform's exp/log.
// Accuracy: at most 2 ulp over the whole range (tests/test_math.cpp, against long double).
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

#include "rounding.hpp"
#include "storage.hpp"

namespace grpokit::detail {
template <class Real>
struct exp_log_constants;

template <>
struct exp_log_constants<float> {
  using bits_t = std::uint32_t;
  static constexpr int mantissa_bits = 23;
  static constexpr int exponent_bias = 127;
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693145751953125f;       // 16 significant bits: k * ln2_hi is exact
  static constexpr float ln2_lo = 1.428606765330187045e-06f;
  static constexpr float overflow = 88.72283935546875f;       // exp(x) = inf above
  static constexpr float underflow = -103.972084045410f;      // exp(x) = 0 below
  static constexpr int taylor_terms = 8;                      // e^r, |r| <= ln2/2: degree 7
  static constexpr int atanh_terms = 6;                       // log: R to z^6
};

template <>
struct exp_log_constants<double> {
  using bits_t = std::uint64_t;
  static constexpr int mantissa_bits = 52;
  static constexpr int exponent_bias = 1023;
  static constexpr double log2e = 1.44269504088896340736;
  static constexpr double ln2_hi = 6.93147180369123816490e-01;  // fdlibm split
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr double overflow = 709.782712893383973096;
  static constexpr double underflow = -745.133219101941108420;
  static constexpr int taylor_terms = 14;  // degree 13
  static constexpr int atanh_terms = 12;   // R to z^12
};

// Coefficients of the polynomials, folded at compile time (identically by every compiler).
GRPOKIT_HD constexpr double factorial(int n) { return n <= 1 ? 1.0 : n * factorial(n - 1); }

// Horner evaluation of sum_i c_i x^i with c_i = coef(i), i = 0..N-1, unrolled at compile time.
template <class Real, class Coef, int... I>
GRPOKIT_HD inline Real horner(Real x, std::integer_sequence<int, I...>) {
  constexpr Real c[] = {Coef::template get<Real>(I)...};
  constexpr int n = static_cast<int>(sizeof...(I));
  Real p = c[n - 1];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = n - 2; i >= 0; --i) p = math::add_rn(c[i], math::mul_rn(x, p));
  return p;
}
struct exp_coef {  // 1 / i!
  template <class Real>
  GRPOKIT_HD static constexpr Real get(int i) {
    return static_cast<Real>(1.0 / factorial(i));
  }
};
struct atanh_coef {  // 2 / (2i + 3): R / z = 2/3 + 2/5 z + 2/7 z^2 + ...
  template <class Real>
  GRPOKIT_HD static constexpr Real get(int i) {
    return static_cast<Real>(2.0 / (2 * i + 3));
  }
};

// 2^k as a Real, for k in the normal exponent range.
template <class Real>
GRPOKIT_HD inline Real pow2_normal(int k) {
  using C = exp_log_constants<Real>;
  using bits_t = typename C::bits_t;
  return bit_cast<Real>(static_cast<bits_t>(k + C::exponent_bias) << C::mantissa_bits);
}
}  // namespace grpokit::detail

namespace grpokit::math {

// e^x, deterministic across host and device.
template <class Real>
GRPOKIT_HD inline Real exp_bi(Real x) {
  using C = detail::exp_log_constants<Real>;
  if (!(x == x)) return x;                                      // nan
  if (x > C::overflow) return std::numeric_limits<Real>::infinity();
  if (x < C::underflow) return Real(0);
  // k = round(x / ln2): floor(y + 1/2) is exact and identical everywhere.
  const Real kf = std::floor(math::add_rn(math::mul_rn(x, C::log2e), Real(0.5)));
  const int k = static_cast<int>(kf);
  // r = x - k ln2 (Cody-Waite), |r| <= ~ln2/2
  const Real r = math::sub_rn(math::sub_rn(x, math::mul_rn(kf, C::ln2_hi)), math::mul_rn(kf, C::ln2_lo));
  // Taylor polynomial sum r^i / i!
  const Real p = detail::horner<Real, detail::exp_coef>(
      r, std::make_integer_sequence<int, C::taylor_terms>{});
  // scale by 2^k; split into two factors so that subnormal results are formed correctly
  constexpr int min_normal_exp = 1 - C::exponent_bias;
  if (k < min_normal_exp) {
    return math::mul_rn(math::mul_rn(p, detail::pow2_normal<Real>(k + C::mantissa_bits + 2)),
                  detail::pow2_normal<Real>(-(C::mantissa_bits + 2)));
  }
  if (k > C::exponent_bias) {
    return math::mul_rn(math::mul_rn(p, detail::pow2_normal<Real>(k - 1)), Real(2));
  }
  return math::mul_rn(p, detail::pow2_normal<Real>(k));
}

// Natural logarithm, deterministic across host and device.
template <class Real>
GRPOKIT_HD inline Real log_bi(Real x) {
  using C = detail::exp_log_constants<Real>;
  using bits_t = typename C::bits_t;
  if (!(x == x) || x < Real(0)) return std::numeric_limits<Real>::quiet_NaN();
  if (x == Real(0)) return -std::numeric_limits<Real>::infinity();
  if (x == std::numeric_limits<Real>::infinity()) return x;
  int e_adjust = 0;
  if (x < std::numeric_limits<Real>::min()) {  // subnormal: scale into the normal range
    x = math::mul_rn(x, detail::pow2_normal<Real>(C::mantissa_bits));
    e_adjust = -C::mantissa_bits;
  }
  const bits_t bits = detail::bit_cast<bits_t>(x);
  int e = static_cast<int>(bits >> C::mantissa_bits) - C::exponent_bias;
  // mantissa m in [1, 2)
  const bits_t mant_mask = (static_cast<bits_t>(1) << C::mantissa_bits) - 1;
  Real m = detail::bit_cast<Real>((bits & mant_mask) |
                                  (static_cast<bits_t>(C::exponent_bias) << C::mantissa_bits));
  if (m > Real(1.41421356237309504880)) {  // move m into [sqrt(1/2), sqrt(2))
    m = math::mul_rn(m, Real(0.5));
    ++e;
  }
  e += e_adjust;
  // fdlibm's reduction: with f = m - 1 (exact), s = f / (2 + f), z = s^2,
  // log(1 + f) = 2 atanh(s) = f - (hfsq - s (hfsq + R)),  hfsq = f^2 / 2,  R = sum_k 2 z^k / (2k + 1),
  // where the large term f is exact and only small corrections round.
  const Real f = math::sub_rn(m, Real(1));
  const Real s = math::div_rn(f, math::add_rn(Real(2), f));
  const Real z = math::mul_rn(s, s);
  const Real R = math::mul_rn(z, detail::horner<Real, detail::atanh_coef>(z, std::make_integer_sequence<int, C::atanh_terms>{}));
  const Real hfsq = math::mul_rn(math::mul_rn(Real(0.5), f), f);
  const Real ef = static_cast<Real>(e);
  const Real corr = math::sub_rn(hfsq, math::add_rn(math::mul_rn(s, math::add_rn(hfsq, R)), math::mul_rn(ef, C::ln2_lo)));
  return math::sub_rn(math::mul_rn(ef, C::ln2_hi), math::sub_rn(corr, f));
}

}  // namespace grpokit::math
