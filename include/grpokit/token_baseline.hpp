#pragma once
// The optimal token baseline's arguments (verl's `optimal_token_baseline` and
// `tir_optimal_token_baseline`; host/token_baseline.hpp, device/token_baseline.cuh,
// docs/baseline.md#optimal-token-baseline): a baseline per group and per step of the responses,
// weighted by each trajectory's realised energy W_t, and advantages per token.
#include <cstdint>

#include "span.hpp"

namespace grpokit {

struct token_baseline_config {
  bool zero_tail = true;  // verl's handle_zero_tail (default on): the steps of a group's uniquely
                          // longest response past its second-longest one get the baseline 0
  bool compact = false;   // false: a step is a position from the sequence's first response token
                          // (verl's optimal_token_baseline); true: the index among its response
                          // tokens only (verl's tir_optimal_token_baseline, multi-turn)
  double epsilon = 1e-8;  // added to each step's weight sum (>= 0, finite)
};

// Packed layout (inputs.hpp); every per-token input is read on response tokens only.
template <class Real>
struct token_baseline_inputs {
  span<const Real> token_rewards;          // [T] rewards per token (an outcome reward on the last token)
  span<const std::int64_t> seq_offsets;    // [S + 1]: sequence s owns tokens [off[s], off[s+1])
  span<const std::int64_t> group_offsets;  // [G + 1]: group g owns sequences [off[g], off[g+1]), none empty
  span<const Real> logp_old;               // [T] log pi_old of the sampled token
  span<const Real> sum_p2;                 // [T] sum_v pi_old(v)^2 (fused_outputs::sum_p2)
  span<const Real> is_weights = {};        // [T] the rollout IS weights rho (>= 0), or empty: none
  span<const std::uint8_t> token_mask = {};  // [T] 1 = response token; empty: all
};

template <class Real>
struct token_baseline_outputs {
  span<Real> adv;           // [T] (G_t - B_t) m_t: 0 off the response
  span<Real> returns = {};  // [T] optional: the rewards-to-go G_t (every token, as verl returns them)
};

struct token_baseline_stats {
  std::int64_t groups = 0;
  std::int64_t singleton_groups = 0;  // baseline 0: one sequence (compact: one with response tokens)
  std::int64_t zero_tail_groups = 0;  // groups whose longest response got a zero tail
  std::int64_t response_tokens = 0;
};

}  // namespace grpokit
