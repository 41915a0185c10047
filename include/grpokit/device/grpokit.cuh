#pragma once
// The device path: the same entry points as grpokit::host, as CUDA kernels on the caller's stream
// with a caller-provided workspace (device::workspace_bytes<P>(shape)). Compile with nvcc and
// --expt-relaxed-constexpr (the target grpokit::grpokit adds it for CUDA sources).
#include "../grpokit.hpp"
#include "advantages.cuh"
#include "error.cuh"
#include "fused_linear_loss.cuh"
#include "fused_loss.cuh"
#include "grpo_lambda.cuh"
#include "multi_reward.cuh"
#include "policy_loss.cuh"
#include "results.cuh"
#include "status.cuh"
#include "token_baseline.cuh"
#include "token_logprobs.cuh"
#include "workspace.cuh"
