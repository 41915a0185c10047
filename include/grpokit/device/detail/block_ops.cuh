#pragma once
// detail/group_ops.hpp's reductions on one block of Threads threads (every thread calls each one,
// with the same arguments; each returns the same value to every thread): thread j takes the items
// j, j + Threads, ..., in order, and CUB's BlockReduce combines the threads' values in a fixed
// order, so a result is deterministic run to run (it differs from the serial order in the last
// bits). kth_smallest is a radix selection, exact (an order statistic has one value whatever
// finds it). The methods are __host__ __device__ only so that the shared math
// (GRPOKIT_HD templates) may name them; they run on the device alone.
#include <cstdint>
#include <cub/block/block_reduce.cuh>

#include "../../detail/macros.hpp"

namespace grpokit::detail {

// A double's bits as an unsigned key in the same order (-0 and +0 equal: both +0's key).
__device__ inline std::uint64_t order_key(double x) {
  const std::uint64_t bits = static_cast<std::uint64_t>(__double_as_longlong(x == 0 ? 0.0 : x));
  return (bits >> 63) != 0 ? ~bits : bits | (std::uint64_t{1} << 63);
}
__device__ inline double from_order_key(std::uint64_t key) {
  const std::uint64_t bits = (key >> 63) != 0 ? key & ~(std::uint64_t{1} << 63) : ~key;
  return __longlong_as_double(static_cast<long long>(bits));
}

template <int Threads>
struct block_ops {
  using reduce_double = cub::BlockReduce<double, Threads>;
  using reduce_index = cub::BlockReduce<std::int64_t, Threads>;
  static constexpr int radix_bits = 8, buckets = 1 << radix_bits;
  struct storage {
    union {
      typename reduce_double::TempStorage as_double;
      typename reduce_index::TempStorage as_index;
    } reduce;
    unsigned histogram[buckets];
    double value;
    std::int64_t index;
    std::uint64_t prefix;
  };
  storage* s;

  template <class F>
  GRPOKIT_HD double sum(std::int64_t n, F f) const {
#ifdef __CUDA_ARCH__
    double local = 0;
    for (std::int64_t i = threadIdx.x; i < n; i += Threads) local += f(i);
    return broadcast(reduce_double(s->reduce.as_double).Sum(local));
#else
    return (void)n, (void)f, 0.0;
#endif
  }
  template <class F>
  GRPOKIT_HD double max(std::int64_t n, double init, F f) const {
#ifdef __CUDA_ARCH__
    double local = init;
    for (std::int64_t i = threadIdx.x; i < n; i += Threads) local = f(i) > local ? f(i) : local;
    return broadcast(reduce_double(s->reduce.as_double).Reduce(local, [](double a, double b) { return b > a ? b : a; }));
#else
    return (void)n, (void)f, init;
#endif
  }
  template <class F>
  GRPOKIT_HD std::int64_t first(std::int64_t n, F pred) const {
#ifdef __CUDA_ARCH__
    std::int64_t local = n;
    for (std::int64_t i = threadIdx.x; i < n && local == n; i += Threads)
      if (pred(i)) local = i;
    const std::int64_t found =
        reduce_index(s->reduce.as_index).Reduce(local, [](std::int64_t a, std::int64_t b) { return b < a ? b : a; });
    if (threadIdx.x == 0) s->index = found;
    __syncthreads();
    const std::int64_t out = s->index;
    __syncthreads();
    return out;
#else
    return (void)pred, n;
#endif
  }
  // f(i) for every i, then a barrier: what f wrote is visible to the next step
  template <class F>
  GRPOKIT_HD void for_each(std::int64_t n, F f) const {
#ifdef __CUDA_ARCH__
    for (std::int64_t i = threadIdx.x; i < n; i += Threads) f(i);
    __syncthreads();
#else
    (void)n, (void)f;
#endif
  }
  // The k-th smallest (0 <= k < n) by radix selection, most significant byte first: each pass
  // counts the candidates' next byte and keeps the bucket that holds the k-th. 8 passes over x; no
  // scratch.
  GRPOKIT_HD double kth_smallest(const double* x, std::int64_t n, std::int64_t k, double*) const {
#ifdef __CUDA_ARCH__
    if (threadIdx.x == 0) s->prefix = 0;
    std::uint64_t mask = 0;
    for (int shift = 64 - radix_bits; shift >= 0; shift -= radix_bits) {
      for (int b = threadIdx.x; b < buckets; b += Threads) s->histogram[b] = 0;
      __syncthreads();
      const std::uint64_t prefix = s->prefix;
      for (std::int64_t i = threadIdx.x; i < n; i += Threads) {
        const std::uint64_t key = order_key(x[i]);
        if ((key & mask) == prefix) atomicAdd(&s->histogram[(key >> shift) & (buckets - 1)], 1u);
      }
      __syncthreads();
      if (threadIdx.x == 0) {  // thread 0 alone tracks the rank k among the candidates
        int b = 0;
        while (b < buckets - 1 && k >= static_cast<std::int64_t>(s->histogram[b])) k -= s->histogram[b++];
        s->prefix = prefix | (static_cast<std::uint64_t>(b) << shift);
      }
      __syncthreads();
      mask |= static_cast<std::uint64_t>(buckets - 1) << shift;
    }
    const double out = from_order_key(s->prefix);
    __syncthreads();  // before a later call resets the prefix
    return out;
#else
    return (void)x, (void)n, (void)k, 0.0;
#endif
  }

 private:
  __device__ double broadcast(double v) const {
    if (threadIdx.x == 0) s->value = v;
    __syncthreads();
    const double out = s->value;
    __syncthreads();
    return out;
  }
};

}  // namespace grpokit::detail
