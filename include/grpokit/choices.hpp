#pragma once
// The run-time choices of loss_config and advantage_config (config.hpp), on their own so that the
// math headers can name them without the user-facing config structs.

namespace grpokit {

// How the centred rewards of a group are scaled.
enum class adv_scale {
  group,  // divide by the group's spread: Bessel std (mean, leave_one_out, ess_scaled), MAD (median)
  batch,  // divide by the Bessel std of all rewards of the batch (TRL scale_rewards="batch")
  none,   // no scaling (Dr. GRPO)
  gpg,    // multiply by alpha = B / #(r != 0) over the batch's B rewards (GPG; verl adv_estimator=gpg)
  whiten, // (r - b - mu) / (sigma + eps), mu, sigma the token-weighted mean and Bessel std of r - b
          // over the batch (REINFORCE++-baseline; verl masked_whiten)
};

enum class objective {
  ppo_clip,   // -min(r A, clip(r, 1-eps_low, 1+eps_high) A), dual clip c for A < 0, optional delta
  cispo,      // -sg(clip(r, 1-eps_low, 1+eps_high)) A logp
  gspo,       // PPO clip on the sequence ratio exp(mean_t (logp - logp_old)), GSPO-token gradient
  sapo,       // -sigmoid(tau (r - 1)) 4/tau A, tau = tau_pos for A > 0 else tau_neg
  reinforce,  // -A logp
  gmpo,       // -A exp(mean_t clip_A(logp - logp_old)), the clip sign-aware in log space (GMPO; verl geo_mean)
  kl_cov,     // -A r, plus ppo_kl_coef |logp - logp_old| on the top kl_cov_ratio tokens by covariance (verl kl_cov)
  clip_cov,   // PPO clip (no dual clip, no delta), a random clip_cov_ratio of the tokens with covariance in
              // (clip_cov_lb, clip_cov_ub) detached (verl clip_cov)
};

// The trust region of the DPPO mask (verl dppo_tv / dppo_kl, prime-rl), on the sampled token's
// probability p against the anchor's p_a: tv: p - p_a; binary_kl: KL(Bernoulli(p_a) || Bernoulli(p)).
enum class dppo_divergence { none, tv, binary_kl };

// Importance-sampling correction against the rollout (inference-engine) policy, detached.
// The log-ratio is logp_old - logp_rollout (logp when logp_old is absent, i.e. bypass mode).
enum class is_correction {
  none,
  token_truncate,     // w_t = clamp(exp(d_t), is_min, is_max)
  sequence_truncate,  // w_i = clamp(exp(sum_t d_t), is_min, is_max)  (product of token ratios)
  token_mask,         // w_t = exp(d_t) if is_min <= exp(d_t) <= is_max else 0   (IcePop)
  sequence_mask,      // the same with the sequence product
};

enum class kl_estimator {
  none,
  k1,  // logp - logp_ref
  k2,  // (logp - logp_ref)^2 / 2
  k3,  // exp(d) - d - 1, d = logp_ref - logp (verl low_var_kl)
};

enum class aggregation {
  token_mean,               // sum_t m x / N_tokens
  token_sum,                // sum_t m x
  seq_mean_token_mean,      // sum_i (sum_t m x / |y_i|) / N_seqs
  seq_mean_token_sum,       // sum_i sum_t m x / N_seqs
  seq_mean_token_sum_norm,  // sum_i sum_t m x / (N_seqs * norm_constant)    (Dr. GRPO)
};

// Estimator of the sampled-token divergence between the rollout and the trainer's policy
// (d_t = clamp(logp_trainer - logp_rollout, +-20), rho = exp(d)): k1 = |d| (max criterion) or
// |mean d| (mean criterion), k2 = d^2/2, k3 = rho - 1 - log rho.
enum class divergence { k1, k2, k3 };

}  // namespace grpokit
