// grpokit_device_fused_loss / grpokit_device_workspace_bytes: the device path behind the C ABI of
// capi.hpp, for peers.py on a GPU machine (pointers are torch CUDA tensors' data_ptr()).
#include <cuda_bf16.h>

#include <cstdio>

#include <grpokit/device/grpokit.cuh>

#include "capi.hpp"

namespace {
template <class S>
using policy = grpokit::policy<grpokit::precision<S, float>, grpokit::reduction::deterministic>;

template <class S>
double run(const grpokit_bench_args& a) {
  const grpokit::logits_input<S, float> in{{static_cast<const S*>(a.logits), a.T, a.V, a.V}, {a.targets, a.T}, {}};
  grpokit::device::fused_outputs<float> extra;
  if (a.logp_out) extra.logp = {a.logp_out, a.T};
  return grpokit::device::fused_loss<policy<S>>(in, grpokit_bench::batch<float>(a), grpokit_bench::config(a),
                                                {static_cast<S*>(a.dlogits), a.T, a.V, a.V}, a.workspace,
                                                a.workspace_bytes, static_cast<cudaStream_t>(a.stream), extra)
      .loss;
}
}  // namespace

extern "C" std::size_t grpokit_device_workspace_bytes(std::int64_t T, std::int64_t V, std::int64_t S, int dtype) {
  return dtype == 1 ? grpokit::device::workspace_bytes<policy<__nv_bfloat16>>({T, V, S})
                    : grpokit::device::workspace_bytes<policy<float>>({T, V, S});
}

extern "C" int grpokit_device_fused_loss(const grpokit_bench_args* a, double* loss) {
  try {
    *loss = a->dtype == 1 ? run<__nv_bfloat16>(*a) : run<float>(*a);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
