#pragma once
// grpokit::host::optimal_token_baseline: verl's optimal token baseline (OTB; verl
// trainer/ppo/core_algos.py, compute_optimal_token_baseline_advantage and its tir_ variant), a
// baseline per group and per step weighted by each trajectory's realised energy, and the per-token
// advantages A_k = (G_k - B_step(k)) m_k (formulas: detail/token_baseline.hpp, docs/baseline.md).
// Sequences run in parallel, then groups, then the steps of every group, then the tokens; each
// writes only its own entries, so the result is the serial one, bit for bit the device's.
#include <cstdint>
#include <vector>

#include "../detail/token_baseline.hpp"
#include "../detail/validate.hpp"
#include "../token_baseline.hpp"
#include "detail/scratch.hpp"
#include "parallel.hpp"

namespace grpokit {
namespace detail {

// The shapes and the configuration (host and device entry points; the offsets' values are checked
// where they live).
template <class Real>
void require_token_baseline_shapes(const token_baseline_inputs<Real>& in, const token_baseline_config& cfg,
                                   const token_baseline_outputs<Real>& out) {
  GRPOKIT_REQUIRE(std::isfinite(cfg.epsilon) && cfg.epsilon >= 0,
                  "token_baseline_config::epsilon must be finite and >= 0, got ", cfg.epsilon);
  const std::int64_t T = in.token_rewards.size();
  require_size("logp_old", in.logp_old, T);
  require_size("sum_p2", in.sum_p2, T);
  require_size_or_empty("is_weights", in.is_weights, T);
  require_size_or_empty("token_mask", in.token_mask, T);
  require_size("adv", out.adv, T);
  require_size_or_empty("returns", out.returns, T);
  GRPOKIT_REQUIRE(in.seq_offsets.size() >= 1, "seq_offsets: needs at least one element (S + 1 offsets)");
  GRPOKIT_REQUIRE(in.group_offsets.size() >= 1, "group_offsets: needs at least one element (G + 1 offsets)");
  // what no sequence or group is there to check on the device
  GRPOKIT_REQUIRE(in.seq_offsets.size() > 1 || T == 0, "seq_offsets: no sequence holds the ", T, " tokens");
  GRPOKIT_REQUIRE(in.group_offsets.size() > 1 || in.seq_offsets.size() == 1, "group_offsets: no group holds the ",
                  in.seq_offsets.size() - 1, " sequences");
}

// The scratch of otb_arrays in host vectors.
struct otb_host_scratch {
  std::vector<double> ret, energy, baseline;
  std::vector<std::int64_t> step, at_step, seq_first, seq_length, seq_steps, group_steps, group_tail_seq,
      group_tail_from;
  std::vector<std::uint8_t> group_single;
  otb_host_scratch(std::int64_t T, std::int64_t S, std::int64_t G)
      : ret(scratch<double>(T, "optimal_token_baseline")),
        energy(scratch<double>(T, "optimal_token_baseline")),
        baseline(scratch<double>(T, "optimal_token_baseline")),
        step(scratch<std::int64_t>(T, "optimal_token_baseline")),
        at_step(scratch<std::int64_t>(T, "optimal_token_baseline")),
        seq_first(scratch<std::int64_t>(S, "optimal_token_baseline")),
        seq_length(scratch<std::int64_t>(S, "optimal_token_baseline")),
        seq_steps(scratch<std::int64_t>(S, "optimal_token_baseline")),
        group_steps(scratch<std::int64_t>(G, "optimal_token_baseline")),
        group_tail_seq(scratch<std::int64_t>(G, "optimal_token_baseline")),
        group_tail_from(scratch<std::int64_t>(G, "optimal_token_baseline")),
        group_single(scratch<std::uint8_t>(G, "optimal_token_baseline")) {}
  otb_arrays arrays() {
    return {ret.data(),        energy.data(),     baseline.data(),    step.data(),
            at_step.data(),    seq_first.data(),  seq_length.data(),  seq_steps.data(),
            group_steps.data(), group_tail_seq.data(), group_tail_from.data(), group_single.data()};
  }
};

}  // namespace detail

namespace host {

template <class Real>
token_baseline_stats optimal_token_baseline(const token_baseline_inputs<Real>& in, const token_baseline_config& cfg,
                                            const token_baseline_outputs<Real>& out) {
  detail::require_token_baseline_shapes(in, cfg, out);
  const std::int64_t T = in.token_rewards.size(), S = in.seq_offsets.size() - 1, G = in.group_offsets.size() - 1;
  detail::require_offsets("seq_offsets", in.seq_offsets, T, /*allow_empty_segments=*/true);
  detail::require_offsets("group_offsets", in.group_offsets, S, /*allow_empty_segments=*/false);
  detail::otb_host_scratch scratch(T, S, G);
  const detail::otb_arrays a = scratch.arrays();

  std::vector<std::int64_t> bad = detail::scratch<std::int64_t>(S, "optimal_token_baseline");
  detail::parallel_for(S, [&](std::int64_t s) { bad[static_cast<std::size_t>(s)] = detail::otb_sequence(in, cfg, s, a); });
  for (std::int64_t s = 0; s < S; ++s) {
    const std::int64_t k = bad[static_cast<std::size_t>(s)];
    GRPOKIT_REQUIRE(k < 0, "optimal_token_baseline: token ", k,
                    " (a response token) has a non-finite reward, logp_old or sum_p2, or an IS weight that is "
                    "not finite and >= 0");
  }
  detail::parallel_for(G, [&](std::int64_t g) { detail::otb_group(in, cfg, g, a); });
  detail::parallel_for(G, [&](std::int64_t g) {
    const std::int64_t base = in.seq_offsets[in.group_offsets[g]];
    for (std::int64_t t = 0; t < a.group_steps[g]; ++t) a.baseline[base + t] = detail::otb_step_baseline(in, cfg, g, t, a);
  });
  std::vector<std::int64_t> not_finite = detail::scratch<std::int64_t>(G, "optimal_token_baseline");
  detail::parallel_for(G, [&](std::int64_t g) {
    std::int64_t first_bad = -1;
    for (std::int64_t s = in.group_offsets[g]; s < in.group_offsets[g + 1]; ++s)
      for (std::int64_t k = in.seq_offsets[s]; k < in.seq_offsets[s + 1]; ++k) {
        const double adv = detail::otb_advantage(in, g, s, k, a);
        out.adv[k] = static_cast<Real>(adv);
        if (!out.returns.empty()) out.returns[k] = static_cast<Real>(a.ret[k]);
        if (first_bad < 0 && !std::isfinite(adv)) first_bad = k;
      }
    not_finite[static_cast<std::size_t>(g)] = first_bad;
  });
  token_baseline_stats st;
  st.groups = G;
  for (std::int64_t g = 0; g < G; ++g) {
    const std::int64_t k = not_finite[static_cast<std::size_t>(g)];
    GRPOKIT_REQUIRE(k < 0, "optimal_token_baseline: the advantage of token ", k,
                    " is not finite (a step's weight sum plus epsilon is 0?)");
    st.singleton_groups += a.group_single[g];
    st.zero_tail_groups += a.group_tail_seq[g] >= 0;
  }
  for (std::int64_t s = 0; s < S; ++s) st.response_tokens += a.seq_length[s];
  return st;
}

}  // namespace host
}  // namespace grpokit
