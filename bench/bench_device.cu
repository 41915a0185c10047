// Device benchmark: time, bytes moved, GB/s and the fraction of the measured device-to-device copy
// bandwidth for token_logprobs, logits_backward, fused_loss and compute_advantages.
//   bench_device [--reps N] [--quick]
// CUDA events, warm-up, median of N runs, inputs rotated between two copies when they would fit in
// L2, random data (never zeros). Prints Markdown tables for bench/RESULTS.md.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <grpokit/device/grpokit.cuh>

namespace {

template <class T>
struct dev {
  T* p = nullptr;
  explicit dev(std::size_t n) { GRPOKIT_CUDA_CHECK(cudaMalloc(&p, std::max<std::size_t>(n, 1) * sizeof(T))); }
  ~dev() { cudaFree(p); }
  dev(const dev&) = delete;
  dev& operator=(const dev&) = delete;
};

__device__ inline float hash_uniform(std::uint64_t i, std::uint64_t seed) {
  std::uint64_t x = i * 0x9E3779B97F4A7C15ull + seed;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return (static_cast<float>(x >> 40) + 0.5f) / 16777216.0f;  // (0, 1), never 0
}

template <class T>
__global__ void fill_kernel(T* out, std::int64_t n, float lo, float hi, std::uint64_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = grpokit::math::store<T>(lo + (hi - lo) * hash_uniform(static_cast<std::uint64_t>(i), seed));
}
__global__ void fill_ids(std::int64_t* out, std::int64_t n, std::int64_t V, std::uint64_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = static_cast<std::int64_t>(hash_uniform(static_cast<std::uint64_t>(i), seed) * V) % V;
}

template <class T>
void fill(T* p, std::int64_t n, float lo, float hi, std::uint64_t seed) {
  fill_kernel<<<1024, 256>>>(p, n, lo, hi, seed);
  GRPOKIT_CUDA_CHECK_LAUNCH();
}

// Median milliseconds of `reps` runs of f(i) after 3 warm-ups; i rotates the input copy.
double median_ms(int reps, const std::function<void(int)>& f) {
  for (int i = 0; i < 3; ++i) f(i);
  cudaEvent_t a, b;
  GRPOKIT_CUDA_CHECK(cudaEventCreate(&a));
  GRPOKIT_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    GRPOKIT_CUDA_CHECK(cudaEventRecord(a));
    f(i);
    GRPOKIT_CUDA_CHECK(cudaEventRecord(b));
    GRPOKIT_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    GRPOKIT_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double copy_bandwidth(int reps) {
  const std::size_t bytes = std::size_t{2} << 30;
  dev<char> src(bytes), dst(bytes);
  GRPOKIT_CUDA_CHECK(cudaMemset(src.p, 1, bytes));
  const double ms = median_ms(reps, [&](int) {
    GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice));
  });
  return 2.0 * bytes / (ms * 1e-3) / 1e9;  // read + write
}

void row(const char* what, std::int64_t T, std::int64_t V, const char* dtype, double ms, double bytes, double peak) {
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  std::printf("| %s | %lld | %lld | %s | %.3f | %.2f | %.0f | %.1f%% |\n", what, static_cast<long long>(T),
              static_cast<long long>(V), dtype, ms, bytes / 1e9, gbs, 100.0 * gbs / peak);
  std::fflush(stdout);
}

template <class S>
void bench_rows(std::int64_t T, std::int64_t V, const char* dtype, int reps, double peak, std::size_t free_bytes) {
  using P = grpokit::policy<grpokit::precision<S, float>, grpokit::reduction::deterministic>;
  const double logits_bytes = static_cast<double>(T) * V * sizeof(S);
  const int copies = logits_bytes < 4 * 50e6 ? 2 : 1;  // rotate when the logits would sit in L2
  if ((copies + 1) * logits_bytes > 0.85 * static_cast<double>(free_bytes)) {
    std::printf("| (skipped: %lld x %lld %s needs %.1f GB) | | | | | | | |\n", static_cast<long long>(T),
                static_cast<long long>(V), dtype, (copies + 1) * logits_bytes / 1e9);
    return;
  }
  std::vector<dev<S>*> logits;
  for (int c = 0; c < copies; ++c) {
    logits.push_back(new dev<S>(static_cast<std::size_t>(T * V)));
    fill(logits.back()->p, T * V, -8.f, 8.f, 11 + c);
  }
  dev<S> dlogits(static_cast<std::size_t>(T * V));
  dev<std::int64_t> targets(T), offsets(T / 256 + 2);
  fill_ids<<<256, 256>>>(targets.p, T, V, 3);
  std::vector<std::int64_t> off;
  for (std::int64_t t = 0; t < T; t += 256) off.push_back(t);
  off.push_back(T);
  const std::int64_t n_seqs = static_cast<std::int64_t>(off.size()) - 1;
  GRPOKIT_CUDA_CHECK(cudaMemcpy(offsets.p, off.data(), off.size() * sizeof(std::int64_t), cudaMemcpyHostToDevice));
  dev<float> logp(T), ent(T), lse(T), old(T), dlogp(T), dent(T), adv(n_seqs);
  fill(old.p, T, -3.f, -0.01f, 5);
  fill(dlogp.p, T, -1e-3f, 1e-3f, 6);
  fill(dent.p, T, -1e-3f, 1e-3f, 7);
  fill(adv.p, n_seqs, -1.f, 1.f, 8);
  dev<unsigned char> ws(grpokit::device::workspace_bytes<P>({T, V, n_seqs}));
  const std::size_t wsb = grpokit::device::workspace_bytes<P>({T, V, n_seqs});
  grpokit::loss_config cfg = grpokit::presets::dapo::config();
  auto input = [&](int i) {
    return grpokit::logits_input<S, float>{{logits[i % copies]->p, T, V, V}, {targets.p, T}, {}};
  };
  const double fwd = median_ms(reps, [&](int i) {
    grpokit::device::token_logprobs<P>(input(i), cfg, {{logp.p, T}, {ent.p, T}, {lse.p, T}}, ws.p, wsb);
  });
  row("token_logprobs", T, V, dtype, fwd, logits_bytes + T * 28.0, peak);
  const double bwd = median_ms(reps, [&](int i) {
    grpokit::device::logits_backward<P>(input(i), {{lse.p, T}, {ent.p, T}, {dlogp.p, T}, {dent.p, T}}, cfg,
                                        {dlogits.p, T, V, V}, ws.p, wsb);
  });
  row("logits_backward", T, V, dtype, bwd, 2 * logits_bytes + T * 32.0, peak);
  grpokit::rollout_batch<float> batch;
  batch.seq_offsets = {offsets.p, n_seqs + 1};
  batch.adv = {adv.p, n_seqs};
  batch.logp_old = {old.p, T};
  const double fused = median_ms(reps, [&](int i) {
    grpokit::device::fused_loss<P>(input(i), batch, cfg, {dlogits.p, T, V, V}, ws.p, wsb);
  });
  row("fused_loss", T, V, dtype, fused, 3 * logits_bytes + T * 60.0, peak);
  for (auto* l : logits) delete l;
}

void bench_advantages(std::int64_t groups, std::int64_t G, int reps, double peak) {
  using P = grpokit::policy<grpokit::baseline::mean>;
  const std::int64_t S = groups * G;
  dev<float> rewards(S), adv(S);
  dev<std::uint8_t> keep(S);
  dev<std::int64_t> offsets(groups + 1);
  std::vector<std::int64_t> off(groups + 1);
  for (std::int64_t g = 0; g <= groups; ++g) off[g] = g * G;
  GRPOKIT_CUDA_CHECK(cudaMemcpy(offsets.p, off.data(), off.size() * sizeof(std::int64_t), cudaMemcpyHostToDevice));
  fill(rewards.p, S, 0.f, 1.f, 9);
  dev<unsigned char> ws(grpokit::device::workspace_bytes<P>({0, 0, S}));
  const std::size_t wsb = grpokit::device::workspace_bytes<P>({0, 0, S});
  const double ms = median_ms(reps, [&](int) {
    grpokit::device::compute_advantages<P>({{rewards.p, S}, {offsets.p, groups + 1}, {}, {}}, {}, {{adv.p, S}, {keep.p, S}},
                                           ws.p, wsb);
  });
  char what[64];
  std::snprintf(what, sizeof(what), "compute_advantages G=%lld", static_cast<long long>(G));
  row(what, S, 0, "fp32", ms, S * 9.0 + (groups + 1) * 8.0, peak);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--quick")) quick = true;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: nothing to measure\n");
    return 77;
  }
  cudaDeviceProp prop{};
  GRPOKIT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double peak = copy_bandwidth(reps);
  std::printf("device: %s; measured device-to-device copy bandwidth %.0f GB/s (read + write)\n\n", prop.name, peak);
  std::printf("| kernel | T | V | dtype | ms | GB moved | GB/s | of copy bw |\n|---|---|---|---|---|---|---|---|\n");
  const std::vector<std::int64_t> Ts = quick ? std::vector<std::int64_t>{4096} : std::vector<std::int64_t>{4096, 16384, 65536};
  const std::vector<std::int64_t> Vs =
      quick ? std::vector<std::int64_t>{32000} : std::vector<std::int64_t>{32000, 128256, 151936, 262144};
  for (std::int64_t T : Ts) {
    for (std::int64_t V : Vs) {
      std::size_t free_bytes = 0, total = 0;
      GRPOKIT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
      bench_rows<__nv_bfloat16>(T, V, "bf16", reps, peak, free_bytes);
      bench_rows<float>(T, V, "fp32", reps, peak, free_bytes);
    }
  }
  for (std::int64_t G : {2, 8, 64}) bench_advantages(65536 / G, G, reps, peak);
  return 0;
}
