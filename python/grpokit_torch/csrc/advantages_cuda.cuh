#pragma once
// grpokit::compute_advantages on CUDA: device::compute_advantages_async on the current stream; the
// statistics copied out of the workspace on the device.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "config_fields.hpp"
#include "device_call.cuh"
#include "variants.hpp"

namespace grpokit_torch {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> compute_advantages_cuda(
    const at::Tensor& rewards, const at::Tensor& group_offsets, const c10::optional<at::Tensor>& seq_log_ratio,
    const c10::optional<at::Tensor>& seq_weight, const c10::optional<at::Tensor>& group_baseline,
    const c10::optional<at::Tensor>& seq_tokens, c10::ArrayRef<double> config, c10::string_view baseline) {
  device_call call(rewards);
  const grpokit::advantage_config cfg = config_from(advantage_fields(), config.vec());
  const advantage_tensors in(rewards, group_offsets, seq_log_ratio, seq_weight, group_baseline, seq_tokens);
  require_on(call.device(), in);
  at::Tensor adv = at::empty_like(in.rewards);
  at::Tensor keep = at::empty({in.rewards.numel()}, in.rewards.options().dtype(at::kByte));
  at::Tensor stats = at::empty({advantage_stat_count}, in.rewards.options().dtype(at::kDouble));
  with_baseline(in.rewards.scalar_type(), std::string(baseline), [&](auto tag) {
    using P = decltype(tag);
    using R = grpokit::accum_t<P>;
    call.run([&](void* ws, std::size_t& bytes) {
      grpokit::device::compute_advantages_async<P>(in.get<R>(), cfg, {span_of<R>(adv), span_of<std::uint8_t>(keep)},
                                                   ws, bytes, call.stream());
    });
  });
  call.advantage_outputs(stats);
  call.nan_if_raised(adv);
  call.check();
  return {adv, keep, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> compute_advantages_multi_cuda(
    const at::Tensor& rewards, const at::Tensor& group_offsets, c10::ArrayRef<double> weights,
    const c10::optional<at::Tensor>& seq_tokens, c10::ArrayRef<double> config, c10::string_view baseline) {
  device_call call(rewards);
  const grpokit::advantage_config cfg = config_from(advantage_fields(), config.vec());
  const multi_reward_tensors in(rewards, group_offsets, weights, seq_tokens);
  require_device(call.device(), "group_offsets", in.group_offsets);
  require_device(call.device(), "seq_tokens", in.seq_tokens);
  at::Tensor adv = at::empty({in.rows()}, in.rewards.options());
  at::Tensor keep = at::empty({in.rows()}, in.rewards.options().dtype(at::kByte));
  at::Tensor stats = at::empty({advantage_stat_count}, in.rewards.options().dtype(at::kDouble));
  with_multi_reward_baseline(in.rewards.scalar_type(), std::string(baseline), [&](auto tag) {
    using P = decltype(tag);
    using R = grpokit::accum_t<P>;
    call.run([&](void* ws, std::size_t& bytes) {
      grpokit::device::compute_advantages_multi_async<P>(in.get<R>(), cfg,
                                                         {span_of<R>(adv), span_of<std::uint8_t>(keep)}, ws, bytes,
                                                         call.stream());
    });
  });
  call.advantage_outputs(stats);
  call.nan_if_raised(adv);
  call.check();
  return {adv, keep, stats};
}

// The statistics out of optimal_token_baseline's workspace; NaN if the call raised.
static __global__ void token_baseline_stats_kernel(const grpokit::token_baseline_stats* s,
                                                   const grpokit::device::status* st, double* out) {
  write_token_baseline_stats(*s, out);
  if (grpokit::detail::raised(*st))
    for (int i = 0; i < token_baseline_stat_count; ++i) out[i] = NAN;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> optimal_token_baseline_cuda(
    const at::Tensor& token_rewards, const at::Tensor& seq_offsets, const at::Tensor& group_offsets,
    const at::Tensor& logp_old, const at::Tensor& sum_p2, const c10::optional<at::Tensor>& is_weights,
    const c10::optional<at::Tensor>& token_mask, bool zero_tail, bool compact, double epsilon) {
  device_call call(token_rewards);
  const token_baseline_tensors in(token_rewards, seq_offsets, group_offsets, logp_old, sum_p2, is_weights, token_mask);
  require_on(call.device(), in);
  const grpokit::token_baseline_config cfg{zero_tail, compact, epsilon};
  at::Tensor adv = at::empty_like(in.rewards), returns = at::empty_like(in.rewards);
  at::Tensor stats = at::empty({token_baseline_stat_count}, in.rewards.options().dtype(at::kDouble));
  void* workspace = nullptr;
  AT_DISPATCH_FLOATING_TYPES(in.rewards.scalar_type(), "grpokit optimal_token_baseline", [&] {
    call.run([&](void* ws, std::size_t& bytes) {
      grpokit::device::optimal_token_baseline_async<scalar_t>(
          in.get<scalar_t>(), cfg, {span_of<scalar_t>(adv), span_of<scalar_t>(returns)}, ws, bytes, call.stream());
      workspace = ws;
    });
  });
  const grpokit::detail::otb_layout ws = grpokit::detail::otb_head(workspace);
  token_baseline_stats_kernel<<<1, 1, 0, call.stream()>>>(ws.stats, ws.st, stats.data_ptr<double>());
  GRPOKIT_CUDA_CHECK_LAUNCH();
  call.nan_if_raised(adv, returns);
  call.check();
  return {adv, returns, stats};
}

}  // namespace
}  // namespace grpokit_torch

TORCH_LIBRARY_IMPL(grpokit, CUDA, m) {
  m.impl("compute_advantages", &grpokit_torch::compute_advantages_cuda);
  m.impl("compute_advantages_multi", &grpokit_torch::compute_advantages_multi_cuda);
  m.impl("optimal_token_baseline", &grpokit_torch::optimal_token_baseline_cuda);
}
