// Force-included (nvcc -include) into every program built for the simulated GPU (cmake/gpusim.cmake);
// never part of a user's build.
//
// GPGPU-Sim 4.2's cudaStreamSynchronize returns at once for a created stream: in
// libcuda/cuda_runtime_api.cc, cudaStreamSynchronizeInternal reads
//   if (stream == NULL) ctx->synchronize();
//   return g_last_cudaError = cudaSuccess;
//   stream->synchronize();              // unreachable
// so work queued on the stream (a kernel, a cudaMemcpyAsync to the host) may not have run when it
// returns, against the CUDA runtime's contract ("blocks until stream has completed all operations").
// tests/device/gpusim_stream_sync.cu shows it on one kernel. Until the simulator is fixed, wait for
// the whole device as well: a stronger wait, the same results.
#pragma once
#include <cuda_runtime.h>

inline cudaError_t grpokit_gpusim_stream_synchronize(cudaStream_t stream) {
  const cudaError_t err = cudaStreamSynchronize(stream);
  return err != cudaSuccess ? err : cudaDeviceSynchronize();
}
#define cudaStreamSynchronize grpokit_gpusim_stream_synchronize

// The simulator's runtime has no stream capture or graphs (calling them ends the process with an
// undefined symbol): tests that need them skip, saying so.
#define GRPOKIT_ON_GPUSIM 1
