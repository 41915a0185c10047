// The CUDA operators (grpokit's device path), one header each, in one translation unit: nvcc
// spends about 30 s on torch's headers per unit, more than on the operators themselves.
#include "advantages_cuda.cuh"
#include "fused_linear_loss_cuda.cuh"
#include "fused_loss_cuda.cuh"
#include "token_logprobs_cuda.cuh"
