#pragma once
// The host schedule of one logits row. batch_invariant (and any non-float accumulator): the
// tile/lane order of math/online_lse.hpp executed by a loop. fast and deterministic with float
// accumulation: a two-pass schedule the compiler vectorises (see vectorised_rows below).
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../detail/row_params.hpp"
#include "../math/exp_branchless.hpp"
#include "../math/online_lse.hpp"
#include "../math/ops.hpp"
#include "../math/storage.hpp"
#include "detail/simd_rows.hpp"

namespace grpokit::detail {

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

// The row's result from its merged partial (detail::finish_row). `finite` also requires a finite
// lse: the scaled row overflowed otherwise (a finite logit times 1 / temperature at +inf, or every
// column at -inf).
template <class Ops, class Acc, class S>
row_forward_result<Acc> finished(const math::lse_partial<Acc>& total, const S* x, std::int64_t target, Acc inv_t,
                                 Acc threshold, bool finite) {
  const auto r = detail::finish_row<Ops>(total, Ops::mul(math::load<Acc>(x[target]), inv_t), threshold);
  return {r.lse, r.entropy, r.logp, finite && std::isfinite(r.lse)};
}

// The tiles of columns [0, n) of a row (or of a vocabulary slice that starts on a tile boundary of
// the full row, whose tiles are then the row's): each tile's partial goes to `sink` in tile order.
template <class Ops, std::int64_t Tile, std::int64_t Lanes, std::int64_t Width, class Acc, class S, class Sink>
void for_each_tile(const S* x, std::int64_t n, Acc inv_t, Acc threshold, bool& finite, Sink&& sink) {
  for (std::int64_t begin = 0; begin < n; begin += Tile) {
    const std::int64_t end = begin + Tile < n ? begin + Tile : n;
    math::lse_partial<Acc> lanes[Lanes];
    for (std::int64_t block = 0; begin + block * Width < end; ++block) {
      math::lse_partial<Acc>& lane = lanes[block % Lanes];
      const std::int64_t first = begin + block * Width;
      const std::int64_t last = first + Width < end ? first + Width : end;
      for (std::int64_t j = first; j < last; ++j) {
        const Acc v = math::load<Acc>(x[j]);
        finite = finite && std::isfinite(v);
        const Acc z = Ops::mul(v, inv_t);
        if (!(z < threshold)) math::push<Ops>(lane, z);  // not `z >= threshold`: a NaN must not be skipped
      }
    }
    math::lane_tree<Ops>(lanes, Lanes);
    sink(lanes[0]);
  }
}

// The tiles of columns [0, n) merged left to right.
template <class Ops, std::int64_t Tile, std::int64_t Lanes, std::int64_t Width, class Acc, class S>
math::lse_partial<Acc> online_partial(const S* x, std::int64_t n, Acc inv_t, Acc threshold, bool& finite) {
  math::lse_partial<Acc> total;
  for_each_tile<Ops, Tile, Lanes, Width>(x, n, inv_t, threshold, finite,
                                         [&](const math::lse_partial<Acc>& p) { total = math::merge<Ops>(total, p); });
  return total;
}

// `support`: the sampler's support threshold of the row (sampler_threshold), -inf without one.
template <class Ops, std::int64_t Tile, std::int64_t Lanes, std::int64_t Width, class Acc, class S>
row_forward_result<Acc> forward_row_online(const S* x, std::int64_t vocab, std::int64_t target, Acc inv_t, bool prune,
                                           Acc log_rho, Acc support = -std::numeric_limits<Acc>::infinity()) {
  bool finite = true;
  Acc row_max = 0;
  if (prune) row_max = scaled_row_max<Acc>(x, 0, vocab, inv_t, finite);
  const Acc threshold = detail::joint_threshold(detail::prune_threshold<Ops>(prune, row_max, log_rho), support);
  const auto total = online_partial<Ops, Tile, Lanes, Width>(x, vocab, inv_t, threshold, finite);
  return finished<Ops>(total, x, target, inv_t, threshold, finite);
}

// fast and deterministic leave the order inside a row free, and the online `push` branches on
// every element, which keeps the compiler from vectorising it. With float accumulation the host
// therefore makes two passes: the row max, then the sums of e^(z - max) and e^(z - max) (z - max)
// in sixteen independent lanes added in a fixed order (the same bits run to run). The passes run
// the SIMD kernels of the active target (detail/simd_rows.hpp: AVX-512 or AVX2 with an FMA exp,
// chosen at run time) where there is one, else the portable loops below, which the compiler
// vectorises for the flags it is given (math::exp_branchless; the row max on integer order keys; no
// float comparison or conditional float operation: under -ftrapping-math either would stop the
// vectorisation).
template <class Ops, class Acc>
constexpr bool vectorised_rows = (std::is_same<Ops, math::platform_ops>::value) && (std::is_same<Acc, float>::value);
constexpr std::int64_t simd_lanes = 16;

// Max of the temperature-scaled row (the max of the values times inv_t > 0: rounding is monotone),
// compared as order keys; clears `finite` on NaN / Inf.
template <class S>
float scaled_row_max_vectorised(const S* x, std::int64_t vocab, float inv_t, bool& finite) {
  float simd_max = 0.f;
  bool simd_bad = false;
  if (with_simd_rows<S>([&](auto rows) { simd_max = rows.max(x, vocab, simd_bad); })) {
    finite = finite && !simd_bad;
    return math::platform_ops::mul(simd_max, inv_t);
  }
  std::int32_t m[simd_lanes];
  std::uint32_t bad[simd_lanes];
  for (std::int64_t l = 0; l < simd_lanes; ++l) {
    m[l] = math::order_key(-std::numeric_limits<float>::infinity());
    bad[l] = 0;
  }
  auto visit = [&](std::int64_t l, std::int64_t j) {
    const float v = math::load<float>(x[j]);
    const std::int32_t k = math::order_key(v);
    m[l] = k > m[l] ? k : m[l];
    bad[l] |= !math::is_finite_bits(v);
  };
  std::int64_t j = 0;
  for (; j + simd_lanes <= vocab; j += simd_lanes)
    for (std::int64_t l = 0; l < simd_lanes; ++l) visit(l, j + l);
  for (; j < vocab; ++j) visit(0, j);
  for (std::int64_t l = 1; l < simd_lanes; ++l) {
    m[0] = m[l] > m[0] ? m[l] : m[0];
    bad[0] |= bad[l];
  }
  finite = finite && bad[0] == 0;
  return math::platform_ops::mul(math::from_order_key(m[0]), inv_t);
}

// Order key below which a scaled value z is pruned (INT32_MIN: nothing is, threshold -inf). A
// column is pruned when z < threshold; order keys put -0 below +0, so a zero threshold keeps both
// zeros explicitly.
inline std::int32_t prune_key(float threshold) {
  if (threshold == -std::numeric_limits<float>::infinity()) return std::numeric_limits<std::int32_t>::min();
  return threshold == 0.f ? math::order_key(-0.f) : math::order_key(threshold);
}

// e^arg for a column with scaled value z, or 0 when the column is pruned (no branch: see above).
inline float exp_unless_pruned(float z, float arg, std::int32_t keep_from) {
  return math::select_bits(math::bit_mask(math::order_key(z) >= keep_from), math::exp_branchless(arg), 0.f);
}

// p * x, or exactly 0 when p == 0 (p >= 0: its bits are 0): a column at -inf gives 0, not 0 * inf.
inline float times_unless_zero(float p, float x) {
  return math::select_bits(math::bit_mask(detail::bit_cast<std::uint32_t>(p) == 0u), 0.f, p * x);
}

// Columns per lane summed on their own before they join the lane's total: a two-level sum, so that a
// lane of a 150k-column row does not add ~10k terms one after another in float.
constexpr std::int64_t simd_block = 64;

// The partial {offset, s, u} of the finite columns [0, n) with the offset `offset` (>= every kept z:
// the row max) and the pruning threshold `threshold` (-inf: none), in the fixed lane order of the
// vectorised schedule.
template <class S>
math::lse_partial<float> vectorised_partial(const S* x, std::int64_t n, float inv_t, float offset, float threshold) {
  using Ops = math::platform_ops;
  math::lse_partial<float> simd_total;
  if (with_simd_rows<S>([&](auto rows) { simd_total = rows.partial(x, n, inv_t, offset, threshold); }))
    return simd_total;
  const std::int32_t keep_from = prune_key(threshold);
  float sl[simd_lanes] = {}, ul[simd_lanes] = {};  // lane totals
  float bs[simd_lanes] = {}, bu[simd_lanes] = {};  // lane sums of the current block
  auto visit = [&](std::int64_t l, std::int64_t j) {
    const float z = Ops::mul(math::load<float>(x[j]), inv_t);
    const float t = Ops::sub(z, offset);
    const float e = exp_unless_pruned(z, t, keep_from);
    bs[l] = Ops::add(bs[l], e);
    bu[l] = Ops::add(bu[l], times_unless_zero(e, t));
  };
  auto close_block = [&] {
    for (std::int64_t l = 0; l < simd_lanes; ++l) {
      sl[l] = Ops::add(sl[l], bs[l]);
      ul[l] = Ops::add(ul[l], bu[l]);
      bs[l] = bu[l] = 0.f;
    }
  };
  std::int64_t j = 0;
  do {
    const std::int64_t block_end = j + simd_block * simd_lanes < n ? j + simd_block * simd_lanes : n;
    for (; j + simd_lanes <= block_end; j += simd_lanes)
      for (std::int64_t l = 0; l < simd_lanes; ++l) visit(l, j + l);
    if (block_end == n)
      for (; j < n; ++j) visit(0, j);  // the columns after the last full lane group, in the last block
    close_block();
  } while (j < n);
  math::lse_partial<float> total{offset, 0.f, 0.f};
  for (std::int64_t l = 0; l < simd_lanes; ++l) {
    total.s = Ops::add(total.s, sl[l]);
    total.u = Ops::add(total.u, ul[l]);
  }
  return total;
}

template <std::int64_t Tile, std::int64_t Lanes, std::int64_t Width, class S>
row_forward_result<float> forward_row_vectorised(const S* x, std::int64_t vocab, std::int64_t target, float inv_t,
                                                 bool prune, float log_rho, float support) {
  using Ops = math::platform_ops;
  constexpr float none = -std::numeric_limits<float>::infinity();
  bool finite = true;
  if (!prune && support == none) {  // one read of the row where a SIMD target runs
    math::lse_partial<float> total;
    bool bad = false;
    if (with_simd_rows<S>([&](auto rows) { total = rows.online(x, vocab, inv_t, bad); }) && !bad)
      return finished<Ops>(total, x, target, inv_t, none, finite);
  }
  const float row_max = scaled_row_max_vectorised(x, vocab, inv_t, finite);
  if (!finite)  // a NaN / Inf row (an error under check_finite): propagate as the online definition does
    return forward_row_online<Ops, Tile, Lanes, Width, float>(x, vocab, target, inv_t, prune, log_rho, support);
  const float threshold = detail::joint_threshold(detail::prune_threshold<Ops>(prune, row_max, log_rho), support);
  const auto total = vectorised_partial(x, vocab, inv_t, row_max, threshold);
  return finished<Ops>(total, x, target, inv_t, threshold, finite);
}

template <class Ops, std::int64_t Tile, std::int64_t Lanes, std::int64_t Width, class Acc, class S>
row_forward_result<Acc> forward_row(const S* x, std::int64_t vocab, std::int64_t target, Acc inv_t, bool prune,
                                    Acc log_rho, Acc support = -std::numeric_limits<Acc>::infinity()) {
  if constexpr (vectorised_rows<Ops, Acc>)
    return forward_row_vectorised<Tile, Lanes, Width>(x, vocab, target, inv_t, prune, log_rho, support);
  else
    return forward_row_online<Ops, Tile, Lanes, Width, Acc>(x, vocab, target, inv_t, prune, log_rho, support);
}

// The scaled row max that defines the pruning threshold: the vectorised order-key scan where it
// applies and the row is finite (the same value), the online scan otherwise. `finite` is cleared by
// a NaN / Inf logit.
template <class Ops, class Acc, class S>
Acc pruning_row_max(const S* x, std::int64_t n, Acc inv_t, bool& finite) {
  if constexpr (vectorised_rows<Ops, Acc>) {
    bool ok = true;
    const float m = scaled_row_max_vectorised(x, n, inv_t, ok);
    if (ok) return m;
    finite = false;
  }
  return scaled_row_max<Acc>(x, 0, n, inv_t, finite);
}

// Rows of dlogits at least this long are written with non-temporal stores by the SIMD targets.
constexpr std::int64_t stream_row_bytes = 32 * 1024;

// dlogits of columns [0, n) of a row (or of a vocabulary slice) given the row's lse, entropy,
// gradients and pruning threshold; `target` is the sampled column in [0, n), or -1 when the slice
// does not hold it. With `vectorise` (see vectorised_rows) the loop writes the softmax part of every
// column with no condition and the target's column is then rewritten with its full math::dlogit.
// Returns whether the logits are finite.
template <class Ops, class Acc, class S, class Out>
bool backward_columns(const S* x, Out* dx, std::int64_t n, std::int64_t target, Acc inv_t, Acc threshold, Acc lse,
                      Acc entropy, Acc g_logp, Acc g_entropy, bool vectorise) {
  if constexpr (vectorised_rows<Ops, Acc>) {
    if (vectorise) {
      // read before dx (maybe x itself) is written
      const float z_target = target >= 0 ? Ops::mul(math::load<float>(x[target]), inv_t) : 0.f;
      std::uint32_t bad = 0;
      bool simd = false;
      // the kernels take any pair of SIMD storage types (fp32 chunk logits, bf16 dlogits)
      if constexpr (simd_storage<Out>)
        simd = with_simd_rows<S>([&](auto rows) {
          // non-temporal stores for rows of a real vocabulary, which leave the cache anyway
          const bool stream = n * static_cast<std::int64_t>(sizeof(Out)) >= stream_row_bytes;
          bad = rows.softmax_dlogits(x, dx, n, inv_t, threshold, lse, entropy, g_logp, g_entropy, stream);
        });
      if (!simd) {
        const std::int32_t keep_from = prune_key(threshold);
        for (std::int64_t j = 0; j < n; ++j) {
          const float v = math::load<float>(x[j]);
          bad |= !math::is_finite_bits(v);
          const float z = Ops::mul(v, inv_t);
          const float log_p = Ops::sub(z, lse);
          const float p = exp_unless_pruned(z, log_p, keep_from);
          const float part = math::select_bits(math::bit_mask(detail::bit_cast<std::uint32_t>(p) == 0u), 0.f,
                                               math::dlogit_softmax_part<Ops>(p, log_p, entropy, g_logp, g_entropy));
          dx[j] = math::store<Out>(Ops::mul(part, inv_t));
        }
      }
      if (target >= 0)
        dx[target] = math::store<Out>(
            math::dlogit<Ops>(z_target, true, z_target < threshold, lse, entropy, g_logp, g_entropy, inv_t));
      return bad == 0;
    }
  }
  bool finite = true;
  for (std::int64_t j = 0; j < n; ++j) {
    const Acc v = math::load<Acc>(x[j]);
    finite = finite && std::isfinite(v);
    const Acc z = Ops::mul(v, inv_t);
    dx[j] = math::store<Out>(math::dlogit<Ops>(z, j == target, z < threshold, lse, entropy, g_logp, g_entropy, inv_t));
  }
  return finite;
}

// A row that receives no gradient is written as +0 without reading the logits.
template <class Acc, class Out>
bool zero_gradient_row(Out* dx, std::int64_t n, Acc g_logp, Acc g_entropy) {
  if (g_logp != Acc(0) || g_entropy != Acc(0)) return false;
  for (std::int64_t j = 0; j < n; ++j) dx[j] = math::store<Out>(Acc(0));
  return true;
}

// dlogits of one row. Returns whether the logits it read are finite (true for a row with no
// gradient). A pruned row with a NaN / Inf takes the online loop: its vectorised max is not the
// online definition's.
template <class Ops, class Acc, class S, class Out>
bool backward_row(const S* x, Out* dx, std::int64_t vocab, std::int64_t target, Acc inv_t, bool prune, Acc log_rho,
                  Acc lse, Acc entropy, Acc g_logp, Acc g_entropy,
                  Acc support = -std::numeric_limits<Acc>::infinity()) {
  if (zero_gradient_row(dx, vocab, g_logp, g_entropy)) return true;
  bool finite = true;
  const Acc row_max = prune ? pruning_row_max<Ops, Acc>(x, vocab, inv_t, finite) : Acc(0);
  const Acc threshold = detail::joint_threshold(detail::prune_threshold<Ops>(prune, row_max, log_rho), support);
  const bool columns_finite = backward_columns<Ops, Acc>(x, dx, vocab, target, inv_t, threshold, lse, entropy, g_logp,
                                                         g_entropy, finite || !prune);
  return finite && columns_finite;
}

}  // namespace grpokit::detail
