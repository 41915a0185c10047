#pragma once
// Per-sequence partial sums of the loss and the metrics (written by policy_terms), the fixed-tree
// combine, and the metrics computed from the combined total. The pass over the batch before the
// loss (needs_batch_pass) sums its per-sequence statistics in the same partials, by the same
// combine and gathers, so that they are the whole batch's on every rank.
#include <cmath>
#include <cstdint>
#include <limits>

#include "../config.hpp"
#include "../metrics.hpp"
#include "macros.hpp"
#include "select.hpp"

namespace grpokit::detail {

struct loss_partial {
  double pg = 0, kl = 0, ent = 0;
  double kept = 0, clip_low = 0, clip_high = 0, clip_dual = 0;
  double kl_old = 0, kl_ref = 0, entropy = 0;
  double mism_n = 0, mism_abs = 0, mism_k3 = 0, mism_max = 0, mism_rho2 = 0;
  double mism_seqs = 0, mism_seq_rho2 = 0, mism_ppl_ratio = 0;
  double w_sum = 0, w_sq = 0;
  double w_min = std::numeric_limits<double>::infinity(), w_max = -std::numeric_limits<double>::infinity();
  double masked_padding = 0, masked_prune = 0, masked_importance = 0, masked_custom = 0, masked_sequence = 0;
  double masked_dppo = 0;
  double seqs = 0, seqs_adv_masked = 0, seqs_trm = 0, seqs_imp = 0, seqs_opsm = 0;
  double adv_sum = 0, adv_sq = 0;
  double nll = 0;  // VAPO's positive-example NLL, weighted
  double masked_entropy = 0;  // kept tokens whose policy-gradient term the entropy mask removed
  double masked_m2po = 0;     // response tokens the M2PO mask removed
  double cov_selected = 0;  // kept tokens KL-Cov penalised or Clip-Cov detached
  // the batch pass: IS weights and their count (is_batch_normalize), positive response tokens (NLL)
  double batch_is_sum = 0, batch_is_n = 0, batch_positive_tokens = 0;
  // KL-Cov's candidates (response tokens with a log-prob), their advantages and log-probs
  double batch_cov_n = 0, batch_cov_adv = 0, batch_cov_logp = 0;
};

GRPOKIT_HD inline double max_of(double a, double b) { return a > b ? a : b; }
GRPOKIT_HD inline double min_of(double a, double b) { return a < b ? a : b; }

GRPOKIT_HD inline loss_partial combine(const loss_partial& a, const loss_partial& b) {
  loss_partial r;
  r.pg = a.pg + b.pg;
  r.kl = a.kl + b.kl;
  r.ent = a.ent + b.ent;
  r.kept = a.kept + b.kept;
  r.clip_low = a.clip_low + b.clip_low;
  r.clip_high = a.clip_high + b.clip_high;
  r.clip_dual = a.clip_dual + b.clip_dual;
  r.kl_old = a.kl_old + b.kl_old;
  r.kl_ref = a.kl_ref + b.kl_ref;
  r.entropy = a.entropy + b.entropy;
  r.mism_n = a.mism_n + b.mism_n;
  r.mism_abs = a.mism_abs + b.mism_abs;
  r.mism_k3 = a.mism_k3 + b.mism_k3;
  r.mism_max = max_of(a.mism_max, b.mism_max);
  r.mism_rho2 = a.mism_rho2 + b.mism_rho2;
  r.mism_seqs = a.mism_seqs + b.mism_seqs;
  r.mism_seq_rho2 = a.mism_seq_rho2 + b.mism_seq_rho2;
  r.mism_ppl_ratio = a.mism_ppl_ratio + b.mism_ppl_ratio;
  r.w_sum = a.w_sum + b.w_sum;
  r.w_sq = a.w_sq + b.w_sq;
  r.w_min = min_of(a.w_min, b.w_min);
  r.w_max = max_of(a.w_max, b.w_max);
  r.masked_padding = a.masked_padding + b.masked_padding;
  r.masked_prune = a.masked_prune + b.masked_prune;
  r.masked_importance = a.masked_importance + b.masked_importance;
  r.masked_custom = a.masked_custom + b.masked_custom;
  r.masked_dppo = a.masked_dppo + b.masked_dppo;
  r.masked_sequence = a.masked_sequence + b.masked_sequence;
  r.seqs = a.seqs + b.seqs;
  r.seqs_adv_masked = a.seqs_adv_masked + b.seqs_adv_masked;
  r.seqs_trm = a.seqs_trm + b.seqs_trm;
  r.seqs_imp = a.seqs_imp + b.seqs_imp;
  r.seqs_opsm = a.seqs_opsm + b.seqs_opsm;
  r.adv_sum = a.adv_sum + b.adv_sum;
  r.adv_sq = a.adv_sq + b.adv_sq;
  r.nll = a.nll + b.nll;
  r.masked_entropy = a.masked_entropy + b.masked_entropy;
  r.masked_m2po = a.masked_m2po + b.masked_m2po;
  r.cov_selected = a.cov_selected + b.cov_selected;
  r.batch_is_sum = a.batch_is_sum + b.batch_is_sum;
  r.batch_is_n = a.batch_is_n + b.batch_is_n;
  r.batch_positive_tokens = a.batch_positive_tokens + b.batch_positive_tokens;
  r.batch_cov_n = a.batch_cov_n + b.batch_cov_n;
  r.batch_cov_adv = a.batch_cov_adv + b.batch_cov_adv;
  r.batch_cov_logp = a.batch_cov_logp + b.batch_cov_logp;
  return r;
}

// Whether the IS weights are divided by their batch mean (is_batch_normalize, with an IS correction).
GRPOKIT_HD inline bool normalizes_is(const loss_config& c) {
  return c.is_batch_normalize && c.is != is_correction::none;
}

// KL-Cov and Clip-Cov select tokens by (A - mean A)(logp - mean logp) over the batch.
GRPOKIT_HD inline bool uses_covariance(const loss_config& c) {
  return c.obj == objective::kl_cov || c.obj == objective::clip_cov;
}

// Whether the loss needs statistics of the whole batch before its pass over the tokens.
GRPOKIT_HD inline bool needs_batch_pass(const loss_config& c) {
  return normalizes_is(c) || c.positive_nll_coef != 0 || uses_covariance(c);
}

// The order statistics of the whole batch (detail/select.hpp) the loss may need before its pass
// over the tokens: the top-entropy mask's quantile (its value), KL-Cov's k-th token and Clip-Cov's
// random subset (value, then position: exactly k tokens).
// M2PO's limit (the mean rule over the second moments) comes first, before the sequences' summaries:
// its mask is a token mask like the others.
enum class selection : int { entropy_quantile = 0, covariance = 1, m2po = 2 };
constexpr int selection_count = 3;
GRPOKIT_HD inline bool needs_selection(const loss_config& c, selection which) {
  switch (which) {
    case selection::entropy_quantile:
      return c.top_entropy_quantile < 1;
    case selection::covariance:
      return uses_covariance(c);
    case selection::m2po:
    default:
      return c.m2po_threshold < INFINITY;
  }
}
GRPOKIT_HD inline int selection_rounds(selection which) {
  return which == selection::covariance ? select_max_rounds : select_value_rounds;
}

// What the batch pass and the selection give the loss pass.
struct batch_stats {
  double is_divisor = 1;  // the IS weights' batch mean (verl: used when > 1e-8), else 1
  double nll_weight = 0;  // positive_nll_coef dp_size / (positive response tokens), 0 without any
  // top_entropy_quantile: a kept token with a lower entropy has no policy-gradient term
  double entropy_threshold = -std::numeric_limits<double>::infinity();
  // kl_cov / clip_cov: the means over the response tokens with a log-prob, and the last token the
  // selection takes (none when !cov_any)
  double cov_adv_mean = 0, cov_logp_mean = 0;
  bool cov_any = false;
  select_key cov_last{};
};

GRPOKIT_HD inline batch_stats batch_stats_of(const loss_partial& total, const loss_config& c) {
  batch_stats b;
  if (normalizes_is(c) && total.batch_is_n > 0) {
    const double mean = total.batch_is_sum / total.batch_is_n;
    if (mean > 1e-8) b.is_divisor = mean;
  }
  if (total.batch_positive_tokens > 0) b.nll_weight = c.positive_nll_coef * c.dp_size / total.batch_positive_tokens;
  if (total.batch_cov_n > 0) {
    b.cov_adv_mean = total.batch_cov_adv / total.batch_cov_n;
    b.cov_logp_mean = total.batch_cov_logp / total.batch_cov_n;
  }
  return b;
}

// The covariance selection's run. KL-Cov: the max(1, floor(ratio N))-th largest of its N
// candidates (verl's count); Clip-Cov: the max(1, floor(ratio N)) largest random keys of its
// candidates, whose number the first round counts (N: the response tokens with a log-prob, verl's
// response-mask sum). Ratio 0 or no candidate: none.
GRPOKIT_HD inline select_run covariance_run(const loss_partial& total, const loss_config& c) {
  select_run r;
  r.rounds = select_max_rounds;
  const std::int64_t n = static_cast<std::int64_t>(total.batch_cov_n);
  const double ratio = c.obj == objective::kl_cov ? c.kl_cov_ratio : c.clip_cov_ratio;
  if (n == 0 || ratio == 0) return r;  // n = 0: nothing selected
  std::int64_t k = static_cast<std::int64_t>(static_cast<double>(n) * ratio);
  k = k < 1 ? 1 : (k > n ? n : k);
  if (c.obj == objective::clip_cov) {
    r.want = k;  // of the candidates counted by the first round
    return r;
  }
  r.n = n;
  r.rank[0] = r.rank[1] = n - k;
  return r;
}
GRPOKIT_HD inline void set_covariance(batch_stats& b, const select_run& r) {
  b.cov_any = r.n > 0;
  b.cov_last = r.prefix[0];
}

// The loss and the metrics from the combined partial; `tokens` is the local response-token count.
// `batch`: what the batch pass gave (the defaults without one).
GRPOKIT_HD inline loss_result finish(const loss_partial& total, std::int64_t tokens, const loss_config& cfg,
                                     const batch_stats& batch = {}) {
  loss_result res;
  loss_metrics& m = res.metrics;
  m.loss_pg = total.pg;
  m.loss_kl = total.kl;
  m.loss_entropy = cfg.entropy_coef != 0 ? total.ent : 0.0;
  m.loss_nll = total.nll;
  res.loss = m.loss_pg + m.loss_kl + m.loss_entropy + m.loss_nll;
  m.is_batch_norm_factor = batch.is_divisor;
  m.entropy_threshold = std::isfinite(batch.entropy_threshold) ? batch.entropy_threshold : 0.0;
  m.masked_tokens_entropy = static_cast<std::int64_t>(total.masked_entropy);
  m.masked_tokens_m2po = static_cast<std::int64_t>(total.masked_m2po);
  m.cov_tokens = static_cast<std::int64_t>(total.cov_selected);
  const double kept = total.kept;
  auto per_kept = [&](double v) { return kept > 0 ? v / kept : 0.0; };
  m.clip_frac_low = per_kept(total.clip_low);
  m.clip_frac_high = per_kept(total.clip_high);
  m.clip_frac_dual = per_kept(total.clip_dual);
  m.approx_kl_old = per_kept(total.kl_old);
  m.kl_ref = per_kept(total.kl_ref);
  m.entropy_mean = per_kept(total.entropy);
  m.tokens = tokens;
  m.tokens_kept = static_cast<std::int64_t>(kept);
  m.seqs = static_cast<std::int64_t>(total.seqs);
  m.masked_tokens_padding = static_cast<std::int64_t>(total.masked_padding);
  m.masked_tokens_vocab_prune = static_cast<std::int64_t>(total.masked_prune);
  m.masked_tokens_importance = static_cast<std::int64_t>(total.masked_importance);
  m.masked_tokens_custom = static_cast<std::int64_t>(total.masked_custom);
  m.masked_tokens_dppo = static_cast<std::int64_t>(total.masked_dppo);
  m.masked_tokens_sequence = static_cast<std::int64_t>(total.masked_sequence);
  m.masked_seqs_advantage = static_cast<std::int64_t>(total.seqs_adv_masked);
  m.masked_seqs_trust_region = static_cast<std::int64_t>(total.seqs_trm);
  m.masked_seqs_importance = static_cast<std::int64_t>(total.seqs_imp);
  m.masked_seqs_opsm = static_cast<std::int64_t>(total.seqs_opsm);
  if (total.mism_n > 0) {
    m.mismatch_abs_mean = total.mism_abs / total.mism_n;
    m.mismatch_abs_max = total.mism_max;
    m.mismatch_k3 = total.mism_k3 / total.mism_n;
    m.mismatch_chi2_token = total.mism_rho2 / total.mism_n - 1.0;
  }
  if (total.mism_seqs > 0) {
    m.mismatch_chi2_seq = total.mism_seq_rho2 / total.mism_seqs - 1.0;
    m.mismatch_ppl_ratio = total.mism_ppl_ratio / total.mism_seqs;
  }
  if (kept > 0) {
    m.is_weight_min = total.w_min;
    m.is_weight_max = total.w_max;
    m.is_weight_mean = total.w_sum / kept;
    m.is_ess = total.w_sq > 0 ? total.w_sum * total.w_sum / (kept * total.w_sq) : 0.0;
  }
  if (total.seqs > 0) {
    m.adv_mean = total.adv_sum / total.seqs;
    const double var = total.adv_sq / total.seqs - m.adv_mean * m.adv_mean;
    m.adv_std = var > 0 ? std::sqrt(var) : 0.0;
  }
  return res;
}

}  // namespace grpokit::detail
