#pragma once
#include <cstdint>
#include <vector>

namespace train_grpo {

// Packed rollouts of one step: sequence s answers prompt seq_prompt[s]; its tokens are
// [seq_offsets[s], seq_offsets[s + 1]); group g is the sequences of one prompt.
struct rollouts {
  std::vector<int> seq_prompt;
  std::vector<std::int64_t> group_offsets{0}, seq_offsets{0};
  std::vector<std::int64_t> tokens;    // [T] sampled ids
  std::vector<std::int32_t> contexts;  // [T, context_len] what the policy saw for each token
  std::vector<float> rewards;          // [S]
  std::vector<float> logp_rollout;     // [T] the engine's log-probs
};

}  // namespace train_grpo
