#pragma once
// grpokit::host::plan_groups: difficulty-sized groups (sGPO: Sudalairaj, Xu, Srivastava, Giannone
// 2026, "sGPO: Trading Inference FLOPs for Training Efficiency in RLVR", arXiv 2606.08854). From a
// profiled success rate p_q per prompt (a few samples of the initial policy), a plan of which
// prompts to train on, in which order, and how many rollouts each gets:
//   * p_q = 1 (trivial): dropped: every rollout would be correct, a zero-variance group;
//   * p_q = 0 (unsolvable): a seeded subset of ceil(unsolvable_fraction U) of the U such prompts
//     is kept, with max_group rollouts each;
//   * otherwise n_q = clamp(ceil(1 / p_q), min_group, max_group): one expected success per group;
//   * with a budget: if sum n_q exceeds it, every size is scaled by budget / sum (floor, not below
//     min_group); if that is not enough, prompts are dropped from the hardest end;
//   * the kept prompts in curriculum order, easy to hard (p_q descending, ties by index).
// docs/group_plan.md says what each choice does to the gradient. A planning step: host only.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "../error.hpp"
#include "../span.hpp"

namespace grpokit {

struct group_plan_config {
  std::int64_t min_group = 2;        // smallest group (>= 1; 2 gives every group a variance)
  std::int64_t max_group = 64;       // largest group (>= min_group); unsolvable prompts get it
  std::int64_t budget = 0;           // total rollouts of the plan; 0 = no budget
  double unsolvable_fraction = 0.1;  // of the prompts with p = 0, the fraction kept (0 = none, 1 = all)
  std::uint64_t seed = 0;            // which unsolvable prompts are kept
};

struct group_plan {
  std::vector<std::int64_t> prompt;            // kept prompts, easy to hard
  std::vector<std::int64_t> group_size;        // their rollout counts
  std::vector<std::int64_t> group_offsets{0};  // prefix sums of group_size (compute_advantages' layout)
  std::int64_t rollouts = 0;
  std::int64_t dropped_trivial = 0, dropped_unsolvable = 0, dropped_budget = 0;
};

namespace detail {
// A seeded 64-bit mix (splitmix64) of a prompt index: the order in which unsolvable prompts are kept.
inline std::uint64_t plan_hash(std::uint64_t seed, std::uint64_t q) {
  std::uint64_t z = seed + 0x9e3779b97f4a7c15ull * (q + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
}  // namespace detail

namespace host {

inline group_plan plan_groups(span<const double> success_rate, const group_plan_config& cfg) {
  GRPOKIT_REQUIRE(cfg.min_group >= 1 && cfg.max_group >= cfg.min_group, "group_plan_config: need 1 <= min_group (",
                  cfg.min_group, ") <= max_group (", cfg.max_group, ")");
  GRPOKIT_REQUIRE(cfg.budget >= 0, "group_plan_config::budget must be >= 0, got ", cfg.budget);
  GRPOKIT_REQUIRE(
      std::isfinite(cfg.unsolvable_fraction) && cfg.unsolvable_fraction >= 0 && cfg.unsolvable_fraction <= 1,
      "group_plan_config::unsolvable_fraction must be in [0, 1], got ", cfg.unsolvable_fraction);
  const std::int64_t Q = success_rate.size();
  for (std::int64_t q = 0; q < Q; ++q)
    GRPOKIT_REQUIRE(success_rate[q] >= 0 && success_rate[q] <= 1, "success_rate[", q, "] must be in [0, 1], got ",
                    success_rate[q]);

  group_plan plan;
  std::vector<std::int64_t> kept, unsolvable;
  for (std::int64_t q = 0; q < Q; ++q) {
    if (success_rate[q] == 1)
      ++plan.dropped_trivial;
    else if (success_rate[q] == 0)
      unsolvable.push_back(q);
    else
      kept.push_back(q);
  }
  // the seeded subset of the unsolvable prompts: the ceil(f U) smallest hashes (ties by index)
  const double want = cfg.unsolvable_fraction * static_cast<double>(unsolvable.size());
  const auto keep_unsolvable = static_cast<std::size_t>(
      std::fabs(want - std::round(want)) <= 1e-9 * (1 + want) ? std::round(want) : std::ceil(want));
  std::sort(unsolvable.begin(), unsolvable.end(), [&](std::int64_t a, std::int64_t b) {
    const auto ha = detail::plan_hash(cfg.seed, static_cast<std::uint64_t>(a)),
               hb = detail::plan_hash(cfg.seed, static_cast<std::uint64_t>(b));
    return ha != hb ? ha < hb : a < b;
  });
  kept.insert(kept.end(), unsolvable.begin(), unsolvable.begin() + static_cast<std::ptrdiff_t>(keep_unsolvable));
  plan.dropped_unsolvable = static_cast<std::int64_t>(unsolvable.size() - keep_unsolvable);

  // curriculum: easy to hard
  std::sort(kept.begin(), kept.end(), [&](std::int64_t a, std::int64_t b) {
    return success_rate[a] != success_rate[b] ? success_rate[a] > success_rate[b] : a < b;
  });
  auto size_of = [&](std::int64_t q) {
    const double p = success_rate[q];
    const double inverse = p > 0 ? std::ceil(1.0 / p) : static_cast<double>(cfg.max_group);
    return std::min(
        cfg.max_group,
        std::max(cfg.min_group, static_cast<std::int64_t>(std::min(inverse, static_cast<double>(cfg.max_group)))));
  };
  std::vector<std::int64_t> sizes;
  for (const std::int64_t q : kept) sizes.push_back(size_of(q));
  const std::int64_t total = std::accumulate(sizes.begin(), sizes.end(), std::int64_t{0});
  if (cfg.budget > 0 && total > cfg.budget) {
    const double scale = static_cast<double>(cfg.budget) / static_cast<double>(total);
    for (auto& n : sizes)
      n = std::max(cfg.min_group, static_cast<std::int64_t>(std::floor(static_cast<double>(n) * scale)));
    std::int64_t sum = std::accumulate(sizes.begin(), sizes.end(), std::int64_t{0});
    while (sum > cfg.budget && !sizes.empty()) {  // still over: drop the hardest prompts
      sum -= sizes.back();
      sizes.pop_back();
      kept.pop_back();
      ++plan.dropped_budget;
    }
  }
  plan.prompt = kept;
  plan.group_size = sizes;
  for (const std::int64_t n : sizes) plan.group_offsets.push_back(plan.group_offsets.back() + n);
  plan.rollouts = plan.group_offsets.back();
  return plan;
}

}  // namespace host
}  // namespace grpokit
