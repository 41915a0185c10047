#pragma once
// sum_v p_v^2 of one logits row (the collision probability of the token distribution; the input of
// the optimal-token baseline), given the row's lse: the optional `sum_p2` output of fused_loss and
// fused_linear_loss. One order for every schedule: column j goes to lane j % sum_p2_lanes, a lane
// adds p_j^2 in increasing j, and the lanes are added by the pairwise tree l += l + w,
// w = lanes / 2, ..., 1. The host runs the lanes in a loop, the device one thread per lane, so they
// agree bit for bit where their exp does (batch_invariant). p_j = exp(z_j - lse) exactly as in the
// backward's dlogit; a pruned column (z_j < threshold) has p_j = 0.
#include <cstdint>

#include "../math/storage.hpp"
#include "macros.hpp"

namespace grpokit::detail {

constexpr int sum_p2_lanes = 256;
static_assert((sum_p2_lanes & (sum_p2_lanes - 1)) == 0, "sum_p2_lanes: the pairwise tree needs a power of two");

// Lane `lane`'s part of sum p_j^2 over columns [0, n) of the row x (scaled by inv_t).
template <class Ops, class Acc, class S>
GRPOKIT_HD inline Acc sum_p2_lane(const S* x, std::int64_t n, int lane, Acc inv_t, Acc threshold, Acc lse) {
  Acc sum = 0;
  for (std::int64_t j = lane; j < n; j += sum_p2_lanes) {
    const Acc z = Ops::mul(math::load<Acc>(x[j]), inv_t);
    if (z < threshold) continue;  // pruned: p = 0 (a NaN is not skipped: it propagates)
    const Acc p = Ops::exp(Ops::sub(z, lse));
    sum = Ops::add(sum, Ops::mul(p, p));
  }
  return sum;
}

// One level of the lanes' pairwise tree: lanes[l] += lanes[l + w] for l < w.
template <class Ops, class Acc>
GRPOKIT_HD inline void sum_p2_level(Acc* lanes, int w, int l) {
  lanes[l] = Ops::add(lanes[l], lanes[l + w]);
}

}  // namespace grpokit::detail
