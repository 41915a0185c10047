#pragma once
// Independent, naive references in long double, written from the formulas in docs/ and the
// research notes (verl / TRL), not from the library's code: no tiles, no lanes, no online
// rescaling, full softmax materialised per row, std::sort for medians.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include <grpokit/grpokit.hpp>

namespace ref {

using ld = long double;
const ld inf = std::numeric_limits<ld>::infinity();

// ---------------------------------------------------------------------------------------------
// log-probs

struct row_out {
  ld lse, entropy, logp;
  ld sum_p2;  // sum_v p_v^2 over the kept columns
};

// One row: z = x / T; with pruning the distribution is renormalised over {v : p_v >= rho max p}.
inline row_out row(const std::vector<ld>& x, std::int64_t target, ld temperature, bool prune, ld rho) {
  const std::size_t V = x.size();
  std::vector<ld> z(V);
  for (std::size_t v = 0; v < V; ++v) z[v] = x[v] / temperature;
  const ld m = *std::max_element(z.begin(), z.end());
  std::vector<bool> safe(V, true);
  if (prune)
    for (std::size_t v = 0; v < V; ++v) safe[v] = std::exp(z[v] - m) >= rho;  // p_v / p_max >= rho
  ld sum = 0;
  for (std::size_t v = 0; v < V; ++v)
    if (safe[v]) sum += std::exp(z[v] - m);
  const ld lse = m + std::log(sum);
  ld h = 0, sum_p2 = 0;
  for (std::size_t v = 0; v < V; ++v) {
    if (!safe[v]) continue;
    const ld p = std::exp(z[v] - lse);
    h -= p * (z[v] - lse);
    sum_p2 += p * p;
  }
  const ld logp = safe[static_cast<std::size_t>(target)] ? z[static_cast<std::size_t>(target)] - lse : -inf;
  return {lse, h, logp, sum_p2};
}

// ---------------------------------------------------------------------------------------------
// advantages

struct adv_out {
  std::vector<ld> adv;
  std::vector<int> keep;
};

inline ld mean(const std::vector<ld>& r) { return std::accumulate(r.begin(), r.end(), ld(0)) / r.size(); }
inline ld bessel_std(const std::vector<ld>& r) {
  if (r.size() < 2) return 0;
  const ld mu = mean(r);
  ld ss = 0;
  for (ld v : r) ss += (v - mu) * (v - mu);
  return std::sqrt(ss / (r.size() - 1));
}
inline ld lower_median(std::vector<ld> r) {
  std::sort(r.begin(), r.end());
  return r[(r.size() - 1) / 2];
}

enum class base { mean, median, loo, ess, external, pass_at_k, opo };

inline adv_out advantages(const std::vector<ld>& rewards, const std::vector<std::int64_t>& groups, base b,
                          const grpokit::advantage_config& cfg, const std::vector<ld>& log_ratio = {},
                          const std::vector<ld>& weight = {}, const std::vector<ld>& group_base = {},
                          const std::vector<ld>& tokens = {}) {
  adv_out out{std::vector<ld>(rewards.size()), std::vector<int>(rewards.size(), 1)};
  std::vector<ld> centered(rewards.size()), divisor(rewards.size());
  const ld batch_std = bessel_std(rewards);
  const ld nonzero = static_cast<ld>(std::count_if(rewards.begin(), rewards.end(), [](ld v) { return v != 0; }));
  for (std::size_t g = 0; g + 1 < groups.size(); ++g) {
    const std::size_t lo = static_cast<std::size_t>(groups[g]), hi = static_cast<std::size_t>(groups[g + 1]);
    std::vector<ld> r(rewards.begin() + lo, rewards.begin() + hi);
    const std::size_t n = r.size();
    const bool all_equal = std::all_of(r.begin(), r.end(), [&](ld v) { return v == r[0]; });
    std::vector<ld> c(n);
    ld spread = bessel_std(r), eps = cfg.eps;
    switch (b) {
      case base::mean:
        for (std::size_t i = 0; i < n; ++i) c[i] = r[i] - mean(r);
        break;
      case base::loo:
        for (std::size_t i = 0; i < n; ++i) {
          ld others = 0;
          for (std::size_t j = 0; j < n; ++j)
            if (j != i) others += r[j];
          c[i] = n > 1 ? r[i] - others / (n - 1) : 0;
        }
        break;
      case base::median: {
        const ld med = lower_median(r);
        std::vector<ld> dev(n);
        for (std::size_t i = 0; i < n; ++i) {
          c[i] = r[i] - med;
          dev[i] = std::fabs(r[i] - med);
        }
        spread = lower_median(dev);
        eps = cfg.mad_eps;
        if (n % 2 == 1)
          for (std::size_t i = 0; i < n; ++i)
            if (r[i] == med) {
              out.keep[lo + i] = 0;
              break;
            }
        break;
      }
      case base::ess: {
        ld num = 0, den = 0;
        for (std::size_t i = 0; i < n; ++i) {
          const ld w = weight.empty() ? std::exp(2 * log_ratio[lo + i]) : weight[lo + i];
          num += w * r[i];
          den += w;
        }
        const ld bl = den > 0 ? num / den : mean(r);
        for (std::size_t i = 0; i < n; ++i) c[i] = r[i] - bl;
        break;
      }
      case base::pass_at_k: {  // only the best gets r_max - r_second (equal maxima: 0 either way)
        const std::size_t top = static_cast<std::size_t>(std::max_element(r.begin(), r.end()) - r.begin());
        ld second = -INFINITY;
        for (std::size_t i = 0; i < n; ++i)
          if (i != top) second = std::max(second, r[i]);
        for (std::size_t i = 0; i < n; ++i) c[i] = i == top && n > 1 ? r[i] - second : 0;
        break;
      }
      case base::external:  // ReMax: the caller's baseline; equal rewards keep r - b
        for (std::size_t i = 0; i < n; ++i) c[i] = r[i] - group_base[g];
        break;
      case base::opo: {  // OPO: the length-weighted mean (all lengths 0: the mean)
        ld num = 0, den = 0;
        for (std::size_t i = 0; i < n; ++i) {
          num += tokens[lo + i] * r[i];
          den += tokens[lo + i];
        }
        const ld bl = den > 0 ? num / den : mean(r);
        for (std::size_t i = 0; i < n; ++i) c[i] = r[i] - bl;
        break;
      }
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (all_equal && b != base::external) {
        c[i] = 0;
        if (cfg.mask_zero_variance) out.keep[lo + i] = 0;
      }
      ld div = 1;
      if (cfg.scale == grpokit::adv_scale::group) div = std::max<ld>(spread, cfg.std_floor) + eps;
      if (cfg.scale == grpokit::adv_scale::batch) div = std::max<ld>(batch_std, cfg.std_floor) + cfg.eps;
      if (cfg.scale == grpokit::adv_scale::gpg)  // GPG: alpha = S / max(#(r != 0), 1)
        div = std::max<ld>(nonzero, 1) / static_cast<ld>(rewards.size());
      if (cfg.equal_group_weight)  // every group weighs as a group of the mean size
        div *= static_cast<ld>(n) * static_cast<ld>(groups.size() - 1) / static_cast<ld>(rewards.size());
      centered[lo + i] = c[i];
      divisor[lo + i] = div;
    }
  }
  ld shift = 0, batch_div = 1;
  if (cfg.scale == grpokit::adv_scale::whiten) {  // REINFORCE++-baseline: verl's masked_whiten of r - b
    const bool counted = std::accumulate(tokens.begin(), tokens.end(), ld(0)) > 0;  // else each rollout once
    auto wt = [&](std::size_t i) { return counted ? tokens[i] : ld(1); };
    ld W = 0, sum = 0;
    for (std::size_t i = 0; i < rewards.size(); ++i) {
      W += wt(i);
      sum += wt(i) * centered[i];
    }
    shift = sum / W;
    ld ss = 0;
    for (std::size_t i = 0; i < rewards.size(); ++i) ss += wt(i) * (centered[i] - shift) * (centered[i] - shift);
    const ld sd = W > 1 ? std::sqrt(ss / (W - 1)) : 0;
    batch_div = std::max<ld>(sd, cfg.std_floor) + cfg.eps;
  }
  for (std::size_t i = 0; i < rewards.size(); ++i) out.adv[i] = (centered[i] - shift) / (divisor[i] * batch_div);
  if (cfg.fold_lr_factor && !log_ratio.empty()) {
    ld s1 = 0, s2 = 0;
    for (ld l : log_ratio) {
      s1 += std::exp(l);
      s2 += std::exp(2 * l);
    }
    const ld ess = s1 * s1 / s2;
    const ld factor = std::sqrt(std::min<ld>(1, ess / log_ratio.size() / cfg.ess_ratio_ref));
    for (ld& a : out.adv) a *= factor;
  }
  for (ld& a : out.adv) a = std::min<ld>(std::max<ld>(a, cfg.clip_low), cfg.clip_high);
  return out;
}

// ---------------------------------------------------------------------------------------------
// policy loss

struct batch {
  std::vector<std::int64_t> seq_offsets;
  std::vector<ld> adv, logp_old, logp_ref, logp_rollout;
  std::vector<int> token_mask, seq_mask;
  std::vector<int> positive;  // [S] VAPO's correct rollouts
  std::vector<ld> token_adv;  // [T] advantages per token, or empty: adv[s] on every token of s
  ld adv_of(std::size_t t, std::size_t s) const { return token_adv.empty() ? adv[s] : token_adv[t]; }
};

struct mask_features {
  bool trust_region = false, vocab_prune = false, importance = false;
  // user mask: keep token t?
  bool (*custom)(std::int64_t t) = nullptr;
};

struct loss_out {
  ld loss = 0;
  ld kept = 0, tokens = 0, clip_low = 0, clip_high = 0, dual = 0;
  ld masked_prune = 0, masked_importance = 0, masked_custom = 0, masked_sequence = 0, seqs_trm = 0, seqs_opsm = 0;
  ld masked_dppo = 0, masked_m2po = 0;
  ld w_min = inf, w_max = -inf, w_sum = 0;
  ld chi2_token = 0, chi2_seq = 0, ppl_ratio = 0;  // rollout mismatch (verl's definitions)
  ld is_divisor = 1, nll = 0;  // is_batch_normalize's batch mean; VAPO's NLL term
  ld entropy_threshold = -inf, masked_entropy = 0;  // top_entropy_quantile
  ld cov_selected = 0;                            // objective::kl_cov's penalised kept tokens
};

inline ld clampl(ld x, ld lo, ld hi) { return std::min(std::max(x, lo), hi); }

inline ld divergence(grpokit::divergence e, ld d) {
  if (e == grpokit::divergence::k2) return d * d / 2;
  if (e == grpokit::divergence::k3) return std::exp(d) - 1 - d;
  return d;
}

// The loss as a function of the current policy's `logp` and `entropy` (both "live"); `logp_detached`
// is the value used wherever the loss stops gradients through logp (the on-policy pi_old, the
// bypass-mode IS ratio, masks), i.e. the logp at which the gradient is taken.
inline loss_out policy_loss(const std::vector<ld>& logp, const std::vector<ld>& entropy,
                            const std::vector<ld>& logp_detached, const batch& b, const grpokit::loss_config& c,
                            mask_features mf) {
  loss_out o;
  const std::size_t S = b.seq_offsets.size() - 1;
  const bool has_old = !b.logp_old.empty(), has_ref = !b.logp_ref.empty(), has_roll = !b.logp_rollout.empty();
  auto old = [&](std::size_t t) { return has_old ? b.logp_old[t] : logp_detached[t]; };
  auto counted = [&](std::size_t t, std::size_t s) {
    return (b.token_mask.empty() || b.token_mask[t]) && (b.seq_mask.empty() || b.seq_mask[s]);
  };
  // M2PO (AReaL m2_threshold): the largest second moments (logp_rollout - pi_old)^2 of the response
  // tokens with a log-prob leave until the mean of the rest is below tau; equal values go together
  // (the largest value v whose tokens at or below it have a mean below tau; none: the smallest)
  auto response = [&](std::size_t t, std::size_t s) {
    return counted(t, s) && !(mf.vocab_prune && logp_detached[t] == -inf);
  };
  auto m2 = [&](std::size_t t) { return (b.logp_rollout[t] - old(t)) * (b.logp_rollout[t] - old(t)); };
  ld m2po_keep_max = inf;
  if (c.m2po_threshold < inf) {
    std::vector<ld> v;
    for (std::size_t s = 0; s < S; ++s)
      for (auto t = static_cast<std::size_t>(b.seq_offsets[s]); t < static_cast<std::size_t>(b.seq_offsets[s + 1]); ++t)
        if (response(t, s)) v.push_back(m2(t));
    std::sort(v.begin(), v.end());
    if (!v.empty()) m2po_keep_max = v[0];
    ld sum = 0;
    for (std::size_t i = 0; i < v.size(); ++i) {
      sum += v[i];
      const bool last_of_value = i + 1 == v.size() || v[i + 1] != v[i];
      if (last_of_value && sum / static_cast<ld>(i + 1) < c.m2po_threshold) m2po_keep_max = v[i];
    }
  }
  // token-level masks
  std::vector<int> stat(logp.size(), 0), cnt(logp.size(), 0);
  std::vector<ld> n_count(S, 0), n_stat(S, 0);
  for (std::size_t s = 0; s < S; ++s)
    for (auto t = static_cast<std::size_t>(b.seq_offsets[s]); t < static_cast<std::size_t>(b.seq_offsets[s + 1]); ++t) {
      if (!counted(t, s)) continue;
      cnt[t] = 1;
      n_count[s] += 1;
      if (mf.vocab_prune && logp_detached[t] == -inf) {
        o.masked_prune += 1;
        continue;
      }
      if (m2po_keep_max < inf && m2(t) > m2po_keep_max) {
        o.masked_m2po += 1;
        continue;
      }
      if (mf.custom && !mf.custom(static_cast<std::int64_t>(t))) {
        o.masked_custom += 1;
        continue;
      }
      if (mf.importance && !c.importance_sequence) {
        const ld ratio = std::exp(clampl(old(t) - b.logp_rollout[t], -20, 20));
        if (ratio < c.importance_lo || ratio > c.importance_hi) {
          o.masked_importance += 1;
          continue;
        }
      }
      if (c.dppo != grpokit::dppo_divergence::none && (has_old || has_roll)) {  // DPPO (verl dppo_tv / dppo_kl)
        const ld p = std::exp(logp_detached[t]), pa = std::exp(has_old ? b.logp_old[t] : b.logp_rollout[t]);
        const ld A = b.adv_of(t, s);
        bool keep;
        if (c.dppo == grpokit::dppo_divergence::tv) {
          keep = A > 0 ? p - pa <= c.dppo_high : p - pa >= -c.dppo_low;
        } else {
          const ld bkl = pa * std::log(pa / p) + (1 - pa) * std::log((1 - pa + 1e-8L) / (1 - p + 1e-8L));
          keep = A > 0 ? (bkl <= c.dppo_high || p <= pa) : (bkl <= c.dppo_low || p >= pa);
        }
        if (!keep) {
          o.masked_dppo += 1;
          continue;
        }
      }
      stat[t] = 1;
      n_stat[s] += 1;
    }
  ld local_tokens = 0, local_seqs = 0;
  for (std::size_t s = 0; s < S; ++s) {
    local_tokens += n_count[s];
    local_seqs += n_count[s] > 0;
  }
  o.tokens = local_tokens;
  const ld N_tok = c.global_tokens > 0 ? c.global_tokens : local_tokens;
  const ld N_seq = c.global_seqs > 0 ? c.global_seqs : local_seqs;
  // the importance weight of token t of a sequence whose weight is seq_w (detached)
  auto is_weight = [&](std::size_t t, ld seq_w) {
    const ld d = has_roll ? clampl(old(t) - b.logp_rollout[t], -20, 20) : 0;
    switch (c.is) {
      case grpokit::is_correction::token_truncate: return clampl(std::exp(d), c.is_min, c.is_max);
      case grpokit::is_correction::sequence_truncate: return clampl(seq_w, c.is_min, c.is_max);
      case grpokit::is_correction::token_mask: return std::exp(d) >= c.is_min && std::exp(d) <= c.is_max ? std::exp(d) : ld(0);
      case grpokit::is_correction::sequence_mask: return seq_w >= c.is_min && seq_w <= c.is_max ? seq_w : ld(0);
      default: return ld(1);
    }
  };
  auto seq_weight = [&](std::size_t s) {  // exp of the clamped sum of the kept tokens' log-ratios
    ld sum = 0;
    for (auto t = static_cast<std::size_t>(b.seq_offsets[s]); t < static_cast<std::size_t>(b.seq_offsets[s + 1]); ++t)
      if (stat[t] && has_roll) sum += old(t) - b.logp_rollout[t];
    return std::exp(clampl(sum, -20, 20));
  };
  // the batch's statistics: the IS weights' mean (verl rollout_is_batch_normalize) over the response
  // tokens or the non-empty sequences, and the count of VAPO's NLL tokens
  const bool seq_level = c.is == grpokit::is_correction::sequence_truncate || c.is == grpokit::is_correction::sequence_mask;
  if (c.is_batch_normalize && c.is != grpokit::is_correction::none) {
    ld sum = 0, n = 0;
    for (std::size_t s = 0; s < S; ++s) {
      if (n_count[s] == 0) continue;
      const ld sw = seq_weight(s);
      if (seq_level) {
        sum += is_weight(static_cast<std::size_t>(b.seq_offsets[s]), sw);
        n += 1;
        continue;
      }
      for (auto t = static_cast<std::size_t>(b.seq_offsets[s]); t < static_cast<std::size_t>(b.seq_offsets[s + 1]); ++t)
        if (cnt[t] && !(mf.vocab_prune && logp_detached[t] == -inf)) {  // the response tokens with a log-prob
          sum += is_weight(t, sw);
          n += 1;
        }
    }
    if (n > 0 && sum / n > 1e-8L) o.is_divisor = sum / n;
  }
  // TRL's top-entropy mask: torch.quantile(entropies of the response tokens, 1 - rho), linear
  // interpolation between the sorted neighbours
  if (c.top_entropy_quantile < 1) {
    std::vector<ld> h;
    for (std::size_t t = 0; t < logp.size(); ++t)
      if (cnt[t]) h.push_back(entropy[t]);
    std::sort(h.begin(), h.end());
    if (!h.empty()) {
      // the position in double, as grpokit's convention (torch: in the entropies' dtype): an exact
      // integer position stays one
      const ld pos = (1 - c.top_entropy_quantile) * static_cast<double>(h.size() - 1);
      const std::size_t lo = static_cast<std::size_t>(std::floor(pos)), hi = std::min(lo + 1, h.size() - 1);
      o.entropy_threshold = h[lo] + (pos - static_cast<ld>(lo)) * (h[hi] - h[lo]);
    }
  }
  // verl's KL-Cov: cov_t = (A_t - mean A)(logp_t - mean logp) over the response tokens with a
  // log-prob; the max(1, floor(ratio N)) largest (earlier token first among equal ones) are selected
  std::vector<int> kl_cov_sel(logp.size(), 0);
  const bool clip_cov = c.obj == grpokit::objective::clip_cov;
  const double cov_ratio = clip_cov ? c.clip_cov_ratio : c.kl_cov_ratio;
  if ((c.obj == grpokit::objective::kl_cov || clip_cov) && cov_ratio > 0) {
    std::vector<std::size_t> valid;
    std::vector<ld> a_tok(logp.size(), 0);
    std::vector<std::uint64_t> position(logp.size(), 0);  // (sequence, index in it)
    ld a_sum = 0, l_sum = 0;
    for (std::size_t s = 0; s < S; ++s)
      for (auto t = static_cast<std::size_t>(b.seq_offsets[s]); t < static_cast<std::size_t>(b.seq_offsets[s + 1]); ++t)
        if (cnt[t] && !(mf.vocab_prune && logp_detached[t] == -inf)) {
          valid.push_back(t);
          position[t] = (static_cast<std::uint64_t>(s) << 32) | (t - static_cast<std::size_t>(b.seq_offsets[s]));
          a_tok[t] = b.adv_of(t, s);
          a_sum += b.adv_of(t, s);
          l_sum += logp_detached[t];
        }
    if (!valid.empty()) {
      // the means and the products in double, as the loss computes them (the selection compares them)
      const double n = static_cast<double>(valid.size());
      const double am = static_cast<double>(a_sum) / n, lm = static_cast<double>(l_sum) / n;
      std::vector<double> cov(logp.size(), 0);
      for (std::size_t t : valid) cov[t] = (static_cast<double>(a_tok[t]) - am) * (static_cast<double>(logp_detached[t]) - lm);
      const auto k = std::max<std::size_t>(1, static_cast<std::size_t>(n * cov_ratio));
      if (clip_cov) {
        // verl's Clip-Cov: candidates with lb < cov < ub the clip does not hold (-A clip(r) <= -A r),
        // a random subset of k: the largest random keys of the positions (grpokit's randomness)
        std::vector<std::size_t> cand;
        std::vector<std::uint64_t> key(logp.size(), 0);
        for (std::size_t t : valid) {
          const ld r = std::exp(clampl(logp_detached[t] - old(t), -c.log_ratio_clamp, c.log_ratio_clamp));
          const ld A = a_tok[t];
          const bool held = -A * clampl(r, 1 - c.eps_low, 1 + c.eps_high) > -A * r;
          if (cov[t] > c.clip_cov_lb && cov[t] < c.clip_cov_ub && !held) {
            cand.push_back(t);
            key[t] = grpokit::detail::random_key(c.clip_cov_seed, position[t]);
          }
        }
        std::stable_sort(cand.begin(), cand.end(), [&](std::size_t x, std::size_t y) { return key[x] > key[y]; });
        for (std::size_t i = 0; i < k && i < cand.size(); ++i) kl_cov_sel[cand[i]] = 1;
      } else {
        std::stable_sort(valid.begin(), valid.end(), [&](std::size_t x, std::size_t y) { return cov[x] > cov[y]; });
        for (std::size_t i = 0; i < k && i < valid.size(); ++i) kl_cov_sel[valid[i]] = 1;
      }
    }
  }
  auto nll_token = [&](std::size_t t, std::size_t s) {
    return c.positive_nll_coef != 0 && b.positive[s] && cnt[t] && !(mf.vocab_prune && logp_detached[t] == -inf);
  };
  ld nll_tokens = 0;
  for (std::size_t s = 0; s < S; ++s)
    for (auto t = static_cast<std::size_t>(b.seq_offsets[s]); t < static_cast<std::size_t>(b.seq_offsets[s + 1]); ++t)
      nll_tokens += nll_token(t, s);
  ld rho2_sum = 0, rho2_n = 0, seq_rho2_sum = 0, ppl_ratio_sum = 0, mism_seqs = 0;
  for (std::size_t s = 0; s < S; ++s) {
    const auto lo = static_cast<std::size_t>(b.seq_offsets[s]), hi = static_cast<std::size_t>(b.seq_offsets[s + 1]);
    for (std::size_t t = lo; t < hi; ++t)
      if (nll_tokens > 0 && nll_token(t, s)) {  // VAPO (NeMo-RL): a mean over the batch's NLL tokens, times dp_size
        const ld term = -c.positive_nll_coef * c.dp_size / nll_tokens * logp[t];
        o.nll += term;
        o.loss += term;
      }
    // sequence-level quantities (detached unless noted)
    ld sum_log_ratio = 0, gspo_live = 0, gspo_det = 0, trm_max = 0, trm_mean = 0, opsm_sum = 0, gmpo_det = 0;
    // sign-aware: A > 0 caps at eps_high, A < 0 floors at -eps_low (A the token's advantage)
    auto gmpo_clip = [&](ld delta, ld A) {
      return A > 0 ? std::min<ld>(delta, c.eps_high) : A < 0 ? std::max<ld>(delta, -c.eps_low) : ld(0);
    };
    for (std::size_t t = lo; t < hi; ++t) {
      if (!stat[t]) continue;
      const ld d = has_roll ? old(t) - b.logp_rollout[t] : 0;
      sum_log_ratio += d;
      gmpo_det += gmpo_clip(logp_detached[t] - old(t), b.adv_of(t, s));
      if (has_roll) {
        rho2_sum += std::exp(2 * clampl(d, -20, 20));
        rho2_n += 1;
      }
      if (has_old) {
        gspo_live += logp[t] - b.logp_old[t];
        gspo_det += logp_detached[t] - b.logp_old[t];
      }
      opsm_sum += (has_roll ? b.logp_rollout[t] : old(t)) - logp_detached[t];  // sampler minus current
      if (mf.trust_region) {
        const ld dc = clampl(d, -20, 20);
        trm_max = std::max(trm_max, std::fabs(divergence(c.trm_max_estimator, dc)));
        trm_mean += divergence(c.trm_mean_estimator, dc);
      }
    }
    const ld ns = std::max<ld>(n_stat[s], 1);
    if (has_roll && n_stat[s] > 0) {
      seq_rho2_sum += std::exp(2 * clampl(sum_log_ratio, -20, 20));
      ppl_ratio_sum += std::exp(clampl(-sum_log_ratio / n_stat[s], -20, 20));  // PPL_trainer / PPL_rollout
      mism_seqs += 1;
    }
    bool keep_seq = true;
    if (mf.trust_region && n_stat[s] > 0 &&
        (trm_max > c.trm_max_threshold || std::fabs(trm_mean / ns) > c.trm_mean_threshold)) {
      keep_seq = false;
      o.seqs_trm += 1;
    }
    if (b.adv[s] < 0 && n_stat[s] > 0 && opsm_sum / ns > c.opsm_threshold) {  // OPSM
      keep_seq = false;
      o.seqs_opsm += 1;
    }
    if (mf.importance && c.importance_sequence && n_stat[s] > 0) {
      const ld geo = std::exp(clampl(sum_log_ratio / ns, -20, 20));
      if (geo < c.importance_lo || geo > c.importance_hi) keep_seq = false;
    }
    const ld seq_w = std::exp(clampl(sum_log_ratio, -20, 20));
    ld agg_w = 0;
    switch (c.agg) {
      case grpokit::aggregation::token_mean: agg_w = N_tok > 0 ? 1 / N_tok : 0; break;
      case grpokit::aggregation::token_sum: agg_w = 1; break;
      case grpokit::aggregation::seq_mean_token_mean:
        agg_w = N_seq > 0 && n_count[s] > 0 ? 1 / (n_count[s] * N_seq) : 0;
        break;
      case grpokit::aggregation::seq_mean_token_sum: agg_w = N_seq > 0 ? 1 / N_seq : 0; break;
      case grpokit::aggregation::seq_mean_token_sum_norm: agg_w = N_seq > 0 ? 1 / (N_seq * c.norm_constant) : 0; break;
    }
    agg_w *= c.dp_size;
    const ld ent_w = c.entropy_token_mean ? (N_tok > 0 ? c.dp_size / N_tok : 0) : agg_w;
    for (std::size_t t = lo; t < hi; ++t) {
      if (!stat[t]) continue;
      if (!keep_seq) {
        o.masked_sequence += 1;
        continue;
      }
      o.kept += 1;
      const ld A = b.adv_of(t, s);
      // ratio
      ld r;
      if (c.obj == grpokit::objective::gspo) {
        // GSPO-token: log r = logp - sg(logp) + sg(s_i), clamped above
        const ld log_r = logp[t] - logp_detached[t] + gspo_det / ns;
        r = std::exp(std::min<ld>(log_r, c.gspo_log_ratio_max));
      } else if (c.obj == grpokit::objective::gmpo) {
        // GMPO-token, as GSPO-token: log r = sg(M_i) + clip(Delta_t) - sg(clip(Delta_t)), M_i the
        // sequence's mean clipped log-ratio (constant where the +-log_ratio_clamp holds it)
        const ld m = gmpo_det / ns, mc = clampl(m, -c.log_ratio_clamp, c.log_ratio_clamp);
        const ld live = gmpo_clip(logp[t] - old(t), A) - gmpo_clip(logp_detached[t] - old(t), A);
        r = std::exp(mc + (m == mc ? live : 0));
      } else {
        r = std::exp(clampl(logp[t] - old(t), -c.log_ratio_clamp, c.log_ratio_clamp));
      }
      const ld r_det = c.obj == grpokit::objective::gspo
                           ? std::exp(std::min<ld>(gspo_det / ns, c.gspo_log_ratio_max))
                           : std::exp(clampl(logp_detached[t] - old(t), -c.log_ratio_clamp, c.log_ratio_clamp));
      const ld lo_b = 1 - c.eps_low, hi_b = 1 + c.eps_high;
      ld pg = 0;
      switch (c.obj) {
        case grpokit::objective::reinforce: pg = -A * logp[t]; break;
        case grpokit::objective::gmpo: pg = -A * r; break;
        case grpokit::objective::kl_cov:
          pg = -A * r + (kl_cov_sel[t] ? c.ppo_kl_coef * std::fabs(logp[t] - old(t)) : ld(0));
          o.cov_selected += kl_cov_sel[t];
          break;
        case grpokit::objective::clip_cov:  // the plain PPO clip, the selected tokens detached
          pg = kl_cov_sel[t] ? ld(0) : std::max(-A * r, -A * clampl(r, lo_b, hi_b));
          o.cov_selected += kl_cov_sel[t];
          break;
        case grpokit::objective::cispo: pg = -clampl(r_det, lo_b, hi_b) * A * logp[t]; break;
        case grpokit::objective::sapo: {
          const ld tau = A > 0 ? c.tau_pos : c.tau_neg;
          pg = -A * 4 / tau / (1 + std::exp(-tau * (r - 1)));
          break;
        }
        default: {
          const ld r1 = c.delta > 0 ? std::min<ld>(r, c.delta) : r;
          pg = std::max(-A * r1, -A * clampl(r, lo_b, hi_b));
          if (c.dual_clip > 1 && A < 0) {
            if (pg > -A * c.dual_clip) o.dual += 1;
            pg = std::min<ld>(pg, -A * c.dual_clip);
          }
          break;
        }
      }
      if (c.obj == grpokit::objective::gmpo) {
        const ld delta = logp_detached[t] - old(t);
        o.clip_low += A < 0 && delta < -c.eps_low;
        o.clip_high += A > 0 && delta > c.eps_high;
      } else if (c.obj == grpokit::objective::cispo && c.cispo_clip_frac_any_sign) {
        o.clip_high += r_det < lo_b || r_det > hi_b;
      } else if (c.obj != grpokit::objective::reinforce && c.obj != grpokit::objective::sapo &&
                 c.obj != grpokit::objective::kl_cov) {
        o.clip_low += A < 0 && r_det < lo_b;
        o.clip_high += A > 0 && r_det > hi_b;
      }
      // importance weight (detached), over the batch's mean
      const ld w = is_weight(t, seq_w) / o.is_divisor;
      o.w_min = std::min(o.w_min, w);
      o.w_max = std::max(o.w_max, w);
      o.w_sum += w;
      ld kl = 0;
      if (c.kl != grpokit::kl_estimator::none) {
        auto estimate = [&](ld lp) {
          const ld diff = lp - b.logp_ref[t];
          if (c.kl == grpokit::kl_estimator::k1) return diff;
          if (c.kl == grpokit::kl_estimator::k2) return diff * diff / 2;
          const ld dd = clampl(-diff, -c.kl_input_clamp, c.kl_input_clamp);
          return clampl(std::exp(dd) - dd - 1, -c.kl_output_clamp, c.kl_output_clamp);
        };
        auto k2 = [&](ld lp) { return (lp - b.logp_ref[t]) * (lp - b.logp_ref[t]) / 2; };
        // straight-through (verl '+'): the value of the estimate, the gradient of k2
        kl = c.kl_straight_through ? estimate(logp_detached[t]) + k2(logp[t]) - k2(logp_detached[t])
                                   : estimate(logp[t]);
        if (c.kl_is_weighted)  // times the live token ratio pi / pi_old (TRL use_bias_correction_kl)
          kl *= std::exp(clampl(logp[t] - old(t), -c.log_ratio_clamp, c.log_ratio_clamp));
      }
      (void)has_ref;
      const ld ent = entropy.empty() ? 0 : entropy[t];
      if (!entropy.empty() && ent < o.entropy_threshold) {  // TRL: the mask multiplies the pg term only
        o.masked_entropy += 1;
        pg = 0;
      }
      o.loss += agg_w * (w * pg + c.kl_coef * kl) - ent_w * c.entropy_coef * ent;
    }
  }
  if (rho2_n > 0) o.chi2_token = rho2_sum / rho2_n - 1;
  if (mism_seqs > 0) {
    o.chi2_seq = seq_rho2_sum / mism_seqs - 1;
    o.ppl_ratio = ppl_ratio_sum / mism_seqs;
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// random problems of awkward shape

struct problem {
  std::int64_t T = 0, V = 0, S = 0;
  std::vector<double> logits;  // [T, V]
  std::vector<std::int64_t> targets;
  std::vector<double> temperature;  // per token, or empty
  batch b;
};

// `lengths` of the sequences (0 allowed), vocabulary V; logits ~ N(0, scale) plus a few peaks.
inline problem make_problem(std::mt19937_64& rng, const std::vector<std::int64_t>& lengths, std::int64_t V,
                            double scale = 2.0, bool with_masks = true) {
  problem p;
  p.V = V;
  p.S = static_cast<std::int64_t>(lengths.size());
  p.b.seq_offsets.assign(1, 0);
  for (auto n : lengths) p.b.seq_offsets.push_back(p.b.seq_offsets.back() + n);
  p.T = p.b.seq_offsets.back();
  std::normal_distribution<double> normal(0, scale);
  std::uniform_int_distribution<std::int64_t> tok(0, V - 1);
  std::uniform_real_distribution<double> unit(0, 1);
  p.logits.resize(static_cast<std::size_t>(p.T * V));
  for (auto& x : p.logits) x = normal(rng);
  p.targets.resize(static_cast<std::size_t>(p.T));
  for (std::int64_t t = 0; t < p.T; ++t) {
    // half of the targets sit on a likely token, as sampling would give
    p.targets[t] = tok(rng);
    if (unit(rng) < 0.5) p.logits[static_cast<std::size_t>(t * V + p.targets[t])] += 3 * scale;
  }
  std::normal_distribution<double> adv(0, 1);
  for (std::int64_t s = 0; s < p.S; ++s) p.b.adv.push_back(adv(rng));
  // VAPO's correct rollouts: 3 in 5, drawing nothing (the random streams of older tests stay)
  for (std::int64_t s = 0; s < p.S; ++s) p.b.positive.push_back((s * 7 + 3) % 5 < 3 ? 1 : 0);
  if (with_masks) {
    for (std::int64_t t = 0; t < p.T; ++t) p.b.token_mask.push_back(unit(rng) < 0.9 ? 1 : 0);
    for (std::int64_t s = 0; s < p.S; ++s) p.b.seq_mask.push_back(unit(rng) < 0.9 ? 1 : 0);
  }
  return p;
}

// Fills logp_old / ref / rollout near the given current log-probs.
inline void add_policies(std::mt19937_64& rng, problem& p, const std::vector<ld>& logp, double spread) {
  std::normal_distribution<double> n(0, spread);
  for (std::int64_t t = 0; t < p.T; ++t) {
    const ld base = std::isfinite(static_cast<double>(logp[t])) ? logp[t] : ld(-5);
    p.b.logp_old.push_back(std::min<ld>(base + n(rng), 0));
    p.b.logp_ref.push_back(std::min<ld>(base + n(rng), 0));
    p.b.logp_rollout.push_back(std::min<ld>(base + n(rng), 0));
  }
}

inline std::vector<ld> row_of(const problem& p, std::int64_t t) {
  return std::vector<ld>(p.logits.begin() + t * p.V, p.logits.begin() + (t + 1) * p.V);
}

inline ld temperature_of(const problem& p, std::int64_t t, const grpokit::loss_config& c) {
  return p.temperature.empty() ? ld(c.temperature) : ld(p.temperature[static_cast<std::size_t>(t)]);
}

}  // namespace ref
