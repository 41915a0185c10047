#pragma once
// grpokit::host::logits_backward: dlogits = d loss / d logits from the saved lse (and entropy),
//   dz_v = dlogp (1[v = y] - p_v) - dentropy p_v (log p_v + H),   dlogits = dz / T,
// one read of the logits and one write of dlogits per element, no softmax kept.
#include <cstdint>

#include "../config.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../math/ops.hpp"
#include "../policy.hpp"
#include "parallel.hpp"
#include "rows.hpp"
#include "token_logprobs.hpp"

namespace grpokit::host {

template <class P>
void logits_backward(const logits_input<storage_t<P>, accum_t<P>>& in,
                     const backward_inputs<accum_t<P>>& g, const loss_config& cfg,
                     const matrix_view<storage_t<P>>& dlogits,
                     backward_mode mode = backward_mode::separate) {
  using Acc = accum_t<P>;
  using Ops = math::ops_for<P::order>;
  detail::validate_logits_input<P>(in, cfg);
  const std::int64_t T = in.logits.rows;
  const std::int64_t V = in.logits.cols;
  grpokit::detail::require_backward_shapes(in, g, dlogits, mode);
  const Acc log_rho = Ops::log(static_cast<Acc>(cfg.prune_rho));
  detail::parallel_for(T, [&](std::int64_t t) {
    const Acc inv_t = grpokit::detail::inverse_temperature<Ops>(cfg, in.temperature, t);
    const Acc g_ent = g.dentropy.empty() ? Acc(0) : g.dentropy[t];
    const Acc h = g.dentropy.empty() ? Acc(0) : g.entropy[t];
    detail::backward_row<Ops, Acc>(in.logits.row(t), dlogits.row(t), V, in.targets[t], inv_t, P::vocab_prune,
                                   log_rho, g.lse[t], h, g.dlogp[t], g_ent);
  });
}

}  // namespace grpokit::host
