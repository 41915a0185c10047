// grpokit_host_fused_loss: the host path behind the C ABI of capi.hpp (built as a shared library).
#include <cstdio>

#include "capi.hpp"

namespace {
template <class S>
double run(const grpokit_bench_args& a) {
  using P = grpokit::policy<grpokit::precision<S, float>, grpokit::reduction::deterministic>;
  const grpokit::logits_input<S, float> in{{static_cast<const S*>(a.logits), a.T, a.V, a.V}, {a.targets, a.T}, {}};
  grpokit::host::fused_outputs<float> extra;
  if (a.logp_out) extra.logp = {a.logp_out, a.T};
  return grpokit::host::fused_loss<P>(in, grpokit_bench::batch<float>(a), grpokit_bench::config(a),
                                      {static_cast<S*>(a.dlogits), a.T, a.V, a.V}, extra)
      .loss;
}
}  // namespace

extern "C" int grpokit_host_fused_loss(const grpokit_bench_args* a, double* loss) {
  try {
#if defined(GRPOKIT_HAS_CUDA_HALF)
    *loss = a->dtype == 1 ? run<__nv_bfloat16>(*a) : run<float>(*a);
#else
    if (a->dtype == 1) return 2;
    *loss = run<float>(*a);
#endif
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}

extern "C" int grpokit_host_compute_advantages(const grpokit_bench_advantages_args* a) {
  try {
    using namespace grpokit_bench;
    if (a->baseline == 1)
      grpokit::host::compute_advantages<advantages_policy<grpokit::baseline::median>>(
          advantage_inputs(*a), {}, advantage_outputs(*a));
    else
      grpokit::host::compute_advantages<advantages_policy<grpokit::baseline::mean>>(
          advantage_inputs(*a), {}, advantage_outputs(*a));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
