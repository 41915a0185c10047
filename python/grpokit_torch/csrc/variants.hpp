#pragma once
// The fixed set of policies the operators are built for (docs/pytorch.md), chosen at run time from
// the tensors' dtype and the `reduction`, `mask` and `baseline` strings; the metrics as tensors.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cuda_bf16.h>

#include <cstdint>
#include <string>
#include <vector>

#include <grpokit/grpokit.hpp>

#include "result_values.hpp"
#include "tensor_inputs.hpp"

namespace grpokit_torch {

// The built set (each is a compiled instantiation of every operator).
inline std::vector<std::string> reduction_names() { return {"deterministic", "batch_invariant"}; }
inline std::vector<std::string> mask_names() { return {"padding", "trust_region", "vocab_prune"}; }
inline std::vector<std::string> baseline_names() {
  return {"mean", "median", "leave_one_out", "ess_scaled", "external", "pass_at_k", "opo"};
}
// "a, b, c": the names an error message offers
inline std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// rows_only: the call computes rows only (token_logprobs), where a sequence mask changes nothing:
// trust_region runs as padding.
template <class Precision, class Reduction, bool rows_only, class F>
void with_mask(const std::string& mask, F&& f) {
  namespace mk = grpokit::mask;
  if (mask == "padding" || (rows_only && mask == "trust_region"))
    return f(grpokit::policy<Precision, Reduction, mk::padding>{});
  if constexpr (!rows_only) {
    if (mask == "trust_region") return f(grpokit::policy<Precision, Reduction, mk::trust_region>{});
  }
  if (mask == "vocab_prune") return f(grpokit::policy<Precision, Reduction, mk::vocab_prune>{});
  TORCH_CHECK(false, "grpokit: mask must be one of ", joined(mask_names()), "; got '", mask, "'");
}

template <class Precision, bool rows_only, class F>
void with_reduction(const std::string& reduction, const std::string& mask, F&& f) {
  namespace rd = grpokit::reduction;
  if (reduction == "deterministic") return with_mask<Precision, rd::deterministic, rows_only>(mask, f);
  if (reduction == "batch_invariant") return with_mask<Precision, rd::batch_invariant, rows_only>(mask, f);
  TORCH_CHECK(false, "grpokit: reduction must be one of ", joined(reduction_names()), "; got '", reduction, "'");
}

// The logits' dtype is the storage type; the accumulation is float64 for float64 logits, float32
// otherwise (accum_of).
template <bool rows_only = false, class F>
void with_policy(at::ScalarType logits, const std::string& reduction, const std::string& mask, F&& f) {
  switch (logits) {
    case at::kFloat: return with_reduction<grpokit::precision<float, float>, rows_only>(reduction, mask, f);
    case at::kBFloat16:
      return with_reduction<grpokit::precision<__nv_bfloat16, float>, rows_only>(reduction, mask, f);
    case at::kDouble: return with_reduction<grpokit::precision<double, double>, rows_only>(reduction, mask, f);
    default: TORCH_CHECK(false, "grpokit: logits must be float32, bfloat16 or float64, got ", logits);
  }
}

template <class Precision, class F>
void with_baseline_of(const std::string& baseline, F&& f) {
  namespace bl = grpokit::baseline;
  if (baseline == "mean") return f(grpokit::policy<Precision, bl::mean>{});
  if (baseline == "median") return f(grpokit::policy<Precision, bl::median>{});
  if (baseline == "leave_one_out") return f(grpokit::policy<Precision, bl::leave_one_out>{});
  if (baseline == "ess_scaled") return f(grpokit::policy<Precision, bl::ess_scaled>{});
  if (baseline == "external") return f(grpokit::policy<Precision, bl::external>{});
  if (baseline == "pass_at_k") return f(grpokit::policy<Precision, bl::pass_at_k>{});
  if (baseline == "opo") return f(grpokit::policy<Precision, bl::opo>{});
  TORCH_CHECK(false, "grpokit: baseline must be one of ", joined(baseline_names()), "; got '", baseline, "'");
}
template <class F>
void with_baseline(at::ScalarType rewards, const std::string& baseline, F&& f) {
  if (rewards == at::kDouble) return with_baseline_of<grpokit::precision<double, double>>(baseline, f);
  return with_baseline_of<grpokit::precision<float, float>>(baseline, f);
}
// compute_advantages_multi: the baselines that take the rewards alone (a clear error for the others).
template <class F>
void with_multi_reward_baseline(at::ScalarType rewards, const std::string& baseline, F&& f) {
  with_baseline(rewards, baseline, [&](auto tag) {
    using P = decltype(tag);
    if constexpr (grpokit::detail::takes_rewards_only<typename P::baseline_type>)
      f(tag);
    else
      TORCH_CHECK(false, "grpokit.compute_advantages_multi: baseline '", baseline,
                  "' needs per-rollout log-ratios or per-group baselines, which it does not take");
  });
}


// The metrics and the advantage statistics as float64 tensors on the CPU (result_values.hpp).
inline at::Tensor metrics_tensor(const grpokit::loss_result& r) {
  at::Tensor t = at::empty({metric_count}, at::TensorOptions().dtype(at::kDouble));
  write_metrics(r, t.data_ptr<double>());
  return t;
}
inline at::Tensor advantage_stats_tensor(const grpokit::advantage_stats& s) {
  at::Tensor t = at::empty({advantage_stat_count}, at::TensorOptions().dtype(at::kDouble));
  write_advantage_stats(s, t.data_ptr<double>());
  return t;
}
inline at::Tensor token_baseline_stats_tensor(const grpokit::token_baseline_stats& s) {
  at::Tensor t = at::empty({token_baseline_stat_count}, at::TensorOptions().dtype(at::kDouble));
  write_token_baseline_stats(s, t.data_ptr<double>());
  return t;
}

}  // namespace grpokit_torch
