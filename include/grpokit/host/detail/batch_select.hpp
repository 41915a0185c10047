#pragma once
// The host schedule of detail/select.hpp: the local keys are collected once, then every round
// counts them into the round's bins and `sum_over_ranks` adds the bins of every rank (the
// identity in one process).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../../detail/select.hpp"

namespace grpokit::detail {

// `for_each_key(s, add)`: the keys of sequence s; `run` is planned (its n and ranks) and is
// returned with every round done.
template <class Keys, class Sum>
select_run host_select(select_run run, std::int64_t S, Keys&& for_each_key, Sum&& sum_over_ranks) {
  std::vector<select_key> keys;
  for (std::int64_t s = 0; s < S; ++s) for_each_key(s, [&](const select_key& k) { keys.push_back(k); });
  std::vector<long long> hist(select_hist_size);
  for (int round = 0; round < run.rounds; ++round) {
    std::fill(hist.begin(), hist.end(), 0);
    for (const select_key& k : keys)
      select_count(run, k, [&](int i, unsigned long long amount) {
        hist[static_cast<std::size_t>(i)] += static_cast<long long>(amount);
      });
    sum_over_ranks(hist);
    select_step(run, hist.data());
  }
  return run;
}

}  // namespace grpokit::detail
