#pragma once
// grpokit::host::logits_backward: dlogits = d loss / d logits from the saved lse (and entropy),
//   dz_v = dlogp (1[v = y] - p_v) - dentropy p_v (log p_v + H),   dlogits = dz / T,
// one read of the logits and one write of dlogits per element, no softmax kept.
#include <cstdint>
#include <limits>

#include "../config.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../math/ops.hpp"
#include "../detail/ops_for.hpp"
#include "../policy.hpp"
#include "detail/sampler_support.hpp"
#include "detail/scratch.hpp"
#include "parallel.hpp"
#include "rows.hpp"

namespace grpokit::detail {

// dlogits of row t from its lse, entropy and gradients; returns whether the logits it read are
// finite. The sampler's support is found before the row's dlogits are written (in place: over the
// logits), and only for a row with a gradient (a row without one is not read).
template <class P, class Out>
bool dlogits_row(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg, accum_t<P> log_rho,
                 accum_t<P> lse, accum_t<P> entropy, accum_t<P> g_logp, accum_t<P> g_entropy,
                 const matrix_view<Out>& dlogits, std::int64_t t) {
  using Acc = accum_t<P>;
  using Ops = detail::ops_for<P::order>;
  const std::int64_t V = in.logits.cols;
  const Acc inv_t = detail::inverse_temperature<Ops>(cfg, in.temperature, t);
  const Acc support = g_logp != Acc(0) || g_entropy != Acc(0)
                          ? detail::row_support<Ops>(cfg, in.logits.row(t), V, inv_t)
                          : -std::numeric_limits<Acc>::infinity();
  return detail::backward_row<Ops, Acc>(in.logits.row(t), dlogits.row(t), V, in.targets[t], inv_t, P::vocab_prune,
                                        log_rho, lse, entropy, g_logp, g_entropy, support);
}

}  // namespace grpokit::detail

namespace grpokit::host {

template <class P>
void logits_backward(const logits_input<storage_t<P>, accum_t<P>>& in,
                     const backward_inputs<accum_t<P>>& g, const loss_config& cfg,
                     const matrix_view<storage_t<P>>& dlogits,
                     backward_mode mode = backward_mode::separate) {
  using Acc = accum_t<P>;
  using Ops = detail::ops_for<P::order>;
  detail::require_logits_shapes(in, cfg);
  detail::require_logits_data(in, cfg);
  const std::int64_t T = in.logits.rows;
  detail::require_backward_shapes(in, g, dlogits, mode);
  const Acc log_rho = detail::log_prune_rho<Ops, Acc>(cfg);
  auto bad = detail::scratch<std::uint8_t>(cfg.check_finite ? T : 0, "logits_backward");
  detail::parallel_for(T, [&](std::int64_t t) {
    const Acc g_ent = g.dentropy.empty() ? Acc(0) : g.dentropy[t];
    const Acc h = g.dentropy.empty() ? Acc(0) : g.entropy[t];
    const bool finite = detail::dlogits_row<P>(in, cfg, log_rho, g.lse[t], h, g.dlogp[t], g_ent, dlogits, t);
    if (cfg.check_finite) bad[static_cast<std::size_t>(t)] = !finite;
  });
  // check_finite: a row that receives a gradient must have finite logits (a row with none is not read)
  for (std::int64_t t = 0; t < static_cast<std::int64_t>(bad.size()); ++t)
    GRPOKIT_REQUIRE(!bad[static_cast<std::size_t>(t)], "logits row ", t, " contains NaN or Inf");
}

}  // namespace grpokit::host
