#pragma once
// grpokit::device::fused_loss(_async): token_logprobs -> policy_loss -> logits_backward on one
// stream with the caller's workspace (logp, entropy, lse and their gradients live there: O(T + S),
// no allocation). The _async form never blocks the host; fused_loss synchronises once to return.
#include <cstdint>
#include <cuda_runtime.h>

#include "../config.hpp"
#include "../inputs.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "error.cuh"
#include "detail/fused_outputs.cuh"
#include "policy_loss.cuh"
#include "results.cuh"
#include "status.cuh"
#include "token_logprobs.cuh"
#include "workspace.cuh"

namespace grpokit::device {

using grpokit::fused_outputs;

// token_logprobs -> policy_loss -> logits_backward without blocking the host: dlogits and the
// optional outputs are written on `stream`, the loss, the metrics and the status stay in the
// workspace (read_loss_result, results_of). A null workspace only sets workspace_bytes.
template <class P>
void fused_loss_async(const logits_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                      const loss_config& cfg, const matrix_view<storage_t<P>>& dlogits, void* workspace,
                      std::size_t& workspace_bytes, cudaStream_t stream = 0,
                      const fused_outputs<accum_t<P>>& extra = {}, backward_mode mode = backward_mode::separate) {
  using Real = accum_t<P>;
  const std::int64_t T = in.logits.rows, V = in.logits.cols;
  detail::require_logits_shapes(in, cfg);
  detail::require_dlogits(in, dlogits, mode);
  detail::require_batch_shapes<P::trust_region || P::importance_mask>(batch, T, cfg);
  detail::require_fused_outputs(extra, T);
  detail::require_sum_p2_apart(extra.sum_p2, batch, in.temperature, in.logits, dlogits);
  const shape sh{T, V, batch.seq_offsets.size() - 1};
  const auto opened = detail::open_workspace<P>(workspace, workspace_bytes, sh);
  if (!opened) return;  // the size query
  const detail::layout<P>& ws = *opened;
  const span<Real> logp(ws.logp, T), entropy(ws.entropy, T), lse(ws.lse, T), dlogp(ws.dlogp, T),
      dentropy(ws.dentropy, T);
  const current_policy<Real> cur{logp, entropy};
  const policy_grads<Real> grads{dlogp, dentropy};
  detail::check_policy_shapes<P>(cur, batch, cfg, grads);
  const backward_inputs<Real> g{lse, entropy, dlogp, dentropy};
  detail::require_backward_shapes(in, g, dlogits, mode);

  detail::reset_status(ws.st, stream);
  detail::launch_forward<P>(in, cfg, token_stats<Real>{logp, entropy, lse}, ws, stream);
  detail::launch_sum_p2<P>(in, cfg, lse, extra.sum_p2, ws, stream);  // before an in-place backward
  detail::launch_policy_loss<P>(cur, batch, cfg, grads, ws, stream);
  detail::launch_backward<P>(in, g, cfg, dlogits, ws, stream);
  detail::copy_extra_async<Real>(extra, logp, entropy, stream);
  detail::launch_finish_loss<P>(cfg, ws, stream);
}

// fused_loss_async, then read_loss_result: synchronises the stream once to return.
template <class P>
loss_result fused_loss(const logits_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                       const loss_config& cfg, const matrix_view<storage_t<P>>& dlogits, void* workspace,
                       std::size_t workspace_bytes, cudaStream_t stream = 0,
                       const fused_outputs<accum_t<P>>& extra = {}, backward_mode mode = backward_mode::separate) {
  GRPOKIT_REQUIRE(workspace != nullptr, "workspace is null (allocate device::workspace_bytes)");
  fused_loss_async<P>(in, batch, cfg, dlogits, workspace, workspace_bytes, stream, extra, mode);
  return read_loss_result(workspace, stream);
}

}  // namespace grpokit::device
