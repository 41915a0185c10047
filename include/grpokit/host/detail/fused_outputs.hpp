#pragma once
// The optional outputs of fused_loss and fused_linear_loss: logp / entropy copied from the scratch,
// and sum_v p_v^2 per row (detail/sum_p2.hpp) computed from the logits and the row's lse.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../../config.hpp"
#include "../../detail/ops_for.hpp"
#include "../../detail/row_params.hpp"
#include "../../detail/sum_p2.hpp"
#include "../../inputs.hpp"
#include "../../policy.hpp"
#include "../parallel.hpp"
#include "../rows.hpp"
#include "sampler_support.hpp"

namespace grpokit::detail {
// Copies the computed logp / entropy to the caller's optional outputs.
template <class Real>
void copy_extra(const fused_outputs<Real>& extra, const std::vector<Real>& logp, const std::vector<Real>& entropy) {
  std::copy(logp.begin(), logp.begin() + extra.logp.size(), extra.logp.begin());
  std::copy(entropy.begin(), entropy.begin() + extra.entropy.size(), extra.entropy.begin());
}

// sum_v p_v^2 of columns [0, n) of one row: the lanes of detail/sum_p2.hpp in a loop.
template <class Ops, class Acc, class S>
Acc row_sum_p2(const S* x, std::int64_t n, Acc inv_t, Acc threshold, Acc lse) {
  Acc lanes[sum_p2_lanes];
  for (int l = 0; l < sum_p2_lanes; ++l) lanes[l] = sum_p2_lane<Ops>(x, n, l, inv_t, threshold, lse);
  for (int w = sum_p2_lanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) sum_p2_level<Ops>(lanes, w, l);
  return lanes[0];
}

// out[t] = sum_v p_v^2 of row t, from the rows' lse (a single process: the whole vocabulary here).
template <class P>
void sum_p2_rows(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
                 span<const accum_t<P>> lse, span<accum_t<P>> out) {
  using Acc = accum_t<P>;
  using Ops = ops_for<P::order>;
  const std::int64_t V = in.logits.cols;
  const Acc log_rho = log_prune_rho<Ops, Acc>(cfg);
  parallel_for(in.logits.rows, [&](std::int64_t t) {
    const auto* x = in.logits.row(t);
    const Acc inv_t = inverse_temperature<Ops>(cfg, in.temperature, t);
    bool finite = true;  // a non-finite row was reported by the forward
    const Acc row_max = P::vocab_prune ? pruning_row_max<Ops, Acc>(x, V, inv_t, finite) : Acc(0);
    const Acc threshold =
        joint_threshold(prune_threshold<Ops>(P::vocab_prune, row_max, log_rho), row_support<Ops>(cfg, x, V, inv_t));
    out[t] = row_sum_p2<Ops>(x, V, inv_t, threshold, lse[t]);
  });
}
}  // namespace grpokit::detail
