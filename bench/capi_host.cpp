// The host path behind the C ABI of capi.hpp (built as a shared library): fused_loss,
// token_logprobs, fused_linear_loss and compute_advantages, fp32 or bf16 logits.
#include <cstdio>
#include <exception>

#include "capi.hpp"

namespace {
template <class S>
using policy = grpokit::policy<grpokit::precision<S, float>, grpokit::reduction::deterministic>;

template <class S>
grpokit::logits_input<S, float> logits_of(const grpokit_bench_args& a) {
  return {{static_cast<const S*>(a.logits), a.T, a.V, a.V}, {a.targets, a.T}, {}};
}

// f(S{}) with the storage type of `dtype` (0 fp32, 1 bf16); 0, or 1 after printing the error, or 2
// for bf16 without its header.
template <class F>
int with_storage(int dtype, F&& f) {
  try {
#if defined(GRPOKIT_HAS_CUDA_HALF)
    if (dtype == 1) {
      f(__nv_bfloat16{});
      return 0;
    }
#else
    if (dtype == 1) return 2;
#endif
    f(float{});
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
}  // namespace

extern "C" int grpokit_host_fused_loss(const grpokit_bench_args* a, double* loss) {
  return with_storage(a->dtype, [&](auto tag) {
    using S = decltype(tag);
    grpokit::host::fused_outputs<float> extra;
    if (a->logp_out) extra.logp = {a->logp_out, a->T};
    *loss = grpokit::host::fused_loss<policy<S>>(logits_of<S>(*a), grpokit_bench::batch<float>(*a),
                                                 grpokit_bench::config(*a),
                                                 {static_cast<S*>(a->dlogits), a->T, a->V, a->V}, extra)
                .loss;
  });
}

// logp, lse [T] and entropy [T] (or null) of the rows: the forward alone.
extern "C" int grpokit_host_token_logprobs(const grpokit_bench_args* a, float* logp, float* entropy, float* lse) {
  return with_storage(a->dtype, [&](auto tag) {
    using S = decltype(tag);
    grpokit::host::token_logprobs<policy<S>>(
        logits_of<S>(*a), grpokit_bench::config(*a),
        {{logp, a->T}, entropy ? grpokit::span<float>{entropy, a->T} : grpokit::span<float>{}, {lse, a->T}});
  });
}

// token_logprobs's row arithmetic with no memory traffic: T rows that are all the first
// `cached_rows` rows of the logits again (small enough to stay in each core's cache), lse [T] out.
// Its time is the ceiling the kernels' operations allow on this CPU, whatever the memory does.
extern "C" int grpokit_host_rows_in_cache(const grpokit_bench_args* a, std::int64_t cached_rows, float* lse) {
  return with_storage(a->dtype, [&](auto tag) {
    using S = decltype(tag);
    using P = policy<S>;
    auto in = logits_of<S>(*a);
    in.logits.rows = cached_rows;
    const grpokit::loss_config cfg = grpokit_bench::config(*a);
    const float log_rho = grpokit::detail::log_prune_rho<grpokit::detail::ops_for<P::order>, float>(cfg);
    grpokit::detail::parallel_for(a->T, [&](std::int64_t t) {
      lse[t] = grpokit::detail::logprob_row<P>(in, cfg, log_rho, t % cached_rows).lse;
    });
  });
}

// fused_linear_loss: dhidden [T, D] in the storage type, dweight [V, D] accumulated in fp32.
extern "C" int grpokit_host_fused_linear_loss(const grpokit_bench_linear_args* l, double* loss) {
  const grpokit_bench_args& a = l->base;
  return with_storage(a.dtype, [&](auto tag) {
    using S = decltype(tag);
    grpokit::linear_grads<S, float> g;
    g.dhidden = {static_cast<S*>(l->dhidden), a.T, l->D, l->D};
    g.dweight_acc = {l->dweight, a.V, l->D, l->D};
    *loss = grpokit::host::fused_linear_loss<policy<S>>(
                {{static_cast<const S*>(l->hidden), a.T, l->D, l->D},
                 {static_cast<const S*>(l->weight), a.V, l->D, l->D},
                 {},
                 {a.targets, a.T},
                 {}},
                grpokit_bench::batch<float>(a), grpokit_bench::config(a), l->token_chunk, g)
                .loss;
  });
}

extern "C" int grpokit_host_compute_advantages(const grpokit_bench_advantages_args* a) {
  return with_storage(0, [&](auto) {
    using namespace grpokit_bench;
    if (a->baseline == 1)
      grpokit::host::compute_advantages<advantages_policy<grpokit::baseline::median>>(
          advantage_inputs(*a), {}, advantage_outputs(*a));
    else
      grpokit::host::compute_advantages<advantages_policy<grpokit::baseline::mean>>(
          advantage_inputs(*a), {}, advantage_outputs(*a));
  });
}
