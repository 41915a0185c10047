#pragma once
// grpokit::host::compute_advantages: per-group baselines (policy axis `baseline`), the scale of
// cfg.adv.scale, zero-variance / singleton handling, and VCPO's ESS in log space.
//   A_i = (r_i - b_i) / (max(spread, std_floor) + eps)     (scale = group)
//   A_i = (r_i - b_i) / (max(std_batch, std_floor) + eps)  (scale = batch)
//   A_i =  r_i - b_i                                        (scale = none)
//   A_i = (r_i - b_i) * B / #(r != 0)                       (scale = gpg: GPG's alpha)
//   A_i = (r_i - b_i - mu) / (max(sigma, std_floor) + eps)  (scale = whiten: mu, sigma of r - b over
//                                                            the batch, weighted by seq_tokens)
// then A_i = clamp(A_i, clip_low, clip_high).
// A group whose rewards are all equal (singletons included) gets A = 0 exactly, and with
// cfg.adv.mask_zero_variance its sequences get seq_mask = 0.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <memory>
#include <vector>

#include "../baseline.hpp"
#include "../config.hpp"
#include "../detail/advantage_terms.hpp"
#include "../detail/validate.hpp"
#include "../inputs.hpp"
#include "../metrics.hpp"
#include "../policy.hpp"
#include "detail/scratch.hpp"
#include "parallel.hpp"
#include "parallel_ops.hpp"

namespace grpokit::host {

template <class P>
advantage_stats compute_advantages(const advantage_inputs<accum_t<P>>& in, const advantage_config& cfg,
                                   const advantage_outputs<accum_t<P>>& out) {
  using Real = accum_t<P>;
  using B = typename P::baseline_type;
  const std::int64_t S = in.rewards.size();
  detail::require_advantage_shapes(in, cfg, out, detail::needs_log_ratio<B>::value,
                                   detail::needs_group_baseline<B>::value, detail::needs_seq_tokens<B>::value);
  detail::require_advantage_data(in);

  // the rollouts in double; scratch without initialisation (every group writes all of its own)
  const auto doubles = [&](span<const Real> x) {
    std::vector<double> d = detail::scratch<double>(x.size(), "compute_advantages");
    detail::parallel_for(x.size(), [&](std::int64_t i) { d[static_cast<std::size_t>(i)] = x[i]; });
    return d;
  };
  const std::vector<double> r = doubles(in.rewards), lr = doubles(in.seq_log_ratio), w = doubles(in.seq_weight),
                            tokens = doubles(in.seq_tokens);
  const auto uninitialised = [&](auto zero) {
    using T = decltype(zero);
    try {
      return std::unique_ptr<T[]>(new T[static_cast<std::size_t>(S)]);
    } catch (const std::exception&) {
      detail::fail("compute_advantages: cannot allocate scratch of ", S, " elements");
    }
  };
  const auto centered = uninitialised(0.0), scratch = uninitialised(0.0), divisor = uninitialised(0.0);
  const auto keep = uninitialised(std::uint8_t{0});
  const detail::parallel_ops batch_ops;

  advantage_stats st;
  st.groups = in.group_offsets.size() - 1;
  double batch_div = 0;
  detail::batch_reward_stats(r.data(), lr.empty() ? nullptr : lr.data(), S, cfg, st, batch_div, batch_ops);
  // groups in parallel: each writes only its own rollouts, so the result is the serial one
  std::vector<std::uint8_t> zero_variance(static_cast<std::size_t>(st.groups));
  const double mean_group_size = static_cast<double>(S) / static_cast<double>(st.groups);
  const detail::advantage_arrays arrays{r.data(),      lr.data(),  w.data(),      tokens.data(),
                                       centered.get(), keep.get(), divisor.get(), scratch.get()};
  detail::parallel_for(st.groups, [&](std::int64_t g) {
    group_io io = detail::group_view(arrays, in, cfg, g);
    zero_variance[static_cast<std::size_t>(g)] =
        detail::process_group<B>(io, cfg, batch_div, mean_group_size, divisor.get() + in.group_offsets[g]);
  });
  for (std::int64_t g = 0; g < st.groups; ++g) {
    st.zero_variance_groups += zero_variance[static_cast<std::size_t>(g)];
    st.singleton_groups += in.group_offsets[g + 1] - in.group_offsets[g] == 1;
  }
  const double fold = cfg.fold_lr_factor ? st.lr_factor : 1.0;
  const detail::batch_shift whiten =
      detail::whiten_stats(centered.get(), tokens.empty() ? nullptr : tokens.data(), S, cfg, batch_ops);
  const auto advantage = [&](std::int64_t i) {
    return detail::advantage_value(centered[i] - whiten.shift, divisor[i] * whiten.divisor, fold, cfg);
  };
  // the outputs, and the first rollout whose advantage is not finite (the outputs are then partial)
  const std::int64_t bad = batch_ops.first(S, [&](std::int64_t i) {
    const double a = advantage(i);
    out.adv[i] = static_cast<Real>(a);
    out.seq_mask[i] = keep[i];
    return !std::isfinite(a);
  });
  GRPOKIT_REQUIRE(bad == S, "advantage of sequence ", bad,
                  " is not finite (spread 0 with eps = 0?); set eps or std_floor > 0");
  detail::advantage_moments(out.adv.data(), out.seq_mask.data(), S, st, batch_ops);
  return st;
}

}  // namespace grpokit::host
