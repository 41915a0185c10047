#pragma once
// Run-time configuration: plain structs, no templates. Defaults follow verl where peers disagree;
// docs/ lists every convention and where TRL/verl differ.
#include <cstdint>
#include <limits>

#include "choices.hpp"

namespace grpokit {

// ---- advantages --------------------------------------------------------------------------

struct advantage_config {
  adv_scale scale = adv_scale::group;
  double eps = 1e-6;        // A = (r - b) / (spread + eps)              (verl 1e-6, TRL 1e-4)
  double std_floor = 0.0;   // spread = max(spread, std_floor), separate from eps (verl #6348)
  double mad_eps = 1e-3;    // median baseline: A = (r - med) / (MAD + mad_eps)   (MC-GRPO)
  bool mask_zero_variance = false;  // zero-variance and singleton groups: seq_mask = 0
  // ess_scaled (VCPO): multiply the advantages by lr_factor = sqrt(min(1, ESS/n / ess_ratio_ref)).
  // Equivalent to VCPO's learning-rate scaling only for plain SGD, not Adam.
  bool fold_lr_factor = false;
  double ess_ratio_ref = 1.0;  // VCPO base_ess_ratio (rho0)
  // A_i *= mean_group_size / n_g: every group (prompt) weighs the same in the policy gradient,
  // whatever its size (difficulty-sized groups, docs/group_plan.md); off: a group of n rollouts
  // weighs n times one rollout, as in GRPO
  bool equal_group_weight = false;
  // A = clamp(A, clip_low, clip_high), last (NeMo-RL grpo.advantage_clip_low / _high); the
  // infinities: no clipping. clip_low <= 0 <= clip_high.
  double clip_low = -std::numeric_limits<double>::infinity();
  double clip_high = std::numeric_limits<double>::infinity();
};

// ---- policy loss -------------------------------------------------------------------------

struct loss_config {
  // objective
  objective obj = objective::ppo_clip;
  double eps_low = 0.2;
  double eps_high = 0.2;
  double dual_clip = 3.0;  // c of the dual clip (A < 0); <= 1 disables it (verl: always on, 3.0)
  double delta = 0.0;      // INTELLECT-2 two-sided clip: r <- min(r, delta) in the unclipped term; 0 = off
  double log_ratio_clamp = 20.0;  // |logp - logp_old| clamp before exp (verl, OpenRLHF)
  double gspo_log_ratio_max = 10.0;  // upper clamp of the GSPO sequence log-ratio (verl)
  double tau_pos = 1.0;   // SAPO
  double tau_neg = 1.05;  // SAPO

  // importance sampling against the rollout policy
  is_correction is = is_correction::none;
  double is_min = 0.0;
  double is_max = 2.0;  // verl rollout_is_threshold
  double is_log_ratio_clamp = 20.0;  // verl SAFETY_BOUND
  // the IS weights divided by their mean over the whole batch (every rank), verl
  // rollout_is_batch_normalize: the mean over the response tokens but pruned ones (token levels) or the non-empty
  // sequences (sequence levels) of the truncated / masked weights, before the trust-region,
  // importance and DPPO masks; applied when it exceeds 1e-8. A pass over the batch before the loss.
  bool is_batch_normalize = false;

  // KL to the reference policy
  kl_estimator kl = kl_estimator::none;
  double kl_coef = 0.001;           // beta (verl kl_loss_coef)
  double kl_input_clamp = 20.0;     // k3: clamp of logp_ref - logp
  double kl_output_clamp = 10.0;    // k3: clamp of the estimate
  // the gradient of the KL term is k2's, logp - logp_ref, whatever the estimator's value (verl's
  // '+' suffix, k1+ / k3+: a straight-through unbiased gradient)
  bool kl_straight_through = false;
  // the KL term times the token ratio r = pi / pi_old, with its gradient (TRL use_bias_correction_kl,
  // slime use_unbiased_kl: the estimate under the sampling policy; on-policy the value is unchanged
  // and the gradient gains the score term kl)
  bool kl_is_weighted = false;

  // entropy bonus: loss -= entropy_coef * agg(H)
  double entropy_coef = 0.0;
  // the entropy bonus as a token mean (weights 1 / N_tokens) whatever agg is (TRL); off: agg's weights (verl)
  bool entropy_token_mean = false;
  // cispo: clip_frac_high counts every token whose weight the clip changes, whatever the sign of A,
  // and clip_frac_low is 0 (verl's pg_clipfrac); off: the PPO conditions of docs/objectives.md
  bool cispo_clip_frac_any_sign = false;

  // VAPO's positive-example NLL (NeMo-RL positive_example_nll_weight): loss += coef * the mean of
  // -logp over the response tokens of the positive rollouts (batch.positive), a mean over the whole
  // batch (every rank) times dp_size; vocabulary-pruned tokens have no log-prob and are left out.
  // 0: off.
  double positive_nll_coef = 0;

  // objective::kl_cov (verl compute_policy_loss_kl_cov): the max(1, floor(kl_cov_ratio N)) tokens
  // with the largest cov_t = (A_t - mean A)(logp_t - mean logp) over the N response tokens of the
  // whole batch (every rank; means over the same tokens, detached; ties to the earlier token) add
  // ppo_kl_coef |logp - logp_old| to -A r. kl_cov_ratio 0: none.
  double kl_cov_ratio = 2e-4;
  double ppo_kl_coef = 0.1;
  // objective::clip_cov (verl compute_policy_loss_clip_cov): of the response tokens with cov_t in
  // (clip_cov_lb, clip_cov_ub) that the PPO clip does not already hold, a uniform random
  // max(1, floor(clip_cov_ratio N)) (N: the response tokens) lose their policy-gradient term; the
  // subset is a function of clip_cov_seed and the tokens' positions (pass a new seed each step).
  double clip_cov_ratio = 2e-4;
  double clip_cov_lb = 1.0;
  double clip_cov_ub = 5.0;
  std::uint64_t clip_cov_seed = 0;

  // The top-entropy token mask (TRL top_entropy_quantile, "80/20" high-entropy minority tokens):
  // only the response tokens whose entropy is at least the (1 - this) quantile of the response
  // tokens' entropies over the whole batch (every rank; torch.quantile's linear interpolation)
  // keep their policy-gradient term; the KL and entropy terms and every denominator stay. Needs the
  // entropy input. 1: off; in [0, 1].
  double top_entropy_quantile = 1.0;

  // logits -> logp
  double temperature = 1.0;  // scalar; a per-token temperature span overrides it
  // The inference sampler's support (vLLM / NeMo-RL top-k then top-p on the temperature-scaled
  // logits, detail/sampler_support.hpp): log-probs, entropy and gradient over the columns the
  // sampler could draw, renormalised; a target outside has logp = -inf and is masked as pruned.
  // top_k: 0 = off (>= V: off); top_p in (0, 1], 1 = off.
  std::int64_t top_k = 0;
  double top_p = 1.0;

  // aggregation and global normalisers of a data-parallel trainer (0 = use the local count)
  aggregation agg = aggregation::token_mean;
  double global_tokens = 0;
  double global_seqs = 0;
  double norm_constant = 0;  // seq_mean_token_sum_norm: the constant (e.g. max response length)
  double dp_size = 1;        // the loss is multiplied by dp_size to undo DDP gradient averaging (verl)

  // masks (used when the policy's mask axis enables them)
  double trm_max_threshold = std::numeric_limits<double>::infinity();   // trust_region max criterion
  divergence trm_max_estimator = divergence::k1;
  double trm_mean_threshold = std::numeric_limits<double>::infinity();  // trust_region mean criterion
  divergence trm_mean_estimator = divergence::k3;
  double prune_rho = 1e-4;  // vocab_prune: keep v with p_v >= rho * max_u p_u
  bool importance_sequence = false;  // importance mask: geometric-mean sequence ratio instead of token
  double importance_lo = 0.5;
  double importance_hi = 2.0;
  // OPSM (off-policy sequence masking; DeepSeek-V3.2, TRL off_policy_mask_threshold, slime
  // opsm_delta): a sequence with A < 0 whose mean over its tokens of logp_sample - logp exceeds
  // this is dropped (logp_sample: logp_rollout, else logp_old, else logp). +inf: off. Any mask policy.
  double opsm_threshold = std::numeric_limits<double>::infinity();
  // M2PO (AReaL m2_threshold): over the whole batch (every rank), the response tokens with a
  // log-prob whose second moment (logp_rollout - logp_old)^2 is largest leave the loss until the
  // mean over the rest is below this (logp_old: the proximal policy, else logp). Equal values leave
  // or stay together; when no set qualifies, only the smallest value's tokens stay (AReaL keeps one
  // token). The denominators stay. Needs logp_rollout. +inf: off; >= 0. Any mask policy.
  double m2po_threshold = std::numeric_limits<double>::infinity();
  // DPPO trust mask (verl dppo_tv / dppo_kl, prime-rl's default loss): a token leaves the loss when
  // its sampled-token probability moved out of the trust region in the direction its advantage
  // pushes, against the anchor logp_old (else logp_rollout). tv: A > 0 drops p - p_a > dppo_high,
  // A <= 0 drops p - p_a < -dppo_low; binary_kl: the Bernoulli KL beyond the same bounds, with p
  // moving the same way. none: off. Any mask policy.
  dppo_divergence dppo = dppo_divergence::none;
  double dppo_low = 0.2;
  double dppo_high = 0.2;

  // input checking: non-finite logits / log-probs throw grpokit::error (host) or set a status (device)
  bool check_finite = true;

  advantage_config adv{};
};

}  // namespace grpokit
