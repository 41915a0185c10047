#pragma once
// Argument bundles shared by grpokit::host and grpokit::device. All lengths are int64_t (T * V
// exceeds 2^31). Optional inputs are empty spans.
#include <cstdint>

#include "span.hpp"

namespace grpokit {

// A row-major [rows, cols] matrix with a row stride in elements (>= cols).
template <class T>
struct matrix_view {
  T* data = nullptr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t row_stride = 0;
  GRPOKIT_HD T* row(std::int64_t r) const { return data + r * row_stride; }
};

// Logits of the sampled positions and what is needed to turn them into log-probs.
template <class Storage, class Real>
struct logits_input {
  matrix_view<const Storage> logits;  // [T, V]
  span<const std::int64_t> targets;   // [T] sampled token ids, 0 <= id < V
  span<const Real> temperature;       // [T] per-token temperature, or empty: cfg.temperature
};

// Outputs of token_logprobs (entropy may be empty when not wanted).
template <class Real>
struct token_stats {
  span<Real> logp;     // [T]
  span<Real> entropy;  // [T] or empty
  span<Real> lse;      // [T] log-sum-exp of the (temperature-scaled) logits: saved for the backward
  // [T] or empty: sum_v p_v^2 (docs/fused_outputs.md), the optimal token baseline's input from the
  // old policy's forward; defaulted: the older three-field initialisers still compile
  span<Real> sum_p2 = {};
};

// The current policy's per-token values as policy_loss reads them.
template <class Real>
struct current_policy {
  span<const Real> logp;     // [T]
  span<const Real> entropy;  // [T], required when entropy_coef != 0
};

// Everything else a training step knows about its rollouts (packed layout).
template <class Real>
struct rollout_batch {
  span<const std::int64_t> seq_offsets;  // [S + 1]: sequence s owns tokens [off[s], off[s+1])
  span<const Real> adv;                  // [S] advantages (compute_advantages)
  span<const Real> logp_old;             // [T] pi_old; empty: on-policy, pi_old = sg(pi)
  span<const Real> logp_ref;             // [T] reference policy, required when cfg.kl != none
  span<const Real> logp_rollout;         // [T] inference engine, required by IS / TRM / importance
  span<const std::uint8_t> token_mask;   // [T] 1 = response token; empty: all
  span<const std::uint8_t> seq_mask;     // [S] 1 = in the loss (compute_advantages); empty: all
  // [S] 1 = a correct rollout, for VAPO's NLL (cfg.positive_nll_coef, which needs it); defaulted: the
  // older initialisers still compile
  span<const std::uint8_t> positive = {};
  // [T] advantages per token (optimal_token_baseline), or empty: adv[s] on every token of s. When
  // given they replace adv in the token terms (the surrogate, DPPO, KL-Cov / Clip-Cov, GMPO's clip,
  // a custom mask); adv stays the sequence's (OPSM's sign, the advantage metrics)
  span<const Real> token_adv = {};
};

// d loss / d logp and d loss / d entropy (written by policy_loss).
template <class Real>
struct policy_grads {
  span<Real> dlogp;     // [T]
  span<Real> dentropy;  // [T], required when entropy_coef != 0, else may be empty
};

// Advantage inputs: rewards of the S sequences, grouped by prompt.
template <class Real>
struct advantage_inputs {
  span<const Real> rewards;               // [S]
  span<const std::int64_t> group_offsets;  // [G + 1]: group g owns sequences [off[g], off[g+1])
  span<const Real> seq_log_ratio;         // [S] sum_t (logp - logp_rollout): ess_scaled (VCPO)
  span<const Real> seq_weight;            // [S] optional baseline weights W_i (ess_scaled)
  span<const Real> group_baseline = {};   // [G] the caller's baseline per group (baseline::external);
                                          // defaulted: the older four-field initialisers still compile
  span<const Real> seq_tokens = {};       // [S] response tokens of each rollout (>= 0): baseline::opo's
                                          // weights, adv_scale::whiten's; empty: whiten weighs rollouts alike
};

// Several rewards per rollout (compute_advantages_multi, GDPO): K rewards per rollout, their weights.
template <class Real>
struct multi_reward_inputs {
  matrix_view<const Real> rewards;         // [S, K]: row i holds rollout i's K rewards
  span<const std::int64_t> group_offsets;  // [G + 1]
  span<const double> weights;              // [K] in host memory (a few numbers), or empty: 1 each
  span<const Real> seq_tokens = {};        // [S] optional: the final whitening's weights (adv_scale::whiten)
};

template <class Real>
struct advantage_outputs {
  span<Real> adv;                 // [S]
  span<std::uint8_t> seq_mask;    // [S] 0 = excluded (pivot; zero-variance when masked)
};

// Per-row inputs of logits_backward: what token_logprobs saved and what policy_loss produced.
template <class Real>
struct backward_inputs {
  span<const Real> lse;       // [T]
  span<const Real> entropy;   // [T], required when dentropy is given
  span<const Real> dlogp;     // [T]
  span<const Real> dentropy;  // [T] or empty
};

// fused_linear_loss: the LM head applied to the hidden states, logits = hidden W^T (+ bias).
template <class Storage, class Real>
struct linear_input {
  matrix_view<const Storage> hidden;  // [T, D]
  matrix_view<const Storage> weight;  // [V, D] (a tied embedding works the same way)
  span<const Storage> bias;           // [V] or empty
  span<const std::int64_t> targets;   // [T]
  span<const Real> temperature;       // [T] or empty: cfg.temperature
};

// Gradients of fused_linear_loss. dhidden is overwritten; dweight (storage type) or dweight_acc
// (accumulation type: set exactly one) and dbias are ACCUMULATED (+=), so a tied embedding can
// pass its gradient buffer; zero them before the first call otherwise.
template <class Storage, class Real>
struct linear_grads {
  matrix_view<Storage> dhidden;   // [T, D] or data == nullptr: not wanted
  matrix_view<Storage> dweight;   // [V, D]
  matrix_view<Real> dweight_acc;  // [V, D]
  span<Real> dbias;               // [V] or empty
};

// Optional measurements of fused_linear_loss (host): squared norms of the LM-head weight gradient
// per rollout, per group and for the batch, in the scale of host::estimate_noise (a rollout's
// gradient g_s = S x its part of the batch gradient, so that mean_s g_s is the batch gradient):
//   rollout_sq[s]    = |S M_s|^2                      M_s = sum over s's tokens of dlogits_t hidden_t^T
//   group_mean_sq[g] = |(S / n_g) sum_{s in g} M_s|^2  the mean of the group's g_s
//   batch_mean_sq    = |mean over groups of the group means|^2
// Empty (the default): not computed, at no cost. docs/gradient_noise.md. The offsets are read on
// the host (the GEMMs are split there): device::fused_linear_loss takes host copies of them and
// writes the outputs to device memory.
struct lm_head_norms {
  span<const std::int64_t> group_offsets;     // [B + 1] over the sequences (groups of rollouts), host
  span<double> rollout_sq;                    // [S]
  span<double> group_mean_sq;                 // [B]
  double* batch_mean_sq = nullptr;
  span<const std::int64_t> host_seq_offsets;  // device only: batch.seq_offsets in host memory

  lm_head_norms() = default;
  lm_head_norms(span<const std::int64_t> group_offsets_, span<double> rollout_sq_, span<double> group_mean_sq_,
                double* batch_mean_sq_, span<const std::int64_t> host_seq_offsets_ = {})
      : group_offsets(group_offsets_),
        rollout_sq(rollout_sq_),
        group_mean_sq(group_mean_sq_),
        batch_mean_sq(batch_mean_sq_),
        host_seq_offsets(host_seq_offsets_) {}
  bool wanted() const { return batch_mean_sq != nullptr; }
};

// Optional per-token outputs of fused_loss / fused_linear_loss (empty spans: not wanted).
template <class Real>
struct fused_outputs {
  span<Real> logp;     // [T]
  span<Real> entropy;  // [T]
  span<Real> sum_p2;   // [T] sum_v p_v^2, the collision probability (docs/fused_outputs.md)

  // {logp, entropy} as before sum_p2 existed, without -Wmissing-field-initializers
  fused_outputs() = default;
  fused_outputs(span<Real> logp_, span<Real> entropy_ = {}, span<Real> sum_p2_ = {})
      : logp(logp_), entropy(entropy_), sum_p2(sum_p2_) {}
};

// Whether logits_backward may write dlogits over the logits.
enum class backward_mode { separate, in_place };

}  // namespace grpokit
