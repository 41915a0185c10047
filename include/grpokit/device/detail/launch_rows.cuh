#pragma once
// The launchers of the row kernels (rows.cuh), shared by token_logprobs / logits_backward,
// fused_loss and fused_linear_loss: the schedule is chosen by the shape (every schedule gives the
// same bits), the block sizes come from tuning.cuh.
#include <cstdint>
#include <cuda_runtime.h>

#include "../../config.hpp"
#include "../../inputs.hpp"
#include "../../math/ops.hpp"
#include "../../detail/ops_for.hpp"
#include "../../policy.hpp"
#include "../error.cuh"
#include "../rows.cuh"
#include "../status.cuh"
#include "../tuning.cuh"
#include "../workspace.cuh"
#include "sampler_support.cuh"

namespace grpokit::detail {

// Launches the forward schedule chosen by the shape (all schedules give the same bits).
// first_row: the index of row 0 in the caller's batch (the status reports rows by it).
template <class P>
void launch_forward(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
                    const token_stats<accum_t<P>>& out, const layout<P>& ws, cudaStream_t stream,
                    std::int64_t first_row = 0) {
  const row_status st{ws.st, first_row};
  using Ops = detail::ops_for<P::order>;
  constexpr int L = static_cast<int>(P::chunk_lanes);
  const std::int64_t T = in.logits.rows, V = in.logits.cols;
  if (T == 0) return;
  if (P::vocab_prune) {
    row_max_kernel<P, Ops>
        <<<static_cast<unsigned>(T), device::tuning::row_max_threads, 0, stream>>>(in, cfg, ws.row_max, st,
                                                                                   /*flag_non_finite=*/true);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  const accum_t<P>* support = launch_support<P>(in, cfg, ws, stream);  // null without top_k / top_p
  const std::int64_t tiles = (V + P::chunk_size - 1) / P::chunk_size;
  if (split_rows<P>(T, V)) {
    const std::int64_t per_block =
        (tiles + device::tuning::split_blocks_per_row - 1) / device::tuning::split_blocks_per_row;
    const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>((tiles + per_block - 1) / per_block));
    forward_kernel<P, Ops, L><<<grid, L, 0, stream>>>(in, cfg, out, ws.row_max, support, ws.tiles, per_block, st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
    merge_tiles_kernel<P, Ops>
        <<<device::tuning::blocks_for(T, device::tuning::merge_threads), device::tuning::merge_threads, 0, stream>>>(
            in, cfg, out, ws.row_max, support, ws.tiles, st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  } else if (L <= 32 || V <= device::tuning::warp_row_max_vocab) {
    constexpr int G = L < 32 ? L : 32;  // a warp (or less) per row
    constexpr int teams = device::tuning::team_block_threads / G;
    forward_kernel<P, Ops, G><<<device::tuning::blocks_for(T, teams), device::tuning::team_block_threads, 0, stream>>>(
        in, cfg, out, ws.row_max, support, nullptr, tiles, st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  } else {
    forward_kernel<P, Ops, L>
        <<<static_cast<unsigned>(T), L, 0, stream>>>(in, cfg, out, ws.row_max, support, nullptr, tiles, st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
}

// slice: vocabulary parallel (backward_kernel), with the whole rows' maxima already in ws.row_max.
template <class P, class Out = storage_t<P>>
void launch_backward(const logits_input<storage_t<P>, accum_t<P>>& in, const backward_inputs<accum_t<P>>& g,
                     const loss_config& cfg, const matrix_view<Out>& dlogits, const layout<P>& ws, cudaStream_t stream,
                     std::int64_t first_row = 0, const long long* slice = nullptr) {
  const row_status st{ws.st, first_row};
  using Ops = detail::ops_for<P::order>;
  const std::int64_t T = in.logits.rows;
  if (T == 0) return;
  if (P::vocab_prune && slice == nullptr) {
    row_max_kernel<P, Ops><<<static_cast<unsigned>(T), device::tuning::row_max_threads, 0, stream>>>(
        in, cfg, ws.row_max, st, /*flag_non_finite=*/false);  // backward_kernel flags the rows it reads
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  // the support before the backward writes dlogits (maybe over the logits); not under a vocabulary split
  const accum_t<P>* support = slice == nullptr ? launch_support<P>(in, cfg, ws, stream) : nullptr;
  backward_kernel<P, Ops, Out><<<static_cast<unsigned>(T), device::tuning::backward_threads, 0, stream>>>(
      in, g, cfg, ws.row_max, support, dlogits, st, slice);
  GRPOKIT_CUDA_CHECK_LAUNCH();
}

}  // namespace grpokit::detail
