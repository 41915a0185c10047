#pragma once
// The online log-sum-exp of one logits row, defined tile by tile so that any schedule (host loop,
// block per row, split row) that follows the definition gets the same bits:
//   * tile c covers columns [c N, min(V, (c+1) N)) (N = chunk size);
//   * inside a tile, the columns are cut into blocks of W (the 16-byte vector width of the storage
//     type) and block b goes to lane b % L (L = chunk_lanes); a lane takes its columns in increasing
//     order with `push` (online: rescale when a new max arrives); pruned columns are skipped;
//   * the L lane partials are combined by the pairwise tree p_l = merge(p_l, p_{l+w}),
//     w = L/2, ..., 1 (a block reduction);
//   * tiles are merged left to right with `merge`.
// Then lse = m + log s and entropy = log s - u / s for the merged partial (m, s, u).
#include <cmath>
#include <cstdint>
#include <limits>

#include "../detail/macros.hpp"

namespace grpokit::math {

template <class Acc>
struct lse_partial {
  Acc m = -std::numeric_limits<Acc>::infinity();  // offset
  Acc s = 0;                                        // sum exp(z - m)
  Acc u = 0;                                        // sum exp(z - m) (z - m)
};

// e (u + d s): the entropy sum u of a partial moved to a new offset (d = old - new offset, e = exp(d)).
// A partial whose weight e underflows to 0 contributes exactly 0, also when d is -inf (finite
// logits of both signs near FLT_MAX, whose difference overflows): never 0 * inf.
template <class Ops, class Acc>
GRPOKIT_HD inline Acc rescaled_u(Acc e, Acc u, Acc d, Acc s) {
  return e == Acc(0) ? Acc(0) : Ops::mul(e, Ops::add(u, Ops::mul(d, s)));
}

// Merges two partials; symmetric in its arguments bit for bit (IEEE + and * commute).
template <class Ops, class Acc>
GRPOKIT_HD inline lse_partial<Acc> merge(const lse_partial<Acc>& a, const lse_partial<Acc>& b) {
  if (a.s == Acc(0)) return b;
  if (b.s == Acc(0)) return a;
  const Acc m = a.m > b.m ? a.m : b.m;
  const Acc da = Ops::sub(a.m, m);
  const Acc db = Ops::sub(b.m, m);
  const Acc ea = Ops::exp(da);
  const Acc eb = Ops::exp(db);
  lse_partial<Acc> r;
  r.m = m;
  r.s = Ops::add(Ops::mul(ea, a.s), Ops::mul(eb, b.s));
  r.u = Ops::add(rescaled_u<Ops>(ea, a.u, da, a.s), rescaled_u<Ops>(eb, b.u, db, b.s));
  return r;
}

// Adds column value z to a lane's partial. A column at -inf (a finite logit whose scaled value
// overflows, e.g. -FLT_MAX at temperature 0.7) has p = 0: it adds nothing, not 0 * inf = NaN.
template <class Ops, class Acc>
GRPOKIT_HD inline void push(lse_partial<Acc>& p, Acc z) {
  if (z == -std::numeric_limits<Acc>::infinity()) return;
  if (p.s == Acc(0)) {  // first column of the lane
    p.m = z;
    p.s = Acc(1);
    p.u = Acc(0);
  } else if (z > p.m) {  // new max: rescale what was summed so far
    const Acc d = Ops::sub(p.m, z);
    const Acc r = Ops::exp(d);
    p.u = rescaled_u<Ops>(r, p.u, d, p.s);
    p.s = Ops::add(Ops::mul(r, p.s), Acc(1));
    p.m = z;
  } else {
    const Acc t = Ops::sub(z, p.m);
    const Acc e = Ops::exp(t);
    p.s = Ops::add(p.s, e);
    if (e != Acc(0)) p.u = Ops::add(p.u, Ops::mul(e, t));  // e = 0: adds 0 (t may be -inf)
  }
}

// The pairwise lane tree of a tile: lanes[0] = merge over lanes[0..L), L a power of two.
template <class Ops, class Acc>
GRPOKIT_HD inline void lane_tree(lse_partial<Acc>* lanes, std::int64_t L) {
  for (std::int64_t w = L / 2; w >= 1; w /= 2)
    for (std::int64_t l = 0; l < w; ++l) lanes[l] = merge<Ops>(lanes[l], lanes[l + w]);
}

template <class Acc>
struct row_stats {
  Acc lse;
  Acc entropy;
};

template <class Ops, class Acc>
GRPOKIT_HD inline row_stats<Acc> finalize(const lse_partial<Acc>& p) {
  const Acc log_s = Ops::log(p.s);
  return {Ops::add(p.m, log_s), Ops::sub(log_s, Ops::div(p.u, p.s))};
}

// The softmax part of dlogit: -p_v (g_logp + g_entropy (log p_v + H)), before the target term and 1/T.
template <class Ops, class Acc>
GRPOKIT_HD inline Acc dlogit_softmax_part(Acc p, Acc log_p, Acc entropy, Acc g_logp, Acc g_entropy) {
  return -Ops::mul(p, Ops::add(g_logp, Ops::mul(g_entropy, Ops::add(log_p, entropy))));
}

// d loss / d z_v for column v of a row, given the row's lse and entropy:
//   -p_v (g_logp + g_entropy (z_v - lse + H)) + [v == target] g_logp,    p_v = exp(z_v - lse)
// (p_v = 0 for a pruned column). The result is multiplied by inv_temperature (z = x / T). A column
// with p_v = 0 gets exactly 0 from the softmax part (p log p -> 0), also at log p_v = -inf.
template <class Ops, class Acc>
GRPOKIT_HD inline Acc dlogit(Acc z, bool is_target, bool pruned, Acc lse, Acc entropy, Acc g_logp,
                             Acc g_entropy, Acc inv_temperature) {
  const Acc log_p = Ops::sub(z, lse);
  const Acc p = pruned ? Acc(0) : Ops::exp(log_p);
  Acc dz = p == Acc(0) ? Acc(0) : dlogit_softmax_part<Ops>(p, log_p, entropy, g_logp, g_entropy);
  if (is_target) dz = Ops::add(dz, g_logp);
  return Ops::mul(dz, inv_temperature);
}

}  // namespace grpokit::math
