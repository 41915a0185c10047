#pragma once
// The device entry points over a parallel_layout (docs/distributed.md), as on the host
// (host/distributed.hpp). Data parallel: each rank of layout.dp holds whole sequences, and every
// rank gets the loss and metrics of the whole batch and the gradients of its own tokens:
//   - the token and sequence counts are gathered and summed once (integers: exact);
//   - the batch pass (detail::needs_batch_pass: statistics of the whole batch the loss needs, such
//     as the IS weights' mean) is combined over the ranks as the partials are, before the loss;
//   - batch_invariant: every sequence's partial is gathered and the whole batch's partials are
//     combined by the one-process tree (bitwise the one-process result); otherwise each rank's
//     total is gathered and the totals are combined in rank order (within rounding);
//   - the status flags of every rank are gathered: a data error on one rank raises on every rank.
// Vocabulary parallel: each rank of layout.tp holds a contiguous slice of the columns of the same
// rows (detail/vocab_parallel.cuh): the row partials are gathered and merged, bitwise the unsharded
// call when every slice starts on a multiple of the chunk; dlogits of the rank's columns.
// fused_linear_loss over a layout runs the one-process chunked schedule (fused_linear_loss.cuh)
// with these steps: each token chunk's rows over TP, the policy loss over DP.
// The communicators are device communicators (detail/collectives.cuh: nccl_communicator,
// staged_communicator, single_process); everything is ordered on `stream`, and with NCCL nothing
// synchronises the host.
//
// `planned` is the shape the workspace was sized for (workspace_bytes(planned, layout)) and must be
// the same on every rank: planned.seqs, the most sequences any DP rank holds, and planned.vocab,
// the most columns any TP rank holds, size the gathers (planned.tokens: the most rows). A
// rank whose input is rejected still takes part in every gather (with a flag), then throws; every
// other rank's status names it. A workspace too small for the plan throws before any gather: the
// other ranks would wait, so size it on every rank from the same plan.
#include <cstdint>
#include <cuda_runtime.h>
#include <exception>
#include <type_traits>
#include <utility>
#include <vector>

#include "../communicator.hpp"
#include "../detail/collectives.hpp"
#include "../detail/loss_partial.hpp"
#include "detail/collectives.cuh"
#include "detail/launch_policy.cuh"
#include "detail/vocab_parallel.cuh"
#include "advantages.cuh"
#include "fused_linear_loss.cuh"
#include "fused_loss.cuh"
#include "policy_loss.cuh"
#include "results.cuh"
#include "status.cuh"
#include "workspace.cuh"

namespace grpokit::detail {

// The per-sequence inputs compute_advantages gathers: rewards, seq_log_ratio, seq_weight, seq_tokens.
constexpr int advantage_sources = 4;

// What a data-parallel call adds to the workspace, after the layout of the planned shape.
struct dp_buffers {
  long long* counts_send = nullptr;          // [4]: tokens, sequences, this rank's S, 1 if it rejected its input
  long long* counts_all = nullptr;           // [4 R]
  device::status* status_all = nullptr;      // [R]
  detail::loss_partial* partials_all = nullptr;  // [R cap]
  detail::loss_partial* tree = nullptr;          // [R cap] (batch_invariant)
  long long* hist_all = nullptr;                 // [R select_hist_size] a selection round's histograms
  std::int64_t cap = 1;  // partials each rank sends: batch_invariant max(planned.seqs, 1), otherwise its total
  // compute_advantages: the per-sequence inputs sent ([seqs] each), gathered ([R seqs] each), the
  // whole batch's ([R seqs] each) and its outputs, and the one-process call's own workspace
  std::int64_t seqs = 0;  // planned.seqs
  double* adv_send = nullptr;
  double* adv_all = nullptr;
  double* adv_whole = nullptr;
  std::uint8_t* keep_whole = nullptr;
  unsigned char* inner = nullptr;
  std::size_t inner_bytes = 0;
};

template <class P>
dp_buffers take_dp_buffers(carver& c, const device::shape& planned, int ranks) {
  dp_buffers b;
  b.cap = P::order == reduction_order::batch_invariant ? std::max<std::int64_t>(planned.seqs, 1) : 1;
  b.counts_send = c.take<long long>(4);
  b.counts_all = c.take<long long>(4 * static_cast<std::int64_t>(ranks));
  b.status_all = c.take<device::status>(ranks);
  b.partials_all = c.take<detail::loss_partial>(ranks * b.cap);
  if (P::order == reduction_order::batch_invariant) b.tree = c.take<detail::loss_partial>(ranks * b.cap);
  b.hist_all = c.take<long long>(static_cast<std::int64_t>(ranks) * select_hist_size);
  // the advantage_sources per-sequence inputs in accum_t<P>, kept as doubles' room
  static_assert(sizeof(accum_t<P>) <= sizeof(double), "the advantage buffers hold accum_t<P> in double slots");
  b.seqs = planned.seqs;
  b.adv_send = c.take<double>(advantage_sources * b.seqs);
  b.adv_all = c.take<double>(advantage_sources * ranks * b.seqs);
  b.adv_whole = c.take<double>((advantage_sources + 1) * ranks * b.seqs);  // the inputs and the advantages
  b.keep_whole = c.take<std::uint8_t>(ranks * b.seqs);
  b.inner_bytes = device::workspace_bytes<P>(device::shape{0, 0, ranks * b.seqs});
  b.inner = c.take<unsigned char>(static_cast<std::int64_t>(b.inner_bytes));
  return b;
}

// What a call adds between its layout and the communicators' buffers: `local_bytes` of its own
// (fused_linear_loss: the chunk of logits), and the rows of one vocabulary-parallel step (the
// token chunk; planned.tokens when negative).
struct call_room {
  std::size_t local_bytes = 0;
  std::int64_t step_rows = -1;
};

// The layout of `planned` (a plan for T covers every T' <= T), the call's room and, after it, the
// buffers of the communicators (none for single_process).
template <class P, class DP, class TP>
struct distributed_workspace {
  layout<P> ws;
  unsigned char* local = nullptr;  // room.local_bytes
  dp_buffers dp;
  tp_buffers<accum_t<P>> tp;
  std::size_t used = 0;
  distributed_workspace(void* workspace, std::size_t bytes, const device::shape& planned, const DP& dp_comm,
                        const TP& tp_comm, bool planning = false, const call_room& room = {})
      : ws(workspace, bytes, planned, planning) {
    const std::size_t lost = planning ? 0 : static_cast<std::size_t>(ws.base - static_cast<char*>(workspace));
    carver c(planning ? nullptr : ws.base + ws.used, planning ? 0 : bytes - lost - ws.used);
    local = c.take<unsigned char>(static_cast<std::int64_t>(room.local_bytes));
    if (!std::is_same<DP, single_process>::value) dp = take_dp_buffers<P>(c, planned, dp_comm.size());
    if (!std::is_same<TP, single_process>::value) {
      device::shape step = planned;
      if (room.step_rows >= 0) step.tokens = room.step_rows;
      tp = take_tp_buffers<P>(c, step, tp_comm.size());
    }
    used = ws.used + c.used();
  }
};

template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(1)
    pack_counts_kernel(const long long* counts, long long seqs, long long rejected, long long* send) {
  send[0] = counts != nullptr ? counts[0] : 0;
  send[1] = counts != nullptr ? counts[1] : 0;
  send[2] = seqs;
  send[3] = rejected;
}

// The counts of the whole batch, summed in rank order (integers: any order gives the same), and
// the index of this rank's first sequence in the batch.
template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(1) sum_counts_kernel(const long long* all, int ranks, int me, long long* counts) {
  long long tokens = 0, seqs = 0, first_seq = 0;
  for (int r = 0; r < ranks; ++r) {
    tokens += all[4 * r];
    seqs += all[4 * r + 1];
    if (r < me) first_seq += all[4 * r + 2];
  }
  counts[0] = tokens;
  counts[1] = seqs;
  counts[2] = first_seq;
}

// batch_invariant: every rank's partials (rank r's S_r first of its cap slots) in global order,
// combined by the one-process tree (detail::tree_reduce, tree_level_kernel) in one block.
template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(device::tuning::sequence_threads)
    gathered_tree_kernel(const detail::loss_partial* all, const long long* counts_all, int ranks, std::int64_t cap,
                         detail::loss_partial* tree, detail::loss_partial* out) {
  std::int64_t n = 0;
  for (int r = 0; r < ranks; ++r) {
    const std::int64_t s = counts_all[4 * r + 2] < cap ? counts_all[4 * r + 2] : cap;
    for (std::int64_t i = threadIdx.x; i < s; i += blockDim.x) tree[n + i] = all[r * cap + i];
    n += s;
  }
  __syncthreads();
  for (std::int64_t stride = 1; stride < n; stride *= 2) {
    for (std::int64_t i = static_cast<std::int64_t>(threadIdx.x) * 2 * stride; i + stride < n;
         i += static_cast<std::int64_t>(blockDim.x) * 2 * stride)
      tree[i] = detail::combine(tree[i], tree[i + stride]);
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = n > 0 ? tree[0] : detail::loss_partial{};
}

// Otherwise: the ranks' totals combined in rank order (the first as it is: -0 stays -0).
template <int = 0>  // a template: defined once in a program, whichever units include this header
__global__ void __launch_bounds__(1) combine_totals_kernel(const detail::loss_partial* all, int ranks,
                                                           detail::loss_partial* out) {
  detail::loss_partial sum = all[0];
  for (int r = 1; r < ranks; ++r) sum = detail::combine(sum, all[r]);
  *out = sum;
}

// The first other rank that rejected its input or raised a status flag, into this rank's status.
// The gathers of one data-parallel policy_loss, in the order every rank makes them. `rejected`:
// this rank only takes part (its input was rejected on the host): zeros and a flag.
template <class P, class DP>
class dp_policy_loss {
 public:
  dp_policy_loss(const DP& comm, const layout<P>& ws, const dp_buffers& dp, cudaStream_t stream)
      : comm_(comm), ws_(ws), dp_(dp), stream_(stream) {}

  void run(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch, const loss_config& cfg,
           const policy_grads<accum_t<P>>& grads) const {
    const std::int64_t S = batch.seq_offsets.size() - 1;
    auto gathered = [&] { return gather_histograms(); };
    launch_selections<P>(cur, batch, cfg, ws_, stream_, selections_first, gathered);
    launch_summarize<P>(cur, batch, cfg, ws_, stream_);
    gather_counts(ws_.counts, S, false);
    sum_counts_kernel<<<1, 1, 0, stream_>>>(dp_.counts_all, comm_.size(), comm_.rank(), ws_.counts);
    GRPOKIT_CUDA_CHECK_LAUNCH();
    if (needs_batch_pass(cfg)) combine_over_ranks(S, ws_.batch);
    launch_selections<P>(cur, batch, cfg, ws_, stream_, selections_after, gathered);
    launch_accumulate<P>(cur, batch, cfg, grads, ws_, stream_);
    combine_over_ranks(S, ws_.partials);
  }
  // After every kernel that may raise a flag: every rank's status, merged into this rank's.
  void agree_on_status() const {
    gather_status();
    merge_status_kernel<<<1, 1, 0, stream_>>>(dp_.counts_all, dp_.status_all, comm_.size(), comm_.rank(), ws_.st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  // The same gathers as run() from a rank whose input was rejected (agree_on_status follows); the
  // configuration, the same on every rank, says whether there is a batch pass and a selection.
  void run_rejected(const loss_config& cfg) const {
    gather_empty_histograms(cfg, selections_first);
    gather_counts(nullptr, 0, true);
    if (needs_batch_pass(cfg)) {
      clear_partials(0);
      gather_partials();
    }
    gather_empty_histograms(cfg, selections_after);
    clear_partials(0);
    gather_partials();
  }

 private:
  // A rejected rank's part in the rounds of the selections `which` the configuration needs: its
  // histograms, every round, empty.
  template <class Which>
  void gather_empty_histograms(const loss_config& cfg, const Which& selections) const {
    for (const selection which : selections) {
      if (!needs_selection(cfg, which)) continue;
      GRPOKIT_CUDA_CHECK(cudaMemsetAsync(ws_.select_hist, 0, select_hist_size * sizeof(long long), stream_));
      for (int round = 0; round < selection_rounds(which); ++round) gather_histograms();
    }
  }
  // The partials ws.partials[0, S) of every rank combined into *out: under batch_invariant the
  // one-process tree over all of them, otherwise each rank's total, in rank order.
  void combine_over_ranks(std::int64_t S, detail::loss_partial* out) const {
    if constexpr (P::order == reduction_order::batch_invariant) {
      clear_partials(S);
      gather_partials();
      gathered_tree_kernel<<<1, device::tuning::sequence_threads, 0, stream_>>>(
          dp_.partials_all, dp_.counts_all, comm_.size(), dp_.cap, dp_.tree, out);
    } else {
      launch_partials_tree(ws_.partials, S, stream_);
      gather_partials();
      combine_totals_kernel<<<1, 1, 0, stream_>>>(dp_.partials_all, comm_.size(), out);
    }
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  void gather_counts(const long long* counts, std::int64_t S, bool rejected) const {
    pack_counts_kernel<<<1, 1, 0, stream_>>>(counts, S, rejected ? 1 : 0, dp_.counts_send);
    GRPOKIT_CUDA_CHECK_LAUNCH();
    device_all_gather(comm_, dp_.counts_send, dp_.counts_all, 4 * sizeof(long long), stream_);
  }
  void clear_partials(std::int64_t S) const {  // the slots past S are sent too: defined bytes
    if (S < dp_.cap)
      GRPOKIT_CUDA_CHECK(cudaMemsetAsync(ws_.partials + S, 0, (dp_.cap - S) * sizeof(detail::loss_partial), stream_));
  }
  void gather_partials() const {
    device_all_gather(comm_, ws_.partials, dp_.partials_all, dp_.cap * sizeof(detail::loss_partial), stream_);
  }
  std::pair<const long long*, int> gather_histograms() const {
    device_all_gather(comm_, ws_.select_hist, dp_.hist_all, select_hist_size * sizeof(long long), stream_);
    return {dp_.hist_all, comm_.size()};
  }
  void gather_status() const { device_all_gather(comm_, ws_.st, dp_.status_all, sizeof(device::status), stream_); }

  const DP& comm_;
  const layout<P>& ws_;
  const dp_buffers& dp_;
  cudaStream_t stream_;
};

inline void require_within_plan(const device::shape& actual, const device::shape& planned) {
  GRPOKIT_REQUIRE(actual.tokens <= planned.tokens && actual.vocab <= planned.vocab && actual.seqs <= planned.seqs,
                  "call over a layout larger than its plan: T = ", actual.tokens, ", V = ", actual.vocab, ", S = ",
                  actual.seqs, " against the planned T = ", planned.tokens, ", V = ", planned.vocab, ", S = ",
                  planned.seqs, " (size every rank's workspace for the largest rank)");
}

}  // namespace grpokit::detail

namespace grpokit::detail {

// The row steps of a call under TP: none, the backward's (the slices, the rows' maxima), or the
// forward's (those and the tiles).
enum class rows_step { none, backward, forward };

// The collectives of one call over a layout, in the order every rank makes them, whether its input
// was accepted or rejected (a rejected rank takes part with flags, then throws).
template <class P, class DP, class TP>
class distributed_steps {
 public:
  distributed_steps(const DP& dp, const TP& tp, const distributed_workspace<P, DP, TP>& w, cudaStream_t stream)
      : w_(w), dp_(dp, w.ws, w.dp, stream), tp_(tp, w.ws, w.tp, stream), stream_(stream) {}
  static constexpr bool by_dp = !std::is_same<DP, single_process>::value;
  static constexpr bool by_tp = !std::is_same<TP, single_process>::value;

  // Runs `check`; on a rejection makes the collectives of the call's steps with flags, then rethrows.
  // `loss`: the configuration of the call's policy loss, or null without one.
  template <class Check>
  void check_or_take_part(Check&& check, rows_step rows, const loss_config* loss) const {
    check_or_else(check, [&] {
      rows_rejected(rows);
      if (loss != nullptr) loss_rejected(*loss);
    });
  }
  // Runs `check`; on a rejection runs `take_part` (the call's steps with flags: rows_rejected,
  // loss_rejected, in the call's order), agrees on the status, then rethrows.
  template <class Check, class TakePart>
  void check_or_else(Check&& check, TakePart&& take_part) const {
    std::exception_ptr rejected;
    try {
      check();
    } catch (...) {  // any exception (std::bad_alloc too): the other ranks must not wait
      rejected = std::current_exception();
    }
    if (!rejected) return;
    reset_status(w_.ws.st, stream_);
    take_part();
    agree_on_status();
    std::rethrow_exception(rejected);
  }
  void rows_rejected(rows_step rows) const {
    if constexpr (by_tp) {
      if (rows != rows_step::none) {
        tp_.exchange_slice(0, 0, true);
        tp_.whole_row_max(logits_input<storage_t<P>, accum_t<P>>{}, loss_config{}, true);
      }
      if (rows == rows_step::forward) tp_.forward_rejected();
    }
  }
  void loss_rejected(const loss_config& cfg) const {
    if constexpr (by_dp) dp_.run_rejected(cfg);
  }
  // logp, entropy, lse of every row (over the TP slices, or the rows of this rank alone).
  // first_row: the index of row 0 in the caller's batch (the status reports rows by it).
  void forward(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
               const token_stats<accum_t<P>>& out, std::int64_t first_row = 0) const {
    if constexpr (by_tp) {
      backward_only(in, cfg);
      tp_.forward(in, cfg, out, first_row);
    } else {
      launch_forward<P>(in, cfg, out, w_.ws, stream_, first_row);
    }
  }
  // What logits_backward needs first: the slices and, with pruning, the whole rows' maxima.
  void backward_only(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg) const {
    if constexpr (by_tp) {
      tp_.exchange_slice(in.logits.cols, in.logits.rows, false);
      tp_.whole_row_max(in, cfg, false);
    }
  }
  void policy_loss(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                   const loss_config& cfg, const policy_grads<accum_t<P>>& grads) const {
    if constexpr (by_dp)
      dp_.run(cur, batch, cfg, grads);
    else
      launch_policy_loss<P>(cur, batch, cfg, grads, w_.ws, stream_);
  }
  // For the backward of this rank's columns (after forward: under TP the whole rows' maxima are in
  // the workspace): the slice, or null without TP.
  const long long* slice() const { return by_tp ? w_.tp.slice : nullptr; }
  // After every kernel that may raise a flag: over TP, then over DP (a TP peer's error reaches DP).
  void agree_on_status() const {
    if constexpr (by_tp) tp_.agree_on_status();
    if constexpr (by_dp) dp_.agree_on_status();
  }

 private:
  const distributed_workspace<P, DP, TP>& w_;
  dp_policy_loss<P, DP> dp_;
  tp_rows<P, TP> tp_;
  cudaStream_t stream_;
};

template <class DP, class TP>
constexpr bool check_device_layout() {
  static_assert(check_device_communicator<DP>() && check_device_communicator<TP>());
  return true;
}

// Bytes of workspace of a call planned for `planned` over the communicators, with its room, whatever
// the alignment of the pointer given.
template <class P, class DP, class TP>
std::size_t planned_workspace_bytes(const device::shape& planned, const DP& dp, const TP& tp,
                                    const call_room& room = {}) {
  return distributed_workspace<P, DP, TP>(nullptr, 0, planned, dp, tp, /*planning=*/true, room).used +
         workspace_alignment - 1;
}

// The communicator of an axis a call does not use.
inline const single_process no_peers{};

// One call over the communicators `dp` and `tp` (a layout, or one of its axes with no_peers for the
// other): its workspace and its collectives. The communicators must outlive the call.
template <class P, class DP, class TP>
struct distributed_call {
  distributed_call(const DP& dp, const TP& tp, void* workspace, std::size_t bytes, const device::shape& planned,
                   cudaStream_t stream, const call_room& room = {})
      : w(workspace, bytes, planned, dp, tp, false, room), steps(dp, tp, w, stream) {}
  distributed_call(const distributed_call&) = delete;
  distributed_call& operator=(const distributed_call&) = delete;
  const distributed_workspace<P, DP, TP> w;
  const distributed_steps<P, DP, TP> steps;
};

// fused_linear_loss over a layout: the workspace's room (the chunk buffers for planned.vocab
// columns; the TP steps are one token chunk of rows).
template <class P>
call_room linear_room(const device::shape& planned, std::int64_t token_chunk) {
  const std::int64_t C = linear_chunk_rows(token_chunk, planned.tokens);
  return call_room{linear_chunk_buffers<storage_t<P>, accum_t<P>>::bytes(C, planned.vocab, 0), C};
}

// device::fused_linear_loss_async over a layout with its GEMMs done by `gemm` (ordered on `stream`);
// gemm_error: why `gemm` cannot run (a null handle), a rejection like any other.
template <class P, class Gemm, class DP, class TP>
void fused_linear_loss_with(const Gemm& gemm, const linear_input<storage_t<P>, accum_t<P>>& in,
                            const rollout_batch<accum_t<P>>& batch, const loss_config& cfg, std::int64_t token_chunk,
                            const linear_grads<storage_t<P>, accum_t<P>>& grads, void* workspace,
                            std::size_t workspace_bytes, const device::shape& planned,
                            const parallel_layout<DP, TP>& layout, cudaStream_t stream,
                            const fused_outputs<accum_t<P>>& extra, const char* gemm_error = nullptr) {
  using Q = typename P::template with_storage<accum_t<P>>;
  static_assert(check_device_layout<DP, TP>());
  const call_room room = linear_room<P>(planned, token_chunk);
  const distributed_call<Q, DP, TP> call(layout.dp, layout.tp, workspace, workspace_bytes, planned, stream, room);
  const auto& steps = call.steps;
  const auto& ws = call.w.ws;
  const std::int64_t C = room.step_rows;
  // under TP every rank walks the plan's chunks (the same collectives); otherwise its own
  const std::int64_t chunks = ((steps.by_tp ? planned.tokens : in.hidden.rows) + C - 1) / C;
  steps.check_or_else(
      [&] {
        GRPOKIT_REQUIRE(gemm_error == nullptr, gemm_error);
        check_linear_inputs<P>(in, batch, cfg, token_chunk, grads, extra, lm_head_norms{});
        if (steps.by_tp) require_no_sampler_support(cfg, "device fused_linear_loss, over a vocabulary split");
        GRPOKIT_REQUIRE(extra.sum_p2.empty() || layout.tp.size() == 1,
                        "device fused_linear_loss: sum_p2 under vocabulary parallelism is host-only for now");
        require_within_plan(device::shape{in.hidden.rows, in.weight.rows, batch.seq_offsets.size() - 1}, planned);
      },
      [&] {
        for (std::int64_t k = 0; k < chunks; ++k) steps.rows_rejected(rows_step::forward);
        steps.loss_rejected(cfg);
        for (std::int64_t k = 0; k < chunks; ++k) steps.rows_rejected(rows_step::backward);
      });
  reset_status(ws.st, stream);
  const linear_chunk_buffers<storage_t<P>, accum_t<P>> buf(call.w.local, C, in.weight.rows);
  linear_chunks<P>(gemm, steps, ws, buf, C, chunks, in, batch, cfg, grads, extra, lm_head_norms{}, stream);
  steps.agree_on_status();
  launch_finish_loss<Q>(cfg, ws, stream);
}

}  // namespace grpokit::detail

namespace grpokit::device {

// Bytes of workspace of a call over `layout` planned for `planned` (planned.seqs: the most
// sequences of any DP rank; planned.vocab: the most columns of any TP rank), whatever the
// alignment of the pointer given.
template <class P, class DP, class TP>
std::size_t workspace_bytes(const shape& planned, const parallel_layout<DP, TP>& layout) {
  static_assert(detail::check_device_layout<DP, TP>());
  return detail::planned_workspace_bytes<P>(planned, layout.dp, layout.tp);
}

// logp, entropy and lse of every row over the vocabulary slices of layout.tp (layout.dp: unused,
// each DP rank's rows are its own), without blocking the host (with NCCL); read_status.
template <class P, class DP, class TP>
void token_logprobs(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
                    const token_stats<accum_t<P>>& out, void* workspace, std::size_t workspace_bytes,
                    const shape& planned, const parallel_layout<DP, TP>& layout, cudaStream_t stream = 0) {
  static_assert(detail::check_device_layout<DP, TP>());
  const detail::distributed_call<P, single_process, TP> call(detail::no_peers, layout.tp, workspace, workspace_bytes,
                                                             planned, stream);
  const auto& w = call.w;
  const auto& steps = call.steps;
  steps.check_or_take_part(
      [&] {
        detail::require_logits_shapes(in, cfg);
        if (steps.by_tp) detail::require_no_sampler_support(cfg, "device, over a vocabulary split");
        detail::require_size("logp", out.logp, in.logits.rows);
        detail::require_size("lse", out.lse, in.logits.rows);
        detail::require_size_or_empty("entropy", out.entropy, in.logits.rows);
        GRPOKIT_REQUIRE(out.sum_p2.empty(), "device token_logprobs over a layout: sum_p2 is not supported yet (the "
                                            "single-process device call and the host's layout call have it)");
        detail::require_within_plan(shape{in.logits.rows, in.logits.cols, 0}, planned);
      },
      detail::rows_step::forward, /*loss=*/nullptr);
  detail::reset_status(w.ws.st, stream);
  steps.forward(in, cfg, out);
  steps.agree_on_status();
}

// dlogits of this rank's columns over the vocabulary slices of layout.tp from the saved lse /
// entropy and the gradients (layout.dp: unused), without blocking the host (with NCCL); read_status.
template <class P, class DP, class TP>
void logits_backward(const logits_input<storage_t<P>, accum_t<P>>& in, const backward_inputs<accum_t<P>>& g,
                     const loss_config& cfg, const matrix_view<storage_t<P>>& dlogits, void* workspace,
                     std::size_t workspace_bytes, const shape& planned, const parallel_layout<DP, TP>& layout,
                     cudaStream_t stream = 0, backward_mode mode = backward_mode::separate) {
  static_assert(detail::check_device_layout<DP, TP>());
  const detail::distributed_call<P, single_process, TP> call(detail::no_peers, layout.tp, workspace, workspace_bytes,
                                                             planned, stream);
  const auto& w = call.w;
  const auto& steps = call.steps;
  steps.check_or_take_part(
      [&] {
        detail::require_logits_shapes(in, cfg);
        if (steps.by_tp) detail::require_no_sampler_support(cfg, "device, over a vocabulary split");
        detail::require_backward_shapes(in, g, dlogits, mode);
        detail::require_within_plan(shape{in.logits.rows, in.logits.cols, 0}, planned);
      },
      detail::rows_step::backward, /*loss=*/nullptr);
  detail::reset_status(w.ws.st, stream);
  steps.backward_only(in, cfg);
  detail::launch_backward<P>(in, g, cfg, dlogits, w.ws, stream, 0, steps.slice());
  steps.agree_on_status();
}

// policy_loss over layout.dp (layout.tp: unused, every TP rank computes the same), without
// blocking the host (with NCCL).
template <class P, class DP, class TP>
void policy_loss_async(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                       const loss_config& cfg, const policy_grads<accum_t<P>>& grads, void* workspace,
                       std::size_t workspace_bytes, const shape& planned, const parallel_layout<DP, TP>& layout,
                       cudaStream_t stream = 0) {
  static_assert(detail::check_device_layout<DP, TP>());
  const detail::distributed_call<P, DP, single_process> call(layout.dp, detail::no_peers, workspace, workspace_bytes,
                                                             planned, stream);
  const auto& w = call.w;
  const auto& steps = call.steps;
  steps.check_or_take_part(
      [&] {
        detail::check_policy_shapes<P>(cur, batch, cfg, grads);
        detail::require_within_plan(shape{0, 0, batch.seq_offsets.size() - 1}, planned);
      },
      detail::rows_step::none, &cfg);
  detail::reset_status(w.ws.st, stream);
  steps.policy_loss(cur, batch, cfg, grads);
  steps.agree_on_status();
  detail::launch_finish_loss<P>(cfg, w.ws, stream);
}

template <class P, class DP, class TP>
loss_result policy_loss(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                        const loss_config& cfg, const policy_grads<accum_t<P>>& grads, void* workspace,
                        std::size_t workspace_bytes, const shape& planned, const parallel_layout<DP, TP>& layout,
                        cudaStream_t stream = 0) {
  policy_loss_async<P>(cur, batch, cfg, grads, workspace, workspace_bytes, planned, layout, stream);
  return read_loss_result(workspace, stream);
}

// fused_loss over the layout: the rows over layout.tp, the policy loss over layout.dp, dlogits of
// this rank's rows and columns. Without blocking the host (with NCCL).
template <class P, class DP, class TP>
void fused_loss_async(const logits_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                      const loss_config& cfg, const matrix_view<storage_t<P>>& dlogits, void* workspace,
                      std::size_t workspace_bytes, const shape& planned, const parallel_layout<DP, TP>& layout,
                      cudaStream_t stream = 0, const fused_outputs<accum_t<P>>& extra = {},
                      backward_mode mode = backward_mode::separate) {
  static_assert(detail::check_device_layout<DP, TP>());
  const detail::distributed_call<P, DP, TP> call(layout.dp, layout.tp, workspace, workspace_bytes, planned, stream);
  const auto& w = call.w;
  const auto& steps = call.steps;
  const detail::fused_loss_steps<P> rows{in, batch, cfg, dlogits, extra, mode};
  steps.check_or_take_part(
      [&] {
        rows.check_inputs();
        if (steps.by_tp) detail::require_no_sampler_support(cfg, "device, over a vocabulary split");
        GRPOKIT_REQUIRE(extra.sum_p2.empty() || layout.tp.size() == 1,
                        "device fused_loss: sum_p2 under vocabulary parallelism is host-only for now");
        detail::require_within_plan(shape{in.logits.rows, in.logits.cols, batch.seq_offsets.size() - 1}, planned);
        rows.check_views(w.ws);
      },
      detail::rows_step::forward, &cfg);
  detail::reset_status(w.ws.st, stream);
  steps.forward(in, cfg, rows.stats(w.ws));
  rows.sum_p2(w.ws, stream);  // one TP rank (checked)
  steps.policy_loss(rows.cur(w.ws), batch, cfg, rows.grads(w.ws));
  rows.backward(w.ws, stream, steps.slice());
  steps.agree_on_status();
  detail::launch_finish_loss<P>(cfg, w.ws, stream);
}

// fused_linear_loss over the layout, with cuBLAS GEMMs on `stream`: weight (and bias, dweight,
// dbias) are this rank's vocabulary rows of the LM head (layout.tp), hidden the whole [T, D] on
// every TP rank, the sequences this rank's (layout.dp). dhidden is this rank's part,
// dlogits_slice W_slice: the caller sums it over the TP ranks (Megatron's column-parallel linear
// backward); dweight and dbias the rank's tokens' contribution to its rows: the caller sums them
// over the DP ranks. token_chunk, like `planned` (planned.vocab: the most rows of the head on any
// TP rank), must be the same on every rank: under TP every rank walks the plan's token chunks.
// Workspace: linear_workspace_bytes(planned, token_chunk, layout). Over a layout the device has no
// lm_head_norms, and no sum_p2 under TP (the host has both).
template <class P, class DP, class TP>
std::size_t linear_workspace_bytes(const shape& planned, std::int64_t token_chunk,
                                   const parallel_layout<DP, TP>& layout) {
  using Q = typename P::template with_storage<accum_t<P>>;
  static_assert(detail::check_device_layout<DP, TP>());
  return detail::planned_workspace_bytes<Q>(planned, layout.dp, layout.tp, detail::linear_room<P>(planned, token_chunk));
}

template <class P, class DP, class TP>
void fused_linear_loss_async(const linear_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                             const loss_config& cfg, std::int64_t token_chunk,
                             const linear_grads<storage_t<P>, accum_t<P>>& grads, cublasHandle_t handle,
                             void* workspace, std::size_t workspace_bytes, const shape& planned,
                             const parallel_layout<DP, TP>& layout, cudaStream_t stream = 0,
                             const fused_outputs<accum_t<P>>& extra = {}) {
  detail::fused_linear_loss_with<P>(detail::cublas_gemm{handle, stream}, in, batch, cfg, token_chunk, grads, workspace,
                                    workspace_bytes, planned, layout, stream, extra,
                                    handle == nullptr ? "fused_linear_loss: null cuBLAS handle" : nullptr);
}

template <class P, class DP, class TP>
loss_result fused_linear_loss(const linear_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                              const loss_config& cfg, std::int64_t token_chunk,
                              const linear_grads<storage_t<P>, accum_t<P>>& grads, cublasHandle_t handle,
                              void* workspace, std::size_t workspace_bytes, const shape& planned,
                              const parallel_layout<DP, TP>& layout, cudaStream_t stream = 0,
                              const fused_outputs<accum_t<P>>& extra = {}) {
  fused_linear_loss_async<P>(in, batch, cfg, token_chunk, grads, handle, workspace, workspace_bytes, planned, layout,
                             stream, extra);
  return read_loss_result(workspace, stream);
}

template <class P, class DP, class TP>
loss_result fused_loss(const logits_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                       const loss_config& cfg, const matrix_view<storage_t<P>>& dlogits, void* workspace,
                       std::size_t workspace_bytes, const shape& planned, const parallel_layout<DP, TP>& layout,
                       cudaStream_t stream = 0, const fused_outputs<accum_t<P>>& extra = {},
                       backward_mode mode = backward_mode::separate) {
  fused_loss_async<P>(in, batch, cfg, dlogits, workspace, workspace_bytes, planned, layout, stream, extra, mode);
  return read_loss_result(workspace, stream);
}

// compute_advantages over layout.dp: rank r holds the rewards (and log-ratios, weights) of a
// contiguous run of the global sequences, ranks in order, any split: a group may straddle ranks;
// group_offsets and group_baseline are the global ones, the same on every rank (checked). The
// ranks' sequence counts are gathered and read back (the host waits once here, and once more for
// the statistics), the inputs gathered, and every rank runs the one-process kernels on the whole
// batch (bitwise the one-process result, for every policy) and keeps its own sequences.
// planned.seqs: the most sequences of any rank. layout.tp: unused.
template <class P, class DP, class TP>
advantage_stats compute_advantages(const advantage_inputs<accum_t<P>>& in, const advantage_config& cfg,
                                   const advantage_outputs<accum_t<P>>& out, void* workspace,
                                   std::size_t workspace_bytes, const shape& planned,
                                   const parallel_layout<DP, TP>& layout, cudaStream_t stream = 0) {
  using Real = accum_t<P>;
  using B = typename P::baseline_type;
  static_assert(detail::check_device_layout<DP, TP>());
  const detail::distributed_workspace<P, DP, single_process> w(workspace, workspace_bytes, planned, layout.dp,
                                                                detail::no_peers);
  const detail::dp_buffers& b = w.dp;
  const std::int64_t S = in.rewards.size();
  // 1. the checks, and what every rank must agree on: its count, which inputs it has, the groups
  std::exception_ptr rejected;
  long long mine[4] = {0, 0, 0, 1};
  try {
    detail::require_advantage_shapes(in, cfg, out, detail::needs_log_ratio<B>::value,
                                     detail::needs_group_baseline<B>::value, detail::needs_seq_tokens<B>::value);
    GRPOKIT_REQUIRE(S <= planned.seqs, "compute_advantages: ", S, " sequences, more than the plan's ", planned.seqs,
                    " (size every rank's workspace for the largest rank)");
    std::vector<std::int64_t> offsets(static_cast<std::size_t>(in.group_offsets.size()));
    std::vector<Real> baseline(static_cast<std::size_t>(in.group_baseline.size()));
    GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(offsets.data(), in.group_offsets.data(), offsets.size() * sizeof(std::int64_t),
                                       cudaMemcpyDeviceToHost, stream));
    if (!baseline.empty())
      GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(baseline.data(), in.group_baseline.data(), baseline.size() * sizeof(Real),
                                         cudaMemcpyDeviceToHost, stream));
    GRPOKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::uint64_t groups = detail::values_fingerprint(span<const std::int64_t>(offsets.data(), offsets.size())) ^
                                 (detail::values_fingerprint(span<const Real>(baseline.data(), baseline.size())) * 31);
    mine[0] = S;
    mine[1] = (in.seq_log_ratio.empty() ? 0 : 1) | (in.seq_weight.empty() ? 0 : 2) | (in.seq_tokens.empty() ? 0 : 4);
    mine[2] = static_cast<long long>(groups);
    mine[3] = 0;
  } catch (...) {
    rejected = std::current_exception();
  }
  detail::pack4_kernel<<<1, 1, 0, stream>>>(mine[0], mine[1], mine[2], mine[3], b.counts_send);
  GRPOKIT_CUDA_CHECK_LAUNCH();
  detail::device_all_gather(layout.dp, b.counts_send, b.counts_all, 4 * sizeof(long long), stream);
  const int R = layout.dp.size(), me = layout.dp.rank();
  std::vector<long long> all(4 * static_cast<std::size_t>(R));
  GRPOKIT_CUDA_CHECK(
      cudaMemcpyAsync(all.data(), b.counts_all, all.size() * sizeof(long long), cudaMemcpyDeviceToHost, stream));
  GRPOKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (rejected) std::rethrow_exception(rejected);
  std::vector<std::int64_t> begin(static_cast<std::size_t>(R) + 1, 0);
  for (int r = 0; r < R; ++r) {
    const long long* a = &all[4 * static_cast<std::size_t>(r)];
    if (a[3] != 0) detail::fail("compute_advantages: data-parallel rank ", r, " rejected its input (see that rank's error)");
    GRPOKIT_REQUIRE(a[2] == mine[2], "compute_advantages: every rank must pass the same group_offsets and group_baseline");
    // an optional per-sequence input is given by every rank that has sequences, or by none
    if (a[0] > 0 && mine[0] > 0)
      GRPOKIT_REQUIRE(a[1] == mine[1], "compute_advantages: seq_log_ratio / seq_weight / seq_tokens given by some "
                                       "ranks and not by others");
    begin[static_cast<std::size_t>(r) + 1] = begin[static_cast<std::size_t>(r)] + a[0];
  }
  long long inputs = 0;  // which per-sequence inputs the batch has (from any rank with sequences)
  for (int r = 0; r < R; ++r)
    if (all[4 * static_cast<std::size_t>(r)] > 0) inputs = all[4 * static_cast<std::size_t>(r) + 1];
  const std::int64_t total = begin.back();
  // 2. the per-sequence inputs of every rank, then the whole batch in rank order
  Real* send = reinterpret_cast<Real*>(b.adv_send);
  Real* gathered = reinterpret_cast<Real*>(b.adv_all);
  Real* whole = reinterpret_cast<Real*>(b.adv_whole);
  constexpr int K = detail::advantage_sources;
  const span<const Real> sources[K] = {in.rewards, in.seq_log_ratio, in.seq_weight, in.seq_tokens};
  const bool present[K] = {true, (inputs & 1) != 0, (inputs & 2) != 0, (inputs & 4) != 0};
  const std::int64_t n = b.seqs;
  GRPOKIT_CUDA_CHECK(cudaMemsetAsync(send, 0, K * n * sizeof(Real), stream));  // defined bytes past S
  for (int k = 0; k < K; ++k)
    if (present[k] && S > 0)
      GRPOKIT_CUDA_CHECK(
          cudaMemcpyAsync(send + k * n, sources[k].data(), S * sizeof(Real), cudaMemcpyDeviceToDevice, stream));
  detail::device_all_gather(layout.dp, send, gathered, K * n * sizeof(Real), stream);
  for (int k = 0; k < K; ++k)
    for (int r = 0; r < R && present[k]; ++r) {
      const std::int64_t count = begin[static_cast<std::size_t>(r) + 1] - begin[static_cast<std::size_t>(r)];
      if (count > 0)
        GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(whole + k * R * n + begin[static_cast<std::size_t>(r)],
                                           gathered + (static_cast<std::int64_t>(r) * K + k) * n, count * sizeof(Real),
                                           cudaMemcpyDeviceToDevice, stream));
    }
  // 3. the one-process call on the whole batch, and this rank's sequences of it
  auto whole_span = [&](int k) { return present[k] ? span<const Real>(whole + k * R * n, total) : span<const Real>{}; };
  const span<Real> adv(whole + K * R * n, total);
  const span<std::uint8_t> keep(b.keep_whole, total);
  std::size_t inner_bytes = b.inner_bytes;
  compute_advantages_async<P>(advantage_inputs<Real>{whole_span(0), in.group_offsets, whole_span(1), whole_span(2),
                                                     in.group_baseline, whole_span(3)},
                              cfg, advantage_outputs<Real>{adv, keep}, b.inner, inner_bytes, stream);
  const std::int64_t first = begin[static_cast<std::size_t>(me)];
  if (S > 0) {
    GRPOKIT_CUDA_CHECK(
        cudaMemcpyAsync(out.adv.data(), adv.data() + first, S * sizeof(Real), cudaMemcpyDeviceToDevice, stream));
    GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(out.seq_mask.data(), keep.data() + first, S, cudaMemcpyDeviceToDevice, stream));
  }
  return read_advantage_stats(b.inner, stream);
}

}  // namespace grpokit::device
