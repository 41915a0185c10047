#pragma once
// grpokit::device::grpo_lambda_rewards: GRPO-lambda's reward pre-pass (host/grpo_lambda.hpp) on the
// device, with the same per-group math (detail/length_reward.hpp): a thread per group counts and
// measures, CUB's stable radix sort ranks the groups by correctness ratio (highest first, equal
// ratios by group index, as the host), a thread per group writes its rewards. The ratio is sorted
// as the double c / n, which orders groups exactly like the host's exact comparison for groups of
// fewer than 2^26 rollouts (equal fractions give equal doubles, different ones different doubles).
// The workspace holds the status first (read_status), then the statistics and the group arrays.
#include <cmath>
#include <cstdint>
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>

#include "../detail/length_reward.hpp"
#include "../detail/validate.hpp"
#include "../host/grpo_lambda.hpp"
#include "error.cuh"
#include "status.cuh"
#include "tuning.cuh"
#include "workspace.cuh"

namespace grpokit::detail {

struct grpo_lambda_layout {
  device::status* st = nullptr;
  grpo_lambda_stats* stats = nullptr;
  std::int64_t* count = nullptr;  // [G] correct rollouts
  std::int64_t* lo = nullptr;     // [G] shortest response
  std::int64_t* hi = nullptr;     // [G] longest response
  double *key_in = nullptr, *key_out = nullptr;
  std::int64_t *index_in = nullptr, *index_out = nullptr;
  std::int64_t* rank = nullptr;  // [G]
  void* sort_temp = nullptr;
  std::size_t sort_bytes = 0;
  std::size_t bytes = 0;  // the whole workspace, alignment slack included

  grpo_lambda_layout(void* workspace, std::size_t available, std::int64_t G) {
    char* base = workspace != nullptr ? aligned_workspace(workspace) : nullptr;
    if (base != nullptr) {
      const std::size_t lost = static_cast<std::size_t>(base - static_cast<char*>(workspace));
      GRPOKIT_REQUIRE(available >= lost, "workspace too small: ", available, " bytes");
      available -= lost;
    }
    GRPOKIT_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(
        nullptr, sort_bytes, static_cast<const double*>(nullptr), static_cast<double*>(nullptr),
        static_cast<const std::int64_t*>(nullptr), static_cast<std::int64_t*>(nullptr), static_cast<int>(G)));
    carver c(base, available);
    st = take_head(c).st;
    stats = c.take<grpo_lambda_stats>(1);
    count = c.take<std::int64_t>(G);
    lo = c.take<std::int64_t>(G);
    hi = c.take<std::int64_t>(G);
    key_in = c.take<double>(G);
    key_out = c.take<double>(G);
    index_in = c.take<std::int64_t>(G);
    index_out = c.take<std::int64_t>(G);
    rank = c.take<std::int64_t>(G);
    sort_temp = c.take<unsigned char>(static_cast<std::int64_t>(sort_bytes));
    bytes = c.used() + workspace_alignment - 1;
  }
};

// Counts, lengths and the sort key of group g; bad offsets and correct values go to the status
// (nothing outside the batch is read).
template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(device::tuning::group_threads)
    grpo_lambda_group_kernel(span<const std::uint8_t> correct, span<const std::int64_t> seq_offsets,
                             span<const std::int64_t> group_offsets, grpo_lambda_layout ws) {
  const std::int64_t g = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t G = group_offsets.size() - 1, S = correct.size();
  if (g >= G) return;
  ws.index_in[g] = g;
  ws.key_in[g] = 0;
  ws.count[g] = ws.lo[g] = ws.hi[g] = 0;
  if (!segment_ok(group_offsets, g, S, false)) {
    flag_error(&ws.st->bad_offsets, g);
    return;
  }
  const std::int64_t b = group_offsets[g], e = group_offsets[g + 1];
  std::int64_t lo = 0, hi = 0;
  for (std::int64_t i = b; i < e; ++i) {
    const std::int64_t len = seq_offsets[i + 1] - seq_offsets[i];
    if (len < 0 || (i == 0 && seq_offsets[0] != 0)) flag_error(&ws.st->bad_offsets, g);
    if (correct[i] > 1) flag_error(&ws.st->bad_value, i);
    lo = i == b || len < lo ? len : lo;
    hi = i == b || len > hi ? len : hi;
  }
  ws.count[g] = correct_count(correct.data(), b, e);
  ws.lo[g] = lo;
  ws.hi[g] = hi;
  ws.key_in[g] = static_cast<double>(ws.count[g]) / static_cast<double>(e - b);
}

template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(device::tuning::group_threads)
    grpo_lambda_rank_kernel(std::int64_t G, std::int64_t top, grpo_lambda_layout ws) {
  const std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= G) return;
  ws.rank[ws.index_out[k]] = k;
  if (k == 0) {
    ws.stats->groups = G;
    ws.stats->penalised_groups = top;
    ws.stats->lowest_penalised_ratio = top > 0 ? ws.key_out[top - 1] : 0.0;
  }
}

template <class Real>
__global__ void __launch_bounds__(device::tuning::group_threads)
    grpo_lambda_reward_kernel(span<const std::uint8_t> correct, span<const std::int64_t> seq_offsets,
                              span<const std::int64_t> group_offsets, grpo_lambda_config cfg, std::int64_t top,
                              grpo_lambda_layout ws, span<Real> rewards) {
  const std::int64_t g = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t G = group_offsets.size() - 1, S = correct.size();
  if (g >= G) return;
  const std::int64_t b = group_offsets[g], e = group_offsets[g + 1];
  if (!(b >= 0 && b < e && e <= S)) return;  // reported by the group kernel
  const bool penalised = ws.rank[g] < top;
  for (std::int64_t i = b; i < e; ++i) {
    const bool ok = correct[i] != 0;
    const double bonus =
        penalised ? cfg.length_weight * kimi_length_reward(seq_offsets[i + 1] - seq_offsets[i], ws.lo[g], ws.hi[g], ok)
                  : 0.0;
    rewards[i] = static_cast<Real>((ok ? 1.0 : 0.0) + bonus);
  }
}

}  // namespace grpokit::detail

namespace grpokit::device {

// Workspace bytes for G groups (any pointer is accepted: the library aligns it).
inline std::size_t grpo_lambda_workspace_bytes(std::int64_t groups) {
  return detail::grpo_lambda_layout(nullptr, 0, groups).bytes;
}

// Device spans; never blocks the host: the statistics and the status stay in the workspace
// (read_grpo_lambda_stats, read_status). A null workspace only sets workspace_bytes.
template <class Real>
void grpo_lambda_rewards_async(span<const std::uint8_t> correct, span<const std::int64_t> seq_offsets,
                               span<const std::int64_t> group_offsets, const grpo_lambda_config& cfg,
                               span<Real> rewards, void* workspace, std::size_t& workspace_bytes,
                               cudaStream_t stream = 0) {
  GRPOKIT_REQUIRE(std::isfinite(cfg.top_fraction) && cfg.top_fraction >= 0 && cfg.top_fraction <= 1,
                  "grpo_lambda_config::top_fraction must be in [0, 1], got ", cfg.top_fraction);
  GRPOKIT_REQUIRE(std::isfinite(cfg.length_weight), "grpo_lambda_config::length_weight must be finite, got ",
                  cfg.length_weight);
  const std::int64_t S = correct.size();
  GRPOKIT_REQUIRE(seq_offsets.size() == S + 1, "seq_offsets: expected ", S + 1, " offsets (S + 1), got ",
                  seq_offsets.size());
  GRPOKIT_REQUIRE(group_offsets.size() >= 1, "group_offsets: needs at least one element (G + 1 offsets)");
  detail::require_size("rewards", rewards, S);
  const std::int64_t G = group_offsets.size() - 1;
  GRPOKIT_REQUIRE(G <= (std::int64_t{1} << 31) - 1, "grpo_lambda_rewards: more than 2^31 - 1 groups");
  if (workspace == nullptr) {
    workspace_bytes = grpo_lambda_workspace_bytes(G);
    return;
  }
  detail::grpo_lambda_layout ws(workspace, workspace_bytes, G);
  detail::reset_status(ws.st, stream);
  const std::int64_t top = detail::top_count(cfg.top_fraction, G);
  GRPOKIT_CUDA_CHECK(cudaMemsetAsync(ws.stats, 0, sizeof(grpo_lambda_stats), stream));
  if (G == 0) return;
  constexpr int threads = tuning::group_threads;
  const unsigned blocks = tuning::blocks_for(G, threads);
  detail::grpo_lambda_group_kernel<<<blocks, threads, 0, stream>>>(correct, seq_offsets, group_offsets, ws);
  GRPOKIT_CUDA_CHECK_LAUNCH();
  std::size_t sort_bytes = ws.sort_bytes;  // stable: equal ratios keep the group order
  GRPOKIT_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(ws.sort_temp, sort_bytes, ws.key_in, ws.key_out,
                                                               ws.index_in, ws.index_out, static_cast<int>(G), 0,
                                                               static_cast<int>(sizeof(double) * 8), stream));
  detail::grpo_lambda_rank_kernel<<<blocks, threads, 0, stream>>>(G, top, ws);
  GRPOKIT_CUDA_CHECK_LAUNCH();
  detail::grpo_lambda_reward_kernel<Real>
      <<<blocks, threads, 0, stream>>>(correct, seq_offsets, group_offsets, cfg, top, ws, rewards);
  GRPOKIT_CUDA_CHECK_LAUNCH();
}

// The statistics of the last grpo_lambda_rewards_async in this workspace, after its status
// (synchronises the stream; a data error throws grpokit::error).
inline grpo_lambda_stats read_grpo_lambda_stats(const void* workspace, cudaStream_t stream) {
  throw_if_error(read_status(workspace, stream));
  grpo_lambda_stats st;
  const detail::grpo_lambda_layout ws(const_cast<void*>(workspace), ~std::size_t{0} / 2, 0);
  GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(&st, ws.stats, sizeof st, cudaMemcpyDeviceToHost, stream));
  GRPOKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
  return st;
}

// grpo_lambda_rewards_async, then read_grpo_lambda_stats.
template <class Real>
grpo_lambda_stats grpo_lambda_rewards(span<const std::uint8_t> correct, span<const std::int64_t> seq_offsets,
                                      span<const std::int64_t> group_offsets, const grpo_lambda_config& cfg,
                                      span<Real> rewards, void* workspace, std::size_t workspace_bytes,
                                      cudaStream_t stream = 0) {
  GRPOKIT_REQUIRE(workspace != nullptr, "workspace is null (allocate device::grpo_lambda_workspace_bytes)");
  grpo_lambda_rewards_async(correct, seq_offsets, group_offsets, cfg, rewards, workspace, workspace_bytes, stream);
  return read_grpo_lambda_stats(workspace, stream);
}

}  // namespace grpokit::device
