#pragma once
// The per-group math of GRPO-lambda's reward pre-pass (host and device): the group's correctness
// ratio and Kimi k1.5's length reward of each rollout.
#include <cstdint>

#include "macros.hpp"

namespace grpokit::detail {

// Kimi k1.5 (section 2.3.3) within a group: lambda_i = 0.5 - (len_i - min_len) / (max_len - min_len);
// the bonus is lambda_i for a correct rollout and min(0, lambda_i) for a wrong one; 0 for every
// rollout when all lengths are equal.
GRPOKIT_HD inline double kimi_length_reward(std::int64_t len, std::int64_t min_len, std::int64_t max_len,
                                            bool correct) {
  if (max_len == min_len) return 0.0;
  const double lambda = 0.5 - static_cast<double>(len - min_len) / static_cast<double>(max_len - min_len);
  return correct ? lambda : (lambda < 0.0 ? lambda : 0.0);
}

// Correct rollouts of the group [b, e) (correct[i] is 0 or 1).
GRPOKIT_HD inline std::int64_t correct_count(const std::uint8_t* correct, std::int64_t b, std::int64_t e) {
  std::int64_t c = 0;
  for (std::int64_t i = b; i < e; ++i) c += correct[i] != 0;
  return c;
}

// Group g ranks before group h: a higher correctness ratio c / n (compared exactly, as c_g n_h >
// c_h n_g), and on equal ratios the lower index.
GRPOKIT_HD inline bool ranks_before(std::int64_t c_g, std::int64_t n_g, std::int64_t g, std::int64_t c_h,
                                    std::int64_t n_h, std::int64_t h) {
  const std::int64_t lhs = c_g * n_h, rhs = c_h * n_g;
  return lhs != rhs ? lhs > rhs : g < h;
}

}  // namespace grpokit::detail
