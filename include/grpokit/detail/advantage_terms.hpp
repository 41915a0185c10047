#pragma once
// The math of compute_advantages shared by the host loop and the device kernels.
#include <cmath>
#include <cstdint>

#include "../baseline.hpp"
#include "../config.hpp"
#include "../metrics.hpp"
#include "macros.hpp"

namespace grpokit::detail {

// log ESS of weights exp(l_i): 2 LSE(l) - LSE(2 l) (VCPO's (sum w)^2 / sum w^2 without overflow).
GRPOKIT_HD inline double log_ess(const double* l, std::int64_t n) {
  if (n == 0) return -INFINITY;
  double top = -INFINITY;
  for (std::int64_t i = 0; i < n; ++i) top = l[i] > top ? l[i] : top;
  double s1 = 0, s2 = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    s1 += std::exp(l[i] - top);
    s2 += std::exp(2 * (l[i] - top));
  }
  return 2 * std::log(s1) - std::log(s2);
}

// Batch-level quantities: reward moments, the batch-std divisor and VCPO's ESS / lr factor.
GRPOKIT_HD inline void batch_reward_stats(const double* r, const double* log_ratio, std::int64_t S,
                                          const advantage_config& cfg, advantage_stats& st, double& batch_div) {
  st.reward_mean = S > 0 ? group_mean(r, S) : 0;
  st.reward_std = group_std(r, S);
  batch_div = (st.reward_std > cfg.std_floor ? st.reward_std : cfg.std_floor) + cfg.eps;
  if (log_ratio != nullptr) {
    st.ess = std::exp(log_ess(log_ratio, S));
    st.ess_ratio = S > 0 ? st.ess / static_cast<double>(S) : 0;
    const double ratio = st.ess_ratio / cfg.ess_ratio_ref;
    st.lr_factor = std::sqrt(ratio < 1.0 ? ratio : 1.0);
  }
}

// One group: the baseline's centring, zero-variance handling and the divisor of each rollout.
// Returns whether the group has zero variance (every reward equal, singletons included); its
// advantages are 0 (and masked with mask_zero_variance) unless the baseline keeps r - b
// (zero_equal_groups = false: an external baseline). With cfg.equal_group_weight the divisor is
// also multiplied by n / mean_group_size, so that every group's advantages sum to the same weight
// whatever its size (difficulty-sized groups, docs/group_plan.md).
template <class B>
GRPOKIT_HD inline bool process_group(group_io& io, const advantage_config& cfg, double batch_div,
                                     double mean_group_size, double* divisor) {
  const double spread = B::center(io, cfg);
  bool zero_variance = true;
  for (std::int64_t i = 1; i < io.n; ++i) zero_variance = zero_variance && io.rewards[i] == io.rewards[0];
  const double group_div = (spread > cfg.std_floor ? spread : cfg.std_floor) + io.eps;
  const double size_factor = cfg.equal_group_weight ? static_cast<double>(io.n) / mean_group_size : 1.0;
  for (std::int64_t i = 0; i < io.n; ++i) {
    if (zero_variance && zero_equal_groups<B>::value) {
      io.centered[i] = 0;
      if (cfg.mask_zero_variance) io.keep[i] = 0;
    }
    divisor[i] = (cfg.scale == adv_scale::group ? group_div : cfg.scale == adv_scale::batch ? batch_div : 1.0) *
                 size_factor;
  }
  return zero_variance;
}

// A zero-variance rollout has centered == 0 exactly and gets 0 even when the divisor is 0.
GRPOKIT_HD inline double advantage_value(double centered, double divisor, double fold) {
  return centered == 0 ? 0.0 : centered / divisor * fold;
}

// Mean and population std of the advantages of the kept sequences.
template <class Real>
GRPOKIT_HD inline void advantage_moments(const Real* adv, const std::uint8_t* keep, std::int64_t S,
                                         advantage_stats& st) {
  double sum = 0, sumsq = 0;
  std::int64_t kept = 0;
  for (std::int64_t i = 0; i < S; ++i) {
    st.excluded_seqs += keep[i] == 0;
    if (keep[i]) {
      sum += static_cast<double>(adv[i]);
      ++kept;
    }
  }
  st.adv_mean = kept > 0 ? sum / static_cast<double>(kept) : 0;
  for (std::int64_t i = 0; i < S; ++i)
    if (keep[i]) sumsq += (static_cast<double>(adv[i]) - st.adv_mean) * (static_cast<double>(adv[i]) - st.adv_mean);
  st.adv_std = kept > 0 ? std::sqrt(sumsq / static_cast<double>(kept)) : 0;
}

}  // namespace grpokit::detail
