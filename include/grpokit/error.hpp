#pragma once
// grpokit::error: every invalid argument or bad input found on the host is reported with this
// exception; the message names the argument and the offending value.
#include <sstream>
#include <stdexcept>
#include <string>

namespace grpokit {

class error : public std::runtime_error {
 public:
  explicit error(const std::string& what) : std::runtime_error("grpokit: " + what) {}
};

namespace detail {
template <class... Args>
[[noreturn]] void fail(const Args&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw error(os.str());
}
}  // namespace detail

}  // namespace grpokit

// Throws grpokit::error with the streamed message when `cond` is false.
#define GRPOKIT_REQUIRE(cond, ...)                 \
  do {                                             \
    if (!(cond)) ::grpokit::detail::fail(__VA_ARGS__); \
  } while (0)
