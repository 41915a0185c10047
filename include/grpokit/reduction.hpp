#pragma once
// Reduction order: which results are reproducible, and against what.
//   fast            any order, atomics allowed on the device.
//   deterministic   identical bits run to run for the same shapes; global sums by a fixed tree.
//   batch_invariant every row's logp / entropy / lse / dlogits is bitwise independent of T, S,
//                   the launch shape and chunk scheduling, and identical between the host loop and
//                   the device kernel (grpokit's own exp/log, no FMA contraction).
#include "axis.hpp"

namespace grpokit {

enum class reduction_order { fast, deterministic, batch_invariant };

namespace reduction {
struct fast {
  using policy_axis = axis::reduction;
  static constexpr reduction_order value = reduction_order::fast;
};
struct deterministic {
  using policy_axis = axis::reduction;
  static constexpr reduction_order value = reduction_order::deterministic;
};
struct batch_invariant {
  using policy_axis = axis::reduction;
  static constexpr reduction_order value = reduction_order::batch_invariant;
};
}  // namespace reduction

}  // namespace grpokit
