#pragma once
// Umbrella header: policies, configuration and the host path. The device path lives in
// <grpokit/device/...> (.cuh, needs nvcc).
#include "config.hpp"
#include "error.hpp"
#include "inputs.hpp"
#include "metrics.hpp"
#include "policy.hpp"
#include "presets.hpp"
#include "span.hpp"

#include "host/advantages.hpp"
#include "host/fused_linear_loss.hpp"
#include "host/fused_loss.hpp"
#include "host/grpo_lambda.hpp"
#include "host/gradient_noise.hpp"
#include "host/group_plan.hpp"
#include "host/logits_backward.hpp"
#include "host/multi_reward.hpp"
#include "host/packing.hpp"
#include "host/policy_loss.hpp"
#include "host/token_baseline.hpp"
#include "host/token_logprobs.hpp"
