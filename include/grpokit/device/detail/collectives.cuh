#pragma once
// The device communicator concept and its one collective (device/distributed.cuh). A device
// communicator is the host concept (communicator.hpp) with device buffers, ordered on a stream:
//   int rank() const;  int size() const;
//   void all_gather(const void* send, void* recv, std::size_t bytes, cudaStream_t stream) const;
//       `send` (bytes) and `recv` (size() * bytes, rank order) are device memory; the gather is
//       ordered on `stream` after the work queued before it, and the work queued after it sees recv.
// Models: nccl_communicator (comm/nccl.cuh: no host synchronisation), staged_communicator
// (comm/staged.cuh: any host communicator, through host copies), and single_process (a copy).
#include <cstddef>
#include <cuda_runtime.h>
#include <type_traits>
#include <utility>

#include "../../communicator.hpp"
#include "../error.cuh"
#include "../status.cuh"

namespace grpokit::detail {

template <class C, class = void>
struct has_device_all_gather : std::false_type {};
template <class C>
struct has_device_all_gather<C, std::void_t<decltype(std::declval<const C&>().all_gather(
                                    std::declval<const void*>(), std::declval<void*>(), std::size_t{},
                                    std::declval<cudaStream_t>()))>> : std::true_type {};
template <class C>
struct is_device_communicator
    : std::integral_constant<bool, has_rank_and_size<C>::value && has_device_all_gather<C>::value> {};
template <>
struct is_device_communicator<single_process> : std::true_type {};

template <class C>
constexpr bool check_device_communicator() {
  static_assert(is_device_communicator<C>::value,
                "grpokit device communicator: the type must declare `int rank() const`, `int size() const` and "
                "`void all_gather(const void* send, void* recv, std::size_t bytes, cudaStream_t stream) const` on "
                "device buffers (see device/detail/collectives.cuh; nccl_communicator, staged_communicator)");
  return true;
}

// The gather of `bytes` device bytes of every rank into recv (rank order), ordered on `stream`.
template <class C>
void device_all_gather(const C& comm, const void* send, void* recv, std::size_t bytes, cudaStream_t stream) {
  if constexpr (std::is_same<C, single_process>::value) {
    if (bytes > 0 && send != recv) GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(recv, send, bytes, cudaMemcpyDeviceToDevice, stream));
  } else {
    comm.all_gather(send, recv, bytes, stream);
  }
}

// Four values into a gather's send buffer (sizes and flags, from the host without a copy).
template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(1) pack4_kernel(long long a, long long b, long long c, long long d, long long* out) {
  out[0] = a;
  out[1] = b;
  out[2] = c;
  out[3] = d;
}

// The first other rank of a communicator that rejected its input (flags[4 r + 3], gathered with its
// sizes) or raised a status flag of its own (`all`: every rank's status), into this rank's status.
// A rejected rank took part with placeholders, so this rank's own flags are consequences of it:
// they are dropped, and the rejected rank is what this rank reports.
static_assert(sizeof(device::status) == 6 * sizeof(unsigned long long),
              "merge_status_kernel reads every status field: add a new one there");
template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(1) merge_status_kernel(const long long* flags, const device::status* all,
                                                         int ranks, int me, device::status* st) {
  constexpr unsigned long long none = status_none;
  for (int r = 0; r < ranks; ++r) {
    if (r != me && flags[4 * r + 3] != 0) {
      *st = device::status{none, none, none, none, none, static_cast<unsigned long long>(r) + 1ull};
      return;
    }
  }
  for (int r = 0; r < ranks; ++r) {
    if (r != me && raised(all[r])) {
      st->other_rank = static_cast<unsigned long long>(r) + 1ull;
      return;
    }
  }
}

}  // namespace grpokit::detail
