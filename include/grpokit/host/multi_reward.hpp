#pragma once
// grpokit::host::compute_advantages_multi: several rewards per rollout (GDPO, arXiv 2601.05242;
// NeMo-RL adv_estimator "gdpo"): each reward's group advantages on their own (policy P's baseline
// and cfg.scale, unclipped), their weighted sum, then the sum whitened over the batch as
// adv_scale::whiten does (mean and Bessel std, weighted by seq_tokens when given), then clipped:
//   A_i = clamp((s_i - mu) / (max(sigma, std_floor) + eps), clip_low, clip_high),   s_i = sum_k w_k A_k,i
// A rollout is in the loss (seq_mask = 1) when every reward's advantages keep it. The statistics
// are those of the whitening step (reward_mean / reward_std: of the sums s). docs/baseline.md.
#include <cstdint>
#include <vector>

#include "../baseline.hpp"
#include "../config.hpp"
#include "../detail/multi_reward.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "advantages.hpp"
#include "detail/scratch.hpp"
#include "parallel_ops.hpp"

namespace grpokit::host {

template <class P>
advantage_stats compute_advantages_multi(const multi_reward_inputs<accum_t<P>>& in, const advantage_config& cfg,
                                         const advantage_outputs<accum_t<P>>& out) {
  static_assert(detail::check_multi_reward_baseline<P>());
  using Real = accum_t<P>;
  detail::require_multi_reward_shapes(in, out);
  detail::require_advantage_config(cfg);
  const std::int64_t S = in.rewards.rows, K = in.rewards.cols, G = in.group_offsets.size() - 1;
  const auto n = static_cast<std::size_t>(S);
  auto reward = detail::scratch<Real>(S, "compute_advantages_multi"), part = reward;
  auto keep = detail::scratch<std::uint8_t>(S, "compute_advantages_multi"), keep_all = keep;
  std::vector<double> sum(n, 0.0);
  for (std::size_t i = 0; i < n; ++i) keep_all[i] = 1;
  for (std::int64_t k = 0; k < K; ++k) {
    for (std::int64_t i = 0; i < S; ++i) reward[static_cast<std::size_t>(i)] = in.rewards.row(i)[k];
    compute_advantages<P>(advantage_inputs<Real>{reward, in.group_offsets, {}, {}, {}, in.seq_tokens},
                          detail::component_config(cfg), advantage_outputs<Real>{part, keep});
    const double w = in.weights.empty() ? 1.0 : in.weights[k];
    for (std::size_t i = 0; i < n; ++i) {
      sum[i] += w * static_cast<double>(part[i]);
      keep_all[i] = keep_all[i] && keep[i];
    }
  }
  for (std::size_t i = 0; i < n; ++i) reward[i] = static_cast<Real>(sum[i]);
  const std::vector<Real> zeros(static_cast<std::size_t>(G > 0 ? G : 0), Real(0));
  using W = typename P::template with_baseline<baseline::external>;
  advantage_stats st =
      compute_advantages<W>(advantage_inputs<Real>{reward, in.group_offsets, {}, {}, zeros, in.seq_tokens},
                            detail::whitening_config(cfg), out);
  for (std::int64_t i = 0; i < S; ++i) out.seq_mask[i] = keep_all[static_cast<std::size_t>(i)];
  st.excluded_seqs = 0;  // the moments again, over the rollouts every reward keeps
  detail::advantage_moments(out.adv.data(), out.seq_mask.data(), S, st, detail::parallel_ops{});
  return st;
}

}  // namespace grpokit::host
