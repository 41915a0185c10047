#pragma once
// The NCCL communicator (device buffers, stream-ordered): all_gather is ncclAllGather of bytes on
// the communicator's stream and never synchronises the host. Including this header needs <nccl.h>;
// nothing else in grpokit does. Its all_gather takes device pointers: it models the device
// communicator concept (device/detail/collectives.cuh: ordered on the stream given) and, on its own
// stream(), the host concept's signature on device memory.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstddef>

#include "../communicator.hpp"
#include "../error.hpp"

namespace grpokit {

class nccl_communicator {
 public:
  nccl_communicator(ncclComm_t comm, cudaStream_t stream) : comm_(comm), stream_(stream) {
    check(ncclCommUserRank(comm_, &rank_), "ncclCommUserRank");
    check(ncclCommCount(comm_, &size_), "ncclCommCount");
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  ncclComm_t comm() const { return comm_; }
  cudaStream_t stream() const { return stream_; }

  // send and recv are device pointers; the gather is enqueued on stream() (no host synchronisation).
  void all_gather(const void* send, void* recv, std::size_t bytes) const { all_gather(send, recv, bytes, stream_); }
  void all_gather(const void* send, void* recv, std::size_t bytes, cudaStream_t stream) const {
    check(ncclAllGather(send, recv, bytes, ncclUint8, comm_, stream), "ncclAllGather");
  }

 private:
  static void check(ncclResult_t rc, const char* what) {
    if (rc != ncclSuccess) detail::fail(what, " failed: ", ncclGetErrorString(rc));
  }
  ncclComm_t comm_;
  cudaStream_t stream_;
  int rank_ = 0, size_ = 1;
};

}  // namespace grpokit
