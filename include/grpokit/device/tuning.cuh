#pragma once
// The launch configuration of every device kernel, in one place. Each kernel declares
// __launch_bounds__ with the constant its launch uses, and static_asserts what its shared memory
// or its reduction assumes of it; changing a value here changes both.
#include <cstdint>

namespace grpokit::device::tuning {

// Rows of logits.
constexpr int row_max_threads = 256;               // row_max_kernel: a block per row, a shared-memory max tree
constexpr int team_block_threads = 128;            // forward_kernel with teams of <= 32 threads: 128 / G rows a block
constexpr int backward_threads = 256;              // backward_kernel: a block per row
constexpr int merge_threads = 128;                 // merge_tiles_kernel: a thread per row
constexpr std::int64_t warp_row_max_vocab = 4096;  // V <= this: a team of <= 32 threads per row
// Split rows: a row's tiles over several blocks when there are few rows and many tiles.
constexpr std::int64_t split_max_rows = 256;
constexpr std::int64_t split_min_tiles = 16;
constexpr std::int64_t split_blocks_per_row = 16;

// Sequences, groups and the linear head.
constexpr int sequence_threads = 128;  // policy_loss: a thread per sequence, and the partials' tree
constexpr int group_threads = 128;     // compute_advantages: a thread per small group / per sequence
// compute_advantages: a group of more rollouts than this gets a block of large_group_threads (at most
// large_group_blocks blocks, each taking the large groups in turn); the batch statistics and the
// advantages' moments run on one block of batch_threads.
constexpr std::int64_t small_group_max = 64;
constexpr int large_group_threads = 256;
constexpr int large_group_blocks = 1024;
constexpr int batch_threads = 1024;
constexpr int bias_threads = 256;      // fused_linear_loss: bias fill and dbias, a thread per column
constexpr int bias_fill_blocks = 256;
constexpr int norm_threads = 256;      // fused_linear_loss's lm_head_norms: |m|^2 in norm_blocks partials,
constexpr int norm_blocks = 256;       // then one block adds them in order

// Blocks of `threads` for n items (a thread each).
constexpr unsigned blocks_for(std::int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

static_assert((row_max_threads & (row_max_threads - 1)) == 0, "row_max_threads: the max tree needs a power of two");
static_assert(team_block_threads % 32 == 0, "team_block_threads: whole warps");
static_assert((norm_threads & (norm_threads - 1)) == 0 && norm_blocks <= norm_threads,
              "norm_threads: a power of two that holds the norm_blocks partials");

}  // namespace grpokit::device::tuning
