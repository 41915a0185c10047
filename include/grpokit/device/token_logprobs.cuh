#pragma once
// grpokit::device::token_logprobs and logits_backward: the kernels of rows.cuh behind host-side
// shape checks; asynchronous on the caller's stream (both forms), data errors in the workspace
// status (read_status).
#include <cstdint>
#include <cuda_runtime.h>

#include "../config.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../math/ops.hpp"
#include "../policy.hpp"
#include "detail/fused_outputs.cuh"
#include "detail/launch_rows.cuh"
#include "error.cuh"
#include "status.cuh"
#include "workspace.cuh"

namespace grpokit::device {

// logp, entropy and lse of every row, without blocking the host. Data errors: read_status(workspace).
// A null workspace only sets workspace_bytes (CUB's two-phase call).
template <class P>
void token_logprobs_async(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
                          const token_stats<accum_t<P>>& out, void* workspace, std::size_t& workspace_bytes,
                          cudaStream_t stream = 0) {
  detail::require_logits_shapes(in, cfg);
  detail::require_size("logp", out.logp, in.logits.rows);
  detail::require_size("lse", out.lse, in.logits.rows);
  detail::require_size_or_empty("entropy", out.entropy, in.logits.rows);
  detail::require_size_or_empty("sum_p2", out.sum_p2, in.logits.rows);
  const shape sh{in.logits.rows, in.logits.cols, 0};
  const auto opened = detail::open_workspace<P>(workspace, workspace_bytes, sh);
  if (!opened) return;  // the size query
  const detail::layout<P>& ws = *opened;
  detail::reset_status(ws.st, stream);
  detail::launch_forward<P>(in, cfg, out, ws, stream);
  detail::launch_sum_p2<P>(in, cfg, out.lse, out.sum_p2, ws, stream);  // after the forward's lse and row max
}

// dlogits from the saved lse / entropy and the gradients of policy_loss, without blocking the host.
// A null workspace only sets workspace_bytes.
template <class P>
void logits_backward_async(const logits_input<storage_t<P>, accum_t<P>>& in, const backward_inputs<accum_t<P>>& g,
                           const loss_config& cfg, const matrix_view<storage_t<P>>& dlogits, void* workspace,
                           std::size_t& workspace_bytes, cudaStream_t stream = 0,
                           backward_mode mode = backward_mode::separate) {
  detail::require_logits_shapes(in, cfg);
  detail::require_backward_shapes(in, g, dlogits, mode);
  const shape sh{in.logits.rows, in.logits.cols, 0};
  const auto opened = detail::open_workspace<P>(workspace, workspace_bytes, sh);
  if (!opened) return;  // the size query
  const detail::layout<P>& ws = *opened;
  detail::reset_status(ws.st, stream);
  detail::launch_backward<P>(in, g, cfg, dlogits, ws, stream);
}

// The same with the workspace's size by value (also never blocks the host).
template <class P>
void token_logprobs(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
                    const token_stats<accum_t<P>>& out, void* workspace, std::size_t workspace_bytes,
                    cudaStream_t stream = 0) {
  GRPOKIT_REQUIRE(workspace != nullptr, "workspace is null (allocate device::workspace_bytes)");
  token_logprobs_async<P>(in, cfg, out, workspace, workspace_bytes, stream);
}
template <class P>
void logits_backward(const logits_input<storage_t<P>, accum_t<P>>& in, const backward_inputs<accum_t<P>>& g,
                     const loss_config& cfg, const matrix_view<storage_t<P>>& dlogits, void* workspace,
                     std::size_t workspace_bytes, cudaStream_t stream = 0,
                     backward_mode mode = backward_mode::separate) {
  GRPOKIT_REQUIRE(workspace != nullptr, "workspace is null (allocate device::workspace_bytes)");
  logits_backward_async<P>(in, g, cfg, dlogits, workspace, workspace_bytes, stream, mode);
}

}  // namespace grpokit::device
