#pragma once
// CUDA runtime errors become grpokit::error with the call that failed.
#include <cuda_runtime.h>

#include "../error.hpp"

#define GRPOKIT_CUDA_CHECK(call)                                                                  \
  do {                                                                                           \
    const cudaError_t grpokit_err_ = (call);                                                     \
    if (grpokit_err_ != cudaSuccess)                                                             \
      ::grpokit::detail::fail("CUDA error in ", #call, ": ", cudaGetErrorString(grpokit_err_)); \
  } while (0)

// After a kernel launch: the launch configuration error, if any.
#define GRPOKIT_CUDA_CHECK_LAUNCH() GRPOKIT_CUDA_CHECK(cudaGetLastError())
