// A kernel, cudaMemsetAsync, the kernel again, ... on a created stream: in stream order every value
// ends at 1. On GPGPU-Sim 4.2 the memsets of a created stream run when they are called, before the
// kernels queued ahead of them: the values end at the number of kernels. grpokit therefore zeroes
// buffers that kernels reuse within one call with a kernel (the radix select's histogram,
// device/detail/launch_policy.cuh), not a memset. CTest expects the bug (tests/CMakeLists.txt):
// when this starts printing 0, the simulator is fixed.
#include <cstdio>
#include <cuda_runtime.h>

__global__ void add_one(long long* x, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] += 1;
}

int main() {
  constexpr int n = 512;
  long long* x = nullptr;
  cudaStream_t stream;
  if (cudaMalloc(&x, n * sizeof(long long)) != cudaSuccess || cudaStreamCreate(&stream) != cudaSuccess) return 2;
  cudaMemsetAsync(x, 0, n * sizeof(long long), stream);
  for (int round = 0; round < 8; ++round) {
    add_one<<<1, 128, 0, stream>>>(x, n);
    cudaMemsetAsync(x, 0, n * sizeof(long long), stream);
  }
  add_one<<<1, 128, 0, stream>>>(x, n);
  static long long host[n];
  cudaMemcpyAsync(host, x, sizeof host, cudaMemcpyDeviceToHost, stream);
  if (cudaDeviceSynchronize() != cudaSuccess) return 2;
  int wrong = 0;
  for (int i = 0; i < n; ++i) wrong += host[i] != 1;
  std::printf("%d of %d values not zeroed in stream order\n", wrong, n);
  cudaStreamDestroy(stream);
  cudaFree(x);
  return 0;
}
