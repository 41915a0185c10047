#pragma once
// What the CUDA operators share: the tensors' device checked, the current stream, a workspace from
// PyTorch's caching allocator (CUB's two-phase call sizes it), the results copied out of the
// workspace's head on the device, and the outputs turned to NaN when the call raised a data error;
// then, with sync_errors, the status read back and raised.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>
#include <cstdint>

#include <grpokit/device/grpokit.cuh>

#include "result_values.hpp"
#include "sync_errors.hpp"
#include "tensor_inputs.hpp"

namespace grpokit_torch {

inline void require_device(const at::Device& d, const char* name, const at::Tensor& t) {
  TORCH_CHECK(!t.defined() || t.device() == d, "grpokit: ", name, " is on ", t.device(), ", the call on ", d);
}

// Every tensor of a call's inputs on the call's device (checked once converted: a conversion keeps
// the device).
inline void require_on(const at::Device& d, const token_inputs& r) {
  require_device(d, "targets", r.targets);
  require_device(d, "token_temperature", r.temperature);
}
inline void require_on(const at::Device& d, const rows& r) { require_on(d, static_cast<const token_inputs&>(r)); }
inline void require_on(const at::Device& d, const lm_head_rows& r) {
  require_device(d, "weight", r.weight);
  require_device(d, "bias", r.bias);
  require_on(d, static_cast<const token_inputs&>(r));
}
inline void require_on(const at::Device& d, const batch& b) {
  require_device(d, "seq_offsets", b.seq_offsets);
  require_device(d, "adv", b.adv);
  require_device(d, "logp_old", b.logp_old);
  require_device(d, "logp_ref", b.logp_ref);
  require_device(d, "logp_rollout", b.logp_rollout);
  require_device(d, "token_mask", b.token_mask);
  require_device(d, "seq_mask", b.seq_mask);
  require_device(d, "positive", b.positive);
  require_device(d, "token_adv", b.token_adv);
}
inline void require_on(const at::Device& d, const token_baseline_tensors& in) {
  require_device(d, "seq_offsets", in.seq_offsets);
  require_device(d, "group_offsets", in.group_offsets);
  require_device(d, "logp_old", in.logp_old);
  require_device(d, "sum_p2", in.sum_p2);
  require_device(d, "is_weights", in.is_weights);
  require_device(d, "token_mask", in.token_mask);
}
inline void require_on(const at::Device& d, const advantage_tensors& in) {
  require_device(d, "group_offsets", in.group_offsets);
  require_device(d, "seq_log_ratio", in.seq_log_ratio);
  require_device(d, "seq_weight", in.seq_weight);
  require_device(d, "group_baseline", in.group_baseline);
  require_device(d, "seq_tokens", in.seq_tokens);
}

template <class Acc>
__global__ void loss_outputs_kernel(grpokit::device::workspace_results r, Acc* loss, double* metrics) {
  write_metrics(*r.loss, metrics);
  *loss = static_cast<Acc>(r.loss->loss);
  if (grpokit::detail::raised(*r.st)) {
    for (int i = 0; i < metric_count; ++i) metrics[i] = NAN;
    *loss = static_cast<Acc>(NAN);
  }
}

static __global__ void advantage_outputs_kernel(grpokit::device::workspace_results r, double* stats) {
  write_advantage_stats(*r.advantages, stats);
  if (grpokit::detail::raised(*r.st))
    for (int i = 0; i < advantage_stat_count; ++i) stats[i] = NAN;
}

// Every element NaN when the call raised; returns at once otherwise.
template <class T>
__global__ void nan_if_raised_kernel(const grpokit::device::status* st, T* data, std::int64_t n) {
  if (!grpokit::detail::raised(*st)) return;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    data[i] = static_cast<T>(NAN);
}

// One operator call on the device of its first tensor, on the current stream.
class device_call {
 public:
  explicit device_call(const at::Tensor& first)
      : device_(first.device()), guard_(first.device()), stream_(at::cuda::getCurrentCUDAStream()) {}
  const at::Device& device() const { return device_; }
  cudaStream_t stream() const { return stream_; }

  // The workspace of an entry point: `enqueue(ws, bytes)` is called with a null workspace for the
  // size, then with the allocation (freed, stream-ordered, when the call returns).
  template <class Enqueue>
  void run(const Enqueue& enqueue) {
    std::size_t bytes = 0;
    enqueue(nullptr, bytes);
    workspace_ = at::empty({static_cast<std::int64_t>(bytes)}, at::TensorOptions().dtype(at::kByte).device(device_));
    enqueue(workspace_.data_ptr(), bytes);
  }

  // The loss (0-dim, Acc) and the metrics (float64) out of the workspace.
  template <class Acc>
  void loss_outputs(const at::Tensor& loss, const at::Tensor& metrics) const {
    loss_outputs_kernel<Acc><<<1, 1, 0, stream_>>>(results(), loss.data_ptr<Acc>(), metrics.data_ptr<double>());
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  void advantage_outputs(const at::Tensor& stats) const {
    advantage_outputs_kernel<<<1, 1, 0, stream_>>>(results(), stats.data_ptr<double>());
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }

  // The tensors' elements NaN if the call raised a data error.
  template <class... Tensors>
  void nan_if_raised(const Tensors&... tensors) const {
    (nan_if_raised_one(tensors), ...);
  }

  // With sync_errors, outside a graph capture: the status read back and raised (grpokit::error).
  void check() const {
    if (!sync_errors().load()) return;
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    GRPOKIT_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
    if (capture != cudaStreamCaptureStatusNone) return;
    grpokit::device::throw_if_error(grpokit::device::read_status(workspace_.data_ptr(), stream_));
  }

 private:
  grpokit::device::workspace_results results() const { return grpokit::device::results_of(workspace_.data_ptr()); }
  void nan_if_raised_one(const at::Tensor& t) const {
    if (!t.defined() || t.numel() == 0) return;
    const std::int64_t n = t.numel();
    const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>((n + 255) / 256, 1024));
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, t.scalar_type(), "grpokit nan_if_raised", [&] {
      nan_if_raised_kernel<scalar_t><<<blocks, 256, 0, stream_>>>(results().st, t.data_ptr<scalar_t>(), n);
    });
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }

  at::Device device_;
  c10::cuda::CUDAGuard guard_;
  cudaStream_t stream_;
  at::Tensor workspace_;
};

}  // namespace grpokit_torch
