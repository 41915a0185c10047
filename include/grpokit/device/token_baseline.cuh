#pragma once
// grpokit::device::optimal_token_baseline: verl's optimal token baseline (host/token_baseline.hpp)
// on the device, with the same math (detail/token_baseline.hpp): a thread per sequence (its
// reward-to-go and realised energy, serially as the host), a thread per group (its steps, singleton
// and zero tail), a thread per entry of the step baselines (each group's steps laid at its first
// token), a thread per token (the advantages). Bit for bit the host. The workspace holds the status
// first (read_status), then the statistics and the scratch (about 40 bytes a token).
#include <cmath>
#include <cstdint>
#include <cuda_runtime.h>

#include "../detail/token_baseline.hpp"
#include "../host/token_baseline.hpp"
#include "error.cuh"
#include "status.cuh"
#include "tuning.cuh"
#include "workspace.cuh"

namespace grpokit::detail {

struct otb_layout {
  device::status* st = nullptr;
  token_baseline_stats* stats = nullptr;
  otb_arrays a;
  std::int64_t* group_base = nullptr;  // [G] the group's first token (its step baselines start there)
  std::size_t bytes = 0;               // the whole workspace, alignment slack included

  otb_layout(void* workspace, std::size_t available, std::int64_t T, std::int64_t S, std::int64_t G) {
    char* base = workspace != nullptr ? aligned_workspace(workspace) : nullptr;
    if (base != nullptr) {
      const std::size_t lost = static_cast<std::size_t>(base - static_cast<char*>(workspace));
      GRPOKIT_REQUIRE(available >= lost, "workspace too small: ", available, " bytes");
      available -= lost;
    }
    carver c(base, available);
    st = take_head(c).st;
    stats = c.take<token_baseline_stats>(1);
    a.ret = c.take<double>(T);
    a.energy = c.take<double>(T);
    a.baseline = c.take<double>(T);
    a.step = c.take<std::int64_t>(T);
    a.at_step = c.take<std::int64_t>(T);
    a.seq_first = c.take<std::int64_t>(S);
    a.seq_length = c.take<std::int64_t>(S);
    a.seq_steps = c.take<std::int64_t>(S);
    a.group_steps = c.take<std::int64_t>(G);
    a.group_tail_seq = c.take<std::int64_t>(G);
    a.group_tail_from = c.take<std::int64_t>(G);
    group_base = c.take<std::int64_t>(G);
    a.group_single = c.take<std::uint8_t>(G);
    bytes = c.used() + workspace_alignment - 1;
  }
};

__device__ inline void otb_count(std::int64_t* field, std::int64_t n) {
  atomicAdd(reinterpret_cast<unsigned long long*>(field), static_cast<unsigned long long>(n));
}

// The last i in [0, n) with off[i] <= x (off non-decreasing, off[0] <= x).
__device__ inline std::int64_t otb_segment_of(const std::int64_t* off, std::int64_t n, std::int64_t x) {
  std::int64_t lo = 0, hi = n - 1;
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo + 1) / 2;
    if (off[mid] <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Sequence s: its offsets checked (a bad sequence is left empty), then detail::otb_sequence.
template <class Real>
__global__ void __launch_bounds__(device::tuning::sequence_threads)
    otb_sequence_kernel(token_baseline_inputs<Real> in, token_baseline_config cfg, otb_layout ws) {
  const std::int64_t s = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t S = in.seq_offsets.size() - 1, T = in.token_rewards.size();
  if (s >= S) return;
  if (!segment_ok(in.seq_offsets, s, T, true)) {
    flag_error(&ws.st->bad_offsets, s);
    ws.a.seq_first[s] = ws.a.seq_length[s] = ws.a.seq_steps[s] = 0;
    return;
  }
  const std::int64_t bad = otb_sequence(in, cfg, s, ws.a);
  if (bad >= 0) flag_error(&ws.st->non_finite, bad);
  otb_count(&ws.stats->response_tokens, ws.a.seq_length[s]);
}

// Group g: its offsets checked (a bad group has no steps), then detail::otb_group.
template <class Real>
__global__ void __launch_bounds__(device::tuning::group_threads)
    otb_group_kernel(token_baseline_inputs<Real> in, token_baseline_config cfg, otb_layout ws) {
  const std::int64_t g = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t G = in.group_offsets.size() - 1, S = in.seq_offsets.size() - 1;
  if (g >= G) return;
  if (g == 0) ws.stats->groups = G;
  if (!segment_ok(in.group_offsets, g, S, false)) {
    flag_error(&ws.st->bad_offsets, g);
    ws.a.group_steps[g] = 0, ws.a.group_single[g] = 1, ws.a.group_tail_seq[g] = -1, ws.a.group_tail_from[g] = 0;
    ws.group_base[g] = 0;
    return;
  }
  otb_group(in, cfg, g, ws.a);
  ws.group_base[g] = in.seq_offsets[in.group_offsets[g]];
  if (ws.a.group_single[g]) otb_count(&ws.stats->singleton_groups, 1);
  if (ws.a.group_tail_seq[g] >= 0) otb_count(&ws.stats->zero_tail_groups, 1);
}

// The head of an optimal_token_baseline workspace, whatever its sizes: the status, then the
// statistics.
inline otb_layout otb_head(void* workspace) { return otb_layout(workspace, ~std::size_t{0} / 2, 0, 0, 0); }

// Entry j of the step baselines: step j - base of the group whose steps hold it, if any.
template <class Real>
__global__ void __launch_bounds__(device::tuning::sequence_threads)
    otb_step_kernel(token_baseline_inputs<Real> in, token_baseline_config cfg, otb_layout ws) {
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t G = in.group_offsets.size() - 1;
  if (j >= in.token_rewards.size()) return;
  const std::int64_t g = otb_segment_of(ws.group_base, G, j), t = j - ws.group_base[g];
  if (t >= 0 && t < ws.a.group_steps[g]) ws.a.baseline[j] = otb_step_baseline(in, cfg, g, t, ws.a);
}

template <class Real>
__global__ void __launch_bounds__(device::tuning::sequence_threads)
    otb_advantage_kernel(token_baseline_inputs<Real> in, otb_layout ws, token_baseline_outputs<Real> out) {
  const std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t T = in.token_rewards.size(), S = in.seq_offsets.size() - 1, G = in.group_offsets.size() - 1;
  if (k >= T) return;
  const std::int64_t s = otb_segment_of(in.seq_offsets.data(), S, k);
  const std::int64_t g = otb_segment_of(in.group_offsets.data(), G, s);
  // after a flag (bad offsets, a bad input: the error the host raises first) nothing is computed nor
  // read of the scratch; a token's step stays inside its group's baselines on valid offsets
  const bool skip = raised(*ws.st) || ws.group_base[g] + (otb_response(in, k) ? ws.a.step[k] : 0) >= T;
  if (skip) {
    out.adv[k] = Real(0);
    if (!out.returns.empty()) out.returns[k] = Real(0);
    return;
  }
  if (!out.returns.empty()) out.returns[k] = static_cast<Real>(ws.a.ret[k]);
  const double adv = otb_advantage(in, g, s, k, ws.a);
  if (!std::isfinite(adv)) flag_error(&ws.st->non_finite, k);
  out.adv[k] = static_cast<Real>(adv);
}

}  // namespace grpokit::detail

namespace grpokit::device {

// Workspace bytes for T tokens, S sequences and G groups (any pointer is accepted: the library
// aligns it).
inline std::size_t token_baseline_workspace_bytes(std::int64_t tokens, std::int64_t seqs, std::int64_t groups) {
  return detail::otb_layout(nullptr, 0, tokens, seqs, groups).bytes;
}

// Device spans; never blocks the host: the statistics and the status stay in the workspace
// (read_token_baseline_stats, read_status). A null workspace only sets workspace_bytes. Data errors
// (bad offsets, an empty group, a response token's non-finite input or advantage) raise the status.
template <class Real>
void optimal_token_baseline_async(const token_baseline_inputs<Real>& in, const token_baseline_config& cfg,
                                  const token_baseline_outputs<Real>& out, void* workspace,
                                  std::size_t& workspace_bytes, cudaStream_t stream = 0) {
  detail::require_token_baseline_shapes(in, cfg, out);
  const std::int64_t T = in.token_rewards.size(), S = in.seq_offsets.size() - 1, G = in.group_offsets.size() - 1;
  if (workspace == nullptr) {
    workspace_bytes = token_baseline_workspace_bytes(T, S, G);
    return;
  }
  const detail::otb_layout ws(workspace, workspace_bytes, T, S, G);
  detail::reset_status(ws.st, stream);
  GRPOKIT_CUDA_CHECK(cudaMemsetAsync(ws.stats, 0, sizeof(token_baseline_stats), stream));
  if (S > 0) {
    detail::otb_sequence_kernel<Real><<<tuning::blocks_for(S, tuning::sequence_threads), tuning::sequence_threads, 0,
                                        stream>>>(in, cfg, ws);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  if (G > 0) {
    detail::otb_group_kernel<Real>
        <<<tuning::blocks_for(G, tuning::group_threads), tuning::group_threads, 0, stream>>>(in, cfg, ws);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  if (T > 0 && G > 0) {
    const unsigned blocks = tuning::blocks_for(T, tuning::sequence_threads);
    detail::otb_step_kernel<Real><<<blocks, tuning::sequence_threads, 0, stream>>>(in, cfg, ws);
    GRPOKIT_CUDA_CHECK_LAUNCH();
    detail::otb_advantage_kernel<Real><<<blocks, tuning::sequence_threads, 0, stream>>>(in, ws, out);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
}

// The statistics of the last optimal_token_baseline_async in this workspace, after its status
// (synchronises the stream; a data error throws grpokit::error).
inline token_baseline_stats read_token_baseline_stats(const void* workspace, cudaStream_t stream) {
  throw_if_error(read_status(workspace, stream));
  token_baseline_stats st;
  const token_baseline_stats* on_device = detail::otb_head(const_cast<void*>(workspace)).stats;
  GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(&st, on_device, sizeof st, cudaMemcpyDeviceToHost, stream));
  GRPOKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
  return st;
}

// optimal_token_baseline_async, then read_token_baseline_stats.
template <class Real>
token_baseline_stats optimal_token_baseline(const token_baseline_inputs<Real>& in, const token_baseline_config& cfg,
                                            const token_baseline_outputs<Real>& out, void* workspace,
                                            std::size_t workspace_bytes, cudaStream_t stream = 0) {
  GRPOKIT_REQUIRE(workspace != nullptr, "workspace is null (allocate device::token_baseline_workspace_bytes)");
  optimal_token_baseline_async(in, cfg, out, workspace, workspace_bytes, stream);
  return read_token_baseline_stats(workspace, stream);
}

}  // namespace grpokit::device
