#pragma once
// grpokit::host::fused_loss: token_logprobs -> policy_loss -> logits_backward in one call.
// Extra memory O(T + S): logp, entropy, lse and their gradients, never O(T V).
#include <algorithm>
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
