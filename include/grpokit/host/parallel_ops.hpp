#pragma once
// detail/group_ops.hpp's reductions over a whole batch on the host's threads (the batch-level passes
// of compute_advantages): the items in fixed blocks of `block` (serial_ops within a block), the
// blocks' results combined in block order by serial_ops. A result depends on the block size only,
// not on the thread count, and a batch of at most `block` items gets serial_ops' bits. The methods
// are __host__ __device__ only so that the shared math (GRPOKIT_HD templates) may name them in a
// CUDA translation unit; a device would run serial_ops.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../detail/group_ops.hpp"
#include "../detail/macros.hpp"
#include "parallel.hpp"

namespace grpokit::detail {

struct parallel_ops {
  static constexpr std::int64_t block = std::int64_t{1} << 14;

  template <class F>
  GRPOKIT_HD double sum(std::int64_t n, F f) const {
#ifdef __CUDA_ARCH__
    return serial_ops{}.sum(n, f);
#else
    if (n <= block) return serial_ops{}.sum(n, f);
    const std::vector<double> part = per_block<double>(n, [&](std::int64_t lo, std::int64_t m) {
      return serial_ops{}.sum(m, [&](std::int64_t i) { return f(lo + i); });
    });
    return serial_ops{}.sum(static_cast<std::int64_t>(part.size()), [&](std::int64_t b) { return part[b]; });
#endif
  }
  template <class F>
  GRPOKIT_HD double max(std::int64_t n, double init, F f) const {
#ifdef __CUDA_ARCH__
    return serial_ops{}.max(n, init, f);
#else
    if (n <= block) return serial_ops{}.max(n, init, f);
    const std::vector<double> part = per_block<double>(n, [&](std::int64_t lo, std::int64_t m) {
      return serial_ops{}.max(m, init, [&](std::int64_t i) { return f(lo + i); });
    });
    return serial_ops{}.max(static_cast<std::int64_t>(part.size()), init, [&](std::int64_t b) { return part[b]; });
#endif
  }
  template <class F>
  GRPOKIT_HD std::int64_t first(std::int64_t n, F pred) const {
#ifdef __CUDA_ARCH__
    return serial_ops{}.first(n, pred);
#else
    if (n <= block) return serial_ops{}.first(n, pred);
    // each block's first hit, or n; the first block with a hit holds the answer
    const std::vector<std::int64_t> hit = per_block<std::int64_t>(n, [&](std::int64_t lo, std::int64_t m) {
      const std::int64_t i = serial_ops{}.first(m, [&](std::int64_t j) { return pred(lo + j); });
      return i < m ? lo + i : n;
    });
    for (const std::int64_t i : hit)
      if (i < n) return i;
    return n;
#endif
  }
  template <class F>
  GRPOKIT_HD void for_each(std::int64_t n, F f) const {
#ifdef __CUDA_ARCH__
    serial_ops{}.for_each(n, f);
#else
    parallel_for(n, f);
#endif
  }
  GRPOKIT_HD double kth_smallest(const double* x, std::int64_t n, std::int64_t k, double* scratch) const {
    return serial_ops{}.kth_smallest(x, n, k, scratch);
  }

 private:
  // f(lo, m) of each block [lo, lo + m), in parallel, in block order
  template <class T, class F>
  static std::vector<T> per_block(std::int64_t n, F f) {
    std::vector<T> part(static_cast<std::size_t>((n + block - 1) / block));
    parallel_for(static_cast<std::int64_t>(part.size()), [&](std::int64_t b) {
      const std::int64_t lo = b * block;
      part[static_cast<std::size_t>(b)] = f(lo, std::min(block, n - lo));
    });
    return part;
  }
};

}  // namespace grpokit::detail
