#pragma once
// The caller-provided workspace of the device entry points, CUB style: workspace_bytes<P>(shape),
// or an asynchronous entry point called with a null workspace, says how many bytes one needs; the
// entry points carve it from its first 256-byte boundary on (any pointer will do), never allocate.
// Its head (results.cuh) holds the status and the results that the asynchronous forms leave there.
#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <optional>

#include "../detail/loss_partial.hpp"
#include "../metrics.hpp"
#include "../detail/policy_terms.hpp"
#include "../detail/select.hpp"
#include "../math/ops.hpp"
#include "../detail/ops_for.hpp"
#include "../error.hpp"
#include "../math/online_lse.hpp"
#include "../policy.hpp"
#include "status.cuh"
#include "tuning.cuh"

namespace grpokit::device {

// The problem size a workspace is planned for (an entry point may use less).
struct shape {
  std::int64_t tokens = 0;  // T
  std::int64_t vocab = 0;   // V
  std::int64_t seqs = 0;    // S
};

}  // namespace grpokit::device

namespace grpokit::detail {

constexpr std::size_t align_up(std::size_t n) { return (n + 255) / 256 * 256; }

// The per-sequence math of policy P (its summaries live in the workspace).
template <class P>
using terms_for = detail::policy_terms<P, detail::ops_for<P::order>>;

// Rows are split across blocks (one tile partial per tile, merged by a second kernel) when there
// are few rows and many tiles; the result is the same bits either way.
template <class P>
bool split_rows(std::int64_t T, std::int64_t V) {
  const std::int64_t tiles = (V + P::chunk_size - 1) / P::chunk_size;
  return T <= device::tuning::split_max_rows && tiles >= device::tuning::split_min_tiles;
}

// A bump allocator over the workspace.
class carver {
 public:
  carver(void* base, std::size_t bytes) : base_(static_cast<char*>(base)), bytes_(bytes) {}
  template <class T>
  T* take(std::int64_t n) {
    const std::size_t need = align_up(static_cast<std::size_t>(n > 0 ? n : 0) * sizeof(T));
    if (base_ != nullptr)
      GRPOKIT_REQUIRE(used_ + need <= bytes_, "workspace too small: ", bytes_, " bytes, needs at least ", used_ + need,
                      " (use device::workspace_bytes)");
    T* p = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += need;
    return p;
  }
  std::size_t used() const { return used_; }

 private:
  char* base_;
  std::size_t bytes_;
  std::size_t used_ = 0;
};

// The head of every workspace: where the entry points leave their status and results.
struct workspace_head {
  device::status* st = nullptr;
  loss_result* loss = nullptr;             // fused_loss, policy_loss, fused_linear_loss
  advantage_stats* advantages = nullptr;   // compute_advantages
};
inline workspace_head take_head(carver& c) {
  workspace_head h;
  h.st = c.take<device::status>(1);
  h.loss = c.take<loss_result>(1);
  h.advantages = c.take<advantage_stats>(1);
  return h;
}

// compute_advantages' statistics in the workspace: written by its kernels (zeroed first), read back
// once.
struct advantage_device_stats {
  double reward_mean, reward_std, batch_divisor, ess, ess_ratio, lr_factor;
  unsigned long long offsets_bad;                             // 1: nothing past the check kernel reads
  unsigned long long zero_variance_groups, singleton_groups;  // atomicAdd by the group kernels
  unsigned long long large_groups;                            // how many of adv_large the block kernel takes
  double adv_mean, adv_std;
  unsigned long long excluded_seqs;
  double whiten_shift, whiten_divisor;  // adv_scale::whiten's, else 0 and 1 (the batch kernel's)
};

// Every buffer any entry point takes, in one fixed order: an entry point takes the prefix it needs
// plus its own tail, and workspace_bytes is the size of the whole list. The head (status, loss
// result, advantage statistics) comes first, at the same place for every policy and shape.
template <class P>
struct layout {
  using R = accum_t<P>;
  char* base = nullptr;  // the workspace from its first 256-byte boundary
  device::status* st = nullptr;
  loss_result* result = nullptr;
  advantage_stats* adv_result = nullptr;
  R* row_max = nullptr;                   // [T] vocabulary pruning
  R* support = nullptr;                   // [T] the sampler's support thresholds (top_k, top_p)
  math::lse_partial<R>* tiles = nullptr;  // [T * tiles] split rows
  R *logp = nullptr, *entropy = nullptr, *lse = nullptr, *dlogp = nullptr, *dentropy = nullptr;  // fused
  typename terms_for<P>::sequence_summary* summaries = nullptr;                                  // [S]
  detail::loss_partial* partials = nullptr;                                                      // [S]
  long long* counts = nullptr;  // [3] response tokens, sequences, the index of the first sequence in the batch
  // [1] the total of the batch pass (detail::needs_batch_pass)
  detail::loss_partial* batch = nullptr;
  detail::select_run* select = nullptr;  // [selection_count] the selections' states (detail::needs_selection)
  long long* select_hist = nullptr;      // [select_hist_size] one round's histogram
  double* adv_scratch = nullptr;                                                                 // [6 S] advantages
  std::uint8_t* adv_keep = nullptr;                                                              // [S]
  std::int64_t* adv_large = nullptr;  // [S] the groups of more than tuning::small_group_max rollouts
  advantage_device_stats* adv_stats = nullptr;

  // planning: only the size is wanted (workspace_bytes); otherwise `base` is the caller's workspace.
  layout(void* workspace, std::size_t bytes, const device::shape& s, bool planning = false) {
    GRPOKIT_REQUIRE(planning || workspace != nullptr, "workspace is null (allocate device::workspace_bytes)");
    if (!planning) {
      base = aligned_workspace(workspace);
      const std::size_t lost = static_cast<std::size_t>(base - static_cast<char*>(workspace));
      GRPOKIT_REQUIRE(bytes >= lost, "workspace too small: ", bytes, " bytes (use device::workspace_bytes)");
      bytes -= lost;
    }
    carver c(base, bytes);
    const workspace_head head = take_head(c);
    st = head.st;
    result = head.loss;
    adv_result = head.advantages;
    row_max = c.take<R>(s.tokens);
    support = c.take<R>(s.tokens);
    const std::int64_t n_tiles = (s.vocab + P::chunk_size - 1) / P::chunk_size;
    // sized for the largest row count that splits, so that a plan for T covers every T' <= T
    const bool may_split = n_tiles >= device::tuning::split_min_tiles;
    tiles = c.take<math::lse_partial<R>>(may_split ? std::min(s.tokens, device::tuning::split_max_rows) * n_tiles : 0);
    logp = c.take<R>(s.tokens);
    entropy = c.take<R>(s.tokens);
    lse = c.take<R>(s.tokens);
    dlogp = c.take<R>(s.tokens);
    dentropy = c.take<R>(s.tokens);
    summaries = c.take<typename terms_for<P>::sequence_summary>(s.seqs);
    partials = c.take<detail::loss_partial>(std::max<std::int64_t>(s.seqs, 1));  // [0]: the total, also for S = 0
    counts = c.take<long long>(3);
    batch = c.take<detail::loss_partial>(1);
    select = c.take<detail::select_run>(detail::selection_count);
    select_hist = c.take<long long>(detail::select_hist_size);
    adv_scratch = c.take<double>(6 * s.seqs);
    adv_keep = c.take<std::uint8_t>(s.seqs);
    adv_large = c.take<std::int64_t>(s.seqs);
    adv_stats = c.take<advantage_device_stats>(1);
    used = c.used();
  }
  std::size_t used = 0;
};

}  // namespace grpokit::detail

namespace grpokit::device {

// Bytes of workspace every device entry point needs for problems up to `s` (CUB style), whatever
// the alignment of the pointer given.
template <class P>
std::size_t workspace_bytes(const device::shape& s) {
  return detail::layout<P>(nullptr, 0, s, /*planning=*/true).used + detail::workspace_alignment - 1;
}

}  // namespace grpokit::device

namespace grpokit::detail {

// The start of every asynchronous entry point: with a null workspace only its size (CUB's
// two-phase call: no layout is returned); otherwise the workspace carved. Nothing is queued on a
// stream: the entry point resets the status once every check has passed.
template <class P>
std::optional<layout<P>> open_workspace(void* workspace, std::size_t& workspace_bytes, const device::shape& s) {
  if (workspace == nullptr) {
    workspace_bytes = device::workspace_bytes<P>(s);
    return std::nullopt;
  }
  return layout<P>(workspace, workspace_bytes, s);
}

}  // namespace grpokit::detail
