#pragma once
// The per-row setup and finish shared by every schedule of the logits rows (host loops, kernels,
// fused_linear_loss's chunks): 1 / temperature, the vocabulary-pruning threshold, and lse, entropy
// and the target's log-prob from the row's merged partial, computed the same way everywhere.
#include <cmath>
#include <cstdint>
#include <limits>

#include "../config.hpp"
#include "../math/online_lse.hpp"
#include "../span.hpp"
#include "macros.hpp"

namespace grpokit::detail {

// A temperature is usable when it is > 0 and it and its inverse are finite in Acc (1e-300 is 0 as
// a float; a float of 1e-39 has no finite inverse).
template <class Acc>
GRPOKIT_HD inline bool usable_temperature(Acc t) {
  return t > Acc(0) && std::isfinite(t) && std::isfinite(Acc(1) / t);
}

template <class Ops, class Real>
GRPOKIT_HD inline Real inverse_temperature(const loss_config& cfg, span<const Real> temperature, std::int64_t t) {
  const Real temp = temperature.empty() ? static_cast<Real>(cfg.temperature) : temperature[t];
  return Ops::div(Real(1), temp);
}

// The sampler's support (top_k, top_p) narrows the rows (detail/sampler_support.hpp).
GRPOKIT_HD inline bool sampler_support(const loss_config& cfg) { return cfg.top_k > 0 || cfg.top_p < 1; }
// A row's threshold under pruning and the sampler's support: the larger (both keep z >= it).
template <class Acc>
GRPOKIT_HD inline Acc joint_threshold(Acc prune, Acc support) {
  return support > prune ? support : prune;
}

// M + log(rho) with pruning, -inf without (every column kept).
template <class Ops, class Acc>
GRPOKIT_HD inline Acc prune_threshold(bool prune, Acc row_max, Acc log_rho) {
  return prune ? Ops::add(row_max, log_rho) : -std::numeric_limits<Acc>::infinity();
}

// What row t needs before its columns: z = x * inv_t, and a column is pruned when z < threshold.
template <class Acc>
struct row_setup {
  Acc inv_t;
  Acc threshold;
};
template <class Ops, class Acc>
GRPOKIT_HD inline Acc log_prune_rho(const loss_config& cfg) {
  return Ops::log(static_cast<Acc>(cfg.prune_rho));
}
// row_max: the max of the scaled row (read only when prune).
// support: the row's sampler support threshold (top_k, top_p), -inf without one.
template <class Ops, class Acc>
GRPOKIT_HD inline row_setup<Acc> setup_row(const loss_config& cfg, span<const Acc> temperature, std::int64_t t,
                                           bool prune, Acc row_max,
                                           Acc support = -std::numeric_limits<Acc>::infinity()) {
  return {inverse_temperature<Ops>(cfg, temperature, t),
          joint_threshold(prune_threshold<Ops>(prune, row_max, log_prune_rho<Ops, Acc>(cfg)), support)};
}
// A row's support threshold from the kernels' optional array.
template <class Acc>
GRPOKIT_HD inline Acc support_at(const Acc* support, std::int64_t r) {
  return support != nullptr ? support[r] : -std::numeric_limits<Acc>::infinity();
}

template <class Acc>
struct row_result {
  Acc lse, entropy, logp;
};

// lse, entropy and logp of a row from its merged partial and the target's scaled logit. A pruned
// target has logp = -inf (policy_loss masks it).
template <class Ops, class Acc>
GRPOKIT_HD inline row_result<Acc> finish_row(const math::lse_partial<Acc>& total, Acc z_target, Acc threshold) {
  const auto stats = math::finalize<Ops>(total);
  const Acc logp = z_target < threshold ? -std::numeric_limits<Acc>::infinity() : Ops::sub(z_target, stats.lse);
  return {stats.lse, stats.entropy, logp};
}

}  // namespace grpokit::detail
