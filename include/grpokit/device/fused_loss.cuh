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

namespace grpokit::detail {

// What fused_loss does around policy_loss, shared with its data-parallel form (distributed.cuh):
// the host-side checks, the forward (log-probs, entropy, lse, the optional sum_p2) and the backward
// (dlogits, the optional copies of logp and entropy), over the buffers of a carved workspace.
template <class P>
struct fused_loss_steps {
  using Real = accum_t<P>;
  const logits_input<storage_t<P>, Real>& in;
  const rollout_batch<Real>& batch;
  const loss_config& cfg;
  const matrix_view<storage_t<P>>& dlogits;
  const fused_outputs<Real>& extra;
  backward_mode mode;

  // Every check that needs no workspace (before the size query, as CUB does).
  void check_inputs() const {
    const std::int64_t T = in.logits.rows;
    require_logits_shapes(in, cfg);
    require_dlogits(in, dlogits, mode);
    require_batch_shapes<P::trust_region || P::importance_mask>(batch, T, cfg);
    require_fused_outputs(extra, T);
    require_sum_p2_apart(extra.sum_p2, batch, in.temperature, in.logits, dlogits);
  }
  current_policy<Real> cur(const layout<P>& ws) const { return {span<Real>(ws.logp, T()), span<Real>(ws.entropy, T())}; }
  policy_grads<Real> grads(const layout<P>& ws) const { return {span<Real>(ws.dlogp, T()), span<Real>(ws.dentropy, T())}; }
  backward_inputs<Real> backward_in(const layout<P>& ws) const {
    return {span<Real>(ws.lse, T()), span<Real>(ws.entropy, T()), span<Real>(ws.dlogp, T()),
            span<Real>(ws.dentropy, T())};
  }
  // The checks of the workspace's views (they hold by construction; kept as the entry points' contract).
  void check_views(const layout<P>& ws) const {
    check_policy_shapes<P>(cur(ws), batch, cfg, grads(ws));
    require_backward_shapes(in, backward_in(ws), dlogits, mode);
  }
  token_stats<Real> stats(const layout<P>& ws) const {
    return {span<Real>(ws.logp, T()), span<Real>(ws.entropy, T()), span<Real>(ws.lse, T())};
  }
  // After the forward, before an in-place backward.
  void sum_p2(const layout<P>& ws, cudaStream_t stream) const {
    launch_sum_p2<P>(in, cfg, span<Real>(ws.lse, T()), extra.sum_p2, ws, stream);
  }
  // slice: vocabulary parallel (launch_backward).
  void backward(const layout<P>& ws, cudaStream_t stream, const long long* slice = nullptr) const {
    launch_backward<P>(in, backward_in(ws), cfg, dlogits, ws, stream, 0, slice);
    const current_policy<Real> c = cur(ws);
    copy_extra_async<Real>(extra, c.logp, c.entropy, stream);
  }
  std::int64_t T() const { return in.logits.rows; }
};

}  // namespace grpokit::detail

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
  const detail::fused_loss_steps<P> steps{in, batch, cfg, dlogits, extra, mode};
  steps.check_inputs();
  const shape sh{in.logits.rows, in.logits.cols, batch.seq_offsets.size() - 1};
  const auto opened = detail::open_workspace<P>(workspace, workspace_bytes, sh);
  if (!opened) return;  // the size query
  const detail::layout<P>& ws = *opened;
  steps.check_views(ws);

  detail::reset_status(ws.st, stream);
  detail::launch_forward<P>(in, cfg, steps.stats(ws), ws, stream);
  steps.sum_p2(ws, stream);
  detail::launch_policy_loss<P>(steps.cur(ws), batch, cfg, steps.grads(ws), ws, stream);
  steps.backward(ws, stream);
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
