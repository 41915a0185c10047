#pragma once
// The math of compute_advantages shared by the host loop and the device kernels.
#include <cmath>
#include <cstdint>

#include "../baseline.hpp"
#include "../config.hpp"
#include "../inputs.hpp"
#include "../metrics.hpp"
#include "group_ops.hpp"
#include "macros.hpp"

namespace grpokit::detail {

// log ESS of weights exp(l_i): 2 LSE(l) - LSE(2 l) (VCPO's (sum w)^2 / sum w^2 without overflow).
template <class Ops = serial_ops>
GRPOKIT_HD double log_ess(const double* l, std::int64_t n, const Ops& ops = {}) {
  if (n == 0) return -INFINITY;
  const double top = ops.max(n, -INFINITY, [=](std::int64_t i) { return l[i]; });
  const double s1 = ops.sum(n, [=](std::int64_t i) { return std::exp(l[i] - top); });
  const double s2 = ops.sum(n, [=](std::int64_t i) { return std::exp(2 * (l[i] - top)); });
  return 2 * std::log(s1) - std::log(s2);
}

// Batch-level quantities: reward moments, the batch-std divisor and VCPO's ESS / lr factor.
template <class Ops = serial_ops>
GRPOKIT_HD void batch_reward_stats(const double* r, const double* log_ratio, std::int64_t S,
                                   const advantage_config& cfg, advantage_stats& st, double& batch_div,
                                   const Ops& ops = {}) {
  const moments m = group_moments(r, S, ops);
  st.reward_mean = m.mean;
  st.reward_std = m.std;
  batch_div = (st.reward_std > cfg.std_floor ? st.reward_std : cfg.std_floor) + cfg.eps;
  if (cfg.scale == adv_scale::gpg && S > 0) {  // A = (r - b) / batch_div = alpha (r - b), alpha = S / #(r != 0)
    const double nonzero = ops.sum(S, [=](std::int64_t i) { return r[i] != 0 ? 1.0 : 0.0; });
    batch_div = (nonzero > 0 ? nonzero : 1.0) / static_cast<double>(S);
  }
  if (log_ratio != nullptr) {
    st.ess = std::exp(log_ess(log_ratio, S, ops));
    st.ess_ratio = S > 0 ? st.ess / static_cast<double>(S) : 0;
    const double ratio = st.ess_ratio / cfg.ess_ratio_ref;
    st.lr_factor = std::sqrt(ratio < 1.0 ? ratio : 1.0);
  }
}

// Where a batch's per-rollout values live, in double [S] each (the host's vectors, the device's
// workspace): the rewards and the optional log-ratios and weights, and what compute_advantages writes.
struct advantage_arrays {
  const double* rewards;
  const double* log_ratio;
  const double* weight;
  const double* tokens;
  double* centered;
  std::uint8_t* keep;
  double* divisor;
  double* scratch;  // may be `divisor`: center() is done with it before the divisors are written
};

// Group g's view of the arrays.
template <class Real>
GRPOKIT_HD group_io group_view(const advantage_arrays& a, const advantage_inputs<Real>& in, const advantage_config& cfg,
                               std::int64_t g) {
  const std::int64_t b = in.group_offsets[g];
  group_io io;
  io.rewards = a.rewards + b;
  io.log_ratio = in.seq_log_ratio.empty() ? nullptr : a.log_ratio + b;
  io.weight = in.seq_weight.empty() ? nullptr : a.weight + b;
  io.tokens = in.seq_tokens.empty() ? nullptr : a.tokens + b;
  io.n = in.group_offsets[g + 1] - b;
  io.centered = a.centered + b;
  io.keep = a.keep + b;
  io.scratch = a.scratch + b;
  io.eps = cfg.eps;
  io.external = in.group_baseline.empty() ? 0.0 : static_cast<double>(in.group_baseline[g]);
  return io;
}

// One group: the baseline's centring, zero-variance handling and the divisor of each rollout.
// Returns whether the group has zero variance (every reward equal, singletons included); its
// advantages are 0 (and masked with mask_zero_variance) unless the baseline keeps r - b
// (zero_equal_groups = false: an external baseline). With cfg.equal_group_weight the divisor is
// also multiplied by n / mean_group_size, so that every group's advantages sum to the same weight
// whatever its size (difficulty-sized groups, docs/group_plan.md).
// `ops` runs the baseline's center_with where it has one (a device block per large group), else its
// center on one thread. io.keep is preset to 1 here, before center.
template <class B, class Ops = serial_ops>
GRPOKIT_HD bool process_group(group_io& io, const advantage_config& cfg, double batch_div, double mean_group_size,
                              double* divisor, const Ops& ops = {}) {
  ops.for_each(io.n, [=](std::int64_t i) { io.keep[i] = 1; });
  double spread = 0;
  if constexpr (has_center_with<B, Ops>::value)
    spread = B::center_with(ops, io, cfg);
  else
    spread = B::center(io, cfg);
  const double* r = io.rewards;
  const bool zero_variance = ops.first(io.n, [=](std::int64_t i) { return r[i] != r[0]; }) == io.n;
  const double group_div = (spread > cfg.std_floor ? spread : cfg.std_floor) + io.eps;
  const double size_factor = cfg.equal_group_weight ? static_cast<double>(io.n) / mean_group_size : 1.0;
  // whiten: the batch's divisor is known only once every group is centred (whiten_stats)
  const double scale =
      (cfg.scale == adv_scale::group                                         ? group_div
       : cfg.scale == adv_scale::batch || cfg.scale == adv_scale::gpg ? batch_div
                                                                      : 1.0) *
      size_factor;
  const bool zero = zero_variance && zero_equal_groups<B>::value, mask = zero && cfg.mask_zero_variance;
  ops.for_each(io.n, [=](std::int64_t i) {
    if (zero) io.centered[i] = 0;
    if (mask) io.keep[i] = 0;
    divisor[i] = scale;
  });
  return zero_variance;
}

// adv_scale::whiten, once every group is centred: the shift and the divisor of the whole batch, the
// mean and the Bessel std of the centred values weighted by the rollouts' tokens (verl's masked_whiten
// of r - b repeated over each response; without seq_tokens, each rollout once). Other scales:
// shift 0, divisor 1 (the groups' divisors are final).
struct batch_shift {
  double shift = 0, divisor = 1;
};
template <class Ops = serial_ops>
GRPOKIT_HD batch_shift whiten_stats(const double* centered, const double* tokens, std::int64_t S,
                                    const advantage_config& cfg, const Ops& ops = {}) {
  batch_shift b;
  if (cfg.scale != adv_scale::whiten) return b;
  const moments m = weighted_moments(centered, tokens, S, ops);
  b.shift = m.mean;
  b.divisor = (m.std > cfg.std_floor ? m.std : cfg.std_floor) + cfg.eps;
  return b;
}

// A zero-variance rollout has centered == 0 exactly and gets 0 even when the divisor is 0. Then the
// clip (0 is inside it); a NaN stays NaN, to be reported. (Under whiten, centered is r - b - shift.)
GRPOKIT_HD inline double advantage_value(double centered, double divisor, double fold, const advantage_config& cfg) {
  if (centered == 0) return 0.0;
  const double a = centered / divisor * fold;
  return a < cfg.clip_low ? cfg.clip_low : a > cfg.clip_high ? cfg.clip_high : a;
}

// Mean and population std of the advantages of the kept sequences.
template <class Real, class Ops = serial_ops>
GRPOKIT_HD void advantage_moments(const Real* adv, const std::uint8_t* keep, std::int64_t S, advantage_stats& st,
                                  const Ops& ops = {}) {
  // the count as a double sum of 0 / 1: exact below 2^53 rollouts
  const double kept = ops.sum(S, [=](std::int64_t i) { return keep[i] ? 1.0 : 0.0; });
  const double sum = ops.sum(S, [=](std::int64_t i) { return keep[i] ? static_cast<double>(adv[i]) : 0.0; });
  const double mean = kept > 0 ? sum / kept : 0;
  const double sumsq = ops.sum(S, [=](std::int64_t i) {
    const double d = static_cast<double>(adv[i]) - mean;
    return keep[i] ? d * d : 0.0;
  });
  st.excluded_seqs += S - static_cast<std::int64_t>(kept);
  st.adv_mean = mean;
  st.adv_std = kept > 0 ? std::sqrt(sumsq / kept) : 0;
}

}  // namespace grpokit::detail
