#pragma once
// The sampler's support threshold of one row on the host (detail/sampler_support.hpp): the radix
// rounds of the weighted select as loops over the row, one pass per round. The pieces below are
// per row or per slice of a row: the vocabulary-parallel rows (host/vocab_parallel.hpp) add the
// slices' integer histograms over the ranks between rounds and find the same threshold.
#include <cstdint>
#include <limits>

#include "../../config.hpp"
#include "../../detail/row_params.hpp"
#include "../../detail/sampler_support.hpp"
#include "../../math/storage.hpp"

namespace grpokit::detail {

template <class Ops, class Acc, class S>
Acc support_z(const S* x, std::int64_t j, Acc inv_t) {
  return Ops::mul(math::load<Acc>(x[j]), inv_t);
}

// The key of the largest scaled column (0, below every key, for none): the max as keys, as the
// device's atomicMax takes it, so that every schedule finds the same top-p weights' origin.
template <class Ops, class Acc, class S>
std::uint64_t support_max_key(const S* x, std::int64_t n, Acc inv_t) {
  std::uint64_t m = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    const std::uint64_t key = support_key(support_z<Ops>(x, j, inv_t));
    m = key > m ? key : m;
  }
  return m;
}

// One radix round over columns [0, n): the weights, by digit, of the columns in the search's prefix
// whose key is at least `floor` (the top-k threshold's key when top-p follows it, else 0). Weight 1
// (top-k), or e^(z - row_max) in fixed point when `by_mass` (top-p).
template <class Ops, class Acc, class S>
void support_histogram(const S* x, std::int64_t n, Acc inv_t, const support_search& s, std::uint64_t floor,
                       bool by_mass, Acc row_max, std::uint64_t* hist) {
  for (int b = 0; b < support_bins; ++b) hist[b] = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    const Acc z = support_z<Ops>(x, j, inv_t);
    const std::uint64_t key = support_key(z);
    if (key >= floor && support_in_prefix(key, s))
      hist[support_bin(key, s)] += by_mass ? support_mass<Ops>(z, row_max) : std::uint64_t{1};
  }
}

// Top-p's total weight: the columns whose key is at least `floor` (the top-k set).
template <class Ops, class Acc, class S>
std::uint64_t support_total(const S* x, std::int64_t n, Acc inv_t, std::uint64_t floor, Acc row_max) {
  std::uint64_t total = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    const Acc z = support_z<Ops>(x, j, inv_t);
    if (support_key(z) >= floor) total += support_mass<Ops>(z, row_max);
  }
  return total;
}

// The smallest scaled value z = x * inv_t in the support of top_k (0 or >= n: off) then top_p
// (>= 1: off), or -inf when both are off (every column stays).
template <class Ops, class Acc, class S>
Acc sampler_threshold(const S* x, std::int64_t n, Acc inv_t, std::int64_t top_k, double top_p) {
  std::uint64_t hist[support_bins];
  // the weighted select over the columns whose key is at least `floor` (0: every column)
  const auto select = [&](double target, std::uint64_t floor, bool by_mass, Acc row_max) {
    support_search s;
    s.target = target;
    for (int r = 0; r < support_rounds<Acc>; ++r) {
      support_histogram<Ops>(x, n, inv_t, s, floor, by_mass, row_max, hist);
      support_step(s, hist);
    }
    return s.prefix;
  };
  std::uint64_t floor = 0;
  Acc threshold = -std::numeric_limits<Acc>::infinity();
  if (top_k_narrows(top_k, n)) {
    floor = select(static_cast<double>(top_k), 0, false, Acc(0));
    threshold = from_support_key<Acc>(floor);
  }
  if (top_p_narrows(top_p, n)) {
    const Acc row_max = from_support_key<Acc>(support_max_key<Ops>(x, n, inv_t));
    const std::uint64_t total = support_total<Ops>(x, n, inv_t, floor, row_max);
    threshold = from_support_key<Acc>(select(top_p * static_cast<double>(total), floor, true, row_max));
  }
  return threshold;
}

// The support threshold of a full row under cfg.top_k / cfg.top_p, -inf when neither is set.
template <class Ops, class Acc, class S>
Acc row_support(const loss_config& cfg, const S* x, std::int64_t n, Acc inv_t) {
  return sampler_support(cfg) ? sampler_threshold<Ops, Acc>(x, n, inv_t, cfg.top_k, cfg.top_p)
                              : -std::numeric_limits<Acc>::infinity();
}

}  // namespace grpokit::detail
