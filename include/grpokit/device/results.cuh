#pragma once
// What the asynchronous entry points (the *_async forms) leave in the workspace's head: the status,
// the loss with its metrics, the advantage statistics. The read_* calls synchronise the stream and
// throw grpokit::error on a raised status; results_of gives the device addresses, for a caller that
// keeps the results on the device (a CUDA graph, a torch tensor over the loss).
#include <cstdint>
#include <cuda_runtime.h>
#include <limits>

#include "../metrics.hpp"
#include "error.cuh"
#include "status.cuh"
#include "workspace.cuh"

namespace grpokit::device {

struct workspace_results {
  const status* st;
  const loss_result* loss;
  const advantage_stats* advantages;
};

// Device addresses of the results in `workspace` (the pointer given to the entry point).
inline workspace_results results_of(const void* workspace) {
  detail::carver c(detail::aligned_workspace(workspace), std::numeric_limits<std::size_t>::max());
  const detail::workspace_head h = detail::take_head(c);
  return {h.st, h.loss, h.advantages};
}

// The loss and metrics of the last fused_loss_async / policy_loss_async / fused_linear_loss_async
// on this workspace (synchronises `stream`).
inline loss_result read_loss_result(const void* workspace, cudaStream_t stream) {
  loss_result r;
  GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(&r, results_of(workspace).loss, sizeof(r), cudaMemcpyDeviceToHost, stream));
  throw_if_error(read_status(workspace, stream));
  return r;
}

// The statistics of the last compute_advantages_async on this workspace (synchronises `stream`).
inline advantage_stats read_advantage_stats(const void* workspace, cudaStream_t stream) {
  advantage_stats a;
  GRPOKIT_CUDA_CHECK(
      cudaMemcpyAsync(&a, results_of(workspace).advantages, sizeof(a), cudaMemcpyDeviceToHost, stream));
  throw_if_error(read_status(workspace, stream));
  return a;
}

}  // namespace grpokit::device
