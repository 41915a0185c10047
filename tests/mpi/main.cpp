// Catch2 under MPI: every rank runs every test case in the same order (the collectives pair up);
// the exit code is the worst of the ranks'. With GRPOKIT_MPI_DEVICE_TEST (the device tests under
// MPI) every rank exits with 77 (skipped), saying so, when any rank sees no device.
#include <mpi.h>

#include <cstdio>

#include "../catch_session.hpp"

#ifdef GRPOKIT_MPI_DEVICE_TEST
#include <cuda_runtime.h>
#endif

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
#ifdef GRPOKIT_MPI_DEVICE_TEST
  int devices = 0;
  const int mine = cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0 ? 1 : 0;
  int all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (all == 0) {
    std::printf("no GPU (nor the simulated GPU) on some rank: skipped\n");
    MPI_Finalize();
    return 77;
  }
#endif
  int rc = run_catch_session(argc, argv);
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
