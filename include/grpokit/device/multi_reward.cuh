#pragma once
// grpokit::device::compute_advantages_multi: several rewards per rollout (GDPO), the host's
// definition (host/multi_reward.hpp) on the device: each reward's column through the kernels of
// compute_advantages, the weighted sum and the AND of the masks by a kernel, the whitening by the
// kernels of compute_advantages with the external baseline b = 0, then the moments over the mask.
#include <cstdint>
#include <cuda_runtime.h>

#include "../baseline.hpp"
#include "../config.hpp"
#include "../detail/multi_reward.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "advantages.cuh"
#include "error.cuh"
#include "results.cuh"
#include "status.cuh"
#include "tuning.cuh"
#include "workspace.cuh"

namespace grpokit::detail {

// After the inner calls' workspace (the larger of the two layouts): the column being processed,
// its advantages and mask, the running sum and mask, and the zero baselines of the whitening.
template <class Real>
struct multi_reward_buffers {
  Real *reward = nullptr, *part = nullptr;
  std::uint8_t *keep = nullptr, *keep_all = nullptr;
  double* sum = nullptr;
  Real* zeros = nullptr;
  multi_reward_buffers(carver& c, std::int64_t S, std::int64_t G) {
    reward = c.take<Real>(S);
    part = c.take<Real>(S);
    keep = c.take<std::uint8_t>(S);
    keep_all = c.take<std::uint8_t>(S);
    sum = c.take<double>(S);
    zeros = c.take<Real>(G);
  }
};

template <class P>
std::size_t multi_reward_prefix(std::int64_t S) {
  using W = typename P::template with_baseline<baseline::external>;
  const device::shape sh{0, 0, S};
  const std::size_t a = layout<P>(nullptr, 0, sh, true).used, b = layout<W>(nullptr, 0, sh, true).used;
  return a > b ? a : b;
}

template <class Real>
__global__ void __launch_bounds__(device::tuning::group_threads)
    multi_reward_column_kernel(matrix_view<const Real> rewards, std::int64_t k, Real* column) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rewards.rows) column[i] = rewards.row(i)[k];
}

// sum += w part and keep_all &= keep (first: sum = w part, keep_all = keep); last: the sum in Real.
template <class Real>
__global__ void __launch_bounds__(device::tuning::group_threads)
    multi_reward_add_kernel(std::int64_t S, double w, bool first, bool last, const Real* part, const std::uint8_t* keep,
                            double* sum, std::uint8_t* keep_all, Real* total) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= S) return;
  const double s = (first ? 0.0 : sum[i]) + w * static_cast<double>(part[i]);
  sum[i] = s;
  keep_all[i] = first ? keep[i] : static_cast<std::uint8_t>(keep_all[i] && keep[i]);
  if (last) total[i] = static_cast<Real>(s);
}

template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(device::tuning::group_threads)
    multi_reward_mask_kernel(std::int64_t S, const std::uint8_t* keep_all, std::uint8_t* seq_mask) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < S) seq_mask[i] = keep_all[i];
}

}  // namespace grpokit::detail

namespace grpokit::device {

// The advantages and seq_mask (device spans) of several rewards per rollout (rewards [S, K] in
// device memory, the weights in host memory), without blocking the host: the statistics and the
// status stay in the workspace (read_advantage_stats). A null workspace only sets workspace_bytes.
template <class P>
void compute_advantages_multi_async(const multi_reward_inputs<accum_t<P>>& in, const advantage_config& cfg,
                                    const advantage_outputs<accum_t<P>>& out, void* workspace,
                                    std::size_t& workspace_bytes, cudaStream_t stream = 0) {
  static_assert(detail::check_multi_reward_baseline<P>());
  using Real = accum_t<P>;
  using W = typename P::template with_baseline<baseline::external>;
  detail::require_multi_reward_shapes(in, out);
  detail::require_advantage_config(cfg);
  const std::int64_t S = in.rewards.rows, K = in.rewards.cols, G = in.group_offsets.size() - 1;
  const std::size_t prefix = detail::multi_reward_prefix<P>(S);
  detail::carver sizing(nullptr, 0);
  (void)detail::multi_reward_buffers<Real>(sizing, S, G > 0 ? G : 0);
  const std::size_t need = prefix + sizing.used() + detail::workspace_alignment - 1;
  if (workspace == nullptr) {
    workspace_bytes = need;
    return;
  }
  GRPOKIT_REQUIRE(workspace_bytes >= need, "workspace too small: ", workspace_bytes, " bytes, needs ", need,
                  " (query it with a null workspace)");
  const detail::layout<P> ws(workspace, workspace_bytes, shape{0, 0, S});
  const detail::layout<W> wsw(workspace, workspace_bytes, shape{0, 0, S});
  const std::size_t lost = static_cast<std::size_t>(ws.base - static_cast<char*>(workspace));
  detail::carver c(ws.base + prefix, workspace_bytes - lost - prefix);
  const detail::multi_reward_buffers<Real> buf(c, S, G > 0 ? G : 0);
  // every inner call's shapes, before anything is queued
  const advantage_inputs<Real> column{{buf.reward, S}, in.group_offsets, {}, {}, {}, in.seq_tokens};
  const advantage_outputs<Real> part{{buf.part, S}, {buf.keep, S}};
  const advantage_inputs<Real> total{{buf.reward, S}, in.group_offsets, {}, {}, {buf.zeros, G > 0 ? G : 0},
                                     in.seq_tokens};
  detail::require_advantage_call<P>(column, detail::component_config(cfg), part);
  detail::require_advantage_call<W>(total, detail::whitening_config(cfg), out);

  detail::reset_status(ws.st, stream);
  if (G > 0) GRPOKIT_CUDA_CHECK(cudaMemsetAsync(buf.zeros, 0, static_cast<std::size_t>(G) * sizeof(Real), stream));
  constexpr int threads = tuning::group_threads;
  const unsigned blocks = tuning::blocks_for(S > 0 ? S : 1, threads);
  for (std::int64_t k = 0; k < K; ++k) {
    if (S > 0) {
      detail::multi_reward_column_kernel<Real><<<blocks, threads, 0, stream>>>(in.rewards, k, buf.reward);
      GRPOKIT_CUDA_CHECK_LAUNCH();
    }
    detail::launch_advantages<P>(column, detail::component_config(cfg), part, ws, stream);
    if (S > 0) {
      const double w = in.weights.empty() ? 1.0 : in.weights[k];
      detail::multi_reward_add_kernel<Real><<<blocks, threads, 0, stream>>>(
          S, w, k == 0, k == K - 1, buf.part, buf.keep, buf.sum, buf.keep_all, buf.reward);
      GRPOKIT_CUDA_CHECK_LAUNCH();
    }
  }
  detail::launch_advantages<W>(total, detail::whitening_config(cfg), out, wsw, stream);
  if (S > 0) {  // the mask every reward keeps, and the moments over it
    detail::multi_reward_mask_kernel<<<blocks, threads, 0, stream>>>(S, buf.keep_all, out.seq_mask.data());
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  detail::advantage_moments_kernel<Real><<<1, tuning::batch_threads, 0, stream>>>(out, wsw.adv_stats);
  GRPOKIT_CUDA_CHECK_LAUNCH();
  detail::advantage_finish_kernel<<<1, 1, 0, stream>>>(wsw.adv_stats, G, false, wsw.adv_result);
  GRPOKIT_CUDA_CHECK_LAUNCH();
}

// compute_advantages_multi_async, then read_advantage_stats: synchronises the stream to return.
template <class P>
advantage_stats compute_advantages_multi(const multi_reward_inputs<accum_t<P>>& in, const advantage_config& cfg,
                                         const advantage_outputs<accum_t<P>>& out, void* workspace,
                                         std::size_t workspace_bytes, cudaStream_t stream = 0) {
  GRPOKIT_REQUIRE(workspace != nullptr, "workspace is null (query compute_advantages_multi_async's size)");
  compute_advantages_multi_async<P>(in, cfg, out, workspace, workspace_bytes, stream);
  return read_advantage_stats(workspace, stream);
}

}  // namespace grpokit::device
