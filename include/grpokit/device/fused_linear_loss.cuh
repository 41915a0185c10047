#pragma once
// grpokit::device::fused_linear_loss: the loss from hidden states with cuBLAS GEMM tiles. Per token
// chunk: logits = hidden W^T (+ bias) into an Accum buffer (fp32 accumulation, an "fp32 LM head"),
// the token_logprobs kernels on it; policy_loss over all tokens; then per chunk again: recompute,
// dlogits in the storage type, dhidden = dlogits W, dweight += dlogits^T hidden, dbias +=.
// Extra memory: one chunk of logits (token_chunk x V of Accum + Storage) plus O(T + S); link
// CUDA::cublas.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../config.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "detail/fused_outputs.cuh"
#include "detail/lm_head_norms.cuh"
#include "error.cuh"
#include "fused_loss.cuh"
#include "policy_loss.cuh"
#include "results.cuh"
#include "token_logprobs.cuh"
#include "tuning.cuh"
#include "workspace.cuh"

#define GRPOKIT_CUBLAS_CHECK(call)                                                                    \
  do {                                                                                                \
    const cublasStatus_t grpokit_st_ = (call);                                                        \
    if (grpokit_st_ != CUBLAS_STATUS_SUCCESS)                                                         \
      ::grpokit::detail::fail("cuBLAS error in ", #call, ": status ", static_cast<int>(grpokit_st_)); \
  } while (0)

namespace grpokit::detail {

template <class T>
constexpr cudaDataType_t cuda_type() {
  if constexpr (std::is_same<T, double>::value)
    return CUDA_R_64F;
  else if constexpr (std::is_same<T, float>::value)
    return CUDA_R_32F;
  else if constexpr (std::is_same<T, __half>::value)
    return CUDA_R_16F;
  else
    return CUDA_R_16BF;
}

template <class Acc>
constexpr cublasComputeType_t compute_type() {
  return std::is_same<Acc, double>::value ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F;
}

// The GEMMs of fused_linear_loss, on cuBLAS: C (column-major m x n, ldc) = op(A) op(B) + beta C with
// Acc compute, op = transpose when trans_*; C is not read when beta == 0. fused_linear_loss_with
// takes any object with this call operator that orders its work on the entry point's stream (the
// handle's stream here; the tests pass a plain reference kernel, so that everything but cuBLAS runs
// on a simulated GPU).
struct cublas_gemm {
  cublasHandle_t handle;
  cudaStream_t stream;
  template <class Acc, class TA, class TB, class TC>
  void operator()(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const TA* A,
                  std::int64_t lda, const TB* B, std::int64_t ldb, Acc beta, TC* C, std::int64_t ldc) const {
    const Acc alpha = 1;
    GRPOKIT_CUBLAS_CHECK(cublasSetStream(handle, stream));  // host-side: set at the first GEMM, after the checks
    GRPOKIT_CUBLAS_CHECK(cublasGemmEx(handle, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                      static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), &alpha, A,
                                      cuda_type<TA>(), static_cast<int>(lda), B, cuda_type<TB>(), static_cast<int>(ldb),
                                      &beta, C, cuda_type<TC>(), static_cast<int>(ldc), compute_type<Acc>(),
                                      CUBLAS_GEMM_DEFAULT));
  }
};

template <class S, class Acc>
__global__ void __launch_bounds__(device::tuning::bias_threads)
    fill_bias_kernel(Acc* out, std::int64_t rows, std::int64_t V, span<const S> bias) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < rows * V;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = math::load<Acc>(bias[i % V]);
}

// dbias[v] += sum_c dlogits[c, v], in chunk row order (deterministic).
template <class S, class Acc>
__global__ void __launch_bounds__(device::tuning::bias_threads)
    bias_grad_kernel(const S* dlogits, std::int64_t rows, std::int64_t V, span<Acc> dbias) {
  const std::int64_t v = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (v >= V) return;
  Acc acc = 0;
  for (std::int64_t c = 0; c < rows; ++c) acc += math::load<Acc>(dlogits[c * V + v]);
  dbias[v] += acc;
}

}  // namespace grpokit::detail

namespace grpokit::detail {

// The buffers of fused_linear_loss after its layout: one token chunk of logits [C, V] in Acc and
// of dlogits in S, and with lm_head_norms (hidden_size D > 0) their sums.
template <class S, class Acc>
struct linear_chunk_buffers {
  Acc* logits = nullptr;
  S* dlogits = nullptr;
  unsigned char* norm_sums = nullptr;
  static std::size_t logits_bytes(std::int64_t C, std::int64_t V) {
    return align_up(static_cast<std::size_t>(C * V) * sizeof(Acc));
  }
  static std::size_t dlogits_bytes(std::int64_t C, std::int64_t V) {
    return align_up(static_cast<std::size_t>(C * V) * sizeof(S));
  }
  static std::size_t bytes(std::int64_t C, std::int64_t V, std::int64_t hidden_size) {
    return logits_bytes(C, V) + dlogits_bytes(C, V) + (hidden_size > 0 ? lm_head_sums_bytes<Acc>(V, hidden_size) : 0);
  }
  linear_chunk_buffers(unsigned char* base, std::int64_t C, std::int64_t V)
      : logits(reinterpret_cast<Acc*>(base)),
        dlogits(reinterpret_cast<S*>(base + logits_bytes(C, V))),
        norm_sums(base + logits_bytes(C, V) + dlogits_bytes(C, V)) {}
};

// The token chunk of a call on T tokens.
inline std::int64_t linear_chunk_rows(std::int64_t token_chunk, std::int64_t T) {
  return std::min(token_chunk, std::max<std::int64_t>(T, 1));
}

}  // namespace grpokit::detail

namespace grpokit::device {

// Bytes of workspace for fused_linear_loss on up to T tokens, V, S and the given token chunk; with
// lm_head_norms, hidden_size = D adds the norms' three V x D sums (0: not wanted).
template <class P>
std::size_t linear_workspace_bytes(const device::shape& s, std::int64_t token_chunk, std::int64_t hidden_size = 0) {
  using Q = typename P::template with_storage<accum_t<P>>;
  return workspace_bytes<Q>(s) + detail::linear_chunk_buffers<storage_t<P>, accum_t<P>>::bytes(
                                     detail::linear_chunk_rows(token_chunk, s.tokens), s.vocab, hidden_size);
}

}  // namespace grpokit::device

namespace grpokit::detail {

// The host-side checks of fused_linear_loss (shapes, the configuration, the norms' host offsets);
// targets and temperatures are in device memory: checked on the device.
template <class P>
void check_linear_inputs(const linear_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                         const loss_config& cfg, std::int64_t token_chunk,
                         const linear_grads<storage_t<P>, accum_t<P>>& grads, const fused_outputs<accum_t<P>>& extra,
                         const lm_head_norms& norms) {
  using Acc = accum_t<P>;
  static_assert(std::is_same<Acc, float>::value || std::is_same<storage_t<P>, double>::value,
                "device::fused_linear_loss: cuBLAS needs precision<bf16 | fp16 | float, float> or <double, double>");
  require_linear_shapes(in, token_chunk, grads, extra);
  require_batch_shapes<P::trust_region || P::importance_mask>(batch, in.hidden.rows, cfg);
  require_linear_sum_p2_apart(extra, batch, in, grads);
  require_scalar_temperature<Acc>(cfg);
  require_lm_head_norms(norms, batch.seq_offsets.size() - 1);
  if (norms.wanted()) {
    GRPOKIT_REQUIRE(norms.host_seq_offsets.size() == batch.seq_offsets.size(),
                    "lm_head_norms.host_seq_offsets: the device needs a host copy of batch.seq_offsets (",
                    batch.seq_offsets.size(), " values), got ", norms.host_seq_offsets.size());
    require_offsets("lm_head_norms.host_seq_offsets", norms.host_seq_offsets, in.hidden.rows,
                    /*allow_empty_segments=*/true);
  }
}

// The steps of fused_linear_loss in one process (distributed_steps has the same, over a layout).
template <class Q>
struct one_process_steps {
  const layout<Q>& ws;
  cudaStream_t stream;
  void forward(const logits_input<accum_t<Q>, accum_t<Q>>& in, const loss_config& cfg,
               const token_stats<accum_t<Q>>& out, std::int64_t first_row) const {
    launch_forward<Q>(in, cfg, out, ws, stream, first_row);
  }
  void backward_only(const logits_input<accum_t<Q>, accum_t<Q>>&, const loss_config&) const {}
  void policy_loss(const current_policy<accum_t<Q>>& cur, const rollout_batch<accum_t<Q>>& batch,
                   const loss_config& cfg, const policy_grads<accum_t<Q>>& grads) const {
    launch_policy_loss<Q>(cur, batch, cfg, grads, ws, stream);
  }
  const long long* slice() const { return nullptr; }
};

// The chunked schedule of fused_linear_loss, its steps (the rows and the policy loss) given: per
// token chunk, logits = hidden W^T (+ bias) and the forward; the policy loss; per chunk again the
// logits, dlogits, and the GEMMs of the gradients. `chunks` token chunks of C rows are walked (past
// T they are empty: a vocabulary-parallel rank walks the plan's, so that every rank makes the same
// collectives). The caller agrees on the status and finishes the loss.
template <class P, class Gemm, class Steps>
void linear_chunks(const Gemm& gemm, const Steps& steps, const layout<typename P::template with_storage<accum_t<P>>>& ws,
                   const linear_chunk_buffers<storage_t<P>, accum_t<P>>& buf, std::int64_t C, std::int64_t chunks,
                   const linear_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                   const loss_config& cfg, const linear_grads<storage_t<P>, accum_t<P>>& grads,
                   const fused_outputs<accum_t<P>>& extra, const lm_head_norms& norms, cudaStream_t stream) {
  using Acc = accum_t<P>;
  using S = storage_t<P>;
  using Q = typename P::template with_storage<Acc>;
  const std::int64_t T = in.hidden.rows, V = in.weight.rows, D = in.hidden.cols;
  const span<Acc> logp(ws.logp, T), entropy(ws.entropy, T), lse(ws.lse, T), dlogp(ws.dlogp, T),
      dentropy(ws.dentropy, T);
  device_lm_head_sums<S, Acc, Gemm> head_sums(gemm, norms, in.hidden, V, buf.norm_sums, stream);
  lm_head_norm_walk<device_lm_head_sums<S, Acc, Gemm>> head_norms(norms, norms.host_seq_offsets, head_sums);

  auto chunk_input = [&](std::int64_t t0, std::int64_t n) {
    return logits_input<Acc, Acc>{{buf.logits, n, V, V},
                                  in.targets.subspan(t0, n),
                                  in.temperature.empty() ? span<const Acc>{} : in.temperature.subspan(t0, n)};
  };
  auto compute_logits = [&](std::int64_t t0, std::int64_t n) {  // logits[n, V] = H W^T + b (row-major)
    if (!in.bias.empty()) {
      fill_bias_kernel<S, Acc>
          <<<device::tuning::bias_fill_blocks, device::tuning::bias_threads, 0, stream>>>(buf.logits, n, V, in.bias);
      GRPOKIT_CUDA_CHECK_LAUNCH();
    }
    gemm(true, false, V, n, D, in.weight.data, in.weight.row_stride, in.hidden.row(t0), in.hidden.row_stride,
         in.bias.empty() ? Acc(0) : Acc(1), buf.logits, V);
  };
  auto rows_of = [&](std::int64_t k) { return std::max<std::int64_t>(std::min(C, T - k * C), 0); };
  for (std::int64_t k = 0; k < chunks; ++k) {
    const std::int64_t t0 = std::min(k * C, T), n = rows_of(k);
    if (n > 0) compute_logits(t0, n);
    steps.forward(chunk_input(t0, n), cfg,
                  token_stats<Acc>{logp.subspan(t0, n), entropy.subspan(t0, n), lse.subspan(t0, n)}, t0);
  }
  steps.policy_loss(current_policy<Acc>{logp, entropy}, batch, cfg, policy_grads<Acc>{dlogp, dentropy});
  for (std::int64_t k = 0; k < chunks; ++k) {
    const std::int64_t t0 = std::min(k * C, T), n = rows_of(k);
    if (n > 0) compute_logits(t0, n);
    steps.backward_only(chunk_input(t0, n), cfg);  // vocabulary parallel: the whole rows' maxima
    if (n == 0) continue;
    const backward_inputs<Acc> g{lse.subspan(t0, n), entropy.subspan(t0, n), dlogp.subspan(t0, n),
                                 dentropy.subspan(t0, n)};
    launch_backward<Q, S>(chunk_input(t0, n), g, cfg, matrix_view<S>{buf.dlogits, n, V, V}, ws, stream, t0,
                          steps.slice());
    if (!extra.sum_p2.empty())  // the chunk's row max is in the workspace after the backward
      launch_sum_p2<Q>(chunk_input(t0, n), cfg, lse.subspan(t0, n), extra.sum_p2.subspan(t0, n), ws, stream);
    if (grads.dhidden.data != nullptr)  // dhidden^T [D, n] = W^T [D, V] dlogits^T [V, n]
      gemm(false, false, D, n, V, in.weight.data, in.weight.row_stride, buf.dlogits, V, Acc(0), grads.dhidden.row(t0),
           grads.dhidden.row_stride);
    // dweight^T [D, V] += hidden^T [D, n] dlogits [n, V]
    if (grads.dweight_acc.data != nullptr)
      gemm(false, true, D, V, n, in.hidden.row(t0), in.hidden.row_stride, buf.dlogits, V, Acc(1),
           grads.dweight_acc.data, grads.dweight_acc.row_stride);
    else
      gemm(false, true, D, V, n, in.hidden.row(t0), in.hidden.row_stride, buf.dlogits, V, Acc(1), grads.dweight.data,
           grads.dweight.row_stride);
    if (!grads.dbias.empty()) {
      bias_grad_kernel<S, Acc>
          <<<device::tuning::blocks_for(V, device::tuning::bias_threads), device::tuning::bias_threads, 0, stream>>>(
              buf.dlogits, n, V, grads.dbias);
      GRPOKIT_CUDA_CHECK_LAUNCH();
    }
    head_sums.set_chunk(t0, buf.dlogits);
    head_norms.add_chunk(t0, n);
  }
  head_norms.finish();
  copy_extra_async<Acc>(extra, logp, entropy, stream);
}

// fused_linear_loss_async with its GEMMs done by `gemm` (cublas_gemm's call operator), which must
// order them on `stream`.
template <class P, class Gemm>
void fused_linear_loss_with(const Gemm& gemm, const linear_input<storage_t<P>, accum_t<P>>& in,
                            const rollout_batch<accum_t<P>>& batch, const loss_config& cfg, std::int64_t token_chunk,
                            const linear_grads<storage_t<P>, accum_t<P>>& grads, void* workspace,
                            std::size_t& workspace_bytes, cudaStream_t stream, const fused_outputs<accum_t<P>>& extra,
                            const lm_head_norms& norms = {}) {
  using Q = typename P::template with_storage<accum_t<P>>;
  check_linear_inputs<P>(in, batch, cfg, token_chunk, grads, extra, norms);
  const std::int64_t T = in.hidden.rows, V = in.weight.rows;
  const std::int64_t C = linear_chunk_rows(token_chunk, T);
  const device::shape sh{T, V, batch.seq_offsets.size() - 1};
  const std::size_t need = device::linear_workspace_bytes<P>(sh, token_chunk, norms.wanted() ? in.hidden.cols : 0);
  if (workspace == nullptr) {
    workspace_bytes = need;
    return;
  }
  GRPOKIT_REQUIRE(workspace_bytes >= need, "workspace too small: ", workspace_bytes, " bytes, needs ", need,
                  " (use device::linear_workspace_bytes", norms.wanted() ? ", with the hidden size for the norms)" : ")");
  const layout<Q> ws(workspace, workspace_bytes, sh);
  const linear_chunk_buffers<storage_t<P>, accum_t<P>> buf(reinterpret_cast<unsigned char*>(ws.base + ws.used), C, V);
  reset_status(ws.st, stream);
  linear_chunks<P>(gemm, one_process_steps<Q>{ws, stream}, ws, buf, C, (T + C - 1) / C, in, batch, cfg, grads, extra,
                   norms, stream);
  launch_finish_loss<Q>(cfg, ws, stream);
}

}  // namespace grpokit::detail

namespace grpokit::device {

// The loss from hidden states, with cuBLAS GEMMs on `stream` (the handle's stream is set to it),
// without blocking the host: the gradients are written on `stream`, the loss, the metrics and the
// status stay in the workspace (read_loss_result, results_of). A null workspace only sets
// workspace_bytes.
template <class P>
void fused_linear_loss_async(const linear_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                             const loss_config& cfg, std::int64_t token_chunk,
                             const linear_grads<storage_t<P>, accum_t<P>>& grads, cublasHandle_t handle,
                             void* workspace, std::size_t& workspace_bytes, cudaStream_t stream = 0,
                             const fused_outputs<accum_t<P>>& extra = {}, const lm_head_norms& norms = {}) {
  GRPOKIT_REQUIRE(handle != nullptr, "fused_linear_loss: null cuBLAS handle");
  detail::fused_linear_loss_with<P>(detail::cublas_gemm{handle, stream}, in, batch, cfg, token_chunk, grads, workspace,
                                    workspace_bytes, stream, extra, norms);
}

// fused_linear_loss_async, then read_loss_result: synchronises the stream once to return.
template <class P>
loss_result fused_linear_loss(const linear_input<storage_t<P>, accum_t<P>>& in, const rollout_batch<accum_t<P>>& batch,
                              const loss_config& cfg, std::int64_t token_chunk,
                              const linear_grads<storage_t<P>, accum_t<P>>& grads, cublasHandle_t handle,
                              void* workspace, std::size_t workspace_bytes, cudaStream_t stream = 0,
                              const fused_outputs<accum_t<P>>& extra = {}, const lm_head_norms& norms = {}) {
  GRPOKIT_REQUIRE(workspace != nullptr, "workspace is null (allocate device::linear_workspace_bytes)");
  fused_linear_loss_async<P>(in, batch, cfg, token_chunk, grads, handle, workspace, workspace_bytes, stream, extra,
                             norms);
  return read_loss_result(workspace, stream);
}

}  // namespace grpokit::device
