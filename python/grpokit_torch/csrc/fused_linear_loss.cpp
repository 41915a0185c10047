// grpokit::fused_linear_loss on the CPU: host::fused_linear_loss, the loss straight from hidden
// states and the LM head, token_chunk rows of logits at a time (never [T, V]); the loss, the metrics
// (metric_names order), dhidden, dweight, dbias, logp, entropy.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <string>
#include <tuple>

#include "config_fields.hpp"
#include "variants.hpp"

namespace grpokit_torch {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_linear_loss_cpu(
    const at::Tensor& hidden, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const at::Tensor& targets, const at::Tensor& seq_offsets, const at::Tensor& adv,
    const c10::optional<at::Tensor>& logp_old, const c10::optional<at::Tensor>& logp_ref,
    const c10::optional<at::Tensor>& logp_rollout, const c10::optional<at::Tensor>& token_mask,
    const c10::optional<at::Tensor>& seq_mask, const c10::optional<at::Tensor>& positive,
    const c10::optional<at::Tensor>& token_adv, const c10::optional<at::Tensor>& token_temperature, std::int64_t token_chunk, c10::ArrayRef<double> config,
    c10::string_view reduction, c10::string_view mask) {
  const grpokit::loss_config cfg = config_from(loss_fields(), config.vec());
  const lm_head_rows r(hidden, weight, bias, targets, token_temperature);
  const batch b(r.accum, seq_offsets, adv, logp_old, logp_ref, logp_rollout, token_mask, seq_mask, positive, token_adv);
  const linear_outputs out(r);
  grpokit::loss_result result;
  with_policy(r.storage, std::string(reduction), std::string(mask), [&](auto tag) {
    using P = decltype(tag);
    using R = grpokit::accum_t<P>;
    result =
        grpokit::host::fused_linear_loss<P>(r.input<P>(), b.get<R>(), cfg, token_chunk, out.grads<P>(), out.extra<P>());
  });
  return out.returned(at::scalar_tensor(result.loss, hidden.options().dtype(r.accum)), metrics_tensor(result));
}

}  // namespace
}  // namespace grpokit_torch

TORCH_LIBRARY_IMPL(grpokit, CPU, m) { m.impl("fused_linear_loss", &grpokit_torch::fused_linear_loss_cpu); }
