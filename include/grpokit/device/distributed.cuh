#pragma once
// The device entry points over a data-parallel layout (docs/distributed.md): each rank of layout.dp
// holds whole sequences, and every rank gets the loss and metrics of the whole batch and the
// gradients of its own tokens, as on the host (host/data_parallel.hpp):
//   - the token and sequence counts are gathered and summed once (integers: exact);
//   - batch_invariant: every sequence's partial is gathered and the whole batch's partials are
//     combined by the one-process tree (bitwise the one-process result); otherwise each rank's
//     total is gathered and the totals are combined in rank order (within rounding);
//   - the status flags of every rank are gathered: a data error on one rank raises on every rank.
// The communicator is a device communicator (detail/collectives.cuh: nccl_communicator,
// staged_communicator, single_process); everything is ordered on `stream`, and with NCCL nothing
// synchronises the host. Vocabulary parallelism (layout.tp) is host-only for now.
//
// `planned` is the shape the workspace was sized for (workspace_bytes(planned, layout)) and must be
// the same on every rank: planned.seqs, the most sequences any rank holds, sizes the gathers. A
// rank whose input is rejected still takes part in every gather (with a flag), then throws; every
// other rank's status names it. A workspace too small for the plan throws before any gather: the
// other ranks would wait, so size it on every rank from the same plan.
#include <cstdint>
#include <cuda_runtime.h>
#include <exception>
#include <type_traits>

#include "../communicator.hpp"
#include "../detail/loss_partial.hpp"
#include "detail/collectives.cuh"
#include "detail/launch_policy.cuh"
#include "fused_loss.cuh"
#include "policy_loss.cuh"
#include "results.cuh"
#include "status.cuh"
#include "workspace.cuh"

namespace grpokit::detail {

// What a data-parallel call adds to the workspace, after the layout of the planned shape.
struct dp_buffers {
  long long* counts_send = nullptr;          // [4]: tokens, sequences, this rank's S, 1 if it rejected its input
  long long* counts_all = nullptr;           // [4 R]
  device::status* status_all = nullptr;      // [R]
  detail::loss_partial* partials_all = nullptr;  // [R cap]
  detail::loss_partial* tree = nullptr;          // [R cap] (batch_invariant)
  std::int64_t cap = 1;  // partials each rank sends: batch_invariant max(planned.seqs, 1), otherwise its total
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
  return b;
}

// The layout of `planned` (a plan for T covers every T' <= T) and the data-parallel buffers after it.
template <class P>
struct dp_workspace {
  layout<P> ws;
  dp_buffers dp;
  std::size_t used = 0;
  dp_workspace(void* workspace, std::size_t bytes, const device::shape& planned, int ranks, bool planning = false)
      : ws(workspace, bytes, planned, planning) {
    const std::size_t lost = planning ? 0 : static_cast<std::size_t>(ws.base - static_cast<char*>(workspace));
    carver c(planning ? nullptr : ws.base + ws.used, planning ? 0 : bytes - lost - ws.used);
    dp = take_dp_buffers<P>(c, planned, ranks);
    used = ws.used + c.used();
  }
};

__global__ void __launch_bounds__(1)
    pack_counts_kernel(const long long* counts, long long seqs, long long rejected, long long* send) {
  send[0] = counts != nullptr ? counts[0] : 0;
  send[1] = counts != nullptr ? counts[1] : 0;
  send[2] = seqs;
  send[3] = rejected;
}

// The counts of the whole batch, summed in rank order (integers: any order gives the same).
__global__ void __launch_bounds__(1) sum_counts_kernel(const long long* all, int ranks, long long* counts) {
  long long tokens = 0, seqs = 0;
  for (int r = 0; r < ranks; ++r) {
    tokens += all[4 * r];
    seqs += all[4 * r + 1];
  }
  counts[0] = tokens;
  counts[1] = seqs;
}

// batch_invariant: every rank's partials (rank r's S_r first of its cap slots) in global order,
// combined by the one-process tree (detail::tree_reduce, tree_level_kernel) in one block.
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
__global__ void __launch_bounds__(1) combine_totals_kernel(const detail::loss_partial* all, int ranks,
                                                           detail::loss_partial* out) {
  detail::loss_partial sum = all[0];
  for (int r = 1; r < ranks; ++r) sum = detail::combine(sum, all[r]);
  *out = sum;
}

// The first other rank that rejected its input or raised a status flag, into this rank's status.
static_assert(sizeof(device::status) == 6 * sizeof(unsigned long long),
              "merge_status_kernel reads every status field: add a new one there");
__global__ void __launch_bounds__(1) merge_status_kernel(const long long* counts_all, const device::status* all,
                                                         int ranks, int me, device::status* st) {
  constexpr unsigned long long none = ~0ull;
  for (int r = 0; r < ranks; ++r) {
    if (r == me) continue;
    const device::status& o = all[r];
    const bool raised = counts_all[4 * r + 3] != 0 || o.bad_target != none || o.non_finite != none ||
                        o.non_finite_seq != none || o.bad_offsets != none || o.bad_value != none;
    if (raised) {
      st->other_rank = static_cast<unsigned long long>(r) + 1ull;
      return;
    }
  }
}

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
    launch_summarize<P>(cur, batch, cfg, ws_, stream_);
    gather_counts(ws_.counts, S, false);
    sum_counts_kernel<<<1, 1, 0, stream_>>>(dp_.counts_all, comm_.size(), ws_.counts);
    GRPOKIT_CUDA_CHECK_LAUNCH();
    launch_accumulate<P>(cur, batch, cfg, grads, ws_, stream_);
    if constexpr (P::order == reduction_order::batch_invariant) {
      clear_partials(S);
      gather_partials();
      gathered_tree_kernel<<<1, device::tuning::sequence_threads, 0, stream_>>>(
          dp_.partials_all, dp_.counts_all, comm_.size(), dp_.cap, dp_.tree, ws_.partials);
    } else {
      launch_partials_tree(ws_.partials, S, stream_);
      gather_partials();
      combine_totals_kernel<<<1, 1, 0, stream_>>>(dp_.partials_all, comm_.size(), ws_.partials);
    }
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  // After every kernel that may raise a flag: every rank's status, merged into this rank's.
  void agree_on_status() const {
    gather_status();
    merge_status_kernel<<<1, 1, 0, stream_>>>(dp_.counts_all, dp_.status_all, comm_.size(), comm_.rank(), ws_.st);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
  // The same gathers from a rank whose input was rejected.
  void take_part_rejected() const {
    reset_status(ws_.st, stream_);
    gather_counts(nullptr, 0, true);
    clear_partials(0);
    gather_partials();
    gather_status();
  }

 private:
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
  void gather_status() const { device_all_gather(comm_, ws_.st, dp_.status_all, sizeof(device::status), stream_); }

  const DP& comm_;
  const layout<P>& ws_;
  const dp_buffers& dp_;
  cudaStream_t stream_;
};

template <class TP>
constexpr bool check_device_layout() {
  static_assert(std::is_same<TP, single_process>::value,
                "grpokit device entry points: vocabulary parallelism (layout.tp) is not supported on the device "
                "yet; use data_parallel(comm) here, or the host entry points (host/distributed.hpp)");
  return true;
}

// Runs `check` (host-side checks and the plan); on a rejection takes part in the gathers, then rethrows.
template <class P, class DP, class Check>
void checked_or_take_part(const dp_policy_loss<P, DP>& steps, Check&& check) {
  std::exception_ptr rejected;
  try {
    check();
  } catch (...) {  // any exception (std::bad_alloc too): the other ranks must not wait
    rejected = std::current_exception();
  }
  if (rejected) {
    steps.take_part_rejected();
    std::rethrow_exception(rejected);
  }
}

inline void require_within_plan(const device::shape& actual, const device::shape& planned) {
  GRPOKIT_REQUIRE(actual.tokens <= planned.tokens && actual.vocab <= planned.vocab && actual.seqs <= planned.seqs,
                  "data-parallel call larger than its plan: T = ", actual.tokens, ", V = ", actual.vocab, ", S = ",
                  actual.seqs, " against the planned T = ", planned.tokens, ", V = ", planned.vocab, ", S = ",
                  planned.seqs, " (size every rank's workspace for the largest rank)");
}

}  // namespace grpokit::detail

namespace grpokit::device {

// Bytes of workspace of a data-parallel call planned for `planned` (planned.seqs: the most
// sequences of any rank), whatever the alignment of the pointer given.
template <class P, class DP, class TP>
std::size_t workspace_bytes(const shape& planned, const parallel_layout<DP, TP>& layout) {
  static_assert(detail::check_device_layout<TP>() && detail::check_device_communicator<DP>());
  return detail::dp_workspace<P>(nullptr, 0, planned, layout.dp.size(), /*planning=*/true).used +
         detail::workspace_alignment - 1;
}

// policy_loss over the data-parallel layout, without blocking the host (with NCCL).
template <class P, class DP, class TP>
void policy_loss_async(const current_policy<accum_t<P>>& cur, const rollout_batch<accum_t<P>>& batch,
                       const loss_config& cfg, const policy_grads<accum_t<P>>& grads, void* workspace,
                       std::size_t workspace_bytes, const shape& planned, const parallel_layout<DP, TP>& layout,
                       cudaStream_t stream = 0) {
  static_assert(detail::check_device_layout<TP>() && detail::check_device_communicator<DP>());
  const detail::dp_workspace<P> w(workspace, workspace_bytes, planned, layout.dp.size());
  const detail::dp_policy_loss<P, DP> steps(layout.dp, w.ws, w.dp, stream);
  detail::checked_or_take_part(steps, [&] {
    detail::check_policy_shapes<P>(cur, batch, cfg, grads);
    detail::require_within_plan(shape{0, 0, batch.seq_offsets.size() - 1}, planned);
  });
  detail::reset_status(w.ws.st, stream);
  steps.run(cur, batch, cfg, grads);
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

// fused_loss over the data-parallel layout: the rows are the rank's own (nothing gathered); the
// policy loss and the status as above. Without blocking the host (with NCCL).
template <class P, class DP, class TP>
void fused_loss_async(const logits_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                      const loss_config& cfg, const matrix_view<storage_t<P>>& dlogits, void* workspace,
                      std::size_t workspace_bytes, const shape& planned, const parallel_layout<DP, TP>& layout,
                      cudaStream_t stream = 0, const fused_outputs<accum_t<P>>& extra = {},
                      backward_mode mode = backward_mode::separate) {
  static_assert(detail::check_device_layout<TP>() && detail::check_device_communicator<DP>());
  const detail::dp_workspace<P> w(workspace, workspace_bytes, planned, layout.dp.size());
  const detail::dp_policy_loss<P, DP> dp(layout.dp, w.ws, w.dp, stream);
  const detail::fused_loss_steps<P> steps{in, batch, cfg, dlogits, extra, mode};
  detail::checked_or_take_part(dp, [&] {
    steps.check_inputs();
    detail::require_within_plan(shape{in.logits.rows, in.logits.cols, batch.seq_offsets.size() - 1}, planned);
    steps.check_views(w.ws);
  });
  detail::reset_status(w.ws.st, stream);
  steps.forward(w.ws, stream);
  dp.run(steps.cur(w.ws), batch, cfg, steps.grads(w.ws));
  steps.backward(w.ws, stream);
  dp.agree_on_status();
  detail::launch_finish_loss<P>(cfg, w.ws, stream);
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

}  // namespace grpokit::device
