#pragma once
// compute_advantages_multi's configurations of its steps, shared by the host and the device: each
// reward's advantages unclipped (the sum is clipped), the sum whitened as adv_scale::whiten does.
#include <limits>

#include "../baseline.hpp"
#include "../config.hpp"
#include "../policy.hpp"

namespace grpokit::detail {

// What the rewards' own advantages and the whitening of their sum take from cfg.
inline advantage_config component_config(advantage_config cfg) {
  cfg.clip_low = -std::numeric_limits<double>::infinity();  // the sum is clipped, not its parts
  cfg.clip_high = std::numeric_limits<double>::infinity();
  return cfg;
}
inline advantage_config whitening_config(const advantage_config& cfg) {
  advantage_config w;
  w.scale = adv_scale::whiten;
  w.eps = cfg.eps;
  w.std_floor = cfg.std_floor;
  w.clip_low = cfg.clip_low;
  w.clip_high = cfg.clip_high;
  return w;
}

// The baselines compute_advantages_multi takes: those that need no per-rollout or per-group input
// but the rewards (and seq_tokens).
template <class B>
constexpr bool takes_rewards_only = !needs_log_ratio<B>::value && !needs_group_baseline<B>::value;
template <class P>
constexpr bool check_multi_reward_baseline() {
  static_assert(takes_rewards_only<typename P::baseline_type>,
                "compute_advantages_multi: the baseline needs per-rollout log-ratios or per-group baselines, "
                "which it does not take");
  return true;
}

}  // namespace grpokit::detail
