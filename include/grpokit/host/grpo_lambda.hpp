#pragma once
// grpokit::host::grpo_lambda_rewards: GRPO-lambda's reward pre-pass (Dai, Liu, Si 2025, "Stable
// Reinforcement Learning for Efficient Reasoning", arXiv 2505.18086), run before
// compute_advantages. Each group's correctness ratio ranks the groups of the batch; the top
// fraction keeps a length-penalised reward, the others fall back to the plain 0/1 reward:
//   r_i = correct_i + weight * bonus_i   (group among the top ceil(top_fraction * G): top_count)
//   r_i = correct_i                      (otherwise)
// with Kimi k1.5's length bonus (detail/length_reward.hpp) over the group's response lengths
// len_i = seq_offsets[i + 1] - seq_offsets[i]. Ties of the ratio rank the lower group index first.
// docs/rewards.md.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "../detail/length_reward.hpp"
#include "../detail/validate.hpp"
#include "../span.hpp"
#include "detail/scratch.hpp"

namespace grpokit {

struct grpo_lambda_config {
  double top_fraction = 0.5;   // lambda: the fraction of groups, best correctness ratio first, that
                               // keep the length penalty (grpokit's default; 0 = plain 0/1, 1 = all)
  double length_weight = 1.0;  // the length bonus's weight
};

struct grpo_lambda_stats {
  std::int64_t groups = 0;
  std::int64_t penalised_groups = 0;  // ceil(top_fraction * G)
  double lowest_penalised_ratio = 0;  // the correctness ratio of the last penalised group (0 if none)
};

namespace detail {
// ceil(fraction * G), with a product within 1e-9 of an integer taken as that integer (0.3 * 10 is
// 3.0000000000000004 in double: 3 groups, not 4).
inline std::int64_t top_count(double fraction, std::int64_t G) {
  const double x = fraction * static_cast<double>(G);
  const double nearest = std::round(x);
  return static_cast<std::int64_t>(std::fabs(x - nearest) <= 1e-9 * (1.0 + x) ? nearest : std::ceil(x));
}

inline void require_grpo_lambda(span<const std::uint8_t> correct, span<const std::int64_t> seq_offsets,
                                span<const std::int64_t> group_offsets, const grpo_lambda_config& cfg) {
  GRPOKIT_REQUIRE(std::isfinite(cfg.top_fraction) && cfg.top_fraction >= 0 && cfg.top_fraction <= 1,
                  "grpo_lambda_config::top_fraction must be in [0, 1], got ", cfg.top_fraction);
  GRPOKIT_REQUIRE(std::isfinite(cfg.length_weight), "grpo_lambda_config::length_weight must be finite, got ",
                  cfg.length_weight);
  const std::int64_t S = correct.size();
  require_offsets("seq_offsets", seq_offsets, -1, /*allow_empty_segments=*/true);
  GRPOKIT_REQUIRE(seq_offsets.size() == S + 1, "seq_offsets: expected ", S + 1, " offsets (S + 1), got ",
                  seq_offsets.size());
  require_offsets("group_offsets", group_offsets, S, /*allow_empty_segments=*/false);
  for (std::int64_t i = 0; i < S; ++i)
    GRPOKIT_REQUIRE(correct[i] <= 1, "correct[", i, "] must be 0 or 1, got ", int(correct[i]));
}
}  // namespace detail

namespace host {

template <class Real>
grpo_lambda_stats grpo_lambda_rewards(span<const std::uint8_t> correct, span<const std::int64_t> seq_offsets,
                                      span<const std::int64_t> group_offsets, const grpo_lambda_config& cfg,
                                      span<Real> rewards) {
  detail::require_grpo_lambda(correct, seq_offsets, group_offsets, cfg);
  detail::require_size("rewards", rewards, correct.size());
  const std::int64_t G = group_offsets.size() - 1;
  auto count = detail::scratch<std::int64_t>(G, "grpo_lambda_rewards");
  auto order = detail::scratch<std::int64_t>(G, "grpo_lambda_rewards");
  for (std::int64_t g = 0; g < G; ++g)
    count[static_cast<std::size_t>(g)] = detail::correct_count(correct.data(), group_offsets[g], group_offsets[g + 1]);
  std::iota(order.begin(), order.end(), std::int64_t{0});
  auto n_of = [&](std::int64_t g) { return group_offsets[g + 1] - group_offsets[g]; };
  std::sort(order.begin(), order.end(), [&](std::int64_t g, std::int64_t h) {
    return detail::ranks_before(count[static_cast<std::size_t>(g)], n_of(g), g, count[static_cast<std::size_t>(h)],
                                n_of(h), h);
  });
  grpo_lambda_stats st;
  st.groups = G;
  st.penalised_groups = detail::top_count(cfg.top_fraction, G);
  for (std::int64_t k = 0; k < G; ++k) {
    const std::int64_t g = order[static_cast<std::size_t>(k)], b = group_offsets[g], e = group_offsets[g + 1];
    const bool penalised = k < st.penalised_groups;
    std::int64_t lo = seq_offsets[b + 1] - seq_offsets[b], hi = lo;
    for (std::int64_t i = b; i < e; ++i) {
      lo = std::min(lo, seq_offsets[i + 1] - seq_offsets[i]);
      hi = std::max(hi, seq_offsets[i + 1] - seq_offsets[i]);
    }
    for (std::int64_t i = b; i < e; ++i) {
      const bool ok = correct[i] != 0;
      const double bonus =
          penalised ? cfg.length_weight * detail::kimi_length_reward(seq_offsets[i + 1] - seq_offsets[i], lo, hi, ok)
                    : 0.0;
      rewards[i] = static_cast<Real>((ok ? 1.0 : 0.0) + bonus);
    }
    if (penalised)
      st.lowest_penalised_ratio = static_cast<double>(count[static_cast<std::size_t>(g)]) / static_cast<double>(e - b);
  }
  return st;
}

}  // namespace host
}  // namespace grpokit
