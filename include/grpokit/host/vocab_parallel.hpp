#pragma once
// Vocabulary parallel on the host: token_logprobs and logits_backward over logits whose vocabulary
// is split across the ranks of layout.tp (Megatron's vocab-parallel layout): every TP rank holds
// the same token rows and targets (global ids) and a contiguous slice of the columns, rank r the
// columns after those of ranks 0..r-1. The row partials are merged across ranks (docs/distributed.md):
//   * online rows (batch_invariant, and any accumulator the vectorised schedule does not take)
//     whose slices all start on a multiple of the chunk size: every tile's partial is gathered and
//     the tiles are merged left to right exactly as in one process (bitwise the unsharded result,
//     for every TP size);
//   * otherwise (vectorised fast / deterministic float rows, or slices off the chunk grid): each
//     rank's partial of its slice is gathered and merged in rank order (within rounding of the
//     unsharded result, the same bits run to run for a given split).
// With vocabulary pruning the row max is gathered first (exact). The target's scaled logit comes
// from the rank that holds it. Per row and rank this moves 3 Acc per tile (or per slice) plus the
// target logit and a flag, never a column.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "../communicator.hpp"
#include "../config.hpp"
#include "../detail/collectives.hpp"
#include "../detail/ops_for.hpp"
#include "../detail/row_params.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../math/online_lse.hpp"
#include "../policy.hpp"
#include "detail/fused_outputs.hpp"
#include "detail/sampler_support.hpp"
#include "detail/scratch.hpp"
#include "parallel.hpp"
#include "rows.hpp"

namespace grpokit::detail {

// This rank's columns [begin, end) of a vocabulary of `vocab` columns split over the TP ranks.
struct vocab_slice {
  std::vector<std::int64_t> begins;  // [R + 1]: rank r holds [begins[r], begins[r + 1])
  std::int64_t begin = 0, end = 0, vocab = 0;
  bool tile_aligned = true;  // every slice starts on a multiple of the tile (chunk) size
  int owner(std::int64_t column) const {
    int r = 0;
    while (begins[static_cast<std::size_t>(r) + 1] <= column) ++r;
    return r;
  }
  std::int64_t columns(std::size_t r) const { return begins[r + 1] - begins[r]; }
};

template <class TP>
vocab_slice slice_of(const TP& tp, std::int64_t local_columns, std::int64_t tile) {
  vocab_slice s;
  const auto cols = gather_value(tp, local_columns);
  s.begins.assign(cols.size() + 1, 0);
  for (std::size_t r = 0; r < cols.size(); ++r) {
    s.begins[r + 1] = s.begins[r] + cols[r];
    s.tile_aligned = s.tile_aligned && s.begins[r] % tile == 0;
  }
  s.begin = s.begins[static_cast<std::size_t>(tp.rank())];
  s.end = s.begin + local_columns;
  s.vocab = s.begins.back();
  return s;
}

// What every TP rank must agree on: the rows, the targets and the per-token temperatures.
template <class TP, class Real>
void require_same_rows(const TP& tp, std::int64_t rows, span<const std::int64_t> targets,
                       span<const Real> temperature) {
  struct rows_key {
    std::int64_t rows;
    std::uint64_t targets, temperature;
  };
  const rows_key mine{rows, values_fingerprint(targets), values_fingerprint(temperature)};
  for (const rows_key& k : gather_value(tp, mine))
    GRPOKIT_REQUIRE(k.rows == mine.rows && k.targets == mine.targets && k.temperature == mine.temperature,
                    "vocabulary parallel: every TP rank must pass the same token rows, targets and temperatures");
}

// The vocabulary slice of this TP rank (local_columns of the whole vocabulary), once every TP rank
// agrees on the rows and the targets are checked against the whole vocabulary. Collective.
template <class TP, class Real>
vocab_slice checked_vocab_slice(const TP& tp, std::int64_t local_columns, std::int64_t tile, std::int64_t rows,
                                span<const std::int64_t> targets, span<const Real> temperature) {
  vocab_slice slice = slice_of(tp, local_columns, tile);
  require_same_rows(tp, rows, targets, temperature);
  require_targets(targets, slice.vocab);
  return slice;
}

// The online schedule applies (tiles of the definition) unless the vectorised float one does.
template <class P>
constexpr bool online_rows = !vectorised_rows<ops_for<P::order>, accum_t<P>>;

// Rows per gather of the sampler's histograms: bounds their buffers (2 KiB per row and rank).
constexpr std::int64_t support_rows_per_gather = 1024;

// The sampler's support thresholds of the rows (-inf without one) over the whole vocabulary: each
// rank's integer histograms of its slice, gathered and added in rank order between the radix
// rounds, and the row max as the max of the slices' keys: the single-process thresholds, bit for
// bit (detail/sampler_support.hpp). A row is computed where any rank wants it (the ranks' flags
// joined), so that every rank sums the same rows. Per row and round this moves 256 integers per rank.
template <class P, class TP, class S, class Acc>
std::vector<Acc> sharded_support(const TP& tp, const logits_input<S, Acc>& in, const loss_config& cfg,
                                 const std::vector<std::uint8_t>* rows_wanted) {
  using Ops = ops_for<P::order>;
  const std::int64_t T = in.logits.rows, n = in.logits.cols;
  const std::size_t R = static_cast<std::size_t>(tp.size());
  constexpr Acc none = -std::numeric_limits<Acc>::infinity();
  std::vector<Acc> threshold(static_cast<std::size_t>(T), none);
  if (!sampler_support(cfg)) return threshold;
  // every allocation before the first collective: a rank that cannot allocate fails before it
  const std::int64_t B = std::min(T, support_rows_per_gather);
  std::vector<support_search> search(static_cast<std::size_t>(T));
  std::vector<std::uint64_t> floor(static_cast<std::size_t>(T), 0), local(static_cast<std::size_t>(T), 0);
  std::vector<Acc> row_max(static_cast<std::size_t>(T), Acc(0));
  std::vector<std::uint8_t> wanted(static_cast<std::size_t>(T), 1);
  auto hist = scratch<std::uint64_t>(B * support_bins, "sampler support");
  std::int64_t V = 0;
  for (const std::int64_t c : gather_value(tp, n)) V += c;
  if (rows_wanted != nullptr) {
    const auto all = gather_array(tp, rows_wanted->data(), T);
    for (std::int64_t t = 0; t < T; ++t) {
      std::uint8_t any = 0;
      for (std::size_t r = 0; r < R; ++r) any |= all[r * static_cast<std::size_t>(T) + static_cast<std::size_t>(t)];
      wanted[static_cast<std::size_t>(t)] = any;
    }
  }
  const auto inv_t = [&](std::int64_t t) { return inverse_temperature<Ops>(cfg, in.temperature, t); };
  const auto at = [](auto& v, std::int64_t t) -> auto& { return v[static_cast<std::size_t>(t)]; };
  // the rounds of every row's select, B rows per gather; a row's sums over the ranks in rank order
  const auto select = [&](bool by_mass) {
    for (int round = 0; round < support_rounds<Acc>; ++round) {
      for (std::int64_t t0 = 0; t0 < T; t0 += B) {
        const std::int64_t rows = std::min(B, T - t0);
        parallel_for(rows, [&](std::int64_t i) {
          const std::int64_t t = t0 + i;
          std::uint64_t* h = hist.data() + i * support_bins;
          if (at(wanted, t))
            support_histogram<Ops>(in.logits.row(t), n, inv_t(t), at(search, t), at(floor, t), by_mass,
                                   at(row_max, t), h);
          else
            std::fill(h, h + support_bins, std::uint64_t{0});
        });
        const auto all = gather_array(tp, hist.data(), rows * support_bins);
        parallel_for(rows, [&](std::int64_t i) {
          std::uint64_t sum[support_bins] = {};
          for (std::size_t r = 0; r < R; ++r) {
            const std::uint64_t* h = all.data() + (r * static_cast<std::size_t>(rows) + static_cast<std::size_t>(i)) *
                                                      static_cast<std::size_t>(support_bins);
            for (int b = 0; b < support_bins; ++b) sum[b] += h[b];
          }
          support_step(at(search, t0 + i), sum);
        });
      }
    }
  };
  // a row where no bin was chosen (not wanted; a top-p total of 0 from a NaN / inf row) keeps every
  // column, as one process's joint_threshold does with that threshold
  const auto found = [&](std::int64_t t) { return joint_threshold(none, from_support_key<Acc>(at(search, t).prefix)); };
  if (top_k_narrows(cfg.top_k, V)) {
    for (auto& s : search) s.target = static_cast<double>(cfg.top_k);
    select(false);
    for (std::int64_t t = 0; t < T; ++t) at(floor, t) = at(search, t).prefix, at(threshold, t) = found(t);
  }
  if (top_p_narrows(cfg.top_p, V)) {
    parallel_for(T, [&](std::int64_t t) {
      at(local, t) = at(wanted, t) ? support_max_key<Ops>(in.logits.row(t), n, inv_t(t)) : 0;
    });
    const auto max_keys = gather_array(tp, local.data(), T);
    parallel_for(T, [&](std::int64_t t) {
      std::uint64_t m = 0;
      for (std::size_t r = 0; r < R; ++r) m = std::max(m, max_keys[r * static_cast<std::size_t>(T) + static_cast<std::size_t>(t)]);
      at(row_max, t) = from_support_key<Acc>(m);
      at(local, t) = at(wanted, t) ? support_total<Ops>(in.logits.row(t), n, inv_t(t), at(floor, t), at(row_max, t)) : 0;
    });
    const auto totals = gather_array(tp, local.data(), T);
    for (std::int64_t t = 0; t < T; ++t) {
      std::uint64_t total = 0;
      for (std::size_t r = 0; r < R; ++r) total += totals[r * static_cast<std::size_t>(T) + static_cast<std::size_t>(t)];
      at(search, t) = support_search{};
      at(search, t).target = cfg.top_p * static_cast<double>(total);
    }
    select(true);
    for (std::int64_t t = 0; t < T; ++t) at(threshold, t) = found(t);
  }
  return threshold;
}

// Per row: the pruning threshold from the max of the whole row (the local maxima gathered), or
// -inf, joined with the sampler's support threshold.
template <class P, class TP, class S, class Acc>
std::vector<Acc> sharded_thresholds(const TP& tp, const logits_input<S, Acc>& in, const loss_config& cfg,
                                    const std::vector<std::uint8_t>* rows_wanted) {
  using Ops = ops_for<P::order>;
  const std::int64_t T = in.logits.rows, V = in.logits.cols;
  std::vector<Acc> threshold = sharded_support<P>(tp, in, cfg, rows_wanted);
  if (!P::vocab_prune) return threshold;
  std::vector<Acc> local(static_cast<std::size_t>(T), -std::numeric_limits<Acc>::infinity());
  parallel_for(T, [&](std::int64_t t) {
    if (rows_wanted != nullptr && !(*rows_wanted)[static_cast<std::size_t>(t)]) return;
    bool finite = true;
    local[static_cast<std::size_t>(t)] =
        pruning_row_max<Ops, Acc>(in.logits.row(t), V, inverse_temperature<Ops>(cfg, in.temperature, t), finite);
  });
  const auto all = gather_array(tp, local.data(), T);
  const Acc log_rho = log_prune_rho<Ops, Acc>(cfg);
  for (std::int64_t t = 0; t < T; ++t) {
    Acc m = -std::numeric_limits<Acc>::infinity();
    for (std::size_t r = 0; r < static_cast<std::size_t>(tp.size()); ++r) {
      const Acc v = all[r * static_cast<std::size_t>(T) + static_cast<std::size_t>(t)];
      m = v > m ? v : m;
    }
    auto& th = threshold[static_cast<std::size_t>(t)];
    th = joint_threshold(prune_threshold<Ops>(true, m, log_rho), th);
  }
  return threshold;
}

// The target's scaled logit (from the rank that holds it) and whether the whole row is finite (1 or
// 0; an Acc so that the gathered struct has no padding bytes).
template <class Acc>
struct row_piece {
  Acc z_target;
  Acc finite;
};

template <class P, class TP>
void sharded_token_logprobs(const TP& tp, const vocab_slice& slice, const logits_input<storage_t<P>, accum_t<P>>& in,
                            const loss_config& cfg, const token_stats<accum_t<P>>& out) {
  using Acc = accum_t<P>;
  using Ops = ops_for<P::order>;
  using partial = math::lse_partial<Acc>;
  constexpr std::int64_t Tile = P::chunk_size, Lanes = P::chunk_lanes, Width = P::vector_width;
  const std::int64_t T = in.logits.rows, V = in.logits.cols;
  const std::size_t R = static_cast<std::size_t>(tp.size());
  const bool by_tile = online_rows<P> && slice.tile_aligned;
  const std::int64_t tiles = by_tile ? (V + Tile - 1) / Tile : 1;  // partials per row sent by this rank
  // every allocation before the first collective: a rank that cannot allocate fails before it
  auto parts = scratch<partial>(T * tiles, "token_logprobs");
  auto pieces = scratch<row_piece<Acc>>(T, "token_logprobs");
  auto bad = scratch<std::uint8_t>(T, "token_logprobs");
  const auto threshold = sharded_thresholds<P>(tp, in, cfg, nullptr);
  parallel_for(T, [&](std::int64_t t) {
    const auto* x = in.logits.row(t);
    const Acc inv_t = inverse_temperature<Ops>(cfg, in.temperature, t);
    const Acc th = threshold[static_cast<std::size_t>(t)];
    bool finite = true;
    partial* mine = parts.data() + t * tiles;
    if constexpr (online_rows<P>) {
      if (by_tile) {
        std::int64_t k = 0;
        for_each_tile<Ops, Tile, Lanes, Width>(x, V, inv_t, th, finite, [&](const partial& p) { mine[k++] = p; });
      } else {
        mine[0] = online_partial<Ops, Tile, Lanes, Width>(x, V, inv_t, th, finite);
      }
    } else {
      const float offset = scaled_row_max_vectorised(x, V, inv_t, finite);
      if (!finite)
        mine[0] = online_partial<Ops, Tile, Lanes, Width>(x, V, inv_t, th, finite);
      else if (offset == -std::numeric_limits<float>::infinity())
        mine[0] = partial{};  // every scaled column at -inf (p = 0): nothing, not -inf - -inf = NaN
      else
        mine[0] = vectorised_partial(x, V, inv_t, offset, th);
    }
    const std::int64_t target = in.targets[t];
    const bool owns = target >= slice.begin && target < slice.end;
    pieces[static_cast<std::size_t>(t)] = {owns ? Ops::mul(math::load<Acc>(x[target - slice.begin]), inv_t) : Acc(0),
                                           finite ? Acc(1) : Acc(0)};
  });

  // tiles: rank r sent T x columns(r)/Tile partials; slices: T partials each
  std::vector<std::int64_t> first;
  const auto all_parts = gather_varying(tp, parts.data(), T * tiles, &first);
  const auto all_pieces = gather_array(tp, pieces.data(), T);
  parallel_for(T, [&](std::int64_t t) {
    partial total;
    bool finite = true;
    for (std::size_t r = 0; r < R; ++r) {
      const std::int64_t n = by_tile ? (slice.columns(r) + Tile - 1) / Tile : 1;
      for (std::int64_t k = 0; k < n; ++k)
        total = math::merge<Ops>(total, all_parts[static_cast<std::size_t>(first[r] + t * n + k)]);
      finite = finite && all_pieces[r * static_cast<std::size_t>(T) + static_cast<std::size_t>(t)].finite != Acc(0);
    }
    const int owner = slice.owner(in.targets[t]);
    const Acc z_target =
        all_pieces[static_cast<std::size_t>(owner) * static_cast<std::size_t>(T) + static_cast<std::size_t>(t)]
            .z_target;
    const auto r = finish_row<Ops>(total, z_target, threshold[static_cast<std::size_t>(t)]);
    out.logp[t] = r.logp;
    out.lse[t] = r.lse;
    if (!out.entropy.empty()) out.entropy[t] = r.entropy;
    bad[static_cast<std::size_t>(t)] = !(finite && std::isfinite(r.lse));
  });
  if (!cfg.check_finite) return;
  for (std::int64_t t = 0; t < T; ++t)
    GRPOKIT_REQUIRE(!bad[static_cast<std::size_t>(t)], "logits row ", t,
                    " contains NaN or Inf, or overflows when scaled by 1 / temperature (on some vocabulary rank)");
}

// dlogits of this rank's columns (Out: the storage type, or fused_linear_loss's GEMM input type).
template <class P, class TP, class Out>
void sharded_logits_backward(const TP& tp, const vocab_slice& slice, const logits_input<storage_t<P>, accum_t<P>>& in,
                             const backward_inputs<accum_t<P>>& g, const loss_config& cfg,
                             const matrix_view<Out>& dlogits) {
  using Acc = accum_t<P>;
  using Ops = ops_for<P::order>;
  const std::int64_t T = in.logits.rows, V = in.logits.cols;
  auto wanted = scratch<std::uint8_t>(T, "logits_backward");
  auto finite = scratch<std::uint8_t>(T, "logits_backward");  // before the first collective
  for (std::int64_t t = 0; t < T; ++t)
    wanted[static_cast<std::size_t>(t)] = g.dlogp[t] != Acc(0) || (!g.dentropy.empty() && g.dentropy[t] != Acc(0));
  const auto threshold = sharded_thresholds<P>(tp, in, cfg, &wanted);
  parallel_for(T, [&](std::int64_t t) {
    const Acc g_ent = g.dentropy.empty() ? Acc(0) : g.dentropy[t];
    const Acc h = g.dentropy.empty() ? Acc(0) : g.entropy[t];
    auto* dx = dlogits.row(t);
    if (zero_gradient_row(dx, V, g.dlogp[t], g_ent)) {
      finite[static_cast<std::size_t>(t)] = 1;
      return;
    }
    const auto* x = in.logits.row(t);
    const Acc inv_t = inverse_temperature<Ops>(cfg, in.temperature, t);
    const std::int64_t target = in.targets[t];
    const std::int64_t local_target = target >= slice.begin && target < slice.end ? target - slice.begin : -1;
    bool row_finite = true;
    if constexpr (P::vocab_prune && vectorised_rows<Ops, Acc>) scaled_row_max_vectorised(x, V, inv_t, row_finite);
    finite[static_cast<std::size_t>(t)] =
        backward_columns<Ops, Acc>(x, dx, V, local_target, inv_t, threshold[static_cast<std::size_t>(t)], g.lse[t], h,
                                   g.dlogp[t], g_ent, row_finite || !P::vocab_prune);
  });
  const auto all = gather_array(tp, finite.data(), T);
  if (!cfg.check_finite) return;
  for (std::int64_t t = 0; t < T; ++t)
    for (std::size_t r = 0; r < static_cast<std::size_t>(tp.size()); ++r)
      GRPOKIT_REQUIRE(all[r * static_cast<std::size_t>(T) + static_cast<std::size_t>(t)], "logits row ", t,
                      " contains NaN or Inf (vocabulary rank ", r, ")");
}

// sum_v p_v^2 of every row over the whole vocabulary: each rank's slice in the lane order of
// detail/sum_p2.hpp, the slices added in rank order (one rank: the single-process value). Every TP
// rank calls it or none (require_same_sum_p2).
template <class P, class TP>
void sharded_sum_p2(const TP& tp, const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
                    span<const accum_t<P>> lse, span<accum_t<P>> out) {
  using Acc = accum_t<P>;
  using Ops = ops_for<P::order>;
  const std::int64_t T = in.logits.rows;
  const auto threshold = sharded_thresholds<P>(tp, in, cfg, nullptr);
  auto local = scratch<Acc>(T, "sum_p2");
  parallel_for(T, [&](std::int64_t t) {
    local[static_cast<std::size_t>(t)] =
        row_sum_p2<Ops>(in.logits.row(t), in.logits.cols, inverse_temperature<Ops>(cfg, in.temperature, t),
                        threshold[static_cast<std::size_t>(t)], lse[t]);
  });
  const auto all = gather_array(tp, local.data(), T);
  for (std::int64_t t = 0; t < T; ++t) {
    Acc sum = 0;
    for (std::size_t r = 0; r < static_cast<std::size_t>(tp.size()); ++r)
      sum = Ops::add(sum, all[r * static_cast<std::size_t>(T) + static_cast<std::size_t>(t)]);
    out[t] = sum;
  }
}

// lm_head_norms under vocabulary parallelism: each rank measured its slice of the LM head, and the
// squared norms of the slices add (in rank order: the same bits on every rank).
template <class TP>
void add_over_ranks(const TP& tp, const lm_head_norms& norms) {
  const std::int64_t S = norms.rollout_sq.size(), B = norms.group_mean_sq.size(), n = S + B + 1;
  std::vector<double> mine(static_cast<std::size_t>(n));
  std::copy(norms.rollout_sq.begin(), norms.rollout_sq.end(), mine.begin());
  std::copy(norms.group_mean_sq.begin(), norms.group_mean_sq.end(), mine.begin() + S);
  mine[static_cast<std::size_t>(S + B)] = *norms.batch_mean_sq;
  const auto all = gather_array(tp, mine.data(), n);
  for (std::int64_t i = 0; i < n; ++i) {
    double sum = 0;
    for (std::size_t r = 0; r < static_cast<std::size_t>(tp.size()); ++r)
      sum += all[r * static_cast<std::size_t>(n) + static_cast<std::size_t>(i)];
    if (i < S)
      norms.rollout_sq[i] = sum;
    else if (i < S + B)
      norms.group_mean_sq[i - S] = sum;
    else
      *norms.batch_mean_sq = sum;
  }
}

// The sum_p2 output is a collective under vocabulary parallelism: every TP rank asks for it or none.
template <class TP, class Real>
void require_same_sum_p2(const TP& tp, span<Real> sum_p2) {
  const auto wanted = gather_value(tp, static_cast<std::uint8_t>(!sum_p2.empty()));
  for (const std::uint8_t w : wanted)
    GRPOKIT_REQUIRE(w == wanted[0], "sum_p2 output: every TP rank must ask for it, or none");
}

}  // namespace grpokit::detail

namespace grpokit::host {

template <class P, class DP, class TP>
void token_logprobs(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
                    const token_stats<accum_t<P>>& out, const parallel_layout<DP, TP>& layout) {
  const std::int64_t T = in.logits.rows;
  detail::vocab_slice slice;
  detail::collective_check(layout, "token_logprobs", [&] {
    detail::require_logits_shapes(in, cfg);
    detail::require_temperature(cfg, in.temperature);
    detail::require_size("logp", out.logp, T);
    detail::require_size("lse", out.lse, T);
    detail::require_size_or_empty("entropy", out.entropy, T);
    detail::require_size_or_empty("sum_p2", out.sum_p2, T);
  });
  detail::collective_check(layout, "token_logprobs", [&] {
    slice = detail::checked_vocab_slice(layout.tp, in.logits.cols, P::chunk_size, in.logits.rows, in.targets,
                                        in.temperature);
    detail::require_same_sum_p2(layout.tp, out.sum_p2);
  });
  detail::collective_check(layout, "token_logprobs",
                           [&] { detail::sharded_token_logprobs<P>(layout.tp, slice, in, cfg, out); });
  // every rank joins the check; the sums talk to the TP group alone, which agrees on asking (above),
  // so data-parallel replicas may differ
  detail::collective_check(layout, "token_logprobs", [&] {
    if (!out.sum_p2.empty()) detail::sharded_sum_p2<P>(layout.tp, in, cfg, out.lse, out.sum_p2);
  });
}

template <class P, class DP, class TP>
void logits_backward(const logits_input<storage_t<P>, accum_t<P>>& in, const backward_inputs<accum_t<P>>& g,
                     const loss_config& cfg, const matrix_view<storage_t<P>>& dlogits,
                     const parallel_layout<DP, TP>& layout, backward_mode mode = backward_mode::separate) {
  detail::vocab_slice slice;
  detail::collective_check(layout, "logits_backward", [&] {
    detail::require_logits_shapes(in, cfg);
    detail::require_temperature(cfg, in.temperature);
    detail::require_backward_shapes(in, g, dlogits, mode);
  });
  detail::collective_check(layout, "logits_backward", [&] {
    slice = detail::checked_vocab_slice(layout.tp, in.logits.cols, P::chunk_size, in.logits.rows, in.targets,
                                        in.temperature);
  });
  detail::collective_check(layout, "logits_backward",
                           [&] { detail::sharded_logits_backward<P>(layout.tp, slice, in, g, cfg, dlogits); });
}

}  // namespace grpokit::host
