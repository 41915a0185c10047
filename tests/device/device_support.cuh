#pragma once
// Device buffers for the tests, and runs of the device path on a ref::problem.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <grpokit/device/grpokit.cuh>

#include "../support.hpp"

namespace device_support {

// The size knob: GRPOKIT_DEVICE_TEST_SIZE=small runs each case on shapes small enough for the
// simulated GPU (every schedule still taken: warp, block and split rows); unset or "full", the
// full sizes (a real GPU). main() refuses any other value.
inline bool small_sizes() {
  const char* v = std::getenv("GRPOKIT_DEVICE_TEST_SIZE");
  return v != nullptr && std::strcmp(v, "small") == 0;
}
inline std::int64_t sized(std::int64_t full, std::int64_t small) { return small_sizes() ? small : full; }

template <class T>
class buffer {
 public:
  explicit buffer(std::size_t n = 0) : n_(n) {
    if (n_) GRPOKIT_CUDA_CHECK(cudaMalloc(&p_, n_ * sizeof(T)));
  }
  explicit buffer(const std::vector<T>& host) : buffer(host.size()) {
    if (n_) GRPOKIT_CUDA_CHECK(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
  ~buffer() { cudaFree(p_); }
  T* data() const { return p_; }
  std::int64_t size() const { return static_cast<std::int64_t>(n_); }
  grpokit::span<T> span() const { return {p_, size()}; }
  grpokit::span<const T> cspan() const { return {p_, size()}; }
  std::vector<T> host() const {
    std::vector<T> h(n_);
    if (n_) GRPOKIT_CUDA_CHECK(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

// All inputs of a problem on the device.
template <class P>
struct device_problem {
  using S = grpokit::storage_t<P>;
  using R = grpokit::accum_t<P>;
  const ref::problem& p;
  buffer<S> logits;
  buffer<std::int64_t> targets, seq_offsets;
  buffer<R> temperature, adv, logp_old, logp_ref, logp_rollout;
  buffer<std::uint8_t> token_mask, seq_mask, positive;
  buffer<unsigned char> workspace;

  explicit device_problem(const ref::problem& p_)
      : p(p_),
        logits(support::to_storage<S>(p_.logits)),
        targets(p_.targets),
        seq_offsets(p_.b.seq_offsets),
        temperature(support::cast<R>(p_.temperature)),
        adv(support::cast<R>(p_.b.adv)),
        logp_old(support::cast<R>(p_.b.logp_old)),
        logp_ref(support::cast<R>(p_.b.logp_ref)),
        logp_rollout(support::cast<R>(p_.b.logp_rollout)),
        token_mask(support::bytes(p_.b.token_mask)),
        seq_mask(support::bytes(p_.b.seq_mask)),
        positive(support::bytes(p_.b.positive)),
        workspace(grpokit::device::workspace_bytes<P>({p_.T, p_.V, p_.S})) {}

  grpokit::logits_input<S, R> input() const {
    return {{logits.data(), p.T, p.V, p.V}, targets.cspan(), temperature.cspan()};
  }
  grpokit::rollout_batch<R> batch() const {
    grpokit::rollout_batch<R> b;
    b.seq_offsets = seq_offsets.cspan();
    b.adv = adv.cspan();
    b.logp_old = logp_old.cspan();
    b.logp_ref = logp_ref.cspan();
    b.logp_rollout = logp_rollout.cspan();
    b.token_mask = token_mask.cspan();
    b.seq_mask = seq_mask.cspan();
    b.positive = positive.cspan();
    return b;
  }
  void* ws() const { return workspace.data(); }
  std::size_t ws_bytes() const { return static_cast<std::size_t>(workspace.size()); }
};

// A plain GEMM with fused_linear_loss's contract (device/fused_linear_loss.cuh, cublas_gemm): C
// (column-major m x n) = op(A) op(B) + beta C, Acc accumulation, a thread per element of C.
template <class Acc, class TA, class TB, class TC>
__global__ void reference_gemm_kernel(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const TA* A,
                                      std::int64_t lda, const TB* B, std::int64_t ldb, Acc beta, TC* C,
                                      std::int64_t ldc) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= m * n) return;
  const std::int64_t r = i % m, c = i / m;
  Acc acc = 0;
  for (std::int64_t l = 0; l < k; ++l)
    acc += grpokit::math::load<Acc>(ta ? A[r * lda + l] : A[l * lda + r]) *
           grpokit::math::load<Acc>(tb ? B[l * ldb + c] : B[c * ldb + l]);
  TC& out = C[c * ldc + r];
  out = grpokit::math::store<TC>(beta == Acc(0) ? acc : acc + beta * grpokit::math::load<Acc>(out));
}

struct reference_gemm {
  cudaStream_t stream;
  template <class Acc, class TA, class TB, class TC>
  void operator()(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const TA* A, std::int64_t lda,
                  const TB* B, std::int64_t ldb, Acc beta, TC* C, std::int64_t ldc) const {
    if (m * n == 0) return;
    reference_gemm_kernel<Acc><<<static_cast<unsigned>((m * n + 127) / 128), 128, 0, stream>>>(ta, tb, m, n, k, A, lda,
                                                                                               B, ldb, beta, C, ldc);
    GRPOKIT_CUDA_CHECK_LAUNCH();
  }
};

}  // namespace device_support
