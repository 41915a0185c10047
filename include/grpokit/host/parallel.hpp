#pragma once
// Row/sequence parallelism of the host loops: OpenMP when the translation unit is compiled with
// it, a plain loop otherwise. Bodies must not throw (inputs are validated before).
#include <cstdint>

namespace grpokit::detail {

template <class F>
void parallel_for(std::int64_t n, F&& body) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) body(i);
#else
  for (std::int64_t i = 0; i < n; ++i) body(i);
#endif
}

}  // namespace grpokit::detail
