#pragma once
// The gradient noise scale of a GRPO batch (McCandlish et al. 2018, arXiv 1812.06162; its GRPO form:
// Critical Batch Size for LLM Policy Optimization, OpenReview uK4kMpNx0W): from squared gradient
// norms, unbiased estimates of |G|^2, tr Sigma_inter (the spread of the prompts' mean gradients) and
// tr Sigma_intra (the spread of the rollouts of one prompt), and the critical batch sizes
//   B_crit (prompts of K rollouts) = (tr Sigma_inter + tr Sigma_intra / K) / |G|^2
//   N_crit (rollouts)              = K B_crit = (K tr Sigma_inter + tr Sigma_intra) / |G|^2
// with separate bias-corrected EMAs of numerators and denominators (as GPT-NeoX and nanoGNS do), and
// the two-batch-size form for callers who only have a micro-batch and a batch norm. Header-only host
// math; the norms come from the caller (docs/gradient_noise.md says how).
#include <cmath>
#include <cstdint>

#include "../detail/validate.hpp"
#include "../span.hpp"

namespace grpokit {

// One step's unbiased estimates (each may be negative on a noisy step: they are differences).
struct noise_components {
  double grad_sq = 0;   // |G|^2, the squared norm of the true gradient
  double tr_inter = 0;  // tr Sigma_inter: covariance of the prompts' mean gradients m(x)
  double tr_intra = 0;  // tr Sigma_intra: E_x covariance of the rollouts' gradients given the prompt
  double trace = 0;     // two-batch form: tr Sigma of one example (inter and intra not separated)
};

// The critical batch sizes of an estimate (NaN where |G|^2 <= 0).
struct noise_scale {
  noise_components mean;   // the (EMA) components the sizes come from
  double b_simple = 0;     // two-batch form: tr Sigma / |G|^2, in examples
  double b_crit = 0;       // (tr_inter + tr_intra / K) / |G|^2, in prompts of K rollouts
  double n_crit = 0;       // K b_crit, in rollouts
  std::int64_t steps = 0;  // steps averaged
};

namespace host {

// From one step's norms of B groups (group g: rollouts [group_offsets[g], group_offsets[g + 1])):
//   rollout_sq[i]  = |g_i|^2, the squared norm of rollout i's own gradient,
//   group_mean_sq[g] = |mean of its rollouts' g_i|^2,
//   batch_mean_sq  = |mean over the groups of the group means|^2 (every prompt weighs the same;
//                    with equal groups, the mean over all rollouts).
// Per group (n_g >= 2): tr Sigma_intra,g = (mean_i |g_i|^2 - |gbar_g|^2) n_g / (n_g - 1), unbiased;
// tr Sigma_intra is their mean. Over groups (B >= 2), with Q = mean_g |gbar_g|^2 and P = |gbar|^2:
// E Q = |G|^2 + tr_inter + mean_g(tr_intra,g / n_g), E P = |G|^2 + (tr_inter + mean_g(tr_intra,g / n_g)) / B,
// so |G|^2 = (B P - Q) / (B - 1) and tr_inter = (Q - P) B / (B - 1) - mean_g(tr_intra,g / n_g).
inline noise_components estimate_noise(span<const double> rollout_sq, span<const std::int64_t> group_offsets,
                                       span<const double> group_mean_sq, double batch_mean_sq) {
  const std::int64_t B = group_offsets.size() - 1;
  GRPOKIT_REQUIRE(B >= 2, "estimate_noise: needs at least 2 groups, got ", B);
  GRPOKIT_REQUIRE(group_mean_sq.size() == B, "estimate_noise: group_mean_sq needs ", B, " values, got ",
                  group_mean_sq.size());
  detail::require_offsets("group_offsets", group_offsets, rollout_sq.size(), /*allow_empty_segments=*/false);
  detail::require_finite("rollout_sq", rollout_sq);
  detail::require_finite("group_mean_sq", group_mean_sq);
  GRPOKIT_REQUIRE(std::isfinite(batch_mean_sq), "estimate_noise: batch_mean_sq is not finite");
  double intra_sum = 0, intra_over_n = 0, q = 0;
  std::int64_t intra_groups = 0;
  for (std::int64_t g = 0; g < B; ++g) {
    const std::int64_t lo = group_offsets[g], n = group_offsets[g + 1] - lo;
    q += group_mean_sq[g];
    if (n < 2) continue;  // one rollout says nothing of the spread within its prompt
    double mean_sq = 0;
    for (std::int64_t i = lo; i < lo + n; ++i) mean_sq += rollout_sq[i];
    mean_sq /= static_cast<double>(n);
    const double intra = (mean_sq - group_mean_sq[g]) * static_cast<double>(n) / static_cast<double>(n - 1);
    intra_sum += intra;
    intra_over_n += intra / static_cast<double>(n);
    ++intra_groups;
  }
  GRPOKIT_REQUIRE(intra_groups > 0, "estimate_noise: every group has one rollout: the intra-prompt spread is unknown");
  noise_components c;
  const double b = static_cast<double>(B);
  q /= b;
  c.tr_intra = intra_sum / static_cast<double>(intra_groups);
  // a singleton group's term is tr_intra / 1, with the pooled estimate
  const double mean_intra_over_n = (intra_over_n + c.tr_intra * static_cast<double>(B - intra_groups)) / b;
  c.grad_sq = (b * batch_mean_sq - q) / (b - 1);
  c.tr_inter = (q - batch_mean_sq) * b / (b - 1) - mean_intra_over_n;
  c.trace = c.tr_inter + c.tr_intra;
  return c;
}

// The two-batch-size form (McCandlish et al. appendix A): |g_small|^2 of a batch of b_small
// examples and |g_big|^2 of b_big > b_small examples (e.g. one rank's gradient and the all-reduced
// one): E|g_B|^2 = |G|^2 + tr Sigma / B gives both.
inline noise_components two_batch_noise(double small_sq, double b_small, double big_sq, double b_big) {
  GRPOKIT_REQUIRE(b_small > 0 && b_big > b_small, "two_batch_noise: needs 0 < b_small < b_big, got ", b_small, " and ",
                  b_big);
  GRPOKIT_REQUIRE(std::isfinite(small_sq) && std::isfinite(big_sq), "two_batch_noise: a norm is not finite");
  noise_components c;
  c.grad_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small);
  c.trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big);
  return c;
}

// Bias-corrected exponential moving averages of each component (averaged separately: the ratio of
// averages, not the average of noisy ratios), and the critical batch sizes from them. A step with a
// non-finite component is skipped.
class gradient_noise_ema {
 public:
  explicit gradient_noise_ema(double beta = 0.99) : beta_(beta) {
    GRPOKIT_REQUIRE(beta >= 0 && beta < 1, "gradient_noise_ema: beta must be in [0, 1), got ", beta);
  }
  void update(const noise_components& c) {
    if (!std::isfinite(c.grad_sq) || !std::isfinite(c.tr_inter) || !std::isfinite(c.tr_intra) ||
        !std::isfinite(c.trace))
      return;
    auto mix = [&](double& acc, double x) { acc = beta_ * acc + (1 - beta_) * x; };
    mix(acc_.grad_sq, c.grad_sq);
    mix(acc_.tr_inter, c.tr_inter);
    mix(acc_.tr_intra, c.tr_intra);
    mix(acc_.trace, c.trace);
    weight_ = beta_ * weight_ + (1 - beta_);  // 1 - beta^t: the bias correction
    ++steps_;
  }
  // The averages and the sizes for groups of K rollouts.
  noise_scale estimate(double K) const {
    GRPOKIT_REQUIRE(K >= 1, "gradient_noise_ema::estimate: K must be >= 1, got ", K);
    noise_scale s;
    s.steps = steps_;
    if (steps_ == 0) return s;
    s.mean.grad_sq = acc_.grad_sq / weight_;
    s.mean.tr_inter = acc_.tr_inter / weight_;
    s.mean.tr_intra = acc_.tr_intra / weight_;
    s.mean.trace = acc_.trace / weight_;
    const double g2 = s.mean.grad_sq > 0 ? s.mean.grad_sq : NAN;
    s.b_simple = s.mean.trace / g2;
    s.b_crit = (s.mean.tr_inter + s.mean.tr_intra / K) / g2;
    s.n_crit = K * s.b_crit;
    return s;
  }

 private:
  double beta_;
  noise_components acc_;
  double weight_ = 0;
  std::int64_t steps_ = 0;
};

}  // namespace host
}  // namespace grpokit
