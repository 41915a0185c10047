#pragma once
// The task: reverse a string. The prompt is three letters and '='; the answer is the letters in
// reverse order, then EOS. The reward is the length of the longest common prefix of the response
// and the answer (EOS included) divided by the answer length: 1 exactly when the response is right,
// partial credit otherwise. The prefix form makes the expected reward of a prompt exact and cheap:
// only the answer path matters (trainer.hpp, expected_rewards).
#include <array>
#include <cstdint>

namespace train_grpo {

constexpr int letters = 26;
constexpr int tok_eq = letters, tok_eos = letters + 1;
constexpr int vocab = letters + 2;
constexpr int length = 3;
constexpr int num_prompts = letters * letters * letters;  // too many to memorise: the policy must learn to copy
constexpr int prompt_len = length + 1;                    // x y z =
constexpr int answer_len = length + 1;                    // z y x EOS
constexpr int max_new = answer_len;
// The policy sees the prompt and every token generated before the one it predicts.
constexpr int context_len = prompt_len + max_new - 1;
constexpr int pad = vocab;  // fills the context past the current position; never sampled

inline std::array<int, prompt_len> prompt_tokens(int id) {
  return {id / (letters * letters), id / letters % letters, id % letters, tok_eq};
}

inline std::array<int, answer_len> answer(int id) {
  const auto p = prompt_tokens(id);
  return {p[2], p[1], p[0], tok_eos};
}

inline double reward(int id, const int* response, int len) {
  const auto want = answer(id);
  int match = 0;
  while (match < len && match < answer_len && response[match] == want[static_cast<std::size_t>(match)]) ++match;
  return static_cast<double>(match) / answer_len;
}

// The policy's input for the token after response[0..len): prompt, response so far, padding.
inline void write_context(int id, const int* response, int len, std::int32_t* out) {
  const auto p = prompt_tokens(id);
  for (int i = 0; i < context_len; ++i)
    out[i] = i < prompt_len ? p[static_cast<std::size_t>(i)] : i - prompt_len < len ? response[i - prompt_len] : pad;
}

}  // namespace train_grpo
