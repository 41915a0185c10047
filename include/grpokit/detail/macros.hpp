#pragma once
// Portability macros shared by the host loops and the CUDA kernels.

#if defined(__CUDACC__)
#define GRPOKIT_HD __host__ __device__
#else
#define GRPOKIT_HD
#endif

#if defined(__CUDA_ARCH__)
#define GRPOKIT_ON_DEVICE 1  // compiling device code: the intrinsics of math/rounding.hpp
#endif
