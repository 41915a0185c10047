#pragma once
// The optimal token baseline's math, one definition for the host loops and the kernels
// (host/token_baseline.hpp, device/token_baseline.cuh), in double with grpokit's own exp and
// non-contractible operations (math::invariant_ops): the two schedules agree bit for bit.
//   w_k  = (1 - 2 exp(logp_old_k) + sum_p2_k) * rho_k^2          (rho_k = 1 without IS weights)
//   W_k  = sum_{j <= k in the sequence} w_j m_j,  G_k = sum_{j >= k in the sequence} r_j m_j
//   B_t  = sum_i G_{i,t} W_{i,t} m_{i,t} / (sum_i W_{i,t} m_{i,t} + epsilon)   (over the group)
//   A_k  = (G_k - B_{step(k)}) m_k
// Each sum runs in index order (sequences in order, tokens in order).
#include <cmath>
#include <cstdint>

#include "../math/ops.hpp"
#include "../token_baseline.hpp"
#include "macros.hpp"

namespace grpokit::detail {

// The per-token, per-sequence and per-group scratch of one call (host vectors or workspace).
struct otb_arrays {
  double* ret = nullptr;              // [T] G_k, the reward-to-go
  double* energy = nullptr;           // [T] W_k m_k
  double* baseline = nullptr;         // [T] group g's B_t at seq_offsets[group_offsets[g]] + t
  std::int64_t* step = nullptr;       // [T] step of each response token
  std::int64_t* at_step = nullptr;    // [T] compact: the token of step t of sequence s at seq_offsets[s] + t
  std::int64_t* seq_first = nullptr;  // [S] first response token (the sequence's end if none)
  std::int64_t* seq_length = nullptr;  // [S] response tokens
  std::int64_t* seq_steps = nullptr;   // [S] steps: compact, its length; else last - first + 1
  std::int64_t* group_steps = nullptr;      // [G] the most steps of a member
  std::int64_t* group_tail_seq = nullptr;   // [G] the sequence with a zero tail, or -1
  std::int64_t* group_tail_from = nullptr;  // [G] its first step of baseline 0 (the second-longest length)
  std::uint8_t* group_single = nullptr;     // [G] baseline 0 throughout
};

template <class Real>
GRPOKIT_HD inline bool otb_response(const token_baseline_inputs<Real>& in, std::int64_t k) {
  return in.token_mask.empty() || in.token_mask[k] != 0;
}

// The energy increment w_k of a response token: 1 - 2 pi_k + sum_p2_k is ||d logp_k / d z_k||^2.
template <class Real>
GRPOKIT_HD inline double otb_increment(const token_baseline_inputs<Real>& in, std::int64_t k) {
  using O = math::invariant_ops;
  const double pi = O::exp(static_cast<double>(in.logp_old[k]));
  double w = O::add(O::sub(1.0, O::mul(2.0, pi)), static_cast<double>(in.sum_p2[k]));
  if (!in.is_weights.empty()) {
    const double rho = in.is_weights[k];
    w = O::mul(w, O::mul(rho, rho));
  }
  return w;
}

// A response token's inputs are usable: finite, and an IS weight >= 0.
template <class Real>
GRPOKIT_HD inline bool otb_finite(const token_baseline_inputs<Real>& in, std::int64_t k) {
  const bool rho_ok = in.is_weights.empty() || (std::isfinite(static_cast<double>(in.is_weights[k])) &&
                                                 in.is_weights[k] >= Real(0));
  return std::isfinite(static_cast<double>(in.token_rewards[k])) && std::isfinite(static_cast<double>(in.logp_old[k])) &&
         std::isfinite(static_cast<double>(in.sum_p2[k])) && rho_ok;
}

// Sequence s, serially: G and W m of its tokens, the steps, its first response token, length and
// step count. Returns the first response token with unusable inputs, or -1.
template <class Real>
GRPOKIT_HD inline std::int64_t otb_sequence(const token_baseline_inputs<Real>& in, const token_baseline_config& cfg,
                                            std::int64_t s, const otb_arrays& a) {
  using O = math::invariant_ops;
  const std::int64_t b = in.seq_offsets[s], e = in.seq_offsets[s + 1];
  std::int64_t bad = -1;
  double to_go = 0;
  for (std::int64_t k = e - 1; k >= b; --k) {
    if (otb_response(in, k)) {
      if (!otb_finite(in, k)) bad = k;  // the smallest, scanning down
      to_go = O::add(to_go, static_cast<double>(in.token_rewards[k]));
    }
    a.ret[k] = to_go;
  }
  double energy = 0;
  std::int64_t first = e, last = e, length = 0;
  for (std::int64_t k = b; k < e; ++k) {
    const bool response = otb_response(in, k);
    if (response) {
      energy = O::add(energy, otb_increment(in, k));
      if (first == e) first = k;
      last = k;
      a.step[k] = cfg.compact ? length : k - first;
      if (cfg.compact) a.at_step[b + length] = k;  // read only by compact steps
      ++length;
    }
    a.energy[k] = response ? energy : 0.0;
  }
  a.seq_first[s] = first;
  a.seq_length[s] = length;
  a.seq_steps[s] = length == 0 ? 0 : cfg.compact ? length : last - first + 1;
  return bad;
}

// Group g (after its sequences): its step count, whether it is a singleton, and verl's zero tail:
// the members' lengths sorted, a unique longest one longer than the second gets B = 0 from the
// second's length on. Compact counts only the members with response tokens (verl's tir_ variant).
template <class Real>
GRPOKIT_HD inline void otb_group(const token_baseline_inputs<Real>& in, const token_baseline_config& cfg,
                                 std::int64_t g, const otb_arrays& a) {
  std::int64_t members = 0, steps = 0, longest = -1, longest_length = -1, longest_count = 0, second = -1;
  for (std::int64_t s = in.group_offsets[g]; s < in.group_offsets[g + 1]; ++s) {
    const std::int64_t len = a.seq_length[s];
    if (cfg.compact && len == 0) continue;
    ++members;
    steps = a.seq_steps[s] > steps ? a.seq_steps[s] : steps;
    if (len > longest_length) {
      second = longest_length;
      longest_length = len, longest = s, longest_count = 1;
    } else if (len == longest_length) {
      ++longest_count;
    } else if (len > second) {
      second = len;
    }
  }
  const bool single = members <= 1;
  const bool tail = cfg.zero_tail && !single && longest_count == 1 && longest_length > second;
  a.group_steps[g] = steps;
  a.group_single[g] = single;
  a.group_tail_seq[g] = tail ? longest : -1;
  a.group_tail_from[g] = tail ? second : 0;
}

// B_t of group g: the members' G W m at step t over their W m, in member order.
template <class Real>
GRPOKIT_HD inline double otb_step_baseline(const token_baseline_inputs<Real>& in, const token_baseline_config& cfg,
                                           std::int64_t g, std::int64_t t, const otb_arrays& a) {
  using O = math::invariant_ops;
  double num = 0, den = 0;
  for (std::int64_t s = in.group_offsets[g]; s < in.group_offsets[g + 1]; ++s) {
    if (t >= a.seq_steps[s]) continue;
    const std::int64_t k = cfg.compact ? a.at_step[in.seq_offsets[s] + t] : a.seq_first[s] + t;
    if (!otb_response(in, k)) continue;
    num = O::add(num, O::mul(a.ret[k], a.energy[k]));
    den = O::add(den, a.energy[k]);
  }
  return O::div(num, O::add(den, cfg.epsilon));
}

// A_k of token k of sequence s in group g (the baselines of g written).
template <class Real>
GRPOKIT_HD inline double otb_advantage(const token_baseline_inputs<Real>& in, std::int64_t g, std::int64_t s,
                                       std::int64_t k, const otb_arrays& a) {
  if (!otb_response(in, k)) return 0.0;
  const std::int64_t t = a.step[k];
  const bool zero = a.group_single[g] != 0 || (s == a.group_tail_seq[g] && t >= a.group_tail_from[g]);
  const double b = zero ? 0.0 : a.baseline[in.seq_offsets[in.group_offsets[g]] + t];
  return math::invariant_ops::sub(a.ret[k], b);
}

}  // namespace grpokit::detail
