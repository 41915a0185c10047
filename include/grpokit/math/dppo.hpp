#pragma once
// The DPPO trust region (arXiv 2602.04879; verl dppo_tv / dppo_kl in trainer/ppo/core_algos.py,
// prime-rl trainer/rl/loss.py): whether the sampled token's probability p = exp(logp) stayed inside
// the region around the anchor's p_a = exp(logp_anchor), judged in the direction the advantage
// pushes it (A > 0 raises p, A <= 0 lowers it, as verl splits the two).
#include <cmath>

#include "../choices.hpp"
#include "../detail/macros.hpp"

namespace grpokit::math {

template <class Ops>
GRPOKIT_HD inline bool dppo_keep(dppo_divergence div, double logp, double logp_anchor, double adv, double low,
                                 double high) {
  if (div == dppo_divergence::none) return true;
  const double p = Ops::exp(logp), pa = Ops::exp(logp_anchor);
  if (div == dppo_divergence::tv) {
    const double dp = p - pa;
    return adv > 0 ? dp <= high : dp >= -low;
  }
  // KL(Bernoulli(p_a) || Bernoulli(p)); verl's 1e-8 keeps the log finite at p = 1 or p_a = 1
  const double bkl = pa * (logp_anchor - logp) + (1.0 - pa) * Ops::log((1.0 - pa + 1e-8) / (1.0 - p + 1e-8));
  return adv > 0 ? (bkl <= high || p <= pa) : (bkl <= low || p >= pa);
}

}  // namespace grpokit::math
