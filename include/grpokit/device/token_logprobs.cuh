#pragma once
// grpokit::device::token_logprobs and logits_backward: the kernels of rows.cuh behind host-side
// shape checks; asynchronous on the caller's stream, data errors in the workspace status.
#include <cstdint>
#include <cuda_runtime.h>

#include "../config.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../math/ops.hpp"
#include "../policy.hpp"
#include "error.cuh"
#include "rows.cuh"
#include "status.cuh"
#include "workspace.cuh"

namespace grpokit::device {

namespace detail {

// Launches the forward schedule chosen by the shape (all schedules give the same bits).
// first_row: the index of row 0 in the caller's batch (the status reports rows by it).
template <class P>
void launch_forward(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
                    const token_stats<accum_t<P>>& out, const layout<P>& ws, cudaStream_t stream,
                    std::int64_t first_row = 0) {
  const row_status st{ws.st, first_row};
  using Ops = math::ops_for<P::order>;
  constexpr int L = static_cast<int>(P::chunk_lanes);
  const std::int64_t T = in.logits.rows, V = in.logits.cols;
  if (T == 0) return;
  if (P::vocab_prune) {
    row_max_kernel<P, Ops><<<static_cast<unsigned>(T), 256, 0, stream>>>(in, cfg, ws.row_max, st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  const std::int64_t tiles = (V + P::chunk_size - 1) / P::chunk_size;
  if (split_rows<P>(T, V)) {
    const std::int64_t per_block = (tiles + 15) / 16;
    const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>((tiles + per_block - 1) / per_block));
    forward_kernel<P, Ops, L><<<grid, L, 0, stream>>>(in, cfg, out, ws.row_max, ws.tiles, per_block, st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
    merge_tiles_kernel<P, Ops><<<static_cast<unsigned>((T + 127) / 128), 128, 0, stream>>>(in, cfg, out, ws.row_max,
                                                                                       ws.tiles, st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  } else if (L <= 32 || V <= 4096) {
    constexpr int G = L < 32 ? L : 32;  // a warp (or less) per row
    constexpr int teams = 128 / G;
    forward_kernel<P, Ops, G><<<static_cast<unsigned>((T + teams - 1) / teams), 128, 0, stream>>>(
        in, cfg, out, ws.row_max, nullptr, tiles, st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  } else {
    forward_kernel<P, Ops, L><<<static_cast<unsigned>(T), L, 0, stream>>>(in, cfg, out, ws.row_max, nullptr, tiles,
                                                                         st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
}

template <class P, class Out = storage_t<P>>
void launch_backward(const logits_input<storage_t<P>, accum_t<P>>& in, const backward_inputs<accum_t<P>>& g,
                     const loss_config& cfg, const matrix_view<Out>& dlogits, const layout<P>& ws,
                     cudaStream_t stream, std::int64_t first_row = 0) {
  const row_status st{ws.st, first_row};
  using Ops = math::ops_for<P::order>;
  const std::int64_t T = in.logits.rows;
  if (T == 0) return;
  if (P::vocab_prune) {
    row_max_kernel<P, Ops><<<static_cast<unsigned>(T), 256, 0, stream>>>(in, cfg, ws.row_max, st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  backward_kernel<P, Ops, Out><<<static_cast<unsigned>(T), 256, 0, stream>>>(in, g, cfg, ws.row_max, dlogits, st);
  GRPOKIT_CUDA_CHECK_LAUNCH();
}

}  // namespace detail

// logp, entropy and lse of every row (asynchronous). Data errors: read_status(workspace).
template <class P>
void token_logprobs(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
                    const token_stats<accum_t<P>>& out, void* workspace, std::size_t workspace_bytes,
                    cudaStream_t stream = 0) {
  grpokit::detail::require_logits_shapes(in, cfg);
  grpokit::detail::require_size("logp", out.logp, in.logits.rows);
  grpokit::detail::require_size("lse", out.lse, in.logits.rows);
  grpokit::detail::require_size_or_empty("entropy", out.entropy, in.logits.rows);
  const detail::layout<P> ws(workspace, workspace_bytes, shape{in.logits.rows, in.logits.cols, 0});
  detail::reset_status(ws.st, stream);
  detail::launch_forward<P>(in, cfg, out, ws, stream);
}

// dlogits from the saved lse / entropy and the gradients of policy_loss (asynchronous).
template <class P>
void logits_backward(const logits_input<storage_t<P>, accum_t<P>>& in, const backward_inputs<accum_t<P>>& g,
                     const loss_config& cfg, const matrix_view<storage_t<P>>& dlogits, void* workspace,
                     std::size_t workspace_bytes, cudaStream_t stream = 0,
                     backward_mode mode = backward_mode::separate) {
  grpokit::detail::require_logits_shapes(in, cfg);
  grpokit::detail::require_backward_shapes(in, g, dlogits, mode);
  const detail::layout<P> ws(workspace, workspace_bytes, shape{in.logits.rows, in.logits.cols, 0});
  detail::reset_status(ws.st, stream);
  detail::launch_backward<P>(in, g, cfg, dlogits, ws, stream);
}

}  // namespace grpokit::device
