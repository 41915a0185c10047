#pragma once
// The optional outputs of fused_loss and fused_linear_loss: logp / entropy copied from the workspace,
// and sum_v p_v^2 per row (detail/sum_p2.hpp) computed from the logits and the row's lse.
#include <cstdint>
#include <cuda_runtime.h>

#include "../../config.hpp"
#include "../../detail/ops_for.hpp"
#include "../../detail/row_params.hpp"
#include "../../detail/sum_p2.hpp"
#include "../../inputs.hpp"
#include "../../policy.hpp"
#include "../../span.hpp"
#include "../error.cuh"
#include "../workspace.cuh"

namespace grpokit::detail {
// Copies logp / entropy from the workspace to the caller's optional outputs (device to device).
template <class Real>
void copy_extra_async(const fused_outputs<Real>& extra, span<const Real> logp, span<const Real> entropy,
                      cudaStream_t stream) {
  if (!extra.logp.empty())
    GRPOKIT_CUDA_CHECK(
        cudaMemcpyAsync(extra.logp.data(), logp.data(), logp.size() * sizeof(Real), cudaMemcpyDeviceToDevice, stream));
  if (!extra.entropy.empty())
    GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(extra.entropy.data(), entropy.data(), entropy.size() * sizeof(Real),
                                       cudaMemcpyDeviceToDevice, stream));
}

// sum_v p_v^2 of row blockIdx.x: thread l runs lane l of detail/sum_p2.hpp, then the lanes' tree in
// shared memory (the host's order). row_max: the rows' scaled max (read only with vocab_prune).
template <class P, class Ops>
__global__ void __launch_bounds__(sum_p2_lanes)
    sum_p2_kernel(logits_input<storage_t<P>, accum_t<P>> in, loss_config cfg, const accum_t<P>* row_max,
                  const accum_t<P>* support, span<const accum_t<P>> lse, span<accum_t<P>> out) {
  using Acc = accum_t<P>;
  __shared__ Acc lanes[sum_p2_lanes];
  const std::int64_t r = blockIdx.x;
  const int l = static_cast<int>(threadIdx.x);
  const auto row = setup_row<Ops>(cfg, in.temperature, r, P::vocab_prune, P::vocab_prune ? row_max[r] : Acc(0),
                                  support_at(support, r));
  lanes[l] = sum_p2_lane<Ops>(in.logits.row(r), in.logits.cols, l, row.inv_t, row.threshold, lse[r]);
  __syncthreads();
  for (int w = sum_p2_lanes / 2; w >= 1; w /= 2) {
    if (l < w) sum_p2_level<Ops>(lanes, w, l);
    __syncthreads();
  }
  if (l == 0) out[r] = lanes[0];
}

// out = sum_v p_v^2 of every row of `in`; with vocab_prune, ws.row_max must hold the rows' max, and
// with top_k / top_p ws.support their support thresholds (as after launch_forward or launch_backward
// of the same rows).
template <class P>
void launch_sum_p2(const logits_input<storage_t<P>, accum_t<P>>& in, const loss_config& cfg,
                   span<const accum_t<P>> lse, span<accum_t<P>> out, const layout<P>& ws, cudaStream_t stream) {
  if (out.empty() || in.logits.rows == 0) return;
  sum_p2_kernel<P, ops_for<P::order>>
      <<<static_cast<unsigned>(in.logits.rows), sum_p2_lanes, 0, stream>>>(
          in, cfg, ws.row_max, sampler_support(cfg) ? ws.support : nullptr, lse, out);
  GRPOKIT_CUDA_CHECK_LAUNCH();
}
}  // namespace grpokit::detail
