// grpokit::token_logprobs on the CPU: host::token_logprobs (a translation unit per operator: they compile in parallel).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <string>
#include <tuple>

#include "config_fields.hpp"
#include "variants.hpp"

namespace grpokit_torch {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> token_logprobs_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                                                  const c10::optional<at::Tensor>& token_temperature,
                                                                  bool want_sum_p2, c10::ArrayRef<double> config,
                                                                  c10::string_view reduction, c10::string_view mask) {
  const grpokit::loss_config cfg = config_from(loss_fields(), config.vec());
  const rows r(logits, targets, token_temperature);
  at::Tensor logp = at::empty({r.T}, logits.options().dtype(r.accum));
  at::Tensor entropy = at::empty_like(logp), lse = at::empty_like(logp);
  at::Tensor sum_p2 = at::empty({want_sum_p2 ? r.T : 0}, logp.options());
  with_policy</*rows_only=*/true>(logits.scalar_type(), std::string(reduction), std::string(mask), [&](auto tag) {
    using P = decltype(tag);
    using R = grpokit::accum_t<P>;
    grpokit::host::token_logprobs<P>(r.input<P>(), cfg, {span_of<R>(logp), span_of<R>(entropy), span_of<R>(lse), span_of<R>(sum_p2)});
  });
  return {logp, entropy, lse, sum_p2};
}

}  // namespace
}  // namespace grpokit_torch

TORCH_LIBRARY_IMPL(grpokit, CPU, m) { m.impl("token_logprobs", &grpokit_torch::token_logprobs_cpu); }
