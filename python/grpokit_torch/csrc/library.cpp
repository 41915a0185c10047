// The grpokit operators for PyTorch (docs/pytorch.md): their schemas, and what Python needs to
// offer the keyword arguments and name the outputs. The CPU implementations (host path) are in a
// translation unit each; grpokit_torch/__init__.py adds the fake kernels, the autograd formulas of
// fused_loss and fused_linear_loss and the keyword arguments.
#include <torch/extension.h>

#include "config_fields.hpp"
#include "sync_errors.hpp"
#include "variants.hpp"

TORCH_LIBRARY(grpokit, m) {
  m.def("token_logprobs(Tensor logits, Tensor targets, Tensor? token_temperature, bool want_sum_p2, float[] config, "
        "str reduction, str mask) -> (Tensor logp, Tensor entropy, Tensor lse, Tensor sum_p2)");
  m.def("fused_loss(Tensor logits, Tensor targets, Tensor seq_offsets, Tensor adv, Tensor? logp_old, "
        "Tensor? logp_ref, Tensor? logp_rollout, Tensor? token_mask, Tensor? seq_mask, Tensor? positive, "
        "Tensor? token_adv, Tensor? token_temperature, float[] config, str reduction, str mask) -> (Tensor loss, Tensor metrics, "
        "Tensor dlogits, Tensor logp, Tensor entropy)");
  m.def("fused_linear_loss(Tensor hidden, Tensor weight, Tensor? bias, Tensor targets, Tensor seq_offsets, "
        "Tensor adv, Tensor? logp_old, Tensor? logp_ref, Tensor? logp_rollout, Tensor? token_mask, Tensor? seq_mask, "
        "Tensor? positive, Tensor? token_adv, Tensor? token_temperature, int token_chunk, float[] config, str reduction, str mask) -> (Tensor loss, "
        "Tensor metrics, Tensor dhidden, Tensor dweight, Tensor dbias, Tensor logp, Tensor entropy)");
  m.def("compute_advantages(Tensor rewards, Tensor group_offsets, Tensor? seq_log_ratio, Tensor? seq_weight, "
        "Tensor? group_baseline, Tensor? seq_tokens, float[] config, str baseline) -> (Tensor adv, Tensor seq_mask, "
        "Tensor stats)");
  m.def("compute_advantages_multi(Tensor rewards, Tensor group_offsets, float[] weights, Tensor? seq_tokens, "
        "float[] config, str baseline) -> (Tensor adv, Tensor seq_mask, Tensor stats)");
  m.def("optimal_token_baseline(Tensor token_rewards, Tensor seq_offsets, Tensor group_offsets, Tensor logp_old, "
        "Tensor sum_p2, Tensor? is_weights, Tensor? token_mask, bool zero_tail, bool compact, float epsilon) -> "
        "(Tensor adv, Tensor returns, Tensor stats)");
}

// What Python needs to offer the keyword arguments and name the outputs.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("loss_config_fields", [] { return grpokit_torch::describe_fields(grpokit_torch::loss_fields()); });
  m.def("advantage_config_fields", [] { return grpokit_torch::describe_fields(grpokit_torch::advantage_fields()); });
  m.def("metric_names", [] { return grpokit_torch::metric_names(); });
  m.def("advantage_stat_names", [] { return grpokit_torch::advantage_stat_names(); });
  m.def("token_baseline_stat_names", [] { return grpokit_torch::token_baseline_stat_names(); });
  m.def("reductions", [] { return grpokit_torch::reduction_names(); });
  m.def("masks", [] { return grpokit_torch::mask_names(); });
  m.def("baselines", [] { return grpokit_torch::baseline_names(); });
#ifdef GRPOKIT_TORCH_CUDA
  m.def("has_cuda", [] { return true; });
#else
  m.def("has_cuda", [] { return false; });
#endif
  m.def("set_sync_errors", [](bool on) { grpokit_torch::sync_errors() = on; });
  m.def("sync_errors", [] { return grpokit_torch::sync_errors().load(); });
}
