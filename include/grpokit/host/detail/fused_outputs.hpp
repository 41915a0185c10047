#pragma once
// The optional logp / entropy outputs of fused_loss and fused_linear_loss, copied from the scratch.
#include <algorithm>
#include <vector>

#include "../../inputs.hpp"

namespace grpokit::detail {
// Copies the computed logp / entropy to the caller's optional outputs.
template <class Real>
void copy_extra(const fused_outputs<Real>& extra, const std::vector<Real>& logp, const std::vector<Real>& entropy) {
  std::copy(logp.begin(), logp.begin() + extra.logp.size(), extra.logp.begin());
  std::copy(entropy.begin(), entropy.begin() + extra.entropy.size(), extra.entropy.begin());
}
}  // namespace grpokit::detail
