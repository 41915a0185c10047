#pragma once
// grpokit::token_logprobs on CUDA: device::token_logprobs_async on the current stream.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "config_fields.hpp"
#include "device_call.cuh"
#include "variants.hpp"

namespace grpokit_torch {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> token_logprobs_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                                                   const c10::optional<at::Tensor>& token_temperature,
                                                                   bool want_sum_p2, c10::ArrayRef<double> config,
                                                                   c10::string_view reduction, c10::string_view mask) {
  device_call call(logits);
  const grpokit::loss_config cfg = config_from(loss_fields(), config.vec());
  const rows r(logits, targets, token_temperature);
  require_on(call.device(), r);
  at::Tensor logp = at::empty({r.T}, logits.options().dtype(r.accum));
  at::Tensor entropy = at::empty_like(logp), lse = at::empty_like(logp);
  at::Tensor sum_p2 = at::empty({want_sum_p2 ? r.T : 0}, logp.options());
  with_policy</*rows_only=*/true>(logits.scalar_type(), std::string(reduction), std::string(mask), [&](auto tag) {
    using P = decltype(tag);
    using R = grpokit::accum_t<P>;
    call.run([&](void* ws, std::size_t& bytes) {
      grpokit::device::token_logprobs_async<P>(r.input<P>(), cfg,
                                               {span_of<R>(logp), span_of<R>(entropy), span_of<R>(lse), span_of<R>(sum_p2)}, ws, bytes,
                                               call.stream());
    });
  });
  call.nan_if_raised(logp, entropy, lse, sum_p2);
  call.check();
  return {logp, entropy, lse, sum_p2};
}

}  // namespace
}  // namespace grpokit_torch

TORCH_LIBRARY_IMPL(grpokit, CUDA, m) { m.impl("token_logprobs", &grpokit_torch::token_logprobs_cuda); }
