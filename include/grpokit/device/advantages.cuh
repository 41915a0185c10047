#pragma once
// grpokit::device::compute_advantages: the shared math of detail/advantage_terms.hpp and the
// baselines' center_with, scheduled as: a thread per rollout to load and check the inputs; one
// block for the batch statistics; a thread per group of at most tuning::small_group_max rollouts
// (serial_ops: the host's order) and a block per larger group (block_ops: fixed-order
// block reductions, radix selection for the median); a thread per rollout for the advantages; one
// block for their moments (and, before the advantages, one for adv_scale::whiten's batch shift).
// Nothing synchronises the host but compute_advantages' return.
#include <cstdint>
#include <cuda_runtime.h>

#include "../config.hpp"
#include "../detail/advantage_terms.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "detail/block_ops.cuh"
#include "error.cuh"
#include "results.cuh"
#include "status.cuh"
#include "tuning.cuh"
#include "workspace.cuh"

namespace grpokit::detail {

// Scratch (double [S] each, in ws.adv_scratch): r, log_ratio, weight, centered, divisor, tokens.
struct advantage_scratch {
  double* base;
  std::int64_t S;
  __device__ double* rewards() const { return base; }
  __device__ double* log_ratio() const { return base + S; }
  __device__ double* weight() const { return base + 2 * S; }
  __device__ double* centered() const { return base + 3 * S; }
  __device__ double* divisor() const { return base + 4 * S; }
  __device__ double* tokens() const { return base + 5 * S; }
  // the divisors' space is a group's scratch until process_group writes them
  __device__ advantage_arrays arrays(std::uint8_t* keep) const {
    return {rewards(), log_ratio(), weight(), tokens(), centered(), keep, divisor(), divisor()};
  }
};

// A thread per rollout (and per group): the inputs into the scratch in double, every bad value
// and offset flagged.
template <class Real>
__global__ void __launch_bounds__(device::tuning::group_threads)
    advantage_check_kernel(advantage_inputs<Real> in, advantage_scratch sc, advantage_device_stats* stats,
                           device::status* st) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t S = in.rewards.size(), G = in.group_offsets.size() - 1;
  if (i < S) {
    const double r = sc.rewards()[i] = in.rewards[i];
    if (!isfinite(r)) flag_error(&st->non_finite_seq, i);
    if (!in.seq_log_ratio.empty()) {
      const double lr = sc.log_ratio()[i] = in.seq_log_ratio[i];
      if (!isfinite(lr)) flag_error(&st->non_finite_seq, i);
    }
    // the weights of the baseline and the whitening: finite and >= 0
    auto load_weight = [&](span<const Real> x, double* to) {
      if (x.empty()) return;
      const double w = to[i] = x[i];
      if (!(w >= 0) || !isfinite(w)) flag_error(&st->bad_value, i);
    };
    load_weight(in.seq_weight, sc.weight());
    load_weight(in.seq_tokens, sc.tokens());
  }
  if (i == 0 && G == 0 && (in.group_offsets[0] != 0 || S != 0)) {  // no groups: no rollouts either
    flag_error(&st->bad_offsets, 0);
    atomicExch(&stats->offsets_bad, 1ull);
  }
  if (i < G) {
    if (i < in.group_baseline.size() && !isfinite(static_cast<double>(in.group_baseline[i])))
      flag_error(&st->bad_value, i);
    const bool bad = !(in.group_offsets[i + 1] > in.group_offsets[i]) || (i == 0 && in.group_offsets[0] != 0) ||
                     (i == G - 1 && in.group_offsets[G] != S);
    if (bad) {
      flag_error(&st->bad_offsets, i);
      atomicExch(&stats->offsets_bad, 1ull);
    }
  }
}

// One block: reward moments, the batch divisor, VCPO's ESS.
template <class Real>
__global__ void __launch_bounds__(device::tuning::batch_threads)
    advantage_batch_kernel(advantage_inputs<Real> in, advantage_config cfg, advantage_scratch sc,
                           advantage_device_stats* stats_out) {
  __shared__ typename block_ops<device::tuning::batch_threads>::storage shared;
  const block_ops<device::tuning::batch_threads> ops{&shared};
  advantage_stats stats;
  double batch_div = 0;
  batch_reward_stats(sc.rewards(), in.seq_log_ratio.empty() ? nullptr : sc.log_ratio(), in.rewards.size(), cfg,
                     stats, batch_div, ops);
  if (threadIdx.x != 0) return;
  stats_out->reward_mean = stats.reward_mean;
  stats_out->reward_std = stats.reward_std;
  stats_out->batch_divisor = batch_div;
  stats_out->ess = stats.ess;
  stats_out->ess_ratio = stats.ess_ratio;
  stats_out->lr_factor = stats.lr_factor;
  stats_out->whiten_shift = 0;  // adv_scale::whiten: advantage_whiten_kernel's
  stats_out->whiten_divisor = 1;
}

// The groups that a block takes: more than small_group_max rollouts, where the baseline can run on
// a block (center_with for block_ops).
template <class B>
constexpr std::int64_t small_group_limit =
    has_center_with<B, block_ops<device::tuning::large_group_threads>>::value ? device::tuning::small_group_max
                                                                             : INT64_MAX;

// A thread per group: the small ones here, the large ones listed for the block kernel.
template <class B, class Real>
__global__ void __launch_bounds__(device::tuning::group_threads)
    advantage_group_kernel(advantage_inputs<Real> in, advantage_config cfg, advantage_scratch sc, std::uint8_t* keep,
                           std::int64_t* large, advantage_device_stats* stats) {
  const std::int64_t g = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t S = in.rewards.size(), G = in.group_offsets.size() - 1;
  if (g >= G || stats->offsets_bad) return;  // bad offsets: reported, nothing read out of bounds
  group_io io = group_view(sc.arrays(keep), in, cfg, g);
  if (io.n > small_group_limit<B>) {
    large[atomicAdd(&stats->large_groups, 1ull)] = g;  // any order: each group's result is its own
    return;
  }
  const bool zero_variance = process_group<B>(io, cfg, stats->batch_divisor,
                                              static_cast<double>(S) / static_cast<double>(G),
                                              sc.divisor() + in.group_offsets[g]);
  atomicAdd(&stats->zero_variance_groups, zero_variance ? 1ull : 0ull);
  atomicAdd(&stats->singleton_groups, io.n == 1 ? 1ull : 0ull);
}

// A block per large group, the blocks taking the listed groups in turn.
template <class B, class Real>
__global__ void __launch_bounds__(device::tuning::large_group_threads)
    advantage_large_group_kernel(advantage_inputs<Real> in, advantage_config cfg, advantage_scratch sc,
                                 std::uint8_t* keep, const std::int64_t* large, advantage_device_stats* stats) {
  constexpr int threads = device::tuning::large_group_threads;
  __shared__ typename block_ops<threads>::storage shared;
  const block_ops<threads> ops{&shared};
  const std::int64_t S = in.rewards.size(), G = in.group_offsets.size() - 1;
  if (stats->offsets_bad) return;
  const auto count = static_cast<std::int64_t>(stats->large_groups);
  for (std::int64_t j = blockIdx.x; j < count; j += gridDim.x) {
    const std::int64_t g = large[j];
    group_io io = group_view(sc.arrays(keep), in, cfg, g);
    const bool zero_variance =
        process_group<B>(io, cfg, stats->batch_divisor, static_cast<double>(S) / static_cast<double>(G),
                         sc.divisor() + in.group_offsets[g], ops);
    if (threadIdx.x == 0 && zero_variance) atomicAdd(&stats->zero_variance_groups, 1ull);
  }
}

// One block: adv_scale::whiten's shift and divisor of the whole batch, once every group is centred.
template <class Real>
__global__ void __launch_bounds__(device::tuning::batch_threads)
    advantage_whiten_kernel(advantage_inputs<Real> in, advantage_config cfg, advantage_scratch sc,
                            advantage_device_stats* stats) {
  __shared__ typename block_ops<device::tuning::batch_threads>::storage shared;
  if (stats->offsets_bad) return;
  const batch_shift b = whiten_stats(sc.centered(), in.seq_tokens.empty() ? nullptr : sc.tokens(), in.rewards.size(),
                                     cfg, block_ops<device::tuning::batch_threads>{&shared});
  if (threadIdx.x != 0) return;
  stats->whiten_shift = b.shift;
  stats->whiten_divisor = b.divisor;
}

template <class Real>
__global__ void __launch_bounds__(device::tuning::group_threads)
    advantage_output_kernel(advantage_inputs<Real> in, advantage_config cfg, advantage_scratch sc,
                            const std::uint8_t* keep, const advantage_device_stats* stats, advantage_outputs<Real> out,
                            device::status* st) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= in.rewards.size()) return;
  if (stats->offsets_bad) {
    out.adv[i] = Real(0);
    out.seq_mask[i] = 0;
    return;
  }
  const double fold = cfg.fold_lr_factor ? stats->lr_factor : 1.0;
  const double centered = sc.centered()[i] - stats->whiten_shift, divisor = sc.divisor()[i] * stats->whiten_divisor;
  const double a = detail::advantage_value(centered, divisor, fold, cfg);
  if (!isfinite(a)) flag_error(&st->non_finite_seq, i);
  out.adv[i] = static_cast<Real>(a);
  out.seq_mask[i] = keep[i];
}

// One block: mean and std of the kept advantages.
template <class Real>
__global__ void __launch_bounds__(device::tuning::batch_threads)
    advantage_moments_kernel(advantage_outputs<Real> out, advantage_device_stats* stats) {
  __shared__ typename block_ops<device::tuning::batch_threads>::storage shared;
  advantage_stats st;
  detail::advantage_moments(out.adv.data(), out.seq_mask.data(), out.adv.size(), st,
                            block_ops<device::tuning::batch_threads>{&shared});
  if (threadIdx.x != 0) return;
  stats->adv_mean = st.adv_mean;
  stats->adv_std = st.adv_std;
  stats->excluded_seqs = static_cast<unsigned long long>(st.excluded_seqs);
}

// The public statistics from the kernels' ones, into the workspace's head (no host sync).
template <int = 0>  // a template: defined once in a program, whichever units include this header
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

// compute_advantages' shapes and configuration for policy P's baseline (checked on the host).
template <class P>
void require_advantage_call(const advantage_inputs<accum_t<P>>& in, const advantage_config& cfg,
                            const advantage_outputs<accum_t<P>>& out) {
  using B = typename P::baseline_type;
  require_advantage_shapes(in, cfg, out, needs_log_ratio<B>::value, needs_group_baseline<B>::value,
                           needs_seq_tokens<B>::value);
}

// The kernels of compute_advantages on a workspace whose status was reset (the status is not reset
// here: compute_advantages_multi makes several calls whose errors all count).
template <class P>
void launch_advantages(const advantage_inputs<accum_t<P>>& in, const advantage_config& cfg,
                       const advantage_outputs<accum_t<P>>& out, const layout<P>& ws, cudaStream_t stream) {
  using Real = accum_t<P>;
  using B = typename P::baseline_type;
  namespace tuning = device::tuning;
  const std::int64_t S = in.rewards.size();
  GRPOKIT_CUDA_CHECK(cudaMemsetAsync(ws.adv_stats, 0, sizeof(detail::advantage_device_stats), stream));
  const std::int64_t G = in.group_offsets.size() - 1;
  const detail::advantage_scratch sc{ws.adv_scratch, S};
  constexpr int threads = tuning::group_threads;
  detail::advantage_check_kernel<Real>
      <<<tuning::blocks_for(S > G ? S : (G > 0 ? G : 1), threads), threads, 0, stream>>>(in, sc, ws.adv_stats, ws.st);
  GRPOKIT_CUDA_CHECK_LAUNCH();
  detail::advantage_batch_kernel<Real><<<1, tuning::batch_threads, 0, stream>>>(in, cfg, sc, ws.adv_stats);
  GRPOKIT_CUDA_CHECK_LAUNCH();
  if (G > 0) {
    detail::advantage_group_kernel<B, Real><<<tuning::blocks_for(G, threads), threads, 0, stream>>>(
        in, cfg, sc, ws.adv_keep, ws.adv_large, ws.adv_stats);
    GRPOKIT_CUDA_CHECK_LAUNCH();
    if constexpr (detail::small_group_limit<B> != INT64_MAX) {
      const unsigned blocks = static_cast<unsigned>(G < tuning::large_group_blocks ? G : tuning::large_group_blocks);
      detail::advantage_large_group_kernel<B, Real><<<blocks, tuning::large_group_threads, 0, stream>>>(
          in, cfg, sc, ws.adv_keep, ws.adv_large, ws.adv_stats);
      GRPOKIT_CUDA_CHECK_LAUNCH();
    }
  }
  if (cfg.scale == adv_scale::whiten) {
    detail::advantage_whiten_kernel<Real><<<1, tuning::batch_threads, 0, stream>>>(in, cfg, sc, ws.adv_stats);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  if (S > 0) {
    detail::advantage_output_kernel<Real><<<tuning::blocks_for(S, threads), threads, 0, stream>>>(
        in, cfg, sc, ws.adv_keep, ws.adv_stats, out, ws.st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  detail::advantage_moments_kernel<Real><<<1, tuning::batch_threads, 0, stream>>>(out, ws.adv_stats);
  GRPOKIT_CUDA_CHECK_LAUNCH();
  detail::advantage_finish_kernel<<<1, 1, 0, stream>>>(ws.adv_stats, G, !in.seq_log_ratio.empty(), ws.adv_result);
  GRPOKIT_CUDA_CHECK_LAUNCH();
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
  detail::require_advantage_call<P>(in, cfg, out);
  const shape sh{0, 0, in.rewards.size()};
  const auto opened = detail::open_workspace<P>(workspace, workspace_bytes, sh);
  if (!opened) return;  // the size query
  const detail::layout<P>& ws = *opened;
  detail::reset_status(ws.st, stream);
  detail::launch_advantages<P>(in, cfg, out, ws, stream);
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
