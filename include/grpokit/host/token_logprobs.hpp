#pragma once
// grpokit::host::token_logprobs: logp of the sampled token, entropy and LSE of every row, in one
// pass over the row (two with vocabulary pruning, which needs the row max first), and sum_v p_v^2
// in one more when asked. Never materialises a softmax; extra memory O(T) only for error flags.
#include <cstdint>
#include <vector>

#include "../config.hpp"
#include "../detail/row_params.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../math/ops.hpp"
#include "../detail/ops_for.hpp"
#include "../policy.hpp"
#include "detail/fused_outputs.hpp"
#include "detail/sampler_support.hpp"
#include "detail/scratch.hpp"
#include "parallel.hpp"
#include "rows.hpp"

namespace grpokit::detail {

// Row t's logp, entropy and lse (and whether its logits are finite).
template <class P>
row_forward_result<accum_t<P>> logprob_row(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
                                          accum_t<P> log_rho, std::int64_t t) {
  using Acc = accum_t<P>;
  using Ops = detail::ops_for<P::order>;
  const std::int64_t V = in.logits.cols;
  const Acc inv_t = detail::inverse_temperature<Ops>(cfg, in.temperature, t);
  const Acc support = detail::row_support<Ops>(cfg, in.logits.row(t), V, inv_t);
  return detail::forward_row<Ops, P::chunk_size, P::chunk_lanes, P::vector_width, Acc>(
      in.logits.row(t), V, in.targets[t], inv_t, P::vocab_prune, log_rho, support);
}

inline void require_finite_rows(const std::vector<std::uint8_t>& bad) {
  for (std::int64_t t = 0; t < static_cast<std::int64_t>(bad.size()); ++t)
    GRPOKIT_REQUIRE(!bad[static_cast<std::size_t>(t)], "logits row ", t,
                    " contains NaN or Inf, or overflows when scaled by 1 / temperature");
}

}  // namespace grpokit::detail

namespace grpokit::host {

template <class P>
void token_logprobs(const logits_input<storage_t<P>, accum_t<P>>& in,
                    const loss_config& cfg, const token_stats<accum_t<P>>& out) {
  using Acc = accum_t<P>;
  using Ops = detail::ops_for<P::order>;
  detail::require_logits_shapes(in, cfg);
  detail::require_logits_data(in, cfg);
  const std::int64_t T = in.logits.rows;
  detail::require_size("logp", out.logp, T);
  detail::require_size("lse", out.lse, T);
  detail::require_size_or_empty("entropy", out.entropy, T);
  detail::require_size_or_empty("sum_p2", out.sum_p2, T);

  const Acc log_rho = detail::log_prune_rho<Ops, Acc>(cfg);
  auto bad = detail::scratch<std::uint8_t>(cfg.check_finite ? T : 0, "token_logprobs");
  detail::parallel_for(T, [&](std::int64_t t) {
    const auto r = detail::logprob_row<P>(in, cfg, log_rho, t);
    out.logp[t] = r.logp;
    out.lse[t] = r.lse;
    if (!out.entropy.empty()) out.entropy[t] = r.entropy;
    if (cfg.check_finite) bad[static_cast<std::size_t>(t)] = !r.finite;
  });
  detail::require_finite_rows(bad);
  if (!out.sum_p2.empty()) detail::sum_p2_rows<P>(in, cfg, out.lse, out.sum_p2);
}

}  // namespace grpokit::host
