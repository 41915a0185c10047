#pragma once
// grpokit::device::compute_advantages: the shared math of detail/advantage_terms.hpp with a thread
// per group (the median by heap selection in the group's scratch, O(n log n)), the batch
// statistics in one thread (fixed order, log-space ESS), synchronising to return the stats.
#include <cstdint>
#include <cuda_runtime.h>

#include "../config.hpp"
#include "../detail/advantage_terms.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "error.cuh"
#include "results.cuh"
#include "status.cuh"
#include "tuning.cuh"
#include "workspace.cuh"

namespace grpokit::detail {

// Scratch: r, log_ratio, weight, centered, divisor (double [S] each) in ws.adv_scratch.
template <class Real>
__global__ void __launch_bounds__(1)
    advantage_batch_kernel(advantage_inputs<Real> in, advantage_config cfg, double* scratch,
                           advantage_device_stats* stats_out, device::status* st) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  const std::int64_t S = in.rewards.size(), G = in.group_offsets.size() - 1;
  double* r = scratch;
  double* lr = scratch + S;
  double* w = scratch + 2 * S;
  for (std::int64_t i = 0; i < S; ++i) {
    r[i] = in.rewards[i];
    if (!isfinite(r[i])) flag_error(&st->non_finite_seq, i);
    if (!in.seq_log_ratio.empty()) {
      lr[i] = in.seq_log_ratio[i];
      if (!isfinite(lr[i])) flag_error(&st->non_finite_seq, i);
    }
    if (!in.seq_weight.empty()) {
      w[i] = in.seq_weight[i];
      if (!(w[i] >= 0) || !isfinite(w[i])) flag_error(&st->bad_value, i);
    }
  }
  for (std::int64_t g = 0; g < in.group_baseline.size(); ++g)
    if (!isfinite(static_cast<double>(in.group_baseline[g]))) flag_error(&st->bad_value, g);
  bool ok = in.group_offsets[0] == 0 && in.group_offsets[G] == S;
  for (std::int64_t g = 0; g < G; ++g) {
    if (!(in.group_offsets[g + 1] > in.group_offsets[g])) {
      ok = false;
      flag_error(&st->bad_offsets, g);
    }
  }
  if (!ok) flag_error(&st->bad_offsets, 0);
  advantage_stats stats;
  double batch_div = 0;
  detail::batch_reward_stats(r, in.seq_log_ratio.empty() ? nullptr : lr, S, cfg, stats, batch_div);
  stats_out->reward_mean = stats.reward_mean;
  stats_out->reward_std = stats.reward_std;
  stats_out->batch_divisor = batch_div;
  stats_out->ess = stats.ess;
  stats_out->ess_ratio = stats.ess_ratio;
  stats_out->lr_factor = stats.lr_factor;
  stats_out->offsets_ok = ok;
}

template <class B, class Real>
__global__ void __launch_bounds__(device::tuning::group_threads)
    advantage_group_kernel(advantage_inputs<Real> in, advantage_config cfg, double* scratch, std::uint8_t* keep,
                           advantage_device_stats* stats) {
  const std::int64_t g = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t S = in.rewards.size(), G = in.group_offsets.size() - 1;
  if (g >= G || !stats->offsets_ok) return;  // bad offsets: reported, nothing read out of bounds
  const std::int64_t b = in.group_offsets[g], n = in.group_offsets[g + 1] - b;
  double* r = scratch;
  double* centered = scratch + 3 * S;
  double* divisor = scratch + 4 * S;
  group_io io;
  io.rewards = r + b;
  io.log_ratio = in.seq_log_ratio.empty() ? nullptr : scratch + S + b;
  io.weight = in.seq_weight.empty() ? nullptr : scratch + 2 * S + b;
  io.n = n;
  io.centered = centered + b;
  io.keep = keep + b;
  io.scratch = divisor + b;  // free until process_group writes the divisors after center()
  io.eps = cfg.eps;
  io.external = in.group_baseline.empty() ? 0.0 : static_cast<double>(in.group_baseline[g]);
  for (std::int64_t i = 0; i < n; ++i) io.keep[i] = 1;
  const bool zero_variance = detail::process_group<B>(io, cfg, stats->batch_divisor,
                                                      static_cast<double>(S) / static_cast<double>(G), divisor + b);
  atomicAdd(&stats->zero_variance_groups, zero_variance ? 1ull : 0ull);
  atomicAdd(&stats->singleton_groups, n == 1 ? 1ull : 0ull);
}

template <class Real>
__global__ void __launch_bounds__(device::tuning::group_threads)
    advantage_output_kernel(advantage_inputs<Real> in, advantage_config cfg, const double* scratch,
                            const std::uint8_t* keep, const advantage_device_stats* stats, advantage_outputs<Real> out,
                            device::status* st) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t S = in.rewards.size();
  if (i >= S) return;
  if (!stats->offsets_ok) {
    out.adv[i] = Real(0);
    out.seq_mask[i] = 0;
    return;
  }
  const double fold = cfg.fold_lr_factor ? stats->lr_factor : 1.0;
  const double a = detail::advantage_value(scratch[3 * S + i], scratch[4 * S + i], fold);
  if (!isfinite(a)) flag_error(&st->non_finite_seq, i);
  out.adv[i] = static_cast<Real>(a);
  out.seq_mask[i] = keep[i];
}

template <class Real>
__global__ void __launch_bounds__(1)
    advantage_moments_kernel(advantage_outputs<Real> out, advantage_device_stats* stats) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  advantage_stats st;
  detail::advantage_moments(out.adv.data(), out.seq_mask.data(), out.adv.size(), st);
  stats->adv_mean = st.adv_mean;
  stats->adv_std = st.adv_std;
  stats->excluded_seqs = static_cast<unsigned long long>(st.excluded_seqs);
}

// The public statistics from the kernels' ones, into the workspace's head (no host sync).
__global__ void __launch_bounds__(1) advantage_finish_kernel(const advantage_device_stats* d, std::int64_t groups,
                                                            bool has_log_ratio, advantage_stats* out) {
  advantage_stats st;
  st.groups = groups;
  st.reward_mean = d->reward_mean;
  st.reward_std = d->reward_std;
  st.ess = d->ess;
  st.ess_ratio = d->ess_ratio;
  st.lr_factor = has_log_ratio ? d->lr_factor : 1.0;
  st.zero_variance_groups = static_cast<std::int64_t>(d->zero_variance_groups);
  st.singleton_groups = static_cast<std::int64_t>(d->singleton_groups);
  st.adv_mean = d->adv_mean;
  st.adv_std = d->adv_std;
  st.excluded_seqs = static_cast<std::int64_t>(d->excluded_seqs);
  *out = st;
}

}  // namespace grpokit::detail

namespace grpokit::device {

// The advantages and seq_mask (device spans) without blocking the host: the statistics and the
// status stay in the workspace (read_advantage_stats, results_of). A null workspace only sets
// workspace_bytes.
template <class P>
void compute_advantages_async(const advantage_inputs<accum_t<P>>& in, const advantage_config& cfg,
                              const advantage_outputs<accum_t<P>>& out, void* workspace, std::size_t& workspace_bytes,
                              cudaStream_t stream = 0) {
  using Real = accum_t<P>;
  using B = typename P::baseline_type;
  const std::int64_t S = in.rewards.size();
  detail::require_advantage_shapes(in, cfg, out, detail::needs_log_ratio<B>::value,
                                   detail::needs_group_baseline<B>::value);
  const shape sh{0, 0, S};
  const auto opened = detail::open_workspace<P>(workspace, workspace_bytes, sh);
  if (!opened) return;  // the size query
  const detail::layout<P>& ws = *opened;
  detail::reset_status(ws.st, stream);
  GRPOKIT_CUDA_CHECK(cudaMemsetAsync(ws.adv_stats, 0, sizeof(detail::advantage_device_stats), stream));
  const std::int64_t G = in.group_offsets.size() - 1;
  constexpr int threads = tuning::group_threads;
  detail::advantage_batch_kernel<Real><<<1, 1, 0, stream>>>(in, cfg, ws.adv_scratch, ws.adv_stats, ws.st);
  GRPOKIT_CUDA_CHECK_LAUNCH();
  if (G > 0) {
    detail::advantage_group_kernel<B, Real>
        <<<tuning::blocks_for(G, threads), threads, 0, stream>>>(in, cfg, ws.adv_scratch, ws.adv_keep, ws.adv_stats);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  if (S > 0) {
    detail::advantage_output_kernel<Real><<<tuning::blocks_for(S, threads), threads, 0, stream>>>(
        in, cfg, ws.adv_scratch, ws.adv_keep, ws.adv_stats, out, ws.st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  detail::advantage_moments_kernel<Real><<<1, 1, 0, stream>>>(out, ws.adv_stats);
  GRPOKIT_CUDA_CHECK_LAUNCH();
  detail::advantage_finish_kernel<<<1, 1, 0, stream>>>(ws.adv_stats, G, !in.seq_log_ratio.empty(), ws.adv_result);
  GRPOKIT_CUDA_CHECK_LAUNCH();
}

// compute_advantages_async, then read_advantage_stats: synchronises the stream to return.
template <class P>
advantage_stats compute_advantages(const advantage_inputs<accum_t<P>>& in, const advantage_config& cfg,
                                   const advantage_outputs<accum_t<P>>& out, void* workspace,
                                   std::size_t workspace_bytes, cudaStream_t stream = 0) {
  GRPOKIT_REQUIRE(workspace != nullptr, "workspace is null (allocate device::workspace_bytes)");
  compute_advantages_async<P>(in, cfg, out, workspace, workspace_bytes, stream);
  return read_advantage_stats(workspace, stream);
}

}  // namespace grpokit::device
