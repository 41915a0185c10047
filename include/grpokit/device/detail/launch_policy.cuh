#pragma once
// The kernels and launcher of policy_loss (shared by fused_loss and fused_linear_loss): the shared
// per-sequence math of detail/policy_terms.hpp with a thread per sequence, integer counts, and the
// per-sequence partials combined by the same fixed pairwise tree as the host (detail::tree_reduce),
// so the result does not depend on the launch.
#include <cstdint>
#include <utility>
#include <cuda_runtime.h>

#include "../../config.hpp"
#include "../../detail/loss_partial.hpp"
#include "../../detail/policy_terms.hpp"
#include "../../detail/select.hpp"
#include "../../detail/validate.hpp"
#include "../../inputs.hpp"
#include "../../math/ops.hpp"
#include "../../metrics.hpp"
#include "../../policy.hpp"
#include "../error.cuh"
#include "../status.cuh"
#include "../tuning.cuh"
#include "../workspace.cuh"

namespace grpokit::detail {

// What the batch pass left in ws.batch and the selections in ws.select, or the defaults without
// them (the slots are then unwritten).
__device__ inline batch_stats batch_stats_at(const loss_partial* whole, const select_run* sel,
                                             const loss_config& cfg) {
  batch_stats b = needs_batch_pass(cfg) ? batch_stats_of(*whole, cfg) : batch_stats{};
  if (needs_selection(cfg, selection::entropy_quantile))
    b.entropy_threshold = quantile_value(sel[static_cast<int>(selection::entropy_quantile)], 1 - cfg.top_entropy_quantile);
  if (needs_selection(cfg, selection::covariance)) set_covariance(b, sel[static_cast<int>(selection::covariance)]);
  return b;
}

// The loss's terms in a kernel: the rank's first sequence in the batch and M2PO's limit from its
// selection (`sel`; null: none yet, while M2PO's own selection runs).
template <class P>
__device__ terms_for<P> terms_at(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                                 const loss_config& cfg, std::int64_t first_seq, const select_run* sel) {
  const bool m2po = sel != nullptr && needs_selection(cfg, selection::m2po);
  return {cur, batch, cfg, first_seq, m2po ? m2po_limit(sel[static_cast<int>(selection::m2po)]) : INFINITY};
}

template <class P>
__global__ void __launch_bounds__(device::tuning::sequence_threads)
    summarize_kernel(current_policy<accum_t<P>> cur, rollout_batch<accum_t<P>> batch, loss_config cfg,
                     const select_run* sel, typename terms_for<P>::sequence_summary* out, long long* counts,
                     detail::loss_partial* batch_parts, device::status* st) {
  using Real = accum_t<P>;
  const std::int64_t s = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t S = batch.seq_offsets.size() - 1;
  if (s >= S) return;
  const std::int64_t T = cur.logp.size();
  typename terms_for<P>::sequence_summary q;
  const bool batch_pass = detail::needs_batch_pass(cfg);
  if (batch_pass) batch_parts[s] = detail::loss_partial{};
  if (!segment_ok(batch.seq_offsets, s, T, true)) {
    flag_error(&st->bad_offsets, s);
    out[s] = q;
    return;
  }
  if (cfg.check_finite) {
    for (std::int64_t t = batch.seq_offsets[s]; t < batch.seq_offsets[s + 1]; ++t) {
      const Real v = cur.logp[t];
      const bool pruned = (P::vocab_prune || sampler_support(cfg)) && v == -INFINITY;
      bool ok = pruned || isfinite(v);
      if (!cur.entropy.empty()) ok = ok && isfinite(cur.entropy[t]);
      if (!batch.logp_old.empty()) ok = ok && isfinite(batch.logp_old[t]);
      if (!batch.logp_ref.empty()) ok = ok && isfinite(batch.logp_ref[t]);
      if (!batch.logp_rollout.empty()) ok = ok && isfinite(batch.logp_rollout[t]);
      if (!ok) flag_error(&st->non_finite, t);
    }
  }
  if (!isfinite(batch.adv[s])) flag_error(&st->non_finite_seq, s);
  if (!batch.token_adv.empty())  // checked always, as adv
    for (std::int64_t t = batch.seq_offsets[s]; t < batch.seq_offsets[s + 1]; ++t)
      if (!isfinite(batch.token_adv[t])) flag_error(&st->non_finite, t);
  const terms_for<P> terms = terms_at<P>(cur, batch, cfg, 0, sel);  // no positions needed
  q = terms.summarize(s);
  out[s] = q;
  if (batch_pass) batch_parts[s] = terms.batch_partial(s, q);
  atomicAdd(reinterpret_cast<unsigned long long*>(&counts[0]), static_cast<unsigned long long>(q.counted));
  atomicAdd(reinterpret_cast<unsigned long long*>(&counts[1]), static_cast<unsigned long long>(q.counted > 0));
}

template <class P>
__global__ void __launch_bounds__(device::tuning::sequence_threads)
    accumulate_kernel(current_policy<accum_t<P>> cur, rollout_batch<accum_t<P>> batch, loss_config cfg,
                      const typename terms_for<P>::sequence_summary* summaries, const long long* counts,
                      const detail::loss_partial* whole, const detail::select_run* sel,
                      policy_grads<accum_t<P>> grads, detail::loss_partial* partials) {
  const std::int64_t s = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t S = batch.seq_offsets.size() - 1;
  if (s >= S) return;
  partials[s] = detail::loss_partial{};
  if (!segment_ok(batch.seq_offsets, s, cur.logp.size(), true)) return;
  const terms_for<P> terms = terms_at<P>(cur, batch, cfg, counts[2], sel);
  const detail::batch_stats stats = batch_stats_at(whole, sel, cfg);
  partials[s] = terms.accumulate_sequence(s, summaries[s], terms.token_count(counts[0]), terms.seq_count(counts[1]),
                                          stats, grads);
}

// One level of detail::tree_reduce: items[i] = combine(items[i], items[i + stride]), i % (2 stride) == 0.
template <class Partial>
__global__ void __launch_bounds__(device::tuning::sequence_threads)
    tree_level_kernel(Partial* items, std::int64_t n, std::int64_t stride) {
  const std::int64_t i = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 2 * stride;
  if (i + stride < n) items[i] = detail::combine(items[i], items[i + stride]);
}

template <class P>
void check_policy_shapes(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                         const loss_config& cfg, const policy_grads<accum_t<P>>& grads) {
  detail::require_loss_config(cfg);
  detail::require_policy_shapes<P::trust_region || P::importance_mask>(cur, batch, cfg, grads);
}

template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(1) empty_partial_kernel(detail::loss_partial* out) { *out = detail::loss_partial{}; }

// The steps of launch_policy_loss, apart so that the data-parallel form (device/distributed.cuh)
// can sum the counts and the batch pass over the ranks between the first two and gather the
// partials after the second.
// summarize: the per-sequence summaries, the local counts (ws.counts) and, when the configuration
// needs a batch pass, its per-sequence partials (ws.partials).
template <class P>
void launch_summarize(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                      const loss_config& cfg, const layout<P>& ws, cudaStream_t stream) {
  const std::int64_t S = batch.seq_offsets.size() - 1;
  GRPOKIT_CUDA_CHECK(cudaMemsetAsync(ws.counts, 0, 3 * sizeof(long long), stream));
  if (S == 0) return;
  constexpr int threads = device::tuning::sequence_threads;
  summarize_kernel<P><<<device::tuning::blocks_for(S, threads), threads, 0, stream>>>(
      cur, batch, cfg, ws.select, ws.summaries, ws.counts, ws.partials, ws.st);
  GRPOKIT_CUDA_CHECK_LAUNCH();
}

// accumulate: the gradients and the per-sequence partials (ws.partials[s]) under the counts in ws.counts.
template <class P>
void launch_accumulate(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                       const loss_config& cfg, const policy_grads<accum_t<P>>& grads, const layout<P>& ws,
                       cudaStream_t stream) {
  const std::int64_t S = batch.seq_offsets.size() - 1;
  if (S == 0) return;
  constexpr int threads = device::tuning::sequence_threads;
  accumulate_kernel<P><<<device::tuning::blocks_for(S, threads), threads, 0, stream>>>(
      cur, batch, cfg, ws.summaries, ws.counts, ws.batch, ws.select, grads, ws.partials);
  GRPOKIT_CUDA_CHECK_LAUNCH();
}

// The fixed pairwise tree over partials[0, S) into partials[0] (the empty partial for S = 0, written
// on the device: nothing read from the host).
inline void launch_partials_tree(detail::loss_partial* partials, std::int64_t S, cudaStream_t stream) {
  if (S == 0) {
    empty_partial_kernel<<<1, 1, 0, stream>>>(partials);
    GRPOKIT_CUDA_CHECK_LAUNCH();
    return;
  }
  constexpr int threads = device::tuning::sequence_threads;
  for (std::int64_t stride = 1; stride < S; stride *= 2) {
    const std::int64_t pairs = (S + 2 * stride - 1) / (2 * stride);
    tree_level_kernel<<<device::tuning::blocks_for(pairs, threads), threads, 0, stream>>>(partials, S, stride);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
}

// The batch pass of one process: the fixed tree over the per-sequence partials summarize wrote,
// its total into ws.batch (ws.partials is free again for the loss).
template <class P>
void launch_batch_pass(const loss_config& cfg, std::int64_t S, const layout<P>& ws, cudaStream_t stream) {
  if (!detail::needs_batch_pass(cfg)) return;
  launch_partials_tree(ws.partials, S, stream);
  GRPOKIT_CUDA_CHECK(
      cudaMemcpyAsync(ws.batch, ws.partials, sizeof(detail::loss_partial), cudaMemcpyDeviceToDevice, stream));
}

// ---- the batch-wide selections (detail/select.hpp): quantile, covariance top-k, M2PO ---------

// The run's plan (the quantile's from the counts, KL-Cov's from the batch pass), and the first
// round's histogram zeroed (a kernel, not a memset, zeroes it between rounds too: one launch fewer
// per round, and the stream order without memset nodes).
template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(device::tuning::sequence_threads)
    select_init_kernel(selection which, const long long* counts, const loss_partial* whole, loss_config cfg,
                       select_run* runs, long long* hist) {
  for (int i = threadIdx.x; i < select_hist_size; i += blockDim.x) hist[i] = 0;
  if (threadIdx.x != 0) return;
  select_run& run = runs[static_cast<int>(which)];
  if (which == selection::entropy_quantile)
    run = quantile_run(counts[0], 1 - cfg.top_entropy_quantile);
  else if (which == selection::covariance)
    run = covariance_run(*whole, cfg);
  else
    run = m2po_run(cfg.m2po_threshold);
}

// One round's histogram of the local keys: a thread per sequence, the block's bins in shared
// memory, then added to `hist` (zeroed before).
template <class P>
__global__ void __launch_bounds__(device::tuning::sequence_threads)
    select_count_kernel(current_policy<accum_t<P>> cur, rollout_batch<accum_t<P>> batch, loss_config cfg,
                        selection which, const long long* counts, const loss_partial* whole,
                        const select_run* runs, unsigned long long* hist) {
  __shared__ unsigned long long bins[select_hist_size];
  for (int i = threadIdx.x; i < select_hist_size; i += blockDim.x) bins[i] = 0;
  __syncthreads();
  const std::int64_t s = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t S = batch.seq_offsets.size() - 1;
  if (s < S && segment_ok(batch.seq_offsets, s, cur.logp.size(), true)) {
    const select_run r = runs[static_cast<int>(which)];
    // M2PO's selection comes before the counts and the other selections
    const bool first = which == selection::m2po;
    const terms_for<P> terms = terms_at<P>(cur, batch, cfg, first ? 0 : counts[2], first ? nullptr : runs);
    // the means the covariance keys need
    const batch_stats stats = which == selection::covariance ? batch_stats_at(whole, runs, cfg) : batch_stats{};
    terms.for_each_selection_key(which, s, stats, [&](const select_key& key) {
      select_count(r, key, [&](int i, unsigned long long amount) { atomicAdd(&bins[i], amount); });
    });
  }
  __syncthreads();
  for (int i = threadIdx.x; i < select_hist_size; i += blockDim.x)
    if (bins[i] != 0) atomicAdd(&hist[i], bins[i]);
}

// The round's histograms of `ranks` ranks ([ranks][select_hist_size]) summed, the next digits, and
// this rank's histogram zeroed for the next round (`hists` may be it).
template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(1)
    select_step_kernel(const long long* hists, int ranks, select_run* run, long long* mine) {
  long long sum[select_hist_size];
  for (int i = 0; i < select_hist_size; ++i) {
    sum[i] = 0;
    for (int r = 0; r < ranks; ++r) sum[i] += hists[static_cast<std::int64_t>(r) * select_hist_size + i];
  }
  select_step(*run, sum);
  for (int i = 0; i < select_hist_size; ++i) mine[i] = 0;
}

// The selections the loss pass needs, after the counts (ws.counts: the whole batch's) and the
// batch pass (ws.batch); M2PO's comes before both (selections_first).
inline constexpr selection selections_first[] = {selection::m2po};
inline constexpr selection selections_after[] = {selection::entropy_quantile, selection::covariance};

// The rounds of the selections `which` the configuration needs over the sequences of this process.
// `summed()` makes each round's histogram (ws.select_hist) the whole batch's and returns where the
// ranks' histograms lie and how many there are (this one's in one process).
template <class P, class Which, class Summed>
void launch_selections(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                       const loss_config& cfg, const layout<P>& ws, cudaStream_t stream, const Which& selections,
                       Summed&& summed) {
  const std::int64_t S = batch.seq_offsets.size() - 1;
  constexpr int threads = device::tuning::sequence_threads;
  for (const selection which : selections) {
    if (!needs_selection(cfg, which)) continue;
    select_init_kernel<<<1, threads, 0, stream>>>(which, ws.counts, ws.batch, cfg, ws.select, ws.select_hist);
    GRPOKIT_CUDA_CHECK_LAUNCH();
    for (int round = 0; round < selection_rounds(which); ++round) {
      if (S > 0) {
        select_count_kernel<P><<<device::tuning::blocks_for(S, threads), threads, 0, stream>>>(
            cur, batch, cfg, which, ws.counts, ws.batch, ws.select,
            reinterpret_cast<unsigned long long*>(ws.select_hist));
        GRPOKIT_CUDA_CHECK_LAUNCH();
      }
      const auto all = summed();
      select_step_kernel<<<1, 1, 0, stream>>>(all.first, all.second, ws.select + static_cast<int>(which),
                                              ws.select_hist);
      GRPOKIT_CUDA_CHECK_LAUNCH();
    }
  }
}

// Launches the loss kernels; the combined partial lands in ws.partials[0], the counts in ws.counts.
template <class P>
void launch_policy_loss(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                        const loss_config& cfg, const policy_grads<accum_t<P>>& grads, const layout<P>& ws,
                        cudaStream_t stream) {
  auto local = [&] { return std::pair<const long long*, int>(ws.select_hist, 1); };
  launch_selections<P>(cur, batch, cfg, ws, stream, selections_first, local);
  launch_summarize<P>(cur, batch, cfg, ws, stream);
  launch_batch_pass<P>(cfg, batch.seq_offsets.size() - 1, ws, stream);
  launch_selections<P>(cur, batch, cfg, ws, stream, selections_after, local);
  launch_accumulate<P>(cur, batch, cfg, grads, ws, stream);
  launch_partials_tree(ws.partials, batch.seq_offsets.size() - 1, stream);
}

template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(1) finish_loss_kernel(const detail::loss_partial* total, const long long* counts,
                                                       const detail::loss_partial* whole, const select_run* sel,
                                                       loss_config cfg, loss_result* out) {
  const detail::batch_stats stats = batch_stats_at(whole, sel, cfg);
  *out = detail::finish(*total, counts[0], cfg, stats);
}

// The loss and the metrics from the combined partial, into the workspace's head (no host sync).
template <class P>
void launch_finish_loss(const loss_config& cfg, const layout<P>& ws, cudaStream_t stream) {
  finish_loss_kernel<<<1, 1, 0, stream>>>(ws.partials, ws.counts, ws.batch, ws.select, cfg, ws.result);
  GRPOKIT_CUDA_CHECK_LAUNCH();
}

}  // namespace grpokit::detail
