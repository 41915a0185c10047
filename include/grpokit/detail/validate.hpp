#pragma once
// Host-side argument checks shared by grpokit::host and the device launchers.
#include <cmath>
#include <cstdint>
#include <limits>

#include "../config.hpp"
#include "../error.hpp"
#include "../inputs.hpp"
#include "row_params.hpp"

namespace grpokit::detail {

template <class T>
void require_size(const char* name, span<T> s, std::int64_t n) {
  GRPOKIT_REQUIRE(s.size() == n, name, ": expected ", n, " elements, got ", s.size());
}
template <class T>
void require_size_or_empty(const char* name, span<T> s, std::int64_t n) {
  GRPOKIT_REQUIRE(s.empty() || s.size() == n, name, ": expected ", n, " elements (or none), got ", s.size());
}

// The optional per-token outputs of fused_loss / fused_linear_loss: each T values or none.
template <class Real>
void require_fused_outputs(const fused_outputs<Real>& extra, std::int64_t T) {
  require_size_or_empty("logp output", extra.logp, T);
  require_size_or_empty("entropy output", extra.entropy, T);
  require_size_or_empty("sum_p2 output", extra.sum_p2, T);
}

// off[0] == 0, non-decreasing, off.back() == total (when total >= 0).
inline void require_offsets(const char* name, span<const std::int64_t> off, std::int64_t total,
                            bool allow_empty_segments) {
  GRPOKIT_REQUIRE(off.size() >= 1, name, ": needs at least one element (S + 1 offsets)");
  GRPOKIT_REQUIRE(off[0] == 0, name, "[0] must be 0, got ", off[0]);
  for (std::int64_t i = 1; i < off.size(); ++i) {
    GRPOKIT_REQUIRE(off[i] >= off[i - 1], name, " must be non-decreasing: ", name, "[", i, "] = ", off[i], " < ", name,
                    "[", i - 1, "] = ", off[i - 1]);
    GRPOKIT_REQUIRE(allow_empty_segments || off[i] > off[i - 1], name, ": segment ", i - 1, " is empty");
  }
  GRPOKIT_REQUIRE(total < 0 || off[off.size() - 1] == total, name, ": last offset must be ", total, ", got ",
                  off[off.size() - 1]);
}

template <class Real>
void require_finite(const char* name, span<const Real> s) {
  for (std::int64_t i = 0; i < s.size(); ++i)
    GRPOKIT_REQUIRE(std::isfinite(static_cast<double>(s[i])), name, "[", i, "] is not finite (", s[i], ")");
}
template <class Real>
void require_nonnegative(const char* name, span<const Real> s) {
  for (std::int64_t i = 0; i < s.size(); ++i) GRPOKIT_REQUIRE(s[i] >= 0, name, "[", i, "] must be >= 0, got ", s[i]);
}

template <class T>
void require_matrix(const char* name, const matrix_view<T>& m) {
  GRPOKIT_REQUIRE(m.rows >= 0 && m.cols >= 1, name, ": needs rows >= 0 and cols >= 1, got [", m.rows, ", ", m.cols,
                  "]");
  GRPOKIT_REQUIRE(m.row_stride >= m.cols, name, ": row_stride ", m.row_stride, " < cols ", m.cols);
  GRPOKIT_REQUIRE(m.rows == 0 || m.data != nullptr, name, ": null data");
  // the last element's index (rows - 1) * row_stride + cols - 1 and its byte offset fit in 64 bits
  const std::int64_t max_elems = std::numeric_limits<std::int64_t>::max() / static_cast<std::int64_t>(sizeof(T));
  GRPOKIT_REQUIRE(m.rows <= 1 || m.row_stride <= (max_elems - m.cols) / (m.rows - 1), name, ": [", m.rows, ", ", m.cols,
                  "] with row_stride ", m.row_stride, " is larger than any memory");
}

// Whether two strided row blocks share an address: rows a_rows of a_cols elements of A (a_size
// bytes each) every a_stride elements from a, likewise for B. Exact, so that interleaved but
// disjoint rows (two matrices in one buffer, row_stride = the sum of their widths) are not
// mistaken for an overlap. O(rows) at most.
template <class A, class B>
bool rows_overlap(const A* a, std::int64_t a_rows, std::int64_t a_cols, std::int64_t a_stride, const B* b,
                  std::int64_t b_rows, std::int64_t b_cols, std::int64_t b_stride) {
  if (a_rows == 0 || b_rows == 0 || a == nullptr || b == nullptr) return false;
  const auto a0 = reinterpret_cast<std::uintptr_t>(a), b0 = reinterpret_cast<std::uintptr_t>(b);
  const std::uintptr_t as = static_cast<std::uintptr_t>(a_stride) * sizeof(A), aw = a_cols * sizeof(A);
  const std::uintptr_t bs = static_cast<std::uintptr_t>(b_stride) * sizeof(B), bw = b_cols * sizeof(B);
  const std::uintptr_t a_end = a0 + (a_rows - 1) * as + aw, b_end = b0 + (b_rows - 1) * bs + bw;
  if (a_end <= b0 || b_end <= a0) return false;  // disjoint address ranges
  // For each row of A, the rows of B that start before its end and end after its start.
  for (std::int64_t i = 0; i < a_rows; ++i) {
    const std::uintptr_t lo = a0 + i * as, hi = lo + aw;
    if (hi <= b0 || lo >= b_end) continue;
    // first row j of B with b0 + j bs + bw > lo
    std::int64_t j = lo + 1 > b0 + bw ? static_cast<std::int64_t>((lo + 1 - bw - b0 + bs - 1) / bs) : 0;
    if (j < b_rows && b0 + j * bs < hi) return true;
  }
  return false;
}
template <class A, class B>
bool spans_overlap(span<A> a, span<B> b) {
  return rows_overlap(a.data(), a.empty() ? 0 : 1, a.size(), a.size(), b.data(), b.empty() ? 0 : 1, b.size(), b.size());
}
template <class A, class B>
bool matrices_overlap(const matrix_view<A>& a, const matrix_view<B>& b) {
  return rows_overlap(a.data, a.rows, a.cols, a.row_stride, b.data, b.rows, b.cols, b.row_stride);
}

inline void require_targets(span<const std::int64_t> targets, std::int64_t vocab) {
  for (std::int64_t i = 0; i < targets.size(); ++i)
    GRPOKIT_REQUIRE(targets[i] >= 0 && targets[i] < vocab, "targets[", i, "] = ", targets[i], " is out of range [0, ",
                    vocab, ")");
}

// cfg.temperature in the accumulation type Real (the device checks a per-token temperature there).
template <class Real>
void require_scalar_temperature(const loss_config& cfg) {
  GRPOKIT_REQUIRE(usable_temperature(static_cast<Real>(cfg.temperature)),
                  "temperature must be > 0 with a finite inverse in the ", sizeof(Real) == 4 ? "float" : "double",
                  " accumulation type, got ", cfg.temperature);
}

template <class Real>
void require_temperature(const loss_config& cfg, span<const Real> per_token) {
  require_scalar_temperature<Real>(cfg);
  for (std::int64_t i = 0; i < per_token.size(); ++i)
    GRPOKIT_REQUIRE(usable_temperature(per_token[i]), "temperature[", i,
                    "] must be > 0 with a finite inverse in the accumulation type, got ", per_token[i]);
}

// Every field of advantage_config: finite and in range, the enum a known value.
inline void require_advantage_config(const advantage_config& c) {
  const int scale = static_cast<int>(c.scale);
  GRPOKIT_REQUIRE(scale >= 0 && scale <= static_cast<int>(adv_scale::whiten), "adv.scale: unknown value ", scale);
  GRPOKIT_REQUIRE(std::isfinite(c.eps) && c.eps >= 0, "adv.eps must be finite and >= 0, got ", c.eps);
  GRPOKIT_REQUIRE(std::isfinite(c.std_floor) && c.std_floor >= 0, "adv.std_floor must be finite and >= 0, got ",
                  c.std_floor);
  GRPOKIT_REQUIRE(std::isfinite(c.mad_eps) && c.mad_eps >= 0, "adv.mad_eps must be finite and >= 0, got ", c.mad_eps);
  GRPOKIT_REQUIRE(std::isfinite(c.ess_ratio_ref) && c.ess_ratio_ref > 0,
                  "adv.ess_ratio_ref must be finite and > 0, got ", c.ess_ratio_ref);
  GRPOKIT_REQUIRE(c.clip_low <= 0 && c.clip_high >= 0, "adv.clip_low must be <= 0 and adv.clip_high >= 0, got ",
                  c.clip_low, " and ", c.clip_high);
}

// Every field of loss_config: finite and in range, every enum a known value. A clamp or a threshold
// may be +inf (off), never NaN.
inline void require_loss_config(const loss_config& c) {
  auto known = [](const char* name, auto v, auto last) {
    GRPOKIT_REQUIRE(static_cast<int>(v) >= 0 && static_cast<int>(v) <= static_cast<int>(last), name, ": unknown value ",
                    static_cast<int>(v));
  };
  known("obj", c.obj, objective::clip_cov);
  known("dppo", c.dppo, dppo_divergence::binary_kl);
  known("is", c.is, is_correction::sequence_mask);
  known("kl", c.kl, kl_estimator::k3);
  known("agg", c.agg, aggregation::seq_mean_token_sum_norm);
  known("trm_max_estimator", c.trm_max_estimator, divergence::k3);
  known("trm_mean_estimator", c.trm_mean_estimator, divergence::k3);
  auto finite = [](const char* name, double v) { GRPOKIT_REQUIRE(std::isfinite(v), name, " must be finite, got ", v); };
  auto positive_or_inf = [](const char* name, double v) {  // a clamp: > 0, +inf = no clamp
    GRPOKIT_REQUIRE(v > 0, name, " must be > 0 (+inf: no clamp), got ", v);
  };
  finite("eps_low", c.eps_low);
  finite("eps_high", c.eps_high);
  finite("dual_clip", c.dual_clip);
  finite("delta", c.delta);
  finite("tau_pos", c.tau_pos);
  finite("tau_neg", c.tau_neg);
  finite("is_min", c.is_min);
  finite("kl_coef", c.kl_coef);
  finite("entropy_coef", c.entropy_coef);
  finite("temperature", c.temperature);
  finite("global_tokens", c.global_tokens);
  finite("global_seqs", c.global_seqs);
  finite("norm_constant", c.norm_constant);
  finite("dp_size", c.dp_size);
  finite("prune_rho", c.prune_rho);
  finite("importance_lo", c.importance_lo);
  GRPOKIT_REQUIRE(c.eps_low >= 0 && c.eps_low <= 1, "eps_low must be in [0, 1], got ", c.eps_low);
  GRPOKIT_REQUIRE(c.eps_high >= 0, "eps_high must be >= 0, got ", c.eps_high);
  GRPOKIT_REQUIRE(c.delta == 0 || c.delta > 1, "delta must be 0 (off) or > 1, got ", c.delta);
  positive_or_inf("log_ratio_clamp", c.log_ratio_clamp);
  positive_or_inf("is_log_ratio_clamp", c.is_log_ratio_clamp);
  positive_or_inf("gspo_log_ratio_max", c.gspo_log_ratio_max);
  positive_or_inf("kl_input_clamp", c.kl_input_clamp);
  positive_or_inf("kl_output_clamp", c.kl_output_clamp);
  // SAPO's value is -sigmoid(tau (r - 1)) 4 / tau A: a tau near 0 sends it to infinity
  GRPOKIT_REQUIRE(c.tau_pos >= 1e-3 && c.tau_pos <= 1e3 && c.tau_neg >= 1e-3 && c.tau_neg <= 1e3,
                  "SAPO temperatures tau_pos, tau_neg must be in [1e-3, 1e3], got ", c.tau_pos, ", ", c.tau_neg);
  GRPOKIT_REQUIRE(c.is_min >= 0 && c.is_min <= c.is_max, "need 0 <= is_min <= is_max (is_max may be +inf), got [",
                  c.is_min, ", ", c.is_max, "]");
  GRPOKIT_REQUIRE(c.kl_coef >= 0, "kl_coef must be >= 0, got ", c.kl_coef);
  GRPOKIT_REQUIRE(c.temperature > 0, "temperature must be > 0, got ", c.temperature);
  GRPOKIT_REQUIRE(c.global_tokens == 0 || c.global_tokens >= 1, "global_tokens must be 0 (local count) or >= 1, got ",
                  c.global_tokens);
  GRPOKIT_REQUIRE(c.global_seqs == 0 || c.global_seqs >= 1, "global_seqs must be 0 (local count) or >= 1, got ",
                  c.global_seqs);
  GRPOKIT_REQUIRE(c.dp_size > 0, "dp_size must be > 0, got ", c.dp_size);
  // a length, like the counts: a tiny one would blow the float gradients up past their range
  GRPOKIT_REQUIRE(c.norm_constant == 0 || c.norm_constant >= 1, "norm_constant must be 0 (unset) or >= 1, got ",
                  c.norm_constant);
  GRPOKIT_REQUIRE(c.agg != aggregation::seq_mean_token_sum_norm || c.norm_constant >= 1,
                  "aggregation seq_mean_token_sum_norm needs norm_constant >= 1, got ", c.norm_constant);
  GRPOKIT_REQUIRE(c.prune_rho > 0 && c.prune_rho <= 1, "prune_rho must be in (0, 1], got ", c.prune_rho);
  GRPOKIT_REQUIRE(c.top_k >= 0, "top_k must be >= 0 (0: off), got ", c.top_k);
  GRPOKIT_REQUIRE(c.top_p > 0 && c.top_p <= 1, "top_p must be in (0, 1] (1: off), got ", c.top_p);
  GRPOKIT_REQUIRE(c.importance_lo >= 0 && c.importance_lo <= c.importance_hi,
                  "need 0 <= importance_lo <= importance_hi (importance_hi may be +inf), got [", c.importance_lo, ", ",
                  c.importance_hi, "]");
  GRPOKIT_REQUIRE(!std::isnan(c.opsm_threshold), "opsm_threshold must not be NaN (+inf: off)");
  GRPOKIT_REQUIRE(c.m2po_threshold >= 0, "m2po_threshold must be >= 0 (+inf: off), got ", c.m2po_threshold);
  GRPOKIT_REQUIRE(c.positive_nll_coef >= 0 && std::isfinite(c.positive_nll_coef),
                  "positive_nll_coef must be finite and >= 0 (0: off), got ", c.positive_nll_coef);
  GRPOKIT_REQUIRE(c.kl_cov_ratio >= 0 && c.kl_cov_ratio <= 1, "kl_cov_ratio must be in [0, 1], got ", c.kl_cov_ratio);
  finite("ppo_kl_coef", c.ppo_kl_coef);
  GRPOKIT_REQUIRE(c.clip_cov_ratio >= 0 && c.clip_cov_ratio <= 1, "clip_cov_ratio must be in [0, 1], got ",
                  c.clip_cov_ratio);
  GRPOKIT_REQUIRE(c.clip_cov_lb <= c.clip_cov_ub, "need clip_cov_lb <= clip_cov_ub (either may be infinite), got ",
                  c.clip_cov_lb, " and ", c.clip_cov_ub);
  GRPOKIT_REQUIRE(c.top_entropy_quantile >= 0 && c.top_entropy_quantile <= 1,
                  "top_entropy_quantile must be in [0, 1] (1: off), got ", c.top_entropy_quantile);
  GRPOKIT_REQUIRE(c.dppo_low >= 0 && c.dppo_high >= 0, "dppo_low and dppo_high must be >= 0 (+inf: no bound), got ",
                  c.dppo_low, " and ", c.dppo_high);
  GRPOKIT_REQUIRE(c.trm_max_threshold >= 0 && c.trm_mean_threshold >= 0,
                  "TRM thresholds must be >= 0 (+inf: off), got ", c.trm_max_threshold, " and ", c.trm_mean_threshold);
  require_advantage_config(c.adv);
}

// token_logprobs / logits_backward / fused_loss, what needs no reading of device memory: the shapes,
// the config and cfg.temperature (host and device). The data (target ids, per-token temperatures)
// is checked by require_logits_data on the host and in the status on the device.
template <class S, class Real>
void require_logits_shapes(const logits_input<S, Real>& in, const loss_config& cfg) {
  require_loss_config(cfg);
  require_scalar_temperature<Real>(cfg);
  require_matrix("logits", in.logits);
  require_size("targets", in.targets, in.logits.rows);
  require_size_or_empty("temperature", in.temperature, in.logits.rows);
}
template <class S, class Real>
void require_logits_data(const logits_input<S, Real>& in, const loss_config& cfg) {
  require_targets(in.targets, in.logits.cols);
  require_temperature(cfg, in.temperature);
}

// compute_advantages' shapes and config (host and device); the host also checks the data.
template <class Real>
void require_advantage_shapes(const advantage_inputs<Real>& in, const advantage_config& cfg,
                              const advantage_outputs<Real>& out, bool needs_log_ratio,
                              bool needs_group_baseline = false, bool needs_seq_tokens = false) {
  require_advantage_config(cfg);
  const std::int64_t S = in.rewards.size();
  GRPOKIT_REQUIRE(in.group_offsets.size() >= 1, "group_offsets: needs at least one element (G + 1 offsets)");
  require_size("adv", out.adv, S);
  require_size("seq_mask", out.seq_mask, S);
  if (needs_log_ratio)
    GRPOKIT_REQUIRE(in.seq_log_ratio.size() == S, "seq_log_ratio: the ess_scaled baseline needs ", S,
                    " per-sequence log-ratios, got ", in.seq_log_ratio.size());
  require_size_or_empty("seq_log_ratio", in.seq_log_ratio, S);
  require_size_or_empty("seq_weight", in.seq_weight, S);
  if (needs_seq_tokens)
    GRPOKIT_REQUIRE(in.seq_tokens.size() == S, "seq_tokens: the opo baseline needs ", S,
                    " per-sequence token counts, got ", in.seq_tokens.size());
  require_size_or_empty("seq_tokens", in.seq_tokens, S);
  const std::int64_t G = in.group_offsets.size() - 1;
  if (needs_group_baseline)
    GRPOKIT_REQUIRE(in.group_baseline.size() == G, "group_baseline: the external baseline needs ", G,
                    " per-group baselines, got ", in.group_baseline.size());
  require_size_or_empty("group_baseline", in.group_baseline, G);
}
// compute_advantages_multi's shapes and weights (the weights are in host memory on both paths).
template <class Real>
void require_multi_reward_shapes(const multi_reward_inputs<Real>& in, const advantage_outputs<Real>& out) {
  require_matrix("rewards", in.rewards);  // K >= 1 rewards per rollout
  GRPOKIT_REQUIRE(in.weights.empty() || in.weights.size() == in.rewards.cols, "weights: needs ", in.rewards.cols,
                  " weights (one per reward) or none, got ", in.weights.size());
  require_finite("weights", in.weights);
  require_size("adv", out.adv, in.rewards.rows);
}

template <class Real>
void require_advantage_data(const advantage_inputs<Real>& in) {
  require_offsets("group_offsets", in.group_offsets, in.rewards.size(), /*allow_empty_segments=*/false);
  require_finite("rewards", in.rewards);
  require_finite("seq_log_ratio", in.seq_log_ratio);
  require_finite("seq_weight", in.seq_weight);
  require_finite("group_baseline", in.group_baseline);
  require_finite("seq_tokens", in.seq_tokens);
  require_nonnegative("seq_weight", in.seq_weight);
  require_nonnegative("seq_tokens", in.seq_tokens);
}

// dlogits: the logits' shape, and aliasing the logits only in in-place mode (same buffer and stride).
template <class S, class Real>
void require_dlogits(const logits_input<S, Real>& in, const matrix_view<S>& dlogits, backward_mode mode) {
  const std::int64_t T = in.logits.rows, V = in.logits.cols;
  require_matrix("dlogits", dlogits);
  GRPOKIT_REQUIRE(dlogits.rows == T && dlogits.cols == V, "dlogits: expected [", T, ", ", V, "], got [", dlogits.rows,
                  ", ", dlogits.cols, "]");
  if (T == 0) return;
  if (mode == backward_mode::in_place) {
    GRPOKIT_REQUIRE(dlogits.data == in.logits.data && dlogits.row_stride == in.logits.row_stride,
                    "in-place backward: dlogits must be the logits buffer with the same row stride");
  } else {
    GRPOKIT_REQUIRE(!matrices_overlap(dlogits, in.logits),
                    "dlogits overlaps the logits; pass backward_mode::in_place to allow it");
  }
}

// The shapes of logits_backward: its inputs, dlogits, and no input overlapping dlogits.
template <class S, class Real>
void require_backward_shapes(const logits_input<S, Real>& in, const backward_inputs<Real>& g,
                             const matrix_view<S>& dlogits, backward_mode mode) {
  const std::int64_t T = in.logits.rows, V = in.logits.cols;
  require_size("lse", g.lse, T);
  require_size("dlogp", g.dlogp, T);
  require_size_or_empty("dentropy", g.dentropy, T);
  GRPOKIT_REQUIRE(g.dentropy.empty() || g.entropy.size() == T, "entropy: needed (", T,
                  " elements) when dentropy is given, got ", g.entropy.size());
  require_dlogits(in, dlogits, mode);
  const span<const Real> inputs[] = {g.lse, g.entropy, g.dlogp, g.dentropy};
  for (const auto& input : inputs)
    GRPOKIT_REQUIRE(!rows_overlap(dlogits.data, T, V, dlogits.row_stride, input.data(), input.empty() ? 0 : 1,
                                  input.size(), input.size()),
                    "dlogits overlaps one of the backward inputs (lse, entropy, dlogp, dentropy)");
}

// The batch of policy_loss for T tokens: shapes, and the inputs that the config and the masks need
// (nothing that reads the data: the device path uses it too). S = seq_offsets.size() - 1. An
// optional per-token input is given when it has T elements; with T == 0 (an empty batch, loss 0)
// every one of them is, so the "needs" checks only bite when there are tokens.
template <bool NeedsRollout, class Real>
void require_batch_shapes(const rollout_batch<Real>& batch, std::int64_t T, const loss_config& cfg) {
  require_loss_config(cfg);
  GRPOKIT_REQUIRE(batch.seq_offsets.size() >= 1, "seq_offsets: needs at least one element (S + 1 offsets)");
  const std::int64_t S = batch.seq_offsets.size() - 1;
  GRPOKIT_REQUIRE(S > 0 || T == 0, "seq_offsets: last offset must be ", T, ", got 0 (no sequences)");
  require_size("adv", batch.adv, S);
  require_size_or_empty("logp_old", batch.logp_old, T);
  require_size_or_empty("logp_ref", batch.logp_ref, T);
  require_size_or_empty("logp_rollout", batch.logp_rollout, T);
  require_size_or_empty("token_mask", batch.token_mask, T);
  require_size_or_empty("seq_mask", batch.seq_mask, S);
  require_size_or_empty("positive", batch.positive, S);
  require_size_or_empty("token_adv", batch.token_adv, T);
  GRPOKIT_REQUIRE(cfg.positive_nll_coef == 0 || batch.positive.size() == S,
                  "positive_nll_coef != 0 needs batch.positive (", S, " flags), got ", batch.positive.size());
  auto given = [T](auto s) { return s.size() == T; };
  GRPOKIT_REQUIRE(cfg.kl == kl_estimator::none || given(batch.logp_ref), "kl != none needs logp_ref");
  GRPOKIT_REQUIRE(cfg.is == is_correction::none || given(batch.logp_rollout),
                  "importance-sampling correction needs logp_rollout");
  GRPOKIT_REQUIRE(!NeedsRollout || given(batch.logp_rollout),
                  "the trust_region and importance masks need logp_rollout");
  GRPOKIT_REQUIRE(!(cfg.m2po_threshold < INFINITY) || given(batch.logp_rollout),
                  "m2po_threshold < +inf needs logp_rollout (the behaviour policy of its second moments)");
  // M2PO's fixed-point sums hold 2^31 tokens (detail/select.hpp)
  GRPOKIT_REQUIRE(!(cfg.m2po_threshold < INFINITY) || T < (std::int64_t{1} << 31),
                  "m2po_threshold < +inf takes fewer than 2^31 tokens, got ", T);
  GRPOKIT_REQUIRE(cfg.dppo == dppo_divergence::none || given(batch.logp_old) || given(batch.logp_rollout),
                  "dppo needs logp_old or logp_rollout (the anchor of its trust region)");
}

// top_k / top_p narrow whole rows from a selection over the row (detail/sampler_support.hpp): the
// device's calls over a vocabulary split do not run its rounds across the ranks yet (the host's do).
inline void require_no_sampler_support(const loss_config& cfg, const char* where) {
  GRPOKIT_REQUIRE(!sampler_support(cfg), where,
                  ": top_k / top_p (the sampler's support) are not supported over a vocabulary split on the device "
                  "yet; the host's layouts and the device's data-parallel and single-process calls support them");
}

// policy_loss: the batch, the current policy and the gradients, which must not overlap any input
// (they are written while the inputs are still read).
template <bool NeedsRollout, class Real>
void require_policy_shapes(const current_policy<Real>& cur, const rollout_batch<Real>& batch, const loss_config& cfg,
                           const policy_grads<Real>& grads) {
  const std::int64_t T = cur.logp.size();
  require_batch_shapes<NeedsRollout>(batch, T, cfg);
  require_size_or_empty("entropy", cur.entropy, T);
  require_size("dlogp", grads.dlogp, T);
  require_size_or_empty("dentropy", grads.dentropy, T);
  GRPOKIT_REQUIRE(cfg.entropy_coef == 0 || T == 0 || (cur.entropy.size() == T && grads.dentropy.size() == T),
                  "entropy_coef != 0 needs the entropy input and the dentropy output");
  GRPOKIT_REQUIRE(cfg.top_entropy_quantile >= 1 || T == 0 || cur.entropy.size() == T,
                  "top_entropy_quantile < 1 needs the entropy input");
  const span<Real> outputs[] = {grads.dlogp, grads.dentropy};
  const span<const Real> inputs[] = {cur.logp,       cur.entropy,    batch.adv,          batch.logp_old,
                                     batch.logp_ref, batch.logp_rollout, batch.token_adv};
  for (const auto& out : outputs) {
    for (const auto& in : inputs)
      GRPOKIT_REQUIRE(!spans_overlap(out, in),
                      "policy_loss: dlogp / dentropy overlap an input (logp, entropy, adv, logp_old, logp_ref, "
                      "logp_rollout, token_adv); outputs need memory of their own");
  }
  GRPOKIT_REQUIRE(!spans_overlap(grads.dlogp, grads.dentropy), "policy_loss: dlogp and dentropy overlap");
  for (const auto& out : outputs)
    GRPOKIT_REQUIRE(!spans_overlap(out, batch.seq_offsets) && !spans_overlap(out, batch.token_mask) &&
                        !spans_overlap(out, batch.seq_mask) && !spans_overlap(out, batch.positive),
                    "policy_loss: dlogp / dentropy overlap seq_offsets, token_mask, seq_mask or positive");
}

// fused_loss / fused_linear_loss write sum_p2 while the batch, the temperatures and `rows` (the
// logits, or the hidden states and the LM head) are still read: it needs memory of its own.
template <class Real, class... Rows>
void require_sum_p2_apart(span<Real> sum_p2, const rollout_batch<Real>& batch, span<const Real> temperature,
                          const Rows&... rows) {
  if (sum_p2.empty()) return;
  const span<const Real> inputs[] = {batch.adv,          batch.logp_old,  batch.logp_ref,
                                     batch.logp_rollout, batch.token_adv, temperature};
  bool overlap = spans_overlap(sum_p2, batch.seq_offsets) || spans_overlap(sum_p2, batch.token_mask) ||
                 spans_overlap(sum_p2, batch.seq_mask) || spans_overlap(sum_p2, batch.positive);
  for (const auto& in : inputs) overlap = overlap || spans_overlap(sum_p2, in);
  const matrix_view<Real> as_rows{sum_p2.data(), 1, sum_p2.size(), sum_p2.size()};
  ((overlap = overlap || matrices_overlap(as_rows, rows)), ...);
  GRPOKIT_REQUIRE(!overlap, "sum_p2 output overlaps an input (the batch, the temperatures, the logits or the LM "
                            "head) or dlogits; outputs need memory of their own");
}

// The shapes of fused_linear_loss (host and device): everything but the data (targets, temperature),
// which the host checks in host memory and the device in its status.
template <class S, class Acc>
void require_linear_shapes(const linear_input<S, Acc>& in, std::int64_t token_chunk, const linear_grads<S, Acc>& g,
                           const fused_outputs<Acc>& extra) {
  require_matrix("hidden", in.hidden);
  require_matrix("weight", in.weight);
  const std::int64_t T = in.hidden.rows, V = in.weight.rows, D = in.hidden.cols;
  GRPOKIT_REQUIRE(in.weight.cols == D, "weight: expected [V, ", D, "] (D of hidden), got [", V, ", ", in.weight.cols,
                  "]");
  GRPOKIT_REQUIRE(V >= 1, "weight: needs V >= 1 rows");
  require_size_or_empty("bias", in.bias, V);
  require_size("targets", in.targets, T);
  require_size_or_empty("temperature", in.temperature, T);
  GRPOKIT_REQUIRE(token_chunk >= 1, "token_chunk must be >= 1, got ", token_chunk);
  if (g.dhidden.data != nullptr) {
    require_matrix("dhidden", g.dhidden);
    GRPOKIT_REQUIRE(g.dhidden.rows == T && g.dhidden.cols == D, "dhidden: expected [", T, ", ", D, "]");
  }
  GRPOKIT_REQUIRE((g.dweight.data != nullptr) != (g.dweight_acc.data != nullptr),
                  "linear_grads: set exactly one of dweight and dweight_acc");
  const std::int64_t wr = g.dweight.data ? g.dweight.rows : g.dweight_acc.rows;
  const std::int64_t wc = g.dweight.data ? g.dweight.cols : g.dweight_acc.cols;
  GRPOKIT_REQUIRE(wr == V && wc == D, "dweight: expected [", V, ", ", D, "], got [", wr, ", ", wc, "]");
  if (g.dweight.data) require_matrix("dweight", g.dweight);
  if (g.dweight_acc.data) require_matrix("dweight_acc", g.dweight_acc);
  require_size_or_empty("dbias", g.dbias, V);
  require_fused_outputs(extra, T);
  // the gradients are written while hidden, weight and bias are still read (chunk by chunk)
  auto overlaps_span = [](const auto& m, const auto& s) {  // a matrix and a span (a one-row block)
    return rows_overlap(m.data, m.rows, m.cols, m.row_stride, s.data(), s.empty() ? 0 : 1, s.size(), s.size());
  };
  const bool overlap =
      matrices_overlap(g.dhidden, in.hidden) || matrices_overlap(g.dhidden, in.weight) ||
      matrices_overlap(g.dweight, in.hidden) || matrices_overlap(g.dweight, in.weight) ||
      matrices_overlap(g.dweight_acc, in.hidden) || matrices_overlap(g.dweight_acc, in.weight) ||
      matrices_overlap(g.dhidden, g.dweight) || matrices_overlap(g.dhidden, g.dweight_acc) ||
      spans_overlap(g.dbias, in.bias) || overlaps_span(in.hidden, g.dbias) || overlaps_span(in.weight, g.dbias) ||
      overlaps_span(g.dhidden, g.dbias) || overlaps_span(g.dweight, g.dbias) || overlaps_span(g.dweight_acc, g.dbias) ||
      overlaps_span(g.dhidden, in.bias) || overlaps_span(g.dweight, in.bias) || overlaps_span(g.dweight_acc, in.bias);
  GRPOKIT_REQUIRE(!overlap,
                  "fused_linear_loss: dhidden / dweight / dbias overlap hidden, weight, bias or each other; "
                  "gradients need memory of their own");
}

// require_sum_p2_apart for fused_linear_loss: the hidden states, the LM head and the gradients.
template <class S, class Acc>
void require_linear_sum_p2_apart(const fused_outputs<Acc>& extra, const rollout_batch<Acc>& batch,
                                 const linear_input<S, Acc>& in, const linear_grads<S, Acc>& g) {
  const matrix_view<const S> bias{in.bias.data(), in.bias.empty() ? 0 : 1, in.bias.size(), in.bias.size()};
  const matrix_view<Acc> dbias{g.dbias.data(), g.dbias.empty() ? 0 : 1, g.dbias.size(), g.dbias.size()};
  require_sum_p2_apart(extra.sum_p2, batch, in.temperature, in.hidden, in.weight, bias, g.dhidden, g.dweight,
                       g.dweight_acc, dbias);
}

}  // namespace grpokit::detail
