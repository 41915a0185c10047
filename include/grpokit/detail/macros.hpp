#pragma once
// Portability macros shared by the host loops and the CUDA kernels.

#if defined(__CUDACC__)
#define GRPOKIT_HD __host__ __device__
#define GRPOKIT_DEVICE_COMPILE 1
#else
#define GRPOKIT_HD
#endif

#if defined(__CUDA_ARCH__)
#define GRPOKIT_ON_DEVICE 1
#endif

#define GRPOKIT_FORCEINLINE inline
