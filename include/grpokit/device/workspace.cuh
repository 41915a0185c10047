#pragma once
// The caller-provided workspace of the device entry points: workspace_bytes<P>(shape) says how
// much one needs (CUB style); the entry points carve it, never allocate.
#include <cstddef>
#include <algorithm>
#include <cstdint>

#include "../detail/loss_partial.hpp"
#include "../detail/policy_terms.hpp"
#include "../math/ops.hpp"
#include "../error.hpp"
#include "../math/online_lse.hpp"
#include "../policy.hpp"
#include "status.cuh"

namespace grpokit::device {

// The problem size a workspace is planned for (an entry point may use less).
struct shape {
  std::int64_t tokens = 0;  // T
  std::int64_t vocab = 0;   // V
  std::int64_t seqs = 0;    // S
};

namespace detail {

constexpr std::size_t align_up(std::size_t n) { return (n + 255) / 256 * 256; }

// Rows are split across blocks (one tile partial per tile, merged by a second kernel) when there
// are few rows and many tiles; the result is the same bits either way.
constexpr std::int64_t split_max_rows = 256, split_min_tiles = 16;
template <class P>
bool split_rows(std::int64_t T, std::int64_t V) {
  const std::int64_t tiles = (V + P::chunk_size - 1) / P::chunk_size;
  return T <= split_max_rows && tiles >= split_min_tiles;
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

// Every buffer any entry point takes, in one fixed order: an entry point takes the prefix it needs
// plus its own tail, and workspace_bytes is the size of the whole list.
template <class P>
struct layout {
  using R = accum_t<P>;
  status* st = nullptr;
  R* row_max = nullptr;                      // [T] vocabulary pruning
  math::lse_partial<R>* tiles = nullptr;     // [T * tiles] split rows
  R *logp = nullptr, *entropy = nullptr, *lse = nullptr, *dlogp = nullptr, *dentropy = nullptr;  // fused
  unsigned char* summaries = nullptr;        // [S] policy_terms::sequence_summary
  grpokit::detail::loss_partial* partials = nullptr;  // [S]
  long long* counts = nullptr;               // [2]
  double* adv_scratch = nullptr;             // [5 S] advantages
  std::uint8_t* adv_keep = nullptr;          // [S]
  double* adv_stats = nullptr;               // [16]

  // planning: only the size is wanted (workspace_bytes); otherwise `base` is the caller's workspace.
  layout(void* base, std::size_t bytes, const shape& s, bool planning = false) {
    GRPOKIT_REQUIRE(planning || base != nullptr, "workspace is null (allocate device::workspace_bytes)");
    GRPOKIT_REQUIRE(reinterpret_cast<std::uintptr_t>(base) % 256 == 0,
                    "workspace must be 256-byte aligned (cudaMalloc memory is)");
    using summary_t = typename grpokit::detail::policy_terms<P, math::ops_for<P::order>>::sequence_summary;
    constexpr std::size_t summary_bytes = sizeof(summary_t);
    carver c(base, bytes);
    st = c.take<status>(1);
    row_max = c.take<R>(s.tokens);
    const std::int64_t n_tiles = (s.vocab + P::chunk_size - 1) / P::chunk_size;
    // sized for the largest row count that splits, so that a plan for T covers every T' <= T
    tiles = c.take<math::lse_partial<R>>(n_tiles >= split_min_tiles ? std::min<std::int64_t>(s.tokens, split_max_rows) * n_tiles : 0);
    logp = c.take<R>(s.tokens);
    entropy = c.take<R>(s.tokens);
    lse = c.take<R>(s.tokens);
    dlogp = c.take<R>(s.tokens);
    dentropy = c.take<R>(s.tokens);
    summaries = c.take<unsigned char>(s.seqs * static_cast<std::int64_t>(summary_bytes));
    partials = c.take<grpokit::detail::loss_partial>(s.seqs);
    counts = c.take<long long>(2);
    adv_scratch = c.take<double>(5 * s.seqs);
    adv_keep = c.take<std::uint8_t>(s.seqs);
    adv_stats = c.take<double>(16);
    used = c.used();
  }
  std::size_t used = 0;
};

}  // namespace detail

// Bytes of workspace every device entry point needs for problems up to `s` (CUB style).
template <class P>
std::size_t workspace_bytes(const shape& s) {
  return detail::layout<P>(nullptr, 0, s, /*planning=*/true).used;
}

}  // namespace grpokit::device
