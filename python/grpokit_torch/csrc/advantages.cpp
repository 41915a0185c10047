// grpokit::compute_advantages on the CPU: host::compute_advantages; the statistics in advantage_stat_names order.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <string>
#include <tuple>

#include "config_fields.hpp"
#include "variants.hpp"

namespace grpokit_torch {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> compute_advantages_cpu(
    const at::Tensor& rewards, const at::Tensor& group_offsets, const c10::optional<at::Tensor>& seq_log_ratio,
    const c10::optional<at::Tensor>& seq_weight, const c10::optional<at::Tensor>& group_baseline,
    const c10::optional<at::Tensor>& seq_tokens, c10::ArrayRef<double> config, c10::string_view baseline) {
  const grpokit::advantage_config cfg = config_from(advantage_fields(), config.vec());
  const advantage_tensors in(rewards, group_offsets, seq_log_ratio, seq_weight, group_baseline, seq_tokens);
  at::Tensor adv = at::empty_like(in.rewards);
  at::Tensor keep = at::empty({in.rewards.numel()}, in.rewards.options().dtype(at::kByte));
  grpokit::advantage_stats st;
  with_baseline(in.rewards.scalar_type(), std::string(baseline), [&](auto tag) {
    using P = decltype(tag);
    using R = grpokit::accum_t<P>;
    st = grpokit::host::compute_advantages<P>(in.get<R>(), cfg, {span_of<R>(adv), span_of<std::uint8_t>(keep)});
  });
  return {adv, keep, advantage_stats_tensor(st)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> compute_advantages_multi_cpu(
    const at::Tensor& rewards, const at::Tensor& group_offsets, c10::ArrayRef<double> weights,
    const c10::optional<at::Tensor>& seq_tokens, c10::ArrayRef<double> config, c10::string_view baseline) {
  const grpokit::advantage_config cfg = config_from(advantage_fields(), config.vec());
  const multi_reward_tensors in(rewards, group_offsets, weights, seq_tokens);
  at::Tensor adv = at::empty({in.rows()}, in.rewards.options());
  at::Tensor keep = at::empty({in.rows()}, in.rewards.options().dtype(at::kByte));
  grpokit::advantage_stats st;
  with_multi_reward_baseline(in.rewards.scalar_type(), std::string(baseline), [&](auto tag) {
    using P = decltype(tag);
    using R = grpokit::accum_t<P>;
    st = grpokit::host::compute_advantages_multi<P>(in.get<R>(), cfg, {span_of<R>(adv), span_of<std::uint8_t>(keep)});
  });
  return {adv, keep, advantage_stats_tensor(st)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> optimal_token_baseline_cpu(
    const at::Tensor& token_rewards, const at::Tensor& seq_offsets, const at::Tensor& group_offsets,
    const at::Tensor& logp_old, const at::Tensor& sum_p2, const c10::optional<at::Tensor>& is_weights,
    const c10::optional<at::Tensor>& token_mask, bool zero_tail, bool compact, double epsilon) {
  const token_baseline_tensors in(token_rewards, seq_offsets, group_offsets, logp_old, sum_p2, is_weights, token_mask);
  const grpokit::token_baseline_config cfg{zero_tail, compact, epsilon};
  at::Tensor adv = at::empty_like(in.rewards), returns = at::empty_like(in.rewards);
  grpokit::token_baseline_stats st;
  AT_DISPATCH_FLOATING_TYPES(in.rewards.scalar_type(), "grpokit optimal_token_baseline", [&] {
    st = grpokit::host::optimal_token_baseline<scalar_t>(in.get<scalar_t>(), cfg,
                                                         {span_of<scalar_t>(adv), span_of<scalar_t>(returns)});
  });
  return {adv, returns, token_baseline_stats_tensor(st)};
}

}  // namespace
}  // namespace grpokit_torch

TORCH_LIBRARY_IMPL(grpokit, CPU, m) {
  m.impl("compute_advantages", &grpokit_torch::compute_advantages_cpu);
  m.impl("compute_advantages_multi", &grpokit_torch::compute_advantages_multi_cpu);
  m.impl("optimal_token_baseline", &grpokit_torch::optimal_token_baseline_cpu);
}
