// grpokit's own exp/log against long double, and the bit-level storage conversions against
// CUDA's host conversion functions and exhaustive round trips.
#include <cmath>
#include <cstring>
#include <limits>
#include <iterator>
#include <random>
#include <tuple>

#include "catch.hpp"
#include "support.hpp"

namespace {

using support::ulp_error;

template <class Real>
void check_exp_log(double lo, double hi, int n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  double worst_exp = 0, worst_log = 0;
  for (int i = 0; i < n; ++i) {
    const Real x = static_cast<Real>(u(rng));
    const long double e = std::exp(static_cast<long double>(x));
    if (e >= static_cast<long double>(std::numeric_limits<Real>::min()))  // normal results
      worst_exp = std::max(worst_exp, ulp_error(grpokit::math::exp_bi(x), e));
    const Real y = std::fabs(x) + std::numeric_limits<Real>::min();
    worst_log = std::max(worst_log, ulp_error(grpokit::math::log_bi(y), std::log(static_cast<long double>(y))));
  }
  INFO("worst exp error " << worst_exp << " ulp, worst log error " << worst_log << " ulp");
  CHECK(worst_exp <= 2.0);
  CHECK(worst_log <= 2.0);
}

}  // namespace

TEST_CASE("exp_bi and log_bi are accurate to 2 ulp", "[math]") {
  check_exp_log<float>(-87, 88, 200000, 1);
  check_exp_log<float>(-1, 1, 200000, 2);
  check_exp_log<double>(-700, 700, 200000, 3);
  check_exp_log<double>(-1, 1, 200000, 4);
}

TEST_CASE("exp_bi and log_bi special values", "[math]") {
  using grpokit::math::exp_bi;
  using grpokit::math::log_bi;
  CHECK(exp_bi(0.0f) == 1.0f);
  CHECK(exp_bi(0.0) == 1.0);
  CHECK(exp_bi(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(exp_bi(std::numeric_limits<float>::infinity()) == std::numeric_limits<float>::infinity());
  CHECK(exp_bi(100.0f) == std::numeric_limits<float>::infinity());
  CHECK(exp_bi(-200.0f) == 0.0f);
  CHECK(std::isnan(exp_bi(std::numeric_limits<float>::quiet_NaN())));
  CHECK(log_bi(1.0f) == 0.0f);
  CHECK(log_bi(1.0) == 0.0);
  CHECK(log_bi(0.0f) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(log_bi(-1.0)));
  // subnormal results and arguments
  const float sub = exp_bi(-95.0f);
  CHECK(sub > 0.0f);
  CHECK(std::fabs(static_cast<long double>(sub) - std::exp(-95.0L)) <= std::numeric_limits<float>::denorm_min());
  CHECK(std::fabs(log_bi(1e-40f) - std::log(static_cast<long double>(1e-40f))) < 1e-6);
  CHECK(std::fabs(log_bi(5e-320) - std::log(static_cast<long double>(5e-320))) < 1e-12);
}

TEST_CASE("exp_branchless is accurate to 2 ulp and handles the special values", "[math]") {
  using grpokit::math::exp_branchless;
  for (auto [lo, hi, seed] : {std::tuple{-104.0, 89.0, 5}, std::tuple{-1.0, 1.0, 6}, std::tuple{-20.0, 0.0, 7}}) {
    std::mt19937_64 rng(static_cast<std::uint64_t>(seed));
    std::uniform_real_distribution<double> u(lo, hi);
    double worst = 0, worst_sub = 0;
    for (int i = 0; i < 300000; ++i) {
      const float x = static_cast<float>(u(rng));
      const long double e = std::exp(static_cast<long double>(x));
      if (e >= static_cast<long double>(std::numeric_limits<float>::min()))
        worst = std::max(worst, ulp_error(exp_branchless(x), e));
      else  // subnormal or zero: within one subnormal step
        worst_sub = std::max(worst_sub, static_cast<double>(std::fabs(exp_branchless(x) - e) /
                                                            std::numeric_limits<float>::denorm_min()));
    }
    INFO("range [" << lo << ", " << hi << "]: worst " << worst << " ulp, subnormal " << worst_sub << " steps");
    CHECK(worst <= 2.0);
    CHECK(worst_sub <= 1.0);
  }
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(exp_branchless(0.0f) == 1.0f);
  CHECK(exp_branchless(-0.0f) == 1.0f);
  CHECK(exp_branchless(-inf) == 0.0f);
  CHECK(exp_branchless(-1000.0f) == 0.0f);
  CHECK(exp_branchless(inf) == inf);
  CHECK(exp_branchless(88.8f) == inf);
  CHECK(exp_branchless(1000.0f) == inf);
  CHECK(std::isnan(exp_branchless(std::numeric_limits<float>::quiet_NaN())));
  CHECK(std::isnan(exp_branchless(-std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("order_key orders like the floats", "[math]") {
  using grpokit::math::from_order_key;
  using grpokit::math::order_key;
  const float inf = std::numeric_limits<float>::infinity();
  const float v[] = {-inf, -3e38f, -2.5f, -1e-40f, -0.0f, 0.0f, 1e-45f, 1.0f, 3e38f, inf};
  for (std::size_t i = 0; i < std::size(v); ++i) {
    CHECK(from_order_key(order_key(v[i])) == v[i]);
    CHECK(std::signbit(from_order_key(order_key(v[i]))) == std::signbit(v[i]));
    for (std::size_t j = i + 1; j < std::size(v); ++j) CHECK(order_key(v[i]) < order_key(v[j]));
  }
}

#if defined(GRPOKIT_HAS_CUDA_HALF)
TEST_CASE("fp16 and bf16 conversions: exact widening, round to nearest even", "[math][storage]") {
  // every 16-bit pattern widens exactly and narrows back to itself (NaNs stay NaN)
  for (std::uint32_t bits = 0; bits < 65536; ++bits) {
    const auto h = static_cast<std::uint16_t>(bits);
    __half x;
    __nv_bfloat16 y;
    std::memcpy(static_cast<void*>(&x), &h, 2);
    std::memcpy(static_cast<void*>(&y), &h, 2);
    const float fx = grpokit::math::load<float>(x), fy = grpokit::math::load<float>(y);
    CHECK((std::isnan(fx) || fx == __half2float(x)));
    CHECK((std::isnan(fy) || fy == __bfloat162float(y)));
    if (!std::isnan(fx)) {
      const __half back = grpokit::math::store<__half>(fx);
      CHECK(std::memcmp(&back, &x, 2) == 0);
    }
    if (!std::isnan(fy)) {
      const __nv_bfloat16 back = grpokit::math::store<__nv_bfloat16>(fy);
      CHECK(std::memcmp(&back, &y, 2) == 0);
    }
  }
  // narrowing of random floats (normal, subnormal, overflow, halfway cases) equals CUDA's _rn
  std::mt19937 rng(3);
  std::uniform_int_distribution<std::uint32_t> any;
  int mismatches = 0;
  for (int i = 0; i < 400000; ++i) {
    std::uint32_t b = any(rng);
    if (i % 4 == 1) b = (b & 0x807fffffu) | ((96u + (b >> 27)) << 23);  // exponents near the fp16 range
    if (i % 4 == 2) b = (b & 0xffffe000u) | 0x1000u;                     // fp16 halfway cases
    float f;
    std::memcpy(&f, &b, 4);
    if (std::isnan(f)) continue;
    const __half a = grpokit::math::store<__half>(f), c = __float2half_rn(f);
    const __nv_bfloat16 d = grpokit::math::store<__nv_bfloat16>(f), e = __float2bfloat16_rn(f);
    mismatches += std::memcmp(&a, &c, 2) != 0;
    mismatches += std::memcmp(&d, &e, 2) != 0;
  }
  CHECK(mismatches == 0);
}
#endif

TEST_CASE("lane_sum and tree_reduce follow their documented order", "[math]") {
  // lane_sum: item j in lane j % 32, lanes combined pairwise; compare with a literal evaluation
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<double> u(-1, 1);
  for (std::int64_t n : {0, 1, 31, 32, 33, 100}) {
    std::vector<double> x(static_cast<std::size_t>(n));
    for (auto& v : x) v = u(rng) * std::pow(10.0, static_cast<double>(static_cast<int>(u(rng) * 8)));
    std::vector<double> lanes(32, 0.0);
    for (std::int64_t j = 0; j < n; ++j) lanes[static_cast<std::size_t>(j % 32)] += x[static_cast<std::size_t>(j)];
    for (std::size_t w = 16; w >= 1; w /= 2)
      for (std::size_t l = 0; l < w; ++l) lanes[l] += lanes[l + w];
    const double got = grpokit::detail::lane_sum(n, [&](std::int64_t j) { return x[static_cast<std::size_t>(j)]; });
    CHECK(std::memcmp(&got, &lanes[0], sizeof(double)) == 0);
  }
  std::vector<double> items{1e16, 1, -1e16, 1, 3};
  grpokit::detail::tree_reduce(items, [](double a, double b) { return a + b; });
  CHECK(items[0] == ((1e16 + 1) + (-1e16 + 1)) + 3);
}
