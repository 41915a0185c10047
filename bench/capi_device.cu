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

template <class S>
double run_linear(const grpokit_bench_linear_args& l) {
  static cublasHandle_t handle = [] {
    cublasHandle_t h;
    GRPOKIT_CUBLAS_CHECK(cublasCreate(&h));
    return h;
  }();
  const grpokit_bench_args& a = l.base;
  grpokit::linear_grads<S, float> g;
  g.dhidden = {static_cast<S*>(l.dhidden), a.T, l.D, l.D};
  g.dweight_acc = {l.dweight, a.V, l.D, l.D};
  return grpokit::device::fused_linear_loss<policy<S>>(
             {{static_cast<const S*>(l.hidden), a.T, l.D, l.D}, {static_cast<const S*>(l.weight), a.V, l.D, l.D}, {},
              {a.targets, a.T}, {}},
             grpokit_bench::batch<float>(a), grpokit_bench::config(a), l.token_chunk, g, handle, a.workspace,
             a.workspace_bytes, static_cast<cudaStream_t>(a.stream))
      .loss;
}

extern "C" std::size_t grpokit_device_linear_workspace_bytes(std::int64_t T, std::int64_t V, std::int64_t S,
                                                             std::int64_t chunk, int dtype) {
  return dtype == 1 ? grpokit::device::linear_workspace_bytes<policy<__nv_bfloat16>>({T, V, S}, chunk)
                    : grpokit::device::linear_workspace_bytes<policy<float>>({T, V, S}, chunk);
}

extern "C" int grpokit_device_fused_linear_loss(const grpokit_bench_linear_args* l, double* loss) {
  try {
    *loss = l->base.dtype == 1 ? run_linear<__nv_bfloat16>(*l) : run_linear<float>(*l);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}

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

extern "C" std::size_t grpokit_device_advantages_workspace_bytes(std::int64_t S) {
  using P = grpokit_bench::advantages_policy<grpokit::baseline::mean>;  // the same for every baseline
  return grpokit::device::workspace_bytes<P>({0, 0, S});
}

extern "C" int grpokit_device_compute_advantages(const grpokit_bench_advantages_args* a) {
  try {
    using namespace grpokit_bench;
    std::size_t bytes = a->workspace_bytes;
    const auto stream = static_cast<cudaStream_t>(a->stream);
    if (a->baseline == 1)
      grpokit::device::compute_advantages_async<advantages_policy<grpokit::baseline::median>>(
          advantage_inputs(*a), {}, advantage_outputs(*a), a->workspace, bytes, stream);
    else
      grpokit::device::compute_advantages_async<advantages_policy<grpokit::baseline::mean>>(
          advantage_inputs(*a), {}, advantage_outputs(*a), a->workspace, bytes, stream);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
