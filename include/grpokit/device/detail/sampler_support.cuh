#pragma once
// The sampler's support thresholds of the rows on the device (detail/sampler_support.hpp): a block
// of support_bins threads per row; each radix round sums the candidates' weights into a
// shared-memory histogram (integer atomics: the host's sums, in any order) and thread 0 takes the
// step. The same thresholds as the host's loops, bit for bit where exp gives the same bits.
#include <cstdint>
#include <cuda_runtime.h>

#include "../../config.hpp"
#include "../../detail/ops_for.hpp"
#include "../../detail/row_params.hpp"
#include "../../detail/sampler_support.hpp"
#include "../../inputs.hpp"
#include "../../math/storage.hpp"
#include "../../policy.hpp"
#include "../error.cuh"
#include "../workspace.cuh"

namespace grpokit::detail {

template <class P, class Ops>
__global__ void __launch_bounds__(support_bins)
    support_kernel(logits_input<storage_t<P>, accum_t<P>> in, loss_config cfg, accum_t<P>* support) {
  using Acc = accum_t<P>;
  __shared__ unsigned long long hist[support_bins];
  __shared__ alignas(support_search) unsigned char search_bytes[sizeof(support_search)];  // no initialiser
  __shared__ unsigned long long max_key, total;
  support_search& search = *reinterpret_cast<support_search*>(search_bytes);
  const std::int64_t r = blockIdx.x, n = in.logits.cols;
  const int tid = static_cast<int>(threadIdx.x);
  const auto* x = in.logits.row(r);
  const Acc inv_t = inverse_temperature<Ops>(cfg, in.temperature, r);
  auto z_of = [&](std::int64_t j) { return Ops::mul(math::load<Acc>(x[j]), inv_t); };
  // the weighted select over the columns whose key is at least `floor`, as the host's
  auto select = [&](double target, std::uint64_t floor, auto weight) {
    if (tid == 0) {
      search = support_search{};
      search.target = target;
    }
    __syncthreads();
    for (int round = 0; round < support_rounds<Acc>; ++round) {
      hist[tid] = 0;
      __syncthreads();
      const support_search s = search;
      for (std::int64_t j = tid; j < n; j += support_bins) {
        const Acc z = z_of(j);
        const std::uint64_t key = support_key(z);
        if (key >= floor && support_in_prefix(key, s)) atomicAdd(&hist[support_bin(key, s)], weight(z));
      }
      __syncthreads();
      if (tid == 0) {
        std::uint64_t h[support_bins];
        for (int b = 0; b < support_bins; ++b) h[b] = hist[b];
        support_step(search, h);
      }
      __syncthreads();
    }
    return search.prefix;
  };
  std::uint64_t floor = 0;
  Acc threshold = -INFINITY;
  if (top_k_narrows(cfg.top_k, n)) {
    floor = select(static_cast<double>(cfg.top_k), 0, [](Acc) { return 1ull; });
    threshold = from_support_key<Acc>(floor);
  }
  if (top_p_narrows(cfg.top_p, n)) {
    if (tid == 0) max_key = 0, total = 0;
    __syncthreads();
    for (std::int64_t j = tid; j < n; j += support_bins) atomicMax(&max_key, support_key(z_of(j)));
    __syncthreads();
    const Acc row_max = from_support_key<Acc>(max_key);
    for (std::int64_t j = tid; j < n; j += support_bins) {
      const Acc z = z_of(j);
      if (support_key(z) >= floor) atomicAdd(&total, static_cast<unsigned long long>(support_mass<Ops>(z, row_max)));
    }
    __syncthreads();
    const std::uint64_t key = select(cfg.top_p * static_cast<double>(total), floor, [&](Acc z) {
      return static_cast<unsigned long long>(support_mass<Ops>(z, row_max));
    });
    threshold = from_support_key<Acc>(key);
  }
  if (tid == 0) support[r] = threshold;
}

// ws.support = the support thresholds of the rows of `in` under cfg.top_k / top_p; returns them, or
// null when neither is set (the rows' kernels then take -inf).
template <class P>
const accum_t<P>* launch_support(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
                                 const layout<P>& ws, cudaStream_t stream) {
  if (!sampler_support(cfg) || in.logits.rows == 0) return nullptr;
  support_kernel<P, ops_for<P::order>>
      <<<static_cast<unsigned>(in.logits.rows), support_bins, 0, stream>>>(in, cfg, ws.support);
  GRPOKIT_CUDA_CHECK_LAUNCH();
  return ws.support;
}

}  // namespace grpokit::detail
