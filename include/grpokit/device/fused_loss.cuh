#pragma once
// grpokit::device::fused_loss: token_logprobs -> policy_loss -> logits_backward on one stream with
// the caller's workspace (logp, entropy, lse and their gradients live there: O(T + S), no
// allocation). Synchronises once at the end to return the loss and the metrics.
#include <cstdint>
#include <cuda_runtime.h>

#include "../config.hpp"
#include "../inputs.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "error.cuh"
#include "detail/fused_outputs.cuh"
#include "policy_loss.cuh"
#include "status.cuh"
#include "token_logprobs.cuh"
#include "workspace.cuh"

namespace grpokit::device {

using grpokit::fused_outputs;


template <class P>
loss_result fused_loss(const logits_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                       const loss_config& cfg, const matrix_view<storage_t<P>>& dlogits, void* workspace,
                       std::size_t workspace_bytes, cudaStream_t stream = 0,
                       const fused_outputs<accum_t<P>>& extra = {}, backward_mode mode = backward_mode::separate) {
  using Real = accum_t<P>;
  const std::int64_t T = in.logits.rows, V = in.logits.cols;
  detail::require_logits_shapes(in, cfg);
  detail::require_size_or_empty("logp output", extra.logp, T);
  detail::require_size_or_empty("entropy output", extra.entropy, T);
  GRPOKIT_REQUIRE(batch.seq_offsets.size() >= 1, "seq_offsets: needs at least one element (S + 1 offsets)");
  const detail::layout<P> ws(workspace, workspace_bytes, shape{T, V, batch.seq_offsets.size() - 1});
  const span<Real> logp(ws.logp, T), entropy(ws.entropy, T), lse(ws.lse, T), dlogp(ws.dlogp, T),
      dentropy(ws.dentropy, T);
  const current_policy<Real> cur{logp, entropy};
  const policy_grads<Real> grads{dlogp, dentropy};
  detail::check_policy_shapes<P>(cur, batch, cfg, grads);
  const backward_inputs<Real> g{lse, entropy, dlogp, dentropy};
  detail::require_backward_shapes(in, g, dlogits, mode);

  detail::reset_status(ws.st, stream);
  detail::launch_forward<P>(in, cfg, token_stats<Real>{logp, entropy, lse}, ws, stream);
  detail::launch_policy_loss<P>(cur, batch, cfg, grads, ws, stream);
  detail::launch_backward<P>(in, g, cfg, dlogits, ws, stream);
  detail::copy_extra_async<Real>(extra, logp, entropy, stream);
  return detail::collect_result<P>(cfg, ws, stream);
}

}  // namespace grpokit::device
