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
#include "status.cuh"
#include "workspace.cuh"


namespace grpokit::device {

// The loss, dlogp / dentropy (device spans) and the metrics; synchronises the stream to return.
template <class P>
loss_result policy_loss(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                        const loss_config& cfg, const policy_grads<accum_t<P>>& grads, void* workspace,
                        std::size_t workspace_bytes, cudaStream_t stream = 0) {
  detail::check_policy_shapes<P>(cur, batch, cfg, grads);
  const detail::layout<P> ws(workspace, workspace_bytes, shape{0, 0, batch.seq_offsets.size() - 1});
  detail::reset_status(ws.st, stream);
  detail::launch_policy_loss<P>(cur, batch, cfg, grads, ws, stream);
  return detail::collect_result<P>(cfg, ws, stream);
}

}  // namespace grpokit::device
