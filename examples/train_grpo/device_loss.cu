// train_grpo's --device cuda backend: the same grpokit entry points as host_loss, run by the
// device kernels of <grpokit/device/...>. The toy network stays on the CPU, so every call copies
// its inputs to the GPU and its outputs back; a real trainer keeps the logits on the device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpokit/device/advantages.cuh>
#include <grpokit/device/fused_loss.cuh>
#include <grpokit/device/token_logprobs.cuh>
#include <grpokit/device/workspace.cuh>

#include "loss_backend.hpp"

namespace train_grpo {
namespace {

// Device memory that grows to the largest size asked for (the batch size varies from step to step);
// its contents are not kept when it grows.
template <class T>
class device_array {
 public:
  device_array() = default;
  device_array(const device_array&) = delete;
  device_array& operator=(const device_array&) = delete;
  ~device_array() { cudaFree(p_); }

  T* reserve(std::size_t n) {
    if (n > capacity_) {
      GRPOKIT_CUDA_CHECK(cudaFree(p_));
      p_ = nullptr;
      capacity_ = 0;
      GRPOKIT_CUDA_CHECK(cudaMalloc(&p_, n * sizeof(T)));
      capacity_ = n;
    }
    return p_;
  }
  // A copy of host data; an empty span stays empty (an absent optional input).
  grpokit::span<const T> upload(grpokit::span<const T> h, cudaStream_t stream) {
    if (h.empty()) return {};
    T* d = reserve(static_cast<std::size_t>(h.size()));
    GRPOKIT_CUDA_CHECK(
        cudaMemcpyAsync(d, h.data(), static_cast<std::size_t>(h.size()) * sizeof(T), cudaMemcpyHostToDevice, stream));
    return {d, h.size()};
  }
  grpokit::span<T> output(std::int64_t n) { return {reserve(static_cast<std::size_t>(n)), n}; }

 private:
  T* p_ = nullptr;
  std::size_t capacity_ = 0;
};

template <class T>
void download(grpokit::span<T> host, grpokit::span<const T> dev, cudaStream_t stream) {
  if (host.empty()) return;
  GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(host.data(), dev.data(), static_cast<std::size_t>(host.size()) * sizeof(T),
                                     cudaMemcpyDeviceToHost, stream));
}

template <class P>
class device_loss final : public loss_backend<P> {
 public:
  device_loss() { GRPOKIT_CUDA_CHECK(cudaStreamCreate(&stream_)); }
  ~device_loss() override { cudaStreamDestroy(stream_); }

  std::vector<float> logprobs(const logits_in& in, const grpokit::loss_config& cfg) override {
    const std::int64_t T = in.targets.size();
    const logits_in d = upload(in);
    const grpokit::span<float> logp = logp_.output(T), lse = lse_.output(T);
    const workspace_view ws = workspace({T, in.logits.cols, 0});
    grpokit::device::token_logprobs<P>(d, cfg, {logp, {}, lse}, ws.data, ws.bytes, stream_);
    grpokit::device::throw_if_error(grpokit::device::read_status(ws.data, stream_));  // asynchronous entry point
    std::vector<float> out(static_cast<std::size_t>(T));
    download<float>(out, logp, stream_);
    GRPOKIT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return out;
  }

  grpokit::advantage_stats compute_advantages(const grpokit::advantage_inputs<float>& in,
                                              const grpokit::advantage_config& cfg,
                                              const grpokit::advantage_outputs<float>& out) override {
    const std::int64_t S = in.rewards.size();
    const grpokit::advantage_inputs<float> d{rewards_.upload(in.rewards, stream_),
                                             group_offsets_.upload(in.group_offsets, stream_),
                                             seq_log_ratio_.upload(in.seq_log_ratio, stream_),
                                             seq_weight_.upload(in.seq_weight, stream_)};
    const grpokit::span<float> adv = adv_.output(S);
    const grpokit::span<std::uint8_t> seq_mask = seq_mask_.output(S);
    const workspace_view ws = workspace({0, 0, S});
    const grpokit::advantage_stats stats =
        grpokit::device::compute_advantages<P>(d, cfg, {adv, seq_mask}, ws.data, ws.bytes, stream_);
    download<float>(out.adv, adv, stream_);
    download<std::uint8_t>(out.seq_mask, seq_mask, stream_);
    GRPOKIT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return stats;
  }

  grpokit::loss_result fused_loss(const logits_in& in, const grpokit::rollout_batch<float>& batch,
                                  const grpokit::loss_config& cfg, const grpokit::matrix_view<float>& dlogits) override {
    const std::int64_t T = in.targets.size(), V = in.logits.cols,
                       S = std::max<std::int64_t>(batch.seq_offsets.size() - 1, 0);
    GRPOKIT_REQUIRE(dlogits.rows == T && dlogits.cols == V && dlogits.row_stride == V,
                    "train_grpo: dlogits must be a dense [T, V] matrix");
    const logits_in d = upload(in);
    grpokit::rollout_batch<float> db;
    db.seq_offsets = seq_offsets_.upload(batch.seq_offsets, stream_);
    db.adv = adv_.upload(batch.adv, stream_);
    db.logp_old = logp_old_.upload(batch.logp_old, stream_);
    db.logp_ref = logp_ref_.upload(batch.logp_ref, stream_);
    db.logp_rollout = logp_rollout_.upload(batch.logp_rollout, stream_);
    db.token_mask = token_mask_.upload(batch.token_mask, stream_);
    db.seq_mask = seq_mask_.upload(batch.seq_mask, stream_);
    db.positive = positive_.upload(batch.positive, stream_);  // VAPO's NLL flags (positive_nll_coef)
    const grpokit::span<float> dz = dlogits_.output(T * V);
    const workspace_view ws = workspace({T, V, S});
    const grpokit::loss_result res =
        grpokit::device::fused_loss<P>(d, db, cfg, {dz.data(), T, V, V}, ws.data, ws.bytes, stream_);
    download<float>({dlogits.data, T * V}, dz, stream_);
    GRPOKIT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return res;
  }

 private:
  // The logits and the targets on the device (a dense copy of the host matrix).
  logits_in upload(const logits_in& in) {
    GRPOKIT_REQUIRE(in.logits.row_stride == in.logits.cols, "train_grpo: the logits must be a dense matrix");
    const auto logits = logits_.upload({in.logits.data, in.logits.rows * in.logits.cols}, stream_);
    return {{logits.data(), in.logits.rows, in.logits.cols, in.logits.row_stride},
            targets_.upload(in.targets, stream_),
            temperature_.upload(in.temperature, stream_)};
  }
  // A workspace large enough for the shape, and its size for the entry point.
  struct workspace_view {
    void* data;
    std::size_t bytes;
  };
  workspace_view workspace(const grpokit::device::shape& s) {
    const std::size_t bytes = grpokit::device::workspace_bytes<P>(s);
    return {ws_.reserve(bytes), bytes};
  }

  cudaStream_t stream_ = nullptr;
  device_array<float> logits_, dlogits_, temperature_, logp_, lse_;
  device_array<float> rewards_, seq_log_ratio_, seq_weight_, adv_, logp_old_, logp_ref_, logp_rollout_;
  device_array<std::int64_t> targets_, group_offsets_, seq_offsets_;
  device_array<std::uint8_t> seq_mask_, token_mask_, positive_;
  device_array<unsigned char> ws_;
};

}  // namespace

template <class P>
std::unique_ptr<loss_backend<P>> make_device_loss() {
  int devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0)
    throw no_gpu(std::string("--device cuda: no CUDA device (") +
                 (err != cudaSuccess ? cudaGetErrorString(err) : "cudaGetDeviceCount found none") + ")");
  return std::make_unique<device_loss<P>>();
}

#define TRAIN_GRPO_INSTANTIATE(B, M) \
  template std::unique_ptr<loss_backend<grpokit::policy<grpokit::baseline::B, grpokit::mask::M>>> make_device_loss();
TRAIN_GRPO_POLICIES(TRAIN_GRPO_INSTANTIATE)
#undef TRAIN_GRPO_INSTANTIATE

}  // namespace train_grpo
