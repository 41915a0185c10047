#pragma once
// Host-side argument checks shared by grpokit::host and the device launchers.
#include <cmath>
#include <cstdint>

#include "../config.hpp"
#include "../error.hpp"
#include "../inputs.hpp"

namespace grpokit::detail {

template <class T>
void require_size(const char* name, span<T> s, std::int64_t n) {
  GRPOKIT_REQUIRE(s.size() == n, name, ": expected ", n, " elements, got ", s.size());
}
template <class T>
void require_size_or_empty(const char* name, span<T> s, std::int64_t n) {
  GRPOKIT_REQUIRE(s.empty() || s.size() == n, name, ": expected ", n, " elements (or none), got ", s.size());
}

// off[0] == 0, non-decreasing, off.back() == total (when total >= 0).
inline void require_offsets(const char* name, span<const std::int64_t> off, std::int64_t total,
                            bool allow_empty_segments) {
  GRPOKIT_REQUIRE(off.size() >= 1, name, ": needs at least one element (S + 1 offsets)");
  GRPOKIT_REQUIRE(off[0] == 0, name, "[0] must be 0, got ", off[0]);
  for (std::int64_t i = 1; i < off.size(); ++i) {
    GRPOKIT_REQUIRE(off[i] >= off[i - 1], name, " must be non-decreasing: ", name, "[", i, "] = ", off[i],
                    " < ", name, "[", i - 1, "] = ", off[i - 1]);
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

template <class T>
void require_matrix(const char* name, const matrix_view<T>& m) {
  GRPOKIT_REQUIRE(m.rows >= 0 && m.cols >= 1, name, ": needs rows >= 0 and cols >= 1, got [", m.rows, ", ",
                  m.cols, "]");
  GRPOKIT_REQUIRE(m.row_stride >= m.cols, name, ": row_stride ", m.row_stride, " < cols ", m.cols);
  GRPOKIT_REQUIRE(m.rows == 0 || m.data != nullptr, name, ": null data");
}

inline void require_targets(span<const std::int64_t> targets, std::int64_t vocab) {
  for (std::int64_t i = 0; i < targets.size(); ++i)
    GRPOKIT_REQUIRE(targets[i] >= 0 && targets[i] < vocab, "targets[", i, "] = ", targets[i],
                    " is out of range [0, ", vocab, ")");
}

template <class Real>
void require_temperature(const loss_config& cfg, span<const Real> per_token) {
  GRPOKIT_REQUIRE(cfg.temperature > 0 && std::isfinite(cfg.temperature), "temperature must be > 0, got ",
                  cfg.temperature);
  for (std::int64_t i = 0; i < per_token.size(); ++i)
    GRPOKIT_REQUIRE(per_token[i] > 0 && std::isfinite(static_cast<double>(per_token[i])), "temperature[", i,
                    "] must be finite and > 0, got ", per_token[i]);
}

// The shapes of logits_backward, and dlogits aliasing the logits only in in-place mode.
template <class S, class Real>
void require_backward_shapes(const logits_input<S, Real>& in, const backward_inputs<Real>& g,
                             const matrix_view<S>& dlogits, backward_mode mode) {
  const std::int64_t T = in.logits.rows, V = in.logits.cols;
  require_size("lse", g.lse, T);
  require_size("dlogp", g.dlogp, T);
  require_size_or_empty("dentropy", g.dentropy, T);
  GRPOKIT_REQUIRE(g.dentropy.empty() || g.entropy.size() == T, "entropy: needed (", T,
                  " elements) when dentropy is given, got ", g.entropy.size());
  require_matrix("dlogits", dlogits);
  GRPOKIT_REQUIRE(dlogits.rows == T && dlogits.cols == V, "dlogits: expected [", T, ", ", V, "], got [", dlogits.rows,
                  ", ", dlogits.cols, "]");
  if (T == 0) return;
  const S* in_begin = in.logits.data;
  const S* in_end = in.logits.data + (T - 1) * in.logits.row_stride + V;
  const S* out_begin = dlogits.data;
  const S* out_end = dlogits.data + (T - 1) * dlogits.row_stride + V;
  if (mode == backward_mode::in_place) {
    GRPOKIT_REQUIRE(out_begin == in_begin && dlogits.row_stride == in.logits.row_stride,
                    "in-place backward: dlogits must be the logits buffer with the same row stride");
  } else {
    GRPOKIT_REQUIRE(out_end <= in_begin || in_end <= out_begin,
                    "dlogits overlaps the logits; pass backward_mode::in_place to allow it");
  }
}

// The shapes and required inputs of policy_loss (nothing that reads the data: the device path
// uses it too). S = seq_offsets.size() - 1.
template <bool NeedsRollout, class Real>
void require_policy_shapes(const current_policy<Real>& cur, const rollout_batch<Real>& batch, const loss_config& cfg,
                           const policy_grads<Real>& grads) {
  const std::int64_t T = cur.logp.size();
  GRPOKIT_REQUIRE(batch.seq_offsets.size() >= 1, "seq_offsets: needs at least one element (S + 1 offsets)");
  const std::int64_t S = batch.seq_offsets.size() - 1;
  GRPOKIT_REQUIRE(S > 0 || T == 0, "seq_offsets: last offset must be ", T, ", got 0 (no sequences)");
  require_size("adv", batch.adv, S);
  require_size_or_empty("entropy", cur.entropy, T);
  require_size_or_empty("logp_old", batch.logp_old, T);
  require_size_or_empty("logp_ref", batch.logp_ref, T);
  require_size_or_empty("logp_rollout", batch.logp_rollout, T);
  require_size_or_empty("token_mask", batch.token_mask, T);
  require_size_or_empty("seq_mask", batch.seq_mask, S);
  require_size("dlogp", grads.dlogp, T);
  require_size_or_empty("dentropy", grads.dentropy, T);
  // An optional per-token input is given when it has T elements; with T == 0 (an empty batch, loss 0)
  // every one of them is, so the "needs" checks below only bite when there are tokens.
  auto given = [T](auto s) { return s.size() == T; };
  GRPOKIT_REQUIRE(cfg.entropy_coef == 0 || (given(cur.entropy) && given(grads.dentropy)),
                  "entropy_coef != 0 needs the entropy input and the dentropy output");
  GRPOKIT_REQUIRE(cfg.kl == kl_estimator::none || given(batch.logp_ref), "kl != none needs logp_ref");
  GRPOKIT_REQUIRE(cfg.is == is_correction::none || given(batch.logp_rollout),
                  "importance-sampling correction needs logp_rollout");
  GRPOKIT_REQUIRE(!NeedsRollout || given(batch.logp_rollout), "the trust_region and importance masks need logp_rollout");
}

inline void require_loss_config(const loss_config& c) {
  GRPOKIT_REQUIRE(c.eps_low >= 0 && c.eps_low <= 1, "eps_low must be in [0, 1], got ", c.eps_low);
  GRPOKIT_REQUIRE(c.eps_high >= 0, "eps_high must be >= 0, got ", c.eps_high);
  GRPOKIT_REQUIRE(c.delta == 0 || c.delta > 1, "delta must be 0 (off) or > 1, got ", c.delta);
  GRPOKIT_REQUIRE(c.log_ratio_clamp > 0 && c.is_log_ratio_clamp > 0, "log-ratio clamps must be > 0");
  GRPOKIT_REQUIRE(c.tau_pos > 0 && c.tau_neg > 0, "SAPO temperatures must be > 0");
  GRPOKIT_REQUIRE(c.is_min >= 0 && c.is_min <= c.is_max, "need 0 <= is_min <= is_max, got [", c.is_min, ", ",
                  c.is_max, "]");
  GRPOKIT_REQUIRE(c.kl_coef >= 0, "kl_coef must be >= 0, got ", c.kl_coef);
  GRPOKIT_REQUIRE(c.global_tokens >= 0 && c.global_seqs >= 0, "global normalisers must be >= 0");
  GRPOKIT_REQUIRE(c.dp_size > 0, "dp_size must be > 0, got ", c.dp_size);
  GRPOKIT_REQUIRE(c.agg != aggregation::seq_mean_token_sum_norm || c.norm_constant > 0,
                  "aggregation seq_mean_token_sum_norm needs norm_constant > 0, got ", c.norm_constant);
  GRPOKIT_REQUIRE(c.prune_rho > 0 && c.prune_rho <= 1, "prune_rho must be in (0, 1], got ", c.prune_rho);
  GRPOKIT_REQUIRE(c.importance_lo >= 0 && c.importance_lo <= c.importance_hi,
                  "need 0 <= importance_lo <= importance_hi");
  GRPOKIT_REQUIRE(!(c.trm_max_threshold < 0) && !(c.trm_mean_threshold < 0), "TRM thresholds must be >= 0");
}

// The shapes of fused_linear_loss (host and device): everything but the data (targets, temperature),
// which the host checks in host memory and the device in its status.
template <class S, class Acc>
void require_linear_shapes(const linear_input<S, Acc>& in, std::int64_t token_chunk, const linear_grads<S, Acc>& g,
                           const fused_outputs<Acc>& extra) {
  require_matrix("hidden", in.hidden);
  require_matrix("weight", in.weight);
  const std::int64_t T = in.hidden.rows, V = in.weight.rows, D = in.hidden.cols;
  GRPOKIT_REQUIRE(in.weight.cols == D, "weight: expected [V, ", D, "] (D of hidden), got [", V, ", ",
                  in.weight.cols, "]");
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
  require_size_or_empty("logp output", extra.logp, T);
  require_size_or_empty("entropy output", extra.entropy, T);
}

}  // namespace grpokit::detail
