#pragma once
// Communicators: how grpokit talks to the other processes of a data-parallel or vocabulary-parallel
// job. A communicator is a type the caller passes (a concept, like the baseline and mask types) with
//   int rank() const;   // 0 <= rank() < size()
//   int size() const;
//   void all_gather(const void* send, void* recv, std::size_t bytes) const;
//       every rank sends `bytes` bytes of host memory; `recv` (size() * bytes) receives them in
//       rank order. Called by every rank of the communicator in the same order (a collective);
//       `bytes` may be 0 (then the pointers may be null).
// That is all grpokit asks: every sum it needs is gathered and added in rank order, never in a
// collective's own reduction order, so the results do not depend on the transport or its algorithm.
//
// Models: single_process (below), callable_communicator (comm/callable.hpp: torch.distributed or
// any runtime), mpi_communicator (comm/mpi.hpp), and for device buffers nccl_communicator
// (comm/nccl.cuh; its buffers are device memory: it is for the device path, not the host entry
// points). MPI and NCCL are needed only when their header is included.
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>

namespace grpokit {

// One process: the communicator of a job that is not split (the default of every layout).
struct single_process {
  int rank() const { return 0; }
  int size() const { return 1; }
  void all_gather(const void* send, void* recv, std::size_t bytes) const {
    if (bytes > 0 && send != recv) std::memmove(recv, send, bytes);
  }
};

namespace detail {
template <class C, class = void>
struct is_communicator : std::false_type {};
template <class C>
struct is_communicator<C, std::void_t<decltype(static_cast<int>(std::declval<const C&>().rank())),
                                      decltype(static_cast<int>(std::declval<const C&>().size())),
                                      decltype(std::declval<const C&>().all_gather(
                                          std::declval<const void*>(), std::declval<void*>(), std::size_t{}))>>
    : std::true_type {};

template <class C, class = void>
struct has_rank_and_size : std::false_type {};
template <class C>
struct has_rank_and_size<C, std::void_t<decltype(static_cast<int>(std::declval<const C&>().rank())),
                                        decltype(static_cast<int>(std::declval<const C&>().size()))>>
    : std::true_type {};

template <class C>
constexpr bool check_communicator() {
  static_assert(is_communicator<C>::value,
                "grpokit communicator: the type must declare `int rank() const`, `int size() const` and "
                "`void all_gather(const void* send, void* recv, std::size_t bytes) const` (see communicator.hpp)");
  return true;
}
}  // namespace detail

// Where this process sits in a job: `dp` joins the ranks that hold different sequences (data
// parallel), `tp` the ranks that hold different contiguous slices of the vocabulary of the same
// token rows (vocabulary parallel, Megatron's layout). TP rank r holds the columns after those of
// ranks 0..r-1: the slice offsets are gathered, not passed. docs/distributed.md.
// The host entry points take host communicators (above), the device ones device communicators
// (device/detail/collectives.cuh); each checks its kind.
template <class DP = single_process, class TP = single_process>
struct parallel_layout {
  static_assert(detail::has_rank_and_size<DP>::value && detail::has_rank_and_size<TP>::value,
                "grpokit::parallel_layout: a communicator declares `int rank() const` and `int size() const` "
                "(communicator.hpp)");
  DP dp{};
  TP tp{};
};

template <class DP>
parallel_layout<DP, single_process> data_parallel(DP dp) {
  return {std::move(dp), single_process{}};
}
template <class TP>
parallel_layout<single_process, TP> vocab_parallel(TP tp) {
  return {single_process{}, std::move(tp)};
}
template <class DP, class TP>
parallel_layout<DP, TP> data_and_vocab_parallel(DP dp, TP tp) {
  return {std::move(dp), std::move(tp)};
}

}  // namespace grpokit
