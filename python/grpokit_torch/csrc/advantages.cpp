// grpokit::compute_advantages on the CPU: host::compute_advantages; the statistics in advantage_stat_names order.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <string>
#include <tuple>

#include "config_fields.hpp"
#include "variants.hpp"

namespace grpokit_torch {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> compute_advantages_cpu(
    const at::Tensor& rewards, const at::Tensor& group_offsets, const c10::optional<at::Tensor>& seq_log_ratio,
    const c10::optional<at::Tensor>& seq_weight, const c10::optional<at::Tensor>& group_baseline,
    c10::ArrayRef<double> config, c10::string_view baseline) {
  const grpokit::advantage_config cfg = config_from(advantage_fields(), config.vec());
  TORCH_CHECK(rewards.dim() == 1, "grpokit.compute_advantages: rewards must be 1-D, got ", rewards.dim(), " dims");
  TORCH_CHECK(rewards.scalar_type() == at::kFloat || rewards.scalar_type() == at::kDouble,
              "grpokit.compute_advantages: rewards must be float32 or float64, got ", rewards.scalar_type());
  const at::Tensor rw = rewards.contiguous();
  const at::Tensor off = int64_vector("group_offsets", group_offsets);
  auto same = [&](const c10::optional<at::Tensor>& t) {
    return t.has_value() ? t->to(rw.scalar_type()).contiguous() : at::Tensor();
  };
  const at::Tensor lr = same(seq_log_ratio), w = same(seq_weight), gb = same(group_baseline);
  at::Tensor adv = at::empty_like(rw), keep = at::empty({rw.numel()}, rw.options().dtype(at::kByte));
  grpokit::advantage_stats st;
  with_baseline(rw.scalar_type(), std::string(baseline), [&](auto tag) {
    using P = decltype(tag);
    using R = grpokit::accum_t<P>;
    st = grpokit::host::compute_advantages<P>(
        {cspan_of<R>(rw), cspan_of<std::int64_t>(off), cspan_of<R>(lr), cspan_of<R>(w), cspan_of<R>(gb)}, cfg,
        {span_of<R>(adv), span_of<std::uint8_t>(keep)});
  });
  return {adv, keep, float64_tensor(advantage_stat_values(st))};
}

}  // namespace
}  // namespace grpokit_torch

TORCH_LIBRARY_IMPL(grpokit, CPU, m) { m.impl("compute_advantages", &grpokit_torch::compute_advantages_cpu); }
