#pragma once
// The device schedules of the logits rows. Every schedule follows the tile/lane definition of
// math/online_lse.hpp, so the results are the same bits whichever is chosen (and, under
// batch_invariant, the same bits as grpokit::host):
//   * a team of G threads per row (G = 32: a warp per row for small V; G = chunk_lanes: a block
//     per row); thread t owns lanes t, t + G, ... of every tile;
//   * split rows: several blocks per row, each writing its tiles' partials, merged in order by
//     merge_tiles_kernel;
// Loads are 16-byte vectors when the row is aligned, scalars otherwise (same values).
#include <cstdint>
#include <cstring>
#include <cuda_runtime.h>

#include "../detail/row_params.hpp"
#include "../inputs.hpp"
#include "../math/online_lse.hpp"
#include "../math/storage.hpp"
#include "../policy.hpp"
#include "status.cuh"
#include "tuning.cuh"

namespace grpokit::detail {

// Loads W consecutive stored values [first, first + W) (only those < end) as Acc.
template <int W, class Acc, class S>
__device__ inline int load_block(const S* row, std::int64_t first, std::int64_t end, Acc (&out)[W]) {
  const int n = static_cast<int>(end - first < W ? end - first : W);
  const S* p = row + first;
  if (n == W && (reinterpret_cast<std::uintptr_t>(p) % 16) == 0 && sizeof(S) * W == 16) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    S v[W];
    std::memcpy(v, &raw, 16);
#pragma unroll
    for (int e = 0; e < W; ++e) out[e] = math::load<Acc>(v[e]);
  } else {
    for (int e = 0; e < n; ++e) out[e] = math::load<Acc>(p[e]);
  }
  return n;
}

// Shared memory of a block-wide team: G partials as three arrays (plain types in __shared__).
template <class Acc, int G>
struct team_smem {
  Acc m[G], s[G], u[G];
};

// Pairwise tree over the L lanes of a team of G threads (thread t holds lanes t + G i in st[i]);
// the result lands in thread 0's st[0]. Teams of more than 32 threads are whole blocks and use
// `smem`.
template <class Ops, int G, int L, class Acc>
__device__ inline void team_tree(math::lse_partial<Acc> (&st)[L / G], int t, team_smem<Acc, G>* smem) {
#pragma unroll
  for (int w = L / 2; w >= G; w /= 2)
#pragma unroll
    for (int i = 0; i < w / G; ++i) st[i] = math::merge<Ops>(st[i], st[i + w / G]);
  math::lse_partial<Acc> p = st[0];
  if constexpr (G > 32) {
    for (int w = G / 2; w >= 32; w /= 2) {
      smem->m[t] = p.m;
      smem->s[t] = p.s;
      smem->u[t] = p.u;
      __syncthreads();
      if (t < w) {
        math::lse_partial<Acc> q;
        q.m = smem->m[t + w];
        q.s = smem->s[t + w];
        q.u = smem->u[t + w];
        p = math::merge<Ops>(p, q);
      }
      __syncthreads();
    }
  }
  constexpr int width = G < 32 ? G : 32;
#pragma unroll
  for (int w = width / 2; w >= 1; w /= 2) {
    math::lse_partial<Acc> q;
    q.m = __shfl_down_sync(0xffffffffu, p.m, w, width);
    q.s = __shfl_down_sync(0xffffffffu, p.s, w, width);
    q.u = __shfl_down_sync(0xffffffffu, p.u, w, width);
    if ((t % width) < w) p = math::merge<Ops>(p, q);
  }
  st[0] = p;
}

// The partial of tiles [c0, c1) of one row, merged left to right (thread 0 of the team holds it);
// with `tile_out` set, each tile's partial is written there instead.
template <class P, class Ops, int G>
__device__ inline math::lse_partial<accum_t<P>> tiles_partial(const storage_t<P>* row, std::int64_t vocab,
                                                              std::int64_t c0, std::int64_t c1, accum_t<P> inv_t,
                                                              accum_t<P> threshold, int t, bool& finite,
                                                              team_smem<accum_t<P>, G>* smem,
                                                              math::lse_partial<accum_t<P>>* tile_out) {
  using Acc = accum_t<P>;
  constexpr int W = static_cast<int>(P::vector_width);
  constexpr int L = static_cast<int>(P::chunk_lanes);
  math::lse_partial<Acc> total;
  for (std::int64_t c = c0; c < c1; ++c) {
    const std::int64_t begin = c * P::chunk_size;
    const std::int64_t end = begin + P::chunk_size < vocab ? begin + P::chunk_size : vocab;
    const std::int64_t blocks = (end - begin + W - 1) / W;
    math::lse_partial<Acc> st[L / G];
    // lane t + G i takes blocks t + G i + k L, k = 0, 1, ... (static register indices)
#pragma unroll
    for (int i = 0; i < L / G; ++i) {
      for (std::int64_t b = t + static_cast<std::int64_t>(G) * i; b < blocks; b += L) {
        Acc v[W];
        const int n = load_block<W>(row, begin + b * W, end, v);
        for (int e = 0; e < n; ++e) {
          finite = finite && isfinite(v[e]);
          const Acc z = Ops::mul(v[e], inv_t);
          if (!(z < threshold)) math::push<Ops>(st[i], z);  // a NaN is not pruned: it propagates
        }
      }
    }
    team_tree<Ops, G, L>(st, t, smem);
    if (t == 0) {
      if (tile_out != nullptr) {
        tile_out[c] = st[0];
      } else {
        total = math::merge<Ops>(total, st[0]);
      }
    }
  }
  return total;
}

// Writes logp / entropy / lse of row r from its merged partial (thread 0 of the team). A row whose
// logits are finite but whose lse is not overflowed when scaled (check_finite: an error).
// (write_row_from: the target's scaled logit given, e.g. gathered from the vocabulary rank that holds it.)
template <class Ops, class Acc>
__device__ inline void write_row_from(const loss_config& cfg, std::int64_t r, const math::lse_partial<Acc>& total,
                                      Acc z_target, bool bad_target, const detail::row_setup<Acc>& row,
                                      const token_stats<Acc>& out, row_status st) {
  if (bad_target) st.flag(&device::status::bad_target, r);
  const auto res = detail::finish_row<Ops>(total, bad_target ? Acc(NAN) : z_target, row.threshold);
  if (cfg.check_finite && !isfinite(res.lse)) st.flag(&device::status::non_finite, r);
  out.logp[r] = bad_target ? Acc(NAN) : res.logp;
  out.lse[r] = res.lse;
  if (!out.entropy.empty()) out.entropy[r] = res.entropy;
}
template <class P, class Ops>
__device__ inline void write_row(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
                                 std::int64_t r, const math::lse_partial<accum_t<P>>& total,
                                 const detail::row_setup<accum_t<P>>& row, const token_stats<accum_t<P>>& out,
                                 row_status st) {
  using Acc = accum_t<P>;
  const std::int64_t y = in.targets[r];
  const bool bad_target = y < 0 || y >= in.logits.cols;
  const Acc z_target = bad_target ? Acc(NAN) : Ops::mul(math::load<Acc>(in.logits.row(r)[y]), row.inv_t);
  write_row_from<Ops>(cfg, r, total, z_target, bad_target, row, out, st);
}

// Per-token temperature of row r out of its domain (<= 0, non-finite, or no finite inverse in Acc).
template <class Acc>
__device__ inline bool bad_temperature(span<const Acc> temperature, std::int64_t r) {
  return !temperature.empty() && !detail::usable_temperature(temperature[r]);
}

// Row max of the scaled logits (vocabulary pruning) and the non-finite check; block per row.
template <class P, class Ops>
__global__ void __launch_bounds__(device::tuning::row_max_threads)
    row_max_kernel(logits_input<storage_t<P>, accum_t<P>> in, loss_config cfg, accum_t<P>* row_max, row_status st,
                   bool flag_non_finite) {
  using Acc = accum_t<P>;
  constexpr int threads = device::tuning::row_max_threads;  // the launch's block size (token_logprobs.cuh)
  __shared__ Acc smem[threads];
  const std::int64_t r = blockIdx.x;
  const Acc inv_t = detail::inverse_temperature<Ops>(cfg, in.temperature, r);  // the threshold needs m first
  Acc m = -INFINITY;
  bool finite = true;
  for (std::int64_t j = threadIdx.x; j < in.logits.cols; j += threads) {
    const Acc v = math::load<Acc>(in.logits.row(r)[j]);
    finite = finite && isfinite(v);
    const Acc z = Ops::mul(v, inv_t);
    m = z > m ? z : m;
  }
  if (!finite && cfg.check_finite && flag_non_finite) st.flag(&device::status::non_finite, r);
  smem[threadIdx.x] = m;
  __syncthreads();
  for (int w = threads / 2; w >= 1; w /= 2) {
    if (static_cast<int>(threadIdx.x) < w) {
      const Acc other = smem[threadIdx.x + w];
      smem[threadIdx.x] = smem[threadIdx.x] > other ? smem[threadIdx.x] : other;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) row_max[r] = smem[0];
}

// Forward: teams of G threads, `teams` rows per block (G <= 32) or one row per block.
// gridDim.y splits a row's tiles across blocks when tile_out is set.
template <class P, class Ops, int G>
__global__ void __launch_bounds__(G > 32 ? G : device::tuning::team_block_threads)
    forward_kernel(logits_input<storage_t<P>, accum_t<P>> in, loss_config cfg, token_stats<accum_t<P>> out,
                   const accum_t<P>* row_max, const accum_t<P>* support, math::lse_partial<accum_t<P>>* tile_out,
                   std::int64_t tiles_per_block, row_status st) {
  using Acc = accum_t<P>;
  static_assert(G > 32 || device::tuning::team_block_threads % G == 0, "forward_kernel: whole teams in a block");
  __shared__ team_smem<Acc, G> smem;
  const int teams = blockDim.x / G;  // G (a block per row, split rows) or team_block_threads
  const int t = threadIdx.x % G;
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * teams + threadIdx.x / G;
  // every thread of a block takes part in team_tree's __syncthreads: no early return for G > 32
  const bool active = r < in.logits.rows;
  const std::int64_t rr = active ? r : 0;
  const std::int64_t vocab = in.logits.cols;
  const std::int64_t tiles = (vocab + P::chunk_size - 1) / P::chunk_size;
  const std::int64_t c0 = tile_out ? static_cast<std::int64_t>(blockIdx.y) * tiles_per_block : 0;
  const std::int64_t c1 = tile_out ? (c0 + tiles_per_block < tiles ? c0 + tiles_per_block : tiles) : tiles;
  const auto row = detail::setup_row<Ops>(cfg, in.temperature, rr, P::vocab_prune, P::vocab_prune ? row_max[rr] : Acc(0),
                                          detail::support_at(support, rr));
  bool finite = true;
  const auto total = tiles_partial<P, Ops, G>(in.logits.row(rr), active ? vocab : 0, c0, c1, row.inv_t, row.threshold,
                                              t, finite, &smem, tile_out ? tile_out + rr * tiles : nullptr);
  if (!active) return;
  if (!finite && cfg.check_finite) st.flag(&device::status::non_finite, r);
  if (t == 0 && bad_temperature(in.temperature, r)) st.flag(&device::status::bad_value, r);
  if (t == 0 && tile_out == nullptr) write_row<P, Ops>(in, cfg, r, total, row, out, st);
}

// Split rows: thread per row merges its tile partials left to right and finishes the row.
template <class P, class Ops>
__global__ void __launch_bounds__(device::tuning::merge_threads)
    merge_tiles_kernel(logits_input<storage_t<P>, accum_t<P>> in, loss_config cfg, token_stats<accum_t<P>> out,
                       const accum_t<P>* row_max, const accum_t<P>* support,
                       const math::lse_partial<accum_t<P>>* tiles_in, row_status st) {
  using Acc = accum_t<P>;
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= in.logits.rows) return;
  const std::int64_t tiles = (in.logits.cols + P::chunk_size - 1) / P::chunk_size;
  math::lse_partial<Acc> total;
  for (std::int64_t c = 0; c < tiles; ++c) total = math::merge<Ops>(total, tiles_in[r * tiles + c]);
  const auto row = detail::setup_row<Ops>(cfg, in.temperature, r, P::vocab_prune, P::vocab_prune ? row_max[r] : Acc(0),
                                          detail::support_at(support, r));
  write_row<P, Ops>(in, cfg, r, total, row, out, st);
}

// Backward: block per row, elementwise over 16-byte blocks; dlogits of type Out (the storage type,
// or another one for fused_linear_loss, whose logits chunk is kept in Accum). `slice` (vocabulary
// parallel, else null): {first column of these logits, columns of the whole vocabulary}, so that
// the target (a global id) is checked against the whole vocabulary and found only on its rank.
template <class P, class Ops, class Out>
__global__ void __launch_bounds__(device::tuning::backward_threads)
    backward_kernel(logits_input<storage_t<P>, accum_t<P>> in, backward_inputs<accum_t<P>> g, loss_config cfg,
                    const accum_t<P>* row_max, const accum_t<P>* support, matrix_view<Out> dlogits, row_status st,
                    const long long* slice) {
  using Acc = accum_t<P>;
  using S = storage_t<P>;
  constexpr int W = static_cast<int>(P::vector_width);
  const std::int64_t r = blockIdx.x;
  const std::int64_t V = in.logits.cols;
  const std::int64_t vocab = slice != nullptr ? slice[1] : V;  // -1: a TP rank rejected its input
  if (threadIdx.x == 0 && vocab >= 0 && (in.targets[r] < 0 || in.targets[r] >= vocab))
    st.flag(&device::status::bad_target, r);
  const std::int64_t y = in.targets[r] - (slice != nullptr ? slice[0] : 0);  // outside [0, V): on another rank
  if (threadIdx.x == 0 && bad_temperature(in.temperature, r)) st.flag(&device::status::bad_value, r);
  const Acc g_logp = g.dlogp[r];
  const Acc g_ent = g.dentropy.empty() ? Acc(0) : g.dentropy[r];
  const Acc h = g.dentropy.empty() ? Acc(0) : g.entropy[r];
  const Acc lse = g.lse[r];
  const auto row = detail::setup_row<Ops>(cfg, in.temperature, r, P::vocab_prune, P::vocab_prune ? row_max[r] : Acc(0),
                                          detail::support_at(support, r));
  const Acc inv_t = row.inv_t, threshold = row.threshold;
  const bool zero = g_logp == Acc(0) && g_ent == Acc(0);
  bool finite = true;  // check_finite: a row that receives a gradient must have finite logits
  const S* x = in.logits.row(r);
  Out* dx = dlogits.row(r);
  const std::int64_t blocks = (V + W - 1) / W;
  for (std::int64_t b = threadIdx.x; b < blocks; b += blockDim.x) {
    Acc v[W];
    const int n = load_block<W>(x, b * W, V, v);
    Out o[W];
    for (int e = 0; e < n; ++e) {
      const std::int64_t j = b * W + e;
      finite = finite && isfinite(v[e]);
      const Acc z = Ops::mul(v[e], inv_t);
      o[e] =
          math::store<Out>(zero ? Acc(0) : math::dlogit<Ops>(z, j == y, z < threshold, lse, h, g_logp, g_ent, inv_t));
    }
    Out* p = dx + b * W;
    if (n == W && (reinterpret_cast<std::uintptr_t>(p) % 16) == 0 && sizeof(Out) * W == 16) {
      uint4 raw;
      std::memcpy(&raw, o, 16);
      *reinterpret_cast<uint4*>(p) = raw;
    } else {
      for (int e = 0; e < n; ++e) p[e] = o[e];
    }
  }
  if (!finite && !zero && cfg.check_finite) st.flag(&device::status::non_finite, r);
}

}  // namespace grpokit::detail
