#pragma once
// The O(T) / O(S) scratch of the host entry points, allocated after validation: an allocation that
// fails (a huge but consistent shape) is a grpokit::error naming the entry point, not a
// std::bad_alloc or std::length_error.
#include <cstdint>
#include <exception>
#include <vector>

#include "../../error.hpp"

namespace grpokit::detail {

template <class T>
std::vector<T> scratch(std::int64_t n, const char* entry_point) {
  try {
    return std::vector<T>(static_cast<std::size_t>(n));
  } catch (const std::exception&) {
    detail::fail(entry_point, ": cannot allocate scratch of ", n, " elements of ", sizeof(T), " bytes");
  }
}

}  // namespace grpokit::detail
