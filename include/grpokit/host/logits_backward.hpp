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

// Per-row inputs of the backward: what token_logprobs saved and what policy_loss produced.
template <class Real>
struct backward_inputs {
  span<const Real> lse;       // [T]
  span<const Real> entropy;   // [T], required when dentropy is given
  span<const Real> dlogp;     // [T]
  span<const Real> dentropy;  // [T] or empty
};

template <class P>
void logits_backward(const logits_input<storage_t<P>, accum_t<P>>& in,
                     const backward_inputs<accum_t<P>>& g, const loss_config& cfg,
                     const matrix_view<storage_t<P>>& dlogits,
                     backward_mode mode = backward_mode::separate) {
  using Acc = accum_t<P>;
  using S = storage_t<P>;
  using Ops = math::ops_for<P::order>;
  detail::validate_logits_input<P>(in, cfg);
  const std::int64_t T = in.logits.rows;
  const std::int64_t V = in.logits.cols;
  grpokit::detail::require_size("lse", g.lse, T);
  grpokit::detail::require_size("dlogp", g.dlogp, T);
  grpokit::detail::require_size_or_empty("dentropy", g.dentropy, T);
  GRPOKIT_REQUIRE(g.dentropy.empty() || g.entropy.size() == T, "entropy: needed (", T,
                  " elements) when dentropy is given, got ", g.entropy.size());
  grpokit::detail::require_matrix("dlogits", dlogits);
  GRPOKIT_REQUIRE(dlogits.rows == T && dlogits.cols == V, "dlogits: expected [", T, ", ", V, "], got [",
                  dlogits.rows, ", ", dlogits.cols, "]");
  if (T > 0) {
    const S* in_begin = in.logits.data;
    const S* in_end = in.logits.data + (T - 1) * in.logits.row_stride + V;
    const S* out_begin = dlogits.data;
    const S* out_end = dlogits.data + (T - 1) * dlogits.row_stride + V;
    const bool overlap = !(out_end <= in_begin || in_end <= out_begin);
    if (mode == backward_mode::in_place) {
      GRPOKIT_REQUIRE(out_begin == in_begin && dlogits.row_stride == in.logits.row_stride,
                      "in-place backward: dlogits must be the logits buffer with the same row stride");
    } else {
      GRPOKIT_REQUIRE(!overlap, "dlogits overlaps the logits; pass backward_mode::in_place to allow it");
    }
  }
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
