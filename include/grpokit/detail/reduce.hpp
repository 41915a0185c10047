#pragma once
// Fixed-order reductions: the orders that the deterministic and batch-invariant results are
// defined by (a device schedule reproduces them exactly).
#include <cstdint>
#include <vector>

#include "macros.hpp"

namespace grpokit::detail {

// Sum of f(0..n-1) in double: item j goes to lane j % 32, sequentially, then the lanes are
// combined by a pairwise tree (a warp's shuffle-down reduction).
template <class F>
GRPOKIT_HD inline double lane_sum(std::int64_t n, F&& f) {
  constexpr int lanes = 32;
  double acc[lanes] = {};
  for (std::int64_t j = 0; j < n; ++j) acc[j % lanes] += f(j);
  for (int w = lanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

// In-place pairwise tree over items[0..n): stride 1, 2, 4, ...; the result lands in items[0].
template <class T, class Combine>
void tree_reduce(std::vector<T>& items, Combine&& combine) {
  const std::size_t n = items.size();
  for (std::size_t stride = 1; stride < n; stride *= 2)
    for (std::size_t i = 0; i + stride < n; i += 2 * stride) items[i] = combine(items[i], items[i + stride]);
}

}  // namespace grpokit::detail
