#pragma once
// Per-row parameters shared by the host loops and the kernels: 1 / temperature and the
// vocabulary-pruning threshold, computed the same way everywhere.
#include <cstdint>
#include <limits>

#include "../config.hpp"
#include "../span.hpp"
#include "macros.hpp"

namespace grpokit::detail {

template <class Ops, class Real>
GRPOKIT_HD inline Real inverse_temperature(const loss_config& cfg, span<const Real> temperature, std::int64_t t) {
  const Real temp = temperature.empty() ? static_cast<Real>(cfg.temperature) : temperature[t];
  return Ops::div(Real(1), temp);
}

// M + log(rho) with pruning, -inf without (every column kept).
template <class Ops, class Acc>
GRPOKIT_HD inline Acc prune_threshold(bool prune, Acc row_max, Acc log_rho) {
  return prune ? Ops::add(row_max, log_rho) : -std::numeric_limits<Acc>::infinity();
}

}  // namespace grpokit::detail
