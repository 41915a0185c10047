#pragma once
// Row/sequence parallelism of the host loops: OpenMP when the translation unit is compiled with
// it, a plain loop otherwise. Bodies must not throw (inputs are validated before). Iterations are
// handed out dynamically in chunks of about an eighth of a thread's share: on shared cores a
// static split waits for its slowest thread. Every iteration computes the same bits on any thread.
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace grpokit::detail {

// The threads parallel_for may use.
inline std::int64_t worker_count() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

template <class F>
void parallel_for(std::int64_t n, F&& body) {
#if defined(_OPENMP)
  const std::int64_t threads = omp_get_max_threads();
  const std::int64_t chunk = n / (8 * threads) > 1 ? n / (8 * threads) : 1;
#pragma omp parallel for schedule(dynamic, chunk)
  for (std::int64_t i = 0; i < n; ++i) body(i);
#else
  for (std::int64_t i = 0; i < n; ++i) body(i);
#endif
}

}  // namespace grpokit::detail
