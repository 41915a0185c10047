#pragma once
// Data errors found on the device (never by reading or writing out of bounds): the kernels raise
// flags in a `status` that lives at the start of the caller's workspace. fused_loss and
// policy_loss check it before returning; after an asynchronous entry point call read_status().
#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

#include "../error.hpp"
#include "../span.hpp"
#include "error.cuh"

namespace grpokit::device {

struct status {
  // first offending index (row, token, sequence or group) + 1, or 0
  unsigned long long bad_target = 0;      // token id outside [0, V)
  unsigned long long non_finite = 0;      // token / row: NaN/Inf logits (checking on) or log-prob input
  unsigned long long non_finite_seq = 0;  // sequence: NaN/Inf reward, advantage or sequence log-ratio
  unsigned long long bad_offsets = 0;     // decreasing offsets, wrong first/last offset, empty group
  unsigned long long bad_value = 0;       // row/sequence/group: temperature <= 0 or non-finite, seq_weight or
                                          // seq_tokens < 0, group_baseline non-finite
  unsigned long long other_rank = 0;      // data / vocabulary parallel (device/distributed.cuh): the first
                                          // other rank that rejected its input or raised a flag
};

}  // namespace grpokit::device

namespace grpokit::detail {
// Records index i (0-based) as the first offender of one category (atomicMin keeps the smallest).
__device__ inline void flag_error(unsigned long long* field, std::int64_t i) {
  atomicMin(field, static_cast<unsigned long long>(i) + 1ull);
}

// Whether segment i of offsets off [n + 1] is well formed within [0, total): non-decreasing (or
// increasing unless allow_empty), the first starting at 0 and the last ending at total. One check
// for every kernel that walks sequences or groups, so that a bad offset is never read past.
__device__ inline bool segment_ok(span<const std::int64_t> off, std::int64_t i, std::int64_t total,
                                  bool allow_empty) {
  const std::int64_t n = static_cast<std::int64_t>(off.size()) - 1;
  const std::int64_t b = off[i], e = off[i + 1];
  return 0 <= b && (allow_empty ? b <= e : b < e) && e <= total && (i != 0 || b == 0) && (i != n - 1 || e == total);
}

// The status as the row kernels see it: row r of a launch is row first_row + r of the caller's
// batch (fused_linear_loss launches them a token chunk at a time).
struct row_status {
  device::status* st;
  std::int64_t first_row = 0;
  __device__ void flag(unsigned long long device::status::*field, std::int64_t r) const {
    flag_error(&(st->*field), first_row + r);
  }
};

// Status fields start as "none": the maximum, so that atomicMin records the smallest index.
constexpr unsigned long long status_none = ~0ull;
inline void reset_status(device::status* s, cudaStream_t stream) {  // every byte 0xff: status_none
  GRPOKIT_CUDA_CHECK(cudaMemsetAsync(s, 0xff, sizeof(device::status), stream));
}

// The workspace is used from its first 256-byte boundary on (the library aligns the caller's
// pointer); the status is the first thing there.
constexpr std::size_t workspace_alignment = 256;
inline char* aligned_workspace(const void* workspace) {
  const auto p = reinterpret_cast<std::uintptr_t>(workspace);
  return reinterpret_cast<char*>((p + workspace_alignment - 1) / workspace_alignment * workspace_alignment);
}
// Whether a status as the kernels hold it (before status_as_read) has any flag raised.
__host__ __device__ inline bool raised(const device::status& s) {
  static_assert(sizeof(device::status) == 6 * sizeof(unsigned long long), "raised() reads every field: add a new one");
  return s.bad_target != status_none || s.non_finite != status_none || s.non_finite_seq != status_none ||
         s.bad_offsets != status_none || s.bad_value != status_none || s.other_rank != status_none;
}

// Status fields hold index + 1 of the first offender, or status_none.
inline device::status status_as_read(device::status s) {
  auto fix = [](unsigned long long v) { return v == status_none ? 0ull : v; };
  s.bad_target = fix(s.bad_target);
  s.non_finite = fix(s.non_finite);
  s.bad_offsets = fix(s.bad_offsets);
  s.non_finite_seq = fix(s.non_finite_seq);
  s.bad_value = fix(s.bad_value);
  s.other_rank = fix(s.other_rank);
  return s;
}
}  // namespace grpokit::detail

namespace grpokit::device {

// Copies the status back (synchronises the stream); fields hold index + 1, 0 = no error.
inline status read_status(const void* workspace, cudaStream_t stream) {
  status s;
  GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(&s, detail::aligned_workspace(workspace), sizeof(status), cudaMemcpyDeviceToHost,
                                     stream));
  GRPOKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
  return detail::status_as_read(s);
}

inline void throw_if_error(const status& s) {
  GRPOKIT_REQUIRE(s.bad_target == 0, "targets[", s.bad_target - 1, "] is out of range [0, V) (found on the device)");
  // a bad temperature also makes its row non-finite: the cause is reported first
  GRPOKIT_REQUIRE(s.bad_value == 0, "input out of its domain at row/sequence/group ", s.bad_value - 1,
                  " (temperature must be > 0 with a finite inverse, seq_weight, seq_tokens >= 0, group_baseline "
                  "finite; found on the device)");
  GRPOKIT_REQUIRE(s.non_finite == 0, "non-finite input at row/token ", s.non_finite - 1, " (found on the device)");
  GRPOKIT_REQUIRE(s.non_finite_seq == 0, "non-finite reward / advantage / log-ratio of sequence ", s.non_finite_seq - 1,
                  " (found on the device)");
  GRPOKIT_REQUIRE(s.bad_offsets == 0, "offsets are not valid at index ", s.bad_offsets - 1,
                  " (must start at 0, be non-decreasing, end at the total; groups non-empty)");
  GRPOKIT_REQUIRE(s.other_rank == 0, "another rank rejected its input or found bad data: rank ", s.other_rank - 1,
                  " of the data- or vocabulary-parallel communicator that reported it (see that rank's error)");
}

}  // namespace grpokit::device
