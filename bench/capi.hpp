// A C ABI over grpokit's fused loss for the Python benchmarks (ctypes): one GRPO/DAPO-style
// configuration with the knobs the PyTorch reference in peers.py implements.
#pragma once
#include <cstdint>

#include <grpokit/grpokit.hpp>

extern "C" {
// All pointers of one call; host memory for grpokit_host_*, device memory for grpokit_device_*.
struct grpokit_bench_args {
  const void* logits;            // [T, V] float (dtype 0) or bf16 (dtype 1)
  std::int64_t T, V;
  const std::int64_t* targets;   // [T]
  const std::int64_t* seq_offsets;  // [S + 1]
  std::int64_t S;
  const float* adv;              // [S]
  const float* logp_old;         // [T]
  const float* logp_ref;         // [T] or null (beta = 0)
  void* dlogits;                 // [T, V], same dtype as logits
  float* logp_out;               // [T] or null
  double temperature, eps_low, eps_high, dual_clip, beta;
  int dtype;                     // 0 fp32, 1 bf16
  void* workspace;               // device only
  std::size_t workspace_bytes;   // device only
  void* stream;                  // device only (cudaStream_t)
};

// compute_advantages: fp32 rewards of G groups (offsets [G + 1]), baseline 0 = mean (GRPO), 1 =
// median (MC-GRPO); the default advantage_config (scale by the group's spread, eps 1e-6).
struct grpokit_bench_advantages_args {
  const float* rewards;           // [S]
  const std::int64_t* offsets;    // [G + 1]
  std::int64_t S, G;
  int baseline;
  float* adv;                     // [S]
  std::uint8_t* keep;             // [S]
  void* workspace;                // device only
  std::size_t workspace_bytes;    // device only
  void* stream;                   // device only; the device call does not synchronise
};

// fused_linear_loss: logits = hidden W^T; the other fields as above (logits/dlogits unused).
struct grpokit_bench_linear_args {
  grpokit_bench_args base;
  const void* hidden;            // [T, D]
  const void* weight;            // [V, D]
  std::int64_t D;
  void* dhidden;                 // [T, D]
  float* dweight;                // [V, D] fp32, accumulated
  std::int64_t token_chunk;
};
}

namespace grpokit_bench {

template <class B>
using advantages_policy = grpokit::policy<grpokit::precision<float, float>, B>;

inline grpokit::advantage_inputs<float> advantage_inputs(const grpokit_bench_advantages_args& a) {
  return {{a.rewards, a.S}, {a.offsets, a.G + 1}, {}, {}, {}};
}
inline grpokit::advantage_outputs<float> advantage_outputs(const grpokit_bench_advantages_args& a) {
  return {{a.adv, a.S}, {a.keep, a.S}};
}

inline grpokit::loss_config config(const grpokit_bench_args& a) {
  grpokit::loss_config c;
  c.temperature = a.temperature;
  c.eps_low = a.eps_low;
  c.eps_high = a.eps_high;
  c.dual_clip = a.dual_clip;
  c.kl = a.beta > 0 ? grpokit::kl_estimator::k3 : grpokit::kl_estimator::none;
  c.kl_coef = a.beta;
  c.agg = grpokit::aggregation::token_mean;
  return c;
}

template <class Real>
grpokit::rollout_batch<Real> batch(const grpokit_bench_args& a) {
  grpokit::rollout_batch<Real> b;
  b.seq_offsets = {a.seq_offsets, a.S + 1};
  b.adv = {a.adv, a.S};
  b.logp_old = {a.logp_old, a.T};
  if (a.logp_ref) b.logp_ref = {a.logp_ref, a.T};
  return b;
}

}  // namespace grpokit_bench
