// grpokit::fused_loss on the CPU: host::fused_loss; the loss, the metrics (metric_names order), dlogits, logp, entropy.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <string>
#include <tuple>

#include "config_fields.hpp"
#include "variants.hpp"

namespace grpokit_torch {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_loss_cpu(
    const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& seq_offsets, const at::Tensor& adv,
    const c10::optional<at::Tensor>& logp_old, const c10::optional<at::Tensor>& logp_ref,
    const c10::optional<at::Tensor>& logp_rollout, const c10::optional<at::Tensor>& token_mask,
    const c10::optional<at::Tensor>& seq_mask, const c10::optional<at::Tensor>& positive,
    const c10::optional<at::Tensor>& token_adv, const c10::optional<at::Tensor>& token_temperature, c10::ArrayRef<double> config, c10::string_view reduction,
    c10::string_view mask) {
  const grpokit::loss_config cfg = config_from(loss_fields(), config.vec());
  const rows r(logits, targets, token_temperature);
  const batch b(r.accum, seq_offsets, adv, logp_old, logp_ref, logp_rollout, token_mask, seq_mask, positive, token_adv);
  at::Tensor dlogits = at::empty_like(r.logits);
  at::Tensor logp = at::empty({r.T}, logits.options().dtype(r.accum));
  at::Tensor entropy = at::empty_like(logp);
  grpokit::loss_result result;
  with_policy(logits.scalar_type(), std::string(reduction), std::string(mask), [&](auto tag) {
    using P = decltype(tag);
    using R = grpokit::accum_t<P>;
    using S = grpokit::storage_t<P>;
    result = grpokit::host::fused_loss<P>(r.input<P>(), b.get<R>(), cfg,
                                          {reinterpret_cast<S*>(dlogits.data_ptr()), r.T, r.V, r.V},
                                          grpokit::fused_outputs<R>{span_of<R>(logp), span_of<R>(entropy)});
  });
  at::Tensor loss = at::scalar_tensor(result.loss, at::TensorOptions().dtype(r.accum));
  return {loss, metrics_tensor(result), dlogits, logp, entropy};
}

}  // namespace
}  // namespace grpokit_torch

TORCH_LIBRARY_IMPL(grpokit, CPU, m) { m.impl("fused_loss", &grpokit_torch::fused_loss_cpu); }
