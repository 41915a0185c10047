// The NCCL communicator on real GPUs: one process opens a communicator over min(GPUs, 4) devices
// (ncclCommInitAll: one rank per GPU, NCCL refuses two ranks on one device) and gathers a
// rank-stamped array through nccl_communicator on each rank's stream, with no host
// synchronisation inside the gather; the result must be every rank's array in rank order. Exit 77
// (skipped) without a GPU.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <vector>

#include <grpokit/comm/nccl.cuh>

#define CHECK_CUDA(x)                                                                              \
  do {                                                                                             \
    const cudaError_t e = (x);                                                                     \
    if (e != cudaSuccess) {                                                                        \
      std::printf("%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e));               \
      return 1;                                                                                    \
    }                                                                                              \
  } while (0)

static_assert(grpokit::detail::is_communicator<grpokit::nccl_communicator>::value,
              "nccl_communicator models the communicator concept (on device buffers)");

int main() {
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus == 0) {
    std::printf("test_nccl: no GPU, skipped\n");
    return 77;
  }
  const int ranks = gpus < 4 ? gpus : 4;
  std::vector<int> devices(ranks);
  for (int r = 0; r < ranks; ++r) devices[r] = r;
  std::vector<ncclComm_t> comms(ranks);
  if (ncclCommInitAll(comms.data(), ranks, devices.data()) != ncclSuccess) {
    std::printf("test_nccl: ncclCommInitAll failed\n");
    return 1;
  }
  constexpr int n = 37;  // doubles per rank
  std::vector<cudaStream_t> streams(ranks);
  std::vector<double*> send(ranks), recv(ranks);
  std::vector<grpokit::nccl_communicator> comm;
  for (int r = 0; r < ranks; ++r) {
    CHECK_CUDA(cudaSetDevice(r));
    CHECK_CUDA(cudaStreamCreate(&streams[r]));
    CHECK_CUDA(cudaMalloc(&send[r], n * sizeof(double)));
    CHECK_CUDA(cudaMalloc(&recv[r], ranks * n * sizeof(double)));
    std::vector<double> mine(n);
    for (int i = 0; i < n; ++i) mine[i] = 1000.0 * r + i;
    CHECK_CUDA(cudaMemcpy(send[r], mine.data(), n * sizeof(double), cudaMemcpyHostToDevice));
    comm.emplace_back(comms[r], streams[r]);
    if (comm.back().rank() != r || comm.back().size() != ranks) {
      std::printf("test_nccl: rank %d of %d reported as %d of %d\n", r, ranks, comm.back().rank(), comm.back().size());
      return 1;
    }
  }
  ncclGroupStart();  // one process drives every rank
  for (int r = 0; r < ranks; ++r) comm[r].all_gather(send[r], recv[r], n * sizeof(double));
  ncclGroupEnd();
  int bad = 0;
  for (int r = 0; r < ranks; ++r) {
    CHECK_CUDA(cudaSetDevice(r));
    CHECK_CUDA(cudaStreamSynchronize(streams[r]));
    std::vector<double> all(static_cast<std::size_t>(ranks) * n);
    CHECK_CUDA(cudaMemcpy(all.data(), recv[r], all.size() * sizeof(double), cudaMemcpyDeviceToHost));
    for (int q = 0; q < ranks; ++q)
      for (int i = 0; i < n; ++i) bad += all[static_cast<std::size_t>(q) * n + i] != 1000.0 * q + i;
    cudaFree(send[r]);
    cudaFree(recv[r]);
    cudaStreamDestroy(streams[r]);
    ncclCommDestroy(comms[r]);
  }
  std::printf("test_nccl: %d rank(s), %d wrong values\n", ranks, bad);
  return bad == 0 ? 0 : 1;
}
