#pragma once
// The optional logp / entropy outputs of fused_loss and fused_linear_loss, copied from the workspace.
#include <cuda_runtime.h>

#include "../../inputs.hpp"
#include "../../span.hpp"
#include "../error.cuh"

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
}  // namespace grpokit::detail
