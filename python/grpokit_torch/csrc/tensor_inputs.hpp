#pragma once
// Torch tensors as grpokit's inputs: each operator's tensors checked, converted (integers to int64,
// per-token and per-sequence values to the accumulation type, masks to bytes), made contiguous and
// viewed as spans. The same views serve the CPU operators (host memory) and the CUDA ones (device
// memory: device_call.cuh checks that every tensor is on the call's device).
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>
#include <tuple>

#include <grpokit/inputs.hpp>
#include <grpokit/metrics.hpp>
#include <grpokit/token_baseline.hpp>

namespace grpokit_torch {

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

inline at::ScalarType accum_of(at::ScalarType storage) { return storage == at::kDouble ? at::kDouble : at::kFloat; }

// The per-token inputs of rows and lm_head_rows: targets [T] as int64, per-token temperatures [T] in
// the accumulation type, or none.
struct token_inputs {
  at::Tensor targets, temperature;
  at::ScalarType accum;
  token_inputs(at::ScalarType storage, const at::Tensor& targets_, const c10::optional<at::Tensor>& temperature_)
      : targets(int64_vector("targets", targets_)), accum(accum_of(storage)) {
    if (temperature_.has_value()) temperature = temperature_->to(accum).contiguous();
  }
};

// The rows of a call: logits [T, V] (contiguous) and their token_inputs.
struct rows : token_inputs {
  at::Tensor logits;
  std::int64_t T = 0, V = 0;
  rows(const at::Tensor& logits_, const at::Tensor& targets_, const c10::optional<at::Tensor>& temperature_)
      : token_inputs(logits_.scalar_type(), targets_, temperature_) {
    TORCH_CHECK(logits_.dim() == 2, "grpokit: logits must be [T, V], got ", logits_.dim(), " dims");
    logits = logits_.contiguous();
    T = logits.size(0);
    V = logits.size(1);
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
  at::Tensor seq_offsets, adv, logp_old, logp_ref, logp_rollout, token_mask, seq_mask, positive, token_adv;
  batch(at::ScalarType accum, const at::Tensor& seq_offsets_, const at::Tensor& adv_,
        const c10::optional<at::Tensor>& old, const c10::optional<at::Tensor>& ref,
        const c10::optional<at::Tensor>& rollout, const c10::optional<at::Tensor>& token_mask_,
        const c10::optional<at::Tensor>& seq_mask_, const c10::optional<at::Tensor>& positive_,
        const c10::optional<at::Tensor>& token_adv_) {
    auto real = [&](const c10::optional<at::Tensor>& t) {
      return t.has_value() ? t->to(accum).contiguous() : at::Tensor();
    };
    auto bytes = [&](const c10::optional<at::Tensor>& t) {
      return t.has_value() ? t->to(at::kByte).contiguous() : at::Tensor();
    };
    seq_offsets = int64_vector("seq_offsets", seq_offsets_);
    adv = adv_.to(accum).contiguous();
    logp_old = real(old);
    logp_ref = real(ref);
    logp_rollout = real(rollout);
    token_mask = bytes(token_mask_);
    seq_mask = bytes(seq_mask_);
    positive = bytes(positive_);
    token_adv = real(token_adv_);
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
    b.positive = cspan_of<std::uint8_t>(positive);
    b.token_adv = cspan_of<R>(token_adv);
    return b;
  }
};

// hidden [T, D], weight [V, D] and bias [V] or none, all of one dtype (the storage type); targets
// [T]; per-token temperatures [T] or none.
struct lm_head_rows : token_inputs {
  at::Tensor hidden, weight, bias;
  std::int64_t T = 0, D = 0, V = 0;
  at::ScalarType storage;
  lm_head_rows(const at::Tensor& hidden_, const at::Tensor& weight_, const c10::optional<at::Tensor>& bias_,
               const at::Tensor& targets_, const c10::optional<at::Tensor>& temperature_)
      : token_inputs(hidden_.scalar_type(), targets_, temperature_) {
    TORCH_CHECK(hidden_.dim() == 2, "grpokit: hidden must be [T, D], got ", hidden_.dim(), " dims");
    TORCH_CHECK(weight_.dim() == 2 && weight_.size(1) == hidden_.size(1), "grpokit: weight must be [V, D] with D = ",
                hidden_.size(1), " (hidden's), got ", weight_.sizes());
    storage = hidden_.scalar_type();
    TORCH_CHECK(weight_.scalar_type() == storage, "grpokit: weight must have hidden's dtype ", storage, ", got ",
                weight_.scalar_type());
    hidden = hidden_.contiguous();
    weight = weight_.contiguous();
    T = hidden.size(0);
    D = hidden.size(1);
    V = weight.size(0);
    if (bias_.has_value()) {
      TORCH_CHECK(bias_->dim() == 1 && bias_->size(0) == V, "grpokit: bias must be [V] with V = ", V, ", got ",
                  bias_->sizes());
      TORCH_CHECK(bias_->scalar_type() == storage, "grpokit: bias must have hidden's dtype ", storage, ", got ",
                  bias_->scalar_type());
      bias = bias_->contiguous();
    }
  }
  template <class P>
  grpokit::linear_input<grpokit::storage_t<P>, grpokit::accum_t<P>> input() const {
    using S = grpokit::storage_t<P>;
    using R = grpokit::accum_t<P>;
    return {{reinterpret_cast<const S*>(hidden.data_ptr()), T, D, D},
            {reinterpret_cast<const S*>(weight.data_ptr()), V, D, D},
            cspan_of<S>(bias),
            cspan_of<std::int64_t>(targets),
            cspan_of<R>(temperature)};
  }
};

// The outputs of fused_linear_loss. The weight and bias gradients are sums over every token:
// accumulated in the accumulation type (fused_linear_loss adds into them: zeroed first), returned
// in the parameters' dtype.
struct linear_outputs {
  at::Tensor dhidden, dweight, dbias, logp, entropy;
  explicit linear_outputs(const lm_head_rows& r) {
    const at::TensorOptions acc = r.hidden.options().dtype(r.accum);
    dhidden = at::empty_like(r.hidden);
    dweight = at::zeros({r.V, r.D}, acc);
    dbias = at::zeros({r.bias.defined() ? r.V : 0}, acc);
    logp = at::empty({r.T}, acc);
    entropy = at::empty({r.T}, acc);
  }
  template <class P>
  grpokit::linear_grads<grpokit::storage_t<P>, grpokit::accum_t<P>> grads() const {
    using S = grpokit::storage_t<P>;
    using R = grpokit::accum_t<P>;
    grpokit::linear_grads<S, R> g;
    g.dhidden = {reinterpret_cast<S*>(dhidden.data_ptr()), dhidden.size(0), dhidden.size(1), dhidden.size(1)};
    g.dweight_acc = {dweight.data_ptr<R>(), dweight.size(0), dweight.size(1), dweight.size(1)};
    g.dbias = span_of<R>(dbias);
    return g;
  }
  template <class P>
  grpokit::fused_outputs<grpokit::accum_t<P>> extra() const {
    using R = grpokit::accum_t<P>;
    return {span_of<R>(logp), span_of<R>(entropy)};
  }
  // the operator's outputs: loss, metrics, dhidden, dweight, dbias, logp, entropy
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> returned(
      const at::Tensor& loss, const at::Tensor& metrics) const {
    const at::ScalarType storage = dhidden.scalar_type();
    return {loss, metrics, dhidden, dweight.to(storage), dbias.to(storage), logp, entropy};
  }
};

// The inputs of compute_advantages: rewards [S] (float32 or float64: the precision), group offsets,
// and the optional per-sequence inputs in the rewards' dtype (seq_tokens, counts, too).
struct advantage_tensors {
  at::Tensor rewards, group_offsets, seq_log_ratio, seq_weight, group_baseline, seq_tokens;
  advantage_tensors(const at::Tensor& rewards_, const at::Tensor& group_offsets_,
                    const c10::optional<at::Tensor>& seq_log_ratio_, const c10::optional<at::Tensor>& seq_weight_,
                    const c10::optional<at::Tensor>& group_baseline_, const c10::optional<at::Tensor>& seq_tokens_) {
    TORCH_CHECK(rewards_.dim() == 1, "grpokit.compute_advantages: rewards must be 1-D, got ", rewards_.dim(), " dims");
    TORCH_CHECK(rewards_.scalar_type() == at::kFloat || rewards_.scalar_type() == at::kDouble,
                "grpokit.compute_advantages: rewards must be float32 or float64, got ", rewards_.scalar_type());
    rewards = rewards_.contiguous();
    group_offsets = int64_vector("group_offsets", group_offsets_);
    auto same = [&](const c10::optional<at::Tensor>& t) {
      return t.has_value() ? t->to(rewards.scalar_type()).contiguous() : at::Tensor();
    };
    seq_log_ratio = same(seq_log_ratio_);
    seq_weight = same(seq_weight_);
    group_baseline = same(group_baseline_);
    seq_tokens = same(seq_tokens_);
  }
  template <class R>
  grpokit::advantage_inputs<R> get() const {
    return {cspan_of<R>(rewards), cspan_of<std::int64_t>(group_offsets), cspan_of<R>(seq_log_ratio),
            cspan_of<R>(seq_weight), cspan_of<R>(group_baseline), cspan_of<R>(seq_tokens)};
  }
};

// optimal_token_baseline's inputs: token_rewards [T] (float32 / float64) and the per-token inputs
// in its dtype, the offsets as int64, the mask as bytes.
struct token_baseline_tensors {
  at::Tensor rewards, seq_offsets, group_offsets, logp_old, sum_p2, is_weights, token_mask;
  token_baseline_tensors(const at::Tensor& rewards_, const at::Tensor& seq_offsets_, const at::Tensor& group_offsets_,
                         const at::Tensor& logp_old_, const at::Tensor& sum_p2_,
                         const c10::optional<at::Tensor>& is_weights_, const c10::optional<at::Tensor>& token_mask_) {
    TORCH_CHECK(rewards_.dim() == 1, "grpokit.optimal_token_baseline: token_rewards must be 1-D, got ", rewards_.dim(),
                " dims");
    TORCH_CHECK(rewards_.scalar_type() == at::kFloat || rewards_.scalar_type() == at::kDouble,
                "grpokit.optimal_token_baseline: token_rewards must be float32 or float64, got ", rewards_.scalar_type());
    rewards = rewards_.contiguous();
    seq_offsets = int64_vector("seq_offsets", seq_offsets_);
    group_offsets = int64_vector("group_offsets", group_offsets_);
    logp_old = logp_old_.to(rewards.scalar_type()).contiguous();
    sum_p2 = sum_p2_.to(rewards.scalar_type()).contiguous();
    is_weights = is_weights_.has_value() ? is_weights_->to(rewards.scalar_type()).contiguous() : at::Tensor();
    token_mask = token_mask_.has_value() ? token_mask_->to(at::kByte).contiguous() : at::Tensor();
  }
  template <class R>
  grpokit::token_baseline_inputs<R> get() const {
    return {cspan_of<R>(rewards),  cspan_of<std::int64_t>(seq_offsets), cspan_of<std::int64_t>(group_offsets),
            cspan_of<R>(logp_old), cspan_of<R>(sum_p2),                 cspan_of<R>(is_weights),
            cspan_of<std::uint8_t>(token_mask)};
  }
};

// compute_advantages_multi's inputs: rewards [S, K] (float32 / float64), the weights as numbers.
struct multi_reward_tensors {
  at::Tensor rewards, group_offsets, seq_tokens;
  std::vector<double> weights;
  multi_reward_tensors(const at::Tensor& rewards_, const at::Tensor& group_offsets_, c10::ArrayRef<double> weights_,
                       const c10::optional<at::Tensor>& seq_tokens_)
      : weights(weights_.vec()) {
    TORCH_CHECK(rewards_.dim() == 2, "grpokit.compute_advantages_multi: rewards must be 2-D [S, K], got ",
                rewards_.dim(), " dims");
    TORCH_CHECK(rewards_.scalar_type() == at::kFloat || rewards_.scalar_type() == at::kDouble,
                "grpokit.compute_advantages_multi: rewards must be float32 or float64, got ", rewards_.scalar_type());
    rewards = rewards_.contiguous();
    group_offsets = int64_vector("group_offsets", group_offsets_);
    seq_tokens = seq_tokens_.has_value() ? seq_tokens_->to(rewards.scalar_type()).contiguous() : at::Tensor();
  }
  std::int64_t rows() const { return rewards.size(0); }
  template <class R>
  grpokit::multi_reward_inputs<R> get() const {
    const std::int64_t K = rewards.size(1);
    return {{static_cast<const R*>(rewards.data_ptr()), rows(), K, K}, cspan_of<std::int64_t>(group_offsets),
            {weights.data(), static_cast<std::int64_t>(weights.size())}, cspan_of<R>(seq_tokens)};
  }
};

}  // namespace grpokit_torch
