#pragma once
// Per-token policy-gradient surrogates: value and derivative with respect to logp.
// `ratio` is r = pi / pi_old as seen by the token (token ratio, or the GSPO sequence ratio) and
// `ratio_grad` its derivative with respect to this token's logp (0 where a clamp is active).
#include <cmath>

#include "../choices.hpp"
#include "../detail/macros.hpp"

namespace grpokit::math {

// What the surrogate reads of the configuration (loss_config's objective fields).
struct surrogate_params {
  objective obj = objective::ppo_clip;
  double eps_low = 0.2, eps_high = 0.2;
  double dual_clip = 3.0, delta = 0.0;
  double tau_pos = 1.0, tau_neg = 1.05;
};

struct surrogate_term {
  double value = 0;
  double grad = 0;
  bool clipped_low = false;   // r < 1 - eps_low and A < 0: the clip removes the gradient
  bool clipped_high = false;  // r > 1 + eps_high and A > 0
  bool clipped_dual = false;  // A < 0 and the dual clip bound c |A| is active
};

// The token ratio r = exp(clamp(logp - logp_old, +-clamp)) and dr/dlogp.
template <class Ops>
GRPOKIT_HD inline void token_ratio(double logp, double logp_old, double clamp, double& r, double& dr) {
  const double d = logp - logp_old;
  const double dc = std::fmin(std::fmax(d, -clamp), clamp);
  r = Ops::exp(dc);
  dr = d == dc ? r : 0.0;
}

// r clipped to the trust region [1 - eps_low, 1 + eps_high].
GRPOKIT_HD inline double clipped_ratio(const surrogate_params& cfg, double r) {
  return std::fmin(std::fmax(r, 1.0 - cfg.eps_low), 1.0 + cfg.eps_high);
}

template <class Ops>
GRPOKIT_HD inline surrogate_term surrogate(const surrogate_params& cfg, double adv, double logp, double r, double dr) {
  surrogate_term t;
  const double lo = 1.0 - cfg.eps_low;
  const double hi = 1.0 + cfg.eps_high;
  t.clipped_low = adv < 0 && r < lo;
  t.clipped_high = adv > 0 && r > hi;
  switch (cfg.obj) {
    case objective::reinforce:
      t.value = -adv * logp;
      t.grad = -adv;
      t.clipped_low = t.clipped_high = false;
      return t;
    case objective::kl_cov:  // the unclipped ratio; policy_terms adds the penalty of the selected tokens
    case objective::gmpo:    // r: the sequence's clipped geometric-mean ratio (policy_terms)
      t.value = -adv * r;
      t.grad = -adv * dr;
      t.clipped_low = t.clipped_high = false;
      return t;
    case objective::cispo: {
      const double w = clipped_ratio(cfg, r);  // detached
      t.value = -w * adv * logp;
      t.grad = -w * adv;
      return t;
    }
    case objective::sapo: {
      const double tau = adv > 0 ? cfg.tau_pos : cfg.tau_neg;
      const double sig = 1.0 / (1.0 + Ops::exp(-tau * (r - 1.0)));
      t.value = -sig * (4.0 / tau) * adv;
      // sig (1 - sig) dr -> 0 as r -> inf (no log-ratio clamp): exactly 0 once 1 - sig rounds to 0,
      // not 0 * inf
      const double tail = 1.0 - sig;
      t.grad = tail == 0.0 ? 0.0 : -adv * 4.0 * sig * tail * dr;
      t.clipped_low = t.clipped_high = false;
      return t;
    }
    case objective::ppo_clip:
    case objective::gspo:
    default: {
      const bool delta_on = cfg.delta > 0 && r > cfg.delta;
      const double r1 = delta_on ? cfg.delta : r;
      const double dr1 = delta_on ? 0.0 : dr;
      const bool inside = r >= lo && r <= hi;
      const double l1 = -adv * r1;
      const double l2 = -adv * (inside ? r : (r < lo ? lo : hi));
      if (l1 >= l2) {
        t.value = l1;
        t.grad = -adv * dr1;
      } else {
        t.value = l2;
        t.grad = inside ? -adv * dr : 0.0;
      }
      if (cfg.dual_clip > 1.0 && adv < 0) {
        const double l3 = -adv * cfg.dual_clip;
        if (t.value > l3) {
          t.value = l3;
          t.grad = 0.0;
          t.clipped_dual = true;
        }
      }
      return t;
    }
  }
}

}  // namespace grpokit::math
