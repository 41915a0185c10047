#pragma once
// What a trainer logs: returned by policy_loss / fused_loss and compute_advantages.
#include <cstdint>

namespace grpokit {

struct loss_metrics {
  // loss components (already aggregated and scaled: loss = pg + kl + entropy + nll)
  double loss_pg = 0, loss_kl = 0, loss_entropy = 0;
  double loss_nll = 0;  // VAPO's positive-example NLL (positive_nll_coef)
  // fractions of the kept tokens
  double clip_frac_low = 0, clip_frac_high = 0, clip_frac_dual = 0;
  double approx_kl_old = 0;  // mean(logp_old - logp) (verl ppo_kl); 0 on-policy
  double kl_ref = 0;         // mean of the configured estimator (k3 when kl == none and logp_ref given)
  double entropy_mean = 0;
  // counts
  std::int64_t tokens = 0;       // response tokens of sequences in the loss (the local denominator)
  std::int64_t tokens_kept = 0;  // ... after every mask
  std::int64_t seqs = 0;         // non-empty sequences in the loss
  std::int64_t masked_tokens_padding = 0;     // token_mask == 0 or seq_mask == 0
  std::int64_t masked_tokens_vocab_prune = 0;  // sampled token outside the safe vocabulary
  std::int64_t masked_tokens_importance = 0;  // token-level importance mask
  std::int64_t masked_tokens_custom = 0;      // a user-defined mask's keep() == false
  std::int64_t masked_tokens_dppo = 0;        // outside the DPPO trust region (cfg.dppo)
  std::int64_t masked_tokens_m2po = 0;        // the largest second moments (cfg.m2po_threshold)
  std::int64_t masked_tokens_sequence = 0;    // tokens of sequences dropped by TRM / importance / OPSM
  std::int64_t masked_tokens_entropy = 0;     // kept tokens without a policy-gradient term (top_entropy_quantile)
  std::int64_t cov_tokens = 0;  // kept tokens KL-Cov penalised or Clip-Cov detached (objective::kl_cov, clip_cov)
  std::int64_t masked_seqs_advantage = 0;     // seq_mask == 0 (pivot, zero variance)
  std::int64_t masked_seqs_trust_region = 0;
  std::int64_t masked_seqs_importance = 0;
  std::int64_t masked_seqs_opsm = 0;  // A < 0 and off-policy beyond opsm_threshold
  // rollout mismatch, trainer (logp_old, else logp) vs rollout, over response tokens
  double mismatch_abs_mean = 0, mismatch_abs_max = 0, mismatch_k3 = 0;
  // chi^2 divergences, rho = exp(clamp(d, +-is_log_ratio_clamp)), d = trainer - rollout log-prob
  // (verl): token mean(rho^2) - 1; sequence mean_i(exp(2 clamp(sum_t d))) - 1; and the perplexity
  // ratio mean_i exp(-mean_t d) = mean_i PPL_trainer / PPL_rollout, over sequences with such tokens
  double mismatch_chi2_token = 0, mismatch_chi2_seq = 0, mismatch_ppl_ratio = 0;
  // importance weights applied to the kept tokens
  double is_weight_min = 0, is_weight_mean = 0, is_weight_max = 0;
  double is_ess = 0;  // (sum w)^2 / (n sum w^2), in (0, 1]
  double is_batch_norm_factor = 1;  // the batch mean the weights were divided by (is_batch_normalize), else 1
  double entropy_threshold = 0;  // the batch entropy quantile of top_entropy_quantile, else 0
  // advantages of the non-empty sequences in the loss (population std)
  double adv_mean = 0, adv_std = 0;
};

struct loss_result {
  double loss = 0;
  loss_metrics metrics;
};

struct advantage_stats {
  std::int64_t groups = 0;
  std::int64_t zero_variance_groups = 0;  // every reward equal (singletons included)
  std::int64_t singleton_groups = 0;
  std::int64_t excluded_seqs = 0;         // seq_mask == 0
  double reward_mean = 0, reward_std = 0;  // reward_std: Bessel
  double adv_mean = 0, adv_std = 0;        // over kept sequences, population std
  // ess_scaled: VCPO effective sample size of the sequence importance weights (log space)
  double ess = 0, ess_ratio = 0, lr_factor = 1;
};

}  // namespace grpokit
