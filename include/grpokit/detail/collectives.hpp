#pragma once
// Typed collectives over a communicator's all_gather (host buffers), and the collective form of a
// check: a bad input on one rank must stop every rank, not leave the others waiting in the next
// collective.
#include <cstdint>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#include "../communicator.hpp"
#include "../error.hpp"
#include "../span.hpp"

namespace grpokit::detail {

// The n items of every rank, in rank order (size() * n items).
template <class T, class C>
std::vector<T> gather_array(const C& comm, const T* mine, std::int64_t n) {
  static_assert(check_communicator<C>());  // a host communicator (a device one goes to the device entry points)
  static_assert(std::is_trivially_copyable<T>::value, "gathered items are copied as bytes");
  std::vector<T> all(static_cast<std::size_t>(comm.size()) * static_cast<std::size_t>(n));
  comm.all_gather(mine, all.data(), static_cast<std::size_t>(n) * sizeof(T));
  return all;
}

template <class T, class C>
std::vector<T> gather_value(const C& comm, const T& mine) {
  return gather_array(comm, &mine, 1);
}

// Items of a varying count per rank, concatenated in rank order; `first` (optional) receives the
// index of each rank's first item, with the total at the end.
template <class T, class C>
std::vector<T> gather_varying(const C& comm, const T* mine, std::int64_t n,
                              std::vector<std::int64_t>* first = nullptr) {
  const auto counts = gather_value(comm, n);
  std::int64_t most = 0;
  std::vector<std::int64_t> begin(counts.size() + 1, 0);
  for (std::size_t r = 0; r < counts.size(); ++r) {
    most = counts[r] > most ? counts[r] : most;
    begin[r + 1] = begin[r] + counts[r];
  }
  std::vector<T> padded(static_cast<std::size_t>(most));
  for (std::int64_t i = 0; i < n; ++i) padded[static_cast<std::size_t>(i)] = mine[i];
  const auto all = gather_array(comm, padded.data(), most);
  std::vector<T> out(static_cast<std::size_t>(begin.back()));
  for (std::size_t r = 0; r < counts.size(); ++r)
    for (std::int64_t i = 0; i < counts[r]; ++i)
      out[static_cast<std::size_t>(begin[r] + i)] =
          all[r * static_cast<std::size_t>(most) + static_cast<std::size_t>(i)];
  if (first != nullptr) *first = std::move(begin);
  return out;
}

// FNV-1a of the bytes of a span's values and of its length: what every rank must agree on.
template <class T>
std::uint64_t values_fingerprint(span<const T> values) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::int64_t i = 0; i < values.size(); ++i) {
    const T v = values[i];
    const unsigned char* b = reinterpret_cast<const unsigned char*>(&v);
    for (std::size_t k = 0; k < sizeof(T); ++k) h = (h ^ b[k]) * 1099511628211ull;
  }
  return h ^ static_cast<std::uint64_t>(values.size());
}

// Sum of one integer per rank (exact).
template <class C>
std::int64_t sum_over_ranks(const C& comm, std::int64_t mine) {
  std::int64_t total = 0;
  for (const std::int64_t v : gather_value(comm, mine)) total += v;
  return total;
}

// Runs `step` on every rank of the layout and then agrees on the outcome: a rank whose step threw
// rethrows its own error, every other rank throws an error naming the failed ranks' communicator.
// Every rank returns normally only when every step passed, so that a bad input on one rank never
// leaves the others waiting in a later collective. `step` may itself use the TP communicator
// provided that it completes its collectives on every TP rank before it throws.
template <class DP, class TP, class F>
void collective_check(const parallel_layout<DP, TP>& layout, const char* entry_point, F&& step) {
  static_assert(check_communicator<DP>() && check_communicator<TP>());  // every host entry point comes here
  std::exception_ptr mine;
  try {
    step();
  } catch (const error&) {
    mine = std::current_exception();
  } catch (const std::exception& e) {  // e.g. std::bad_alloc: still agreed on, as a grpokit::error
    mine = std::make_exception_ptr(error(std::string(entry_point) + ": " + e.what()));
  }
  auto any_of = [](const std::vector<std::uint8_t>& flags) {
    std::int64_t first = -1;
    for (std::size_t r = 0; r < flags.size() && first < 0; ++r)
      if (flags[r]) first = static_cast<std::int64_t>(r);
    return first;
  };
  const std::int64_t tp_failed = any_of(gather_value(layout.tp, static_cast<std::uint8_t>(mine != nullptr)));
  const std::int64_t dp_failed = any_of(gather_value(layout.dp, static_cast<std::uint8_t>(tp_failed >= 0)));
  if (mine) std::rethrow_exception(mine);
  if (tp_failed >= 0)
    fail(entry_point, ": vocabulary-parallel rank ", tp_failed, " rejected its input (see that rank's error)");
  if (dp_failed >= 0)
    fail(entry_point, ": data-parallel rank ", dp_failed, " rejected its input (see that rank's error)");
}

}  // namespace grpokit::detail
