#pragma once
// grpokit::span: a non-owning view (pointer + element count) usable on host and device.
// An empty span means "input absent" for the optional per-token inputs.
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "detail/macros.hpp"

namespace grpokit {

template <class T>
class span {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;

  constexpr span() = default;
  GRPOKIT_HD constexpr span(T* data, std::int64_t size) : data_(data), size_(data ? size : 0) {}
  // From a std::vector (host only), with const conversion.
  template <class U, class A,
            class = std::enable_if_t<std::is_convertible<U (*)[], T (*)[]>::value>>
  span(std::vector<U, A>& v) : data_(v.data()), size_(static_cast<std::int64_t>(v.size())) {}
  template <class U, class A,
            class = std::enable_if_t<std::is_convertible<const U (*)[], T (*)[]>::value>>
  span(const std::vector<U, A>& v) : data_(v.data()), size_(static_cast<std::int64_t>(v.size())) {}
  // span<U> -> span<const U>
  template <class U, class = std::enable_if_t<std::is_convertible<U (*)[], T (*)[]>::value &&
                                              !std::is_same<U, T>::value>>
  GRPOKIT_HD constexpr span(span<U> other) : data_(other.data()), size_(other.size()) {}

  GRPOKIT_HD constexpr T* data() const { return data_; }
  GRPOKIT_HD constexpr std::int64_t size() const { return size_; }
  GRPOKIT_HD constexpr bool empty() const { return size_ == 0; }
  GRPOKIT_HD constexpr T& operator[](std::int64_t i) const { return data_[i]; }
  GRPOKIT_HD constexpr T* begin() const { return data_; }
  GRPOKIT_HD constexpr T* end() const { return data_ + size_; }
  GRPOKIT_HD constexpr span subspan(std::int64_t offset, std::int64_t count) const {
    return span(data_ + offset, count);
  }

 private:
  T* data_ = nullptr;
  std::int64_t size_ = 0;
};

}  // namespace grpokit
