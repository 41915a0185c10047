#pragma once
// grpokit::device::policy_loss: the shared per-sequence math of detail/policy_terms.hpp with a
// thread per sequence, integer counts, and the per-sequence partials combined by the same fixed
// pairwise tree as the host (detail::tree_reduce), so the result does not depend on the launch.
#include <cstdint>
#include <cuda_runtime.h>

#include "../config.hpp"
#include "../inputs.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "detail/launch_policy.cuh"
#include "results.cuh"
#include "status.cuh"
#include "workspace.cuh"


namespace grpokit::device {

// The loss, dlogp / dentropy (device spans) and the metrics, without blocking the host: the result
// and the status stay in the workspace (read_loss_result, results_of). A null workspace only sets
// workspace_bytes (CUB's two-phase call).
template <class P>
void policy_loss_async(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                       const loss_config& cfg, const policy_grads<accum_t<P>>& grads, void* workspace,
                       std::size_t& workspace_bytes, cudaStream_t stream = 0) {
  detail::check_policy_shapes<P>(cur, batch, cfg, grads);
  const shape sh{0, 0, batch.seq_offsets.size() - 1};
  const auto opened = detail::open_workspace<P>(workspace, workspace_bytes, sh);
  if (!opened) return;  // the size query
  const detail::layout<P>& ws = *opened;
  detail::reset_status(ws.st, stream);
  detail::launch_policy_loss<P>(cur, batch, cfg, grads, ws, stream);
  detail::launch_finish_loss<P>(cfg, ws, stream);
}

// policy_loss_async, then read_loss_result: synchronises the stream to return.
template <class P>
loss_result policy_loss(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                        const loss_config& cfg, const policy_grads<accum_t<P>>& grads, void* workspace,
                        std::size_t workspace_bytes, cudaStream_t stream = 0) {
  GRPOKIT_REQUIRE(workspace != nullptr, "workspace is null (allocate device::workspace_bytes)");
  policy_loss_async<P>(cur, batch, cfg, grads, workspace, workspace_bytes, stream);
  return read_loss_result(workspace, stream);
}

}  // namespace grpokit::device
