#pragma once
// The online log-sum-exp of one logits row, defined tile by tile so that any schedule (host loop,
// warp, block, split row) that follows the definition gets the same bits:
//   * tile c covers columns [c N, min(V, (c+1) N)); its offset m_c is the tile's max (or, with
//     vocabulary pruning, the row max M for every tile);
//   * inside a tile, column j accumulates into lane j % L, sequentially in j:
//       s_l += e,  u_l += e * t,  with t = z_j - m_c, e = exp(t)   (pruned columns skipped);
//   * lanes are combined by the pairwise tree s_l += s_{l+w}, w = L/2, ..., 1;
//   * tiles are merged left to right with `merge`.
// Then lse = M + log S and entropy = log S - U / S, where (M, S, U) is the merged partial.
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
  r.u = Ops::add(Ops::mul(ea, Ops::add(a.u, Ops::mul(da, a.s))),
                 Ops::mul(eb, Ops::add(b.u, Ops::mul(db, b.s))));
  return r;
}

// One column's contribution to its lane.
template <class Ops, class Acc>
GRPOKIT_HD inline void accumulate(Acc z, Acc offset, Acc& s, Acc& u) {
  const Acc t = Ops::sub(z, offset);
  const Acc e = Ops::exp(t);
  s = Ops::add(s, e);
  u = Ops::add(u, Ops::mul(e, t));
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

// d loss / d z_v for column v of a row, given the row's lse and entropy:
//   -p_v (g_logp + g_entropy (z_v - lse + H)) + [v == target] g_logp,    p_v = exp(z_v - lse)
// (p_v = 0 for a pruned column). The result is multiplied by inv_temperature (z = x / T).
template <class Ops, class Acc>
GRPOKIT_HD inline Acc dlogit(Acc z, bool is_target, bool pruned, Acc lse, Acc entropy, Acc g_logp,
                             Acc g_entropy, Acc inv_temperature) {
  const Acc log_p = Ops::sub(z, lse);
  const Acc p = pruned ? Acc(0) : Ops::exp(log_p);
  Acc dz = -Ops::mul(p, Ops::add(g_logp, Ops::mul(g_entropy, Ops::add(log_p, entropy))));
  if (is_target) dz = Ops::add(dz, g_logp);
  return Ops::mul(dz, inv_temperature);
}

}  // namespace grpokit::math
