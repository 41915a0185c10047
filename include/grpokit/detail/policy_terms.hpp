#pragma once
// The math of policy_loss shared by the host loop and the device kernels: which tokens count,
// the per-sequence summaries (GSPO ratio, sequence IS weight, TRM and importance criteria) and
// the per-token loss terms with their derivatives. No allocation, no exceptions.
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../config.hpp"
#include "../inputs.hpp"
#include "../mask.hpp"
#include "../math/dppo.hpp"
#include "../math/kl.hpp"
#include "../math/surrogate.hpp"
#include "loss_partial.hpp"
#include "row_params.hpp"
#include "macros.hpp"
#include "reduce.hpp"
#include "select.hpp"

namespace grpokit::detail {

// The objective fields of the configuration, as the math layer takes them.
// Clip-Cov's clip is verl's plain PPO clip: no dual clip, no delta.
GRPOKIT_HD inline math::surrogate_params surrogate_params_of(const loss_config& c) {
  const bool plain = c.obj == objective::clip_cov;
  return {c.obj, c.eps_low, c.eps_high, plain ? 0.0 : c.dual_clip, plain ? 0.0 : c.delta, c.tau_pos, c.tau_neg};
}

// Why a token is not in the loss (the first reason that applies).
enum class token_state : std::uint8_t { kept_candidate, padding, vocab_prune, m2po, custom, importance, dppo };

template <class P, class Ops>
struct policy_terms {
  using Real = typename P::accum_type;
  using M = typename P::mask_type;

  const current_policy<Real>& cur;
  const rollout_batch<Real>& batch;
  const loss_config& cfg;
  // the index in the whole batch of this process's first sequence (data parallel): the tokens'
  // positions (select_position)
  std::int64_t first_seq = 0;
  // M2PO: the largest second moment kept (the batch selection's, found before anything else)
  double m2po_limit = std::numeric_limits<double>::infinity();

  GRPOKIT_HD bool has_old() const { return !batch.logp_old.empty(); }
  GRPOKIT_HD bool has_ref() const { return !batch.logp_ref.empty(); }
  GRPOKIT_HD bool has_rollout() const { return !batch.logp_rollout.empty(); }
  // The trainer's log-prob compared with the rollout's: pi_old (decoupled) or pi (bypass).
  GRPOKIT_HD double trainer_logp(std::int64_t t) const {
    return has_old() ? static_cast<double>(batch.logp_old[t]) : static_cast<double>(cur.logp[t]);
  }
  GRPOKIT_HD double rollout_log_ratio(std::int64_t t) const {
    return trainer_logp(t) - static_cast<double>(batch.logp_rollout[t]);
  }
  // The log-prob of the policy that sampled token t, as OPSM sees it: the rollout's, else pi_old's.
  GRPOKIT_HD double sampler_logp(std::int64_t t) const {
    return has_rollout() ? static_cast<double>(batch.logp_rollout[t]) : trainer_logp(t);
  }

  // A response token: one the denominators count (neither masked by token_mask nor by seq_mask).
  GRPOKIT_HD bool is_response(std::int64_t t, std::int64_t s) const {
    return (batch.token_mask.empty() || batch.token_mask[t] != 0) && (batch.seq_mask.empty() || batch.seq_mask[s] != 0);
  }

  // The advantage of token t of sequence s: its own (batch.token_adv) or its sequence's.
  GRPOKIT_HD Real adv_at(std::int64_t t, std::int64_t s) const {
    return batch.token_adv.empty() ? batch.adv[s] : batch.token_adv[t];
  }

  // Outside the safe vocabulary (vocab_prune) or the sampler's support (top_k, top_p): no log-prob.
  GRPOKIT_HD bool pruned(std::int64_t t) const {
    return (P::vocab_prune || sampler_support(cfg)) && !(cur.logp[t] > -std::numeric_limits<Real>::infinity());
  }
  // A response token with a log-prob: what classify's first two reasons leave, without the masks it
  // goes on to evaluate (the batch pass's and the selections' candidates, every round).
  GRPOKIT_HD bool has_log_prob(std::int64_t t, std::int64_t s) const { return is_response(t, s) && !pruned(t); }

  GRPOKIT_HD token_state classify(std::int64_t t, std::int64_t s) const {
    if (!is_response(t, s)) return token_state::padding;
    if (pruned(t)) return token_state::vocab_prune;
    if (m2po_moment(t) > m2po_limit) return token_state::m2po;  // AReaL: before the loss's own masks
    token_view<Real> v;
    v.logp = cur.logp[t];
    v.entropy = cur.entropy.empty() ? Real(0) : cur.entropy[t];
    v.has_old = has_old();
    v.has_ref = has_ref();
    v.has_rollout = has_rollout();
    v.logp_old = v.has_old ? batch.logp_old[t] : v.logp;
    v.logp_ref = v.has_ref ? batch.logp_ref[t] : Real(0);
    v.logp_rollout = v.has_rollout ? batch.logp_rollout[t] : Real(0);
    v.adv = adv_at(t, s);
    v.token = t;
    v.seq = s;
    if (!M::template keep<Real>(v, cfg)) return token_state::custom;
    if (P::importance_mask && !cfg.importance_sequence) {
      const double ratio = Ops::exp(clamp_log_ratio(rollout_log_ratio(t)));
      if (!(ratio >= cfg.importance_lo && ratio <= cfg.importance_hi)) return token_state::importance;
    }
    if (cfg.dppo != dppo_divergence::none && (has_old() || has_rollout())) {
      const double anchor = static_cast<double>(has_old() ? batch.logp_old[t] : batch.logp_rollout[t]);
      if (!math::dppo_keep<Ops>(cfg.dppo, cur.logp[t], anchor, adv_at(t, s), cfg.dppo_low, cfg.dppo_high))
        return token_state::dppo;
    }
    return token_state::kept_candidate;
  }

  // M2PO's second moment of a token: (logp_rollout - logp_old)^2, the behaviour policy against the
  // proximal one (AReaL; logp_old, else logp); 0 without logp_rollout (M2PO then needs it). A NaN
  // (non-finite inputs with check_finite off) counts as +inf: masked, and the same bits everywhere.
  GRPOKIT_HD double m2po_moment(std::int64_t t) const {
    if (!has_rollout()) return 0.0;
    const double d = static_cast<double>(batch.logp_rollout[t]) - trainer_logp(t);
    const double m = d * d;
    return m == m ? m : std::numeric_limits<double>::infinity();
  }

  // GMPO: the token's log-ratio to pi_old (0 on-policy) and whether the sign-aware clip holds it
  // (A > 0 caps it at eps_high, A < 0 floors it at -eps_low; A = 0 contributes 0, as sign(A) does in verl)
  GRPOKIT_HD double gmpo_delta(std::int64_t t) const {
    return has_old() ? static_cast<double>(cur.logp[t]) - static_cast<double>(batch.logp_old[t]) : 0.0;
  }
  GRPOKIT_HD bool gmpo_clipped(double delta, double adv) const {
    return (adv > 0 && delta > cfg.eps_high) || (adv < 0 && delta < -cfg.eps_low);
  }
  GRPOKIT_HD double gmpo_clipped_delta(double delta, double adv) const {
    if (adv > 0) return std::fmin(delta, cfg.eps_high);
    if (adv < 0) return std::fmax(delta, -cfg.eps_low);
    return 0.0;
  }

  GRPOKIT_HD double clamp_log_ratio(double d) const {
    return std::fmin(std::fmax(d, -cfg.is_log_ratio_clamp), cfg.is_log_ratio_clamp);
  }

  struct sequence_summary {
    std::int64_t counted = 0;  // response tokens (the denominators)
    std::int64_t stat = 0;     // tokens not dropped by a token-level mask
    std::int64_t pruned = 0;   // response tokens outside the safe vocabulary (no log-prob)
    double gspo_ratio = 1, gspo_ratio_grad = 1;  // sequence ratio (GSPO, GMPO) and d r / d logp_t
    double is_weight = 1;      // exp(clamp(sum_t d_t)) for sequence-level IS
    bool keep_trust_region = true, keep_importance = true, keep_opsm = true;
    GRPOKIT_HD bool keep() const { return keep_trust_region && keep_importance && keep_opsm; }
  };

  // GSPO's and GMPO's sequence ratio exp(clamped mean log-ratio), and its gradient: 0 where the clamp holds
  GRPOKIT_HD static void set_sequence_ratio(sequence_summary& out, double mean, double clamped) {
    out.gspo_ratio = Ops::exp(clamped);
    out.gspo_ratio_grad = mean == clamped ? out.gspo_ratio : 0.0;
  }

  GRPOKIT_HD sequence_summary summarize(std::int64_t s) const {
    sequence_summary out;
    const std::int64_t b = batch.seq_offsets[s], n = batch.seq_offsets[s + 1] - b;
    double trm_max = 0;
    for (std::int64_t j = 0; j < n; ++j) {
      const token_state st = classify(b + j, s);
      out.counted += st != token_state::padding;
      out.pruned += st == token_state::vocab_prune;
      if (st != token_state::kept_candidate) continue;
      ++out.stat;
      if (P::trust_region) {
        const double d = clamp_log_ratio(rollout_log_ratio(b + j));
        const double e = math::divergence_term<Ops>(cfg.trm_max_estimator, d);
        trm_max = std::fmax(trm_max, std::fabs(e));
      }
    }
    auto stat_sum = [&](auto&& value) {
      return lane_sum(n, [&](std::int64_t j) {
        return classify(b + j, s) == token_state::kept_candidate ? value(b + j) : 0.0;
      });
    };
    const double n_stat = static_cast<double>(out.stat > 0 ? out.stat : 1);
    if (cfg.obj == objective::gspo && has_old()) {
      const double mean = stat_sum([&](std::int64_t t) {
        return static_cast<double>(cur.logp[t]) - static_cast<double>(batch.logp_old[t]);
      }) / n_stat;
      set_sequence_ratio(out, mean, std::fmin(mean, cfg.gspo_log_ratio_max));
    }
    if (cfg.obj == objective::gmpo) {  // the geometric mean of the clipped token ratios, within +-log_ratio_clamp
      const double mean =
          stat_sum([&](std::int64_t t) { return gmpo_clipped_delta(gmpo_delta(t), adv_at(t, s)); }) / n_stat;
      set_sequence_ratio(out, mean, std::fmin(std::fmax(mean, -cfg.log_ratio_clamp), cfg.log_ratio_clamp));
    }
    const bool seq_is = sequence_level_is(cfg.is);
    const bool seq_importance = P::importance_mask && cfg.importance_sequence;
    if ((seq_is || seq_importance) && out.stat > 0) {
      const double sum = stat_sum([&](std::int64_t t) { return rollout_log_ratio(t); });
      out.is_weight = Ops::exp(clamp_log_ratio(sum));
      if (seq_importance) {
        const double geo = Ops::exp(clamp_log_ratio(sum / n_stat));
        out.keep_importance = geo >= cfg.importance_lo && geo <= cfg.importance_hi;
      }
    }
    if (P::trust_region && out.stat > 0) {
      const double mean = stat_sum([&](std::int64_t t) {
        return math::divergence_term<Ops>(cfg.trm_mean_estimator, clamp_log_ratio(rollout_log_ratio(t)));
      }) / n_stat;
      out.keep_trust_region = trm_max <= cfg.trm_max_threshold && std::fabs(mean) <= cfg.trm_mean_threshold;
    }
    if (cfg.opsm_threshold < INFINITY && batch.adv[s] < 0 && out.stat > 0) {
      const double mean = stat_sum([&](std::int64_t t) {
        return sampler_logp(t) - static_cast<double>(cur.logp[t]);
      }) / n_stat;
      out.keep_opsm = !(mean > cfg.opsm_threshold);
    }
    return out;
  }

  GRPOKIT_HD static bool sequence_level_is(is_correction is) {
    return is == is_correction::sequence_truncate || is == is_correction::sequence_mask;
  }
  // A response token with a log-prob: neither padding nor pruned.
  GRPOKIT_HD static bool has_log_prob(token_state st) {
    return st != token_state::padding && st != token_state::vocab_prune;
  }
  // VAPO's NLL covers the response tokens of a positive rollout that have a log-prob.
  GRPOKIT_HD bool nll_rollout(std::int64_t s) const { return cfg.positive_nll_coef != 0 && batch.positive[s] != 0; }

  // Sequence s's part of the batch pass (needs_batch_pass): its IS weights, over the response
  // tokens with a log-prob (token levels; a pruned token's weight means nothing without pi_old)
  // or once (sequence levels), and its NLL tokens.
  GRPOKIT_HD loss_partial batch_partial(std::int64_t s, const sequence_summary& q) const {
    loss_partial p;
    const std::int64_t b = batch.seq_offsets[s], n = batch.seq_offsets[s + 1] - b;
    const double with_log_prob = static_cast<double>(q.counted - q.pruned);
    if (normalizes_is(cfg) && q.counted > 0) {
      if (sequence_level_is(cfg.is)) {
        p.batch_is_sum = is_weight(b, q);
        p.batch_is_n = 1;
      } else {
        p.batch_is_sum =
            lane_sum(n, [&](std::int64_t j) { return has_log_prob(b + j, s) ? is_weight(b + j, q) : 0.0; });
        p.batch_is_n = with_log_prob;
      }
    }
    if (nll_rollout(s)) p.batch_positive_tokens = with_log_prob;
    if (uses_covariance(cfg)) {
      p.batch_cov_n = with_log_prob;
      p.batch_cov_adv = batch.token_adv.empty() ? with_log_prob * static_cast<double>(batch.adv[s])
                                                : lane_sum(n, [&](std::int64_t j) {
                                                    return has_log_prob(b + j, s) ? static_cast<double>(adv_at(b + j, s))
                                                                                  : 0.0;
                                                  });
      p.batch_cov_logp = lane_sum(
          n, [&](std::int64_t j) { return has_log_prob(b + j, s) ? static_cast<double>(cur.logp[b + j]) : 0.0; });
    }
    return p;
  }

  // The covariance term of a response token with a log-prob (KL-Cov, Clip-Cov; detached).
  GRPOKIT_HD double covariance(std::int64_t t, std::int64_t s, const batch_stats& whole) const {
    return (static_cast<double>(adv_at(t, s)) - whole.cov_adv_mean) *
           (static_cast<double>(cur.logp[t]) - whole.cov_logp_mean);
  }
  // Clip-Cov's candidates: the covariance strictly inside (lb, ub) and not already held by the
  // clip (verl: -A clip(r) > -A r).
  GRPOKIT_HD bool clip_cov_candidate(std::int64_t t, std::int64_t s, const batch_stats& whole) const {
    const double cov = covariance(t, s, whole);
    if (!(cov > cfg.clip_cov_lb && cov < cfg.clip_cov_ub)) return false;
    double r, dr;
    math::token_ratio<Ops>(cur.logp[t], trainer_logp(t), cfg.log_ratio_clamp, r, dr);
    const double adv = adv_at(t, s);
    return !(-adv * math::clipped_ratio(surrogate_params_of(cfg), r) > -adv * r);
  }
  // The covariance selection's key of a candidate: KL-Cov its covariance, Clip-Cov a random key of
  // its position; then the position reversed, so that of equal keys the earlier token ranks higher.
  GRPOKIT_HD select_key covariance_key(std::int64_t t, std::int64_t s, const batch_stats& whole) const {
    const std::uint64_t position = select_position(first_seq + s, t - batch.seq_offsets[s]);
    const std::uint64_t value = cfg.obj == objective::clip_cov ? random_key(cfg.clip_cov_seed, position)
                                                               : ordered_bits(covariance(t, s, whole));
    return {value, ~position};
  }
  // Whether the covariance selection took token t (a response token with a log-prob).
  GRPOKIT_HD bool covariance_selected(std::int64_t t, std::int64_t s, const batch_stats& whole) const {
    if (!uses_covariance(cfg) || !whole.cov_any) return false;
    if (cfg.obj == objective::clip_cov && !clip_cov_candidate(t, s, whole)) return false;
    return at_or_above(covariance_key(t, s, whole), whole.cov_last);
  }

  // The candidates of selection `which` in sequence s (detail/select.hpp), add(key): the entropies
  // of the response tokens (the top-entropy quantile; TRL: every completion token), the covariance keys
  // of the response tokens with a log-prob (`whole`: the batch pass's means), M2PO's second moments
  // of the response tokens with a log-prob (AReaL: its loss mask).
  template <class Add>
  GRPOKIT_HD void for_each_selection_key(selection which, std::int64_t s, const batch_stats& whole, Add&& add) const {
    for (std::int64_t t = batch.seq_offsets[s]; t < batch.seq_offsets[s + 1]; ++t) {
      if (which == selection::entropy_quantile) {
        if (is_response(t, s)) add(select_key{ordered_bits(static_cast<double>(cur.entropy[t])), 0});
      } else if (which == selection::m2po) {
        if (has_log_prob(t, s)) add(select_key{ordered_bits(m2po_moment(t)), 0});
      } else if (has_log_prob(t, s) &&
                 (cfg.obj != objective::clip_cov || clip_cov_candidate(t, s, whole))) {
        add(covariance_key(t, s, whole));
      }
    }
  }

  // The importance weight applied to a kept token (detached), before the batch normalisation.
  GRPOKIT_HD double is_weight(std::int64_t t, const sequence_summary& seq) const {
    double w;
    switch (cfg.is) {
      case is_correction::token_truncate:
      case is_correction::token_mask:
        w = Ops::exp(clamp_log_ratio(rollout_log_ratio(t)));
        break;
      case is_correction::sequence_truncate:
      case is_correction::sequence_mask:
        w = seq.is_weight;
        break;
      case is_correction::none:
      default:
        return 1.0;
    }
    if (cfg.is == is_correction::token_truncate || cfg.is == is_correction::sequence_truncate)
      return std::fmin(std::fmax(w, cfg.is_min), cfg.is_max);
    return (w >= cfg.is_min && w <= cfg.is_max) ? w : 0.0;
  }

  struct token_term {
    double pg = 0, dpg = 0;  // IS-weighted surrogate and its d/dlogp
    double kl = 0, dkl = 0;  // estimator (unscaled by beta) and its d/dlogp
    double kl_log = 0;       // the value logged as kl_ref
    double is_weight = 1;
    math::surrogate_term sur;
  };

  // `is_divisor`: the batch mean of the IS weights (is_batch_normalize), else 1; `kl_cov_penalty`:
  // KL-Cov selected the token.
  GRPOKIT_HD token_term term(std::int64_t t, std::int64_t s, const sequence_summary& seq, double is_divisor = 1,
                             bool kl_cov_penalty = false) const {
    token_term out;
    const double logp = cur.logp[t];
    const double adv = adv_at(t, s);
    // the token ratio pi / pi_old, wanted by the token-level objectives and by the IS-weighted KL
    double token_r = 1, token_dr = 1;
    const bool sequence_ratio = cfg.obj == objective::gspo || cfg.obj == objective::gmpo;
    if (!sequence_ratio || cfg.kl_is_weighted)
      math::token_ratio<Ops>(logp, trainer_logp(t), cfg.log_ratio_clamp, token_r, token_dr);
    double r = token_r, dr = token_dr;
    const bool gmpo_clip = cfg.obj == objective::gmpo && gmpo_clipped(gmpo_delta(t), adv);
    if (cfg.obj == objective::gspo) {
      r = seq.gspo_ratio;
      dr = seq.gspo_ratio_grad;
    } else if (cfg.obj == objective::gmpo) {
      // GMPO-token form, as GSPO-token: d r_i / d logp_t = r_i / n_i where the clip lets logp_t
      // through; the aggregation's sum over the n_i tokens of the sequence supplies the 1 / n_i
      r = seq.gspo_ratio;
      dr = gmpo_clip ? 0.0 : seq.gspo_ratio_grad;
    }
    out.sur = math::surrogate<Ops>(surrogate_params_of(cfg), adv, logp, r, dr);
    if (cfg.obj == objective::gmpo) {  // where the sign-aware clip holds the token
      out.sur.clipped_low = adv < 0 && gmpo_clip;
      out.sur.clipped_high = adv > 0 && gmpo_clip;
    }
    if (kl_cov_penalty) {  // verl: + ppo_kl_coef |logp - logp_old|, before the IS weight
      const double d = logp - trainer_logp(t);
      out.sur.value += cfg.ppo_kl_coef * std::fabs(d);
      out.sur.grad += d > 0 ? cfg.ppo_kl_coef : (d < 0 ? -cfg.ppo_kl_coef : 0.0);
    }
    if (cfg.obj == objective::cispo && cfg.cispo_clip_frac_any_sign) {  // verl: ratio != clip(ratio)
      out.sur.clipped_high = r < 1.0 - cfg.eps_low || r > 1.0 + cfg.eps_high;
      out.sur.clipped_low = false;
    }
    out.is_weight = is_weight(t, seq) / is_divisor;
    out.pg = out.is_weight * out.sur.value;
    out.dpg = out.is_weight * out.sur.grad;
    if (has_ref()) {
      const auto est = cfg.kl == kl_estimator::none ? kl_estimator::k3 : cfg.kl;
      const auto k = math::kl_term<Ops>(est, logp, batch.logp_ref[t], cfg.kl_input_clamp, cfg.kl_output_clamp);
      out.kl_log = k.value;
      if (cfg.kl != kl_estimator::none) {
        out.kl = k.value;
        out.dkl = cfg.kl_straight_through ? logp - static_cast<double>(batch.logp_ref[t]) : k.grad;
        if (cfg.kl_is_weighted) {  // (kl r)' = kl' r + kl r'
          out.dkl = out.dkl * token_r + out.kl * token_dr;
          out.kl *= token_r;
        }
      }
    }
    return out;
  }

  // The denominators: the caller's global counts, else the local ones.
  GRPOKIT_HD double token_count(std::int64_t local) const {
    return cfg.global_tokens > 0 ? cfg.global_tokens : static_cast<double>(local);
  }
  GRPOKIT_HD double seq_count(std::int64_t local) const {
    return cfg.global_seqs > 0 ? cfg.global_seqs : static_cast<double>(local);
  }

  // Aggregation weight of a token of a sequence with `counted` response tokens.
  GRPOKIT_HD double token_weight(std::int64_t counted, double n_tokens, double n_seqs) const {
    return token_weight(cfg.agg, counted, n_tokens, n_seqs);
  }
  GRPOKIT_HD double token_weight(aggregation agg, std::int64_t counted, double n_tokens, double n_seqs) const {
    double w;
    switch (agg) {
      case aggregation::token_mean:
        w = n_tokens > 0 ? 1.0 / n_tokens : 0.0;
        break;
      case aggregation::token_sum:
        w = 1.0;
        break;
      case aggregation::seq_mean_token_mean:
        w = n_seqs > 0 && counted > 0 ? 1.0 / (static_cast<double>(counted) * n_seqs) : 0.0;
        break;
      case aggregation::seq_mean_token_sum:
        w = n_seqs > 0 ? 1.0 / n_seqs : 0.0;
        break;
      case aggregation::seq_mean_token_sum_norm:
      default:
        w = n_seqs > 0 ? 1.0 / (n_seqs * cfg.norm_constant) : 0.0;
        break;
    }
    return w * cfg.dp_size;
  }
  // The running sums of one sequence's pass (open_sequence, accumulate_token, close_sequence).
  struct sequence_pass {
    loss_partial p;
    double w = 0, w_entropy = 0;  // the aggregation weights of its tokens
    bool nll = false;
    double seq_log_ratio = 0, seq_mismatch_tokens = 0;
  };
  GRPOKIT_HD sequence_pass open_sequence(std::int64_t s, const sequence_summary& q, double n_tokens,
                                         double n_seqs) const {
    sequence_pass a;
    loss_partial& p = a.p;
    a.w = token_weight(q.counted, n_tokens, n_seqs);
    a.w_entropy = cfg.entropy_token_mean ? token_weight(aggregation::token_mean, q.counted, n_tokens, n_seqs) : a.w;
    const bool seq_in = batch.seq_mask.empty() || batch.seq_mask[s] != 0;
    a.nll = nll_rollout(s);
    p.seqs_adv_masked = seq_in ? 0 : 1;
    if (q.counted > 0) {
      p.seqs = 1;
      p.adv_sum = batch.adv[s];
      p.adv_sq = static_cast<double>(batch.adv[s]) * static_cast<double>(batch.adv[s]);
      p.seqs_trm = q.keep_trust_region ? 0 : 1;
      p.seqs_imp = q.keep_importance ? 0 : 1;
      p.seqs_opsm = q.keep_opsm ? 0 : 1;
    }
    return a;
  }
  // Writes dlogp / dentropy of token t of sequence s and adds its loss and metrics to the pass (the
  // tokens of a sequence in order); `whole`: what the batch pass gave.
  GRPOKIT_HD void accumulate_token(sequence_pass& a, std::int64_t t, std::int64_t s, const sequence_summary& q,
                                   const batch_stats& whole, const policy_grads<Real>& grads) const {
    loss_partial& p = a.p;
    grads.dlogp[t] = Real(0);
    if (!grads.dentropy.empty()) grads.dentropy[t] = Real(0);
    const token_state st = classify(t, s);
    p.masked_padding += st == token_state::padding;
    p.masked_prune += st == token_state::vocab_prune;
    p.masked_custom += st == token_state::custom;
    p.masked_importance += st == token_state::importance;
    p.masked_dppo += st == token_state::dppo;
    p.masked_m2po += st == token_state::m2po;
    // VAPO's NLL, whatever the masks after padding and pruning do (NeMo-RL: the response mask)
    const double nll_grad = a.nll && has_log_prob(st) ? -whole.nll_weight : 0.0;
    if (nll_grad != 0) {
      p.nll += nll_grad * static_cast<double>(cur.logp[t]);
      grads.dlogp[t] = static_cast<Real>(nll_grad);
    }
    if (st != token_state::kept_candidate) return;
    if (has_rollout()) {
      const double d = rollout_log_ratio(t);
      p.mism_n += 1;
      p.mism_abs += std::fabs(d);
      p.mism_max = max_of(p.mism_max, std::fabs(d));
      p.mism_k3 += math::divergence_term<Ops>(divergence::k3, clamp_log_ratio(d));
      p.mism_rho2 += Ops::exp(2.0 * clamp_log_ratio(d));
      a.seq_log_ratio += d;
      a.seq_mismatch_tokens += 1;
    }
    if (!q.keep()) {
      p.masked_sequence += 1;
      return;
    }
    const bool cov_selected = covariance_selected(t, s, whole);
    p.cov_selected += cov_selected;
    token_term k = term(t, s, q, whole.is_divisor, cov_selected && cfg.obj == objective::kl_cov);
    // TRL: the entropy mask multiplies the policy-gradient term only
    const bool entropy_masked = !cur.entropy.empty() && static_cast<double>(cur.entropy[t]) < whole.entropy_threshold;
    p.masked_entropy += entropy_masked;
    const bool pg_kept = !entropy_masked && !(cov_selected && cfg.obj == objective::clip_cov);  // verl: corr = 0
    if (!pg_kept) k.pg = k.dpg = 0;
    p.kept += 1;
    p.pg += a.w * k.pg;
    p.kl += a.w * cfg.kl_coef * k.kl;
    p.clip_low += k.sur.clipped_low;
    p.clip_high += k.sur.clipped_high;
    p.clip_dual += k.sur.clipped_dual;
    if (has_old()) {  // verl's ppo_kl: the log-ratio clamped as the ratio's, then averaged
      const double d = static_cast<double>(cur.logp[t]) - static_cast<double>(batch.logp_old[t]);
      p.kl_old -= std::fmin(std::fmax(d, -cfg.log_ratio_clamp), cfg.log_ratio_clamp);
    }
    p.kl_ref += k.kl_log;
    p.w_sum += k.is_weight;
    p.w_sq += k.is_weight * k.is_weight;
    p.w_min = min_of(p.w_min, k.is_weight);
    p.w_max = max_of(p.w_max, k.is_weight);
    grads.dlogp[t] = static_cast<Real>(a.w * (k.dpg + cfg.kl_coef * k.dkl) + nll_grad);
    if (!cur.entropy.empty()) {
      p.entropy += cur.entropy[t];
      p.ent -= a.w_entropy * cfg.entropy_coef * cur.entropy[t];
      if (!grads.dentropy.empty()) grads.dentropy[t] = static_cast<Real>(-a.w_entropy * cfg.entropy_coef);
    }
  }
  GRPOKIT_HD loss_partial close_sequence(sequence_pass& a) const {
    loss_partial& p = a.p;
    if (a.seq_mismatch_tokens > 0) {  // the sequence-level mismatch metrics (verl chi2_seq, ppl_ratio)
      p.mism_seqs = 1;
      p.mism_seq_rho2 = Ops::exp(2.0 * clamp_log_ratio(a.seq_log_ratio));
      p.mism_ppl_ratio = Ops::exp(clamp_log_ratio(-a.seq_log_ratio / a.seq_mismatch_tokens));
    }
    return p;
  }
  // Writes dlogp / dentropy of the tokens of sequence s and returns its loss and metric sums;
  // `whole`: what the batch pass gave.
  GRPOKIT_HD loss_partial accumulate_sequence(std::int64_t s, const sequence_summary& q, double n_tokens,
                                              double n_seqs, const batch_stats& whole,
                                              const policy_grads<Real>& grads) const {
    sequence_pass a = open_sequence(s, q, n_tokens, n_seqs);
    for (std::int64_t t = batch.seq_offsets[s]; t < batch.seq_offsets[s + 1]; ++t)
      accumulate_token(a, t, s, q, whole, grads);
    return close_sequence(a);
  }

  // Whether token t's dlogp / dentropy and loss depend on no other token's log-prob or entropy and
  // on no statistic of the batch: then a schedule may compute each token right after its logits row
  // (host fused_loss, one read of the logits). Excluded: the sequence ratios (GSPO, GMPO), OPSM, the
  // trust-region and importance masks, sequence-level IS, DPPO, the batch pass and the selections,
  // pruning and the sampler's support (a summary counts pruned tokens), and masks other than the
  // built-in ones (a custom keep may read the log-prob).
  static bool token_local(const loss_config& c) {
    return std::is_base_of<builtin_mask, M>::value && !P::trust_region && !P::importance_mask && !P::vocab_prune &&
           !sampler_support(c) && c.obj != objective::gspo && c.obj != objective::gmpo && !(c.opsm_threshold < INFINITY) &&
           !sequence_level_is(c.is) && c.dppo == dppo_divergence::none && !needs_batch_pass(c) &&
           !needs_selection(c, selection::entropy_quantile) && !needs_selection(c, selection::covariance) &&
           !needs_selection(c, selection::m2po);
  }
};

}  // namespace grpokit::detail
