#pragma once
// The device's sums of lm_head_norms (detail/lm_head_norms.hpp walks the chunks): the open
// sequence's V x D sum by the dweight GEMM restricted to its rows (Accum), the group's and the
// batch's in double, squared norms in a fixed order (norm_blocks partials, then one block). The
// outputs are written on the stream, to device memory.
#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

#include "../../detail/lm_head_norms.hpp"
#include "../../inputs.hpp"
#include "../error.cuh"
#include "../tuning.cuh"
#include "../workspace.cuh"

namespace grpokit::detail {

// partials[blockIdx.x] = sum of m[i]^2 over the block's grid-stride share, tree in shared memory.
template <class T>
__global__ void __launch_bounds__(device::tuning::norm_threads)
    squared_norm_partials_kernel(const T* m, std::int64_t n, double* partials) {
  constexpr int threads = device::tuning::norm_threads;
  __shared__ double part[threads];
  double acc = 0;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(threads) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * threads) {
    const double x = static_cast<double>(m[i]);
    acc += x * x;
  }
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int w = threads / 2; w >= 1; w /= 2) {
    if (static_cast<int>(threadIdx.x) < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = part[0];
}

// *out = scale * (the partials added in order).
template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(1) squared_norm_finish_kernel(const double* partials, int count, double scale,
                                                                double* out) {
  double sum = 0;
  for (int b = 0; b < count; ++b) sum += partials[b];
  *out = scale * sum;
}

// into += scale * from; from = 0
template <class T>
__global__ void __launch_bounds__(device::tuning::norm_threads)
    move_into_kernel(double* into, T* from, std::int64_t n, double scale) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    into[i] += scale * static_cast<double>(from[i]);
    from[i] = T(0);
  }
}

// Workspace of the sums: seq (V x D Acc), group and batch (V x D double), the norm partials.
template <class Acc>
std::size_t lm_head_sums_bytes(std::int64_t V, std::int64_t D) {
  return align_up(static_cast<std::size_t>(V * D) * sizeof(Acc)) +
         2 * align_up(static_cast<std::size_t>(V * D) * sizeof(double)) +
         align_up(device::tuning::norm_blocks * sizeof(double));
}

template <class S, class Acc, class Gemm>
class device_lm_head_sums {
 public:
  // base: lm_head_sums_bytes<Acc>(V, D) of workspace (used only when the norms are wanted)
  device_lm_head_sums(const Gemm& gemm, const lm_head_norms& out, const matrix_view<const S>& hidden, std::int64_t V,
                      unsigned char* base, cudaStream_t stream)
      : gemm_(gemm), out_(out), hidden_(hidden), V_(V), D_(hidden.cols), stream_(stream) {
    if (!out.wanted()) return;
    const std::size_t n = static_cast<std::size_t>(V_ * D_);
    seq_ = reinterpret_cast<Acc*>(base);
    group_ = reinterpret_cast<double*>(base + align_up(n * sizeof(Acc)));
    batch_ = group_ + align_up(n * sizeof(double)) / sizeof(double);
    partials_ = batch_ + align_up(n * sizeof(double)) / sizeof(double);
    GRPOKIT_CUDA_CHECK(cudaMemsetAsync(seq_, 0, n * sizeof(Acc), stream));
    GRPOKIT_CUDA_CHECK(cudaMemsetAsync(group_, 0, 2 * align_up(n * sizeof(double)), stream));
  }

  // The chunk's dlogits (n x V from row t0), before add_chunk.
  void set_chunk(std::int64_t t0, const S* dlogits) {
    t0_ = t0;
    dlogits_ = dlogits;
  }

  // seq^T [D, V] += hidden[a, b)^T dlogits[a, b): the dweight GEMM on the sequence's rows
  void add_rows(std::int64_t a, std::int64_t b) {
    gemm_(false, true, D_, V_, b - a, hidden_.row(a), hidden_.row_stride, dlogits_ + (a - t0_) * V_, V_, Acc(1), seq_,
          D_);
  }
  void close_sequence(std::int64_t s, double scale) {
    squared_norm(seq_, scale, out_.rollout_sq.data() + s);
    move_into(group_, seq_, 1.0);
  }
  void close_group(std::int64_t g, double scale, double to_batch) {
    squared_norm(group_, scale, out_.group_mean_sq.data() + g);
    move_into(batch_, group_, to_batch);
  }
  void close_batch() { squared_norm(batch_, 1.0, out_.batch_mean_sq); }

 private:
  template <class T>
  void squared_norm(const T* m, double scale, double* out) {
    squared_norm_partials_kernel<T>
        <<<device::tuning::norm_blocks, device::tuning::norm_threads, 0, stream_>>>(m, V_ * D_, partials_);
    GRPOKIT_CUDA_CHECK_LAUNCH();
    squared_norm_finish_kernel<<<1, 1, 0, stream_>>>(partials_, device::tuning::norm_blocks, scale, out);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  template <class T>
  void move_into(double* into, T* from, double scale) {
    move_into_kernel<T>
        <<<device::tuning::norm_blocks, device::tuning::norm_threads, 0, stream_>>>(into, from, V_ * D_, scale);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }

  const Gemm& gemm_;
  lm_head_norms out_;
  matrix_view<const S> hidden_;
  std::int64_t V_, D_;
  cudaStream_t stream_;
  std::int64_t t0_ = 0;
  const S* dlogits_ = nullptr;
  Acc* seq_ = nullptr;
  double *group_ = nullptr, *batch_ = nullptr, *partials_ = nullptr;
};

}  // namespace grpokit::detail
