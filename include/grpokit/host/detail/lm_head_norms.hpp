#pragma once
// The host's sums of lm_head_norms (detail/lm_head_norms.hpp walks the chunks): the open
// sequence's, group's and batch's V x D sums in double, about the work of a second dweight GEMM and
// three V x D buffers, only when the norms are wanted.
#include <cstdint>
#include <vector>

#include "../../detail/lm_head_norms.hpp"
#include "../../inputs.hpp"
#include "../../math/storage.hpp"
#include "../parallel.hpp"
#include "scratch.hpp"

namespace grpokit::detail {

template <class S>
class host_lm_head_sums {
 public:
  host_lm_head_sums(const lm_head_norms& out, const matrix_view<const S>& hidden, std::int64_t V)
      : out_(out), hidden_(hidden), V_(V), D_(hidden.cols) {
    if (!out.wanted()) return;
    for (auto* m : {&seq_, &group_, &batch_}) *m = scratch<double>(V * D_, "fused_linear_loss (lm_head_norms)");
  }

  // The chunk's dlogits (n x V from row t0, as the dweight GEMM reads them), before add_chunk.
  void set_chunk(std::int64_t t0, const S* dlogits) {
    t0_ = t0;
    dlogits_ = dlogits;
  }

  void add_rows(std::int64_t a, std::int64_t b) {
    parallel_for(V_, [&](std::int64_t v) {
      double* m = seq_.data() + v * D_;
      for (std::int64_t t = a; t < b; ++t) {
        const double g = math::load<double>(dlogits_[(t - t0_) * V_ + v]);
        if (g == 0) continue;  // masked tokens, rows without gradient
        const S* h = hidden_.row(t);
        for (std::int64_t d = 0; d < D_; ++d) m[d] += g * math::load<double>(h[d]);
      }
    });
  }
  void close_sequence(std::int64_t s, double scale) {
    out_.rollout_sq[s] = scale * squared_norm(seq_);
    move_into(group_, seq_, 1.0);
  }
  void close_group(std::int64_t g, double scale, double to_batch) {
    out_.group_mean_sq[g] = scale * squared_norm(group_);
    move_into(batch_, group_, to_batch);
  }
  void close_batch() { *out_.batch_mean_sq = squared_norm(batch_); }

 private:
  // |m|^2: a partial per row of V, added in row order (the same for any thread count).
  double squared_norm(const std::vector<double>& m) const {
    std::vector<double> rows(static_cast<std::size_t>(V_));
    parallel_for(V_, [&](std::int64_t v) {
      double acc = 0;
      for (std::int64_t d = v * D_; d < (v + 1) * D_; ++d) acc += m[d] * m[d];
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

  lm_head_norms out_;
  matrix_view<const S> hidden_;
  std::int64_t V_, D_;
  std::int64_t t0_ = 0;
  const S* dlogits_ = nullptr;
  std::vector<double> seq_, group_, batch_;  // V x D sums
};

}  // namespace grpokit::detail
