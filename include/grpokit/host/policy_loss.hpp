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
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../detail/loss_partial.hpp"
#include "../detail/policy_terms.hpp"
#include "../detail/reduce.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../math/ops.hpp"
#include "../detail/ops_for.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "detail/batch_select.hpp"
#include "detail/scratch.hpp"
#include "parallel.hpp"

namespace grpokit::detail {

template <class P>
void validate_policy_inputs(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                            const loss_config& cfg, const policy_grads<accum_t<P>>& grads) {
  using detail::require_finite;
  const std::int64_t T = cur.logp.size();
  detail::require_policy_shapes<P::trust_region || P::importance_mask>(cur, batch, cfg, grads);
  detail::require_offsets("seq_offsets", batch.seq_offsets, T, /*allow_empty_segments=*/true);
  require_finite("adv", batch.adv);
  require_finite("token_adv", batch.token_adv);
  if (!cfg.check_finite) return;
  for (std::int64_t t = 0; t < T; ++t) {
    const double v = cur.logp[t];
    const bool pruned = (P::vocab_prune || sampler_support(cfg)) && v == -std::numeric_limits<double>::infinity();
    GRPOKIT_REQUIRE(pruned || std::isfinite(v), "logp[", t, "] is not finite (", v, ")");
  }
  require_finite("entropy", cur.entropy);
  require_finite("logp_old", batch.logp_old);
  require_finite("logp_ref", batch.logp_ref);
  require_finite("logp_rollout", batch.logp_rollout);
}

}  // namespace grpokit::detail

namespace grpokit::detail {

// Every sequence's summary and the local counts {response tokens, non-empty sequences}.
template <class Terms>
struct sequence_summaries {
  std::vector<typename Terms::sequence_summary> seqs;
  std::vector<long long> counts{0, 0};
};
template <class Terms>
sequence_summaries<Terms> summarize_sequences(const Terms& terms, std::int64_t S, const char* entry_point) {
  sequence_summaries<Terms> out;
  out.seqs = detail::scratch<typename Terms::sequence_summary>(S, entry_point);
  detail::parallel_for(S, [&](std::int64_t s) { out.seqs[static_cast<std::size_t>(s)] = terms.summarize(s); });
  for (const auto& q : out.seqs) {
    out.counts[0] += q.counted;
    out.counts[1] += q.counted > 0;
  }
  return out;
}

// The loss over the sequences of this process; `sum_over_ranks(v)` adds the integers v of every
// rank into v (the identity in one process): the token and sequence counts and the selection's
// histograms; `total(parts)` combines the per-sequence partials of the whole batch (a fixed tree in
// one process): those of the batch pass first when the configuration needs one, then those of the
// loss. data_parallel.hpp passes collectives and the index of the rank's first sequence.
template <class P, class Sum, class Total>
loss_result policy_loss_with(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                             const loss_config& cfg, const policy_grads<accum_t<P>>& grads, Sum&& sum_over_ranks,
                             Total&& total, std::int64_t first_seq = 0) {
  using Ops = detail::ops_for<P::order>;
  using terms_t = detail::policy_terms<P, Ops>;
  const std::int64_t S = batch.seq_offsets.size() - 1;
  auto select = [&](const terms_t& by, detail::selection which, detail::select_run run, const detail::batch_stats& at) {
    return detail::host_select(
        run, S, [&](std::int64_t s, auto&& add) { by.for_each_selection_key(which, s, at, add); }, sum_over_ranks);
  };
  double m2po_limit = std::numeric_limits<double>::infinity();
  if (detail::needs_selection(cfg, detail::selection::m2po)) {  // first: its mask is a token mask
    const terms_t before{cur, batch, cfg, first_seq};
    m2po_limit = detail::m2po_limit(select(before, detail::selection::m2po, detail::m2po_run(cfg.m2po_threshold), {}));
  }
  const terms_t terms{cur, batch, cfg, first_seq, m2po_limit};

  auto summaries = detail::summarize_sequences(terms, S, "policy_loss");
  const auto& seqs = summaries.seqs;
  auto& counts = summaries.counts;
  sum_over_ranks(counts);
  const double n_tokens = terms.token_count(counts[0]), n_seqs = terms.seq_count(counts[1]);

  auto parts = detail::scratch<detail::loss_partial>(S, "policy_loss");
  detail::batch_stats whole;
  detail::loss_partial pass_total;
  if (detail::needs_batch_pass(cfg)) {
    detail::parallel_for(S, [&](std::int64_t s) {
      parts[static_cast<std::size_t>(s)] = terms.batch_partial(s, seqs[static_cast<std::size_t>(s)]);
    });
    pass_total = total(parts);
    whole = detail::batch_stats_of(pass_total, cfg);
  }
  if (detail::needs_selection(cfg, detail::selection::entropy_quantile)) {  // over every rank
    const double q = 1 - cfg.top_entropy_quantile;
    whole.entropy_threshold = detail::quantile_value(
        select(terms, detail::selection::entropy_quantile, detail::quantile_run(counts[0], q), whole), q);
  }
  if (detail::needs_selection(cfg, detail::selection::covariance))
    detail::set_covariance(
        whole, select(terms, detail::selection::covariance, detail::covariance_run(pass_total, cfg), whole));
  detail::parallel_for(S, [&](std::int64_t s) {
    parts[static_cast<std::size_t>(s)] =
        terms.accumulate_sequence(s, seqs[static_cast<std::size_t>(s)], n_tokens, n_seqs, whole, grads);
  });
  return detail::finish(total(parts), counts[0], cfg, whole);
}

// The fixed pairwise tree over the partials (an empty batch gives the empty partial).
inline loss_partial tree_total(std::vector<loss_partial>& parts) {
  if (parts.empty()) return {};
  detail::tree_reduce(parts, detail::combine);
  return parts[0];
}

}  // namespace grpokit::detail

namespace grpokit::host {

template <class P>
loss_result policy_loss(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                        const loss_config& cfg, const policy_grads<accum_t<P>>& grads) {
  detail::validate_policy_inputs<P>(cur, batch, cfg, grads);
  return detail::policy_loss_with<P>(
      cur, batch, cfg, grads, [](std::vector<long long>&) {}, detail::tree_total);
}

}  // namespace grpokit::host
