#pragma once
// grpokit::device::policy_loss: the shared per-sequence math of detail/policy_terms.hpp with a
// thread per sequence, integer counts, and the per-sequence partials combined by the same fixed
// pairwise tree as the host (detail::tree_reduce), so the result does not depend on the launch.
#include <cstdint>
#include <cuda_runtime.h>

#include "../config.hpp"
#include "../detail/loss_partial.hpp"
#include "../detail/policy_terms.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../math/ops.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "error.cuh"
#include "status.cuh"
#include "workspace.cuh"

namespace grpokit::device {

namespace detail {

template <class P>
using terms_for = grpokit::detail::policy_terms<P, math::ops_for<P::order>>;

// Offsets of sequence s are usable: 0 <= off[s] <= off[s+1] <= T (and off[0] == 0, off[S] == T).
template <class Real>
__device__ inline bool sequence_ok(const rollout_batch<Real>& b, std::int64_t s, std::int64_t T) {
  const std::int64_t S = b.seq_offsets.size() - 1;
  const std::int64_t lo = b.seq_offsets[s], hi = b.seq_offsets[s + 1];
  return lo >= 0 && lo <= hi && hi <= T && (s != 0 || lo == 0) && (s != S - 1 || hi == T);
}

template <class P>
__global__ void summarize_kernel(current_policy<accum_t<P>> cur, rollout_batch<accum_t<P>> batch, loss_config cfg,
                                 typename terms_for<P>::sequence_summary* out, long long* counts, status* st) {
  using Real = accum_t<P>;
  const std::int64_t s = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t S = batch.seq_offsets.size() - 1;
  if (s >= S) return;
  const std::int64_t T = cur.logp.size();
  typename terms_for<P>::sequence_summary q;
  if (!sequence_ok(batch, s, T)) {
    flag_error(&st->bad_offsets, s);
    out[s] = q;
    return;
  }
  if (cfg.check_finite) {
    for (std::int64_t t = batch.seq_offsets[s]; t < batch.seq_offsets[s + 1]; ++t) {
      const Real v = cur.logp[t];
      const bool pruned = P::vocab_prune && v == -INFINITY;
      bool ok = pruned || isfinite(v);
      if (!cur.entropy.empty()) ok = ok && isfinite(cur.entropy[t]);
      if (!batch.logp_old.empty()) ok = ok && isfinite(batch.logp_old[t]);
      if (!batch.logp_ref.empty()) ok = ok && isfinite(batch.logp_ref[t]);
      if (!batch.logp_rollout.empty()) ok = ok && isfinite(batch.logp_rollout[t]);
      if (!ok) flag_error(&st->non_finite, t);
    }
  }
  if (!isfinite(batch.adv[s])) flag_error(&st->non_finite_seq, s);
  const terms_for<P> terms{cur, batch, cfg};
  q = terms.summarize(s);
  out[s] = q;
  atomicAdd(reinterpret_cast<unsigned long long*>(&counts[0]), static_cast<unsigned long long>(q.counted));
  atomicAdd(reinterpret_cast<unsigned long long*>(&counts[1]), static_cast<unsigned long long>(q.counted > 0));
}

template <class P>
__global__ void accumulate_kernel(current_policy<accum_t<P>> cur, rollout_batch<accum_t<P>> batch, loss_config cfg,
                                  const typename terms_for<P>::sequence_summary* summaries, const long long* counts,
                                  policy_grads<accum_t<P>> grads, grpokit::detail::loss_partial* partials) {
  const std::int64_t s = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t S = batch.seq_offsets.size() - 1;
  if (s >= S) return;
  partials[s] = grpokit::detail::loss_partial{};
  if (!sequence_ok(batch, s, cur.logp.size())) return;
  const terms_for<P> terms{cur, batch, cfg};
  partials[s] = terms.accumulate_sequence(s, summaries[s], terms.token_count(counts[0]), terms.seq_count(counts[1]),
                                          grads);
}

// One level of detail::tree_reduce: items[i] = combine(items[i], items[i + stride]), i % (2 stride) == 0.
template <class Partial>
__global__ void tree_level_kernel(Partial* items, std::int64_t n, std::int64_t stride) {
  const std::int64_t i = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 2 * stride;
  if (i + stride < n) items[i] = grpokit::detail::combine(items[i], items[i + stride]);
}

template <class P>
void check_policy_shapes(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                         const loss_config& cfg, const policy_grads<accum_t<P>>& grads) {
  grpokit::detail::require_loss_config(cfg);
  grpokit::detail::require_policy_shapes<P::trust_region || P::importance_mask>(cur, batch, cfg, grads);
}

// Launches the loss kernels; the combined partial lands in ws.partials[0], the counts in ws.counts.
template <class P>
void launch_policy_loss(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                        const loss_config& cfg, const policy_grads<accum_t<P>>& grads, const layout<P>& ws,
                        cudaStream_t stream) {
  const std::int64_t S = batch.seq_offsets.size() - 1;
  GRPOKIT_CUDA_CHECK(cudaMemsetAsync(ws.counts, 0, 2 * sizeof(long long), stream));
  GRPOKIT_CUDA_CHECK(cudaMemsetAsync(ws.partials, 0, sizeof(grpokit::detail::loss_partial), stream));
  if (S == 0) {
    const grpokit::detail::loss_partial empty{};
    GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(ws.partials, &empty, sizeof(empty), cudaMemcpyHostToDevice, stream));
    GRPOKIT_CUDA_CHECK(cudaStreamSynchronize(stream));  // `empty` lives on this stack frame
    return;
  }
  using summary_t = typename terms_for<P>::sequence_summary;
  auto* summaries = reinterpret_cast<summary_t*>(ws.summaries);
  const unsigned threads = 128, blocks = static_cast<unsigned>((S + threads - 1) / threads);
  summarize_kernel<P><<<blocks, threads, 0, stream>>>(cur, batch, cfg, summaries, ws.counts, ws.st);
  GRPOKIT_CUDA_CHECK_LAUNCH();
  accumulate_kernel<P><<<blocks, threads, 0, stream>>>(cur, batch, cfg, summaries, ws.counts, grads, ws.partials);
  GRPOKIT_CUDA_CHECK_LAUNCH();
  for (std::int64_t stride = 1; stride < S; stride *= 2) {
    const std::int64_t pairs = (S + 2 * stride - 1) / (2 * stride);
    tree_level_kernel<<<static_cast<unsigned>((pairs + threads - 1) / threads), threads, 0, stream>>>(ws.partials, S,
                                                                                                      stride);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
}

// Copies the combined partial back (synchronises), checks the status, and builds the result.
template <class P>
loss_result collect_result(const loss_config& cfg, const layout<P>& ws, cudaStream_t stream) {
  grpokit::detail::loss_partial total;
  long long counts[2] = {0, 0};
  GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(&total, ws.partials, sizeof(total), cudaMemcpyDeviceToHost, stream));
  GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(counts, ws.counts, sizeof(counts), cudaMemcpyDeviceToHost, stream));
  throw_if_error(read_status(ws.st, stream));  // synchronises
  return grpokit::detail::finish(total, counts[0], cfg);
}

}  // namespace detail

// The loss, dlogp / dentropy (device spans) and the metrics; synchronises the stream to return.
template <class P>
loss_result policy_loss(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                        const loss_config& cfg, const policy_grads<accum_t<P>>& grads, void* workspace,
                        std::size_t workspace_bytes, cudaStream_t stream = 0) {
  detail::check_policy_shapes<P>(cur, batch, cfg, grads);
  const detail::layout<P> ws(workspace, workspace_bytes, shape{0, 0, batch.seq_offsets.size() - 1});
  detail::reset_status(ws.st, stream);
  detail::launch_policy_loss<P>(cur, batch, cfg, grads, ws, stream);
  return detail::collect_result<P>(cfg, ws, stream);
}

}  // namespace grpokit::device
