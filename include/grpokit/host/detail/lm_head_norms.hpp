#pragma once
// The LM-head gradient norms of host::fused_linear_loss (lm_head_norms, inputs.hpp): the dweight
// GEMM split at sequence boundaries. The open sequence's V x D sum M_s = sum_t dlogits_t hidden_t^T
// is squared at the sequence's end and added into the open group's; the group's is squared at the
// group's end and added, weighted, into the batch's. A sequence may span token chunks. Three V x D
// buffers of double, and about the work of a second dweight GEMM, only when the norms are wanted.
#include <cstdint>
#include <vector>

#include "../../detail/validate.hpp"
#include "../../inputs.hpp"
#include "../../math/storage.hpp"
#include "../parallel.hpp"
#include "scratch.hpp"

namespace grpokit::detail {

// Either all three outputs (rollout_sq, group_mean_sq, batch_mean_sq) or none.
inline void require_lm_head_norms(const lm_head_norms& n, std::int64_t S) {
  if (!n.wanted() && n.group_mean_sq.empty() && n.batch_mean_sq == nullptr && n.group_offsets.empty()) return;
  GRPOKIT_REQUIRE(n.wanted() && n.batch_mean_sq != nullptr,
                  "lm_head_norms: set rollout_sq, group_mean_sq and batch_mean_sq together (or none)");
  require_offsets("lm_head_norms.group_offsets", n.group_offsets, S, /*allow_empty_segments=*/false);
  require_size("lm_head_norms.rollout_sq", n.rollout_sq, S);
  require_size("lm_head_norms.group_mean_sq", n.group_mean_sq, n.group_offsets.size() - 1);
}

class lm_head_norm_accumulator {
 public:
  lm_head_norm_accumulator(const lm_head_norms& out, span<const std::int64_t> seq_offsets, std::int64_t V,
                           std::int64_t D)
      : out_(out), seq_offsets_(seq_offsets), S_(seq_offsets.size() - 1), V_(V), D_(D) {
    if (!out.wanted()) return;
    for (auto* m : {&seq_, &group_, &batch_}) *m = scratch<double>(V * D, "fused_linear_loss (lm_head_norms)");
  }

  // Rows [t0, t0 + n) of the batch: their dlogits (n x V, as the dweight GEMM reads them) and
  // hidden states. Closes every sequence that ends in them.
  template <class S>
  void add_chunk(std::int64_t t0, std::int64_t n, const S* dlogits, const matrix_view<const S>& hidden) {
    if (!out_.wanted()) return;
    const std::int64_t end = t0 + n;
    while (s_ < S_) {
      const std::int64_t a = seq_offsets_[s_] > t0 ? seq_offsets_[s_] : t0;
      const std::int64_t b = seq_offsets_[s_ + 1] < end ? seq_offsets_[s_ + 1] : end;
      if (a < b) add_rows(a, b, t0, dlogits, hidden);
      if (seq_offsets_[s_ + 1] > end) break;
      close_sequence();
    }
  }

  // After the last chunk: the empty sequences left at the end, and the batch norm.
  void finish() {
    if (!out_.wanted()) return;
    while (s_ < S_) close_sequence();
    *out_.batch_mean_sq = squared_norm(batch_);
  }

 private:
  template <class S>
  void add_rows(std::int64_t a, std::int64_t b, std::int64_t t0, const S* dlogits, const matrix_view<const S>& hidden) {
    parallel_for(V_, [&](std::int64_t v) {
      double* m = seq_.data() + v * D_;
      for (std::int64_t t = a; t < b; ++t) {
        const double g = math::load<double>(dlogits[(t - t0) * V_ + v]);
        if (g == 0) continue;  // masked tokens, rows without gradient
        const S* h = hidden.row(t);
        for (std::int64_t d = 0; d < D_; ++d) m[d] += g * math::load<double>(h[d]);
      }
    });
  }

  // |m|^2: a partial per row of V, added in row order (the same for any thread count).
  double squared_norm(const std::vector<double>& m) const {
    std::vector<double> rows(static_cast<std::size_t>(V_));
    parallel_for(V_, [&](std::int64_t v) {
      double acc = 0;
      for (std::int64_t d = 0; d < D_; ++d) acc += m[v * D_ + d] * m[v * D_ + d];
      rows[static_cast<std::size_t>(v)] = acc;
    });
    double sum = 0;
    for (const double r : rows) sum += r;
    return sum;
  }

  // into += scale * from; from = 0
  void move_into(std::vector<double>& into, std::vector<double>& from, double scale) const {
    parallel_for(V_, [&](std::int64_t v) {
      for (std::int64_t d = v * D_; d < (v + 1) * D_; ++d) {
        into[d] += scale * from[d];
        from[d] = 0;
      }
    });
  }

  void close_sequence() {
    const double S = static_cast<double>(S_);
    out_.rollout_sq[s_] = S * S * squared_norm(seq_);
    move_into(group_, seq_, 1.0);
    ++s_;
    if (s_ == out_.group_offsets[k_ + 1]) close_group();
  }

  void close_group() {
    const double S = static_cast<double>(S_), B = static_cast<double>(out_.group_offsets.size() - 1);
    const double to_mean = S / static_cast<double>(out_.group_offsets[k_ + 1] - out_.group_offsets[k_]);
    out_.group_mean_sq[k_] = to_mean * to_mean * squared_norm(group_);
    move_into(batch_, group_, to_mean / B);
    ++k_;
  }

  lm_head_norms out_;
  span<const std::int64_t> seq_offsets_;
  std::int64_t S_, V_, D_;
  std::int64_t s_ = 0, k_ = 0;                // the open sequence and group
  std::vector<double> seq_, group_, batch_;  // V x D sums
};

}  // namespace grpokit::detail
