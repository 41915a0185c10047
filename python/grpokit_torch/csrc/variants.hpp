#pragma once
// The fixed set of policies the operators are built for (docs/pytorch.md), chosen at run time from
// the tensors' dtype and the `reduction`, `mask` and `baseline` strings; and the views of torch
// tensors as grpokit inputs.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <grpokit/grpokit.hpp>

namespace grpokit_torch {

// The built set (each is a compiled instantiation of every operator).
inline std::vector<std::string> reduction_names() { return {"deterministic", "batch_invariant"}; }
inline std::vector<std::string> mask_names() { return {"padding", "trust_region", "vocab_prune"}; }
inline std::vector<std::string> baseline_names() { return {"mean", "median", "leave_one_out", "ess_scaled", "external"}; }

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
  TORCH_CHECK(false, "grpokit: mask must be one of padding, trust_region, vocab_prune; got '", mask, "'");
}

template <class Precision, bool rows_only, class F>
void with_reduction(const std::string& reduction, const std::string& mask, F&& f) {
  namespace rd = grpokit::reduction;
  if (reduction == "deterministic") return with_mask<Precision, rd::deterministic, rows_only>(mask, f);
  if (reduction == "batch_invariant") return with_mask<Precision, rd::batch_invariant, rows_only>(mask, f);
  TORCH_CHECK(false, "grpokit: reduction must be deterministic or batch_invariant; got '", reduction, "'");
}

// The logits' dtype is the storage type; the accumulation is float64 for float64 logits, float32
// otherwise.
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
  TORCH_CHECK(false, "grpokit: baseline must be one of mean, median, leave_one_out, ess_scaled, external; got '",
              baseline, "'");
}
template <class F>
void with_baseline(at::ScalarType rewards, const std::string& baseline, F&& f) {
  if (rewards == at::kDouble) return with_baseline_of<grpokit::precision<double, double>>(baseline, f);
  return with_baseline_of<grpokit::precision<float, float>>(baseline, f);
}

// A contiguous tensor's elements (an undefined tensor: empty).
template <class T>
grpokit::span<T> span_of(const at::Tensor& t) {
  if (!t.defined()) return {};
  return {reinterpret_cast<T*>(t.data_ptr()), t.numel()};
}
template <class T>
grpokit::span<const T> cspan_of(const at::Tensor& t) {
  return span_of<T>(t);
}

inline at::Tensor int64_vector(const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 1, "grpokit: ", name, " must be 1-D, got ", t.dim(), " dims");
  TORCH_CHECK(!at::isFloatingType(t.scalar_type()), "grpokit: ", name, " must hold integers, got ", t.scalar_type());
  return t.to(at::kLong).contiguous();
}

// The rows of a call: logits [T, V] (contiguous), targets [T], per-token temperatures [T] or none.
struct rows {
  at::Tensor logits, targets, temperature;
  std::int64_t T = 0, V = 0;
  at::ScalarType accum;
  rows(const at::Tensor& logits_, const at::Tensor& targets_, const c10::optional<at::Tensor>& temperature_) {
    TORCH_CHECK(logits_.dim() == 2, "grpokit: logits must be [T, V], got ", logits_.dim(), " dims");
    logits = logits_.contiguous();
    T = logits.size(0);
    V = logits.size(1);
    accum = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    targets = int64_vector("targets", targets_);
    if (temperature_.has_value()) temperature = temperature_->to(accum).contiguous();
  }
  template <class P>
  grpokit::logits_input<grpokit::storage_t<P>, grpokit::accum_t<P>> input() const {
    using S = grpokit::storage_t<P>;
    using R = grpokit::accum_t<P>;
    return {{reinterpret_cast<const S*>(logits.data_ptr()), T, V, V}, cspan_of<std::int64_t>(targets),
            cspan_of<R>(temperature)};
  }
};

// The batch of policy_loss, in the accumulation type (masks as bytes).
struct batch {
  at::Tensor seq_offsets, adv, logp_old, logp_ref, logp_rollout, token_mask, seq_mask;
  batch(const rows& r, const at::Tensor& seq_offsets_, const at::Tensor& adv_, const c10::optional<at::Tensor>& old,
        const c10::optional<at::Tensor>& ref, const c10::optional<at::Tensor>& rollout,
        const c10::optional<at::Tensor>& token_mask_, const c10::optional<at::Tensor>& seq_mask_) {
    auto real = [&](const c10::optional<at::Tensor>& t) {
      return t.has_value() ? t->to(r.accum).contiguous() : at::Tensor();
    };
    auto bytes = [&](const c10::optional<at::Tensor>& t) {
      return t.has_value() ? t->to(at::kByte).contiguous() : at::Tensor();
    };
    seq_offsets = int64_vector("seq_offsets", seq_offsets_);
    adv = adv_.to(r.accum).contiguous();
    logp_old = real(old);
    logp_ref = real(ref);
    logp_rollout = real(rollout);
    token_mask = bytes(token_mask_);
    seq_mask = bytes(seq_mask_);
  }
  template <class R>
  grpokit::rollout_batch<R> get() const {
    grpokit::rollout_batch<R> b;
    b.seq_offsets = cspan_of<std::int64_t>(seq_offsets);
    b.adv = cspan_of<R>(adv);
    b.logp_old = cspan_of<R>(logp_old);
    b.logp_ref = cspan_of<R>(logp_ref);
    b.logp_rollout = cspan_of<R>(logp_rollout);
    b.token_mask = cspan_of<std::uint8_t>(token_mask);
    b.seq_mask = cspan_of<std::uint8_t>(seq_mask);
    return b;
  }
};

// loss_result as numbers: the loss then loss_metrics' fields, in declaration order.
inline std::vector<std::string> metric_names() {
  return {"loss",          "loss_pg",          "loss_kl",         "loss_entropy",    "clip_frac_low",
          "clip_frac_high", "clip_frac_dual",  "approx_kl_old",   "kl_ref",          "entropy_mean",
          "tokens",        "tokens_kept",      "seqs",            "masked_tokens_padding",
          "masked_tokens_vocab_prune",         "masked_tokens_importance",           "masked_tokens_custom",
          "masked_tokens_sequence",            "masked_seqs_advantage",              "masked_seqs_trust_region",
          "masked_seqs_importance",            "mismatch_abs_mean", "mismatch_abs_max", "mismatch_k3",
          "is_weight_min", "is_weight_mean",   "is_weight_max",   "is_ess",          "adv_mean",
          "adv_std"};
}
inline std::vector<double> metric_values(const grpokit::loss_result& r) {
  const grpokit::loss_metrics& m = r.metrics;
  auto d = [](std::int64_t x) { return static_cast<double>(x); };
  return {r.loss,           m.loss_pg,          m.loss_kl,         m.loss_entropy,    m.clip_frac_low,
          m.clip_frac_high, m.clip_frac_dual,   m.approx_kl_old,   m.kl_ref,          m.entropy_mean,
          d(m.tokens),      d(m.tokens_kept),   d(m.seqs),         d(m.masked_tokens_padding),
          d(m.masked_tokens_vocab_prune),       d(m.masked_tokens_importance),        d(m.masked_tokens_custom),
          d(m.masked_tokens_sequence),          d(m.masked_seqs_advantage),           d(m.masked_seqs_trust_region),
          d(m.masked_seqs_importance),          m.mismatch_abs_mean, m.mismatch_abs_max, m.mismatch_k3,
          m.is_weight_min,  m.is_weight_mean,   m.is_weight_max,   m.is_ess,          m.adv_mean,
          m.adv_std};
}
static_assert(sizeof(grpokit::loss_metrics) == 29 * 8, "metric_names / metric_values: add the new metric");

inline std::vector<std::string> advantage_stat_names() {
  return {"groups",   "zero_variance_groups", "singleton_groups", "excluded_seqs", "reward_mean", "reward_std",
          "adv_mean", "adv_std",              "ess",              "ess_ratio",     "lr_factor"};
}
inline std::vector<double> advantage_stat_values(const grpokit::advantage_stats& s) {
  auto d = [](std::int64_t x) { return static_cast<double>(x); };
  return {d(s.groups),  d(s.zero_variance_groups), d(s.singleton_groups), d(s.excluded_seqs), s.reward_mean,
          s.reward_std, s.adv_mean,                s.adv_std,             s.ess,              s.ess_ratio,
          s.lr_factor};
}
static_assert(sizeof(grpokit::advantage_stats) == 11 * 8, "advantage_stat_names / values: add the new statistic");

inline at::Tensor float64_tensor(const std::vector<double>& v) {
  at::Tensor t = at::empty({static_cast<std::int64_t>(v.size())}, at::TensorOptions().dtype(at::kDouble));
  std::copy(v.begin(), v.end(), t.data_ptr<double>());
  return t;
}

}  // namespace grpokit_torch
