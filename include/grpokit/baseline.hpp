#pragma once
// Advantage baselines (one per group of rollouts of a prompt). All group statistics are computed
// in double, two-pass, in rollout index order.
//
// A baseline is a type with
//   using policy_axis = grpokit::axis::baseline;
//   GRPOKIT_HD static double center(grpokit::group_io& g, const grpokit::advantage_config& cfg);
// `center` writes g.centered[i] = r_i - b_i for the n rollouts of the group, may clear g.keep[i]
// (a rollout excluded from the loss, e.g. the MC-GRPO pivot), may change g.eps, and returns the
// group's spread (used when cfg.scale == adv_scale::group). Optionally
//   static constexpr bool needs_log_ratio = true;       // requires per-sequence log-ratios
//   static constexpr bool needs_group_baseline = true;  // requires advantage_inputs::group_baseline
//   static constexpr bool zero_equal_groups = false;    // a group of equal rewards keeps r - b (default:
//                                                       // A = 0, and masked with mask_zero_variance)
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "axis.hpp"
#include "config.hpp"
#include "detail/macros.hpp"

namespace grpokit {

struct group_io {
  const double* rewards = nullptr;    // [n]
  const double* log_ratio = nullptr;  // [n] sum_t (logp - logp_rollout), or null
  const double* weight = nullptr;     // [n] caller's baseline weights (ess_scaled), or null
  std::int64_t n = 0;
  double* centered = nullptr;    // [n] out
  std::uint8_t* keep = nullptr;  // [n] in/out, preset to 1
  double* scratch = nullptr;     // [n] free scratch
  double eps = 0;                // the divisor is max(spread, std_floor) + eps; preset to cfg.eps
  double external = 0;           // the caller's baseline of this group (baseline::external), else 0
};

namespace detail {
// The moments are computed on the rewards times 2^-e, e the exponent of the largest |r|: they never
// overflow (rewards of +-1e300), and away from overflow and subnormals the powers of two are exact,
// so the result is the unscaled formula's bit for bit.
GRPOKIT_HD inline int moment_exponent(const double* r, std::int64_t n) {
  double m = 0;
  for (std::int64_t i = 0; i < n; ++i) m = std::fabs(r[i]) > m ? std::fabs(r[i]) : m;
  return m > 0 && std::isfinite(m) ? std::ilogb(m) : 0;
}
GRPOKIT_HD inline double scaled_mean(const double* r, std::int64_t n, int e) {
  double s = 0;
  for (std::int64_t i = 0; i < n; ++i) s += std::ldexp(r[i], -e);
  return s / static_cast<double>(n);
}
GRPOKIT_HD inline double group_mean(const double* r, std::int64_t n) {
  const int e = moment_exponent(r, n);
  return std::ldexp(scaled_mean(r, n, e), e);
}
// Bessel-corrected standard deviation, two-pass; 0 for n < 2.
GRPOKIT_HD inline double group_std(const double* r, std::int64_t n) {
  if (n < 2) return 0.0;
  const int e = moment_exponent(r, n);
  const double mu = scaled_mean(r, n, e);
  double ss = 0;
  for (std::int64_t i = 0; i < n; ++i) ss += (std::ldexp(r[i], -e) - mu) * (std::ldexp(r[i], -e) - mu);
  return std::ldexp(std::sqrt(ss / static_cast<double>(n - 1)), e);
}
// Moves a[root] down the max-heap a[0..n).
GRPOKIT_HD inline void sift_down(double* a, std::int64_t root, std::int64_t n) {
  for (;;) {
    std::int64_t child = 2 * root + 1;
    if (child >= n) return;
    if (child + 1 < n && a[child] < a[child + 1]) ++child;
    if (!(a[root] < a[child])) return;
    const double t = a[root];
    a[root] = a[child];
    a[child] = t;
    root = child;
  }
}
// Lower median (torch.median semantics): the ((n-1)/2)-th smallest, by heap selection in
// `scratch`: build a max-heap of the n values, pop the n - 1 - k largest, and the heap's top is the
// k-th smallest. O(n log n) in the worst case, no recursion, no allocation (device threads use it
// too): groups of thousands of rollouts (BroRL) cost milliseconds, not the O(n^2) of a sort by
// insertion. The value is the order statistic itself, independent of how it is found.
GRPOKIT_HD inline double lower_median(const double* x, std::int64_t n, double* scratch) {
  for (std::int64_t i = 0; i < n; ++i) scratch[i] = x[i];
  const std::int64_t k = (n - 1) / 2;
  for (std::int64_t i = n / 2 - 1; i >= 0; --i) sift_down(scratch, i, n);
  for (std::int64_t end = n - 1; end > k; --end) {
    const double t = scratch[0];
    scratch[0] = scratch[end];
    scratch[end] = t;
    sift_down(scratch, 0, end);
  }
  return scratch[0];
}
}  // namespace detail

namespace baseline {

// GRPO: b = mean of the group; spread = Bessel std.
struct mean {
  using policy_axis = axis::baseline;
  GRPOKIT_HD static double center(group_io& g, const advantage_config&) {
    const double mu = detail::group_mean(g.rewards, g.n);
    for (std::int64_t i = 0; i < g.n; ++i) g.centered[i] = g.rewards[i] - mu;
    return detail::group_std(g.rewards, g.n);
  }
};

// MC-GRPO: b = lower median; spread = MAD (lower median of |r - med| over the whole group, pivot
// included) with eps = mad_eps; in an odd group the pivot (lowest index with r == med) is excluded.
struct median {
  using policy_axis = axis::baseline;
  GRPOKIT_HD static double center(group_io& g, const advantage_config& cfg) {
    const double med = detail::lower_median(g.rewards, g.n, g.scratch);
    for (std::int64_t i = 0; i < g.n; ++i) g.centered[i] = g.rewards[i] - med;
    if (g.n % 2 == 1) {
      for (std::int64_t i = 0; i < g.n; ++i) {
        if (g.rewards[i] == med) {
          g.keep[i] = 0;
          break;
        }
      }
    }
    for (std::int64_t i = 0; i < g.n; ++i) g.centered[i] = std::fabs(g.centered[i]);
    const double mad = detail::lower_median(g.centered, g.n, g.scratch);
    for (std::int64_t i = 0; i < g.n; ++i) g.centered[i] = g.rewards[i] - med;
    g.eps = cfg.mad_eps;
    return mad;
  }
};

// RLOO: b_i = mean of the other rollouts; spread = Bessel std. A singleton group has A = 0.
struct leave_one_out {
  using policy_axis = axis::baseline;
  GRPOKIT_HD static double center(group_io& g, const advantage_config&) {
    if (g.n < 2) {
      g.centered[0] = 0;
      return 0;
    }
    double total = 0;
    for (std::int64_t i = 0; i < g.n; ++i) total += g.rewards[i];
    for (std::int64_t i = 0; i < g.n; ++i)
      g.centered[i] = g.rewards[i] - (total - g.rewards[i]) / static_cast<double>(g.n - 1);
    return detail::group_std(g.rewards, g.n);
  }
};

// VCPO: min-variance baseline b = sum W r / sum W, with W the caller's weights or w^2 where
// w = exp(log_ratio) is the sequence importance weight (computed in log space); spread = Bessel std.
struct ess_scaled {
  using policy_axis = axis::baseline;
  static constexpr bool needs_log_ratio = true;
  GRPOKIT_HD static double center(group_io& g, const advantage_config&) {
    double wsum = 0, wr = 0;
    if (g.weight != nullptr) {
      for (std::int64_t i = 0; i < g.n; ++i) {
        wsum += g.weight[i];
        wr += g.weight[i] * g.rewards[i];
      }
    } else {
      double top = -INFINITY;
      for (std::int64_t i = 0; i < g.n; ++i) top = std::fmax(top, 2.0 * g.log_ratio[i]);
      for (std::int64_t i = 0; i < g.n; ++i) {
        const double w = std::exp(2.0 * g.log_ratio[i] - top);
        wsum += w;
        wr += w * g.rewards[i];
      }
    }
    const double b = wsum > 0 && std::isfinite(wr / wsum) ? wr / wsum : detail::group_mean(g.rewards, g.n);
    for (std::int64_t i = 0; i < g.n; ++i) g.centered[i] = g.rewards[i] - b;
    return detail::group_std(g.rewards, g.n);
  }
};

// ReMax (Li et al. 2023): b = the caller's baseline of the group, advantage_inputs::group_baseline
// (ReMax: the reward of the greedy rollout; equally a value estimate); spread = Bessel std of the
// group's rewards. A group of equal rewards keeps r - b (one sampled rollout per prompt is ReMax's
// usual case). ReMax itself is adv_scale::none: A = r - b.
struct external {
  using policy_axis = axis::baseline;
  static constexpr bool needs_group_baseline = true;
  static constexpr bool zero_equal_groups = false;
  GRPOKIT_HD static double center(group_io& g, const advantage_config&) {
    for (std::int64_t i = 0; i < g.n; ++i) g.centered[i] = g.rewards[i] - g.external;
    return detail::group_std(g.rewards, g.n);
  }
};

}  // namespace baseline

namespace detail {
template <class B, class = void>
struct has_center : std::false_type {};
template <class B>
struct has_center<B, std::void_t<decltype(static_cast<double>(B::center(
                         std::declval<group_io&>(), std::declval<const advantage_config&>())))>> : std::true_type {};

template <class B, class = void>
struct needs_log_ratio : std::false_type {};
template <class B>
struct needs_log_ratio<B, std::void_t<decltype(B::needs_log_ratio)>>
    : std::integral_constant<bool, B::needs_log_ratio> {};

template <class B, class = void>
struct needs_group_baseline : std::false_type {};
template <class B>
struct needs_group_baseline<B, std::void_t<decltype(B::needs_group_baseline)>>
    : std::integral_constant<bool, B::needs_group_baseline> {};

template <class B, class = void>
struct zero_equal_groups : std::true_type {};
template <class B>
struct zero_equal_groups<B, std::void_t<decltype(B::zero_equal_groups)>>
    : std::integral_constant<bool, B::zero_equal_groups> {};

template <class B>
constexpr bool check_baseline() {
  static_assert(has_center<B>::value,
                "grpokit baseline: the type must declare `static double center(grpokit::group_io&, "
                "const grpokit::advantage_config&)` (see baseline.hpp)");
  return true;
}
}  // namespace detail

}  // namespace grpokit
