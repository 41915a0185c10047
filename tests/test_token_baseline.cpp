// The optimal token baseline against a long-double reference written as verl writes it: each group
// as a padded matrix of response rows (position mode: a row starts at the sequence's first response
// token; compact: the response tokens only), reversed cumulative sums, masked sums over the rows,
// the singleton and zero-tail rules; a worked example, and bad input.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <grpokit/host/token_baseline.hpp>

#include "catch.hpp"
#include "support.hpp"

namespace {

using ld = long double;

struct otb_reference {
  std::vector<ld> adv, returns;
  std::int64_t singleton_groups = 0, zero_tail_groups = 0;
};

otb_reference reference(const support::otb_batch& b, bool with_mask, bool with_is, const grpokit::token_baseline_config& cfg) {
  const std::size_t T = b.rewards.size();
  auto m = [&](std::int64_t k) { return with_mask ? ld(b.mask[static_cast<std::size_t>(k)]) : 1.0L; };
  otb_reference r{std::vector<ld>(T, 0), std::vector<ld>(T, 0)};
  std::vector<ld> W(T, 0);
  for (std::size_t s = 0; s + 1 < b.seq_off.size(); ++s) {  // reward-to-go and the realised energy
    ld to_go = 0, energy = 0;
    for (auto k = b.seq_off[s + 1] - 1; k >= b.seq_off[s]; --k) {
      to_go += b.rewards[static_cast<std::size_t>(k)] * m(k);
      r.returns[static_cast<std::size_t>(k)] = to_go;
    }
    for (auto k = b.seq_off[s]; k < b.seq_off[s + 1]; ++k) {
      const auto i = static_cast<std::size_t>(k);
      ld w = 1 - 2 * std::exp(ld(b.logp_old[i])) + b.sum_p2[i];
      if (with_is) w *= ld(b.is_weights[i]) * b.is_weights[i];
      energy += w * m(k);
      W[i] = energy;
    }
  }
  for (std::size_t g = 0; g + 1 < b.groups.size(); ++g) {
    // the rows of the group: the token of each column (-1: padding)
    std::vector<std::vector<std::int64_t>> rows;
    std::vector<ld> lengths;
    for (auto s = b.groups[g]; s < b.groups[g + 1]; ++s) {
      std::vector<std::int64_t> row;
      for (auto k = b.seq_off[s]; k < b.seq_off[s + 1]; ++k)
        if (cfg.compact ? m(k) != 0 : !row.empty() || m(k) != 0) row.push_back(k);
      ld len = 0;
      for (auto k = b.seq_off[s]; k < b.seq_off[s + 1]; ++k) len += m(k);
      if (cfg.compact && len == 0) continue;  // verl's tir_ variant drops empty responses
      rows.push_back(row);
      lengths.push_back(len);
    }
    std::size_t width = 0;
    for (const auto& row : rows) width = std::max(width, row.size());
    std::vector<std::vector<ld>> base(rows.size(), std::vector<ld>(width, 0));
    r.singleton_groups += rows.size() <= 1;
    if (rows.size() > 1) {
      for (std::size_t t = 0; t < width; ++t) {
        ld num = 0, den = 0;
        for (const auto& row : rows)
          if (t < row.size()) {
            num += r.returns[static_cast<std::size_t>(row[t])] * W[static_cast<std::size_t>(row[t])] * m(row[t]);
            den += W[static_cast<std::size_t>(row[t])] * m(row[t]);
          }
        for (auto& row_base : base) row_base[t] = num / (den + cfg.epsilon);
      }
      if (cfg.zero_tail) {
        std::vector<ld> sorted = lengths;
        std::sort(sorted.begin(), sorted.end());
        const ld top = sorted.back(), second = sorted[sorted.size() - 2];
        if (std::count(lengths.begin(), lengths.end(), top) == 1 && top > second) {
          ++r.zero_tail_groups;
          const auto longest = static_cast<std::size_t>(std::find(lengths.begin(), lengths.end(), top) - lengths.begin());
          for (auto t = static_cast<std::size_t>(second); t < width; ++t) base[longest][t] = 0;
        }
      }
    }
    for (std::size_t i = 0; i < rows.size(); ++i)
      for (std::size_t t = 0; t < rows[i].size(); ++t) {
        const auto k = rows[i][t];
        r.adv[static_cast<std::size_t>(k)] = (r.returns[static_cast<std::size_t>(k)] - base[i][t]) * m(k);
      }
  }
  return r;
}

}  // namespace

TEST_CASE("optimal_token_baseline matches verl's formulation (both step modes, zero tail, IS weights)",
          "[advantages]") {
  std::mt19937_64 rng(2602);
  for (int rep = 0; rep < 60; ++rep) {
    const bool with_is = rep % 3 == 1, with_mask = rep % 5 != 4;
    const int G = 1 + (rep * 7) % 13;
    const auto b = support::random_otb_batch(rng, G, 1 + rep % 6, rep % 2 ? 17 : 5, with_is);
    grpokit::token_baseline_config cfg;
    cfg.compact = rep % 2 == 1;
    cfg.zero_tail = rep % 4 < 3;
    cfg.epsilon = rep % 7 == 0 ? 0.25 : 1e-8;
    INFO("rep " << rep << ", G " << G << ", T " << b.rewards.size());
    const auto want = reference(b, with_mask, with_is, cfg);
    std::vector<double> adv(b.rewards.size(), 7.0), ret(b.rewards.size(), 7.0);
    const auto st = grpokit::host::optimal_token_baseline<double>(b.inputs(with_mask), cfg, {adv, ret});
    CHECK(st.groups == G);
    CHECK(st.singleton_groups == want.singleton_groups);
    CHECK(st.zero_tail_groups == want.zero_tail_groups);
    for (std::size_t k = 0; k < adv.size(); ++k) {
      INFO("token " << k);
      CHECK(support::close(adv[k], static_cast<double>(want.adv[k]), 1e-11, 1e-11));
      CHECK(support::close(ret[k], static_cast<double>(want.returns[k]), 1e-12, 1e-12));
      if (with_mask && b.mask[k] == 0) CHECK(adv[k] == 0.0);
    }
  }
}

TEST_CASE("optimal_token_baseline: worked example, singletons, and bad input", "[advantages]") {
  // two rollouts, pi = 1/2 and sum_p2 = 1/2 everywhere: w = 1/2 per token.
  // a: rewards (0, 1): G = (1, 1), W = (.5, 1);  b: rewards (0, 0, 2): G = (2, 2, 2), W = (.5, 1, 1.5)
  // B_0 = (1 * .5 + 2 * .5) / 1 = 1.5, B_1 = (1 + 2) / 2 = 1.5, B_2 = 2 * 1.5 / 1.5 = 2 (b alone);
  // b is the unique longest: its steps from 2 (a's length) on take B = 0.
  const std::vector<std::int64_t> seq_off{0, 2, 5, 8}, groups{0, 2, 3};
  const std::vector<double> rewards{0, 1, 0, 0, 2, 1, 0, 3}, logp(8, std::log(0.5)), p2(8, 0.5);
  std::vector<double> adv(8), ret(8);
  grpokit::token_baseline_config cfg;
  cfg.epsilon = 0;
  const grpokit::token_baseline_inputs<double> in{rewards, seq_off, groups, logp, p2};
  auto st = grpokit::host::optimal_token_baseline<double>(in, cfg, {adv, ret});
  const std::vector<double> want{-0.5, -0.5, 0.5, 0.5, 2, 4, 3, 3};  // the singleton: A = G
  for (std::size_t k = 0; k < 8; ++k) CHECK(adv[k] == Approx(want[k]).epsilon(1e-15));
  CHECK(ret == std::vector<double>{1, 1, 2, 2, 2, 4, 3, 3});
  CHECK(st.singleton_groups == 1);
  CHECK(st.zero_tail_groups == 1);
  CHECK(st.response_tokens == 8);
  cfg.zero_tail = false;  // b's last step takes its own baseline: 2 - 2
  st = grpokit::host::optimal_token_baseline<double>(in, cfg, {adv, {}});
  CHECK(adv[4] == Approx(0.0).margin(1e-15));
  CHECK(st.zero_tail_groups == 0);

  // a prompt token and a hole: steps count from the first response token (position mode), or only
  // response tokens (compact); the masked tokens' inputs are never read
  std::vector<std::uint8_t> mask{1, 1, 0, 1, 1, 1, 1, 1};
  std::vector<double> bad = rewards;
  bad[2] = std::nan("");
  grpokit::token_baseline_inputs<double> masked{bad, seq_off, groups, logp, p2, {}, mask};
  cfg.zero_tail = true;
  st = grpokit::host::optimal_token_baseline<double>(masked, cfg, {adv, {}});
  CHECK(adv[2] == 0.0);
  CHECK(std::isfinite(adv[3]));
  CHECK(st.response_tokens == 7);

  // errors
  bad[3] = std::nan("");
  masked.token_rewards = bad;
  REQUIRE_ERROR(grpokit::host::optimal_token_baseline<double>(masked, cfg, {adv, {}}), "token 3 (a response token)");
  std::vector<double> is(8, 1.0);
  is[6] = -1;
  REQUIRE_ERROR(grpokit::host::optimal_token_baseline<double>({rewards, seq_off, groups, logp, p2, is}, cfg, {adv, {}}),
                "token 6");
  REQUIRE_ERROR(grpokit::host::optimal_token_baseline<double>(in, cfg, {grpokit::span<double>(adv.data(), 7), {}}),
                "adv");
  const std::vector<std::int64_t> empty_group{0, 2, 2, 3}, short_off{0, 2, 5, 7};
  REQUIRE_ERROR(grpokit::host::optimal_token_baseline<double>({rewards, seq_off, empty_group, logp, p2}, cfg, {adv, {}}),
                "group_offsets: segment 1 is empty");
  REQUIRE_ERROR(grpokit::host::optimal_token_baseline<double>({rewards, short_off, groups, logp, p2}, cfg, {adv, {}}),
                "seq_offsets: last offset must be 8");
  cfg.epsilon = -1;
  REQUIRE_ERROR(grpokit::host::optimal_token_baseline<double>(in, cfg, {adv, {}}), "epsilon");
  // no energy at all (pi = 1, sum_p2 = 1) with epsilon 0: 0 / 0, an error rather than a NaN
  cfg.epsilon = 0;
  const std::vector<double> certain(8, 0.0), one(8, 1.0);
  REQUIRE_ERROR(grpokit::host::optimal_token_baseline<double>({rewards, seq_off, groups, certain, one}, cfg, {adv, {}}),
                "is not finite");
}
