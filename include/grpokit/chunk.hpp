#pragma once
// chunk<N>: the vocabulary tile of the online log-sum-exp. Each tile is reduced by a fixed set
// of lanes and tiles are merged in index order (math/online_lse.hpp, docs/chunk.md), so N is part
// of the definition of the batch-invariant result.
#include <cstdint>

#include "axis.hpp"

namespace grpokit {

template <std::int64_t N>
struct chunk {
  static_assert(N >= 1 && (N & (N - 1)) == 0, "grpokit::chunk<N>: N must be a power of two");
  static_assert(N <= (std::int64_t{1} << 20), "grpokit::chunk<N>: N must be at most 2^20");
  using policy_axis = axis::chunk;
  static constexpr std::int64_t value = N;
};

}  // namespace grpokit
