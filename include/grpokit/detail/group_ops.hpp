#pragma once
// The reductions that compute_advantages' math is written in (sums, maxima, the first index that
// satisfies a test, order statistics, element-wise updates), with their sequential schedule:
// `serial_ops` (the host loop, and a device thread per small group). A device block runs the same
// math with device/detail/block_ops.cuh (a block per large group, the batch statistics). The
// baselines (baseline.hpp) and advantage_terms.hpp take either.
#include <algorithm>
#include <cstdint>

#include "macros.hpp"

namespace grpokit::detail {

GRPOKIT_HD inline void sift_down(double* a, std::int64_t root, std::int64_t n) {
  for (;;) {
    std::int64_t child = 2 * root + 1;
    if (child >= n) return;
    if (child + 1 < n && a[child] < a[child + 1]) ++child;
    if (!(a[root] < a[child])) return;
    const double t = a[root];
    a[root] = a[child];
    a[child] = t;
    root = child;
  }
}

// The k-th smallest of x[0, n) (0-based, 0 <= k < n) by heap selection in `scratch` [n]:
// O(n + (n - k) log n).
GRPOKIT_HD inline double kth_smallest_by_heap(const double* x, std::int64_t n, std::int64_t k, double* scratch) {
  for (std::int64_t i = 0; i < n; ++i) scratch[i] = x[i];
  for (std::int64_t i = n / 2 - 1; i >= 0; --i) sift_down(scratch, i, n);
  for (std::int64_t end = n - 1; end > k; --end) {
    const double t = scratch[0];
    scratch[0] = scratch[end];
    scratch[end] = t;
    sift_down(scratch, 0, end);
  }
  return scratch[0];
}

// The lower median, the ((n - 1) / 2)-th smallest.
GRPOKIT_HD inline double lower_median(const double* x, std::int64_t n, double* scratch) {
  return kth_smallest_by_heap(x, n, (n - 1) / 2, scratch);
}

// One thread in a fixed order, on the host and on a device thread. The two agree bit for bit where
// no multiply-add (nvcc contracts it into an FMA) and no libm function (exp, log) is involved.
struct serial_ops {
  // four running sums (item i into sum i mod 4), then (s0 + s1) + (s2 + s3): four independent
  // chains of additions instead of one, about four times the speed of a single running sum
  template <class F>
  GRPOKIT_HD double sum(std::int64_t n, F f) const {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    std::int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      s0 += f(i);
      s1 += f(i + 1);
      s2 += f(i + 2);
      s3 += f(i + 3);
    }
    if (i < n) s0 += f(i);
    if (i + 1 < n) s1 += f(i + 1);
    if (i + 2 < n) s2 += f(i + 2);
    return (s0 + s1) + (s2 + s3);
  }
  // max(init, f(0), ..., f(n - 1)); a NaN f(i) is skipped. Four running maxima, as in sum.
  template <class F>
  GRPOKIT_HD double max(std::int64_t n, double init, F f) const {
    double m0 = init, m1 = init, m2 = init, m3 = init;
    std::int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      m0 = larger(m0, f(i));
      m1 = larger(m1, f(i + 1));
      m2 = larger(m2, f(i + 2));
      m3 = larger(m3, f(i + 3));
    }
    if (i < n) m0 = larger(m0, f(i));
    if (i + 1 < n) m1 = larger(m1, f(i + 1));
    if (i + 2 < n) m2 = larger(m2, f(i + 2));
    return larger(larger(m0, m1), larger(m2, m3));
  }
  // the smallest i in [0, n) with pred(i), else n
  template <class F>
  GRPOKIT_HD std::int64_t first(std::int64_t n, F pred) const {
    for (std::int64_t i = 0; i < n; ++i)
      if (pred(i)) return i;
    return n;
  }
  template <class F>
  GRPOKIT_HD void for_each(std::int64_t n, F f) const {
    for (std::int64_t i = 0; i < n; ++i) f(i);
  }
  // heap selection on a device thread; introselect (std::nth_element, O(n) on average) on the
  // host: the same order statistic
  GRPOKIT_HD double kth_smallest(const double* x, std::int64_t n, std::int64_t k, double* scratch) const {
#ifdef __CUDA_ARCH__
    return kth_smallest_by_heap(x, n, k, scratch);
#else
    std::copy(x, x + n, scratch);
    std::nth_element(scratch, scratch + k, scratch + n);
    return scratch[k];
#endif
  }

 private:
  GRPOKIT_HD static double larger(double m, double v) { return v > m ? v : m; }
};

}  // namespace grpokit::detail
