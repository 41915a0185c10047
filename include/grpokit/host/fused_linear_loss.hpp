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
#include "detail/lm_head_norms.hpp"
#include "detail/sampler_support.hpp"
#include "detail/scratch.hpp"
#include "fused_loss.hpp"
#include "parallel.hpp"
#include "policy_loss.hpp"
#include "rows.hpp"
#include "token_logprobs.hpp"

namespace grpokit::detail {

// out[c, v] = sum_d hidden[t0 + c, d] W[v, d] + bias[v], in Acc, for c < rows.
template <class Acc, class S>
void chunk_logits(const linear_input<S, Acc>& in, std::int64_t t0, std::int64_t rows, Acc* out) {
  const std::int64_t V = in.weight.rows, D = in.weight.cols;
  parallel_for(rows, [&](std::int64_t c) {
    const S* h = in.hidden.row(t0 + c);
    for (std::int64_t v = 0; v < V; ++v) {
      const S* w = in.weight.row(v);
      Acc acc = in.bias.empty() ? Acc(0) : math::load<Acc>(in.bias[v]);
      for (std::int64_t d = 0; d < D; ++d) acc += math::load<Acc>(h[d]) * math::load<Acc>(w[d]);
      out[c * V + v] = acc;
    }
  });
}

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
  const std::int64_t T = in.hidden.rows, V = in.weight.rows, D = in.hidden.cols;
  const std::int64_t C = std::min(token_chunk, std::max<std::int64_t>(T, 1));
  std::vector<Acc> logits, logp, entropy, lse, dlogp, dentropy;
  std::vector<S> dlogits;
  std::optional<host_lm_head_sums<S>> head_sums;
  std::exception_ptr failed;
  try {
    GRPOKIT_REQUIRE(C <= std::numeric_limits<std::int64_t>::max() / V, "fused_linear_loss: token_chunk x V overflows");
    logits = detail::scratch<Acc>(C * V, "fused_linear_loss");
    dlogits = detail::scratch<S>(C * V, "fused_linear_loss");
    for (auto* v : {&logp, &entropy, &lse, &dlogp, &dentropy}) *v = detail::scratch<Acc>(T, "fused_linear_loss");
    head_sums.emplace(norms, in.hidden, V);
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
    detail::chunk_logits(in, t0, n, logits.data());
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
    detail::chunk_logits(in, t0, n, logits.data());
    backward_rows(chunk_input(t0, n),
                  backward_inputs<Acc>{rows_of(lse, t0, n), rows_of(entropy, t0, n), rows_of(dlogp, t0, n),
                                       rows_of(dentropy, t0, n)},
                  matrix_view<S>{dlogits.data(), n, V, V});
    if (!extra.sum_p2.empty()) sum_p2_rows(chunk_input(t0, n), rows_of(lse, t0, n), extra.sum_p2.subspan(t0, n));
    head_sums->set_chunk(t0, dlogits.data());
    head_norms.add_chunk(t0, n);
    if (grads.dhidden.data != nullptr) {  // dhidden[t] = sum_v dlogits[c, v] W[v]
      detail::parallel_for(n, [&](std::int64_t c) {
        std::vector<Acc> acc(static_cast<std::size_t>(D), Acc(0));
        for (std::int64_t v = 0; v < V; ++v) {
          const Acc g = math::load<Acc>(dlogits[c * V + v]);
          if (g == Acc(0)) continue;
          const S* w = in.weight.row(v);
          for (std::int64_t d = 0; d < D; ++d) acc[d] += g * math::load<Acc>(w[d]);
        }
        S* out = grads.dhidden.row(t0 + c);
        for (std::int64_t d = 0; d < D; ++d) out[d] = math::store<S>(acc[d]);
      });
    }
    // dweight[v] += sum_c dlogits[c, v] hidden[t0 + c]; dbias[v] += sum_c dlogits[c, v]
    detail::parallel_for(V, [&](std::int64_t v) {
      std::vector<Acc> acc(static_cast<std::size_t>(D), Acc(0));
      Acc b = 0;
      for (std::int64_t c = 0; c < n; ++c) {
        const Acc g = math::load<Acc>(dlogits[c * V + v]);
        b += g;
        if (g == Acc(0)) continue;
        const S* h = in.hidden.row(t0 + c);
        for (std::int64_t d = 0; d < D; ++d) acc[d] += g * math::load<Acc>(h[d]);
      }
      if (grads.dweight_acc.data != nullptr) {
        Acc* w = grads.dweight_acc.row(v);
        for (std::int64_t d = 0; d < D; ++d) w[d] += acc[d];
      } else {
        S* w = grads.dweight.row(v);
        for (std::int64_t d = 0; d < D; ++d) w[d] = math::store<S>(math::load<Acc>(w[d]) + acc[d]);
      }
      if (!grads.dbias.empty()) grads.dbias[v] += b;
    });
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
          const Acc inv_t = detail::inverse_temperature<Ops>(cfg, ci.temperature, c);
          const Acc support = g.dlogp[c] != Acc(0) || g.dentropy[c] != Acc(0)  // a row without one is not read
                                  ? detail::row_support<Ops>(cfg, ci.logits.row(c), ci.logits.cols, inv_t)
                                  : -std::numeric_limits<Acc>::infinity();
          detail::backward_row<Ops, Acc>(ci.logits.row(c), dlogits.row(c), ci.logits.cols, ci.targets[c], inv_t,
                                         P::vocab_prune, log_rho, g.lse[c], g.entropy[c], g.dlogp[c], g.dentropy[c],
                                         support);
        });
      },
      [&](const logits_input<Acc, Acc>& ci, span<const Acc> lse, span<Acc> out) {
        detail::sum_p2_rows<Q>(ci, cfg, lse, out);
      });
}

}  // namespace grpokit::host
