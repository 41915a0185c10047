#pragma once
// grpokit::fused_loss on CUDA: device::fused_loss_async on the current stream; the loss and the
// metrics copied out of the workspace on the device.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "config_fields.hpp"
#include "device_call.cuh"
#include "variants.hpp"

namespace grpokit_torch {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_loss_cuda(
    const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& seq_offsets, const at::Tensor& adv,
    const c10::optional<at::Tensor>& logp_old, const c10::optional<at::Tensor>& logp_ref,
    const c10::optional<at::Tensor>& logp_rollout, const c10::optional<at::Tensor>& token_mask,
    const c10::optional<at::Tensor>& seq_mask, const c10::optional<at::Tensor>& positive,
    const c10::optional<at::Tensor>& token_adv, const c10::optional<at::Tensor>& token_temperature, c10::ArrayRef<double> config, c10::string_view reduction,
    c10::string_view mask) {
  device_call call(logits);
  const grpokit::loss_config cfg = config_from(loss_fields(), config.vec());
  const rows r(logits, targets, token_temperature);
  const batch b(r.accum, seq_offsets, adv, logp_old, logp_ref, logp_rollout, token_mask, seq_mask, positive, token_adv);
  require_on(call.device(), r);
  require_on(call.device(), b);
  const at::TensorOptions acc = logits.options().dtype(r.accum);
  at::Tensor dlogits = at::empty_like(r.logits);
  at::Tensor logp = at::empty({r.T}, acc), entropy = at::empty({r.T}, acc);
  at::Tensor loss = at::empty(c10::IntArrayRef{}, acc), metrics = at::empty({metric_count}, acc.dtype(at::kDouble));
  with_policy(logits.scalar_type(), std::string(reduction), std::string(mask), [&](auto tag) {
    using P = decltype(tag);
    using R = grpokit::accum_t<P>;
    using S = grpokit::storage_t<P>;
    call.run([&](void* ws, std::size_t& bytes) {
      grpokit::device::fused_loss_async<P>(
          r.input<P>(), b.get<R>(), cfg, {reinterpret_cast<S*>(dlogits.data_ptr()), r.T, r.V, r.V}, ws, bytes,
          call.stream(), grpokit::fused_outputs<R>{span_of<R>(logp), span_of<R>(entropy)});
    });
    call.loss_outputs<R>(loss, metrics);
  });
  call.nan_if_raised(dlogits, logp, entropy);
  call.check();
  return {loss, metrics, dlogits, logp, entropy};
}

}  // namespace
}  // namespace grpokit_torch

TORCH_LIBRARY_IMPL(grpokit, CUDA, m) { m.impl("fused_loss", &grpokit_torch::fused_loss_cuda); }
