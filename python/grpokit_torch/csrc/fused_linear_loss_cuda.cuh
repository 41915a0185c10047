#pragma once
// grpokit::fused_linear_loss on CUDA: device::fused_linear_loss_async on the current stream, with
// PyTorch's cuBLAS handle; the loss and the metrics copied out of the workspace on the device.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "config_fields.hpp"
#include "device_call.cuh"
#include "variants.hpp"

namespace grpokit_torch {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_linear_loss_cuda(
    const at::Tensor& hidden, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const at::Tensor& targets, const at::Tensor& seq_offsets, const at::Tensor& adv,
    const c10::optional<at::Tensor>& logp_old, const c10::optional<at::Tensor>& logp_ref,
    const c10::optional<at::Tensor>& logp_rollout, const c10::optional<at::Tensor>& token_mask,
    const c10::optional<at::Tensor>& seq_mask, const c10::optional<at::Tensor>& positive,
    const c10::optional<at::Tensor>& token_adv, const c10::optional<at::Tensor>& token_temperature, std::int64_t token_chunk, c10::ArrayRef<double> config,
    c10::string_view reduction, c10::string_view mask) {
  device_call call(hidden);
  const grpokit::loss_config cfg = config_from(loss_fields(), config.vec());
  const lm_head_rows r(hidden, weight, bias, targets, token_temperature);
  const batch b(r.accum, seq_offsets, adv, logp_old, logp_ref, logp_rollout, token_mask, seq_mask, positive, token_adv);
  require_on(call.device(), r);
  require_on(call.device(), b);
  const linear_outputs out(r);
  const at::TensorOptions acc = hidden.options().dtype(r.accum);
  at::Tensor loss = at::empty(c10::IntArrayRef{}, acc), metrics = at::empty({metric_count}, acc.dtype(at::kDouble));
  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
  with_policy(r.storage, std::string(reduction), std::string(mask), [&](auto tag) {
    using P = decltype(tag);
    using R = grpokit::accum_t<P>;
    call.run([&](void* ws, std::size_t& bytes) {
      grpokit::device::fused_linear_loss_async<P>(r.input<P>(), b.get<R>(), cfg, token_chunk, out.grads<P>(), handle,
                                                  ws, bytes, call.stream(), out.extra<P>());
    });
    call.loss_outputs<R>(loss, metrics);
  });
  call.nan_if_raised(out.dhidden, out.dweight, out.dbias, out.logp, out.entropy);
  call.check();
  return out.returned(loss, metrics);
}

}  // namespace
}  // namespace grpokit_torch

TORCH_LIBRARY_IMPL(grpokit, CUDA, m) { m.impl("fused_linear_loss", &grpokit_torch::fused_linear_loss_cuda); }
