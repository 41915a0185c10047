#pragma once
// grpokit::host::policy_loss: the clipped / corrected policy-gradient loss of a packed batch,
//   loss = dp * sum_t w_t m_t (is_t * pg_t + beta * kl_t - c * H_t),
// its derivatives d loss / d logp and d loss / d entropy, and the metrics. w_t is the aggregation
// weight (docs/aggregation.md): its denominators count the response tokens / sequences before the
// trust-region, importance and pruning masks (a masked token lowers the loss, it does not
// re-weight the others). Extra memory O(S).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "../config.hpp"
#include "../detail/policy_terms.hpp"
#include "../detail/reduce.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../math/ops.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "parallel.hpp"

namespace grpokit::host {

namespace detail {

// Per-sequence partial sums of the loss and the metrics, combined by a fixed tree.
struct loss_partial {
  double pg = 0, kl = 0, ent = 0;
  double kept = 0, clip_low = 0, clip_high = 0, clip_dual = 0;
  double kl_old = 0, kl_ref = 0, entropy = 0;
  double mism_n = 0, mism_abs = 0, mism_k3 = 0, mism_max = 0;
  double w_sum = 0, w_sq = 0, w_min = std::numeric_limits<double>::infinity(), w_max = -std::numeric_limits<double>::infinity();
  double masked_padding = 0, masked_prune = 0, masked_importance = 0, masked_custom = 0, masked_sequence = 0;
  double seqs = 0, seqs_adv_masked = 0, seqs_trm = 0, seqs_imp = 0;
  double adv_sum = 0, adv_sq = 0;
};

inline loss_partial combine(const loss_partial& a, const loss_partial& b) {
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
  r.mism_max = std::max(a.mism_max, b.mism_max);
  r.w_sum = a.w_sum + b.w_sum;
  r.w_sq = a.w_sq + b.w_sq;
  r.w_min = std::min(a.w_min, b.w_min);
  r.w_max = std::max(a.w_max, b.w_max);
  r.masked_padding = a.masked_padding + b.masked_padding;
  r.masked_prune = a.masked_prune + b.masked_prune;
  r.masked_importance = a.masked_importance + b.masked_importance;
  r.masked_custom = a.masked_custom + b.masked_custom;
  r.masked_sequence = a.masked_sequence + b.masked_sequence;
  r.seqs = a.seqs + b.seqs;
  r.seqs_adv_masked = a.seqs_adv_masked + b.seqs_adv_masked;
  r.seqs_trm = a.seqs_trm + b.seqs_trm;
  r.seqs_imp = a.seqs_imp + b.seqs_imp;
  r.adv_sum = a.adv_sum + b.adv_sum;
  r.adv_sq = a.adv_sq + b.adv_sq;
  return r;
}

template <class P>
void validate_policy_inputs(const current_policy<accum_t<P>>& cur,
                            const rollout_batch<accum_t<P>>& batch, const loss_config& cfg,
                            const policy_grads<accum_t<P>>& grads) {
  using grpokit::detail::require_finite;
  using grpokit::detail::require_size;
  using grpokit::detail::require_size_or_empty;
  grpokit::detail::require_loss_config(cfg);
  const std::int64_t T = cur.logp.size();
  grpokit::detail::require_offsets("seq_offsets", batch.seq_offsets, T, /*allow_empty_segments=*/true);
  const std::int64_t S = batch.seq_offsets.size() - 1;
  require_size("adv", batch.adv, S);
  require_size_or_empty("entropy", cur.entropy, T);
  require_size_or_empty("logp_old", batch.logp_old, T);
  require_size_or_empty("logp_ref", batch.logp_ref, T);
  require_size_or_empty("logp_rollout", batch.logp_rollout, T);
  require_size_or_empty("token_mask", batch.token_mask, T);
  require_size_or_empty("seq_mask", batch.seq_mask, S);
  require_size("dlogp", grads.dlogp, T);
  require_size_or_empty("dentropy", grads.dentropy, T);
  GRPOKIT_REQUIRE(cfg.entropy_coef == 0 || (!cur.entropy.empty() && !grads.dentropy.empty()),
                  "entropy_coef != 0 needs the entropy input and the dentropy output");
  GRPOKIT_REQUIRE(cfg.kl == kl_estimator::none || !batch.logp_ref.empty(), "kl != none needs logp_ref");
  GRPOKIT_REQUIRE(cfg.is == is_correction::none || !batch.logp_rollout.empty(),
                  "importance-sampling correction needs logp_rollout");
  GRPOKIT_REQUIRE(!(P::trust_region || P::importance_mask) || !batch.logp_rollout.empty(),
                  "the trust_region and importance masks need logp_rollout");
  require_finite("adv", batch.adv);
  if (!cfg.check_finite) return;
  for (std::int64_t t = 0; t < T; ++t) {
    const double v = cur.logp[t];
    const bool pruned = P::vocab_prune && v == -std::numeric_limits<double>::infinity();
    GRPOKIT_REQUIRE(pruned || std::isfinite(v), "logp[", t, "] is not finite (", v, ")");
  }
  require_finite("entropy", cur.entropy);
  require_finite("logp_old", batch.logp_old);
  require_finite("logp_ref", batch.logp_ref);
  require_finite("logp_rollout", batch.logp_rollout);
}

}  // namespace detail

template <class P>
loss_result policy_loss(const current_policy<accum_t<P>>& cur,
                        const rollout_batch<accum_t<P>>& batch, const loss_config& cfg,
                        const policy_grads<accum_t<P>>& grads) {
  using Real = accum_t<P>;
  using Ops = math::ops_for<P::order>;
  using terms_t = grpokit::detail::policy_terms<P, Ops>;
  using grpokit::detail::token_state;
  detail::validate_policy_inputs<P>(cur, batch, cfg, grads);
  const terms_t terms{cur, batch, cfg};
  const std::int64_t S = batch.seq_offsets.size() - 1;

  std::vector<typename terms_t::sequence_summary> seqs(static_cast<std::size_t>(S));
  detail::parallel_for(S, [&](std::int64_t s) { seqs[static_cast<std::size_t>(s)] = terms.summarize(s); });
  std::int64_t local_tokens = 0, local_seqs = 0;
  for (const auto& q : seqs) {
    local_tokens += q.counted;
    local_seqs += q.counted > 0;
  }
  const double n_tokens = cfg.global_tokens > 0 ? cfg.global_tokens : static_cast<double>(local_tokens);
  const double n_seqs = cfg.global_seqs > 0 ? cfg.global_seqs : static_cast<double>(local_seqs);

  std::vector<detail::loss_partial> parts(static_cast<std::size_t>(S));
  detail::parallel_for(S, [&](std::int64_t s) {
    const auto& q = seqs[static_cast<std::size_t>(s)];
    detail::loss_partial& p = parts[static_cast<std::size_t>(s)];
    const double w = terms.token_weight(q.counted, n_tokens, n_seqs);
    const bool seq_in = batch.seq_mask.empty() || batch.seq_mask[s] != 0;
    p.seqs_adv_masked = seq_in ? 0 : 1;
    if (q.counted > 0) {
      p.seqs = 1;
      p.adv_sum = batch.adv[s];
      p.adv_sq = static_cast<double>(batch.adv[s]) * static_cast<double>(batch.adv[s]);
      p.seqs_trm = q.keep_trust_region ? 0 : 1;
      p.seqs_imp = q.keep_importance ? 0 : 1;
    }
    for (std::int64_t t = batch.seq_offsets[s]; t < batch.seq_offsets[s + 1]; ++t) {
      grads.dlogp[t] = Real(0);
      if (!grads.dentropy.empty()) grads.dentropy[t] = Real(0);
      const token_state st = terms.classify(t, s);
      p.masked_padding += st == token_state::padding;
      p.masked_prune += st == token_state::vocab_prune;
      p.masked_custom += st == token_state::custom;
      p.masked_importance += st == token_state::importance;
      if (st == token_state::padding) continue;
      if (st == token_state::kept_candidate && terms.has_rollout()) {
        const double d = terms.rollout_log_ratio(t);
        const double dc = terms.clamp_log_ratio(d);
        p.mism_n += 1;
        p.mism_abs += std::fabs(d);
        p.mism_max = std::max(p.mism_max, std::fabs(d));
        p.mism_k3 += math::divergence_term<Ops>(divergence::k3, dc);
      }
      if (st != token_state::kept_candidate) continue;
      if (!q.keep()) {
        p.masked_sequence += 1;
        continue;
      }
      const auto k = terms.term(t, s, q);
      p.kept += 1;
      p.pg += w * k.pg;
      p.kl += w * cfg.kl_coef * k.kl;
      p.clip_low += k.sur.clipped_low;
      p.clip_high += k.sur.clipped_high;
      p.clip_dual += k.sur.clipped_dual;
      if (terms.has_old()) p.kl_old += static_cast<double>(batch.logp_old[t]) - static_cast<double>(cur.logp[t]);
      p.kl_ref += k.kl_log;
      p.w_sum += k.is_weight;
      p.w_sq += k.is_weight * k.is_weight;
      p.w_min = std::min(p.w_min, k.is_weight);
      p.w_max = std::max(p.w_max, k.is_weight);
      grads.dlogp[t] = static_cast<Real>(w * (k.dpg + cfg.kl_coef * k.dkl));
      if (!cur.entropy.empty()) {
        p.entropy += cur.entropy[t];
        p.ent -= w * cfg.entropy_coef * cur.entropy[t];
        if (!grads.dentropy.empty()) grads.dentropy[t] = static_cast<Real>(-w * cfg.entropy_coef);
      }
    }
  });

  detail::loss_partial total;
  if (!parts.empty()) {
    grpokit::detail::tree_reduce(parts, detail::combine);
    total = parts[0];
  }
  loss_result res;
  loss_metrics& m = res.metrics;
  m.loss_pg = total.pg;
  m.loss_kl = total.kl;
  m.loss_entropy = cfg.entropy_coef != 0 ? total.ent : 0.0;
  res.loss = m.loss_pg + m.loss_kl + m.loss_entropy;
  const double kept = total.kept;
  auto per_kept = [&](double v) { return kept > 0 ? v / kept : 0.0; };
  m.clip_frac_low = per_kept(total.clip_low);
  m.clip_frac_high = per_kept(total.clip_high);
  m.clip_frac_dual = per_kept(total.clip_dual);
  m.approx_kl_old = per_kept(total.kl_old);
  m.kl_ref = per_kept(total.kl_ref);
  m.entropy_mean = per_kept(total.entropy);
  m.tokens = local_tokens;
  m.tokens_kept = static_cast<std::int64_t>(kept);
  m.seqs = static_cast<std::int64_t>(total.seqs);
  m.masked_tokens_padding = static_cast<std::int64_t>(total.masked_padding);
  m.masked_tokens_vocab_prune = static_cast<std::int64_t>(total.masked_prune);
  m.masked_tokens_importance = static_cast<std::int64_t>(total.masked_importance);
  m.masked_tokens_custom = static_cast<std::int64_t>(total.masked_custom);
  m.masked_tokens_sequence = static_cast<std::int64_t>(total.masked_sequence);
  m.masked_seqs_advantage = static_cast<std::int64_t>(total.seqs_adv_masked);
  m.masked_seqs_trust_region = static_cast<std::int64_t>(total.seqs_trm);
  m.masked_seqs_importance = static_cast<std::int64_t>(total.seqs_imp);
  if (total.mism_n > 0) {
    m.mismatch_abs_mean = total.mism_abs / total.mism_n;
    m.mismatch_abs_max = total.mism_max;
    m.mismatch_k3 = total.mism_k3 / total.mism_n;
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

}  // namespace grpokit::host
