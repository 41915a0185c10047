#pragma once
// Vocabulary parallel on the device (device/distributed.cuh): every TP rank holds the same token
// rows and a contiguous slice of the columns, rank r after ranks 0..r-1 (the slice sizes are
// gathered on the device: the host never waits). Per call, in this order:
//   1. the slice: {columns, rows, 0, rejected} of every rank;
//   2. with vocabulary pruning, every row's local max (the threshold is the whole row's);
//   3. every tile's partial of the rank's slice (the forward kernel's split-row output), and the
//      target's scaled logit from the rank that holds it;
//   4. the status flags (after the backward, in fused_loss).
// The rows are then finished on every rank: when every slice starts on a multiple of the chunk, the
// tiles are merged left to right as in one process (bitwise the unsharded call); otherwise each
// rank's tiles are merged into its slice's partial and the slices in rank order (the host's
// order: within rounding of the unsharded result). The backward computes the rank's columns.
#include <cstdint>
#include <cuda_runtime.h>

#include "../../config.hpp"
#include "../../detail/ops_for.hpp"
#include "../../detail/row_params.hpp"
#include "../../inputs.hpp"
#include "../../math/online_lse.hpp"
#include "../../policy.hpp"
#include "../error.cuh"
#include "../rows.cuh"
#include "../status.cuh"
#include "../tuning.cuh"
#include "../workspace.cuh"
#include "collectives.cuh"
#include "launch_rows.cuh"

namespace grpokit::detail {

// The target's scaled logit, from the rank whose slice holds it (an Acc pair: no padding bytes).
template <class Acc>
struct tp_piece {
  Acc z_target;
  Acc owns;
};

// What a vocabulary-parallel call adds to the workspace (sizes from the plan: the same on every rank).
template <class Acc>
struct tp_buffers {
  long long* slice_send = nullptr;                   // [4]: columns, rows, 0, 1 if this rank rejected its input
  long long* slice_all = nullptr;                    // [4 R]
  long long* slice = nullptr;                        // [2]: this rank's first column, the whole vocabulary
  Acc* max_all = nullptr;                            // [R rows] (vocabulary pruning)
  math::lse_partial<Acc>* tiles_send = nullptr;      // [rows cap]: this rank's tiles, row after row
  math::lse_partial<Acc>* tiles_all = nullptr;       // [R rows cap]
  tp_piece<Acc>* pieces_send = nullptr;              // [rows]
  tp_piece<Acc>* pieces_all = nullptr;               // [R rows]
  device::status* status_all = nullptr;              // [R]
  std::int64_t rows = 0, cap = 0;  // planned rows; tiles per row of the largest slice (planned.vocab)
};

template <class P>
tp_buffers<accum_t<P>> take_tp_buffers(carver& c, const device::shape& planned, int ranks) {
  using Acc = accum_t<P>;
  tp_buffers<Acc> b;
  b.rows = planned.tokens;
  b.cap = (planned.vocab + P::chunk_size - 1) / P::chunk_size;
  b.slice_send = c.take<long long>(4);
  b.slice_all = c.take<long long>(4 * static_cast<std::int64_t>(ranks));
  b.slice = c.take<long long>(2);
  if (P::vocab_prune) b.max_all = c.take<Acc>(ranks * b.rows);
  b.tiles_send = c.take<math::lse_partial<Acc>>(b.rows * b.cap);
  b.tiles_all = c.take<math::lse_partial<Acc>>(ranks * b.rows * b.cap);
  b.pieces_send = c.take<tp_piece<Acc>>(b.rows);
  b.pieces_all = c.take<tp_piece<Acc>>(ranks * b.rows);
  b.status_all = c.take<device::status>(ranks);
  return b;
}

// This rank's first column and the whole vocabulary, or -1 when a rank rejected its input (the rows
// are then not computed: that rank's error is what every rank reports). A rank whose row count
// differs raises bad_value at row 0 (the ranks must hold the same rows).
template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(1)
    slice_kernel(const long long* all, int ranks, int me, long long* slice, device::status* st) {
  long long begin = 0, vocab = 0;
  bool rejected = false;
  for (int r = 0; r < ranks; ++r) {
    if (r == me) begin = vocab;
    vocab += all[4 * r];
    rejected = rejected || all[4 * r + 3] != 0;
    if (!rejected && all[4 * r + 1] != all[4 * me + 1]) flag_error(&st->bad_value, 0);
  }
  slice[0] = begin;
  slice[1] = rejected ? -1 : vocab;
}

// The whole row's max from every rank's (vocabulary pruning: the unsharded threshold).
template <class Acc>
__global__ void __launch_bounds__(device::tuning::merge_threads)
    max_over_ranks_kernel(const Acc* all, int ranks, std::int64_t planned_rows, std::int64_t rows, Acc* row_max) {
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= rows) return;
  Acc m = -INFINITY;
  for (int r = 0; r < ranks; ++r) {
    const Acc v = all[r * planned_rows + t];
    m = v > m ? v : m;
  }
  row_max[t] = m;
}

// The target's scaled logit where this rank holds it.
template <class P, class Ops>
__global__ void __launch_bounds__(device::tuning::merge_threads)
    target_piece_kernel(logits_input<storage_t<P>, accum_t<P>> in, loss_config cfg, const long long* slice,
                        tp_piece<accum_t<P>>* out) {
  using Acc = accum_t<P>;
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= in.logits.rows) return;
  const std::int64_t y = in.targets[t] - slice[0];
  const bool owns = y >= 0 && y < in.logits.cols;
  const Acc inv_t = inverse_temperature<Ops>(cfg, in.temperature, t);
  out[t] = {owns ? Ops::mul(math::load<Acc>(in.logits.row(t)[y]), inv_t) : Acc(0), owns ? Acc(1) : Acc(0)};
}

// Every row from the gathered tiles and pieces (thread per row).
template <class P, class Ops>
__global__ void __launch_bounds__(device::tuning::merge_threads)
    merge_ranks_kernel(logits_input<storage_t<P>, accum_t<P>> in, loss_config cfg, token_stats<accum_t<P>> out,
                       const accum_t<P>* row_max, tp_buffers<accum_t<P>> b, int ranks, row_status st) {
  using Acc = accum_t<P>;
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= in.logits.rows) return;
  const long long vocab = b.slice[1];
  if (vocab < 0) {  // a rank rejected its input: nothing to merge (every rank reports that rank)
    out.logp[t] = out.lse[t] = Acc(NAN);
    if (!out.entropy.empty()) out.entropy[t] = Acc(NAN);
    return;
  }
  bool aligned = true;
  long long begin = 0;
  for (int r = 0; r < ranks; ++r) {
    aligned = aligned && begin % P::chunk_size == 0;
    begin += b.slice_all[4 * r];
  }
  const std::int64_t y = in.targets[t];
  math::lse_partial<Acc> total;
  Acc z_target = Acc(NAN);
  begin = 0;
  for (int r = 0; r < ranks; ++r) {
    const long long columns = b.slice_all[4 * r];
    const std::int64_t n = (columns + P::chunk_size - 1) / P::chunk_size;
    const math::lse_partial<Acc>* tiles = b.tiles_all + r * b.rows * b.cap + t * n;
    math::lse_partial<Acc> slice_total;
    for (std::int64_t k = 0; k < n; ++k) {
      if (aligned)
        total = math::merge<Ops>(total, tiles[k]);
      else
        slice_total = math::merge<Ops>(slice_total, tiles[k]);
    }
    if (!aligned) total = math::merge<Ops>(total, slice_total);
    if (y >= begin && y < begin + columns) z_target = b.pieces_all[r * b.rows + t].z_target;
    begin += columns;
  }
  const auto row = setup_row<Ops>(cfg, in.temperature, t, P::vocab_prune, P::vocab_prune ? row_max[t] : Acc(0));
  write_row_from<Ops>(cfg, t, total, z_target, y < 0 || y >= vocab, row, out, st);
}

// The gathers of one vocabulary-parallel call, in the order every TP rank makes them.
template <class P, class TP>
class tp_rows {
 public:
  using Acc = accum_t<P>;
  tp_rows(const TP& comm, const layout<P>& ws, const tp_buffers<Acc>& b, cudaStream_t stream)
      : comm_(comm), ws_(ws), b_(b), stream_(stream) {}

  // 1. The slices (then b.slice holds this rank's first column and the whole vocabulary).
  void exchange_slice(std::int64_t columns, std::int64_t rows, bool rejected) const {
    pack4_kernel<<<1, 1, 0, stream_>>>(columns, rows, 0, rejected ? 1 : 0, b_.slice_send);
    GRPOKIT_CUDA_CHECK_LAUNCH();
    device_all_gather(comm_, b_.slice_send, b_.slice_all, 4 * sizeof(long long), stream_);
    slice_kernel<<<1, 1, 0, stream_>>>(b_.slice_all, comm_.size(), comm_.rank(), b_.slice, ws_.st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  // 2. With pruning: ws.row_max the whole rows' maxima (the local ones computed first unless `rejected`).
  void whole_row_max(const logits_input<storage_t<P>, Acc>& in, const loss_config& cfg, bool rejected) const {
    if (!P::vocab_prune) return;
    using Ops = ops_for<P::order>;
    const std::int64_t T = in.logits.rows;
    const std::int64_t kept = rejected ? 0 : T;  // the unused slots are sent too: defined bytes
    if (kept < b_.rows)
      GRPOKIT_CUDA_CHECK(cudaMemsetAsync(ws_.row_max + kept, 0, (b_.rows - kept) * sizeof(Acc), stream_));
    if (kept > 0) {
      row_max_kernel<P, Ops><<<static_cast<unsigned>(T), device::tuning::row_max_threads, 0, stream_>>>(
          in, cfg, ws_.row_max, row_status{ws_.st, 0}, /*flag_non_finite=*/false);  // the forward flags its rows
      GRPOKIT_CUDA_CHECK_LAUNCH();
    }
    device_all_gather(comm_, ws_.row_max, b_.max_all, b_.rows * sizeof(Acc), stream_);
    if (!rejected && T > 0) {
      max_over_ranks_kernel<Acc>
          <<<device::tuning::blocks_for(T, device::tuning::merge_threads), device::tuning::merge_threads, 0, stream_>>>(
              b_.max_all, comm_.size(), b_.rows, T, ws_.row_max);
      GRPOKIT_CUDA_CHECK_LAUNCH();
    }
  }
  // 3. logp, entropy and lse of every row, on every TP rank.
  void forward(const logits_input<storage_t<P>, Acc>& in, const loss_config& cfg, const token_stats<Acc>& out,
               std::int64_t first_row = 0) const {
    using Ops = ops_for<P::order>;
    constexpr int L = static_cast<int>(P::chunk_lanes);
    const std::int64_t T = in.logits.rows, V = in.logits.cols;
    const std::int64_t tiles = (V + P::chunk_size - 1) / P::chunk_size;
    clear_sends(T * tiles, T);
    if (T > 0 && tiles > 0) {  // the forward kernel's split-row output: every tile's partial, row after row
      forward_kernel<P, Ops, L><<<dim3(static_cast<unsigned>(T), 1), L, 0, stream_>>>(
          in, cfg, out, ws_.row_max, nullptr, b_.tiles_send, tiles, row_status{ws_.st, first_row});
      GRPOKIT_CUDA_CHECK_LAUNCH();
    }
    if (T > 0) {
      target_piece_kernel<P, Ops>
          <<<device::tuning::blocks_for(T, device::tuning::merge_threads), device::tuning::merge_threads, 0, stream_>>>(
              in, cfg, b_.slice, b_.pieces_send);
      GRPOKIT_CUDA_CHECK_LAUNCH();
    }
    gather_rows();
    if (T > 0) {
      merge_ranks_kernel<P, Ops>
          <<<device::tuning::blocks_for(T, device::tuning::merge_threads), device::tuning::merge_threads, 0, stream_>>>(
              in, cfg, out, ws_.row_max, b_, comm_.size(), row_status{ws_.st, first_row});
      GRPOKIT_CUDA_CHECK_LAUNCH();
    }
  }
  // The same gathers from a rank whose input was rejected (after exchange_slice(.., true)).
  void forward_rejected() const {
    clear_sends(0, 0);
    gather_rows();
  }
  // 4. Every TP rank's status, merged into this rank's (after every kernel that may raise a flag).
  void agree_on_status() const {
    device_all_gather(comm_, ws_.st, b_.status_all, sizeof(device::status), stream_);
    merge_status_kernel<<<1, 1, 0, stream_>>>(b_.slice_all, b_.status_all, comm_.size(), comm_.rank(), ws_.st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  const long long* slice() const { return b_.slice; }

 private:
  void clear_sends(std::int64_t tiles_used, std::int64_t rows_used) const {  // the unused slots are sent too
    const std::int64_t all_tiles = b_.rows * b_.cap;
    if (tiles_used < all_tiles)
      GRPOKIT_CUDA_CHECK(cudaMemsetAsync(b_.tiles_send + tiles_used, 0,
                                         (all_tiles - tiles_used) * sizeof(math::lse_partial<Acc>), stream_));
    if (rows_used < b_.rows)
      GRPOKIT_CUDA_CHECK(
          cudaMemsetAsync(b_.pieces_send + rows_used, 0, (b_.rows - rows_used) * sizeof(tp_piece<Acc>), stream_));
  }
  void gather_rows() const {
    device_all_gather(comm_, b_.tiles_send, b_.tiles_all, b_.rows * b_.cap * sizeof(math::lse_partial<Acc>), stream_);
    device_all_gather(comm_, b_.pieces_send, b_.pieces_all, b_.rows * sizeof(tp_piece<Acc>), stream_);
  }

  const TP& comm_;
  const layout<P>& ws_;
  const tp_buffers<Acc>& b_;
  cudaStream_t stream_;
};

}  // namespace grpokit::detail
