#pragma once
// The host schedule of one logits row: the tile/lane order of math/online_lse.hpp executed by a
// loop (the lanes of a tile are independent, so the compiler can vectorise them).
#include <cmath>
#include <cstdint>
#include <limits>

#include "../detail/row_params.hpp"
#include "../math/online_lse.hpp"
#include "../math/storage.hpp"

namespace grpokit::host::detail {

template <class Acc>
struct row_forward_result {
  Acc lse, entropy, logp;
  bool finite;  // every logit of the row is finite
};

// Max of the temperature-scaled row; `finite` is cleared by a non-finite logit.
template <class Acc, class S>
Acc scaled_row_max(const S* x, std::int64_t begin, std::int64_t end, Acc inv_t, bool& finite) {
  Acc m = -std::numeric_limits<Acc>::infinity();
  for (std::int64_t j = begin; j < end; ++j) {
    const Acc v = math::load<Acc>(x[j]);
    finite = finite && std::isfinite(v);
    const Acc z = v * inv_t;
    m = z > m ? z : m;
  }
  return m;
}

template <class Ops, std::int64_t Tile, std::int64_t Lanes, std::int64_t Width, class Acc, class S>
row_forward_result<Acc> forward_row(const S* x, std::int64_t vocab, std::int64_t target, Acc inv_t, bool prune,
                                    Acc log_rho) {
  bool finite = true;
  Acc row_max = 0;
  if (prune) row_max = scaled_row_max<Acc>(x, 0, vocab, inv_t, finite);
  const Acc threshold = grpokit::detail::prune_threshold<Ops>(prune, row_max, log_rho);
  math::lse_partial<Acc> total;
  for (std::int64_t begin = 0; begin < vocab; begin += Tile) {
    const std::int64_t end = begin + Tile < vocab ? begin + Tile : vocab;
    math::lse_partial<Acc> lanes[Lanes];
    for (std::int64_t block = 0; begin + block * Width < end; ++block) {
      math::lse_partial<Acc>& lane = lanes[block % Lanes];
      const std::int64_t first = begin + block * Width;
      const std::int64_t last = first + Width < end ? first + Width : end;
      for (std::int64_t j = first; j < last; ++j) {
        const Acc v = math::load<Acc>(x[j]);
        finite = finite && std::isfinite(v);
        const Acc z = Ops::mul(v, inv_t);
        if (z >= threshold) math::push<Ops>(lane, z);
      }
    }
    math::lane_tree<Ops>(lanes, Lanes);
    total = math::merge<Ops>(total, lanes[0]);
  }
  const auto stats = math::finalize<Ops>(total);
  const Acc z_target = Ops::mul(math::load<Acc>(x[target]), inv_t);
  const bool target_pruned = z_target < threshold;
  const Acc logp = target_pruned ? -std::numeric_limits<Acc>::infinity() : Ops::sub(z_target, stats.lse);
  return {stats.lse, stats.entropy, logp, finite};
}

// dlogits of one row; rows with no gradient are written as +0 without computing.
template <class Ops, class Acc, class S, class Out>
void backward_row(const S* x, Out* dx, std::int64_t vocab, std::int64_t target, Acc inv_t, bool prune, Acc log_rho,
                  Acc lse, Acc entropy, Acc g_logp, Acc g_entropy) {
  if (g_logp == Acc(0) && g_entropy == Acc(0)) {
    for (std::int64_t j = 0; j < vocab; ++j) dx[j] = math::store<Out>(Acc(0));
    return;
  }
  bool finite = true;
  const Acc row_max = prune ? scaled_row_max<Acc>(x, 0, vocab, inv_t, finite) : Acc(0);
  const Acc threshold = grpokit::detail::prune_threshold<Ops>(prune, row_max, log_rho);
  for (std::int64_t j = 0; j < vocab; ++j) {
    const Acc z = Ops::mul(math::load<Acc>(x[j]), inv_t);
    dx[j] = math::store<Out>(math::dlogit<Ops>(z, j == target, z < threshold, lse, entropy, g_logp, g_entropy, inv_t));
  }
}

}  // namespace grpokit::host::detail
