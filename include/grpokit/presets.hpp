#pragma once
// Named presets: a policy and a loss_config with the published defaults.
//   presets::grpo::policy<Precision>, presets::grpo::config()
#include "config.hpp"
#include "policy.hpp"

namespace grpokit::presets {

// The policy half of a preset: the caller picks precision and reduction order.
template <class Baseline>
struct preset_policy {
  template <class Precision = precision<>, class Reduction = reduction::deterministic>
  using policy = grpokit::policy<Precision, Reduction, Baseline, mask::padding>;
};

// GRPO (DeepSeekMath; verl defaults): group mean/std advantages, PPO clip 0.2 with dual clip 3,
// token-mean aggregation (verl default), KL k3 with beta 0.001.
struct grpo : preset_policy<baseline::mean> {
  static loss_config config() {
    loss_config c;
    c.kl = kl_estimator::k3;
    c.kl_coef = 0.001;
    c.agg = aggregation::token_mean;
    return c;
  }
};

// Dr. GRPO: no std scaling, constant normaliser (set norm_constant to the generation budget), no KL.
struct dr_grpo : preset_policy<baseline::mean> {
  static loss_config config(double max_response_length = 1024) {
    loss_config c;
    c.adv.scale = adv_scale::none;
    c.agg = aggregation::seq_mean_token_sum_norm;
    c.norm_constant = max_response_length;
    return c;
  }
};

// DAPO: clip-higher (0.2 / 0.28), token-mean over the global batch, no KL, no dual clip.
struct dapo : preset_policy<baseline::mean> {
  static loss_config config() {
    loss_config c;
    c.eps_low = 0.2;
    c.eps_high = 0.28;
    c.dual_clip = 0;
    c.agg = aggregation::token_mean;
    return c;
  }
};

// MC-GRPO: median baseline with MAD scale (mad_eps 1e-3) and the pivot excluded; KL k3 beta 0.04;
// seq-mean-token-mean (TRL loss_type="grpo" as in the paper's scripts).
struct mc_grpo : preset_policy<baseline::median> {
  static loss_config config() {
    loss_config c;
    c.kl = kl_estimator::k3;
    c.kl_coef = 0.04;
    c.dual_clip = 0;
    c.agg = aggregation::seq_mean_token_mean;
    return c;
  }
};

// VCPO: ESS-scaled baseline, REINFORCE with sequence-level truncated IS (cap 8), seq-mean-token-mean.
struct vcpo : preset_policy<baseline::ess_scaled> {
  static loss_config config() {
    loss_config c;
    c.obj = objective::reinforce;
    c.is = is_correction::sequence_truncate;
    c.is_max = 8.0;
    c.agg = aggregation::seq_mean_token_mean;
    return c;
  }
};

// GSPO: sequence ratio exp(mean_t log r), clip 3e-4 / 4e-4 (paper), seq-mean-token-mean, no dual clip.
struct gspo : preset_policy<baseline::mean> {
  static loss_config config() {
    loss_config c;
    c.obj = objective::gspo;
    c.eps_low = 3e-4;
    c.eps_high = 4e-4;
    c.dual_clip = 0;
    c.agg = aggregation::seq_mean_token_mean;
    return c;
  }
};

// CISPO: clipped, detached IS weight times A logp; verl bounds [1 - 0.2, 1 + 0.2] replaced by the
// MiniMax-M1 style upper cap: eps_low = 1 (no lower bound), eps_high = 4 (cap 5, ScaleRL).
struct cispo : preset_policy<baseline::mean> {
  static loss_config config() {
    loss_config c;
    c.obj = objective::cispo;
    c.eps_low = 1.0;
    c.eps_high = 4.0;
    c.agg = aggregation::token_mean;
    return c;
  }
};

// GPG (arXiv 2504.02546; verl adv_estimator=gpg, policy_loss gpg): group mean baseline times
// alpha = B / #(r != 0), the plain policy gradient -A logp, token mean, no KL.
struct gpg : preset_policy<baseline::mean> {
  static loss_config config() {
    loss_config c;
    c.obj = objective::reinforce;
    c.adv.scale = adv_scale::gpg;
    c.agg = aggregation::token_mean;
    return c;
  }
};

// GRPO pass@k (arXiv 2503.19595; verl adv_estimator=grpo_passk): GRPO's loss, only the best rollout
// of each group with a non-zero advantage.
struct grpo_pass_at_k : preset_policy<baseline::pass_at_k> {
  static loss_config config() { return grpo::config(); }
};

// OPO (arXiv 2505.23585; verl adv_estimator=opo): the length-weighted group baseline, A = r - b
// unscaled (advantage_inputs::seq_tokens), grpokit's default loss.
struct opo : preset_policy<baseline::opo> {
  static loss_config config() {
    loss_config c;
    c.adv.scale = adv_scale::none;
    return c;
  }
};

// REINFORCE++-baseline (arXiv 2501.03262; verl adv_estimator=reinforce_plus_plus_baseline): r - the
// group mean, whitened over the batch's tokens (advantage_inputs::seq_tokens), grpokit's default loss.
struct reinforce_pp_baseline : preset_policy<baseline::mean> {
  static loss_config config() {
    loss_config c;
    c.adv.scale = adv_scale::whiten;
    return c;
  }
};

// GMPO (arXiv 2507.20673; verl policy_loss geo_mean): the geometric mean of the token ratios,
// clipped sign-aware in log space at +-0.4 (the paper's (e^-0.4, e^0.4)), the mean over sequences.
struct gmpo : preset_policy<baseline::mean> {
  static loss_config config() {
    loss_config c;
    c.obj = objective::gmpo;
    c.eps_low = 0.4;
    c.eps_high = 0.4;
    c.agg = aggregation::seq_mean_token_mean;
    return c;
  }
};

// DPPO-TV (arXiv 2602.04879; verl policy_loss dppo_tv): -A sg(min(r, 3)) logp, the cap as CISPO's
// (eps_low = 1, eps_high = clip_ratio_c - 1 = 2), with the TV trust mask |p - p_old| <= 0.2 on the
// side the advantage pushes, token mean.
struct dppo_tv : preset_policy<baseline::mean> {
  static loss_config config() {
    loss_config c;
    c.obj = objective::cispo;
    c.eps_low = 1.0;
    c.eps_high = 2.0;
    c.dppo = dppo_divergence::tv;
    c.dppo_low = 0.2;
    c.dppo_high = 0.2;
    c.agg = aggregation::token_mean;
    return c;
  }
};

}  // namespace grpokit::presets
