#pragma once
// Sampled-token KL estimators and their derivatives with respect to logp (verl conventions).
//   k1 = logp - logp_ref
//   k2 = (logp - logp_ref)^2 / 2
//   k3 = exp(d) - d - 1,  d = clamp(logp_ref - logp, +-input_clamp), output clamped to +-output_clamp
#include <cmath>

#include "../choices.hpp"
#include "../detail/macros.hpp"

namespace grpokit::math {

struct value_grad {
  double value;
  double grad;  // d value / d logp
};

template <class Ops>
GRPOKIT_HD inline value_grad kl_term(kl_estimator est, double logp, double logp_ref, double input_clamp,
                                     double output_clamp) {
  switch (est) {
    case kl_estimator::k1:
      return {logp - logp_ref, 1.0};
    case kl_estimator::k2: {
      const double d = logp - logp_ref;
      return {0.5 * d * d, d};
    }
    case kl_estimator::k3: {
      const double raw = logp_ref - logp;
      const double d = std::fmin(std::fmax(raw, -input_clamp), input_clamp);
      const double ed = Ops::exp(d);
      const double k = ed - d - 1.0;
      const bool in_clamped = raw != d;
      if (k > output_clamp) return {output_clamp, 0.0};
      if (k < -output_clamp) return {-output_clamp, 0.0};
      return {k, in_clamped ? 0.0 : 1.0 - ed};
    }
    case kl_estimator::none:
    default:
      return {0.0, 0.0};
  }
}

// The divergence estimators of the trust-region mask, on d = logp_trainer - logp_rollout:
// k1 = d (the criterion takes |.|), k2 = d^2 / 2, k3 = exp(d) - 1 - d = rho - 1 - log rho.
template <class Ops>
GRPOKIT_HD inline double divergence_term(divergence est, double d) {
  switch (est) {
    case divergence::k2:
      return 0.5 * d * d;
    case divergence::k3:
      return Ops::exp(d) - 1.0 - d;
    case divergence::k1:
    default:
      return d;
  }
}

}  // namespace grpokit::math
