#pragma once
// A communicator built from plain callables, so that torch.distributed (all_gather_into_tensor on
// a CPU group), a gloo context or any other runtime can plug in without grpokit knowing it.
#include <cstddef>
#include <functional>
#include <utility>

#include "../communicator.hpp"
#include "../error.hpp"

namespace grpokit {

struct callable_communicator {
  using gather_fn = std::function<void(const void* send, void* recv, std::size_t bytes)>;

  callable_communicator(int rank, int size, gather_fn gather) : rank_(rank), size_(size), gather_(std::move(gather)) {
    GRPOKIT_REQUIRE(size >= 1 && rank >= 0 && rank < size, "callable_communicator: rank ", rank,
                    " is not in [0, size = ", size, ")");
    GRPOKIT_REQUIRE(static_cast<bool>(gather_), "callable_communicator: the all_gather callable is empty");
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  void all_gather(const void* send, void* recv, std::size_t bytes) const { gather_(send, recv, bytes); }

 private:
  int rank_, size_;
  gather_fn gather_;
};

}  // namespace grpokit
