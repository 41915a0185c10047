// A kernel on a created stream, its result copied back on that stream, cudaStreamSynchronize, then
// read on the host: exit 0 when every value is the kernel's. On GPGPU-Sim 4.2 this fails unless
// cmake/gpusim_workarounds.h is included (cudaStreamSynchronize does not wait for a created stream);
// CTest runs it both ways (tests/CMakeLists.txt).
#include <cstdio>
#include <cuda_runtime.h>

__global__ void fill(float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = 7.0f + static_cast<float>(i);
}

int main() {
  constexpr int n = 4096;
  static float host[n];
  for (float& v : host) v = -1;
  float* dev = nullptr;
  cudaStream_t stream;
  if (cudaMalloc(&dev, n * sizeof(float)) != cudaSuccess || cudaStreamCreate(&stream) != cudaSuccess) return 2;
  fill<<<n / 128, 128, 0, stream>>>(dev, n);
  cudaMemcpyAsync(host, dev, n * sizeof(float), cudaMemcpyDeviceToHost, stream);
  if (cudaStreamSynchronize(stream) != cudaSuccess) return 2;
  int wrong = 0;
  for (int i = 0; i < n; ++i) wrong += host[i] != 7.0f + static_cast<float>(i);
  std::printf("%d of %d values not yet written when cudaStreamSynchronize returned\n", wrong, n);
  cudaStreamDestroy(stream);
  cudaFree(dev);
  return wrong == 0 ? 0 : 1;
}
