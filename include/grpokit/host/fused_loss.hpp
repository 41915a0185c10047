#pragma once
// grpokit::host::fused_loss: token_logprobs -> policy_loss -> logits_backward in one call.
// Extra memory O(T + S): logp, entropy, lse and their gradients, never O(T V).
#include <cstdint>
#include <vector>

#include "../config.hpp"
#include "../inputs.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "logits_backward.hpp"
#include "policy_loss.hpp"
#include "token_logprobs.hpp"

namespace grpokit::host {

// Optional per-token outputs of fused_loss (empty spans: not wanted).
template <class Real>
struct fused_outputs {
  span<Real> logp;     // [T]
  span<Real> entropy;  // [T]
};

template <class P>
loss_result fused_loss(const logits_input<storage_t<P>, accum_t<P>>& in,
                       const rollout_batch<accum_t<P>>& batch, const loss_config& cfg,
                       const matrix_view<storage_t<P>>& dlogits,
                       const fused_outputs<accum_t<P>>& extra = {},
                       backward_mode mode = backward_mode::separate) {
  using Real = accum_t<P>;
  const std::int64_t T = in.logits.rows;
  grpokit::detail::require_size_or_empty("logp output", extra.logp, T);
  grpokit::detail::require_size_or_empty("entropy output", extra.entropy, T);
  std::vector<Real> logp(static_cast<std::size_t>(T)), entropy(static_cast<std::size_t>(T)),
      lse(static_cast<std::size_t>(T)), dlogp(static_cast<std::size_t>(T)), dentropy(static_cast<std::size_t>(T));
  token_logprobs<P>(in, cfg, token_stats<Real>{logp, entropy, lse});
  const loss_result res = policy_loss<P>(current_policy<Real>{logp, entropy}, batch, cfg,
                                         policy_grads<Real>{dlogp, dentropy});
  logits_backward<P>(in, backward_inputs<Real>{lse, entropy, dlogp, dentropy}, cfg, dlogits, mode);
  for (std::int64_t t = 0; t < extra.logp.size(); ++t) extra.logp[t] = logp[static_cast<std::size_t>(t)];
  for (std::int64_t t = 0; t < extra.entropy.size(); ++t) extra.entropy[t] = entropy[static_cast<std::size_t>(t)];
  return res;
}

}  // namespace grpokit::host
