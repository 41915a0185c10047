#pragma once
// grpokit::host::fused_linear_loss: the loss straight from hidden states. Logits are produced a
// token chunk at a time (logits = hidden W^T + bias, accumulated in Accum and kept in Accum: an
// "fp32 LM head"), consumed by the token_logprobs epilogue, recomputed in the backward where the
// chunk's dlogits (rounded to the storage type, as a GEMM input) give
//   dhidden = dlogits W,   dweight += dlogits^T hidden,   dbias += colsum(dlogits).
// Extra memory: one chunk of logits (token_chunk x V of Accum + Storage) plus O(T + S).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "../detail/row_params.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../math/ops.hpp"
#include "../detail/ops_for.hpp"
#include "../math/storage.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "detail/gemm.hpp"
#include "detail/lm_head_norms.hpp"
#include "detail/sampler_support.hpp"
#include "detail/scratch.hpp"
#include "fused_loss.hpp"
#include "parallel.hpp"
#include "policy_loss.hpp"
#include "rows.hpp"
#include "token_logprobs.hpp"

namespace grpokit::detail {

// Elements of the LM head converted to Acc at a time (tests lower it to cross panel boundaries).
inline std::int64_t& linear_panel_elements() {
  static std::int64_t elements = std::int64_t{1} << 20;  // 4 MiB of float
  return elements;
}

// The products of a chunk on Acc operands (detail/gemm.hpp): the storage's own arrays where it is
// Acc, else converted copies, the hidden chunk whole and the LM head a panel of rows at a time (so
// the extra memory stays O(C D + panel D)).
// `fixed_order` (reduction::batch_invariant): grpokit's loops, whose rows do not depend on the
// chunk they are in (gemm).
template <class Acc, class S>
class linear_products {
 public:
  linear_products(const linear_input<S, Acc>& in, std::int64_t token_chunk, bool fixed_order)
      : in_(in), D_(in.weight.cols), V_(in.weight.rows), fixed_order_(fixed_order) {
    // dweight's products a bounded block of rows at a time; the LM head in panels only where it is
    // converted (the storage is not Acc): one product over all of V otherwise
    product_rows_ = std::max<std::int64_t>(
        1, std::min<std::int64_t>(V_, linear_panel_elements() / std::max<std::int64_t>(D_, 1)));
    panel_rows_ = std::is_same<S, Acc>::value ? std::max<std::int64_t>(V_, 1) : product_rows_;
    if (!std::is_same<S, Acc>::value) {
      hidden_ = scratch<Acc>(std::min(token_chunk, in.hidden.rows) * D_, "fused_linear_loss");
      weight_ = scratch<Acc>(panel_rows_ * D_, "fused_linear_loss");
    }
    product_ = scratch<Acc>(std::max(product_rows_, std::min(token_chunk, in.hidden.rows)) * D_, "fused_linear_loss");
  }

  // out[c, v] = sum_d hidden[t0 + c, d] W[v, d] + bias[v] for c < n (out: n x V).
  void logits(std::int64_t t0, std::int64_t n, Acc* out) {
    parallel_for(n, [&](std::int64_t c) {
      for (std::int64_t v = 0; v < V_; ++v) out[c * V_ + v] = in_.bias.empty() ? Acc(0) : math::load<Acc>(in_.bias[v]);
    });
    const auto h = hidden(t0, n);
    for (std::int64_t v0 = 0; v0 < V_; v0 += panel_rows_) {
      const std::int64_t rows = std::min(panel_rows_, V_ - v0);
      const auto w = weight(v0, rows);
      gemm(gemm_form::nt, n, rows, D_, h.data, h.ld, w.data, w.ld, Acc(1), out + v0, V_, fixed_order_);
    }
  }

  // From the chunk's dlogits g (n x V, in Acc): dhidden[t0 + c] = sum_v g[c, v] W[v] (when wanted),
  // dweight[v] (or dweight_acc) += sum_c g[c, v] hidden[t0 + c], dbias[v] += sum_c g[c, v].
  void backward(std::int64_t t0, std::int64_t n, const Acc* g, const linear_grads<S, Acc>& grads) {
    const auto h = hidden(t0, n);
    const bool dhidden = grads.dhidden.data != nullptr;
    for (std::int64_t v0 = 0; v0 < V_; v0 += panel_rows_) {
      const std::int64_t rows = std::min(panel_rows_, V_ - v0);
      const auto w = weight(v0, rows);
      if (dhidden)  // summed over the panels in product_ (n x D)
        gemm(gemm_form::nn, n, D_, rows, g + v0, V_, w.data, w.ld, v0 == 0 ? Acc(0) : Acc(1), product_.data(), D_,
             fixed_order_);
    }
    if (dhidden)
      parallel_for(n, [&](std::int64_t c) {
        S* out = grads.dhidden.row(t0 + c);
        for (std::int64_t d = 0; d < D_; ++d) out[d] = math::store<S>(product_[static_cast<std::size_t>(c * D_ + d)]);
      });
    for (std::int64_t v0 = 0; v0 < V_; v0 += product_rows_) {
      const std::int64_t rows = std::min(product_rows_, V_ - v0);
      gemm(gemm_form::tn, rows, D_, n, g + v0, V_, h.data, h.ld, Acc(0), product_.data(), D_, fixed_order_);
      parallel_for(rows, [&](std::int64_t r) {
        const Acc* acc = product_.data() + r * D_;
        if (grads.dweight_acc.data != nullptr) {
          Acc* out = grads.dweight_acc.row(v0 + r);
          for (std::int64_t d = 0; d < D_; ++d) out[d] += acc[d];
        } else {
          S* out = grads.dweight.row(v0 + r);
          for (std::int64_t d = 0; d < D_; ++d) out[d] = math::store<S>(math::load<Acc>(out[d]) + acc[d]);
        }
      });
    }
    if (!grads.dbias.empty())
      parallel_for(V_, [&](std::int64_t v) {
        Acc b = 0;
        for (std::int64_t c = 0; c < n; ++c) b += g[c * V_ + v];
        grads.dbias[v] += b;
      });
  }

 private:
  struct operand {
    const Acc* data;
    std::int64_t ld;
  };
  // Rows [r0, r0 + n) of m as an Acc operand: m itself where S is Acc, else converted into `copy`.
  operand rows_of(const matrix_view<const S>& m, std::int64_t r0, std::int64_t n, std::vector<Acc>& copy) {
    if constexpr (std::is_same<S, Acc>::value) {
      (void)n;
      (void)copy;
      return {m.row(r0), m.row_stride};
    } else {
      parallel_for(n, [&](std::int64_t r) {
        const S* x = m.row(r0 + r);
        for (std::int64_t d = 0; d < D_; ++d) copy[static_cast<std::size_t>(r * D_ + d)] = math::load<Acc>(x[d]);
      });
      return {copy.data(), D_};
    }
  }
  operand hidden(std::int64_t t0, std::int64_t n) { return rows_of(in_.hidden, t0, n, hidden_); }
  operand weight(std::int64_t v0, std::int64_t rows) { return rows_of(in_.weight, v0, rows, weight_); }

  const linear_input<S, Acc>& in_;
  std::int64_t D_, V_, panel_rows_ = 1, product_rows_ = 1;
  bool fixed_order_;
  std::vector<Acc> hidden_, weight_, product_;
};

// After a chunk's logits were found non-finite (check_finite): name the input that holds the NaN /
// Inf, with its index in the whole batch, instead of a row of the chunk.
template <class S, class Acc>
[[noreturn]] void report_non_finite_chunk(const linear_input<S, Acc>& in, std::int64_t t0, std::int64_t n) {
  auto first_bad = [](const matrix_view<const S>& m, std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r)
      for (std::int64_t c = 0; c < m.cols; ++c)
        if (!std::isfinite(math::load<double>(m.row(r)[c]))) return r;
    return std::int64_t{-1};
  };
  const std::int64_t h = first_bad(in.hidden, t0, t0 + n);
  if (h >= 0) detail::fail("hidden row ", h, " (token ", h, ") contains NaN or Inf");
  const std::int64_t w = first_bad(in.weight, 0, in.weight.rows);
  if (w >= 0) detail::fail("weight row ", w, " contains NaN or Inf");
  for (std::int64_t v = 0; v < in.bias.size(); ++v)
    if (!std::isfinite(math::load<double>(in.bias[v]))) detail::fail("bias[", v, "] is not finite");
  detail::fail("the logits of tokens [", t0, ", ", t0 + n, ") overflow (hidden states or weights too large)");
}

}  // namespace grpokit::detail

namespace grpokit::detail {

// The chunked schedule of fused_linear_loss with its three steps passed in (vocab_parallel's
// distributed.hpp passes collective ones):
//   forward_rows(chunk_input, token_stats)                   lse, entropy, logp of a chunk's rows
//   agree(exception_ptr)                                     after the allocation and after the
//                                                            forward: throws when it failed (on
//                                                            any rank)
//   loss(current_policy, policy_grads) -> loss_result        policy_loss over the whole batch
//   backward_rows(chunk_input, backward_inputs, dlogits)     a chunk's dlogits
//   sum_p2_rows(chunk_input, lse, out)                       a chunk's sum_v p_v^2 (when wanted)
// and the lm_head_norms of this process's rows of the LM head (their sums allocated with the rest,
// before the first agreement), walked over the sequences of seq_offsets.
template <class P, class Forward, class Agree, class Loss, class Backward, class SumP2>
loss_result fused_linear_loss_with(const linear_input<storage_t<P>, accum_t<P>>& in, std::int64_t token_chunk,
                                   const linear_grads<storage_t<P>, accum_t<P>>& grads,
                                   const fused_outputs<accum_t<P>>& extra, const lm_head_norms& norms,
                                   span<const std::int64_t> seq_offsets, Forward&& forward_rows, Agree&& agree,
                                   Loss&& loss, Backward&& backward_rows, SumP2&& sum_p2_rows) {
  using Acc = accum_t<P>;
  using S = storage_t<P>;
  const std::int64_t T = in.hidden.rows, V = in.weight.rows;
  const std::int64_t C = std::min(token_chunk, std::max<std::int64_t>(T, 1));
  std::vector<Acc> logits, logp, entropy, lse, dlogp, dentropy;
  std::vector<S> dlogits;
  std::optional<host_lm_head_sums<S>> head_sums;
  std::optional<linear_products<Acc, S>> products;
  std::exception_ptr failed;
  try {
    GRPOKIT_REQUIRE(C <= std::numeric_limits<std::int64_t>::max() / V, "fused_linear_loss: token_chunk x V overflows");
    logits = detail::scratch<Acc>(C * V, "fused_linear_loss");
    dlogits = detail::scratch<S>(C * V, "fused_linear_loss");
    for (auto* v : {&logp, &entropy, &lse, &dlogp, &dentropy}) *v = detail::scratch<Acc>(T, "fused_linear_loss");
    head_sums.emplace(norms, in.hidden, V);
    products.emplace(in, C, P::order == reduction_order::batch_invariant);
  } catch (const error&) {
    failed = std::current_exception();
  }
  agree(failed);
  lm_head_norm_walk<host_lm_head_sums<S>> head_norms(norms, seq_offsets, *head_sums);

  auto chunk_input = [&](std::int64_t t0, std::int64_t n) {
    return logits_input<Acc, Acc>{{logits.data(), n, V, V},
                                  in.targets.subspan(t0, n),
                                  in.temperature.empty() ? span<const Acc>{} : in.temperature.subspan(t0, n)};
  };
  auto rows_of = [](std::vector<Acc>& v, std::int64_t t0, std::int64_t n) { return span<Acc>(v.data() + t0, n); };
  for (std::int64_t t0 = 0; t0 < T && !failed; t0 += C) {
    const std::int64_t n = std::min(C, T - t0);
    products->logits(t0, n, logits.data());
    try {
      try {
        forward_rows(chunk_input(t0, n),
                     token_stats<Acc>{rows_of(logp, t0, n), rows_of(entropy, t0, n), rows_of(lse, t0, n)});
      } catch (const error&) {  // the inputs were valid: a chunk row is not finite
        detail::report_non_finite_chunk(in, t0, n);
      }
    } catch (const error&) {
      failed = std::current_exception();
    }
  }
  agree(failed);
  const loss_result res = loss(current_policy<Acc>{logp, entropy}, policy_grads<Acc>{dlogp, dentropy});

  for (std::int64_t t0 = 0; t0 < T; t0 += C) {
    const std::int64_t n = std::min(C, T - t0);
    products->logits(t0, n, logits.data());
    backward_rows(chunk_input(t0, n),
                  backward_inputs<Acc>{rows_of(lse, t0, n), rows_of(entropy, t0, n), rows_of(dlogp, t0, n),
                                       rows_of(dentropy, t0, n)},
                  matrix_view<S>{dlogits.data(), n, V, V});
    if (!extra.sum_p2.empty()) sum_p2_rows(chunk_input(t0, n), rows_of(lse, t0, n), extra.sum_p2.subspan(t0, n));
    head_sums->set_chunk(t0, dlogits.data());
    head_norms.add_chunk(t0, n);
    // the dlogits as the products' Acc operand, over the chunk's logits (no longer needed)
    parallel_for(n, [&](std::int64_t c) {
      for (std::int64_t v = 0; v < V; ++v) logits[static_cast<std::size_t>(c * V + v)] = math::load<Acc>(dlogits[static_cast<std::size_t>(c * V + v)]);
    });
    products->backward(t0, n, logits.data(), grads);
  }
  head_norms.finish();
  detail::copy_extra(extra, logp, entropy);
  return res;
}

}  // namespace grpokit::detail

namespace grpokit::host {

template <class P>
loss_result fused_linear_loss(const linear_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                              const loss_config& cfg, std::int64_t token_chunk,
                              const linear_grads<storage_t<P>, accum_t<P>>& grads,
                              const fused_outputs<accum_t<P>>& extra = {}, const lm_head_norms& norms = {}) {
  using Acc = accum_t<P>;
  using S = storage_t<P>;
  using Q = typename P::template with_storage<Acc>;  // the chunk of logits is kept in Acc
  using Ops = detail::ops_for<P::order>;
  detail::require_linear_shapes(in, token_chunk, grads, extra);
  detail::require_batch_shapes<P::trust_region || P::importance_mask>(batch, in.hidden.rows, cfg);
  detail::require_linear_sum_p2_apart(extra, batch, in, grads);
  detail::require_lm_head_norms(norms, batch.seq_offsets.size() - 1);
  detail::require_scalar_temperature<Acc>(cfg);
  detail::require_targets(in.targets, in.weight.rows);
  detail::require_temperature(cfg, in.temperature);
  const Acc log_rho = detail::log_prune_rho<Ops, Acc>(cfg);
  return detail::fused_linear_loss_with<P>(
      in, token_chunk, grads, extra, norms, batch.seq_offsets,
      [&](const logits_input<Acc, Acc>& ci, const token_stats<Acc>& stats) { token_logprobs<Q>(ci, cfg, stats); },
      [](std::exception_ptr failed) {
        if (failed) std::rethrow_exception(failed);
      },
      [&](const current_policy<Acc>& cur, const policy_grads<Acc>& g) { return policy_loss<P>(cur, batch, cfg, g); },
      [&](const logits_input<Acc, Acc>& ci, const backward_inputs<Acc>& g, const matrix_view<S>& dlogits) {
        detail::parallel_for(ci.logits.rows, [&](std::int64_t c) {
          detail::dlogits_row<Q>(ci, cfg, log_rho, g.lse[c], g.entropy[c], g.dlogp[c], g.dentropy[c], dlogits, c);
        });
      },
      [&](const logits_input<Acc, Acc>& ci, span<const Acc> lse, span<Acc> out) {
        detail::sum_p2_rows<Q>(ci, cfg, lse, out);
      });
}

}  // namespace grpokit::host
