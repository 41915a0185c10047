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
//   static constexpr bool needs_seq_tokens = true;      // requires advantage_inputs::seq_tokens
//   static constexpr bool zero_equal_groups = false;    // a group of equal rewards keeps r - b (default:
//                                                       // A = 0, and masked with mask_zero_variance)
// and, so that the device can give a large group a block of threads,
//   template <class Ops> GRPOKIT_HD static double center_with(const Ops& ops, group_io&, const advantage_config&);
// the same math in Ops' reductions (detail/group_ops.hpp: sum, max, first, for_each, kth_smallest),
// as the built-in baselines are written (their `center` is center_with(serial_ops{}, ...)). A
// baseline without center_with runs a thread per group on the device, whatever the group's size.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "axis.hpp"
#include "config.hpp"
#include "detail/group_ops.hpp"
#include "detail/macros.hpp"

namespace grpokit {

struct group_io {
  const double* rewards = nullptr;    // [n]
  const double* log_ratio = nullptr;  // [n] sum_t (logp - logp_rollout), or null
  const double* weight = nullptr;     // [n] caller's baseline weights (ess_scaled), or null
  const double* tokens = nullptr;     // [n] response tokens of each rollout (advantage_inputs::seq_tokens), or null
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
template <class Ops = serial_ops>
GRPOKIT_HD int moment_exponent(const double* r, std::int64_t n, const Ops& ops = {}) {
  const double m = ops.max(n, 0.0, [=](std::int64_t i) { return std::fabs(r[i]); });
  return m > 0 && std::isfinite(m) ? std::ilogb(m) : 0;
}
// x -> x 2^k, bit for bit ldexp(x, k), as one multiplication where 2^k is a normal double (a libm
// call per reward cost more than the rest of compute_advantages)
struct pow2_scale {
  int k;
  double factor;
  GRPOKIT_HD explicit pow2_scale(int k_) : k(k_), factor(k_ >= -1022 && k_ <= 1023 ? std::ldexp(1.0, k_) : 0.0) {}
  GRPOKIT_HD double operator()(double x) const { return factor != 0 ? x * factor : std::ldexp(x, k); }
};
struct moments {
  double mean = 0, std = 0;  // std: Bessel-corrected, 0 for n < 2
};
// Mean and Bessel std, two-pass, on the scaled rewards; {0, 0} for n = 0.
template <class Ops = serial_ops>
GRPOKIT_HD moments group_moments(const double* r, std::int64_t n, const Ops& ops = {}) {
  if (n == 0) return {};
  const int e = moment_exponent(r, n, ops);
  const pow2_scale down(-e);
  const double mu = ops.sum(n, [=](std::int64_t i) { return down(r[i]); }) / static_cast<double>(n);
  moments m;
  m.mean = std::ldexp(mu, e);
  if (n >= 2) {
    const double ss = ops.sum(n, [=](std::int64_t i) {
      const double d = down(r[i]) - mu;
      return d * d;
    });
    m.std = std::ldexp(std::sqrt(ss / static_cast<double>(n - 1)), e);
  }
  return m;
}
// The same weighted by w >= 0 as counts (verl's masked_mean / masked_var over a token mask, each
// rollout's value repeated w_i times): mean = sum w x / W, std^2 = sum w (x - mean)^2 / (W - 1),
// W = sum w; std = 0 for W <= 1. Null w, or W = 0: the unweighted moments.
template <class Ops = serial_ops>
GRPOKIT_HD moments weighted_moments(const double* x, const double* w, std::int64_t n, const Ops& ops = {}) {
  const double W = w == nullptr ? 0.0 : ops.sum(n, [=](std::int64_t i) { return w[i]; });
  if (!(W > 0)) return group_moments(x, n, ops);
  const int e = moment_exponent(x, n, ops);
  const pow2_scale down(-e);
  const double mu = ops.sum(n, [=](std::int64_t i) { return w[i] * down(x[i]); }) / W;
  moments m;
  m.mean = std::ldexp(mu, e);
  if (W > 1) {
    const double ss = ops.sum(n, [=](std::int64_t i) {
      const double d = down(x[i]) - mu;
      return w[i] * d * d;
    });
    m.std = std::ldexp(std::sqrt(ss / (W - 1)), e);
  }
  return m;
}
template <class Ops = serial_ops>
GRPOKIT_HD double group_mean(const double* r, std::int64_t n, const Ops& ops = {}) {
  return group_moments(r, n, ops).mean;
}
template <class Ops = serial_ops>
GRPOKIT_HD double group_std(const double* r, std::int64_t n, const Ops& ops = {}) {
  return group_moments(r, n, ops).std;
}

// A built-in baseline's `center`: its center_with on one thread.
template <class B>
struct serial_center {
  GRPOKIT_HD static double center(group_io& g, const advantage_config& cfg) {
    return B::center_with(serial_ops{}, g, cfg);
  }
};
}  // namespace detail

namespace baseline {

// GRPO: b = mean of the group; spread = Bessel std.
struct mean : detail::serial_center<mean> {
  using policy_axis = axis::baseline;
  template <class Ops>
  GRPOKIT_HD static double center_with(const Ops& ops, group_io& g, const advantage_config&) {
    const detail::moments m = detail::group_moments(g.rewards, g.n, ops);
    ops.for_each(g.n, [=](std::int64_t i) { g.centered[i] = g.rewards[i] - m.mean; });
    return m.std;
  }
};

// MC-GRPO: b = lower median (torch.median semantics: the ((n-1)/2)-th smallest, an order statistic
// whatever finds it: heap selection on a thread, radix selection on a block); spread = MAD (lower
// median of |r - med| over the whole group, pivot included) with eps = mad_eps; in an odd group
// the pivot (lowest index with r == med) is excluded.
struct median : detail::serial_center<median> {
  using policy_axis = axis::baseline;
  template <class Ops>
  GRPOKIT_HD static double center_with(const Ops& ops, group_io& g, const advantage_config& cfg) {
    const std::int64_t k = (g.n - 1) / 2;
    const double med = ops.kth_smallest(g.rewards, g.n, k, g.scratch);
    if (g.n % 2 == 1) {
      const std::int64_t pivot = ops.first(g.n, [=](std::int64_t i) { return g.rewards[i] == med; });
      if (pivot < g.n) ops.for_each(1, [=](std::int64_t) { g.keep[pivot] = 0; });
    }
    ops.for_each(g.n, [=](std::int64_t i) { g.centered[i] = std::fabs(g.rewards[i] - med); });
    const double mad = ops.kth_smallest(g.centered, g.n, k, g.scratch);
    ops.for_each(g.n, [=](std::int64_t i) { g.centered[i] = g.rewards[i] - med; });
    g.eps = cfg.mad_eps;
    return mad;
  }
};

// RLOO: b_i = mean of the other rollouts; spread = Bessel std. A singleton group has A = 0.
struct leave_one_out : detail::serial_center<leave_one_out> {
  using policy_axis = axis::baseline;
  template <class Ops>
  GRPOKIT_HD static double center_with(const Ops& ops, group_io& g, const advantage_config&) {
    if (g.n < 2) {
      ops.for_each(g.n, [=](std::int64_t i) { g.centered[i] = 0; });
      return 0;
    }
    const double total = ops.sum(g.n, [=](std::int64_t i) { return g.rewards[i]; });
    ops.for_each(g.n, [=](std::int64_t i) {
      g.centered[i] = g.rewards[i] - (total - g.rewards[i]) / static_cast<double>(g.n - 1);
    });
    return detail::group_std(g.rewards, g.n, ops);
  }
};

// VCPO: min-variance baseline b = sum W r / sum W, with W the caller's weights or w^2 where
// w = exp(log_ratio) is the sequence importance weight (computed in log space); spread = Bessel std.
struct ess_scaled : detail::serial_center<ess_scaled> {
  using policy_axis = axis::baseline;
  static constexpr bool needs_log_ratio = true;
  template <class Ops>
  GRPOKIT_HD static double center_with(const Ops& ops, group_io& g, const advantage_config&) {
    double wsum = 0, wr = 0;
    if (g.weight != nullptr) {
      wsum = ops.sum(g.n, [=](std::int64_t i) { return g.weight[i]; });
      wr = ops.sum(g.n, [=](std::int64_t i) { return g.weight[i] * g.rewards[i]; });
    } else {
      const double top = ops.max(g.n, -INFINITY, [=](std::int64_t i) { return 2.0 * g.log_ratio[i]; });
      wsum = ops.sum(g.n, [=](std::int64_t i) { return std::exp(2.0 * g.log_ratio[i] - top); });
      wr = ops.sum(g.n, [=](std::int64_t i) { return std::exp(2.0 * g.log_ratio[i] - top) * g.rewards[i]; });
    }
    const double b = wsum > 0 && std::isfinite(wr / wsum) ? wr / wsum : detail::group_mean(g.rewards, g.n, ops);
    ops.for_each(g.n, [=](std::int64_t i) { g.centered[i] = g.rewards[i] - b; });
    return detail::group_std(g.rewards, g.n, ops);
  }
};

// ReMax (Li et al. 2023): b = the caller's baseline of the group, advantage_inputs::group_baseline
// (ReMax: the reward of the greedy rollout; equally a value estimate); spread = Bessel std of the
// group's rewards. A group of equal rewards keeps r - b (one sampled rollout per prompt is ReMax's
// usual case). ReMax itself is adv_scale::none: A = r - b.
struct external : detail::serial_center<external> {
  using policy_axis = axis::baseline;
  static constexpr bool needs_group_baseline = true;
  static constexpr bool zero_equal_groups = false;
  template <class Ops>
  GRPOKIT_HD static double center_with(const Ops& ops, group_io& g, const advantage_config&) {
    ops.for_each(g.n, [=](std::int64_t i) { g.centered[i] = g.rewards[i] - g.external; });
    return detail::group_std(g.rewards, g.n, ops);
  }
};

// GRPO pass@k (arXiv 2503.19595; verl adv_estimator=grpo_passk): only the group's best rollout has
// r_max - r_second, every other rollout 0; spread = Bessel std. Equal maxima need no tie rule: the
// two best rewards are then equal and every rollout gets 0.
struct pass_at_k : detail::serial_center<pass_at_k> {
  using policy_axis = axis::baseline;
  template <class Ops>
  GRPOKIT_HD static double center_with(const Ops& ops, group_io& g, const advantage_config&) {
    const double* r = g.rewards;
    const double best = ops.max(g.n, -INFINITY, [=](std::int64_t i) { return r[i]; });
    const std::int64_t top = ops.first(g.n, [=](std::int64_t i) { return r[i] == best; });
    const double second = ops.max(g.n, -INFINITY, [=](std::int64_t i) { return i == top ? -INFINITY : r[i]; });
    const double gap = g.n > 1 ? best - second : 0.0;  // a singleton: no second
    ops.for_each(g.n, [=](std::int64_t i) { g.centered[i] = i == top ? gap : 0.0; });
    return detail::group_std(r, g.n, ops);
  }
};

// OPO (arXiv 2505.23585; verl adv_estimator=opo): the length-weighted mean b = sum |y_i| r_i / sum |y_i|
// over the group (advantage_inputs::seq_tokens; all lengths 0: the plain mean); spread = Bessel std.
// OPO itself is adv_scale::none: A = r - b.
struct opo : detail::serial_center<opo> {
  using policy_axis = axis::baseline;
  static constexpr bool needs_seq_tokens = true;
  template <class Ops>
  GRPOKIT_HD static double center_with(const Ops& ops, group_io& g, const advantage_config&) {
    const double b = detail::weighted_moments(g.rewards, g.tokens, g.n, ops).mean;
    ops.for_each(g.n, [=](std::int64_t i) { g.centered[i] = g.rewards[i] - b; });
    return detail::group_std(g.rewards, g.n, ops);
  }
};

}  // namespace baseline

namespace detail {
template <class B, class = void>
struct has_center : std::false_type {};
template <class B>
struct has_center<B, std::void_t<decltype(static_cast<double>(B::center(
                         std::declval<group_io&>(), std::declval<const advantage_config&>())))>> : std::true_type {};

// whether B has center_with for these Ops (the built-ins do, for any Ops)
template <class B, class Ops, class = void>
struct has_center_with : std::false_type {};
template <class B, class Ops>
struct has_center_with<B, Ops,
                       std::void_t<decltype(static_cast<double>(B::center_with(
                           std::declval<const Ops&>(), std::declval<group_io&>(), std::declval<const advantage_config&>())))>>
    : std::true_type {};

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
struct needs_seq_tokens : std::false_type {};
template <class B>
struct needs_seq_tokens<B, std::void_t<decltype(B::needs_seq_tokens)>>
    : std::integral_constant<bool, B::needs_seq_tokens> {};

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
