#pragma once
// The walk of fused_linear_loss's token chunks over the sequences and groups of lm_head_norms
// (inputs.hpp), shared by the host and the device: which rows of a chunk add into the open
// sequence's sum M_s = sum_t dlogits_t hidden_t^T (V x D), and when a sequence or a group closes.
// A sequence may span chunks. The schedule supplies the sums (Sums):
//   add_rows(a, b)                        rows [a, b) of the current chunk into the open sequence
//   close_sequence(s, scale)              rollout_sq[s] = scale |seq|^2; group += seq; seq = 0
//   close_group(g, scale, to_batch)       group_mean_sq[g] = scale |group|^2; batch += to_batch group; group = 0
//   close_batch()                         batch_mean_sq = |batch|^2
#include <cstdint>

#include "../inputs.hpp"
#include "validate.hpp"

namespace grpokit::detail {

// Either all three outputs (rollout_sq, group_mean_sq, batch_mean_sq) or none; an empty batch (S = 0,
// group_offsets {0}) is measured too: every norm 0.
inline void require_lm_head_norms(const lm_head_norms& n, std::int64_t S) {
  if (!n.wanted() && n.rollout_sq.empty() && n.group_mean_sq.empty() && n.group_offsets.empty()) return;
  GRPOKIT_REQUIRE(n.wanted(), "lm_head_norms: set rollout_sq, group_mean_sq and batch_mean_sq together (or none)");
  require_offsets("lm_head_norms.group_offsets", n.group_offsets, S, /*allow_empty_segments=*/false);
  require_size("lm_head_norms.rollout_sq", n.rollout_sq, S);
  require_size("lm_head_norms.group_mean_sq", n.group_mean_sq, n.group_offsets.size() - 1);
}

template <class Sums>
class lm_head_norm_walk {
 public:
  // seq_offsets: the batch's, in host memory
  lm_head_norm_walk(const lm_head_norms& out, span<const std::int64_t> seq_offsets, Sums& sums)
      : out_(out), seq_offsets_(seq_offsets), S_(seq_offsets.size() - 1), sums_(sums) {}

  // The chunk of rows [t0, t0 + n); closes every sequence that ends in it.
  void add_chunk(std::int64_t t0, std::int64_t n) {
    if (!out_.wanted()) return;
    const std::int64_t end = t0 + n;
    while (s_ < S_) {
      const std::int64_t a = seq_offsets_[s_] > t0 ? seq_offsets_[s_] : t0;
      const std::int64_t b = seq_offsets_[s_ + 1] < end ? seq_offsets_[s_ + 1] : end;
      if (a < b) sums_.add_rows(a, b);
      if (seq_offsets_[s_ + 1] > end) break;
      close_sequence();
    }
  }

  // After the last chunk: the empty sequences left at the end, and the batch.
  void finish() {
    if (!out_.wanted()) return;
    while (s_ < S_) close_sequence();
    sums_.close_batch();
  }

 private:
  // g_s = S M_s; a group's mean (S / n_g) sum M_s; the batch the mean of the B group means
  void close_sequence() {
    const double S = static_cast<double>(S_);
    sums_.close_sequence(s_, S * S);
    ++s_;
    if (s_ != out_.group_offsets[k_ + 1]) return;
    const double B = static_cast<double>(out_.group_offsets.size() - 1);
    const double to_mean = S / static_cast<double>(out_.group_offsets[k_ + 1] - out_.group_offsets[k_]);
    sums_.close_group(k_, to_mean * to_mean, to_mean / B);
    ++k_;
  }

  lm_head_norms out_;
  span<const std::int64_t> seq_offsets_;
  std::int64_t S_;
  Sums& sums_;
  std::int64_t s_ = 0, k_ = 0;  // the open sequence and group
};

}  // namespace grpokit::detail
