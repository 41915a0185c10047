#pragma once
// grpokit::host::fused_loss: token_logprobs -> policy_loss -> logits_backward in one call.
// Extra memory O(T + S): logp, entropy, lse and their gradients, never O(T V).
#include <cstdint>
#include <vector>

#include "../config.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "detail/fused_outputs.hpp"
#include "detail/scratch.hpp"
#include "logits_backward.hpp"
#include "policy_loss.hpp"
#include "token_logprobs.hpp"

namespace grpokit::detail {

// fused_loss where every token's gradient is its own (policy_terms::token_local, no sum_p2): each
// row's forward, its token's gradient and its backward one after the other, so that the row is read
// from memory once and is still in cache for the backward, the rows in parallel (a pass opened for
// the row alone gives its token's gradient); then each sequence's loss and metric sums from the
// log-probs kept. The per-token arithmetic and the order of every sum are those of the separate
// steps: the same bits.
template <class P>
loss_result fused_loss_by_rows(const logits_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                               const loss_config& cfg, const matrix_view<storage_t<P>>& dlogits,
                               const fused_outputs<accum_t<P>>& extra) {
  using Real = accum_t<P>;
  using Ops = detail::ops_for<P::order>;
  using terms_t = detail::policy_terms<P, Ops>;
  const std::int64_t T = in.logits.rows;
  detail::require_logits_data(in, cfg);
  auto logp = detail::scratch<Real>(T, "fused_loss"), entropy = detail::scratch<Real>(T, "fused_loss"),
       dlogp = detail::scratch<Real>(T, "fused_loss"), dentropy = detail::scratch<Real>(T, "fused_loss");
  const current_policy<Real> cur{logp, entropy};
  const policy_grads<Real> grads{dlogp, dentropy};
  detail::validate_policy_inputs<P>(cur, batch, cfg, grads);  // the batch's inputs (logp: zeros so far)
  const std::int64_t S = batch.seq_offsets.size() - 1;
  const terms_t terms{cur, batch, cfg};
  // the summaries and the denominators read no log-prob (token_local)
  const auto summaries = detail::summarize_sequences(terms, S, "fused_loss");
  const auto& seqs = summaries.seqs;
  const long long tokens = summaries.counts[0];
  const double n_tokens = terms.token_count(tokens), n_seqs = terms.seq_count(summaries.counts[1]);
  const Real log_rho = detail::log_prune_rho<Ops, Real>(cfg);
  auto parts = detail::scratch<detail::loss_partial>(S, "fused_loss");
  auto bad = detail::scratch<std::uint8_t>(cfg.check_finite ? T : 0, "fused_loss");
  const detail::batch_stats whole{};
  auto sequence_of = detail::scratch<std::int64_t>(T, "fused_loss");  // the offsets cover [0, T)
  for (std::int64_t s = 0; s < S; ++s)
    for (std::int64_t t = batch.seq_offsets[s]; t < batch.seq_offsets[s + 1]; ++t)
      sequence_of[static_cast<std::size_t>(t)] = s;
  detail::parallel_for(T, [&](std::int64_t t) {
    const std::int64_t s = sequence_of[static_cast<std::size_t>(t)];
    const auto& q = seqs[static_cast<std::size_t>(s)];
    const auto r = detail::logprob_row<P>(in, cfg, log_rho, t);
    logp[static_cast<std::size_t>(t)] = r.logp;
    entropy[static_cast<std::size_t>(t)] = r.entropy;
    auto row_pass = terms.open_sequence(s, q, n_tokens, n_seqs);
    terms.accumulate_token(row_pass, t, s, q, whole, grads);
    const bool read_finite =
        detail::dlogits_row<P>(in, cfg, log_rho, r.lse, r.entropy, dlogp[t], dentropy[t], dlogits, t);
    if (cfg.check_finite) bad[static_cast<std::size_t>(t)] = !(r.finite && read_finite);
  });
  // the sums in each sequence's order (the gradients written again, the same values)
  detail::parallel_for(S, [&](std::int64_t s) {
    parts[static_cast<std::size_t>(s)] =
        terms.accumulate_sequence(s, seqs[static_cast<std::size_t>(s)], n_tokens, n_seqs, whole, grads);
  });
  detail::require_finite_rows(bad);
  const loss_result res = detail::finish(detail::tree_total(parts), tokens, cfg, whole);
  detail::copy_extra(extra, logp, entropy);
  return res;
}

}  // namespace grpokit::detail

namespace grpokit::host {

using grpokit::fused_outputs;


template <class P>
loss_result fused_loss(const logits_input<storage_t<P>, accum_t<P>>& in,
                       const rollout_batch<accum_t<P>>& batch, const loss_config& cfg,
                       const matrix_view<storage_t<P>>& dlogits,
                       const fused_outputs<accum_t<P>>& extra = {},
                       backward_mode mode = backward_mode::separate) {
  using Real = accum_t<P>;
  const std::int64_t T = in.logits.rows;
  // everything that can be checked before the O(T) scratch is allocated
  detail::require_logits_shapes(in, cfg);
  detail::require_dlogits(in, dlogits, mode);
  detail::require_batch_shapes<P::trust_region || P::importance_mask>(batch, T, cfg);
  detail::require_fused_outputs(extra, T);
  detail::require_sum_p2_apart(extra.sum_p2, batch, in.temperature, in.logits, dlogits);
  // one pass over the rows where each token's gradient is its own; in place only without the
  // finiteness check, which would otherwise fail with rows of the logits overwritten
  if (extra.sum_p2.empty() && detail::policy_terms<P, detail::ops_for<P::order>>::token_local(cfg) &&
      !(mode == backward_mode::in_place && cfg.check_finite))
    return detail::fused_loss_by_rows<P>(in, batch, cfg, dlogits, extra);
  auto logp = detail::scratch<Real>(T, "fused_loss"), entropy = detail::scratch<Real>(T, "fused_loss"),
       lse = detail::scratch<Real>(T, "fused_loss"), dlogp = detail::scratch<Real>(T, "fused_loss"),
       dentropy = detail::scratch<Real>(T, "fused_loss");
  token_logprobs<P>(in, cfg, token_stats<Real>{logp, entropy, lse});
  if (!extra.sum_p2.empty()) detail::sum_p2_rows<P>(in, cfg, lse, extra.sum_p2);  // before an in-place backward
  const loss_result res = policy_loss<P>(current_policy<Real>{logp, entropy}, batch, cfg,
                                         policy_grads<Real>{dlogp, dentropy});
  logits_backward<P>(in, backward_inputs<Real>{lse, entropy, dlogp, dentropy}, cfg, dlogits, mode);
  detail::copy_extra(extra, logp, entropy);
  return res;
}

}  // namespace grpokit::host
