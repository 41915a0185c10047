#pragma once
// loss_result and advantage_stats as the float64 vectors the operators return (metric_names and
// advantage_stat_names order): one definition for the CPU operators and the CUDA ones, which write
// them from the workspace on the device.
#include <cstdint>
#include <string>
#include <vector>

#include <grpokit/detail/macros.hpp>
#include <grpokit/metrics.hpp>
#include <grpokit/token_baseline.hpp>

namespace grpokit_torch {

constexpr int metric_count = 41;
constexpr int advantage_stat_count = 11;
static_assert(sizeof(grpokit::loss_metrics) == (metric_count - 1) * 8, "metric_names / write_metrics: add the metric");
static_assert(sizeof(grpokit::advantage_stats) == advantage_stat_count * 8,
              "advantage_stat_names / write_advantage_stats: add the statistic");

// The loss then loss_metrics' fields, in declaration order (counts as doubles).
inline std::vector<std::string> metric_names() {
  return {"loss",          "loss_pg",          "loss_kl",         "loss_entropy",    "loss_nll",
          "clip_frac_low",
          "clip_frac_high", "clip_frac_dual",  "approx_kl_old",   "kl_ref",          "entropy_mean",
          "tokens",        "tokens_kept",      "seqs",            "masked_tokens_padding",
          "masked_tokens_vocab_prune",         "masked_tokens_importance",           "masked_tokens_custom",
          "masked_tokens_dppo",                "masked_tokens_m2po",
          "masked_tokens_sequence",            "masked_tokens_entropy",              "cov_tokens",
          "masked_seqs_advantage",              "masked_seqs_trust_region",
          "masked_seqs_importance",            "masked_seqs_opsm",
          "mismatch_abs_mean",                 "mismatch_abs_max",                   "mismatch_k3",
          "mismatch_chi2_token",               "mismatch_chi2_seq",                  "mismatch_ppl_ratio",
          "is_weight_min", "is_weight_mean",   "is_weight_max",   "is_ess",          "is_batch_norm_factor",
          "entropy_threshold",                 "adv_mean",
          "adv_std"};
}
GRPOKIT_HD inline void write_metrics(const grpokit::loss_result& r, double* out) {
  const grpokit::loss_metrics& m = r.metrics;
  const double values[metric_count] = {
      r.loss,
      m.loss_pg,
      m.loss_kl,
      m.loss_entropy,
      m.loss_nll,
      m.clip_frac_low,
      m.clip_frac_high,
      m.clip_frac_dual,
      m.approx_kl_old,
      m.kl_ref,
      m.entropy_mean,
      static_cast<double>(m.tokens),
      static_cast<double>(m.tokens_kept),
      static_cast<double>(m.seqs),
      static_cast<double>(m.masked_tokens_padding),
      static_cast<double>(m.masked_tokens_vocab_prune),
      static_cast<double>(m.masked_tokens_importance),
      static_cast<double>(m.masked_tokens_custom),
      static_cast<double>(m.masked_tokens_dppo),
      static_cast<double>(m.masked_tokens_m2po),
      static_cast<double>(m.masked_tokens_sequence),
      static_cast<double>(m.masked_tokens_entropy),
      static_cast<double>(m.cov_tokens),
      static_cast<double>(m.masked_seqs_advantage),
      static_cast<double>(m.masked_seqs_trust_region),
      static_cast<double>(m.masked_seqs_importance),
      static_cast<double>(m.masked_seqs_opsm),
      m.mismatch_abs_mean,
      m.mismatch_abs_max,
      m.mismatch_k3,
      m.mismatch_chi2_token,
      m.mismatch_chi2_seq,
      m.mismatch_ppl_ratio,
      m.is_weight_min,
      m.is_weight_mean,
      m.is_weight_max,
      m.is_ess,
      m.is_batch_norm_factor,
      m.entropy_threshold,
      m.adv_mean,
      m.adv_std};
  for (int i = 0; i < metric_count; ++i) out[i] = values[i];
}

inline std::vector<std::string> advantage_stat_names() {
  return {"groups",   "zero_variance_groups", "singleton_groups", "excluded_seqs", "reward_mean", "reward_std",
          "adv_mean", "adv_std",              "ess",              "ess_ratio",     "lr_factor"};
}
GRPOKIT_HD inline void write_advantage_stats(const grpokit::advantage_stats& s, double* out) {
  const double values[advantage_stat_count] = {static_cast<double>(s.groups),
                                               static_cast<double>(s.zero_variance_groups),
                                               static_cast<double>(s.singleton_groups),
                                               static_cast<double>(s.excluded_seqs),
                                               s.reward_mean,
                                               s.reward_std,
                                               s.adv_mean,
                                               s.adv_std,
                                               s.ess,
                                               s.ess_ratio,
                                               s.lr_factor};
  for (int i = 0; i < advantage_stat_count; ++i) out[i] = values[i];
}

// optimal_token_baseline's statistics (token_baseline_stats), in this order.
constexpr int token_baseline_stat_count = 4;
static_assert(sizeof(grpokit::token_baseline_stats) == token_baseline_stat_count * 8,
              "token_baseline_stat_names / write_token_baseline_stats: add the statistic");
inline std::vector<std::string> token_baseline_stat_names() {
  return {"groups", "singleton_groups", "zero_tail_groups", "response_tokens"};
}
GRPOKIT_HD inline void write_token_baseline_stats(const grpokit::token_baseline_stats& s, double* out) {
  out[0] = static_cast<double>(s.groups);
  out[1] = static_cast<double>(s.singleton_groups);
  out[2] = static_cast<double>(s.zero_tail_groups);
  out[3] = static_cast<double>(s.response_tokens);
}

}  // namespace grpokit_torch
