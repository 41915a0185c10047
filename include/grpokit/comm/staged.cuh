#pragma once
// A device communicator over any host communicator (mpi_communicator, callable_communicator over
// gloo, ...): the device bytes are copied to the host, gathered there and copied back. It
// synchronises `stream` twice per gather: for MPI without CUDA support, tests, and several ranks on
// one GPU (NCCL refuses two ranks on a device; CUDA runs several processes on one). The device
// entry points gather a few small arrays per call (docs/distributed.md), so the copies are cheap;
// the synchronisations are what it costs.
#include <cuda_runtime.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "../communicator.hpp"
#include "../device/error.cuh"

namespace grpokit {

template <class HostComm>
class staged_communicator {
  static_assert(detail::check_communicator<HostComm>());

 public:
  explicit staged_communicator(HostComm host) : host_(std::move(host)) {}
  int rank() const { return host_.rank(); }
  int size() const { return host_.size(); }
  const HostComm& host() const { return host_; }

  void all_gather(const void* send, void* recv, std::size_t bytes, cudaStream_t stream) const {
    const std::size_t all = bytes * static_cast<std::size_t>(size());
    send_.resize(bytes);
    recv_.resize(all);
    if (bytes > 0) GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(send_.data(), send, bytes, cudaMemcpyDeviceToHost, stream));
    GRPOKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
    host_.all_gather(send_.data(), recv_.data(), bytes);
    if (all > 0) GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(recv, recv_.data(), all, cudaMemcpyHostToDevice, stream));
    GRPOKIT_CUDA_CHECK(cudaStreamSynchronize(stream));  // recv_ is reused by the next gather
  }

 private:
  HostComm host_;
  mutable std::vector<unsigned char> send_, recv_;
};

}  // namespace grpokit
