#pragma once
// Data parallel on the host: policy_loss and compute_advantages over a batch whose sequences are
// split across the ranks of layout.dp (docs/distributed.md).
//   policy_loss: the token and sequence counts are summed once over the ranks (unless the caller
//     set cfg.global_tokens / global_seqs), every rank writes the gradients of its own tokens, and
//     the loss and metrics are those of the whole batch on every rank. Under batch_invariant the
//     per-sequence partials of all ranks are gathered and combined by the single-process tree
//     (bitwise the one-process result); otherwise each rank's total is gathered and the totals are
//     combined in rank order (within rounding, the same bits run to run).
//   compute_advantages: rank r holds the rewards of a contiguous run of the global sequences (ranks
//     in order, any split, a group may straddle ranks); group_offsets is the global one, the same on
//     every rank. The rewards are gathered and every rank computes the advantages of the whole batch
//     (bitwise the one-process result) and keeps its own.
// Every rank must call with the same configuration; a bad input on any rank throws on every rank.
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "../communicator.hpp"
#include "../detail/collectives.hpp"
#include "../detail/loss_partial.hpp"
#include "../detail/reduce.hpp"
#include "advantages.hpp"
#include "detail/scratch.hpp"
#include "policy_loss.hpp"

namespace grpokit::host {

template <class P, class DP, class TP>
loss_result policy_loss(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                        const loss_config& cfg, const policy_grads<accum_t<P>>& grads,
                        const parallel_layout<DP, TP>& layout) {
  const DP& dp = layout.dp;
  detail::collective_check(layout, "policy_loss", [&] { detail::validate_policy_inputs<P>(cur, batch, cfg, grads); });
  auto sum_over_ranks = [&](std::vector<long long>& v) {  // integers: exact in any order
    const std::size_t n = v.size();
    const auto all = detail::gather_array(dp, v.data(), static_cast<std::int64_t>(n));
    std::fill(v.begin(), v.end(), 0);
    for (std::size_t i = 0; i < all.size(); ++i) v[i % n] += all[i];
  };
  auto total = [&](std::vector<detail::loss_partial>& parts) {
    if constexpr (P::order == reduction_order::batch_invariant) {
      auto all = detail::gather_varying(dp, parts.data(), static_cast<std::int64_t>(parts.size()));
      return detail::tree_total(all);
    } else {
      const auto totals = detail::gather_value(dp, detail::tree_total(parts));
      detail::loss_partial sum = totals[0];  // not combine({}, .): -0 stays -0 as in one process
      for (std::size_t r = 1; r < totals.size(); ++r) sum = detail::combine(sum, totals[r]);
      return sum;
    }
  };
  const auto seqs = detail::gather_value(dp, static_cast<std::int64_t>(batch.seq_offsets.size()) - 1);
  std::int64_t first_seq = 0;  // the rank's first sequence in the whole batch
  for (int r = 0; r < dp.rank(); ++r) first_seq += seqs[static_cast<std::size_t>(r)];
  return detail::policy_loss_with<P>(cur, batch, cfg, grads, sum_over_ranks, total, first_seq);
}

template <class P, class DP, class TP>
advantage_stats compute_advantages(const advantage_inputs<accum_t<P>>& in, const advantage_config& cfg,
                                   const advantage_outputs<accum_t<P>>& out, const parallel_layout<DP, TP>& layout) {
  using Real = accum_t<P>;
  const DP& dp = layout.dp;
  const std::int64_t S = in.rewards.size();
  detail::collective_check(layout, "compute_advantages", [&] {
    detail::require_size("adv", out.adv, S);
    detail::require_size("seq_mask", out.seq_mask, S);
    detail::require_size_or_empty("seq_log_ratio", in.seq_log_ratio, S);
    detail::require_size_or_empty("seq_weight", in.seq_weight, S);
    detail::require_size_or_empty("seq_tokens", in.seq_tokens, S);
  });
  // what must be the same on every rank: the group offsets and the per-group baselines
  const std::uint64_t mine[2] = {detail::values_fingerprint(in.group_offsets),
                                 detail::values_fingerprint(in.group_baseline)};
  const auto all = detail::gather_array(dp, mine, 2);
  std::vector<std::int64_t> first;
  const auto rewards = detail::gather_varying(dp, in.rewards.data(), S, &first);
  const auto log_ratio = detail::gather_varying(dp, in.seq_log_ratio.data(), in.seq_log_ratio.size());
  const auto weight = detail::gather_varying(dp, in.seq_weight.data(), in.seq_weight.size());
  const auto tokens = detail::gather_varying(dp, in.seq_tokens.data(), in.seq_tokens.size());
  const std::int64_t total = first.back();
  advantage_stats st;
  std::vector<Real> adv;
  std::vector<std::uint8_t> keep;
  // the same data on every rank from here: a bad input throws on every rank
  detail::collective_check(layout, "compute_advantages", [&] {
    for (std::size_t r = 0; r < all.size(); r += 2)
      GRPOKIT_REQUIRE(all[r] == mine[0] && all[r + 1] == mine[1],
                      "compute_advantages: every rank must pass the same group_offsets and group_baseline");
    // an optional per-sequence input is given by every rank that has sequences, or by none
    auto all_or_none = [&](const char* name, const std::vector<Real>& gathered) {
      GRPOKIT_REQUIRE(gathered.empty() || static_cast<std::int64_t>(gathered.size()) == total,
                      "compute_advantages: ", name, " given by some ranks and not by others");
    };
    all_or_none("seq_log_ratio", log_ratio);
    all_or_none("seq_weight", weight);
    all_or_none("seq_tokens", tokens);
    adv = detail::scratch<Real>(total, "compute_advantages");
    keep = detail::scratch<std::uint8_t>(total, "compute_advantages");
    st = compute_advantages<P>(
        advantage_inputs<Real>{rewards, in.group_offsets, log_ratio, weight, in.group_baseline, tokens}, cfg,
        advantage_outputs<Real>{adv, keep});
  });
  const std::int64_t begin = first[static_cast<std::size_t>(dp.rank())];
  for (std::int64_t i = 0; i < S; ++i) {
    out.adv[i] = adv[static_cast<std::size_t>(begin + i)];
    out.seq_mask[i] = keep[static_cast<std::size_t>(begin + i)];
  }
  return st;
}

}  // namespace grpokit::host
