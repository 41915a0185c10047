#pragma once
// The fused host entry points over a parallel_layout (data parallel, vocabulary parallel, or both),
// and the distributed forms of the single steps (data_parallel.hpp, vocab_parallel.hpp). Each TP
// rank holds a contiguous vocabulary slice of the same token rows; each DP rank whole sequences.
//   fused_loss:         the TP token_logprobs -> the DP policy_loss -> the TP logits_backward.
//   fused_linear_loss:  weight (and bias, dweight, dbias) are this rank's vocabulary rows of the LM
//     head; hidden is the whole [T, D] on every TP rank. dhidden is this rank's part,
//     dlogits_slice W_slice: the caller sums it over the TP ranks (the all-reduce of Megatron's
//     column-parallel linear backward), within rounding of the unsharded dhidden.
// docs/distributed.md gives the layouts, what is communicated and what is bitwise.
#include <cstdint>
#include <exception>

#include "../communicator.hpp"
#include "../detail/collectives.hpp"
#include "../detail/validate.hpp"
#include "data_parallel.hpp"
#include "detail/fused_outputs.hpp"
#include "detail/scratch.hpp"
#include "detail/lm_head_norms.hpp"
#include "fused_linear_loss.hpp"
#include "vocab_parallel.hpp"

namespace grpokit::host {

template <class P, class DP, class TP>
loss_result fused_loss(const logits_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                       const loss_config& cfg, const matrix_view<storage_t<P>>& dlogits,
                       const parallel_layout<DP, TP>& layout, const fused_outputs<accum_t<P>>& extra = {},
                       backward_mode mode = backward_mode::separate) {
  using Real = accum_t<P>;
  const std::int64_t T = in.logits.rows;
  detail::vocab_slice slice;
  detail::collective_check(layout, "fused_loss", [&] {
    detail::require_logits_shapes(in, cfg);
    detail::require_temperature(cfg, in.temperature);
    detail::require_dlogits(in, dlogits, mode);
    detail::require_batch_shapes<P::trust_region || P::importance_mask>(batch, T, cfg);
    detail::require_fused_outputs(extra, T);
    detail::require_sum_p2_apart(extra.sum_p2, batch, in.temperature, in.logits, dlogits);
  });
  detail::collective_check(layout, "fused_loss", [&] {
    slice = detail::checked_vocab_slice(layout.tp, in.logits.cols, P::chunk_size, T, in.targets, in.temperature);
    detail::require_same_sum_p2(layout.tp, extra.sum_p2);
  });
  std::vector<Real> logp, entropy, lse, dlogp, dentropy;
  detail::collective_check(layout, "fused_loss", [&] {
    for (auto* v : {&logp, &entropy, &lse, &dlogp, &dentropy}) *v = detail::scratch<Real>(T, "fused_loss");
  });
  detail::collective_check(layout, "fused_loss", [&] {
    detail::sharded_token_logprobs<P>(layout.tp, slice, in, cfg, token_stats<Real>{logp, entropy, lse});
  });
  if (!extra.sum_p2.empty()) {  // before an in-place backward; a TP group's ranks all ask (checked above)
    const parallel_layout<single_process, TP> tp_group{single_process{}, layout.tp};
    detail::collective_check(tp_group, "fused_loss",
                             [&] { detail::sharded_sum_p2<P>(layout.tp, in, cfg, lse, extra.sum_p2); });
  }
  const loss_result res =
      policy_loss<P>(current_policy<Real>{logp, entropy}, batch, cfg, policy_grads<Real>{dlogp, dentropy}, layout);
  detail::collective_check(layout, "fused_loss", [&] {
    detail::sharded_logits_backward<P>(layout.tp, slice, in, backward_inputs<Real>{lse, entropy, dlogp, dentropy}, cfg,
                                       dlogits);
  });
  detail::copy_extra(extra, logp, entropy);
  return res;
}

template <class P, class DP, class TP>
loss_result fused_linear_loss(const linear_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                              const loss_config& cfg, std::int64_t token_chunk,
                              const linear_grads<storage_t<P>, accum_t<P>>& grads,
                              const parallel_layout<DP, TP>& layout, const fused_outputs<accum_t<P>>& extra = {},
                              const lm_head_norms& norms = {}) {
  using Acc = accum_t<P>;
  using S = storage_t<P>;
  using Q = typename P::template with_storage<Acc>;  // the chunk of logits is kept in Acc
  detail::vocab_slice slice;
  detail::collective_check(layout, "fused_linear_loss", [&] {
    detail::require_linear_shapes(in, token_chunk, grads, extra);
    detail::require_batch_shapes<P::trust_region || P::importance_mask>(batch, in.hidden.rows, cfg);
    detail::require_linear_sum_p2_apart(extra, batch, in, grads);
    detail::require_scalar_temperature<Acc>(cfg);
    detail::require_temperature(cfg, in.temperature);
    detail::require_lm_head_norms(norms, batch.seq_offsets.size() - 1);
    // a group's and the batch's sums would span the DP ranks (V x D matrices): not communicated
    GRPOKIT_REQUIRE(!norms.wanted() || layout.dp.size() == 1,
                    "fused_linear_loss: lm_head_norms under data parallelism is not supported (one DP rank)");
  });
  detail::collective_check(layout, "fused_linear_loss", [&] {
    slice = detail::checked_vocab_slice(layout.tp, in.weight.rows, Q::chunk_size, in.hidden.rows, in.targets,
                                        in.temperature);
    for (const std::int64_t c : detail::gather_value(layout.tp, token_chunk))  // the same chunks on every TP rank
      GRPOKIT_REQUIRE(c == token_chunk, "fused_linear_loss: every TP rank must pass the same token_chunk");
    detail::require_same_sum_p2(layout.tp, extra.sum_p2);
    for (const std::uint8_t w : detail::gather_value(layout.tp, static_cast<std::uint8_t>(norms.wanted())))
      GRPOKIT_REQUIRE(w == norms.wanted(), "lm_head_norms: every TP rank must ask for them, or none");
  });
  // The chunk count differs between DP ranks: a chunk's step agrees over its TP group only (which
  // has the same chunks), and the whole forward agrees over the layout before policy_loss's
  // collectives. Nothing after policy_loss talks to the DP ranks.
  const parallel_layout<single_process, TP> tp_group{single_process{}, layout.tp};
  const loss_result res = detail::fused_linear_loss_with<P>(
      in, token_chunk, grads, extra, norms, batch.seq_offsets,
      [&](const logits_input<Acc, Acc>& ci, const token_stats<Acc>& stats) {
        detail::collective_check(tp_group, "fused_linear_loss",
                                 [&] { detail::sharded_token_logprobs<Q>(layout.tp, slice, ci, cfg, stats); });
      },
      [&](std::exception_ptr failed) {  // after the allocation, then after the forward
        detail::collective_check(layout, "fused_linear_loss", [&] {
          if (failed) std::rethrow_exception(failed);
        });
      },
      [&](const current_policy<Acc>& cur, const policy_grads<Acc>& g) {
        return policy_loss<P>(cur, batch, cfg, g, layout);
      },
      [&](const logits_input<Acc, Acc>& ci, const backward_inputs<Acc>& g, const matrix_view<S>& dlogits) {
        detail::collective_check(tp_group, "fused_linear_loss",
                                 [&] { detail::sharded_logits_backward<Q>(layout.tp, slice, ci, g, cfg, dlogits); });
      },
      [&](const logits_input<Acc, Acc>& ci, span<const Acc> lse, span<Acc> out) {
        detail::collective_check(tp_group, "fused_linear_loss",
                                 [&] { detail::sharded_sum_p2<Q>(layout.tp, ci, cfg, lse, out); });
      });
  // lm_head_norms: each TP rank measured its slice of the head; the squared norms of the slices add
  if (norms.wanted()) detail::collective_check(tp_group, "fused_linear_loss", [&] { detail::add_over_ranks(layout.tp, norms); });
  return res;
}

}  // namespace grpokit::host
