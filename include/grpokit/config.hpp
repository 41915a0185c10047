#pragma once
// Run-time configuration: plain structs, no templates. Defaults follow verl where peers disagree;
// docs/ lists every convention and where TRL/verl differ.
#include <cstdint>
#include <limits>

namespace grpokit {

// ---- advantages --------------------------------------------------------------------------

// How the centred rewards of a group are scaled.
enum class adv_scale {
  group,  // divide by the group's spread: Bessel std (mean, leave_one_out, ess_scaled), MAD (median)
  batch,  // divide by the Bessel std of all rewards of the batch (TRL scale_rewards="batch")
  none,   // no scaling (Dr. GRPO)
};

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
};

// ---- policy loss -------------------------------------------------------------------------

enum class objective {
  ppo_clip,   // -min(r A, clip(r, 1-eps_low, 1+eps_high) A), dual clip c for A < 0, optional delta
  cispo,      // -sg(clip(r, 1-eps_low, 1+eps_high)) A logp
  gspo,       // PPO clip on the sequence ratio exp(mean_t (logp - logp_old)), GSPO-token gradient
  sapo,       // -sigmoid(tau (r - 1)) 4/tau A, tau = tau_pos for A > 0 else tau_neg
  reinforce,  // -A logp
};

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

  // KL to the reference policy
  kl_estimator kl = kl_estimator::none;
  double kl_coef = 0.001;           // beta (verl kl_loss_coef)
  double kl_input_clamp = 20.0;     // k3: clamp of logp_ref - logp
  double kl_output_clamp = 10.0;    // k3: clamp of the estimate

  // entropy bonus: loss -= entropy_coef * agg(H)
  double entropy_coef = 0.0;

  // logits -> logp
  double temperature = 1.0;  // scalar; a per-token temperature span overrides it

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

  // input checking: non-finite logits / log-probs throw grpokit::error (host) or set a status (device)
  bool check_finite = true;

  advantage_config adv{};
};

}  // namespace grpokit
