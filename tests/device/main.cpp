// Device test runner: exits with 77 (CTest SKIP_RETURN_CODE) and says why when no GPU is present.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_runtime.h>

#include "../catch_session.hpp"

int main(int argc, char** argv) {
  const char* size = std::getenv("GRPOKIT_DEVICE_TEST_SIZE");  // device_support::small_sizes()
  if (size != nullptr && std::strcmp(size, "small") != 0 && std::strcmp(size, "full") != 0) {
    std::fprintf(stderr, "GRPOKIT_DEVICE_TEST_SIZE must be small or full, got '%s'\n", size);
    return 2;
  }
  bool listing = false;  // listing the test cases needs no GPU
  for (int i = 1; i < argc; ++i) listing = listing || std::strncmp(argv[i], "--list", 6) == 0;
  int devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&devices);
  if (!listing && (err != cudaSuccess || devices == 0)) {
    std::printf("SKIPPED: no CUDA device available (%s); the device tests need a GPU\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return 77;
  }
  return run_catch_session(argc, argv);
}
