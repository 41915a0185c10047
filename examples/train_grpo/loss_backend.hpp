#pragma once
// Where the trainer's loss side runs: grpokit's host loops (host_loss, the default) or its device
// kernels (device_loss.cu, --device cuda). Both take and return host memory, so the rest of the
// trainer (the toy network, sampling, Adam) is the same for both; the device backend copies its
// inputs to the GPU and d loss / d logits back.
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include <grpokit/grpokit.hpp>

namespace train_grpo {

// The example network is fp32: logits stored and accumulated in float.
using logits_in = grpokit::logits_input<float, float>;

template <class P>
class loss_backend {
 public:
  virtual ~loss_backend() = default;
  // log pi(target) of every row of in.logits.
  virtual std::vector<float> logprobs(const logits_in& in, const grpokit::loss_config& cfg) = 0;
  virtual grpokit::advantage_stats compute_advantages(const grpokit::advantage_inputs<float>& in,
                                                      const grpokit::advantage_config& cfg,
                                                      const grpokit::advantage_outputs<float>& out) = 0;
  // The loss of the batch, with d loss / d logits written to dlogits.
  virtual grpokit::loss_result fused_loss(const logits_in& in, const grpokit::rollout_batch<float>& batch,
                                          const grpokit::loss_config& cfg,
                                          const grpokit::matrix_view<float>& dlogits) = 0;
};

template <class P>
class host_loss final : public loss_backend<P> {
 public:
  std::vector<float> logprobs(const logits_in& in, const grpokit::loss_config& cfg) override {
    std::vector<float> logp(static_cast<std::size_t>(in.targets.size())), lse(logp.size());
    grpokit::host::token_logprobs<P>(in, cfg, {logp, {}, lse});
    return logp;
  }
  grpokit::advantage_stats compute_advantages(const grpokit::advantage_inputs<float>& in,
                                              const grpokit::advantage_config& cfg,
                                              const grpokit::advantage_outputs<float>& out) override {
    return grpokit::host::compute_advantages<P>(in, cfg, out);
  }
  grpokit::loss_result fused_loss(const logits_in& in, const grpokit::rollout_batch<float>& batch,
                                  const grpokit::loss_config& cfg, const grpokit::matrix_view<float>& dlogits) override {
    return grpokit::host::fused_loss<P>(in, batch, cfg, dlogits);
  }
};

// --device cuda on a machine without a usable GPU.
struct no_gpu : std::runtime_error {
  using std::runtime_error::runtime_error;
};

#if defined(TRAIN_GRPO_WITH_CUDA)
// Defined in device_loss.cu for the policies of TRAIN_GRPO_POLICIES; throws no_gpu.
template <class P>
std::unique_ptr<loss_backend<P>> make_device_loss();
#endif

// Every policy the trainer instantiates (train_grpo.cpp's dispatch): X(baseline, mask).
#define TRAIN_GRPO_POLICIES_WITH(X, B) X(B, padding) X(B, trust_region) X(B, importance)
#define TRAIN_GRPO_POLICIES(X)                                                              \
  TRAIN_GRPO_POLICIES_WITH(X, mean) TRAIN_GRPO_POLICIES_WITH(X, median)                     \
  TRAIN_GRPO_POLICIES_WITH(X, leave_one_out) TRAIN_GRPO_POLICIES_WITH(X, ess_scaled)

}  // namespace train_grpo
